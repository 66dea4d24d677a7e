/* SPDX-License-Identifier: MIT */
/*
 * The metrics of a worker, see worker_metrics.h: its counters, read with
 * relaxed atomic loads, written as one page per scrape on the server's
 * thread.
 */
#include "coordinator/worker_metrics.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdint.h>

/* ---- The page ------------------------------------------------------------ */

static uint64_t load(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void zp__metrics_worker_page(zp__prom *p, const zp__serve_stats *s)
{
    zp__prom_family(p, "zpipe_worker_batches_total", "counter",
                    "Batches this worker finished.");
    zp__prom_uint(p, "zpipe_worker_batches_total", NULL, load(&s->batches));
    zp__prom_family(p, "zpipe_worker_items_total", "counter",
                    "Items this worker ran.");
    zp__prom_uint(p, "zpipe_worker_items_total", NULL, load(&s->items));
    zp__prom_family(p, "zpipe_worker_busy_seconds_total", "counter",
                    "Time spent running batches, all threads together.");
    zp__prom_seconds(p, "zpipe_worker_busy_seconds_total", NULL,
                     load(&s->busy_ns));
    zp__prom_family(p, "zpipe_worker_reconnects_total", "counter",
                    "Links to a coordinator made after the first one.");
    zp__prom_uint(p, "zpipe_worker_reconnects_total", NULL,
                  load(&s->reconnects));
    zp__prom_family(p, "zpipe_worker_coordinator_connected", "gauge",
                    "1 while the worker is linked to a coordinator.");
    zp__prom_uint(p, "zpipe_worker_coordinator_connected", NULL,
                  atomic_load(&s->connected));
}

/* ---- A worker's endpoint ------------------------------------------------- */

static bool render_worker(void *arg, zp__prom *p)
{
    assert(arg != NULL); /* the counters, borrowed for the server's life */
    zp__metrics_worker_page(p, arg);
    return false;
}

zp__metrics *zp__worker_metrics_new(const char *addr, zp__serve_stats *s,
                                    char **why)
{
    return zp__metrics_new(addr, render_worker, s, why);
}
