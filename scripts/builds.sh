# SPDX-License-Identifier: MIT
# The three builds the test suite runs in, in one place for the scripts
# that source this file from the repository root (scripts/test.sh,
# scripts/stress.sh): warnings as errors (ci), address + undefined
# sanitizers (asan), thread sanitizer (tsan). Each build NAME lives in
# build-NAME; zp_build configures and builds it, zp_ctest runs ctest in it
# with the sanitizer options its tests need.

ZP_BUILDS=(ci asan tsan)

# Whether NAME is one of ZP_BUILDS.
zp_is_build() { # name
  local b
  for b in "${ZP_BUILDS[@]}"; do
    [[ $b == "$1" ]] && return 0
  done
  return 1
}

# The words the scripts print for a build.
zp_build_title() { # name
  case $1 in
    ci) echo "-Werror" ;;
    asan) echo "address + undefined sanitizers" ;;
    tsan) echo "thread sanitizer" ;;
  esac
}

# Configures and builds NAME in build-NAME with JOBS jobs.
zp_build() { # name, jobs
  local opts=(-DZP_WERROR=ON)
  case $1 in
    ci) opts+=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
    asan) opts+=(-DZP_SANITIZE=address -DZP_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug) ;;
    tsan) opts+=(-DZP_SANITIZE=thread -DZP_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=Debug) ;;
  esac
  cmake -S . -B "build-$1" "${opts[@]}" >/dev/null
  cmake --build "build-$1" -j"$2"
}

# Runs ctest in build-NAME with ARGS, under the build's sanitizer options.
zp_ctest() { # name, ctest arguments...
  local name=$1 vars=()
  shift
  case $name in
    asan) vars=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=1
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1) ;;
    tsan) vars=("TSAN_OPTIONS=halt_on_error=1 suppressions=$PWD/tests/tsan.supp") ;;
  esac
  (cd "build-$name" && env "${vars[@]}" ctest "$@")
}
