#!/usr/bin/env bash
# run.sh - outboxd's benchmark (issue 6), one command from a fresh clone: builds a release build
# and the benchmark's programs, installs gnuplot-nox if missing, starts a throwaway PostgreSQL
# and a local Kafka-protocol broker, runs every workload against every contender, prints the
# results and writes docs/benchmarks.md plus docs/bench-*.png. Not part of CI. Takes about 10
# minutes; everything it starts is stopped and removed when it ends.
#
# Shorter or longer runs: BENCH_ROWS, BENCH_REPEAT, BENCH_STEADY_S, BENCH_IDLE_S, BENCH_BIG_ROWS,
# BENCH_LARGE_ROWS (see bench/bench.py).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=build/bench
tools=build/bench-tools
results=build/bench-results

say() { printf '\n==> %s\n' "$*" >&2; }

# Debian packages the benchmark needs beyond scripts/deps.sh (which it does not change).
install_missing() {
    local missing=() pkg status sudo=()
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || {
            echo "run.sh: missing packages: ${missing[*]}; run as root or install sudo" >&2
            exit 1
        }
        sudo=(sudo)
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

say "installing what is missing"
./scripts/deps.sh
install_missing gnuplot-nox python3 postgresql-client-15

say "building (release) in $build and the benchmark programs in $tools"
if [[ ! -f "$build/build.ninja" ]]; then
    meson setup "$build" -Dbuildtype=release >/dev/null
fi
ninja -C "$build" -j2 outboxd tests/support/obx-pgtmp tests/support/kafka-broker >/dev/null
if [[ ! -f "$tools/build.ninja" ]]; then
    meson setup "$tools" bench >/dev/null
fi
ninja -C "$tools" -j2 >/dev/null

say "running the benchmark (about 10 minutes)"
mkdir -p "$results"
PYTHONPATH="$root/bench" python3 -B bench/bench.py --root "$root" --build "$build" \
    --tools "$tools" --results "$results"
