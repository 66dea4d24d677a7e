/* SPDX-License-Identifier: MIT */
/*
 * Dispatchers: how the coordinator runs a stage whose workers are
 * processes (mode=process: children it spawns and supervises) or remote
 * (mode=remote: processes that connect from elsewhere). To the rest of the
 * run a dispatcher is the stage's single worker: it takes the stage's
 * input from its link, sends it in batches to workers over the wire
 * protocol, and sends each batch's outputs on when the batch is done, so
 * every output leaves exactly once even when a crash made a batch run
 * twice. Part of coordinator.
 */
#ifndef ZP_COORDINATOR_DISPATCH_H
#define ZP_COORDINATOR_DISPATCH_H

#include <spawn.h>

#include "worker/thread.h"

typedef struct zp__dispatch zp__dispatch;

typedef struct zp__dispatch_cfg {
    const zp__stage_def *def;   /* the stage                              */
    zp__runctl *run;            /* the run, for failures and stopping     */
    uint64_t run_id;            /* in STAGE/ITEM messages                 */
    uint32_t stage;             /* the stage's index in the run           */
    zp__edge *in;               /* input link; NULL for the first stage   */
    zp__edge *out;              /* output link                            */
    const msgpack_object *args; /* the first stage's input                */
    void *zctx;                 /* the run's context (with an I/O thread) */
    const char *endpoint;       /* where workers connect                  */
    const char *curve_secret;   /* remote: CURVE server secret key file   */
    const char *curve_allow;    /* remote: allowed worker public keys     */
    int wait_workers_ms;        /* remote: longest wait for a worker      */
} zp__dispatch_cfg;

/*
 * Binds the stage's endpoint, spawns its process workers, and starts the
 * dispatcher's thread. Returns NULL with *why (malloc'ed) on failure.
 */
zp__dispatch *zp__dispatch_new(const zp__dispatch_cfg *cfg, char **why);

/* Waits for the dispatcher's thread: it ends with its input, or when the
 * run stops. Idempotent; NULL-safe. */
void zp__dispatch_join(zp__dispatch *d);

/* Joins, makes sure every child process is reaped, and frees. NULL-safe. */
void zp__dispatch_destroy(zp__dispatch **d);

/*
 * Extra arguments of the process workers spawned from now on, after
 * `--zp-worker ENDPOINT`: a NULL-terminated array borrowed for as long as
 * runs may start, or NULL for none. The zpipe CLI passes its --plugin flags
 * this way, so that its workers load the tasks it loaded. Set it before any
 * run starts; not thread-safe.
 */
void zp__dispatch_set_worker_args(char *const *args);

/*
 * Initialises `at` for a child process that starts with no signal blocked
 * and the default action of SIGINT, SIGTERM, SIGQUIT and SIGPIPE, whatever
 * this process set up for itself (a thread that waits for signals, SIGPIPE
 * ignored): process workers, and the commands of the CLI's exec. `flags`
 * are more POSIX_SPAWN_* flags to set. posix_spawnattr_destroy() ends it.
 */
void zp__dispatch_spawnattr_init(posix_spawnattr_t *at, short flags);

/* Adds the stage's counters into *st. */
void zp__dispatch_stats(const zp__dispatch *d, zp_stage_stats *st);

/* The batches done by each of the stage's workers, by name (tally.h);
 * valid until zp__dispatch_destroy(). */
struct zp__tally *zp__dispatch_tally(zp__dispatch *d);

#endif
