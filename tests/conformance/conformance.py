#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The worker conformance suite: what any worker of zpipe's wire protocol
(docs/protocol.md) must do, checked against the real `zpipe run` and, for
a few messages the CLI cannot provoke, against a scripted coordinator.

    conformance.py --zpipe ZPIPE --plugin TASKS.so [--only WORD]... \\
                   -- WORKER COMMAND...

ZPIPE is the zpipe executable (the coordinator, and `zpipe keygen`);
TASKS.so the plugin of tests/plugins/conformance.c, which the coordinator
loads to know the names of the tasks. The worker command is run as it is,
followed by `--connect ENDPOINT`, often `--threads N`, and for CURVE
`--curve-server FILE --curve-secret FILE`: the options of `zpipe worker`.
The worker must serve the tasks of tests/plugins/conformance.c (and
`identity`), with the same behaviour. For example:

    conformance.py --zpipe build/zpipe --plugin build/tests/conformance.so \\
        -- build/zpipe worker --plugin build/tests/conformance.so
    PYTHONPATH=python conformance.py ... \\
        -- /usr/bin/python3 -m zpipe_worker --module tests/conformance/tasks.py

Each check starts its own processes on a free 127.0.0.1 port in a temporary
directory, waits for what it needs (never for a fixed time), and kills
every process it started, also when it fails. The last line says
`N passed, N failed`; the exit status is 1 when a check failed, 2 on a
usage error.
"""

import argparse
import collections
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import msgpack
import zmq

TASKS = {"identity", "whoami", "fail_on", "flaky", "nap", "spin", "gate",
         "meet"}
CREDIT_PER_THREAD = 16384
RUN_S = 120       # the longest a run may take
EXIT_S = 30       # the longest a worker may take to end when asked
HELLO, STAGE, ITEM, OUT, DONE, FAIL, HEARTBEAT, BYE = 1, 3, 4, 5, 6, 7, 8, 9


class Failed(Exception):
    """A check found the worker wrong; the text says how."""


def expect(cond, what):
    if not cond:
        raise Failed(what)


def wait_until(pred, timeout, what):
    """Waits for pred() to be true, looking every 20 ms, for at most
    `timeout` seconds (then the check fails, saying `what`)."""
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise Failed(f"after {timeout} s: {what}")
        time.sleep(0.02)


def _die_with_parent():
    """In the child, before exec: SIGKILL when the suite dies (Linux)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # SET_PDEATHSIG


class Proc:
    """A process of a check, its stdout and stderr in files."""

    def __init__(self, argv, folder, name):
        self.argv, self.name = argv, name
        self.out_path = os.path.join(folder, f"{name}.out")
        self.err_path = os.path.join(folder, f"{name}.err")
        with open(self.out_path, "wb") as out, \
                open(self.err_path, "wb") as err:
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                      stdout=out, stderr=err,
                                      preexec_fn=_die_with_parent)

    def text(self, which="out"):
        with open(self.out_path if which == "out" else self.err_path,
                  encoding="utf-8", errors="replace") as f:
            return f.read()

    def lines(self):
        return [line for line in self.text().splitlines() if line.strip()]

    def running(self):
        return self.p.poll() is None

    def finish(self, timeout=RUN_S):
        """Its exit status, once it ended (at most `timeout` s)."""
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failed(f"{self.name} did not end within {timeout} s") \
                from None

    def signal(self, signo):
        if self.running():
            self.p.send_signal(signo)

    def kill(self):
        self.signal(signal.SIGKILL)
        self.p.wait()


class Check:
    """What one check has: its folder, its port, its processes."""

    def __init__(self, suite, name):
        self.suite, self.name = suite, name
        self.dir = tempfile.mkdtemp(prefix=f"zpipe-conformance-{name[:20]}-")
        self.procs = []
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"

    def start(self, argv, name):
        p = Proc(argv, self.dir, f"{len(self.procs)}-{name}")
        self.procs.append(p)
        return p

    def worker(self, threads=None, curve=None, endpoint=None):
        argv = self.suite.worker + ["--connect", endpoint or self.endpoint]
        if threads is not None:
            argv += ["--threads", str(threads)]
        if curve is not None:
            argv += ["--curve-server", curve[0], "--curve-secret", curve[1]]
        return self.start(argv, "worker")

    def run(self, spec, args, *more, wait="60s"):
        """`zpipe run` of spec over args with a remote stage at the check's
        endpoint, started (call finish() on it)."""
        argv = [self.suite.zpipe, "run", "--plugin", self.suite.plugin,
                "--listen", self.endpoint, "--wait-workers", wait, *more,
                spec, json.dumps(args)]
        return self.start(argv, "run")

    def zpipe(self, *args):
        """Runs `zpipe ARGS` in the check's folder; its exit status."""
        return subprocess.run([self.suite.zpipe, *args], cwd=self.dir,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL,
                              timeout=RUN_S).returncode

    def path(self, name):
        return os.path.join(self.dir, name)

    def cleanup(self):
        for p in self.procs:
            p.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self):
        """The last lines of each process's stderr, for a failure."""
        parts = []
        for p in self.procs:
            err = p.text("err").strip().splitlines()[-15:]
            if err:
                parts.append(f"  --- {p.name} ({' '.join(p.argv)}):\n    "
                             + "\n    ".join(err))
        return "\n".join(parts)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finished_ok(run):
    rc = run.finish()
    expect(rc == 0, f"zpipe run exited with {rc}: "
           f"{run.text('err').strip()[-500:]}")
    return [json.loads(line) for line in run.lines()]


def once_each(outputs, want, what="outputs"):
    seen = collections.Counter(json.dumps(o) for o in outputs)
    dups = [k for k, c in seen.items() if c > 1]
    missing = {json.dumps(w) for w in want} - set(seen)
    extra = set(seen) - {json.dumps(w) for w in want}
    expect(not dups, f"{what} more than once: {dups[:5]}")
    expect(not missing, f"{len(missing)} {what} missing: "
           f"{sorted(missing)[:5]}")
    expect(not extra, f"unexpected {what}: {sorted(extra)[:5]}")


def stats(path):
    with open(path) as f:
        return json.load(f)["stages"]


def ended_cleanly(worker, signo=signal.SIGTERM):
    worker.signal(signo)
    rc = worker.finish(EXIT_S)
    expect(rc == 0, f"the worker exited with {rc} after "
           f"{signal.Signals(signo).name}, not 0")


# ---- A scripted coordinator -------------------------------------------------

class Coordinator:
    """A ROUTER socket at the check's endpoint that speaks the protocol as
    the suite tells it to: for messages zpipe run never sends on demand."""

    def __init__(self, check):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.bind(check.endpoint)
        check.procs.append(self)  # closed with the check's processes
        self.name = "coordinator"
        self.argv = ["(scripted)"]

    def send(self, peer, *fields):
        self.sock.send_multipart([peer, msgpack.packb([1, *fields])])

    def recv(self, what, beat_to=None, timeout=20):
        """The next message other than HEARTBEAT: (peer, [type, field...]).
        Meanwhile it sends `beat_to` a HEARTBEAT at least every half second,
        so that the worker never goes 3 s (ZP__SILENCE_MS) without hearing from it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if beat_to is not None:
                self.send(beat_to, HEARTBEAT)
            if not self.sock.poll(500):
                continue
            peer, body = self.sock.recv_multipart()
            msg = msgpack.unpackb(body, raw=False, strict_map_key=False)
            expect(isinstance(msg, list) and len(msg) >= 2 and msg[0] == 1,
                   f"a message that is not [1, type, ...]: {msg!r}")
            if msg[1] != HEARTBEAT:
                return peer, msg[1:]
        raise Failed(f"no {what} within {timeout} s")

    def hello(self):
        """The worker's HELLO: (peer, HELLO's fields)."""
        peer, msg = self.recv("HELLO")
        expect(msg[0] == HELLO, f"the first message was not HELLO: {msg!r}")
        return peer, msg[1:]

    # The check's cleanup treats it as one of its processes.
    def kill(self):
        self.sock.close(0)
        self.ctx.term()

    def text(self, which="out"):
        return ""


def framed(seq, items):
    return (msgpack.packb(seq) + msgpack.packb(len(items))
            + b"".join(msgpack.packb(i) for i in items))


def unframed(data):
    u = msgpack.Unpacker(raw=False)
    u.feed(data)
    seq, count = u.unpack(), u.unpack()
    return seq, [u.unpack() for _ in range(count)], list(u)


# ---- The checks -------------------------------------------------------------

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


@check
def says_hello_with_its_capacity_and_tasks(t):
    coord = Coordinator(t)
    t.worker(threads=3)
    _, f = coord.hello()
    expect(len(f) == 4, f"HELLO has {len(f)} fields, not 4 (name, pid, "
           f"capacity, tasks): {f!r}")
    name, pid, capacity, tasks = f
    expect(isinstance(name, str), f"HELLO name {name!r} is not a str")
    expect(isinstance(pid, int) and 0 <= pid < 1 << 32, f"HELLO pid {pid!r}")
    expect(capacity == 3 * CREDIT_PER_THREAD,
           f"HELLO capacity {capacity!r} with --threads 3, not "
           f"{3 * CREDIT_PER_THREAD}")
    expect(isinstance(tasks, list) and TASKS <= set(tasks),
           f"HELLO tasks {tasks!r} lack {sorted(TASKS - set(tasks))}")


@check
def answers_the_coordinators_hello(t):
    coord = Coordinator(t)
    t.worker()
    peer, _ = coord.hello()
    coord.send(peer, HELLO, "coordinator", os.getpid(), 1, [])
    _, msg = coord.recv("HELLO in answer to the coordinator's", beat_to=peer)
    expect(msg[0] == HELLO, f"it answered HELLO with {msg!r}")


@check
def runs_a_batch_and_answers_done(t):
    coord = Coordinator(t)
    t.worker()
    peer, _ = coord.hello()
    coord.send(peer, STAGE, 7, 1, "whoami", 0, 0, b"")
    coord.send(peer, ITEM, 7, 1, 42, framed(10, [5, 6, 7]))
    _, msg = coord.recv("DONE", beat_to=peer)
    expect(msg[0] == DONE, f"a batch of 3 whoami items got {msg!r}")
    expect(len(msg) in (7, 8), f"DONE has {len(msg) - 1} fields, not 6 or 7")
    run, stage, batch, outputs, retried, skipped = msg[1:7]
    busy = msg[7] if len(msg) == 8 else None
    expect(busy is None or (isinstance(busy, int) and busy >= 0),
           f"DONE's busy is {busy!r}, not a count of nanoseconds")
    expect((run, stage, batch) == (7, 1, 42),
           f"DONE for run {run} stage {stage} batch {batch}, not 7 1 42")
    expect((retried, skipped) == (0, 0), f"retried {retried} skipped "
           f"{skipped}, not 0 0")
    _, outs, rest = unframed(outputs)
    expect(not rest, f"bytes after the outputs: {rest!r}")
    expect([o[0] for o in outs] == [5, 6, 7], f"outputs {outs!r}")


@check
def answers_every_item_even_without_its_task(t):
    coord = Coordinator(t)
    t.worker()
    peer, _ = coord.hello()
    coord.send(peer, STAGE, 7, 2, "no_such_task", 0, 0, b"")
    coord.send(peer, ITEM, 7, 2, 1, framed(3, [1]))
    _, msg = coord.recv("FAIL for a task it lacks", beat_to=peer)
    expect(msg[0] == FAIL and msg[1:4] == [7, 2, 1],
           f"an item of a task it lacks got {msg!r}, not FAIL")
    expect("no_such_task" in msg[5], f"its FAIL does not name the task: "
           f"{msg[5]!r}")
    coord.send(peer, ITEM, 7, 3, 2, framed(0, [1]))  # no STAGE for it
    _, msg = coord.recv("FAIL for an item without STAGE", beat_to=peer)
    expect(msg[0] == FAIL and msg[1:4] == [7, 3, 2],
           f"an item without STAGE got {msg!r}, not FAIL")


@check
def drops_malformed_messages_and_goes_on(t):
    coord = Coordinator(t)
    worker = t.worker()
    peer, _ = coord.hello()
    for body in (b"", b"\xc1", b"\x92\x02\x08", b"\x92\x01\x63",
                 msgpack.packb([1, ITEM, 1, 1]), msgpack.packb([1, DONE]),
                 msgpack.packb([1, STAGE, -1, 1, "x", 0, 0, b""]),
                 msgpack.packb([1, STAGE, 1, 1, "x", 4, 0, b""]),
                 msgpack.packb([1, ITEM, 1, 1, 1, "not a bin"]),
                 msgpack.packb([1, HEARTBEAT]) + b"\x00"):
        coord.sock.send_multipart([peer, body])
    coord.send(peer, HELLO, "coordinator", os.getpid(), 1, [])
    _, msg = coord.recv("HELLO after malformed messages", beat_to=peer)
    expect(msg[0] == HELLO, f"after malformed messages it sent {msg!r}")
    expect(worker.running(), "the worker ended")


@check
def leaves_on_the_coordinators_bye(t):
    coord = Coordinator(t)
    worker = t.worker()
    peer, _ = coord.hello()
    coord.send(peer, BYE, "run over")
    rc = worker.finish(EXIT_S)
    expect(rc == 0, f"it exited with {rc} after BYE, not 0")


@check
def serves_a_remote_stage_and_stays_for_the_next_run(t):
    worker = t.worker(threads=2)  # before its coordinator: it waits
    for n in (500, 50):
        outs = finished_ok(t.run("range branch | whoami mode=remote", [n]))
        once_each([o[0] for o in outs], range(n), "items")
    expect(worker.running(), "the worker ended after a run")
    ended_cleanly(worker)


@check
def outputs_arrive_once_when_a_worker_is_killed_mid_batch(t):
    n, at = 30000, 20000
    open(t.path("hold"), "w").close()
    run = t.run(f"range branch | gate mode=remote bind=[{at}, "
                f"{json.dumps(t.dir)}]", [n])
    first = t.worker()
    wait_until(lambda: os.path.exists(t.path("reached")), RUN_S,
               f"the worker did not reach item {at}")
    first.kill()
    os.unlink(t.path("hold"))
    t.worker()
    once_each(finished_ok(run), range(n))


@check
def heartbeats_while_a_task_runs_5_s(t):
    worker = t.worker()
    run = t.run("range branch | spin mode=remote bind=5000", [1])
    expect(finished_ok(run) == [0], "spin did not pass its item on")
    err = run.text("err")
    expect("stopped answering" not in err, f"the coordinator gave the worker "
           f"up while its task ran: {err.strip()}")
    ended_cleanly(worker)


@check
def a_failure_reaches_the_coordinator(t):
    t.worker()
    run = t.run("range branch | fail_on mode=remote bind=7", [20])
    rc = run.finish()
    err = run.text("err")
    expect(rc == 1, f"zpipe run exited with {rc}, not 1")
    expect("task 'fail_on' failed on item 7: " in err
           and "7 is the bad one" in err,
           f"zpipe run did not say which item failed and why: {err.strip()}")


@check
def retries_failed_items(t):
    t.worker(threads=2)
    run = t.run("range branch | flaky mode=remote retries=2 bind=2", [40],
                "--stats", t.path("stats.json"))
    once_each(finished_ok(run), range(40))
    st = stats(t.path("stats.json"))[1]
    expect(st["retried"] == 80, f"{st['retried']} retries counted, not 80")
    # One retry less than needed: the run fails with the task's message.
    run = t.run("range branch | flaky mode=remote retries=1 bind=2",
                [100, 110])
    rc, err = run.finish(), run.text("err")
    expect(rc == 1 and "attempt 2 at item 10" in err,
           f"zpipe run exited with {rc}: {err.strip()}")


@check
def skips_failed_items(t):
    t.worker(threads=2)
    run = t.run("range branch | fail_on mode=remote on_error=skip retries=2 "
                "bind=7", [20], "--stats", t.path("stats.json"))
    once_each(finished_ok(run), [i for i in range(20) if i != 7])
    st = stats(t.path("stats.json"))[1]
    expect((st["skipped"], st["retried"]) == (1, 2),
           f"skipped {st['skipped']}, retried {st['retried']}: not 1, 2")


@check
def runs_as_many_items_at_once_as_its_threads(t):
    t.worker(threads=4)
    run = t.run("range branch | meet mode=remote bind=4", [16])
    once_each(finished_ok(run), range(16))


@check
def says_bye_on_sigterm_also_while_a_task_runs(t):
    coord = Coordinator(t)
    worker = t.worker()
    peer, _ = coord.hello()
    worker.signal(signal.SIGTERM)  # idle
    _, msg = coord.recv("BYE after SIGTERM")
    expect(msg[0] == BYE, f"after SIGTERM it sent {msg!r}, not BYE")
    expect(worker.finish(EXIT_S) == 0, "it did not exit with status 0")
    worker = t.worker()
    peer, _ = coord.hello()
    coord.send(peer, STAGE, 1, 1, "nap", 0, 0, msgpack.packb(300))
    coord.send(peer, ITEM, 1, 1, 1, framed(0, [0]))
    coord.send(peer, ITEM, 1, 1, 2, framed(1, [1]))
    worker.signal(signal.SIGTERM)  # busy: BYE, maybe after DONE
    msg = [DONE]
    while msg[0] == DONE:
        _, msg = coord.recv("BYE after SIGTERM in a task")
    expect(msg[0] == BYE, f"after SIGTERM in a task it sent {msg!r}, not BYE")
    expect(worker.finish(EXIT_S) == 0, "it did not exit with status 0")


@check
def items_of_a_worker_ended_by_sigterm_run_elsewhere(t):
    first = t.worker()
    run = t.run("range branch | nap mode=remote bind=300", [20])
    wait_until(lambda: len(run.lines()) >= 2, RUN_S,
               "no outputs from the first worker")
    ended_cleanly(first)
    t.worker()
    once_each(finished_ok(run), range(20))


@check
def rejoins_a_restarted_coordinator(t):
    worker = t.worker()
    first = t.run("range branch | nap mode=remote bind=100", [100])
    wait_until(lambda: len(first.lines()) >= 1, RUN_S,
               "no outputs from the first coordinator")
    first.kill()
    outs = finished_ok(t.run("range branch | whoami mode=remote", [50]))
    once_each([o[0] for o in outs], range(50), "items")
    ended_cleanly(worker)


def keys(t, *names):
    for name in names:
        expect(t.zpipe("keygen", name) == 0, f"zpipe keygen {name} failed")


@check
def curve_keys_from_keygen_are_accepted(t):
    keys(t, "server", "worker")
    worker = t.worker(curve=(t.path("server.pub"), t.path("worker.key")))
    run = t.run("range branch | whoami mode=remote", [50], "--curve-secret",
                t.path("server.key"), "--curve-allow", t.path("worker.pub"))
    once_each([o[0] for o in finished_ok(run)], range(50), "items")
    ended_cleanly(worker)


@check
def a_curve_key_not_allowed_is_refused(t):
    keys(t, "server", "worker", "intruder")
    intruder = t.worker(curve=(t.path("server.pub"), t.path("intruder.key")))
    run = t.run("range branch | whoami mode=remote", [50], "--curve-secret",
                t.path("server.key"), "--curve-allow", t.path("worker.pub"))
    wait_until(lambda: "refused a CURVE client" in run.text("err"), RUN_S,
               "the coordinator did not say it refused the intruder")
    t.worker(curve=(t.path("server.pub"), t.path("worker.key")))
    outs = finished_ok(run)
    once_each([o[0] for o in outs], range(50), "items")
    expect(len({o[1] for o in outs}) == 1,
           f"items served by {len({o[1] for o in outs})} processes: the "
           f"intruder served some")
    expect(intruder.running(), "the refused worker ended")
    ended_cleanly(intruder)


@check
def a_bad_key_file_is_a_usage_error(t):
    keys(t, "server", "worker")
    bad = t.worker(curve=(t.path("server.pub"), t.path("server.pub")))
    rc = bad.finish(EXIT_S)
    err = bad.text("err")
    expect(rc == 2 and "server.pub" in err,
           f"a public key as secret key: exit status {rc}, {err.strip()!r}")
    half = t.start(t.suite.worker + ["--connect", t.endpoint,
                                     "--curve-server", t.path("server.pub")],
                   "worker")
    rc = half.finish(EXIT_S)
    expect(rc == 2, f"--curve-server without --curve-secret: exit status {rc}")


# ---- Running them -----------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(
        description="zpipe's worker conformance suite",
        usage="%(prog)s --zpipe ZPIPE --plugin TASKS.so [--only WORD]... "
              "-- WORKER COMMAND...")
    ap.add_argument("--zpipe", required=True)
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--only", action="append", default=[],
                    help="run the checks whose name holds WORD")
    ap.add_argument("worker", nargs=argparse.REMAINDER)
    suite = ap.parse_args()
    if suite.worker[:1] == ["--"]:
        suite.worker = suite.worker[1:]
    if not suite.worker:
        ap.error("the worker command is missing after --")
    suite.zpipe = os.path.abspath(suite.zpipe)
    suite.plugin = os.path.abspath(suite.plugin)
    # A signal (ctest's timeout) ends the suite through its cleanups.
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    passed = failed = 0
    for fn in CHECKS:
        name = fn.__name__
        if suite.only and not any(w in name for w in suite.only):
            continue
        t, start = Check(suite, name), time.monotonic()
        try:
            fn(t)
            passed += 1
            print(f"ok   {name} ({time.monotonic() - start:.1f} s)",
                  flush=True)
        except Exception as e:
            failed += 1
            why = str(e) if isinstance(e, Failed) else traceback.format_exc()
            print(f"FAIL {name}: {why}\n{t.logs()}", flush=True)
        finally:
            t.cleanup()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
