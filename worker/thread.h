/* SPDX-License-Identifier: MIT */
/*
 * Thread stages: a stage whose task runs on `workers` threads of this
 * process (zp__thread_stage_ops in stage.h), and the loop each of those
 * threads runs. Part of worker: it runs tasks and moves their items
 * through transport links; it knows nothing of how a run is built, and
 * reports failures to the run through zp__runctl.
 */
#ifndef ZP_WORKER_THREAD_H
#define ZP_WORKER_THREAD_H

#include <pthread.h>

#include "transport/link.h"
#include "worker/call.h"
#include "worker/order.h"

typedef struct zp__tstage zp__tstage;

/* One worker thread of a thread stage. */
struct zp__worker {
    zp__tstage *stage; /* borrowed                                   */
    int index;
    zp__rx *rx;   /* borrowed from the input edge; NULL for first */
    zp__tx *tx;   /* borrowed from the output edge; NULL: ordered */
    zp_call call; /* the call in progress (one at a time)       */
    zp__wstats stats;
    bool slow;             /* calls are slow: send every output at once  */
    bool counted;          /* the call in progress is in stage->busy     */
    uint64_t window_start; /* pacing: when the window began (ns)         */
    uint32_t window_items;
};

/*
 * Flushes the worker's output batch so nothing waits in it. Returns 0,
 * ZP_ECANCELED or ZP_EIO.
 */
int zp__worker_flush(zp__worker *w);

/* Flushes the worker's output batch if a consumer waits for it. */
int zp__worker_nudge(zp__worker *w);

/*
 * Pacing: call after each item (or output of a long call). Times the
 * calls in windows of a few items: a slow worker sends every output at
 * once, a fast one batches and checks for waiting consumers per window.
 */
int zp__worker_pace(zp__worker *w);

/*
 * Ends the current pacing window now, before a wait for input: its time
 * goes to the worker's busy time and, for a stage of items (not the
 * first, not a join), its items to the histogram.
 */
void zp__worker_window_end(zp__worker *w);

#endif
