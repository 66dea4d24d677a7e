/* SPDX-License-Identifier: MIT */
/*
 * Async stages, see async.h: the stage driver of the async engine
 * (engine.h) and the stage's ops. Its loop thread owns the stage's
 * sockets; outputs go downstream while there are credits, and wait in
 * the loop's backlog when there are none (no call starts meanwhile). An
 * ordered stage's outputs wait in the ordering ring for their turn.
 *
 * At a checkpoint marker (transport/link.h) the loop stops reading its
 * input until no call is in flight and every output has left; then it
 * marks its sender, passes the marker, and reads on. Nothing is held
 * aside: upstream holds what follows the marker.
 */
#include "worker/async.h"

#include <assert.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "worker/engine.h"
#include "worker/order.h"
#include "worker/stage.h"

/* Outputs waiting for credits. */
typedef struct backlog {
    msgpack_sbuffer buf;
    size_t *ends;        /* end offset of each output */
    size_t n, cap, head; /* ends[head..n) wait; head <= n <= cap */
} backlog;

/* The loop of an async stage: its engine, and its sockets. Lives on the
 * loop thread's stack. */
typedef struct aloop {
    zp__engine e;             /* first: the stage driver's engine is an aloop */
    const zp__stage_cfg *cfg; /* borrowed; the stage's */
    zp__rx *rx;               /* NULL for the first stage */
    zp__tx *tx;
    uv_poll_t poll; /* the input socket's ZMQ_FD */
    bool polling;
    bool first_given; /* the first stage's one call started */
    bool marked;      /* a marker came: no input until it is passed */
    zp__mark mark;    /* that marker */
    backlog bl;
    zp__order order; /* ordered stages: outputs wait for their turn */
} aloop;
_Static_assert(offsetof(aloop, e) == 0, "an aloop begins with its engine");

/* ---- The stage driver ---------------------------------------------------- */

static aloop *loop_of(zp__engine *e)
{
    return (aloop *)e;
}

static int stage_next(zp__engine *e, zp__source *src)
{
    aloop *l = loop_of(e);
    src->def = l->cfg->def;
    if (l->rx == NULL) { /* the first stage: one call on the arguments */
        if (l->first_given)
            return 0;
        l->first_given = true;
        src->item = l->cfg->args;
        src->index = 0;
        return 1;
    }
    if (l->marked) /* nothing is taken between a marker and its pass */
        return ZP__AGAIN;
    src->copy = true;
    int rc = zp__rx_next(l->rx, false, &src->item, &src->index);
    if (rc == ZP__MARK) {
        l->marked = true;
        l->mark = zp__rx_mark(l->rx);
        rc = ZP__AGAIN;
    }
    return rc;
}

static void stage_raw(zp__engine *e, const char **p, size_t *len)
{
    zp__rx_raw(loop_of(e)->rx, p, len);
}

static int backlog_push(backlog *bl, const char *data, size_t len)
{
    assert(bl->head <= bl->n && bl->n <= bl->cap);
    if (bl->n == bl->cap) {
        size_t cap = bl->cap ? bl->cap * 2 : 64;
        size_t *ends = zp__realloc(bl->ends, cap * sizeof *ends);
        if (ends == NULL)
            return ZP_ENOMEM;
        bl->ends = ends;
        bl->cap = cap;
    }
    if (msgpack_sbuffer_write(&bl->buf, data, len) != 0)
        return ZP_ENOMEM;
    bl->ends[bl->n++] = bl->buf.size;
    return 0;
}

/* Appends one output to the batch being built; credits are known to be
 * there, so a flush never waits. */
static int send_one(aloop *l, const char *data, size_t len)
{
    int rc = zp__tx_append(l->tx, data, len);
    if (rc == 0)
        zp__count(&l->e.stats->out, 1);
    return rc;
}

static int stage_output(zp__engine *e, zp__acall *a, const char *data,
                        size_t len)
{
    aloop *l = loop_of(e);
    (void)a;
    if (!e->held && zp__tx_room(l->tx))
        return send_one(l, data, len);
    e->held = true; /* no call starts until the backlog drained */
    return backlog_push(&l->bl, data, len);
}

static bool stage_drain(zp__engine *e)
{
    aloop *l = loop_of(e);
    backlog *bl = &l->bl;
    assert(e->held == (bl->head < bl->n));
    while (bl->head < bl->n && zp__tx_room(l->tx)) {
        size_t start = bl->head ? bl->ends[bl->head - 1] : 0;
        int rc = send_one(l, bl->buf.data + start, bl->ends[bl->head] - start);
        bl->head++;
        if (rc != 0) {
            if (rc != ZP_ECANCELED)
                zp__engine_fail(e, rc,
                                zp__strdupf("task '%s': sending outputs: %s",
                                            l->cfg->def->name,
                                            zp_strerror(rc)));
            break;
        }
    }
    if (bl->head < bl->n) {
        /* Arm, then look again: credits given back in between are seen
         * either here or by the release that fires the notification. */
        zp__edge_arm(l->cfg->out);
        if (zp__tx_room(l->tx))
            uv_async_send(&e->wake);
        return false;
    }
    bl->head = bl->n = 0;
    bl->buf.size = 0;
    e->held = false;
    return true;
}

/*
 * A marker waits: once no call is in flight and no output waits (every
 * item taken before the marker is done and its outputs sent), marks the
 * sender and passes, then has the pump run again to read on (items may
 * wait in the receiver's batch, which no descriptor tells of). Marks
 * only while the sender has room, so that it never waits for an earlier
 * marker's pass: without room the edge is armed, and its notify (credits
 * back, or the pass) runs the pump again.
 */
static int pass_mark(aloop *l)
{
    zp__engine *e = &l->e;
    int rc = zp__tx_flush(l->tx);
    if (rc != 0 || e->live > 0 || e->held)
        return rc;
    if (!zp__tx_room(l->tx)) {
        zp__edge_arm(l->cfg->out);
        if (!zp__tx_room(l->tx))
            return 0;
    }
    rc = zp__tx_mark(l->tx, &l->mark);
    zp__rx_pass(l->rx);
    l->marked = false;
    uv_async_send(&e->wake);
    return rc;
}

/* Sends the batch being built; credits are known to be there (outputs
 * wait in the backlog otherwise), so it never waits. */
static int stage_flush(zp__engine *e)
{
    aloop *l = loop_of(e);
    return l->marked ? pass_mark(l) : zp__tx_flush(l->tx);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    zp__engine_pump(h->data);
}

/* Watches the input socket only while an item could start. */
static void stage_watch(zp__engine *e)
{
    aloop *l = loop_of(e);
    bool want = l->rx != NULL && !e->input_over && !l->marked &&
                zp__engine_can_start(e) && !zp__engine_stopping(e);
    if (want != l->polling) {
        if (want)
            uv_poll_start(&l->poll, UV_READABLE, on_readable);
        else
            uv_poll_stop(&l->poll);
        l->polling = want;
    }
    if (l->rx != NULL) /* else batches grow */
        zp__rx_set_waiting(l->rx, want && e->starved);
}

static int stage_ended(zp__engine *e, zp__acall *a, int outcome)
{
    zp_call *c = &a->call;
    if (outcome == ZP_ETASK) {
        e->run->fail(e->run, ZP_ETASK,
                     zp__strdupf("task '%s' failed on item %llu: %s",
                                 c->def->name, (unsigned long long)c->index,
                                 c->error ? c->error : "out of memory"));
        return ZP_ETASK;
    }
    if (!e->ordered)
        return zp__engine_pass_on(e, a);
    /* Skipped items take their (empty) turn too. */
    aloop *l = loop_of(e);
    int rc = zp__order_put(&l->order, c);
    int64_t released = 0;
    for (zp__parked *p; rc == 0 && (p = zp__order_ready(&l->order));) {
        size_t start = 0;
        for (uint32_t i = 0; rc == 0 && i < p->n; i++) {
            rc = stage_output(e, a, p->data + start, p->ends[i] - start);
            start = p->ends[i];
        }
        zp__order_pop(&l->order);
        released++;
    }
    zp__edge_release(l->cfg->in, released);
    return rc;
}

static const zp__driver stage_driver = {
    .next = stage_next,
    .raw = stage_raw,
    .output = stage_output,
    .ended = stage_ended,
    .drain = stage_drain,
    .flush = stage_flush,
    .watch = stage_watch,
};

static void notify(void *arg)
{
    uv_async_send(arg);
}

/* An async stage of a run: one loop thread, its only worker. */
typedef struct astage {
    zp__stage base;
    zp__stage_cfg cfg; /* its pointers borrowed */
    zp__wstats stats;
    pthread_t thread;
    bool running; /* the thread was started and not joined */
    _Atomic int alive;
} astage;

/* Sets the loop up: its engine, and its input socket watched. */
static int loop_init(aloop *l)
{
    const zp__stage_cfg *cfg = l->cfg;
    int fd = -1;
    l->rx = cfg->in != NULL ? cfg->in->rx[0] : NULL;
    l->tx = cfg->out->tx[0];
    l->e.ordered = cfg->def->opts.ordered && cfg->in != NULL;
    msgpack_sbuffer_init(&l->bl.buf);
    int rc = zp__engine_init(&l->e, &stage_driver,
                             l->rx ? cfg->def->opts.workers : 1);
    if (rc == 0 && l->rx != NULL && (rc = zp__rx_fd(l->rx, &fd)) == 0 &&
        uv_poll_init(&l->e.loop, &l->poll, fd) != 0)
        rc = ZP_EIO;
    l->poll.data = &l->e;
    return rc;
}

static void loop_fini(aloop *l)
{
    zp__engine_fini(&l->e);
    msgpack_sbuffer_destroy(&l->bl.buf);
    free(l->bl.ends);
    zp__order_fini(&l->order);
}

/* Runs the stage's loop until its input ends or the run stops. Returns 0
 * (outputs flushed, not closed) or an error code, reported already when
 * it is ZP_ETASK or ZP_ECANCELED. */
static int run_loop(astage *st)
{
    aloop l = {.e = {.run = st->cfg.run,
                     .stats = &st->stats,
                     .name = st->cfg.def->name},
               .cfg = &st->cfg};
    int rc = loop_init(&l);
    if (rc != 0) {
        zp__engine_fail(&l.e, rc,
                        zp__strdupf("task '%s': cannot start its event loop: "
                                    "%s",
                                    st->cfg.def->name, zp_strerror(rc)));
        loop_fini(&l);
        return rc;
    }
    zp__edge_on_room(st->cfg.out, notify, &l.e.wake);
    uv_run(&l.e.loop, UV_RUN_DEFAULT);
    zp__edge_on_room(st->cfg.out, NULL, NULL);
    if (l.rx != NULL)
        zp__rx_set_waiting(l.rx, false);
    loop_fini(&l);
    if (l.e.rc == 0 && zp__engine_stopping(&l.e))
        l.e.rc = ZP_ECANCELED;
    return l.e.rc;
}

static void *stage_main(void *arg)
{
    astage *st = arg;
    int rc = run_loop(st);
    if (rc == 0)
        rc = zp__tx_close(st->cfg.out->tx[0]);
    atomic_store(&st->alive, 0);
    if (rc != 0 && rc != ZP_ETASK && rc != ZP_ECANCELED)
        st->cfg.run->fail(
            st->cfg.run, rc,
            zp__strdupf("task '%s': %s", st->cfg.def->name, zp_strerror(rc)));
    return NULL;
}

static bool async_claims(const zp__stage_def *def)
{
    return def->opts.mode == ZP_INPROC && def->afn != NULL;
}

static void async_shape(const zp__stage_def *def, size_t index,
                        zp__stage_shape *out)
{
    *out = (zp__stage_shape){
        .senders = 1,
        .receivers = 1,
        .late_release = index > 0 && def->opts.ordered,
    };
}

/* On failure the stage in *out, if any, has no thread: the run stops,
 * joins and destroys it, which do nothing more than free it. */
static int async_start(const zp__stage_cfg *cfg, zp__stage **out, char **why)
{
    astage *st = zp__calloc(1, sizeof *st);
    *out = (zp__stage *)st;
    if (st == NULL)
        return ZP_ENOMEM;
    st->base.ops = &zp__async_stage_ops;
    st->cfg = *cfg;
    atomic_store(&st->alive, 1);
    if (cfg->in != NULL) /* one consumer: nothing to spread */
        zp__edge_set_slow(cfg->in, false);
    int err = pthread_create(&st->thread, NULL, stage_main, st);
    if (err != 0) {
        *why = zp__strdupf("cannot start the event loop thread of task "
                           "'%s': %s",
                           cfg->def->name, strerror(err));
        atomic_store(&st->alive, 0);
        return ZP_EIO;
    }
    st->running = true;
    return 0;
}

static void async_stop(zp__stage *s)
{
    zp__edge_wake(((astage *)s)->cfg.out); /* its loop hears it: notify */
}

static void async_join(zp__stage *s)
{
    astage *st = (astage *)s;
    if (st->running)
        pthread_join(st->thread, NULL);
    st->running = false;
}

static void async_stats(zp__stage *s, zp_stage_stats *out)
{
    astage *st = (astage *)s;
    zp__wstats_add(&st->stats, out);
    /* The loop counts its calls itself. */
    out->peak_in_flight +=
        atomic_load_explicit(&st->stats.peak, memory_order_relaxed);
    out->workers_alive += atomic_load(&st->alive);
}

static void async_destroy(zp__stage **sp)
{
    astage *st = (astage *)*sp;
    if (st == NULL)
        return;
    async_join(&st->base);
    free(st);
    *sp = NULL;
}

const zp__stage_ops zp__async_stage_ops = {
    .kind = "event loop",
    .claims = async_claims,
    .shape = async_shape,
    .start = async_start,
    .stop = async_stop,
    .join = async_join,
    .stats = async_stats,
    .destroy = async_destroy,
};
