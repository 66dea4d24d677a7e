#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The Python worker beside the C worker, on the same remote stage of the
same `zpipe run`, in the same invocation:

  1. trivial items: `range branch | identity mode=remote` over N items
     (default 2,000,000), one worker of one thread; the worker's CPU time
     per item (user + system, from wait4) says what the worker costs.
  2. 10 ms items: `range branch | nap mode=remote bind=10` over M items
     (default 2000), served by 4 workers of 2 threads each, beside the
     ideal of 800 items/s.

  3. where the Python worker's time goes: its batch runner alone, in this
     process, over batches of 4096 integers (as the coordinator sends
     trivial items): decoding the batch, calling `identity` on each item,
     packing the outputs into DONE, beside the bare Python loop
     `[identity(x) for x in items]`, which no worker can beat.

Rates are steady rates: the outputs (msgpack, read from zpipe run's
stdout as they come) from the 10th to the 90th percent, over the time
between them, so that the workers' start and joining (a Python worker
starts slower than a C one) count for neither; the whole run's rate is
printed beside.

Each measure runs ROUNDS times (default 3), C and Python taking turns, on
a free 127.0.0.1 port; the best round counts. Not a test: nothing is
asserted about speed. The C worker is `zpipe worker --plugin
conformance.so`, the Python one `python3 -m zpipe_worker --module
tests/conformance/tasks.py` (the twins of the conformance suite's tasks).

    /usr/bin/python3 bench/python_bench.py [--build DIR] [--items N]
        [--slow-items M] [--rounds R] [--zpipe ZPIPE --plugin PLUGIN]

or `cmake --build build --target python_bench`.
"""

import argparse
import os
import timeit
import signal
import socket
import subprocess
import sys
import time

import msgpack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def cpu_of(p, signo=None):
    """User + system seconds of process p, once it ended (signalled)."""
    if signo is not None:
        p.send_signal(signo)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


class Bench:
    def __init__(self, a):
        self.a = a
        self.zpipe = a.zpipe or os.path.join(a.build, "zpipe")
        self.plugin = a.plugin or os.path.join(a.build, "tests",
                                               "conformance.so")
        for path in (self.zpipe, self.plugin):
            if not os.path.exists(path):
                sys.exit(f"python_bench: {path} is missing: build first "
                         f"(with ZP_BUILD_TESTS=ON for the plugin)")
        self.env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1",
                        PYTHONPATH=os.path.join(ROOT, "python"))

    def worker(self, kind, ep, threads):
        argv = ([self.zpipe, "worker", "--plugin", self.plugin]
                if kind == "C" else
                [self.a.python, "-m", "zpipe_worker", "--module",
                 os.path.join(ROOT, "tests", "conformance", "tasks.py")])
        return subprocess.Popen(argv + ["--connect", ep, "--threads",
                                        str(threads)], env=self.env)

    def run(self, ep, spec, n):
        """(steady rate, whole-run rate) of a run over n items: the steady
        rate counts the outputs from the 10th to the 90th percent, by the
        times their bytes came out of the pipe (the workers' joining, the
        coordinator's slow start and the last stragglers left out)."""
        start = time.monotonic()
        run = subprocess.Popen(
            [self.zpipe, "run", "--plugin", self.plugin, "--listen", ep,
             "--format", "msgpack", spec, str(n)], stdout=subprocess.PIPE)
        chunks = []
        while True:
            chunk = run.stdout.read1(1 << 20)
            if not chunk:
                break
            chunks.append((time.monotonic(), chunk))
        end = time.monotonic()
        if run.wait() != 0:
            sys.exit(f"python_bench: zpipe run '{spec}' failed")
        u = msgpack.Unpacker(max_buffer_size=1 << 30)
        points, count = [], 0
        for t, chunk in chunks:
            u.feed(chunk)
            count += sum(1 for _ in u)
            points.append((t, count))
        if count != n:
            sys.exit(f"python_bench: {count} outputs of '{spec}', not {n}")
        t1, c1 = next(p for p in points if p[1] >= n // 10)
        t2, c2 = next(p for p in points if p[1] >= n - n // 10)
        return (c2 - c1) / (t2 - t1) if t2 > t1 else 0, n / (end - start)

    def trivial(self, kind):
        ep = free_endpoint()
        w = self.worker(kind, ep, 1)
        try:
            rate, whole = self.run(ep, "range branch | identity mode=remote",
                                   self.a.items)
        finally:
            cpu = cpu_of(w, signal.SIGTERM)
        return rate, whole, cpu / self.a.items * 1e9

    def slow(self, kind):
        ep = free_endpoint()
        ws = [self.worker(kind, ep, 2) for _ in range(4)]
        try:
            return self.run(ep, "range branch | nap mode=remote bind=10",
                            self.a.slow_items)
        finally:
            for w in ws:
                cpu_of(w, signal.SIGTERM)

    def breakdown(self):
        """ns per item of each step of the batch runner, best of rounds."""
        sys.dont_write_bytecode = True  # nothing left in the source tree
        sys.path.insert(0, os.path.join(ROOT, "python"))
        from zpipe_worker import _batch, _proto, _tasks

        def identity(x):
            return x
        items = list(range(1 << 20, (1 << 20) + 4096))
        data = (msgpack.packb(0) + msgpack.packb(len(items))
                + b"".join(msgpack.packb(i) for i in items))
        task = _tasks.Task("identity", identity)
        st = _batch.Stage("identity", 0, 0, b"", {"identity": task})
        pk, job = _batch.Packer(), (1, 2, 3, data)
        ran = _batch._run_plain(st, items)
        steps = [
            ("decode the batch", lambda: _proto.open_batch(data)),
            ("call the task", lambda: _batch._run_plain(st, items)),
            ("pack the outputs, DONE",
             lambda: _batch.answer(job, 0, ran, st, pk)),
            ("the whole batch", lambda: _batch.run_sync(job, st, pk)),
            ("bare loop [identity(x) for x in items]",
             lambda: [identity(x) for x in items]),
        ]
        return [(name, min(timeit.repeat(fn, number=200, repeat=self.a.rounds))
                 / 200 / len(items) * 1e9) for name, fn in steps]

    def best(self, measure, better):
        got = {"C": [], "Python": []}
        for _ in range(self.a.rounds):
            for kind in got:
                got[kind].append(measure(kind))
        return {k: better(v) for k, v in got.items()}, got


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="the build directory (default: build)")
    ap.add_argument("--zpipe", help="the zpipe executable (default: "
                    "BUILD/zpipe)")
    ap.add_argument("--plugin", help="the conformance plugin (default: "
                    "BUILD/tests/conformance.so)")
    ap.add_argument("--items", type=int, default=2000000)
    ap.add_argument("--slow-items", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="the interpreter of the Python worker")
    b = Bench(ap.parse_args())
    a = b.a

    print(f"{a.items} trivial items, 'range branch | identity mode=remote', "
          f"one worker of one thread, best of {a.rounds}:")
    best, every = b.best(b.trivial, lambda v: max(v, key=lambda r: r[0]))
    for kind, (rate, whole, ns) in best.items():
        rounds = ", ".join(f"{r[0] / 1e6:.2f}" for r in every[kind])
        print(f"  {kind + ' worker':14} {rate / 1e6:6.2f} M items/s "
              f"({whole / 1e6:.2f} M/s whole run), worker CPU {ns:.0f} "
              f"ns/item  [rounds: {rounds}]")
    print(f"  ratio Python / C: {best['Python'][0] / best['C'][0]:.3f}   "
          f"(target: the Python worker >= 1 M items/s)")

    print(f"{a.slow_items} items of 10 ms, 'range branch | nap mode=remote "
          f"bind=10', 4 workers of 2 threads, best of {a.rounds} "
          f"(ideal 800 items/s):")
    best, every = b.best(b.slow, lambda v: max(v, key=lambda r: r[0]))
    for kind, (rate, whole) in best.items():
        rounds = ", ".join(f"{r[0]:.0f}" for r in every[kind])
        print(f"  {kind + ' worker':14} {rate:6.0f} items/s ({whole:.0f}/s "
              f"whole run)  [rounds: {rounds}]")
    print(f"  ratio Python / C: {best['Python'][0] / best['C'][0]:.3f}   "
          f"(target: 1, as fast as C)")

    print(f"the Python worker's batch runner, batches of 4096 integers, "
          f"best of {a.rounds}:")
    steps = b.breakdown()
    for name, ns in steps:
        print(f"  {name:40} {ns:6.1f} ns/item")
    print(f"  ratio whole batch / bare loop: {steps[3][1] / steps[4][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
