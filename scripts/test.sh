#!/usr/bin/env bash
# The test command: installs dependencies, builds kfleet with
# AddressSanitizer + UndefinedBehaviorSanitizer and -Werror, and runs every
# test (unit, integration, isolation) with ctest. Must run as root: the
# tests create namespaces, cgroups and loop-mounted volumes.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root (the suites create namespaces, cgroups, loop devices)" >&2
  exit 2
fi
"$here/scripts/deps.sh"
build=${KF_TEST_BUILD_DIR:-$here/build-test}
"$here/scripts/build.sh" "$build" -DKF_SANITIZER=address,undefined -DKF_WERROR=ON
# LeakSanitizer aborts at exit on leaks; gRPC keeps a few globals alive by design.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$here/tests/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build"
ctest --output-on-failure --timeout 1800 "$@"
