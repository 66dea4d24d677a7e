/* SPDX-License-Identifier: MIT */
/*
 * Batches of a served worker (serve.h): the stages a coordinator
 * described (STAGE), the batches it sent (ITEM) and their running, on the
 * main thread, on executor threads or on the async server (aserver.h),
 * and the messages that carry what they made back (OUT, DONE, FAIL).
 * Part of worker. The state below is the served worker's: serve.c owns
 * it and its link to the coordinator (HELLO, heartbeats, the watchdog)
 * and calls in here; nothing here calls serve.c.
 */
#ifndef ZP_WORKER_EXECUTE_H
#define ZP_WORKER_EXECUTE_H

#include <pthread.h>
#include <sys/types.h>

#include "core/list.h"
#include "transport/peer.h"
#include "transport/proto.h"
#include "worker/aserver.h"
#include "worker/call.h"
#include "worker/serve.h"

/* A stage of a run, as STAGE described it. */
typedef struct zp__sstage {
    uint64_t run;
    uint32_t index;
    zp_pipeline *p; /* owned; one stage, or NULL: this worker lacks it */
    char *missing;  /* owned; the task name when p is NULL           */
} zp__sstage;

/* A batch to run, as ITEM sent it. */
typedef struct zp__sjob {
    zp__qnode node;
    uint64_t run, batch;
    uint32_t stage;
    const char *items; /* batch bytes: `owned`, or the message's */
    size_t len;
    char *owned;
} zp__sjob;

/* A worker serving a coordinator. */
typedef struct zp__server {
    const zp__serve_opts *o;
    zp__serve_stats *stats; /* o->stats, or `own` */
    zp__serve_stats own;
    zp__peer *peer;       /* owned */
    zp__runctl ctl;       /* stop: the process is leaving */
    pthread_mutex_t lock; /* guards jobs, stages, busy */
    pthread_cond_t cond;
    zp__queue jobs;     /* owned queue of zp__sjob */
    zp__sstage *stages; /* owned */
    size_t nstages;
    int busy;     /* executors inside a batch; >= 0 */
    pid_t parent; /* child workers: the coordinator that spawned them */
    bool greeted; /* a HELLO went out */
    pthread_t *threads;
    int nthreads;
    pthread_mutex_t io;             /* the peer's sockets: held by the main
                                       thread but while it runs a batch  */
    _Atomic uint64_t running_since; /* the main thread runs a batch since */
    uint64_t beat;                  /* the last HEARTBEAT; under io       */
    pthread_cond_t tick;            /* the watchdog's wait                */
    pthread_t watchdog;
    bool watching;
    zp__aserver *async;   /* owned; runs async tasks, made on demand */
    zp__outbox *async_ob; /* owned; used by the async loop's thread  */
} zp__server;

/* STAGE: keeps the stage's settings (the main thread). */
void zp__execute_stage(zp__server *s, const zp__msg *m);

/* ITEM: runs the batch here (one thread: the link is the watchdog's
 * meanwhile), or hands it to an executor or the async server (the main
 * thread, holding `io`). */
void zp__execute_item(zp__server *s, const zp__msg *m);

/* An executor thread: runs queued batches until the server stops. */
void *zp__execute_main(void *server);

/* Whether no batch waits or runs. Thread-safe. */
bool zp__execute_idle(zp__server *s);

/* Frees the batches still queued and the stages. No executor runs. */
void zp__execute_fini(zp__server *s);

#endif
