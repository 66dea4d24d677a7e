/* SPDX-License-Identifier: MIT */
/*
 * The async server: a worker process's async tasks, run on one loop
 * thread (the async engine, engine.h) that takes every batch the
 * coordinator sends and runs all their items at once (a worker runs a
 * slow async item per batch, so batches must overlap). Part of worker;
 * serve.c submits the batches and sends what they made. It never touches
 * the link to the coordinator.
 */
#ifndef ZP_WORKER_ASERVER_H
#define ZP_WORKER_ASERVER_H

#include "core/list.h"
#include "transport/batch.h"
#include "worker/call.h"

typedef struct zp__aserver zp__aserver;

/* One batch. The submitter allocates it zeroed, fills the first part and
 * owns it; the server gives it back through `done` exactly once. */
typedef struct zp__ajob {
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
    int live;         /* calls started and not ended; >= 0      */
    bool all_started; /* every item started (or the batch failed) */
} zp__ajob;

/*
 * Starts the loop thread: at most `capacity` calls in flight; `done` is
 * called on the loop thread when a job ended, and on the caller's thread
 * of zp__aserver_destroy() for jobs dropped. `ctl->stop` stops it.
 * Returns NULL when out of memory or threads.
 */
zp__aserver *zp__aserver_new(zp__runctl *ctl, int capacity,
                             void (*done)(void *arg, zp__ajob *job), void *arg);

/* Hands a job to the server. Thread-safe. */
void zp__aserver_submit(zp__aserver *s, zp__ajob *job);

/*
 * Stops the server once its calls in flight have ended (set ctl->stop
 * first), joins its thread, drops the jobs not done, frees it. NULL and
 * *s == NULL are harmless.
 */
void zp__aserver_destroy(zp__aserver **s);

#endif
