# SPDX-License-Identifier: MIT
"""Running one batch of items: from its framed bytes to the bodies of the
OUT, DONE or FAIL messages that answer it. No sockets, no threads.

The common case costs little per item beyond the task's call: the batch is
decoded in one msgpack call, a plain function is mapped over it in C
(list.extend(map(...)), which keeps the outputs made before an item that
raises), and the outputs are packed in one call as a list whose array
header is then left out. Anything unusual (an output of NOTHING, one that
cannot be packed, outputs over OUT_CHUNK bytes) takes a slower path that
packs item by item.

Item failures follow the C worker (worker/call.c): a task that raises
(anything, SystemExit included: the worker goes on) is called again up
to `retries` times; if it still raises, its item is dropped and counted
with on_error=skip, otherwise the batch answers FAIL naming it. Breaking
a rule (a second output from a task whose stage is not `branch`, outputs
too large for a message) fails at once.
"""

import asyncio
import functools
import sys
import time
import traceback

import msgpack

from . import _proto as proto
from ._tasks import NOTHING

SECOND_OUTPUT = ("emitted a second output, but it is not a branch task "
                 "(give its stage the branch flag)")


def describe(e):
    """An exception as `TypeName: text`, or `TypeName` without text."""
    try:
        text = str(e)
    except Exception:
        text = ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


class Stage:
    """How to run one stage of one run, as its STAGE message said."""

    __slots__ = ("name", "task", "branch", "skip", "retries", "call", "error")

    def __init__(self, name, flags, retries, bind, tasks):
        self.name = name
        self.task = tasks.get(name)
        self.branch = bool(flags & proto.STAGE_BRANCH)
        self.skip = bool(flags & proto.STAGE_SKIP)
        self.retries = retries
        self.call = self.task.fn if self.task is not None else None
        self.error = (f"this worker has no task '{name}'"
                      if self.task is None else None)
        if self.task is not None and self.task.takes_bind:
            self._bind(bind)

    def _bind(self, bind):
        try:
            value = proto.unpack(bind) if bind else None
        except Exception:
            self.error = f"task '{self.name}': malformed bind value"
            return
        self.call = functools.partial(self.task.fn, bind=value)


class Packer:
    """Packs outputs; one per thread (msgpack's Packer is not thread-safe)."""

    def __init__(self):
        self.nothing = 0  # NOTHINGs met by the last pack
        self._pk = msgpack.Packer(use_bin_type=True, default=self._default,
                                  unicode_errors="surrogateescape")

    def _default(self, o):
        if o is NOTHING:
            self.nothing += 1
            return None
        raise TypeError(f"can not serialize {type(o).__name__!r} object")

    def pack_all(self, outs):
        """The outputs packed back to back, or None when the slow path must
        do it (a NOTHING, an output that cannot be packed, too many bytes)."""
        self.nothing = 0
        try:
            data = self._pk.pack(outs)
        except Exception:
            return None
        n = len(outs)
        head = 1 if n < 16 else 3 if n < 0x10000 else 5
        if self.nothing or len(data) - head > proto.OUT_CHUNK:
            return None
        return memoryview(data)[head:]

    def pack_one(self, o):
        self.nothing = 0
        data = self._pk.pack(o)
        if self.nothing:
            raise TypeError("zpipe_worker.NOTHING inside an output")
        return data


class Ran:
    """What the items of a batch made: outs (for plain functions one per
    item, NOTHING for none; else all outputs, item i's ending at ends[i]),
    the counts, and the first failure: (index in the batch, message, the
    exception or None)."""

    __slots__ = ("outs", "ends", "retried", "skipped", "failure", "busy")

    def __init__(self, outs, ends, retried=0, skipped=0, failure=None):
        self.outs, self.ends = outs, ends
        self.retried, self.skipped, self.failure = retried, skipped, failure
        self.busy = 0  # ns the task ran on the batch


def _count(res):
    return sum(1 for o in res if o is not NOTHING)


def _again(fn, x, retries, err):
    """Calls fn(x) again after err, up to `retries` times:
    (output, attempts made, the last error or None)."""
    for n in range(1, retries + 1):
        try:
            return fn(x), n, None
        except BaseException as e:  # SystemExit too: the worker goes on
            err = e
    return None, retries, err


def _run_plain(st, items):
    fn, outs, it = st.call, [], iter(items)
    ran = Ran(outs, None)
    while True:
        try:
            outs.extend(map(fn, it))
            return ran
        except BaseException as e:
            i = len(outs)
            out, n, err = _again(fn, items[i], st.retries, e)
            ran.retried += n
            if err is None:
                outs.append(out)
            elif st.skip:
                outs.append(NOTHING)
                ran.skipped += 1
            else:
                ran.failure = (i, describe(err), err)
                return ran


def _run_gen(st, items):
    fn, outs, ends = st.call, [], []
    ran = Ran(outs, ends)
    for i, x in enumerate(items):
        err = None
        for attempt in range(st.retries + 1):
            ran.retried += attempt > 0
            try:
                res = list(fn(x))
                err = None
                break
            except BaseException as e:
                err = e
        if err is None and not st.branch and len(res) > 1 and _count(res) > 1:
            ran.failure = (i, SECOND_OUTPUT, None)
            return ran
        if err is None:
            outs.extend(res)
        elif st.skip:
            ran.skipped += 1
        else:
            ran.failure = (i, describe(err), err)
            return ran
        ends.append(len(outs))
    return ran


def _slow(job, ran, skip, pk):
    """The messages for `ran`, packed item by item: outputs of NOTHING left
    out, an item whose outputs cannot be packed failed (or skipped), OUT
    every OUT_CHUNK bytes."""
    run, stage, batch, data = job
    most = proto.MAX_BATCH - proto.BATCH_HEADER_MAX
    msgs, parts, size, n = [], [], 0, 0
    nitems = len(ran.ends) if ran.ends is not None else len(ran.outs)
    for i in range(nitems):
        lo, hi = ((ran.ends[i - 1] if i else 0, ran.ends[i])
                  if ran.ends is not None else (i, i + 1))
        try:
            packed = [pk.pack_one(o) for o in ran.outs[lo:hi]
                      if o is not NOTHING]
        except Exception as e:
            if not skip:
                return [proto.fail(run, stage, batch,
                                   proto.batch_seq(data) + i, describe(e),
                                   ran.busy)]
            ran.skipped += 1
            continue
        total = sum(map(len, packed))
        if total > most:
            return [proto.fail(
                run, stage, batch, proto.batch_seq(data) + i,
                f"its outputs take {total} bytes, more than a message to "
                f"the coordinator holds ({most})", ran.busy)]
        if size and size + total > proto.OUT_CHUNK:
            msgs.append(proto.outputs(proto.OUT, run, stage, batch, n, parts,
                                      size, ran.retried, ran.skipped,
                                      ran.busy))
            parts, size, n = [], 0, 0
        parts += packed
        size += total
        n += len(packed)
    msgs.append(proto.outputs(proto.DONE, run, stage, batch, n, parts, size,
                              ran.retried, ran.skipped, ran.busy))
    return msgs


def _report(name, index, err):
    """Writes the traceback of an item's last failure on stderr."""
    text = "".join(traceback.format_exception(err)).rstrip()
    print(f"zpipe_worker: task '{name}' failed on item {index}:\n{text}",
          file=sys.stderr, flush=True)


def answer(job, seq, ran, st, pk):
    """The bodies that answer batch `job` (run, stage, batch, data) of
    stage st, whose items, from index seq, made `ran`."""
    run, stage, batch, _ = job
    if ran.failure is not None:
        i, why, err = ran.failure
        if err is not None:
            _report(st.name, seq + i, err)
        return [proto.fail(run, stage, batch, seq + i, why, ran.busy)]
    packed = pk.pack_all(ran.outs)
    if packed is None:
        return _slow(job, ran, st.skip, pk)
    return [proto.outputs(proto.DONE, run, stage, batch, len(ran.outs),
                          (packed,), len(packed), ran.retried, ran.skipped,
                          ran.busy)]


def _open(job, st):
    """(seq, items) of a batch of stage st, or a list of FAIL bodies."""
    run, stage, batch, data = job
    if st is None or st.error is not None:
        why = st.error if st is not None else "no STAGE was sent for it"
        return [proto.fail(run, stage, batch, proto.batch_seq(data), why)]
    try:
        return proto.open_batch(data)
    except ValueError as e:
        return [proto.fail(run, stage, batch, proto.batch_seq(data),
                           f"malformed batch of items: {e}")]


def run_sync(job, st, pk):
    """Runs a batch of a plain or generator task; returns the bodies."""
    opened = _open(job, st)
    if isinstance(opened, list):
        return opened
    seq, items = opened
    t0 = time.perf_counter_ns()
    ran = (_run_gen if st.task.is_gen else _run_plain)(st, items)
    ran.busy = time.perf_counter_ns() - t0
    return answer(job, seq, ran, st, pk)


# ---- Async tasks ------------------------------------------------------------

class _ItemFailed(Exception):
    def __init__(self, index, why, err=None):
        super().__init__(why)
        self.failure = (index, why, err)


_SKIPPED = object()


async def _run_item(st, i, x, sem):
    """(output or outputs or _SKIPPED, retries made, ns its calls took) of
    one item; raises _ItemFailed. It holds a place of `sem` while the task
    runs."""
    fn, gen, busy = st.call, st.task.is_gen, 0
    for attempt in range(st.retries + 1):
        async with sem:
            t0 = time.perf_counter_ns()
            try:
                res = [o async for o in fn(x)] if gen else await fn(x)
                busy += time.perf_counter_ns() - t0
                break
            except asyncio.CancelledError:
                raise
            except BaseException as e:
                busy += time.perf_counter_ns() - t0
                err = e
    else:
        if st.skip:
            return _SKIPPED, st.retries, busy
        raise _ItemFailed(i, describe(err), err)
    if gen and not st.branch and len(res) > 1 and _count(res) > 1:
        raise _ItemFailed(i, SECOND_OUTPUT)
    return res, attempt, busy


async def run_async(job, st, sem, pk):
    """Runs a batch of an async task on the running loop, all its items at
    once but for `sem` (an asyncio.Semaphore of the worker's capacity);
    returns the bodies. Cancelled, it cancels its items."""
    opened = _open(job, st)
    if isinstance(opened, list):
        return opened
    seq, items = opened
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(_run_item(st, i, x, sem))
             for i, x in enumerate(items)]
    try:
        results = await asyncio.gather(*tasks)
    except _ItemFailed as f:
        for t in tasks:
            t.cancel()
        return answer(job, seq, Ran([], None, failure=f.failure), st, pk)
    ran = Ran([], [] if st.task.is_gen else None)
    for res, n, busy in results:
        ran.retried += n
        ran.busy += busy
        if res is _SKIPPED:
            ran.skipped += 1
            res = [] if st.task.is_gen else NOTHING
        if st.task.is_gen:
            ran.outs += res
            ran.ends.append(len(ran.outs))
        else:
            ran.outs.append(res)
    return answer(job, seq, ran, st, pk)
