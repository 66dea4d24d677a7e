/* SPDX-License-Identifier: MIT */
/*
 * Tests of stages whose workers are processes the coordinator spawns and
 * supervises (mode = ZP_PROCESS), at work: every item delivered exactly
 * once, in order when asked, a task's error across the process boundary,
 * an item longer than the silence limit, items and outputs larger than a
 * message, the task's own time reported. Their faults (crashes, kills,
 * hangs) are process_fault_test's. The helpers, the tasks and main()'s
 * start are tests/processutil.h's.
 */
#include "tests/processutil.h"

/* ---- Process workers ------------------------------------------------------
 */

static void test_process_stage_delivers_every_item_exactly_once(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(twice, .workers = 2, .mode = ZP_PROCESS));
    collect(p, "[5000]", c);
    assert_run_ok(c);
    assert_each_once(c, 5000, 2, -1);
    assert_string_equal(c->st.task, "twice");
    assert_int_equal(c->st.workers, 2);
    assert_int_equal(c->st.items_in, 5000);
    assert_int_equal(c->st.items_out, 5000);
    assert_int_equal(c->st.failed, 0);
    assert_int_equal(c->st.restarts, 0);
    collected_fini(c);
}

static void test_ordered_process_stage_keeps_input_order(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p = zp_pipe(
        zp_task(numbers, .branch = true),
        zp_task(twice, .workers = 2, .ordered = true, .mode = ZP_PROCESS));
    collect(p, "[5000]", c);
    assert_run_ok(c);
    assert_int_equal(c->n, 5000);
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i] != 2 * (int64_t)i)
            fail_msg("output %zu is %lld", i, (long long)c->v[i]);
    assert_int_equal(c->st.items_out, 5000);
    collected_fini(c);
}

static void test_task_error_crosses_the_process_boundary(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(fail_on_7, .workers = 2, .mode = ZP_PROCESS));
    collect(p, "[100]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_non_null(c->error);
    assert_string_equal(c->error,
                        "task 'fail_on_7' failed on item 7: seven is not "
                        "welcome");
    assert_int_equal(c->st.failed, 1);
    for (size_t i = 0; i < c->n; i++)
        assert_int_not_equal(c->v[i], 7);
    collected_fini(c);
}

static void
test_item_running_longer_than_the_silence_limit_is_waited_for(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(long_first, .workers = 1, .mode = ZP_PROCESS));
    collect(p, "[3]", c);
    assert_run_ok(c);
    assert_each_once(c, 3, 1, -1);
    assert_int_equal(c->st.restarts, 0);
    assert_true(c->ms >= 3500);
    collected_fini(c);
}

static void test_items_larger_than_a_message_in_all_fail_the_run(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    /* 1000 items of 100 kB: batches are cut by bytes, not only counted */
    zp_pipeline *p = f->p = zp_pipe(zp_task(bins, .branch = true),
                                    zp_task(size_of, .mode = ZP_PROCESS));
    collect(p, "[1000, 100000]", c);
    assert_run_ok(c);
    assert_int_equal(c->n, 1000);
    for (size_t i = 0; i < c->n; i++)
        assert_int_equal(c->v[i], 100000);
    collected_fini(c);
    /* one item larger than a message */
    char args[64];
    snprintf(args, sizeof args, "[1, %zu]", ZP__PROTO_MAX_MSG);
    collect(p, args, c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'size_of': item 0 takes");
    assert_error_has(c, "more than a message to a worker holds");
    collected_fini(c);
    /* outputs larger than a message */
    zp_pipeline_free(f->p);
    p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                       zp_task(huge_output, .mode = ZP_PROCESS));
    collect(p, "[1]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'huge_output' failed on item 0: its outputs "
                        "take");
    assert_error_has(c, "more than a message to the coordinator holds");
    collected_fini(c);
}

static void test_a_process_stage_reports_its_task_time(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(slow_twice, .mode = ZP_PROCESS, .workers = 2));
    collect(p, "[200]", c);
    assert_run_ok(c);
    assert_each_once(c, 200, 2, -1);
    /* slow_twice sleeps 200 us an item: the task's own time, reported by
     * its workers (the coordinator used to count none) */
    print_message("busy %.3f s\n", (double)c->st.busy_ns / 1e9);
    assert_true(c->st.busy_ns >= 200 * 200 * 1000ull);
    collected_fini(c);
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    int rc = process_tests_init("process_test", &argc, &argv);
    if (rc != 0)
        return rc;
    const struct CMUnitTest tests[] = {
        TEST(test_process_stage_delivers_every_item_exactly_once),
        TEST(test_ordered_process_stage_keeps_input_order),
        TEST(test_task_error_crosses_the_process_boundary),
        TEST(test_item_running_longer_than_the_silence_limit_is_waited_for),
        TEST(test_items_larger_than_a_message_in_all_fail_the_run),
        TEST(test_a_process_stage_reports_its_task_time),
        cmocka_unit_test(test_no_child_process_or_temp_dir_is_left_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
