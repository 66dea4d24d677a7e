/* SPDX-License-Identifier: MIT */
/*
 * The wire protocol's timings, in milliseconds: the one copy that the
 * coordinator's dispatched stages and the C worker's main loop take
 * theirs from. docs/protocol.md states them in its table of timings, and
 * the Python worker keeps its own in python/zpipe_worker/_timing.py;
 * tests/timing_test.py fails when any of the three says another number.
 * Part of transport, which owns the protocol. Constants only: it must
 * never hold code or include anything.
 */
#ifndef ZP_TRANSPORT_TIMING_H
#define ZP_TRANSPORT_TIMING_H

/* Each side sends a HEARTBEAT this often (the coordinator to each worker
 * from each stage that knows it, a worker on its connection), also while
 * a long item runs. */
#define ZP__HEARTBEAT_MS 1000

/* A worker that has no work and has heard nothing from its coordinator
 * for this long says HELLO again. */
#define ZP__SILENCE_MS 3000

/* A stage that has heard nothing from a worker for this long declares it
 * dead: its batches in flight run elsewhere. */
#define ZP__DEAD_MS 3000

/* After a process worker dies, the coordinator reads what it sent before
 * it died for this long, then gives up on its batches. */
#define ZP__MOURN_MS 50

/* A worker that holds batches and has returned none for many times the
 * average time of a batch (STUCK_TIMES of coordinator/dstate.h), and at
 * least this long, is given up on. */
#define ZP__STUCK_MIN_MS 30000

#endif
