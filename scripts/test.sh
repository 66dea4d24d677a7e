#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what is missing, then builds and runs every test three times: a
# normal build with -Werror, an address+undefined sanitizer build and a
# thread sanitizer build, then runs each libFuzzer target (tests/fuzz: the
# wire protocol, batch framing, the spec parser, the JSON reader) for 20
# seconds, then builds the Debian packages and checks them with lintian
# (scripts/package.sh --lint), then the docker-compose cycle of
# docker/test.sh with a real Docker engine, whose image installs those
# packages. Also checks the formatting against .clang-format. The builds
# and their options are defined in scripts/builds.sh.
# CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/builds.sh # the three builds and their options
scripts/deps.sh
jobs=$(nproc)

echo "== format check"
git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror

for b in "${ZP_BUILDS[@]}"; do
  echo "== build and test ($(zp_build_title "$b"))"
  zp_build "$b" "$jobs"
  zp_ctest "$b" --output-on-failure -j"$jobs"
done

echo "== fuzz (brief)"
# Each libFuzzer target for 20 s from an empty corpus; a crash leaves its
# input in build-fuzz/ (crash-*), to replay with: build-fuzz/tests/fuzz/NAME FILE
fuzz() { # name, more libFuzzer arguments
  local corpus=build-fuzz/corpus/$1 log=build-fuzz/$1.log
  rm -rf "$corpus" && mkdir -p "$corpus"
  if ! "build-fuzz/tests/fuzz/$1" -max_total_time=20 -print_final_stats=1 \
       -artifact_prefix=build-fuzz/ "${@:2}" "$corpus" >"$log" 2>&1; then
    tail -n 60 "$log"
    return 1
  fi
  echo "$1: $(grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log" | tr -s ' \n' ' ')"
}
CC=clang cmake -S . -B build-fuzz -DZP_FUZZ=ON -DZP_BUILD_TESTS=OFF \
      -DZP_BUILD_EXAMPLES=OFF -DZP_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$jobs" --target proto_fuzz batch_fuzz spec_fuzz json_fuzz
fuzz proto_fuzz -dict=tests/fuzz/proto.dict
fuzz batch_fuzz
fuzz spec_fuzz -dict=tests/fuzz/spec.dict
fuzz json_fuzz -dict=tests/fuzz/json.dict

echo "== packages"
# Release build with prefix /usr in build-pkg/, cpack -G DEB, lintian: fails
# on any lintian error (docs/packaging.md lists the warnings that stay).
scripts/package.sh --lint

echo "== docker-compose, end to end (docker/test.sh)"
docker/test.sh
