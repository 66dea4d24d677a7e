/* SPDX-License-Identifier: MIT */
/*
 * Tests of runs (coordinator/run.c and the thread workers under it), one
 * per semantic of zpipe.h and the README: laziness, bounded queues, ordering,
 * exactly once delivery, filters, retries, skipping, nested pipelines, reuse of
 * a pipeline, cancellation, `workers = N` meaning N, the end of a run, the user
 * pointer, the first task's arguments and item indices.
 *
 * Tasks run on worker threads, where cmocka's asserts must not be used:
 * they report through zp_fail() or through the shared state handed to them
 * with .user, and the test thread asserts. Waiting for another thread is
 * done on a condition variable with a deadline, never by sleeping; tasks
 * sleep only to play slow work.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zpipe.h"

/* How long a test waits for an event before it calls it a failure. */
#define DEADLINE_MS 30000

/* ---- Helpers ----------------------------------------------------------------
 */

/* Busy for about `ns` nanoseconds: a stage that is slower than its input. */
static void spin_ns(long ns)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) <
           ns);
}

/* A pseudo-random but repeatable number from an item. */
static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

/* An event a thread signals and another waits for, with a deadline. */
typedef struct latch {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int count;
} latch;

static void latch_init(latch *l)
{
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
    l->count = 0;
}

static void latch_fini(latch *l)
{
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
}

static void latch_add(latch *l)
{
    pthread_mutex_lock(&l->lock);
    l->count++;
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
}

/* Waits until the latch counted `n`; false when the deadline passed. */
static bool latch_wait(latch *l, int n, int ms)
{
    struct timespec t;
    int rc = 0;
    deadline_in(&t, ms);
    pthread_mutex_lock(&l->lock);
    while (l->count < n && rc == 0)
        rc = pthread_cond_timedwait(&l->cond, &l->lock, &t);
    bool ok = l->count >= n;
    pthread_mutex_unlock(&l->lock);
    return ok;
}

/* Integer outputs of a run. */
typedef struct outputs {
    int64_t *v;
    size_t n, cap;
    int rc;      /* zp_finish's result */
    char *error; /* owned copy of zp_error, or NULL */
} outputs;

/* Runs `p` with `args` to its end, collecting integer outputs. Safe to
 * call from any thread (it asserts nothing). */
static void run_collect(zp_pipeline *p, const char *args, outputs *o)
{
    const msgpack_object *out;
    memset(o, 0, sizeof *o);
    zp_run *run = zp_start(p, args);
    while (zp_run_next(run, &out)) {
        if (o->n == o->cap) {
            o->cap = o->cap ? o->cap * 2 : 1024;
            o->v = realloc(o->v, o->cap * sizeof *o->v);
        }
        if (o->v != NULL)
            o->v[o->n++] = out->via.i64;
    }
    o->rc = zp_finish(run);
    const char *e = zp_error(run);
    o->error = e ? strdup(e) : NULL;
    zp_run_free(run);
}

static void outputs_fini(outputs *o)
{
    free(o->v);
    free(o->error);
}

static void assert_run_ok(const outputs *o)
{
    if (o->rc != 0)
        fail_msg("the run failed (%d): %s", o->rc, o->error);
    assert_null(o->error);
}

/* Asserts that the outputs are exactly the integers of `want`, each once,
 * in any order: want(i) for i in [0, n). */
static void assert_each_once(const outputs *o, size_t n,
                             int64_t (*want)(size_t))
{
    int64_t max = 0;
    for (size_t i = 0; i < n; i++)
        if (want(i) > max)
            max = want(i);
    unsigned char *seen = calloc((size_t)max + 1, 1);
    assert_non_null(seen);
    assert_int_equal(o->n, n);
    for (size_t i = 0; i < o->n; i++) {
        assert_in_range(o->v[i], 0, max);
        seen[o->v[i]]++;
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(seen[want(i)], 1);
    free(seen);
}

static int64_t same(size_t i)
{
    return (int64_t)i;
}

static int64_t doubled(size_t i)
{
    return 2 * (int64_t)i;
}

/* ---- Tasks ------------------------------------------------------------------
 */

/* Emits 0, 1, 2... until the run stops. */
static int endless(zp_call *call)
{
    for (int64_t i = 0;; i++)
        if (zp_emit_int(call, i) != 0)
            return -1;
}

static int identity(zp_call *call)
{
    return zp_emit_obj(call, zp_input(call));
}

/* Counts its calls in the atomic counter given as .user. */
static int counted(zp_call *call)
{
    atomic_fetch_add((_Atomic uint64_t *)zp_user(call), 1);
    return zp_emit_obj(call, zp_input(call));
}

/* Slower than `numbers`: about 1 µs per item. */
static int slowish(zp_call *call)
{
    spin_ns(1000);
    return zp_emit_obj(call, zp_input(call));
}

/* Sleeps a little on a few pseudo-random items, so that workers overtake
 * each other. */
static void jitter(int64_t x)
{
    uint64_t h = mix((uint64_t)x);
    if (h % 29 == 0)
        nap_us(20 + (long)(h >> 40) % 200);
}

static int jittery(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    jitter(x);
    return zp_emit_int(call, x);
}

/* A branch task: 3x, 3x+1, 3x+2, with jitter between them. */
static int triple(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    for (int64_t k = 0; k < 3; k++) {
        if (k == 1)
            jitter(x);
        if (zp_emit_int(call, 3 * x + k) != 0)
            return -1;
    }
    return 0;
}

/* Filters the odd items out. */
static int evens(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    return x % 2 ? 0 : zp_emit_int(call, x);
}

/* Shared state of the flaky task: attempts per item value. */
typedef struct flaky_state {
    _Atomic int attempts[1000];
} flaky_state;

/* Emits its item, then fails the first two attempts of every item: what
 * a failed attempt emitted must never arrive. */
static int flaky(zp_call *call)
{
    flaky_state *s = zp_user(call);
    int64_t x = zp_input(call)->via.i64;
    int a = atomic_fetch_add(&s->attempts[x], 1);
    int rc = zp_emit_int(call, x);
    if (rc == 0 && a < 2)
        rc =
            zp_fail(call, "attempt %d of item %lld fails", a + 1, (long long)x);
    return rc;
}

/* Emits its item, then fails on multiples of 5. */
static int fives_fail(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    int rc = zp_emit_int(call, x);
    if (rc == 0 && x % 5 == 0)
        rc = zp_fail(call, "%lld is a multiple of 5", (long long)x);
    return rc;
}

/* First task of the inner pipelines: 10x, 10x+1, 10x+2 for the argument x. */
static int explode(zp_call *call)
{
    int64_t x = zp_input(call)->via.array.ptr[0].via.i64;
    for (int64_t k = 0; k < 3; k++)
        if (zp_emit_int(call, 10 * x + k) != 0)
            return -1;
    return 0;
}

static int plus_one(zp_call *call)
{
    return zp_emit_int(call, zp_input(call)->via.i64 + 1);
}

static int inner_fail(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    if (x == 21)
        return zp_fail(call, "value %lld is bad", (long long)x);
    return zp_emit_int(call, x);
}

/* A task that stays inside its call until the test releases it. */
typedef struct stuck_state {
    latch entered;       /* counts calls that got inside        */
    latch released;      /* set by the test to let calls go     */
    _Atomic int emit_rc; /* what zp_emit said after the release */
} stuck_state;

static int stuck(zp_call *call)
{
    stuck_state *s = zp_user(call);
    latch_add(&s->entered);
    if (!latch_wait(&s->released, 1, DEADLINE_MS))
        return zp_fail(call, "never released");
    int rc = zp_emit_obj(call, zp_input(call));
    atomic_store(&s->emit_rc, rc);
    return rc;
}

/* A gate that opens once `want` calls are inside it at the same time. */
typedef struct gate_state {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int want, inside, peak;
    bool open;
} gate_state;

static int gate(zp_call *call)
{
    gate_state *g = zp_user(call);
    struct timespec t;
    int rc = 0;
    deadline_in(&t, DEADLINE_MS);
    pthread_mutex_lock(&g->lock);
    if (++g->inside > g->peak)
        g->peak = g->inside;
    if (g->inside == g->want) {
        g->open = true;
        pthread_cond_broadcast(&g->cond);
    }
    while (!g->open && rc == 0)
        rc = pthread_cond_timedwait(&g->cond, &g->lock, &t);
    int seen = g->peak;
    bool open = g->open;
    g->inside--;
    pthread_mutex_unlock(&g->lock);
    if (!open)
        return zp_fail(call, "only %d of %d calls ran at once", seen, g->want);
    return zp_emit_obj(call, zp_input(call));
}

/* Emits 1 when zp_user is the pointer the test expects (its own .user
 * points at a pointer to compare with), else fails. */
static int check_user(zp_call *call)
{
    void *const *expected = zp_user(call);
    if (expected == NULL || *expected != (const void *)expected)
        return zp_fail(call, "zp_user is not the .user pointer");
    return zp_emit_int(call, zp_input(call)->type == MSGPACK_OBJECT_ARRAY
                                 ? 1
                                 : zp_input(call)->via.i64);
}

/* The first task's input, as it is. */
static int echo_args(zp_call *call)
{
    return zp_emit_obj(call, zp_input(call));
}

/* [item, zp_index] */
static int indexer(zp_call *call)
{
    msgpack_packer *pk = zp_out(call);
    msgpack_pack_array(pk, 2);
    msgpack_pack_object(pk, *zp_input(call));
    msgpack_pack_uint64(pk, zp_index(call));
    return zp_emit(call);
}

/* ---- Laziness and bounded queues --------------------------------------------
 */

/* Stats of stage i, read once the run's outputs have ended. */
static zp_stage_stats stats_of(zp_run *run, size_t i)
{
    zp_stage_stats st;
    memset(&st, 0, sizeof st);
    assert_int_equal(zp_run_stats(run, i, &st), 0);
    return st;
}

static void test_endless_generator_runs_only_as_far_as_it_is_read(void **state)
{
    (void)state;
    const int n = 1000, throttle = 64;
    const msgpack_object *out;
    zp_pipeline *p =
        zp_pipe(zp_task(endless, .branch = true, .throttle = throttle),
                zp_task(identity, .throttle = throttle));
    zp_run *run = zp_start(p, NULL);
    for (int i = 0; i < n; i++) {
        assert_true(zp_run_next(run, &out));
        assert_int_equal(out->via.i64, i);
    }
    zp_cancel(run);
    zp_stage_stats st = stats_of(run, 0);
    /* What was read, plus at most both queues and a few batches in hand. */
    assert_true(st.items_out >= (uint64_t)n);
    if (st.items_out > (uint64_t)(n + 8 * throttle))
        fail_msg("the generator ran ahead: %llu items for %d read",
                 (unsigned long long)st.items_out, n);
    assert_int_equal(zp_finish(run), ZP_ECANCELED);
    assert_non_null(zp_error(run));
    zp_run_free(run);
    zp_pipeline_free(p);
}

/* Runs numbers(n) | slowish and returns stage 0's stats. */
static zp_stage_stats run_into_slow_stage(zp_pipeline *p, int n)
{
    const msgpack_object *out;
    char args[32];
    int seen = 0;
    snprintf(args, sizeof args, "[%d]", n);
    zp_run *run = zp_start(p, args);
    while (zp_run_next(run, &out))
        seen++;
    zp_stage_stats st = stats_of(run, 0);
    int rc = zp_finish(run);
    if (rc != 0)
        fail_msg("the run failed: %s", zp_error(run));
    zp_run_free(run);
    assert_int_equal(seen, n);
    assert_int_equal(st.items_out, (uint64_t)n);
    return st;
}

static void test_throttle_bounds_the_queue_after_a_stage(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true, .throttle = 8),
                             zp_task(slowish));
    zp_stage_stats st = run_into_slow_stage(p, 100000);
    assert_int_equal(st.throttle, 8);
    assert_true(st.queue_hwm > 0);
    if (st.queue_hwm > 8)
        fail_msg("%llu items waited behind a throttle of 8",
                 (unsigned long long)st.queue_hwm);
    zp_pipeline_free(p);
}

static void test_default_throttle_bounds_the_queue(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task(slowish));
    zp_stage_stats st = run_into_slow_stage(p, 100000);
    assert_int_equal(st.throttle, ZP_DEFAULT_THROTTLE);
    assert_true(st.queue_hwm > 0);
    if (st.queue_hwm > ZP_DEFAULT_THROTTLE)
        fail_msg("%llu items waited behind the default throttle",
                 (unsigned long long)st.queue_hwm);
    zp_pipeline_free(p);
}

/* ---- Ordering and delivery
 * ---------------------------------------------------- */

static void test_ordered_stage_keeps_input_order(void **state)
{
    (void)state;
    outputs o;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(jittery, .workers = 4, .ordered = true));
    run_collect(p, "[10000]", &o);
    assert_run_ok(&o);
    assert_int_equal(o.n, 10000);
    for (size_t i = 0; i < o.n; i++)
        if (o.v[i] != (int64_t)i)
            fail_msg("output %zu is %lld", i, (long long)o.v[i]);
    outputs_fini(&o);
    zp_pipeline_free(p);
}

static void
test_ordered_branch_stage_keeps_each_items_outputs_together(void **state)
{
    (void)state;
    outputs o;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(triple, .workers = 4, .ordered = true, .branch = true));
    run_collect(p, "[3000]", &o);
    assert_run_ok(&o);
    assert_int_equal(o.n, 9000);
    for (size_t i = 0; i < o.n; i++)
        if (o.v[i] != (int64_t)i)
            fail_msg("output %zu is %lld", i, (long long)o.v[i]);
    outputs_fini(&o);
    zp_pipeline_free(p);
}

static void test_unordered_stage_delivers_every_item_exactly_once(void **state)
{
    (void)state;
    outputs o;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(jittery, .workers = 4));
    run_collect(p, "[10000]", &o);
    assert_run_ok(&o);
    assert_each_once(&o, 10000, same);
    outputs_fini(&o);
    zp_pipeline_free(p);
}

static void test_task_emitting_nothing_filters_the_item_out(void **state)
{
    (void)state;
    outputs o;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task(evens, .workers = 2));
    run_collect(p, "[1000]", &o);
    assert_run_ok(&o);
    assert_each_once(&o, 500, doubled);
    outputs_fini(&o);
    zp_pipeline_free(p);
}

/* ---- Failures
 * ----------------------------------------------------------------- */

static void test_retries_rerun_failed_items_and_keep_one_output(void **state)
{
    (void)state;
    const msgpack_object *out;
    flaky_state *s = calloc(1, sizeof *s);
    assert_non_null(s);
    unsigned char seen[1000] = {0};
    size_t n = 0;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(flaky, .workers = 2, .retries = 2, .user = s));
    zp_run *run = zp_start(p, "[1000]");
    while (zp_run_next(run, &out)) {
        assert_in_range(out->via.i64, 0, 999);
        seen[out->via.i64]++;
        n++;
    }
    zp_stage_stats st = stats_of(run, 1);
    int rc = zp_finish(run);
    if (rc != 0)
        fail_msg("the run failed: %s", zp_error(run));
    assert_int_equal(n, 1000);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(seen[i], 1);
        assert_int_equal(atomic_load(&s->attempts[i]), 3);
    }
    assert_int_equal(st.retried, 2000);
    assert_int_equal(st.failed, 0);
    assert_int_equal(st.items_out, 1000);
    zp_run_free(run);
    zp_pipeline_free(p);
    free(s);
}

static void test_too_few_retries_fail_the_run(void **state)
{
    (void)state;
    outputs o;
    flaky_state *s = calloc(1, sizeof *s);
    assert_non_null(s);
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(flaky, .workers = 2, .retries = 1, .user = s));
    run_collect(p, "[1000]", &o);
    assert_int_equal(o.rc, ZP_ETASK);
    assert_non_null(o.error);
    assert_non_null(strstr(o.error, "task 'flaky' failed on item "));
    assert_non_null(strstr(o.error, ": attempt 2 of item "));
    assert_int_equal(o.n, 0);
    outputs_fini(&o);
    zp_pipeline_free(p);
    free(s);
}

static int64_t not_five(size_t i)
{
    return (int64_t)(i / 4 * 5 + i % 4 + 1); /* 1 2 3 4 6 7 8 9 11 ... */
}

static void test_skip_drops_failed_items_and_counts_them(void **state)
{
    (void)state;
    const msgpack_object *out;
    outputs o;
    memset(&o, 0, sizeof o);
    o.cap = 100;
    o.v = calloc(o.cap, sizeof *o.v);
    assert_non_null(o.v);
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(fives_fail, .workers = 2, .on_error = ZP_SKIP));
    zp_run *run = zp_start(p, "[100]");
    while (zp_run_next(run, &out)) {
        assert_true(o.n < o.cap);
        o.v[o.n++] = out->via.i64;
    }
    zp_stage_stats st = stats_of(run, 1);
    assert_int_equal(zp_finish(run), 0);
    assert_null(zp_error(run));
    assert_each_once(&o, 80, not_five);
    assert_int_equal(st.skipped, 20);
    assert_int_equal(st.items_in, 100);
    assert_int_equal(st.items_out, 80);
    zp_run_free(run);
    free(o.v);
    zp_pipeline_free(p);
}

/* ---- Nested pipelines
 * ----------------------------------------------------------- */

static void
test_nested_pipeline_collects_inner_outputs_into_an_array(void **state)
{
    (void)state;
    const msgpack_object *out;
    bool seen[5] = {false};
    int n = 0;
    zp_pipeline *inner =
        zp_pipe(zp_task(explode, .branch = true), zp_task(plus_one));
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task_pipeline(inner, .workers = 2));
    assert_null(zp_pipeline_error(p));
    zp_run *run = zp_start(p, "[5]");
    while (zp_run_next(run, &out)) {
        assert_int_equal(out->type, MSGPACK_OBJECT_ARRAY);
        assert_int_equal(out->via.array.size, 3);
        int64_t got[3] = {0, 0, 0}, x = out->via.array.ptr[0].via.i64 / 10;
        assert_in_range(x, 0, 4);
        for (int k = 0; k < 3; k++) {
            int64_t v = out->via.array.ptr[k].via.i64;
            assert_in_range(v, 10 * x + 1, 10 * x + 3);
            got[v - 10 * x - 1] = v;
        }
        assert_false(seen[x]);
        seen[x] = true;
        for (int k = 0; k < 3; k++)
            assert_int_equal(got[k], 10 * x + k + 1);
        n++;
    }
    int rc = zp_finish(run);
    if (rc != 0)
        fail_msg("the run failed: %s", zp_error(run));
    assert_int_equal(n, 5);
    zp_run_free(run);
    zp_pipeline_free(p);
}

static int64_t inner_value(size_t i)
{
    return (int64_t)(10 * (i / 3) + i % 3 + 1);
}

static void test_nested_branch_pipeline_flattens_inner_outputs(void **state)
{
    (void)state;
    outputs o;
    zp_pipeline *inner =
        zp_pipe(zp_task(explode, .branch = true), zp_task(plus_one));
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task_pipeline(inner, .workers = 2, .branch = true));
    run_collect(p, "[5]", &o);
    assert_run_ok(&o);
    assert_each_once(&o, 15, inner_value);
    outputs_fini(&o);
    zp_pipeline_free(p);
}

static void test_inner_failure_names_the_outer_and_inner_tasks(void **state)
{
    (void)state;
    outputs o;
    zp_pipeline *inner =
        zp_pipe(zp_task(explode, .branch = true), zp_task(inner_fail));
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task_pipeline(inner, .workers = 2));
    run_collect(p, "[5]", &o);
    assert_int_equal(o.rc, ZP_ETASK);
    assert_non_null(o.error);
    if (strstr(o.error,
               "task 'pipeline(explode | inner_fail)' failed on item 2") ==
            NULL ||
        strstr(o.error,
               "task 'inner_fail' failed on item 1: value 21 is bad") == NULL)
        fail_msg("unexpected error: %s", o.error);
    outputs_fini(&o);
    zp_pipeline_free(p);
}

/* ---- Reuse
 * ---------------------------------------------------------------------- */

static int64_t sum_of_squares(int64_t n)
{
    return (n - 1) * n * (2 * n - 1) / 6;
}

static zp_pipeline *squares_pipeline(void)
{
    return zp_pipe(zp_task(numbers, .branch = true),
                   zp_task(square, .workers = 2), zp_task(total, .join = true));
}

static void test_pipeline_runs_again_after_a_run(void **state)
{
    (void)state;
    zp_pipeline *p = squares_pipeline();
    for (int r = 1; r <= 3; r++) {
        outputs o;
        char args[16];
        snprintf(args, sizeof args, "[%d]", 100 * r);
        run_collect(p, args, &o);
        assert_run_ok(&o);
        assert_int_equal(o.n, 1);
        assert_int_equal(o.v[0], sum_of_squares(100 * r));
        outputs_fini(&o);
    }
    zp_pipeline_free(p);
}

typedef struct concurrent_run {
    zp_pipeline *p;
    int n;
    outputs o;
} concurrent_run;

static void *run_thread(void *arg)
{
    concurrent_run *c = arg;
    char args[16];
    snprintf(args, sizeof args, "[%d]", c->n);
    run_collect(c->p, args, &c->o);
    return NULL;
}

static void test_pipeline_runs_four_times_at_once(void **state)
{
    (void)state;
    zp_pipeline *p = squares_pipeline();
    concurrent_run c[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        c[i].p = p;
        c[i].n = 1000 * (i + 1);
        assert_int_equal(pthread_create(&t[i], NULL, run_thread, &c[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < 4; i++) {
        assert_run_ok(&c[i].o);
        assert_int_equal(c[i].o.n, 1);
        assert_int_equal(c[i].o.v[0], sum_of_squares(c[i].n));
        outputs_fini(&c[i].o);
    }
    zp_pipeline_free(p);
}

/* ---- Cancellation and concurrency
 * -------------------------------------------------- */

typedef struct canceller {
    zp_run *run;
    stuck_state *s;
    bool saw_entry;
} canceller;

static void *cancel_thread(void *arg)
{
    canceller *c = arg;
    c->saw_entry = latch_wait(&c->s->entered, 1, DEADLINE_MS);
    zp_cancel(c->run);
    latch_add(&c->s->released);
    return NULL;
}

static void test_cancel_from_another_thread_ends_a_blocked_reader(void **state)
{
    (void)state;
    const msgpack_object *out;
    stuck_state s;
    latch_init(&s.entered);
    latch_init(&s.released);
    atomic_store(&s.emit_rc, 0);
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task(stuck, .user = &s));
    zp_run *run = zp_start(p, "[100]");
    canceller c = {run, &s, false};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, cancel_thread, &c), 0);
    assert_false(zp_run_next(run, &out));
    pthread_join(t, NULL);
    assert_true(c.saw_entry);
    assert_int_equal(zp_finish(run), ZP_ECANCELED);
    assert_non_null(zp_error(run));
    /* The released call found the run stopping. */
    assert_int_not_equal(atomic_load(&s.emit_rc), 0);
    assert_int_equal(s.entered.count, 1);
    zp_run_free(run);
    zp_pipeline_free(p);
    latch_fini(&s.entered);
    latch_fini(&s.released);
}

static void test_eight_workers_run_eight_calls_at_once(void **state)
{
    (void)state;
    outputs o;
    gate_state g;
    memset(&g, 0, sizeof g);
    pthread_mutex_init(&g.lock, NULL);
    pthread_cond_init(&g.cond, NULL);
    g.want = 8;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(gate, .workers = 8, .user = &g));
    run_collect(p, "[8]", &o);
    assert_run_ok(&o);
    assert_int_equal(g.peak, 8);
    assert_each_once(&o, 8, same);
    outputs_fini(&o);
    zp_pipeline_free(p);
    pthread_cond_destroy(&g.cond);
    pthread_mutex_destroy(&g.lock);
}

/* ---- The end of a run
 * ---------------------------------------------------------------- */

static void test_run_next_after_the_end_keeps_returning_false(void **state)
{
    (void)state;
    const msgpack_object *out;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task(identity));
    zp_run *run = zp_start(p, "[3]");
    for (int i = 0; i < 3; i++)
        assert_true(zp_run_next(run, &out));
    for (int i = 0; i < 3; i++)
        assert_false(zp_run_next(run, &out));
    assert_int_equal(zp_finish(run), 0);
    assert_false(zp_run_next(run, &out));
    assert_int_equal(zp_finish(run), 0);
    assert_null(zp_error(run));
    zp_run_free(run);
    zp_pipeline_free(p);
}

static void test_finish_without_reading_runs_to_the_end(void **state)
{
    (void)state;
    _Atomic uint64_t calls = 0;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(counted, .workers = 2, .user = &calls),
                             zp_task(identity, .throttle = 4));
    zp_run *run = zp_start(p, "[10000]");
    assert_int_equal(zp_finish(run), 0);
    assert_null(zp_error(run));
    assert_int_equal(atomic_load(&calls), 10000);
    zp_run_free(run);
    zp_pipeline_free(p);
}

static void test_run_next_returns_false_once_the_run_is_cancelled(void **state)
{
    (void)state;
    const msgpack_object *out;
    zp_pipeline *p =
        zp_pipe(zp_task(endless, .branch = true), zp_task(identity));
    zp_run *run = zp_start(p, NULL);
    assert_true(zp_run_next(run, &out));
    zp_cancel(run);
    int more = 0;
    while (more < 100000 && zp_run_next(run, &out))
        more++;
    if (more > 0)
        fail_msg("zp_run_next gave %d more outputs after zp_cancel", more);
    assert_int_equal(zp_finish(run), ZP_ECANCELED);
    zp_run_free(run);
    zp_pipeline_free(p);
}

static void test_freeing_a_running_endless_run_returns(void **state)
{
    (void)state;
    const msgpack_object *out;
    zp_pipeline *p = zp_pipe(zp_task(endless, .branch = true),
                             zp_task(identity, .workers = 2));
    zp_run *run = zp_start(p, NULL);
    assert_true(zp_run_next(run, &out));
    zp_run_free(run);
    run = zp_start(p, NULL); /* and one never read at all */
    zp_run_free(run);
    zp_pipeline_free(p);
}

/* ---- What tasks see
 * ---------------------------------------------------------------- */

static void test_user_pointer_reaches_every_call(void **state)
{
    (void)state;
    outputs o;
    void *first_user = &first_user, *second_user = &second_user;
    zp_pipeline *p =
        zp_pipe(zp_task(check_user, .user = &first_user),
                zp_task(check_user, .workers = 2, .user = &second_user));
    run_collect(p, NULL, &o);
    assert_run_ok(&o);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.v[0], 1);
    outputs_fini(&o);
    zp_pipeline_free(p);
}

/* Runs echo_args with `args` and checks that its one output packs to the
 * same bytes as `want` (JSON-like msgpack built by the caller). */
static void assert_first_input(zp_pipeline *p, const char *args,
                               const msgpack_sbuffer *want)
{
    const msgpack_object *out;
    msgpack_sbuffer got;
    msgpack_packer pk;
    zp_run *run = zp_start(p, args);
    assert_true(zp_run_next(run, &out));
    msgpack_sbuffer_init(&got);
    msgpack_packer_init(&pk, &got, msgpack_sbuffer_write);
    msgpack_pack_object(&pk, *out);
    assert_int_equal(got.size, want->size);
    assert_memory_equal(got.data, want->data, want->size);
    msgpack_sbuffer_destroy(&got);
    assert_false(zp_run_next(run, &out));
    assert_int_equal(zp_finish(run), 0);
    zp_run_free(run);
}

static void test_first_task_input_is_the_argument_array(void **state)
{
    (void)state;
    msgpack_sbuffer want;
    msgpack_packer pk;
    zp_pipeline *p = zp_task(echo_args);
    msgpack_sbuffer_init(&want);
    msgpack_packer_init(&pk, &want, msgpack_sbuffer_write);

    msgpack_pack_array(&pk, 2);
    msgpack_pack_int64(&pk, 3);
    msgpack_pack_str_with_body(&pk, "x", 1);
    assert_first_input(p, "[3, \"x\"]", &want);

    msgpack_sbuffer_clear(&want);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int64(&pk, 5);
    assert_first_input(p, "5", &want);

    msgpack_sbuffer_clear(&want);
    msgpack_pack_array(&pk, 0);
    assert_first_input(p, NULL, &want);

    msgpack_sbuffer_destroy(&want);
    zp_pipeline_free(p);
}

static void test_invalid_argument_json_fails_the_run(void **state)
{
    (void)state;
    const msgpack_object *out;
    zp_pipeline *p = zp_pipe(zp_task(echo_args), zp_task(identity));
    zp_run *run = zp_start(p, "[1, ");
    assert_non_null(run);
    assert_false(zp_run_next(run, &out));
    assert_int_equal(zp_finish(run), ZP_EINVAL);
    assert_non_null(zp_error(run));
    if (strstr(zp_error(run), "argument") == NULL)
        fail_msg("the error does not say what was wrong: %s", zp_error(run));
    zp_run_free(run);
    zp_pipeline_free(p);
}

static void test_index_is_the_items_place_in_the_stream(void **state)
{
    (void)state;
    const msgpack_object *out;
    unsigned char seen[1000] = {0};
    int n = 0;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(indexer, .workers = 3));
    zp_run *run = zp_start(p, "[1000]");
    while (zp_run_next(run, &out)) {
        assert_int_equal(out->type, MSGPACK_OBJECT_ARRAY);
        int64_t item = out->via.array.ptr[0].via.i64;
        uint64_t index = out->via.array.ptr[1].via.u64;
        assert_in_range(item, 0, 999);
        assert_int_equal(index, (uint64_t)item);
        seen[item]++;
        n++;
    }
    assert_int_equal(zp_finish(run), 0);
    assert_int_equal(n, 1000);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(seen[i], 1);
    zp_run_free(run);
    zp_pipeline_free(p);
}

/* ---- Statistics
 * ---------------------------------------------------------------------- */

/* Last in the list: a crash here (a bug) cannot hide the other tests. */
static void test_stats_stay_readable_after_finish(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(identity, .workers = 2));
    zp_run *run = zp_start(p, "[100]");
    assert_int_equal(zp_finish(run), 0);
    assert_int_equal(zp_run_stages(run), 2);
    zp_stage_stats st = stats_of(run, 1);
    assert_string_equal(st.task, "identity");
    assert_int_equal(st.workers, 2);
    assert_int_equal(st.items_in, 100);
    assert_int_equal(st.items_out, 100);
    zp_run_free(run);
    zp_pipeline_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endless_generator_runs_only_as_far_as_it_is_read),
        cmocka_unit_test(test_throttle_bounds_the_queue_after_a_stage),
        cmocka_unit_test(test_default_throttle_bounds_the_queue),
        cmocka_unit_test(test_ordered_stage_keeps_input_order),
        cmocka_unit_test(
            test_ordered_branch_stage_keeps_each_items_outputs_together),
        cmocka_unit_test(test_unordered_stage_delivers_every_item_exactly_once),
        cmocka_unit_test(test_task_emitting_nothing_filters_the_item_out),
        cmocka_unit_test(test_retries_rerun_failed_items_and_keep_one_output),
        cmocka_unit_test(test_too_few_retries_fail_the_run),
        cmocka_unit_test(test_skip_drops_failed_items_and_counts_them),
        cmocka_unit_test(
            test_nested_pipeline_collects_inner_outputs_into_an_array),
        cmocka_unit_test(test_nested_branch_pipeline_flattens_inner_outputs),
        cmocka_unit_test(test_inner_failure_names_the_outer_and_inner_tasks),
        cmocka_unit_test(test_pipeline_runs_again_after_a_run),
        cmocka_unit_test(test_pipeline_runs_four_times_at_once),
        cmocka_unit_test(test_cancel_from_another_thread_ends_a_blocked_reader),
        cmocka_unit_test(test_eight_workers_run_eight_calls_at_once),
        cmocka_unit_test(test_run_next_after_the_end_keeps_returning_false),
        cmocka_unit_test(test_finish_without_reading_runs_to_the_end),
        cmocka_unit_test(test_run_next_returns_false_once_the_run_is_cancelled),
        cmocka_unit_test(test_freeing_a_running_endless_run_returns),
        cmocka_unit_test(test_user_pointer_reaches_every_call),
        cmocka_unit_test(test_first_task_input_is_the_argument_array),
        cmocka_unit_test(test_invalid_argument_json_fails_the_run),
        cmocka_unit_test(test_index_is_the_items_place_in_the_stream),
        cmocka_unit_test(test_stats_stay_readable_after_finish),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
