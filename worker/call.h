/* SPDX-License-Identifier: MIT */
/*
 * Calls: the zp_call a task sees, and what the worker does with its
 * outputs. Part of worker.
 *
 * Outputs go one of two ways. Direct: packed straight into the worker's
 * batch, sent while the call runs (lazy, streaming). Parked: kept in the
 * call until it ends, then committed or dropped as a whole; used when a
 * failed call may be retried or skipped (so a failed attempt leaves no
 * outputs behind) and when the stage is ordered (outputs wait for their
 * turn).
 */
#ifndef ZP_WORKER_CALL_H
#define ZP_WORKER_CALL_H

#include <time.h>

#include "worker/thread.h"

struct zp_call {
    zp__worker *w;               /* borrowed; the worker making the call */
    const zp__stage_def *def;    /* borrowed                             */
    const msgpack_object *input; /* borrowed; this call's item           */
    uint64_t index;              /* the item's index in the stage input  */
    uint32_t total;              /* outputs of this attempt              */
    uint32_t emitted;            /* outputs parked in `buf`              */
    bool parked;                 /* outputs park in `buf`                */
    bool async;                  /* an async call (worker/async.h)       */
    bool failed;                 /* zp_fail was called                   */
    bool broken;                 /* the task broke a rule: no retry      */
    char *error;                 /* owned; the failure's message         */
    msgpack_sbuffer buf;         /* parked outputs                       */
    msgpack_packer pk;           /* writes into buf                      */
    size_t *ends;                /* owned; end of each parked output     */
    size_t ends_cap;
};

struct zp__worker {
    zp__stage_rt *stage; /* borrowed                                   */
    int index;
    zp__rx *rx;   /* borrowed from stage->in; NULL for first    */
    zp__tx *tx;   /* borrowed from stage->out                   */
    zp_call call; /* the call in progress (one at a time)       */
    zp__wstats stats;
    bool slow;             /* calls are slow: send every output at once  */
    bool counted;          /* the call in progress is in stage->busy     */
    uint64_t window_start; /* pacing: when the window began (ns)         */
    uint32_t window_items;
};

void zp__call_init(zp_call *c, zp__worker *w);
void zp__call_fini(zp_call *c);

/* Prepares the call for a new attempt on `input`. */
void zp__call_begin(zp_call *c, const msgpack_object *input, uint64_t index);

/* What zp__call_item() made of an item, besides errors. */
#define ZP__CALL_OK 0
#define ZP__CALL_SKIPPED 1

/*
 * Runs the task on one item, with the stage's retries (adding them to
 * *retried, which may be NULL). Returns ZP__CALL_OK (outputs sent or
 * parked), ZP__CALL_SKIPPED (it failed and on_error = ZP_SKIP: outputs
 * dropped), ZP_ETASK (it failed for good: c->error says why) or
 * ZP_ECANCELED (the run is stopping).
 */
int zp__call_item(zp_call *c, const msgpack_object *item, uint64_t index,
                  uint32_t *retried);

/* Drops the parked outputs of the current attempt. */
void zp__call_drop(zp_call *c);

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

/* Monotonic time in nanoseconds. */
uint64_t zp__now_ns(void);

/* Sets *t to `ns` from now on the monotonic clock, for timed waits on a
 * condition variable made by zp__cond_init_monotonic(). */
void zp__deadline_after(struct timespec *t, uint64_t ns);

/* Initialises a condition variable whose timed waits use the monotonic
 * clock. Returns 0 or ZP_ENOMEM. */
int zp__cond_init_monotonic(pthread_cond_t *c);

/* The stage definition of the call's task (nested pipelines use it). */
const zp__stage_def *zp__call_stage(zp_call *c);

/* The run the call belongs to. */
zp__runctl *zp__call_run(zp_call *c);

#endif
