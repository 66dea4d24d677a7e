/* SPDX-License-Identifier: MIT */
/*
 * Stage runners: how one stage of a run runs, behind one small table of
 * operations, as nng's transports and libuv's handle types are. Part of
 * worker, which implements the kinds that run in this process (threads,
 * an event loop); the coordinator adds the kinds whose workers are other
 * processes (spawned, or remote), and picks a stage's kind
 * (coordinator/stage.c). The run engine builds the edges, then drives each
 * stage through its ops and never asks which kind it holds: a new kind is a new
 * file.
 *
 * Life of a stage, as nng writes its ops:
 * - start makes the stage and starts its threads. When it fails it may
 *   still hand back a stage in *out, partly started: the run then treats
 *   it as any other (stop, join, destroy), and every kind makes that safe
 *   on whatever a failed start left.
 * - stop (from any thread, never blocks: the run is stopping) wakes
 *   whatever of the stage waits.
 * - join waits until its threads are done.
 * - stats and tally may be called at any time between start and destroy.
 * - destroy (after join) frees everything.
 */
#ifndef ZP_WORKER_STAGE_H
#define ZP_WORKER_STAGE_H

#include "core/pipeline.h"
#include "core/tally.h"
#include "transport/link.h"
#include "transport/peer.h"
#include "worker/spill.h"
#include "worker/thread.h"

typedef struct zp__stage_ops zp__stage_ops;

/* The head of every kind's stage: a kind's struct begins with it. */
typedef struct zp__stage {
    const zp__stage_ops *ops;
} zp__stage;

/* What a stage is given to run. Everything is borrowed and outlives the
 * stage, but the hub. */
typedef struct zp__stage_cfg {
    const zp__stage_def *def;   /* the stage                               */
    zp__runctl *run;            /* failures, stopping                      */
    uint64_t run_id;            /* tells this run from others on the wire  */
    uint32_t index;             /* the stage's place in the run, from 0    */
    zp__edge *in;               /* its input; NULL for the first stage     */
    zp__edge *out;              /* its output                              */
    const msgpack_object *args; /* the first stage's input                 */
    void *zctx;                 /* the run's ZeroMQ context                */
    int wait_workers_ms;        /* longest wait for a first remote worker  */
    const char *private_dir;    /* the run's private folder (mode 0700,
                                   removed with the run), when the shape
                                   asks for it; else NULL                  */
    zp__hub *hub;               /* the stage's share of the run's listener
                                   of remote workers, when the shape asks
                                   for it; else NULL. start takes it over,
                                   whatever it returns                     */
    zp__spill_slot *spill;      /* a join stage of a checkpointed run: its
                                   spill file and its part in the run's
                                   checkpoints; else NULL                  */
} zp__stage_cfg;

/* How a stage meets its edges, known before it starts. */
typedef struct zp__stage_shape {
    int senders;       /* producers on its output edge                  */
    int receivers;     /* consumers on its input edge                   */
    bool late_release; /* gives input credits back only when the outputs
                          of those items leave (zp__edge.defer_release) */
    bool io_thread;    /* its sockets need ZeroMQ's I/O thread          */
    int files;         /* descriptors it holds besides its edges' sockets
                          (one eventfd each): its own sockets, its worker
                          processes' connections                       */
    bool private_dir;  /* it needs the run's private folder (cfg)       */
    bool hub;          /* it needs a hub from the run's listener (cfg)  */
} zp__stage_shape;

struct zp__stage_ops {
    const char *kind; /* for messages: "threads", "event loop", ... */
    /* Whether this kind runs stages like `def`. */
    bool (*claims)(const zp__stage_def *def);
    /* Its shape, as the stage of index `index` of a run. */
    void (*shape)(const zp__stage_def *def, size_t index, zp__stage_shape *out);
    /*
     * Makes the stage and starts its threads. Returns 0 with the stage in
     * *out, or an error code with *why (malloc'ed, may stay NULL). On
     * failure *out is NULL or a stage that the caller stops, joins and
     * destroys as any other.
     */
    int (*start)(const zp__stage_cfg *cfg, zp__stage **out, char **why);
    /* The run is stopping: wakes whatever of the stage waits. Thread-safe,
     * never blocks. */
    void (*stop)(zp__stage *s);
    /* Waits until the stage's threads are done. Idempotent. */
    void (*join)(zp__stage *s);
    /* Adds the stage's counters into *st (task, workers and queue are
     * the run's). Thread-safe. */
    void (*stats)(zp__stage *s, zp_stage_stats *st);
    /* Joins if needed, frees, sets *s to NULL. NULL-safe. */
    void (*destroy)(zp__stage **s);
    /* What each of its workers did (a dispatched stage: batches), by
     * name, for the metrics; valid until destroy. NULL (the op or its
     * result) when the kind has no workers of its own to name. */
    zp__tally *(*tally)(zp__stage *s);
};

/* The kinds this layer implements. */
extern const zp__stage_ops zp__thread_stage_ops;
extern const zp__stage_ops zp__async_stage_ops;

#endif
