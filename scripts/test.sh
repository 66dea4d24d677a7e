#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what is missing, then builds and runs every test three times: a
# normal build with -Werror, an address+undefined sanitizer build and a
# thread sanitizer build. Also checks the formatting against .clang-format.
# CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)

echo "== format check"
git ls-files '*.c' '*.h' | xargs clang-format --dry-run --Werror

echo "== build and test (-Werror)"
cmake -S . -B build-ci -DZP_WERROR=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-ci -j"$jobs"
(cd build-ci && ctest --output-on-failure -j"$jobs")

echo "== build and test (address + undefined sanitizers)"
cmake -S . -B build-asan -DZP_WERROR=ON -DZP_SANITIZE=address \
      -DZP_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
   ctest --output-on-failure -j"$jobs")

echo "== build and test (thread sanitizer)"
cmake -S . -B build-tsan -DZP_WERROR=ON -DZP_SANITIZE=thread \
      -DZP_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-tsan -j"$jobs"
(cd build-tsan && TSAN_OPTIONS="halt_on_error=1 suppressions=$PWD/../tests/tsan.supp" \
   ctest --output-on-failure -j"$jobs")
