/* SPDX-License-Identifier: MIT */
/*
 * Executors of a served worker (serve.h): what runs a batch the
 * coordinator sent, on an executor thread or on the main thread, and
 * posts what it made (OUT, DONE, FAIL). Part of worker. The state below
 * is the served worker's: serve.c owns it, keeps its link to the
 * coordinator (HELLO, STAGE, ITEM, heartbeats, the watchdog) and calls
 * in here; nothing here calls serve.c.
 */
#ifndef ZP_WORKER_EXECUTE_H
#define ZP_WORKER_EXECUTE_H

#include <pthread.h>
#include <sys/types.h>

#include "core/idmap.h"
#include "core/list.h"
#include "transport/peer.h"
#include "worker/aserver.h"
#include "worker/call.h"
#include "worker/serve.h"

/* STAGE settings a worker keeps at most; past it the oldest not in use is
 * forgotten first (an ITEM of a forgotten stage fails: "no STAGE was
 * sent"). The Python worker's MAX_STAGES (python/zpipe_worker/_serve.py)
 * is the same number; docs/protocol.md states it. */
#define ZP__WORKER_MAX_STAGES 1024

/* A stage of a run, as STAGE described it. */
typedef struct zp__sstage {
    unsigned char key[12]; /* run and index: its key in the server's map */
    uint64_t run;
    uint32_t index;
    zp_pipeline *p; /* owned; one stage, or NULL: this worker lacks it */
    char *missing;  /* owned; the task name when p is NULL           */
    int users;      /* batches running it; >= 0; under the server's lock */
    uint64_t used;  /* when last configured or run (zp__now_ns)      */
} zp__sstage;

/* A batch to run, as ITEM sent it. */
typedef struct zp__sjob {
    zp__qnode node;
    uint64_t run, batch;
    uint32_t stage;
    const char *items; /* batch bytes: `owned`, or the message's */
    size_t len;
    char *owned;
    zp__sstage *held; /* the stage an async batch runs, held; or NULL */
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
    zp__queue jobs;      /* owned queue of zp__sjob */
    zp__sstage **stages; /* owned; oldest first, at most MAX_STAGES
                            but for those in use */
    size_t nstages;
    zp__idmap stage_ids; /* (run, index) -> one of stages */
    uint64_t run;        /* the run of the last STAGE */
    int busy;            /* batches being run; >= 0 */
    pid_t parent;        /* child workers: the coordinator that spawned them */
    bool greeted;        /* a HELLO went out */
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

/* What one batch produced so far. */
typedef struct zp__result {
    msgpack_sbuffer out; /* outputs back to back */
    uint32_t n;          /* how many */
    uint32_t retried, skipped;
    uint64_t start;   /* when the batch began to run (zp__now_ns) */
    uint64_t sending; /* ns spent since sending OUT parts           */
    uint64_t busy;    /* ns the batch ran, once it is over          */
    uint32_t items;   /* items run */
} zp__result;

/* Where a batch's messages go: the outbox of the thread that runs it, or
 * the link itself when the main thread runs it. */
typedef struct zp__sink {
    zp__server *s;
    zp__outbox *ob; /* borrowed, or NULL */
} zp__sink;

/* The stage `index` of run `run`, or NULL. The caller holds s->lock. */
zp__sstage *zp__execute_find_stage(zp__server *s, uint64_t run, uint32_t index);

/* The stage `index` of run `run`, held (not freed until released), or
 * NULL. The caller holds s->lock. */
zp__sstage *zp__execute_hold(zp__server *s, uint64_t run, uint32_t index);

/* Lets go of a stage that zp__execute_hold() gave (NULL: nothing). */
void zp__execute_release(zp__server *s, zp__sstage *st);

/* Keeps a stage a STAGE message described (consumed, even on failure):
 * first forgets the stages of runs that are over and, at MAX_STAGES,
 * the oldest not in use. Returns 0 or ZP_ENOMEM. The caller holds
 * s->lock; st's run and index are not yet kept. */
int zp__execute_keep_stage(zp__server *s, zp__sstage *st);

/* Forgets the stages of runs that are over: of another run than the
 * last STAGE's, not in use, and unused for ZP__SILENCE_MS. The caller
 * holds s->lock. */
void zp__execute_forget(zp__server *s, uint64_t now);

/* Frees every stage (the worker is leaving: none is in use). */
void zp__execute_free_stages(zp__server *s);

/* Posts OUT (more to come) or DONE with the outputs gathered so far, and
 * empties them. Returns 0 or an error code. */
int zp__execute_post_outputs(const zp__sink *ob, const zp__sjob *j,
                             zp__result *res, int type);

/* Posts FAIL: item `seq` of the batch failed, for `why`. Returns 0 or an
 * error code. */
int zp__execute_post_fail(const zp__sink *ob, const zp__sjob *j, uint64_t seq,
                          const char *why, uint64_t busy);

/* Posts what an async batch made: its outputs as DONE, after OUT
 * messages of up to OUT_CHUNK bytes when they take more; FAIL when one
 * output alone cannot travel. */
void zp__execute_post_async(const zp__sink *to, const zp__sjob *j,
                            zp__ajob *aj);

/* Counts a finished batch for the worker's metrics. Thread-safe. */
void zp__execute_count(zp__server *s, uint64_t items, uint64_t busy_ns);

/* Runs a batch on this thread and posts what it made through `ob`. */
void zp__execute_run(zp__server *s, const zp__sink *ob, const zp__sjob *j);

/* A batch that was counted busy is over: frees it. Thread-safe. */
void zp__execute_done(zp__server *s, zp__sjob *j);

/* An executor thread: runs queued batches until the server stops. */
void *zp__execute_main(void *server);

#endif
