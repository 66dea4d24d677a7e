# SPDX-License-Identifier: MIT
"""The wire protocol's timings that a worker keeps, in milliseconds: the
Python worker's one copy of them. They are transport/timing.h's numbers,
which docs/protocol.md states; tests/timing_test.py fails when the three
disagree.
"""

HEARTBEAT_MS = 1000  # a HEARTBEAT in every such time without another message
SILENCE_MS = 3000    # then an idle worker unheard from says HELLO again
