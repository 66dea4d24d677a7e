/* SPDX-License-Identifier: MIT */
/*
 * The task-facing API (zp_input, zp_emit, zp_fail...), see call.h. Part of
 * worker. Every function here runs on the thread that owns the call; none
 * takes a lock on the direct path.
 */
#include "worker/call.h"

#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

/* The host of calls that need nothing from theirs. */
static const zp__call_host no_host = {.send = NULL};

/* Whether a call's outputs must wait for its end: a failed attempt that
 * may be retried or skipped leaves none behind, and an ordered stage's
 * outputs wait for their turn. */
static bool holds(const zp__stage_def *def, bool ordered)
{
    return ordered || def->opts.retries > 0 || def->opts.on_error == ZP_SKIP;
}

void zp__call_init(zp_call *c, const zp__stage_def *def, zp__runctl *run,
                   zp__wstats *stats, bool ordered, const zp__call_host *host,
                   msgpack_packer *direct)
{
    c->def = def;
    c->run = run;
    c->stats = stats;
    c->host = host != NULL ? host : &no_host;
    c->async = def->afn != NULL;
    c->hold = holds(def, ordered);
    c->parked = direct == NULL || c->hold;
    c->out = c->parked ? &c->pk : direct;
    /* Direct outputs need the host's send; an async call needs its end. */
    assert(c->parked || (c->host->send != NULL && c->host->discard != NULL));
    assert(!c->async || c->host->end != NULL);
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

int zp__call_flush(zp_call *c)
{
    return c->parked || c->host->flush == NULL ? 0 : c->host->flush(c);
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
    return c->run;
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
    if (c->host->next == NULL || !c->def->opts.join)
        return false;
    int rc = c->host->next(c, item, &c->index);
    if (rc == 1) {
        zp__count(&c->stats->in, 1);
        return true;
    }
    if (rc < 0 && rc != ZP_ECANCELED)
        c->run->fail(c->run, rc,
                     zp__strdupf("task '%s': reading its input: %s",
                                 c->def->name, zp_strerror(rc)));
    return false;
}

msgpack_packer *zp_out(zp_call *c)
{
    return c->out;
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
        size_t *e = zp__realloc(c->ends, cap * sizeof *e);
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
        c->host->discard(c);
}

static int send_direct(zp_call *c)
{
    int rc = c->host->send(c);
    if (rc == ZP_EINVAL) {
        c->emitted--;
        c->total--;
        return fail_rule(c, "zp_emit() called with no value packed");
    }
    return rc;
}

int zp_emit(zp_call *c)
{
    if (atomic_load_explicit(&c->run->stop, memory_order_relaxed)) {
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
    return rc == 0 && c->host->emitted != NULL ? c->host->emitted(c) : rc;
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
        c->host->end(c);
    return ZP_ETASK;
}

void zp_done(zp_call *c)
{
    if (c == NULL)
        return;
    if (!c->async) {
        zp__log(ZP_LOG_WARN,
                "zpipe: zp_done() called by task '%s', which is not an "
                "async task; ignored",
                c->def->name);
        return;
    }
    c->host->end(c);
}

int zp__call_outcome(zp_call *c, int attempts)
{
    const zp_opts *o = &c->def->opts;
    if (!c->failed)
        return ZP__CALL_OK;
    if (!c->broken && attempts <= o->retries)
        return ZP__CALL_RETRY;
    zp__call_drop(c);
    return !c->broken && o->on_error == ZP_SKIP ? ZP__CALL_SKIPPED : ZP_ETASK;
}

int zp__call_item(zp_call *c, const msgpack_object *item, uint64_t index,
                  uint32_t *retried)
{
    for (int attempts = 1;; attempts++) {
        zp__call_begin(c, item, index);
        int rc = c->def->fn(c);
        if (atomic_load(&c->run->stop) && (rc != 0 || c->failed))
            return ZP_ECANCELED;
        if (rc != 0 && c->error == NULL)
            c->error = zp__strdupf("it returned %d without calling "
                                   "zp_fail()",
                                   rc);
        c->failed = c->failed || rc != 0;
        int outcome = zp__call_outcome(c, attempts);
        if (outcome != ZP__CALL_RETRY)
            return outcome;
        if (retried != NULL)
            (*retried)++;
    }
}

void zp__wstats_add(const zp__wstats *w, zp_stage_stats *st)
{
    st->items_in += atomic_load_explicit(&w->in, memory_order_relaxed);
    st->items_out += atomic_load_explicit(&w->out, memory_order_relaxed);
    st->failed += atomic_load_explicit(&w->failed, memory_order_relaxed);
    st->retried += atomic_load_explicit(&w->retried, memory_order_relaxed);
    st->skipped += atomic_load_explicit(&w->skipped, memory_order_relaxed);
    st->busy_ns += atomic_load_explicit(&w->busy_ns, memory_order_relaxed);
    st->in_flight += atomic_load_explicit(&w->in_flight, memory_order_relaxed);
    zp__hist_add_to(&w->hist, st->item_hist, &st->item_hist_ns);
}
