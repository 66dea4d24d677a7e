/* SPDX-License-Identifier: MIT */
/*
 * The state of a dispatched stage, shared by the two halves of its
 * dispatcher: dispatch.c (the loop: input, batches, messages, sending
 * work) and supervise.c (the workers' lives: joining, heartbeats, deaths,
 * timeouts, blame, children). Private to those two files; everything here
 * is used by the dispatcher's thread alone but for the atomics, which
 * statistics read. Part of coordinator.
 */
#ifndef ZP_COORDINATOR_DSTATE_H
#define ZP_COORDINATOR_DSTATE_H

#include <pthread.h>

#include "core/clock.h"
#include "core/idmap.h"
#include "coordinator/dbatch.h"
#include "coordinator/dispatch.h"
#include "coordinator/spawn.h"
#include "coordinator/tally.h"
#include "transport/peer.h"
#include "transport/proto.h"
#include "transport/timing.h"

#define MS ZP__NS_PER_MS /* the protocol's timings: transport/timing.h */
#define HEARTBEAT_NS (ZP__HEARTBEAT_MS * MS)
#define DEAD_NS (ZP__DEAD_MS * MS)
#define MOURN_NS (ZP__MOURN_MS * MS)
#define STUCK_MIN_NS (ZP__STUCK_MIN_MS * MS)
#define STUCK_TIMES 10   /* with STUCK_MIN_NS: when a batch may be stuck */
#define MAX_UNBORN 5     /* children dead before HELLO: give up */
#define MAX_THREADS 4096 /* a worker's capacity counts this many */
#define NEW_THREADS 64   /* and, while it is new, this many      */

typedef struct zp__dworker dworker;
typedef zp__dbatch dbatch;

struct zp__dworker {
    char id[256]; /* routing id */
    size_t id_len;
    char name[48]; /* from its HELLO, printable, for logs */
    uint32_t pid;
    int64_t credit;      /* items it will still accept */
    int64_t granted;     /* items it may hold: doubles with each DONE */
    uint64_t busy_since; /* when it last went from no batch to some */
    uint32_t threads;    /* items it runs at once */
    uint32_t inflight;   /* batches sent, not done */
    uint32_t items;      /* items in them */
    uint64_t rtt_cur;    /* least round trip seen this epoch, ns */
    uint64_t rtt_prev;   /* and in the last one */
    uint64_t rtt_epoch;  /* when this one began */
    uint64_t heard, beat;
    uint64_t done;   /* when its last batch was done */
    char *death;     /* owned; how its process ended, until mourned */
    bool suspect;    /* runs a suspect batch, alone */
    uint64_t died;   /* when that was seen */
    bool has_task;   /* it serves the stage's task (in its pool) */
    int tally;       /* its slot in the dispatcher's tally, or -1 */
    bool configured; /* STAGE sent */
    bool gone;
    zp__qnode ready; /* in the dispatcher's ready queue, when `queued` */
    bool queued;
};

struct zp__dispatch {
    zp__stage base;
    zp__stage_cfg cfg;
    zp__hub *hub;
    pthread_t thread;
    bool started;
    dworker **workers; /* owned */
    size_t nworkers;
    zp__idmap ids;   /* their routing ids to them */
    zp__queue ready; /* workers that may have room, oldest first */
    size_t nready;
    zp__queue waiting;    /* owned dbatches to send                */
    zp__queue inflight;   /* owned dbatches sent, oldest first     */
    zp__queue held;       /* owned dbatches done, ordered stages   */
    size_t nwaiting;      /* items in the waiting list */
    size_t waiting_bytes; /* and their bytes           */
    uint64_t next_id;
    uint64_t next_seq;    /* ordered: the next item index to deliver */
    bool ended;           /* all input read */
    msgpack_sbuffer fill; /* the batch being gathered from input */
    uint32_t fill_n;
    uint64_t fill_seq;
    zp__children *kids;       /* owned; the worker processes, or NULL  */
    bool *greeted;            /* owned; the slot's child said HELLO    */
    int unborn;               /* children in a row that died before HELLO */
    uint64_t no_worker_since; /* remote: waiting for a worker since */
    uint64_t item_ns;         /* running estimate of an item's time */
    uint64_t batch_ns;        /* and of a batch's                   */
    msgpack_sbuffer sb;       /* scratch for encoding */
    uint64_t checked;         /* when supervision last ran */
    uint64_t sends;           /* batches sent so far */
    uint64_t progressed;      /* when a batch was last sent or done */
    zp__wstats stats;
    _Atomic uint64_t restarts;
    _Atomic uint64_t items_out;  /* items in batches sent, not yet done  */
    _Atomic uint64_t items_peak; /* most ever                            */
    _Atomic int alive;           /* workers connected that run the task  */
    zp__tally tally;             /* batches done per worker, by name     */
};

static inline bool stopping(const zp__dispatch *d)
{
    return atomic_load(&d->cfg.run->stop);
}

static inline void fail_run(zp__dispatch *d, char *msg)
{
    d->cfg.run->fail(d->cfg.run, ZP_ETASK, msg);
}

static inline const char *task(const zp__dispatch *d)
{
    return d->cfg.def->name;
}

/* The stage's pool, or NULL. */
static inline const char *pool(const zp__dispatch *d)
{
    return d->cfg.def->opts.pool;
}

/* ---- dispatch.c ---------------------------------------------------------- */

/* Puts a batch in the waiting list: at its end, or its front (first to
 * go again). */
void zp__dispatch_enqueue(zp__dispatch *d, dbatch *b, bool front);

/* Unlinks in-flight batch b; prev is the one before it. */
dbatch *zp__dispatch_unlink_inflight(zp__dispatch *d, dbatch *prev, dbatch *b);

/* Puts a worker that may have room (it said HELLO or READY, or returned a
 * batch) in the ready queue, where the next batches look for a worker,
 * unless it is there already. */
void zp__dispatch_offer(zp__dispatch *d, dworker *w);

/* Takes a worker out of the ready queue, before it is freed or reset. */
void zp__dispatch_unready(zp__dispatch *d, dworker *w);

/* Splits a suspect batch in two suspects queued at the front (consumes b).
 * Returns 0 or ZP_ENOMEM. */
int zp__dispatch_split(zp__dispatch *d, dbatch *b);

/* Delivers a done batch's outputs (consumes b). Returns 0 or an error. */
int zp__dispatch_deliver(zp__dispatch *d, dbatch *b);

/* ---- supervise.c --------------------------------------------------------- */

/* Sends the message encoded in d->sb to a worker (and clears d->sb).
 * Returns 0 or ZP_EIO. */
int zp__dispatch_send(zp__dispatch *d, dworker *w);

/* The worker of a routing id, or NULL. */
dworker *zp__dispatch_find_worker(zp__dispatch *d, const void *id, size_t len);

/* A worker said HELLO. */
void zp__dispatch_on_hello(zp__dispatch *d, const zp__hub_msg *hm,
                           const zp__msg *m);

/*
 * A worker is gone: its batches go back to the waiting list. With `why`
 * (a crash or a timeout; consumed) the batches it was running are blamed.
 */
void zp__dispatch_lose_worker(zp__dispatch *d, dworker *w, char *why);

/* A worker broke the protocol (`rule` says how): it is given up on, its
 * batches run elsewhere and none is blamed; one log line names it. */
void zp__dispatch_drop_worker(zp__dispatch *d, dworker *w, const char *rule);

/* Spawns the worker process of slot i, failing the run when it cannot. */
void zp__dispatch_spawn(zp__dispatch *d, int i);

/* Reaps and replaces children, sends heartbeats, gives up on workers that
 * died, went silent or ran past the timeout, and fails a remote stage
 * that waited too long for a worker. */
void zp__dispatch_supervise(zp__dispatch *d, uint64_t now);

#endif
