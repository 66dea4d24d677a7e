/* SPDX-License-Identifier: MIT */
/*
 * Runs, see run.h. A run of n stages has n edges: edge k carries stage k's
 * outputs to stage k+1, and the last one to the caller. Every socket is
 * made by zp_start before any thread starts (thread creation publishes
 * them), used by exactly one thread while the run goes, and closed by
 * zp_finish after every thread is joined. Stopping (a failure or
 * zp_cancel) sets the stop flag, wakes producers waiting for credits and
 * shuts the ZeroMQ context down, which makes every blocking socket call
 * return at once.
 */
#include "coordinator/run.h"

#include <dirent.h>
#include <sys/random.h>
#include <unistd.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "coordinator/dispatch.h"
#include "coordinator/metrics.h"
#include "coordinator/progress.h"
#include "core/value.h"
#include "worker/call.h"

struct zp_run {
    zp__runctl ctl;          /* first: workers see the run through it     */
    zp_pipeline *p;          /* borrowed                                  */
    pthread_mutex_t lock;    /* guards code, error, zctx, children        */
    int code;                /* the first error's code, or 0              */
    char *error;             /* owned; the first error's message          */
    void *zctx;              /* owned ZeroMQ context; NULL once ended     */
    size_t n;                /* stages (and edges) set up                 */
    zp__stage_rt *stages;    /* owned, n                                  */
    zp_stage_stats *final;   /* owned, n; the statistics once finished    */
    zp__edge *edges;         /* owned, n                                  */
    pthread_t *threads;      /* owned                                     */
    size_t nthreads;         /* started                                   */
    zp__rx *out;             /* borrowed from edges[n-1]: the caller's    */
    char *args;              /* owned packed arguments                    */
    msgpack_zone *args_zone; /* owned; holds args_obj                     */
    msgpack_object args_obj;
    bool ended;              /* the caller saw the end of the outputs     */
    bool finished;           /* zp_finish has run                         */
    zp__runctl *parent;      /* borrowed; the run that started this one   */
    zp__dispatch **dispatch; /* owned, n; NULL for thread stages      */
    char *tmpdir;            /* owned; process workers' endpoints     */
    char *listen;            /* owned copies of zp_run_opts strings   */
    char *curve_secret;
    char *curve_allow;
    int wait_workers_ms;
    zp_run **children; /* owned array of borrowed nested runs       */
    size_t nchildren;
    bool want_progress;     /* zp_run_opts.progress                    */
    zp__progress *progress; /* owned; the progress thread, or NULL     */
    char *stats_path;       /* owned copy of zp_run_opts.stats_path    */
    uint64_t started;       /* ns, when the run was started            */
    uint64_t took;          /* ns, from start to the end of teardown   */
    /* owned; the metrics endpoint, or NULL */
    zp__run_metrics *metrics;
};

/* Run ids start at a random point in every process: a remote worker that
 * outlives its coordinator must never mistake a new coordinator's run for
 * the one it served (it keys stage settings by run id). */
static _Atomic unsigned long next_run_id;
static pthread_once_t run_id_once = PTHREAD_ONCE_INIT;

static void seed_run_ids(void)
{
    unsigned long seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        seed = (unsigned long)zp__now_ns() ^ ((unsigned long)getpid() << 32);
    atomic_store(&next_run_id, seed >> 1);
}

static void run_fail(zp__runctl *ctl, int code, char *msg)
{
    zp_run *r = (zp_run *)ctl;
    pthread_mutex_lock(&r->lock);
    if (r->code == 0) {
        r->code = code;
        r->error = msg ? msg : strdup(zp_strerror(code));
        msg = NULL;
    }
    atomic_store(&r->ctl.stop, true);
    zp__zctx_shutdown(r->zctx);
    for (size_t k = 0; k < r->n; k++)
        zp__edge_wake(&r->edges[k]);
    for (size_t i = 0; i < r->nchildren; i++)
        zp_cancel(r->children[i]);
    pthread_mutex_unlock(&r->lock);
    free(msg);
}

static void failf(zp_run *r, int code, const char *fmt, ...) ZP__PRINTF(3, 4);
static void failf(zp_run *r, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    run_fail(&r->ctl, code, zp__vstrdupf(fmt, ap));
    va_end(ap);
}

/* Unpacks the copied arguments into args_obj. */
static int load_args(zp_run *r, const char *args, size_t len)
{
    size_t off = 0;
    r->args = malloc(len ? len : 1);
    r->args_zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (r->args == NULL || r->args_zone == NULL)
        return ZP_ENOMEM;
    memcpy(r->args, args, len);
    if (msgpack_unpack(r->args, len, &off, r->args_zone, &r->args_obj) !=
        MSGPACK_UNPACK_SUCCESS)
        return ZP_EPROTO;
    return 0;
}

/* Whether the stage's workers are other processes (a dispatcher). */
static bool elsewhere(const zp__stage_def *s)
{
    return s->opts.mode != ZP_INPROC;
}

/* Whether the stage has one worker in this process: a dispatcher, or an
 * async stage's loop. */
static bool single(const zp__stage_def *s)
{
    return elsewhere(s) || s->afn != NULL;
}

static int edge_producers(const zp__stage_def *s, size_t k)
{
    return single(s) || (k > 0 && s->opts.ordered) ? 1 : s->opts.workers;
}

static int edge_consumers(const zp__stage_def *s)
{
    return single(s) ? 1 : s->opts.workers;
}

static int make_edges(zp_run *r, unsigned long id)
{
    const zp__stage_def *s = r->p->stages;
    size_t n = r->p->n;
    for (size_t k = 0; k < n; k++) {
        char name[64];
        snprintf(name, sizeof name, "zp-%lu-%zu", id, k);
        int consumers = k + 1 < n ? edge_consumers(&s[k + 1]) : 1;
        int rc =
            zp__edge_init(&r->edges[k], r->zctx, name, edge_producers(&s[k], k),
                          consumers, s[k].opts.throttle, &r->ctl.stop);
        r->n = k + 1;
        if (k + 1 == n) /* the caller: one consumer, nothing to balance */
            zp__edge_set_slow(&r->edges[k], false);
        r->edges[k].defer_release = k + 1 < n && s[k + 1].opts.ordered &&
                                    !s[k + 1].opts.join &&
                                    !elsewhere(&s[k + 1]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int make_stages(zp_run *r)
{
    for (size_t k = 0; k < r->n; k++) {
        int rc = zp__stage_init(&r->stages[k], &r->p->stages[k], &r->ctl,
                                k ? &r->edges[k - 1] : NULL, &r->edges[k],
                                k ? NULL : &r->args_obj);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int start_threads(zp_run *r)
{
    size_t total = 0;
    for (size_t k = 0; k < r->n; k++)
        total += (size_t)r->stages[k].nworkers;
    r->threads = calloc(total, sizeof *r->threads);
    if (r->threads == NULL)
        return ZP_ENOMEM;
    for (size_t k = 0; k < r->n; k++)
        for (int j = 0; j < r->stages[k].nworkers; j++) {
            zp__worker *w = zp__stage_worker(&r->stages[k], j);
            if (pthread_create(&r->threads[r->nthreads], NULL, zp__worker_main,
                               w) != 0)
                return ZP_EIO;
            r->nthreads++;
        }
    return 0;
}

/* Sockets of the run: a sender per producer, a receiver per consumer. */
static int socket_count(const zp_pipeline *p)
{
    int total = 1;
    for (size_t k = 0; k < p->n; k++)
        total += edge_producers(&p->stages[k], k) +
                 edge_consumers(&p->stages[k]) + 2;
    return total;
}

/* Where the workers of stage k connect. */
static int endpoint_of(zp_run *r, size_t k, char *out, size_t len)
{
    if (r->p->stages[k].opts.mode == ZP_PROCESS) {
        if (r->tmpdir == NULL) {
            char tmpl[] = "/tmp/zpipe-XXXXXX"; /* mkdtemp makes it 0700 */
            const char *dir = mkdtemp(tmpl);
            if (dir == NULL || (r->tmpdir = strdup(dir)) == NULL)
                return ZP_EIO;
        }
        snprintf(out, len, "ipc://%s/s%zu", r->tmpdir, k);
        return 0;
    }
    const char *listen = r->listen ? r->listen : getenv("ZPIPE_LISTEN");
    if (listen == NULL || listen[0] == '\0')
        return ZP_EINVAL;
    snprintf(out, len, "%s", listen);
    return 0;
}

static int start_dispatcher(zp_run *r, size_t k, unsigned long id)
{
    char endpoint[512];
    char *why = NULL;
    const zp__stage_def *def = &r->p->stages[k];
    int rc = endpoint_of(r, k, endpoint, sizeof endpoint);
    if (rc == ZP_EINVAL) {
        failf(r, rc,
              "task '%s' has mode=remote but the run listens "
              "nowhere: set zp_run_opts.listen or $ZPIPE_LISTEN",
              def->name);
        return rc;
    }
    zp__dispatch_cfg cfg = {.def = def,
                            .run = &r->ctl,
                            .run_id = id,
                            .stage = (uint32_t)k,
                            .in = k ? &r->edges[k - 1] : NULL,
                            .out = &r->edges[k],
                            .args = &r->args_obj,
                            .zctx = r->zctx,
                            .endpoint = endpoint,
                            .curve_secret = r->curve_secret,
                            .curve_allow = r->curve_allow,
                            .wait_workers_ms = r->wait_workers_ms};
    if (rc == 0 && (r->dispatch[k] = zp__dispatch_new(&cfg, &why)) == NULL)
        rc = ZP_EIO;
    if (rc != 0)
        failf(r, rc, "task '%s': %s", def->name, why ? why : zp_strerror(rc));
    free(why);
    return rc;
}

static int start_dispatchers(zp_run *r, unsigned long id)
{
    int remote = 0;
    for (size_t k = 0; k < r->n; k++)
        remote += r->p->stages[k].opts.mode == ZP_REMOTE;
    if (remote > 1) {
        failf(r, ZP_EINVAL,
              "this version serves one remote stage per run "
              "(it listens on one endpoint); %d were given",
              remote);
        return ZP_EINVAL;
    }
    for (size_t k = 0; k < r->n; k++)
        if (elsewhere(&r->p->stages[k]) && start_dispatcher(r, k, id) != 0)
            return ZP_EINVAL; /* already reported */
    return 0;
}

static bool any_elsewhere(const zp_pipeline *p)
{
    for (size_t k = 0; k < p->n; k++)
        if (elsewhere(&p->stages[k]))
            return true;
    return false;
}

static int build(zp_run *r)
{
    pthread_once(&run_id_once, seed_run_ids);
    unsigned long id = atomic_fetch_add(&next_run_id, 1);
    size_t n = r->p->n;
    r->zctx = zp__zctx_new(socket_count(r->p), any_elsewhere(r->p));
    r->dispatch = calloc(n, sizeof *r->dispatch);
    r->edges = calloc(n, sizeof *r->edges);
    r->stages = calloc(n, sizeof *r->stages);
    r->final = calloc(n, sizeof *r->final);
    if (r->zctx == NULL || r->edges == NULL || r->stages == NULL ||
        r->final == NULL || r->dispatch == NULL)
        return ZP_ENOMEM;
    int rc = make_edges(r, id);
    if (rc == 0)
        rc = make_stages(r);
    if (rc == 0) {
        r->out = r->edges[n - 1].rx[0];
        rc = start_threads(r);
    }
    if (rc == 0)
        rc = start_dispatchers(r, id);
    return rc;
}

static void adopt(zp__runctl *parent, zp_run *child)
{
    zp_run *pr = (zp_run *)parent;
    pthread_mutex_lock(&pr->lock);
    zp_run **c = realloc(pr->children, (pr->nchildren + 1) * sizeof *c);
    if (c != NULL) {
        pr->children = c;
        pr->children[pr->nchildren++] = child;
        child->parent = parent;
    }
    bool stop = c == NULL || atomic_load(&parent->stop);
    pthread_mutex_unlock(&pr->lock);
    if (stop)
        zp_cancel(child);
}

void zp__run_detach(zp_run *child, zp__runctl *parent)
{
    zp_run *pr = (zp_run *)parent;
    pthread_mutex_lock(&pr->lock);
    for (size_t i = 0; i < pr->nchildren; i++)
        if (pr->children[i] == child)
            pr->children[i] = pr->children[--pr->nchildren];
    pthread_mutex_unlock(&pr->lock);
    child->parent = NULL;
}

static zp_run *run_new(zp_pipeline *p)
{
    zp_run *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->ctl.fail = run_fail;
    r->p = p;
    r->started = zp__now_ns();
    pthread_mutex_init(&r->lock, NULL);
    return r;
}

/* Keeps copies of the options' strings. */
static int set_opts(zp_run *r, const zp_run_opts *o)
{
    r->wait_workers_ms = ZP_DEFAULT_WAIT_WORKERS_MS;
    if (o == NULL)
        return 0;
    if (o->wait_workers_ms > 0)
        r->wait_workers_ms = o->wait_workers_ms;
    r->want_progress = o->progress;
    r->listen = o->listen ? strdup(o->listen) : NULL;
    r->curve_secret = o->curve_secret ? strdup(o->curve_secret) : NULL;
    r->curve_allow = o->curve_allow ? strdup(o->curve_allow) : NULL;
    r->stats_path = o->stats_path ? strdup(o->stats_path) : NULL;
    if ((o->listen && !r->listen) || (o->curve_secret && !r->curve_secret) ||
        (o->curve_allow && !r->curve_allow) ||
        (o->stats_path && !r->stats_path))
        return ZP_ENOMEM;
    return r->curve_secret && !r->curve_allow ? ZP_EINVAL : 0;
}

/* The metrics endpoint, if asked for; failing to start it fails the run. */
static void start_metrics(zp_run *r, const zp_run_opts *o)
{
    char *why = NULL;
    int rc = zp__run_metrics_start(&r->metrics, r, r->dispatch, r->n, o, &why);
    if (rc != 0)
        failf(r, rc, "%s", why ? why : zp_strerror(rc));
    free(why);
}

zp_run *zp__run_start_packed(zp_pipeline *p, const char *args, size_t len,
                             const zp_run_opts *o, zp__runctl *parent)
{
    zp_run *r = run_new(p);
    if (r == NULL)
        return NULL;
    if (set_opts(r, o) != 0) {
        failf(r, ZP_EINVAL,
              "invalid run options: curve_secret needs "
              "curve_allow, the file of allowed worker keys");
        return r;
    }
    const char *why = zp_pipeline_error(p);
    int rc = why ? ZP_EINVAL : load_args(r, args, len);
    if (rc == 0)
        rc = build(r);
    if (rc == 0 && r->want_progress)
        r->progress = zp__progress_start(r, o->progress_total);
    if (rc == 0 && parent == NULL)
        start_metrics(r, o);
    /* Only now may the parent's stop reach this run: its sockets exist. */
    if (parent != NULL)
        adopt(parent, r);
    if (why != NULL)
        failf(r, rc, "invalid pipeline: %s", why);
    else if (rc == ZP_EIO)
        failf(r, rc,
              "cannot start the run: creating its sockets and "
              "threads failed: %s",
              strerror(errno));
    else if (rc != 0)
        failf(r, rc, "cannot start the run: %s", zp_strerror(rc));
    return r;
}

zp_run *zp_start_with(zp_pipeline *p, const char *args_json,
                      const zp_run_opts *o)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char *why = NULL;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = zp__json_pack_args(args_json, &pk, &why);
    zp_run *r;
    if (rc == 0) {
        r = zp__run_start_packed(p, sb.data, sb.size, o, NULL);
    } else {
        r = run_new(p);
        if (r != NULL)
            failf(r, rc, "invalid run arguments: %s",
                  why ? why : zp_strerror(rc));
    }
    free(why);
    msgpack_sbuffer_destroy(&sb);
    return r;
}

zp_run *zp_start(zp_pipeline *p, const char *args_json)
{
    return zp_start_with(p, args_json, NULL);
}

/* 1 with the next output, ZP__AGAIN when none is ready and `wait` is
 * false, 0 otherwise (the end, a failure, a cancellation). */
static int next_output(zp_run *r, bool wait, const msgpack_object **out)
{
    uint64_t seq;
    if (r == NULL || r->out == NULL || r->ended || r->finished ||
        atomic_load(&r->ctl.stop))
        return 0;
    int rc = zp__rx_next(r->out, wait, out, &seq);
    if (rc == 1 || rc == ZP__AGAIN)
        return rc;
    if (rc == 0) {
        pthread_mutex_lock(&r->lock);
        r->ended = true;
        pthread_mutex_unlock(&r->lock);
    } else if (rc != ZP_ECANCELED)
        failf(r, rc, "reading the run's outputs: %s", zp_strerror(rc));
    return 0;
}

bool zp_run_next(zp_run *r, const msgpack_object **out)
{
    return next_output(r, true, out) == 1;
}

int zp__run_poll(zp_run *r, const msgpack_object **out)
{
    return next_output(r, false, out);
}

static void stats_of(zp_run *r, size_t i, zp_stage_stats *st)
{
    zp__stage_rt *s = &r->stages[i];
    memset(st, 0, sizeof *st);
    st->task = s->def->name;
    st->workers = s->def->opts.workers;
    st->throttle = (int)r->edges[i].limit;
    st->queue_hwm = atomic_load(&r->edges[i].hwm);
    int64_t queued = atomic_load(&r->edges[i].queued);
    st->queue_items = queued > 0 ? (uint64_t)queued : 0;
    zp__stage_stats(s, st);
    if (r->dispatch[i] != NULL) {
        st->workers = s->def->opts.workers;
        zp__dispatch_stats(r->dispatch[i], st);
    }
}

/* Removes the process workers' directory and what ZeroMQ left in it. */
static void remove_tmpdir(const char *path)
{
    DIR *dir = opendir(path);
    struct dirent *e;
    char file[512];
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        unlink(file);
    }
    if (dir != NULL)
        closedir(dir);
    rmdir(path);
}

void zp__run_remove_tmpdir(const zp_run *r)
{
    if (r != NULL && r->tmpdir != NULL)
        remove_tmpdir(r->tmpdir);
}

static void teardown(zp_run *r)
{
    for (size_t i = 0; i < r->nthreads; i++)
        pthread_join(r->threads[i], NULL);
    for (size_t k = 0; r->dispatch != NULL && k < r->n; k++)
        zp__dispatch_join(r->dispatch[k]);
    for (size_t k = 0; r->out != NULL && k < r->n; k++)
        stats_of(r, k, &r->final[k]);
    r->took = zp__now_ns() - r->started;
    pthread_mutex_lock(&r->lock);
    int code = r->code;
    pthread_mutex_unlock(&r->lock);
    /* Before anything it may be reading goes. */
    zp__progress_stop(&r->progress, r->final, r->n, code, r->took);
    zp__run_metrics_stop(&r->metrics, r->final, r->n);
    for (size_t k = 0; r->dispatch != NULL && k < r->n; k++)
        zp__dispatch_destroy(&r->dispatch[k]);
    for (size_t k = 0; k < r->n; k++) {
        zp__stage_fini(&r->stages[k]);
        zp__edge_fini(&r->edges[k]);
    }
    pthread_mutex_lock(&r->lock);
    void *zctx = r->zctx;
    r->zctx = NULL;
    pthread_mutex_unlock(&r->lock);
    zp__zctx_term(zctx);
    if (r->tmpdir != NULL)
        remove_tmpdir(r->tmpdir);
}

/* Writes the statistics file, if asked for; its failure fails the run
 * only when nothing else did. Called once teardown left no thread that
 * could fail the run at the same time. */
static void write_stats(zp_run *r)
{
    char *why = NULL;
    int rc = zp__stats_write(r->stats_path, r->final, zp_run_stages(r), r->code,
                             r->error, r->took, &why);
    if (rc != 0 && r->code == 0) {
        r->code = rc;
        r->error = why ? why : strdup(zp_strerror(rc));
        why = NULL;
    }
    free(why);
}

int zp_finish(zp_run *r)
{
    const msgpack_object *o;
    if (r == NULL)
        return ZP_EINVAL;
    if (!r->finished) {
        while (zp_run_next(r, &o))
            ; /* outputs nobody asked for: the run still runs to its end */
        teardown(r);
        r->finished = true;
        if (r->stats_path != NULL)
            write_stats(r);
    }
    return r->code;
}

const char *zp_error(zp_run *r)
{
    if (r == NULL)
        return "the run is NULL (out of memory)";
    pthread_mutex_lock(&r->lock);
    const char *e = r->error;
    pthread_mutex_unlock(&r->lock);
    return e;
}

void zp_cancel(zp_run *r)
{
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->lock);
    bool live = r->zctx != NULL && !r->ended;
    pthread_mutex_unlock(&r->lock);
    if (live)
        run_fail(&r->ctl, ZP_ECANCELED, strdup("the run was cancelled"));
}

void zp_run_free(zp_run *r)
{
    if (r == NULL)
        return;
    if (!r->finished) {
        zp_cancel(r);
        zp_finish(r);
    }
    if (r->parent != NULL)
        zp__run_detach(r, r->parent);
    free(r->threads);
    free(r->stages);
    free(r->final);
    free(r->dispatch);
    free(r->tmpdir);
    free(r->listen);
    free(r->curve_secret);
    free(r->curve_allow);
    free(r->stats_path);
    free(r->edges);
    free(r->args);
    if (r->args_zone != NULL)
        msgpack_zone_free(r->args_zone);
    free(r->children);
    free(r->error);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

size_t zp_run_stages(zp_run *r)
{
    return r && r->out ? r->n : 0;
}

int zp_run_stats(zp_run *r, size_t i, zp_stage_stats *st)
{
    if (r == NULL || r->out == NULL || i >= r->n || st == NULL)
        return ZP_EINVAL;
    if (r->finished)
        *st = r->final[i];
    else
        stats_of(r, i, st);
    return 0;
}
