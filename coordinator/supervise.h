/* SPDX-License-Identifier: MIT */
/*
 * The timers of a dispatched stage: heartbeats out, workers that died
 * (mourned once their last words are read), went silent, ran past the
 * timeout or hold their batches for far too long, and items that wait
 * while no worker takes them. Part of coordinator; runs on the
 * dispatcher's thread. It calls the worker table (roster.h) and the
 * kind's tick hook, never the loop.
 */
#ifndef ZP_COORDINATOR_SUPERVISE_H
#define ZP_COORDINATOR_SUPERVISE_H

#include "coordinator/dstate.h"

/* One round of supervision at `now`: the kind's tick (a process stage
 * reaps and replaces its children; a remote one waits for a first
 * worker), then the timers, then the members given up on are swept. */
void zp__supervise(zp__dispatch *d, uint64_t now);

#endif
