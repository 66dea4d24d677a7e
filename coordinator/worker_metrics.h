/* SPDX-License-Identifier: MIT */
/*
 * The metrics of `zpipe worker --metrics`: the page of a worker's
 * counters (worker/serve.h) in Prometheus's text format (prom.h), and
 * the endpoint that serves it on the server of http.h. Part of
 * coordinator, for the CLI's worker command.
 *
 * A scrape only reads the worker's atomic counters; it never takes a lock
 * the worker's item path takes.
 */
#ifndef ZP_COORDINATOR_WORKER_METRICS_H
#define ZP_COORDINATOR_WORKER_METRICS_H

#include "coordinator/http.h"
#include "coordinator/prom.h"
#include "worker/serve.h"

/* The page of `zpipe worker --metrics`. */
void zp__metrics_worker_page(zp__prom *p, const zp__serve_stats *s);

/*
 * Serves the page of a worker whose counters are `s` (borrowed: it must
 * outlive the server) on `addr`, as zp__metrics_new(); destroy it with
 * zp__metrics_destroy().
 */
zp__metrics *zp__worker_metrics_new(const char *addr, zp__serve_stats *s,
                                    char **why);

#endif
