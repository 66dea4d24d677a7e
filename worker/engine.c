/* SPDX-License-Identifier: MIT */
/*
 * The async engine, see engine.h. The loop's prepare handle runs the pump
 * before every wait: it retries failed attempts, moves waiting outputs
 * on, starts calls while slots are free and input is there, and ends the
 * loop once the work is over. Calls never start from inside zp_done(),
 * zp_fail() or zp_emit(), so a task may end its call before it returns
 * without any recursion.
 */
#include "worker/engine.h"

#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/link.h"

/* A zone chunk per call: enough for a small item without a malloc. */
#define ZONE_CHUNK 256
/* A call's first output buffer; msgpack-c would start with 8 KiB, which
 * thousands of calls in flight would pay for in page faults. */
#define CALL_BUF 128

/* A zp_call of an async task is the first member of its slot. */
_Static_assert(offsetof(zp__acall, call) == 0,
               "zp__acall begins with its call");

/* The stage's task, for messages about the engine. */
static const char *name_of(const zp__engine *e)
{
    return e->name != NULL ? e->name : "(async worker)";
}

void zp__engine_fail(zp__engine *e, int rc, char *msg)
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
static uint64_t start_time(zp__engine *e)
{
    if (!e->just_read)
        e->now = zp__now_ns();
    e->just_read = false;
    return e->now;
}

static void attempt(zp__acall *a)
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
static int copy_item(zp__engine *e, zp__acall *a)
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

static void note_in_flight(zp__engine *e)
{
    zp__wstats *s = e->stats;
    atomic_store_explicit(&s->in_flight, (uint64_t)e->live,
                          memory_order_relaxed);
    if ((uint64_t)e->live >
        atomic_load_explicit(&s->peak, memory_order_relaxed))
        atomic_store_explicit(&s->peak, (uint64_t)e->live,
                              memory_order_relaxed);
}

static void release(zp__engine *e, zp__acall *a)
{
    assert(a->live && e->live > 0);
    a->live = false;
    zp__call_drop(&a->call);
    zp__queue_push_front(&e->free_slots, &a->node);
    e->live--;
    note_in_flight(e);
}

int zp__engine_pass_on(zp__engine *e, zp__acall *a)
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
    zp__acall *a = (zp__acall *)c;
    if (c->hold)
        return 0;
    int rc = zp__engine_pass_on(a->eng, a);
    if (rc != 0 && rc != ZP_ECANCELED)
        zp__engine_fail(a->eng, rc,
                        zp__strdupf("task '%s': sending an output: %s",
                                    c->def->name, zp_strerror(rc)));
    return rc;
}

static void host_end(zp_call *c)
{
    zp__acall *a = (zp__acall *)c;
    zp__engine *e = a->eng;
    if (!a->live) {
        zp__log(ZP_LOG_WARN,
                "zpipe: task '%s' ended a call that had already ended "
                "(zp_done or zp_fail twice); ignored",
                c->def->name);
        return;
    }
    zp__wstats *s = e->stats;
    uint64_t now = e->now = zp__now_ns();
    e->just_read = e->bursting;
    zp__count(&s->busy_ns, now - a->started);
    if (zp__engine_stopping(e)) {
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
        zp__engine_fail(e, rc,
                        zp__strdupf("task '%s': sending outputs: %s",
                                    c->def->name, zp_strerror(rc)));
    release(e, a);
}

static const zp__call_host async_host = {
    .emitted = host_emitted,
    .end = host_end,
};

static int start_call(zp__engine *e, const zp__source *src)
{
    zp__acall *a = zp__container_of(e->free_slots.head, zp__acall, node);
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

/* ---- The pump ------------------------------------------------------------ */

static void drop_retries(zp__engine *e)
{
    for (zp__qnode *n; (n = zp__queue_pop(&e->retries)) != NULL;)
        release(e, zp__container_of(n, zp__acall, node));
}

/* Moves waiting outputs on (stage driver); true when none wait. */
/* Moves waiting outputs on; true when none wait. */
static bool drain(zp__engine *e)
{
    return e->drv->drain == NULL || e->drv->drain(e);
}

/* Starts calls while it can; true when it stopped because it could not
 * start one (no free slot, or outputs waiting), not for lack of input. */
static bool start_calls(zp__engine *e)
{
    while (zp__engine_can_start(e) && !zp__engine_stopping(e)) {
        zp__qnode *again = zp__queue_pop(&e->retries);
        if (again != NULL) {
            attempt(zp__container_of(again, zp__acall, node));
            continue;
        }
        if (e->input_over)
            return false;
        zp__source src = {.def = NULL};
        int rc = e->drv->next(e, &src);
        e->starved = rc == ZP__AGAIN;
        if (rc == 1 && (rc = start_call(e, &src)) == 0)
            continue;
        if (rc == 0)
            e->input_over = true;
        if (rc == 0 || rc == ZP__AGAIN)
            return false;
        if (rc != ZP_ECANCELED)
            zp__engine_fail(e, rc,
                            zp__strdupf("task '%s': reading its input: %s",
                                        name_of(e), zp_strerror(rc)));
        return false;
    }
    return !zp__engine_stopping(e);
}

/* start_calls() as one burst of starts (see start_time). */
static bool start_more(zp__engine *e)
{
    e->bursting = true;
    bool blocked = start_calls(e);
    e->bursting = e->just_read = false;
    return blocked;
}

/* Has the driver watch its input only while an item could start. */
static void watch_input(zp__engine *e)
{
    if (e->drv->watch != NULL)
        e->drv->watch(e);
}

static void end_loop(zp__engine *e)
{
    e->over = true;
    uv_stop(&e->loop);
}

void zp__engine_pump(zp__engine *e)
{
    if (e->over)
        return;
    if (zp__engine_stopping(e)) {
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
        if (!blocked || !drained || !zp__engine_can_start(e))
            break;
    }
    if (e->drv->flush != NULL && !zp__engine_stopping(e)) {
        int rc = e->drv->flush(e);
        if (rc != 0 && rc != ZP_ECANCELED)
            zp__engine_fail(e, rc,
                            zp__strdupf("task '%s': sending outputs: %s",
                                        name_of(e), zp_strerror(rc)));
    }
    watch_input(e);
    if (e->live == 0 && drained && (e->input_over || e->rc))
        end_loop(e);
}

static void on_prepare(uv_prepare_t *h)
{
    zp__engine_pump(h->data);
}

static void on_wake(uv_async_t *h)
{
    zp__engine_pump(h->data);
}

/* ---- The engine ---------------------------------------------------------- */

static void close_any(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void zp__engine_fini(zp__engine *e)
{
    /* Handles a task left open are closed too: nothing may outlive the
     * loop. */
    if (e->loop_ready) {
        uv_walk(&e->loop, close_any, NULL);
        uv_run(&e->loop, UV_RUN_DEFAULT);
        uv_loop_close(&e->loop);
    }
    for (int i = 0; i < e->nslots; i++) {
        zp__acall *a = &e->slots[i];
        zp__call_fini(&a->call);
        free(a->raw);
        if (a->zone_ready)
            msgpack_zone_destroy(&a->zone);
    }
    free(e->slots);
}

int zp__engine_init(zp__engine *e, const zp__driver *drv, int slots)
{
    e->drv = drv;
    if (uv_loop_init(&e->loop) != 0)
        return ZP_EIO;
    e->loop_ready = true;
    e->slots = zp__calloc((size_t)slots, sizeof *e->slots);
    if (e->slots == NULL)
        return ZP_ENOMEM;
    e->nslots = slots; /* zeroed calls are safe to finish */
    for (int i = slots - 1; i >= 0; i--) {
        zp__acall *a = &e->slots[i];
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
