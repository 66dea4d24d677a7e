#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Faults across hosts, for real: a coordinator (`zpipe run --listen`) and
# two `zpipe worker`s, each in a network namespace of its own, joined by
# veth pairs (addresses of 10.251.77.0/24, which exist in these namespaces
# only: no traffic goes anywhere else). While a run of
# `range branch | whoami mode=remote bind=MS` goes, outputs tagged with the
# pid of the worker that served them:
#   1. one worker's link goes down for 5 s, then up again;
#   2. the other worker is paused (SIGSTOP) for 6 s, then resumed;
#   3. the coordinator is killed (SIGKILL) and a new one started on the
#      same address runs the same pipeline, served by the same workers,
#      which reconnect by themselves.
# Asserts that each run completes with every output exactly once, served
# by those workers, and the exit statuses (0; 137 for the killed
# coordinator; 0 for workers stopped with SIGTERM). Prints the recovery
# times, from the end of the fault to the next output served by the
# faulted worker (for the restart: from the new coordinator's start to its
# first output); they are not asserted.
#
# usage: netns_test.sh ZPIPE PLUGIN   (the zpipe program, cli_tasks.so)
# Needs root and iproute2; exits 77 (skipped) without them, or when the
# kernel (or a container) refuses network namespaces or veth pairs. Waits are bounded polls;
# every namespace, link and process is removed on every way out.

set -uo pipefail

ZPIPE=$(realpath "${1:?usage: netns_test.sh ZPIPE PLUGIN}")
TASKS=$(realpath "${2:?usage: netns_test.sh ZPIPE PLUGIN}")
ITEMS=${NETNS_TEST_ITEMS:-12000} # of ITEM_MS each: ~15 s with both workers
ITEM_MS=5
DEADLINE=240 # seconds any run may take, at most

id=$$
NS_C=zpc-$id NS_1=zpw1-$id NS_2=zpw2-$id
NET=10.251.77
C_ADDR=$NET.1
PORT=5555
EP=tcp://$C_ADDR:$PORT
TMP=$(mktemp -d /tmp/zp-netns-XXXXXX)
PIDS=()   # processes to end on the way out
W=()      # the workers' pids: W[1], W[2]

say() { echo "netns_test: $*"; }
fail() {
    say "FAIL: $*"
    exit 1
}
skip() {
    say "SKIP: $*"
    exit 77
}

cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -CONT "$p" 2>/dev/null
        kill -KILL "$p" 2>/dev/null
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null
    done
    # Deleting a namespace deletes the veth ends in it, and their peers.
    for ns in "$NS_C" "$NS_1" "$NS_2"; do
        ip netns del "$ns" 2>/dev/null
    done
    for l in zpc1-$id zpc2-$id zpw1-$id zpw2-$id; do
        ip link del "$l" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- The hosts ------------------------------------------------------------

[ "$(id -u)" = 0 ] || skip "needs root, for network namespaces"
command -v ip >/dev/null || skip "needs iproute2 (ip); scripts/deps.sh installs it"
ip netns add "$NS_C" 2>"$TMP/ip.err" ||
    skip "ip netns add fails here: $(cat "$TMP/ip.err")"
ip netns exec "$NS_C" true 2>"$TMP/ip.err" ||
    skip "ip netns exec fails here: $(cat "$TMP/ip.err")"
if ! { ip netns add "$NS_1" && ip netns add "$NS_2"; }; then
    fail "ip netns add"
fi

# Worker k's link: zpwK in its namespace, zpcK in the coordinator's, a /32
# at each end (the coordinator's address on both of its ends).
link() { # k, worker's namespace, worker's address
    ip link add "zpc$1-$id" type veth peer name "zpw$1-$id" 2>"$TMP/ip.err" ||
        skip "cannot make a veth pair here: $(cat "$TMP/ip.err")"
    if ! { ip link set "zpc$1-$id" netns "$NS_C" &&
        ip link set "zpw$1-$id" netns "$2" &&
        ip -n "$NS_C" addr add "$C_ADDR" peer "$3/32" dev "zpc$1-$id" &&
        ip -n "$2" addr add "$3" peer "$C_ADDR/32" dev "zpw$1-$id" &&
        ip -n "$NS_C" link set "zpc$1-$id" up &&
        ip -n "$2" link set "zpw$1-$id" up; }; then
        fail "setting up link $1"
    fi
}
for ns in "$NS_C" "$NS_1" "$NS_2"; do
    ip -n "$ns" link set lo up || fail "lo up in $ns"
done
link 1 "$NS_1" "$NET.2"
link 2 "$NS_2" "$NET.3"

# ---- Processes --------------------------------------------------------------

now() { echo "$EPOCHREALTIME"; }

# Whether process $1 has ended (a zombie has).
gone() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
    [ "$state" = Z ]
}

# Waits up to $2 seconds for process $1 to end; its exit status in STATUS.
# Once reaped, its pid is no longer ours to end.
await_exit() {
    local end=$((SECONDS + $2)) p left=()
    while ! gone "$1"; do
        [ $SECONDS -lt $end ] || fail "process $1 still runs after $2 s"
        sleep 0.1
    done
    wait "$1"
    STATUS=$?
    for p in "${PIDS[@]}"; do
        [ "$p" = "$1" ] || left+=("$p")
    done
    PIDS=("${left[@]}")
}

start_worker() { # k, namespace
    ip netns exec "$2" "$ZPIPE" worker --connect "$EP" --plugin "$TASKS" \
        --threads 2 2>"$TMP/worker$1.err" &
    W[$1]=$!
    PIDS+=("$!")
}

# Starts a coordinator whose outputs, each line stamped with the time it
# was read, go to $TMP/$1.out. Sets COORD and STAMP (the stamping reader).
start_run() {
    mkfifo "$TMP/$1.fifo"
    while IFS= read -r line; do
        printf '%s %s\n' "$EPOCHREALTIME" "$line"
    done <"$TMP/$1.fifo" >"$TMP/$1.out" &
    STAMP=$!
    PIDS+=("$!")
    ip netns exec "$NS_C" "$ZPIPE" run --listen "$EP" --plugin "$TASKS" \
        --wait-workers 60s "range branch | whoami mode=remote bind=$ITEM_MS" \
        "$ITEMS" >"$TMP/$1.fifo" 2>"$TMP/$1.err" &
    COORD=$!
    PIDS+=("$!")
}

# Outputs of run $1 served by pid $2 so far.
served_by() {
    local n
    n=$(grep -c ",$2\]\$" "$TMP/$1.out" 2>/dev/null)
    echo "${n:-0}"
}

# Waits until both workers served outputs of run $1.
await_both_serving() {
    local end=$((SECONDS + 60))
    until [ "$(served_by "$1" "${W[1]}")" -gt 0 ] &&
        [ "$(served_by "$1" "${W[2]}")" -gt 0 ]; do
        [ $SECONDS -lt $end ] || fail "$1: both workers did not serve within 60 s: $(cat "$TMP/$1.err")"
        gone "$COORD" && fail "$1: the run ended early: $(cat "$TMP/$1.err")"
        sleep 0.1
    done
}

# Waits for the end of run $1, expecting exit status $2.
finish_run() {
    await_exit "$COORD" "$DEADLINE"
    [ "$STATUS" = "$2" ] ||
        fail "$1: zpipe run exited with $STATUS, not $2: $(tail -5 "$TMP/$1.err")"
    await_exit "$STAMP" 30
}

# Every output of run $1 exactly once, each served by one of the workers.
check_outputs() {
    awk -v n="$ITEMS" -v w1="${W[1]}" -v w2="${W[2]}" '
        { if (split($2, f, /[][,]/) != 4) { print "malformed: " $0; bad = 1; next }
          item = f[2]; pid = f[3]
          if (pid != w1 && pid != w2) { print "served by pid " pid ": " $0; bad = 1 }
          if (seen[item]++) { print "twice: item " item; bad = 1 }
          by[pid]++ }
        END { for (i = 0; i < n; i++) if (!(i in seen)) { print "missing: item " i; bad = 1; break }
              printf "%d outputs, %d by worker 1, %d by worker 2\n", NR, by[w1], by[w2]
              exit bad }' "$TMP/$1.out" >"$TMP/$1.check"
    local rc=$?
    [ $rc = 0 ] || fail "$1: $(head -5 "$TMP/$1.check")"
    say "$1: $(tail -1 "$TMP/$1.check")"
}

# Seconds from time $3 to the first output of run $1 served by pid $2 (any
# pid when $2 is empty) after it, or "none" (the run ended first).
recovery() {
    awk -v pid="$2" -v t="$3" '
        $1 > t && (pid == "" || $2 ~ "," pid "]$") { printf "%.2f s", $1 - t; found = 1; exit }
        END { if (!found) print "none (the run ended first)" }' "$TMP/$1.out"
}

# ---- The faults -------------------------------------------------------------

start_worker 1 "$NS_1"
start_worker 2 "$NS_2"

# 1. Worker 1's link down for 5 s.
start_run link
await_both_serving link
ip -n "$NS_1" link set "zpw1-$id" down || fail "link down"
sleep 5
ip -n "$NS_1" link set "zpw1-$id" up || fail "link up"
t=$(now)
finish_run link 0
check_outputs link
say "link down 5 s: worker 1 served again $(recovery link "${W[1]}" "$t") after its link came back"

# 2. Worker 2 paused for 6 s.
start_run pause
await_both_serving pause
kill -STOP "${W[2]}"
sleep 6
kill -CONT "${W[2]}"
t=$(now)
finish_run pause 0
check_outputs pause
say "paused 6 s: worker 2 served again $(recovery pause "${W[2]}" "$t") after SIGCONT"

# 3. The coordinator killed, and a new one on the same address.
start_run killed
await_both_serving killed
say "killing the coordinator (SIGKILL)"
kill -KILL "$COORD"
finish_run killed 137
t=$(now)
start_run restart
finish_run restart 0
check_outputs restart
say "coordinator killed: the new one's first output $(recovery restart "" "$t") after it started"

# The workers served it all, and leave cleanly.
for k in 1 2; do
    kill -TERM "${W[$k]}"
    await_exit "${W[$k]}" 30
    [ "$STATUS" = 0 ] || fail "worker $k exited with $STATUS: $(tail -5 "$TMP/worker$k.err")"
done
say "PASS"
