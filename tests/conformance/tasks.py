# SPDX-License-Identifier: MIT
"""The tasks of the worker conformance suite in Python: the twins of
tests/plugins/conformance.c (see there what each does), for
`python3 -m zpipe_worker --module tests/conformance/tasks.py`, and
`identity`, the twin of zpipe's built-in task. Items are integers."""

import os
import threading
import time

import zpipe_worker


@zpipe_worker.task
def identity(item):
    return item


@zpipe_worker.task
def whoami(item):
    return [item, os.getpid()]


@zpipe_worker.task
def fail_on(item, bind=None):
    if item == bind:
        raise ValueError(f"{item} is the bad one")
    return item


_attempts = {}
_attempts_lock = threading.Lock()


@zpipe_worker.task
def flaky(item, bind=0):
    with _attempts_lock:
        k = _attempts[item] = _attempts.get(item, 0) + 1
    if k <= bind:
        raise RuntimeError(f"attempt {k} at item {item} fails")
    return item


@zpipe_worker.task
def nap(item, bind=0):
    time.sleep(bind / 1000)
    return item


@zpipe_worker.task
def spin(item, bind=0):
    end = time.monotonic() + bind / 1000
    while time.monotonic() < end:  # holds the interpreter's lock
        pass
    return item


@zpipe_worker.task
def gate(item, bind=None):
    at, folder = bind
    if item == at:
        open(os.path.join(folder, "reached"), "w").close()
        hold, end = os.path.join(folder, "hold"), time.monotonic() + 120
        while os.path.exists(hold):
            if time.monotonic() > end:
                raise TimeoutError(f"{hold} stayed for 120 s")
            time.sleep(0.01)
    return item


_met = threading.Condition()
_inside = _arrived = 0


@zpipe_worker.task
def meet(item, bind=1):
    global _inside, _arrived
    n = max(bind, 1)
    with _met:
        _inside += 1
        most, round_ = _inside, _arrived // n
        _arrived += 1
        _met.notify_all()
        _met.wait_for(lambda: most > n or _arrived >= (round_ + 1) * n, 60)
        seen = _arrived - round_ * n
    try:
        if most > n:
            raise RuntimeError(f"{most} calls at once, more than {n}")
        if seen < n:
            raise TimeoutError(f"only {seen} of {n} calls met within 60 s")
        time.sleep(0.05)  # still in: a call more would be seen
    finally:
        with _met:
            _inside -= 1
    return item
