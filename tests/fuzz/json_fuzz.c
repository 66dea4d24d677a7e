/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target of the JSON reader and writer (core/json_*.c), the code
 * that reads every line of a `zpipe run --input` file. Any input must be
 * read or refused with a position and a reason, never a crash. What is read
 * must be written (on one line and indented) and read back as the same
 * msgpack value. And jansson is the oracle: where it accepts the text, the
 * reader must accept it with the same value, and where it refuses, the
 * reader must refuse too, apart from
 * the documented differences (integers from 2^63 to 2^64-1 and beyond,
 * nesting deeper than 32 levels, NUL in object keys, $bin and $ext), and
 * raw NUL bytes, which jansson's lexer sometimes takes for the end.
 * Then each map's values become its keys (maps of maps as keys, however
 * deep the text nests): written in size linear in the text's, and read
 * back.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "tests/fuzz/check.h"

static bool has_key(const msgpack_object_kv *kv, const char *k)
{
    return kv->key.via.str.size == strlen(k) &&
           memcmp(kv->key.via.str.ptr, k, kv->key.via.str.size) == 0;
}

static void same(const json_t *j, const msgpack_object *o);

static void same_object(const json_t *j, const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_BIN || o->type == MSGPACK_OBJECT_EXT) {
        CHECK(json_object_size(j) == 1);
        CHECK(json_object_get(j,
                              o->type == MSGPACK_OBJECT_BIN ? "$bin" : "$ext"));
        return;
    }
    CHECK(o->type == MSGPACK_OBJECT_MAP);
    /* jansson keeps the last of repeated keys, msgpack keeps them all. */
    bool repeats = json_object_size(j) != o->via.map.size;
    CHECK(json_object_size(j) <= o->via.map.size);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        CHECK(kv->key.type == MSGPACK_OBJECT_STR);
        CHECK(!has_key(kv, "$bin") || o->via.map.size > 1);
        const json_t *v =
            json_object_getn(j, kv->key.via.str.ptr, kv->key.via.str.size);
        CHECK(v != NULL);
        if (!repeats)
            same(v, &kv->val);
    }
}

static void same(const json_t *j, const msgpack_object *o)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: same_object(j, o); break;
    case JSON_ARRAY:
        CHECK(o->type == MSGPACK_OBJECT_ARRAY);
        CHECK(o->via.array.size == json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++)
            same(json_array_get(j, i), &o->via.array.ptr[i]);
        break;
    case JSON_STRING:
        CHECK(o->type == MSGPACK_OBJECT_STR);
        CHECK(o->via.str.size == json_string_length(j));
        CHECK(memcmp(o->via.str.ptr, json_string_value(j), o->via.str.size) ==
              0);
        break;
    case JSON_INTEGER:
        CHECK((o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
               (json_int_t)o->via.u64 == json_integer_value(j)) ||
              (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER &&
               o->via.i64 == json_integer_value(j)));
        break;
    case JSON_REAL:
        CHECK(o->type == MSGPACK_OBJECT_FLOAT64);
        CHECK(o->via.f64 == json_real_value(j));
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        CHECK(o->type == MSGPACK_OBJECT_BOOLEAN);
        CHECK(o->via.boolean == json_is_true(j));
        break;
    case JSON_NULL: CHECK(o->type == MSGPACK_OBJECT_NIL); break;
    }
}

/* Where jansson refuses what the reader accepts, for a documented reason. */
static bool known_difference(const json_error_t *e)
{
    enum json_error_code c = json_error_code(e);
    return c == json_error_numeric_overflow || c == json_error_null_byte_in_key;
}

/* Where the reader refuses what jansson accepts, for a documented reason. */
static bool known_refusal(const zp__json_error *e, const uint8_t *data,
                          size_t size)
{
    return memchr(data, '\0', size) != NULL ||
           strstr(e->reason, "deeper than 32") != NULL ||
           strstr(e->reason, "$bin") != NULL ||
           strstr(e->reason, "$ext") != NULL;
}

/* Writes o as JSON, on one line and indented, and reads each text back:
 * the same value. */
static void round_trip(const msgpack_object *o)
{
    for (int indent = 0; indent <= 2; indent += 2) {
        msgpack_sbuffer sb;
        msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
        msgpack_object back;
        zp__json_error e;
        CHECK(zone != NULL);
        msgpack_sbuffer_init(&sb);
        CHECK(zp__json_write_indented(o, indent, &sb) == 0);
        CHECK(indent > 0 || memchr(sb.data, '\n', sb.size) == NULL);
        CHECK(zp__json_read(sb.data, sb.size, zone, &back, &e) == 0);
        CHECK(msgpack_object_equal(*o, back));
        msgpack_sbuffer_destroy(&sb);
        msgpack_zone_free(zone);
    }
}

/* Makes each value of each map in o its key, and nil its value. */
static void rekey(msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < o->via.array.size; i++)
            rekey(&o->via.array.ptr[i]);
    if (o->type != MSGPACK_OBJECT_MAP)
        return;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        msgpack_object_kv *kv = &o->via.map.ptr[i];
        rekey(&kv->val);
        kv->key = kv->val;
        kv->val = (msgpack_object){.type = MSGPACK_OBJECT_NIL};
    }
}

/* Writes o, read from `size` bytes of text, with keys that are not
 * strings: linear in size, read back. */
static void write_rekeyed(msgpack_object *o, size_t size)
{
    msgpack_sbuffer sb;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object back;
    zp__json_error e;
    CHECK(zone != NULL);
    rekey(o);
    msgpack_sbuffer_init(&sb);
    CHECK(zp__json_write(o, &sb) == 0);
    CHECK(sb.size <= 32 * size + 64);
    /* A value "$bin" or "$ext" may have become a map's only key. */
    CHECK(zp__json_read(sb.data, sb.size, zone, &back, &e) == 0 ||
          strstr(e.reason, "$bin") != NULL || strstr(e.reason, "$ext") != NULL);
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_free(zone);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    msgpack_object o;
    zp__json_error e = {0};
    json_error_t je;
    CHECK(zone != NULL);
    int rc = zp__json_read((const char *)data, size, zone, &o, &e);
    json_t *j = json_loadb((const char *)data, size,
                           JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    CHECK(rc == 0 || rc == ZP_EINVAL);
    if (rc == ZP_EINVAL) {
        CHECK(e.reason != NULL && e.line >= 1 && e.column >= 1);
        CHECK(j == NULL || known_refusal(&e, data, size));
    } else {
        round_trip(&o);
        CHECK(j != NULL || known_difference(&je));
        if (j != NULL)
            same(j, &o);
        write_rekeyed(&o, size);
    }
    json_decref(j);
    msgpack_zone_free(zone);
    return 0;
}
