/* SPDX-License-Identifier: MIT */
/*
 * Tests of process workers (mode = ZP_PROCESS) that fail on purpose:
 * workers killed with SIGKILL and replaced without losing an item, a task
 * that segfaults (the run fails naming the item and the signal, or skips
 * the item), retries that do not hide an item that always crashes, a hung
 * item ended by its timeout, and the one item that crashes inside a large
 * batch, found. The helpers, the tasks and main()'s start are
 * tests/processutil.h's.
 */
#include "tests/processutil.h"

/* ---- Crashes, kills and hangs --------------------------------------------
 */

static void
test_killed_worker_processes_are_replaced_and_lose_no_item(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    /* Four deaths by SIGKILL, each of a worker on an item (which runs
     * again), the last with 2000 items to go, however fast it all goes. */
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(twice_dying_once, .workers = 2, .mode = ZP_PROCESS));
    test_dir_make();
    collect(p, "[5000]", c);
    int deaths = test_dir_count("died-on-");
    print_message("%d worker processes killed; %llu restarts; %lld ms\n",
                  deaths, (unsigned long long)c->st.restarts, (long long)c->ms);
    assert_run_ok(c);
    assert_each_once(c, 5000, 2, -1);
    assert_int_equal(deaths, 4);
    assert_true(c->st.restarts >= 4);
    assert_int_equal(c->st.items_out, 5000);
    collected_fini(c);
    test_dir_remove();
}

static void
test_segfaulting_task_fails_the_run_naming_item_and_signal(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(segv_on_7, .workers = 2, .mode = ZP_PROCESS));
    collect(p, "[100]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'segv_on_7'");
    assert_error_has(c, "item 7:");
    assert_error_has(c, "SIGSEGV");
    assert_int_equal(c->st.failed, 1);
    collected_fini(c);
}

static void test_segfaulting_item_is_skipped_with_on_error_skip(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(segv_on_7, .workers = 2, .mode = ZP_PROCESS,
                        .on_error = ZP_SKIP));
    collect(p, "[100]", c);
    assert_run_ok(c);
    assert_each_once(c, 100, 1, 7);
    assert_int_equal(c->st.skipped, 1);
    assert_int_equal(c->st.items_out, 99);
    assert_true(c->st.restarts >= 1);
    collected_fini(c);
}

static void test_retries_do_not_hide_an_item_that_always_crashes(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p = zp_pipe(
        zp_task(numbers, .branch = true),
        zp_task(segv_on_7, .workers = 2, .mode = ZP_PROCESS, .retries = 1));
    collect(p, "[100]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'segv_on_7' failed on item 7:");
    assert_error_has(c, "SIGSEGV");
    assert_true(c->st.retried >= 1);
    assert_true(c->st.restarts >= 1); /* none once the run failed */
    collected_fini(c);
}

/* The timeout of the hung-item tests: long enough that no other item
 * outlasts it on a busy machine, so that item 3 is the one timed out. */
#define HANG_TIMEOUT_MS 2000

static void test_hung_item_fails_the_run_after_its_timeout(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(hang_on_3, .workers = 2, .mode = ZP_PROCESS,
                        .timeout_ms = HANG_TIMEOUT_MS));
    collect(p, "[20]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'hang_on_3' failed on item 3:");
    assert_error_has(c, "timeout");
    /* Not before its time (the watchdog fails a run whose timeout never
     * fires: item 3 would hang for longer). */
    assert_true(c->ms >= HANG_TIMEOUT_MS);
    collected_fini(c);
}

static void test_hung_item_is_skipped_after_its_timeout(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(hang_on_3, .workers = 2, .mode = ZP_PROCESS,
                        .timeout_ms = HANG_TIMEOUT_MS, .on_error = ZP_SKIP));
    collect(p, "[20]", c);
    assert_run_ok(c);
    assert_each_once(c, 20, 1, 3);
    assert_int_equal(c->st.skipped, 1);
    assert_true(c->ms >= HANG_TIMEOUT_MS);
    collected_fini(c);
}

static void test_item_that_crashes_inside_a_large_batch_is_found(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(segv_on_4321, .workers = 2, .mode = ZP_PROCESS));
    collect(p, "[10000]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'segv_on_4321' failed on item 4321:");
    assert_error_has(c, "SIGSEGV");
    collected_fini(c);
    zp_pipeline_free(f->p);
    p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                       zp_task(segv_on_4321, .workers = 2, .mode = ZP_PROCESS,
                               .on_error = ZP_SKIP));
    collect(p, "[10000]", c);
    assert_run_ok(c);
    assert_each_once(c, 10000, 1, 4321);
    assert_int_equal(c->st.skipped, 1);
    collected_fini(c);
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    int rc = process_tests_init("process_fault_test", &argc, &argv);
    if (rc != 0)
        return rc;
    const struct CMUnitTest tests[] = {
        TEST(test_killed_worker_processes_are_replaced_and_lose_no_item),
        TEST(test_segfaulting_task_fails_the_run_naming_item_and_signal),
        TEST(test_segfaulting_item_is_skipped_with_on_error_skip),
        TEST(test_retries_do_not_hide_an_item_that_always_crashes),
        TEST(test_hung_item_fails_the_run_after_its_timeout),
        TEST(test_hung_item_is_skipped_after_its_timeout),
        TEST(test_item_that_crashes_inside_a_large_batch_is_found),
        cmocka_unit_test(test_no_child_process_or_temp_dir_is_left_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
