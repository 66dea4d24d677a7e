/* SPDX-License-Identifier: MIT */
/*
 * The async server, see aserver.h: the server driver of the async engine.
 * Jobs are submitted from any thread into `submitted`; the loop thread
 * takes them one by one, starts a call per item while slots are free,
 * gathers each job's outputs in its buffer, and gives the job back once
 * every item started and every call ended.
 */
#include "worker/aserver.h"

#include <assert.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "transport/link.h"
#include "worker/engine.h"

struct zp__aserver {
    zp__engine e;     /* first: the server driver's engine is its server */
    zp__wstats stats; /* the process's calls */
    pthread_t thread;
    bool running;
    pthread_mutex_t lock; /* guards submitted                  */
    zp__queue submitted;  /* of zp__ajob, not started          */
    zp__ajob *cur;        /* being started (loop thread)       */
    zp__queue started;    /* of zp__ajob, not done (loop)      */
    void (*done)(void *arg, zp__ajob *job);
    void *arg;
};
_Static_assert(offsetof(struct zp__aserver, e) == 0,
               "the server begins with its engine");

static void unlink_started(zp__aserver *s, zp__ajob *job)
{
    zp__qnode *prev = NULL;
    for (zp__qnode *n = s->started.head; n != NULL; prev = n, n = n->next)
        if (n == &job->node) {
            zp__queue_unlink(&s->started, prev, n);
            return;
        }
    assert(!"a job given back is in the started list");
}

static void fail_job(zp__ajob *job, uint64_t seq, const char *why)
{
    if (job->failed)
        return;
    job->failed = true;
    job->seq = seq;
    job->error = zp__strdup(why);
}

/* Gives a job back once all its calls have ended. */
static void settle(zp__aserver *s, zp__ajob *job)
{
    if (!job->all_started || job->live > 0)
        return;
    unlink_started(s, job);
    zp__batch_reader_fini(&job->rd);
    s->done(s->arg, job);
}

/* Takes the next submitted job and opens its batch. */
static zp__ajob *take_job(zp__aserver *s)
{
    pthread_mutex_lock(&s->lock);
    zp__qnode *n = zp__queue_pop(&s->submitted);
    pthread_mutex_unlock(&s->lock);
    if (n == NULL)
        return NULL;
    zp__ajob *job = zp__container_of(n, zp__ajob, node);
    zp__queue_push(&s->started, &job->node);
    if (zp__batch_reader_init(&job->rd) != 0)
        fail_job(job, 0, "out of memory");
    else if (zp__batch_open(&job->rd, job->items, job->len) != 0)
        fail_job(job, 0, "malformed batch of items");
    return job;
}

static int server_next(zp__engine *e, zp__source *src)
{
    zp__aserver *s = (zp__aserver *)e;
    for (;;) {
        zp__ajob *job = s->cur ? s->cur : (s->cur = take_job(s));
        if (job == NULL)
            return ZP__AGAIN;
        int rc =
            job->failed ? 0 : zp__batch_next(&job->rd, &src->item, &src->index);
        if (rc == 1) {
            job->live++;
            src->def = job->def;
            src->tag = job;
            return 1;
        }
        if (rc < 0)
            fail_job(job, src->index, "malformed item");
        job->all_started = true;
        s->cur = NULL;
        settle(s, job);
    }
}

static int server_output(zp__engine *e, zp__acall *a, const char *data,
                         size_t len)
{
    zp__ajob *job = a->tag;
    (void)e;
    if (msgpack_sbuffer_write(&job->out, data, len) != 0)
        return ZP_ENOMEM;
    job->n++;
    return 0;
}

static int server_ended(zp__engine *e, zp__acall *a, int outcome)
{
    zp__aserver *s = (zp__aserver *)e;
    zp__ajob *job = a->tag;
    zp_call *c = &a->call;
    int rc = 0;
    job->retried += (uint32_t)a->attempt;
    job->busy += a->took;
    job->calls++;
    if (outcome == ZP__CALL_SKIPPED)
        job->skipped++;
    if (outcome == ZP_ETASK)
        fail_job(job, c->index, c->error ? c->error : "out of memory");
    if (outcome == ZP__CALL_OK && !job->failed)
        rc = zp__engine_pass_on(e, a);
    if (rc != 0)
        fail_job(job, c->index, zp_strerror(rc));
    assert(job->live > 0);
    job->live--;
    settle(s, job);
    return 0;
}

static const zp__driver server_driver = {
    .next = server_next,
    .output = server_output,
    .ended = server_ended,
};

static void *server_main(void *arg)
{
    zp__aserver *s = arg;
    uv_run(&s->e.loop, UV_RUN_DEFAULT);
    return NULL;
}

zp__aserver *zp__aserver_new(zp__runctl *ctl, int capacity,
                             void (*done)(void *, zp__ajob *), void *arg)
{
    zp__aserver *s = zp__calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->e.run = ctl;
    s->e.stats = &s->stats;
    s->done = done;
    s->arg = arg;
    pthread_mutex_init(&s->lock, NULL);
    if (zp__engine_init(&s->e, &server_driver, capacity) != 0 ||
        pthread_create(&s->thread, NULL, server_main, s) != 0) {
        zp__aserver_destroy(&s);
        return NULL;
    }
    s->running = true;
    return s;
}

void zp__aserver_submit(zp__aserver *s, zp__ajob *job)
{
    pthread_mutex_lock(&s->lock);
    zp__queue_push(&s->submitted, &job->node);
    pthread_mutex_unlock(&s->lock);
    uv_async_send(&s->e.wake);
}

static void drop_jobs(zp__aserver *s, zp__queue *q)
{
    for (zp__qnode *n; (n = zp__queue_pop(q)) != NULL;) {
        zp__ajob *job = zp__container_of(n, zp__ajob, node);
        zp__batch_reader_fini(&job->rd);
        job->dropped = true;
        s->done(s->arg, job);
    }
}

void zp__aserver_destroy(zp__aserver **sp)
{
    zp__aserver *s = sp ? *sp : NULL;
    if (s == NULL)
        return;
    if (s->running) {
        uv_async_send(&s->e.wake); /* the pump sees the stop flag */
        pthread_join(s->thread, NULL);
    }
    zp__engine_fini(&s->e);
    drop_jobs(s, &s->started); /* their calls ended with the loop */
    drop_jobs(s, &s->submitted);
    pthread_mutex_destroy(&s->lock);
    free(s);
    *sp = NULL;
}
