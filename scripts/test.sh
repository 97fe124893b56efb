#!/usr/bin/env bash
# test.sh - the one test command (README; .ci/run calls it): install what is missing, build with
# warnings as errors, run every suite (unit + integration), run the unit suite again under
# AddressSanitizer + UndefinedBehaviorSanitizer, and check the formatting. Non-zero on any failure.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
start=$(date +%s)
jobs=${OBX_TEST_JOBS:-2}

step() { printf '\n==> %s\n' "$*"; }

step "dependencies"
./scripts/deps.sh

configure() { # dir, options...
    local dir=$1
    shift
    if [[ -f "$dir/build.ninja" ]]; then
        meson setup --reconfigure "$dir" "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
}

# Prints "passed failed" from a meson test log: libcheck's check counts of each test program
# (a program that failed without a libcheck summary counts as one failure).
count() {
    python3 - "$1" <<'PY'
import json, re, sys
ok = bad = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("result") == "SKIP":
        continue
    m = re.findall(r"Checks: (\d+), Failures: (\d+), Errors: (\d+)", r.get("stdout", ""))
    if m:
        n, f, e = map(int, m[-1])
        ok += n - f - e
        bad += f + e
    if r.get("result") not in ("OK", "EXPECTEDFAIL") and (not m or sum(map(int, m[-1][1:])) == 0):
        bad += 1
print(ok, bad)
PY
}

status=0
passed=0
failed=0

step "build (warnings are errors)"
configure build/test -Dwerror=true
ninja -C build/test

step "unit and integration suites"
meson test -C build/test --print-errorlogs --num-processes "$jobs" || status=1
read -r p f < <(count build/test/meson-logs/testlog.json)
passed=$((passed + p)); failed=$((failed + f))
for suite in unit integration; do
    n=$(meson test -C build/test --list --suite "$suite" 2>/dev/null | grep -c . || true)
    if [[ "$n" -eq 0 ]]; then
        echo "test.sh: the $suite suite is empty" >&2
        status=1
    fi
done

step "unit suite under AddressSanitizer + UndefinedBehaviorSanitizer"
configure build/san -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dintegration=false
ninja -C build/san
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1 \
    meson test -C build/san --suite unit --print-errorlogs --num-processes "$jobs" || status=1
read -r p f < <(count build/san/meson-logs/testlog.json)
passed=$((passed + p)); failed=$((failed + f))

step "formatting (clang-format)"
mapfile -t sources < <(find src include tests -name '*.[ch]' | sort)
if ! clang-format --dry-run --Werror "${sources[@]}"; then
    echo "test.sh: formatting differs; run: clang-format -i \$(find src include tests -name '*.[ch]')" >&2
    status=1
    failed=$((failed + 1))
fi

echo
echo "test.sh: $(( $(date +%s) - start )) s"
echo "$passed passed, $failed failed"
exit "$status"
