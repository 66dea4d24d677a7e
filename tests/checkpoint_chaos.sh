#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Durable runs under SIGKILL: a coordinator (`zpipe run --checkpoint`)
# running
#   range branch | odd_only | double_it workers=3 mode=process [ordered]
#                | whoami mode=remote [ordered] | identity
# served by two `zpipe worker`s, is killed with SIGKILL at random moments
# (after a random share of a checkpoint interval has passed since STATE
# last changed: some kills land in the middle of writing STATE, some
# while the remote workers hold batches), ROUNDS times, and started again
# each time with the same command; the last start runs to the end. Then
# the output file must hold exactly the outputs of an uninterrupted run:
# the same multiset of lines (the pid whoami adds aside), and for the
# `ordered` variant the same sequence. A third variant runs
#   range branch | odd_only | double_it workers=3 mode=process ordered
#                | sum_every join branch | identity
# (the join's input in one order, so that its running sums are known):
# its output must be exactly an uninterrupted run's, and its spill file
# (beside STATE) gone at the end. STATE must say the run is done, and
# running the command once more must redo nothing.
#
# usage: checkpoint_chaos.sh ZPIPE PLUGIN [ROUNDS]   (PLUGIN: cli_tasks.so)
# Waits are bounded polls; every process is ended on every way out.

set -uo pipefail

ZPIPE=$(realpath "${1:?usage: checkpoint_chaos.sh ZPIPE PLUGIN [ROUNDS]}")
TASKS=$(realpath "${2:?usage: checkpoint_chaos.sh ZPIPE PLUGIN [ROUNDS]}")
ROUNDS=${3:-10}       # kills per variant; three variants
ITEMS=${CHAOS_ITEMS:-1000000}
DEADLINE=120          # seconds any one wait may take, at most
TMP=$(mktemp -d /tmp/zp-chaos-XXXXXX)
PIDS=()

say() { echo "checkpoint_chaos: $*"; }
fail() {
    say "FAIL: $*"
    exit 1
}

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port of 127.0.0.1.
free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PORT=$(free_port)
EP=tcp://127.0.0.1:$PORT
for i in 1 2; do
    setsid "$ZPIPE" worker --connect "$EP" --plugin "$TASKS" --threads 2 \
        2>"$TMP/worker$i.err" &
    PIDS+=($!)
done

# The file's lines without whoami's pid, sorted (or as they are: $2=keep).
values() {
    sed -e 's/^\[\([^,]*\),[0-9]*\]$/\1/' "$1" | { [ "${2:-}" = keep ] && cat || sort -n; }
}

# Waits until STATE exists and differs from what it held (its bytes in $1).
wait_for_new_state() {
    local state=$1 before=$2 end=$((SECONDS + DEADLINE))
    while [ $SECONDS -lt $end ]; do
        if [ -s "$state" ] && [ "$(cat "$state" 2>/dev/null)" != "$before" ]; then
            return 0
        fi
        if ! kill -0 "$COORD" 2>/dev/null; then
            return 1 # it ended (finished, or failed)
        fi
        sleep 0.01
    done
    fail "no new checkpoint within $DEADLINE s"
}

# The outputs an uninterrupted run on $2 items gives, in $TMP/want: for
# odd i < $2, 2i; or (join) sum_every's over those, in order.
wanted() {
    if [ "$1" = join ]; then
        seq 1 2 $(($2 - 1)) | awk '{ s += 2 * $1; if (++n % 1000 == 0) printf "%.0f\n", s }
            END { printf "%.0f\n", s }' >"$TMP/want"
    else
        seq 1 2 $(($2 - 1)) | awk '{print 2 * $1}' >"$TMP/want"
    fi
}

# run_variant NAME SPEC CHECK [ITEMS]: CHECK is sorted (the same multiset
# of lines), keep (the same sequence) or join (the same sequence, the
# spill file gone).
TOTAL_KILLS=0
run_variant() {
    local name=$1 spec=$2 check=$3 items=${4:-$ITEMS}
    local out=$TMP/$name.out state=$TMP/$name.state
    local cmd=("$ZPIPE" run --plugin "$TASKS" --listen "$EP" --checkpoint "$state"
        --checkpoint-interval 50ms --output "$out" "$spec" "$items")
    local kills=0 t0=$SECONDS
    while [ $kills -lt "$ROUNDS" ]; do
        local before
        before=$(cat "$state" 2>/dev/null)
        setsid "${cmd[@]}" 2>>"$TMP/$name.err" &
        COORD=$!
        PIDS+=($COORD)
        if ! wait_for_new_state "$state" "$before"; then
            break # the run ended before a kill: the last start below checks it
        fi
        # A random moment within the next interval or so: during a write of
        # STATE, between two, while workers hold batches.
        sleep "0.0$((RANDOM % 40))"
        kill -KILL -- "-$COORD" 2>/dev/null
        wait "$COORD" 2>/dev/null
        kills=$((kills + 1))
    done
    "${cmd[@]}" 2>>"$TMP/$name.err" || {
        tail -n 20 "$TMP/$name.err"
        fail "$name: the last run failed"
    }
    say "$name: $kills kills, then done, in $((SECONDS - t0)) s"
    TOTAL_KILLS=$((TOTAL_KILLS + kills)) # a loaded machine may end a run early
    grep -q '"done": *true' "$state" || fail "$name: STATE does not say done"
    # Every output once.
    wanted "$check" "$items"
    if [ "$check" = join ] && compgen -G "$TMP/zpipe-*.spill" >/dev/null; then
        fail "$name: a spill file is left after the run ended"
    fi
    if [ "$check" != sorted ]; then
        values "$out" keep >"$TMP/got"
        cmp -s "$TMP/want" "$TMP/got" || fail "$name: outputs differ from an uninterrupted run's, in order"
    else
        values "$out" >"$TMP/got"
        cmp -s "$TMP/want" "$TMP/got" || fail "$name: outputs differ from an uninterrupted run's ($(wc -l <"$TMP/got") lines, $(wc -l <"$TMP/want") wanted)"
    fi
    # Once more: a finished STATE redoes nothing.
    local size
    size=$(stat -c %s "$out")
    "${cmd[@]}" 2>>"$TMP/$name.err" || fail "$name: running a finished STATE again failed"
    [ "$(stat -c %s "$out")" = "$size" ] || fail "$name: a finished STATE ran again"
}

STAGES="range branch | odd_only | double_it workers=3 mode=process"
run_variant unordered "$STAGES | whoami mode=remote | identity" sorted
run_variant ordered "$STAGES ordered | whoami mode=remote ordered | identity" keep
# No remote stage: as many items take a tenth of the time.
run_variant join "$STAGES ordered | sum_every join branch | identity" join $((ITEMS * 10))
[ $TOTAL_KILLS -ge $((2 * ROUNDS)) ] ||
    fail "the runs ended after $TOTAL_KILLS kills in all, fewer than $((2 * ROUNDS)) (CHAOS_ITEMS: more items)"
say "ok: $TOTAL_KILLS kills"
