/* SPDX-License-Identifier: MIT */
/*
 * Calls: the zp_call a task sees, whoever runs it (a thread worker, an
 * event loop, a worker process), and what becomes of its outputs. Part of
 * worker.
 *
 * A call knows only its host, the runner that made it (a thread worker,
 * an event loop, a served worker), through the host's small table of
 * operations (zp__call_host); it never asks which runner that is.
 *
 * Outputs go one of two ways. Direct: packed straight into the host's
 * packer (a thread worker's batch) and sent while the call runs (lazy,
 * streaming). Parked: kept in the call until it ends. Calls whose host
 * gives no packer always park (their runner sends the outputs on); a
 * call whose outputs must wait for its end parks too (it holds them): a
 * failed call that may be retried or skipped must leave no outputs
 * behind, and an ordered stage's outputs wait for their turn.
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

/*
 * What a call needs from the runner that made it. Each operation runs on
 * the call's own thread and takes the call, from which the host finds
 * itself (the call is embedded in it). An operation a host leaves NULL is
 * one it has no use for.
 */
typedef struct zp__call_host {
    /* Direct outputs: the output packed into the host's packer is whole;
     * sends it on (and paces the host). Returns 0, ZP_EINVAL when nothing
     * was packed, ZP_ECANCELED or ZP_EIO. Needed with a packer. */
    int (*send)(zp_call *c);
    /* Direct outputs: drops what was packed since the last send. Needed
     * with a packer. */
    void (*discard)(zp_call *c);
    /* Sends on the direct outputs waiting in the host's batch. Returns 0,
     * ZP_ECANCELED or ZP_EIO. */
    int (*flush)(zp_call *c);
    /* The next item of a join task's input stream into *item and *index:
     * 1, 0 at its end (or when the host cannot wait for more, a failure
     * it reports itself), or an error code (ZP_ECANCELED when the run
     * stops). NULL: the host has no stream to give. */
    int (*next)(zp_call *c, const msgpack_object **item, uint64_t *index);
    /* Parked outputs: one more was parked (c->emitted counts it); the
     * host may pass it on at once. Returns 0 or an error code. */
    int (*emitted)(zp_call *c);
    /* An async call ended (zp_done or zp_fail). Needed by async calls. */
    void (*end)(zp_call *c);
} zp__call_host;

struct zp_call {
    const zp__stage_def *def;    /* borrowed; the task and its options   */
    zp__runctl *run;             /* borrowed; its stop flag              */
    zp__wstats *stats;           /* borrowed; where the call counts      */
    const zp__call_host *host;   /* borrowed; the runner's operations    */
    msgpack_packer *out;         /* borrowed; where outputs are packed:
                                    the host's packer, or `pk` (parked)  */
    const msgpack_object *input; /* borrowed; this call's item           */
    uint64_t index;              /* the item's index in the stage input  */
    uint32_t total;              /* outputs of this attempt              */
    uint32_t emitted;            /* outputs parked in `buf`              */
    bool parked;                 /* outputs park in `buf`                */
    bool hold;                   /* outputs wait for the call's end      */
    bool async;                  /* an async task's: zp_done() ends it   */
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
 * its outputs must leave in input order. `host` is the runner making it
 * (borrowed, outlives the call; NULL: a host with no operations);
 * `direct` the host's packer for direct outputs (borrowed), or NULL: every
 * output parks. `c` is zeroed the first time; a call slot made again for
 * another task keeps its buffers. zp__call_fini() frees them.
 */
void zp__call_init(zp_call *c, const zp__stage_def *def, zp__runctl *run,
                   zp__wstats *stats, bool ordered, const zp__call_host *host,
                   msgpack_packer *direct);
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
 * Sends on what the call emitted so far straight to its host's batch, so
 * that nothing waits in it (a task about to wait for its own input does
 * this); parked outputs go at the call's end. Returns 0, ZP_ECANCELED or
 * ZP_EIO.
 */
int zp__call_flush(zp_call *c);

/* Drops the parked outputs of the current attempt. */
void zp__call_drop(zp_call *c);

/* The stage definition of the call's task (nested pipelines use it). */
const zp__stage_def *zp__call_stage(zp_call *c);

/* The run the call belongs to. */
zp__runctl *zp__call_run(zp_call *c);

#endif
