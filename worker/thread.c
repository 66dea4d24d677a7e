/* SPDX-License-Identifier: MIT */
/*
 * Thread workers, see thread.h. Each worker thread takes items from its
 * receiver, calls the task, and sends the outputs on; the first stage calls
 * its task once on the run's arguments, a join stage once on the stream.
 * An ordered stage parks each item's outputs until every earlier item has
 * left, then sends them through the stage's single sender; it gives its
 * input credits back only then, which bounds what can park to the input
 * queue's throttle.
 */
#include "worker/thread.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "worker/async.h"
#include "worker/call.h"

int zp__stage_init(zp__stage_rt *st, const zp__stage_def *def, zp__runctl *run,
                   zp__edge *in, zp__edge *out, const msgpack_object *args)
{
    memset(st, 0, sizeof *st);
    st->def = def;
    st->run = run;
    st->in = in;
    st->out = out;
    st->args = args;
    st->ordered = def->opts.ordered && in != NULL;
    pthread_mutex_init(&st->order_lock, NULL);
    /* A stage of other processes has a dispatcher, not thread workers;
     * an async stage has one worker, its loop thread. */
    int n = def->opts.mode != ZP_INPROC ? 0
            : def->afn != NULL          ? 1
                                        : def->opts.workers;
    st->workers = calloc((size_t)n + 1, sizeof *st->workers);
    if (st->workers == NULL)
        return ZP_ENOMEM;
    st->shared_tx = st->ordered ? out->tx[0] : NULL;
    for (; st->nworkers < n; st->nworkers++) {
        zp__worker *w = &st->workers[st->nworkers];
        w->stage = st;
        w->index = st->nworkers;
        w->rx = in ? in->rx[w->index] : NULL;
        w->tx = st->ordered && def->afn == NULL ? NULL : out->tx[w->index];
        w->slow = true; /* until measured otherwise */
        zp__call_init(&w->call, w);
    }
    atomic_store(&st->alive, st->nworkers);
    /* A join task's pace is that of its outputs, not of its input: it
     * never says its input is slow, so say it is not from the start. */
    if (in != NULL && (def->opts.join || n <= 1))
        zp__edge_set_slow(in, false);
    return 0;
}

void zp__stage_fini(zp__stage_rt *st)
{
    for (int j = 0; j < st->nworkers; j++)
        zp__call_fini(&st->workers[j].call);
    zp__order_fini(&st->order);
    free(st->workers);
    pthread_mutex_destroy(&st->order_lock);
    st->workers = NULL;
}

zp__worker *zp__stage_worker(zp__stage_rt *st, int j)
{
    return &st->workers[j];
}

void zp__stage_stats(zp__stage_rt *st, zp_stage_stats *out)
{
    uint64_t in_flight = 0, peak = 0;
    for (int j = 0; j < st->nworkers; j++) {
        const zp__wstats *s = &st->workers[j].stats;
        in_flight += atomic_load_explicit(&s->in_flight, memory_order_relaxed);
        peak += atomic_load_explicit(&s->peak, memory_order_relaxed);
        out->items_in += atomic_load_explicit(&s->in, memory_order_relaxed);
        out->items_out += atomic_load_explicit(&s->out, memory_order_relaxed);
        out->failed += atomic_load_explicit(&s->failed, memory_order_relaxed);
        out->retried += atomic_load_explicit(&s->retried, memory_order_relaxed);
        out->skipped += atomic_load_explicit(&s->skipped, memory_order_relaxed);
        out->busy_ns += atomic_load_explicit(&s->busy_ns, memory_order_relaxed);
        zp__hist_add_to(&s->hist, out->item_hist, &out->item_hist_ns);
    }
    out->in_flight += in_flight;
    out->workers_alive += atomic_load(&st->alive);
    /* An async stage's loop counts its calls itself; one thread worker
     * has had at most its one call; several share the stage's count. */
    out->peak_in_flight += st->nworkers > 1 && st->def->afn == NULL
                               ? atomic_load(&st->peak)
                               : peak;
}

static void bump(_Atomic uint64_t *counter)
{
    atomic_store_explicit(
        counter, atomic_load_explicit(counter, memory_order_relaxed) + 1,
        memory_order_relaxed);
}

/* ---- Ordered stages ----------------------------------------------------- */

/* Sends every parked item whose turn has come (caller holds order_lock). */
static int release_turns(zp__stage_rt *st)
{
    int rc = 0;
    int64_t released = 0;
    for (zp__parked *p; rc == 0 && (p = zp__order_ready(&st->order));) {
        size_t start = 0;
        for (uint32_t i = 0; rc == 0 && i < p->n; i++) {
            rc = zp__tx_append(st->shared_tx, p->data + start,
                               p->ends[i] - start);
            start = p->ends[i];
        }
        zp__order_pop(&st->order);
        released++;
    }
    zp__edge_release(st->in, released);
    return rc;
}

/* Hands the parked outputs of the current call to the ordering ring. */
static int deposit(zp__worker *w)
{
    zp__stage_rt *st = w->stage;
    zp_call *c = &w->call;
    pthread_mutex_lock(&st->order_lock);
    int rc = zp__order_put(&st->order, c);
    if (rc == 0) {
        rc = release_turns(st);
        if (rc == 0 && w->slow)
            rc = zp__tx_flush(st->shared_tx);
    }
    pthread_mutex_unlock(&st->order_lock);
    return rc;
}

/* ---- Calls ----------------------------------------------------------------
 */

/* Sends the parked outputs of a successful call. */
static int commit(zp__worker *w)
{
    zp_call *c = &w->call;
    if (!c->parked)
        return 0;
    if (w->stage->ordered)
        return deposit(w);
    size_t start = 0;
    int rc = 0;
    for (uint32_t i = 0; rc == 0 && i < c->emitted; i++) {
        rc = zp__tx_append(w->tx, c->buf.data + start, c->ends[i] - start);
        start = c->ends[i];
        bump(&w->stats.out);
    }
    zp__call_drop(c);
    return rc;
}

/* Stops the run with the current call's failure. */
static int fail_run(zp__worker *w)
{
    zp_call *c = &w->call;
    bump(&w->stats.failed);
    w->stage->run->fail(w->stage->run, ZP_ETASK,
                        zp__strdupf("task '%s' failed on item %llu: %s",
                                    c->def->name, (unsigned long long)c->index,
                                    c->error ? c->error : "out of memory"));
    return ZP_ETASK;
}

/* Counts calls in progress: a flag per worker, and for a stage of several
 * workers with slow calls a shared count whose peak the statistics report
 * (the peak of a stage of fast calls is the most seen by readers). */
static void call_begins(zp__worker *w)
{
    zp__stage_rt *st = w->stage;
    atomic_store_explicit(&w->stats.in_flight, 1, memory_order_relaxed);
    atomic_store_explicit(&w->stats.peak, 1, memory_order_relaxed);
    /* Fast calls (the worker's pacing says so) skip the shared count:
     * with dozens of workers it would cost more than the calls. */
    w->counted = st->nworkers > 1 && w->slow;
    if (!w->counted)
        return;
    uint64_t now =
        atomic_fetch_add_explicit(&st->busy, 1, memory_order_relaxed) + 1;
    uint64_t peak = atomic_load_explicit(&st->peak, memory_order_relaxed);
    while (now > peak && !atomic_compare_exchange_weak(&st->peak, &peak, now))
        ;
}

static void call_ends(zp__worker *w)
{
    atomic_store_explicit(&w->stats.in_flight, 0, memory_order_relaxed);
    if (w->counted)
        atomic_fetch_sub_explicit(&w->stage->busy, 1, memory_order_relaxed);
}

/* One item, with its retries. */
static int run_item(zp__worker *w, const msgpack_object *item, uint64_t index)
{
    uint32_t retried = 0;
    bump(&w->stats.in);
    call_begins(w);
    int rc = zp__call_item(&w->call, item, index, &retried);
    call_ends(w);
    if (retried > 0)
        atomic_store_explicit(&w->stats.retried, w->stats.retried + retried,
                              memory_order_relaxed);
    if (rc == ZP__CALL_SKIPPED) {
        bump(&w->stats.failed);
        bump(&w->stats.skipped);
    }
    if (rc == ZP_ETASK)
        return fail_run(w);
    return rc < 0 ? rc : commit(w);
}

/* ---- The worker loop ---------------------------------------------------- */

/* Applies `op` to the worker's sender: its own, or the ordered stage's
 * shared one under the stage's lock. */
static int on_output(zp__worker *w, int (*op)(zp__tx *))
{
    zp__stage_rt *st = w->stage;
    if (!st->ordered)
        return op(w->tx);
    pthread_mutex_lock(&st->order_lock);
    int rc = op(st->shared_tx);
    pthread_mutex_unlock(&st->order_lock);
    return rc;
}

int zp__worker_flush(zp__worker *w)
{
    return on_output(w, zp__tx_flush);
}

int zp__worker_nudge(zp__worker *w)
{
    return on_output(w, zp__tx_nudge);
}

static int next_item(zp__worker *w, const msgpack_object **item, uint64_t *i)
{
    int rc = zp__rx_next(w->rx, false, item, i);
    if (rc != ZP__AGAIN)
        return rc;
    zp__worker_window_end(w); /* the wait is no time of the task's */
    if ((rc = zp__worker_flush(w)) != 0)
        return rc;
    rc = zp__rx_next(w->rx, true, item, i);
    w->window_start = zp__now_ns();
    w->window_items = 0;
    return rc;
}

static int run_items(zp__worker *w)
{
    const msgpack_object *item;
    uint64_t index;
    int rc;
    w->window_start = zp__now_ns();
    while ((rc = next_item(w, &item, &index)) == 1)
        if ((rc = run_item(w, item, index)) != 0 ||
            (rc = zp__worker_pace(w)) != 0)
            break;
    zp__worker_window_end(w);
    return rc;
}

/* The call of the first task, or of a join task, with its retries. */
static int call_once(zp__worker *w)
{
    if (!w->stage->def->opts.join)
        return run_item(w, w->stage->args, 0);
    /* Joins have no retries and no skip: one attempt. */
    int rc = zp__call_item(&w->call, NULL, 0, NULL);
    if (rc == ZP_ETASK)
        return fail_run(w);
    return rc < 0 ? rc : commit(w);
}

/* The first task, or a join task: one call for the whole stream, which
 * is the stage's one item in its histogram. */
static int run_once(zp__worker *w)
{
    uint64_t start = zp__now_ns();
    w->window_start = start;
    int rc = call_once(w);
    uint64_t took = zp__now_ns() - start;
    zp__hist_record(&w->stats.hist, took, 1, took);
    return rc;
}

/* Says this worker is done: its own sender closes, or the last worker of
 * an ordered stage closes the shared one. */
static int close_output(zp__worker *w)
{
    zp__stage_rt *st = w->stage;
    bool last = atomic_fetch_sub(&st->alive, 1) == 1;
    return !st->ordered || last ? on_output(w, zp__tx_close) : 0;
}

static void report(zp__worker *w, int rc)
{
    if (rc == 0 || rc == ZP_ETASK || rc == ZP_ECANCELED)
        return;
    const char *name = w->stage->def->name;
    w->stage->run->fail(w->stage->run, rc,
                        zp__strdupf("task '%s', worker %d: %s", name, w->index,
                                    zp_strerror(rc)));
}

void *zp__worker_main(void *arg)
{
    zp__worker *w = arg;
    const zp__stage_def *def = w->stage->def;
    bool once = w->rx == NULL || def->opts.join;
    int rc = def->afn != NULL ? zp__async_stage(w)
             : once           ? run_once(w)
                              : run_items(w);
    if (rc == 0)
        rc = close_output(w);
    else
        atomic_fetch_sub(&w->stage->alive, 1);
    report(w, rc);
    return NULL;
}
