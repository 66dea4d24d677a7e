/* SPDX-License-Identifier: MIT */
/*
 * Hand-written baselines for bench/pipeline_bench.c: the benchmark's
 * three-stage job (produce 0..n-1, map x to 2x+1, sum) without zpipe, once
 * over mutex/condvar ring buffers and once over raw ZeroMQ inproc sockets
 * with msgpack items. They are meant to be the plain, honest code a C
 * programmer would write, so nothing here is tuned beyond that. This is the
 * one place outside transport/ that includes <zmq.h>, because measuring raw
 * ZeroMQ is its purpose; it must never link against or call zpipe.
 * Threads are pthreads rather than C11 <threads.h> because ThreadSanitizer
 * cannot follow C11 threads, and the ZP_SANITIZE=thread build runs this.
 */
#include "baselines.h"

#include <assert.h>
#include <errno.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>
#include <zpipe.h>

#define NSTAGES 3                     /* producer, mapper, sink */
#define QUEUE_CAP ZP_DEFAULT_THROTTLE /* slots per mutex queue, as zpipe's */
#define HWM_MSGS                                        \
    1000 /* ZeroMQ send and receive high-water mark, in \
            messages; an inproc pair queues up to both      */

/* Monotonic wall-clock seconds. */
static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A stage thread returns NULL when it succeeded, STAGE_FAILED if not. */
static char stage_failure;
#define STAGE_FAILED ((void *)&stage_failure)

typedef void *(*stage_fn)(void *);

/*
 * Runs fn[i](arg) on one thread per stage and joins them all. If a thread
 * cannot start, stop(arg) is called so that the started ones finish.
 * Returns 0 when every thread started and succeeded, else -1.
 */
static int run_stages(const stage_fn fn[NSTAGES], void *arg,
                      void (*stop)(void *))
{
    pthread_t t[NSTAGES];
    void *res;
    int started, i, err, rc = 0;

    for (started = 0; started < NSTAGES; started++) {
        err = pthread_create(&t[started], NULL, fn[started], arg);
        if (err != 0) {
            fprintf(stderr, "zpb: pthread_create: %s\n", strerror(err));
            stop(arg);
            rc = -1;
            break;
        }
    }
    for (i = 0; i < started; i++) {
        err = pthread_join(t[i], &res);
        if (err != 0 || res != NULL)
            rc = -1;
    }
    return rc;
}

/* True when the arguments shared by both baselines are usable. */
static bool valid_run(const char *who, uint64_t n)
{
    if (n > ZPB_MAX_ITEMS) {
        fprintf(stderr, "%s: n = %llu is above ZPB_MAX_ITEMS\n", who,
                (unsigned long long)n);
        return false;
    }
    return true;
}

/* ---- Mutex/condvar baseline ------------------------------------------ */

/*
 * A bounded FIFO of int64 guarded by one mutex. Closing it is the end of
 * the stream: pop drains what is left, then reports the end; push fails,
 * which only happens when a run is being abandoned.
 */
typedef struct queue {
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    pthread_cond_t not_full;
    int64_t buf[QUEUE_CAP];
    size_t head;  /* slot of the oldest item            */
    size_t count; /* items in the queue                 */
    bool closed;  /* no more pushes will be accepted    */
} queue;

/* Lock and condvar calls fail only when misused: a programmer error. */
static void check_pthread(int rc)
{
    assert(rc == 0);
    (void)rc;
}

static int queue_init(queue *q)
{
    int err, rc = -1;

    q->head = 0;
    q->count = 0;
    q->closed = false;
    if ((err = pthread_mutex_init(&q->lock, NULL)) != 0)
        goto out;
    if ((err = pthread_cond_init(&q->not_empty, NULL)) != 0)
        goto out_destroy_lock;
    if ((err = pthread_cond_init(&q->not_full, NULL)) != 0)
        goto out_destroy_not_empty;
    return 0;

out_destroy_not_empty:
    pthread_cond_destroy(&q->not_empty);
out_destroy_lock:
    pthread_mutex_destroy(&q->lock);
out:
    fprintf(stderr, "zpb_mutex_pipeline: cannot create a queue: %s\n",
            strerror(err));
    return rc;
}

static void queue_fini(queue *q)
{
    pthread_cond_destroy(&q->not_full);
    pthread_cond_destroy(&q->not_empty);
    pthread_mutex_destroy(&q->lock);
}

/* Appends v, blocking while full. False if the queue was closed. */
static bool queue_push(queue *q, int64_t v)
{
    bool ok;

    check_pthread(pthread_mutex_lock(&q->lock));
    while (q->count == QUEUE_CAP && !q->closed)
        check_pthread(pthread_cond_wait(&q->not_full, &q->lock));
    ok = !q->closed;
    if (ok) {
        q->buf[(q->head + q->count) % QUEUE_CAP] = v;
        q->count++;
        check_pthread(pthread_cond_signal(&q->not_empty));
    }
    check_pthread(pthread_mutex_unlock(&q->lock));
    return ok;
}

/* Takes the oldest item, blocking while empty. False at the end. */
static bool queue_pop(queue *q, int64_t *v)
{
    bool ok;

    check_pthread(pthread_mutex_lock(&q->lock));
    while (q->count == 0 && !q->closed)
        check_pthread(pthread_cond_wait(&q->not_empty, &q->lock));
    ok = q->count > 0;
    if (ok) {
        *v = q->buf[q->head];
        q->head = (q->head + 1) % QUEUE_CAP;
        q->count--;
        check_pthread(pthread_cond_signal(&q->not_full));
    }
    check_pthread(pthread_mutex_unlock(&q->lock));
    return ok;
}

static void queue_close(queue *q)
{
    check_pthread(pthread_mutex_lock(&q->lock));
    q->closed = true;
    check_pthread(pthread_cond_broadcast(&q->not_empty));
    check_pthread(pthread_cond_broadcast(&q->not_full));
    check_pthread(pthread_mutex_unlock(&q->lock));
}

/* One mutex run, shared by its three threads. */
typedef struct mutex_run {
    queue q[2];   /* producer -> mapper, mapper -> sink */
    uint64_t n;   /* items to produce                   */
    uint64_t sum; /* written by the sink only           */
} mutex_run;

static void *mutex_producer(void *arg)
{
    mutex_run *r = arg;

    for (uint64_t i = 0; i < r->n; i++) {
        if (!queue_push(&r->q[0], (int64_t)i))
            break;
    }
    queue_close(&r->q[0]);
    return NULL;
}

static void *mutex_mapper(void *arg)
{
    mutex_run *r = arg;
    int64_t x;

    while (queue_pop(&r->q[0], &x)) {
        if (!queue_push(&r->q[1], x * 2 + 1))
            break;
    }
    queue_close(&r->q[1]);
    return NULL;
}

static void *mutex_sink(void *arg)
{
    mutex_run *r = arg;
    uint64_t sum = 0;
    int64_t x;

    while (queue_pop(&r->q[1], &x))
        sum += (uint64_t)x;
    r->sum = sum;
    return NULL;
}

/* Abandons a run: every blocked or later push fails, pops drain. */
static void mutex_stop(void *arg)
{
    mutex_run *r = arg;

    queue_close(&r->q[0]);
    queue_close(&r->q[1]);
}

double zpb_mutex_pipeline(uint64_t n, uint64_t *sum_out)
{
    static const stage_fn stages[NSTAGES] = {mutex_producer, mutex_mapper,
                                             mutex_sink};
    mutex_run r = {.n = n};
    double start, elapsed = -1.0;

    assert(sum_out != NULL);
    if (!valid_run("zpb_mutex_pipeline", n))
        goto out;
    if (queue_init(&r.q[0]) != 0)
        goto out;
    if (queue_init(&r.q[1]) != 0)
        goto out_fini_q0;
    start = now();
    if (run_stages(stages, &r, mutex_stop) != 0)
        goto out_fini_q1;
    elapsed = now() - start;
    *sum_out = r.sum;

out_fini_q1:
    queue_fini(&r.q[1]);
out_fini_q0:
    queue_fini(&r.q[0]);
out:
    return elapsed;
}

/* ---- Raw ZeroMQ baseline --------------------------------------------- */

/* The sockets of a chain, in the order they are bound and connected. */
enum { PRODUCER_OUT, MAPPER_IN, MAPPER_OUT, SINK_IN, NSOCKS };

/* One ZeroMQ run, shared by its three threads. */
typedef struct chain {
    void *ctx;          /* owned; shut down to abandon the run          */
    void *sock[NSOCKS]; /* owned by the run; each used by one stage     */
    uint64_t n;         /* items to produce                             */
    int batch;          /* most items per message                       */
    uint64_t sum;       /* written by the sink only                     */
} chain;

/* Reports a failed ZeroMQ call and returns -1. ETERM is not reported: it
 * only means another stage failed and already said why. */
static int chain_fail(const char *what)
{
    int err = zmq_errno();

    if (err != ETERM)
        fprintf(stderr, "zpb_zmq_chain: %s: %s\n", what, zmq_strerror(err));
    return -1;
}

/* Creates a socket of `type`, bounds its queues, binds or connects it. */
static int open_socket(void *ctx, int type, const char *endpoint, bool bind,
                       void **out)
{
    int hwm = HWM_MSGS, linger = 0, rc = -1;
    void *s = zmq_socket(ctx, type);

    if (s == NULL) {
        rc = chain_fail("zmq_socket");
        goto out;
    }
    if (zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) != 0) {
        rc = chain_fail("zmq_setsockopt");
        goto out_close;
    }
    if ((bind ? zmq_bind(s, endpoint) : zmq_connect(s, endpoint)) != 0) {
        rc = chain_fail(bind ? "zmq_bind" : "zmq_connect");
        goto out_close;
    }
    *out = s;
    return 0;

out_close:
    zmq_close(s);
out:
    return rc;
}

/* Closes whatever chain_open opened; safe on a partly opened chain. */
static void chain_close(chain *c)
{
    for (int i = 0; i < NSOCKS; i++) {
        if (c->sock[i] != NULL)
            zmq_close(c->sock[i]);
        c->sock[i] = NULL;
    }
    if (c->ctx != NULL) {
        while (zmq_ctx_term(c->ctx) != 0 && zmq_errno() == EINTR)
            ;
    }
    c->ctx = NULL;
}

/* Opens the context and both PUSH/PULL pairs. On failure the caller still
 * calls chain_close. */
static int chain_open(chain *c)
{
    static const struct {
        int type;
        const char *endpoint;
        bool bind;
    } spec[NSOCKS] = {
        [PRODUCER_OUT] = {ZMQ_PUSH, "inproc://zpb-map", true},
        [MAPPER_IN] = {ZMQ_PULL, "inproc://zpb-map", false},
        [MAPPER_OUT] = {ZMQ_PUSH, "inproc://zpb-sum", true},
        [SINK_IN] = {ZMQ_PULL, "inproc://zpb-sum", false},
    };
    int rc = -1;

    c->ctx = zmq_ctx_new();
    if (c->ctx == NULL) {
        rc = chain_fail("zmq_ctx_new");
        goto out;
    }
    for (int i = 0; i < NSOCKS; i++) {
        if (open_socket(c->ctx, spec[i].type, spec[i].endpoint, spec[i].bind,
                        &c->sock[i]) != 0)
            goto out;
    }
    rc = 0;
out:
    return rc;
}

/* Abandons a run: blocked and later socket calls fail with ETERM. */
static void chain_stop(void *arg)
{
    chain *c = arg;

    zmq_ctx_shutdown(c->ctx);
}

/* Ends a stage: on failure wakes the other stages so the run can end. */
static void *stage_done(chain *c, int rc)
{
    if (rc == 0)
        return NULL;
    chain_stop(c);
    return STAGE_FAILED;
}

static int send_frame(void *sock, const void *data, size_t size)
{
    int rc;

    do
        rc = zmq_send(sock, data, size, 0);
    while (rc < 0 && zmq_errno() == EINTR);
    return rc < 0 ? chain_fail("zmq_send") : 0;
}

/* Packs items into messages of up to `batch` items and sends them. */
typedef struct encoder {
    void *sock;          /* borrowed PUSH socket                 */
    msgpack_sbuffer buf; /* owned; the message being filled      */
    msgpack_packer pk;   /* writes into buf                      */
    int batch;           /* items per full message               */
    int count;           /* items in buf                         */
} encoder;

/* Cannot fail: the buffer allocates on first use. `e` must not move. */
static void encoder_init(encoder *e, void *sock, int batch)
{
    e->sock = sock;
    e->batch = batch;
    e->count = 0;
    msgpack_sbuffer_init(&e->buf);
    msgpack_packer_init(&e->pk, &e->buf, msgpack_sbuffer_write);
}

static void encoder_fini(encoder *e)
{
    msgpack_sbuffer_destroy(&e->buf);
}

/* Sends the items packed so far, if any. */
static int encoder_flush(encoder *e)
{
    int rc = 0;

    if (e->count > 0)
        rc = send_frame(e->sock, e->buf.data, e->buf.size);
    msgpack_sbuffer_clear(&e->buf);
    e->count = 0;
    return rc;
}

static int encoder_put(encoder *e, int64_t v)
{
    if (msgpack_pack_int64(&e->pk, v) != 0) {
        fputs("zpb_zmq_chain: out of memory packing an item\n", stderr);
        return -1;
    }
    if (++e->count < e->batch)
        return 0;
    return encoder_flush(e);
}

/* Sends what is left and then the empty end-of-stream message. */
static int encoder_finish(encoder *e)
{
    if (encoder_flush(e) != 0)
        return -1;
    return send_frame(e->sock, "", 0);
}

/* Receives messages and hands out the items they hold, one at a time. */
typedef struct receiver {
    void *sock;        /* borrowed PULL socket                 */
    zmq_msg_t msg;     /* owned; the message being decoded     */
    size_t off;        /* bytes of msg decoded so far          */
    msgpack_zone zone; /* owned; scratch for msgpack_unpack    */
} receiver;

static int receiver_init(receiver *r, void *sock)
{
    r->sock = sock;
    r->off = 0;
    if (!msgpack_zone_init(&r->zone, MSGPACK_ZONE_CHUNK_SIZE)) {
        fputs("zpb_zmq_chain: out of memory for a msgpack zone\n", stderr);
        return -1;
    }
    zmq_msg_init(&r->msg);
    return 0;
}

static void receiver_fini(receiver *r)
{
    zmq_msg_close(&r->msg);
    msgpack_zone_destroy(&r->zone);
}

static int receive_frame(receiver *r)
{
    int rc;

    do
        rc = zmq_msg_recv(&r->msg, r->sock, 0);
    while (rc < 0 && zmq_errno() == EINTR);
    if (rc < 0)
        return chain_fail("zmq_msg_recv");
    r->off = 0;
    msgpack_zone_clear(&r->zone);
    return 0;
}

/* Decodes the integer item at r->off. Returns 1, or -1 if malformed. */
static int decode_item(receiver *r, int64_t *v)
{
    msgpack_object obj;
    msgpack_unpack_return ur;

    ur = msgpack_unpack(zmq_msg_data(&r->msg), zmq_msg_size(&r->msg), &r->off,
                        &r->zone, &obj);
    if (ur != MSGPACK_UNPACK_SUCCESS && ur != MSGPACK_UNPACK_EXTRA_BYTES)
        goto out_malformed;
    if (obj.type == MSGPACK_OBJECT_POSITIVE_INTEGER && obj.via.u64 <= INT64_MAX)
        *v = (int64_t)obj.via.u64;
    else if (obj.type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *v = obj.via.i64;
    else
        goto out_malformed;
    return 1;

out_malformed:
    fputs("zpb_zmq_chain: a message holds something other than int64\n",
          stderr);
    return -1;
}

/* The next item: 1 with *v set, 0 at the end of the stream, -1 on error. */
static int receiver_next(receiver *r, int64_t *v)
{
    while (r->off == zmq_msg_size(&r->msg)) {
        if (receive_frame(r) != 0)
            return -1;
        if (zmq_msg_size(&r->msg) == 0)
            return 0;
    }
    return decode_item(r, v);
}

static void *chain_producer(void *arg)
{
    chain *c = arg;
    encoder e;
    int rc = -1;

    encoder_init(&e, c->sock[PRODUCER_OUT], c->batch);
    for (uint64_t i = 0; i < c->n; i++) {
        if (encoder_put(&e, (int64_t)i) != 0)
            goto out_fini;
    }
    rc = encoder_finish(&e);

out_fini:
    encoder_fini(&e);
    return stage_done(c, rc);
}

static void *chain_mapper(void *arg)
{
    chain *c = arg;
    receiver r;
    encoder e;
    int64_t x;
    int got, rc = -1;

    if (receiver_init(&r, c->sock[MAPPER_IN]) != 0)
        goto out;
    encoder_init(&e, c->sock[MAPPER_OUT], c->batch);
    while ((got = receiver_next(&r, &x)) > 0) {
        if (encoder_put(&e, x * 2 + 1) != 0)
            goto out_fini;
    }
    if (got == 0)
        rc = encoder_finish(&e);

out_fini:
    encoder_fini(&e);
    receiver_fini(&r);
out:
    return stage_done(c, rc);
}

static void *chain_sink(void *arg)
{
    chain *c = arg;
    receiver r;
    uint64_t sum = 0;
    int64_t x;
    int got, rc = -1;

    if (receiver_init(&r, c->sock[SINK_IN]) != 0)
        goto out;
    while ((got = receiver_next(&r, &x)) > 0)
        sum += (uint64_t)x;
    receiver_fini(&r);
    if (got == 0) {
        c->sum = sum;
        rc = 0;
    }
out:
    return stage_done(c, rc);
}

double zpb_zmq_chain(uint64_t n, int batch, uint64_t *sum_out)
{
    static const stage_fn stages[NSTAGES] = {chain_producer, chain_mapper,
                                             chain_sink};
    chain c = {.n = n, .batch = batch};
    double start, elapsed = -1.0;

    assert(sum_out != NULL);
    if (!valid_run("zpb_zmq_chain", n))
        goto out;
    if (batch < 1) {
        fprintf(stderr, "zpb_zmq_chain: batch = %d, must be >= 1\n", batch);
        goto out;
    }
    if (chain_open(&c) != 0)
        goto out_close;
    start = now();
    if (run_stages(stages, &c, chain_stop) != 0)
        goto out_close;
    elapsed = now() - start;
    *sum_out = c.sum;

out_close:
    chain_close(&c);
out:
    return elapsed;
}
