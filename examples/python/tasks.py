# SPDX-License-Identifier: MIT
"""The Python stage of examples/python: a Monte Carlo estimate of pi per
item, written with the standard library, served by
`python3 -m zpipe_worker --module examples/python/tasks.py` to the remote
stage of

    range branch | estimate_pi mode=remote | summarize join

whose first and last stages run in C in the coordinator (`range` is
built in, `summarize` comes from the zpipe-examples plugin)."""

import math
import random

import zpipe_worker


@zpipe_worker.task
def estimate_pi(seed, bind=None):
    """Throws `bind` points (default 100000) into the unit square, with a
    generator seeded by the item, and returns 4 * the share that fell in
    the quarter circle."""
    points = bind or 100000
    rng = random.Random(seed)
    inside = sum(math.hypot(rng.random(), rng.random()) <= 1.0
                 for _ in range(points))
    return 4 * inside / points
