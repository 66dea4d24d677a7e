#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds zpipe's Debian packages (cmake/package.cmake, docs/packaging.md):
# configures a Release build with prefix /usr and Debian's hardening flags
# (dpkg-buildflags), without tests, benchmarks or example programs, builds
# it, runs `cpack -G DEB` and leaves the .deb files, and nothing else, in
# one folder, whose path it prints last.
#
#   usage: scripts/package.sh [--lint] [--build DIR] [--out DIR]
#
#   --lint       then run lintian on the packages: fails on any error, and
#                prints its warnings (docs/packaging.md says why some stay)
#   --build DIR  the build tree (default: build-pkg); configured afresh
#                each time, its objects kept
#   --out DIR    where the .deb files go (default: DIR/debs of --build),
#                emptied of older .deb files first
#
# Needs cmake, a C compiler, the -dev packages of scripts/deps.sh, and
# dpkg-dev and file (dpkg-shlibdeps, dpkg-buildflags); --lint needs lintian.
# Environment: JOBS, parallel build jobs (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n 's/^#   usage: //p' "$0" >&2; exit 2; }
lint=false
build=build-pkg
out=
while [ $# -gt 0 ]; do
    case $1 in
        --lint) lint=true ;;
        --build) [ $# -ge 2 ] || usage; build=$2; shift ;;
        --out) [ $# -ge 2 ] || usage; out=$2; shift ;;
        *) usage ;;
    esac
    shift
done
out=${out:-$build/debs}

for tool in cmake cpack dpkg-buildflags dpkg-shlibdeps file; do
    command -v "$tool" >/dev/null ||
        { echo "scripts/package.sh: $tool is missing (scripts/deps.sh installs it)" >&2; exit 1; }
done

# Debian's flags for packages, with every hardening feature (bindnow, PIE,
# fortify, stack protector, relro) and without -g: there is no debug symbol
# package, and CPack strips only executables and shared libraries, not the
# static one. CMake's Release flags come after these.
export DEB_BUILD_MAINT_OPTIONS=hardening=+all DEB_CFLAGS_MAINT_STRIP=-g
CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)"
LDFLAGS=$(dpkg-buildflags --get LDFLAGS)
export CFLAGS LDFLAGS

echo "== configure $build (Release, prefix /usr)"
cmake --fresh -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
    -DZP_BUILD_TESTS=OFF -DZP_BUILD_BENCH=OFF -DZP_BUILD_EXAMPLES=OFF >/dev/null
echo "== build"
cmake --build "$build" -j"${JOBS:-$(nproc)}"
echo "== cpack -G DEB"
(cd "$build" && cpack -G DEB -B "$PWD/cpack" >cpack.log 2>&1) ||
    { tail -n 40 "$build/cpack.log" >&2; exit 1; }
mkdir -p "$out"
rm -f "$out"/*.deb
mv "$build"/cpack/*.deb "$out"/
out=$(cd "$out" && pwd -P)
for deb in "$out"/*.deb; do
    printf '%s\n  Depends: %s\n' "$(basename "$deb")" "$(dpkg-deb -f "$deb" Depends)"
done

if $lint; then
    command -v lintian >/dev/null ||
        { echo "scripts/package.sh: lintian is missing (scripts/deps.sh installs it)" >&2; exit 1; }
    echo "== lintian"
    # Errors fail; warnings are shown.
    lintian --fail-on error "$out"/*.deb
fi
echo "$out"
