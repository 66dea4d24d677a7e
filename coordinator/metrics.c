/* SPDX-License-Identifier: MIT */
/*
 * The metrics of a run, see metrics.h: the page, written from the stages'
 * figures and the workers' tallies, and the endpoint that serves it. The
 * page is written on the server's thread (http.h), under the endpoint's
 * lock, into buffers the endpoint owns, so a scrape allocates only the
 * page itself.
 */
#include "coordinator/metrics.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/http.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"

/* ---- The page ------------------------------------------------------------ */

/* The plain counters and gauges of a stage, each a uint64_t of
 * zp_stage_stats. */
typedef struct stage_family {
    const char *name, *type, *help;
    size_t off;
} stage_family;

#define AT(field) offsetof(zp_stage_stats, field)

static const stage_family stage_families[] = {
    {"zpipe_stage_items_in_total", "counter",
     "Items the stage took from upstream.", AT(items_in)},
    {"zpipe_stage_items_out_total", "counter",
     "Outputs the stage sent downstream.", AT(items_out)},
    {"zpipe_stage_failed_total", "counter",
     "Items that failed, after their retries.", AT(failed)},
    {"zpipe_stage_retried_total", "counter",
     "Extra attempts made at failed items.", AT(retried)},
    {"zpipe_stage_skipped_total", "counter",
     "Failed items dropped (on_error=skip).", AT(skipped)},
    {"zpipe_stage_restarts_total", "counter",
     "Worker processes replaced after they died.", AT(restarts)},
    {"zpipe_stage_in_flight", "gauge", "Items being worked on now.",
     AT(in_flight)},
    {"zpipe_stage_queue_items", "gauge",
     "Items waiting at the stage's output now.", AT(queue_items)},
};

static uint64_t field_of(const zp_stage_stats *s, size_t off)
{
    uint64_t v;
    memcpy(&v, (const char *)s + off, sizeof v);
    return v;
}

/* The labels of stage i: stage (1-based) and task; `num` holds the number. */
static void stage_labels(zp__prom_label *l, char *num, size_t i,
                         const zp_stage_stats *s)
{
    snprintf(num, 24, "%zu", i + 1);
    l[0] = (zp__prom_label){"stage", num};
    l[1] = (zp__prom_label){"task", s->task ? s->task : ""};
    l[2] = (zp__prom_label){NULL, NULL};
}

static void stage_counts(zp__prom *p, const zp_stage_stats *st, size_t n)
{
    zp__prom_label l[4];
    char num[24];
    for (size_t f = 0; f < sizeof stage_families / sizeof *stage_families;
         f++) {
        const stage_family *sf = &stage_families[f];
        zp__prom_family(p, sf->name, sf->type, sf->help);
        for (size_t i = 0; i < n; i++) {
            stage_labels(l, num, i, &st[i]);
            zp__prom_uint(p, sf->name, l, field_of(&st[i], sf->off));
        }
    }
}

static void stage_times(zp__prom *p, const zp_stage_stats *st, size_t n)
{
    zp__prom_label l[4];
    char num[24];
    zp__prom_family(p, "zpipe_stage_workers_alive", "gauge",
                    "Workers running now: threads, the async loop's calls, "
                    "or connected worker processes.");
    for (size_t i = 0; i < n; i++) {
        stage_labels(l, num, i, &st[i]);
        zp__prom_uint(p, "zpipe_stage_workers_alive", l,
                      st[i].workers_alive > 0 ? (uint64_t)st[i].workers_alive
                                              : 0);
    }
    zp__prom_family(p, "zpipe_stage_busy_seconds_total", "counter",
                    "Time spent inside the task, all workers together.");
    for (size_t i = 0; i < n; i++) {
        stage_labels(l, num, i, &st[i]);
        zp__prom_seconds(p, "zpipe_stage_busy_seconds_total", l, st[i].busy_ns);
    }
    zp__prom_family(p, "zpipe_stage_item_seconds", "histogram",
                    "The task's own time per item (thread and async stages; "
                    "process and remote stages record none yet).");
    for (size_t i = 0; i < n; i++) {
        stage_labels(l, num, i, &st[i]);
        zp__prom_histogram(p, "zpipe_stage_item_seconds", l, st[i].item_hist,
                           st[i].item_hist_ns);
    }
}

static void worker_rows(zp__prom *p, const zp_stage_stats *st, size_t n,
                        const zp__metrics_worker *w, size_t nw)
{
    zp__prom_label l[4];
    char num[24];
    zp__prom_family(p, "zpipe_worker_batches_total", "counter",
                    "Batches done by each worker of a process or remote "
                    "stage, by the name in its HELLO.");
    for (size_t k = 0; k < nw; k++) {
        if (w[k].stage >= n)
            continue;
        stage_labels(l, num, w[k].stage, &st[w[k].stage]);
        l[2] = (zp__prom_label){"worker", w[k].row.name};
        l[3] = (zp__prom_label){NULL, NULL};
        zp__prom_uint(p, "zpipe_worker_batches_total", l, w[k].row.count);
    }
}

void zp__metrics_run_page(zp__prom *p, const zp_stage_stats *st, size_t n,
                          const zp__metrics_worker *w, size_t nw, bool up)
{
    const zp__prom_label version[] = {{"version", zp_version()}, {NULL, NULL}};
    zp__prom_family(p, "zpipe_run_info", "gauge",
                    "Always 1; the zpipe version in a label.");
    zp__prom_uint(p, "zpipe_run_info", version, 1);
    zp__prom_family(p, "zpipe_run_up", "gauge",
                    "1 while the run goes, 0 once it is over.");
    zp__prom_uint(p, "zpipe_run_up", NULL, up);
    stage_counts(p, st, n);
    stage_times(p, st, n);
    worker_rows(p, st, n, w, nw);
}

/* ---- A run's endpoint ---------------------------------------------------- */

struct zp__run_metrics {
    zp__metrics *server;         /* owned */
    zp_run *run;                 /* borrowed */
    zp__tally *const *tallies;   /* borrowed, n; NULL for stages of
                                    no workers of their own */
    size_t n;                    /* stages */
    int linger_ms;               /* zp_run_opts.metrics_linger_ms */
    pthread_mutex_t lock;        /* guards final and n */
    const zp_stage_stats *final; /* borrowed, once the run is over */
    zp_stage_stats *st;          /* owned, n: a page's figures */
    zp__tally_row *rows;         /* owned, ZP__METRICS_MAX_WORKERS */
    zp__metrics_worker *w;       /* owned, ZP__METRICS_MAX_WORKERS */
};

/* Gathers the workers of every dispatched stage; returns how many. */
static size_t gather_workers(zp__run_metrics *m)
{
    size_t nw = 0;
    uint64_t now = zp__now_ns();
    for (size_t k = 0; k < m->n && nw < ZP__METRICS_MAX_WORKERS; k++) {
        if (m->tallies[k] == NULL)
            continue;
        size_t got = zp__tally_read(m->tallies[k], now, m->rows,
                                    ZP__METRICS_MAX_WORKERS - nw);
        for (size_t i = 0; i < got; i++, nw++)
            m->w[nw] = (zp__metrics_worker){k, m->rows[i]};
    }
    return nw;
}

static bool render_run(void *arg, zp__prom *p)
{
    zp__run_metrics *m = arg;
    pthread_mutex_lock(&m->lock);
    bool over = m->final != NULL;
    for (size_t i = 0; i < m->n; i++)
        if (over)
            m->st[i] = m->final[i];
        else if (zp_run_stats(m->run, i, &m->st[i]) != 0)
            memset(&m->st[i], 0, sizeof m->st[i]);
    size_t nw = gather_workers(m);
    zp__metrics_run_page(p, m->st, m->n, m->w, nw, !over);
    pthread_mutex_unlock(&m->lock);
    return over;
}

static void run_metrics_free(zp__run_metrics *m)
{
    zp__metrics_destroy(&m->server);
    pthread_mutex_destroy(&m->lock);
    free(m->st);
    free(m->rows);
    free(m->w);
    free(m);
}

int zp__run_metrics_start(zp__run_metrics **mp, zp_run *r,
                          zp__tally *const *tallies, size_t n,
                          const zp_run_opts *o, char **why)
{
    const char *addr =
        o && o->metrics_listen ? o->metrics_listen : getenv("ZPIPE_METRICS");
    *mp = NULL;
    if (addr == NULL || addr[0] == '\0')
        return 0;
    zp__run_metrics *m = zp__calloc(1, sizeof *m);
    if (m == NULL)
        return ZP_ENOMEM;
    *m = (zp__run_metrics){.run = r, .tallies = tallies, .n = n};
    m->linger_ms = o ? o->metrics_linger_ms : 0;
    pthread_mutex_init(&m->lock, NULL);
    m->st = zp__calloc(n, sizeof *m->st);
    m->rows = zp__calloc(ZP__METRICS_MAX_WORKERS, sizeof *m->rows);
    m->w = zp__calloc(ZP__METRICS_MAX_WORKERS, sizeof *m->w);
    if (m->st == NULL || m->rows == NULL || m->w == NULL) {
        run_metrics_free(m);
        return ZP_ENOMEM;
    }
    m->server = zp__metrics_new(addr, render_run, m, why);
    if (m->server == NULL) {
        run_metrics_free(m);
        return ZP_EINVAL;
    }
    zp__log(ZP_LOG_INFO, "zpipe: metrics at http://%s/metrics",
            zp__metrics_where(m->server));
    *mp = m;
    return 0;
}

void zp__run_metrics_stop(zp__run_metrics **mp, const zp_stage_stats *final,
                          size_t n)
{
    zp__run_metrics *m = mp ? *mp : NULL;
    if (m == NULL)
        return;
    assert(final != NULL || n == 0);
    *mp = NULL;
    pthread_mutex_lock(&m->lock);
    m->final = final;
    m->n = n < m->n ? n : m->n;
    pthread_mutex_unlock(&m->lock);
    if (m->linger_ms > 0)
        zp__metrics_wait(m->server, m->linger_ms);
    run_metrics_free(m);
}
