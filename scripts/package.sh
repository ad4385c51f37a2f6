#!/usr/bin/env bash
# Builds kfleet's Debian 12 packages with CPack: kfleet-agent (the agent and
# its kfleet-sandbox helper), kfleet-scheduler, kfleetctl and kfleet-etcd
# (a unit for Debian's etcd), each with its systemd unit, its settings in
# /etc/kfleet and its docs (deploy/CMakeLists.txt says what goes where and
# why the split). The build is a release one (Debian's flags from
# dpkg-buildflags, no sanitizers, stripped, installed under /usr) in its
# own build dir, kept between runs so a second run only rebuilds what
# changed; only the four programs are built, not the tests. Library
# dependencies come from dpkg-shlibdeps.
#
# Usage: scripts/package.sh [BUILD_DIR [OUT_DIR]]
#   BUILD_DIR  release build dir (default ./build-pkg); not a test build
#   OUT_DIR    where the .deb files go (default BUILD_DIR/packages)
# Prints the paths of the packages it made, one a line, on stdout.
# Install them with: dpkg -i OUT_DIR/*.deb (apt-get install ./OUT_DIR/*.deb
# also fetches missing dependencies).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
prog=scripts/package.sh
die() {
  echo "$prog: $*" >&2
  exit 1
}
case "${1:-}" in
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
esac
build=${1:-$here/build-pkg}
out=${2:-$build/packages}
for tool in cmake cpack dpkg-shlibdeps dpkg-deb file; do
  command -v "$tool" >/dev/null || die "$tool is not installed (scripts/deps.sh installs what is needed)"
done
if [ -f "$build/CMakeCache.txt" ] && grep -q '^KF_SANITIZER:STRING=.\+' "$build/CMakeCache.txt"; then
  die "$build is a sanitizer build: give a build dir of its own for packages"
fi

echo "$prog: configuring and building in $build" >&2
# Debian's compiler and linker flags for packages (-O2, stack protector,
# fortify, relro, bind now), as dpkg-buildflags gives them; -g is stripped
# from the packaged binaries. Run from the source dir: the flags map it
# to "." in the debug info.
cd "$here"
export DEB_BUILD_MAINT_OPTIONS=hardening=+all
cflags="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
ldflags=$(dpkg-buildflags --get LDFLAGS)
# CMAKE_SKIP_INSTALL_ALL_DEPENDENCY: cpack installs without building every
# target (tests, benchmarks); the programs are built just before.
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_FLAGS_RELEASE=-DNDEBUG \
  -DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$ldflags" -DCMAKE_INSTALL_PREFIX=/usr \
  -DKF_SANITIZER= -DBUILD_TESTING=OFF -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target kfleet-agent kfleet-sandbox kfleet-scheduler kfleetctl >&2

mkdir -p "$out"
# Only what an earlier run left: OUT_DIR may hold other files.
rm -rf "$out/_CPack_Packages"
rm -f "$out"/kfleet*.deb
echo "$prog: packaging into $out" >&2
(cd "$build" && cpack -G DEB -B "$out" >&2) || die "cpack failed (see above)"
rm -rf "$out/_CPack_Packages"
shopt -s nullglob
debs=("$out"/kfleet*.deb)
[ "${#debs[@]}" -eq 4 ] || die "expected 4 packages in $out, found ${#debs[@]}: ${debs[*]}"
printf '%s\n' "${debs[@]}"
