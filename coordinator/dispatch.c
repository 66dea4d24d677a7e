/* SPDX-License-Identifier: MIT */
/*
 * Dispatchers, see dispatch.h and docs/protocol.md: the loop half (the
 * workers' lives are in supervise.c, the shared state in dstate.h). One
 * thread per process or remote stage runs a poll loop over the stage's
 * hub (messages from workers) and its input link; everything else is
 * bookkeeping of three lists of batches (dbatch.h): waiting (to be sent),
 * in flight (sent to a worker, not done) and done but held back (ordered
 * stages, until every earlier batch is done). A worker that dies, stops
 * answering or runs past the timeout loses its batches back to the
 * waiting list; a batch it was running is halved until the item that
 * kills workers is found alone and, after its retries, fails the run or
 * is skipped.
 */
#include "coordinator/dispatch.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "coordinator/dstate.h"
#include "transport/batch.h"
#include "transport/peer.h"
#include "transport/proto.h"

#define BATCH_MAX 4096 /* items per ITEM message, at most */
#define FEW_ITEMS 16   /* a batch of fewer goes to the first worker ready */
#define BATCH_BYTES ((size_t)1 << 20) /* and bytes, but for a single item */
#define FAST_ITEM_NS (200 * 1000ull)  /* faster items travel in batches */
#define QUEUE_MIN_NS (2 * MS)    /* work queued per thread: at least this  */
#define RTT_EPOCH_NS (5000 * MS) /* round trips: the least of two of these */
#define POLL_MS 100
#define CHECK_NS (5 * MS) /* supervision runs this often, at most */

/* ---- Batches ----------------------------------------------------------- */

void zp__dispatch_enqueue(zp__dispatch *d, dbatch *b, bool front)
{
    b->w = NULL;
    d->nwaiting += b->n;
    d->waiting_bytes += b->len;
    if (front)
        zp__queue_push_front(&d->waiting, &b->node);
    else
        zp__queue_push(&d->waiting, &b->node);
}

static dbatch *dequeue(zp__dispatch *d)
{
    dbatch *b = zp__dbatch_of(zp__queue_pop(&d->waiting));
    if (b == NULL)
        return NULL;
    d->nwaiting -= b->n;
    d->waiting_bytes -= b->len;
    return b;
}

/* Appends a batch to the in-flight list, which is oldest first: DONEs
 * mostly come in the order batches were sent, so a search is short. */
static void add_inflight(zp__dispatch *d, dbatch *b)
{
    uint64_t n = atomic_fetch_add(&d->items_out, b->n) + b->n;
    if (n > atomic_load(&d->items_peak))
        atomic_store(&d->items_peak, n); /* written by this thread alone */
    zp__queue_push(&d->inflight, &b->node);
}

/* Unlinks in-flight batch b; prev is the one before it. */
dbatch *zp__dispatch_unlink_inflight(zp__dispatch *d, dbatch *prev, dbatch *b)
{
    atomic_fetch_sub(&d->items_out, b->n);
    zp__queue_unlink(&d->inflight, prev ? &prev->node : NULL, &b->node);
    return b;
}

/* Unlinks and returns the in-flight batch `id` if `w` runs it. */
static dbatch *take_inflight(zp__dispatch *d, uint64_t id, const dworker *w)
{
    dbatch *prev = NULL;
    for (zp__qnode *n = d->inflight.head; n != NULL; n = n->next) {
        dbatch *b = zp__dbatch_of(n);
        if (b->id == id && b->w == w)
            return zp__dispatch_unlink_inflight(d, prev, b);
        prev = b;
    }
    return NULL;
}

/*
 * Splits a suspect batch of several items in two halves, both suspects,
 * queued at the front: the item at fault is found in a crash per halving,
 * and an item is blamed only for a crash while it runs alone.
 */
int zp__dispatch_split(zp__dispatch *d, dbatch *b)
{
    dbatch *half[2];
    int rc = zp__dbatch_split(b, b->n / 2, d->next_id, half);
    if (rc == 0) {
        d->next_id += 2;
        for (int i = 1; i >= 0; i--) {
            half[i]->kills = 1; /* a suspect: it runs alone */
            zp__dispatch_enqueue(d, half[i], true);
        }
    }
    zp__dbatch_free(b);
    return rc;
}

/* ---- Outputs ----------------------------------------------------------- */

/*
 * Sends on a batch of outputs from a worker (framed; empty when there are
 * none), each item checked on the way since a worker's bytes are not
 * trusted, in as few messages as the output link takes. Returns 0,
 * ZP_EPROTO, or an error of the link.
 */
static int send_outputs(zp__dispatch *d, const char *framed, size_t len)
{
    zp__batch_reader rd = {.data = NULL};
    zp__tx *tx = d->cfg.out->tx[0];
    const char *items;
    size_t size;
    int n, rc = len > 0 ? zp__batch_open(&rd, framed, len) : 0;
    while (rc == 0 && len > 0 &&
           (n = zp__batch_skip(&rd, zp__tx_max(tx), SIZE_MAX, &items, &size)) !=
               0) {
        if (n < 0)
            return n;
        zp__count(&d->stats.out, (uint64_t)n);
        rc = zp__tx_send_items(tx, items, size, (uint32_t)n);
    }
    return rc;
}

/* Delivers a done batch: at once, or in input order for ordered stages. */
int zp__dispatch_deliver(zp__dispatch *d, dbatch *b)
{
    int rc = 0;
    if (!d->cfg.def->opts.ordered) {
        rc = send_outputs(d, b->out.data, b->out.size);
        zp__dbatch_free(b);
        return rc;
    }
    zp__dbatch_hold(&d->held, b);
    for (dbatch *first;
         rc == 0 && (first = zp__dbatch_turn(&d->held, d->next_seq)) != NULL;) {
        d->next_seq = first->seq + first->n;
        rc = send_outputs(d, first->out.data, first->out.size);
        zp__dbatch_free(first);
    }
    return rc;
}

/* ---- Messages from workers ---------------------------------------------- */

/* The round trip to a worker: the least seen in this epoch or the last,
 * as queueing at the worker only ever adds to it. */
static uint64_t rtt_of(const dworker *w)
{
    return w->rtt_cur < w->rtt_prev ? w->rtt_cur : w->rtt_prev;
}

static void note_rtt(dworker *w, uint64_t now, uint64_t sample)
{
    if (now - w->rtt_epoch > RTT_EPOCH_NS) {
        w->rtt_prev = w->rtt_cur;
        w->rtt_cur = UINT64_MAX;
        w->rtt_epoch = now;
    }
    if (sample < w->rtt_cur)
        w->rtt_cur = sample;
}

/*
 * A batch is over (DONE or FAIL): its credit comes back, and the task's
 * own time (`busy`, ZP__BUSY_UNSAID from a worker that does not say it)
 * times the stage's items and, taken from the time the batch was out, the
 * round trip to the worker. Latency is not slowness: a worker far away or
 * a busy host makes no item look slow.
 */
static void note_done(zp__dispatch *d, dworker *w, const dbatch *b,
                      uint64_t busy)
{
    uint64_t now = zp__now_ns(), out = now - b->sent, item;
    if (busy != ZP__BUSY_UNSAID) {
        zp__count(&d->stats.busy_ns, busy);
        item = busy / b->n;
        zp__hist_record(&d->stats.hist, item, b->n, busy);
        note_rtt(w, now, out > busy ? out - busy : 0);
    } else { /* since its last DONE when it was busy all along */
        uint64_t since =
            w->inflight > 1 && w->done > b->sent ? w->done : b->sent;
        item = (now - since) / b->n;
    }
    item = item > 0 ? item : 1; /* timed: never "not yet" again */
    d->item_ns = d->item_ns == 0 ? item : (d->item_ns * 3 + item) / 4;
    if (busy != ZP__BUSY_UNSAID)
        d->batch_ns = d->batch_ns == 0 ? busy : (d->batch_ns * 3 + busy) / 4;
    w->done = now;
    zp__tally_count(&d->tally, w->tally, 1);
    w->inflight--;
    w->items -= b->n;
    w->credit += b->n;
    w->granted = w->granted < INT64_MAX / 2 ? w->granted * 2 : INT64_MAX;
    d->progressed = now;
    zp__dispatch_offer(d, w);
}

/*
 * Whether a worker's outputs for batch b keep the rules: well-formed
 * msgpack values, and no more of them than items for a stage that is not
 * a branch (at most one output per item). Checked whole before any of
 * them goes on, so that a batch run again elsewhere delivers each output
 * once. *why says which rule was broken.
 */
static bool outputs_keep_the_rules(const zp__dispatch *d, const dbatch *b,
                                   const char *framed, size_t len,
                                   const char **why)
{
    zp__batch_reader rd = {.data = NULL};
    const char *items;
    size_t size;
    int n = 0;
    if (len > 0 &&
        (zp__batch_open(&rd, framed, len) != 0 ||
         (n = zp__batch_skip(&rd, UINT32_MAX, SIZE_MAX, &items, &size)) < 0 ||
         rd.left > 0)) {
        *why = "malformed outputs";
        return false;
    }
    if (!d->cfg.def->opts.branch && (uint64_t)n > b->n) {
        *why = "more outputs than items, for a task that is not a branch";
        return false;
    }
    return true;
}

static void on_done(zp__dispatch *d, dworker *w, const zp__msg *m)
{
    static zp__ratelog ignored = ZP__RATELOG_INIT;
    const char *why = NULL;
    dbatch *b = take_inflight(d, m->batch, w);
    if (b == NULL) {
        /* Not (or no longer) this worker's: it was given up on, and its
         * batches run elsewhere. */
        zp__ratelog_say(&ignored, "task '%s': ignored a late %s for batch %llu",
                        task(d), zp__msg_type_name(m->type),
                        (unsigned long long)m->batch);
        return;
    }
    /* The common case, a whole batch's outputs in its DONE for an
     * unordered stage, goes straight on once checked. */
    bool direct =
        m->type == ZP__DONE && b->out.size == 0 && !d->cfg.def->opts.ordered;
    if (direct)
        outputs_keep_the_rules(d, b, m->data, m->data_len, &why);
    else if (zp__dbatch_gather(b, m->data, m->data_len) != 0)
        why = "malformed outputs";
    else
        outputs_keep_the_rules(d, b, b->out.data, b->out.size, &why);
    if (why != NULL) { /* back in flight, to be given up with its worker */
        add_inflight(d, b);
        zp__dispatch_drop_worker(d, w, why);
        return;
    }
    if (m->type == ZP__OUT) { /* more to come: back in flight */
        add_inflight(d, b);
        return;
    }
    note_done(d, w, b, m->busy);
    w->suspect = false;
    zp__count(&d->stats.retried, m->retried);
    zp__count(&d->stats.skipped, m->skipped);
    zp__count(&d->stats.failed, m->skipped);
    int rc = direct ? send_outputs(d, m->data, m->data_len)
                    : zp__dispatch_deliver(d, b);
    if (rc != 0 && !stopping(d))
        fail_run(d, zp__strdupf("task '%s': cannot send outputs on", task(d)));
    if (direct)
        zp__dbatch_free(b);
}

static void on_fail(zp__dispatch *d, dworker *w, const zp__msg *m)
{
    dbatch *b = take_inflight(d, m->batch, w);
    if (b == NULL)
        return;
    if (m->seq < b->seq || m->seq - b->seq >= b->n) {
        add_inflight(d, b); /* given up with its worker, run elsewhere */
        zp__dispatch_drop_worker(d, w,
                                 "a FAIL naming an item not in its "
                                 "batch");
        return;
    }
    note_done(d, w, b, m->busy);
    w->suspect = false;
    zp__count(&d->stats.failed, 1);
    fail_run(d,
             zp__strdupf("task '%s' failed on item %llu: %.*s", task(d),
                         (unsigned long long)m->seq, (int)m->str_len, m->str));
    zp__dbatch_free(b);
}

/* Asks a worker the stage does not know (or gave up on) to say HELLO:
 * one of an earlier run, of a coordinator that restarted, or back from a
 * pause or a partition. */
static void ask_hello(zp__dispatch *d, const zp__hub_msg *hm)
{
    if (zp__msg_hello(&d->sb, "coordinator", (uint32_t)getpid(), 1, NULL, 0,
                      NULL) == 0)
        zp__hub_send(d->hub, hm->id, hm->id_len, d->sb.data, d->sb.size);
    msgpack_sbuffer_clear(&d->sb);
}

static void on_message(zp__dispatch *d, const zp__hub_msg *hm,
                       msgpack_zone *zone)
{
    static zp__ratelog dropped = ZP__RATELOG_INIT;
    zp__msg m;
    const char *why = NULL;
    msgpack_zone_clear(zone);
    dworker *w = zp__dispatch_find_worker(d, hm->id, hm->id_len);
    if (zp__msg_decode(hm->body, hm->len, zone, &m, &why) != 0) {
        if (w != NULL && !w->gone)
            zp__dispatch_drop_worker(d, w, why);
        else
            zp__ratelog_say(&dropped, "task '%s': dropped a message: %s",
                            task(d), why);
        return;
    }
    if (m.type == ZP__HELLO) {
        zp__dispatch_on_hello(d, hm, &m);
        return;
    }
    if (w == NULL || w->gone) { /* whatever it sends is void till HELLO */
        ask_hello(d, hm);
        return;
    }
    w->heard = zp__now_ns();
    bool about_batch =
        m.type == ZP__OUT || m.type == ZP__DONE || m.type == ZP__FAIL;
    if (about_batch && (m.run != d->cfg.run_id || m.stage != d->cfg.index)) {
        zp__dispatch_drop_worker(d, w,
                                 "a message naming another run or "
                                 "stage");
        return;
    }
    if (m.type == ZP__READY) {
        w->credit += m.credit;
        zp__dispatch_offer(d, w);
    } else if (m.type == ZP__OUT || m.type == ZP__DONE)
        on_done(d, w, &m);
    else if (m.type == ZP__FAIL)
        on_fail(d, w, &m);
    else if (m.type == ZP__BYE)
        zp__dispatch_lose_worker(d, w, NULL);
    else if (m.type != ZP__HEARTBEAT)
        zp__dispatch_drop_worker(d, w, "a message a worker may not send");
}

/* ---- Sending work ------------------------------------------------------- */

static bool fast(const zp__dispatch *d)
{
    return d->item_ns > 0 && d->item_ns < FAST_ITEM_NS;
}

/*
 * Items a worker may hold, running or queued: what it runs at once, and
 * for each of its threads enough more to cover a round trip (at least
 * QUEUE_MIN_NS of work), so that it never waits for its next items, but
 * no more, so that slow items spread over the workers. Items not timed
 * yet travel one more than it runs at once. An async task's worker takes
 * all its credit allows: its calls wait together.
 */
static int64_t full_window(const zp__dispatch *d, const dworker *w)
{
    if (d->cfg.def->afn != NULL)
        return w->credit + (int64_t)w->items;
    if (d->item_ns == 0)
        return (int64_t)w->threads + 1;
    uint64_t cover = rtt_of(w);
    if (cover == UINT64_MAX || cover < QUEUE_MIN_NS)
        cover = QUEUE_MIN_NS;
    uint64_t per_thread = 1 + (cover + d->item_ns - 1) / d->item_ns;
    uint64_t items = per_thread * w->threads;
    return items < (uint64_t)INT64_MAX ? (int64_t)items : INT64_MAX;
}

/* A worker's window, less while it is new: it earns the rest, twice as
 * much with each batch it returns, as TCP's slow start does, so that a
 * worker that takes items and keeps them holds few. */
static int64_t window(const zp__dispatch *d, const dworker *w)
{
    int64_t full = full_window(d, w);
    return full < w->granted ? full : w->granted;
}

/* Items a worker can take now: within its window and its credit. */
static int64_t room(const zp__dispatch *d, const dworker *w)
{
    int64_t r = window(d, w) - (int64_t)w->items;
    return r < w->credit ? r : w->credit;
}

void zp__dispatch_offer(zp__dispatch *d, dworker *w)
{
    if (w->queued)
        return;
    zp__queue_push(&d->ready, &w->ready);
    w->queued = true;
    d->nready++;
}

void zp__dispatch_unready(zp__dispatch *d, dworker *w)
{
    zp__qnode *prev = NULL;
    for (zp__qnode *n = d->ready.head; w->queued && n != NULL; n = n->next) {
        if (n == &w->ready) {
            zp__queue_unlink(&d->ready, prev, n);
            w->queued = false;
            d->nready--;
        }
        prev = n;
    }
}

static dworker *pop_ready(zp__dispatch *d)
{
    zp__qnode *n = zp__queue_pop(&d->ready);
    if (n == NULL)
        return NULL;
    dworker *w = zp__container_of(n, dworker, ready);
    w->queued = false;
    d->nready--;
    return w;
}

static bool can_serve(const dworker *w)
{
    return !w->gone && !w->death && w->has_task && !w->suspect;
}

/* The worker with the most room, or NULL; only idle ones for `alone`. */
static dworker *most_room(zp__dispatch *d, bool alone)
{
    dworker *best = NULL;
    int64_t most = 0;
    for (size_t i = 0; i < d->nworkers; i++) {
        dworker *w = d->workers[i];
        if (!can_serve(w) || (alone && w->inflight > 0))
            continue;
        int64_t r = room(d, w);
        if (r > most) {
            best = w;
            most = r;
        }
    }
    return best;
}

/* Whether worker w takes batch b now, whole or in part: a batch larger
 * than its room goes in parts if it would run dry without it (it holds
 * fewer items than the batch) or has room for half of it; else it waits,
 * so that batches keep their size (parts cut to whatever room each DONE
 * leaves would grow ever smaller, and cost more messages). */
static bool takes(const zp__dispatch *d, const dworker *w, const dbatch *b)
{
    int64_t r = room(d, w);
    return r >= (int64_t)b->n || w->items < b->n || 2 * r >= (int64_t)b->n;
}

/*
 * The worker that should take batch b (or its first part), or NULL.
 * - A suspect (a batch that was running when a worker crashed) runs alone
 *   on an idle worker, so that if it crashes again there is no doubt which
 *   item did it. Rare enough to look at every worker.
 * - A batch of many items goes to the worker with the most room, which
 *   keeps the workers' queues level; looking at every worker costs little
 *   for each of its items.
 * - Items that travel few at a time (slow ones, or any in a stage with a
 *   timeout) go to the first worker in the ready queue with room, in
 *   constant time however many workers there are: a worker leaves the
 *   queue when it has no room, until its next DONE or READY.
 */
static dworker *pick_worker(zp__dispatch *d, const dbatch *b)
{
    if (b->kills > 0)
        return most_room(d, true);
    if (b->n >= FEW_ITEMS) {
        dworker *w = most_room(d, false);
        return w != NULL && takes(d, w, b) ? w : NULL;
    }
    for (size_t tries = d->nready; tries > 0; tries--) {
        dworker *w = pop_ready(d);
        if (!can_serve(w) || room(d, w) <= 0)
            continue;
        zp__dispatch_offer(d, w); /* back in line, behind the others */
        if (takes(d, w, b))
            return w;
    }
    return NULL;
}

static int configure(zp__dispatch *d, dworker *w)
{
    const zp__stage_def *def = d->cfg.def;
    const zp_opts *o = &def->opts;
    const msgpack_object *bound = zp__stage_bound(def);
    msgpack_sbuffer bind;
    msgpack_packer pk;
    msgpack_sbuffer_init(&bind);
    msgpack_packer_init(&pk, &bind, msgpack_sbuffer_write);
    if (bound != NULL)
        msgpack_pack_object(&pk, *bound);
    uint32_t flags = (o->branch ? ZP__STAGE_BRANCH : 0) |
                     (o->on_error == ZP_SKIP ? ZP__STAGE_SKIP : 0);
    int rc = zp__msg_stage(&d->sb, d->cfg.run_id, d->cfg.index, def->name,
                           flags, (uint32_t)o->retries, bind.data, bind.size);
    msgpack_sbuffer_destroy(&bind);
    if (rc == 0)
        rc = zp__dispatch_send(d, w);
    w->configured = rc == 0;
    return rc;
}

static int send_batch(zp__dispatch *d, dworker *w, dbatch *b)
{
    int rc = w->configured ? 0 : configure(d, w);
    if (rc == 0)
        rc = zp__msg_item(&d->sb, d->cfg.run_id, d->cfg.index, b->id, b->bytes,
                          b->len);
    if (rc == 0)
        rc = zp__dispatch_send(d, w);
    return rc;
}

/* Cuts the waiting batch b to its first k items, the rest waiting first
 * in line. Returns the first part, or NULL when out of memory. */
static dbatch *cut(zp__dispatch *d, dbatch *b, uint32_t k)
{
    dbatch *part[2];
    if (zp__dbatch_split(b, k, d->next_id, part) != 0) {
        fail_run(d, zp__strdupf("task '%s': out of memory", task(d)));
        return NULL;
    }
    d->next_id += 2;
    part[0]->kills = part[1]->kills = b->kills;
    dequeue(d);
    zp__dbatch_free(b);
    zp__dispatch_enqueue(d, part[1], true);
    zp__dispatch_enqueue(d, part[0], true);
    return part[0];
}

static void dispatch_waiting(zp__dispatch *d)
{
    while (!zp__queue_empty(&d->waiting) && !stopping(d)) {
        dbatch *b = zp__dbatch_of(d->waiting.head);
        dworker *w = pick_worker(d, b);
        if (w == NULL)
            return;
        int64_t r = room(d, w);
        if ((int64_t)b->n > r && (b = cut(d, b, (uint32_t)r)) == NULL)
            return;
        dequeue(d);
        if (send_batch(d, w, b) != 0) {
            zp__dispatch_enqueue(d, b, true);
            zp__dispatch_lose_worker(d, w, NULL); /* unreachable: it left */
            continue;
        }
        b->w = w;
        w->suspect = b->kills > 0;
        b->order = d->sends++;
        b->sent = zp__now_ns();
        if (w->inflight == 0)
            w->busy_since = b->sent;
        w->credit -= b->n;
        w->items += b->n;
        w->inflight++;
        d->progressed = b->sent;
        add_inflight(d, b);
    }
}

/* ---- Reading input ------------------------------------------------------ */

static void close_fill(zp__dispatch *d)
{
    if (d->fill_n == 0)
        return;
    dbatch *b = zp__dbatch_new(d->next_id++, d->fill_seq, d->fill_n,
                               d->fill.data, d->fill.size);
    if (b == NULL)
        fail_run(d, zp__strdupf("task '%s': out of memory", task(d)));
    else
        zp__dispatch_enqueue(d, b, false);
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

/* Whether a worker could take items and has none. */
static bool idle_worker(const zp__dispatch *d)
{
    for (size_t i = 0; i < d->nworkers; i++) {
        const dworker *w = d->workers[i];
        if (!w->gone && !w->death && w->has_task && w->inflight == 0)
            return true;
    }
    return false;
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
    int64_t want = alone ? 1 : BATCH_MAX;
    *bytes = 2 * BATCH_BYTES;
    for (size_t i = 0; i < d->nworkers; i++) {
        const dworker *w = d->workers[i];
        if (!w->gone && w->has_task) {
            int64_t r = room(d, w);
            want += r > 0 ? r : 0;
            *bytes += 2 * BATCH_BYTES;
        }
    }
    *items = alone ? want : 2 * want;
}

static bool room_for_input(const zp__dispatch *d, int64_t items, size_t bytes)
{
    return !d->ended && d->waiting_bytes < bytes &&
           (int64_t)d->nwaiting < items;
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
    /* A partial batch waits for more only while every worker is busy:
     * then waiting costs nothing, and the batch grows. */
    if (d->ended || !fast(d) || idle_worker(d))
        close_fill(d);
    if (rc == 0)
        d->ended = true;
    else if (rc < 0 && rc != ZP__AGAIN && rc != ZP_ECANCELED)
        d->cfg.run->fail(d->cfg.run, rc,
                         zp__strdupf("task '%s': reading its input: %s",
                                     task(d), zp_strerror(rc)));
}

/* ---- The loop ------------------------------------------------------------ */

static bool finished(const zp__dispatch *d)
{
    return d->ended && zp__queue_empty(&d->waiting) &&
           zp__queue_empty(&d->inflight) && d->fill_n == 0;
}

static void step(zp__dispatch *d, msgpack_zone *zone)
{
    zp__hub_msg hm;
    zp__rx *rx = d->cfg.in ? d->cfg.in->rx[0] : NULL;
    bool want = rx != NULL && want_input(d), ready = false;
    int rc = zp__hub_poll(d->hub, &rx, &want, &ready, rx ? 1 : 0, POLL_MS, &hm);
    /* Everything that arrived meanwhile, up to a bound, before the rest. */
    for (int n = 1; rc == 1; n++) {
        on_message(d, &hm, zone);
        rc = n < 1024 ? zp__hub_next(d->hub, &hm) : 0;
    }
    if (ready || (want && !stopping(d)))
        read_input(d);
    uint64_t now = zp__now_ns();
    if (d->fill_n > 0 && (d->ended || idle_worker(d)))
        close_fill(d);
    if (now - d->checked >= CHECK_NS) { /* children, heartbeats, timeouts */
        d->checked = now;
        zp__dispatch_supervise(d, now);
    }
    dispatch_waiting(d);
}

static void say_bye(zp__dispatch *d)
{
    for (size_t i = 0; i < d->nworkers; i++)
        if (!d->workers[i]->gone && zp__msg_bye(&d->sb, "run over") == 0)
            zp__dispatch_send(d, d->workers[i]);
}

static void *dispatch_main(void *arg)
{
    zp__dispatch *d = arg;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    /* Spawned by this thread: a child dies with the thread that spawned
     * it (PR_SET_PDEATHSIG), and this one lasts as long as the stage. */
    for (int i = 0; i < zp__children_count(d->kids) && !stopping(d); i++)
        zp__dispatch_spawn(d, i);
    if (d->cfg.in == NULL) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &d->sb, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, *d->cfg.args);
        add_items(d, d->sb.data, d->sb.size, 1, 0);
        msgpack_sbuffer_clear(&d->sb);
        close_fill(d);
        d->ended = true;
    }
    if (zone == NULL)
        fail_run(d, zp__strdupf("task '%s': out of memory", task(d)));
    while (zone != NULL && !stopping(d) && !finished(d))
        step(d, zone);
    if (zone != NULL && !stopping(d))
        zp__tx_close(d->cfg.out->tx[0]);
    /* Process workers stay only for this run; remote ones for the next,
     * and what they say now concerns the stage no more. */
    if (d->kids != NULL)
        say_bye(d);
    else
        zp__hub_destroy(&d->hub);
    if (zone != NULL)
        msgpack_zone_free(zone);
    return NULL;
}

/* ---- The stage ------------------------------------------------------------
 */

/* Where the process stage's workers connect, malloc'ed into *out. */
static int endpoint_of(const zp__stage_cfg *cfg, char **out, char **why)
{
    const char *dir = NULL;
    if (cfg->run->private_dir(cfg->run, &dir) != 0) {
        *why = zp__strdupf("cannot make a private folder for its "
                           "worker processes: %s",
                           strerror(errno));
        return ZP_EIO;
    }
    *out = zp__strdupf("ipc://%s/s%u", dir, cfg->index);
    return *out != NULL ? 0 : ZP_ENOMEM;
}

/* Binds a process stage's endpoint and makes its children's slots. */
static int set_up_children(zp__dispatch *d, char **why)
{
    const zp__stage_cfg *cfg = &d->cfg;
    char *endpoint = NULL;
    int rc = endpoint_of(cfg, &endpoint, why);
    if (rc != 0)
        return rc;
    d->hub = zp__hub_new(cfg->zctx, endpoint, NULL, NULL, why);
    if (d->hub == NULL)
        rc = ZP_EIO;
    else if ((d->kids = zp__children_new(cfg->def->opts.workers, endpoint)) ==
                 NULL ||
             (d->greeted = zp__calloc((size_t)cfg->def->opts.workers,
                                      sizeof(bool))) == NULL)
        rc = ZP_ENOMEM;
    free(endpoint);
    return rc;
}

/* A process stage binds its own endpoint; remote stages share the run's. */
static int set_up(zp__dispatch *d, char **why)
{
    if (d->cfg.def->opts.mode == ZP_PROCESS)
        return set_up_children(d, why);
    return d->cfg.run->remote_hub(d->cfg.run, d->cfg.index, &d->hub, why);
}

static bool claims(const zp__stage_def *def)
{
    return def->opts.mode != ZP_INPROC;
}

/* Descriptors of a dispatched stage besides its workers' connections: the
 * hub's listener and sockets, its monitor, the ZAP handler's sockets. */
#define HUB_FILES 8

static void shape(const zp__stage_def *def, size_t index, zp__stage_shape *out)
{
    (void)index;
    int children = def->opts.mode == ZP_PROCESS ? def->opts.workers : 0;
    *out = (zp__stage_shape){.senders = 1,
                             .receivers = 1,
                             .io_thread = true,
                             .files = HUB_FILES + children};
}

static int start(const zp__stage_cfg *cfg, zp__stage **out, char **why)
{
    zp__dispatch *d = zp__calloc(1, sizeof *d);
    *out = (zp__stage *)d;
    if (d == NULL)
        return ZP_ENOMEM;
    d->base.ops = &zp__dispatch_stage_ops;
    d->cfg = *cfg;
    zp__tally_init(&d->tally);
    msgpack_sbuffer_init(&d->sb);
    msgpack_sbuffer_init(&d->fill);
    d->no_worker_since = d->progressed = zp__now_ns();
    if (cfg->in != NULL) /* one consumer: nothing to spread */
        zp__edge_set_slow(cfg->in, false);
    int rc = set_up(d, why);
    if (rc != 0)
        return rc;
    int err = pthread_create(&d->thread, NULL, dispatch_main, d);
    if (err != 0) {
        *why = zp__strdupf("cannot start its dispatcher thread: %s",
                           strerror(err));
        return ZP_EIO;
    }
    d->started = true;
    return 0;
}

static void stop(zp__stage *s)
{
    zp__edge_wake(((zp__dispatch *)s)->cfg.out);
}

static void join(zp__stage *s)
{
    zp__dispatch *d = (zp__dispatch *)s;
    if (d->started) {
        pthread_join(d->thread, NULL);
        d->started = false;
    }
}

static void destroy(zp__stage **sp)
{
    zp__dispatch *d = (zp__dispatch *)*sp;
    if (d == NULL)
        return;
    join(&d->base);
    zp__children_destroy(&d->kids);
    free(d->greeted);
    zp__hub_destroy(&d->hub);
    for (size_t i = 0; i < d->nworkers; i++) {
        free(d->workers[i]->death);
        free(d->workers[i]);
    }
    free(d->workers);
    zp__idmap_fini(&d->ids);
    zp__dbatch_free_all(&d->waiting);
    zp__dbatch_free_all(&d->inflight);
    zp__dbatch_free_all(&d->held);
    msgpack_sbuffer_destroy(&d->sb);
    msgpack_sbuffer_destroy(&d->fill);
    zp__tally_fini(&d->tally);
    free(d);
    *sp = NULL;
}

static void stats(zp__stage *s, zp_stage_stats *st)
{
    const zp__dispatch *d = (const zp__dispatch *)s;
    zp__wstats_add(&d->stats, st);
    st->restarts += atomic_load(&d->restarts);
    st->in_flight += atomic_load(&d->items_out);
    st->peak_in_flight += atomic_load(&d->items_peak);
    st->workers_alive += atomic_load(&d->alive);
}

static struct zp__tally *tally(zp__stage *s)
{
    return &((zp__dispatch *)s)->tally;
}

const zp__stage_ops zp__dispatch_stage_ops = {
    .kind = "worker processes",
    .claims = claims,
    .shape = shape,
    .start = start,
    .stop = stop,
    .join = join,
    .stats = stats,
    .destroy = destroy,
    .tally = tally,
};
