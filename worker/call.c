/* SPDX-License-Identifier: MIT */
/*
 * The task-facing API (zp_input, zp_emit, zp_fail...) and output pacing.
 * Part of worker. Every function here runs on the worker thread that owns
 * the call; none takes a lock on the direct path.
 */
#include "worker/call.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "worker/async.h"

/* A call slower than this, on average, sends each output at once. */
#define SLOW_NS 20000u
/* Fast calls are timed in windows of this many items. */
#define WINDOW 16u

uint64_t zp__now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

void zp__deadline_after(struct timespec *t, uint64_t ns)
{
    clock_gettime(CLOCK_MONOTONIC, t);
    ns += (uint64_t)t->tv_nsec;
    t->tv_sec += (time_t)(ns / 1000000000u);
    t->tv_nsec = (long)(ns % 1000000000u);
}

int zp__cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0)
        return ZP_ENOMEM;
    int rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC) == 0 &&
                     pthread_cond_init(c, &a) == 0
                 ? 0
                 : ZP_ENOMEM;
    pthread_condattr_destroy(&a);
    return rc;
}

void zp__call_init(zp_call *c, zp__worker *w)
{
    memset(c, 0, sizeof *c);
    c->w = w;
    c->def = w->stage->def;
    const zp_opts *o = &c->def->opts;
    c->parked = w->stage->ordered || o->retries > 0 || o->on_error == ZP_SKIP;
    msgpack_sbuffer_init(&c->buf);
    msgpack_packer_init(&c->pk, &c->buf, msgpack_sbuffer_write);
}

void zp__call_fini(zp_call *c)
{
    msgpack_sbuffer_destroy(&c->buf);
    free(c->ends);
    free(c->error);
    c->ends = NULL;
    c->error = NULL;
}

void zp__call_drop(zp_call *c)
{
    c->buf.size = 0;
    c->emitted = 0;
    c->total = 0;
}

void zp__call_begin(zp_call *c, const msgpack_object *input, uint64_t index)
{
    c->input = input;
    c->index = index;
    c->failed = false;
    c->broken = false;
    free(c->error);
    c->error = NULL;
    zp__call_drop(c);
}

const zp__stage_def *zp__call_stage(zp_call *c)
{
    return c->def;
}

zp__runctl *zp__call_run(zp_call *c)
{
    return c->w->stage->run;
}

const msgpack_object *zp_input(zp_call *c)
{
    return c->input;
}

uint64_t zp_index(zp_call *c)
{
    return c->index;
}

const msgpack_object *zp_bound(zp_call *c)
{
    return zp__stage_bound(c->def);
}

void *zp_user(zp_call *c)
{
    return c->def->opts.user;
}

bool zp_next(zp_call *c, const msgpack_object **item)
{
    zp__worker *w = c->w;
    if (w->rx == NULL || !c->def->opts.join)
        return false;
    int rc = zp__rx_next(w->rx, false, item, &c->index);
    if (rc == ZP__AGAIN && zp__worker_flush(w) == 0)
        rc = zp__rx_next(w->rx, true, item, &c->index);
    if (rc == 1) {
        atomic_store_explicit(&w->stats.in, w->stats.in + 1,
                              memory_order_relaxed);
        return true;
    }
    if (rc < 0 && rc != ZP_ECANCELED && rc != ZP__AGAIN)
        w->stage->run->fail(w->stage->run, rc,
                            zp__strdupf("task '%s': reading its input: %s",
                                        c->def->name, zp_strerror(rc)));
    return false;
}

msgpack_packer *zp_out(zp_call *c)
{
    return c->parked ? &c->pk : zp__tx_packer(c->w->tx);
}

static int fail_rule(zp_call *c, const char *fmt, ...) ZP__PRINTF(2, 3);
static int fail_rule(zp_call *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(c->error);
    c->error = zp__vstrdupf(fmt, ap);
    va_end(ap);
    c->failed = true;
    c->broken = true;
    return ZP_ETASK;
}

/* Records the end of a parked output. */
static int park(zp_call *c)
{
    size_t prev = c->emitted > 1 ? c->ends[c->emitted - 2] : 0;
    if (c->buf.size == prev) {
        c->emitted--;
        c->total--;
        return fail_rule(c, "zp_emit() called with no value packed");
    }
    if (c->emitted > c->ends_cap) {
        size_t cap = c->ends_cap ? c->ends_cap * 2 : 8;
        size_t *e = realloc(c->ends, cap * sizeof *e);
        if (e == NULL)
            return fail_rule(c, "out of memory");
        c->ends = e;
        c->ends_cap = cap;
    }
    c->ends[c->emitted - 1] = c->buf.size;
    return 0;
}

static void discard(zp_call *c)
{
    if (c->parked)
        c->buf.size = c->emitted ? c->ends[c->emitted - 1] : 0;
    else
        zp__tx_discard(c->w->tx);
}

static int send_direct(zp_call *c)
{
    zp__worker *w = c->w;
    int rc = zp__tx_commit(w->tx);
    if (rc == ZP_EINVAL) {
        c->emitted--;
        c->total--;
        return fail_rule(c, "zp_emit() called with no value packed");
    }
    atomic_store_explicit(&w->stats.out, w->stats.out + 1,
                          memory_order_relaxed);
    /* A long call (first or join task) is paced per output. */
    if (rc == 0 && (w->rx == NULL || c->def->opts.join))
        rc = zp__worker_pace(w);
    return rc;
}

int zp_emit(zp_call *c)
{
    if (atomic_load_explicit(&c->w->stage->run->stop, memory_order_relaxed)) {
        discard(c);
        return ZP_ECANCELED;
    }
    if (!c->def->opts.branch && c->total > 0) {
        discard(c);
        return fail_rule(c, "emitted a second output, but it is not a "
                            "branch task (use .branch = true)");
    }
    c->total++;
    c->emitted++;
    if (!c->parked)
        return send_direct(c);
    int rc = park(c);
    return rc == 0 && c->async ? zp__async_emitted(c) : rc;
}

int zp_emit_int(zp_call *c, int64_t v)
{
    msgpack_pack_int64(zp_out(c), v);
    return zp_emit(c);
}

int zp_emit_uint(zp_call *c, uint64_t v)
{
    msgpack_pack_uint64(zp_out(c), v);
    return zp_emit(c);
}

int zp_emit_double(zp_call *c, double v)
{
    msgpack_pack_double(zp_out(c), v);
    return zp_emit(c);
}

int zp_emit_bool(zp_call *c, bool v)
{
    if (v)
        msgpack_pack_true(zp_out(c));
    else
        msgpack_pack_false(zp_out(c));
    return zp_emit(c);
}

int zp_emit_str(zp_call *c, const char *s)
{
    msgpack_pack_str_with_body(zp_out(c), s, strlen(s));
    return zp_emit(c);
}

int zp_emit_obj(zp_call *c, const msgpack_object *o)
{
    msgpack_pack_object(zp_out(c), *o);
    return zp_emit(c);
}

int zp_emit_nil(zp_call *c)
{
    msgpack_pack_nil(zp_out(c));
    return zp_emit(c);
}

int zp_fail(zp_call *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = zp__vstrdupf(fmt, ap);
    va_end(ap);
    if (!c->broken) {
        free(c->error);
        c->error = msg;
    } else {
        free(msg);
    }
    c->failed = true;
    if (c->async)
        zp__async_end(c);
    return ZP_ETASK;
}

int zp__call_item(zp_call *c, const msgpack_object *item, uint64_t index,
                  uint32_t *retried)
{
    const zp_opts *o = &c->def->opts;
    for (int attempt = 0;; attempt++) {
        zp__call_begin(c, item, index);
        int rc = c->def->fn(c);
        if (rc == 0 && !c->failed)
            return ZP__CALL_OK;
        if (atomic_load(&c->w->stage->run->stop))
            return ZP_ECANCELED;
        if (c->error == NULL)
            c->error = zp__strdupf("it returned %d without calling "
                                   "zp_fail()",
                                   rc);
        if (c->broken || attempt >= o->retries)
            break;
        if (retried != NULL)
            (*retried)++;
    }
    if (!c->broken && o->on_error == ZP_SKIP) {
        zp__call_drop(c);
        return ZP__CALL_SKIPPED;
    }
    return ZP_ETASK;
}

/* Whether the worker's calls are one per item (not the first task's
 * single call, nor a join's). */
static bool per_item(const zp__worker *w)
{
    return w->rx != NULL && !w->stage->def->opts.join;
}

/* Closes the window at time t: its time is busy time, and each of its
 * items took the window's average (a slow worker's windows are one item
 * long, so its items are timed one by one). Returns the window's time. */
static uint64_t close_window(zp__worker *w, uint64_t t)
{
    uint64_t spent = t - w->window_start;
    atomic_store_explicit(&w->stats.busy_ns, w->stats.busy_ns + spent,
                          memory_order_relaxed);
    if (w->window_items > 0 && per_item(w))
        zp__hist_record(&w->stats.hist, spent / w->window_items,
                        w->window_items, spent);
    w->window_start = t;
    return spent;
}

void zp__worker_window_end(zp__worker *w)
{
    close_window(w, zp__now_ns());
    w->window_items = 0;
}

int zp__worker_pace(zp__worker *w)
{
    if (++w->window_items < WINDOW && !w->slow)
        return 0;
    uint64_t spent = close_window(w, zp__now_ns());
    w->slow = spent > (uint64_t)SLOW_NS * w->window_items;
    if (per_item(w))
        zp__edge_set_slow(w->stage->in, w->slow);
    w->window_items = 0;
    return w->slow ? zp__worker_flush(w) : zp__worker_nudge(w);
}
