/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target of the wire protocol's decoder (transport/proto.c). Any
 * input must decode to 0, or to ZP_EPROTO with a reason. A message that
 * decodes must go through the encoder of its type into a body that decodes
 * to the same fields, and encoding that again must give the same bytes.
 * The encoders take C strings, so messages whose strings hold a NUL byte
 * are only decoded.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/proto.h"
#include "tests/fuzz/check.h"

/* A NUL-terminated copy of p[0..n), or NULL when it holds a NUL. */
static char *c_string(const char *p, size_t n)
{
    if (n > 0 && memchr(p, 0, n) != NULL)
        return NULL;
    char *s = malloc(n + 1);
    CHECK(s != NULL);
    if (n > 0)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static void free_names(char **v, size_t n)
{
    for (size_t i = 0; i < n && v != NULL; i++)
        free(v[i]);
    free(v);
}

/* HELLO's task names as C strings; false when one holds a NUL. */
static bool task_names(const zp__msg *m, char ***names, size_t *n)
{
    const msgpack_object_array *a = &m->tasks->via.array;
    *n = a->size;
    *names = calloc(a->size + 1, sizeof **names);
    CHECK(*names != NULL);
    for (size_t i = 0; i < a->size; i++) {
        (*names)[i] = c_string(a->ptr[i].via.str.ptr, a->ptr[i].via.str.size);
        if ((*names)[i] == NULL)
            return false;
    }
    return true;
}

static int encode_hello(const zp__msg *m, const char *name, msgpack_sbuffer *sb)
{
    char **names;
    size_t n;
    int rc = 1;
    char *pool = m->pool ? c_string(m->pool, m->pool_len) : NULL;
    if (task_names(m, &names, &n) && (m->pool == NULL || pool != NULL))
        rc = zp__msg_hello(sb, name, m->pid, m->credit,
                           (const char *const *)names, n, pool);
    free_names(names, n);
    free(pool);
    return rc;
}

/* Encodes m again: 0, or 1 when its strings cannot be C strings. */
static int encode(const zp__msg *m, msgpack_sbuffer *sb)
{
    char *s = c_string(m->str, m->str_len);
    int rc = 1;
    bool needs_str = m->type == ZP__HELLO || m->type == ZP__STAGE ||
                     m->type == ZP__FAIL || m->type == ZP__BYE;
    if (s == NULL && needs_str)
        return 1;
    switch (m->type) {
    case ZP__HELLO: rc = encode_hello(m, s, sb); break;
    case ZP__READY: rc = zp__msg_ready(sb, m->credit); break;
    case ZP__STAGE:
        rc = zp__msg_stage(sb, m->run, m->stage, s, m->flags, m->retries,
                           m->data, m->data_len);
        break;
    case ZP__ITEM:
        rc = zp__msg_item(sb, m->run, m->stage, m->batch, m->data, m->data_len);
        break;
    case ZP__OUT:
    case ZP__DONE:
        rc = zp__msg_out(sb, m->type, m->run, m->stage, m->batch, m->data,
                         m->data_len, m->retried, m->skipped, m->busy);
        break;
    case ZP__FAIL:
        rc = zp__msg_fail(sb, m->run, m->stage, m->batch, m->seq, s, m->busy);
        break;
    case ZP__HEARTBEAT: rc = zp__msg_heartbeat(sb); break;
    case ZP__BYE: rc = zp__msg_bye(sb, s); break;
    default: CHECK(!"a decoded message of an unknown type");
    }
    free(s);
    CHECK(rc == 0 || rc == 1);
    return rc;
}

static bool same_bytes(const char *a, size_t na, const char *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na) == 0);
}

static bool same_tasks(const msgpack_object *a, const msgpack_object *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->via.array.size != b->via.array.size)
        return false;
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        const msgpack_object_str *x = &a->via.array.ptr[i].via.str;
        const msgpack_object_str *y = &b->via.array.ptr[i].via.str;
        if (!same_bytes(x->ptr, x->size, y->ptr, y->size))
            return false;
    }
    return true;
}

static void check_same(const zp__msg *a, const zp__msg *b)
{
    CHECK(a->type == b->type);
    CHECK(a->run == b->run && a->stage == b->stage && a->batch == b->batch);
    CHECK(a->seq == b->seq && a->credit == b->credit && a->pid == b->pid);
    CHECK(a->flags == b->flags && a->retries == b->retries);
    CHECK(a->retried == b->retried && a->skipped == b->skipped &&
          a->busy == b->busy);
    CHECK(same_bytes(a->str, a->str_len, b->str, b->str_len));
    CHECK(same_bytes(a->data, a->data_len, b->data, b->data_len));
    CHECK(same_tasks(a->tasks, b->tasks));
}

/* A borrowed range lies inside the body. */
static void check_inside(const void *body, size_t len, const char *p, size_t n)
{
    const char *b = body;
    CHECK(n == 0 || (p >= b && p + n <= b + len));
}

/* Encodes m, decodes that, encodes the result: all must agree. */
static void round_trip(const zp__msg *m, msgpack_zone *zone)
{
    msgpack_sbuffer sb1, sb2;
    zp__msg m2;
    const char *why = NULL;
    msgpack_sbuffer_init(&sb1);
    msgpack_sbuffer_init(&sb2);
    if (encode(m, &sb1) == 0) {
        CHECK(sb1.size <= ZP__PROTO_MAX_MSG);
        CHECK(zp__msg_decode(sb1.data, sb1.size, zone, &m2, &why) == 0);
        check_same(m, &m2);
        CHECK(encode(&m2, &sb2) == 0);
        CHECK(same_bytes(sb1.data, sb1.size, sb2.data, sb2.size));
    }
    msgpack_sbuffer_destroy(&sb1);
    msgpack_sbuffer_destroy(&sb2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    zp__msg m;
    const char *why = NULL;
    CHECK(zone != NULL);
    int rc = zp__msg_decode(data, size, zone, &m, &why);
    if (rc != 0) {
        CHECK(rc == ZP_EPROTO && why != NULL && why[0] != '\0');
    } else {
        CHECK(strcmp(zp__msg_type_name(m.type), "unknown") != 0);
        check_inside(data, size, m.str, m.str_len);
        check_inside(data, size, m.data, m.data_len);
        round_trip(&m, zone);
    }
    msgpack_zone_free(zone);
    return 0;
}
