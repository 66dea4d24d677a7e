/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of JSON to msgpack (core/value.c): every JSON type packed and
 * read back with msgpack_unpack, run arguments wrapped into an array, the
 * line and column of invalid JSON, and objects built in a zone that outlive
 * the buffer they were packed into.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/value.h"
#include "zpipe.h"

/* ---- Helpers ------------------------------------------------------------- */

/* Packed JSON and the object read back from it. */
typedef struct packed {
    msgpack_sbuffer sb;
    msgpack_zone zone;
    msgpack_object obj;
} packed;

static void packed_init(packed *p)
{
    msgpack_sbuffer_init(&p->sb);
    assert_true(msgpack_zone_init(&p->zone, MSGPACK_ZONE_CHUNK_SIZE));
    memset(&p->obj, 0, sizeof p->obj);
}

static void packed_fini(packed *p)
{
    msgpack_zone_destroy(&p->zone);
    msgpack_sbuffer_destroy(&p->sb);
}

/* Unpacks exactly one value, filling the whole buffer, into p->obj. */
static void unpack_one(packed *p)
{
    size_t off = 0;
    assert_int_equal(
        msgpack_unpack(p->sb.data, p->sb.size, &off, &p->zone, &p->obj),
        MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, p->sb.size);
}

/* Packs `json` with fn into p and reads it back; fails on any error. */
static void pack_with(packed *p, const char *json,
                      int (*fn)(const char *, msgpack_packer *, char **))
{
    msgpack_packer pk;
    char *err = NULL;
    packed_init(p);
    msgpack_packer_init(&pk, &p->sb, msgpack_sbuffer_write);
    int rc = fn(json, &pk, &err);
    if (rc != 0)
        fail_msg("packing '%s' failed with %d: %s", json ? json : "(null)", rc,
                 err ? err : "(no message)");
    assert_null(err);
    unpack_one(p);
}

static void pack(packed *p, const char *json)
{
    pack_with(p, json, zp__json_pack);
}

/* The value of key `k` in map `m`, or NULL. */
static const msgpack_object *get(const msgpack_object *m, const char *k)
{
    assert_int_equal(m->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *key = &m->via.map.ptr[i].key;
        assert_int_equal(key->type, MSGPACK_OBJECT_STR);
        if (key->via.str.size == strlen(k) &&
            memcmp(key->via.str.ptr, k, key->via.str.size) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static void assert_str(const msgpack_object *o, const char *s, size_t n)
{
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    assert_int_equal(o->via.str.size, n);
    assert_memory_equal(o->via.str.ptr, s, n);
}

static void assert_uint(const msgpack_object *o, uint64_t v)
{
    assert_int_equal(o->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(o->via.u64, v);
}

/* Parses "invalid JSON at line L, column C: ..." out of err. */
static void assert_position(const char *err, int line)
{
    int l = 0, c = 0;
    assert_non_null(err);
    const char *at = strstr(err, "line ");
    if (at == NULL || sscanf(at, "line %d, column %d", &l, &c) != 2)
        fail_msg("no line and column in '%s'", err);
    assert_int_equal(l, line);
    assert_true(c >= 0); /* 0 when the text ends before any token */
}

/* ---- Every JSON type ----------------------------------------------------- */

static void test_object_becomes_a_map_with_string_keys(void **state)
{
    (void)state;
    packed p;
    pack(&p, "{\"a\": 1, \"bb\": \"x\", \"\": null}");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(p.obj.via.map.size, 3);
    assert_uint(get(&p.obj, "a"), 1);
    assert_str(get(&p.obj, "bb"), "x", 1);
    assert_int_equal(get(&p.obj, "")->type, MSGPACK_OBJECT_NIL);
    packed_fini(&p);
}

static void test_empty_object_and_array_stay_empty(void **state)
{
    (void)state;
    packed p;
    pack(&p, "{}");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(p.obj.via.map.size, 0);
    packed_fini(&p);
    pack(&p, "[]");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(p.obj.via.array.size, 0);
    packed_fini(&p);
}

static void test_array_keeps_its_order(void **state)
{
    (void)state;
    packed p;
    pack(&p, "[3, 1, 2]");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(p.obj.via.array.size, 3);
    assert_uint(&p.obj.via.array.ptr[0], 3);
    assert_uint(&p.obj.via.array.ptr[1], 1);
    assert_uint(&p.obj.via.array.ptr[2], 2);
    packed_fini(&p);
}

static void test_string_keeps_an_embedded_nul(void **state)
{
    (void)state;
    packed p;
    pack(&p, "\"a\\u0000b\"");
    assert_str(&p.obj, "a\0b", 3);
    packed_fini(&p);
}

static void test_strings_are_utf8_and_may_be_empty(void **state)
{
    (void)state;
    packed p;
    pack(&p, "\"\\u00e9t\\u00e9\"");
    assert_str(&p.obj, "\xc3\xa9t\xc3\xa9", 5);
    packed_fini(&p);
    pack(&p, "\"\"");
    assert_str(&p.obj, "", 0);
    packed_fini(&p);
}

static void test_integers_stay_integers(void **state)
{
    (void)state;
    packed p;
    pack(&p, "42");
    assert_uint(&p.obj, 42);
    packed_fini(&p);
    pack(&p, "0");
    assert_uint(&p.obj, 0);
    packed_fini(&p);
    pack(&p, "9007199254740993"); /* not representable as a double */
    assert_uint(&p.obj, 9007199254740993ULL);
    packed_fini(&p);
    pack(&p, "9223372036854775807");
    assert_uint(&p.obj, INT64_MAX);
    packed_fini(&p);
}

static void test_negative_integers_stay_negative(void **state)
{
    (void)state;
    packed p;
    pack(&p, "-7");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_int_equal(p.obj.via.i64, -7);
    packed_fini(&p);
    pack(&p, "-9223372036854775808");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
    assert_true(p.obj.via.i64 == INT64_MIN);
    packed_fini(&p);
}

static void test_reals_become_doubles(void **state)
{
    (void)state;
    packed p;
    pack(&p, "1.5");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_FLOAT64);
    assert_true(p.obj.via.f64 == 1.5);
    packed_fini(&p);
    pack(&p, "-2.5e-3");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_FLOAT64);
    assert_true(p.obj.via.f64 == -2.5e-3);
    packed_fini(&p);
    /* A real with no fraction stays a real. */
    pack(&p, "3.0");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_FLOAT64);
    assert_true(p.obj.via.f64 == 3.0);
    packed_fini(&p);
}

static void test_true_false_and_null(void **state)
{
    (void)state;
    packed p;
    pack(&p, "true");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_BOOLEAN);
    assert_true(p.obj.via.boolean);
    packed_fini(&p);
    pack(&p, "false");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_BOOLEAN);
    assert_false(p.obj.via.boolean);
    packed_fini(&p);
    pack(&p, " null ");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_NIL);
    packed_fini(&p);
}

static void test_nested_values_keep_their_shape(void **state)
{
    (void)state;
    packed p;
    pack(&p, "{\"a\": [1, {\"b\": [true, null, -1.25]}, \"s\"], \"n\": {}}");
    const msgpack_object *a = get(&p.obj, "a");
    assert_non_null(a);
    assert_int_equal(a->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(a->via.array.size, 3);
    assert_uint(&a->via.array.ptr[0], 1);
    const msgpack_object *b = get(&a->via.array.ptr[1], "b");
    assert_non_null(b);
    assert_int_equal(b->via.array.size, 3);
    assert_int_equal(b->via.array.ptr[0].type, MSGPACK_OBJECT_BOOLEAN);
    assert_true(b->via.array.ptr[0].via.boolean);
    assert_int_equal(b->via.array.ptr[1].type, MSGPACK_OBJECT_NIL);
    assert_int_equal(b->via.array.ptr[2].type, MSGPACK_OBJECT_FLOAT64);
    assert_true(b->via.array.ptr[2].via.f64 == -1.25);
    assert_str(&a->via.array.ptr[2], "s", 1);
    const msgpack_object *n = get(&p.obj, "n");
    assert_non_null(n);
    assert_int_equal(n->via.map.size, 0);
    packed_fini(&p);
}

/* ---- Run arguments ------------------------------------------------------- */

static void test_null_or_blank_arguments_are_an_empty_array(void **state)
{
    (void)state;
    const char *blanks[] = {NULL, "", "   ", " \t\r\n "};
    for (size_t i = 0; i < sizeof blanks / sizeof blanks[0]; i++) {
        packed p;
        pack_with(&p, blanks[i], zp__json_pack_args);
        assert_int_equal(p.obj.type, MSGPACK_OBJECT_ARRAY);
        assert_int_equal(p.obj.via.array.size, 0);
        packed_fini(&p);
    }
}

static void test_an_array_of_arguments_is_packed_as_it_is(void **state)
{
    (void)state;
    packed p;
    pack_with(&p, "[20, \"x\"]", zp__json_pack_args);
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(p.obj.via.array.size, 2);
    assert_uint(&p.obj.via.array.ptr[0], 20);
    assert_str(&p.obj.via.array.ptr[1], "x", 1);
    packed_fini(&p);
    pack_with(&p, "[[1]]", zp__json_pack_args);
    assert_int_equal(p.obj.via.array.size, 1);
    assert_int_equal(p.obj.via.array.ptr[0].type, MSGPACK_OBJECT_ARRAY);
    packed_fini(&p);
}

static void test_a_single_argument_becomes_a_one_element_array(void **state)
{
    (void)state;
    packed p;
    pack_with(&p, "20", zp__json_pack_args);
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(p.obj.via.array.size, 1);
    assert_uint(&p.obj.via.array.ptr[0], 20);
    packed_fini(&p);
    pack_with(&p, "{\"k\": \"v\"}", zp__json_pack_args);
    assert_int_equal(p.obj.via.array.size, 1);
    assert_str(get(&p.obj.via.array.ptr[0], "k"), "v", 1);
    packed_fini(&p);
    pack_with(&p, "null", zp__json_pack_args);
    assert_int_equal(p.obj.via.array.size, 1);
    assert_int_equal(p.obj.via.array.ptr[0].type, MSGPACK_OBJECT_NIL);
    packed_fini(&p);
}

/* ---- Invalid JSON -------------------------------------------------------- */

/* Expects ZP_EINVAL, nothing packed, and a message at `line`. */
static void assert_invalid(const char *json, int line,
                           int (*fn)(const char *, msgpack_packer *, char **))
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char *err = NULL;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(fn(json, &pk, &err), ZP_EINVAL);
    assert_int_equal(sb.size, 0);
    assert_non_null(strstr(err, "invalid JSON"));
    assert_position(err, line);
    free(err);
    /* err may be NULL: the caller does not want the message. */
    assert_int_equal(fn(json, &pk, NULL), ZP_EINVAL);
    msgpack_sbuffer_destroy(&sb);
}

static void test_invalid_json_gives_einval_with_line_and_column(void **state)
{
    (void)state;
    assert_invalid("{\"a\": }", 1, zp__json_pack);
    assert_invalid("[1, 2", 1, zp__json_pack);
    assert_invalid("[1,\n 2,\n x]", 3, zp__json_pack);
    assert_invalid("\"unterminated", 1, zp__json_pack);
    assert_invalid("1 2", 1, zp__json_pack);
    assert_invalid("", 1, zp__json_pack);
    assert_invalid("{'a': 1}", 1, zp__json_pack);
}

static void
test_invalid_arguments_give_einval_with_line_and_column(void **state)
{
    (void)state;
    assert_invalid("[1,", 1, zp__json_pack_args);
    assert_invalid("\n\n  nope", 3, zp__json_pack_args);
}

static void test_the_column_points_at_the_offending_character(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    char *near = NULL, *far = NULL;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(zp__json_pack("[x]", &pk, &near), ZP_EINVAL);
    assert_int_equal(zp__json_pack("[1,      x]", &pk, &far), ZP_EINVAL);
    int l1 = 0, c1 = 0, l2 = 0, c2 = 0;
    assert_int_equal(
        sscanf(strstr(near, "line"), "line %d, column %d", &l1, &c1), 2);
    assert_int_equal(
        sscanf(strstr(far, "line"), "line %d, column %d", &l2, &c2), 2);
    assert_int_equal(c2 - c1, 8);
    free(near);
    free(far);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- Objects in a zone --------------------------------------------------- */

static void test_object_in_a_zone_outlives_the_packing_buffer(void **state)
{
    (void)state;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    char *err = NULL;
    assert_non_null(zone);
    assert_int_equal(zp__json_to_object("{\"key\": [\"a long string value\","
                                        " \"x\\u0000y\"]}",
                                        zone, &o, &err),
                     0);
    assert_null(err);
    /* Churn the heap so that memory freed by the call is reused; reading
     * it back is caught by the sanitizer build and shows here otherwise. */
    for (int i = 0; i < 64; i++) {
        char *junk = malloc(64 + (size_t)i);
        assert_non_null(junk);
        memset(junk, 'J', 64 + (size_t)i);
        free(junk);
    }
    const msgpack_object *v = get(&o, "key");
    assert_non_null(v);
    assert_int_equal(v->via.array.size, 2);
    assert_str(&v->via.array.ptr[0], "a long string value", 19);
    assert_str(&v->via.array.ptr[1], "x\0y", 3);
    msgpack_zone_free(zone);
}

static void test_many_objects_share_one_zone(void **state)
{
    (void)state;
    msgpack_zone *zone = msgpack_zone_new(64);
    msgpack_object objs[50];
    assert_non_null(zone);
    for (int i = 0; i < 50; i++) {
        char json[64];
        snprintf(json, sizeof json, "[\"item number %d\", %d]", i, i);
        assert_int_equal(zp__json_to_object(json, zone, &objs[i], NULL), 0);
    }
    for (int i = 0; i < 50; i++) {
        char s[32];
        int n = snprintf(s, sizeof s, "item number %d", i);
        assert_str(&objs[i].via.array.ptr[0], s, (size_t)n);
        assert_uint(&objs[i].via.array.ptr[1], (uint64_t)i);
    }
    msgpack_zone_free(zone);
}

static void test_invalid_json_to_object_gives_einval(void **state)
{
    (void)state;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    char *err = NULL;
    assert_non_null(zone);
    assert_int_equal(zp__json_to_object("{\"a\":", zone, &o, &err), ZP_EINVAL);
    assert_position(err, 1);
    free(err);
    msgpack_zone_free(zone);
}

static void test_pack_object_copies_a_value(void **state)
{
    (void)state;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    assert_non_null(zone);
    assert_int_equal(
        zp__json_to_object("{\"a\": [1, -2, 2.5, \"s\"]}", zone, &o, NULL), 0);
    packed p;
    msgpack_packer pk;
    packed_init(&p);
    msgpack_packer_init(&pk, &p.sb, msgpack_sbuffer_write);
    assert_int_equal(msgpack_pack_object(&pk, o), 0);
    msgpack_zone_free(zone);
    unpack_one(&p);
    const msgpack_object *a = get(&p.obj, "a");
    assert_non_null(a);
    assert_uint(&a->via.array.ptr[0], 1);
    assert_int_equal(a->via.array.ptr[1].via.i64, -2);
    assert_true(a->via.array.ptr[2].via.f64 == 2.5);
    assert_str(&a->via.array.ptr[3], "s", 1);
    packed_fini(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_object_becomes_a_map_with_string_keys),
        cmocka_unit_test(test_empty_object_and_array_stay_empty),
        cmocka_unit_test(test_array_keeps_its_order),
        cmocka_unit_test(test_string_keeps_an_embedded_nul),
        cmocka_unit_test(test_strings_are_utf8_and_may_be_empty),
        cmocka_unit_test(test_integers_stay_integers),
        cmocka_unit_test(test_negative_integers_stay_negative),
        cmocka_unit_test(test_reals_become_doubles),
        cmocka_unit_test(test_true_false_and_null),
        cmocka_unit_test(test_nested_values_keep_their_shape),
        cmocka_unit_test(test_null_or_blank_arguments_are_an_empty_array),
        cmocka_unit_test(test_an_array_of_arguments_is_packed_as_it_is),
        cmocka_unit_test(test_a_single_argument_becomes_a_one_element_array),
        cmocka_unit_test(test_invalid_json_gives_einval_with_line_and_column),
        cmocka_unit_test(
            test_invalid_arguments_give_einval_with_line_and_column),
        cmocka_unit_test(test_the_column_points_at_the_offending_character),
        cmocka_unit_test(test_object_in_a_zone_outlives_the_packing_buffer),
        cmocka_unit_test(test_many_objects_share_one_zone),
        cmocka_unit_test(test_invalid_json_to_object_gives_einval),
        cmocka_unit_test(test_pack_object_copies_a_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
