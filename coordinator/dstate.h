/* SPDX-License-Identifier: MIT */
/*
 * The state of a dispatched stage, shared by the files of its dispatcher,
 * each of which owns a part of it and the operations on that part:
 * ledger.c the batches, roster.c the worker table (the members below),
 * supervise.c the timers, dispatch.c the loop and the input, and one file
 * per kind of stage (procstage.c, remstage.c) what only that kind does,
 * through the hooks below. Calls go one way: kind -> loop -> timers ->
 * table -> ledger; the core reaches a kind through its hooks alone.
 * Private to those files; everything here is used by the dispatcher's
 * thread alone but for the atomics, which statistics read. Part of
 * coordinator.
 */
#ifndef ZP_COORDINATOR_DSTATE_H
#define ZP_COORDINATOR_DSTATE_H

#include <pthread.h>

#include "core/clock.h"
#include "core/idmap.h"
#include "core/tally.h"
#include "coordinator/dispatch.h"
#include "coordinator/ledger.h"
#include "transport/peer.h"
#include "transport/proto.h"
#include "transport/timing.h"

/* The protocol's timings come from transport/timing.h. */
#define HEARTBEAT_NS (ZP__HEARTBEAT_MS * ZP__NS_PER_MS)
#define DEAD_NS (ZP__DEAD_MS * ZP__NS_PER_MS)
#define MOURN_NS (ZP__MOURN_MS * ZP__NS_PER_MS)
#define STUCK_MIN_NS (ZP__STUCK_MIN_MS * ZP__NS_PER_MS)
#define STUCK_TIMES 10   /* with STUCK_MIN_NS: when a batch may be stuck */
#define MAX_UNBORN 5     /* children dead before HELLO: give up */
#define MAX_THREADS 4096 /* a worker's capacity counts this many */
#define NEW_THREADS 64   /* and, while it is new, this many      */

typedef zp__dbatch dbatch;

/* A worker process that joined the stage: an entry of the worker table. */
struct zp__member {
    char id[256]; /* routing id */
    size_t id_len;
    char name[48]; /* from its HELLO, printable, for logs */
    uint32_t pid;
    int64_t credit;      /* items it will still accept; never negative */
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
    int tally;       /* its slot in the stage's tally, or -1 */
    bool configured; /* STAGE sent */
    bool gone;
    zp__qnode ready; /* in the table's ready queue, when `queued` */
    bool queued;
};

/*
 * What one kind of dispatched stage does that the other does not, called
 * by the core on the dispatcher's thread. Every hook may be NULL.
 */
struct zp__dkind {
    /* Before the loop: a process stage spawns its children here, as a
     * child dies with the thread that spawned it (PR_SET_PDEATHSIG). */
    void (*begin)(zp__dispatch *d);
    /* Each round of supervision, at `now`. */
    void (*tick)(zp__dispatch *d, uint64_t now);
    /* Worker m said HELLO. */
    void (*joined)(zp__dispatch *d, const zp__member *m);
    /* Worker m is given up on, before its batches are. */
    void (*kill)(zp__dispatch *d, const zp__member *m);
    /* After the loop, on its way out. */
    void (*end)(zp__dispatch *d);
    /* After the thread is joined (or never started): frees what the kind
     * holds, whatever a failed start left. */
    void (*fini)(zp__dispatch *d);
};

/* The worker table (roster.c). */
typedef struct zp__roster {
    zp__member **members; /* owned */
    size_t n;
    zp__idmap ids;       /* their routing ids to them */
    zp__queue ready;     /* members that may have room, oldest first */
    size_t nready;       /* in `ready` */
    _Atomic int alive;   /* members connected that run the task */
    zp__tally tally;     /* batches done per member, by name */
    uint64_t item_ns;    /* running estimate of an item's time */
    uint64_t batch_ns;   /* and of a batch's                   */
    uint64_t progressed; /* when a batch was last sent or done */
} zp__roster;

struct zp__dispatch {
    zp__stage base;
    zp__stage_cfg cfg;
    const zp__dkind *kind; /* static */
    zp__hub *hub;          /* owned */
    pthread_t thread;
    bool started;
    zp__ledger ledger;
    zp__roster roster;
    bool ended;           /* all input read */
    bool marked;          /* a checkpoint marker came: no input is read
                             until it is passed on                   */
    zp__mark mark;        /* that marker */
    msgpack_sbuffer fill; /* the batch being gathered from input */
    uint32_t fill_n;
    uint64_t fill_seq;
    msgpack_sbuffer sb; /* scratch for encoding */
    uint64_t checked;   /* when supervision last ran */
    zp__wstats stats;
    _Atomic uint64_t restarts;
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

#endif
