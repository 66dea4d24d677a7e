/* SPDX-License-Identifier: MIT */
/*
 * Async workers, see async.h. An engine is one loop with a fixed set of
 * call slots; a driver says where its items come from and where outputs
 * go: a run's stage (sockets, credits, ordering) or a worker process's
 * batches (buffers sent back when a batch is done).
 *
 * Everything happens on the loop thread. The loop's prepare handle runs
 * the pump before every wait: it retries failed attempts, moves waiting
 * outputs on, starts calls while slots are free and input is there, and
 * ends the loop once the work is over. Calls never start from inside
 * zp_done(), zp_fail() or zp_emit(), so a task may end its call before it
 * returns without any recursion.
 */
#include "worker/async.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/list.h"
#include "worker/call.h"
#include "worker/stage.h"

/* A zone chunk per call: enough for a small item without a malloc. */
#define ZONE_CHUNK 256
/* A call's first output buffer; msgpack-c would start with 8 KiB, which
 * thousands of calls in flight would pay for in page faults. */
#define CALL_BUF 128

typedef struct engine engine;

typedef struct acall {
    zp_call call; /* first: a zp_call of an async task is an acall */
    engine *eng;
    zp__qnode node;             /* free list or retry queue             */
    const msgpack_object *item; /* the input every attempt runs on      */
    msgpack_object input;       /* a copied item: in `raw` and `zone`   */
    char *raw;                  /* owned bytes of a copied item         */
    size_t raw_cap;
    msgpack_zone zone;
    bool zone_ready;
    uint64_t started; /* when the attempt began, ns          */
    uint64_t begun;   /* when the first attempt began, ns    */
    uint64_t took;    /* ended: the time of all its attempts */
    int attempt;
    bool live; /* started, not yet ended */
    void *tag; /* the driver's: the call's batch */
} acall;

/* Where a call comes from, as the driver says. */
typedef struct source {
    const msgpack_object *item;
    uint64_t index;
    bool copy;                /* the item must be copied to outlive the call */
    const zp__stage_def *def; /* the call's task */
    void *tag;
} source;

typedef struct driver {
    /* The next item into *src: 1, 0 when there will be no more,
     * ZP__AGAIN, or an error code. */
    int (*next)(engine *e, source *src);
    /* The current item's bytes, to copy (drivers that ask for copies). */
    void (*raw)(engine *e, const char **p, size_t *len);
    /* One output of a call, to send on. Returns 0 or an error code. */
    int (*output)(engine *e, acall *a, const char *data, size_t len);
    /* A call ended: ZP__CALL_OK (held outputs still parked in it),
     * ZP__CALL_SKIPPED or ZP_ETASK. Returns 0 or an error code. */
    int (*ended)(engine *e, acall *a, int outcome);
} driver;

/* Outputs waiting for credits (stage driver). */
typedef struct backlog {
    msgpack_sbuffer buf;
    size_t *ends; /* end offset of each output */
    size_t n, cap, head;
} backlog;

struct engine {
    uv_loop_t loop;
    uv_prepare_t prep; /* runs the pump before every wait             */
    uv_async_t wake;   /* other threads: credits came back, or stop   */
    uv_poll_t poll;    /* the input socket's ZMQ_FD (stage driver)    */
    bool polling;
    const driver *drv;
    zp__runctl *run;   /* borrowed: failures and the stop flag        */
    zp__wstats *stats; /* borrowed: where calls count                 */
    acall *slots;      /* owned, nslots */
    int nslots;
    zp__queue free_slots; /* of acall */
    zp__queue retries;    /* of acall: attempts to run again */
    int live;             /* calls started and not ended */
    bool input_over;      /* no more items will come */
    bool starved;         /* the last look at the input found nothing */
    bool over;            /* the loop is ending */
    bool loop_ready;      /* uv_loop_init succeeded */
    int rc;               /* the engine's own first error */
    /* Clock readings for the calls' times (see start_time). */
    uint64_t now;   /* the last reading, ns */
    bool bursting;  /* inside start_more: calls start one after another */
    bool just_read; /* `now` is when the call before ended, in the burst */
    /* The stage driver: what zp__stage_cfg says, and its sockets. */
    const zp__stage_cfg *cfg;
    zp__rx *rx; /* NULL for the first stage */
    zp__tx *tx;
    bool ordered;
    bool first_given; /* the first stage's one call started */
    backlog bl;
    zp__order order;
};

static bool stopping(const engine *e)
{
    return atomic_load_explicit(&e->run->stop, memory_order_relaxed);
}

/* The stage's task, for messages about the engine. */
static const char *name_of(const engine *e)
{
    return e->cfg != NULL ? e->cfg->def->name : "(async worker)";
}

/* Records the engine's first error and stops the run with it. */
static void engine_fail(engine *e, int rc, char *msg)
{
    if (e->rc == 0)
        e->rc = rc;
    e->run->fail(e->run, rc, msg);
}

/* ---- Calls --------------------------------------------------------------- */

/* Calls are timed on the precise clock, from their start to their
 * zp_done or zp_fail: the histogram of a stage's item times needs
 * microseconds, which the coarse clock (the loop's own, a few ms) lacks.
 * A call that starts right after another one ended, in one burst of
 * starts (a trivial call ends inside its task function), starts at that
 * end: one reading of the clock per call, not two. */
static uint64_t start_time(engine *e)
{
    if (!e->just_read)
        e->now = zp__now_ns();
    e->just_read = false;
    return e->now;
}

static void attempt(acall *a)
{
    uv_loop_t *loop = &a->eng->loop;
    zp__call_begin(&a->call, a->item, a->call.index);
    a->started = start_time(a->eng);
    if (a->attempt == 0)
        a->begun = a->started;
    /* Calls start in bursts: without this, a timer started late in a
     * burst would count from the time the burst began, and the loop's
     * next wait would end late by the length of the burst. */
    uv_update_time(loop);
    a->call.def->afn(&a->call, loop);
}

/* Copies the current input item into the call (it must outlive the
 * driver's buffer). */
static int copy_item(engine *e, acall *a)
{
    const char *p;
    size_t len, off = 0;
    e->drv->raw(e, &p, &len);
    if (len > a->raw_cap) {
        char *raw = zp__realloc(a->raw, len);
        if (raw == NULL)
            return ZP_ENOMEM;
        a->raw = raw;
        a->raw_cap = len;
    }
    memcpy(a->raw, p, len);
    if (!a->zone_ready) {
        if (!msgpack_zone_init(&a->zone, ZONE_CHUNK))
            return ZP_ENOMEM;
        a->zone_ready = true;
    }
    msgpack_zone_clear(&a->zone);
    if (msgpack_unpack(a->raw, len, &off, &a->zone, &a->input) !=
        MSGPACK_UNPACK_SUCCESS)
        return ZP_EPROTO;
    a->item = &a->input;
    return 0;
}

static void note_in_flight(engine *e)
{
    zp__wstats *s = e->stats;
    atomic_store_explicit(&s->in_flight, (uint64_t)e->live,
                          memory_order_relaxed);
    if ((uint64_t)e->live >
        atomic_load_explicit(&s->peak, memory_order_relaxed))
        atomic_store_explicit(&s->peak, (uint64_t)e->live,
                              memory_order_relaxed);
}

static const zp__call_host async_host;

static int start(engine *e, const source *src)
{
    acall *a = zp__container_of(e->free_slots.head, acall, node);
    a->item = src->item;
    if (src->copy) {
        int rc = copy_item(e, a);
        if (rc != 0)
            return rc;
    }
    zp__queue_pop(&e->free_slots);
    a->live = true;
    a->attempt = 0;
    a->tag = src->tag;
    zp__call_init(&a->call, src->def, e->run, e->stats, e->ordered, &async_host,
                  NULL);
    a->call.index = src->index;
    e->live++;
    note_in_flight(e);
    zp__count(&e->stats->in, 1);
    attempt(a);
    return 0;
}

static void release(engine *e, acall *a)
{
    a->live = false;
    zp__call_drop(&a->call);
    zp__queue_push_front(&e->free_slots, &a->node);
    e->live--;
    note_in_flight(e);
}

/* Sends the outputs parked in a call on, and empties it. */
static int pass_on(engine *e, acall *a)
{
    zp_call *c = &a->call;
    int rc = 0;
    size_t start = 0;
    for (uint32_t i = 0; rc == 0 && i < c->emitted; i++) {
        rc = e->drv->output(e, a, c->buf.data + start, c->ends[i] - start);
        start = c->ends[i];
    }
    c->buf.size = 0;
    c->emitted = 0;
    return rc;
}

static int host_emitted(zp_call *c)
{
    acall *a = (acall *)c;
    if (c->hold)
        return 0;
    int rc = pass_on(a->eng, a);
    if (rc != 0 && rc != ZP_ECANCELED)
        engine_fail(a->eng, rc,
                    zp__strdupf("task '%s': sending an output: %s",
                                c->def->name, zp_strerror(rc)));
    return rc;
}

static void host_end(zp_call *c)
{
    acall *a = (acall *)c;
    engine *e = a->eng;
    if (!a->live) {
        fprintf(stderr,
                "zpipe: task '%s' ended a call that had already ended "
                "(zp_done or zp_fail twice); ignored\n",
                c->def->name);
        return;
    }
    zp__wstats *s = e->stats;
    uint64_t now = e->now = zp__now_ns();
    e->just_read = e->bursting;
    zp__count(&s->busy_ns, now - a->started);
    if (stopping(e)) {
        release(e, a);
        return;
    }
    int outcome = zp__call_outcome(c, a->attempt + 1);
    if (outcome == ZP__CALL_RETRY) { /* the pump runs the next attempt */
        a->attempt++;
        zp__count(&s->retried, 1);
        zp__call_drop(c);
        zp__queue_push(&e->retries, &a->node);
        return;
    }
    a->took = now - a->begun;
    zp__hist_record(&s->hist, a->took, 1, a->took);
    if (outcome != ZP__CALL_OK)
        zp__count(&s->failed, 1);
    if (outcome == ZP__CALL_SKIPPED)
        zp__count(&s->skipped, 1);
    int rc = e->drv->ended(e, a, outcome);
    if (rc != 0 && rc != ZP_ECANCELED && rc != ZP_ETASK)
        engine_fail(e, rc,
                    zp__strdupf("task '%s': sending outputs: %s", c->def->name,
                                zp_strerror(rc)));
    release(e, a);
}

static const zp__call_host async_host = {
    .emitted = host_emitted,
    .end = host_end,
};

/* ---- The pump ------------------------------------------------------------ */

static void drop_retries(engine *e)
{
    for (zp__qnode *n; (n = zp__queue_pop(&e->retries)) != NULL;)
        release(e, zp__container_of(n, acall, node));
}

/* Moves waiting outputs on (stage driver); true when none wait. */
static bool drain(engine *e);

static bool can_start(const engine *e)
{
    return !zp__queue_empty(&e->free_slots) && e->bl.head == e->bl.n;
}

/* Starts calls while it can; true when it stopped because it could not
 * start one (no free slot, or outputs waiting), not for lack of input. */
static bool start_calls(engine *e)
{
    while (can_start(e) && !stopping(e)) {
        zp__qnode *again = zp__queue_pop(&e->retries);
        if (again != NULL) {
            attempt(zp__container_of(again, acall, node));
            continue;
        }
        if (e->input_over)
            return false;
        source src = {.def = e->cfg != NULL ? e->cfg->def : NULL};
        int rc = e->drv->next(e, &src);
        e->starved = rc == ZP__AGAIN;
        if (rc == 1 && (rc = start(e, &src)) == 0)
            continue;
        if (rc == 0)
            e->input_over = true;
        if (rc == 0 || rc == ZP__AGAIN)
            return false;
        if (rc != ZP_ECANCELED)
            engine_fail(e, rc,
                        zp__strdupf("task '%s': reading its input: %s",
                                    name_of(e), zp_strerror(rc)));
        return false;
    }
    return !stopping(e);
}

/* start_calls() as one burst of starts (see start_time). */
static bool start_more(engine *e)
{
    e->bursting = true;
    bool blocked = start_calls(e);
    e->bursting = e->just_read = false;
    return blocked;
}

static void on_readable(uv_poll_t *h, int status, int events);

/* Watches the input socket only while an item could start. */
static void watch_input(engine *e)
{
    zp__rx *rx = e->rx;
    bool want = rx != NULL && !e->input_over && can_start(e) && !stopping(e);
    if (want != e->polling) {
        if (want)
            uv_poll_start(&e->poll, UV_READABLE, on_readable);
        else
            uv_poll_stop(&e->poll);
        e->polling = want;
    }
    if (rx != NULL)
        zp__rx_set_waiting(rx, want && e->starved); /* else batches grow */
}

static void end_loop(engine *e)
{
    e->over = true;
    uv_stop(&e->loop);
}

static void pump(engine *e)
{
    if (e->over)
        return;
    if (stopping(e)) {
        drop_retries(e);
        if (e->live == 0)
            end_loop(e);
        watch_input(e);
        return;
    }
    /* Outputs that leave make room for calls, which make outputs: go on
     * until input runs out or nothing can move. Items may wait inside the
     * receiver's current batch, where no file descriptor tells of them,
     * so the pump must not stop while one could start. */
    bool drained;
    for (;;) {
        drain(e);
        bool blocked = start_more(e);
        drained = drain(e);
        if (!blocked || !drained || !can_start(e))
            break;
    }
    if (e->tx != NULL && !stopping(e)) {
        int rc = zp__tx_flush(e->tx); /* never waits: see output() */
        if (rc != 0 && rc != ZP_ECANCELED)
            engine_fail(e, rc,
                        zp__strdupf("task '%s': sending outputs: %s",
                                    name_of(e), zp_strerror(rc)));
    }
    watch_input(e);
    if (e->live == 0 && drained && (e->input_over || e->rc))
        end_loop(e);
}

static void on_prepare(uv_prepare_t *h)
{
    pump(h->data);
}

static void on_wake(uv_async_t *h)
{
    pump(h->data);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    pump(h->data);
}

/* ---- The engine ---------------------------------------------------------- */

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void engine_fini(engine *e)
{
    /* Handles a task left open are closed too: nothing may outlive the
     * loop. */
    if (e->loop_ready) {
        uv_walk(&e->loop, close_any, NULL);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        uv_loop_close(&e->loop);
    }
    for (int i = 0; i < e->nslots; i++) {
        acall *a = &e->slots[i];
        zp__call_fini(&a->call);
        free(a->raw);
        if (a->zone_ready)
            msgpack_zone_destroy(&a->zone);
    }
    free(e->slots);
    msgpack_sbuffer_destroy(&e->bl.buf);
    free(e->bl.ends);
    zp__order_fini(&e->order);
}

/* Sets the engine up with `slots` calls in flight at most. The caller
 * zeroed it and set its run, stats and driver's fields. */
static int engine_init(engine *e, const driver *drv, int slots)
{
    e->drv = drv;
    msgpack_sbuffer_init(&e->bl.buf);
    if (uv_loop_init(&e->loop) != 0)
        return ZP_EIO;
    e->loop_ready = true;
    e->slots = zp__calloc((size_t)slots, sizeof *e->slots);
    if (e->slots == NULL)
        return ZP_ENOMEM;
    e->nslots = slots; /* zeroed calls are safe to finish */
    for (int i = slots - 1; i >= 0; i--) {
        acall *a = &e->slots[i];
        zp_call *c = &a->call;
        if ((c->buf.data = zp__malloc(CALL_BUF)) == NULL)
            return ZP_ENOMEM;
        c->buf.alloc = CALL_BUF;
        a->eng = e;
        zp__queue_push_front(&e->free_slots, &a->node);
    }
    uv_prepare_init(&e->loop, &e->prep);
    e->prep.data = e;
    uv_prepare_start(&e->prep, on_prepare);
    uv_async_init(&e->loop, &e->wake, on_wake);
    e->wake.data = e;
    return 0;
}

/* ---- The stage driver ---------------------------------------------------- */

static int stage_next(engine *e, source *src)
{
    if (e->rx == NULL) { /* the first stage: one call on the arguments */
        if (e->first_given)
            return 0;
        e->first_given = true;
        src->item = e->cfg->args;
        src->index = 0;
        return 1;
    }
    src->copy = true;
    return zp__rx_next(e->rx, false, &src->item, &src->index);
}

static void stage_raw(engine *e, const char **p, size_t *len)
{
    zp__rx_raw(e->rx, p, len);
}

static int backlog_push(backlog *bl, const char *data, size_t len)
{
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
static int send_one(engine *e, const char *data, size_t len)
{
    int rc = zp__tx_append(e->tx, data, len);
    if (rc == 0)
        zp__count(&e->stats->out, 1);
    return rc;
}

static int stage_output(engine *e, acall *a, const char *data, size_t len)
{
    (void)a;
    backlog *bl = &e->bl;
    if (bl->head == bl->n && zp__tx_room(e->tx))
        return send_one(e, data, len);
    return backlog_push(bl, data, len);
}

static bool drain(engine *e)
{
    backlog *bl = &e->bl;
    while (bl->head < bl->n && zp__tx_room(e->tx)) {
        size_t start = bl->head ? bl->ends[bl->head - 1] : 0;
        int rc = send_one(e, bl->buf.data + start, bl->ends[bl->head] - start);
        bl->head++;
        if (rc != 0) {
            if (rc != ZP_ECANCELED)
                engine_fail(e, rc,
                            zp__strdupf("task '%s': sending outputs: %s",
                                        name_of(e), zp_strerror(rc)));
            break;
        }
    }
    if (bl->head < bl->n) {
        /* Arm, then look again: credits given back in between are seen
         * either here or by the release that fires the notification. */
        zp__edge_arm(e->cfg->out);
        if (zp__tx_room(e->tx))
            uv_async_send(&e->wake);
        return false;
    }
    bl->head = bl->n = 0;
    bl->buf.size = 0;
    return true;
}

static int stage_ended(engine *e, acall *a, int outcome)
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
        return pass_on(e, a);
    /* Skipped items take their (empty) turn too. */
    int rc = zp__order_put(&e->order, c);
    int64_t released = 0;
    for (zp__parked *p; rc == 0 && (p = zp__order_ready(&e->order));) {
        size_t start = 0;
        for (uint32_t i = 0; rc == 0 && i < p->n; i++) {
            rc = stage_output(e, a, p->data + start, p->ends[i] - start);
            start = p->ends[i];
        }
        zp__order_pop(&e->order);
        released++;
    }
    zp__edge_release(e->cfg->in, released);
    return rc;
}

static const driver stage_driver = {stage_next, stage_raw, stage_output,
                                    stage_ended};

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

/* Runs the stage's loop until its input ends or the run stops. Returns 0
 * (outputs flushed, not closed) or an error code, reported already when
 * it is ZP_ETASK or ZP_ECANCELED. */
static int run_loop(astage *st)
{
    engine e = {.run = st->cfg.run, .stats = &st->stats, .cfg = &st->cfg};
    const zp__stage_cfg *cfg = &st->cfg;
    int fd = -1;
    e.rx = cfg->in != NULL ? cfg->in->rx[0] : NULL;
    e.tx = cfg->out->tx[0];
    e.ordered = cfg->def->opts.ordered && cfg->in != NULL;
    int rc = engine_init(&e, &stage_driver, e.rx ? cfg->def->opts.workers : 1);
    if (rc == 0 && e.rx != NULL && (rc = zp__rx_fd(e.rx, &fd)) == 0 &&
        uv_poll_init(&e.loop, &e.poll, fd) != 0)
        rc = ZP_EIO;
    if (rc != 0) {
        engine_fail(&e, rc,
                    zp__strdupf("task '%s': cannot start its event loop: %s",
                                cfg->def->name, zp_strerror(rc)));
        engine_fini(&e);
        return rc;
    }
    e.poll.data = &e;
    zp__edge_on_room(cfg->out, notify, &e.wake);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    zp__edge_on_room(cfg->out, NULL, NULL);
    if (e.rx != NULL)
        zp__rx_set_waiting(e.rx, false);
    engine_fini(&e);
    if (e.rc == 0 && stopping(&e))
        e.rc = ZP_ECANCELED;
    return e.rc;
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

static bool stage_claims(const zp__stage_def *def)
{
    return def->opts.mode == ZP_INPROC && def->afn != NULL;
}

static void stage_shape(const zp__stage_def *def, size_t index,
                        zp__stage_shape *out)
{
    *out = (zp__stage_shape){
        .senders = 1,
        .receivers = 1,
        .late_release = index > 0 && def->opts.ordered,
    };
}

static int stage_start(const zp__stage_cfg *cfg, zp__stage **out, char **why)
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

static void stage_stop(zp__stage *s)
{
    zp__edge_wake(((astage *)s)->cfg.out); /* its loop hears it: notify */
}

static void stage_join(zp__stage *s)
{
    astage *st = (astage *)s;
    if (st->running)
        pthread_join(st->thread, NULL);
    st->running = false;
}

static void stage_stats(zp__stage *s, zp_stage_stats *out)
{
    astage *st = (astage *)s;
    zp__wstats_add(&st->stats, out);
    /* The loop counts its calls itself. */
    out->peak_in_flight +=
        atomic_load_explicit(&st->stats.peak, memory_order_relaxed);
    out->workers_alive += atomic_load(&st->alive);
}

static void stage_destroy(zp__stage **sp)
{
    astage *st = (astage *)*sp;
    if (st == NULL)
        return;
    stage_join(&st->base);
    free(st);
    *sp = NULL;
}

const zp__stage_ops zp__async_stage_ops = {
    .kind = "event loop",
    .claims = stage_claims,
    .shape = stage_shape,
    .start = stage_start,
    .stop = stage_stop,
    .join = stage_join,
    .stats = stage_stats,
    .destroy = stage_destroy,
};

/* ---- The server driver --------------------------------------------------- */

struct zp__async_server {
    engine e;
    zp__wstats stats; /* the process's calls */
    pthread_t thread;
    bool running;
    pthread_mutex_t lock; /* guards submitted                  */
    zp__queue submitted;  /* of zp__async_job, not started     */
    zp__async_job *cur;   /* being started (loop thread)       */
    zp__queue started;    /* of zp__async_job, not done (loop) */
    void (*done)(void *arg, zp__async_job *job);
    void *arg;
};

static void unlink_started(zp__async_server *s, zp__async_job *job)
{
    zp__qnode *prev = NULL;
    for (zp__qnode *n = s->started.head; n != NULL; prev = n, n = n->next)
        if (n == &job->node) {
            zp__queue_unlink(&s->started, prev, n);
            return;
        }
}

static void fail_job(zp__async_job *job, uint64_t seq, const char *why)
{
    if (job->failed)
        return;
    job->failed = true;
    job->seq = seq;
    job->error = zp__strdup(why);
}

/* Gives a job back once all its calls have ended. */
static void settle(zp__async_server *s, zp__async_job *job)
{
    if (!job->all_started || job->live > 0)
        return;
    unlink_started(s, job);
    zp__batch_reader_fini(&job->rd);
    s->done(s->arg, job);
}

/* Takes the next submitted job and opens its batch. */
static zp__async_job *take_job(zp__async_server *s)
{
    pthread_mutex_lock(&s->lock);
    zp__qnode *n = zp__queue_pop(&s->submitted);
    pthread_mutex_unlock(&s->lock);
    if (n == NULL)
        return NULL;
    zp__async_job *job = zp__container_of(n, zp__async_job, node);
    zp__queue_push(&s->started, &job->node);
    if (zp__batch_reader_init(&job->rd) != 0)
        fail_job(job, 0, "out of memory");
    else if (zp__batch_open(&job->rd, job->items, job->len) != 0)
        fail_job(job, 0, "malformed batch of items");
    return job;
}

static int server_next(engine *e, source *src)
{
    zp__async_server *s = (zp__async_server *)e;
    for (;;) {
        zp__async_job *job = s->cur ? s->cur : (s->cur = take_job(s));
        if (job == NULL)
            return ZP__AGAIN;
        int rc =
            job->failed ? 0 : zp__batch_next(&job->rd, &src->item, &src->index);
        if (rc == 1) {
            job->live++;
            src->def = job->def;
            src->tag = job;
            return 1;
        }
        if (rc < 0)
            fail_job(job, src->index, "malformed item");
        job->all_started = true;
        s->cur = NULL;
        settle(s, job);
    }
}

static int server_output(engine *e, acall *a, const char *data, size_t len)
{
    zp__async_job *job = a->tag;
    (void)e;
    if (msgpack_sbuffer_write(&job->out, data, len) != 0)
        return ZP_ENOMEM;
    job->n++;
    return 0;
}

static int server_ended(engine *e, acall *a, int outcome)
{
    zp__async_server *s = (zp__async_server *)e;
    zp__async_job *job = a->tag;
    zp_call *c = &a->call;
    int rc = 0;
    job->retried += (uint32_t)a->attempt;
    job->busy += a->took;
    job->calls++;
    if (outcome == ZP__CALL_SKIPPED)
        job->skipped++;
    if (outcome == ZP_ETASK)
        fail_job(job, c->index, c->error ? c->error : "out of memory");
    if (outcome == ZP__CALL_OK && !job->failed)
        rc = pass_on(e, a);
    if (rc != 0)
        fail_job(job, c->index, zp_strerror(rc));
    job->live--;
    settle(s, job);
    return 0;
}

static const driver server_driver = {server_next, NULL, server_output,
                                     server_ended};

static void *serve(void *arg)
{
    zp__async_server *s = arg;
    uv_run(&s->e.loop, UV_RUN_DEFAULT);
    return NULL;
}

zp__async_server *zp__async_server_new(zp__runctl *ctl, int capacity,
                                       void (*done)(void *, zp__async_job *),
                                       void *arg)
{
    zp__async_server *s = zp__calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->e.run = ctl;
    s->e.stats = &s->stats;
    s->done = done;
    s->arg = arg;
    pthread_mutex_init(&s->lock, NULL);
    if (engine_init(&s->e, &server_driver, capacity) != 0 ||
        pthread_create(&s->thread, NULL, serve, s) != 0) {
        zp__async_server_destroy(&s);
        return NULL;
    }
    s->running = true;
    return s;
}

void zp__async_server_submit(zp__async_server *s, zp__async_job *job)
{
    pthread_mutex_lock(&s->lock);
    zp__queue_push(&s->submitted, &job->node);
    pthread_mutex_unlock(&s->lock);
    uv_async_send(&s->e.wake);
}

static void drop_jobs(zp__async_server *s, zp__queue *q)
{
    for (zp__qnode *n; (n = zp__queue_pop(q)) != NULL;) {
        zp__async_job *job = zp__container_of(n, zp__async_job, node);
        zp__batch_reader_fini(&job->rd);
        job->dropped = true;
        s->done(s->arg, job);
    }
}

void zp__async_server_destroy(zp__async_server **sp)
{
    zp__async_server *s = sp ? *sp : NULL;
    if (s == NULL)
        return;
    if (s->running) {
        uv_async_send(&s->e.wake); /* the pump sees the stop flag */
        pthread_join(s->thread, NULL);
    }
    engine_fini(&s->e);
    drop_jobs(s, &s->started); /* their calls ended with the loop */
    drop_jobs(s, &s->submitted);
    pthread_mutex_destroy(&s->lock);
    free(s);
    *sp = NULL;
}
