/* SPDX-License-Identifier: MIT */
/*
 * Dispatchers, see dispatch.h and docs/protocol.md: the loop and the
 * input. One thread per dispatched stage runs a poll loop over the
 * stage's hub (messages from workers) and its input link; it gathers the
 * input into batches for the ledger (ledger.h), hands what the workers
 * say to the inbox (inbox.h), hands waiting batches to the members the worker
 * table picks (roster.h), and runs the timers (supervise.h) every few
 * milliseconds. A worker that dies, stops answering or runs past the timeout
 * loses its batches back to the waiting list; a batch it was running is halved
 * until the item that kills workers is found alone and, after its
 * retries, fails the run or is skipped. It never asks which kind of stage
 * it runs: what a kind does alone, it does in its hooks (dstate.h).
 *
 * At a checkpoint marker (transport/link.h) it stops reading input, and
 * goes on with everything else (workers, heartbeats, supervision, batches
 * run again) until the ledger holds nothing: every item read before the
 * marker is done and its outputs sent. Then it marks its output, passes
 * the marker, and reads on. Nothing is held aside: upstream holds what
 * follows the marker.
 */
#include "coordinator/dispatch.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "coordinator/dstate.h"
#include "coordinator/inbox.h"
#include "coordinator/roster.h"
#include "coordinator/supervise.h"
#include "transport/batch.h"

#define BATCH_MAX 4096                /* items per ITEM message, at most */
#define BATCH_BYTES ((size_t)1 << 20) /* and bytes, but for a single item */
#define FAST_ITEM_NS (200 * 1000ull)  /* faster items travel in batches */
#define POLL_MS 100
#define CHECK_NS (5 * ZP__NS_PER_MS) /* supervision, at most this often */

/* ---- Sending work ------------------------------------------------------- */

static void dispatch_waiting(zp__dispatch *d)
{
    dbatch *b;
    while ((b = zp__ledger_first(&d->ledger)) != NULL && !stopping(d)) {
        zp__member *w = zp__roster_pick(d, b);
        if (w == NULL)
            return;
        int64_t r = zp__roster_room(d, w);
        if ((int64_t)b->n > r &&
            (b = zp__ledger_cut(&d->ledger, b, (uint32_t)r)) == NULL) {
            fail_run(d, zp__strdupf("task '%s': out of memory", task(d)));
            return;
        }
        zp__ledger_dequeue(&d->ledger);
        if (zp__roster_give(d, w, b) != 0) {
            zp__ledger_enqueue(&d->ledger, b, true);
            zp__roster_lose(d, w, NULL); /* unreachable: it left */
        }
    }
}

/* ---- Reading input ------------------------------------------------------ */

static bool fast(const zp__dispatch *d)
{
    return d->roster.item_ns > 0 && d->roster.item_ns < FAST_ITEM_NS;
}

static void close_fill(zp__dispatch *d)
{
    if (d->fill_n == 0)
        return;
    if (zp__ledger_add(&d->ledger, d->fill_seq, d->fill_n, d->fill.data,
                       d->fill.size) != 0)
        fail_run(d, zp__strdupf("task '%s': out of memory", task(d)));
    msgpack_sbuffer_clear(&d->fill);
    d->fill_n = 0;
}

/* Whether items go out in batches: fast ones with no timeout to watch. */
static bool batched(const zp__dispatch *d)
{
    return fast(d) && d->cfg.def->opts.timeout_ms == 0;
}

/* Adds n items, from index seq, to the batch being gathered. */
static void add_items(zp__dispatch *d, const char *raw, size_t len, uint32_t n,
                      uint64_t seq)
{
    uint32_t max = batched(d) ? BATCH_MAX : 1;
    if (len > ZP__PROTO_MAX_BATCH - ZP__BATCH_HEADER_MAX) {
        fail_run(d, zp__strdupf("task '%s': item %llu takes %zu bytes, more "
                                "than a message to a worker holds (%zu)",
                                task(d), (unsigned long long)seq, len,
                                ZP__PROTO_MAX_BATCH - ZP__BATCH_HEADER_MAX));
        return;
    }
    if (d->fill_n > 0 &&
        (seq != d->fill_seq + d->fill_n || d->fill_n + n > max ||
         d->fill.size + len > BATCH_BYTES))
        close_fill(d);
    if (d->fill_n == 0)
        d->fill_seq = seq;
    msgpack_sbuffer_write(&d->fill, raw, len);
    zp__count(&d->stats.in, n);
    d->fill_n += n;
    if (d->fill_n >= max || d->fill.size >= BATCH_BYTES)
        close_fill(d);
}

/*
 * Room for more input, in *items and *bytes waiting: what the workers can
 * take now (twice that for fast items, which wait in batches), and two
 * full batches' bytes per worker. While items are slow, or not timed yet,
 * each travels alone and no more than the workers' windows wait. Looks at
 * every worker: once per turn of the loop, which takes every message that
 * arrived meanwhile, so that a busier dispatcher pays it more rarely.
 */
static void input_room(const zp__dispatch *d, int64_t *items, size_t *bytes)
{
    bool alone = !fast(d) && d->cfg.def->afn == NULL;
    size_t serving;
    int64_t want = (alone ? 1 : BATCH_MAX) + zp__roster_total_room(d, &serving);
    *bytes = 2 * BATCH_BYTES * (serving + 1);
    *items = alone ? want : 2 * want;
}

/* No input comes for now: all was read, or a marker waits to be passed
 * on. */
static bool input_paused(const zp__dispatch *d)
{
    return d->ended || d->marked;
}

static bool room_for_input(const zp__dispatch *d, int64_t items, size_t bytes)
{
    return !input_paused(d) && d->ledger.waiting_bytes < bytes &&
           (int64_t)d->ledger.nwaiting < items;
}

static bool want_input(const zp__dispatch *d)
{
    int64_t items;
    size_t bytes;
    input_room(d, &items, &bytes);
    return room_for_input(d, items, bytes);
}

static void read_input(zp__dispatch *d)
{
    zp__rx *rx = d->cfg.in->rx[0];
    const msgpack_object *o;
    const char *raw;
    size_t len;
    uint32_t n = 1;
    uint64_t seq;
    int64_t items;
    size_t bytes;
    int rc = 1;
    assert(!d->marked);            /* no input between a marker and its pass */
    input_room(d, &items, &bytes); /* once: it looks at every worker */
    /* Batched items are taken as they came, a batch at a time; others
     * one by one, each to be sent alone. */
    while (rc == 1 && room_for_input(d, items, bytes)) {
        if (batched(d))
            rc = zp__rx_take(rx, false, BATCH_BYTES, &raw, &len, &n, &seq);
        else if ((rc = zp__rx_next(rx, false, &o, &seq)) == 1)
            zp__rx_raw(rx, &raw, &len);
        if (rc == 1)
            add_items(d, raw, len, n, seq);
    }
    if (rc == 0) {
        d->ended = true;
    } else if (rc == ZP__MARK) {
        d->marked = true;
        d->mark = zp__rx_mark(rx);
    }
    /* A partial batch waits for more only while every worker is busy and
     * more may come: then waiting costs nothing, and the batch grows. */
    if (input_paused(d) || !fast(d) || zp__roster_idle(d))
        close_fill(d);
    if (rc < 0 && rc != ZP__AGAIN && rc != ZP_ECANCELED)
        d->cfg.run->fail(d->cfg.run, rc,
                         zp__strdupf("task '%s': reading its input: %s",
                                     task(d), zp_strerror(rc)));
}

/* The first stage's one item: the run's arguments. */
static void read_args(zp__dispatch *d)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, &d->sb, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *d->cfg.args);
    add_items(d, d->sb.data, d->sb.size, 1, 0);
    msgpack_sbuffer_clear(&d->sb);
    close_fill(d);
    d->ended = true;
}

/* ---- The loop ------------------------------------------------------------ */

static bool finished(const zp__dispatch *d)
{
    return d->ended && zp__ledger_idle(&d->ledger) && d->fill_n == 0;
}

/* A marker waits: once the ledger holds nothing (every item read before
 * it is done, its outputs sent), marks the output and passes. */
static void pass_mark(zp__dispatch *d)
{
    if (d->fill_n > 0 || !zp__ledger_empty(&d->ledger))
        return;
    int rc = zp__tx_mark(d->cfg.out->tx[0], &d->mark);
    zp__rx_pass(d->cfg.in->rx[0]);
    d->marked = false;
    if (rc != 0 && rc != ZP_ECANCELED)
        d->cfg.run->fail(d->cfg.run, rc,
                         zp__strdupf("task '%s': sending a checkpoint "
                                     "marker on: %s",
                                     task(d), zp_strerror(rc)));
}

static void step(zp__dispatch *d, msgpack_zone *zone)
{
    zp__hub_msg hm;
    zp__rx *rx = d->cfg.in ? d->cfg.in->rx[0] : NULL;
    bool want = rx != NULL && want_input(d), ready = false;
    int rc = zp__hub_poll(d->hub, &rx, &want, &ready, rx ? 1 : 0, POLL_MS, &hm);
    /* Everything that arrived meanwhile, up to a bound, before the rest. */
    for (int n = 1; rc == 1; n++) {
        zp__inbox_take(d, &hm, zone);
        rc = n < 1024 ? zp__hub_next(d->hub, &hm) : 0;
    }
    if (ready || (want && !stopping(d)))
        read_input(d);
    uint64_t now = zp__now_ns();
    if (d->fill_n > 0 && (input_paused(d) || zp__roster_idle(d)))
        close_fill(d);
    if (now - d->checked >= CHECK_NS) { /* children, heartbeats, timeouts */
        d->checked = now;
        zp__supervise(d, now);
    }
    dispatch_waiting(d);
    if (d->marked)
        pass_mark(d);
}

static void *dispatch_main(void *arg)
{
    zp__dispatch *d = arg;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (d->kind->begin != NULL)
        d->kind->begin(d);
    if (d->cfg.in == NULL)
        read_args(d);
    if (zone == NULL)
        fail_run(d, zp__strdupf("task '%s': out of memory", task(d)));
    while (zone != NULL && !stopping(d) && !finished(d))
        step(d, zone);
    if (zone != NULL && !stopping(d))
        zp__tx_close(d->cfg.out->tx[0]);
    if (d->kind->end != NULL)
        d->kind->end(d);
    if (zone != NULL)
        msgpack_zone_free(zone);
    return NULL;
}

/* ---- The stage ----------------------------------------------------------- */

zp__dispatch *zp__dispatch_new(size_t size, const zp__stage_ops *ops,
                               const zp__dkind *kind, const zp__stage_cfg *cfg)
{
    assert(size >= sizeof(zp__dispatch));
    zp__hub *hub = cfg->hub;
    zp__dispatch *d = zp__calloc(1, size);
    if (d == NULL) {
        zp__hub_destroy(&hub);
        return NULL;
    }
    d->base.ops = ops;
    d->kind = kind;
    d->cfg = *cfg;
    d->cfg.hub = NULL; /* d->hub owns it */
    d->hub = hub;
    zp__ledger_init(&d->ledger, cfg->out->tx[0], &d->stats,
                    cfg->def->opts.ordered);
    zp__roster_init(&d->roster);
    msgpack_sbuffer_init(&d->sb);
    msgpack_sbuffer_init(&d->fill);
    d->roster.progressed = zp__now_ns();
    if (cfg->in != NULL) /* one consumer: nothing to spread */
        zp__edge_set_slow(cfg->in, false);
    return d;
}

void zp__dispatch_shape(int children, zp__stage_shape *out)
{
    *out = (zp__stage_shape){.senders = 1,
                             .receivers = 1,
                             .io_thread = true,
                             .files = ZP__DISPATCH_HUB_FILES + children};
}

int zp__dispatch_run(zp__dispatch *d, char **why)
{
    assert(d->hub != NULL && !d->started);
    int err = pthread_create(&d->thread, NULL, dispatch_main, d);
    if (err != 0) {
        *why = zp__strdupf("cannot start its dispatcher thread: %s",
                           strerror(err));
        return ZP_EIO;
    }
    d->started = true;
    return 0;
}

void zp__dispatch_stop(zp__stage *s)
{
    zp__edge_wake(((zp__dispatch *)s)->cfg.out);
}

void zp__dispatch_join(zp__stage *s)
{
    zp__dispatch *d = (zp__dispatch *)s;
    if (d->started) {
        pthread_join(d->thread, NULL);
        d->started = false;
    }
}

void zp__dispatch_destroy(zp__stage **sp)
{
    zp__dispatch *d = (zp__dispatch *)*sp;
    if (d == NULL)
        return;
    zp__dispatch_join(&d->base);
    if (d->kind->fini != NULL)
        d->kind->fini(d);
    zp__hub_destroy(&d->hub);
    zp__roster_fini(&d->roster);
    zp__ledger_fini(&d->ledger);
    msgpack_sbuffer_destroy(&d->sb);
    msgpack_sbuffer_destroy(&d->fill);
    free(d);
    *sp = NULL;
}

void zp__dispatch_stats(zp__stage *s, zp_stage_stats *st)
{
    zp__dispatch *d = (zp__dispatch *)s;
    zp__wstats_add(&d->stats, st);
    st->restarts += atomic_load(&d->restarts);
    st->in_flight += atomic_load(&d->ledger.items_out);
    st->peak_in_flight += atomic_load(&d->ledger.items_peak);
    st->workers_alive += atomic_load(&d->roster.alive);
}

zp__tally *zp__dispatch_tally(zp__stage *s)
{
    return &((zp__dispatch *)s)->roster.tally;
}
