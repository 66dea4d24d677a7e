# SPDX-License-Identifier: MIT
"""zpipe_worker: tasks written in Python serve the remote stages of zpipe.

    import zpipe_worker

    @zpipe_worker.task
    def score(item):                 # one output per item
        return item * 2

    @zpipe_worker.task(name="words")
    def split(line, bind=None):      # a generator: any number (branch)
        yield from line.split(bind)

    @zpipe_worker.task
    def evens(n):                    # a filter
        return n if n % 2 == 0 else zpipe_worker.NOTHING

    @zpipe_worker.task
    async def fetch(url):            # many at once on one asyncio loop
        ...

and then `python3 -m zpipe_worker --connect tcp://HOST:PORT --module
FILE.py`. The worker speaks zpipe's wire protocol (docs/protocol.md) with
ZeroMQ and msgpack; docs/python.md is the reference.
"""

from ._cli import main
from ._tasks import NOTHING, task

__all__ = ["NOTHING", "main", "task"]
