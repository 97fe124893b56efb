#!/usr/bin/env bash
# deps.sh - install the Debian packages outboxd needs to build, test and run its demo, when missing.
# Idempotent and quiet when nothing is missing. Works as root; uses sudo otherwise.
set -euo pipefail

packages=(
    gcc                 # compiler (with libasan/libubsan for the sanitizer build)
    pkg-config
    meson
    ninja-build
    libpq-dev           # PostgreSQL client library
    librdkafka-dev      # Kafka client library (and rdkafka_mock.h for the local broker)
    libjansson-dev      # JSON
    check               # libcheck unit test framework
    postgresql-15       # server binaries for the throwaway test/demo cluster
    clang-format        # formatting check in scripts/test.sh
)

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "deps.sh: missing packages: ${missing[*]}; run as root or install sudo" >&2
    exit 1
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "deps.sh: done" >&2
