/* SPDX-License-Identifier: MIT */
/*
 * Worker mode, see serve.h. The main thread owns the link to the
 * coordinator: it announces the tasks (HELLO), keeps stage settings
 * (STAGE), takes batches (ITEM) and sends heartbeats. With one thread it
 * runs each batch itself, between two reads of the link, and hands the
 * link to a watchdog thread meanwhile, which sends the heartbeats while
 * a batch runs long. With more, it queues batches for `threads` executor
 * threads, which run a whole batch and then post its outputs (DONE, or
 * FAIL) through their outbox. A batch's outputs leave only when it is
 * done, so a batch cut short by a crash leaves nothing behind and the
 * coordinator can run it again elsewhere.
 */
#include "worker/serve.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/error.h"
#include "core/fds.h"
#include "core/list.h"
#include "core/registry.h"
#include "transport/batch.h"
#include "transport/peer.h"
#include "transport/proto.h"
#include "worker/aserver.h"
#include "worker/call.h"

#define HEARTBEAT_MS 1000
#define SILENCE_MS 3000              /* then an idle worker says HELLO again */
#define OUT_CHUNK ((size_t)16 << 20) /* outputs per OUT message, at most */

typedef struct stage {
    uint64_t run;
    uint32_t index;
    zp_pipeline *p; /* owned; one stage, or NULL: this worker lacks it */
    char *missing;  /* owned; the task name when p is NULL           */
} stage;

typedef struct job {
    zp__qnode node;
    uint64_t run, batch;
    uint32_t stage;
    const char *items; /* batch bytes: `owned`, or the message's */
    size_t len;
    char *owned;
} job;

typedef struct server {
    const zp__serve_opts *o;
    zp__serve_stats *stats; /* o->stats, or `own` */
    zp__serve_stats own;
    zp__peer *peer;       /* owned */
    zp__runctl ctl;       /* stop: the process is leaving */
    pthread_mutex_t lock; /* guards jobs, stages, busy */
    pthread_cond_t cond;
    zp__queue jobs; /* owned queue of job */
    stage *stages;  /* owned */
    size_t nstages;
    int busy;     /* executors inside a batch */
    pid_t parent; /* child workers: the coordinator that spawned them */
    bool greeted; /* a HELLO went out */
    pthread_t *threads;
    int nthreads;
    pthread_mutex_t io;             /* the peer's sockets: held by the main
                                       thread but while it runs a batch  */
    _Atomic uint64_t running_since; /* the main thread runs a batch since */
    uint64_t beat;                  /* the last HEARTBEAT; under io       */
    pthread_cond_t tick;            /* the watchdog's wait                */
    pthread_t watchdog;
    bool watching;
    zp__aserver *async;   /* owned; runs async tasks, made on demand */
    zp__outbox *async_ob; /* owned; used by the async loop's thread  */
} server;

static atomic_int signalled; /* read by the watchdog thread too */

static void on_signal(int sig)
{
    signalled = sig;
}

static void no_fail(zp__runctl *ctl, int code, char *msg)
{
    (void)ctl;
    (void)code;
    free(msg);
}

/* ---- Executors ------------------------------------------------------- */

static const stage *find_stage(server *s, uint64_t run, uint32_t index)
{
    for (size_t i = 0; i < s->nstages; i++)
        if (s->stages[i].run == run && s->stages[i].index == index)
            return &s->stages[i];
    return NULL;
}

static job *next_job(server *s)
{
    pthread_mutex_lock(&s->lock);
    while (zp__queue_empty(&s->jobs) && !atomic_load(&s->ctl.stop))
        pthread_cond_wait(&s->cond, &s->lock);
    zp__qnode *n = zp__queue_pop(&s->jobs);
    if (n != NULL)
        s->busy++;
    pthread_mutex_unlock(&s->lock);
    return n != NULL ? zp__container_of(n, job, node) : NULL;
}

/* What one batch produced so far. */
typedef struct result {
    msgpack_sbuffer out; /* outputs back to back */
    uint32_t n;          /* how many */
    uint32_t retried, skipped;
    uint64_t start;   /* when the batch began to run (zp__now_ns) */
    uint64_t sending; /* ns spent since sending OUT parts           */
    uint64_t busy;    /* ns the batch ran, once it is over          */
    uint32_t items;   /* items run */
} result;

/*
 * The batch's time so far: the task's and the worker's own work on it,
 * less the time OUT parts took to leave (which waits on the network). A
 * clock read per batch rather than two per item: at a few nanoseconds
 * an item, those reads would cost as much as the task.
 */
static uint64_t busy_so_far(result *res)
{
    res->busy = zp__now_ns() - res->start - res->sending;
    return res->busy;
}

/* Where a batch's messages go: the outbox of the thread that runs it, or
 * the link itself when the main thread runs it. */
typedef struct sink {
    server *s;
    zp__outbox *ob; /* borrowed, or NULL */
} sink;

static int post(const sink *to, msgpack_sbuffer *sb)
{
    int rc;
    if (to->ob != NULL) {
        rc = zp__outbox_post(to->ob, sb->data, sb->size);
    } else {
        pthread_mutex_lock(&to->s->io);
        rc = zp__peer_send(to->s->peer, sb->data, sb->size);
        pthread_mutex_unlock(&to->s->io);
    }
    msgpack_sbuffer_clear(sb);
    return rc;
}

/* Posts OUT (more to come) or DONE with the outputs gathered so far. */
static int post_outputs(const sink *ob, const job *j, result *res, int type)
{
    msgpack_sbuffer body, framed;
    char hdr[ZP__BATCH_HEADER_MAX];
    msgpack_sbuffer_init(&body);
    msgpack_sbuffer_init(&framed);
    size_t h = zp__batch_header(hdr, 0, res->n);
    int rc =
        msgpack_sbuffer_write(&framed, hdr, h) ||
                msgpack_sbuffer_write(&framed, res->out.data, res->out.size)
            ? ZP_ENOMEM
            : zp__msg_out(&body, type, j->run, j->stage, j->batch, framed.data,
                          framed.size, res->retried, res->skipped, res->busy);
    if (rc == 0)
        rc = post(ob, &body);
    msgpack_sbuffer_destroy(&body);
    msgpack_sbuffer_destroy(&framed);
    msgpack_sbuffer_clear(&res->out);
    res->n = 0;
    return rc;
}

static int post_fail(const sink *ob, const job *j, uint64_t seq,
                     const char *why, uint64_t busy)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = zp__msg_fail(&sb, j->run, j->stage, j->batch, seq, why, busy);
    if (rc == 0)
        rc = post(ob, &sb);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/*
 * Adds the outputs of item seq to the batch's, after sending those before
 * as OUT when together they would pass OUT_CHUNK. Returns 0, or 1 when the
 * outputs cannot travel and FAIL was posted, or ZP_EIO.
 */
static int keep_outputs(const sink *ob, const job *j, result *res,
                        const zp_call *c, uint64_t seq)
{
    const size_t max = ZP__PROTO_MAX_BATCH - ZP__BATCH_HEADER_MAX;
    const char *why = NULL;
    char text[160];
    if (c->buf.size > max) {
        snprintf(text, sizeof text,
                 "its outputs take %zu bytes, more than a message to the "
                 "coordinator holds (%zu)",
                 c->buf.size, max);
        why = text;
    } else if (res->out.size > 0 && res->out.size + c->buf.size > OUT_CHUNK) {
        uint64_t t = zp__now_ns();
        int rc = post_outputs(ob, j, res, ZP__OUT);
        res->sending += zp__now_ns() - t;
        if (rc != 0)
            return ZP_EIO;
    }
    if (why == NULL &&
        msgpack_sbuffer_write(&res->out, c->buf.data, c->buf.size) != 0)
        why = "out of memory";
    if (why != NULL)
        return post_fail(ob, j, seq, why, busy_so_far(res)) ? ZP_EIO : 1;
    res->n += c->emitted;
    return 0;
}

/* Runs the items of a batch; 0, or the index of the item that failed is
 * reported with FAIL and 1 is returned. */
static int run_items(server *s, const sink *ob, const job *j,
                     const zp__stage_def *def, result *res)
{
    zp__wstats stats = {0};
    zp_call call = {0};
    zp__batch_reader rd;
    const msgpack_object *item;
    uint64_t seq;
    int rc = zp__batch_reader_init(&rd);
    zp__call_init(&call, def, &s->ctl, &stats, false, NULL, NULL);
    if (rc == 0 && zp__batch_open(&rd, j->items, j->len) != 0)
        rc = post_fail(ob, j, 0, "malformed batch of items", 0) ? ZP_EIO : 1;
    res->start = zp__now_ns();
    while (rc == 0 && (rc = zp__batch_next(&rd, &item, &seq)) == 1) {
        res->items++;
        rc = zp__call_item(&call, item, seq, &res->retried);
        if (rc == ZP__CALL_OK) {
            rc = keep_outputs(ob, j, res, &call, seq);
        } else if (rc == ZP__CALL_SKIPPED) {
            res->skipped++;
            rc = 0;
        }
    }
    uint64_t busy = busy_so_far(res);
    if (rc == ZP_ETASK)
        rc = post_fail(ob, j, seq, call.error, busy) ? ZP_EIO : 1;
    else if (rc == ZP_EPROTO)
        rc = post_fail(ob, j, seq, "malformed item", busy) ? ZP_EIO : 1;
    zp__call_fini(&call);
    zp__batch_reader_fini(&rd);
    return rc;
}

/* Counts a finished batch for the worker's metrics. */
static void count_batch(server *s, uint64_t items, uint64_t busy_ns)
{
    atomic_fetch_add_explicit(&s->stats->batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->stats->items, items, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->stats->busy_ns, busy_ns,
                              memory_order_relaxed);
}

static void run_job(server *s, const sink *ob, const job *j)
{
    /* The array of stages may grow meanwhile; what it points to stays. */
    pthread_mutex_lock(&s->lock);
    const stage *st = find_stage(s, j->run, j->stage);
    const zp_pipeline *p = st != NULL ? st->p : NULL;
    const char *missing = st != NULL ? st->missing : "(no STAGE was sent)";
    pthread_mutex_unlock(&s->lock);
    result res = {.n = 0};
    msgpack_sbuffer_init(&res.out);
    if (p == NULL) {
        char *why = zp__strdupf("this worker has no task '%s'", missing);
        post_fail(ob, j, 0, why ? why : "no such task", 0);
        free(why);
    } else if (p->stages[0].afn != NULL) {
        post_fail(ob, j, 0, "cannot start the event loop of async tasks", 0);
    } else if (run_items(s, ob, j, &p->stages[0], &res) == 0) {
        post_outputs(ob, j, &res, ZP__DONE);
    }
    msgpack_sbuffer_destroy(&res.out);
    count_batch(s, res.items, res.busy);
}

static void *executor(void *arg)
{
    server *s = arg;
    sink to = {s, zp__outbox_new(s->peer)};
    /* DONE or FAIL gives the batch's credit back: no READY is needed. */
    for (job *j; to.ob != NULL && (j = next_job(s)) != NULL;) {
        run_job(s, &to, j);
        pthread_mutex_lock(&s->lock);
        s->busy--;
        pthread_mutex_unlock(&s->lock);
        free(j->owned);
        free(j);
    }
    zp__outbox_destroy(&to.ob);
    return NULL;
}

/* ---- The I/O thread ---------------------------------------------------- */

typedef struct names {
    const char **v;
    size_t n, cap;
} names;

static void add_name(const char *name, bool async, void *arg)
{
    names *ns = arg;
    (void)async;
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 16;
        const char **v = zp__realloc(ns->v, cap * sizeof *v);
        if (v == NULL)
            return;
        ns->v = v;
        ns->cap = cap;
    }
    ns->v[ns->n++] = name;
}

static int send_hello(server *s)
{
    names ns = {NULL, 0, 0};
    msgpack_sbuffer sb;
    char host[64] = "worker";
    char name[128];
    gethostname(host, sizeof host - 1);
    snprintf(name, sizeof name, "%s:%d", host, (int)getpid());
    msgpack_sbuffer_init(&sb);
    zp__registry_each(add_name, &ns);
    int rc =
        zp__msg_hello(&sb, name, (uint32_t)getpid(),
                      (uint32_t)(s->o->threads * ZP__PROTO_CREDIT_PER_THREAD),
                      ns.v, ns.n, s->o->pool);
    if (rc == 0)
        rc = zp__peer_send(s->peer, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    free(ns.v);
    return rc;
}

static int send_simple(server *s, int type, const char *reason)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc =
        type == ZP__BYE ? zp__msg_bye(&sb, reason) : zp__msg_heartbeat(&sb);
    if (rc == 0)
        rc = zp__peer_send(s->peer, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

/* Builds the one-stage pipeline a STAGE message describes. */
static zp_pipeline *stage_pipeline(const zp__msg *m, char *task)
{
    zp_task_fn fn = zp_lookup(task);
    zp_async_fn afn = zp_lookup_async(task);
    if (fn == NULL && afn == NULL)
        return NULL;
    zp_opts o = {.size = sizeof o,
                 .branch = (m->flags & ZP__STAGE_BRANCH) != 0,
                 .retries = (int)(m->retries > 1000000 ? 1000000 : m->retries),
                 .on_error = m->flags & ZP__STAGE_SKIP ? ZP_SKIP : ZP_FAIL};
    zp_pipeline *p =
        fn ? zp_task_new(task, fn, &o) : zp_async_task_new(task, afn, &o);
    if (m->data_len > 0 &&
        (!zp__msgpack_check(m->data, m->data_len) ||
         zp__pipeline_bind_packed(p, m->data, m->data_len) != 0))
        zp__pipeline_fail(p, "task '%s': malformed bind value", task);
    if (zp_pipeline_error(p) != NULL) {
        fprintf(stderr, "zpipe worker: %s\n", zp_pipeline_error(p));
        zp_pipeline_free(p);
        return NULL;
    }
    return p;
}

static void on_stage(server *s, const zp__msg *m)
{
    char *task = strndup(m->str, m->str_len);
    if (task == NULL)
        return;
    zp_pipeline *p = stage_pipeline(m, task);
    pthread_mutex_lock(&s->lock);
    stage *v = find_stage(s, m->run, m->stage) == NULL
                   ? zp__realloc(s->stages, (s->nstages + 1) * sizeof *v)
                   : NULL;
    if (v != NULL) {
        s->stages = v;
        v[s->nstages++] = (stage){m->run, m->stage, p, p ? NULL : task};
        p = NULL;
        task = v[s->nstages - 1].missing ? NULL : task;
    }
    pthread_mutex_unlock(&s->lock);
    zp_pipeline_free(p);
    free(task);
}

/*
 * Posts what an async batch made: its outputs as DONE, after OUT messages
 * of up to OUT_CHUNK bytes when they take more; FAIL when one output alone
 * cannot travel.
 */
static void post_async_outputs(const sink *to, const job *j, zp__ajob *aj)
{
    const size_t max = ZP__PROTO_MAX_BATCH - ZP__BATCH_HEADER_MAX;
    result res = {.out = aj->out,
                  .n = aj->n,
                  .retried = aj->retried,
                  .skipped = aj->skipped,
                  .busy = aj->busy};
    if (aj->out.size <= OUT_CHUNK) { /* the common case, as it is */
        post_outputs(to, j, &res, ZP__DONE);
        aj->out = res.out;
        return;
    }
    res.n = 0;
    msgpack_sbuffer_init(&res.out);
    const char *p = aj->out.data;
    for (size_t left = aj->out.size, size; left > 0; p += size, left -= size) {
        size = zp__msgpack_size(p, left); /* packed here: whole */
        if (size > max) {
            zp__batch_reader rd = {.data = NULL};
            uint64_t first =
                zp__batch_open(&rd, j->items, j->len) == 0 ? rd.seq : 0;
            char why[160];
            snprintf(why, sizeof why,
                     "an output of its batch takes %zu bytes, more than a "
                     "message to the coordinator holds (%zu)",
                     size, max);
            post_fail(to, j, first, why, aj->busy);
            msgpack_sbuffer_destroy(&res.out);
            return;
        }
        if (res.out.size > 0 && res.out.size + size > OUT_CHUNK)
            post_outputs(to, j, &res, ZP__OUT);
        msgpack_sbuffer_write(&res.out, p, size);
        res.n++;
    }
    post_outputs(to, j, &res, ZP__DONE);
    msgpack_sbuffer_destroy(&res.out);
}

/* The async loop's thread: a batch of an async task is done. */
static void async_done(void *arg, zp__ajob *aj)
{
    server *s = arg;
    job *j = aj->arg;
    if (!aj->dropped && s->async_ob == NULL)
        s->async_ob = zp__outbox_new(s->peer);
    if (!aj->dropped)
        count_batch(s, aj->calls, aj->busy);
    if (!aj->dropped && s->async_ob != NULL) {
        sink to = {s, s->async_ob};
        if (aj->failed)
            post_fail(&to, j, aj->seq, aj->error ? aj->error : "out of memory",
                      aj->busy);
        else
            post_async_outputs(&to, j, aj);
    }
    msgpack_sbuffer_destroy(&aj->out);
    free(aj->error);
    free(aj);
    pthread_mutex_lock(&s->lock);
    s->busy--;
    pthread_mutex_unlock(&s->lock);
    free(j->owned);
    free(j);
}

/* The task of an async stage, or NULL. */
static const zp__stage_def *async_def(server *s, uint64_t run, uint32_t index)
{
    pthread_mutex_lock(&s->lock);
    const stage *st = find_stage(s, run, index);
    const zp__stage_def *def =
        st != NULL && st->p != NULL && st->p->stages[0].afn != NULL
            ? &st->p->stages[0]
            : NULL;
    pthread_mutex_unlock(&s->lock);
    return def;
}

/* Hands a batch of an async task to the async loop; false when the loop
 * cannot start. */
static bool submit_async(server *s, const zp__stage_def *def, job *j)
{
    zp__ajob *aj = zp__calloc(1, sizeof *aj);
    if (aj == NULL)
        return false;
    if (s->async == NULL)
        s->async = zp__aserver_new(&s->ctl,
                                   s->o->threads * ZP__PROTO_CREDIT_PER_THREAD,
                                   async_done, s);
    if (s->async == NULL) {
        free(aj);
        return false;
    }
    *aj = (zp__ajob){.def = def, .items = j->owned, .len = j->len, .arg = j};
    pthread_mutex_lock(&s->lock);
    s->busy++;
    pthread_mutex_unlock(&s->lock);
    zp__aserver_submit(s->async, aj);
    return true;
}

/* Runs a batch in the main thread, the link meanwhile left to the
 * watchdog. */
static void run_here(server *s, const job *j)
{
    sink to = {s, NULL};
    atomic_store(&s->running_since, zp__now_ns());
    pthread_mutex_unlock(&s->io);
    run_job(s, &to, j);
    pthread_mutex_lock(&s->io);
    atomic_store(&s->running_since, 0);
}

static void on_item(server *s, const zp__msg *m)
{
    job here = {.run = m->run,
                .batch = m->batch,
                .stage = m->stage,
                .items = m->data,
                .len = m->data_len};
    const zp__stage_def *def = async_def(s, m->run, m->stage);
    if (def == NULL && s->nthreads == 0) {
        run_here(s, &here);
        return;
    }
    job *j = zp__calloc(1, sizeof *j);
    char *items = zp__malloc(m->data_len);
    if (j == NULL || items == NULL) {
        free(j);
        free(items);
        return; /* the coordinator re-sends it when this worker dies */
    }
    memcpy(items, m->data, m->data_len);
    *j = here;
    j->items = j->owned = items;
    if (def != NULL && submit_async(s, def, j))
        return;
    if (s->nthreads == 0) { /* run_job() reports the loop that failed */
        run_here(s, j);
        free(j->owned);
        free(j);
        return;
    }
    pthread_mutex_lock(&s->lock);
    zp__queue_push(&s->jobs, &j->node);
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

/* Handles one message; returns false when told to leave. */
static bool on_message(server *s, const void *body, size_t len)
{
    static zp__ratelog dropped = ZP__RATELOG_INIT;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    zp__msg m;
    const char *why = "out of memory";
    bool go_on = true;
    if (zone == NULL || zp__msg_decode(body, len, zone, &m, &why) != 0)
        zp__ratelog_say(&dropped, "worker: dropped a message: %s", why);
    else if (m.type == ZP__STAGE)
        on_stage(s, &m);
    else if (m.type == ZP__ITEM)
        on_item(s, &m);
    else if (m.type == ZP__BYE)
        go_on = false;
    else if (m.type == ZP__HELLO) /* the coordinator does not know us */
        send_hello(s);
    else if (m.type != ZP__HEARTBEAT)
        zp__ratelog_say(&dropped, "worker: dropped an unexpected %s",
                        zp__msg_type_name(m.type));
    if (zone != NULL)
        msgpack_zone_free(zone);
    return go_on;
}

static bool idle(server *s)
{
    pthread_mutex_lock(&s->lock);
    bool yes = zp__queue_empty(&s->jobs) && s->busy == 0;
    pthread_mutex_unlock(&s->lock);
    return yes;
}

static bool orphaned(const server *s)
{
    return s->parent > 0 && getppid() != s->parent;
}

/* The state of the link to the coordinator, for the worker's metrics. */
static void note_link(server *s)
{
    bool up;
    uint64_t links;
    zp__peer_link(s->peer, &up, &links);
    atomic_store(&s->stats->connected, up);
    atomic_store(&s->stats->reconnects, links > 1 ? links - 1 : 0);
}

static void beat_if_due(server *s, uint64_t now)
{
    if (now - s->beat >= HEARTBEAT_MS * 1000000ull) {
        send_simple(s, ZP__HEARTBEAT, NULL);
        s->beat = now;
    }
}

/* The main thread; it holds `io` but while it runs a batch. */
static void serve(server *s)
{
    uint64_t heard = zp__now_ns();
    s->beat = heard;
    while (!signalled && !orphaned(s)) {
        const void *body;
        size_t len;
        int rc = zp__peer_recv(s->peer, HEARTBEAT_MS, &body, &len);
        if (rc == 1) {
            heard = zp__now_ns();
            if (!on_message(s, body, len))
                break;
        } else if (rc < 0 && rc != ZP__AGAIN) {
            break;
        }
        note_link(s);
        uint64_t now = zp__now_ns();
        if (!s->greeted)
            s->greeted = send_hello(s) == 0;
        beat_if_due(s, now);
        if (now - heard >= SILENCE_MS * 1000000ull && idle(s)) {
            send_hello(s); /* the coordinator may have restarted */
            heard = now;
        }
    }
}

/*
 * While the main thread runs a batch, sends the heartbeats it cannot, and
 * on a signal or the death of the coordinator stops the batch (at its
 * next output) so that the main thread can leave.
 */
static void *watchdog(void *arg)
{
    server *s = arg;
    struct timespec t;
    pthread_mutex_lock(&s->lock);
    while (!atomic_load(&s->ctl.stop)) {
        zp__deadline_after(&t, HEARTBEAT_MS * 1000000ull / 4);
        pthread_cond_timedwait(&s->tick, &s->lock, &t);
        if (atomic_load(&s->running_since) == 0)
            continue;
        pthread_mutex_unlock(&s->lock); /* the batch may need it */
        if (signalled || orphaned(s)) {
            atomic_store(&s->ctl.stop, true);
        } else if (pthread_mutex_trylock(&s->io) == 0) {
            if (atomic_load(&s->running_since) != 0) {
                beat_if_due(s, zp__now_ns());
                zp__peer_watch(s->peer);
                note_link(s);
            }
            pthread_mutex_unlock(&s->io);
        }
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void stop_threads(server *s)
{
    pthread_mutex_lock(&s->lock);
    atomic_store(&s->ctl.stop, true);
    pthread_cond_broadcast(&s->cond);
    pthread_cond_signal(&s->tick);
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < s->nthreads; i++)
        pthread_join(s->threads[i], NULL);
    if (s->watching)
        pthread_join(s->watchdog, NULL);
    zp__aserver_destroy(&s->async);
    zp__outbox_destroy(&s->async_ob);
}

static void server_fini(server *s)
{
    for (zp__qnode *n; (n = zp__queue_pop(&s->jobs)) != NULL;) {
        job *j = zp__container_of(n, job, node);
        free(j->owned);
        free(j);
    }
    for (size_t i = 0; i < s->nstages; i++) {
        zp_pipeline_free(s->stages[i].p);
        free(s->stages[i].missing);
    }
    free(s->stages);
    free(s->threads);
    zp__peer_destroy(&s->peer);
    pthread_cond_destroy(&s->cond);
    pthread_cond_destroy(&s->tick);
    pthread_mutex_unlock(&s->io);
    pthread_mutex_destroy(&s->io);
    pthread_mutex_destroy(&s->lock);
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: the wait is cut short */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* Executors for more than one thread; for one, the main thread runs the
 * batches and a watchdog stands by. */
static int start(server *s)
{
    int n = s->o->threads > 1 ? s->o->threads : 0;
    s->threads = zp__calloc((size_t)n + 1, sizeof *s->threads);
    if (s->threads == NULL)
        return ZP_ENOMEM;
    for (; s->nthreads < n; s->nthreads++)
        if (pthread_create(&s->threads[s->nthreads], NULL, executor, s) != 0)
            return ZP_EIO;
    if (n == 0) {
        if (pthread_create(&s->watchdog, NULL, watchdog, s) != 0)
            return ZP_EIO;
        s->watching = true;
    }
    /* The link may not be up yet: serve() says HELLO again until it goes. */
    s->greeted = send_hello(s) == 0;
    return 0;
}

int zp__serve(const zp__serve_opts *o)
{
    server s = {.o = o, .ctl = {.fail = no_fail}};
    s.stats = o->stats ? o->stats : &s.own;
    char *why = NULL;
    zp__fds_raise_limit(); /* a socket per executor thread, and more */
    if (o->child) {        /* die with the coordinator that spawned us */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        const char *parent = getenv("ZPIPE_WORKER_PARENT");
        s.parent = parent ? (pid_t)atoi(parent) : 0;
    }
    if (zp__cond_init_monotonic(&s.tick) != 0) {
        fprintf(stderr, "zpipe worker: out of memory\n");
        return 2;
    }
    pthread_mutex_init(&s.lock, NULL);
    pthread_mutex_init(&s.io, NULL);
    pthread_mutex_lock(&s.io);
    pthread_cond_init(&s.cond, NULL);
    catch_signals();
    s.peer = zp__peer_new(o->endpoint, o->server_key, o->secret_key, &why);
    int rc = s.peer ? start(&s) : ZP_EIO;
    if (rc == 0)
        serve(&s);
    else
        fprintf(stderr, "zpipe worker: cannot serve %s: %s\n", o->endpoint,
                why ? why : zp_strerror(rc));
    stop_threads(&s);
    if (s.peer != NULL)
        send_simple(&s, ZP__BYE, signalled ? "signal" : "leaving");
    server_fini(&s);
    free(why);
    return rc == 0 ? 0 : 2;
}
