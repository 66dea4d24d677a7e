/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of JSON to msgpack and back (core/json_*.c): every JSON type
 * packed and read back with msgpack_unpack, integers up to 2^64-1 exactly,
 * the $bin and $ext conventions, run arguments wrapped into an array, the
 * line and column of invalid JSON, objects built in a zone that outlive the
 * buffer they were packed into, every msgpack type written as JSON, on
 * one line and indented, keys that are maps of maps written in linear
 * size, the depth limit on writing, and values that go round both ways
 * unchanged.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/error.h"
#include "core/json.h"
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
/* Packs any JSON value, as the library reads it. */
static int json_pack(const char *json, msgpack_packer *pk, char **err)
{
    msgpack_zone zone;
    msgpack_object o;
    assert_true(msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE));
    int rc = zp__json_to_object(json, &zone, &o, err);
    if (rc == 0 && msgpack_pack_object(pk, o) != 0)
        rc = ZP_ENOMEM;
    msgpack_zone_destroy(&zone);
    return rc;
}

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
    pack_with(p, json, json_pack);
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
    assert_invalid("{\"a\": }", 1, json_pack);
    assert_invalid("[1, 2", 1, json_pack);
    assert_invalid("[1,\n 2,\n x]", 3, json_pack);
    assert_invalid("\"unterminated", 1, json_pack);
    assert_invalid("1 2", 1, json_pack);
    assert_invalid("", 1, json_pack);
    assert_invalid("{'a': 1}", 1, json_pack);
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
    assert_int_equal(json_pack("[x]", &pk, &near), ZP_EINVAL);
    assert_int_equal(json_pack("[1,      x]", &pk, &far), ZP_EINVAL);
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

/* ---- Integers beyond int64, binary and ext ------------------------------ */

/* Reads `json` into *o in `zone`; fails the test on any error. */
static void read_ok(const char *json, msgpack_zone *zone, msgpack_object *o)
{
    zp__json_error e = {0};
    int rc = zp__json_read(json, strlen(json), zone, o, &e);
    if (rc != 0)
        fail_msg("reading '%s' failed with %d at %d:%d: %s", json, rc, e.line,
                 e.column, e.reason ? e.reason : "?");
}

/* Expects zp__json_read to refuse `json` with a reason containing `why`,
 * at column `col` of line 1. */
static void read_refused_n(const char *json, size_t len, const char *why,
                           int col)
{
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    zp__json_error e = {0};
    assert_non_null(zone);
    assert_int_equal(zp__json_read(json, len, zone, &o, &e), ZP_EINVAL);
    assert_non_null(e.reason);
    if (strstr(e.reason, why) == NULL)
        fail_msg("'%s': reason '%s' does not mention '%s'", json, e.reason,
                 why);
    assert_int_equal(e.line, 1);
    assert_int_equal(e.column, col);
    msgpack_zone_free(zone);
}

static void read_refused(const char *json, const char *why, int col)
{
    read_refused_n(json, strlen(json), why, col);
}

static void test_integers_up_to_2_64_minus_1_stay_exact(void **state)
{
    (void)state;
    packed p;
    pack(&p, "18446744073709551615");
    assert_uint(&p.obj, UINT64_MAX);
    packed_fini(&p);
    pack(&p, "9223372036854775808");
    assert_uint(&p.obj, (uint64_t)INT64_MAX + 1);
    packed_fini(&p);
    /* Beyond msgpack's integers, a number is a double, as in JavaScript. */
    pack(&p, "18446744073709551616");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_FLOAT64);
    assert_true(p.obj.via.f64 == 18446744073709551616.0);
    packed_fini(&p);
    pack(&p, "-9223372036854775809");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_FLOAT64);
    packed_fini(&p);
    pack(&p, "-0");
    assert_uint(&p.obj, 0);
    packed_fini(&p);
}

static void test_a_bin_object_becomes_binary(void **state)
{
    (void)state;
    packed p;
    pack(&p, "{\"$bin\": \"aGVsbG8=\"}");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_BIN);
    assert_int_equal(p.obj.via.bin.size, 5);
    assert_memory_equal(p.obj.via.bin.ptr, "hello", 5);
    packed_fini(&p);
    pack(&p, "[{\"$bin\": \"\"}, {\"$bin\": \"AP8=\"}, {\"$bin\": \"AAEC\"}]");
    assert_int_equal(p.obj.via.array.ptr[0].type, MSGPACK_OBJECT_BIN);
    assert_int_equal(p.obj.via.array.ptr[0].via.bin.size, 0);
    assert_int_equal(p.obj.via.array.ptr[1].via.bin.size, 2);
    assert_memory_equal(p.obj.via.array.ptr[1].via.bin.ptr, "\x00\xff", 2);
    assert_int_equal(p.obj.via.array.ptr[2].via.bin.size, 3);
    assert_memory_equal(p.obj.via.array.ptr[2].via.bin.ptr, "\x00\x01\x02", 3);
    packed_fini(&p);
    /* With another key, "$bin" is an ordinary key. */
    pack(&p, "{\"$bin\": \"aGVsbG8=\", \"x\": 1}");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_MAP);
    packed_fini(&p);
}

static void test_an_ext_object_becomes_ext(void **state)
{
    (void)state;
    packed p;
    pack(&p, "{\"$ext\": [-1, \"AQID\"]}");
    assert_int_equal(p.obj.type, MSGPACK_OBJECT_EXT);
    assert_int_equal(p.obj.via.ext.type, -1);
    assert_int_equal(p.obj.via.ext.size, 3);
    assert_memory_equal(p.obj.via.ext.ptr, "\x01\x02\x03", 3);
    packed_fini(&p);
    pack(&p, "{\"$ext\": [127, \"\"]}");
    assert_int_equal(p.obj.via.ext.type, 127);
    assert_int_equal(p.obj.via.ext.size, 0);
    packed_fini(&p);
}

static void test_malformed_bin_and_ext_objects_are_errors(void **state)
{
    (void)state;
    read_refused("{\"$bin\": \"abc\"}", "base64", 1);
    read_refused("{\"$bin\": \"ab!=\"}", "base64", 1);
    read_refused("{\"$bin\": \"a===\"}", "base64", 1);
    read_refused("{\"$bin\": \"ab=c\"}", "base64", 1);
    read_refused("[{\"$bin\": 12}]", "base64", 2);
    read_refused("{\"$ext\": [128, \"\"]}", "-128 to 127", 1);
    read_refused("{\"$ext\": [-129, \"\"]}", "-128 to 127", 1);
    read_refused("{\"$ext\": [1]}", "[TYPE, BASE64]", 1);
    read_refused("{\"$ext\": [1, \"%%%%\"]}", "[TYPE, BASE64]", 1);
}

/* ---- Strict JSON --------------------------------------------------------- */

static void test_surrogate_pairs_become_one_character(void **state)
{
    (void)state;
    packed p;
    pack(&p, "\"\\ud83d\\ude00 \\u20AC\"");
    assert_str(&p.obj, "\xf0\x9f\x98\x80 \xe2\x82\xac", 8);
    packed_fini(&p);
    read_refused("\"\\ud83d\"", "surrogate", 2);
    read_refused("\"\\ude00\"", "surrogate", 2);
    read_refused("\"\\ud83d\\u0041\"", "surrogate", 2);
    read_refused("\"\\u12G4\"", "hex digits", 2);
}

static void test_text_that_is_not_strict_json_is_refused(void **state)
{
    (void)state;
    read_refused("\"a\x01\"", "control character", 3);
    read_refused("\"\xc3\x28\"", "UTF-8", 2);
    read_refused("\"\xed\xa0\x80\"", "UTF-8", 2); /* an encoded surrogate */
    read_refused("\"\xc0\xaf\"", "UTF-8", 2);     /* overlong '/' */
    read_refused("\"\\x\"", "escape", 2);
    read_refused("01", "after the value", 2);
    read_refused("1.", "after '.'", 3);
    read_refused("1e+", "exponent", 4);
    read_refused("-", "invalid number", 1);
    read_refused("+1", "expected a value", 1);
    read_refused("1e999", "out of range", 1);
    read_refused("[1,]", "expected a value", 4);
    read_refused("{\"a\" 1}", "':'", 6);
    read_refused("{1: 2}", "key", 2);
    read_refused("nul", "expected a value", 1);
    read_refused("[1 2]", "',' or ']'", 4);
    read_refused_n("1\0", 2, "after the value", 2);
    read_refused("\"\xc3\xa9\" x", "after the value", 5);
}

/* `levels` arrays around `inner` (malloc'ed). */
static char *nested(int levels, const char *inner)
{
    size_t n = strlen(inner), l = (size_t)levels;
    char *s = malloc(2 * l + n + 1);
    assert_non_null(s);
    memset(s, '[', l);
    memcpy(s + l, inner, n);
    memset(s + l + n, ']', l);
    s[2 * l + n] = '\0';
    return s;
}

/* zp__json_pack_args of {"a": `levels` arrays around 1}. */
static int pack_args_in_object(int levels, char **err)
{
    char *inner = nested(levels, "1");
    char *text = zp__strdupf("{\"a\": %s}", inner);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = zp__json_pack_args(text, &pk, err);
    msgpack_sbuffer_destroy(&sb);
    free(text);
    free(inner);
    return rc;
}

static void test_nesting_stops_at_32_levels(void **state)
{
    (void)state;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    assert_non_null(zone);
    char *ok = nested(32, ""), *deep = nested(33, "");
    read_ok(ok, zone, &o);
    read_refused(deep, "deeper than 32", 33);
    free(ok);
    free(deep);
    msgpack_zone_free(zone);
    /* A single argument 32 levels deep cannot be wrapped in the argument
     * array; 31 levels can. */
    char *err = NULL;
    assert_int_equal(pack_args_in_object(31, &err), ZP_EINVAL);
    assert_non_null(strstr(err, "deeper than 32"));
    free(err);
    assert_int_equal(pack_args_in_object(30, NULL), 0);
}

static void test_reading_stops_at_the_given_length(void **state)
{
    (void)state;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    zp__json_error e;
    assert_non_null(zone);
    assert_int_equal(zp__json_read("12345", 3, zone, &o, &e), 0);
    assert_uint(&o, 123);
    assert_int_equal(zp__json_read("\"abc\"", 4, zone, &o, &e), ZP_EINVAL);
    assert_non_null(strstr(e.reason, "unterminated"));
    assert_int_equal(zp__json_read("[1, 2]", 5, zone, &o, &e), ZP_EINVAL);
    assert_int_equal(zp__json_read("", 0, zone, &o, &e), ZP_EINVAL);
    assert_int_equal(e.column, 1);
    msgpack_zone_free(zone);
}

/* ---- Writing JSON -------------------------------------------------------- */

/* The JSON text of the single value packed in sb. */
static char *write_packed(const msgpack_sbuffer *sb)
{
    msgpack_zone zone;
    msgpack_object o;
    msgpack_sbuffer out;
    size_t off = 0;
    assert_true(msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE));
    assert_int_equal(msgpack_unpack(sb->data, sb->size, &off, &zone, &o),
                     MSGPACK_UNPACK_SUCCESS);
    msgpack_sbuffer_init(&out);
    assert_int_equal(zp__json_write(&o, &out), 0);
    char *text = strndup(out.data ? out.data : "", out.size);
    msgpack_sbuffer_destroy(&out);
    msgpack_zone_destroy(&zone);
    return text;
}

typedef void (*packing)(msgpack_packer *pk);

/* Packs with fn, writes it as JSON, and compares with `want`. */
static void assert_written(packing fn, const char *want)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    fn(&pk);
    char *text = write_packed(&sb);
    assert_string_equal(text, want);
    free(text);
    msgpack_sbuffer_destroy(&sb);
}

static void pack_scalars(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 8);
    msgpack_pack_nil(pk);
    msgpack_pack_true(pk);
    msgpack_pack_false(pk);
    msgpack_pack_uint64(pk, UINT64_MAX);
    msgpack_pack_int64(pk, INT64_MIN);
    msgpack_pack_int8(pk, -1);
    msgpack_pack_uint8(pk, 0);
    msgpack_pack_int32(pk, 7);
}

static void pack_reals(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 9);
    msgpack_pack_double(pk, 0.1);
    msgpack_pack_double(pk, 1.0);
    msgpack_pack_double(pk, -2.5e-300);
    msgpack_pack_double(pk, 1e21);
    msgpack_pack_float(pk, 0.1f);
    msgpack_pack_float(pk, 3.0f);
    msgpack_pack_double(pk, NAN);
    msgpack_pack_double(pk, -INFINITY);
    msgpack_pack_double(pk, 0.30000000000000004);
}

static void pack_strings(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_str_with_body(pk, "q\"b\\n\n\t\x01\x7f/", 10);
    msgpack_pack_str_with_body(pk, "\xc3\xa9\xf0\x9f\x98\x80", 6);
    msgpack_pack_str_with_body(pk,
                               "a\xff"
                               "b\xc3",
                               4); /* invalid UTF-8 */
    msgpack_pack_str_with_body(pk, "nul\0", 4);
}

static void pack_containers(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 4);
    msgpack_pack_str_with_body(pk, "a", 1);
    msgpack_pack_array(pk, 0);
    msgpack_pack_int(pk, 1); /* keys that are not strings */
    msgpack_pack_map(pk, 0);
    msgpack_pack_array(pk, 2);
    msgpack_pack_true(pk);
    msgpack_pack_str_with_body(pk, "k", 1);
    msgpack_pack_nil(pk);
    msgpack_pack_nil(pk);
    msgpack_pack_nil(pk);
}

static void pack_bin_and_ext(msgpack_packer *pk)
{
    msgpack_pack_array(pk, 4);
    msgpack_pack_bin_with_body(pk, "hello", 5);
    msgpack_pack_bin_with_body(pk, "", 0);
    msgpack_pack_ext_with_body(pk, "\x01\x02\x03\x04", 4, -128);
    msgpack_pack_ext_with_body(pk, "\xff", 1, 5);
}

static void test_every_msgpack_type_is_written_as_json(void **state)
{
    (void)state;
    assert_written(pack_scalars, "[null,true,false,18446744073709551615,"
                                 "-9223372036854775808,-1,0,7]");
    assert_written(pack_reals, "[0.1,1.0,-2.5e-300,1e+21,0.1,3.0,null,null,"
                               "0.30000000000000004]");
    assert_written(pack_strings,
                   "[\"q\\\"b\\\\n\\n\\t\\u0001\x7f/\",\"\xc3\xa9\xf0\x9f\x98"
                   "\x80\",\"a\xef\xbf\xbd"
                   "b\xef\xbf\xbd\",\"nul\\u0000\"]");
    assert_written(
        pack_containers,
        "{\"a\":[],\"1\":{},\"[true,\\\"k\\\"]\":null,\"null\":null}");
    assert_written(pack_bin_and_ext,
                   "[{\"$bin\":\"aGVsbG8=\"},{\"$bin\":\"\"},"
                   "{\"$ext\":[-128,\"AQIDBA==\"]},{\"$ext\":[5,\"/w==\"]}]");
}

static void pack_keys_in_keys(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 2);
    msgpack_pack_map(pk, 1); /* {{1: 2}: 3} */
    msgpack_pack_int(pk, 1);
    msgpack_pack_int(pk, 2);
    msgpack_pack_int(pk, 3);
    msgpack_pack_map(pk, 1); /* {{["s"]: "v"}: nil} */
    msgpack_pack_array(pk, 1);
    msgpack_pack_str_with_body(pk, "s", 1);
    msgpack_pack_str_with_body(pk, "v\\", 2);
    msgpack_pack_nil(pk);
}

static void test_keys_in_keys_are_escaped_once(void **state)
{
    (void)state;
    assert_written(pack_keys_in_keys,
                   "{\"{1:2}\":3,\"{[\\\"s\\\"]:\\\"v\\\\\\\\\\\"}\":null}");
}

/* Packs a map whose only key is such a map, `levels` deep, each value nil,
 * the innermost key "a": 2 bytes a level and 2 more. */
static void pack_keys_of_keys(msgpack_packer *pk, int levels)
{
    for (int i = 0; i < levels; i++)
        msgpack_pack_map(pk, 1);
    msgpack_pack_str_with_body(pk, "a", 1);
    for (int i = 0; i < levels; i++)
        msgpack_pack_nil(pk);
}

static void test_nested_map_keys_are_written_in_linear_size(void **state)
{
    (void)state;
    for (int levels = 28; levels <= ZP__JSON_MAX_DEPTH; levels++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        pack_keys_of_keys(&pk, levels);
        if (levels == 28)
            assert_int_equal(sb.size, 58);
        clock_t start = clock();
        char *text = write_packed(&sb);
        double seconds = (double)(clock() - start) / CLOCKS_PER_SEC;
        assert_true(strlen(text) < 64 * sb.size);
        assert_true(seconds < 1.0);
        /* {"{{...{\"a\":null}...:null}:null}":null}: read back, one key */
        assert_int_equal(strncmp(text, "{\"{{", 4), 0);
        assert_non_null(strstr(text, "{\\\"a\\\":null}:null}"));
        msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
        msgpack_object o;
        assert_non_null(zone);
        read_ok(text, zone, &o);
        assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
        assert_int_equal(o.via.map.size, 1);
        assert_int_equal(o.via.map.ptr[0].key.type, MSGPACK_OBJECT_STR);
        msgpack_zone_free(zone);
        free(text);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* Writes a value `levels` deep, built in memory as msgpack-c would not
 * unpack it: arrays in arrays, or maps as the keys of maps. */
static int write_nested(int levels, bool in_keys, msgpack_sbuffer *out)
{
    msgpack_object o[64];
    msgpack_object_kv kv[64];
    assert_true(levels < 64);
    o[levels] = (msgpack_object){.type = MSGPACK_OBJECT_NIL};
    for (int i = levels - 1; i >= 0; i--) {
        if (in_keys) {
            kv[i] = (msgpack_object_kv){.key = o[i + 1], .val = o[levels]};
            o[i] = (msgpack_object){.type = MSGPACK_OBJECT_MAP,
                                    .via.map = {.size = 1, .ptr = &kv[i]}};
        } else
            o[i] = (msgpack_object){.type = MSGPACK_OBJECT_ARRAY,
                                    .via.array = {.size = 1, .ptr = &o[i + 1]}};
    }
    return zp__json_write(&o[0], out);
}

static void test_writing_stops_at_32_levels(void **state)
{
    (void)state;
    for (int in_keys = 0; in_keys < 2; in_keys++) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        assert_int_equal(write_nested(32, in_keys, &sb), 0);
        msgpack_sbuffer_clear(&sb);
        assert_int_equal(write_nested(33, in_keys, &sb), ZP_EINVAL);
        msgpack_sbuffer_clear(&sb);
        assert_int_equal(write_nested(63, in_keys, &sb), ZP_EINVAL);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* The text of JSON `json` written back with `indent`. */
static char *rewritten(const char *json, int indent)
{
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    msgpack_sbuffer sb;
    assert_non_null(zone);
    read_ok(json, zone, &o);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(zp__json_write_indented(&o, indent, &sb), 0);
    char *text = strndup(sb.data ? sb.data : "", sb.size);
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_free(zone);
    return text;
}

static void test_indented_text_has_an_element_a_line(void **state)
{
    (void)state;
    char *text = rewritten("{\"a\":[1,{\"b\":null}],\"c\":[],\"d\":{}}", 2);
    assert_string_equal(text, "{\n"
                              "  \"a\": [\n"
                              "    1,\n"
                              "    {\n"
                              "      \"b\": null\n"
                              "    }\n"
                              "  ],\n"
                              "  \"c\": [],\n"
                              "  \"d\": {}\n"
                              "}");
    free(text);
    text = rewritten("[[[[[[[[[[\"deep\"]]]]]]]]]]", 4); /* 40 spaces */
    assert_non_null(strstr(text, "\n"                    /* 40 spaces */
                                 "                    "
                                 "                    \"deep\"\n"));
    free(text);
    text = rewritten("[1, {\"k\": \"v\"}]", 0);
    assert_string_equal(text, "[1,{\"k\":\"v\"}]");
    free(text);
}

/* ---- Round trips --------------------------------------------------------- */

static void test_json_goes_to_msgpack_and_back_unchanged(void **state)
{
    (void)state;
    const char *texts[] = {
        "null",
        "[true,false,0,-1,18446744073709551615,-9223372036854775808]",
        "[0.5,-1e-05,1.7976931348623157e+308,5e-324,123456789.125]",
        "{\"a\":{\"b\":[1,{\"c\":\"\\u0000\\\"\\\\\"}]},\"\":[]}",
        "\"\xe2\x82\xac \xf0\x9f\x98\x80\"",
        "[{\"$bin\":\"AAECAwQF\"},{\"$ext\":[-7,\"AA==\"]}]",
    };
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    assert_non_null(zone);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        msgpack_object o;
        msgpack_sbuffer sb;
        read_ok(texts[i], zone, &o);
        msgpack_sbuffer_init(&sb);
        assert_int_equal(zp__json_write(&o, &sb), 0);
        char *back = strndup(sb.data, sb.size);
        assert_string_equal(back, texts[i]);
        free(back);
        msgpack_sbuffer_destroy(&sb);
    }
    msgpack_zone_free(zone);
}

static void test_msgpack_goes_to_json_and_back_unchanged(void **state)
{
    (void)state;
    packing all[] = {pack_scalars, pack_containers, pack_bin_and_ext};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_zone zone;
        msgpack_object want, got;
        size_t off = 0;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        all[i](&pk);
        assert_true(msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE));
        assert_int_equal(msgpack_unpack(sb.data, sb.size, &off, &zone, &want),
                         MSGPACK_UNPACK_SUCCESS);
        char *text = write_packed(&sb);
        if (all[i] == pack_containers) /* its keys become strings */
            assert_int_equal(want.via.map.ptr[1].key.type,
                             MSGPACK_OBJECT_POSITIVE_INTEGER);
        else {
            read_ok(text, &zone, &got);
            assert_true(msgpack_object_equal(want, got));
        }
        free(text);
        msgpack_zone_destroy(&zone);
        msgpack_sbuffer_destroy(&sb);
    }
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
        cmocka_unit_test(test_integers_up_to_2_64_minus_1_stay_exact),
        cmocka_unit_test(test_a_bin_object_becomes_binary),
        cmocka_unit_test(test_an_ext_object_becomes_ext),
        cmocka_unit_test(test_malformed_bin_and_ext_objects_are_errors),
        cmocka_unit_test(test_surrogate_pairs_become_one_character),
        cmocka_unit_test(test_text_that_is_not_strict_json_is_refused),
        cmocka_unit_test(test_nesting_stops_at_32_levels),
        cmocka_unit_test(test_reading_stops_at_the_given_length),
        cmocka_unit_test(test_every_msgpack_type_is_written_as_json),
        cmocka_unit_test(test_indented_text_has_an_element_a_line),
        cmocka_unit_test(test_keys_in_keys_are_escaped_once),
        cmocka_unit_test(test_nested_map_keys_are_written_in_linear_size),
        cmocka_unit_test(test_writing_stops_at_32_levels),
        cmocka_unit_test(test_json_goes_to_msgpack_and_back_unchanged),
        cmocka_unit_test(test_msgpack_goes_to_json_and_back_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
