# SPDX-License-Identifier: MIT
"""Kills examples/sqlite_sink with SIGKILL at random moments and checks
that its SQLite table ends with each row exactly once.

Usage: sqlite_sink_test.py SQLITE_SINK [N]

Each start of the sink is killed, with its process workers (its process
group), once it has committed at least one new checkpoint: sometimes right
after it saw the token row change, sometimes a random part of a checkpoint
interval later. The kills are spread over the run by the committed item
count (the K of the token), so that at least KILLS of them happen before
the run ends whatever the machine's speed. After each kill the committed
rows must be exactly the first K rows; the last start runs to the end,
and then the table must hold n = 0..N-1 once each. A start after that exits
0 at once without touching the table.

Part of the suite (tests/CMakeLists.txt); it only runs the example program
and reads its database.
"""
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

KILLS = 12          # at least 10 asked for; a few more leave slack
EVERY_MS = 50       # the sink's checkpoint interval
POLL_S = 0.002      # how often the token row is read
DEADLINE_S = 240    # the whole test, on a busy two-core machine
START_S = 60        # one start's wait for its first new checkpoint


def fail(msg):
    raise SystemExit("sqlite_sink_test: FAIL: " + msg)


def connect(db):
    return sqlite3.connect(db, timeout=10, isolation_level=None)


def read_token(db):
    """The committed token, or None: cheap enough to poll."""
    con = connect(db)
    try:
        row = con.execute("SELECT token FROM checkpoint WHERE id = 0"
                          ).fetchone()
        return row[0] if row else None
    except sqlite3.OperationalError:  # no table yet
        return None
    finally:
        con.close()


def read(db):
    """(token or None, rows, distinct n, sum n, max n) as committed."""
    con = connect(db)
    try:
        have = con.execute("SELECT count(*) FROM sqlite_master WHERE name IN"
                           " ('squares', 'checkpoint')").fetchone()[0]
        if have < 2:
            return None, 0, 0, 0, -1
        token = con.execute("SELECT token FROM checkpoint WHERE id = 0"
                            ).fetchone()
        rows, distinct, total, top = con.execute(
            "SELECT count(*), count(DISTINCT n), coalesce(sum(n), 0),"
            " coalesce(max(n), -1) FROM squares").fetchone()
        bad = con.execute("SELECT count(*) FROM squares WHERE sq != n * n"
                          ).fetchone()[0]
        if bad:
            fail("%d rows with sq != n*n" % bad)
        return token[0] if token else None, rows, distinct, total, top
    finally:
        con.close()


def committed_k(token):
    return 0 if token is None else int(token.rsplit(".", 1)[1])


def check_prefix(db):
    """The committed rows are exactly n = 0..K-1 of the committed token."""
    token, rows, distinct, total, top = read(db)
    k = committed_k(token)
    if (rows, distinct, total, top) != (k, k, k * (k - 1) // 2, k - 1):
        fail("token %s but %d rows, %d distinct, sum %d, max %d"
             % (token, rows, distinct, total, top))
    return token, k


def start(sink, db, n):
    return subprocess.Popen([sink, db, str(n), str(EVERY_MS)],
                            stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def group_alive(pgid):
    """Members of the process group that are not zombies."""
    alive = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(pid))
    return alive


def kill_group(proc):
    """SIGKILLs the sink and its process workers, reaps the sink, and
    waits until no member of its group is left."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    proc.stderr.close()
    limit = time.monotonic() + 10
    while group_alive(proc.pid):
        if time.monotonic() > limit:
            fail("processes %s outlived the kill" % group_alive(proc.pid))
        time.sleep(0.01)


def kill_once(sink, db, n, target, deadline):
    """Starts the sink, waits for a new commit at K >= target (or the
    first new commit when the run is already past it), kills it right
    away or a random moment later. Returns False if the run ended
    first."""
    before = read_token(db)
    proc = start(sink, db, n)
    try:
        limit = min(deadline, time.monotonic() + START_S)
        seen = before
        while True:
            if proc.poll() is not None:
                if proc.returncode != 0:
                    fail("sqlite_sink exited %d: %s"
                         % (proc.returncode, proc.stderr.read().strip()))
                return False
            if time.monotonic() > limit:
                fail("no new checkpoint within %d s (token %s)"
                     % (START_S, seen))
            token = read_token(db)
            if token != seen and token is not None:
                seen = token
                if token.endswith(".done"):
                    return False
                if committed_k(token) >= target:
                    break
            time.sleep(POLL_S)
        if random.random() < 0.5:
            time.sleep(random.uniform(0, 2 * EVERY_MS / 1000))
        return proc.poll() is None
    finally:
        kill_group(proc)


def main():
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: sqlite_sink_test.py SQLITE_SINK [N]")
    sink = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) == 3 else 2000000
    seed = int(os.environ.get("SEED", time.time_ns() % 100000))
    random.seed(seed)
    deadline = time.monotonic() + DEADLINE_S
    with tempfile.TemporaryDirectory(prefix="sqlite_sink_test.") as tmp:
        db = os.path.join(tmp, "squares.db")
        kills = 0
        while kills < KILLS:
            target = n * (kills + 1) // (KILLS + 3)
            if not kill_once(sink, db, n, target, deadline):
                break
            kills += 1
            token, k = check_prefix(db)
            print("kill %d: committed %s (%d rows)" % (kills, token, k),
                  flush=True)
        if kills < 10:
            fail("the run ended after %d kills: N=%d is too small for "
                 "this machine" % (kills, n))
        proc = start(sink, db, n)
        try:
            _, err = proc.communicate(timeout=max(1, deadline -
                                                  time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_group(proc)
            fail("the last start did not finish in time")
        sys.stderr.write(err)
        if proc.returncode != 0:
            fail("the last start exited %d" % proc.returncode)
        token, rows, distinct, total, _ = read(db)
        want = (n, n, n * (n - 1) // 2)
        if not (token or "").endswith(".done") or \
                (rows, distinct, total) != want:
            fail("finished with token %s: %d rows, %d distinct, sum %d; "
                 "want %d, %d, %d" % ((token, rows, distinct, total) + want))
        # Finished: a new start exits 0 at once and changes nothing.
        again = subprocess.run([sink, db, str(n), str(EVERY_MS)],
                               stdin=subprocess.DEVNULL, timeout=60,
                               capture_output=True, text=True)
        if again.returncode != 0 or "finished" not in again.stderr or \
                read(db) != (token, rows, distinct, total, n - 1):
            fail("a start after the end: exit %d, %s"
                 % (again.returncode, again.stderr.strip()))
    print("sqlite_sink_test: %d kills, %d rows exactly once (seed %d)"
          % (kills, n, seed))


if __name__ == "__main__":
    main()
