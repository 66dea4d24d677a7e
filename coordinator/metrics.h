/* SPDX-License-Identifier: MIT */
/*
 * The metrics endpoint: an HTTP server (libmicrohttpd, on a thread of its
 * own) that answers GET /metrics with a page in Prometheus's text format
 * (prom.h), 404 on any other path and 405 to any other method, and the
 * pages a run and a worker serve there. Part of coordinator.
 *
 * A scrape only reads what the item path already keeps: the atomic
 * counters behind zp_run_stats(), the dispatchers' tallies (tally.h) and
 * a worker's counters. It never takes a lock the item path takes, so the
 * endpoint cannot slow a run down; a slow or stuck client holds one of
 * the server's connections, nothing else.
 */
#ifndef ZP_COORDINATOR_METRICS_H
#define ZP_COORDINATOR_METRICS_H

#include "zpipe.h"
#include "coordinator/prom.h"
#include "coordinator/tally.h"
#include "worker/serve.h"

/* ---- The server ---------------------------------------------------------- */

typedef struct zp__metrics zp__metrics;

/*
 * Writes the page of one scrape into `p`; returns whether it is a page
 * the owner waits for (zp__metrics_wait). Called on the server's thread,
 * one scrape at a time.
 */
typedef bool (*zp__metrics_render)(void *arg, zp__prom *p);

/*
 * Listens on `addr` ("HOST:PORT", ":PORT" for every IPv4 address,
 * "[V6]:PORT"; port 0 picks a free one) and serves there until destroyed.
 * Returns NULL with *why (malloc'ed) naming the address and the reason
 * when the address is malformed, unknown or in use.
 */
zp__metrics *zp__metrics_new(const char *addr, zp__metrics_render render,
                             void *arg, char **why);

/* Stops the server (open connections are closed) and frees it. NULL-safe;
 * *m becomes NULL. */
void zp__metrics_destroy(zp__metrics **m);

/* The address and port listened on, such as "127.0.0.1:9464". */
const char *zp__metrics_where(const zp__metrics *m);

/*
 * Waits until a page for which the render said true was sent whole to a
 * client, or `timeout_ms` passed. Returns true for the former.
 */
bool zp__metrics_wait(zp__metrics *m, int timeout_ms);

/* ---- Pages --------------------------------------------------------------- */

/* One row of zpipe_worker_batches_total: a worker of a dispatched stage. */
typedef struct zp__metrics_worker {
    size_t stage;      /* the stage's index (0-based) */
    zp__tally_row row; /* the worker's name and batches done */
} zp__metrics_worker;

/* Most rows of zpipe_worker_batches_total on a page, all stages together. */
#define ZP__METRICS_MAX_WORKERS 256

/*
 * The page of a run: the metrics of docs/cli.md for each of the n stages
 * `st`, one row per worker of `w` (nw of them), zpipe_run_info and
 * zpipe_run_up (`up`).
 */
void zp__metrics_run_page(zp__prom *p, const zp_stage_stats *st, size_t n,
                          const zp__metrics_worker *w, size_t nw, bool up);

/* The page of `zpipe worker --metrics`. */
void zp__metrics_worker_page(zp__prom *p, const zp__serve_stats *s);

/*
 * Serves the page of a worker whose counters are `s` (borrowed: it must
 * outlive the server) on `addr`, as zp__metrics_new().
 */
zp__metrics *zp__worker_metrics_new(const char *addr, zp__serve_stats *s,
                                    char **why);

/* ---- A run's endpoint ---------------------------------------------------- */

typedef struct zp__run_metrics zp__run_metrics;

/*
 * Serves the metrics of `r` (started: its stages exist; `tallies` is the
 * array of its n stages' tallies, NULL for stages without one) where
 * o->metrics_listen or $ZPIPE_METRICS says, and says where on stderr.
 * Sets *m to NULL and returns 0 when neither asks for metrics; returns
 * ZP_EINVAL with *why (malloc'ed) when the server cannot start.
 */
int zp__run_metrics_start(zp__run_metrics **m, zp_run *r,
                          zp__tally *const *tallies, size_t n,
                          const zp_run_opts *o, char **why);

/*
 * The run is over: from now on the endpoint serves `final` (n stages)
 * with zpipe_run_up 0, until it has been scraped once or the run's
 * metrics_linger_ms passed; then the server stops. Call it before the
 * run's stages and dispatchers are freed. NULL and *m == NULL are
 * harmless; *m becomes NULL.
 */
void zp__run_metrics_stop(zp__run_metrics **m, const zp_stage_stats *final,
                          size_t n);

#endif
