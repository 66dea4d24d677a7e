/* SPDX-License-Identifier: MIT */
/*
 * Tests of the worker layer alone: a stage runtime between two links that
 * the test drives itself, as producer of the stage's input and consumer of
 * its output, with a stand-in for the run that records failures.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tests/testutil.h"

#include "core/pipeline.h"
#include "worker/stage.h"

typedef struct fake_run {
    zp__runctl ctl;
    void *zctx;
    int code;
    char *msg;
} fake_run;

static void fake_fail(zp__runctl *ctl, int code, char *msg)
{
    fake_run *r = (fake_run *)ctl;
    if (r->code == 0) {
        r->code = code;
        r->msg = msg;
        msg = NULL;
    }
    atomic_store(&ctl->stop, true);
    zp__zctx_shutdown(r->zctx);
    free(msg);
}

/* A stage between edge `in` (the test produces) and `out` (it consumes). */
typedef struct rig {
    fake_run run;
    zp_pipeline *p;
    zp__edge in, out;
    zp__stage *st;
    pthread_t *feeder; /* the thread feeding the input, once started */
} rig;

static void rig_start(rig *g, zp_pipeline *p, int in_limit)
{
    static _Atomic int seq;
    char a[64], b[64];
    int id = atomic_fetch_add(&seq, 1);
    memset(g, 0, sizeof *g);
    g->p = p;
    assert_null(p->error); /* the first-stage rule is a run's, not ours */
    const zp__stage_def *def = &p->stages[0];
    g->run.ctl.fail = fake_fail;
    g->run.zctx = zp__zctx_new(64, false);
    snprintf(a, sizeof a, "wt-%d-in", id);
    snprintf(b, sizeof b, "wt-%d-out", id);
    int producers = def->opts.ordered ? 1 : def->opts.workers;
    assert_int_equal(zp__edge_init(&g->in, g->run.zctx, a, 1, def->opts.workers,
                                   in_limit, &g->run.ctl.stop),
                     0);
    assert_int_equal(zp__edge_init(&g->out, g->run.zctx, b, producers, 1, 1024,
                                   &g->run.ctl.stop),
                     0);
    g->in.defer_release = def->opts.ordered;
    zp__edge_set_slow(&g->out, false);
    zp__stage_cfg cfg = {.def = def,
                         .run = &g->run.ctl,
                         .index = 1,
                         .in = &g->in,
                         .out = &g->out,
                         .zctx = g->run.zctx};
    char *why = NULL;
    assert_int_equal(zp__thread_stage_ops.start(&cfg, &g->st, &why), 0);
    assert_null(why);
}

typedef struct feeder {
    rig *g;
    int n;
    pthread_t thread;
} feeder;

static void *feed_main(void *arg)
{
    feeder *f = arg;
    zp__tx *tx = f->g->in.tx[0];
    for (int i = 0; i < f->n; i++) {
        msgpack_pack_int64(zp__tx_packer(tx), i);
        if (zp__tx_commit(tx) != 0)
            return NULL; /* the stage stopped */
    }
    zp__tx_close(tx);
    return NULL;
}

/* Sends 0..n-1 into the stage from a thread of its own, then closes. */
static void feed(rig *g, int n)
{
    static feeder f;
    f = (feeder){g, n, 0};
    assert_int_equal(pthread_create(&f.thread, NULL, feed_main, &f), 0);
    g->feeder = &f.thread;
}

/* Reads every output into vals (up to cap); returns how many. */
static int drain(rig *g, int64_t *vals, int cap)
{
    const msgpack_object *o;
    uint64_t seq;
    int n = 0;
    while (zp__rx_next(g->out.rx[0], true, &o, &seq) == 1)
        if (n < cap)
            vals[n++] = o->via.i64;
    return n;
}

/* Joins and frees the rig; returns the failure message (free it). */
static char *rig_stop(rig *g)
{
    if (g->feeder != NULL)
        pthread_join(*g->feeder, NULL);
    zp__thread_stage_ops.join(g->st);
    zp__thread_stage_ops.destroy(&g->st);
    assert_null(g->st);
    zp__edge_fini(&g->in);
    zp__edge_fini(&g->out);
    zp__zctx_term(g->run.zctx);
    zp_pipeline_free(g->p);
    return g->run.msg;
}

static int plus_one(zp_call *call)
{
    return zp_emit_int(call, zp_input(call)->via.i64 + 1);
}

static void test_every_item_is_processed_once_by_some_worker(void **state)
{
    (void)state;
    enum { N = 5000 };
    static int64_t out[N];
    rig g;
    rig_start(&g, zp_task(plus_one, .workers = 3), 64);
    feed(&g, N);
    int n = drain(&g, out, N);
    assert_null(rig_stop(&g));
    assert_int_equal(n, N);
    static bool seen[N + 1];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < n; i++) {
        assert_true(out[i] >= 1 && out[i] <= N);
        assert_false(seen[out[i]]);
        seen[out[i]] = true;
    }
}

static int jittery(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    if (x % 7 == 0)
        nap_us(200);
    for (int i = 0; i < 2; i++)
        if (zp_emit_int(call, 2 * x + i) != 0)
            return -1;
    return 0;
}

static void test_ordered_stage_sends_outputs_in_input_order(void **state)
{
    (void)state;
    enum { N = 600 };
    static int64_t out[2 * N];
    rig g;
    rig_start(&g,
              zp_task(jittery, .workers = 4, .ordered = true, .branch = true),
              16);
    feed(&g, N);
    int n = drain(&g, out, 2 * N);
    /* Every credit of the input came back once its item left. */
    assert_int_equal(atomic_load(&g.in.queued), 0);
    assert_true(atomic_load(&g.in.hwm) <= 16);
    assert_null(rig_stop(&g));
    assert_int_equal(n, 2 * N);
    for (int i = 0; i < n; i++)
        assert_int_equal(out[i], i);
}

static _Atomic int attempts;

static int fails_first_attempt(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    zp_emit_int(call, 1000 + x);
    if (atomic_fetch_add(&attempts, 1) % 2 == 0)
        return zp_fail(call, "first attempt of %lld", (long long)x);
    return 0;
}

static void test_outputs_of_a_failed_attempt_are_dropped(void **state)
{
    (void)state;
    enum { N = 50 };
    int64_t out[2 * N];
    rig g;
    atomic_store(&attempts, 0);
    rig_start(&g, zp_task(fails_first_attempt, .retries = 1), 64);
    feed(&g, N);
    int n = drain(&g, out, 2 * N);
    zp_stage_stats st = {0};
    zp__thread_stage_ops.stats(g.st, &st);
    assert_null(rig_stop(&g));
    assert_int_equal(n, N);
    assert_int_equal(st.retried, N);
    assert_int_equal(st.items_out, N);
    assert_int_equal(g.run.code, 0);
}

static int fails_on_three(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    if (x == 3)
        return zp_fail(call, "three is not allowed");
    return zp_emit_int(call, x);
}

static void
test_a_failure_reaches_the_run_with_task_item_and_message(void **state)
{
    (void)state;
    int64_t out[16];
    rig g;
    rig_start(&g, zp_task(fails_on_three), 64);
    feed(&g, 10);
    drain(&g, out, 16); /* ends once the failure stopped the stage */
    char *msg = rig_stop(&g);
    assert_int_equal(g.run.code, ZP_ETASK);
    assert_string_equal(msg, "task 'fails_on_three' failed on item 3: "
                             "three is not allowed");
    free(msg);
}

static int slow_task(zp_call *call)
{
    nap_us(2000);
    return zp_emit_obj(call, zp_input(call));
}

static void test_slow_workers_say_their_input_is_slow(void **state)
{
    (void)state;
    int64_t out[64];
    rig g;
    rig_start(&g, zp_task(slow_task), 64);
    zp__edge_set_slow(&g.in, false);
    feed(&g, 20);
    assert_int_equal(drain(&g, out, 64), 20);
    bool slow = atomic_load(&g.in.slow);
    assert_null(rig_stop(&g));
    assert_true(slow);
}

static void test_fast_workers_say_their_input_is_fast(void **state)
{
    (void)state;
    const msgpack_object *o;
    uint64_t seq;
    int n = 0;
    bool seen_fast = false;
    rig g;
    rig_start(&g, zp_task(plus_one), 1024);
    zp__edge_set_slow(&g.in, true);
    feed(&g, 20000);
    /* "Fast" means under 20 us per call, timed by the worker over windows
     * of calls: a window in which the worker was preempted (a busy
     * machine, the thread sanitizer's slow atomics) measures slow, so
     * the verdict is watched while the run goes, not only at its end. */
    while (zp__rx_next(g.out.rx[0], true, &o, &seq) == 1) {
        n++;
        seen_fast = seen_fast || !atomic_load(&g.in.slow);
    }
    assert_null(rig_stop(&g));
    assert_int_equal(n, 20000);
    assert_true(seen_fast);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_item_is_processed_once_by_some_worker),
        cmocka_unit_test(test_ordered_stage_sends_outputs_in_input_order),
        cmocka_unit_test(test_outputs_of_a_failed_attempt_are_dropped),
        cmocka_unit_test(
            test_a_failure_reaches_the_run_with_task_item_and_message),
        cmocka_unit_test(test_slow_workers_say_their_input_is_slow),
        cmocka_unit_test(test_fast_workers_say_their_input_is_fast),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
