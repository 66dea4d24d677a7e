#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Tests of zpipe_worker that tests/conformance does not make: the Python
side of tasks (kinds, NOTHING, bind, exceptions, retries and skip, what
msgpack values survive), async tasks, the wire encoding, key files and the
command line. Batches run through the module's functions directly, workers
as processes talking to a scripted coordinator (a ROUTER socket here) or,
with $ZPIPE and $ZPIPE_CONFORMANCE_PLUGIN set, to `zpipe run`.

    PYTHONPATH=python /usr/bin/python3 tests/python/worker_test.py
"""

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import unittest

import msgpack
import zmq

import zpipe_worker
from zpipe_worker import _batch, _keys, _proto, _serve, _tasks

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.join(HERE, "..", "..", "python")
WAIT_S = 30  # the longest any wait here may take


def framed(seq, items):
    return (msgpack.packb(seq) + msgpack.packb(len(items))
            + b"".join(msgpack.packb(i, use_bin_type=True) for i in items))


def unframed(data):
    u = msgpack.Unpacker(raw=True, strict_map_key=False)
    u.feed(data)
    u.unpack()  # seq: 0 in outputs
    count = u.unpack()
    return [u.unpack() for _ in range(count)]


def stage(fn, flags=0, retries=0, bind=b""):
    """A Stage of a task made of fn, registered nowhere."""
    t = _tasks.Task(fn.__name__, fn)
    return _batch.Stage(t.name, flags, retries, bind, {t.name: t})


def answer(msgs):
    """The bodies of a batch's answer, decoded."""
    return [_proto.decode(m) for m in msgs]


def run(fn, items, seq=0, log=None, **kw):
    """Runs items through fn as a batch: ('DONE', outputs, retried,
    skipped) or ('FAIL', seq, message). What it writes on stderr goes to
    `log` (a list) when given."""
    st = stage(fn, **kw)
    job = (1, 2, 3, framed(seq, items))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        if st.task.is_async:
            msgs = asyncio.run(_await(job, st))
        else:
            msgs = _batch.run_sync(job, st, _batch.Packer())
    if log is not None:
        log.append(err.getvalue())
    return _result(answer(msgs))


async def _await(job, st, capacity=64):
    return await _batch.run_async(job, st, asyncio.Semaphore(capacity),
                                  _batch.Packer())


def _result(decoded):
    outs = []
    for kind, f in decoded:
        if kind == _proto.FAIL:
            return ("FAIL", f[3], f[4])
        outs += unframed(f[3])
        if kind == _proto.DONE:
            return ("DONE", outs, f[4], f[5])
    raise AssertionError(f"no DONE or FAIL in {decoded!r}")


class Tasks(unittest.TestCase):
    def test_a_function_returns_one_output_and_none_is_nil(self):
        def f(x):
            return None if x == 2 else x * 10
        self.assertEqual(run(f, [1, 2, 3]), ("DONE", [10, None, 30], 0, 0))

    def test_nothing_filters_an_item_out(self):
        def evens(x):
            return x if x % 2 == 0 else zpipe_worker.NOTHING
        self.assertEqual(run(evens, list(range(7))),
                         ("DONE", [0, 2, 4, 6], 0, 0))
        self.assertEqual(repr(zpipe_worker.NOTHING), "zpipe_worker.NOTHING")

    def test_a_generator_emits_any_number_in_a_branch_stage(self):
        def upto(n):
            yield from range(n)
        self.assertEqual(run(upto, [0, 3, 1], flags=_proto.STAGE_BRANCH),
                         ("DONE", [0, 1, 2, 0], 0, 0))

    def test_a_generator_emits_at_most_one_in_another_stage(self):
        def upto(n):
            yield from range(n)
        self.assertEqual(run(upto, [1, 0, 1]), ("DONE", [0, 0], 0, 0))
        self.assertEqual(run(upto, [1, 2], seq=5),
                         ("FAIL", 6, _batch.SECOND_OUTPUT))

    def test_an_exception_fails_its_item_with_its_type_and_text(self):
        def f(x):
            if x == 12:
                raise ValueError(f"{x} is bad")
            if x == 13:
                raise RuntimeError()
            return x
        log = []
        self.assertEqual(run(f, [10, 11, 12], seq=10, log=log),
                         ("FAIL", 12, "ValueError: 12 is bad"))
        self.assertIn("zpipe_worker: task 'f' failed on item 12:\n"
                      "Traceback (most recent call last):", log[0])
        self.assertIn('raise ValueError(f"{x} is bad")', log[0])
        self.assertEqual(run(f, [13], seq=13), ("FAIL", 13, "RuntimeError"))

        def leaves(x):
            raise SystemExit(3)
        self.assertEqual(run(leaves, [1, 2], seq=1, flags=_proto.STAGE_SKIP,
                             retries=1), ("DONE", [], 2, 2))

    def test_retries_run_an_item_again_and_are_counted(self):
        tries = {}

        def flaky(x):
            tries[x] = tries.get(x, 0) + 1
            if tries[x] <= 2:
                raise OSError("not yet")
            return x
        self.assertEqual(run(flaky, [1, 2], retries=2),
                         ("DONE", [1, 2], 4, 0))
        self.assertEqual(run(flaky, [3, 4], retries=1),
                         ("FAIL", 0, "OSError: not yet"))

    def test_skip_drops_an_item_that_still_fails(self):
        def f(x):
            if x == 1:
                raise KeyError("k")
            return x
        self.assertEqual(run(f, [0, 1, 2], flags=_proto.STAGE_SKIP,
                             retries=3), ("DONE", [0, 2], 3, 1))

        def g(x):
            if x == 1:
                raise KeyError("k")
            yield x
        self.assertEqual(run(g, [0, 1, 2], flags=_proto.STAGE_SKIP),
                         ("DONE", [0, 2], 0, 1))

    def test_bind_reaches_a_task_that_takes_it(self):
        def scaled(x, bind=None):
            return [x, bind]

        def plain(x):
            return x
        bind = msgpack.packb({"by": 3})
        self.assertEqual(run(scaled, [1], bind=bind),
                         ("DONE", [[1, {b"by": 3}]], 0, 0))
        self.assertEqual(run(scaled, [1]), ("DONE", [[1, None]], 0, 0))
        self.assertEqual(run(plain, [1], bind=bind), ("DONE", [1], 0, 0))
        self.assertEqual(run(scaled, [1], seq=4, bind=b"\xc1"),
                         ("FAIL", 4, "task 'scaled': malformed bind value"))

    def test_an_output_that_cannot_be_packed_fails_its_item(self):
        def f(x):
            return {x} if x == 1 else x
        self.assertEqual(run(f, [0, 1]),
                         ("FAIL", 1, "TypeError: can not serialize 'set' "
                                     "object"))
        self.assertEqual(run(f, [0, 1, 2], flags=_proto.STAGE_SKIP),
                         ("DONE", [0, 2], 0, 1))

        def g(x):
            return [zpipe_worker.NOTHING]
        self.assertEqual(run(g, [0]), ("FAIL", 0, "TypeError: zpipe_worker."
                                       "NOTHING inside an output"))

    def test_values_keep_their_msgpack_bytes(self):
        items = [b"\xff\xfe", "caf\u00e9", {1: [True, None, 1.5]},
                 msgpack.ExtType(5, b"xy"), 2 ** 64 - 1, -2 ** 63]
        raw_str = b"\xa2\xff\xfe"  # a str that is not UTF-8

        def same(x):
            return x
        data = (msgpack.packb(0) + msgpack.packb(len(items) + 1)
                + b"".join(msgpack.packb(i, use_bin_type=True) for i in items)
                + raw_str)
        msgs = _batch.run_sync((1, 2, 3, data), stage(same), _batch.Packer())
        kind, f = _proto.decode(msgs[0])
        self.assertEqual(kind, _proto.DONE)
        self.assertEqual(f[3], b"\x00" + data[1:])

    def test_large_outputs_travel_in_several_messages(self):
        def big(x):
            return b"x" * 1000
        old = _proto.OUT_CHUNK, _proto.MAX_BATCH
        try:
            _proto.OUT_CHUNK, _proto.MAX_BATCH = 2500, 3000
            decoded = answer(_batch.run_sync(
                (1, 2, 3, framed(0, list(range(5)))), stage(big),
                _batch.Packer()))
            self.assertEqual([k for k, _ in decoded],
                             [_proto.OUT, _proto.OUT, _proto.DONE])
            self.assertEqual(_result(decoded)[1], [b"x" * 1000] * 5)

            def huge(x):
                return b"x" * 5000
            self.assertEqual(run(huge, [7], seq=7)[:2], ("FAIL", 7))
        finally:
            _proto.OUT_CHUNK, _proto.MAX_BATCH = old

    def test_a_malformed_batch_is_answered_with_fail(self):
        st = stage(lambda x: x)
        for data in (b"\x05", b"\x05\x02\x01", b"\x05\x01\x01\x01",
                     b"\x05\x00"):
            kind, f = answer(_batch.run_sync((1, 2, 3, data), st,
                                             _batch.Packer()))[0]
            self.assertEqual(kind, _proto.FAIL)
            self.assertEqual(f[3], 5)
            self.assertIn("malformed batch of items", f[4])

    def test_the_decorator_registers_under_a_name_and_refuses_twins(self):
        @zpipe_worker.task
        def conform_twice(x):
            return x

        @zpipe_worker.task(name="conform-named")
        def other(x):
            return x
        self.assertIs(_tasks.registry["conform_twice"].fn, conform_twice)
        self.assertIs(_tasks.registry["conform-named"].fn, other)
        with self.assertRaisesRegex(ValueError, "defined twice"):
            zpipe_worker.task(name="conform_twice")(lambda x: x)
        with self.assertRaises(TypeError):
            zpipe_worker.task(3)


class AsyncTasks(unittest.TestCase):
    def test_async_items_run_at_once_up_to_the_capacity(self):
        state = {"in": 0, "most": 0}

        async def slow(x):
            state["in"] += 1
            state["most"] = max(state["most"], state["in"])
            await asyncio.sleep(0.01)
            state["in"] -= 1
            return x
        st = stage(slow)
        job = (1, 2, 3, framed(0, list(range(40))))
        msgs = asyncio.run(_await(job, st, capacity=8))
        self.assertEqual(_result(answer(msgs)), ("DONE", list(range(40)),
                                                 0, 0))
        self.assertEqual(state["most"], 8)

    def test_async_failures_retries_skips_and_generators(self):
        async def f(x):
            if x == 2:
                raise ValueError("two")
            return x

        async def g(x):
            for i in range(x):
                yield i
        self.assertEqual(run(f, [1, 2, 3], seq=1), ("FAIL", 2,
                                                    "ValueError: two"))
        self.assertEqual(run(f, [1, 2, 3], flags=_proto.STAGE_SKIP,
                             retries=2), ("DONE", [1, 3], 2, 1))
        self.assertEqual(run(g, [2, 1], flags=_proto.STAGE_BRANCH),
                         ("DONE", [0, 1, 0], 0, 0))
        self.assertEqual(run(g, [2]), ("FAIL", 0, _batch.SECOND_OUTPUT))


class Wire(unittest.TestCase):
    def test_messages_are_checked_as_the_c_side_checks_them(self):
        for body, why in (
                (b"\xc1", "not one msgpack value"),
                (msgpack.packb([2, 8]), "wrong protocol version 2"),
                (msgpack.packb([1, 42]), "unknown message type"),
                (msgpack.packb([1, 8]) + b"\x00", "bytes after the message"),
                (msgpack.packb([1, 4, 1, 1, 1]), "ITEM: expected 4 fields"),
                (msgpack.packb([1, 3, 1, 1, "t", 4, 0, b""]),
                 "STAGE: field 'flags'"),
                (msgpack.packb([1, 3, 1, 1, "t", 0, 1 << 32, b""]),
                 "STAGE: field 'retries'"),
                (msgpack.packb([1, 4, 1, 1, 1, b""]),
                 "ITEM: field 'items' must be a non-empty bin"),
                (msgpack.packb([1, 9, True]), "BYE: field 'reason'")):
            with self.assertRaisesRegex(_proto.ProtocolError, why):
                _proto.decode(body)

    def test_hello_carries_the_pool_only_when_there_is_one(self):
        self.assertEqual(msgpack.unpackb(_proto.hello("h:1", 1, 16384, ["a"])),
                         [1, 1, "h:1", 1, 16384, ["a"]])
        self.assertEqual(msgpack.unpackb(
            _proto.hello("h:1", 1, 16384, ["a"], "gpu")),
            [1, 1, "h:1", 1, 16384, ["a"], "gpu"])
        self.assertEqual(_proto.HEARTBEAT_BODY, msgpack.packb([1, 8]))


class Limits(unittest.TestCase):
    def test_stages_kept_are_the_c_workers_number(self):
        """MAX_STAGES is worker/execute.h's ZP__WORKER_MAX_STAGES."""
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "..", "..", "worker", "execute.h"),
                  encoding="utf-8") as f:
            found = re.search(r"^#define ZP__WORKER_MAX_STAGES (\d+)$",
                              f.read(), re.M)
        self.assertIsNotNone(found)
        self.assertEqual(_serve.MAX_STAGES, int(found.group(1)))


class KeyFiles(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.pub, self.sec = (k.decode() for k in zmq.curve_keypair())

    def tearDown(self):
        self.dir.cleanup()

    def write(self, text, mode=0o600):
        n = len(os.listdir(self.dir.name))
        path = os.path.join(self.dir.name, f"k{n}")
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_key_files_are_read_as_zpipe_reads_them(self):
        good = self.write(f"# zpipe CURVE secret key\n\n  {self.sec} \n\n")
        self.assertEqual(_keys.read_key(good, True), self.sec)
        public = self.write(f"{self.pub}\n", 0o644)
        self.assertEqual(_keys.read_key(public, False), self.pub)
        for text, mode, why in (
                (f"{self.sec}\n", 0o640, "accessible to group or others"),
                ("# nothing\n", 0o600, "holds no key"),
                ("short\n", 0o600, ":1: expected a Z85 key of 40"),
                ("~" * 40 + "\n", 0o600, ":1: not a Z85 key"),
                (f"{self.sec}\n# after\n", 0o600, ":2: nothing may follow"),
                (f"{self.sec}\0\n", 0o600, "binary data")):
            with self.assertRaisesRegex(_keys.KeyFileError, why):
                _keys.read_key(self.write(text, mode), True)
        with self.assertRaisesRegex(_keys.KeyFileError, "not a regular file"):
            _keys.read_key(self.dir.name, False)
        with self.assertRaisesRegex(_keys.KeyFileError, "cannot open"):
            _keys.read_key(os.path.join(self.dir.name, "none"), False)


# ---- Processes --------------------------------------------------------------

def free_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def worker(*args, env=None, **kw):
    e = dict(os.environ, PYTHONPATH=PYTHON_DIR, PYTHONDONTWRITEBYTECODE="1")
    e.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "zpipe_worker", *args],
                            env=e, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def usage(*args, env=None):
    """(exit status, stdout, stderr) of a worker that should end at once."""
    p = worker(*args, env=env)
    out, err = p.communicate(timeout=WAIT_S)
    return p.returncode, out, err


class Module:
    """A module file of tasks in a temporary directory, removed when the
    test `owner` ends."""

    def __init__(self, owner, text):
        self.dir = tempfile.TemporaryDirectory()
        owner.addCleanup(self.dir.cleanup)
        self.path = os.path.join(self.dir.name, "tasks_here.py")
        with open(self.path, "w") as f:
            f.write(textwrap.dedent(text))


TASKS = """
    import asyncio
    import zpipe_worker

    @zpipe_worker.task
    def twice(x):
        return 2 * x

    _waiting = []

    @zpipe_worker.task
    async def gather(x, bind=1):
        # Passes once `bind` calls are in flight at once.
        ev = asyncio.Event()
        _waiting.append(ev)
        if len(_waiting) % bind == 0:
            for e in _waiting[-bind:]:
                e.set()
        await asyncio.wait_for(ev.wait(), 20)
        return x
"""


class Coordinator:
    """A scripted coordinator: a ROUTER at a free endpoint."""

    def __init__(self):
        self.endpoint = free_endpoint()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.linger = 0
        self.sock.bind(self.endpoint)

    def close(self):
        self.sock.close(0)
        self.ctx.term()

    def recv(self):
        """The next message other than HEARTBEAT: (peer, decoded)."""
        while True:
            self.assert_ready()
            peer, body = self.sock.recv_multipart()
            msg = msgpack.unpackb(body, raw=False)
            if msg[1] != _proto.HEARTBEAT:
                return peer, msg[1:]

    def assert_ready(self):
        if not self.sock.poll(WAIT_S * 1000):
            raise AssertionError(f"nothing from the worker in {WAIT_S} s")

    def send(self, peer, *fields):
        self.sock.send_multipart([peer, msgpack.packb([1, *fields])])


class Worker(unittest.TestCase):
    def setUp(self):
        self.coord = Coordinator()
        self.module = Module(self, TASKS)
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        self.coord.close()

    def start(self, *args, env=None):
        p = worker("--module", self.module.path, *args, env=env)
        self.procs.append(p)
        return p

    def stop(self, p):
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=WAIT_S)
        self.assertEqual(p.returncode, 0)

    def test_the_environment_gives_endpoint_threads_and_pool(self):
        p = self.start(env={"ZPIPE_WORKER": self.coord.endpoint,
                            "ZPIPE_THREADS": "3", "ZPIPE_POOL": "gpu"})
        _, hello = self.coord.recv()
        self.assertEqual(hello[0], _proto.HELLO)
        self.assertEqual(hello[3:], [3 * 16384, ["gather", "twice"], "gpu"])
        self.stop(p)

    def test_a_worker_without_pool_sends_four_fields(self):
        # A module given twice is loaded once.
        p = self.start("--connect", self.coord.endpoint, "--threads", "2",
                       "--module", self.module.path)
        _, hello = self.coord.recv()
        self.assertEqual(hello[3:], [2 * 16384, ["gather", "twice"]])
        self.stop(p)

    def test_async_tasks_have_as_many_calls_in_flight_as_threads(self):
        p = self.start("--connect", self.coord.endpoint, "--threads", "50")
        peer, _ = self.coord.recv()
        self.coord.send(peer, _proto.STAGE, 1, 1, "gather", 0, 0,
                        msgpack.packb(50))
        for i in range(50):
            self.coord.send(peer, _proto.ITEM, 1, 1, i, framed(i, [i]))
        got = set()
        while len(got) < 50:
            _, msg = self.coord.recv()
            self.assertEqual(msg[0], _proto.DONE, msg)
            got.add(msg[3])
        self.stop(p)


class CommandLine(unittest.TestCase):
    def test_help_names_every_option_and_variable(self):
        rc, out, _ = usage("--help")
        self.assertEqual(rc, 0)
        for word in ("--connect", "--module", "--threads", "--pool",
                     "--curve-server", "--curve-secret", "ZPIPE_WORKER",
                     "ZPIPE_THREADS", "ZPIPE_POOL", "ZPIPE_CURVE_SERVER",
                     "ZPIPE_CURVE_SECRET", "exit status"):
            self.assertIn(word, out)

    def test_mistakes_are_usage_errors(self):
        m = Module(self, "import zpipe_worker\n@zpipe_worker.task\n"
                   "def twice(x):\n    return 2 * x\n")
        broken = Module(self, "raise ImportError('no such thing')\n")
        empty = Module(self, "x = 1\n")
        leaves = Module(self, "import sys\nsys.exit(0)\n")
        twin = Module(self, "import zpipe_worker\n@zpipe_worker.task\n"
                      "def twice(x):\n    return x\n")
        ep = "tcp://127.0.0.1:9"
        for args, why in (
                ([], "--connect ENDPOINT is needed"),
                (["--connect", ep, "--module", m.path, "--threads", "0"],
                 "bad value '0' for --threads"),
                (["--connect", ep, "--module", m.path, "--threads", "4097"],
                 "bad value '4097' for --threads"),
                (["--connect", ep, "--module", "/nonexistent/t.py"],
                 "no such file"),
                (["--connect", ep, "--module", broken.path],
                 "ImportError: no such thing"),
                (["--connect", ep, "--module", empty.path],
                 "no tasks to serve"),
                (["--connect", ep, "--module", leaves.path],
                 f"cannot load module {leaves.path}: it exited at import"),
                (["--connect", ep, "--module", m.path, "--module",
                  twin.path], "task 'twice' is defined twice"),
                (["--connect", ep, "--module", m.path, "--curve-server",
                  m.path], "--curve-server needs --curve-secret too"),
                (["--connect", ep, "--module", m.path, "--curve-server",
                  m.path, "--curve-secret", m.path],
                 "expected a Z85 key"),
                (["--connect", "nonsense", "--module", m.path],
                 "cannot serve nonsense"),
                (["--connect", ep, "--bogus"], "unrecognized arguments")):
            rc, _, err = usage(*args)
            self.assertEqual(rc, 2, f"{args}: {err}")
            self.assertIn(why, err, args)


@unittest.skipUnless(os.environ.get("ZPIPE")
                     and os.environ.get("ZPIPE_CONFORMANCE_PLUGIN"),
                     "needs $ZPIPE and $ZPIPE_CONFORMANCE_PLUGIN")
class EndToEnd(unittest.TestCase):
    """Through `zpipe run`, whose plugin gives the names of the tasks."""

    def test_a_python_stage_between_two_c_stages(self):
        m = Module(self, """
            import zpipe_worker

            @zpipe_worker.task
            def whoami(n, bind=None):
                for i in range(n):
                    yield {"n": n, "i": i, "by": bind}
        """)
        ep = free_endpoint()
        p = worker("--connect", ep, "--module", m.path)
        try:
            run = subprocess.run(
                [os.environ["ZPIPE"], "run", "--plugin",
                 os.environ["ZPIPE_CONFORMANCE_PLUGIN"], "--listen", ep,
                 "range branch | whoami mode=remote branch bind=\"py\" | "
                 "identity", "[4]"], capture_output=True, text=True,
                timeout=120)
            self.assertEqual(run.returncode, 0, run.stderr)
            outs = sorted((o["n"], o["i"], o["by"])
                          for o in map(json.loads, run.stdout.split()))
            self.assertEqual(outs, [(n, i, "py") for n in range(4)
                                    for i in range(n)])
        finally:
            p.send_signal(signal.SIGTERM)
            p.communicate(timeout=WAIT_S)
        self.assertEqual(p.returncode, 0)


if __name__ == "__main__":
    unittest.main()
