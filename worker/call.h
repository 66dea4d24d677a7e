/* SPDX-License-Identifier: MIT */
/*
 * Calls: the zp_call a task sees, whoever runs it (a thread worker, an
 * event loop, a worker process), and what becomes of its outputs. Part of
 * worker.
 *
 * Outputs go one of two ways. Direct: packed straight into the thread
 * worker's batch, sent while the call runs (lazy, streaming). Parked: kept
 * in the call until it ends. Calls that are not made by a thread worker
 * always park (their runner sends the outputs on); a call whose outputs
 * must wait for its end parks too (it holds them): a failed call that may
 * be retried or skipped must leave no outputs behind, and an ordered
 * stage's outputs wait for their turn.
 */
#ifndef ZP_WORKER_CALL_H
#define ZP_WORKER_CALL_H

#include <stdatomic.h>

#include "core/clock.h"
#include "core/hist.h"
#include "core/pipeline.h"

/* What a call needs from its run. Embedded in the run. */
typedef struct zp__runctl {
    _Atomic bool stop; /* set once the run stops: failure or cancel */
    /* Records a failure (the first one wins) and stops the run. Takes
     * ownership of `msg` (may be NULL when out of memory). Thread-safe. */
    void (*fail)(struct zp__runctl *ctl, int code, char *msg);
} zp__runctl;

/* Counters of one runner of calls; written by it alone, read by anyone. */
typedef struct zp__wstats {
    _Atomic uint64_t in, out, failed, retried, skipped, busy_ns;
    _Atomic uint64_t in_flight, peak; /* calls in progress; most at once */
    zp__hist hist;                    /* the task's time per item        */
} zp__wstats;

/* Adds the counters into *st (calls in flight and the histogram of item
 * times included, not the peak). */
void zp__wstats_add(const zp__wstats *w, zp_stage_stats *st);

typedef struct zp__worker zp__worker;

struct zp_call {
    const zp__stage_def *def;    /* borrowed; the task and its options   */
    zp__runctl *run;             /* borrowed; its stop flag              */
    zp__wstats *stats;           /* borrowed; where the call counts      */
    zp__worker *w;               /* borrowed; the thread worker making
                                    the call, whose batch direct outputs
                                    go to; NULL: every output parks     */
    const msgpack_object *input; /* borrowed; this call's item           */
    uint64_t index;              /* the item's index in the stage input  */
    uint32_t total;              /* outputs of this attempt              */
    uint32_t emitted;            /* outputs parked in `buf`              */
    bool parked;                 /* outputs park in `buf`                */
    bool hold;                   /* outputs wait for the call's end      */
    bool async;                  /* an async call (worker/async.h)       */
    bool failed;                 /* zp_fail was called                   */
    bool broken;                 /* the task broke a rule: no retry      */
    char *error;                 /* owned; the failure's message         */
    msgpack_sbuffer buf;         /* parked outputs                       */
    msgpack_packer pk;           /* writes into buf                      */
    size_t *ends;                /* owned; end of each parked output     */
    size_t ends_cap;
};

/*
 * Makes `c` a call of `def`'s task, the one way calls are made. `ordered`:
 * its outputs must leave in input order. `w` is the thread worker making
 * it, or NULL. `c` is zeroed the first time; a call slot made again for
 * another task keeps its buffers. zp__call_fini() frees them.
 */
void zp__call_init(zp_call *c, const zp__stage_def *def, zp__runctl *run,
                   zp__wstats *stats, bool ordered, zp__worker *w);
void zp__call_fini(zp_call *c);

/* Prepares the call for a new attempt on `input`. */
void zp__call_begin(zp_call *c, const msgpack_object *input, uint64_t index);

/* What zp__call_item() made of an item, besides errors. */
#define ZP__CALL_OK 0
#define ZP__CALL_SKIPPED 1
#define ZP__CALL_RETRY 2

/*
 * Runs the task on one item, with the stage's retries (adding them to
 * *retried, which may be NULL). Returns ZP__CALL_OK (outputs sent or
 * parked), ZP__CALL_SKIPPED (it failed and on_error = ZP_SKIP: outputs
 * dropped), ZP_ETASK (it failed for good: c->error says why) or
 * ZP_ECANCELED (the run is stopping).
 */
int zp__call_item(zp_call *c, const msgpack_object *item, uint64_t index,
                  uint32_t *retried);

/*
 * What an ended attempt (c->failed says whether it failed) comes to after
 * `attempts` attempts: ZP__CALL_OK, ZP__CALL_RETRY, ZP__CALL_SKIPPED
 * or ZP_ETASK. Outputs of a failed call are dropped.
 */
int zp__call_outcome(zp_call *c, int attempts);

/*
 * Sends on what the call emitted so far straight to its thread worker's
 * batch, so that nothing waits in it (a task about to wait for its own
 * input does this); parked outputs go at the call's end. Returns 0,
 * ZP_ECANCELED or ZP_EIO.
 */
int zp__call_flush(zp_call *c);

/* Drops the parked outputs of the current attempt. */
void zp__call_drop(zp_call *c);

/* The stage definition of the call's task (nested pipelines use it). */
const zp__stage_def *zp__call_stage(zp_call *c);

/* The run the call belongs to. */
zp__runctl *zp__call_run(zp_call *c);

#endif
