/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the wire protocol (transport/proto.c): every message type
 * encoded and decoded back with edge values (0, UINT32_MAX, UINT64_MAX,
 * empty strings and bins where allowed, strings with NUL bytes), the bytes
 * on the wire for a few messages, and a decoder that answers anything else
 * with ZP_EPROTO and a reason, never a crash: each field of the wrong type
 * or out of range, missing and extra fields, wrong versions, unknown types,
 * bodies over the size limit, trailing bytes, every truncation of every
 * message, deep nesting, huge declared sizes, and thousands of random or
 * mutated buffers. Bodies are copied to exact-size heap buffers so that the
 * sanitizer build catches a read past their end.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "transport/proto.h"
#include "zpipe.h"

/* ---- Helpers ------------------------------------------------------------- */

/* A decoded body: the exact-size copy it borrows from, and its zone. */
typedef struct decoded {
    char *body;
    size_t len;
    msgpack_zone *zone;
    zp__msg m;
    const char *why;
    int rc;
} decoded;

/* Decodes a copy of data[0..len) into d; undo with undecode(). */
static int decode(decoded *d, const void *data, size_t len)
{
    d->body = malloc(len ? len : 1);
    assert_non_null(d->body);
    if (len > 0)
        memcpy(d->body, data, len);
    d->len = len;
    d->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    assert_non_null(d->zone);
    memset(&d->m, 0x5a, sizeof d->m); /* the decoder must reset it all */
    d->why = NULL;
    d->rc = zp__msg_decode(d->body, len, d->zone, &d->m, &d->why);
    assert_true(d->rc == 0 || d->rc == ZP_EPROTO);
    if (d->rc != 0) {
        assert_non_null(d->why);
        assert_true(strlen(d->why) > 0);
    }
    return d->rc;
}

static void undecode(decoded *d)
{
    msgpack_zone_free(d->zone);
    free(d->body);
}

/* A pointer and length that lie inside the body (or are empty). */
static void assert_in_body(const decoded *d, const char *p, size_t n)
{
    if (n == 0)
        return;
    assert_true(p >= d->body && p + n <= d->body + d->len);
}

/* Checks every member of a decoded message against `want`. */
static void assert_msg(const decoded *d, const zp__msg *want)
{
    const zp__msg *m = &d->m;
    assert_int_equal(d->rc, 0);
    assert_int_equal(m->type, want->type);
    assert_true(m->run == want->run);
    assert_int_equal(m->stage, want->stage);
    assert_true(m->batch == want->batch);
    assert_true(m->seq == want->seq);
    assert_int_equal(m->credit, want->credit);
    assert_int_equal(m->pid, want->pid);
    assert_int_equal(m->flags, want->flags);
    assert_int_equal(m->retries, want->retries);
    assert_int_equal(m->retried, want->retried);
    assert_int_equal(m->skipped, want->skipped);
    assert_true(m->busy == want->busy);
    assert_int_equal(m->str_len, want->str_len);
    assert_int_equal(m->data_len, want->data_len);
    if (want->str_len > 0)
        assert_memory_equal(m->str, want->str, want->str_len);
    if (want->data_len > 0)
        assert_memory_equal(m->data, want->data, want->data_len);
    assert_int_equal(m->pool_len, want->pool_len);
    if (want->pool != NULL)
        assert_memory_equal(m->pool, want->pool, want->pool_len);
    else
        assert_null(m->pool);
    assert_in_body(d, m->str, m->str_len);
    assert_in_body(d, m->data, m->data_len);
    assert_in_body(d, m->pool, m->pool_len);
    if (want->type != ZP__HELLO)
        assert_null(m->tasks);
}

/* The HELLO's task names equal names[0..n). */
static void assert_tasks(const zp__msg *m, const char *const *names, size_t n)
{
    assert_non_null(m->tasks);
    assert_int_equal(m->tasks->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(m->tasks->via.array.size, n);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *t = &m->tasks->via.array.ptr[i];
        assert_int_equal(t->type, MSGPACK_OBJECT_STR);
        assert_int_equal(t->via.str.size, strlen(names[i]));
        assert_memory_equal(t->via.str.ptr, names[i], t->via.str.size);
    }
}

/* Decodes the body in sb and checks it against want. */
static void round_trip(msgpack_sbuffer *sb, const zp__msg *want)
{
    decoded d;
    decode(&d, sb->data, sb->size);
    assert_msg(&d, want);
    undecode(&d);
    msgpack_sbuffer_clear(sb);
}

/* Expects a rejection whose reason starts with `prefix`. */
static void expect_rejected(const void *data, size_t len, const char *prefix)
{
    decoded d;
    if (decode(&d, data, len) != ZP_EPROTO)
        fail_msg("a %zu-byte body was accepted as a %s", len,
                 zp__msg_type_name(d.m.type));
    if (prefix != NULL && strncmp(d.why, prefix, strlen(prefix)) != 0)
        fail_msg("reason \"%s\", expected one starting \"%s\"", d.why, prefix);
    undecode(&d);
}

/* xorshift64*: a fixed-seed generator, the same sequence everywhere. */
static uint64_t next_random(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* ---- Hand-built bodies --------------------------------------------------- */

/*
 * One msgpack value of a hand-built body: 'u' uint u, 'i' int -u, 's' str
 * s[0..n), 'b' bin s[0..n), 'n' nil, 't' true, 'f' 1.5, 'm' {} , 'a' []
 * 'T' an array of n copies of the str s, 'E' [""], 'I' [1], 'X' [nil].
 */
typedef struct val {
    char kind;
    uint64_t u;
    const char *s;
    size_t n;
} val;

#define U(v)              \
    {                     \
        'u', (v), NULL, 0 \
    }
#define S(lit)                         \
    {                                  \
        's', 0, (lit), sizeof(lit) - 1 \
    }
#define B(lit)                         \
    {                                  \
        'b', 0, (lit), sizeof(lit) - 1 \
    }
#define K(kind)            \
    {                      \
        (kind), 0, NULL, 0 \
    }
#define TASKS(lit, count)      \
    {                          \
        'T', 0, (lit), (count) \
    }

static void pack_val(msgpack_packer *pk, const val *v)
{
    switch (v->kind) {
    case 'u': msgpack_pack_uint64(pk, v->u); break;
    case 'i': msgpack_pack_int64(pk, -(int64_t)v->u); break;
    case 's': msgpack_pack_str_with_body(pk, v->s, v->n); break;
    case 'b': msgpack_pack_bin_with_body(pk, v->s, v->n); break;
    case 'n': msgpack_pack_nil(pk); break;
    case 't': msgpack_pack_true(pk); break;
    case 'f': msgpack_pack_double(pk, 1.5); break;
    case 'm': msgpack_pack_map(pk, 0); break;
    case 'a': msgpack_pack_array(pk, 0); break;
    case 'T':
        msgpack_pack_array(pk, v->n);
        for (size_t i = 0; i < v->n; i++)
            msgpack_pack_str_with_body(pk, v->s, strlen(v->s));
        break;
    case 'E':
        msgpack_pack_array(pk, 1);
        msgpack_pack_str(pk, 0);
        break;
    case 'I':
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint8(pk, 1);
        break;
    case 'X':
        msgpack_pack_array(pk, 1);
        msgpack_pack_nil(pk);
        break;
    default: fail_msg("unknown value kind %c", v->kind);
    }
}

/* Packs [version, type, vals[0..n)] into a fresh sb. */
static void pack_body(msgpack_sbuffer *sb, uint64_t version, uint64_t type,
                      const val *vals, size_t n)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2 + n);
    msgpack_pack_uint64(&pk, version);
    msgpack_pack_uint64(&pk, type);
    for (size_t i = 0; i < n; i++)
        pack_val(&pk, &vals[i]);
}

/*
 * What a field must be, as the tests see it: 'U' uint64, 'W' uint32, 'P'
 * uint32 >= 1, 'F' STAGE flags, 'S' str, 'N' non-empty str, 'B' bin, 'M'
 * non-empty bin, 'T' task list, 'O' pool name.
 */
typedef struct layout {
    int type;
    const char *name;
    const char *fields[7]; /* names, as the reasons quote them */
    const char *kinds;     /* one letter per field */
    val good[7];           /* a valid value per field */
    size_t optional;       /* the last fields a body may leave out */
} layout;

static const layout layouts[] = {
    {ZP__HELLO,
     "HELLO",
     {"name", "pid", "capacity", "tasks", "pool"},
     "SWPTO",
     {S("w"), U(1), U(1), TASKS("t", 2), S("io")},
     1},
    {ZP__READY, "READY", {"credit"}, "P", {U(1)}, 0},
    {ZP__STAGE,
     "STAGE",
     {"run", "stage", "task", "flags", "retries", "bind"},
     "UWNFWB",
     {U(1), U(1), S("t"), U(3), U(1), B("")},
     0},
    {ZP__ITEM,
     "ITEM",
     {"run", "stage", "batch", "items"},
     "UWUM",
     {U(1), U(1), U(1), B("\x00")},
     0},
    {ZP__OUT,
     "OUT",
     {"run", "stage", "batch", "outputs", "retried", "skipped", "busy"},
     "UWUBWWU",
     {U(1), U(1), U(1), B(""), U(1), U(1), U(1)},
     1},
    {ZP__DONE,
     "DONE",
     {"run", "stage", "batch", "outputs", "retried", "skipped", "busy"},
     "UWUBWWU",
     {U(1), U(1), U(1), B(""), U(1), U(1), U(1)},
     1},
    {ZP__FAIL,
     "FAIL",
     {"run", "stage", "batch", "seq", "message", "busy"},
     "UWUUSU",
     {U(1), U(1), U(1), U(1), S(""), U(1)},
     1},
    {ZP__HEARTBEAT, "HEARTBEAT", {NULL}, "", {K('n')}, 0},
    {ZP__BYE, "BYE", {"reason"}, "S", {S("")}, 0},
};

#define NLAYOUTS (sizeof layouts / sizeof layouts[0])

/* Values that a field of each kind must refuse. */
static size_t wrong_values(char kind, val out[16])
{
    static const val any[] = {
        K('n'), K('t'), {'i', 1, NULL, 0}, K('f'), K('m')};
    static const val not_uint[] = {S("7"), B("7"), K('a')};
    static const val not_u32[] = {U((uint64_t)UINT32_MAX + 1), U(UINT64_MAX)};
    static const val not_raw[] = {U(7), K('a'), TASKS("t", 1)};
    static const val not_pool[] = {
        S(""),
        S("a b"),
        S("x/y"),
        S("caf\xc3\xa9"),
        S("a\0b"),
        S("12345678901234567890123456789012345678901234567890123456789012345"),
        B("io")};
    static const val not_tasks[] = {S("t"),
                                    B("t"),
                                    U(1),
                                    K('E'),
                                    K('I'),
                                    K('X'),
                                    TASKS("t", ZP__PROTO_MAX_TASKS + 1)};
    size_t n = 0;
#define ADD(list)                                             \
    for (size_t i = 0; i < sizeof list / sizeof list[0]; i++) \
    out[n++] = list[i]
    ADD(any);
    if (strchr("UWPF", kind) != NULL)
        ADD(not_uint);
    if (strchr("WPF", kind) != NULL)
        ADD(not_u32);
    if (kind == 'P')
        out[n++] = (val)U(0);
    if (kind == 'F') {
        out[n++] = (val)U(4);
        out[n++] = (val)U(0x80000000u);
    }
    if (strchr("SNBM", kind) != NULL)
        ADD(not_raw);
    if (kind == 'S' || kind == 'N')
        out[n++] = (val)B("x");
    if (kind == 'B' || kind == 'M')
        out[n++] = (val)S("x");
    if (kind == 'N')
        out[n++] = (val)S("");
    if (kind == 'M')
        out[n++] = (val)B("");
    if (kind == 'T')
        ADD(not_tasks);
    if (kind == 'O') {
        ADD(not_raw);
        ADD(not_pool);
    }
#undef ADD
    assert_true(n <= 16);
    return n;
}

/* One valid body of every type, with a variety of encodings. */
static size_t sample_bodies(msgpack_sbuffer sbs[16])
{
    static const char *const tasks[] = {"square", "x"};
    static char big[70000]; /* a bin32 */
    size_t n = 0;
    for (size_t i = 0; i < 16; i++)
        msgpack_sbuffer_init(&sbs[i]);
    zp__msg_hello(&sbs[n++], "host:1", 4242, 8, tasks, 2, NULL);
    zp__msg_hello(&sbs[n++], "host:2", 1, 1, tasks, 1, "gpu.a-1_B");
    zp__msg_hello(&sbs[n++], "", UINT32_MAX, UINT32_MAX, NULL, 0, NULL);
    zp__msg_ready(&sbs[n++], 300);
    zp__msg_stage(&sbs[n++], UINT64_MAX, 70000, "t", 3, 5, "\x92\x01\x02", 3);
    zp__msg_stage(&sbs[n++], 0, 0, "a task", 0, 0, NULL, 0);
    zp__msg_item(&sbs[n++], 1, 2, 3, "\x00\x01\x07", 3);
    zp__msg_item(&sbs[n++], 1ull << 40, 300, 1ull << 33, big, 300);
    zp__msg_out(&sbs[n++], ZP__OUT, 1, 2, 3, "\x00\x01\x07", 3, 0, 0, 0);
    zp__msg_out(&sbs[n++], ZP__DONE, 9, 9, 9, NULL, 0, 70000, 1, 1234);
    zp__msg_fail(&sbs[n++], 1, 2, 3, UINT64_MAX, "it broke", 5);
    zp__msg_heartbeat(&sbs[n++]);
    zp__msg_bye(&sbs[n++], "shutting down");
    zp__msg_item(&sbs[n++], 1, 1, 1, big, sizeof big);
    return n;
}

static void free_bodies(msgpack_sbuffer sbs[16])
{
    for (size_t i = 0; i < 16; i++)
        msgpack_sbuffer_destroy(&sbs[i]);
}

/* ---- Round trips --------------------------------------------------------- */

static void test_hello_round_trips_with_edge_values(void **state)
{
    (void)state;
    static const char *const tasks[] = {"square", "sum", "a\tb"};
    msgpack_sbuffer sb;
    decoded d;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(zp__msg_hello(&sb, "host:42", 42, 1, tasks, 3, NULL), 0);
    decode(&d, sb.data, sb.size);
    assert_msg(&d, &(zp__msg){.type = ZP__HELLO,
                              .str = "host:42",
                              .str_len = 7,
                              .pid = 42,
                              .credit = 1});
    assert_tasks(&d.m, tasks, 3);
    undecode(&d);
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(zp__msg_hello(&sb, "", 0, UINT32_MAX, NULL, 0, NULL), 0);
    decode(&d, sb.data, sb.size);
    assert_msg(&d, &(zp__msg){.type = ZP__HELLO, .credit = UINT32_MAX});
    assert_tasks(&d.m, NULL, 0);
    undecode(&d);
    msgpack_sbuffer_destroy(&sb);
}

static void test_hello_with_a_pool_round_trips(void **state)
{
    (void)state;
    static const char *const tasks[] = {"score"};
    static const char longest[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
    const char *pools[] = {"io", "0", "gpu.a-1_B", longest + 1};
    msgpack_sbuffer sb;
    decoded d;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(strlen(longest + 1), 64);
    for (size_t i = 0; i < sizeof pools / sizeof *pools; i++) {
        assert_int_equal(zp__msg_hello(&sb, "w:1", 1, 2, tasks, 1, pools[i]),
                         0);
        decode(&d, sb.data, sb.size);
        assert_msg(&d, &(zp__msg){.type = ZP__HELLO,
                                  .str = "w:1",
                                  .str_len = 3,
                                  .pid = 1,
                                  .credit = 2,
                                  .pool = pools[i],
                                  .pool_len = strlen(pools[i])});
        assert_tasks(&d.m, tasks, 1);
        undecode(&d);
        msgpack_sbuffer_clear(&sb);
    }
    msgpack_sbuffer_destroy(&sb);
}

/* A worker serves a stage whose task it announced, in the stage's pool when
 * the stage has one; a stage without a pool takes any worker. */
static void test_hello_says_which_stages_its_worker_serves(void **state)
{
    (void)state;
    static const char *const tasks[] = {"score", "fetch"};
    msgpack_sbuffer sb;
    decoded d;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(zp__msg_hello(&sb, "w", 1, 1, tasks, 2, "gpu"), 0);
    decode(&d, sb.data, sb.size);
    assert_true(zp__msg_serves(&d.m, "score", "gpu"));
    assert_true(zp__msg_serves(&d.m, "fetch", NULL));
    assert_false(zp__msg_serves(&d.m, "score", "cpu"));
    assert_false(zp__msg_serves(&d.m, "score", "gp"));
    assert_false(zp__msg_serves(&d.m, "score", "gpus"));
    assert_false(zp__msg_serves(&d.m, "other", "gpu"));
    assert_false(zp__msg_serves(&d.m, "scor", NULL));
    undecode(&d);
    msgpack_sbuffer_clear(&sb);
    assert_int_equal(zp__msg_hello(&sb, "w", 1, 1, tasks, 2, NULL), 0);
    decode(&d, sb.data, sb.size);
    assert_true(zp__msg_serves(&d.m, "score", NULL));
    assert_false(zp__msg_serves(&d.m, "score", "gpu"));
    undecode(&d);
    msgpack_sbuffer_destroy(&sb);
}

static void test_hello_with_the_most_tasks_allowed_round_trips(void **state)
{
    (void)state;
    const char **tasks = calloc(ZP__PROTO_MAX_TASKS, sizeof *tasks);
    msgpack_sbuffer sb;
    decoded d;
    assert_non_null(tasks);
    for (size_t i = 0; i < ZP__PROTO_MAX_TASKS; i++)
        tasks[i] = i % 2 ? "odd" : "a task with a longer name than most";
    msgpack_sbuffer_init(&sb);
    assert_int_equal(zp__msg_hello(&sb, "w", UINT32_MAX, 7, tasks,
                                   ZP__PROTO_MAX_TASKS, NULL),
                     0);
    decode(&d, sb.data, sb.size);
    assert_msg(&d, &(zp__msg){.type = ZP__HELLO,
                              .str = "w",
                              .str_len = 1,
                              .pid = UINT32_MAX,
                              .credit = 7});
    assert_tasks(&d.m, tasks, ZP__PROTO_MAX_TASKS);
    undecode(&d);
    msgpack_sbuffer_destroy(&sb);
    free(tasks);
}

static void test_ready_round_trips_with_edge_values(void **state)
{
    (void)state;
    static const uint32_t credits[] = {1, 127, 128, 65536, UINT32_MAX};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (size_t i = 0; i < sizeof credits / sizeof credits[0]; i++) {
        assert_int_equal(zp__msg_ready(&sb, credits[i]), 0);
        round_trip(&sb, &(zp__msg){.type = ZP__READY, .credit = credits[i]});
    }
    msgpack_sbuffer_destroy(&sb);
}

static void test_stage_round_trips_with_edge_values(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (uint32_t flags = 0; flags < 4; flags++) {
        assert_int_equal(zp__msg_stage(&sb, 0, 0, "t", flags, 0, NULL, 0), 0);
        round_trip(&sb, &(zp__msg){.type = ZP__STAGE,
                                   .str = "t",
                                   .str_len = 1,
                                   .flags = flags});
    }
    assert_int_equal(zp__msg_stage(&sb, UINT64_MAX, UINT32_MAX, "square",
                                   ZP__STAGE_SKIP, UINT32_MAX, "\x00\xc0", 2),
                     0);
    round_trip(&sb, &(zp__msg){.type = ZP__STAGE,
                               .run = UINT64_MAX,
                               .stage = UINT32_MAX,
                               .str = "square",
                               .str_len = 6,
                               .flags = ZP__STAGE_SKIP,
                               .retries = UINT32_MAX,
                               .data = "\x00\xc0",
                               .data_len = 2});
    msgpack_sbuffer_destroy(&sb);
}

static void test_item_round_trips_with_edge_values(void **state)
{
    (void)state;
    static char big[100000]; /* needs a bin32 header */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    memset(big, 0xc1, sizeof big);
    assert_int_equal(zp__msg_item(&sb, 0, 0, 0, "\x00", 1), 0);
    round_trip(&sb,
               &(zp__msg){.type = ZP__ITEM, .data = "\x00", .data_len = 1});
    assert_int_equal(
        zp__msg_item(&sb, UINT64_MAX, UINT32_MAX, UINT64_MAX, big, sizeof big),
        0);
    round_trip(&sb, &(zp__msg){.type = ZP__ITEM,
                               .run = UINT64_MAX,
                               .stage = UINT32_MAX,
                               .batch = UINT64_MAX,
                               .data = big,
                               .data_len = sizeof big});
    msgpack_sbuffer_destroy(&sb);
}

static void test_out_and_done_round_trip_with_edge_values(void **state)
{
    (void)state;
    static const int types[] = {ZP__OUT, ZP__DONE};
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    for (size_t i = 0; i < 2; i++) {
        int t = types[i];
        assert_int_equal(zp__msg_out(&sb, t, 0, 0, 0, NULL, 0, 0, 0, 0), 0);
        round_trip(&sb, &(zp__msg){.type = t});
        assert_int_equal(zp__msg_out(&sb, t, UINT64_MAX, UINT32_MAX, UINT64_MAX,
                                     "\x01\x02\x00", 3, UINT32_MAX, UINT32_MAX,
                                     UINT64_MAX - 1),
                         0);
        round_trip(&sb, &(zp__msg){.type = t,
                                   .run = UINT64_MAX,
                                   .stage = UINT32_MAX,
                                   .batch = UINT64_MAX,
                                   .data = "\x01\x02\x00",
                                   .data_len = 3,
                                   .retried = UINT32_MAX,
                                   .skipped = UINT32_MAX,
                                   .busy = UINT64_MAX - 1});
    }
    msgpack_sbuffer_destroy(&sb);
}

static void test_fail_round_trips_with_edge_values(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(zp__msg_fail(&sb, 0, 0, 0, 0, "", 0), 0);
    round_trip(&sb, &(zp__msg){.type = ZP__FAIL});
    assert_int_equal(zp__msg_fail(&sb, UINT64_MAX, UINT32_MAX, UINT64_MAX,
                                  UINT64_MAX, "task 'x': division by zero",
                                  123456789),
                     0);
    round_trip(&sb, &(zp__msg){.type = ZP__FAIL,
                               .run = UINT64_MAX,
                               .stage = UINT32_MAX,
                               .batch = UINT64_MAX,
                               .seq = UINT64_MAX,
                               .busy = 123456789,
                               .str = "task 'x': division by zero",
                               .str_len = 26});
    msgpack_sbuffer_destroy(&sb);
}

static void test_heartbeat_and_bye_round_trip(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(zp__msg_heartbeat(&sb), 0);
    round_trip(&sb, &(zp__msg){.type = ZP__HEARTBEAT});
    assert_int_equal(zp__msg_bye(&sb, ""), 0);
    round_trip(&sb, &(zp__msg){.type = ZP__BYE});
    assert_int_equal(zp__msg_bye(&sb, "run finished"), 0);
    round_trip(
        &sb, &(zp__msg){.type = ZP__BYE, .str = "run finished", .str_len = 12});
    msgpack_sbuffer_destroy(&sb);
}

static void test_strings_with_nul_bytes_decode_whole(void **state)
{
    (void)state;
    /* The encoders take C strings; a peer may send any bytes. */
    msgpack_sbuffer sb;
    decoded d;
    const val hello[] = {S("a\0b"), U(1), U(1), TASKS("t", 1)};
    const val stage[] = {U(1), U(1), S("\0"), U(0), U(0), B("")};
    const val fail[] = {U(1), U(1), U(1), U(1), S("x\0y\0")};
    const val bye[] = {S("\0\0")};
    pack_body(&sb, 1, ZP__HELLO, hello, 4);
    decode(&d, sb.data, sb.size);
    assert_msg(&d, &(zp__msg){.type = ZP__HELLO,
                              .str = "a\0b",
                              .str_len = 3,
                              .pid = 1,
                              .credit = 1});
    undecode(&d);
    msgpack_sbuffer_destroy(&sb);
    pack_body(&sb, 1, ZP__STAGE, stage, 6);
    round_trip(&sb, &(zp__msg){.type = ZP__STAGE,
                               .run = 1,
                               .stage = 1,
                               .str = "\0",
                               .str_len = 1});
    msgpack_sbuffer_destroy(&sb);
    pack_body(&sb, 1, ZP__FAIL, fail, 5);
    round_trip(&sb, &(zp__msg){.type = ZP__FAIL,
                               .run = 1,
                               .stage = 1,
                               .batch = 1,
                               .seq = 1,
                               .busy = ZP__BUSY_UNSAID, /* an older peer */
                               .str = "x\0y\0",
                               .str_len = 4});
    msgpack_sbuffer_destroy(&sb);
    pack_body(&sb, 1, ZP__BYE, bye, 1);
    round_trip(&sb, &(zp__msg){.type = ZP__BYE, .str = "\0\0", .str_len = 2});
    msgpack_sbuffer_destroy(&sb);
}

static void test_any_unsigned_encoding_of_a_field_is_accepted(void **state)
{
    (void)state;
    /* READY credit 5 as uint8, uint16, uint32, uint64, and int8/int64
     * holding a non-negative value: msgpack allows any of them. */
    static const char *const bodies[] = {
        "\x93\x01\x02\xcc\x05",
        "\x93\x01\x02\xcd\x00\x05",
        "\x93\x01\x02\xce\x00\x00\x00\x05",
        "\x93\x01\x02\xcf\x00\x00\x00\x00\x00\x00\x00\x05",
        "\x93\x01\x02\xd0\x05",
        "\x93\x01\x02\xd3\x00\x00\x00\x00\x00\x00\x00\x05",
        "\xdc\x00\x03\x01\x02\x05", /* array16 */
    };
    static const size_t lens[] = {5, 6, 8, 12, 5, 12, 6};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        decoded d;
        decode(&d, bodies[i], lens[i]);
        assert_msg(&d, &(zp__msg){.type = ZP__READY, .credit = 5});
        undecode(&d);
    }
}

static void test_the_bytes_on_the_wire_are_as_documented(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    /* [1, 8] */
    assert_int_equal(zp__msg_heartbeat(&sb), 0);
    assert_int_equal(sb.size, 3);
    assert_memory_equal(sb.data, "\x92\x01\x08", 3);
    msgpack_sbuffer_clear(&sb);
    /* [1, 2, 200]: integers take their smallest encoding */
    assert_int_equal(zp__msg_ready(&sb, 200), 0);
    assert_int_equal(sb.size, 5);
    assert_memory_equal(sb.data, "\x93\x01\x02\xcc\xc8", 5);
    msgpack_sbuffer_clear(&sb);
    /* [1, 4, 7, 0, 9, bin "\x00\x01\x01"] */
    assert_int_equal(zp__msg_item(&sb, 7, 0, 9, "\x00\x01\x01", 3), 0);
    assert_int_equal(sb.size, 11);
    assert_memory_equal(sb.data, "\x96\x01\x04\x07\x00\x09\xc4\x03\x00\x01\x01",
                        11);
    msgpack_sbuffer_clear(&sb);
    /* [1, 1, "w", 7, 1, ["t"]]: a HELLO without a pool has 4 fields */
    static const char *const t[] = {"t"};
    assert_int_equal(zp__msg_hello(&sb, "w", 7, 1, t, 1, NULL), 0);
    assert_int_equal(sb.size, 10);
    assert_memory_equal(sb.data, "\x96\x01\x01\xa1w\x07\x01\x91\xa1t", 10);
    msgpack_sbuffer_clear(&sb);
    /* [1, 1, "w", 7, 1, ["t"], "io"]: with one, 5 */
    assert_int_equal(zp__msg_hello(&sb, "w", 7, 1, t, 1, "io"), 0);
    assert_int_equal(sb.size, 13);
    assert_memory_equal(sb.data, "\x97\x01\x01\xa1w\x07\x01\x91\xa1t\xa2io",
                        13);
    msgpack_sbuffer_clear(&sb);
    /* [1, 9, "ok"] */
    assert_int_equal(zp__msg_bye(&sb, "ok"), 0);
    assert_int_equal(sb.size, 6);
    assert_memory_equal(sb.data, "\x93\x01\x09\xa2ok", 6);
    msgpack_sbuffer_destroy(&sb);
}

static void test_encoders_append_after_what_the_buffer_holds(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    decoded d;
    msgpack_sbuffer_init(&sb);
    assert_int_equal(zp__msg_heartbeat(&sb), 0);
    assert_int_equal(zp__msg_ready(&sb, 3), 0);
    assert_int_equal(sb.size, 7);
    assert_memory_equal(sb.data, "\x92\x01\x08", 3);
    decode(&d, sb.data + 3, sb.size - 3);
    assert_msg(&d, &(zp__msg){.type = ZP__READY, .credit = 3});
    undecode(&d);
    msgpack_sbuffer_destroy(&sb);
}

static void test_every_type_has_a_name(void **state)
{
    (void)state;
    static const char *const names[] = {
        NULL,  "HELLO", "READY", "STAGE",     "ITEM",
        "OUT", "DONE",  "FAIL",  "HEARTBEAT", "BYE",
    };
    for (int t = ZP__HELLO; t <= ZP__BYE; t++)
        assert_string_equal(zp__msg_type_name(t), names[t]);
    assert_string_equal(zp__msg_type_name(0), "unknown");
    assert_string_equal(zp__msg_type_name(10), "unknown");
    assert_string_equal(zp__msg_type_name(-1), "unknown");
}

/* ---- Rejections ---------------------------------------------------------- */

static void test_each_field_of_the_wrong_type_or_range_is_rejected(void **state)
{
    (void)state;
    size_t cases = 0;
    for (size_t l = 0; l < NLAYOUTS; l++) {
        const layout *ly = &layouts[l];
        size_t n = strlen(ly->kinds);
        msgpack_sbuffer sb;
        /* The good body passes, so only the bad field can fail the rest. */
        pack_body(&sb, 1, (uint64_t)ly->type, ly->good, n);
        decoded d;
        assert_int_equal(decode(&d, sb.data, sb.size), 0);
        assert_int_equal(d.m.type, ly->type);
        undecode(&d);
        msgpack_sbuffer_destroy(&sb);
        for (size_t f = 0; f < n; f++) {
            val bad[16], vals[7];
            size_t nbad = wrong_values(ly->kinds[f], bad);
            char want[64];
            snprintf(want, sizeof want, "%s: field '%s'", ly->name,
                     ly->fields[f]);
            for (size_t b = 0; b < nbad; b++, cases++) {
                memcpy(vals, ly->good, sizeof vals);
                vals[f] = bad[b];
                pack_body(&sb, 1, (uint64_t)ly->type, vals, n);
                expect_rejected(sb.data, sb.size, want);
                msgpack_sbuffer_destroy(&sb);
            }
        }
    }
    assert_true(cases > 200);
}

static void test_missing_and_extra_fields_are_rejected(void **state)
{
    (void)state;
    for (size_t l = 0; l < NLAYOUTS; l++) {
        const layout *ly = &layouts[l];
        size_t n = strlen(ly->kinds);
        val vals[8];
        char want[64];
        msgpack_sbuffer sb;
        snprintf(want, sizeof want, "%s: expected", ly->name);
        memcpy(vals, ly->good, sizeof ly->good);
        /* Every shorter list of fields, down to none, but those that
         * only leave optional fields out. */
        for (size_t k = 0; k < n; k++) {
            decoded d;
            pack_body(&sb, 1, (uint64_t)ly->type, vals, k);
            if (k < n - ly->optional) {
                expect_rejected(sb.data, sb.size, want);
            } else {
                assert_int_equal(decode(&d, sb.data, sb.size), 0);
                undecode(&d);
            }
            msgpack_sbuffer_destroy(&sb);
        }
        /* One more field, of the kind of the last one or a nil. */
        vals[n] = n > 0 ? vals[n - 1] : (val)U(0);
        pack_body(&sb, 1, (uint64_t)ly->type, vals, n + 1);
        expect_rejected(sb.data, sb.size, want);
        msgpack_sbuffer_destroy(&sb);
        vals[n] = (val)K('n');
        pack_body(&sb, 1, (uint64_t)ly->type, vals, n + 1);
        expect_rejected(sb.data, sb.size, want);
        msgpack_sbuffer_destroy(&sb);
    }
}

static void test_wrong_protocol_versions_are_rejected(void **state)
{
    (void)state;
    static const struct {
        uint64_t version;
        const char *why;
    } cases[] = {
        {0, "wrong protocol version 0 (this side speaks 1)"},
        {2, "wrong protocol version 2 (this side speaks 1)"},
        {9, "wrong protocol version 9 (this side speaks 1)"},
        {10, "wrong protocol version 10 or more (this side speaks 1)"},
        {UINT64_MAX, "wrong protocol version 10 or more (this side speaks 1)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        msgpack_sbuffer sb;
        decoded d;
        pack_body(&sb, cases[i].version, ZP__HEARTBEAT, NULL, 0);
        assert_int_equal(decode(&d, sb.data, sb.size), ZP_EPROTO);
        assert_string_equal(d.why, cases[i].why);
        undecode(&d);
        msgpack_sbuffer_destroy(&sb);
    }
    /* A version that is not an unsigned integer. */
    expect_rejected("\x92\xff\x08", 3, "message does not start with");
    expect_rejected("\x92\xa1\x31\x08", 4, "message does not start with");
    expect_rejected("\x92\xc0\x08", 3, "message does not start with");
    expect_rejected("\x92\xc3\x08", 3, "message does not start with");
}

static void test_unknown_message_types_are_rejected(void **state)
{
    (void)state;
    static const uint64_t types[] = {0, 10, 11, 127, 255, 65536, UINT64_MAX};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        msgpack_sbuffer sb;
        pack_body(&sb, 1, types[i], NULL, 0);
        expect_rejected(sb.data, sb.size, "unknown message type");
        msgpack_sbuffer_destroy(&sb);
    }
    expect_rejected("\x92\x01\xff", 3, "message has no type");
    expect_rejected("\x92\x01\xa1\x38", 4, "message has no type");
    expect_rejected("\x92\x01\xc0", 3, "message has no type");
}

static void test_bodies_that_are_not_messages_are_rejected(void **state)
{
    (void)state;
    msgpack_zone zone = {0}; /* never touched: nothing to unpack */
    zp__msg m;
    const char *why = NULL;
    assert_int_equal(zp__msg_decode(NULL, 0, &zone, &m, &why), ZP_EPROTO);
    assert_string_equal(why, "not one msgpack value (truncated, nested "
                             "deeper than 32, or sizes larger than the "
                             "message)");
    expect_rejected("", 0, "not one msgpack value");
    expect_rejected("\xc1", 1, "not one msgpack value");
    expect_rejected("\x08", 1, "message is not a msgpack array");
    expect_rejected("\xc0", 1, "message is not a msgpack array");
    expect_rejected("\xa2\x01\x08", 3, "message is not a msgpack array");
    expect_rejected("\x81\x01\x08", 3, "message is not a msgpack array");
    expect_rejected("\x90", 1, "message does not start with");
    expect_rejected("\x91\x01", 2, "message has no type");
}

static void test_trailing_bytes_are_rejected(void **state)
{
    (void)state;
    msgpack_sbuffer sbs[16];
    size_t n = sample_bodies(sbs);
    for (size_t i = 0; i < n; i++) {
        msgpack_sbuffer *sb = &sbs[i];
        size_t len = sb->size;
        /* A byte, then a whole second message. */
        assert_int_equal(msgpack_sbuffer_write(sb, "\x00", 1), 0);
        expect_rejected(sb->data, sb->size, "bytes after the message");
        assert_int_equal(zp__msg_heartbeat(sb), 0);
        expect_rejected(sb->data, sb->size, "bytes after the message");
        expect_rejected(sb->data, len + 1, "bytes after the message");
    }
    free_bodies(sbs);
}

static void test_every_truncation_of_every_message_is_rejected(void **state)
{
    (void)state;
    msgpack_sbuffer sbs[16];
    size_t n = sample_bodies(sbs);
    assert_true(n >= 12);
    for (size_t i = 0; i < n; i++) {
        decoded d;
        assert_int_equal(decode(&d, sbs[i].data, sbs[i].size), 0);
        undecode(&d);
        /* The big ITEM is checked at its first and last cuts only. */
        size_t len = sbs[i].size;
        for (size_t k = 0; k < len; k++)
            if (len < 1000 || k < 100 || k > len - 100)
                expect_rejected(sbs[i].data, k, NULL);
    }
    free_bodies(sbs);
}

/* An ITEM of exactly `len` bytes, in sb. */
static void item_of_size(msgpack_sbuffer *sb, size_t len)
{
    /* array, version, type, run, stage, batch: 6 bytes; bin32 header: 5 */
    size_t payload = len - 11;
    char *items = calloc(payload, 1);
    assert_non_null(items);
    msgpack_sbuffer_init(sb);
    assert_int_equal(zp__msg_item(sb, 1, 2, 3, items, payload), 0);
    assert_int_equal(sb->size, len);
    free(items);
}

static void test_a_body_at_the_size_limit_is_accepted(void **state)
{
    (void)state;
    msgpack_sbuffer sb;
    decoded d;
    item_of_size(&sb, ZP__PROTO_MAX_MSG);
    assert_int_equal(decode(&d, sb.data, sb.size), 0);
    assert_int_equal(d.m.data_len, ZP__PROTO_MAX_MSG - 11);
    undecode(&d);
    /* One byte more is refused for its size, before any other check. */
    assert_int_equal(msgpack_sbuffer_write(&sb, "", 1), 0);
    expect_rejected(sb.data, sb.size, "message larger than 64 MiB");
    msgpack_sbuffer_destroy(&sb);
}

static void test_a_body_over_the_size_limit_is_refused_unread(void **state)
{
    (void)state;
    /* An unreadable mapping: a decoder that reads a byte of it crashes. */
    size_t len = ZP__PROTO_MAX_MSG + 1;
    void *body = mmap(NULL, len, PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    msgpack_zone zone;
    zp__msg m;
    const char *why = NULL;
    if (body == MAP_FAILED)
        skip();
    assert_true(msgpack_zone_init(&zone, 256));
    assert_int_equal(zp__msg_decode(body, len, &zone, &m, &why), ZP_EPROTO);
    assert_string_equal(why, "message larger than 64 MiB");
    assert_int_equal(zp__msg_decode(body, SIZE_MAX, &zone, &m, &why),
                     ZP_EPROTO);
    assert_string_equal(why, "message larger than 64 MiB");
    msgpack_zone_destroy(&zone);
    munmap(body, len);
}

static void test_encoders_refuse_bodies_over_the_size_limit(void **state)
{
    (void)state;
    size_t len = ZP__PROTO_MAX_MSG - 10; /* fits a bin, not a message */
    char *big = calloc(len, 1);
    msgpack_sbuffer sb;
    assert_non_null(big);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(zp__msg_heartbeat(&sb), 0);
    assert_int_equal(zp__msg_item(&sb, 1, 2, 3, big, len), ZP_EINVAL);
    assert_int_equal(zp__msg_out(&sb, ZP__DONE, 1, 2, 3, big, len, 0, 0, 0),
                     ZP_EINVAL);
    assert_int_equal(zp__msg_stage(&sb, 1, 2, "t", 0, 0, big, len), ZP_EINVAL);
    /* Lengths msgpack cannot even express are refused unread. */
    assert_int_equal(zp__msg_item(&sb, 1, 2, 3, big, SIZE_MAX), ZP_EINVAL);
    assert_int_equal(zp__msg_item(&sb, 1, 2, 3, big, (size_t)UINT32_MAX + 2),
                     ZP_EINVAL);
    /* The buffer still holds exactly what it held. */
    assert_int_equal(sb.size, 3);
    assert_memory_equal(sb.data, "\x92\x01\x08", 3);
    msgpack_sbuffer_destroy(&sb);
    free(big);
}

static void test_deep_nesting_is_rejected(void **state)
{
    (void)state;
    /* HELLO whose tasks field is nested: 30 deep, within the parser's
     * stack, so the field check rejects it; 10000 deep, refused by the
     * structure check before the parser; and an empty array below 32
     * levels, which the structure check lets through (it counts only
     * containers with elements) and msgpack-c's stack refuses. */
    static const struct {
        int depth;
        const char *last;
        const char *why;
    } cases[] = {
        {30, "\xa1t", "HELLO: field 'tasks'"},
        {10000, "\xa1t", "not one msgpack value"},
        {31, "\x90", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        msgpack_sbuffer sb;
        const val head[] = {S("w"), U(1), U(1)};
        pack_body(&sb, 1, ZP__HELLO, head, 3);
        sb.data[0] = (char)0x96; /* four fields after all */
        for (int k = 0; k < cases[i].depth; k++)
            assert_int_equal(msgpack_sbuffer_write(&sb, "\x91", 1), 0);
        assert_int_equal(
            msgpack_sbuffer_write(&sb, cases[i].last, strlen(cases[i].last)),
            0);
        expect_rejected(sb.data, sb.size, cases[i].why);
        msgpack_sbuffer_destroy(&sb);
    }
}

/*
 * Bytes in use in the zone's newest chunk (its header included). A chunk is
 * allocated for any request larger than the free space, so a big request
 * shows here.
 */
static size_t zone_in_use(const msgpack_zone *z)
{
    return (size_t)(z->chunk_list.ptr - (const char *)z->chunk_list.head);
}

static void
test_huge_declared_sizes_are_refused_without_allocating(void **state)
{
    (void)state;
    /* A few bytes that announce millions of elements or gigabytes of
     * string: msgpack-c would allocate the elements before reading one. */
    static const struct {
        const char *bytes;
        size_t len;
    } cases[] = {
        {"\x96\x01\x01\xa1w\x01\x01\xdd\x01\x00\x00\x00", 12}, /* tasks */
        {"\xdd\xff\xff\xff\xff\x01\x08", 7},                   /* body */
        {"\xdf\x00\x80\x00\x00\x01\x08", 7},                   /* map */
        {"\x93\x01\x09\xdb\xff\xff\xff\xff", 8},               /* str32 */
        {"\x96\x01\x04\x01\x01\x01\xc6\xff\xff\xff\xf0", 11},  /* bin32 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[64];
        decoded d;
        memset(body, 0x01, sizeof body);
        memcpy(body, cases[i].bytes, cases[i].len);
        assert_int_equal(decode(&d, body, sizeof body), ZP_EPROTO);
        assert_string_equal(d.why, "not one msgpack value (truncated, nested "
                                   "deeper than 32, or sizes larger than the "
                                   "message)");
        size_t used = zone_in_use(d.zone);
        undecode(&d);
        if (used > 4096)
            fail_msg("case %zu: a 64-byte body made the decoder allocate %zu "
                     "bytes",
                     i, used);
    }
}

static void test_a_zone_grows_by_a_small_multiple_of_the_body(void **state)
{
    (void)state;
    /* The worst case: a body of one-byte elements. */
    enum { N = 100000 };
    msgpack_sbuffer sb;
    msgpack_packer pk;
    decoded d;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3 + N);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_uint8(&pk, ZP__HELLO);
    for (int i = 0; i < N + 1; i++)
        msgpack_pack_nil(&pk);
    assert_int_equal(decode(&d, sb.data, sb.size), ZP_EPROTO);
    assert_string_equal(d.why, "HELLO: expected 4 or 5 fields: name, pid, "
                               "capacity, tasks[, pool]");
    assert_true(zone_in_use(d.zone) <= 32 * sb.size);
    undecode(&d);
    msgpack_sbuffer_destroy(&sb);
}

static void test_random_bytes_never_crash_the_decoder(void **state)
{
    (void)state;
    uint64_t s = 0x5eed5eed12345678ULL;
    int accepted = 0;
    for (int k = 0; k < 5000; k++) {
        size_t n = (size_t)(next_random(&s) % 40);
        unsigned char data[40];
        if (k % 4 == 1) /* short, so that some are whole messages */
            n = 3 + (size_t)(next_random(&s) % 3);
        for (size_t i = 0; i < n; i++)
            data[i] = (unsigned char)next_random(&s);
        /* Most get a plausible start, so that the field checks run. */
        if (n >= 3 && k % 4 != 0) {
            data[0] = (unsigned char)(0x92 + next_random(&s) % 5);
            data[1] = 1;
            data[2] = (unsigned char)(1 + next_random(&s) % 9);
        }
        decoded d;
        if (decode(&d, data, n) == 0) {
            accepted++;
            assert_in_body(&d, d.m.str, d.m.str_len);
            assert_in_body(&d, d.m.data, d.m.data_len);
            assert_string_not_equal(zp__msg_type_name(d.m.type), "unknown");
        }
        undecode(&d);
    }
    /* A few random buffers are valid messages; most are not. */
    assert_true(accepted > 0);
    assert_true(accepted < 5000);
}

static void test_mutated_messages_never_crash_the_decoder(void **state)
{
    (void)state;
    uint64_t s = 42;
    msgpack_sbuffer sbs[16];
    size_t nb = sample_bodies(sbs) - 1; /* not the big ITEM */
    int accepted = 0;
    for (int k = 0; k < 5000; k++) {
        const msgpack_sbuffer *sb = &sbs[k % nb];
        size_t n = sb->size - (size_t)(next_random(&s) % 2);
        char *data = malloc(n);
        assert_non_null(data);
        memcpy(data, sb->data, n);
        for (int flips = 1 + (int)(next_random(&s) % 3); flips > 0; flips--)
            data[next_random(&s) % n] ^= (char)(1u << (next_random(&s) % 8));
        decoded d;
        accepted += decode(&d, data, n) == 0;
        undecode(&d);
        free(data);
    }
    assert_true(accepted > 0);
    assert_true(accepted < 5000);
    free_bodies(sbs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_round_trips_with_edge_values),
        cmocka_unit_test(test_hello_with_a_pool_round_trips),
        cmocka_unit_test(test_hello_says_which_stages_its_worker_serves),
        cmocka_unit_test(test_hello_with_the_most_tasks_allowed_round_trips),
        cmocka_unit_test(test_ready_round_trips_with_edge_values),
        cmocka_unit_test(test_stage_round_trips_with_edge_values),
        cmocka_unit_test(test_item_round_trips_with_edge_values),
        cmocka_unit_test(test_out_and_done_round_trip_with_edge_values),
        cmocka_unit_test(test_fail_round_trips_with_edge_values),
        cmocka_unit_test(test_heartbeat_and_bye_round_trip),
        cmocka_unit_test(test_strings_with_nul_bytes_decode_whole),
        cmocka_unit_test(test_any_unsigned_encoding_of_a_field_is_accepted),
        cmocka_unit_test(test_the_bytes_on_the_wire_are_as_documented),
        cmocka_unit_test(test_encoders_append_after_what_the_buffer_holds),
        cmocka_unit_test(test_every_type_has_a_name),
        cmocka_unit_test(
            test_each_field_of_the_wrong_type_or_range_is_rejected),
        cmocka_unit_test(test_missing_and_extra_fields_are_rejected),
        cmocka_unit_test(test_wrong_protocol_versions_are_rejected),
        cmocka_unit_test(test_unknown_message_types_are_rejected),
        cmocka_unit_test(test_bodies_that_are_not_messages_are_rejected),
        cmocka_unit_test(test_trailing_bytes_are_rejected),
        cmocka_unit_test(test_every_truncation_of_every_message_is_rejected),
        cmocka_unit_test(test_a_body_at_the_size_limit_is_accepted),
        cmocka_unit_test(test_a_body_over_the_size_limit_is_refused_unread),
        cmocka_unit_test(test_encoders_refuse_bodies_over_the_size_limit),
        cmocka_unit_test(test_deep_nesting_is_rejected),
        cmocka_unit_test(
            test_huge_declared_sizes_are_refused_without_allocating),
        cmocka_unit_test(test_a_zone_grows_by_a_small_multiple_of_the_body),
        cmocka_unit_test(test_random_bytes_never_crash_the_decoder),
        cmocka_unit_test(test_mutated_messages_never_crash_the_decoder),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
