/* SPDX-License-Identifier: MIT */
/*
 * Worker mode: a process that serves the tasks it has registered to a
 * coordinator over the wire protocol (transport/proto.h). Process workers
 * are the program itself re-executed with --zp-worker; remote workers are
 * the same program (or `zpipe worker`) started elsewhere. Part of worker.
 */
#ifndef ZP_WORKER_SERVE_H
#define ZP_WORKER_SERVE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* What a worker has done, for its metrics endpoint: written by the
 * worker's threads, read by any thread. Zeroed to start. */
typedef struct zp__serve_stats {
    _Atomic uint64_t batches;    /* batches finished (DONE or FAIL sent) */
    _Atomic uint64_t items;      /* items run                            */
    _Atomic uint64_t busy_ns;    /* time running batches, all threads    */
    _Atomic uint64_t reconnects; /* links to a coordinator after the 1st */
    _Atomic bool connected;      /* linked to a coordinator now          */
} zp__serve_stats;

typedef struct zp__serve_opts {
    const char *endpoint;   /* the coordinator                          */
    int threads;            /* items run at once (>= 1)                 */
    const char *pool;       /* the pool it joins (checked), or NULL     */
    const char *server_key; /* CURVE: the server's public key file      */
    const char *secret_key; /* CURVE: this worker's secret key file     */
    bool child;             /* spawned by its coordinator: die with it  */
    zp__serve_stats *stats; /* borrowed; filled while it serves, or NULL */
} zp__serve_opts;

/*
 * Serves until told to leave (BYE), SIGTERM or SIGINT, or the death of the
 * parent of a child worker. Returns the process's exit status: 0 on a
 * clean end, 2 when it could not start (the reason is printed).
 */
int zp__serve(const zp__serve_opts *o);

#endif
