/* SPDX-License-Identifier: MIT */
/*
 * Pipelines: building, composing, validating and freeing the stage list.
 * Part of core. Every constructor returns a pipeline, never NULL; problems
 * are recorded in it and surface through zp_pipeline_error() and any run,
 * as Pyper raises them when a pipeline is built.
 */
#include "core/pipeline.h"

#include <assert.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/value.h"

static void check_first_stage(zp_pipeline *p);

/* The message of an error whose own message could not be allocated; never
 * freed. */
static char out_of_memory[] = "out of memory";

/* Returned when even an error pipeline cannot be allocated. */
static zp_pipeline oom_pipeline = {NULL, 0, out_of_memory, NULL};

/* Frees a message unless it is out_of_memory. */
static void free_message(char *msg)
{
    if (msg != out_of_memory)
        free(msg);
}

static void stage_fini(zp__stage_def *s)
{
    free(s->name);
    free(s->bind_json);
    free(s->pool);
    if (s->bind_zone != NULL)
        msgpack_zone_free(s->bind_zone);
    zp_pipeline_free(s->inner);
}

void zp_pipeline_free(zp_pipeline *p)
{
    if (p == NULL || p == &oom_pipeline)
        return;
    for (size_t i = 0; i < p->n; i++)
        stage_fini(&p->stages[i]);
    free(p->stages);
    free_message(p->error);
    free_message(p->first_error);
    free(p);
}

int zp__pipeline_fail(zp_pipeline *p, const char *fmt, ...)
{
    if (p->error != NULL || p == &oom_pipeline)
        return ZP_EINVAL;
    va_list ap;
    va_start(ap, fmt);
    p->error = zp__vstrdupf(fmt, ap);
    va_end(ap);
    if (p->error == NULL)
        p->error = out_of_memory;
    return ZP_EINVAL;
}

static int check_range(zp_pipeline *p, const char *name, const char *what,
                       int v, int min, int max)
{
    if (v >= min && v <= max)
        return 0;
    return zp__pipeline_fail(p,
                             "task '%s': %s must be between %d and %d, got %d",
                             name, what, min, max, v);
}

/* The rules for a stage in another process (mode=process or remote). */
static int check_elsewhere(zp_pipeline *p, const char *name, const zp_opts *o)
{
    const char *mode = o->mode == ZP_PROCESS ? "process" : "remote";
    if (o->user != NULL)
        return zp__pipeline_fail(p,
                                 "task '%s': a user pointer cannot reach "
                                 "mode=%s workers, which run in other "
                                 "processes; pass data with bind instead",
                                 name, mode);
    if (o->join)
        return zp__pipeline_fail(p,
                                 "task '%s': a join task runs in the "
                                 "coordinator's process and cannot have "
                                 "mode=%s",
                                 name, mode);
    return 0;
}

bool zp__pool_name_ok(const char *s, size_t len)
{
    if (len == 0 || len > ZP__POOL_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

/* A pool takes remote workers only, and is named as workers name theirs. */
static int check_pool(zp_pipeline *p, const char *name, const zp_opts *o)
{
    if (o->pool == NULL)
        return 0;
    if (!zp__pool_name_ok(o->pool, strlen(o->pool)))
        return zp__pipeline_fail(p,
                                 "task '%s': bad pool name '%.80s': expected "
                                 "1 to %d characters of A-Z a-z 0-9 _ . -",
                                 name, o->pool, ZP__POOL_MAX);
    if (o->mode != ZP_REMOTE)
        return zp__pipeline_fail(p,
                                 "task '%s': pool '%s' needs mode=remote: "
                                 "only remote workers join pools (zpipe "
                                 "worker --pool %s)",
                                 name, o->pool, o->pool);
    return 0;
}

static int check_opts(zp_pipeline *p, const char *name, const zp_opts *o)
{
    int rc = check_range(p, name, "workers", o->workers, 0, 1 << 20);
    rc = rc ? rc : check_range(p, name, "throttle", o->throttle, 0, 1 << 30);
    rc = rc ? rc : check_range(p, name, "retries", o->retries, 0, 1 << 20);
    rc =
        rc ? rc : check_range(p, name, "timeout_ms", o->timeout_ms, 0, 1 << 30);
    rc = rc ? rc
            : check_range(p, name, "on_error", o->on_error, ZP_FAIL, ZP_SKIP);
    rc = rc ? rc : check_range(p, name, "mode", o->mode, ZP_INPROC, ZP_REMOTE);
    rc = rc ? rc : check_pool(p, name, o);
    if (rc != 0)
        return rc;
    if (o->join && (o->ordered || o->retries > 0 || o->on_error == ZP_SKIP))
        return zp__pipeline_fail(
            p,
            "task '%s': join cannot be combined with %s: a join task reads "
            "the stream once, in one call, so there is no item to %s",
            name,
            o->ordered   ? "ordered"
            : o->retries ? "retries"
                         : "on_error=skip",
            o->ordered   ? "order"
            : o->retries ? "retry"
                         : "skip");
    if (o->mode != ZP_INPROC)
        return check_elsewhere(p, name, o);
    if (o->timeout_ms != 0)
        return zp__pipeline_fail(
            p,
            "task '%s': timeout_ms applies to process and remote workers "
            "only; a thread cannot be stopped in the middle of an item",
            name);
    return 0;
}

static int set_bind(zp_pipeline *p, zp__stage_def *s, const char *bind)
{
    char *why = NULL;
    s->bind_json = zp__strdup(bind);
    s->bind_zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    if (s->bind_json == NULL || s->bind_zone == NULL)
        return zp__pipeline_fail(p, "out of memory");
    s->opts.bind = s->bind_json;
    int rc = zp__json_to_object(bind, s->bind_zone, &s->bound, &why);
    if (rc != 0)
        zp__pipeline_fail(p, "task '%s': bind is not valid JSON: %s", s->name,
                          why ? why : "out of memory");
    free(why);
    return rc;
}

/* Workers in other processes find a task by its name. */
static void check_registered(zp_pipeline *p, const zp__stage_def *s)
{
    const char *mode = s->opts.mode == ZP_PROCESS ? "process" : "remote";
    if (s->inner != NULL)
        zp__pipeline_fail(p,
                          "task '%s': a nested pipeline runs in the "
                          "coordinator's process and cannot have mode=%s",
                          s->name, mode);
    else if (zp_lookup(s->name) != s->fn || zp_lookup_async(s->name) != s->afn)
        zp__pipeline_fail(p,
                          "task '%s': mode=%s workers find tasks by name, "
                          "but no task is registered under that name "
                          "(declare it with %s)",
                          s->name, mode, s->afn ? "ZP_ASYNC_TASK" : "ZP_TASK");
}

static void resolve_defaults(zp_opts *o)
{
    if (o->workers == 0)
        o->workers = 1;
    if (o->throttle == 0)
        o->throttle = ZP_DEFAULT_THROTTLE;
}

/* The stage's own copy of the pool's name, if any. */
static int copy_pool(zp_pipeline *p, zp__stage_def *s, const char *pool)
{
    if (pool != NULL && (s->opts.pool = s->pool = zp__strdup(pool)) == NULL)
        return zp__pipeline_fail(p, "out of memory");
    return 0;
}

/* Checks a stage whose name is set; `name` is what the caller gave. */
static void check_stage(zp_pipeline *p, zp__stage_def *s, const char *name,
                        const zp_opts *opts, bool remote)
{
    if (remote && (name == NULL || name[0] == '\0'))
        zp__pipeline_fail(p, "zp_remote_task: the task name is %s",
                          name ? "empty" : "NULL");
    else if (!remote && (s->fn == NULL) == (s->afn == NULL))
        zp__pipeline_fail(p, "task '%s': the task function is NULL", s->name);
    else if (opts != NULL && opts->size != sizeof(zp_opts))
        zp__pipeline_fail(p,
                          "task '%s': zp_opts built for another version of "
                          "zpipe (size %zu, expected %zu)",
                          s->name, opts->size, sizeof(zp_opts));
    else if (s->afn != NULL && s->opts.join)
        zp__pipeline_fail(p,
                          "task '%s': an async task cannot be a join task: "
                          "zp_next() waits for the stream and would block "
                          "the event loop; make the join task a sync one",
                          s->name);
    else if (copy_pool(p, s, opts ? opts->pool : NULL) == 0 &&
             check_opts(p, s->name, &s->opts) == 0 && opts && opts->bind)
        set_bind(p, s, opts->bind);
    /* Only remote-only stages may lack the task here. */
    if (p->error == NULL && s->opts.mode != ZP_INPROC && !remote)
        check_registered(p, s);
}

/* A stage of `fn` or `afn`, or of neither for a remote-only one. */
static zp_pipeline *new_stage(const char *name, zp_task_fn fn, zp_async_fn afn,
                              const zp_opts *opts, zp_pipeline *inner,
                              bool remote)
{
    zp_pipeline *p = zp__calloc(1, sizeof *p);
    zp__stage_def *s = zp__calloc(1, sizeof *s);
    if (p == NULL || s == NULL) {
        free(p);
        free(s);
        zp_pipeline_free(inner);
        return &oom_pipeline;
    }
    p->stages = s;
    p->n = 1;
    s->inner = inner;
    s->fn = fn;
    s->afn = afn;
    s->name = zp__strdup(name ? name : "(null)");
    if (opts != NULL && opts->size == sizeof(zp_opts)) /* else: an error */
        s->opts = *opts;
    s->opts.size = sizeof(zp_opts);
    s->opts.bind = NULL; /* the copies, or nothing of the caller's */
    s->opts.pool = NULL;
    if (remote)
        s->opts.mode = ZP_REMOTE;
    if (s->name == NULL)
        zp__pipeline_fail(p, "out of memory");
    else
        check_stage(p, s, name, opts, remote);
    resolve_defaults(&s->opts);
    check_first_stage(p);
    return p;
}

zp_pipeline *zp__pipeline_stage(const char *name, zp_task_fn fn,
                                zp_async_fn afn, const zp_opts *opts,
                                zp_pipeline *inner)
{
    return new_stage(name, fn, afn, opts, inner, false);
}

zp_pipeline *zp_remote_task_new(const char *name, const zp_opts *opts)
{
    return new_stage(name, NULL, NULL, opts, NULL, true);
}

zp_pipeline *zp_task_new(const char *name, zp_task_fn fn, const zp_opts *opts)
{
    return zp__pipeline_stage(name, fn, NULL, opts, NULL);
}

zp_pipeline *zp_async_task_new(const char *name, zp_async_fn fn,
                               const zp_opts *opts)
{
    return zp__pipeline_stage(name, NULL, fn, opts, NULL);
}

/* Moves the stages of `next` to the end of `p`, then frees `next`. */
static void append(zp_pipeline *p, zp_pipeline *next)
{
    if (next->error != NULL)
        zp__pipeline_fail(p, "%s", next->error);
    zp__stage_def *s = zp__realloc(p->stages, (p->n + next->n) * sizeof *s);
    if (s == NULL) {
        zp__pipeline_fail(p, "out of memory");
        zp_pipeline_free(next);
        return;
    }
    memcpy(s + p->n, next->stages, next->n * sizeof *s);
    p->stages = s;
    p->n += next->n;
    next->n = 0;
    zp_pipeline_free(next);
}

zp_pipeline *zp_pipe_list(zp_pipeline *first, ...)
{
    va_list ap;
    va_start(ap, first);
    zp_pipeline *p = first;
    if (p == NULL) {
        p = zp__calloc(1, sizeof *p);
        if (p != NULL)
            zp__pipeline_fail(p, "zp_pipe: the first pipeline is NULL");
    }
    for (zp_pipeline *next; (next = va_arg(ap, zp_pipeline *)) != NULL;) {
        if (p == NULL || p == &oom_pipeline || next == &oom_pipeline) {
            zp_pipeline_free(next);
            p = p ? p : &oom_pipeline;
            continue;
        }
        append(p, next);
    }
    va_end(ap);
    if (p == NULL)
        return &oom_pipeline;
    if (p != &oom_pipeline && p->n > 0)
        check_first_stage(p);
    return p;
}

/*
 * Pyper's rule: the first task runs once, on the run's arguments. Kept
 * apart from p->error because a pipeline that breaks it is still a valid
 * later part of a bigger one.
 */
static void check_first_stage(zp_pipeline *p)
{
    assert(p != &oom_pipeline && p->n > 0);
    free_message(p->first_error);
    p->first_error = NULL;
    const zp__stage_def *s = &p->stages[0];
    if (s->opts.join)
        p->first_error = zp__strdupf(
            "task '%s': the first task cannot have join: it is called once "
            "with the run's arguments, there is no stream to join",
            s->name);
    else if (s->opts.workers > 1)
        p->first_error = zp__strdupf(
            "task '%s': the first task cannot have workers > 1 (got %d): it "
            "is called once with the run's arguments",
            s->name, s->opts.workers);
    if ((s->opts.join || s->opts.workers > 1) && p->first_error == NULL)
        p->first_error = out_of_memory;
}

const char *zp_pipeline_error(const zp_pipeline *p)
{
    if (p == NULL)
        return "the pipeline is NULL";
    if (p->n == 0)
        return p->error ? p->error : "the pipeline has no stages";
    return p->error ? p->error : p->first_error;
}

size_t zp_pipeline_stages(const zp_pipeline *p)
{
    return p ? p->n : 0;
}

const msgpack_object *zp__stage_bound(const zp__stage_def *s)
{
    return s->bind_zone ? &s->bound : NULL;
}

int zp__pipeline_bind_packed(zp_pipeline *p, const void *data, size_t len)
{
    if (p == &oom_pipeline)
        return ZP_ENOMEM;
    assert(p->n == 1); /* a worker's pipeline of the one task it serves */
    zp__stage_def *s = &p->stages[0];
    size_t off = 0;
    if (s->bind_zone == NULL)
        s->bind_zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    char *copy = s->bind_zone ? msgpack_zone_malloc(s->bind_zone, len) : NULL;
    if (copy == NULL)
        return ZP_ENOMEM;
    memcpy(copy, data, len);
    if (msgpack_unpack(copy, len, &off, s->bind_zone, &s->bound) !=
        MSGPACK_UNPACK_SUCCESS)
        return ZP_EPROTO;
    return 0;
}
