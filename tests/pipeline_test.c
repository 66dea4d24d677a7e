/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of pipelines (core/pipeline.c) and the task registry
 * (core/registry.c): defaults resolved when a task is built, every bad
 * option reported by name, composition with zp_pipe (order, ownership,
 * errors of any piece), the first-stage rule that belongs to a whole
 * pipeline and not to a piece, bind values parsed once at build time, and
 * registration rules. Tasks here are never run: building only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/pipeline.h"
#include "zpipe.h"

static int task_a(zp_call *call)
{
    (void)call;
    return 0;
}

static int task_b(zp_call *call)
{
    (void)call;
    return 0;
}

static int task_c(zp_call *call)
{
    (void)call;
    return 0;
}

/* ---- Helpers ------------------------------------------------------------- */

/* Fails unless `p` has an error that contains every one of the strings. */
static void assert_error_mentions(const zp_pipeline *p, const char *a,
                                  const char *b)
{
    const char *err = zp_pipeline_error(p);
    if (err == NULL)
        fail_msg("expected an error mentioning '%s', got none", a);
    if (strstr(err, a) == NULL || (b != NULL && strstr(err, b) == NULL))
        fail_msg("error '%s' does not mention '%s' and '%s'", err, a,
                 b ? b : "");
}

/* A one-stage pipeline of task_a built with `o` (size filled in). */
static zp_pipeline *with_opts(zp_opts o)
{
    o.size = sizeof(zp_opts);
    return zp_task_new("task_a", task_a, &o);
}

/* ---- Building one task --------------------------------------------------- */

static void test_zero_workers_and_throttle_resolve_to_the_defaults(void **state)
{
    (void)state;
    zp_pipeline *p = zp_task(task_a);
    assert_null(zp_pipeline_error(p));
    assert_int_equal(zp_pipeline_stages(p), 1);
    assert_string_equal(p->stages[0].name, "task_a");
    assert_ptr_equal(p->stages[0].fn, task_a);
    assert_int_equal(p->stages[0].opts.workers, 1);
    assert_int_equal(p->stages[0].opts.throttle, ZP_DEFAULT_THROTTLE);
    assert_int_equal(p->stages[0].opts.mode, ZP_INPROC);
    assert_null(p->stages[0].opts.bind);
    assert_null(zp__stage_bound(&p->stages[0]));
    zp_pipeline_free(p);
}

static void test_explicit_option_values_are_kept(void **state)
{
    (void)state;
    int token = 0;
    zp_pipeline *p = zp_pipe(
        zp_task(task_a), zp_task(task_b, .workers = 3, .throttle = 7,
                                 .retries = 2, .ordered = true, .branch = true,
                                 .on_error = ZP_SKIP, .user = &token));
    assert_null(zp_pipeline_error(p));
    const zp_opts *o = &p->stages[1].opts;
    assert_int_equal(o->workers, 3);
    assert_int_equal(o->throttle, 7);
    assert_int_equal(o->retries, 2);
    assert_true(o->ordered);
    assert_true(o->branch);
    assert_int_equal(o->on_error, ZP_SKIP);
    assert_ptr_equal(o->user, &token);
    assert_int_equal(o->size, sizeof(zp_opts));
    zp_pipeline_free(p);
}

static void test_null_opts_mean_all_defaults(void **state)
{
    (void)state;
    zp_pipeline *p = zp_task_new("task_a", task_a, NULL);
    assert_null(zp_pipeline_error(p));
    assert_int_equal(p->stages[0].opts.workers, 1);
    assert_int_equal(p->stages[0].opts.throttle, ZP_DEFAULT_THROTTLE);
    zp_pipeline_free(p);
}

static void test_each_out_of_range_option_gives_an_error_naming_it(void **state)
{
    (void)state;
    static const struct {
        zp_opts opts;
        const char *names;
    } cases[] = {
        {{.workers = -1}, "workers"},            /* below */
        {{.workers = (1 << 20) + 1}, "workers"}, /* above */
        {{.throttle = -1}, "throttle"},          /* below */
        {{.throttle = INT32_MAX}, "throttle"},   /* above */
        {{.retries = -3}, "retries"},            /* below */
        {{.timeout_ms = -1}, "timeout_ms"},      /* below */
        {{.on_error = 2}, "on_error"},           /* above */
        {{.on_error = -1}, "on_error"},          /* below */
        {{.mode = 3}, "mode"},                   /* above */
        {{.mode = -1}, "mode"},                  /* below */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        zp_pipeline *p = with_opts(cases[i].opts);
        assert_error_mentions(p, cases[i].names, "task 'task_a'");
        assert_error_mentions(p, "must be between", NULL);
        zp_pipeline_free(p);
    }
}

static void test_join_rejects_ordered_retries_and_skip_by_name(void **state)
{
    (void)state;
    zp_pipeline *p = with_opts((zp_opts){.join = true, .ordered = true});
    assert_error_mentions(p, "join cannot be combined with ordered", "task_a");
    zp_pipeline_free(p);
    p = with_opts((zp_opts){.join = true, .retries = 1});
    assert_error_mentions(p, "join cannot be combined with retries", "task_a");
    zp_pipeline_free(p);
    p = with_opts((zp_opts){.join = true, .on_error = ZP_SKIP});
    assert_error_mentions(p, "join cannot be combined with on_error=skip",
                          "task_a");
    zp_pipeline_free(p);
}

static void test_timeout_is_refused_for_thread_workers(void **state)
{
    (void)state;
    zp_pipeline *p = with_opts((zp_opts){.timeout_ms = 100});
    assert_error_mentions(p, "timeout_ms", "task 'task_a'");
    zp_pipeline_free(p);
}

static void
test_other_process_modes_need_a_task_registered_by_name(void **state)
{
    (void)state;
    zp_pipeline *p = zp_task(task_a, .mode = ZP_PROCESS);
    assert_error_mentions(p, "mode=process", "registered");
    zp_pipeline_free(p);
    p = zp_task(task_a, .mode = ZP_REMOTE);
    assert_error_mentions(p, "mode=remote", "task 'task_a'");
    zp_pipeline_free(p);
    assert_int_equal(zp_register("task_a", task_a), 0);
    p = zp_task(task_a, .mode = ZP_PROCESS, .timeout_ms = 500);
    assert_null(zp_pipeline_error(p));
    zp_pipeline_free(p);
}

static void
test_other_process_modes_refuse_user_pointers_and_joins(void **state)
{
    (void)state;
    int x;
    assert_int_equal(zp_register("task_b", task_b), 0);
    zp_pipeline *p = zp_task(task_b, .mode = ZP_PROCESS, .user = &x);
    assert_error_mentions(p, "user pointer", "mode=process");
    zp_pipeline_free(p);
    p = zp_task(task_b, .mode = ZP_REMOTE, .join = true);
    assert_error_mentions(p, "join", "mode=remote");
    zp_pipeline_free(p);
    p = zp_task_pipeline(zp_task(task_b), .mode = ZP_PROCESS);
    assert_error_mentions(p, "nested pipeline", "mode=process");
    zp_pipeline_free(p);
}

static void test_null_task_function_is_an_error(void **state)
{
    (void)state;
    zp_pipeline *p = zp_task_new("ghost", NULL, NULL);
    assert_error_mentions(p, "task 'ghost'", "NULL");
    zp_pipeline_free(p);
}

static void test_opts_of_another_size_are_detected(void **state)
{
    (void)state;
    zp_opts o = {.size = sizeof(zp_opts) - sizeof(void *)};
    zp_pipeline *p = zp_task_new("task_a", task_a, &o);
    assert_error_mentions(p, "another version", "task 'task_a'");
    zp_pipeline_free(p);
    o.size = 0;
    p = zp_task_new("task_a", task_a, &o);
    assert_error_mentions(p, "another version", NULL);
    zp_pipeline_free(p);
}

/* ---- Remote-only tasks and pools ------------------------------------------
 */

static void test_a_remote_task_needs_no_function_and_is_remote(void **state)
{
    (void)state;
    zp_pipeline *p = zp_remote_task("score", .mode = ZP_PROCESS, .retries = 3);
    assert_null(zp_pipeline_error(p));
    assert_int_equal(zp_pipeline_stages(p), 1);
    assert_string_equal(p->stages[0].name, "score");
    assert_null(p->stages[0].fn);
    assert_null(p->stages[0].afn);
    assert_int_equal(p->stages[0].opts.mode, ZP_REMOTE);
    assert_int_equal(p->stages[0].opts.retries, 3);
    assert_null(p->stages[0].opts.pool);
    zp_pipeline_free(p);
    p = zp_remote_task("score");
    assert_null(zp_pipeline_error(p));
    assert_int_equal(p->stages[0].opts.mode, ZP_REMOTE);
    zp_pipeline_free(p);
    /* A composition takes it like any stage. */
    p = zp_pipe(zp_task_new("task_a", task_a, NULL), zp_remote_task("score"),
                zp_task_new("task_b", task_b, NULL));
    assert_null(zp_pipeline_error(p));
    assert_int_equal(zp_pipeline_stages(p), 3);
    zp_pipeline_free(p);
}

static void test_a_remote_task_keeps_the_rules_of_remote_stages(void **state)
{
    (void)state;
    int x;
    zp_pipeline *p = zp_remote_task("");
    assert_error_mentions(p, "zp_remote_task: the task name is empty", NULL);
    zp_pipeline_free(p);
    p = zp_remote_task(NULL);
    assert_error_mentions(p, "zp_remote_task: the task name is NULL", NULL);
    zp_pipeline_free(p);
    p = zp_remote_task("score", .user = &x);
    assert_error_mentions(p, "task 'score'", "user pointer");
    zp_pipeline_free(p);
    p = zp_remote_task("score", .retries = -1);
    assert_error_mentions(p, "task 'score'", "retries must be between");
    zp_pipeline_free(p);
    p = zp_remote_task("score", .bind = "{");
    assert_error_mentions(p, "task 'score'", "bind is not valid JSON");
    zp_pipeline_free(p);
}

static void test_a_pool_is_copied_into_the_stage(void **state)
{
    (void)state;
    char name[] = "gpu.a-1_B";
    zp_pipeline *p = zp_remote_task("score", .pool = name);
    assert_null(zp_pipeline_error(p));
    name[0] = 'x';
    assert_string_equal(p->stages[0].opts.pool, "gpu.a-1_B");
    assert_ptr_not_equal(p->stages[0].opts.pool, name);
    zp_pipeline_free(p);
    p = zp_task_new(
        "task_a", task_a,
        &(zp_opts){.size = sizeof(zp_opts), .mode = ZP_REMOTE, .pool = "io"});
    assert_null(zp_pipeline_error(p));
    assert_string_equal(p->stages[0].opts.pool, "io");
    zp_pipeline_free(p);
}

static void test_a_pool_needs_a_remote_stage_and_a_good_name(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "a b",
        "a/b",
        "caf\xc3\xa9",
        "x\n",
        "12345678901234567890123456789012345678901234567890123456789012345"};
    zp_pipeline *p = with_opts((zp_opts){.pool = "io"});
    assert_error_mentions(p, "task 'task_a': pool 'io' needs mode=remote",
                          "zpipe worker --pool io");
    zp_pipeline_free(p);
    p = with_opts((zp_opts){.pool = "io", .mode = ZP_PROCESS});
    assert_error_mentions(p, "pool 'io' needs mode=remote", NULL);
    zp_pipeline_free(p);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = zp_remote_task("score", .pool = bad[i]);
        assert_error_mentions(p, "task 'score': bad pool name",
                              "1 to 64 characters of A-Z a-z 0-9 _ . -");
        zp_pipeline_free(p);
    }
    assert_true(zp__pool_name_ok("a", 1));
    assert_true(zp__pool_name_ok(bad[5], 64));
    assert_false(zp__pool_name_ok(bad[5], 65));
    assert_false(zp__pool_name_ok("io", 0));
}

/* ---- Bind values --------------------------------------------------------- */

static void test_bind_is_parsed_once_into_the_stage(void **state)
{
    (void)state;
    char json[] = "{\"k\": [1, \"two\"]}";
    zp_pipeline *p = zp_task(task_a, .bind = json);
    assert_null(zp_pipeline_error(p));
    /* The pipeline keeps its own copy: the caller's text may go away. */
    memset(json, 'x', sizeof json - 1);
    const zp__stage_def *s = &p->stages[0];
    assert_ptr_equal(zp__stage_bound(s), &s->bound);
    assert_ptr_equal(s->opts.bind, s->bind_json);
    assert_string_equal(s->opts.bind, "{\"k\": [1, \"two\"]}");
    assert_int_equal(s->bound.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(s->bound.via.map.size, 1);
    const msgpack_object_kv *kv = &s->bound.via.map.ptr[0];
    assert_int_equal(kv->key.type, MSGPACK_OBJECT_STR);
    assert_memory_equal(kv->key.via.str.ptr, "k", 1);
    assert_int_equal(kv->val.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(kv->val.via.array.size, 2);
    assert_int_equal(kv->val.via.array.ptr[0].via.u64, 1);
    assert_int_equal(kv->val.via.array.ptr[1].via.str.size, 3);
    assert_memory_equal(kv->val.via.array.ptr[1].via.str.ptr, "two", 3);
    zp_pipeline_free(p);
}

static void test_scalar_bind_is_a_scalar_value(void **state)
{
    (void)state;
    zp_pipeline *p = zp_task(task_a, .bind = "-5");
    assert_null(zp_pipeline_error(p));
    const msgpack_object *b = zp__stage_bound(&p->stages[0]);
    assert_non_null(b);
    assert_int_equal(b->type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_int_equal(b->via.i64, -5);
    zp_pipeline_free(p);
}

static void test_invalid_bind_json_is_an_error_with_its_position(void **state)
{
    (void)state;
    zp_pipeline *p = zp_task(task_a, .bind = "{\"k\": }");
    assert_error_mentions(p, "task 'task_a': bind is not valid JSON", "line 1");
    assert_error_mentions(p, "column", NULL);
    zp_pipeline_free(p);
}

/* ---- Composition --------------------------------------------------------- */

static void test_pipe_composes_stages_in_order(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(task_a), zp_pipe(zp_task(task_b), zp_task(task_c)),
                zp_task(task_a, .bind = "[3]"));
    assert_null(zp_pipeline_error(p));
    assert_int_equal(zp_pipeline_stages(p), 4);
    const char *names[] = {"task_a", "task_b", "task_c", "task_a"};
    const zp_task_fn fns[] = {task_a, task_b, task_c, task_a};
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(p->stages[i].name, names[i]);
        assert_ptr_equal(p->stages[i].fn, fns[i]);
    }
    /* The moved bind value still points into the moved stage's zone. */
    const msgpack_object *b = zp__stage_bound(&p->stages[3]);
    assert_non_null(b);
    assert_int_equal(b->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(b->via.array.ptr[0].via.u64, 3);
    assert_null(zp__stage_bound(&p->stages[1]));
    /* Only the composed pipeline is freed: the pieces belong to it now
     * (the sanitizer build reports a leak or a double free otherwise). */
    zp_pipeline_free(p);
}

static void test_pipe_of_one_pipeline_is_that_pipeline(void **state)
{
    (void)state;
    zp_pipeline *a = zp_task(task_a);
    zp_pipeline *p = zp_pipe(a);
    assert_ptr_equal(p, a);
    assert_int_equal(zp_pipeline_stages(p), 1);
    zp_pipeline_free(p);
}

static void
test_an_error_in_any_piece_reaches_the_composed_pipeline(void **state)
{
    (void)state;
    for (int bad = 0; bad < 3; bad++) {
        zp_pipeline *pieces[3];
        for (int i = 0; i < 3; i++)
            pieces[i] =
                i == bad ? zp_task(task_b, .retries = -1) : zp_task(task_a);
        zp_pipeline *p = zp_pipe(pieces[0], pieces[1], pieces[2]);
        assert_error_mentions(p, "task 'task_b'", "retries");
        assert_int_equal(zp_pipeline_stages(p), 3);
        zp_pipeline_free(p);
    }
}

static void test_an_error_in_a_nested_composition_reaches_the_top(void **state)
{
    (void)state;
    zp_pipeline *p =
        zp_pipe(zp_task(task_a),
                zp_pipe(zp_task(task_b), zp_task(task_c, .retries = -1)));
    assert_error_mentions(p, "task 'task_c'", "retries");
    zp_pipeline_free(p);
}

static void test_the_first_error_of_a_composition_wins(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(task_a, .workers = -1),
                             zp_task(task_b, .throttle = -1));
    assert_error_mentions(p, "task 'task_a'", "workers");
    assert_null(strstr(zp_pipeline_error(p), "throttle"));
    zp_pipeline_free(p);
}

static void test_pipe_with_a_null_first_pipeline_is_an_error(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe_list(NULL, zp_task(task_a), (zp_pipeline *)NULL);
    assert_non_null(p);
    assert_non_null(zp_pipeline_error(p));
    zp_pipeline_free(p);
}

/* ---- The first-stage rule ------------------------------------------------ */

static void test_join_first_task_is_reported_by_pipeline_error(void **state)
{
    (void)state;
    zp_pipeline *p = zp_task(task_a, .join = true);
    assert_null(p->error);
    assert_error_mentions(p, "task 'task_a'", "first task cannot have join");
    zp_pipeline_free(p);
}

static void test_several_workers_on_the_first_task_are_reported(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(zp_task(task_a, .workers = 4), zp_task(task_b));
    assert_error_mentions(p, "task 'task_a'", "workers > 1 (got 4)");
    zp_pipeline_free(p);
}

static void test_a_piece_breaking_the_first_rule_is_fine_later(void **state)
{
    (void)state;
    zp_pipeline *joiner = zp_task(task_b, .join = true);
    zp_pipeline *many = zp_task(task_c, .workers = 4);
    assert_non_null(zp_pipeline_error(joiner));
    assert_non_null(zp_pipeline_error(many));
    zp_pipeline *p = zp_pipe(zp_task(task_a), many, joiner);
    assert_null(zp_pipeline_error(p));
    assert_int_equal(zp_pipeline_stages(p), 3);
    assert_true(p->stages[2].opts.join);
    assert_int_equal(p->stages[1].opts.workers, 4);
    zp_pipeline_free(p);
}

static void
test_a_composition_starting_with_a_bad_first_piece_is_reported(void **state)
{
    (void)state;
    zp_pipeline *inner =
        zp_pipe(zp_task(task_a), zp_task(task_b, .join = true));
    assert_null(zp_pipeline_error(inner));
    /* Composed behind a join-first piece, the whole breaks the rule. */
    zp_pipeline *p = zp_pipe(zp_task(task_c, .join = true), inner);
    assert_error_mentions(p, "task 'task_c'", "first task cannot have join");
    zp_pipeline_free(p);
}

/* ---- Freeing and NULL ---------------------------------------------------- */

static void test_null_pipeline_is_harmless(void **state)
{
    (void)state;
    zp_pipeline_free(NULL);
    assert_int_equal(zp_pipeline_stages(NULL), 0);
    assert_non_null(zp_pipeline_error(NULL));
}

/* ---- Registry ------------------------------------------------------------ */

static void test_register_then_lookup_finds_the_function(void **state)
{
    (void)state;
    assert_null(zp_lookup("pipeline_test_a"));
    assert_int_equal(zp_register("pipeline_test_a", task_a), 0);
    assert_ptr_equal(zp_lookup("pipeline_test_a"), task_a);
    assert_null(zp_lookup("pipeline_test_"));
    assert_null(zp_lookup("pipeline_test_ab"));
}

static void test_registering_the_same_function_twice_is_fine(void **state)
{
    (void)state;
    assert_int_equal(zp_register("pipeline_test_twice", task_b), 0);
    assert_int_equal(zp_register("pipeline_test_twice", task_b), 0);
    assert_ptr_equal(zp_lookup("pipeline_test_twice"), task_b);
}

static void test_another_function_under_a_taken_name_is_refused(void **state)
{
    (void)state;
    assert_int_equal(zp_register("pipeline_test_taken", task_a), 0);
    assert_int_equal(zp_register("pipeline_test_taken", task_c), ZP_EINVAL);
    assert_ptr_equal(zp_lookup("pipeline_test_taken"), task_a);
}

static void
test_null_or_empty_names_and_null_functions_are_refused(void **state)
{
    (void)state;
    assert_int_equal(zp_register(NULL, task_a), ZP_EINVAL);
    assert_int_equal(zp_register("", task_a), ZP_EINVAL);
    assert_int_equal(zp_register("pipeline_test_null", NULL), ZP_EINVAL);
    assert_null(zp_lookup("pipeline_test_null"));
    assert_null(zp_lookup(NULL));
    assert_null(zp_lookup(""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_zero_workers_and_throttle_resolve_to_the_defaults),
        cmocka_unit_test(test_explicit_option_values_are_kept),
        cmocka_unit_test(test_null_opts_mean_all_defaults),
        cmocka_unit_test(
            test_each_out_of_range_option_gives_an_error_naming_it),
        cmocka_unit_test(test_join_rejects_ordered_retries_and_skip_by_name),
        cmocka_unit_test(test_timeout_is_refused_for_thread_workers),
        cmocka_unit_test(
            test_other_process_modes_need_a_task_registered_by_name),
        cmocka_unit_test(
            test_other_process_modes_refuse_user_pointers_and_joins),
        cmocka_unit_test(test_null_task_function_is_an_error),
        cmocka_unit_test(test_opts_of_another_size_are_detected),
        cmocka_unit_test(test_a_remote_task_needs_no_function_and_is_remote),
        cmocka_unit_test(test_a_remote_task_keeps_the_rules_of_remote_stages),
        cmocka_unit_test(test_a_pool_is_copied_into_the_stage),
        cmocka_unit_test(test_a_pool_needs_a_remote_stage_and_a_good_name),
        cmocka_unit_test(test_bind_is_parsed_once_into_the_stage),
        cmocka_unit_test(test_scalar_bind_is_a_scalar_value),
        cmocka_unit_test(test_invalid_bind_json_is_an_error_with_its_position),
        cmocka_unit_test(test_pipe_composes_stages_in_order),
        cmocka_unit_test(test_pipe_of_one_pipeline_is_that_pipeline),
        cmocka_unit_test(
            test_an_error_in_any_piece_reaches_the_composed_pipeline),
        cmocka_unit_test(test_an_error_in_a_nested_composition_reaches_the_top),
        cmocka_unit_test(test_the_first_error_of_a_composition_wins),
        cmocka_unit_test(test_pipe_with_a_null_first_pipeline_is_an_error),
        cmocka_unit_test(test_join_first_task_is_reported_by_pipeline_error),
        cmocka_unit_test(test_several_workers_on_the_first_task_are_reported),
        cmocka_unit_test(test_a_piece_breaking_the_first_rule_is_fine_later),
        cmocka_unit_test(
            test_a_composition_starting_with_a_bad_first_piece_is_reported),
        cmocka_unit_test(test_null_pipeline_is_harmless),
        cmocka_unit_test(test_register_then_lookup_finds_the_function),
        cmocka_unit_test(test_registering_the_same_function_twice_is_fine),
        cmocka_unit_test(test_another_function_under_a_taken_name_is_refused),
        cmocka_unit_test(
            test_null_or_empty_names_and_null_functions_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
