/* SPDX-License-Identifier: MIT */
/*
 * Pyper's own tests (pyper-dev/pyper, tests/test_sync.py and
 * tests/test_task.py) ported to zpipe: branched and joined pipelines, bind
 * values, a join task used as the consumer, the first-stage rules, error
 * handling in threaded stages, and the option values a task refuses. Each
 * test builds its pipeline, runs it in-process (thread workers), checks
 * what came out or which error came back, and frees everything.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/testutil.h"

#include "zpipe.h"

/* ---- Tasks -----------------------------------------------------------------
 */

/* Pyper's f1: returns its argument (the first run argument). */
static int f1(zp_call *call)
{
    const msgpack_object *args = zp_input(call);
    if (args->type != MSGPACK_OBJECT_ARRAY || args->via.array.size < 1)
        return zp_fail(call, "expected one argument");
    return zp_emit_obj(call, &args->via.array.ptr[0]);
}

/* Pyper's f2: yields its input (a branch task). */
static int f2(zp_call *call)
{
    return zp_emit_obj(call, zp_input(call));
}

/* Pyper's f3: a join task that yields every item of the stream. */
static int f3(zp_call *call)
{
    const msgpack_object *item;
    while (zp_next(call, &item))
        if (zp_emit_obj(call, item) != 0)
            return -1;
    return 0;
}

/* The input plus every element of an array bind value, or plus the "b" and
 * "c" values of a map bind value. */
static int add_bound(zp_call *call)
{
    const msgpack_object *b = zp_bound(call);
    int64_t sum = zp_input(call)->via.i64;
    if (b == NULL)
        return zp_fail(call, "no bind value");
    if (b->type == MSGPACK_OBJECT_ARRAY) {
        for (uint32_t i = 0; i < b->via.array.size; i++)
            sum += b->via.array.ptr[i].via.i64;
        return zp_emit_int(call, sum);
    }
    if (b->type != MSGPACK_OBJECT_MAP)
        return zp_fail(call, "bind value is neither an array nor a map");
    for (uint32_t i = 0; i < b->via.map.size; i++) {
        const msgpack_object_kv *kv = &b->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 1 &&
            (kv->key.via.str.ptr[0] == 'b' || kv->key.via.str.ptr[0] == 'c'))
            sum += kv->val.via.i64;
    }
    return zp_emit_int(call, sum);
}

/* Pyper's f4 in the threaded error test: fails on the item equal to 7. */
static int fail_on_seven(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    if (x == 7)
        return zp_fail(call, "value %lld is unlucky", (long long)x);
    return zp_emit_int(call, x);
}

/* A non-branch task that breaks the rule and emits twice. */
static int emit_twice(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    int rc = zp_emit_int(call, x);
    if (rc == 0)
        rc = zp_emit_int(call, x);
    return rc;
}

/* ---- Helpers ---------------------------------------------------------------
 */

/* Runs `p` with `args`, returns its first output as an integer, checks that
 * the run then succeeds, and frees the run (not p). */
static int64_t first_output(zp_pipeline *p, const char *args)
{
    const msgpack_object *out;
    assert_null(zp_pipeline_error(p));
    zp_run *run = zp_start(p, args);
    assert_true(zp_run_next(run, &out));
    assert_int_equal(out->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    int64_t v = out->via.i64;
    int rc = zp_finish(run);
    if (rc != 0)
        fail_msg("the run failed: %s", zp_error(run));
    zp_run_free(run);
    return v;
}

/* Runs `p` and returns every integer output into out[0..max), their count in
 * *n, and the run's result; *msg gets a malloc'ed copy of zp_error (or NULL).
 */
static int run_all(zp_pipeline *p, const char *args, int64_t *out, size_t max,
                   size_t *n, char **msg)
{
    const msgpack_object *o;
    zp_run *run = zp_start(p, args);
    *n = 0;
    while (zp_run_next(run, &o)) {
        assert_true(*n < max);
        out[(*n)++] = o->via.i64;
    }
    int rc = zp_finish(run);
    const char *e = zp_error(run);
    *msg = e ? strdup(e) : NULL;
    zp_run_free(run);
    return rc;
}

/* Starts a run of an invalid pipeline and checks that it fails with
 * ZP_EINVAL, quoting the pipeline's own error. */
static void assert_run_refused(zp_pipeline *p)
{
    const msgpack_object *out;
    const char *why = zp_pipeline_error(p);
    assert_non_null(why);
    zp_run *run = zp_start(p, "[1]");
    assert_false(zp_run_next(run, &out));
    assert_int_equal(zp_finish(run), ZP_EINVAL);
    assert_non_null(zp_error(run));
    assert_non_null(strstr(zp_error(run), why));
    zp_run_free(run);
}

/* Checks that a one-stage pipeline `p` is invalid with a message that
 * mentions `word`, and that running it is refused. Frees p. */
static void assert_invalid_mentioning(zp_pipeline *p, const char *word)
{
    const char *why = zp_pipeline_error(p);
    assert_non_null(why);
    if (strstr(why, word) == NULL)
        fail_msg("'%s' does not mention '%s'", why, word);
    assert_run_refused(p);
    zp_pipeline_free(p);
}

/* ---- test_sync.py ----------------------------------------------------------
 */

static void test_branched_pipeline_yields_the_argument(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(f1), zp_task(f2, .branch = true));
    assert_int_equal(first_output(p, "[1]"), 1);
    zp_pipeline_free(p);
}

static void test_joined_pipeline_yields_the_argument(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(f1), zp_task(f2, .branch = true),
                             zp_task(f3, .branch = true, .join = true));
    assert_int_equal(first_output(p, "[1]"), 1);
    zp_pipeline_free(p);
}

static void test_bind_array_reaches_every_call(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(f1), zp_task(add_bound, .bind = "[1,1,1]"));
    assert_int_equal(first_output(p, "[1]"), 4);
    zp_pipeline_free(p);
}

static void test_bind_map_works_like_keyword_arguments(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(
        zp_task(f1), zp_task(add_bound, .bind = "{\"b\": 1, \"c\": 1}"));
    assert_int_equal(first_output(p, "[1]"), 3);
    zp_pipeline_free(p);
}

static void test_redundant_bind_is_accepted(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(f1, .bind = "{}"),
                             zp_task(f2, .branch = true, .bind = "null"));
    assert_int_equal(first_output(p, "[1]"), 1);
    zp_pipeline_free(p);
}

static void test_invalid_bind_json_makes_the_pipeline_invalid(void **state)
{
    (void)state;
    assert_invalid_mentioning(zp_task(f2, .bind = "{\"b\": "), "bind");
}

static void test_join_consumer_sums_the_pipeline_outputs(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task(square, .workers = 3),
                zp_task(total, .join = true));
    /* 0² + 1² + ... + 9² */
    assert_int_equal(first_output(p, "[10]"), 285);
    zp_pipeline_free(p);
}

static void test_first_stage_with_workers_is_invalid(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(f1, .workers = 2), zp_task(f2, .branch = true));
    const char *why = zp_pipeline_error(p);
    assert_non_null(why);
    assert_non_null(strstr(why, "f1"));
    assert_non_null(strstr(why, "workers"));
    assert_run_refused(p);
    zp_pipeline_free(p);
}

static void test_first_stage_with_join_is_invalid(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(f3, .join = true), zp_task(f2, .branch = true));
    const char *why = zp_pipeline_error(p);
    assert_non_null(why);
    assert_non_null(strstr(why, "f3"));
    assert_non_null(strstr(why, "join"));
    assert_run_refused(p);
    zp_pipeline_free(p);
}

static void test_threaded_failure_names_task_item_and_message(void **state)
{
    (void)state;
    int64_t out[64];
    size_t n;
    char *msg;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(fail_on_seven, .workers = 2));
    int rc = run_all(p, "[20]", out, 64, &n, &msg);
    assert_int_equal(rc, ZP_ETASK);
    assert_non_null(msg);
    assert_string_equal(
        msg, "task 'fail_on_seven' failed on item 7: value 7 is unlucky");
    for (size_t i = 0; i < n; i++)
        assert_int_not_equal(out[i], 7);
    free(msg);
    zp_pipeline_free(p);
}

/* ---- test_task.py ----------------------------------------------------------
 */

static void test_negative_workers_are_invalid(void **state)
{
    (void)state;
    assert_invalid_mentioning(zp_task(f2, .workers = -1), "workers");
}

static void test_negative_throttle_is_invalid(void **state)
{
    (void)state;
    assert_invalid_mentioning(zp_task(f2, .throttle = -1), "throttle");
}

static void test_negative_retries_are_invalid(void **state)
{
    (void)state;
    assert_invalid_mentioning(zp_task(f2, .retries = -1), "retries");
}

static void test_unknown_on_error_is_invalid(void **state)
{
    (void)state;
    assert_invalid_mentioning(zp_task(f2, .on_error = 7), "on_error");
}

static void test_unknown_mode_is_invalid(void **state)
{
    (void)state;
    assert_invalid_mentioning(zp_task(f2, .mode = 7), "mode");
}

static void test_null_function_is_invalid(void **state)
{
    (void)state;
    zp_pipeline *p = zp_task_new("x", NULL, NULL);
    assert_non_null(p);
    const char *why = zp_pipeline_error(p);
    assert_non_null(why);
    assert_non_null(strstr(why, "'x'"));
    assert_invalid_mentioning(p, "function");
}

static void test_invalid_stage_later_in_a_pipeline_invalidates_it(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(f1), zp_task(f2, .workers = -1));
    assert_invalid_mentioning(p, "workers");
}

static void test_non_branch_task_emitting_twice_fails_the_run(void **state)
{
    (void)state;
    int64_t out[16];
    size_t n;
    char *msg;
    zp_pipeline *p = zp_pipe(zp_task(f1), zp_task(emit_twice));
    assert_null(zp_pipeline_error(p));
    int rc = run_all(p, "[5]", out, 16, &n, &msg);
    assert_int_equal(rc, ZP_ETASK);
    assert_non_null(msg);
    assert_non_null(strstr(msg, "task 'emit_twice' failed on item 0"));
    assert_non_null(strstr(msg, "branch"));
    free(msg);
    zp_pipeline_free(p);
}

static void test_join_with_ordered_is_invalid(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(f1), zp_task(f3, .join = true, .ordered = true));
    const char *why = zp_pipeline_error(p);
    assert_non_null(why);
    assert_non_null(strstr(why, "join"));
    assert_invalid_mentioning(p, "ordered");
}

static void test_join_with_retries_is_invalid(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(f1), zp_task(f3, .join = true, .retries = 2));
    const char *why = zp_pipeline_error(p);
    assert_non_null(why);
    assert_non_null(strstr(why, "join"));
    assert_invalid_mentioning(p, "retries");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_branched_pipeline_yields_the_argument),
        cmocka_unit_test(test_joined_pipeline_yields_the_argument),
        cmocka_unit_test(test_bind_array_reaches_every_call),
        cmocka_unit_test(test_bind_map_works_like_keyword_arguments),
        cmocka_unit_test(test_redundant_bind_is_accepted),
        cmocka_unit_test(test_invalid_bind_json_makes_the_pipeline_invalid),
        cmocka_unit_test(test_join_consumer_sums_the_pipeline_outputs),
        cmocka_unit_test(test_first_stage_with_workers_is_invalid),
        cmocka_unit_test(test_first_stage_with_join_is_invalid),
        cmocka_unit_test(test_threaded_failure_names_task_item_and_message),
        cmocka_unit_test(test_negative_workers_are_invalid),
        cmocka_unit_test(test_negative_throttle_is_invalid),
        cmocka_unit_test(test_negative_retries_are_invalid),
        cmocka_unit_test(test_unknown_on_error_is_invalid),
        cmocka_unit_test(test_unknown_mode_is_invalid),
        cmocka_unit_test(test_null_function_is_invalid),
        cmocka_unit_test(test_invalid_stage_later_in_a_pipeline_invalidates_it),
        cmocka_unit_test(test_non_branch_task_emitting_twice_fails_the_run),
        cmocka_unit_test(test_join_with_ordered_is_invalid),
        cmocka_unit_test(test_join_with_retries_is_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
