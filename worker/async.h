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
 * A worker process runs its async tasks on one loop thread too, which
 * takes every batch the coordinator sends and runs all their items at
 * once (zp__async_server).
 */
#ifndef ZP_WORKER_ASYNC_H
#define ZP_WORKER_ASYNC_H

#include "core/list.h"
#include "transport/batch.h"
#include "worker/call.h"

/*
 * Worker processes: batches of items of async tasks, all at once, on one
 * loop thread that serves every batch it is given (a worker runs a slow
 * async item per batch, so batches must overlap).
 */
typedef struct zp__async_server zp__async_server;

/* One batch. The submitter allocates it zeroed, fills the first part and
 * owns it; the server gives it back through `done` exactly once. */
typedef struct zp__async_job {
    const zp__stage_def *def; /* borrowed; the task                   */
    const char *items;        /* borrowed; the batch (batch.h)        */
    size_t len;
    void *arg; /* the submitter's                       */
    /* What the batch made, valid in `done`. */
    msgpack_sbuffer out; /* outputs back to back                  */
    uint32_t n;          /* outputs                               */
    uint32_t retried, skipped;
    uint64_t busy;  /* ns its calls took, summed (all attempts) */
    uint32_t calls; /* calls that ended                         */
    bool failed;    /* an item failed for good: the batch fails */
    uint64_t seq;   /* which one                             */
    char *error;    /* owned; why                            */
    bool dropped;   /* the server stopped first: no result   */
    /* The server's. */
    zp__qnode node;
    zp__batch_reader rd;
    int live;         /* calls started and not ended            */
    bool all_started; /* every item started (or the batch failed) */
} zp__async_job;

/*
 * Starts the loop thread: at most `capacity` calls in flight; `done` is
 * called on the loop thread when a job ended, and on the caller's thread
 * of zp__async_server_destroy() for jobs dropped. `ctl->stop` stops it.
 * Returns NULL when out of memory or threads.
 */
zp__async_server *
zp__async_server_new(zp__runctl *ctl, int capacity,
                     void (*done)(void *arg, zp__async_job *job), void *arg);

/* Hands a job to the server. Thread-safe. */
void zp__async_server_submit(zp__async_server *s, zp__async_job *job);

/*
 * Stops the server once its calls in flight have ended (set ctl->stop
 * first), joins its thread, drops the jobs not done, frees it. NULL and
 * *s == NULL are harmless.
 */
void zp__async_server_destroy(zp__async_server **s);

#endif
