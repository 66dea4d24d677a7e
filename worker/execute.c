/* SPDX-License-Identifier: MIT */
/*
 * Batches of a served worker, see execute.h. With one thread the main
 * thread runs each batch itself, between two reads of the link; with
 * more, batches queue for `threads` executor threads, which run a whole
 * batch and then post its outputs (DONE, or FAIL) through their outbox.
 * Batches of async tasks go to the async server, whose loop thread posts
 * them. A batch's outputs leave only when it is done, so a batch cut
 * short by a crash leaves nothing behind and the coordinator can run it
 * again elsewhere.
 */
#include "worker/execute.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "transport/batch.h"

#define OUT_CHUNK ((size_t)16 << 20) /* outputs per OUT message, at most */

/* ---- Executors ------------------------------------------------------- */

static const zp__sstage *find_stage(zp__server *s, uint64_t run, uint32_t index)
{
    for (size_t i = 0; i < s->nstages; i++)
        if (s->stages[i].run == run && s->stages[i].index == index)
            return &s->stages[i];
    return NULL;
}

static zp__sjob *next_job(zp__server *s)
{
    pthread_mutex_lock(&s->lock);
    while (zp__queue_empty(&s->jobs) && !atomic_load(&s->ctl.stop))
        pthread_cond_wait(&s->cond, &s->lock);
    zp__qnode *n = zp__queue_pop(&s->jobs);
    if (n != NULL)
        s->busy++;
    pthread_mutex_unlock(&s->lock);
    return n != NULL ? zp__container_of(n, zp__sjob, node) : NULL;
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
    zp__server *s;
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
static int post_outputs(const sink *ob, const zp__sjob *j, result *res,
                        int type)
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

static int post_fail(const sink *ob, const zp__sjob *j, uint64_t seq,
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
static int keep_outputs(const sink *ob, const zp__sjob *j, result *res,
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
static int run_items(zp__server *s, const sink *ob, const zp__sjob *j,
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
static void count_batch(zp__server *s, uint64_t items, uint64_t busy_ns)
{
    atomic_fetch_add_explicit(&s->stats->batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->stats->items, items, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->stats->busy_ns, busy_ns,
                              memory_order_relaxed);
}

static void run_job(zp__server *s, const sink *ob, const zp__sjob *j)
{
    /* The array of stages may grow meanwhile; what it points to stays. */
    pthread_mutex_lock(&s->lock);
    const zp__sstage *st = find_stage(s, j->run, j->stage);
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

/* A batch ran (any thread): it is no longer busy, and is freed. */
static void job_done(zp__server *s, zp__sjob *j)
{
    pthread_mutex_lock(&s->lock);
    assert(s->busy > 0);
    s->busy--;
    pthread_mutex_unlock(&s->lock);
    free(j->owned);
    free(j);
}

void *zp__execute_main(void *arg)
{
    zp__server *s = arg;
    sink to = {s, zp__outbox_new(s->peer)};
    /* DONE or FAIL gives the batch's credit back: no READY is needed. */
    for (zp__sjob *j; to.ob != NULL && (j = next_job(s)) != NULL;) {
        run_job(s, &to, j);
        job_done(s, j);
    }
    zp__outbox_destroy(&to.ob);
    return NULL;
}

/* ---- Stages --------------------------------------------------------- */

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

void zp__execute_stage(zp__server *s, const zp__msg *m)
{
    char *task = strndup(m->str, m->str_len);
    if (task == NULL)
        return;
    zp_pipeline *p = stage_pipeline(m, task);
    pthread_mutex_lock(&s->lock);
    zp__sstage *v = find_stage(s, m->run, m->stage) == NULL
                        ? zp__realloc(s->stages, (s->nstages + 1) * sizeof *v)
                        : NULL;
    if (v != NULL) {
        s->stages = v;
        v[s->nstages++] = (zp__sstage){m->run, m->stage, p, p ? NULL : task};
        p = NULL;
        task = v[s->nstages - 1].missing ? NULL : task;
    }
    pthread_mutex_unlock(&s->lock);
    zp_pipeline_free(p);
    free(task);
}

/* ---- Async batches -------------------------------------------------- */

/*
 * Posts what an async batch made: its outputs as DONE, after OUT messages
 * of up to OUT_CHUNK bytes when they take more; FAIL when one output alone
 * cannot travel.
 */
static void post_async_outputs(const sink *to, const zp__sjob *j, zp__ajob *aj)
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
    zp__server *s = arg;
    zp__sjob *j = aj->arg;
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
    job_done(s, j);
}

/* The task of an async stage, or NULL. */
static const zp__stage_def *async_def(zp__server *s, uint64_t run,
                                      uint32_t index)
{
    pthread_mutex_lock(&s->lock);
    const zp__sstage *st = find_stage(s, run, index);
    const zp__stage_def *def =
        st != NULL && st->p != NULL && st->p->stages[0].afn != NULL
            ? &st->p->stages[0]
            : NULL;
    pthread_mutex_unlock(&s->lock);
    return def;
}

/* Hands a batch of an async task to the async loop; false when the loop
 * cannot start. */
static bool submit_async(zp__server *s, const zp__stage_def *def, zp__sjob *j)
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

/* ---- Batches in ------------------------------------------------------ */

/* Runs a batch in the main thread, the link meanwhile left to the
 * watchdog. */
static void run_here(zp__server *s, const zp__sjob *j)
{
    sink to = {s, NULL};
    atomic_store(&s->running_since, zp__now_ns());
    pthread_mutex_unlock(&s->io);
    run_job(s, &to, j);
    pthread_mutex_lock(&s->io);
    atomic_store(&s->running_since, 0);
}

void zp__execute_item(zp__server *s, const zp__msg *m)
{
    zp__sjob here = {.run = m->run,
                     .batch = m->batch,
                     .stage = m->stage,
                     .items = m->data,
                     .len = m->data_len};
    const zp__stage_def *def = async_def(s, m->run, m->stage);
    if (def == NULL && s->nthreads == 0) {
        run_here(s, &here);
        return;
    }
    zp__sjob *j = zp__calloc(1, sizeof *j);
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

bool zp__execute_idle(zp__server *s)
{
    pthread_mutex_lock(&s->lock);
    bool yes = zp__queue_empty(&s->jobs) && s->busy == 0;
    pthread_mutex_unlock(&s->lock);
    return yes;
}

void zp__execute_fini(zp__server *s)
{
    for (zp__qnode *n; (n = zp__queue_pop(&s->jobs)) != NULL;) {
        zp__sjob *j = zp__container_of(n, zp__sjob, node);
        free(j->owned);
        free(j);
    }
    for (size_t i = 0; i < s->nstages; i++) {
        zp_pipeline_free(s->stages[i].p);
        free(s->stages[i].missing);
    }
    free(s->stages);
    s->stages = NULL;
    s->nstages = 0;
}
