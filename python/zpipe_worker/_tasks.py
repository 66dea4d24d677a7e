# SPDX-License-Identifier: MIT
"""Tasks: the @task decorator, the registry it fills, and NOTHING.

A task is a function of one item. What kind of function it is says how it
runs: a plain function returns one output, a generator function yields any
number, an `async def` returns one output from the worker's asyncio loop, an
async generator yields any number there. A task that takes a parameter named
`bind` gets the stage's bind value through it.
"""

import inspect


class _Nothing:
    """The type of NOTHING, returned (or yielded) by a task for no output:
    a task that returns NOTHING filters its item out, one that returns None
    emits a msgpack nil. It has one instance."""

    __slots__ = ()

    def __repr__(self):
        return "zpipe_worker.NOTHING"


NOTHING = _Nothing()


class Task:
    """A registered task: its name, its function and how to call it."""

    __slots__ = ("name", "fn", "is_async", "is_gen", "takes_bind", "where")

    def __init__(self, name, fn):
        self.name = name
        self.fn = fn
        self.is_async = (inspect.iscoroutinefunction(fn)
                         or inspect.isasyncgenfunction(fn))
        self.is_gen = (inspect.isgeneratorfunction(fn)
                       or inspect.isasyncgenfunction(fn))
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        bind = params.get("bind")
        self.takes_bind = bind is not None and bind.kind in (
            bind.POSITIONAL_OR_KEYWORD, bind.KEYWORD_ONLY)
        self.where = getattr(fn, "__module__", None) or "?"


registry = {}  # name -> Task, in the order they were registered


def _register(fn, name):
    if not callable(fn):
        raise TypeError(f"@zpipe_worker.task applies to functions, "
                        f"not to {type(fn).__name__}")
    if name is None:
        name = getattr(fn, "__name__", None)
    if not isinstance(name, str) or not name:
        raise ValueError("a task needs a non-empty name")
    t = Task(name, fn)
    old = registry.get(name)
    if old is not None and old.fn is not fn:
        raise ValueError(f"task '{name}' is defined twice: in {old.where} "
                         f"and in {t.where}")
    registry[name] = t
    return fn


def task(fn=None, *, name=None):
    """Registers a function as a task of this worker, under its own name or
    `name`: @zpipe_worker.task or @zpipe_worker.task(name="score").
    Returns the function unchanged, so that it can still be called."""
    if fn is None:
        return lambda f: _register(f, name)
    return _register(fn, name)
