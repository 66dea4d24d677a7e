/* SPDX-License-Identifier: MIT */
/*
 * Tests of a run's reports (coordinator/progress.c) through the public
 * API: zp_run_opts.stats_path writes the final statistics as JSON, read
 * back here with jansson, for runs that end well, fail, are cancelled or
 * never start, and an unwritable path fails the run; zp_run_opts.progress
 * prints lines and a summary on a stderr that is not a terminal (a file
 * here), with the share done and the time left when the run's total is
 * known, and its thread ends with the run on every path.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/testutil.h"

#include "coordinator/progress.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- Tasks --------------------------------------------------------------- */

/* Fails on item 3. */
static int picky(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    if (x == 3)
        return zp_fail(call, "three is right out");
    return zp_emit_int(call, x);
}

/* How long a task waits for an event before it calls it a failure. */
#define DEADLINE_MS 30000

/* Where the progress test's stderr goes, for until_reported to read. */
static const char *progress_path;

/* Whether the progress printed a periodic line of stage 2 yet. */
static bool stage_2_reported(void)
{
    char text[16384];
    FILE *f = fopen(progress_path, "r");
    size_t n = f != NULL ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f != NULL)
        fclose(f);
    text[n] = '\0';
    return has_progress_line(text, "stage 2 until_reported: in ");
}

/* Passes its item on once a periodic report of the run was printed (or
 * fails after DEADLINE_MS): the run goes on until it was reported on,
 * however late the progress thread comes to it. */
static int until_reported(zp_call *call)
{
    for (int waited = 0; !stage_2_reported(); waited += 10) {
        if (waited >= DEADLINE_MS)
            return zp_fail(call, "no progress line in %d ms", DEADLINE_MS);
        nap_us(10000);
    }
    return zp_emit_obj(call, zp_input(call));
}

/* ---- Helpers ------------------------------------------------------------- */

typedef struct fixture {
    char dir[64];   /* a private temporary directory */
    char path[128]; /* a file in it */
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/zp-progress-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/stats.json", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    unlink(f->path);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Runs p on args with the statistics going to f->path; returns the code
 * zp_finish gave, and the error in *error (malloc'ed) when there is one. */
static int run_with_stats(zp_pipeline *p, const char *args, const char *path,
                          char **error)
{
    zp_run_opts o = {.stats_path = path};
    zp_run *run = zp_start_with(p, args, &o);
    int rc = zp_finish(run);
    *error = zp_error(run) ? strdup(zp_error(run)) : NULL;
    zp_run_free(run);
    return rc;
}

static json_t *load_stats(const char *path)
{
    json_error_t e;
    json_t *j = json_load_file(path, 0, &e);
    if (j == NULL)
        fail_msg("%s: %s at line %d", path, e.text, e.line);
    return j;
}

static uint64_t stage_count(json_t *stats, size_t i, const char *key)
{
    json_t *v = json_object_get(
        json_array_get(json_object_get(stats, "stages"), i), key);
    assert_true(json_is_integer(v));
    return (uint64_t)json_integer_value(v);
}

static const char *text_of(json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* ---- Statistics files ---------------------------------------------------- */

static void test_stats_file_holds_every_stage_of_a_good_run(void **state)
{
    fixture *f = *state;
    char *error = NULL;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(square, .workers = 2, .throttle = 7),
                             zp_task(total, .join = true));
    assert_int_equal(run_with_stats(p, "[6]", f->path, &error), 0);
    assert_null(error);
    json_t *j = load_stats(f->path);
    assert_string_equal(text_of(j, "status"), "ok");
    assert_true(json_is_null(json_object_get(j, "error")));
    assert_true(json_real_value(json_object_get(j, "seconds")) > 0);
    json_t *stages = json_object_get(j, "stages");
    assert_int_equal(json_array_size(stages), 3);
    assert_string_equal(text_of(json_array_get(stages, 1), "task"), "square");
    assert_int_equal(stage_count(j, 0, "stage"), 1);
    assert_int_equal(stage_count(j, 0, "items_out"), 6);
    assert_int_equal(stage_count(j, 1, "items_in"), 6);
    assert_int_equal(stage_count(j, 1, "items_out"), 6);
    assert_int_equal(stage_count(j, 1, "workers"), 2);
    assert_int_equal(stage_count(j, 1, "throttle"), 7);
    assert_true(stage_count(j, 1, "queue_hwm") <= 7);
    (void)stage_count(j, 1, "peak_in_flight"); /* sampled: may be 0 */
    assert_int_equal(stage_count(j, 2, "items_out"), 1);
    assert_int_equal(stage_count(j, 2, "failed"), 0);
    assert_int_equal(stage_count(j, 2, "restarts"), 0);
    assert_true(json_is_real(
        json_object_get(json_array_get(stages, 2), "busy_seconds")));
    json_decref(j);
    zp_pipeline_free(p);
}

static void test_stats_file_of_a_failed_run_says_why(void **state)
{
    fixture *f = *state;
    char *error = NULL;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true), zp_task(picky));
    assert_int_equal(run_with_stats(p, "[10]", f->path, &error), ZP_ETASK);
    json_t *j = load_stats(f->path);
    assert_string_equal(text_of(j, "status"), "failed");
    assert_non_null(error);
    assert_string_equal(text_of(j, "error"), error);
    assert_int_equal(stage_count(j, 1, "failed"), 1);
    json_decref(j);
    free(error);
    zp_pipeline_free(p);
}

static void test_stats_file_of_a_cancelled_run_says_so(void **state)
{
    fixture *f = *state;
    zp_run_opts o = {.stats_path = f->path};
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true), zp_task(square));
    zp_run *run = zp_start_with(p, "[1000000000]", &o);
    const msgpack_object *out;
    assert_true(zp_run_next(run, &out));
    zp_cancel(run);
    assert_int_equal(zp_finish(run), ZP_ECANCELED);
    zp_run_free(run);
    json_t *j = load_stats(f->path);
    assert_string_equal(text_of(j, "status"), "cancelled");
    assert_true(stage_count(j, 1, "items_out") >= 1);
    json_decref(j);
    zp_pipeline_free(p);
}

static void
test_stats_file_of_a_run_that_never_started_has_no_stage(void **state)
{
    fixture *f = *state;
    char *error = NULL;
    zp_pipeline *p = zp_pipe(zp_task(numbers, .workers = 2), zp_task(square));
    assert_int_equal(run_with_stats(p, "[1]", f->path, &error), ZP_EINVAL);
    json_t *j = load_stats(f->path);
    assert_string_equal(text_of(j, "status"), "failed");
    assert_string_equal(text_of(j, "error"), error);
    assert_int_equal(json_array_size(json_object_get(j, "stages")), 0);
    json_decref(j);
    free(error);
    zp_pipeline_free(p);
}

static void test_unwritable_stats_file_fails_a_good_run(void **state)
{
    fixture *f = *state;
    char path[160], *error = NULL;
    snprintf(path, sizeof path, "%s/no/such/dir/stats.json", f->dir);
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true), zp_task(square));
    assert_int_equal(run_with_stats(p, "[3]", path, &error), ZP_EIO);
    assert_non_null(strstr(error, "cannot write the statistics"));
    assert_non_null(strstr(error, path));
    free(error);
    /* A run that failed keeps its own error. */
    zp_pipeline *bad =
        zp_pipe(zp_task(numbers, .branch = true), zp_task(picky));
    assert_int_equal(run_with_stats(bad, "[5]", path, &error), ZP_ETASK);
    assert_non_null(strstr(error, "three is right out"));
    free(error);
    zp_pipeline_free(bad);
    zp_pipeline_free(p);
}

/* ---- Progress ------------------------------------------------------------ */

/* Runs p with progress on and stderr going to `path`; returns what was
 * printed (malloc'ed). */
static char *progress_of(zp_pipeline *p, const char *args, const char *path,
                         uint64_t total)
{
    int saved = dup(STDERR_FILENO);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(saved >= 0 && fd >= 0);
    fflush(stderr);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    zp_run_opts o = {.progress = true, .progress_total = total};
    zp_run *run = zp_start_with(p, args, &o);
    int rc = zp_finish(run);
    zp_run_free(run);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    assert_int_equal(rc, 0);
    off_t size = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)size + 1);
    assert_non_null(text);
    assert_int_equal(pread(fd, text, (size_t)size, 0), size);
    close(fd);
    return text;
}

static void
test_progress_prints_lines_then_a_summary_off_a_terminal(void **state)
{
    fixture *f = *state;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task(until_reported));
    progress_path = f->path;
    char *text = progress_of(p, "[3]", f->path, 0);
    /* A line per stage every second, while the run goes ... */
    assert_true(has_progress_line(text, "stage 1 numbers: in 1, out "));
    assert_true(has_progress_line(text, "stage 2 until_reported: in "));
    assert_non_null(strstr(text, ", workers 1/1, "));
    /* ... and the summary at the end, with no terminal escape anywhere. */
    assert_non_null(strstr(text, "zpipe: finished in "));
    assert_non_null(strstr(text, "zpipe: stage 1 numbers: in 1, out 3, "
                                 "failed 0"));
    assert_non_null(strstr(text, "zpipe: stage 2 until_reported: in 3, out "
                                 "3, failed 0, retried 0"));
    assert_null(strchr(text, '\x1b'));
    free(text);
    zp_pipeline_free(p);
}

static void test_progress_thread_ends_when_a_run_is_freed_early(void **state)
{
    (void)state;
    zp_run_opts o = {.progress = true};
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true), zp_task(square));
    int saved = dup(STDERR_FILENO);
    int null = open("/dev/null", O_WRONLY);
    assert_true(saved >= 0 && null >= 0);
    dup2(null, STDERR_FILENO);
    for (int i = 0; i < 20; i++) {
        zp_run *run = zp_start_with(p, "[1000000000]", &o);
        const msgpack_object *out;
        assert_true(zp_run_next(run, &out));
        zp_run_free(run); /* cancels, joins the progress thread, frees */
    }
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(null);
    zp_pipeline_free(p);
}

static void test_the_eta_says_the_share_done_and_the_time_left(void **state)
{
    (void)state;
    char text[128];
    const uint64_t s = 1000000000ull;
    zp__progress_eta(text, sizeof text, 0, 100, s);
    assert_string_equal(text, "0.0% done, 0 of 100 items, ? left");
    zp__progress_eta(text, sizeof text, 25, 100, 2 * s);
    assert_string_equal(text, "25.0% done, 25 of 100 items, 6.0s left");
    zp__progress_eta(text, sizeof text, 50, 100, 30 * s);
    assert_string_equal(text, "50.0% done, 50 of 100 items, 30s left");
    zp__progress_eta(text, sizeof text, 1, 1000, s);
    assert_string_equal(text, "0.1% done, 1 of 1000 items, 16m39s left");
    zp__progress_eta(text, sizeof text, 1, 100000, s);
    assert_string_equal(text, "0.0% done, 1 of 100000 items, 27h46m left");
    zp__progress_eta(text, sizeof text, 120, 100, s); /* more than said */
    assert_string_equal(text, "100.0% done, 100 of 100 items, 0.0s left");
}

static void test_progress_with_a_total_shows_the_time_left(void **state)
{
    fixture *f = *state;
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task(until_reported));
    progress_path = f->path;
    char *text = progress_of(p, "[4]", f->path, 4);
    /* A line a second; its figures depend on the machine's pace. */
    assert_non_null(strstr(text, "% done, "));
    assert_non_null(strstr(text, " of 4 items, "));
    assert_non_null(strstr(text, " left\n"));
    free(text);
    /* Without a total, no share and no time left. */
    text = progress_of(p, "[3]", f->path, 0);
    assert_null(strstr(text, "% done"));
    free(text);
    zp_pipeline_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_stats_file_holds_every_stage_of_a_good_run, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_stats_file_of_a_failed_run_says_why, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_stats_file_of_a_cancelled_run_says_so, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_stats_file_of_a_run_that_never_started_has_no_stage, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_unwritable_stats_file_fails_a_good_run, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_progress_prints_lines_then_a_summary_off_a_terminal, setup,
            teardown),
        cmocka_unit_test(test_progress_thread_ends_when_a_run_is_freed_early),
        cmocka_unit_test(test_the_eta_says_the_share_done_and_the_time_left),
        cmocka_unit_test_setup_teardown(
            test_progress_with_a_total_shows_the_time_left, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
