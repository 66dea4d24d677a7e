/* SPDX-License-Identifier: MIT */
/*
 * Thread workers: the runtime of one stage of a run, and the loop each of
 * its worker threads runs. Part of worker: it runs tasks and moves their
 * items through transport links; it knows nothing of how a run is built,
 * and reports failures to the run through zp__runctl.
 */
#ifndef ZP_WORKER_THREAD_H
#define ZP_WORKER_THREAD_H

#include <pthread.h>
#include <stdatomic.h>

#include "core/hist.h"
#include "core/pipeline.h"
#include "transport/link.h"
#include "worker/order.h"

/* What a worker needs from its run. Embedded in the run. */
typedef struct zp__runctl {
    _Atomic bool stop; /* set once the run stops: failure or cancel */
    /* Records a failure (the first one wins) and stops the run. Takes
     * ownership of `msg` (may be NULL when out of memory). Thread-safe. */
    void (*fail)(struct zp__runctl *ctl, int code, char *msg);
} zp__runctl;

/* Counters of one worker; written by it alone, read by anyone. */
typedef struct zp__wstats {
    _Atomic uint64_t in, out, failed, retried, skipped, busy_ns;
    _Atomic uint64_t in_flight, peak; /* calls in progress; most at once */
    zp__hist hist;                    /* the task's time per item        */
} zp__wstats;

typedef struct zp__stage_rt zp__stage_rt;
typedef struct zp__worker zp__worker;

/* The runtime of one stage within one run. */
struct zp__stage_rt {
    const zp__stage_def *def;   /* borrowed from the pipeline             */
    zp__runctl *run;            /* borrowed                               */
    zp__edge *in;               /* borrowed; NULL for the first stage     */
    zp__edge *out;              /* borrowed                               */
    const msgpack_object *args; /* borrowed; the first stage's input    */
    bool ordered;               /* outputs leave in input order           */
    zp__worker *workers;        /* owned, def->opts.workers of them       */
    int nworkers;
    _Atomic int alive; /* workers not finished yet               */
    /* Ordered stages: outputs park here until every earlier item left. */
    pthread_mutex_t order_lock;
    zp__tx *shared_tx;     /* borrowed from `out`; the only producer */
    zp__order order;       /* guarded by order_lock                  */
    _Atomic uint64_t busy; /* calls in progress (several workers)    */
    _Atomic uint64_t peak; /* most calls in progress at once         */
};

/*
 * Sets up the stage's workers: worker j reads in->rx[j] and writes
 * out->tx[j] (or out->tx[0], shared, when ordered). Returns 0 or
 * ZP_ENOMEM; zp__stage_fini() must be called either way.
 */
int zp__stage_init(zp__stage_rt *st, const zp__stage_def *def, zp__runctl *run,
                   zp__edge *in, zp__edge *out, const msgpack_object *args);
void zp__stage_fini(zp__stage_rt *st);

/* The thread function of worker j of a stage: pthread_create(..., w). */
void *zp__worker_main(void *w);

/* Worker j of the stage. */
zp__worker *zp__stage_worker(zp__stage_rt *st, int j);

/* Adds the stage's counters into *st (task, workers and queue excluded). */
void zp__stage_stats(zp__stage_rt *st, zp_stage_stats *out);

#endif
