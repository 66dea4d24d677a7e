/* SPDX-License-Identifier: MIT */
/*
 * Tests of async tasks (ZP_ASYNC_TASK): calls on a libuv loop, many in
 * flight at once, ended by zp_done() or zp_fail() from loop callbacks.
 * Concurrency is read from the stage statistics (peak_in_flight), never
 * from timings: calls that must overlap are held until enough of them
 * are in, or until the test lets them go. Process workers run async tasks
 * too, which is why main() calls zp_init() first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/testutil.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "zpipe.h"

/* How long a test waits for an event before it calls it a failure. */
#define DEADLINE_MS 30000
/* How long a test watches a stage to see that it takes nothing more. */
#define QUIET_MS 200

/* ---- Tasks ----------------------------------------------------------------
 */

/* A timer that belongs to one call; freed when closed. */
typedef struct waiter {
    uv_timer_t timer;
    zp_call *call;
    int left; /* outputs still to emit (branch tests) */
} waiter;

static void free_waiter(uv_handle_t *h)
{
    free(h->data);
}

static waiter *wait_then(zp_call *call, uv_loop_t *loop, uint64_t ms,
                         uint64_t repeat, uv_timer_cb cb)
{
    waiter *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->call = call;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    uv_timer_start(&w->timer, cb, ms, repeat);
    return w;
}

static void finish_waiter(waiter *w)
{
    uv_close((uv_handle_t *)&w->timer, free_waiter);
}

static void echo_later(uv_timer_t *t)
{
    waiter *w = t->data;
    zp_emit_obj(w->call, zp_input(w->call));
    zp_done(w->call);
    finish_waiter(w);
}

/* Emits its item after the item's own number of milliseconds modulo 7,
 * so outputs come back out of order. */
ZP_ASYNC_TASK(echo_after_a_while)
{
    wait_then(call, loop, (uint64_t)zp_input(call)->via.i64 % 7, 0, echo_later);
}

/* Emits its item after 20 ms. */
ZP_ASYNC_TASK(echo_after_20ms)
{
    wait_then(call, loop, 20, 0, echo_later);
}

/*
 * Calls held until they are let go together: once `held_want` of them are
 * in at once, or once the test sets `let_go` (a timer of the loop looks
 * every 10 ms), or at the latest after DEADLINE_MS, so that a stage that
 * never runs that many at once fails its test instead of hanging it. One
 * loop thread runs every call of an inproc async stage, so only the
 * flag is shared with the test thread; hold_reset() comes before a run.
 */
static waiter *held[8192];
static int nheld, held_want;
static atomic_bool let_go;
static uv_timer_t watcher;
static bool watching;

static void hold_reset(int want)
{
    nheld = 0;
    held_want = want;
    watching = false;
    atomic_store(&let_go, false);
}

static void release_held(void)
{
    for (int i = 0; i < nheld; i++)
        uv_timer_start(&held[i]->timer, echo_later, 0, 0);
    nheld = 0;
}

static void held_too_long(uv_timer_t *t)
{
    (void)t;
    release_held();
}

static void watch_let_go(uv_timer_t *t)
{
    (void)t;
    if (atomic_load(&let_go))
        release_held();
}

ZP_ASYNC_TASK(echo_when_released)
{
    if (!watching) {
        uv_timer_init(loop, &watcher);
        uv_timer_start(&watcher, watch_let_go, 10, 10);
        watching = true;
    }
    if (nheld == (int)(sizeof held / sizeof *held))
        release_held(); /* more than any test holds */
    held[nheld++] = wait_then(call, loop, DEADLINE_MS, 0, held_too_long);
    if (nheld == held_want)
        release_held();
}

/* Emits and ends inside the task function itself. */
ZP_ASYNC_TASK(echo_at_once)
{
    (void)loop;
    zp_emit_obj(call, zp_input(call));
    zp_done(call);
}

static void fail_on_7_later(uv_timer_t *t)
{
    waiter *w = t->data;
    int64_t x = zp_input(w->call)->via.i64;
    if (x == 7)
        zp_fail(w->call, "seven is not welcome (%lld)", (long long)x);
    else {
        zp_emit_int(w->call, x);
        zp_done(w->call);
    }
    finish_waiter(w);
}

ZP_ASYNC_TASK(fail_on_7)
{
    wait_then(call, loop, 1, 0, fail_on_7_later);
}

static void tick(uv_timer_t *t)
{
    waiter *w = t->data;
    zp_emit_int(w->call, zp_input(w->call)->via.i64 * 10 + w->left);
    if (--w->left == 0) {
        zp_done(w->call);
        finish_waiter(w);
    }
}

/* Branch: three outputs, one per tick of a repeating timer. */
ZP_ASYNC_TASK(three_ticks)
{
    waiter *w = wait_then(call, loop, 1, 1, tick);
    w->left = 3;
}

static void countdown(uv_timer_t *t)
{
    waiter *w = t->data;
    zp_emit_int(w->call, w->left);
    if (--w->left == 0) {
        zp_done(w->call);
        finish_waiter(w);
    }
}

/* The first task, async: [n] -> n, n-1, ..., 1, one per timer tick. */
ZP_ASYNC_TASK(ticker)
{
    waiter *w = wait_then(call, loop, 1, 1, countdown);
    w->left = (int)zp_input(call)->via.array.ptr[0].via.i64;
}

/* Emits twice without being a branch task: a broken rule. */
ZP_ASYNC_TASK(emits_twice)
{
    (void)loop;
    zp_emit_int(call, 1);
    zp_emit_int(call, 2);
    zp_done(call);
}

/* Branch: 20 outputs of 4 MiB, more in all than a message holds. */
ZP_ASYNC_TASK(twenty_big)
{
    static const char zeros[4 << 20];
    (void)loop;
    for (int i = 0; i < 20; i++) {
        msgpack_packer *pk = zp_out(call);
        msgpack_pack_bin(pk, sizeof zeros);
        msgpack_pack_bin_body(pk, zeros, sizeof zeros);
        if (zp_emit(call) != 0)
            return;
    }
    zp_done(call);
}

ZP_TASK(size_of)
{
    return zp_emit_int(call, (int64_t)zp_input(call)->via.bin.size);
}

static atomic_int attempts[64];

/* Fails the first attempt of every item, succeeds on the second. */
ZP_ASYNC_TASK(fails_once)
{
    (void)loop;
    int64_t x = zp_input(call)->via.i64;
    if (atomic_fetch_add(&attempts[x], 1) == 0) {
        zp_fail(call, "first attempt of %lld", (long long)x);
        return;
    }
    zp_emit_int(call, x);
    zp_done(call);
}

/* Fails every odd item, at once. */
ZP_ASYNC_TASK(fails_odd)
{
    (void)loop;
    int64_t x = zp_input(call)->via.i64;
    if (x % 2) {
        zp_fail(call, "odd %lld", (long long)x);
        return;
    }
    zp_emit_int(call, x);
    zp_done(call);
}

/* Emits 100 outputs per item at once: the stage must hold what
 * downstream cannot take yet, and start nothing new meanwhile. */
ZP_ASYNC_TASK(hundredfold)
{
    (void)loop;
    int64_t x = zp_input(call)->via.i64;
    for (int i = 0; i < 100; i++)
        if (zp_emit_int(call, x * 100 + i) != 0)
            break;
    zp_done(call);
}

/* x -> x + 1, sync, between async stages. */
ZP_TASK(plus_one)
{
    return zp_emit_int(call, zp_input(call)->via.i64 + 1);
}

/* ---- Helpers --------------------------------------------------------------
 */

typedef struct outputs {
    int64_t *v;
    size_t n;
} outputs;

/* Runs p on args to its end; collects int outputs; returns zp_finish's
 * code, with the run kept in *keep (if not NULL) for statistics. */
static int run_all(zp_pipeline *p, const char *args, outputs *out,
                   zp_run **keep)
{
    zp_run *r = zp_start(p, args);
    const msgpack_object *o;
    out->v = NULL;
    out->n = 0;
    size_t cap = 0;
    while (zp_run_next(r, &o)) {
        if (out->n == cap) {
            cap = cap ? cap * 2 : 1024;
            out->v = realloc(out->v, cap * sizeof *out->v);
            assert_non_null(out->v);
        }
        out->v[out->n++] = o->via.i64;
    }
    int rc = zp_finish(r);
    if (keep != NULL)
        *keep = r;
    else
        zp_run_free(r);
    return rc;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Checks that out holds 0..n-1, each once. */
static void assert_each_once(outputs *out, int64_t n)
{
    assert_int_equal(out->n, n);
    qsort(out->v, out->n, sizeof *out->v, cmp64);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(out->v[i], i);
}

static void stats_of(zp_run *r, size_t stage, zp_stage_stats *st)
{
    assert_int_equal(zp_run_stats(r, stage, st), 0);
}

/* Reads a stage's statistics into *st until `cond` holds of them, for up
 * to `ms`; whether it came to hold. */
static bool stats_within(zp_run *r, size_t stage, zp_stage_stats *st,
                         bool (*cond)(const zp_stage_stats *), int ms)
{
    for (int waited = 0;; waited++) {
        stats_of(r, stage, st);
        if (cond(st) || waited >= ms)
            return cond(st);
        nap_us(1000);
    }
}

/* Whether the stage's output is full (a throttle of 16, as in
 * test_slow_consumer_bounds_what_the_stage_takes_in). */
static bool queue_is_full(const zp_stage_stats *st)
{
    return st->queue_hwm >= 16;
}

static bool all_5000_in_flight(const zp_stage_stats *st)
{
    return st->in_flight == 5000;
}

/* ---- Tests ----------------------------------------------------------------
 */

static void test_async_stage_delivers_every_item_exactly_once(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_async_task(echo_after_a_while, .workers = 100));
    outputs out;
    assert_int_equal(run_all(p, "[5000]", &out, NULL), 0);
    assert_each_once(&out, 5000);
    free(out.v);
    zp_pipeline_free(p);
}

static void test_peak_in_flight_equals_workers(void **state)
{
    (void)state;
    const int workers[] = {1, 50, 2000};
    for (size_t i = 0; i < sizeof workers / sizeof *workers; i++) {
        /* Calls end only once `workers` of them are in: the peak is
         * reached however slowly the input comes, and a stage that runs
         * fewer at once ends by the deadline with a lower peak. */
        hold_reset(workers[i]);
        zp_pipeline *p =
            zp_pipe(zp_task(numbers, .branch = true),
                    zp_async_task(echo_when_released, .workers = workers[i]));
        char args[32];
        int n = workers[i] == 1 ? 10 : 4 * workers[i];
        snprintf(args, sizeof args, "[%d]", n);
        outputs out;
        zp_run *r;
        assert_int_equal(run_all(p, args, &out, &r), 0);
        assert_each_once(&out, n);
        zp_stage_stats st;
        stats_of(r, 1, &st);
        assert_int_equal(st.workers, workers[i]);
        assert_int_equal(st.peak_in_flight, workers[i]);
        assert_int_equal(st.in_flight, 0);
        assert_int_equal(st.items_in, n);
        assert_int_equal(st.items_out, n);
        free(out.v);
        zp_run_free(r);
        zp_pipeline_free(p);
    }
}

static void test_call_may_end_inside_the_task_function(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_async_task(echo_at_once, .workers = 16));
    outputs out;
    assert_int_equal(run_all(p, "[100000]", &out, NULL), 0);
    assert_each_once(&out, 100000);
    free(out.v);
    zp_pipeline_free(p);
}

static void
test_failure_in_a_callback_stops_the_run_naming_the_item(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_async_task(fail_on_7, .workers = 4));
    outputs out;
    zp_run *r;
    assert_int_equal(run_all(p, "[1000]", &out, &r), ZP_ETASK);
    assert_string_equal(zp_error(r), "task 'fail_on_7' failed on item 7: "
                                     "seven is not welcome (7)");
    assert_true(out.n < 1000);
    free(out.v);
    zp_run_free(r);
    zp_pipeline_free(p);
}

static void test_branch_outputs_come_from_several_callbacks(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_async_task(three_ticks, .branch = true, .workers = 10));
    outputs out;
    assert_int_equal(run_all(p, "[100]", &out, NULL), 0);
    assert_int_equal(out.n, 300);
    qsort(out.v, out.n, sizeof *out.v, cmp64);
    for (int64_t i = 0; i < 100; i++)
        for (int64_t k = 1; k <= 3; k++)
            assert_int_equal(out.v[i * 3 + k - 1], i * 10 + k);
    free(out.v);
    zp_pipeline_free(p);
}

static void test_async_first_task_emits_from_its_callbacks(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_async_task(ticker, .branch = true),
                             zp_task(plus_one, .workers = 2));
    outputs out;
    assert_int_equal(run_all(p, "[5]", &out, NULL), 0);
    assert_int_equal(out.n, 5);
    qsort(out.v, out.n, sizeof *out.v, cmp64);
    for (int64_t k = 1; k <= 5; k++)
        assert_int_equal(out.v[k - 1], k + 1);
    free(out.v);
    zp_pipeline_free(p);
}

static void test_second_output_of_a_non_branch_call_fails_it(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_async_task(emits_twice));
    outputs out;
    zp_run *r;
    assert_int_equal(run_all(p, "[3]", &out, &r), ZP_ETASK);
    assert_non_null(strstr(zp_error(r), "not a branch task"));
    free(out.v);
    zp_run_free(r);
    zp_pipeline_free(p);
}

static void test_ordered_async_stage_keeps_input_order(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(
        zp_task(numbers, .branch = true),
        zp_async_task(echo_after_a_while, .workers = 50, .ordered = true));
    outputs out;
    assert_int_equal(run_all(p, "[2000]", &out, NULL), 0);
    assert_int_equal(out.n, 2000);
    for (size_t i = 0; i < out.n; i++)
        assert_int_equal(out.v[i], (int64_t)i);
    free(out.v);
    zp_pipeline_free(p);
}

static void test_retries_rerun_a_failed_call(void **state)
{
    (void)state;
    memset(attempts, 0, sizeof attempts);
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_async_task(fails_once, .workers = 8, .retries = 1));
    outputs out;
    zp_run *r;
    assert_int_equal(run_all(p, "[64]", &out, &r), 0);
    assert_each_once(&out, 64);
    zp_stage_stats st;
    stats_of(r, 1, &st);
    assert_int_equal(st.retried, 64);
    assert_int_equal(st.failed, 0);
    free(out.v);
    zp_run_free(r);
    zp_pipeline_free(p);
}

static void test_skip_drops_failed_calls_and_counts_them(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_async_task(fails_odd, .workers = 8, .on_error = ZP_SKIP));
    outputs out;
    zp_run *r;
    assert_int_equal(run_all(p, "[100]", &out, &r), 0);
    assert_int_equal(out.n, 50);
    for (size_t i = 0; i < out.n; i++)
        assert_int_equal(out.v[i] % 2, 0);
    zp_stage_stats st;
    stats_of(r, 1, &st);
    assert_int_equal(st.skipped, 50);
    assert_int_equal(st.failed, 50);
    free(out.v);
    zp_run_free(r);
    zp_pipeline_free(p);
}

static void test_slow_consumer_bounds_what_the_stage_takes_in(void **state)
{
    (void)state;
    /* 8 calls in flight, 100 outputs each, 16 places downstream: while
     * nobody reads, the stage holds at most the outputs of its calls in
     * flight and starts no new call. */
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_async_task(hundredfold, .branch = true,
                                           .workers = 8, .throttle = 16));
    zp_run *r = zp_start(p, "[1000]");
    const msgpack_object *o;
    assert_true(zp_run_next(r, &o)); /* the stage is running */
    /* Its output fills up, then it must stand still: what it took so far
     * is checked once it had the time to take more. */
    zp_stage_stats st;
    assert_true(stats_within(r, 1, &st, queue_is_full, DEADLINE_MS));
    nap_us(QUIET_MS * 1000L);
    stats_of(r, 1, &st);
    assert_true(st.items_in <= 8 + 1);
    assert_true(st.queue_hwm <= 16);
    size_t n = 1;
    while (zp_run_next(r, &o))
        n++;
    assert_int_equal(zp_finish(r), 0);
    assert_int_equal(n, 100000);
    stats_of(r, 1, &st);
    assert_true(st.queue_hwm <= 16);
    assert_int_equal(st.items_in, 1000);
    zp_run_free(r);
    zp_pipeline_free(p);
}

static void test_cancel_with_thousands_of_calls_in_flight(void **state)
{
    (void)state;
    /* The calls stay in flight until the run was cancelled. */
    hold_reset(0);
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_async_task(echo_when_released, .workers = 5000));
    zp_run *r = zp_start(p, "[100000]");
    zp_stage_stats st;
    assert_true(stats_within(r, 1, &st, all_5000_in_flight, DEADLINE_MS));
    zp_cancel(r);
    atomic_store(&let_go, true);
    assert_int_equal(zp_finish(r), ZP_ECANCELED);
    stats_of(r, 1, &st);
    assert_int_equal(st.in_flight, 0);
    assert_true(st.items_in < 100000);
    zp_run_free(r); /* the sanitizer build checks that nothing leaked */
    zp_pipeline_free(p);
}

static void test_sync_and_async_stages_mix(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_async_task(echo_after_a_while, .workers = 20),
                             zp_task(plus_one, .workers = 3),
                             zp_async_task(echo_at_once, .workers = 5),
                             zp_task(total, .join = true));
    outputs out;
    assert_int_equal(run_all(p, "[1000]", &out, NULL), 0);
    assert_int_equal(out.n, 1);
    assert_int_equal(out.v[0], 1000 * 1001 / 2);
    free(out.v);
    zp_pipeline_free(p);
}

static void test_async_join_is_refused_with_a_reason(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_async_task(echo_at_once, .join = true));
    assert_non_null(zp_pipeline_error(p));
    assert_non_null(strstr(zp_pipeline_error(p), "cannot be a join task"));
    zp_run *r = zp_start(p, "[3]");
    assert_int_equal(zp_finish(r), ZP_EINVAL);
    zp_run_free(r);
    zp_pipeline_free(p);
}

static void test_spec_finds_async_tasks_by_name(void **state)
{
    (void)state;
    char *err = NULL;
    zp_pipeline *p =
        zp_parse("numbers branch | echo_after_a_while workers=30", &err);
    assert_null(err);
    assert_non_null(p);
    outputs out;
    assert_int_equal(run_all(p, "[300]", &out, NULL), 0);
    assert_each_once(&out, 300);
    free(out.v);
    zp_pipeline_free(p);
}

static void test_async_tasks_run_in_process_workers(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(
        zp_task(numbers, .branch = true),
        zp_async_task(echo_after_20ms, .workers = 2, .mode = ZP_PROCESS));
    outputs out;
    zp_run *r;
    int rc = run_all(p, "[2000]", &out, &r);
    if (rc != 0)
        fail_msg("%s", zp_error(r));
    assert_each_once(&out, 2000);
    /* Two processes, yet many items at once: each worker's loop overlaps
     * the batches it is sent. */
    zp_stage_stats st;
    stats_of(r, 1, &st);
    assert_true(st.peak_in_flight > 2);
    assert_int_equal(st.in_flight, 0);
    free(out.v);
    zp_run_free(r);
    zp_pipeline_free(p);
}

static void
test_async_outputs_larger_than_a_message_arrive_in_parts(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_async_task(twenty_big, .branch = true, .mode = ZP_PROCESS),
                zp_task(size_of));
    outputs out;
    zp_run *r;
    int rc = run_all(p, "[1]", &out, &r);
    if (rc != 0)
        fail_msg("%s", zp_error(r));
    assert_int_equal(out.n, 20);
    for (size_t i = 0; i < out.n; i++)
        assert_int_equal(out.v[i], 4 << 20);
    free(out.v);
    zp_run_free(r);
    zp_pipeline_free(p);
}

static void test_async_failure_crosses_the_process_boundary(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_async_task(fail_on_7, .workers = 2, .mode = ZP_PROCESS));
    outputs out;
    zp_run *r;
    assert_int_equal(run_all(p, "[100]", &out, &r), ZP_ETASK);
    assert_non_null(strstr(zp_error(r), "seven is not welcome (7)"));
    assert_non_null(strstr(zp_error(r), "item 7"));
    free(out.v);
    zp_run_free(r);
    zp_pipeline_free(p);
}

static void test_registry_keeps_sync_and_async_apart(void **state)
{
    (void)state;
    assert_non_null(zp_lookup_async("echo_at_once"));
    assert_null(zp_lookup("echo_at_once"));
    assert_non_null(zp_lookup("numbers"));
    assert_null(zp_lookup_async("numbers"));
    /* One name, one function: neither kind may take a held name. */
    assert_int_equal(zp_register_async("numbers", echo_at_once), ZP_EINVAL);
    assert_int_equal(zp_register("echo_at_once", numbers), ZP_EINVAL);
    assert_int_equal(zp_register_async("echo_at_once", echo_at_once), 0);
}

int main(int argc, char **argv)
{
    /* Registered by name (testutil.h's sample task) for specs and for the
     * process workers, before zp_init() turns this process into one. */
    zp_register("numbers", numbers);
    zp_init(&argc, &argv); /* process workers end inside */
    if (getenv("ZP_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("ZP_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_async_stage_delivers_every_item_exactly_once),
        cmocka_unit_test(test_peak_in_flight_equals_workers),
        cmocka_unit_test(test_call_may_end_inside_the_task_function),
        cmocka_unit_test(
            test_failure_in_a_callback_stops_the_run_naming_the_item),
        cmocka_unit_test(test_branch_outputs_come_from_several_callbacks),
        cmocka_unit_test(test_async_first_task_emits_from_its_callbacks),
        cmocka_unit_test(test_second_output_of_a_non_branch_call_fails_it),
        cmocka_unit_test(test_ordered_async_stage_keeps_input_order),
        cmocka_unit_test(test_retries_rerun_a_failed_call),
        cmocka_unit_test(test_skip_drops_failed_calls_and_counts_them),
        cmocka_unit_test(test_slow_consumer_bounds_what_the_stage_takes_in),
        cmocka_unit_test(test_cancel_with_thousands_of_calls_in_flight),
        cmocka_unit_test(test_sync_and_async_stages_mix),
        cmocka_unit_test(test_async_join_is_refused_with_a_reason),
        cmocka_unit_test(test_spec_finds_async_tasks_by_name),
        cmocka_unit_test(test_async_tasks_run_in_process_workers),
        cmocka_unit_test(test_async_failure_crosses_the_process_boundary),
        cmocka_unit_test(
            test_async_outputs_larger_than_a_message_arrive_in_parts),
        cmocka_unit_test(test_registry_keeps_sync_and_async_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
