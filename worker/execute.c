/* SPDX-License-Identifier: MIT */
/*
 * Executors of a served worker, see execute.h. An executor thread takes
 * a queued batch, runs it whole and then posts its outputs (DONE, or
 * FAIL) through its outbox; the main thread of a worker of one thread
 * runs batches the same way, posting straight on the link. A batch's
 * outputs leave only when it is done (or in OUT parts of OUT_CHUNK when
 * they are many), so a batch cut short by a crash leaves nothing behind
 * and the coordinator can run it again elsewhere.
 */
#include "worker/execute.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "transport/batch.h"
#include "transport/proto.h"
#include "transport/timing.h"

#define OUT_CHUNK ((size_t)16 << 20) /* outputs per OUT message, at most */

static void stage_key(unsigned char key[12], uint64_t run, uint32_t index)
{
    memcpy(key, &run, sizeof run);
    memcpy(key + sizeof run, &index, sizeof index);
}

zp__sstage *zp__execute_find_stage(zp__server *s, uint64_t run, uint32_t index)
{
    unsigned char key[12];
    stage_key(key, run, index);
    return zp__idmap_get(&s->stage_ids, key, sizeof key);
}

zp__sstage *zp__execute_hold(zp__server *s, uint64_t run, uint32_t index)
{
    zp__sstage *st = zp__execute_find_stage(s, run, index);
    if (st != NULL) {
        st->users++;
        st->used = zp__now_ns();
    }
    return st;
}

void zp__execute_release(zp__server *s, zp__sstage *st)
{
    if (st == NULL)
        return;
    pthread_mutex_lock(&s->lock);
    assert(st->users > 0); /* never negative */
    st->users--;
    pthread_mutex_unlock(&s->lock);
}

static void free_stage(zp__sstage *st)
{
    zp_pipeline_free(st->p);
    free(st->missing);
    free(st);
}

/* Forgets s->stages[i], which no batch uses. */
static void forget_at(zp__server *s, size_t i)
{
    zp__sstage *st = s->stages[i];
    assert(st->users == 0); /* only a stage no batch runs is freed */
    zp__idmap_del(&s->stage_ids, st->key, sizeof st->key);
    memmove(&s->stages[i], &s->stages[i + 1],
            (s->nstages - i - 1) * sizeof *s->stages);
    s->nstages--;
    free_stage(st);
}

void zp__execute_forget(zp__server *s, uint64_t now)
{
    for (size_t i = 0; i < s->nstages;) {
        const zp__sstage *st = s->stages[i];
        if (st->run != s->run && st->users == 0 &&
            now - st->used >= ZP__SILENCE_MS * ZP__NS_PER_MS)
            forget_at(s, i);
        else
            i++;
    }
}

int zp__execute_keep_stage(zp__server *s, zp__sstage *st)
{
    s->run = st->run;
    st->used = zp__now_ns();
    stage_key(st->key, st->run, st->index);
    zp__execute_forget(s, st->used);
    for (size_t i = 0; s->nstages >= ZP__WORKER_MAX_STAGES && i < s->nstages;)
        if (s->stages[i]->users == 0)
            forget_at(s, i); /* the oldest first */
        else
            i++;
    zp__sstage **v =
        zp__realloc(s->stages, (s->nstages + 1) * sizeof *s->stages);
    if (v != NULL)
        s->stages = v;
    if (v == NULL ||
        zp__idmap_put(&s->stage_ids, st->key, sizeof st->key, st) != 0) {
        free_stage(st);
        return ZP_ENOMEM;
    }
    s->stages[s->nstages++] = st;
    return 0;
}

void zp__execute_free_stages(zp__server *s)
{
    for (size_t i = 0; i < s->nstages; i++)
        free_stage(s->stages[i]);
    free(s->stages);
    s->stages = NULL;
    s->nstages = 0;
    zp__idmap_fini(&s->stage_ids);
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

/*
 * The batch's time so far: the task's and the worker's own work on it,
 * less the time OUT parts took to leave (which waits on the network). A
 * clock read per batch rather than two per item: at a few nanoseconds
 * an item, those reads would cost as much as the task.
 */
static uint64_t busy_so_far(zp__result *res)
{
    res->busy = zp__now_ns() - res->start - res->sending;
    return res->busy;
}

static int post(const zp__sink *to, msgpack_sbuffer *sb)
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
int zp__execute_post_outputs(const zp__sink *ob, const zp__sjob *j,
                             zp__result *res, int type)
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

int zp__execute_post_fail(const zp__sink *ob, const zp__sjob *j, uint64_t seq,
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
static int keep_outputs(const zp__sink *ob, const zp__sjob *j, zp__result *res,
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
        int rc = zp__execute_post_outputs(ob, j, res, ZP__OUT);
        res->sending += zp__now_ns() - t;
        if (rc != 0)
            return ZP_EIO;
    }
    if (why == NULL &&
        msgpack_sbuffer_write(&res->out, c->buf.data, c->buf.size) != 0)
        why = "out of memory";
    if (why != NULL)
        return zp__execute_post_fail(ob, j, seq, why, busy_so_far(res)) ? ZP_EIO
                                                                        : 1;
    res->n += c->emitted;
    return 0;
}

/* Runs the items of a batch; 0, or the index of the item that failed is
 * reported with FAIL and 1 is returned. */
static int run_items(zp__server *s, const zp__sink *ob, const zp__sjob *j,
                     const zp__stage_def *def, zp__result *res)
{
    zp__wstats stats = {0};
    zp_call call = {0};
    zp__batch_reader rd;
    const msgpack_object *item;
    uint64_t seq;
    int rc = zp__batch_reader_init(&rd);
    zp__call_init(&call, def, &s->ctl, &stats, false, NULL, NULL);
    if (rc == 0 && zp__batch_open(&rd, j->items, j->len) != 0)
        rc = zp__execute_post_fail(ob, j, 0, "malformed batch of items", 0)
                 ? ZP_EIO
                 : 1;
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
        rc = zp__execute_post_fail(ob, j, seq, call.error, busy) ? ZP_EIO : 1;
    else if (rc == ZP_EPROTO)
        rc = zp__execute_post_fail(ob, j, seq, "malformed item", busy) ? ZP_EIO
                                                                       : 1;
    zp__call_fini(&call);
    zp__batch_reader_fini(&rd);
    return rc;
}

/*
 * Posts what an async batch made: its outputs as DONE, after OUT messages
 * of up to OUT_CHUNK bytes when they take more; FAIL when one output alone
 * cannot travel.
 */
void zp__execute_post_async(const zp__sink *to, const zp__sjob *j, zp__ajob *aj)
{
    const size_t max = ZP__PROTO_MAX_BATCH - ZP__BATCH_HEADER_MAX;
    zp__result res = {.out = aj->out,
                      .n = aj->n,
                      .retried = aj->retried,
                      .skipped = aj->skipped,
                      .busy = aj->busy};
    if (aj->out.size <= OUT_CHUNK) { /* the common case, as it is */
        zp__execute_post_outputs(to, j, &res, ZP__DONE);
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
            zp__execute_post_fail(to, j, first, why, aj->busy);
            msgpack_sbuffer_destroy(&res.out);
            return;
        }
        if (res.out.size > 0 && res.out.size + size > OUT_CHUNK)
            zp__execute_post_outputs(to, j, &res, ZP__OUT);
        msgpack_sbuffer_write(&res.out, p, size);
        res.n++;
    }
    zp__execute_post_outputs(to, j, &res, ZP__DONE);
    msgpack_sbuffer_destroy(&res.out);
}

/* Counts a finished batch for the worker's metrics. */
void zp__execute_count(zp__server *s, uint64_t items, uint64_t busy_ns)
{
    atomic_fetch_add_explicit(&s->stats->batches, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->stats->items, items, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->stats->busy_ns, busy_ns,
                              memory_order_relaxed);
}

void zp__execute_run(zp__server *s, const zp__sink *ob, const zp__sjob *j)
{
    /* Held, the stage stays while the batch runs. */
    pthread_mutex_lock(&s->lock);
    zp__sstage *st = zp__execute_hold(s, j->run, j->stage);
    const zp_pipeline *p = st != NULL ? st->p : NULL;
    const char *missing = st != NULL ? st->missing : "(no STAGE was sent)";
    pthread_mutex_unlock(&s->lock);
    zp__result res = {.n = 0};
    msgpack_sbuffer_init(&res.out);
    if (p == NULL) {
        char *why = zp__strdupf("this worker has no task '%s'", missing);
        zp__execute_post_fail(ob, j, 0, why ? why : "no such task", 0);
        free(why);
    } else if (p->stages[0].afn != NULL) {
        zp__execute_post_fail(ob, j, 0,
                              "cannot start the event loop of async tasks", 0);
    } else if (run_items(s, ob, j, &p->stages[0], &res) == 0) {
        zp__execute_post_outputs(ob, j, &res, ZP__DONE);
    }
    msgpack_sbuffer_destroy(&res.out);
    zp__execute_count(s, res.items, res.busy);
    zp__execute_release(s, st);
}

void *zp__execute_main(void *arg)
{
    zp__server *s = arg;
    zp__sink to = {s, zp__outbox_new(s->peer)};
    /* DONE or FAIL gives the batch's credit back: no READY is needed. */
    for (zp__sjob *j; to.ob != NULL && (j = next_job(s)) != NULL;) {
        zp__execute_run(s, &to, j);
        zp__execute_done(s, j);
    }
    zp__outbox_destroy(&to.ob);
    return NULL;
}

void zp__execute_done(zp__server *s, zp__sjob *j)
{
    pthread_mutex_lock(&s->lock);
    assert(s->busy > 0);
    s->busy--;
    pthread_mutex_unlock(&s->lock);
    zp__execute_release(s, j->held);
    free(j->owned);
    free(j);
}
