/* SPDX-License-Identifier: MIT */
/*
 * The metrics of a run: its page (the metrics of docs/cli.md, in
 * Prometheus's text format, prom.h) and the endpoint that serves it while
 * the run goes and, for a while, once it is over (on the server of
 * http.h). Part of coordinator.
 *
 * A scrape only reads what the item path already keeps: the atomic
 * counters behind zp_run_stats() and the dispatchers' tallies (tally.h).
 * It never takes a lock the item path takes, so the endpoint cannot slow
 * a run down.
 */
#ifndef ZP_COORDINATOR_METRICS_H
#define ZP_COORDINATOR_METRICS_H

#include <stdbool.h>
#include <stddef.h>

#include "zpipe.h"
#include "coordinator/prom.h"
#include "core/tally.h"

/* ---- The page ------------------------------------------------------------ */

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
