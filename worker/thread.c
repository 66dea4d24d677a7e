/* SPDX-License-Identifier: MIT */
/*
 * Thread stages, see thread.h. Each worker thread takes items from its
 * receiver, calls the task, and sends the outputs on; the first stage calls
 * its task once on the run's arguments, a join stage once on the stream.
 * An ordered stage parks each item's outputs until every earlier item has
 * left, then sends them through the stage's single sender; it gives its
 * input credits back only then, which bounds what can park to the input
 * queue's throttle.
 *
 * A join stage of a checkpointed run keeps every item it takes in a
 * spill file (spill.h) and, at a marker, says how long the file is and
 * how many outputs it sent (its slot) before it marks its output; a
 * resumed run's join call gets the spill's items first, and its first
 * outputs, sent before the crash, are dropped unsent.
 *
 * A checkpoint marker (transport/link.h) reaches every worker of a stage
 * after the items before it: each worker has finished those it took, so
 * it marks its own sender and passes. An ordered stage's shared sender is
 * marked once, by the last of its workers to reach the marker: every item
 * before it has then been deposited, and so has left. Nothing is ever
 * held aside: a worker waits at the marker, upstream holds what follows.
 */
#include "worker/thread.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/list.h"
#include "worker/stage.h"

/* A call slower than this, on average, sends each output at once. */
#define SLOW_NS 20000u
/* Fast calls are timed in windows of this many items. */
#define WINDOW 16u

typedef struct zp__tstage zp__tstage;

struct zp__thread_worker {
    zp__tstage *stage; /* borrowed                                   */
    int index;
    zp__rx *rx;   /* borrowed from the input edge; NULL for first */
    zp__tx *tx;   /* borrowed from the output edge; NULL: ordered */
    zp_call call; /* the call in progress (one at a time)       */
    zp__wstats stats;
    bool slow;             /* calls are slow: send every output at once  */
    bool counted;          /* the call in progress is in stage->busy     */
    uint64_t window_start; /* pacing: when the window began (ns)         */
    uint32_t window_items;
    /* A join stage of a checkpointed run: */
    zp__spill *spill;  /* owned: every item the call took          */
    bool replaying;    /* the spill's items go to the call first    */
    uint64_t replayed; /* items replayed, their indexes             */
    uint64_t emitted;  /* outputs of the call, dropped ones included */
};

struct zp__tstage {
    zp__stage base;
    zp__stage_cfg cfg;          /* its pointers borrowed            */
    bool ordered;               /* outputs leave in input order     */
    zp__thread_worker *workers; /* owned, nworkers of them          */
    int nworkers;
    pthread_t *threads; /* owned; threads[0..nthreads) started      */
    int nthreads;
    _Atomic int alive; /* started workers not finished yet; >= 0    */
    /* Ordered stages: outputs park here until every earlier item left. */
    pthread_mutex_t order_lock;
    zp__tx *shared_tx;     /* borrowed from `out`; the only producer */
    zp__order order;       /* guarded by order_lock                  */
    int at_mark;           /* workers that reached the current marker;
                              guarded by order_lock                  */
    _Atomic uint64_t busy; /* calls in progress (several workers)    */
    _Atomic uint64_t peak; /* most calls in progress at once         */
};

/* ---- Ordered stages ----------------------------------------------------- */

/* Sends every parked item whose turn has come (caller holds order_lock). */
static int release_turns(zp__tstage *st)
{
    assert(pthread_mutex_trylock(&st->order_lock) == EBUSY);
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
    zp__edge_release(st->cfg.in, released);
    return rc;
}

/* Hands the parked outputs of the current call to the ordering ring. */
static int deposit(zp__thread_worker *w)
{
    zp__tstage *st = w->stage;
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

/* ---- Outputs and pacing ------------------------------------------------ */

/* Applies `op` to the worker's sender: its own, or the ordered stage's
 * shared one under the stage's lock. */
static int on_output(zp__thread_worker *w, int (*op)(zp__tx *))
{
    zp__tstage *st = w->stage;
    if (!st->ordered)
        return op(w->tx);
    pthread_mutex_lock(&st->order_lock);
    int rc = op(st->shared_tx);
    pthread_mutex_unlock(&st->order_lock);
    return rc;
}

/* Flushes the worker's output batch so nothing waits in it. Returns 0,
 * ZP_ECANCELED or ZP_EIO. */
static int flush_output(zp__thread_worker *w)
{
    return on_output(w, zp__tx_flush);
}

/* Flushes the worker's output batch if a consumer waits for it. */
static int nudge_output(zp__thread_worker *w)
{
    return on_output(w, zp__tx_nudge);
}

/* Whether the worker's calls are one per item (not the first task's
 * single call, nor a join's). */
static bool per_item(const zp__thread_worker *w)
{
    return w->rx != NULL && !w->stage->cfg.def->opts.join;
}

/* Closes the window at time t: its time is busy time, and each of its
 * items took the window's average (a slow worker's windows are one item
 * long, so its items are timed one by one). Returns the window's time. */
static uint64_t close_window(zp__thread_worker *w, uint64_t t)
{
    uint64_t spent = t - w->window_start;
    zp__count(&w->stats.busy_ns, spent);
    if (w->window_items > 0 && per_item(w))
        zp__hist_record(&w->stats.hist, spent / w->window_items,
                        w->window_items, spent);
    w->window_start = t;
    return spent;
}

/* Ends the current pacing window now, before a wait for input: its time
 * goes to the worker's busy time and, for a stage of items (not the
 * first, not a join), its items to the histogram. */
static void window_end(zp__thread_worker *w)
{
    close_window(w, zp__now_ns());
    w->window_items = 0;
}

/* Pacing: call after each item (or output of a long call). Times the
 * calls in windows of a few items: a slow worker sends every output at
 * once, a fast one batches and checks for waiting consumers per window. */
static int pace(zp__thread_worker *w)
{
    if (++w->window_items < WINDOW && !w->slow)
        return 0;
    uint64_t spent = close_window(w, zp__now_ns());
    w->slow = spent > (uint64_t)SLOW_NS * w->window_items;
    if (per_item(w))
        zp__edge_set_slow(w->stage->cfg.in, w->slow);
    w->window_items = 0;
    return w->slow ? flush_output(w) : nudge_output(w);
}

/* ---- The calls' host ---------------------------------------------------- */

static zp__thread_worker *worker_of(zp_call *c)
{
    return zp__container_of(c, zp__thread_worker, call);
}

/* A direct output is whole: it goes into the worker's batch, and a long
 * call (first or join task) is paced per output. */
static int host_send(zp_call *c)
{
    zp__thread_worker *w = worker_of(c);
    int rc = zp__tx_commit(w->tx);
    if (rc == ZP_EINVAL)
        return rc;
    w->emitted++;
    zp__count(&w->stats.out, 1);
    if (rc == 0 && (w->rx == NULL || c->def->opts.join))
        rc = pace(w);
    return rc;
}

static void host_discard(zp_call *c)
{
    zp__tx_discard(worker_of(c)->tx);
}

static int host_flush(zp_call *c)
{
    return flush_output(worker_of(c));
}

/* A marker reached a join task's stream: every item before it was taken
 * (and is in the spill, now on disk), every output of those is flushed
 * before the marker. The slot says so before the marker leaves, so the
 * sink reads it when the marker reaches it. Returns 0 or an error. */
static int join_mark(zp__thread_worker *w)
{
    zp__mark m = zp__rx_mark(w->rx);
    uint64_t bytes = 0;
    assert(!w->stage->ordered); /* core/pipeline.c refuses ordered joins */
    int rc = w->spill ? zp__spill_sync(w->spill, &bytes) : 0;
    if (rc == 0 && w->spill)
        zp__spill_slot_put(w->stage->cfg.spill, m.epoch, bytes, w->emitted);
    if (rc == 0)
        rc = zp__tx_mark(w->tx, &m);
    zp__rx_pass(w->rx);
    return rc;
}

/* A join task's next live item: what waits in the batch, or else the
 * outputs go first and then the wait; markers are passed on the way. */
static int take(zp__thread_worker *w, const msgpack_object **item,
                uint64_t *index)
{
    int rc;
    do {
        rc = zp__rx_next(w->rx, false, item, index);
        if (rc == ZP__AGAIN)
            rc = flush_output(w) == 0 ? zp__rx_next(w->rx, true, item, index)
                                      : 0;
    } while (rc == ZP__MARK && (rc = join_mark(w)) == 0);
    return rc == ZP__AGAIN ? 0 : rc;
}

/* A join task's next item: in a checkpointed run, the spill's items
 * first (a resumed run's), then live ones, each kept in the spill. */
static int host_next(zp_call *c, const msgpack_object **item, uint64_t *index)
{
    zp__thread_worker *w = worker_of(c);
    const char *raw;
    size_t len;
    if (w->rx == NULL)
        return 0;
    if (w->replaying) {
        int rc = zp__spill_replay(w->spill, item);
        *index = w->replayed++;
        if (rc != 0)
            return rc;
        w->replaying = false;
    }
    int rc = take(w, item, index);
    if (rc != 1 || w->spill == NULL)
        return rc;
    zp__rx_raw(w->rx, &raw, &len);
    rc = zp__spill_append(w->spill, raw, len);
    return rc == 0 ? 1 : rc;
}

static const zp__call_host thread_host = {
    .send = host_send,
    .discard = host_discard,
    .flush = host_flush,
    .next = host_next,
};

/* ---- Calls ----------------------------------------------------------------
 */

/* Sends the parked outputs of a successful call. */
static int commit(zp__thread_worker *w)
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
        zp__count(&w->stats.out, 1);
    }
    zp__call_drop(c);
    return rc;
}

/* Stops the run with the current call's failure. */
static int fail_run(zp__thread_worker *w)
{
    zp_call *c = &w->call;
    zp__count(&w->stats.failed, 1);
    w->stage->cfg.run->fail(w->stage->cfg.run, ZP_ETASK,
                            zp__strdupf("task '%s' failed on item %llu: %s",
                                        c->def->name,
                                        (unsigned long long)c->index,
                                        c->error ? c->error : "out of memory"));
    return ZP_ETASK;
}

/* Counts calls in progress: a flag per worker, and for a stage of several
 * workers with slow calls a shared count whose peak the statistics report
 * (the peak of a stage of fast calls is the most seen by readers). */
static void call_begins(zp__thread_worker *w)
{
    zp__tstage *st = w->stage;
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

static void call_ends(zp__thread_worker *w)
{
    atomic_store_explicit(&w->stats.in_flight, 0, memory_order_relaxed);
    if (w->counted) {
        uint64_t was =
            atomic_fetch_sub_explicit(&w->stage->busy, 1, memory_order_relaxed);
        assert(was > 0); /* the calls in progress: never negative */
        (void)was;
    }
}

/* One item, with its retries. */
static int run_item(zp__thread_worker *w, const msgpack_object *item,
                    uint64_t index)
{
    uint32_t retried = 0;
    zp__count(&w->stats.in, 1);
    call_begins(w);
    int rc = zp__call_item(&w->call, item, index, &retried);
    call_ends(w);
    zp__count(&w->stats.retried, retried);
    if (rc == ZP__CALL_SKIPPED) {
        zp__count(&w->stats.failed, 1);
        zp__count(&w->stats.skipped, 1);
    }
    if (rc == ZP_ETASK)
        return fail_run(w);
    return rc < 0 ? rc : commit(w);
}

/* ---- Checkpoint markers ------------------------------------------------- */

/* An ordered stage's worker reached the marker m: the last one to reach
 * it (of those not finished) marks the shared sender, after every item
 * before it left. */
static int mark_ordered(zp__tstage *st, const zp__mark *m)
{
    int rc = 0;
    pthread_mutex_lock(&st->order_lock);
    assert(st->at_mark >= 0 && st->at_mark < st->nworkers);
    if (++st->at_mark >= atomic_load(&st->alive)) {
        st->at_mark = 0;
        rc = release_turns(st);
        assert(rc != 0 || zp__order_ready(&st->order) == NULL);
        if (rc == 0)
            rc = zp__tx_mark(st->shared_tx, m);
    }
    pthread_mutex_unlock(&st->order_lock);
    return rc;
}

/* The worker's receiver returned ZP__MARK: every item the worker took
 * before it is done, so its outputs go (zp__tx_mark flushes), then the
 * marker, then the pass. An ordered stage's worker may pass before the
 * marker left: upstream goes on only once every worker passed, the last
 * after marking. Returns 0 or an error of the sender. */
static int pass_mark(zp__thread_worker *w)
{
    zp__mark m = zp__rx_mark(w->rx);
    int rc =
        w->stage->ordered ? mark_ordered(w->stage, &m) : zp__tx_mark(w->tx, &m);
    zp__rx_pass(w->rx);
    return rc;
}

/* ---- The worker loop ---------------------------------------------------- */

static int next_item(zp__thread_worker *w, const msgpack_object **item,
                     uint64_t *i)
{
    int rc = zp__rx_next(w->rx, false, item, i);
    if (rc != ZP__AGAIN)
        return rc;
    window_end(w); /* the wait is no time of the task's */
    if ((rc = flush_output(w)) != 0)
        return rc;
    rc = zp__rx_next(w->rx, true, item, i);
    w->window_start = zp__now_ns();
    w->window_items = 0;
    return rc;
}

static int run_items(zp__thread_worker *w)
{
    const msgpack_object *item;
    uint64_t index;
    int rc;
    w->window_start = zp__now_ns();
    while ((rc = next_item(w, &item, &index)) > 0) {
        if (rc == ZP__MARK)
            rc = pass_mark(w);
        else if ((rc = run_item(w, item, index)) == 0)
            rc = pace(w);
        if (rc != 0)
            break;
    }
    window_end(w);
    return rc;
}

/* The call of the first task, or of a join task, with its retries. */
static int call_once(zp__thread_worker *w)
{
    if (!w->stage->cfg.def->opts.join)
        return run_item(w, w->stage->cfg.args, 0);
    /* Joins have no retries and no skip: one attempt. */
    int rc = zp__call_item(&w->call, NULL, 0, NULL);
    if (rc == ZP_ETASK)
        return fail_run(w);
    return rc < 0 ? rc : commit(w);
}

/* The first task, or a join task: one call for the whole stream, which
 * is the stage's one item in its histogram. */
static int run_once(zp__thread_worker *w)
{
    uint64_t start = zp__now_ns();
    w->window_start = start;
    int rc = call_once(w);
    uint64_t took = zp__now_ns() - start;
    zp__hist_record(&w->stats.hist, took, 1, took);
    return rc;
}

/* Counts a finished worker out of the stage's living ones; returns how
 * many there were. */
static int count_out(zp__tstage *st)
{
    int was = atomic_fetch_sub(&st->alive, 1);
    assert(was > 0);
    return was;
}

/* Says this worker is done: its own sender closes, or the last worker of
 * an ordered stage closes the shared one. */
static int close_output(zp__thread_worker *w)
{
    zp__tstage *st = w->stage;
    bool last = count_out(st) == 1;
    return !st->ordered || last ? on_output(w, zp__tx_close) : 0;
}

static void report(zp__thread_worker *w, int rc)
{
    if (rc == 0 || rc == ZP_ETASK || rc == ZP_ECANCELED)
        return;
    const char *name = w->stage->cfg.def->name;
    w->stage->cfg.run->fail(w->stage->cfg.run, rc,
                            zp__strdupf("task '%s', worker %d: %s", name,
                                        w->index, zp_strerror(rc)));
}

static void *worker_main(void *arg)
{
    zp__thread_worker *w = arg;
    bool once = w->rx == NULL || w->stage->cfg.def->opts.join;
    int rc = once ? run_once(w) : run_items(w);
    if (rc == 0)
        rc = close_output(w);
    else
        count_out(w->stage);
    report(w, rc);
    return NULL;
}

/* ---- The stage ------------------------------------------------------------
 */

static bool thread_claims(const zp__stage_def *def)
{
    return def->opts.mode == ZP_INPROC && def->afn == NULL;
}

static void thread_shape(const zp__stage_def *def, size_t index,
                         zp__stage_shape *out)
{
    bool ordered = index > 0 && def->opts.ordered;
    *out = (zp__stage_shape){
        .senders = ordered ? 1 : def->opts.workers,
        .receivers = def->opts.workers,
        .late_release = ordered && !def->opts.join,
    };
}

/* A join stage of a checkpointed run: its spill, with a resumed run's
 * items to replay and outputs to drop. */
static int set_up_spill(zp__tstage *st, char **why)
{
    zp__spill_slot *slot = st->cfg.spill;
    zp__thread_worker *w = &st->workers[0];
    assert(st->nworkers == 1); /* coordinator/checkpoint.c: one worker */
    int rc = zp__spill_open(&w->spill, slot->path, slot->replay_bytes, why);
    w->replaying = slot->replay_bytes > 0;
    zp__edge_skip(st->cfg.out, slot->replay_outputs);
    return rc;
}

static int set_up(zp__tstage *st, char **why)
{
    const zp__stage_cfg *cfg = &st->cfg;
    int n = cfg->def->opts.workers;
    st->workers = zp__calloc((size_t)n, sizeof *st->workers);
    st->threads = zp__calloc((size_t)n, sizeof *st->threads);
    if (st->workers == NULL || st->threads == NULL)
        return ZP_ENOMEM;
    st->shared_tx = st->ordered ? cfg->out->tx[0] : NULL;
    for (; st->nworkers < n; st->nworkers++) {
        zp__thread_worker *w = &st->workers[st->nworkers];
        w->stage = st;
        w->index = st->nworkers;
        w->rx = cfg->in ? cfg->in->rx[w->index] : NULL;
        w->tx = st->ordered ? NULL : cfg->out->tx[w->index];
        w->slow = true; /* until measured otherwise */
        zp__call_init(&w->call, cfg->def, cfg->run, &w->stats, st->ordered,
                      &thread_host, w->tx ? zp__tx_packer(w->tx) : NULL);
    }
    /* A join task's pace is that of its outputs, not of its input: it
     * never says its input is slow, so say it is not from the start. */
    if (cfg->in != NULL && (cfg->def->opts.join || n <= 1))
        zp__edge_set_slow(cfg->in, false);
    return cfg->spill != NULL ? set_up_spill(st, why) : 0;
}

/* Starts a thread per worker. Every worker counts as alive before the
 * first thread starts (the last one of an ordered stage closes its
 * output); when a thread cannot start, those that did not start are
 * counted out again, and the threads that did run until the run stops. */
static int start_threads(zp__tstage *st, char **why)
{
    atomic_store(&st->alive, st->nworkers);
    for (; st->nthreads < st->nworkers; st->nthreads++) {
        int err = pthread_create(&st->threads[st->nthreads], NULL, worker_main,
                                 &st->workers[st->nthreads]);
        if (err != 0) {
            *why = zp__strdupf("cannot start a thread of task '%s': %s",
                               st->cfg.def->name, strerror(err));
            atomic_fetch_sub(&st->alive, st->nworkers - st->nthreads);
            return ZP_EIO;
        }
    }
    return 0;
}

/* On failure the stage in *out may be partly started: the run stops,
 * joins and destroys it, which joins only the threads that started. */
static int thread_start(const zp__stage_cfg *cfg, zp__stage **out, char **why)
{
    zp__tstage *st = zp__calloc(1, sizeof *st);
    *out = (zp__stage *)st;
    if (st == NULL)
        return ZP_ENOMEM;
    st->base.ops = &zp__thread_stage_ops;
    st->cfg = *cfg;
    st->ordered = cfg->def->opts.ordered && cfg->in != NULL;
    pthread_mutex_init(&st->order_lock, NULL);
    int rc = set_up(st, why);
    return rc == 0 ? start_threads(st, why) : rc;
}

static void thread_stop(zp__stage *s)
{
    zp__edge_wake(((zp__tstage *)s)->cfg.out);
}

static void thread_join(zp__stage *s)
{
    zp__tstage *st = (zp__tstage *)s;
    assert(st->nthreads >= 0 && st->nthreads <= st->nworkers);
    for (; st->nthreads > 0; st->nthreads--)
        pthread_join(st->threads[st->nthreads - 1], NULL);
}

static void thread_stats(zp__stage *s, zp_stage_stats *out)
{
    zp__tstage *st = (zp__tstage *)s;
    uint64_t peak = 0;
    for (int j = 0; j < st->nworkers; j++) {
        const zp__wstats *w = &st->workers[j].stats;
        peak += atomic_load_explicit(&w->peak, memory_order_relaxed);
        zp__wstats_add(w, out);
    }
    out->workers_alive += atomic_load(&st->alive);
    /* One worker has had at most its one call; several share the stage's
     * count. */
    out->peak_in_flight += st->nworkers > 1 ? atomic_load(&st->peak) : peak;
}

static void thread_destroy(zp__stage **sp)
{
    zp__tstage *st = (zp__tstage *)*sp;
    if (st == NULL)
        return;
    thread_join(&st->base);
    for (int j = 0; j < st->nworkers; j++) {
        zp__call_fini(&st->workers[j].call);
        zp__spill_destroy(&st->workers[j].spill);
    }
    zp__order_fini(&st->order);
    pthread_mutex_destroy(&st->order_lock);
    free(st->workers);
    free(st->threads);
    free(st);
    *sp = NULL;
}

const zp__stage_ops zp__thread_stage_ops = {
    .kind = "threads",
    .claims = thread_claims,
    .shape = thread_shape,
    .start = thread_start,
    .stop = thread_stop,
    .join = thread_join,
    .stats = thread_stats,
    .destroy = thread_destroy,
};
