#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Install test: installs a built zpipe into a temporary prefix, builds the
# stand-alone project in tests/consumer against it (find_package, shared and
# static, and pkg-config), and runs the programs; then moves the prefix and
# checks that zpipe.pc names the new place. The temporary directory is
# removed on exit, whatever happens.
#
#   usage: tests/consumer/run.sh ZPIPE_BUILD_DIR
#
# The consumer is built with the same C compiler and sanitizer flags as the
# zpipe build, read from its CMakeCache.txt. CMAKE_COMMAND in the environment
# and PKG_CONFIG in the environment choose the cmake and pkg-config programs
# (default: those on PATH).
set -euo pipefail

if [[ $# -ne 1 || ! -f $1/CMakeCache.txt ]]; then
    echo "usage: $0 ZPIPE_BUILD_DIR (a configured and built zpipe tree)" >&2
    exit 2
fi

build=$(cd "$1" && pwd -P)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
cmake=${CMAKE_COMMAND:-cmake}
pkg_config=${PKG_CONFIG:-pkg-config}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/zpipe-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tmp=$(cd "$tmp" && pwd -P)
prefix=$tmp/prefix

# Prints the value of cache entry $1 of the zpipe build, or nothing.
cache_get() {
    awk -v key="$1" 'index($0, key ":") == 1 { sub(/^[^=]*=/, ""); print; exit }' \
        "$build/CMakeCache.txt"
}

libdir=$(cache_get CMAKE_INSTALL_LIBDIR)
libdir=${libdir:-lib}
cc=$(cache_get CMAKE_C_COMPILER)
case $(cache_get ZP_SANITIZE) in
    address) san=-fsanitize=address,undefined ;;
    thread) san=-fsanitize=thread ;;
    *) san= ;;
esac

echo "== installing $build into $prefix"
"$cmake" --install "$build" --prefix "$prefix"

export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
echo "== pkg-config zpipe: $("$pkg_config" --modversion zpipe):" \
    "$("$pkg_config" --cflags --libs zpipe)"

echo "== configuring and building $here"
configure=(-S "$here" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$prefix")
if [[ -n $cc ]]; then
    configure+=(-DCMAKE_C_COMPILER="$cc")
fi
if [[ -n $san ]]; then
    configure+=(-DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san")
fi
"$cmake" "${configure[@]}"
"$cmake" --build "$tmp/build"

# The prefix that zpipe.pc names, from its own place (${pcfiledir}/../..),
# resolved.
pc_prefix() { (cd "$("$pkg_config" --variable=prefix zpipe)" && pwd -P); }

# Both must come from the temporary prefix, not from a zpipe already
# installed on this machine.
zpipe_dir=$(awk -F= '/^zpipe_DIR:/ { print $2; exit }' "$tmp/build/CMakeCache.txt")
pc_prefix=$(pc_prefix)
if [[ $zpipe_dir != "$prefix"/* || $pc_prefix != "$prefix" ]]; then
    echo "FAIL: zpipe found outside $prefix" \
        "(zpipe_DIR=$zpipe_dir, zpipe.pc prefix=$pc_prefix)" >&2
    exit 1
fi

echo "== running"
for exe in consumer_cmake consumer_static consumer_pkgconfig; do
    "$tmp/build/$exe"
done

# A prefix moved after installation: zpipe.pc names the new place.
mv "$prefix" "$tmp/moved"
pc_prefix=$(PKG_CONFIG_PATH="$tmp/moved/$libdir/pkgconfig" pc_prefix)
if [[ $pc_prefix != "$tmp/moved" ]]; then
    echo "FAIL: zpipe.pc of a prefix moved to $tmp/moved names $pc_prefix" >&2
    exit 1
fi

echo "PASS: installed zpipe works through find_package (shared, static) and pkg-config," \
    "and zpipe.pc follows its prefix when it moves"
