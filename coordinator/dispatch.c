/* SPDX-License-Identifier: MIT */
/*
 * Dispatchers, see dispatch.h and docs/protocol.md. One thread per
 * process or remote stage runs a poll loop over the stage's hub (messages
 * from workers) and its input link; everything else is bookkeeping of
 * three lists of batches: waiting (to be sent), in flight (sent to a
 * worker, not done) and done but held back (ordered stages, until every
 * earlier batch is done). A worker that dies, stops answering or runs past
 * the timeout loses its batches back to the waiting list; a batch whose
 * worker died is split into single items, so that an item that kills
 * workers is found and, after its retries, fails the run or is skipped.
 */
#include "coordinator/dispatch.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coordinator/tally.h"
#include "core/error.h"
#include "transport/batch.h"
#include "transport/peer.h"
#include "transport/proto.h"
#include "worker/call.h"

#define MS 1000000ull
#define HEARTBEAT_NS (1000 * MS)
#define DEAD_NS (3000 * MS)
#define BATCH_MAX 4096                /* items per ITEM message, at most */
#define BATCH_BYTES ((size_t)1 << 20) /* and bytes, but for a single item */
#define BATCHES_PER_THREAD 4          /* fast batches in flight at a worker */
#define FAST_ITEM_NS (200 * 1000ull)  /* faster items travel in batches */
#define POLL_MS 100
#define CHECK_NS (5 * MS)  /* supervision runs this often, at most */
#define MOURN_NS (50 * MS) /* a dead worker's last words arrive within */
#define MAX_UNBORN 5       /* children dead before HELLO: give up */

extern char **environ;

typedef struct dworker {
    char id[256]; /* routing id */
    size_t id_len;
    uint32_t pid;
    int64_t credit;    /* items it will still accept */
    uint32_t threads;  /* items it runs at once */
    uint32_t inflight; /* batches sent, not done */
    uint64_t heard, beat;
    uint64_t done;   /* when its last batch was done */
    char *death;     /* owned; how its process ended, until mourned */
    bool suspect;    /* runs a suspect batch, alone */
    uint64_t died;   /* when that was seen */
    bool has_task;   /* it announced the stage's task */
    int tally;       /* its slot in the dispatcher's tally, or -1 */
    bool configured; /* STAGE sent */
    bool gone;
} dworker;

typedef struct dbatch {
    struct dbatch *next;
    uint64_t id;
    uint64_t seq; /* index of the first item */
    uint32_t n;   /* items */
    char *bytes;  /* owned; batch framing */
    size_t len;
    dworker *w; /* NULL while waiting */
    uint64_t sent;
    uint32_t kills;      /* workers lost while running it */
    bool blamed;         /* it was running when its worker crashed */
    uint64_t order;      /* when it was sent, as a count of sends */
    msgpack_sbuffer out; /* outputs received so far (OUT), framed */
} dbatch;

struct zp__dispatch {
    zp__dispatch_cfg cfg;
    char *endpoint; /* owned; cfg.endpoint points here */
    zp__hub *hub;
    pthread_t thread;
    bool started;
    dworker **workers; /* owned */
    size_t nworkers;
    dbatch *waiting, *waiting_tail, *inflight, *held; /* owned lists */
    dbatch *inflight_tail;
    size_t nwaiting;      /* items in the waiting list */
    size_t waiting_bytes; /* and their bytes           */
    uint64_t next_id;
    uint64_t next_seq;    /* ordered: the next item index to deliver */
    bool ended;           /* all input read */
    msgpack_sbuffer fill; /* the batch being gathered from input */
    uint32_t fill_n;
    uint64_t fill_seq;
    pid_t *children; /* process mode: one per worker slot, 0 = none */
    bool *greeted;   /* owned; the slot's child said HELLO */
    int unborn;      /* children in a row that died before HELLO */
    int nchildren;
    uint64_t no_worker_since; /* remote: waiting for a worker since */
    uint64_t item_ns;         /* running estimate of an item's time */
    msgpack_sbuffer sb;       /* scratch for encoding */
    uint64_t dropped;         /* messages rejected so far */
    uint64_t checked;         /* when supervision last ran */
    uint64_t sends;           /* batches sent so far */
    zp__wstats stats;
    _Atomic uint64_t restarts;
    _Atomic uint64_t items_out;  /* items in batches sent, not yet done  */
    _Atomic uint64_t items_peak; /* most ever                            */
    _Atomic int alive;           /* workers connected that run the task  */
    zp__tally tally;             /* batches done per worker, by name     */
};

static bool stopping(const zp__dispatch *d)
{
    return atomic_load(&d->cfg.run->stop);
}

static void fail_run(zp__dispatch *d, char *msg)
{
    d->cfg.run->fail(d->cfg.run, ZP_ETASK, msg);
}

static void count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static const char *task(const zp__dispatch *d)
{
    return d->cfg.def->name;
}

/* ---- Batches ----------------------------------------------------------- */

static dbatch *batch_new(zp__dispatch *d, uint64_t seq, uint32_t n,
                         const char *items, size_t len)
{
    char hdr[ZP__BATCH_HEADER_MAX];
    size_t h = zp__batch_header(hdr, seq, n);
    dbatch *b = calloc(1, sizeof *b);
    char *bytes = malloc(h + len);
    if (b == NULL || bytes == NULL) {
        free(b);
        free(bytes);
        return NULL;
    }
    memcpy(bytes, hdr, h);
    memcpy(bytes + h, items, len);
    *b = (dbatch){
        .id = d->next_id++, .seq = seq, .n = n, .bytes = bytes, .len = h + len};
    msgpack_sbuffer_init(&b->out);
    return b;
}

static void batch_free(dbatch *b)
{
    if (b == NULL)
        return;
    msgpack_sbuffer_destroy(&b->out);
    free(b->bytes);
    free(b);
}

static void free_list(dbatch *b)
{
    for (dbatch *next; b != NULL; b = next) {
        next = b->next;
        batch_free(b);
    }
}

static void enqueue(zp__dispatch *d, dbatch *b, bool front)
{
    b->w = NULL;
    d->nwaiting += b->n;
    d->waiting_bytes += b->len;
    if (front) {
        b->next = d->waiting;
        d->waiting = b;
        if (d->waiting_tail == NULL)
            d->waiting_tail = b;
        return;
    }
    b->next = NULL;
    if (d->waiting_tail != NULL)
        d->waiting_tail->next = b;
    else
        d->waiting = b;
    d->waiting_tail = b;
}

static dbatch *dequeue(zp__dispatch *d)
{
    dbatch *b = d->waiting;
    if (b == NULL)
        return NULL;
    d->waiting = b->next;
    if (d->waiting == NULL)
        d->waiting_tail = NULL;
    d->nwaiting -= b->n;
    d->waiting_bytes -= b->len;
    return b;
}

/* Counts the workers that can take items, for the statistics. */
static void note_workers(zp__dispatch *d)
{
    int alive = 0;
    for (size_t i = 0; i < d->nworkers; i++)
        alive += !d->workers[i]->gone && d->workers[i]->has_task;
    atomic_store(&d->alive, alive);
}

/* Appends a batch to the in-flight list, which is oldest first: DONEs
 * mostly come in the order batches were sent, so a search is short. */
static void add_inflight(zp__dispatch *d, dbatch *b)
{
    uint64_t n = atomic_fetch_add(&d->items_out, b->n) + b->n;
    if (n > atomic_load(&d->items_peak))
        atomic_store(&d->items_peak, n); /* written by this thread alone */
    b->next = NULL;
    if (d->inflight_tail != NULL)
        d->inflight_tail->next = b;
    else
        d->inflight = b;
    d->inflight_tail = b;
}

/* Unlinks *p from the in-flight list; prev is the batch before it. */
static dbatch *unlink_inflight(zp__dispatch *d, dbatch **p, dbatch *prev)
{
    dbatch *b = *p;
    atomic_fetch_sub(&d->items_out, b->n);
    *p = b->next;
    if (d->inflight_tail == b)
        d->inflight_tail = prev;
    b->next = NULL;
    return b;
}

/* Unlinks and returns the in-flight batch `id` if `w` runs it. */
static dbatch *take_inflight(zp__dispatch *d, uint64_t id, const dworker *w)
{
    dbatch *prev = NULL;
    for (dbatch **p = &d->inflight; *p != NULL; prev = *p, p = &(*p)->next)
        if ((*p)->id == id && (*p)->w == w)
            return unlink_inflight(d, p, prev);
    return NULL;
}

/*
 * Splits a suspect batch of several items in two halves, both suspects,
 * queued at the front: the item at fault is found in a crash per halving,
 * and an item is blamed only for a crash while it runs alone.
 */
static int split(zp__dispatch *d, dbatch *b)
{
    zp__batch_reader rd = {.data = NULL};
    const char *items[2];
    size_t len[2];
    int n[2] = {0, 0};
    dbatch *half[2] = {NULL, NULL};
    if (zp__batch_open(&rd, b->bytes, b->len) == 0) {
        uint64_t seq = rd.seq;
        n[0] = zp__batch_skip(&rd, b->n / 2, SIZE_MAX, &items[0], &len[0]);
        n[1] = zp__batch_skip(&rd, b->n, SIZE_MAX, &items[1], &len[1]);
        for (int i = 0; i < 2 && n[0] > 0 && n[1] > 0; i++)
            half[i] = batch_new(d, i ? seq + (uint64_t)n[0] : seq,
                                (uint32_t)n[i], items[i], len[i]);
    }
    int rc = half[0] != NULL && half[1] != NULL ? 0 : ZP_ENOMEM;
    for (int i = 1; i >= 0; i--) {
        if (rc != 0) {
            batch_free(half[i]);
            continue;
        }
        half[i]->kills = 1; /* a suspect: it runs alone */
        enqueue(d, half[i], true);
    }
    batch_free(b);
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
        count(&d->stats.out, (uint64_t)n);
        rc = zp__tx_send_items(tx, items, size, (uint32_t)n);
    }
    return rc;
}

/* Delivers a done batch: at once, or in input order for ordered stages. */
static int deliver(zp__dispatch *d, dbatch *b)
{
    int rc = 0;
    if (!d->cfg.def->opts.ordered) {
        rc = send_outputs(d, b->out.data, b->out.size);
        batch_free(b);
        return rc;
    }
    dbatch **p = &d->held; /* kept sorted by seq */
    while (*p != NULL && (*p)->seq < b->seq)
        p = &(*p)->next;
    b->next = *p;
    *p = b;
    while (rc == 0 && d->held != NULL && d->held->seq == d->next_seq) {
        dbatch *first = d->held;
        d->held = first->next;
        d->next_seq = first->seq + first->n;
        rc = send_outputs(d, first->out.data, first->out.size);
        batch_free(first);
    }
    return rc;
}

/* Appends the items of a framed batch (checked) to `items`; counts them. */
static int gather_items(msgpack_sbuffer *items, uint32_t *n, const char *framed,
                        size_t len)
{
    zp__batch_reader rd = {.data = NULL};
    const char *p;
    size_t size;
    int rc = len > 0 ? zp__batch_open(&rd, framed, len) : 0;
    if (rc == 0 && len > 0 &&
        (rc = zp__batch_skip(&rd, UINT32_MAX, SIZE_MAX, &p, &size)) >= 0) {
        *n += (uint32_t)rc;
        rc = msgpack_sbuffer_write(items, p, size) == 0 ? 0 : ZP_ENOMEM;
    }
    return rc;
}

/* Gathers the outputs of an OUT or DONE into the batch (framed anew). */
static int gather(dbatch *b, const zp__msg *m)
{
    msgpack_sbuffer items;
    uint32_t n = 0;
    msgpack_sbuffer_init(&items);
    int rc = gather_items(&items, &n, b->out.data, b->out.size);
    if (rc == 0)
        rc = gather_items(&items, &n, m->data, m->data_len);
    if (rc == 0) {
        char hdr[ZP__BATCH_HEADER_MAX];
        size_t h = zp__batch_header(hdr, 0, n);
        msgpack_sbuffer_clear(&b->out);
        msgpack_sbuffer_write(&b->out, hdr, h);
        msgpack_sbuffer_write(&b->out, items.data, items.size);
    }
    msgpack_sbuffer_destroy(&items);
    return rc;
}

/* ---- Workers ------------------------------------------------------------ */

static int send_body(zp__dispatch *d, dworker *w)
{
    int rc = zp__hub_send(d->hub, w->id, w->id_len, d->sb.data, d->sb.size);
    msgpack_sbuffer_clear(&d->sb);
    return rc;
}

static dworker *find_worker(zp__dispatch *d, const void *id, size_t len)
{
    for (size_t i = 0; i < d->nworkers; i++)
        if (d->workers[i]->id_len == len &&
            memcmp(d->workers[i]->id, id, len) == 0)
            return d->workers[i];
    return NULL;
}

static bool announces(const zp__msg *m, const char *name)
{
    for (uint32_t i = 0; i < m->tasks->via.array.size; i++) {
        const msgpack_object_str *s = &m->tasks->via.array.ptr[i].via.str;
        if (s->size == strlen(name) && memcmp(s->ptr, name, s->size) == 0)
            return true;
    }
    return false;
}

static char *describe_status(uint32_t pid, int status)
{
    if (WIFSIGNALED(status))
        return zp__strdupf("its worker (pid %u) was killed by signal %d "
                           "(SIG%s)",
                           pid, WTERMSIG(status),
                           sigabbrev_np(WTERMSIG(status))
                               ? sigabbrev_np(WTERMSIG(status))
                               : "?");
    return zp__strdupf("its worker (pid %u) exited with status %d", pid,
                       WEXITSTATUS(status));
}

/*
 * Whether batch b was running on its worker, rather than waiting in the
 * worker's queue: a worker runs its batches in the order they were sent,
 * `threads` at a time.
 */
static bool running(const zp__dispatch *d, const dbatch *b)
{
    uint32_t before = 0;
    for (const dbatch *o = d->inflight; o != NULL; o = o->next)
        before += o->w == b->w && o->order < b->order;
    return before < b->w->threads;
}

/* A batch that was running when its worker crashed: split if it holds
 * several items (one of them is the culprit), run again, or — an item
 * that crashed workers more than retries + 1 times — fail or skip. */
static void blame(zp__dispatch *d, dbatch *b, const char *why)
{
    const zp_opts *o = &d->cfg.def->opts;
    if (b->n > 1) {
        if (split(d, b) != 0)
            fail_run(d, zp__strdupf("task '%s': out of memory", task(d)));
    } else if (++b->kills <= (uint32_t)o->retries + 1) {
        count(&d->stats.retried, 1);
        enqueue(d, b, true);
    } else if (o->on_error == ZP_SKIP) {
        count(&d->stats.failed, 1);
        count(&d->stats.skipped, 1);
        deliver(d, b);
    } else {
        count(&d->stats.failed, 1);
        fail_run(d, zp__strdupf("task '%s' failed on item %llu: %s", task(d),
                                (unsigned long long)b->seq, why));
        batch_free(b);
    }
}

/*
 * A worker is gone: its batches go back to the waiting list. With `why`
 * (a crash or a timeout; consumed) the batches it was running are blamed;
 * those still waiting in its queue are not. A worker that left or stopped
 * answering blames none: nothing says its items were at fault.
 */
static void lose_worker(zp__dispatch *d, dworker *w, char *why)
{
    dbatch *mine = NULL, **tail = &mine;
    for (dbatch *b = d->inflight; b != NULL; b = b->next)
        if (b->w == w)
            b->blamed = why != NULL && running(d, b);
    dbatch *prev = NULL;
    for (dbatch **p = &d->inflight; *p != NULL;) {
        if ((*p)->w != w) {
            prev = *p;
            p = &(*p)->next;
            continue;
        }
        dbatch *b = unlink_inflight(d, p, prev); /* to `mine`, oldest first */
        msgpack_sbuffer_clear(&b->out);
        *tail = b;
        tail = &b->next;
    }
    w->gone = true;
    zp__tally_leave(&d->tally, w->tally, zp__now_ns());
    w->tally = -1;
    note_workers(d);
    for (dbatch *b = mine, *next; b != NULL; b = next) {
        next = b->next;
        if (b->blamed)
            blame(d, b, why);
        else
            enqueue(d, b, true);
    }
    free(why);
}

static void on_hello(zp__dispatch *d, const zp__hub_msg *hm, const zp__msg *m)
{
    dworker *w = find_worker(d, hm->id, hm->id_len);
    if (w != NULL && !w->gone && w->pid == m->pid) {
        /* The same process again, answering a HELLO of ours sent before
         * its first arrived: it lost nothing. */
        w->heard = zp__now_ns();
        return;
    }
    if (w != NULL && !w->gone)
        lose_worker(d, w, NULL); /* another process on that link */
    if (w == NULL) {
        dworker **v = realloc(d->workers, (d->nworkers + 1) * sizeof *v);
        w = v ? calloc(1, sizeof *w) : NULL;
        if (w == NULL || hm->id_len > sizeof w->id) {
            free(w);
            if (v != NULL)
                d->workers = v;
            return;
        }
        d->workers = v;
        d->workers[d->nworkers++] = w;
        memcpy(w->id, hm->id, hm->id_len);
        w->id_len = hm->id_len;
    }
    free(w->death);
    *w = (dworker){.id_len = w->id_len,
                   .pid = m->pid,
                   .credit = m->credit,
                   .threads = m->credit / ZP__PROTO_CREDIT_PER_THREAD,
                   .has_task = announces(m, task(d))};
    memcpy(w->id, hm->id, hm->id_len);
    w->tally = zp__tally_join(&d->tally, m->str, m->str_len, zp__now_ns());
    if (w->threads == 0)
        w->threads = 1;
    for (int i = 0; i < d->nchildren; i++)
        if (d->children[i] == (pid_t)m->pid)
            d->greeted[i] = true;
    w->heard = w->beat = zp__now_ns();
    note_workers(d);
}

static dworker *worker_of_pid(zp__dispatch *d, pid_t pid)
{
    for (size_t i = 0; i < d->nworkers; i++)
        if (!d->workers[i]->gone && d->workers[i]->pid == (uint32_t)pid)
            return d->workers[i];
    return NULL;
}

/* ---- Messages from workers ---------------------------------------------- */

static void malformed(zp__dispatch *d, const dworker *w, const dbatch *b)
{
    fail_run(d, zp__strdupf("task '%s': a worker (pid %u) sent malformed "
                            "outputs for the batch from item %llu",
                            task(d), w->pid, (unsigned long long)b->seq));
}

static void on_done(zp__dispatch *d, dworker *w, const zp__msg *m)
{
    dbatch *b = take_inflight(d, m->batch, w);
    if (b == NULL) {
        /* Not (or no longer) this worker's: it was given up on. */
        fprintf(stderr, "zpipe: task '%s': ignored %s for batch %llu\n",
                task(d), zp__msg_type_name(m->type),
                (unsigned long long)m->batch);
        return;
    }
    /* The common case, a whole batch's outputs in its DONE for an
     * unordered stage, goes straight on, checked on the way. */
    bool direct =
        m->type == ZP__DONE && b->out.size == 0 && !d->cfg.def->opts.ordered;
    if (!direct && gather(b, m) != 0) {
        malformed(d, w, b);
        batch_free(b);
        return;
    }
    if (m->type == ZP__OUT) { /* more to come: back in flight */
        add_inflight(d, b);
        return;
    }
    /* An item's time: since the worker's last DONE when it was busy all
     * along, else since the batch was sent (an upper bound). */
    uint64_t now = zp__now_ns();
    uint64_t since = w->inflight > 1 && w->done > b->sent ? w->done : b->sent;
    d->item_ns = (d->item_ns * 3 + (now - since) / b->n) / 4;
    w->done = now;
    zp__tally_count(&d->tally, w->tally, 1);
    w->inflight--;
    w->suspect = false;
    w->credit += b->n; /* a DONE gives the batch's credit back */
    count(&d->stats.retried, m->retried);
    count(&d->stats.skipped, m->skipped);
    count(&d->stats.failed, m->skipped);
    int rc = direct ? send_outputs(d, m->data, m->data_len) : deliver(d, b);
    if (rc == ZP_EPROTO)
        malformed(d, w, b);
    else if (rc != 0 && !stopping(d))
        fail_run(d, zp__strdupf("task '%s': cannot send outputs on", task(d)));
    if (direct)
        batch_free(b);
}

static void on_fail(zp__dispatch *d, dworker *w, const zp__msg *m)
{
    dbatch *b = take_inflight(d, m->batch, w);
    if (b == NULL)
        return;
    w->inflight--;
    w->suspect = false;
    w->credit += b->n;
    count(&d->stats.failed, 1);
    fail_run(d,
             zp__strdupf("task '%s' failed on item %llu: %.*s", task(d),
                         (unsigned long long)m->seq, (int)m->str_len, m->str));
    batch_free(b);
}

/* Logs a dropped message: the first few, then one in a thousand, so that
 * a peer sending garbage cannot flood the log. */
static void drop(zp__dispatch *d, const char *fmt, ...) ZP__PRINTF(2, 3);
static void drop(zp__dispatch *d, const char *fmt, ...)
{
    uint64_t n = d->dropped++;
    if (n >= 10 && n % 1000 != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr,
            "zpipe: task '%s': dropped a message (%llu so far): ", task(d),
            (unsigned long long)n + 1);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void on_message(zp__dispatch *d, const zp__hub_msg *hm,
                       msgpack_zone *zone)
{
    zp__msg m;
    const char *why = NULL;
    msgpack_zone_clear(zone);
    if (zp__msg_decode(hm->body, hm->len, zone, &m, &why) != 0) {
        drop(d, "%s", why);
        return;
    }
    if (m.type == ZP__HELLO) {
        on_hello(d, hm, &m);
        return;
    }
    dworker *w = find_worker(d, hm->id, hm->id_len);
    if (w == NULL) {
        /* A worker of an earlier run, or of a coordinator that restarted:
         * a HELLO asks it to introduce itself. */
        if (zp__msg_hello(&d->sb, "coordinator", (uint32_t)getpid(), 1, NULL,
                          0) == 0)
            zp__hub_send(d->hub, hm->id, hm->id_len, d->sb.data, d->sb.size);
        msgpack_sbuffer_clear(&d->sb);
        return;
    }
    if (w->gone)
        return; /* given up on: whatever it still sends is void */
    w->heard = zp__now_ns();
    bool about_batch =
        m.type == ZP__OUT || m.type == ZP__DONE || m.type == ZP__FAIL;
    if (about_batch && (m.run != d->cfg.run_id || m.stage != d->cfg.stage)) {
        drop(d, "a %s for run %llu stage %u, not this one",
             zp__msg_type_name(m.type), (unsigned long long)m.run, m.stage);
        return;
    }
    if (m.type == ZP__READY)
        w->credit += m.credit;
    else if (m.type == ZP__OUT || m.type == ZP__DONE)
        on_done(d, w, &m);
    else if (m.type == ZP__FAIL)
        on_fail(d, w, &m);
    else if (m.type == ZP__BYE)
        lose_worker(d, w, NULL);
    else if (m.type != ZP__HEARTBEAT)
        drop(d, "an unexpected %s", zp__msg_type_name(m.type));
}

/* ---- Sending work ------------------------------------------------------- */

static bool fast(const zp__dispatch *d)
{
    return d->item_ns > 0 && d->item_ns < FAST_ITEM_NS;
}

/* The worker that should take a batch of n items, or NULL. */
/*
 * The worker that should take batch b, or NULL. A suspect (a batch that
 * was running when a worker crashed) runs alone on an idle worker, so
 * that if it crashes again there is no doubt which item did it.
 */
static dworker *pick_worker(zp__dispatch *d, const dbatch *b)
{
    dworker *best = NULL;
    for (size_t i = 0; i < d->nworkers; i++) {
        dworker *w = d->workers[i];
        if (w->gone || w->death || !w->has_task || w->credit < (int64_t)b->n)
            continue;
        if (w->suspect || (b->kills > 0 && w->inflight > 0))
            continue;
        /* Slow items: no more at a worker than it runs at once, and one
         * more on its way, so that it never waits for the next; fast ones,
         * a few batches per thread, which bounds their bytes. An async
         * task's worker runs as many at once as its credit allows. */
        if (d->cfg.def->afn == NULL &&
            w->inflight >=
                (fast(d) ? BATCHES_PER_THREAD * w->threads : w->threads + 1))
            continue;
        if (best == NULL || w->inflight < best->inflight)
            best = w;
    }
    return best;
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
    int rc = zp__msg_stage(&d->sb, d->cfg.run_id, d->cfg.stage, def->name,
                           flags, (uint32_t)o->retries, bind.data, bind.size);
    msgpack_sbuffer_destroy(&bind);
    if (rc == 0)
        rc = send_body(d, w);
    w->configured = rc == 0;
    return rc;
}

static int send_batch(zp__dispatch *d, dworker *w, dbatch *b)
{
    int rc = w->configured ? 0 : configure(d, w);
    if (rc == 0)
        rc = zp__msg_item(&d->sb, d->cfg.run_id, d->cfg.stage, b->id, b->bytes,
                          b->len);
    if (rc == 0)
        rc = send_body(d, w);
    return rc;
}

static void dispatch_waiting(zp__dispatch *d)
{
    while (d->waiting != NULL && !stopping(d)) {
        dworker *w = pick_worker(d, d->waiting);
        if (w == NULL)
            return;
        dbatch *b = dequeue(d);
        if (send_batch(d, w, b) != 0) {
            enqueue(d, b, true);
            lose_worker(d, w, NULL); /* unreachable: it left */
            continue;
        }
        b->w = w;
        w->suspect = b->kills > 0;
        b->order = d->sends++;
        b->sent = zp__now_ns();
        w->credit -= b->n;
        w->inflight++;
        add_inflight(d, b);
    }
}

/* ---- Reading input ------------------------------------------------------ */

static void close_fill(zp__dispatch *d)
{
    if (d->fill_n == 0)
        return;
    dbatch *b =
        batch_new(d, d->fill_seq, d->fill_n, d->fill.data, d->fill.size);
    if (b == NULL)
        fail_run(d, zp__strdupf("task '%s': out of memory", task(d)));
    else
        enqueue(d, b, false);
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
    count(&d->stats.in, n);
    d->fill_n += n;
    if (d->fill_n >= max || d->fill.size >= BATCH_BYTES)
        close_fill(d);
}

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
 * Room for more input: twice what the workers can take now, and two full
 * batches' bytes per worker. While items are slow, or not measured yet,
 * each travels alone and a worker runs its threads' worth and one more:
 * no more than that waits.
 */
static bool want_input(const zp__dispatch *d)
{
    bool alone = !fast(d) && d->cfg.def->afn == NULL;
    int64_t room = alone ? 1 : BATCH_MAX;
    size_t bytes = 2 * BATCH_BYTES;
    for (size_t i = 0; i < d->nworkers; i++) {
        const dworker *w = d->workers[i];
        if (!w->gone && w->has_task) {
            room += alone ? (int64_t)w->threads + 1 : w->credit;
            bytes += 2 * BATCH_BYTES;
        }
    }
    return !d->ended && d->waiting_bytes < bytes &&
           (int64_t)d->nwaiting < (alone ? room : 2 * room);
}

static void read_input(zp__dispatch *d)
{
    zp__rx *rx = d->cfg.in->rx[0];
    const msgpack_object *o;
    const char *raw;
    size_t len;
    uint32_t n = 1;
    uint64_t seq;
    int rc = 1;
    /* Batched items are taken as they came, a batch at a time; others
     * one by one, each to be sent alone. */
    while (rc == 1 && want_input(d)) {
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

/* ---- Supervision -------------------------------------------------------- */

static char *const *worker_args; /* borrowed; see dispatch.h */

void zp__dispatch_set_worker_args(char *const *args)
{
    worker_args = args;
}

void zp__dispatch_spawnattr_init(posix_spawnattr_t *at, short flags)
{
    sigset_t none, stops;
    sigemptyset(&none);
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGQUIT);
    sigaddset(&stops, SIGPIPE);
    posix_spawnattr_init(at);
    posix_spawnattr_setsigmask(at, &none);
    posix_spawnattr_setsigdefault(at, &stops);
    posix_spawnattr_setflags(
        at, (short)(flags | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
}

/* Workers start as zp__dispatch_spawnattr_init says, whatever the program
 * they are spawned from set up for itself. */
static posix_spawnattr_t spawn_attr;
static pthread_once_t spawn_attr_once = PTHREAD_ONCE_INIT;

static void make_spawn_attr(void)
{
    zp__dispatch_spawnattr_init(&spawn_attr, 0);
}

/* "zpipe-worker --zp-worker ENDPOINT", then the worker arguments. */
static char **spawn_argv(const zp__dispatch *d)
{
    size_t extra = 0;
    while (worker_args != NULL && worker_args[extra] != NULL)
        extra++;
    char **argv = calloc(extra + 4, sizeof *argv);
    if (argv == NULL)
        return NULL;
    argv[0] = "zpipe-worker";
    argv[1] = "--zp-worker";
    argv[2] = (char *)d->cfg.endpoint;
    for (size_t i = 0; i < extra; i++)
        argv[3 + i] = worker_args[i];
    return argv;
}

static int spawn_child(zp__dispatch *d, int slot)
{
    char parent[64];
    size_t n = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + 2, sizeof *envp);
    char **argv = spawn_argv(d);
    int rc = ZP_ENOMEM;
    pthread_once(&spawn_attr_once, make_spawn_attr);
    if (envp == NULL || argv == NULL)
        goto out_free;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "ZPIPE_WORKER", 12) != 0)
            envp[k++] = environ[i];
    snprintf(parent, sizeof parent, "ZPIPE_WORKER_PARENT=%d", (int)getpid());
    envp[k] = parent;
    pid_t pid;
    rc = posix_spawn(&pid, "/proc/self/exe", NULL, &spawn_attr, argv, envp) == 0
             ? 0
             : ZP_EIO;
    if (rc == 0)
        d->children[slot] = pid;
out_free:
    free(argv);
    free(envp);
    return rc;
}

/* Reaps dead children, gives up on their batches, and replaces them. */
static void reap(zp__dispatch *d)
{
    for (int i = 0; i < d->nchildren; i++) {
        int status;
        pid_t pid = d->children[i];
        if (pid <= 0 || waitpid(pid, &status, WNOHANG) != pid)
            continue;
        d->children[i] = 0;
        /* Its batches are given up on a little later, once what it sent
         * before it died has been read: a batch it finished is no
         * culprit. */
        dworker *w = worker_of_pid(d, pid);
        if (w != NULL && w->death == NULL) {
            w->death = describe_status((uint32_t)pid, status);
            w->died = zp__now_ns();
        }
        d->unborn = d->greeted[i] ? 0 : d->unborn + 1;
        d->greeted[i] = false;
        if (d->unborn >= MAX_UNBORN) {
            char *how = describe_status((uint32_t)pid, status);
            fail_run(d, zp__strdupf("task '%s': worker processes cannot "
                                    "start: %d in a row ended before saying "
                                    "HELLO; the last: %s",
                                    task(d), d->unborn, how ? how : "?"));
            free(how);
        } else if (!stopping(d)) {
            count(&d->restarts, 1);
            if (spawn_child(d, i) != 0)
                fail_run(d, zp__strdupf("task '%s': cannot start a worker "
                                        "process",
                                        task(d)));
        }
    }
}

static bool is_child(const zp__dispatch *d, pid_t pid)
{
    for (int i = 0; pid > 0 && i < d->nchildren; i++)
        if (d->children[i] == pid)
            return true;
    return false;
}

static void kill_worker(zp__dispatch *d, dworker *w, char *why)
{
    if (is_child(d, (pid_t)w->pid))
        kill((pid_t)w->pid, SIGKILL); /* reap() replaces it */
    lose_worker(d, w, why);
}

/* Heartbeats out; workers unheard for too long, or stuck on an item past
 * the timeout, are given up on. */
static void supervise(zp__dispatch *d, uint64_t now)
{
    uint64_t timeout = (uint64_t)d->cfg.def->opts.timeout_ms * MS;
    for (dbatch *b = d->inflight; timeout > 0 && b != NULL;) {
        /* A batch's clock starts when its worker could start it. */
        uint64_t start = b->w->done > b->sent ? b->w->done : b->sent;
        if (now - start <= timeout * b->n || !running(d, b)) {
            b = b->next;
            continue;
        }
        kill_worker(d, b->w,
                    zp__strdupf("it ran for more than %d ms (timeout)",
                                d->cfg.def->opts.timeout_ms));
        b = d->inflight; /* the list changed: look again */
    }
    for (size_t i = 0; i < d->nworkers; i++) {
        dworker *w = d->workers[i];
        if (w->gone)
            continue;
        if (w->death != NULL) {
            if (now - w->died > MOURN_NS) {
                char *why = w->death;
                w->death = NULL;
                lose_worker(d, w, why);
            }
            continue;
        }
        if (now - w->heard > DEAD_NS) {
            fprintf(stderr,
                    "zpipe: task '%s': worker %u stopped answering; its "
                    "items run again elsewhere\n",
                    task(d), w->pid);
            kill_worker(d, w, NULL);
            continue;
        }
        if (now - w->beat >= HEARTBEAT_NS && zp__msg_heartbeat(&d->sb) == 0) {
            w->beat = now;
            if (send_body(d, w) != 0)
                lose_worker(d, w, NULL);
        }
    }
}

/* Remote stages fail when no worker came within wait_workers_ms. */
static void check_waiting_for_workers(zp__dispatch *d, uint64_t now)
{
    bool any = false;
    for (size_t i = 0; i < d->nworkers && !any; i++)
        any = !d->workers[i]->gone && d->workers[i]->has_task;
    if (any || d->waiting == NULL || d->nchildren > 0) {
        d->no_worker_since = now;
        return;
    }
    uint64_t limit = (uint64_t)d->cfg.wait_workers_ms * MS;
    if (limit > 0 && now - d->no_worker_since > limit)
        fail_run(d, zp__strdupf("task '%s': no worker serving it connected "
                                "to %s within %d ms",
                                task(d), zp__hub_endpoint(d->hub),
                                d->cfg.wait_workers_ms));
}

/* ---- The loop ------------------------------------------------------------ */

static bool finished(const zp__dispatch *d)
{
    return d->ended && d->waiting == NULL && d->inflight == NULL &&
           d->fill_n == 0;
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
        reap(d);
        supervise(d, now);
        check_waiting_for_workers(d, now);
    }
    dispatch_waiting(d);
}

static void say_bye(zp__dispatch *d)
{
    for (size_t i = 0; i < d->nworkers; i++)
        if (!d->workers[i]->gone && zp__msg_bye(&d->sb, "run over") == 0)
            send_body(d, d->workers[i]);
}

static void *dispatch_main(void *arg)
{
    zp__dispatch *d = arg;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    for (int i = 0; i < d->nchildren; i++)
        if (spawn_child(d, i) != 0)
            fail_run(d, zp__strdupf("task '%s': cannot start worker "
                                    "processes: %s",
                                    task(d), strerror(errno)));
    if (d->cfg.in == NULL) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, &d->sb, msgpack_sbuffer_write);
        msgpack_pack_object(&pk, *d->cfg.args);
        add_items(d, d->sb.data, d->sb.size, 1, 0);
        msgpack_sbuffer_clear(&d->sb);
        close_fill(d);
        d->ended = true;
    }
    while (zone != NULL && !stopping(d) && !finished(d))
        step(d, zone);
    if (zone != NULL && !stopping(d))
        zp__tx_close(d->cfg.out->tx[0]);
    /* Process workers stay only for this run; remote ones for the next. */
    if (d->nchildren > 0)
        say_bye(d);
    if (zone != NULL)
        msgpack_zone_free(zone);
    return NULL;
}

/* Tells the children to leave (SIGTERM: also those that never connected),
 * waits up to ~2 s for them, then kills the rest. */
static void reap_all(zp__dispatch *d)
{
    for (int i = 0; i < d->nchildren; i++)
        if (d->children[i] > 0)
            kill(d->children[i], SIGTERM);
    for (int tries = 0; tries < 200; tries++) {
        int left = 0;
        for (int i = 0; i < d->nchildren; i++)
            if (d->children[i] > 0 &&
                waitpid(d->children[i], NULL, WNOHANG) == 0)
                left++;
            else
                d->children[i] = 0;
        if (left == 0)
            return;
        struct timespec t = {0, 10 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    for (int i = 0; i < d->nchildren; i++)
        if (d->children[i] > 0) {
            kill(d->children[i], SIGKILL);
            waitpid(d->children[i], NULL, 0);
        }
}

zp__dispatch *zp__dispatch_new(const zp__dispatch_cfg *cfg, char **why)
{
    zp__dispatch *d = calloc(1, sizeof *d);
    if (d == NULL)
        return NULL;
    d->cfg = *cfg;
    zp__tally_init(&d->tally);
    d->endpoint = strdup(cfg->endpoint);
    if (d->endpoint == NULL)
        goto out_destroy;
    d->cfg.endpoint = d->endpoint;
    msgpack_sbuffer_init(&d->sb);
    msgpack_sbuffer_init(&d->fill);
    d->no_worker_since = zp__now_ns();
    bool process = cfg->def->opts.mode == ZP_PROCESS;
    d->hub = zp__hub_new(cfg->zctx, cfg->endpoint,
                         process ? NULL : cfg->curve_secret,
                         process ? NULL : cfg->curve_allow, why);
    if (d->hub == NULL)
        goto out_destroy;
    if (process) {
        d->children = calloc((size_t)cfg->def->opts.workers, sizeof(pid_t));
        if (d->children == NULL)
            goto out_destroy;
        d->greeted = calloc((size_t)cfg->def->opts.workers, sizeof(bool));
        if (d->greeted == NULL)
            goto out_destroy;
        /* Spawned by the dispatcher's thread: a child dies with the thread
         * that spawned it (PR_SET_PDEATHSIG), and this one lasts as long
         * as the stage. */
        d->nchildren = cfg->def->opts.workers;
    }
    if (pthread_create(&d->thread, NULL, dispatch_main, d) != 0) {
        *why = zp__strdupf("cannot start a thread");
        goto out_destroy;
    }
    d->started = true;
    return d;
out_destroy:
    zp__dispatch_destroy(&d);
    return NULL;
}

void zp__dispatch_join(zp__dispatch *d)
{
    if (d != NULL && d->started) {
        pthread_join(d->thread, NULL);
        d->started = false;
    }
}

void zp__dispatch_destroy(zp__dispatch **dp)
{
    zp__dispatch *d = *dp;
    if (d == NULL)
        return;
    zp__dispatch_join(d);
    reap_all(d);
    free(d->children);
    free(d->greeted);
    zp__hub_destroy(&d->hub);
    for (size_t i = 0; i < d->nworkers; i++) {
        free(d->workers[i]->death);
        free(d->workers[i]);
    }
    free(d->workers);
    free_list(d->waiting);
    free_list(d->inflight);
    free_list(d->held);
    msgpack_sbuffer_destroy(&d->sb);
    msgpack_sbuffer_destroy(&d->fill);
    free(d->endpoint);
    zp__tally_fini(&d->tally);
    free(d);
    *dp = NULL;
}

void zp__dispatch_stats(const zp__dispatch *d, zp_stage_stats *st)
{
    const zp__wstats *s = &d->stats;
    st->items_in += atomic_load_explicit(&s->in, memory_order_relaxed);
    st->items_out += atomic_load_explicit(&s->out, memory_order_relaxed);
    st->failed += atomic_load_explicit(&s->failed, memory_order_relaxed);
    st->retried += atomic_load_explicit(&s->retried, memory_order_relaxed);
    st->skipped += atomic_load_explicit(&s->skipped, memory_order_relaxed);
    st->restarts += atomic_load(&d->restarts);
    st->in_flight += atomic_load(&d->items_out);
    st->peak_in_flight += atomic_load(&d->items_peak);
    st->workers_alive += atomic_load(&d->alive);
}

zp__tally *zp__dispatch_tally(zp__dispatch *d)
{
    return &d->tally;
}
