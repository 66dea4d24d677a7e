/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the spec parser (core/spec.c): the stages and options it
 * builds, bind values that hold spaces and '|', timeout units, and the exact
 * shape of every error message: what is wrong, the stage, the column, the
 * spec quoted and a caret under the offending word. Tasks are registered at
 * file scope and never run: parsing only builds pipelines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/pipeline.h"
#include "zpipe.h"

ZP_TASK(range)
{
    (void)call;
    return 0;
}

ZP_TASK(square)
{
    (void)call;
    return 0;
}

ZP_TASK(total)
{
    (void)call;
    return 0;
}

ZP_TASK(label)
{
    (void)call;
    return 0;
}

/* ---- Helpers ------------------------------------------------------------- */

/* A malloc'ed copy of s[0..n). */
static char *copy(const char *s, size_t n)
{
    char *c = malloc(n + 1);
    assert_non_null(c);
    memcpy(c, s, n);
    c[n] = '\0';
    return c;
}

/* What line 2 of a message must be: the spec, whitespace as spaces. */
static char *quoted_spec(const char *spec)
{
    size_t n = strlen(spec);
    char *q = malloc(n + 3);
    assert_non_null(q);
    q[0] = q[1] = ' ';
    for (size_t i = 0; i <= n; i++)
        q[i + 2] = strchr(" \t\n\r\v\f", spec[i]) && spec[i] ? ' ' : spec[i];
    return q;
}

/* What line 3 must be: a caret at `column`, then width - 1 tildes. */
static char *caret_line(int column, int width)
{
    size_t n = 2 + (size_t)column - 1 + (size_t)(width > 1 ? width : 1);
    char *c = malloc(n + 1);
    assert_non_null(c);
    memset(c, ' ', n);
    c[2 + column - 1] = '^';
    for (int i = 1; i < width; i++)
        c[2 + column - 1 + i] = '~';
    c[n] = '\0';
    return c;
}

/*
 * Parses `spec`, which must fail, and checks the message: exactly three
 * lines, the first ending in " in stage S (column C)", the second the spec
 * indented by two, the third a caret under column C followed by width - 1
 * tildes. Returns the first line without that ending (free it).
 */
static char *parse_failure(const char *spec, int stage, int column, int width)
{
    char *err = NULL;
    assert_null(zp_parse(spec, &err));
    assert_non_null(err);
    const char *nl1 = strchr(err, '\n');
    assert_non_null(nl1);
    const char *nl2 = strchr(nl1 + 1, '\n');
    assert_non_null(nl2);
    assert_null(strchr(nl2 + 1, '\n'));

    char tail[64];
    snprintf(tail, sizeof tail, " in stage %d (column %d)", stage, column);
    size_t n1 = (size_t)(nl1 - err), nt = strlen(tail);
    assert_true(n1 > nt);
    char *end = copy(err + n1 - nt, nt);
    assert_string_equal(end, tail);

    char *line2 = copy(nl1 + 1, (size_t)(nl2 - nl1 - 1));
    char *want2 = quoted_spec(spec ? spec : "");
    assert_string_equal(line2, want2);
    char *want3 = caret_line(column, width);
    assert_string_equal(nl2 + 1, want3);

    char *head = copy(err, n1 - nt);
    free(end);
    free(line2);
    free(want2);
    free(want3);
    free(err);
    return head;
}

/* parse_failure() whose first line must be exactly `head`. */
static void assert_parse_error(const char *spec, const char *head, int stage,
                               int column, int width)
{
    char *got = parse_failure(spec, stage, column, width);
    assert_string_equal(got, head);
    free(got);
}

/* parse_failure() whose first line must contain `part`. */
static void assert_parse_error_has(const char *spec, const char *part,
                                   int stage, int column, int width)
{
    char *got = parse_failure(spec, stage, column, width);
    if (strstr(got, part) == NULL)
        fail_msg("'%s' does not contain '%s'", got, part);
    free(got);
}

/* Parses a spec that must build a valid pipeline; leaves err untouched. */
static zp_pipeline *parse_ok(const char *spec)
{
    char marker = 0;
    char *err = &marker;
    zp_pipeline *p = zp_parse(spec, &err);
    assert_ptr_equal(err, &marker);
    assert_non_null(p);
    assert_null(zp_pipeline_error(p));
    return p;
}

#define NUMBER_WANTED \
    "expected a whole number (digits only, at most 2147483647)"
#define COUNT_WANTED \
    "expected a whole number, at least 1 (digits only, at most 2147483647)"

/* ---- Building ------------------------------------------------------------ */

static void
test_three_stage_spec_builds_three_stages_with_their_options(void **state)
{
    (void)state;
    zp_pipeline *p =
        parse_ok("range branch | square workers=4 ordered "
                 "retries=2 on_error=skip | total join throttle=16");
    assert_int_equal(zp_pipeline_stages(p), 3);
    assert_string_equal(p->stages[0].name, "range");
    assert_ptr_equal(p->stages[0].fn, range);
    assert_true(p->stages[0].opts.branch);
    assert_int_equal(p->stages[0].opts.workers, 1);
    assert_int_equal(p->stages[0].opts.throttle, ZP_DEFAULT_THROTTLE);

    const zp_opts *sq = &p->stages[1].opts;
    assert_string_equal(p->stages[1].name, "square");
    assert_ptr_equal(p->stages[1].fn, square);
    assert_int_equal(sq->size, sizeof(zp_opts));
    assert_int_equal(sq->workers, 4);
    assert_true(sq->ordered);
    assert_false(sq->branch);
    assert_int_equal(sq->retries, 2);
    assert_int_equal(sq->on_error, ZP_SKIP);
    assert_int_equal(sq->mode, ZP_INPROC);
    assert_null(sq->bind);

    assert_string_equal(p->stages[2].name, "total");
    assert_true(p->stages[2].opts.join);
    assert_int_equal(p->stages[2].opts.throttle, 16);
    zp_pipeline_free(p);
}

static void test_zero_values_and_inproc_mode_are_the_defaults(void **state)
{
    (void)state;
    zp_pipeline *p = parse_ok("range | square mode=inproc throttle=0 "
                              "retries=0 timeout=0 on_error=fail | total "
                              "timeout=0ms | label timeout=0s");
    assert_int_equal(zp_pipeline_stages(p), 4);
    const zp_opts *sq = &p->stages[1].opts;
    assert_int_equal(sq->workers, 1);
    assert_int_equal(sq->throttle, ZP_DEFAULT_THROTTLE);
    assert_int_equal(sq->retries, 0);
    assert_int_equal(sq->timeout_ms, 0);
    assert_int_equal(sq->on_error, ZP_FAIL);
    assert_int_equal(sq->mode, ZP_INPROC);
    zp_pipeline_free(p);
}

static void
test_any_whitespace_separates_words_and_pipes_need_none(void **state)
{
    (void)state;
    zp_pipeline *p =
        parse_ok("\trange\nbranch|square workers=2|  total   join \n");
    assert_int_equal(zp_pipeline_stages(p), 3);
    assert_true(p->stages[0].opts.branch);
    assert_int_equal(p->stages[1].opts.workers, 2);
    assert_true(p->stages[2].opts.join);
    zp_pipeline_free(p);
}

/* ---- bind ---------------------------------------------------------------- */

static void test_bind_keeps_spaces_and_pipes_inside_json_strings(void **state)
{
    (void)state;
    const char *json = "{\"sep\": \"a | b\", \"q\": \"say \\\"x=1 | y\\\"\", "
                       "\"n\": [1, [2, {\"k\": \"]} |\"}]]}";
    char spec[256];
    snprintf(spec, sizeof spec, "range | label bind=%s ordered | total join",
             json);
    zp_pipeline *p = parse_ok(spec);
    assert_int_equal(zp_pipeline_stages(p), 3);
    assert_string_equal(p->stages[1].opts.bind, json);
    assert_true(p->stages[1].opts.ordered);
    assert_true(p->stages[2].opts.join);

    const msgpack_object *b = zp__stage_bound(&p->stages[1]);
    assert_non_null(b);
    assert_int_equal(b->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(b->via.map.size, 3);
    const msgpack_object *sep = &b->via.map.ptr[0].val;
    assert_int_equal(sep->type, MSGPACK_OBJECT_STR);
    assert_int_equal(sep->via.str.size, 5);
    assert_memory_equal(sep->via.str.ptr, "a | b", 5);
    zp_pipeline_free(p);
}

static void test_bind_takes_a_json_string_array_or_bare_word(void **state)
{
    (void)state;
    zp_pipeline *p =
        parse_ok("range | label bind=\"a | \\\"b\\\"\" | "
                 "label bind=[1, \"]\"] ordered|label bind=42|total");
    assert_int_equal(zp_pipeline_stages(p), 5);
    assert_string_equal(p->stages[1].opts.bind, "\"a | \\\"b\\\"\"");
    assert_string_equal(p->stages[2].opts.bind, "[1, \"]\"]");
    assert_true(p->stages[2].opts.ordered);
    assert_string_equal(p->stages[3].opts.bind, "42");
    assert_int_equal(zp__stage_bound(&p->stages[3])->type,
                     MSGPACK_OBJECT_POSITIVE_INTEGER);
    zp_pipeline_free(p);
}

static void test_bind_that_is_not_json_fails_at_the_task_name(void **state)
{
    (void)state;
    assert_parse_error_has("range | label bind={\"a\":}",
                           "task 'label': bind is not valid JSON", 2, 9, 5);
    assert_parse_error_has("range | label bind={\"a\":1]",
                           "task 'label': bind is not valid JSON", 2, 9, 5);
}

static void
test_unterminated_bind_points_from_its_opening_to_the_end(void **state)
{
    (void)state;
    assert_parse_error("range | label bind={\"a\": \"}\" | total",
                       "unterminated bind value '{\"a\": \"}\" | total'", 2, 20,
                       17);
    assert_parse_error("label bind=\"abc\\\"",
                       "unterminated bind value '\"abc\\\"'", 1, 12, 6);
    assert_parse_error("label bind=[[1]", "unterminated bind value '[[1]'", 1,
                       12, 4);
}

static void test_text_glued_to_a_bind_value_is_an_error(void **state)
{
    (void)state;
    assert_parse_error("label bind={\"a\":1}xy ordered",
                       "unexpected 'xy' after the bind value", 1, 19, 2);
    assert_parse_error("label bind=\"a\"=b",
                       "unexpected '=b' after the bind value", 1, 15, 2);
}

/* ---- timeout -------------------------------------------------------------
 * check_opts() in core/pipeline.c rejects any timeout in mode=inproc (and
 * every other mode is not available yet), so a nonzero timeout cannot be
 * read back from a built stage. Its conversion to milliseconds shows in the
 * range error that quotes the converted value.
 */

static void test_timeout_units_are_converted_to_milliseconds(void **state)
{
    (void)state;
    assert_parse_error_has("range | square timeout=2000000s",
                           "timeout_ms must be between 0 and 1073741824, "
                           "got 2000000000",
                           2, 9, 6);
    assert_parse_error_has("range | square timeout=1500000000ms",
                           "got 1500000000", 2, 9, 6);
    assert_parse_error_has("range | square timeout=1500000000",
                           "got 1500000000", 2, 9, 6);
}

static void test_a_valid_timeout_reaches_the_inproc_mode_check(void **state)
{
    (void)state;
    assert_parse_error_has("range | square timeout=2s",
                           "timeout_ms applies to process and remote workers "
                           "only",
                           2, 9, 6);
    assert_parse_error_has("range | square timeout=500ms",
                           "timeout_ms applies to", 2, 9, 6);
}

static void test_bad_timeouts_point_at_the_value(void **state)
{
    (void)state;
    static const char *bad[] = {"2m", "s",        "ms",           "1.5s", "-1",
                                "2S", "3000000s", "2147483648ms", "2sms"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char spec[64], head[160];
        snprintf(spec, sizeof spec, "range | square timeout=%s", bad[i]);
        size_t len = strcspn(bad[i], " ");
        snprintf(head, sizeof head,
                 "bad value '%.*s' for timeout: expected a duration such as "
                 "500ms, 2s or 500 (milliseconds)",
                 (int)len, bad[i]);
        assert_parse_error(spec, head, 2, 24, (int)len);
    }
}

/* ---- Errors -------------------------------------------------------------- */

static void test_unknown_option_gives_the_documented_message(void **state)
{
    (void)state;
    char *err = NULL;
    assert_null(zp_parse("range branch | square wrkers=4", &err));
    /* 'wrkers' starts at column 23 (column 16 is 'square'). */
    assert_string_equal(err, "unknown option 'wrkers' in stage 2 (column 23)\n"
                             "  range branch | square wrkers=4\n"
                             "                        ^~~~~~");
    free(err);
}

static void test_unknown_option_points_at_its_name(void **state)
{
    (void)state;
    assert_parse_error("range | square Workers=4", "unknown option 'Workers'",
                       2, 16, 7);
    assert_parse_error("range | square ordered fast", "unknown option 'fast'",
                       2, 24, 4);
    assert_parse_error("range | square =4", "unknown option '=4'", 2, 16, 2);
}

static void test_unknown_task_points_at_its_name(void **state)
{
    (void)state;
    assert_parse_error("range branch | sqare workers=4", "unknown task 'sqare'",
                       2, 16, 5);
    assert_parse_error("nothing", "unknown task 'nothing'", 1, 1, 7);
    assert_parse_error("range | square | total join | workers=4",
                       "unknown task 'workers=4'", 4, 31, 9);
}

static void test_a_remote_stage_may_name_a_task_not_here(void **state)
{
    (void)state;
    zp_pipeline *p = parse_ok("range branch | score pool=gpu.1 mode=remote "
                              "workers=2 | total join");
    assert_int_equal(zp_pipeline_stages(p), 3);
    assert_string_equal(p->stages[1].name, "score");
    assert_null(p->stages[1].fn);
    assert_null(p->stages[1].afn);
    assert_int_equal(p->stages[1].opts.mode, ZP_REMOTE);
    assert_int_equal(p->stages[1].opts.workers, 2);
    assert_string_equal(p->stages[1].opts.pool, "gpu.1");
    zp_pipeline_free(p);
    /* A task that is here stays this one, remote or not. */
    p = parse_ok("range | square mode=remote pool=io | total mode=remote");
    assert_ptr_equal(p->stages[1].fn, square);
    assert_string_equal(p->stages[1].opts.pool, "io");
    assert_null(p->stages[2].opts.pool);
    zp_pipeline_free(p);
}

static void test_a_task_not_here_is_unknown_unless_remote(void **state)
{
    (void)state;
    assert_parse_error("range | score mode=process", "unknown task 'score'", 2,
                       9, 5);
    assert_parse_error("range | score mode=inproc workers=2",
                       "unknown task 'score'", 2, 9, 5);
    assert_parse_error("range | score pool=io", "unknown task 'score'", 2, 9,
                       5);
}

static void test_pool_needs_remote_mode_and_a_good_name(void **state)
{
    (void)state;
    assert_parse_error_has("range | square pool=io",
                           "task 'square': pool 'io' needs mode=remote", 2, 9,
                           6);
    assert_parse_error_has("range | square mode=process pool=io",
                           "pool 'io' needs mode=remote", 2, 9, 6);
    assert_parse_error_has("range | score mode=remote pool=a/b",
                           "task 'score': bad pool name 'a/b'", 2, 9, 5);
    assert_parse_error_has(
        "range | score mode=remote "
        "pool="
        "12345678901234567890123456789012345678901234567890123456789012345",
        "bad pool name", 2, 9, 5);
    assert_parse_error("range | score mode=remote pool=",
                       "missing value for option 'pool'", 2, 27, 4);
    assert_parse_error("range | score mode=remote pool=a pool=b",
                       "repeated option 'pool'", 2, 34, 4);
}

static void test_empty_spec_points_at_column_one(void **state)
{
    (void)state;
    assert_parse_error("", "empty spec: expected a task name", 1, 1, 1);
    assert_parse_error("   ", "empty spec: expected a task name", 1, 1, 1);
    assert_parse_error(NULL, "empty spec: expected a task name", 1, 1, 1);
}

static void test_empty_stage_points_at_the_pipe(void **state)
{
    (void)state;
    assert_parse_error("range | | total",
                       "empty stage: expected a task name before '|'", 2, 9, 1);
    assert_parse_error("range ||total",
                       "empty stage: expected a task name before '|'", 2, 8, 1);
    assert_parse_error("  | range",
                       "empty stage: expected a task name before '|'", 1, 3, 1);
    assert_parse_error("range |", "empty stage: expected a task name after '|'",
                       2, 7, 1);
    assert_parse_error("range | square |  \n",
                       "empty stage: expected a task name after '|'", 3, 16, 1);
}

static void test_flag_given_a_value_is_an_error(void **state)
{
    (void)state;
    assert_parse_error("range branch=1", "flag 'branch' takes no value", 1, 7,
                       6);
    assert_parse_error("range | total join=", "flag 'join' takes no value", 2,
                       15, 4);
    assert_parse_error("range | total ordered=true",
                       "flag 'ordered' takes no value", 2, 15, 7);
}

static void test_option_missing_its_value_is_an_error(void **state)
{
    (void)state;
    assert_parse_error("range | square workers=",
                       "missing value for option 'workers'", 2, 16, 7);
    assert_parse_error("range | square workers=|total",
                       "missing value for option 'workers'", 2, 16, 7);
    assert_parse_error("range | square workers | total",
                       "missing value for option 'workers'", 2, 16, 7);
    assert_parse_error("range | label bind= ordered",
                       "missing value for option 'bind'", 2, 15, 4);
    assert_parse_error("range | square mode", "missing value for option 'mode'",
                       2, 16, 4);
}

static void test_numbers_must_be_plain_decimal_ints(void **state)
{
    (void)state;
    static const char *bad[] = {
        "4x",   "-",   "-1",         "+1",
        "0x10", "4.0", "2147483648", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char spec[64], head[160];
        snprintf(spec, sizeof spec, "range | square workers=%s ordered",
                 bad[i]);
        snprintf(head, sizeof head, "bad value '%s' for workers: " COUNT_WANTED,
                 bad[i]);
        assert_parse_error(spec, head, 2, 24, (int)strlen(bad[i]));
    }
    assert_parse_error("range | square throttle=1k",
                       "bad value '1k' for throttle: " NUMBER_WANTED, 2, 25, 2);
    assert_parse_error("range | square retries=x",
                       "bad value 'x' for retries: " NUMBER_WANTED, 2, 24, 1);
}

static void test_workers_0_is_a_mistake_pointing_at_the_value(void **state)
{
    (void)state;
    /* In the C API 0 means "not set" (one worker); written in a spec it
     * asks for something else, so it is refused rather than read as 1. */
    assert_parse_error("range | square workers=0 ordered",
                       "bad value '0' for workers: expected a whole number, "
                       "at least 1 (digits only, at most 2147483647)",
                       2, 24, 1);
    assert_parse_error("range | square workers=00",
                       "bad value '00' for workers: expected a whole number, "
                       "at least 1 (digits only, at most 2147483647)",
                       2, 24, 2);
    zp_pipeline_free(parse_ok("range | square workers=1 | total"));
}

static void
test_an_int_out_of_the_option_range_fails_at_the_task_name(void **state)
{
    (void)state;
    assert_parse_error_has("range | square workers=2147483647",
                           "task 'square': workers must be between 0 and "
                           "1048576, got 2147483647",
                           2, 9, 6);
}

static void test_mode_and_on_error_take_only_their_words(void **state)
{
    (void)state;
    assert_parse_error("range | square mode=threads",
                       "bad value 'threads' for mode: expected inproc, "
                       "process or remote",
                       2, 21, 7);
    assert_parse_error("range | square mode=INPROC",
                       "bad value 'INPROC' for mode: expected inproc, "
                       "process or remote",
                       2, 21, 6);
    assert_parse_error("range | square on_error=ignore",
                       "bad value 'ignore' for on_error: expected fail or skip",
                       2, 25, 6);
}

static void test_repeated_option_points_at_its_second_use(void **state)
{
    (void)state;
    assert_parse_error("range | square workers=2 ordered workers=3",
                       "repeated option 'workers'", 2, 34, 7);
    assert_parse_error("range branch branch", "repeated option 'branch'", 1, 14,
                       6);
    assert_parse_error("range | label bind=1 bind=2", "repeated option 'bind'",
                       2, 22, 4);
}

static void test_process_and_remote_modes_and_timeouts_parse(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_parse("range | square workers=4 mode=process timeout=2s", NULL);
    assert_non_null(p);
    assert_int_equal(p->stages[1].opts.mode, ZP_PROCESS);
    assert_int_equal(p->stages[1].opts.workers, 4);
    assert_int_equal(p->stages[1].opts.timeout_ms, 2000);
    zp_pipeline_free(p);
    p = zp_parse("range | square mode=remote timeout=500ms", NULL);
    assert_non_null(p);
    assert_int_equal(p->stages[1].opts.mode, ZP_REMOTE);
    assert_int_equal(p->stages[1].opts.timeout_ms, 500);
    zp_pipeline_free(p);
    assert_parse_error_has("range | square | total mode=remote join",
                           "a join task runs in the coordinator", 3, 18, 5);
}

static void test_tabs_and_newlines_are_shown_as_spaces(void **state)
{
    (void)state;
    char *err = NULL;
    assert_null(zp_parse("range\t|\nsqare", &err));
    assert_string_equal(err, "unknown task 'sqare' in stage 2 (column 9)\n"
                             "  range | sqare\n"
                             "          ^~~~~");
    free(err);
}

static void test_columns_count_characters_not_bytes(void **state)
{
    (void)state;
    assert_parse_error("label bind=\"h\xc3\xa9llo\" | sqare",
                       "unknown task 'sqare'", 2, 22, 5);
    assert_parse_error("label bind=\"\xc3\xa9\xc3\xa9\" wrkers",
                       "unknown option 'wrkers'", 1, 17, 6);
}

/* ---- The first-task rule and err == NULL --------------------------------- */

static void
test_first_stage_rule_is_reported_by_pipeline_error_not_parse(void **state)
{
    (void)state;
    char marker = 0;
    char *err = &marker;
    zp_pipeline *p = zp_parse("total join | square", &err);
    assert_non_null(p);
    assert_ptr_equal(err, &marker);
    assert_non_null(
        strstr(zp_pipeline_error(p), "first task cannot have join"));
    zp_pipeline_free(p);

    p = zp_parse("range workers=4 | square", &err);
    assert_non_null(p);
    assert_ptr_equal(err, &marker);
    assert_non_null(
        strstr(zp_pipeline_error(p), "first task cannot have workers > 1"));
    zp_pipeline_free(p);

    p = parse_ok("range | total join | square workers=8");
    assert_int_equal(p->stages[2].opts.workers, 8);
    zp_pipeline_free(p);
}

static void test_err_may_be_null(void **state)
{
    (void)state;
    assert_null(zp_parse("range | sqare", NULL));
    assert_null(zp_parse("", NULL));
    assert_null(zp_parse("range | square mode=elsewhere", NULL));
    assert_null(zp_parse("range | square | total bind={", NULL));
    zp_pipeline *p = zp_parse("range | square", NULL);
    assert_non_null(p);
    assert_int_equal(zp_pipeline_stages(p), 2);
    zp_pipeline_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_three_stage_spec_builds_three_stages_with_their_options),
        cmocka_unit_test(test_zero_values_and_inproc_mode_are_the_defaults),
        cmocka_unit_test(
            test_any_whitespace_separates_words_and_pipes_need_none),
        cmocka_unit_test(test_bind_keeps_spaces_and_pipes_inside_json_strings),
        cmocka_unit_test(test_bind_takes_a_json_string_array_or_bare_word),
        cmocka_unit_test(test_bind_that_is_not_json_fails_at_the_task_name),
        cmocka_unit_test(
            test_unterminated_bind_points_from_its_opening_to_the_end),
        cmocka_unit_test(test_text_glued_to_a_bind_value_is_an_error),
        cmocka_unit_test(test_timeout_units_are_converted_to_milliseconds),
        cmocka_unit_test(test_a_valid_timeout_reaches_the_inproc_mode_check),
        cmocka_unit_test(test_bad_timeouts_point_at_the_value),
        cmocka_unit_test(test_unknown_option_gives_the_documented_message),
        cmocka_unit_test(test_unknown_option_points_at_its_name),
        cmocka_unit_test(test_unknown_task_points_at_its_name),
        cmocka_unit_test(test_a_remote_stage_may_name_a_task_not_here),
        cmocka_unit_test(test_a_task_not_here_is_unknown_unless_remote),
        cmocka_unit_test(test_pool_needs_remote_mode_and_a_good_name),
        cmocka_unit_test(test_empty_spec_points_at_column_one),
        cmocka_unit_test(test_empty_stage_points_at_the_pipe),
        cmocka_unit_test(test_flag_given_a_value_is_an_error),
        cmocka_unit_test(test_option_missing_its_value_is_an_error),
        cmocka_unit_test(test_numbers_must_be_plain_decimal_ints),
        cmocka_unit_test(test_workers_0_is_a_mistake_pointing_at_the_value),
        cmocka_unit_test(
            test_an_int_out_of_the_option_range_fails_at_the_task_name),
        cmocka_unit_test(test_mode_and_on_error_take_only_their_words),
        cmocka_unit_test(test_repeated_option_points_at_its_second_use),
        cmocka_unit_test(test_process_and_remote_modes_and_timeouts_parse),
        cmocka_unit_test(test_tabs_and_newlines_are_shown_as_spaces),
        cmocka_unit_test(test_columns_count_characters_not_bytes),
        cmocka_unit_test(
            test_first_stage_rule_is_reported_by_pipeline_error_not_parse),
        cmocka_unit_test(test_err_may_be_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
