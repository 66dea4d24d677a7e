/* SPDX-License-Identifier: MIT */
/*
 * Async workers: tasks registered with ZP_ASYNC_TASK run on a libuv event
 * loop, with up to `workers` calls in flight. Part of worker.
 *
 * In a run, each async stage owns one loop thread (its single worker): the
 * stage's ZeroMQ sockets belong to that thread, a slow callback in one
 * stage never stalls another, and the cost is one thread per stage, not
 * per item. The input socket is watched through ZMQ_FD with a uv_poll
 * handle, the output side never blocks: outputs go downstream while there
 * are credits, wait in the stage's backlog when there are none (and then
 * no new call starts), and a uv_async handle wakes the loop when credits
 * come back or the run stops.
 *
 * In a worker process, an async task runs each batch of items on a private
 * loop of the executor thread, every item of the batch in flight at once.
 */
#ifndef ZP_WORKER_ASYNC_H
#define ZP_WORKER_ASYNC_H

#include "transport/batch.h"
#include "worker/thread.h"

/*
 * Runs the async stage of worker `w` (its only worker) until its input
 * ends or the run stops. Returns 0 (outputs flushed, not closed), or an
 * error code: ZP_ETASK and ZP_ECANCELED are already reported to the run.
 */
int zp__async_stage(zp__worker *w);

/* What a batch of items made, for the coordinator. */
typedef struct zp__async_result {
    msgpack_sbuffer *out; /* borrowed; outputs are appended back to back */
    uint32_t n;           /* outputs appended                            */
    uint32_t retried, skipped;
    bool failed;  /* an item failed for good: the batch fails      */
    uint64_t seq; /* which one                                     */
    char *error;  /* owned; why                                    */
} zp__async_result;

/*
 * Runs every item of the open batch `rd` through the async task of `w`'s
 * stage, all at once, on a loop of its own. Returns 0 (see *res), or
 * ZP_EPROTO for a malformed item, ZP_ENOMEM or ZP_EIO.
 */
int zp__async_batch(zp__worker *w, zp__batch_reader *rd, zp__async_result *res);

/* zp_emit() of an async call, once the output is parked in the call. */
int zp__async_emitted(zp_call *c);

/* zp_done() and zp_fail() of an async call: the call ends. */
void zp__async_end(zp_call *c);

#endif
