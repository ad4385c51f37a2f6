#!/usr/bin/env bash
# Configures and builds kfleet. Usage: scripts/build.sh [BUILD_DIR] [extra cmake args]
# Default build dir: ./build (release-ish, with debug info).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$here/build}
shift || true
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$build" -j"$(nproc)"
