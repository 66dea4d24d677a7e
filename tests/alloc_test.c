/* SPDX-License-Identifier: MIT */
/*
 * Tests of allocation failures (core/alloc.c): the hook itself, then a
 * walk over every allocation of a pipeline's build and run, failing the
 * n-th for n = 0, 1, 2, ... until a run needs no more. Each failure must
 * be a clean error: a run that ends with an error message (or a pipeline
 * that says why it is invalid), never a crash, a hang or a leak (the
 * sanitizer build checks the last two).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "tests/testutil.h"

#include "core/alloc.h"

static void test_allocations_fail_after_the_count_and_are_counted(void **state)
{
    (void)state;
    assert_int_equal(zp__alloc_fail_after(2), 0);
    void *a = zp__malloc(8), *b = zp__calloc(1, 8);
    char *c = zp__strdup("x");
    void *d = zp__realloc(NULL, 8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_null(d);
    assert_int_equal(zp__alloc_fail_after(-1), 2);
    c = zp__strdup("x");
    assert_non_null(c);
    free(a);
    free(b);
    free(c);
}

static void wake(uv_timer_t *t)
{
    zp_call *call = t->data;
    if (zp_emit_obj(call, zp_input(call)) == 0)
        zp_done(call);
    else /* every call ends, also when its output cannot go */
        zp_fail(call, "cannot send the output on");
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
}

/* An async identity that waits on a timer of 0 ms. */
static void later(zp_call *call, uv_loop_t *loop)
{
    uv_timer_t *t = malloc(sizeof *t);
    if (t == NULL) {
        zp_fail(call, "out of memory");
        return;
    }
    uv_timer_init(loop, t);
    t->data = call;
    uv_timer_start(t, wake, 0, 0);
}

static int plus_one(zp_call *call)
{
    return zp_emit_int(call, zp_input(call)->via.i64 + 1);
}

/* The first task of a nested pipeline: its input is [item]. */
static int unwrap(zp_call *call)
{
    return zp_emit_obj(call, &zp_input(call)->via.array.ptr[0]);
}

/* Builds and runs a pipeline of every in-process kind; returns whether
 * it got the right answer, or checks that it failed cleanly. */
static bool build_and_run(void)
{
    enum { N = 40 };
    zp_pipeline *inner = zp_pipe(zp_task(unwrap), zp_task(square));
    zp_pipeline *p = zp_pipe(
        zp_task(numbers, .branch = true), zp_async_task(later, .workers = 4),
        zp_task(plus_one, .workers = 3, .retries = 1),
        zp_task_pipeline(inner, .ordered = true, .branch = true),
        zp_task(total, .join = true));
    bool ok = false;
    if (zp_pipeline_error(p) != NULL) {
        /* A pipeline that could not be built says so. */
        assert_non_null(strstr(zp_pipeline_error(p), "memory"));
        zp_pipeline_free(p);
        return false;
    }
    zp_run *r = zp_start(p, "[40]");
    assert_non_null(r);
    const msgpack_object *out;
    int64_t sum = -1;
    while (zp_run_next(r, &out))
        sum = out->via.i64;
    int rc = zp_finish(r);
    if (rc == 0) {
        /* sum of (i + 1)^2 for i < N */
        int64_t want = 0;
        for (int64_t i = 0; i < N; i++)
            want += (i + 1) * (i + 1);
        assert_int_equal(sum, want);
        ok = true;
    } else {
        assert_non_null(zp_error(r));
        assert_true(strlen(zp_error(r)) > 0);
    }
    zp_run_free(r);
    zp_pipeline_free(p);
    return ok;
}

static void
test_every_allocation_failure_of_a_build_and_run_is_a_clean_error(void **state)
{
    (void)state;
    long n = 0, failures = 0;
    for (;; n++) {
        zp__alloc_fail_after(n);
        bool ok = build_and_run();
        long failed = zp__alloc_fail_after(-1);
        if (!ok)
            failures++;
        if (failed == 0) {
            assert_true(ok); /* nothing failed: the run must be right */
            break;
        }
        assert_true(n < 100000);
    }
    print_message("%ld allocations walked, %ld runs failed cleanly\n", n,
                  failures);
    assert_true(n > 50); /* the walk went through a real build and run */
    assert_true(failures > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocations_fail_after_the_count_and_are_counted),
        cmocka_unit_test(
            test_every_allocation_failure_of_a_build_and_run_is_a_clean_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
