#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the test suite on a busy machine: builds each chosen build of
# scripts/test.sh (scripts/builds.sh: ci, asan, tsan; all three unless
# named), then runs its ctest suite with --repeat until-fail:N (3 unless -n
# says otherwise) while two `yes >/dev/null` keep two cores busy beside it.
# Prints pass or fail and the wall time of each build, then a summary line;
# exits 1 when any build failed. A failing build's log stays in
# build-NAME/stress.log.
#
#   scripts/stress.sh [-j JOBS] [-n REPEATS] [-R REGEX] [BUILD...]
#
# -j: ctest's and the build's parallel jobs (default: nproc); -R: only the
# tests whose name matches REGEX (to repeat one flaky candidate).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/builds.sh

usage() {
  echo "usage: scripts/stress.sh [-j JOBS] [-n REPEATS] [-R REGEX] [BUILD...]" >&2
  echo "builds: ${ZP_BUILDS[*]}" >&2
  exit 2
}

jobs=$(nproc) repeats=3 regex=()
while getopts "j:n:R:h" opt; do
  case $opt in
    j) jobs=$OPTARG ;;
    n) repeats=$OPTARG ;;
    R) regex=(-R "$OPTARG") ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ $jobs =~ ^[1-9][0-9]*$ && $repeats =~ ^[1-9][0-9]*$ ]] || usage
builds=("$@")
((${#builds[@]})) || builds=("${ZP_BUILDS[@]}")
for b in "${builds[@]}"; do
  zp_is_build "$b" || { echo "stress.sh: no build named '$b'" >&2; usage; }
done

# The load (two busy loops) and the ctest in progress are ended on every
# way out of this script. Background jobs get process groups of their own
# (set -m), so that a signal to this script stops ctest and its test
# programs at once instead of waiting for them: the script waits for ctest
# with `wait`, which a trapped signal interrupts.
set -m
load=() tests=
stop_load() {
  local pid
  [[ -z $tests ]] || kill -TERM -- "-$tests" 2>/dev/null || true
  for pid in "${load[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  load=()
}
trap stop_load EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for b in "${builds[@]}"; do
  echo "== build ($(zp_build_title "$b"))"
  zp_build "$b" "$jobs"
done

yes >/dev/null &
load+=($!)
yes >/dev/null &
load+=($!)

results=() failed=0
for b in "${builds[@]}"; do
  echo "== ctest --repeat until-fail:$repeats beside two 'yes' ($(zp_build_title "$b"))"
  start=$SECONDS
  zp_ctest "$b" --output-on-failure -j"$jobs" --repeat "until-fail:$repeats" \
    "${regex[@]}" </dev/null >"build-$b/stress.log" 2>&1 &
  tests=$!
  if wait "$tests"; then
    verdict=pass
  else
    verdict=FAIL failed=$((failed + 1))
    grep -E '(Failed|Timeout|Exception|\*\*\*)' "build-$b/stress.log" | sed 's/^/  /' || true
  fi
  tests=
  tail -n 3 "build-$b/stress.log" | sed 's/^/  /'
  results+=("$b $verdict $((SECONDS - start)) s")
  echo "$b: $verdict in $((SECONDS - start)) s (log: build-$b/stress.log)"
done

stop_load
summary=$(printf '%s, ' "${results[@]}")
echo "stress: $((${#builds[@]} - failed)) of ${#builds[@]} builds passed" \
     "until-fail:$repeats with -j$jobs beside two 'yes': ${summary%, }"
((failed == 0))
