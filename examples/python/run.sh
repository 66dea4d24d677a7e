#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The example of docs/python.md with one command, from a checkout:
#
#   examples/python/run.sh [ITEMS [WORKERS]]
#
# builds zpipe if needed (in $ZPIPE_BUILD, default build/), starts WORKERS
# Python workers (default 2) and the coordinator on a free local port, and
# prints the coordinator's one output, the summary of ITEMS (default 200)
# estimates of pi:
#
#   range branch (C) | estimate_pi mode=remote (Python) | summarize join (C)
#
# The workers are stopped (SIGTERM) when the run is over, or on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${ZPIPE_BUILD:-build}
items=${1:-200}
workers=${2:-2}
python=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in the checkout

if [ ! -x "$build/zpipe" ] || [ ! -e "$build/examples/zpipe-examples.so" ]; then
    echo "building zpipe in $build" >&2
    cmake -S . -B "$build" >/dev/null
    cmake --build "$build" -j2 --target zpipe_cli zpipe_examples >/dev/null
fi

port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
endpoint=tcp://127.0.0.1:$port
pids=()
stop() {
    if [ "${#pids[@]}" -gt 0 ]; then
        kill -TERM "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
}
trap stop EXIT
for _ in $(seq "$workers"); do
    PYTHONPATH=python "$python" -m zpipe_worker --connect "$endpoint" \
        --module examples/python/tasks.py &
    pids+=($!)
done
"$build/zpipe" run --plugin "$build/examples/zpipe-examples.so" \
    --listen "$endpoint" \
    'range branch | estimate_pi mode=remote | summarize join' "$items"
