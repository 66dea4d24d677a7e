/* SPDX-License-Identifier: MIT */
/*
 * Runs, see run.h. A run of n stages has n edges: edge k carries stage k's
 * outputs to stage k+1, and the last one to the caller. Each stage runs as
 * its kind says (coordinator/stage.c picks it; worker/stage.h is the
 * interface): the run asks each kind its shape, builds the edges to fit,
 * then starts, stops, joins and frees the stages through their ops, never
 * asking which kind a stage is. Every socket is made by zp_start before
 * any thread starts (thread creation publishes them), used by exactly one
 * thread while the run goes, and closed by zp_finish after every thread
 * is joined. Stopping (a failure or zp_cancel) sets the stop flag, tells
 * every stage to stop (which wakes producers waiting for credits) and
 * shuts the ZeroMQ context down, which makes every blocking socket call
 * return at once.
 */
#include "coordinator/run.h"

#include <errno.h>
#include <sys/random.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fds.h"
#include "core/value.h"
#include "coordinator/checkpoint.h"
#include "coordinator/metrics.h"
#include "coordinator/privdir.h"
#include "coordinator/progress.h"
#include "coordinator/stage.h"
#include "transport/listener.h"

struct zp_run {
    zp__runctl ctl;              /* first: stages see the run through it      */
    zp_pipeline *p;              /* borrowed                                  */
    pthread_mutex_t lock;        /* guards code, error, zctx, children,
                                    stages, nstarted, tmpdir, listener        */
    int code;                    /* the first error's code, or 0              */
    char *error;                 /* owned; the first error's message          */
    void *zctx;                  /* owned ZeroMQ context; NULL once ended     */
    size_t n;                    /* edges set up                              */
    const zp__stage_ops **kinds; /* owned, p->n; each stage's kind        */
    zp__stage_shape *shapes;     /* owned, p->n                               */
    zp__stage **stages;          /* owned, p->n; NULL until started           */
    size_t nstarted;             /* stages[0..nstarted) may be running        */
    zp_stage_stats *final;       /* owned, n; the statistics once finished    */
    zp__edge *edges;             /* owned, n                                  */
    zp__rx *out;                 /* borrowed from edges[n-1]: the caller's    */
    char *args;                  /* owned packed arguments                    */
    msgpack_zone *args_zone;     /* owned; holds args_obj                     */
    msgpack_object args_obj;
    bool ended;         /* the caller saw the end of the outputs     */
    bool finished;      /* zp_finish has run                         */
    zp__runctl *parent; /* borrowed; the run that started this one   */
    char *tmpdir;       /* owned; the run's private folder, or NULL  */
    char *listen;       /* owned copies of zp_run_opts strings       */
    char *curve_secret;
    char *curve_allow;
    int wait_workers_ms;
    zp_run **children; /* owned array of borrowed nested runs       */
    size_t nchildren;
    bool want_progress;       /* zp_run_opts.progress                    */
    zp__progress *progress;   /* owned; the progress thread, or NULL     */
    char *stats_path;         /* owned copy of zp_run_opts.stats_path    */
    uint64_t started;         /* ns, when the run was started            */
    uint64_t took;            /* ns, from start to the end of teardown   */
    unsigned long id;         /* the run's id on the wire                */
    zp__listener *listener;   /* owned; where remote workers connect, made
                                 for the first remote stage, or NULL     */
    zp__tally **tallies;      /* owned, p->n; each stage's, or NULL  */
    zp__run_metrics *metrics; /* owned; the metrics endpoint, or NULL */
    zp__ckpt ckpt;            /* checkpoints asked for, a resumed cut   */
};

/* What zp_start() returns when not even a run can be allocated: a run
 * that failed, whose every function works, and that nothing frees. */
static zp_run out_of_memory = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .code = ZP_ENOMEM,
    .error = (char *)"cannot start the run: out of memory",
    .ended = true,
    .finished = true,
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
        r->error = msg ? msg : zp__strdup(zp_strerror(code));
        msg = NULL;
    }
    atomic_store(&r->ctl.stop, true);
    zp__zctx_shutdown(r->zctx);
    for (size_t k = 0; k < r->nstarted; k++)
        if (r->stages[k] != NULL)
            r->kinds[k]->stop(r->stages[k]);
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
    r->args = zp__malloc(len ? len : 1);
    r->args_zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (r->args == NULL || r->args_zone == NULL)
        return ZP_ENOMEM;
    memcpy(r->args, args, len);
    if (msgpack_unpack(r->args, len, &off, r->args_zone, &r->args_obj) !=
        MSGPACK_UNPACK_SUCCESS)
        return ZP_EPROTO;
    return 0;
}

static int make_edges(zp_run *r, unsigned long id)
{
    size_t n = r->p->n;
    for (size_t k = 0; k < n; k++) {
        char name[64];
        snprintf(name, sizeof name, "zp-%lu-%zu", id, k);
        const zp__stage_shape *next = k + 1 < n ? &r->shapes[k + 1] : NULL;
        int rc = zp__edge_init(&r->edges[k], r->zctx, name,
                               r->shapes[k].senders, next ? next->receivers : 1,
                               r->p->stages[k].opts.throttle, &r->ctl.stop);
        r->n = k + 1;
        if (next == NULL) /* the caller: one consumer, nothing to balance */
            zp__edge_set_slow(&r->edges[k], false);
        r->edges[k].defer_release = next != NULL && next->late_release;
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* The kind and shape of every stage; the ZeroMQ context they all need. */
static int plan(zp_run *r)
{
    size_t n = r->p->n;
    int sockets = 1;
    bool io = false;
    for (size_t k = 0; k < n; k++) {
        r->kinds[k] = zp__stage_kind(&r->p->stages[k]);
        r->kinds[k]->shape(&r->p->stages[k], k, &r->shapes[k]);
        sockets += r->shapes[k].senders + r->shapes[k].receivers + 2;
        io = io || r->shapes[k].io_thread;
    }
    r->zctx = zp__zctx_new(sockets, io);
    return r->zctx != NULL ? 0 : ZP_ENOMEM;
}

/* Descriptors a run needs beyond its stages': its ZeroMQ context's, its
 * threads' and the caller's next few. */
#define FILES_SLACK 32

/*
 * Whether the descriptors the stages need (an eventfd per edge socket,
 * and what each says it holds besides) fit what the process may open, its
 * soft limit raised to the hard one first; if not, fails the run at once,
 * naming the stage that needs the most, rather than letting it fail on
 * "too many open files" when some socket or worker cannot be made.
 */
static bool files_suffice(zp_run *r)
{
    long total = FILES_SLACK, most = 0;
    size_t big = 0;
    for (size_t k = 0; k < r->p->n; k++) {
        const zp__stage_shape *sh = &r->shapes[k];
        long need = (long)sh->senders + sh->receivers + sh->files;
        total += need;
        if (need > most) {
            most = need;
            big = k;
        }
    }
    zp__fds_raise_limit();
    long limit = zp__fds_limit(), used;
    if (limit < 0 || total <= limit / 2) /* no need to count them */
        return true;
    if ((used = zp__fds_in_use()) > 0)
        total += used;
    if (total <= limit)
        return true;
    failf(r, ZP_EINVAL,
          "task '%s' (workers=%d) needs about %ld open files, and the run "
          "about %ld with those already open, but this process may open "
          "%ld (its limit, ulimit -n, raised to the hard limit): use fewer "
          "workers, or raise the hard limit (ulimit -Hn)",
          r->p->stages[big].name, r->p->stages[big].opts.workers, most, total,
          limit);
    return false;
}

/* The run's private folder, made on first use: 0, or an error (*why). */
static int make_private_dir(zp_run *r, char **why)
{
    char *dir = NULL;
    if (r->tmpdir != NULL)
        return 0;
    int rc = zp__privdir_make(&dir, why);
    pthread_mutex_lock(&r->lock);
    r->tmpdir = dir;
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* Stage `stage`'s share of the run's listener of remote workers, which
 * the first stage that needs one makes, into *hub (the caller owns it).
 * Returns 0, or an error code with *why (malloc'ed, may stay NULL). */
static int listener_hub(zp_run *r, uint32_t stage, zp__hub **hub, char **why)
{
    const char *listen = r->listen ? r->listen : getenv("ZPIPE_LISTEN");
    int rc = 0;
    pthread_mutex_lock(&r->lock);
    if (r->listener == NULL && (listen == NULL || listen[0] == '\0')) {
        *why = zp__strdupf("it has mode=remote but the run listens nowhere: "
                           "set zp_run_opts.listen or $ZPIPE_LISTEN");
        rc = ZP_EINVAL;
    } else if (r->listener == NULL &&
               (r->listener = zp__listener_new(r->zctx, listen, r->curve_secret,
                                               r->curve_allow, r->id, why)) ==
                   NULL) {
        rc = *why != NULL ? ZP_EIO : ZP_ENOMEM;
    }
    zp__listener *l = r->listener;
    pthread_mutex_unlock(&r->lock);
    return rc == 0 ? zp__listener_join(l, stage, hub, why) : rc;
}

/* What stage k's shape asks the run for, into its config. Returns 0, or
 * an error code with *why (malloc'ed, may stay NULL). */
static int provide(zp_run *r, size_t k, zp__stage_cfg *cfg, char **why)
{
    int rc = 0;
    if (r->shapes[k].private_dir && (rc = make_private_dir(r, why)) == 0)
        cfg->private_dir = r->tmpdir;
    cfg->spill = zp__ckpt_slot(&r->ckpt, k);
    if (rc == 0 && r->shapes[k].hub)
        rc = listener_hub(r, (uint32_t)k, &cfg->hub, why);
    return rc;
}

/*
 * Starts stage k. A stage that comes back from a failed start is kept as
 * any other (worker/stage.h): the failure stops the run, which stops it,
 * and teardown joins and destroys it.
 */
static int start_stage(zp_run *r, size_t k)
{
    const zp__stage_def *def = &r->p->stages[k];
    zp__stage_cfg cfg = {.def = def,
                         .run = &r->ctl,
                         .run_id = r->id,
                         .index = (uint32_t)k,
                         .in = k ? &r->edges[k - 1] : NULL,
                         .out = &r->edges[k],
                         .args = &r->args_obj,
                         .zctx = r->zctx,
                         .wait_workers_ms = r->wait_workers_ms};
    char *why = NULL;
    zp__stage *st = NULL;
    int rc = provide(r, k, &cfg, &why);
    if (rc == 0)
        rc = r->kinds[k]->start(&cfg, &st, &why);
    pthread_mutex_lock(&r->lock);
    r->stages[k] = st;
    if (st != NULL)
        r->nstarted = k + 1;
    bool stop = atomic_load(&r->ctl.stop);
    pthread_mutex_unlock(&r->lock);
    if (stop && st != NULL) /* it started after the run had stopped */
        r->kinds[k]->stop(st);
    if (rc != 0)
        failf(r, rc, "task '%s': %s", def->name, why ? why : zp_strerror(rc));
    free(why);
    return rc;
}

/* Builds the run: returns 0, or an error code already reported to it
 * (ZP__REPORTED) or not (any other). */
#define ZP__REPORTED 1

static int build(zp_run *r)
{
    pthread_once(&run_id_once, seed_run_ids);
    r->id = atomic_fetch_add(&next_run_id, 1);
    size_t n = r->p->n;
    r->kinds = zp__calloc(n, sizeof *r->kinds);
    r->shapes = zp__calloc(n, sizeof *r->shapes);
    r->stages = zp__calloc(n, sizeof *r->stages);
    r->edges = zp__calloc(n, sizeof *r->edges);
    r->final = zp__calloc(n, sizeof *r->final);
    if (r->kinds == NULL || r->shapes == NULL || r->stages == NULL ||
        r->edges == NULL || r->final == NULL)
        return ZP_ENOMEM;
    int rc = plan(r);
    if (rc == 0 && !files_suffice(r))
        return ZP__REPORTED;
    if (rc == 0)
        rc = make_edges(r, r->id);
    if (rc != 0)
        return rc;
    r->out = r->edges[n - 1].rx[0];
    zp__ckpt_arm(&r->ckpt, &r->edges[0]);
    for (size_t k = 0; k < n; k++)
        if (start_stage(r, k) != 0)
            return ZP__REPORTED;
    return 0;
}

static void adopt(zp__runctl *parent, zp_run *child)
{
    zp_run *pr = (zp_run *)parent;
    pthread_mutex_lock(&pr->lock);
    zp_run **c = zp__realloc(pr->children, (pr->nchildren + 1) * sizeof *c);
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
    zp_run *r = zp__calloc(1, sizeof *r);
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
    r->listen = o->listen ? zp__strdup(o->listen) : NULL;
    r->curve_secret = o->curve_secret ? zp__strdup(o->curve_secret) : NULL;
    r->curve_allow = o->curve_allow ? zp__strdup(o->curve_allow) : NULL;
    r->stats_path = o->stats_path ? zp__strdup(o->stats_path) : NULL;
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
    r->tallies = zp__calloc(r->n ? r->n : 1, sizeof *r->tallies);
    if (r->tallies == NULL) {
        failf(r, ZP_ENOMEM, "cannot serve metrics: out of memory");
        return;
    }
    for (size_t k = 0; k < r->nstarted; k++)
        if (r->stages[k] != NULL && r->kinds[k]->tally != NULL)
            r->tallies[k] = r->kinds[k]->tally(r->stages[k]);
    int rc = zp__run_metrics_start(&r->metrics, r, r->tallies, r->n, o, &why);
    if (rc != 0)
        failf(r, rc, "%s", why ? why : zp_strerror(rc));
    free(why);
}

/* Reads the checkpoint options; a bad one fails the run. */
static int resume(zp_run *r, const zp_run_opts *o, const char *args, size_t len)
{
    char *why = NULL;
    int rc = zp__ckpt_init(&r->ckpt, o, r->p, args, len, &why);
    if (rc != 0)
        failf(r, rc, "invalid run options: %s", why ? why : zp_strerror(rc));
    free(why);
    return rc;
}

zp_run *zp__run_start_packed(zp_pipeline *p, const char *args, size_t len,
                             const zp_run_opts *o, zp__runctl *parent)
{
    zp_run *r = run_new(p);
    if (r == NULL)
        return &out_of_memory;
    int rc = set_opts(r, o);
    if (rc != 0) {
        failf(r, rc, "invalid run options: %s",
              rc == ZP_EINVAL ? "curve_secret needs curve_allow, the file "
                                "of allowed worker keys"
                              : zp_strerror(rc));
        return r;
    }
    const char *why = zp_pipeline_error(p);
    rc = why ? ZP_EINVAL : load_args(r, args, len);
    if (rc == 0 && parent == NULL && (rc = resume(r, o, args, len)) != 0)
        return r;
    if (rc == 0 && !r->ckpt.done)
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
    else if (rc != 0 && rc != ZP__REPORTED)
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
        if (r == NULL)
            r = &out_of_memory;
        else
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

/* A marker went through the whole run: the caller gets its token. */
static int passed(zp_run *r)
{
    char *why = NULL;
    int rc = zp__ckpt_passed(&r->ckpt, r->out, &r->edges[0], &why);
    if (rc != 0)
        failf(r, rc, "%s", why ? why : zp_strerror(rc));
    free(why);
    return rc;
}

/* The outputs ended: a run that succeeded says so in its last token. */
static void ended(zp_run *r)
{
    pthread_mutex_lock(&r->lock);
    r->ended = true;
    int code = r->code;
    pthread_mutex_unlock(&r->lock);
    char *why = NULL;
    if (code == 0 && zp__ckpt_finished(&r->ckpt, &why) != 0)
        failf(r, ZP_ETASK, "%s", why ? why : zp_strerror(ZP_ETASK));
    free(why);
}

/* 1 with the next output, ZP__AGAIN when none is ready and `wait` is
 * false, 0 otherwise (the end, a failure, a cancellation). */
static int next_output(zp_run *r, bool wait, const msgpack_object **out)
{
    uint64_t seq;
    if (r != NULL && r->ckpt.done && !r->ended) /* resumed when finished */
        ended(r);
    if (r == NULL || r->out == NULL || r->ended || r->finished ||
        atomic_load(&r->ctl.stop))
        return 0;
    int rc;
    while ((rc = zp__rx_next(r->out, wait, out, &seq)) == ZP__MARK)
        if (passed(r) != 0)
            return 0;
    if (rc == 1 || rc == ZP__AGAIN)
        return rc;
    if (rc == 0) {
        ended(r);
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
    const zp__stage_def *def = &r->p->stages[i];
    memset(st, 0, sizeof *st);
    st->task = def->name;
    st->workers = def->opts.workers;
    st->throttle = (int)r->edges[i].limit;
    st->queue_hwm = atomic_load(&r->edges[i].hwm);
    int64_t queued = atomic_load(&r->edges[i].queued);
    st->queue_items = queued > 0 ? (uint64_t)queued : 0;
    if (r->stages[i] != NULL)
        r->kinds[i]->stats(r->stages[i], st);
}

void zp__run_remove_tmpdir(const zp_run *r)
{
    if (r != NULL)
        zp__privdir_remove(r->tmpdir);
}

static void teardown(zp_run *r)
{
    for (size_t k = 0; k < r->nstarted; k++)
        if (r->stages[k] != NULL)
            r->kinds[k]->join(r->stages[k]);
    for (size_t k = 0; r->out != NULL && k < r->n; k++)
        stats_of(r, k, &r->final[k]);
    r->took = zp__now_ns() - r->started;
    pthread_mutex_lock(&r->lock);
    int code = r->code;
    pthread_mutex_unlock(&r->lock);
    /* Before anything it may be reading goes. */
    zp__progress_stop(&r->progress, r->final, r->n, code, r->took);
    zp__run_metrics_stop(&r->metrics, r->final, r->n);
    for (size_t k = 0; k < r->nstarted; k++)
        if (r->stages[k] != NULL)
            r->kinds[k]->destroy(&r->stages[k]);
    r->nstarted = 0;
    zp__listener_destroy(&r->listener); /* after the stages' hubs */
    for (size_t k = 0; k < r->n; k++)
        zp__edge_fini(&r->edges[k]);
    pthread_mutex_lock(&r->lock);
    void *zctx = r->zctx;
    r->zctx = NULL;
    pthread_mutex_unlock(&r->lock);
    zp__zctx_term(zctx);
    zp__privdir_remove(r->tmpdir);
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
        r->error = why ? why : zp__strdup(zp_strerror(rc));
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
    if (e == NULL && r->code != 0) /* its message could not be allocated */
        e = zp_strerror(r->code);
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
        run_fail(&r->ctl, ZP_ECANCELED, zp__strdup("the run was cancelled"));
}

void zp_run_free(zp_run *r)
{
    if (r == NULL || r == &out_of_memory)
        return;
    if (!r->finished) {
        zp_cancel(r);
        zp_finish(r);
    }
    if (r->parent != NULL)
        zp__run_detach(r, r->parent);
    free(r->kinds);
    free(r->shapes);
    free(r->tallies);
    free(r->stages);
    free(r->final);
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
    zp__ckpt_fini(&r->ckpt);
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
