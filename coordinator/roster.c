/* SPDX-License-Identifier: MIT */
/*
 * The worker table of a dispatched stage, see roster.h. Part of
 * coordinator; runs on the dispatcher's thread.
 */
#include "coordinator/roster.h"

#include <assert.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

#define FEW_ITEMS 16 /* a batch of fewer goes to the first member ready */
#define QUEUE_MIN_NS \
    (2 * ZP__NS_PER_MS) /* work queued per thread: at least this  */
#define RTT_EPOCH_NS \
    (5000 * ZP__NS_PER_MS) /* round trips: the least of two of these */

void zp__roster_init(zp__roster *r)
{
    *r = (zp__roster){.members = NULL};
    zp__tally_init(&r->tally);
}

void zp__roster_fini(zp__roster *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->members[i]->death);
        free(r->members[i]);
    }
    free(r->members);
    r->members = NULL;
    r->n = 0;
    zp__idmap_fini(&r->ids);
    zp__tally_fini(&r->tally);
}

zp__member *zp__roster_find(zp__dispatch *d, const void *id, size_t len)
{
    return zp__idmap_get(&d->roster.ids, id, len);
}

zp__member *zp__roster_by_pid(zp__dispatch *d, uint32_t pid)
{
    for (size_t i = 0; i < d->roster.n; i++)
        if (!d->roster.members[i]->gone && d->roster.members[i]->pid == pid)
            return d->roster.members[i];
    return NULL;
}

int zp__roster_send(zp__dispatch *d, zp__member *m)
{
    int rc = zp__hub_send(d->hub, m->id, m->id_len, d->sb.data, d->sb.size);
    msgpack_sbuffer_clear(&d->sb);
    return rc;
}

void zp__roster_bye(zp__dispatch *d, const char *why)
{
    for (size_t i = 0; i < d->roster.n; i++)
        if (!d->roster.members[i]->gone && zp__msg_bye(&d->sb, why) == 0)
            zp__roster_send(d, d->roster.members[i]);
}

/* ---- Room ----------------------------------------------------------------
 */

/* The round trip to a member: the least seen in this epoch or the last,
 * as queueing at the worker only ever adds to it. */
static uint64_t rtt_of(const zp__member *m)
{
    return m->rtt_cur < m->rtt_prev ? m->rtt_cur : m->rtt_prev;
}

static void note_rtt(zp__member *m, uint64_t now, uint64_t sample)
{
    if (now - m->rtt_epoch > RTT_EPOCH_NS) {
        m->rtt_prev = m->rtt_cur;
        m->rtt_cur = UINT64_MAX;
        m->rtt_epoch = now;
    }
    if (sample < m->rtt_cur)
        m->rtt_cur = sample;
}

/*
 * Items a member may hold, running or queued: what it runs at once, and
 * for each of its threads enough more to cover a round trip (at least
 * QUEUE_MIN_NS of work), so that it never waits for its next items, but
 * no more, so that slow items spread over the members. Items not timed
 * yet travel one more than it runs at once. An async task's worker takes
 * all its credit allows: its calls wait together.
 */
static int64_t full_window(const zp__dispatch *d, const zp__member *m)
{
    uint64_t item_ns = d->roster.item_ns;
    if (d->cfg.def->afn != NULL)
        return m->credit + (int64_t)m->items;
    if (item_ns == 0)
        return (int64_t)m->threads + 1;
    uint64_t cover = rtt_of(m);
    if (cover == UINT64_MAX || cover < QUEUE_MIN_NS)
        cover = QUEUE_MIN_NS;
    uint64_t per_thread = 1 + (cover + item_ns - 1) / item_ns;
    uint64_t items = per_thread * m->threads;
    return items < (uint64_t)INT64_MAX ? (int64_t)items : INT64_MAX;
}

/* A member's window, less while it is new: it earns the rest, twice as
 * much with each batch it returns, as TCP's slow start does, so that a
 * worker that takes items and keeps them holds few. */
static int64_t window(const zp__dispatch *d, const zp__member *m)
{
    int64_t full = full_window(d, m);
    return full < m->granted ? full : m->granted;
}

int64_t zp__roster_room(const zp__dispatch *d, const zp__member *m)
{
    int64_t r = window(d, m) - (int64_t)m->items;
    return r < m->credit ? r : m->credit;
}

int64_t zp__roster_total_room(const zp__dispatch *d, size_t *n)
{
    int64_t total = 0;
    *n = 0;
    for (size_t i = 0; i < d->roster.n; i++) {
        const zp__member *m = d->roster.members[i];
        if (!m->gone && m->has_task) {
            int64_t r = zp__roster_room(d, m);
            total += r > 0 ? r : 0;
            (*n)++;
        }
    }
    return total;
}

bool zp__roster_serving(const zp__dispatch *d)
{
    for (size_t i = 0; i < d->roster.n; i++)
        if (!d->roster.members[i]->gone && d->roster.members[i]->has_task)
            return true;
    return false;
}

bool zp__roster_idle(const zp__dispatch *d)
{
    for (size_t i = 0; i < d->roster.n; i++) {
        const zp__member *m = d->roster.members[i];
        if (!m->gone && !m->death && m->has_task && m->inflight == 0)
            return true;
    }
    return false;
}

/* ---- The ready queue -----------------------------------------------------
 */

void zp__roster_offer(zp__dispatch *d, zp__member *m)
{
    if (m->queued)
        return;
    zp__queue_push(&d->roster.ready, &m->ready);
    m->queued = true;
    d->roster.nready++;
}

/* Takes a member out of the ready queue, before it is freed or reset. */
static void unready(zp__dispatch *d, zp__member *m)
{
    zp__qnode *prev = NULL;
    for (zp__qnode *n = d->roster.ready.head; m->queued && n != NULL;
         n = n->next) {
        if (n == &m->ready) {
            zp__queue_unlink(&d->roster.ready, prev, n);
            m->queued = false;
            d->roster.nready--;
        }
        prev = n;
    }
    assert(!m->queued); /* `queued` says whether it is in the queue */
}

static zp__member *pop_ready(zp__dispatch *d)
{
    zp__qnode *n = zp__queue_pop(&d->roster.ready);
    if (n == NULL)
        return NULL;
    zp__member *m = zp__container_of(n, zp__member, ready);
    assert(m->queued && d->roster.nready > 0);
    m->queued = false;
    d->roster.nready--;
    return m;
}

/* ---- Picking a member ----------------------------------------------------
 */

static bool can_serve(const zp__member *m)
{
    return !m->gone && !m->death && m->has_task && !m->suspect;
}

/* The member with the most room, or NULL; only idle ones for `alone`. */
static zp__member *most_room(zp__dispatch *d, bool alone)
{
    zp__member *best = NULL;
    int64_t most = 0;
    for (size_t i = 0; i < d->roster.n; i++) {
        zp__member *m = d->roster.members[i];
        if (!can_serve(m) || (alone && m->inflight > 0))
            continue;
        int64_t r = zp__roster_room(d, m);
        if (r > most) {
            best = m;
            most = r;
        }
    }
    return best;
}

/* Whether member m takes batch b now, whole or in part: a batch larger
 * than its room goes in parts if it would run dry without it (it holds
 * fewer items than the batch) or has room for half of it; else it waits,
 * so that batches keep their size (parts cut to whatever room each DONE
 * leaves would grow ever smaller, and cost more messages). */
static bool takes(const zp__dispatch *d, const zp__member *m, const dbatch *b)
{
    int64_t r = zp__roster_room(d, m);
    return r >= (int64_t)b->n || m->items < b->n || 2 * r >= (int64_t)b->n;
}

/*
 * - A suspect (a batch that was running when a worker crashed) runs alone
 *   on an idle member, so that if it crashes again there is no doubt which
 *   item did it. Rare enough to look at every member.
 * - A batch of many items goes to the member with the most room, which
 *   keeps the members' queues level; looking at every member costs little
 *   for each of its items.
 * - Items that travel few at a time (slow ones, or any in a stage with a
 *   timeout) go to the first member in the ready queue with room, in
 *   constant time however many members there are: a member leaves the
 *   queue when it has no room, until its next DONE or READY.
 */
zp__member *zp__roster_pick(zp__dispatch *d, const dbatch *b)
{
    if (b->kills > 0)
        return most_room(d, true);
    if (b->n >= FEW_ITEMS) {
        zp__member *m = most_room(d, false);
        return m != NULL && takes(d, m, b) ? m : NULL;
    }
    for (size_t tries = d->roster.nready; tries > 0; tries--) {
        zp__member *m = pop_ready(d);
        if (!can_serve(m) || zp__roster_room(d, m) <= 0)
            continue;
        zp__roster_offer(d, m); /* back in line, behind the others */
        if (takes(d, m, b))
            return m;
    }
    return NULL;
}

/* ---- Sending work --------------------------------------------------------
 */

static int configure(zp__dispatch *d, zp__member *m)
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
        rc = zp__roster_send(d, m);
    m->configured = rc == 0;
    return rc;
}

int zp__roster_give(zp__dispatch *d, zp__member *m, dbatch *b)
{
    int rc = m->configured ? 0 : configure(d, m);
    if (rc == 0)
        rc = zp__msg_item(&d->sb, d->cfg.run_id, d->cfg.index, b->id, b->bytes,
                          b->len);
    if (rc == 0)
        rc = zp__roster_send(d, m);
    if (rc != 0)
        return rc;
    b->w = m;
    m->suspect = b->kills > 0;
    b->order = d->ledger.sends++;
    b->sent = zp__now_ns();
    if (m->inflight == 0)
        m->busy_since = b->sent;
    m->credit -= b->n;
    assert(m->credit >= 0); /* a batch is cut to the member's room */
    m->items += b->n;
    m->inflight++;
    d->roster.progressed = b->sent;
    zp__ledger_fly(&d->ledger, b);
    return 0;
}

/*
 * Latency is not slowness: the task's own time, when the worker says it,
 * times the stage's items and, taken from the time the batch was out, the
 * round trip to the member, so that a worker far away or a busy host
 * makes no item look slow.
 */
void zp__roster_done(zp__dispatch *d, zp__member *m, const dbatch *b,
                     uint64_t busy)
{
    zp__roster *r = &d->roster;
    uint64_t now = zp__now_ns(), out = now - b->sent, item;
    if (busy != ZP__BUSY_UNSAID) {
        zp__count(&d->stats.busy_ns, busy);
        item = busy / b->n;
        zp__hist_record(&d->stats.hist, item, b->n, busy);
        note_rtt(m, now, out > busy ? out - busy : 0);
    } else { /* since its last DONE when it was busy all along */
        uint64_t since =
            m->inflight > 1 && m->done > b->sent ? m->done : b->sent;
        item = (now - since) / b->n;
    }
    item = item > 0 ? item : 1; /* timed: never "not yet" again */
    r->item_ns = r->item_ns == 0 ? item : (r->item_ns * 3 + item) / 4;
    if (busy != ZP__BUSY_UNSAID)
        r->batch_ns = r->batch_ns == 0 ? busy : (r->batch_ns * 3 + busy) / 4;
    m->done = now;
    zp__tally_count(&r->tally, m->tally, 1);
    assert(m->inflight > 0 && m->items >= b->n); /* b was m's */
    m->inflight--;
    m->items -= b->n;
    m->credit += b->n;
    m->granted = m->granted < INT64_MAX / 2 ? m->granted * 2 : INT64_MAX;
    r->progressed = now;
    zp__roster_offer(d, m);
}

/* ---- Joining and leaving -------------------------------------------------
 */

/* Counts the members that can take items, for the statistics. */
static void note_members(zp__dispatch *d)
{
    int alive = 0;
    for (size_t i = 0; i < d->roster.n; i++)
        alive += !d->roster.members[i]->gone && d->roster.members[i]->has_task;
    atomic_store(&d->roster.alive, alive);
}

/* A new member of routing id hm->id, in the table; NULL when out of
 * memory or the id is too long. */
static zp__member *add_member(zp__dispatch *d, const zp__hub_msg *hm)
{
    zp__roster *r = &d->roster;
    zp__member **v = zp__realloc(r->members, (r->n + 1) * sizeof *v);
    zp__member *m = v ? zp__calloc(1, sizeof *m) : NULL;
    if (v != NULL)
        r->members = v;
    if (m == NULL || hm->id_len > sizeof m->id) {
        free(m);
        return NULL;
    }
    memcpy(m->id, hm->id, hm->id_len);
    m->id_len = hm->id_len;
    if (zp__idmap_put(&r->ids, m->id, m->id_len, m) != 0) {
        free(m);
        return NULL;
    }
    r->members[r->n++] = m;
    return m;
}

/* Starts member m afresh as the worker that said HELLO (hm, msg). */
static void reset_member(zp__dispatch *d, zp__member *m, const zp__hub_msg *hm,
                         const zp__msg *msg)
{
    /* A claim of capacity is believed up to MAX_THREADS threads; the items
     * it is trusted with grow as it returns them (slow start). */
    uint32_t threads = msg->credit / ZP__PROTO_CREDIT_PER_THREAD;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    uint32_t credit = msg->credit;
    if (credit > (uint32_t)MAX_THREADS * ZP__PROTO_CREDIT_PER_THREAD)
        credit = (uint32_t)MAX_THREADS * ZP__PROTO_CREDIT_PER_THREAD;
    free(m->death);
    unready(d, m);
    *m = (zp__member){.id_len = m->id_len,
                      .pid = msg->pid,
                      .credit = credit,
                      .threads = threads,
                      .granted =
                          (threads < NEW_THREADS ? threads : NEW_THREADS) + 1,
                      .rtt_cur = UINT64_MAX,
                      .rtt_prev = UINT64_MAX,
                      .rtt_epoch = zp__now_ns(),
                      .has_task = zp__msg_serves(msg, task(d), pool(d))};
    memcpy(m->id, hm->id, hm->id_len);
    m->tally =
        zp__tally_join(&d->roster.tally, msg->str, msg->str_len, zp__now_ns());
    size_t n =
        msg->str_len < sizeof m->name - 1 ? msg->str_len : sizeof m->name - 1;
    for (size_t i = 0; i < n; i++)
        m->name[i] = isprint((unsigned char)msg->str[i]) ? msg->str[i] : '?';
    m->heard = m->beat = zp__now_ns();
}

void zp__roster_hello(zp__dispatch *d, const zp__hub_msg *hm,
                      const zp__msg *msg)
{
    zp__member *m = zp__roster_find(d, hm->id, hm->id_len);
    if (m != NULL && !m->gone && m->pid == msg->pid) {
        /* The same process again, answering a HELLO of ours sent before
         * its first arrived: it lost nothing. */
        m->heard = zp__now_ns();
        return;
    }
    if (m != NULL && !m->gone)
        zp__roster_lose(d, m, NULL); /* another process on that link */
    if (m == NULL && (m = add_member(d, hm)) == NULL)
        return;
    reset_member(d, m, hm, msg);
    if (d->kind->joined != NULL)
        d->kind->joined(d, m);
    note_members(d);
    zp__roster_offer(d, m);
}

/* A batch that was running when its worker crashed: split if it holds
 * several items (one of them is the culprit), run again, or — an item
 * that crashed workers more than retries + 1 times — fail or skip. */
static void blame(zp__dispatch *d, dbatch *b, const char *why)
{
    const zp_opts *o = &d->cfg.def->opts;
    if (b->n > 1) {
        if (zp__ledger_split(&d->ledger, b) != 0)
            fail_run(d, zp__strdupf("task '%s': out of memory", task(d)));
    } else if (++b->kills <= (uint32_t)o->retries + 1) {
        zp__count(&d->stats.retried, 1);
        zp__ledger_enqueue(&d->ledger, b, true);
    } else if (o->on_error == ZP_SKIP) {
        zp__count(&d->stats.failed, 1);
        zp__count(&d->stats.skipped, 1);
        zp__ledger_deliver(&d->ledger, b);
    } else {
        zp__count(&d->stats.failed, 1);
        fail_run(d, zp__strdupf("task '%s' failed on item %llu: %s", task(d),
                                (unsigned long long)b->seq, why));
        zp__dbatch_free(b);
    }
}

/* Those of its batches still waiting in its queue are not blamed; a
 * member that left or stopped answering blames none: nothing says its
 * items were at fault. */
void zp__roster_lose(zp__dispatch *d, zp__member *m, char *why)
{
    zp__queue mine = {NULL, NULL};
    zp__ledger_recall(&d->ledger, m, m->threads, why != NULL, &mine);
    m->gone = true;
    zp__tally_leave(&d->roster.tally, m->tally, zp__now_ns());
    m->tally = -1;
    note_members(d);
    for (dbatch *b; (b = zp__dbatch_of(zp__queue_pop(&mine))) != NULL;)
        if (b->blamed)
            blame(d, b, why);
        else
            zp__ledger_enqueue(&d->ledger, b, true);
    free(why);
}

void zp__roster_kill(zp__dispatch *d, zp__member *m, char *why)
{
    if (d->kind->kill != NULL)
        d->kind->kill(d, m);
    zp__roster_lose(d, m, why);
}

void zp__roster_drop(zp__dispatch *d, zp__member *m, const char *rule)
{
    static zp__ratelog broke = ZP__RATELOG_INIT;
    zp__ratelog_say(&broke,
                    "task '%s': dropped worker %s (pid %u), which broke the "
                    "protocol: %s; its items run elsewhere",
                    task(d), m->name, m->pid, rule);
    zp__roster_kill(d, m, NULL);
}

void zp__roster_sweep(zp__dispatch *d)
{
    zp__roster *r = &d->roster;
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        zp__member *m = r->members[i];
        if (m->gone && m->death == NULL) {
            unready(d, m);
            zp__idmap_del(&r->ids, m->id, m->id_len);
            free(m);
        } else
            r->members[k++] = m;
    }
    r->n = k;
}
