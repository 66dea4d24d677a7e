/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of links (transport/link.c), driven directly through
 * zp__edge_init with producer and consumer threads: every item reaches
 * exactly one consumer with dense indexes, credits bound the queue, the
 * stream ends only when every producer closed, cancellation wakes a
 * producer waiting for credits and a consumer waiting for input, a raw
 * ZeroMQ peer sending garbage gets ZP_EPROTO back, and the least-loaded
 * pick spreads slow items, checkpoint markers cut the stream of every
 * producer at one place and hold producers until passed. Nothing sleeps to wait
 * for an event: tests wait for a counter of the edge to change, or join with a
 * deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>
#include <zmq.h>

#include "transport/batch.h"
#include "transport/link.h"
#include "zpipe.h"

/* How long anything may take before a test calls it a hang. */
#define DEADLINE_S 30

/* ---- Helpers ------------------------------------------------------------- */

/* One edge in its own ZeroMQ context, as a run would make it. */
typedef struct fixture {
    void *zctx;
    zp__edge e;
    _Atomic bool stop;
} fixture;

static void fixture_init(fixture *f, int producers, int consumers, int limit)
{
    memset(f, 0, sizeof *f);
    atomic_init(&f->stop, false);
    f->zctx = zp__zctx_new(16, false);
    assert_non_null(f->zctx);
    assert_int_equal(zp__edge_init(&f->e, f->zctx, "link-test", producers,
                                   consumers, limit, &f->stop),
                     0);
}

static void fixture_fini(fixture *f)
{
    zp__edge_fini(&f->e);
    zp__zctx_term(f->zctx);
}

/* Seconds since an arbitrary point. */
static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Spins (yielding) until `cond` holds; fails after DEADLINE_S. */
#define ASSERT_SOON(cond)                                \
    do {                                                 \
        double deadline_ = now_s() + DEADLINE_S;         \
        while (!(cond) && now_s() < deadline_)           \
            sched_yield();                               \
        if (!(cond))                                     \
            fail_msg("timed out waiting for %s", #cond); \
    } while (0)

/* What run_fail does: flag, shut ZeroMQ down, wake the credit waiters. */
static void stop_run(fixture *f, zp__edge *other)
{
    atomic_store(&f->stop, true);
    zp__zctx_shutdown(f->zctx);
    zp__edge_wake(&f->e);
    if (other != NULL)
        zp__edge_wake(other);
}

static bool joined_by(pthread_t t, int seconds)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += seconds;
    return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

/*
 * Joins `t`, or fails the test when it does not end within DEADLINE_S;
 * then the run is stopped first, so that a hang fails this test only and
 * does not leave threads blocked behind it.
 */
static void join_within_deadline(fixture *f, zp__edge *other, pthread_t t)
{
    if (joined_by(t, DEADLINE_S))
        return;
    stop_run(f, other);
    (void)joined_by(t, DEADLINE_S);
    fail_msg("a thread did not end within %d s (still blocked)", DEADLINE_S);
}

/* Sends one unsigned integer item through tx. */
static int send_uint(zp__tx *tx, uint64_t v)
{
    assert_int_equal(msgpack_pack_uint64(zp__tx_packer(tx), v), 0);
    return zp__tx_commit(tx);
}

/* Takes one item; returns rx_next's result and the value in *v. */
static int take_uint(zp__rx *rx, bool wait, uint64_t *v, uint64_t *seq)
{
    const msgpack_object *item = NULL;
    int rc = zp__rx_next(rx, wait, &item, seq);
    if (rc == 1) {
        assert_int_equal(item->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
        *v = item->via.u64;
    }
    return rc;
}

/* Polls rx until it has something to say; fails after DEADLINE_S. */
static int take_soon(zp__rx *rx, uint64_t *v, uint64_t *seq)
{
    double deadline = now_s() + DEADLINE_S;
    int rc;
    while ((rc = take_uint(rx, false, v, seq)) == ZP__AGAIN &&
           now_s() < deadline)
        sched_yield();
    if (rc == ZP__AGAIN)
        fail_msg("nothing came within %d s", DEADLINE_S);
    return rc;
}

/* Simulated work of a slow task: busy for `us` microseconds. */
static void work(int us)
{
    double until = now_s() + us * 1e-6;
    while (now_s() < until)
        ;
}

/* A producer thread: sends `n` values tagged with its id, then closes. */
typedef struct producer {
    pthread_t thread;
    zp__tx *tx;
    uint64_t id;
    int n;
    int rc;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    p->rc = 0;
    for (int i = 0; i < p->n && p->rc == 0; i++)
        p->rc = send_uint(p->tx, p->id << 32 | (uint64_t)i);
    if (p->rc == 0)
        p->rc = zp__tx_close(p->tx);
    return NULL;
}

/*
 * Consumers that go at one pace, whatever the scheduler does: each takes
 * one item per round, and none starts the next round before all took
 * theirs. A round that does not fill within DEADLINE_S (a consumer was
 * left without items) breaks the rounds for good, and the counts show it.
 */
typedef struct rounds {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int size, arrived;
    uint64_t round;
    bool broken;
} rounds;

static void rounds_init(rounds *r, int size)
{
    *r = (rounds){.size = size};
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
}

static void rounds_fini(rounds *r)
{
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
}

/* Waits for the other consumers to end the round. */
static void rounds_wait(rounds *r)
{
    struct timespec t;
    int rc = 0;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += DEADLINE_S;
    pthread_mutex_lock(&r->lock);
    uint64_t mine = r->round;
    if (++r->arrived == r->size) {
        r->arrived = 0;
        r->round++;
        pthread_cond_broadcast(&r->cond);
    }
    while (!r->broken && r->round == mine && rc == 0)
        rc = pthread_cond_timedwait(&r->cond, &r->lock, &t);
    if (r->round == mine) {
        r->broken = true;
        pthread_cond_broadcast(&r->cond);
    }
    pthread_mutex_unlock(&r->lock);
}

/* A consumer thread: takes items until the end, recording each. */
typedef struct consumer {
    pthread_t thread;
    zp__rx *rx;
    const zp__edge *e;
    rounds *rounds;        /* borrowed; NULL when it goes its own pace */
    int work_us;           /* time "spent" per item */
    uint64_t *seqs, *vals; /* owned, `cap` of them */
    size_t n, cap;         /* items taken; room for `cap` */
    int over_limit;        /* queue seen over its bound */
    int rc;
} consumer;

static void *consume(void *arg)
{
    consumer *c = arg;
    uint64_t v, seq;
    while ((c->rc = take_uint(c->rx, true, &v, &seq)) == 1) {
        if (atomic_load(&c->e->queued) > c->e->limit)
            c->over_limit++;
        if (c->n < c->cap) {
            c->seqs[c->n] = seq;
            c->vals[c->n] = v;
        }
        c->n++;
        if (c->work_us > 0)
            work(c->work_us);
        if (c->rounds != NULL)
            rounds_wait(c->rounds);
    }
    return NULL;
}

/* More of exchange(): consumers in rounds (in), what each took (out). */
typedef struct exchange_extra {
    rounds *rounds;
    size_t per_consumer[8];
} exchange_extra;

/*
 * Runs P producers of n items each into C consumer threads over an edge
 * of `limit` credits and checks what every run must guarantee: each item
 * reaches exactly one consumer, indexes are exactly 0..total-1, the stream
 * ends (0) for every consumer, credits never exceed the limit and all come
 * back, and with one producer each consumer sees indexes in order and
 * item i at index i.
 */
static void exchange(int P, int C, int n, int limit, bool slow, int work_us,
                     exchange_extra *res)
{
    fixture f;
    producer prod[8];
    consumer cons[8];
    size_t total = (size_t)P * (size_t)n;
    assert_true(P <= 8 && C <= 8);
    fixture_init(&f, P, C, limit);
    zp__edge_set_slow(&f.e, slow);
    memset(cons, 0, sizeof cons);
    for (int j = 0; j < C; j++) {
        cons[j].rx = f.e.rx[j];
        cons[j].e = &f.e;
        cons[j].work_us = work_us;
        cons[j].rounds = res != NULL ? res->rounds : NULL;
        cons[j].cap = total;
        cons[j].seqs = calloc(total, sizeof(uint64_t));
        cons[j].vals = calloc(total, sizeof(uint64_t));
        assert_non_null(cons[j].seqs);
        assert_non_null(cons[j].vals);
        assert_int_equal(
            pthread_create(&cons[j].thread, NULL, consume, &cons[j]), 0);
    }
    for (int i = 0; i < P; i++) {
        prod[i] = (producer){.tx = f.e.tx[i], .id = (uint64_t)i, .n = n};
        assert_int_equal(
            pthread_create(&prod[i].thread, NULL, produce, &prod[i]), 0);
    }
    for (int i = 0; i < P; i++)
        join_within_deadline(&f, NULL, prod[i].thread);
    for (int j = 0; j < C; j++)
        join_within_deadline(&f, NULL, cons[j].thread);

    unsigned char *seen_seq = calloc(total, 1);
    unsigned char *seen_val = calloc(total, 1);
    assert_non_null(seen_seq);
    assert_non_null(seen_val);
    size_t got = 0;
    uint64_t sent = 0, taken = 0;
    for (int i = 0; i < P; i++) {
        assert_int_equal(prod[i].rc, 0);
        sent += (uint64_t)n;
    }
    for (int j = 0; j < C; j++) {
        consumer *c = &cons[j];
        assert_int_equal(c->rc, 0); /* the end of the stream, not an error */
        assert_int_equal(c->over_limit, 0);
        assert_true(c->n <= total);
        taken += c->n;
        for (size_t k = 0; k < c->n; k++) {
            uint64_t id = c->vals[k] >> 32, i = c->vals[k] & 0xffffffffu;
            assert_true(c->seqs[k] < total);
            assert_true(id < (uint64_t)P && i < (uint64_t)n);
            assert_int_equal(seen_seq[c->seqs[k]]++, 0);
            assert_int_equal(seen_val[id * (uint64_t)n + i]++, 0);
            if (P == 1) {
                assert_int_equal(c->seqs[k], i);
                assert_true(k == 0 || c->seqs[k] > c->seqs[k - 1]);
            }
        }
        got += c->n;
        if (res != NULL)
            res->per_consumer[j] = c->n;
    }
    assert_int_equal(got, total);
    assert_int_equal(sent, total);
    assert_int_equal(taken, total);
    assert_int_equal(atomic_load(&f.e.next_seq), total);
    assert_int_equal(atomic_load(&f.e.queued), 0);
    assert_true(atomic_load(&f.e.hwm) <= (uint64_t)limit);
    assert_true(atomic_load(&f.e.hwm) > 0);
    for (int j = 0; j < C; j++)
        assert_int_equal(atomic_load(&f.e.pending[j]), 0);

    free(seen_seq);
    free(seen_val);
    for (int j = 0; j < C; j++) {
        free(cons[j].seqs);
        free(cons[j].vals);
    }
    fixture_fini(&f);
}

/* ---- Delivery ------------------------------------------------------------ */

static void
test_one_producer_one_consumer_gets_every_item_in_order(void **state)
{
    (void)state;
    exchange(1, 1, 5000, 100, false, 0, NULL);
}

static void
test_items_reach_consumers_exactly_once_with_dense_indexes(void **state)
{
    (void)state;
    exchange(3, 4, 3000, 32, false, 0, NULL);
}

static void test_unbatched_items_reach_consumers_exactly_once(void **state)
{
    (void)state;
    exchange(2, 3, 1000, 8, true, 0, NULL);
}

static void test_a_limit_of_one_still_delivers_everything(void **state)
{
    (void)state;
    exchange(2, 2, 500, 1, false, 0, NULL);
}

static void test_appended_and_discarded_items(void **state)
{
    (void)state;
    fixture f;
    uint64_t v = 0, seq = 0;
    char packed[1] = {0x2a}; /* fixint 42 */
    fixture_init(&f, 1, 1, 16);
    zp__tx *tx = f.e.tx[0];
    /* Committing nothing is refused; a discarded item never leaves. */
    assert_int_equal(zp__tx_commit(tx), ZP_EINVAL);
    msgpack_pack_uint64(zp__tx_packer(tx), 7);
    zp__tx_discard(tx);
    assert_int_equal(zp__tx_commit(tx), ZP_EINVAL);
    assert_int_equal(zp__tx_append(tx, packed, sizeof packed), 0);
    assert_int_equal(send_uint(tx, 43), 0);
    assert_int_equal(zp__tx_close(tx), 0);
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 1);
    assert_int_equal(v, 42);
    assert_int_equal(seq, 0);
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 1);
    assert_int_equal(v, 43);
    assert_int_equal(seq, 1);
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 0);
    fixture_fini(&f);
}

/* Packs `n` fixints 1..n back to back into sb. */
static void pack_fixints(msgpack_sbuffer *sb, int n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    for (int i = 1; i <= n; i++)
        assert_int_equal(msgpack_pack_uint64(&pk, (uint64_t)i), 0);
}

static void test_packed_items_go_whole_after_committed_ones(void **state)
{
    (void)state;
    fixture f;
    uint64_t v = 0, seq = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_fixints(&sb, 3);
    fixture_init(&f, 1, 1, 16);
    zp__tx *tx = f.e.tx[0];
    assert_int_equal(send_uint(tx, 0), 0);
    assert_int_equal(zp__tx_send_items(tx, sb.data, sb.size, 3), 0);
    assert_int_equal(zp__tx_send_items(tx, sb.data, sb.size, 17), ZP_EINVAL);
    assert_int_equal(zp__tx_close(tx), 0);
    for (uint64_t i = 0; i < 4; i++) {
        assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 1);
        assert_int_equal(v, i);
        assert_int_equal(seq, i);
    }
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 0);
    msgpack_sbuffer_destroy(&sb);
    fixture_fini(&f);
}

static void test_batches_are_larger_for_a_lone_consumer(void **state)
{
    (void)state;
    fixture f;
    fixture_init(&f, 1, 1, 5000);
    assert_int_equal(zp__tx_max(f.e.tx[0]), ZP__BATCH_MAX_ALONE);
    fixture_fini(&f);
    fixture_init(&f, 1, 1, 10);
    assert_int_equal(zp__tx_max(f.e.tx[0]), 10);
    fixture_fini(&f);
    fixture_init(&f, 1, 2, 5000);
    assert_int_equal(zp__tx_max(f.e.tx[0]), ZP__BATCH_MAX_SHARED);
    fixture_fini(&f);
}

/* Takes the rest of the current batch whole; returns rx_take's result. */
static int take_soon_raw(zp__rx *rx, size_t max_bytes, const char **items,
                         size_t *len, uint32_t *n, uint64_t *seq)
{
    double deadline = now_s() + DEADLINE_S;
    int rc;
    while ((rc = zp__rx_take(rx, false, max_bytes, items, len, n, seq)) ==
               ZP__AGAIN &&
           now_s() < deadline)
        sched_yield();
    if (rc == ZP__AGAIN)
        fail_msg("nothing came within %d s", DEADLINE_S);
    return rc;
}

static void test_a_batch_is_taken_whole_or_cut_by_bytes(void **state)
{
    (void)state;
    fixture f;
    const char *items;
    size_t len;
    uint32_t n;
    uint64_t seq, v;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    pack_fixints(&sb, 5);
    fixture_init(&f, 1, 1, 16);
    zp__edge_set_slow(&f.e, false); /* batches of several items */
    zp__tx *tx = f.e.tx[0];
    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(send_uint(tx, i), 0);
    assert_int_equal(zp__tx_flush(tx), 0);
    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(send_uint(tx, i), 0);
    assert_int_equal(zp__tx_close(tx), 0);
    zp__rx *rx = f.e.rx[0];
    /* The first batch: one item read, the rest taken whole. */
    assert_int_equal(take_soon(rx, &v, &seq), 1);
    assert_int_equal(v, 1);
    assert_int_equal(take_soon_raw(rx, 100, &items, &len, &n, &seq), 1);
    assert_int_equal(n, 4);
    assert_int_equal(seq, 1);
    assert_memory_equal(items, sb.data + 1, 4);
    assert_int_equal(len, 4);
    /* The second: cut at 2 bytes (items of one byte each), then at 0,
     * which still takes one item. */
    assert_int_equal(take_soon_raw(rx, 2, &items, &len, &n, &seq), 1);
    assert_int_equal(n, 2);
    assert_int_equal(seq, 5);
    assert_memory_equal(items, sb.data, 2);
    assert_int_equal(take_soon_raw(rx, 0, &items, &len, &n, &seq), 1);
    assert_int_equal(n, 1);
    assert_int_equal(seq, 7);
    assert_int_equal(take_soon_raw(rx, 100, &items, &len, &n, &seq), 1);
    assert_int_equal(n, 2);
    assert_int_equal(seq, 8);
    assert_memory_equal(items, sb.data + 3, 2);
    assert_int_equal(take_soon_raw(rx, 100, &items, &len, &n, &seq), 0);
    msgpack_sbuffer_destroy(&sb);
    fixture_fini(&f);
}

/* ---- Credits ------------------------------------------------------------- */

typedef struct lockstep {
    fixture *f;
    int n;
    int rc;
} lockstep;

static void *produce_n(void *arg)
{
    lockstep *l = arg;
    zp__tx *tx = l->f->e.tx[0];
    l->rc = 0;
    for (int i = 0; i < l->n && l->rc == 0; i++)
        l->rc = send_uint(tx, (uint64_t)i);
    if (l->rc == 0)
        l->rc = zp__tx_close(tx);
    return NULL;
}

static void test_a_slow_consumer_holds_the_queue_at_the_limit(void **state)
{
    (void)state;
    enum { LIMIT = 4, N = 40 };
    fixture f;
    lockstep l = {.f = &f, .n = N};
    pthread_t t;
    uint64_t v, seq;
    int waits = 0;
    fixture_init(&f, 1, 1, LIMIT);
    assert_int_equal(pthread_create(&t, NULL, produce_n, &l), 0);
    /* The consumer takes an item only once the producer is blocked on a
     * full queue (or has sent everything), so it is always the slower. */
    for (int i = 0; i < N; i++) {
        bool blocked = false, finished = false;
        double deadline = now_s() + DEADLINE_S;
        while (!(blocked = atomic_load(&f.e.waiters) > 0 &&
                           atomic_load(&f.e.queued) == LIMIT) &&
               !(finished = atomic_load(&f.e.next_seq) == N) &&
               now_s() < deadline)
            sched_yield();
        assert_true(blocked || finished);
        waits += blocked;
        assert_true(atomic_load(&f.e.queued) <= LIMIT);
        assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 1);
        assert_int_equal(v, (uint64_t)i);
        assert_int_equal(seq, (uint64_t)i);
    }
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 0);
    join_within_deadline(&f, NULL, t);
    assert_int_equal(l.rc, 0);
    assert_true(waits >= N - LIMIT);
    assert_int_equal(atomic_load(&f.e.hwm), LIMIT);
    assert_int_equal(atomic_load(&f.e.queued), 0);
    fixture_fini(&f);
}

static void test_credits_bound_batches_of_a_busy_consumer(void **state)
{
    (void)state;
    /* Batches on, consumers slower than the producer: the consumers check
     * the bound after every item, exchange() checks the high-water mark. */
    exchange(1, 2, 600, 10, false, 20, NULL);
    exchange(2, 1, 400, 3, false, 20, NULL);
}

static void test_deferred_credits_come_back_only_when_released(void **state)
{
    (void)state;
    enum { LIMIT = 4 };
    fixture f;
    lockstep l = {.f = &f, .n = LIMIT + 1};
    pthread_t t;
    uint64_t v, seq;
    fixture_init(&f, 1, 1, LIMIT);
    f.e.defer_release = true;
    assert_int_equal(pthread_create(&t, NULL, produce_n, &l), 0);
    ASSERT_SOON(atomic_load(&f.e.waiters) > 0);
    /* Taking the items gives no credit back... */
    for (int i = 0; i < LIMIT; i++)
        assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 1);
    assert_int_equal(take_uint(f.e.rx[0], false, &v, &seq), ZP__AGAIN);
    assert_int_equal(atomic_load(&f.e.queued), LIMIT);
    assert_int_equal(atomic_load(&f.e.waiters), 1);
    /* ...releasing them does, and the last item comes through. */
    zp__edge_release(&f.e, LIMIT);
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 1);
    assert_int_equal(v, LIMIT);
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 0);
    join_within_deadline(&f, NULL, t);
    assert_int_equal(l.rc, 0);
    zp__edge_release(&f.e, 1);
    assert_int_equal(atomic_load(&f.e.queued), 0);
    fixture_fini(&f);
}

/* ---- End of stream and polling ------------------------------------------- */

static void test_the_stream_ends_only_after_every_producer_closed(void **state)
{
    (void)state;
    fixture f;
    uint64_t v, seq;
    fixture_init(&f, 2, 1, 16);
    zp__rx *rx = f.e.rx[0];
    assert_int_equal(send_uint(f.e.tx[0], 1), 0);
    assert_int_equal(zp__tx_close(f.e.tx[0]), 0);
    assert_int_equal(send_uint(f.e.tx[1], 2), 0);
    assert_int_equal(zp__tx_flush(f.e.tx[1]), 0);
    assert_int_equal(take_soon(rx, &v, &seq), 1);
    assert_int_equal(take_soon(rx, &v, &seq), 1);
    /* One producer is still open: not the end, just nothing ready. */
    assert_int_equal(take_uint(rx, false, &v, &seq), ZP__AGAIN);
    assert_int_equal(take_uint(rx, false, &v, &seq), ZP__AGAIN);
    assert_int_equal(zp__tx_close(f.e.tx[1]), 0);
    assert_int_equal(take_soon(rx, &v, &seq), 0);
    /* The end is sticky. */
    assert_int_equal(take_uint(rx, false, &v, &seq), 0);
    fixture_fini(&f);
}

static void test_every_consumer_sees_the_end_of_the_stream(void **state)
{
    (void)state;
    fixture f;
    uint64_t v, seq;
    fixture_init(&f, 2, 3, 16);
    assert_int_equal(zp__tx_close(f.e.tx[0]), 0);
    assert_int_equal(zp__tx_close(f.e.tx[1]), 0);
    for (int j = 0; j < 3; j++)
        assert_int_equal(take_soon(f.e.rx[j], &v, &seq), 0);
    assert_int_equal(atomic_load(&f.e.next_seq), 0);
    fixture_fini(&f);
}

static void test_polling_an_empty_link_returns_again(void **state)
{
    (void)state;
    fixture f;
    uint64_t v = 0, seq = 0;
    fixture_init(&f, 1, 1, 16);
    zp__rx *rx = f.e.rx[0];
    assert_int_equal(take_uint(rx, false, &v, &seq), ZP__AGAIN);
    assert_int_equal(send_uint(f.e.tx[0], 5), 0);
    assert_int_equal(zp__tx_flush(f.e.tx[0]), 0);
    assert_int_equal(take_soon(rx, &v, &seq), 1);
    assert_int_equal(v, 5);
    assert_int_equal(take_uint(rx, false, &v, &seq), ZP__AGAIN);
    fixture_fini(&f);
}

/* ---- Cancellation -------------------------------------------------------- */

/* A consumer thread that waits for one item. */
typedef struct taker {
    zp__rx *rx;
    int rc;
} taker;

static void *take_one(void *arg)
{
    taker *k = arg;
    uint64_t v, seq;
    k->rc = take_uint(k->rx, true, &v, &seq);
    return NULL;
}

/* A producer thread that sends two items whatever the first gives. */
typedef struct sender {
    zp__tx *tx;
    int rc[2];
} sender;

static void *send_two(void *arg)
{
    sender *s = arg;
    s->rc[0] = send_uint(s->tx, 1);
    s->rc[1] = send_uint(s->tx, 2);
    return NULL;
}

static void test_stopping_wakes_a_producer_waiting_for_credits(void **state)
{
    (void)state;
    fixture f;
    lockstep l = {.f = &f, .n = 100};
    pthread_t t;
    fixture_init(&f, 1, 1, 2);
    assert_int_equal(pthread_create(&t, NULL, produce_n, &l), 0);
    ASSERT_SOON(atomic_load(&f.e.waiters) > 0);
    assert_int_equal(atomic_load(&f.e.queued), 2);
    stop_run(&f, NULL);
    join_within_deadline(&f, NULL, t);
    assert_int_equal(l.rc, ZP_ECANCELED);
    assert_int_equal(atomic_load(&f.e.waiters), 0);
    fixture_fini(&f);
}

static void test_stopping_wakes_a_consumer_waiting_for_input(void **state)
{
    (void)state;
    fixture f;
    taker k = {0};
    pthread_t t;
    fixture_init(&f, 1, 1, 16);
    k.rx = f.e.rx[0];
    assert_int_equal(pthread_create(&t, NULL, take_one, &k), 0);
    ASSERT_SOON(atomic_load(&f.e.waiting) > 0);
    stop_run(&f, NULL);
    join_within_deadline(&f, NULL, t);
    assert_int_equal(k.rc, ZP_ECANCELED);
    fixture_fini(&f);
}

static void test_a_stopped_link_refuses_to_wait(void **state)
{
    (void)state;
    fixture f;
    taker k = {0};
    pthread_t t;
    fixture_init(&f, 1, 1, 1);
    stop_run(&f, NULL);
    /* A consumer asked to wait on a stopped link returns at once. */
    k.rx = f.e.rx[0];
    assert_int_equal(pthread_create(&t, NULL, take_one, &k), 0);
    join_within_deadline(&f, NULL, t);
    assert_int_equal(k.rc, ZP_ECANCELED);
    /* The first item has a credit but no context to travel in; the second
     * would wait for a credit, and may not. */
    sender two = {.tx = f.e.tx[0]};
    assert_int_equal(pthread_create(&t, NULL, send_two, &two), 0);
    join_within_deadline(&f, NULL, t);
    assert_int_equal(two.rc[0], ZP_ECANCELED);
    assert_int_equal(two.rc[1], ZP_ECANCELED);
    fixture_fini(&f);
}

static void test_one_stop_wakes_both_ends_of_a_run(void **state)
{
    (void)state;
    fixture f;
    zp__edge second;
    lockstep full = {.f = &f, .n = 100};
    taker starving = {0};
    pthread_t tp, tc;
    fixture_init(&f, 1, 1, 2);
    assert_int_equal(
        zp__edge_init(&second, f.zctx, "link-test-2", 1, 1, 8, &f.stop), 0);
    /* The first edge fills up while the second edge's consumer starves. */
    starving.rx = second.rx[0];
    assert_int_equal(pthread_create(&tp, NULL, produce_n, &full), 0);
    assert_int_equal(pthread_create(&tc, NULL, take_one, &starving), 0);
    ASSERT_SOON(atomic_load(&f.e.waiters) > 0);
    ASSERT_SOON(atomic_load(&second.waiting) > 0);
    stop_run(&f, &second);
    join_within_deadline(&f, &second, tp);
    join_within_deadline(&f, &second, tc);
    assert_int_equal(full.rc, ZP_ECANCELED);
    assert_int_equal(starving.rc, ZP_ECANCELED);
    zp__edge_fini(&second);
    fixture_fini(&f);
}

/* ---- Malformed input ----------------------------------------------------- */

/*
 * Plays a peer that is not a zpipe producer: a raw ROUTER connected to
 * consumer 0 under that consumer's routing id. Closed by the caller.
 */
static void *raw_peer(fixture *f)
{
    const unsigned char id[4] = {0, 0, 0, 0};
    int one = 1, zero = 0;
    void *s = zmq_socket(f->zctx, ZMQ_ROUTER);
    assert_non_null(s);
    assert_int_equal(zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one),
                     0);
    assert_int_equal(zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero), 0);
    assert_int_equal(zmq_setsockopt(s, ZMQ_CONNECT_ROUTING_ID, id, sizeof id),
                     0);
    assert_int_equal(zmq_connect(s, "inproc://link-test/0"), 0);
    return s;
}

/* Sends `data` to consumer 0 as one message (routing id, then data). */
static void raw_send(void *s, const void *data, size_t len)
{
    const unsigned char id[4] = {0, 0, 0, 0};
    assert_int_equal(zmq_send(s, id, sizeof id, ZMQ_SNDMORE), (int)sizeof id);
    assert_int_equal(zmq_send(s, data, len, 0), (int)len);
}

static void test_garbage_from_a_raw_peer_is_eproto(void **state)
{
    (void)state;
    static const struct {
        const char *bytes;
        size_t len;
    } cases[] = {
        {"", 0},                             /* an empty frame */
        {"\xc1", 1},                         /* a byte msgpack never uses */
        {"\xcf\x00\x00", 3},                 /* a truncated header */
        {"\xa3seq\x01\x01", 6},              /* seq is a string */
        {"\x00\x05\x01\x02", 4},             /* five items promised, two */
        {"\x00\x01\xdb\xff\xff\xff\xff", 7}, /* a truncated str32 */
        {"\x00\x01\x01\x02\x03", 5},         /* bytes after the last item */
        {"\x00\x01\xdd\x7f\xff\xff\xff", 7}, /* a 2^31-element array */
        {"\xc0\xc0", 2},                     /* two nils: not the end */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fixture f;
        uint64_t v = 0, seq = 0;
        fixture_init(&f, 1, 1, 16);
        void *s = raw_peer(&f);
        raw_send(s, cases[i].bytes, cases[i].len);
        int rc = take_soon(f.e.rx[0], &v, &seq);
        if (rc != ZP_EPROTO)
            fail_msg("case %zu: rx_next returned %d, not ZP_EPROTO", i, rc);
        zmq_close(s);
        fixture_fini(&f);
    }
}

static void test_a_malformed_batch_after_good_items_is_eproto(void **state)
{
    (void)state;
    fixture f;
    uint64_t v, seq;
    /* seq 0, three items promised: 7, 8, then a truncated uint64. */
    const char bad[] = {0x00, 0x03, 0x07, 0x08, (char)0xcf, 0x01};
    fixture_init(&f, 1, 1, 16);
    void *s = raw_peer(&f);
    raw_send(s, bad, sizeof bad);
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 1);
    assert_int_equal(v, 7);
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 1);
    assert_int_equal(v, 8);
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), ZP_EPROTO);
    zmq_close(s);
    fixture_fini(&f);
}

static void test_each_frame_of_a_multipart_message_is_checked(void **state)
{
    (void)state;
    fixture f;
    uint64_t v, seq;
    char good[ZP__BATCH_HEADER_MAX + 1];
    size_t n = zp__batch_header(good, 0, 1);
    good[n++] = 0x11;
    fixture_init(&f, 1, 1, 16);
    void *s = raw_peer(&f);
    const unsigned char id[4] = {0, 0, 0, 0};
    assert_int_equal(zmq_send(s, id, sizeof id, ZMQ_SNDMORE), 4);
    assert_int_equal(zmq_send(s, good, n, ZMQ_SNDMORE), (int)n);
    assert_int_equal(zmq_send(s, "\xc1\xc1", 2, 0), 2);
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), 1);
    assert_int_equal(v, 0x11);
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), ZP_EPROTO);
    zmq_close(s);
    fixture_fini(&f);
}

/* ---- Balancing ----------------------------------------------------------- */

static void test_slow_items_go_to_the_least_loaded_consumer(void **state)
{
    (void)state;
    fixture f;
    uint64_t v, seq;
    fixture_init(&f, 1, 4, 64);
    assert_true(atomic_load(&f.e.slow)); /* the default until measured */
    zp__tx *tx = f.e.tx[0];
    /* Four items, none taken: one for each consumer. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(send_uint(tx, (uint64_t)i), 0);
    for (int j = 0; j < 4; j++)
        assert_int_equal(atomic_load(&f.e.pending[j]), 1);
    /* Consumer 2 finishes its item: the next one is its, not 0's. */
    assert_int_equal(take_soon(f.e.rx[2], &v, &seq), 1);
    assert_int_equal(atomic_load(&f.e.pending[2]), 0);
    assert_int_equal(send_uint(tx, 100), 0);
    assert_int_equal(atomic_load(&f.e.pending[2]), 1);
    assert_int_equal(atomic_load(&f.e.pending[0]), 1);
    assert_int_equal(take_soon(f.e.rx[2], &v, &seq), 1);
    assert_int_equal(v, 100);
    assert_int_equal(take_uint(f.e.rx[2], false, &v, &seq), ZP__AGAIN);
    for (int j = 0; j < 4; j++) {
        if (j == 2)
            continue;
        assert_int_equal(take_soon(f.e.rx[j], &v, &seq), 1);
        assert_int_equal(v, (uint64_t)j);
        assert_int_equal(take_uint(f.e.rx[j], false, &v, &seq), ZP__AGAIN);
    }
    fixture_fini(&f);
}

static void test_slow_consumers_share_the_items(void **state)
{
    (void)state;
    rounds r;
    exchange_extra res = {.rounds = &r};
    /* 400 items of 200 us each over 4 consumers that go at one pace:
     * each takes its share, however the scheduler runs them. */
    rounds_init(&r, 4);
    exchange(1, 4, 400, 8, true, 200, &res);
    rounds_fini(&r);
    assert_false(r.broken);
    for (int j = 0; j < 4; j++)
        if (res.per_consumer[j] != 100)
            fail_msg("consumer %d took %zu of 400 slow items", j,
                     res.per_consumer[j]);
}

/* ---- Setup failures ------------------------------------------------------ */

static void test_a_second_edge_under_the_same_name_fails_cleanly(void **state)
{
    (void)state;
    fixture f;
    zp__edge dup;
    fixture_init(&f, 1, 2, 16);
    assert_int_equal(
        zp__edge_init(&dup, f.zctx, "link-test", 1, 2, 16, &f.stop), ZP_EIO);
    zp__edge_fini(&dup);
    /* The first edge is unharmed. */
    uint64_t v, seq;
    assert_int_equal(send_uint(f.e.tx[0], 9), 0);
    assert_int_equal(zp__tx_close(f.e.tx[0]), 0);
    int got = 0;
    for (int j = 0; j < 2; j++)
        while (take_soon(f.e.rx[j], &v, &seq) == 1)
            got++;
    assert_int_equal(got, 1);
    fixture_fini(&f);
}

/* ---- Checkpoint markers -------------------------------------------------- */

/* A producer thread that sends one item, after whatever held it. */
typedef struct late_sender {
    zp__tx *tx;
    uint64_t v;
    _Atomic int rc; /* 1 until sent */
} late_sender;

static void *send_late(void *arg)
{
    late_sender *s = arg;
    int rc = send_uint(s->tx, s->v);
    if (rc == 0)
        rc = zp__tx_flush(s->tx);
    atomic_store(&s->rc, rc);
    return NULL;
}

static void test_a_marker_comes_after_every_producers_items(void **state)
{
    (void)state;
    fixture f;
    uint64_t v, seq;
    fixture_init(&f, 2, 1, 16);
    zp__rx *rx = f.e.rx[0];
    zp__mark m = {.epoch = 1, .first = 7};
    assert_int_equal(send_uint(f.e.tx[0], 1), 0);
    assert_int_equal(zp__tx_mark(f.e.tx[0], &m), 0);
    assert_int_equal(take_soon(rx, &v, &seq), 1);
    assert_int_equal(v, 1);
    /* One producer marked, the other has not: no marker yet. */
    assert_int_equal(take_uint(rx, false, &v, &seq), ZP__AGAIN);
    assert_int_equal(send_uint(f.e.tx[1], 2), 0);
    assert_int_equal(zp__tx_mark(f.e.tx[1], &m), 0);
    assert_int_equal(take_soon(rx, &v, &seq), 1);
    assert_int_equal(v, 2);
    assert_int_equal(take_soon(rx, &v, &seq), ZP__MARK);
    zp__mark got = zp__rx_mark(rx);
    assert_int_equal(got.epoch, 1);
    assert_int_equal(got.first, 7);
    zp__rx_pass(rx);
    assert_int_equal(take_uint(rx, false, &v, &seq), ZP__AGAIN);
    fixture_fini(&f);
}

static void test_a_producer_waits_until_every_consumer_passed(void **state)
{
    (void)state;
    fixture f;
    uint64_t v, seq;
    pthread_t t;
    fixture_init(&f, 1, 2, 16);
    zp__mark m = {.epoch = 1, .first = 0};
    assert_int_equal(zp__tx_mark(f.e.tx[0], &m), 0);
    late_sender s = {.tx = f.e.tx[0], .v = 9};
    atomic_init(&s.rc, 1);
    pthread_create(&t, NULL, send_late, &s);
    for (int j = 0; j < 2; j++)
        assert_int_equal(take_soon(f.e.rx[j], &v, &seq), ZP__MARK);
    zp__rx_pass(f.e.rx[0]);
    /* One consumer passed: the item still waits. */
    ASSERT_SOON(atomic_load(&f.e.waiters) == 1);
    assert_int_equal(atomic_load(&s.rc), 1);
    assert_int_equal(atomic_load(&f.e.next_seq), 0);
    zp__rx_pass(f.e.rx[1]);
    ASSERT_SOON(atomic_load(&s.rc) != 1);
    assert_int_equal(atomic_load(&s.rc), 0);
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&f.e.next_seq), 1);
    fixture_fini(&f);
}

static void test_a_closed_producer_does_not_hold_a_marker_back(void **state)
{
    (void)state;
    fixture f;
    uint64_t v, seq;
    fixture_init(&f, 2, 1, 16);
    zp__rx *rx = f.e.rx[0];
    zp__mark m = {.epoch = 1, .first = 3};
    assert_int_equal(zp__tx_close(f.e.tx[1]), 0);
    assert_int_equal(zp__tx_mark(f.e.tx[0], &m), 0);
    assert_int_equal(take_soon(rx, &v, &seq), ZP__MARK);
    zp__rx_pass(rx);
    /* Its close waits for the pass, then ends the stream. */
    assert_int_equal(zp__tx_close(f.e.tx[0]), 0);
    assert_int_equal(take_soon(rx, &v, &seq), 0);
    fixture_fini(&f);
}

static void test_a_held_producer_has_no_room_until_passed(void **state)
{
    (void)state;
    fixture f;
    uint64_t v, seq;
    fixture_init(&f, 1, 1, 16);
    zp__mark m = {.epoch = 1, .first = 0};
    assert_true(zp__tx_room(f.e.tx[0]));
    assert_int_equal(zp__tx_mark(f.e.tx[0], &m), 0);
    assert_false(zp__tx_room(f.e.tx[0]));
    assert_int_equal(take_soon(f.e.rx[0], &v, &seq), ZP__MARK);
    zp__rx_pass(f.e.rx[0]);
    assert_true(zp__tx_room(f.e.tx[0]));
    fixture_fini(&f);
}

static void
test_the_first_edge_drops_resumed_items_and_marks_itself(void **state)
{
    (void)state;
    fixture f;
    uint64_t v, seq;
    fixture_init(&f, 1, 1, 64);
    zp__rx *rx = f.e.rx[0];
    zp__edge_set_slow(&f.e, false);  /* items go in one batch */
    zp__edge_mark_every(&f.e, 1, 5); /* every nanosecond; 5 sent before */
    for (uint64_t i = 0; i < 8; i++)
        assert_int_equal(send_uint(f.e.tx[0], i), 0);
    assert_int_equal(zp__tx_flush(f.e.tx[0]), 0);
    /* Items 0..4 were delivered before the crash: 5, 6, 7 travel. */
    for (uint64_t i = 5; i < 8; i++) {
        assert_int_equal(take_soon(rx, &v, &seq), 1);
        assert_int_equal(v, i);
    }
    assert_int_equal(take_soon(rx, &v, &seq), ZP__MARK);
    zp__mark got = zp__rx_mark(rx);
    assert_int_equal(got.epoch, 1);
    assert_int_equal(got.first, 8);
    zp__rx_pass(rx);
    /* No second marker until the first went through the whole run. */
    assert_int_equal(send_uint(f.e.tx[0], 8), 0);
    assert_int_equal(zp__tx_flush(f.e.tx[0]), 0);
    assert_int_equal(take_soon(rx, &v, &seq), 1);
    assert_int_equal(take_uint(rx, false, &v, &seq), ZP__AGAIN);
    zp__edge_mark_settled(&f.e, 1);
    assert_int_equal(send_uint(f.e.tx[0], 9), 0);
    assert_int_equal(zp__tx_flush(f.e.tx[0]), 0);
    assert_int_equal(take_soon(rx, &v, &seq), 1);
    assert_int_equal(take_soon(rx, &v, &seq), ZP__MARK);
    got = zp__rx_mark(rx);
    assert_int_equal(got.epoch, 2);
    assert_int_equal(got.first, 10);
    zp__rx_pass(rx);
    fixture_fini(&f);
}

static void test_stopping_wakes_a_producer_held_by_a_marker(void **state)
{
    (void)state;
    fixture f;
    pthread_t t;
    fixture_init(&f, 1, 1, 16);
    zp__mark m = {.epoch = 1, .first = 0};
    assert_int_equal(zp__tx_mark(f.e.tx[0], &m), 0);
    late_sender s = {.tx = f.e.tx[0], .v = 1};
    atomic_init(&s.rc, 1);
    pthread_create(&t, NULL, send_late, &s);
    ASSERT_SOON(atomic_load(&f.e.waiters) == 1);
    stop_run(&f, NULL);
    join_within_deadline(&f, NULL, t);
    assert_int_equal(atomic_load(&s.rc), ZP_ECANCELED);
    fixture_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_one_producer_one_consumer_gets_every_item_in_order),
        cmocka_unit_test(
            test_items_reach_consumers_exactly_once_with_dense_indexes),
        cmocka_unit_test(test_unbatched_items_reach_consumers_exactly_once),
        cmocka_unit_test(test_a_marker_comes_after_every_producers_items),
        cmocka_unit_test(test_a_producer_waits_until_every_consumer_passed),
        cmocka_unit_test(test_a_closed_producer_does_not_hold_a_marker_back),
        cmocka_unit_test(test_a_held_producer_has_no_room_until_passed),
        cmocka_unit_test(
            test_the_first_edge_drops_resumed_items_and_marks_itself),
        cmocka_unit_test(test_stopping_wakes_a_producer_held_by_a_marker),
        cmocka_unit_test(test_a_limit_of_one_still_delivers_everything),
        cmocka_unit_test(test_appended_and_discarded_items),
        cmocka_unit_test(test_packed_items_go_whole_after_committed_ones),
        cmocka_unit_test(test_batches_are_larger_for_a_lone_consumer),
        cmocka_unit_test(test_a_batch_is_taken_whole_or_cut_by_bytes),
        cmocka_unit_test(test_a_slow_consumer_holds_the_queue_at_the_limit),
        cmocka_unit_test(test_credits_bound_batches_of_a_busy_consumer),
        cmocka_unit_test(test_deferred_credits_come_back_only_when_released),
        cmocka_unit_test(test_the_stream_ends_only_after_every_producer_closed),
        cmocka_unit_test(test_every_consumer_sees_the_end_of_the_stream),
        cmocka_unit_test(test_polling_an_empty_link_returns_again),
        cmocka_unit_test(test_stopping_wakes_a_producer_waiting_for_credits),
        cmocka_unit_test(test_stopping_wakes_a_consumer_waiting_for_input),
        cmocka_unit_test(test_a_stopped_link_refuses_to_wait),
        cmocka_unit_test(test_one_stop_wakes_both_ends_of_a_run),
        cmocka_unit_test(test_garbage_from_a_raw_peer_is_eproto),
        cmocka_unit_test(test_a_malformed_batch_after_good_items_is_eproto),
        cmocka_unit_test(test_each_frame_of_a_multipart_message_is_checked),
        cmocka_unit_test(test_slow_items_go_to_the_least_loaded_consumer),
        cmocka_unit_test(test_slow_consumers_share_the_items),
        cmocka_unit_test(test_a_second_edge_under_the_same_name_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
