# SPDX-License-Identifier: MIT
"""The worker: one DEALER socket to the coordinator, owned by the thread
that calls Worker.serve() (the main thread, so that it gets the signals).

That thread only moves messages: it says HELLO, keeps the STAGE settings,
hands each ITEM to the executor threads (plain and generator tasks, each
thread running whole batches) or to the asyncio loop's thread (async
tasks), sends what they made, and sends a HEARTBEAT in every second in
which it sent nothing else. Because it never runs a task, it keeps beating
while tasks run as long as they like: a task that holds the interpreter's
lock in a pure-Python loop still lets it run every switch interval (5 ms).
Executors and the loop hand their answers back through a queue and wake
the main thread through a pipe, the same pipe the signal handler writes
to (signal.set_wakeup_fd), so that its poll ends at once on either.

A batch's answer leaves only when the whole batch is done, so a worker
that dies leaves nothing half-sent, and the coordinator runs the batch
again elsewhere. On SIGINT or SIGTERM, or on the coordinator's BYE, the
worker sends BYE at once (the coordinator sends its batches elsewhere),
drops the batches not started, waits for the calls running to return
(a second signal ends it without waiting) and ends.
"""

import asyncio
import os
import queue
import select
import signal
import socket
import sys
import threading
import time

import zmq

from . import _proto as proto
from . import _timing as timing
from ._batch import Packer, Stage, describe, run_async, run_sync

HEARTBEAT_S = timing.HEARTBEAT_MS / 1000  # the protocol's timings, in
SILENCE_S = timing.SILENCE_MS / 1000      # seconds (_timing.py)
MAX_STAGES = 1024   # STAGE settings kept, the oldest dropped first
LINGER_MS = 100     # time for a last BYE


def log(msg):
    print(f"zpipe_worker: {msg}", file=sys.stderr, flush=True)


class _Executors:
    """Threads that run whole batches of plain and generator tasks."""

    def __init__(self, n, post, wake):
        self.n, self.post, self.wake = n, post, wake
        self.jobs = queue.SimpleQueue()
        self.threads = []
        self.stopping = False

    def submit(self, job, st):
        if not self.threads:
            for i in range(self.n):
                t = threading.Thread(target=self._main, daemon=True,
                                     name=f"zpipe_worker-{i}")
                t.start()
                self.threads.append(t)
        self.jobs.put((job, st))

    def _main(self):
        pk = Packer()
        while not self.stopping:
            job, st = self.jobs.get()
            if job is None or self.stopping:
                break
            try:
                msgs = run_sync(job, st, pk)
            except BaseException as e:  # SystemExit from a task, say
                msgs = [proto.fail(job[0], job[1], job[2],
                                   proto.batch_seq(job[3]), describe(e))]
            if not self.stopping:
                self.post(msgs)
        self.wake()

    def stop(self):
        """Drops the batches not started; those running end after their
        call returns."""
        self.stopping = True
        for _ in self.threads:
            self.jobs.put((None, None))

    def alive(self):
        return [t for t in self.threads if t.is_alive()]


class _Loop:
    """The asyncio loop of async tasks, in a thread of its own, with at
    most `capacity` calls in flight."""

    def __init__(self, capacity, post, wake):
        self.capacity, self.post, self.wake = capacity, post, wake
        self.loop = None
        self.thread = None
        self.batches = set()

    def submit(self, job, st):
        if self.thread is None:
            self.loop = asyncio.new_event_loop()
            self.sem = asyncio.Semaphore(self.capacity)
            self.thread = threading.Thread(target=self._main, daemon=True,
                                           name="zpipe_worker-asyncio")
            self.thread.start()
        self.loop.call_soon_threadsafe(self._start, job, st)

    def _main(self):
        self.pk = Packer()
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()
            self.wake()

    def _start(self, job, st):
        t = self.loop.create_task(self._batch(job, st))
        self.batches.add(t)
        t.add_done_callback(self.batches.discard)

    async def _batch(self, job, st):
        try:
            msgs = await run_async(job, st, self.sem, self.pk)
        except asyncio.CancelledError:
            return
        except BaseException as e:
            msgs = [proto.fail(job[0], job[1], job[2],
                               proto.batch_seq(job[3]), describe(e))]
        self.post(msgs)

    async def _shutdown(self):
        for t in self.batches:
            t.cancel()
        await asyncio.gather(*self.batches, return_exceptions=True)
        self.loop.stop()

    def stop(self):
        """Cancels every batch; the thread ends once they have."""
        if self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.create_task,
                                           self._shutdown())

    def alive(self):
        return [self.thread] if self.thread and self.thread.is_alive() else []


def curve_client(sock, server_key, secret_key):
    """Makes `sock` a CURVE client: the server's public key and this
    worker's secret key, Z85 text (see _keys)."""
    sock.curve_serverkey = server_key.encode()
    sock.curve_secretkey = secret_key.encode()
    sock.curve_publickey = zmq.curve_public(secret_key.encode())


class Worker:
    """Serves `tasks` (name -> Task) to the coordinator at `endpoint`.

    threads: items run at once (threads for plain tasks, calls in flight
    for async ones); pool: the pool it joins, or None; curve: None or the
    (server public key, own secret key) pair, as Z85 text. Raises
    zmq.ZMQError when the endpoint is not one ZeroMQ can connect to."""

    def __init__(self, endpoint, tasks, threads=1, pool=None, curve=None):
        self.endpoint, self.tasks, self.threads = endpoint, tasks, threads
        self.pool = pool
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        try:
            self._setup(curve)
        except BaseException:
            self.sock.close(0)
            self.ctx.term()
            raise
        self.results = queue.SimpleQueue()
        self.rfd, self.wfd = os.pipe()
        os.set_blocking(self.rfd, False)
        os.set_blocking(self.wfd, False)
        self.executors = _Executors(threads, self._post, self._wake)
        self.aloop = _Loop(threads, self._post, self._wake)
        self.stages = {}
        self.outstanding = 0  # batches taken and not answered
        self.signo = 0
        self.hurry = False    # a second signal: stop waiting for tasks
        self.leaving = False  # the coordinator said BYE

    def _setup(self, curve):
        s = self.sock
        s.linger = LINGER_MS
        s.setsockopt(zmq.RECONNECT_IVL, 100)
        s.setsockopt(zmq.RECONNECT_IVL_MAX, 250)  # joins a new run soon
        s.sndhwm = 0   # credits bound the traffic
        s.rcvhwm = 0
        s.sndtimeo = 1000
        s.setsockopt(zmq.MAXMSGSIZE, proto.MAX_MSG + 1024)
        if curve is not None:
            curve_client(s, *curve)
        s.connect(self.endpoint)

    # ---- Threads' side ------------------------------------------------------

    def _wake(self):
        try:
            os.write(self.wfd, b"\0")
        except (BlockingIOError, OSError):
            pass  # full: the main thread wakes anyway; closed: it left

    def _post(self, msgs):
        self.results.put(msgs)
        self._wake()

    # ---- The main thread ----------------------------------------------------

    def _send(self, body):
        try:
            self.sock.send(body, copy=len(body) < 65536)
        except zmq.Again:
            log(f"cannot send to {self.endpoint}: no link after 1 s")
            return False
        self.sent = time.monotonic()
        return True

    def _hello(self):
        name = f"{socket.gethostname()[:63]}:{os.getpid()}"
        return self._send(proto.hello(
            name, os.getpid(), self.threads * proto.CREDIT_PER_THREAD,
            sorted(self.tasks), self.pool))

    def _on_item(self, run, stage, batch, data):
        job = (run, stage, batch, data)
        st = self.stages.get((run, stage))
        if st is None or st.error is not None:
            why = st.error if st is not None else "no STAGE was sent for it"
            self._send(proto.fail(run, stage, batch, proto.batch_seq(data),
                                  why))
            return
        self.outstanding += 1
        (self.aloop if st.task.is_async else self.executors).submit(job, st)

    def _on_message(self, body):
        try:
            kind, f = proto.decode(body)
        except proto.ProtocolError as e:
            log(f"dropped a message: {e}")
            return
        if kind == proto.ITEM:
            self._on_item(*f)
        elif kind == proto.STAGE:
            run, stage, task, flags, retries, bind = f
            self.stages.pop((run, stage), None)
            if len(self.stages) >= MAX_STAGES:
                del self.stages[next(iter(self.stages))]
            self.stages[(run, stage)] = Stage(task, flags, retries, bind,
                                              self.tasks)
        elif kind == proto.BYE:
            self.leaving = True
        elif kind == proto.HELLO:  # the coordinator does not know us
            self._hello()
        elif kind != proto.HEARTBEAT:
            log(f"dropped an unexpected {proto.NAMES[kind]}")

    def _receive(self):
        while not self.leaving:
            try:
                frame = self.sock.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.heard = time.monotonic()
            self._on_message(frame.buffer)

    def _forward(self):
        while True:
            try:
                msgs = self.results.get_nowait()
            except queue.Empty:
                return
            self.outstanding -= 1
            for body in msgs:
                self._send(body)

    def _drain(self):
        try:
            while os.read(self.rfd, 4096):
                pass
        except BlockingIOError:
            pass

    def _on_signal(self, signo, frame):
        if self.signo:
            self.hurry = True
        self.signo = signo

    def _loop(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.rfd, zmq.POLLIN)
        self.sent = self.heard = time.monotonic()
        greeted = self._hello()
        while not self.signo and not self.leaving:
            now = time.monotonic()
            due = self.sent + HEARTBEAT_S
            if self.outstanding == 0:
                due = min(due, self.heard + SILENCE_S)
            ready = dict(poller.poll(max(0, int((due - now) * 1000) + 1)))
            if self.rfd in ready:
                self._drain()
            self._forward()
            if self.sock in ready:
                self._receive()
            now = time.monotonic()
            if not greeted:
                greeted = self._hello()
            if now - self.sent >= HEARTBEAT_S:
                self._send(proto.HEARTBEAT_BODY)
            if now - self.heard >= SILENCE_S and self.outstanding == 0:
                self._hello()  # the coordinator may have restarted
                self.heard = now

    def _wait_for_tasks(self):
        """Waits for the threads to end; a second signal cuts it short."""
        self.executors.stop()
        self.aloop.stop()
        while not self.hurry and (self.executors.alive()
                                  or self.aloop.alive()):
            select.select([self.rfd], [], [], 1.0)
            self._drain()

    def serve(self):
        """Serves until a signal (SIGINT, SIGTERM; when called from the main
        thread) or the coordinator's BYE. Returns 0, or 128 + N when a second
        signal N cut short the wait for running tasks."""
        main = threading.current_thread() is threading.main_thread()
        if main:
            old = {s: signal.signal(s, self._on_signal)
                   for s in (signal.SIGINT, signal.SIGTERM)}
            old_fd = signal.set_wakeup_fd(self.wfd, warn_on_full_buffer=False)
        try:
            self._loop()
            self._send(proto.bye("signal" if self.signo else "leaving"))
            self._wait_for_tasks()
        finally:
            if main:
                signal.set_wakeup_fd(old_fd)
                for s, h in old.items():
                    signal.signal(s, h)
            self.sock.close(LINGER_MS)
            self.ctx.term()
            # Threads cut short by a second signal may still wake us.
            wfd, self.wfd = self.wfd, -1
            os.close(wfd)
            os.close(self.rfd)
        return 128 + self.signo if self.hurry else 0
