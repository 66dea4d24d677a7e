#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what is missing, builds zpipe and runs the demo pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target demo
./build/examples/demo
