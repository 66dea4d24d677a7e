/* SPDX-License-Identifier: MIT */
/*
 * Worker mode, see serve.h. The main thread owns the link to the
 * coordinator: it announces the tasks (HELLO), keeps stage settings
 * (STAGE), takes batches (ITEM) and sends heartbeats. With one thread it
 * runs each batch itself, between two reads of the link, and hands the
 * link to a watchdog thread meanwhile, which sends the heartbeats while
 * a batch runs long. With more, it queues batches for `threads` executor
 * threads (execute.c), which run a whole batch and then post its outputs
 * (DONE, or FAIL) through their outbox. A batch's outputs leave only when it is
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
#include "transport/peer.h"
#include "transport/proto.h"
#include "transport/timing.h"
#include "worker/execute.h"

#define HEARTBEAT_MS ZP__HEARTBEAT_MS
#define SILENCE_MS ZP__SILENCE_MS /* then an idle worker says HELLO again */

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

static int send_hello(zp__server *s)
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

static int send_simple(zp__server *s, int type, const char *reason)
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
        zp__log(ZP_LOG_ERROR, "zpipe worker: %s", zp_pipeline_error(p));
        zp_pipeline_free(p);
        return NULL;
    }
    return p;
}

static void on_stage(zp__server *s, const zp__msg *m)
{
    char *task = strndup(m->str, m->str_len);
    if (task == NULL)
        return;
    zp_pipeline *p = stage_pipeline(m, task);
    zp__sstage *st = zp__calloc(1, sizeof *st);
    if (st == NULL) {
        zp_pipeline_free(p);
        free(task);
        return;
    }
    *st = (zp__sstage){
        .run = m->run, .index = m->stage, .p = p, .missing = p ? NULL : task};
    if (p != NULL)
        free(task);
    pthread_mutex_lock(&s->lock);
    bool fresh = zp__execute_find_stage(s, m->run, m->stage) == NULL;
    if (fresh)                         /* else the first STAGE stays */
        zp__execute_keep_stage(s, st); /* consumes st */
    pthread_mutex_unlock(&s->lock);
    if (!fresh) {
        zp_pipeline_free(st->p);
        free(st->missing);
        free(st);
    }
}

/* The async loop's thread: a batch of an async task is done. */
static void async_done(void *arg, zp__ajob *aj)
{
    zp__server *s = arg;
    zp__sjob *j = aj->arg;
    if (!aj->dropped && s->async_ob == NULL)
        s->async_ob = zp__outbox_new(s->peer);
    if (!aj->dropped)
        zp__execute_count(s, aj->calls, aj->busy);
    if (!aj->dropped && s->async_ob != NULL) {
        zp__sink to = {s, s->async_ob};
        if (aj->failed)
            zp__execute_post_fail(&to, j, aj->seq,
                                  aj->error ? aj->error : "out of memory",
                                  aj->busy);
        else
            zp__execute_post_async(&to, j, aj);
    }
    msgpack_sbuffer_destroy(&aj->out);
    free(aj->error);
    free(aj);
    zp__execute_done(s, j);
}

/* The stage of an async task, held, or NULL. */
static zp__sstage *async_stage(zp__server *s, uint64_t run, uint32_t index)
{
    pthread_mutex_lock(&s->lock);
    zp__sstage *st = zp__execute_find_stage(s, run, index);
    st = st != NULL && st->p != NULL && st->p->stages[0].afn != NULL
             ? zp__execute_hold(s, run, index)
             : NULL;
    pthread_mutex_unlock(&s->lock);
    return st;
}

/* Hands a batch of an async task to the async loop; false when the loop
 * cannot start. */
static bool submit_async(zp__server *s, zp__sjob *j)
{
    const zp__stage_def *def = &j->held->p->stages[0];
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
static void run_here(zp__server *s, const zp__sjob *j)
{
    zp__sink to = {s, NULL};
    atomic_store(&s->running_since, zp__now_ns());
    pthread_mutex_unlock(&s->io);
    zp__execute_run(s, &to, j);
    pthread_mutex_lock(&s->io);
    atomic_store(&s->running_since, 0);
}

static void on_item(zp__server *s, const zp__msg *m)
{
    zp__sjob here = {.run = m->run,
                     .batch = m->batch,
                     .stage = m->stage,
                     .items = m->data,
                     .len = m->data_len};
    zp__sstage *st = async_stage(s, m->run, m->stage);
    if (st == NULL && s->nthreads == 0) {
        run_here(s, &here);
        return;
    }
    zp__sjob *j = zp__calloc(1, sizeof *j);
    char *items = zp__malloc(m->data_len);
    if (j == NULL || items == NULL) {
        free(j);
        free(items);
        zp__execute_release(s, st);
        return; /* the coordinator re-sends it when this worker dies */
    }
    memcpy(items, m->data, m->data_len);
    *j = here;
    j->items = j->owned = items;
    j->held = st;
    if (st != NULL && submit_async(s, j))
        return;
    zp__execute_release(s, st); /* the batch holds its stage as it runs */
    j->held = NULL;
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
static bool on_message(zp__server *s, const void *body, size_t len)
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

static bool idle(zp__server *s)
{
    pthread_mutex_lock(&s->lock);
    bool yes = zp__queue_empty(&s->jobs) && s->busy == 0;
    pthread_mutex_unlock(&s->lock);
    return yes;
}

static bool orphaned(const zp__server *s)
{
    return s->parent > 0 && getppid() != s->parent;
}

/* The state of the link to the coordinator, for the worker's metrics. */
static void note_link(zp__server *s)
{
    bool up;
    uint64_t links;
    zp__peer_link(s->peer, &up, &links);
    atomic_store(&s->stats->connected, up);
    atomic_store(&s->stats->reconnects, links > 1 ? links - 1 : 0);
}

static void beat_if_due(zp__server *s, uint64_t now)
{
    if (now - s->beat >= HEARTBEAT_MS * ZP__NS_PER_MS) {
        send_simple(s, ZP__HEARTBEAT, NULL);
        s->beat = now;
    }
}

/* The main thread; it holds `io` but while it runs a batch. */
static void serve_link(zp__server *s)
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
        if (now - s->beat >= HEARTBEAT_MS * ZP__NS_PER_MS) {
            pthread_mutex_lock(&s->lock); /* a run's stages once it is over */
            zp__execute_forget(s, now);
            pthread_mutex_unlock(&s->lock);
        }
        beat_if_due(s, now);
        if (now - heard >= SILENCE_MS * ZP__NS_PER_MS && idle(s)) {
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
    zp__server *s = arg;
    struct timespec t;
    pthread_mutex_lock(&s->lock);
    while (!atomic_load(&s->ctl.stop)) {
        zp__deadline_after(&t, HEARTBEAT_MS * ZP__NS_PER_MS / 4);
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

static void stop_threads(zp__server *s)
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

static void server_fini(zp__server *s)
{
    for (zp__qnode *n; (n = zp__queue_pop(&s->jobs)) != NULL;) {
        zp__sjob *j = zp__container_of(n, zp__sjob, node);
        free(j->owned);
        free(j);
    }
    zp__execute_free_stages(s);
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
static int start_threads(zp__server *s)
{
    int n = s->o->threads > 1 ? s->o->threads : 0;
    s->threads = zp__calloc((size_t)n + 1, sizeof *s->threads);
    if (s->threads == NULL)
        return ZP_ENOMEM;
    for (; s->nthreads < n; s->nthreads++)
        if (pthread_create(&s->threads[s->nthreads], NULL, zp__execute_main,
                           s) != 0)
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
    zp__server s = {.o = o, .ctl = {.fail = no_fail}};
    s.stats = o->stats ? o->stats : &s.own;
    char *why = NULL;
    zp__fds_raise_limit(); /* a socket per executor thread, and more */
    if (o->child) {        /* die with the coordinator that spawned us */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        const char *parent = getenv("ZPIPE_WORKER_PARENT");
        s.parent = parent ? (pid_t)atoi(parent) : 0;
    }
    if (zp__cond_init_monotonic(&s.tick) != 0) {
        zp__log(ZP_LOG_ERROR, "zpipe worker: out of memory");
        return 2;
    }
    pthread_mutex_init(&s.lock, NULL);
    pthread_mutex_init(&s.io, NULL);
    pthread_mutex_lock(&s.io);
    pthread_cond_init(&s.cond, NULL);
    catch_signals();
    s.peer = zp__peer_new(o->endpoint, o->server_key, o->secret_key, &why);
    int rc = s.peer ? start_threads(&s) : ZP_EIO;
    if (rc == 0)
        serve_link(&s);
    else
        zp__log(ZP_LOG_ERROR, "zpipe worker: cannot serve %s: %s", o->endpoint,
                why ? why : zp_strerror(rc));
    stop_threads(&s);
    if (s.peer != NULL)
        send_simple(&s, ZP__BYE, signalled ? "signal" : "leaving");
    server_fini(&s);
    free(why);
    return rc == 0 ? 0 : 2;
}
