/* SPDX-License-Identifier: MIT */
/*
 * The wire protocol, see proto.h and docs/protocol.md. One table gives the
 * layout of every message type: the encoders take their field counts from
 * it and the decoder checks each field of a body against it. Part of
 * transport; pure bytes, no sockets. The decoder must never trust a body:
 * whatever the bytes, it answers 0 or ZP_EPROTO with a static reason, it
 * checks the structure before msgpack-c allocates anything, and the zone
 * grows by a small multiple of the body's length at most.
 */
#include "transport/proto.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

#include "core/pipeline.h"
#include "transport/batch.h"

#define STR_(x) #x
#define XSTR(x) STR_(x)

_Static_assert(ZP__PROTO_MAX_MSG == (size_t)64 << 20,
               "the reason for an oversized message says 64 MiB");

/* ---- Layouts ------------------------------------------------------------- */

/* What a field must hold. */
enum kind {
    UINT,      /* an unsigned integer that fits its member          */
    UINT_POS,  /* the same, at least 1                              */
    FLAGS,     /* the same, with only ZP__STAGE_* bits set          */
    STR,       /* a str, maybe empty: str, str_len                  */
    STR_FULL,  /* a non-empty str: str, str_len                     */
    BIN,       /* a bin, maybe empty: data, data_len                */
    BIN_FULL,  /* a non-empty bin: data, data_len                   */
    TASK_LIST, /* an array of non-empty strs, at most MAX_TASKS     */
    POOL,      /* a str that names a pool: pool, pool_len           */
};

typedef struct field {
    enum kind kind;
    size_t off;      /* UINT*, FLAGS: the member of zp__msg it goes to */
    size_t width;    /* and its size: 4 or 8 bytes                     */
    const char *why; /* the reason when a body gets it wrong           */
} field;

#define F(kind, member, why)                                                 \
    {                                                                        \
        kind, offsetof(zp__msg, member), sizeof(((zp__msg *)0)->member), why \
    }

/* Fields shared by the messages about a batch, prefixed by the type. */
#define RUN(T) F(UINT, run, T ": field 'run' must be an unsigned integer")
#define STAGE_NO(T) \
    F(UINT, stage, T ": field 'stage' must be an unsigned 32-bit integer")
#define BATCH(T) F(UINT, batch, T ": field 'batch' must be an unsigned integer")
#define U32(T, member) \
    F(UINT, member,    \
      T ": field '" #member "' must be an unsigned 32-bit integer")

static const field hello_fields[] = {
    F(STR, str, "HELLO: field 'name' must be a string"),
    U32("HELLO", pid),
    F(UINT_POS, credit,
      "HELLO: field 'capacity' must be an unsigned 32-bit integer >= 1"),
    F(TASK_LIST, tasks,
      "HELLO: field 'tasks' must be an array of at most " XSTR(
          ZP__PROTO_MAX_TASKS) " non-empty strings"),
    F(POOL, pool,
      "HELLO: field 'pool' must be a string of 1 to " XSTR(
          ZP__POOL_MAX) " characters of A-Z a-z 0-9 _ . -"),
};

static const field ready_fields[] = {
    F(UINT_POS, credit,
      "READY: field 'credit' must be an unsigned 32-bit integer >= 1"),
};

static const field stage_fields[] = {
    RUN("STAGE"),
    STAGE_NO("STAGE"),
    F(STR_FULL, str, "STAGE: field 'task' must be a non-empty string"),
    F(FLAGS, flags,
      "STAGE: field 'flags' must be an unsigned integer of known bits"),
    U32("STAGE", retries),
    F(BIN, data, "STAGE: field 'bind' must be a bin"),
};

static const field item_fields[] = {
    RUN("ITEM"),
    STAGE_NO("ITEM"),
    BATCH("ITEM"),
    F(BIN_FULL, data, "ITEM: field 'items' must be a non-empty bin"),
};

#define BUSY(T) F(UINT, busy, T ": field 'busy' must be an unsigned integer")

#define OUTPUTS(T)                                             \
    {                                                          \
        RUN(T), STAGE_NO(T), BATCH(T),                         \
            F(BIN, data, T ": field 'outputs' must be a bin"), \
            U32(T, retried), U32(T, skipped), BUSY(T),         \
    }

static const field out_fields[] = OUTPUTS("OUT");
static const field done_fields[] = OUTPUTS("DONE");

static const field fail_fields[] = {
    RUN("FAIL"),
    STAGE_NO("FAIL"),
    BATCH("FAIL"),
    F(UINT, seq, "FAIL: field 'seq' must be an unsigned integer"),
    F(STR, str, "FAIL: field 'message' must be a string"),
    BUSY("FAIL"),
};

static const field bye_fields[] = {
    F(STR, str, "BYE: field 'reason' must be a string"),
};

typedef struct layout {
    const char *name;
    const field *fields; /* after the version and the type */
    size_t n;
    size_t optional; /* the last ones a body may leave out */
    const char *why; /* the reason when a body has another count */
} layout;

#define L(name, fields, why)                                 \
    {                                                        \
        name, fields, sizeof fields / sizeof *fields, 0, why \
    }
/* The last field is optional: older workers do not send it. */
#define L_OPT(name, fields, why)                             \
    {                                                        \
        name, fields, sizeof fields / sizeof *fields, 1, why \
    }

static const layout layouts[] = {
    [ZP__HELLO] = {"HELLO", hello_fields,
                   sizeof hello_fields / sizeof *hello_fields, 1,
                   "HELLO: expected 4 or 5 fields: name, pid, capacity, "
                   "tasks[, pool]"},
    [ZP__READY] = L("READY", ready_fields, "READY: expected 1 field: credit"),
    [ZP__STAGE] = L("STAGE", stage_fields,
                    "STAGE: expected 6 fields: run, stage, task, flags, "
                    "retries, bind"),
    [ZP__ITEM] = L("ITEM", item_fields,
                   "ITEM: expected 4 fields: run, stage, batch, items"),
    [ZP__OUT] = L_OPT("OUT", out_fields,
                      "OUT: expected 6 or 7 fields: run, stage, batch, "
                      "outputs, retried, skipped[, busy]"),
    [ZP__DONE] = L_OPT("DONE", done_fields,
                       "DONE: expected 6 or 7 fields: run, stage, batch, "
                       "outputs, retried, skipped[, busy]"),
    [ZP__FAIL] = L_OPT("FAIL", fail_fields,
                       "FAIL: expected 5 or 6 fields: run, stage, batch, seq, "
                       "message[, busy]"),
    [ZP__HEARTBEAT] = {"HEARTBEAT", NULL, 0, 0,
                       "HEARTBEAT: expected no fields"},
    [ZP__BYE] = L("BYE", bye_fields, "BYE: expected 1 field: reason"),
};

#define NLAYOUTS (sizeof layouts / sizeof *layouts)

static const layout *layout_of(uint64_t type)
{
    return type < NLAYOUTS && layouts[type].name != NULL ? &layouts[type]
                                                         : NULL;
}

const char *zp__msg_type_name(int type)
{
    const layout *l = type >= 0 ? layout_of((uint64_t)type) : NULL;
    return l != NULL ? l->name : "unknown";
}

/* ---- Encoding ------------------------------------------------------------ */

/* A message being appended to sb. */
typedef struct enc {
    msgpack_sbuffer *sb;
    msgpack_packer pk;
    size_t start;   /* sb->size before the message  */
    bool failed;    /* msgpack-c ran out of memory  */
    bool too_large; /* over ZP__PROTO_MAX_MSG       */
} enc;

static void put_uint(enc *e, uint64_t v)
{
    if (!e->failed && !e->too_large)
        e->failed = msgpack_pack_uint64(&e->pk, v) != 0;
}

/*
 * Packs a str or bin. A length that cannot fit a message is refused before
 * msgpack-c sees it (it would cut lengths over 2^32 to 32 bits).
 */
static void put_raw(enc *e, bool bin, const void *p, size_t n)
{
    e->too_large = e->too_large || n > ZP__PROTO_MAX_MSG;
    if (e->failed || e->too_large)
        return;
    e->failed = (bin ? msgpack_pack_bin(&e->pk, n)
                     : msgpack_pack_str(&e->pk, n)) != 0 ||
                (n > 0 && (bin ? msgpack_pack_bin_body(&e->pk, p, n)
                               : msgpack_pack_str_body(&e->pk, p, n)) != 0);
}

static void put_str(enc *e, const char *s)
{
    assert(s != NULL);
    put_raw(e, false, s, strlen(s));
}

/* Starts a message of `type` with `omitted` of its optional fields left
 * out. */
static void start_less(enc *e, msgpack_sbuffer *sb, int type, size_t omitted)
{
    const layout *l = layout_of((uint64_t)type);
    assert(sb != NULL && l != NULL && omitted <= l->optional);
    *e = (enc){.sb = sb, .start = sb->size};
    msgpack_packer_init(&e->pk, sb, msgpack_sbuffer_write);
    e->failed = msgpack_pack_array(&e->pk, 2 + l->n - omitted) != 0;
    put_uint(e, ZP__PROTO_VERSION);
    put_uint(e, (uint64_t)type);
}

static void start(enc *e, msgpack_sbuffer *sb, int type)
{
    start_less(e, sb, type, 0);
}

/* Ends the message; on failure sb is left as it was. */
static int finish(enc *e)
{
    if (!e->failed && !e->too_large &&
        e->sb->size - e->start <= ZP__PROTO_MAX_MSG)
        return 0;
    e->sb->size = e->start;
    return e->failed ? ZP_ENOMEM : ZP_EINVAL;
}

int zp__msg_hello(msgpack_sbuffer *sb, const char *name, uint32_t pid,
                  uint32_t capacity, const char *const *tasks, size_t ntasks,
                  const char *pool)
{
    enc e;
    assert(tasks != NULL || ntasks == 0);
    start_less(&e, sb, ZP__HELLO, pool == NULL);
    put_str(&e, name);
    put_uint(&e, pid);
    put_uint(&e, capacity);
    e.too_large = e.too_large || ntasks > ZP__PROTO_MAX_MSG;
    if (!e.failed && !e.too_large)
        e.failed = msgpack_pack_array(&e.pk, ntasks) != 0;
    for (size_t i = 0; i < ntasks && !e.failed && !e.too_large; i++)
        put_str(&e, tasks[i]);
    if (pool != NULL)
        put_str(&e, pool);
    return finish(&e);
}

int zp__msg_ready(msgpack_sbuffer *sb, uint32_t credit)
{
    enc e;
    start(&e, sb, ZP__READY);
    put_uint(&e, credit);
    return finish(&e);
}

int zp__msg_stage(msgpack_sbuffer *sb, uint64_t run, uint32_t stage,
                  const char *task, uint32_t flags, uint32_t retries,
                  const void *bind, size_t bind_len)
{
    enc e;
    assert(bind != NULL || bind_len == 0);
    start(&e, sb, ZP__STAGE);
    put_uint(&e, run);
    put_uint(&e, stage);
    put_str(&e, task);
    put_uint(&e, flags);
    put_uint(&e, retries);
    put_raw(&e, true, bind, bind_len);
    return finish(&e);
}

int zp__msg_item(msgpack_sbuffer *sb, uint64_t run, uint32_t stage,
                 uint64_t batch, const void *items, size_t len)
{
    enc e;
    assert(items != NULL || len == 0);
    start(&e, sb, ZP__ITEM);
    put_uint(&e, run);
    put_uint(&e, stage);
    put_uint(&e, batch);
    put_raw(&e, true, items, len);
    return finish(&e);
}

int zp__msg_out(msgpack_sbuffer *sb, int type, uint64_t run, uint32_t stage,
                uint64_t batch, const void *outputs, size_t len,
                uint32_t retried, uint32_t skipped, uint64_t busy)
{
    enc e;
    assert(type == ZP__OUT || type == ZP__DONE);
    assert(outputs != NULL || len == 0);
    start(&e, sb, type);
    put_uint(&e, run);
    put_uint(&e, stage);
    put_uint(&e, batch);
    put_raw(&e, true, outputs, len);
    put_uint(&e, retried);
    put_uint(&e, skipped);
    put_uint(&e, busy);
    return finish(&e);
}

int zp__msg_fail(msgpack_sbuffer *sb, uint64_t run, uint32_t stage,
                 uint64_t batch, uint64_t seq, const char *message,
                 uint64_t busy)
{
    enc e;
    start(&e, sb, ZP__FAIL);
    put_uint(&e, run);
    put_uint(&e, stage);
    put_uint(&e, batch);
    put_uint(&e, seq);
    put_str(&e, message);
    put_uint(&e, busy);
    return finish(&e);
}

int zp__msg_heartbeat(msgpack_sbuffer *sb)
{
    enc e;
    start(&e, sb, ZP__HEARTBEAT);
    return finish(&e);
}

int zp__msg_bye(msgpack_sbuffer *sb, const char *reason)
{
    enc e;
    start(&e, sb, ZP__BYE);
    put_str(&e, reason);
    return finish(&e);
}

/* ---- Decoding ------------------------------------------------------------ */

bool zp__msg_serves(const zp__msg *m, const char *task, const char *pool)
{
    assert(m->type == ZP__HELLO);
    if (pool != NULL &&
        (m->pool_len != strlen(pool) || memcmp(m->pool, pool, m->pool_len)))
        return false;
    for (uint32_t i = 0; i < m->tasks->via.array.size; i++) {
        const msgpack_object_str *s = &m->tasks->via.array.ptr[i].via.str;
        if (s->size == strlen(task) && memcmp(s->ptr, task, s->size) == 0)
            return true;
    }
    return false;
}

/* Unsigned integers and the ranges their member and kind allow. */
static bool take_uint(const field *f, const msgpack_object *o, zp__msg *m)
{
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    uint64_t v = o->via.u64;
    char *at = (char *)m + f->off;
    if (f->width == sizeof(uint64_t)) {
        memcpy(at, &v, sizeof v);
        return true;
    }
    assert(f->width == sizeof(uint32_t));
    if (v > UINT32_MAX || (f->kind == UINT_POS && v == 0) ||
        (f->kind == FLAGS &&
         (v & ~(uint64_t)(ZP__STAGE_BRANCH | ZP__STAGE_SKIP)) != 0))
        return false;
    uint32_t w = (uint32_t)v;
    memcpy(at, &w, sizeof w);
    return true;
}

/* A str or bin; the pointer borrows from the body. */
static bool take_raw(const msgpack_object *o, msgpack_object_type type,
                     bool full, const char **p, size_t *n)
{
    if (o->type != type)
        return false;
    bool bin = type == MSGPACK_OBJECT_BIN;
    *p = bin ? o->via.bin.ptr : o->via.str.ptr;
    *n = bin ? o->via.bin.size : o->via.str.size;
    return !full || *n > 0;
}

static bool take_tasks(const msgpack_object *o, zp__msg *m)
{
    if (o->type != MSGPACK_OBJECT_ARRAY ||
        o->via.array.size > ZP__PROTO_MAX_TASKS)
        return false;
    for (uint32_t i = 0; i < o->via.array.size; i++) {
        const msgpack_object *t = &o->via.array.ptr[i];
        if (t->type != MSGPACK_OBJECT_STR || t->via.str.size == 0)
            return false;
    }
    m->tasks = o;
    return true;
}

static bool take(const field *f, const msgpack_object *o, zp__msg *m)
{
    switch (f->kind) {
    case STR:
    case STR_FULL:
        return take_raw(o, MSGPACK_OBJECT_STR, f->kind == STR_FULL, &m->str,
                        &m->str_len);
    case BIN:
    case BIN_FULL:
        return take_raw(o, MSGPACK_OBJECT_BIN, f->kind == BIN_FULL, &m->data,
                        &m->data_len);
    case TASK_LIST: return take_tasks(o, m);
    case POOL:
        return take_raw(o, MSGPACK_OBJECT_STR, true, &m->pool, &m->pool_len) &&
               zp__pool_name_ok(m->pool, m->pool_len);
    default: return take_uint(f, o, m);
    }
}

/* The static reason for a version other than ours. */
static const char *wrong_version(uint64_t v)
{
#define WRONG(n)                 \
    "wrong protocol version " #n \
    " (this side speaks " XSTR(ZP__PROTO_VERSION) ")"
    static const char *const why[] = {
        WRONG(0), WRONG(1), WRONG(2), WRONG(3), WRONG(4),
        WRONG(5), WRONG(6), WRONG(7), WRONG(8), WRONG(9),
    };
    return v < sizeof why / sizeof *why ? why[v] : WRONG(10 or more);
#undef WRONG
}

/* Checks the bytes, then unpacks them into `zone`. */
static const char *unpack(const void *body, size_t len, msgpack_zone *zone,
                          msgpack_object *top)
{
    size_t off = 0;
    if (len > ZP__PROTO_MAX_MSG)
        return "message larger than 64 MiB";
    if (!zp__msgpack_check(body, len))
        return "not one msgpack value (truncated, nested deeper than 32, "
               "or sizes larger than the message)";
    switch (msgpack_unpack(body, len, &off, zone, top)) {
    case MSGPACK_UNPACK_SUCCESS: return NULL;
    case MSGPACK_UNPACK_EXTRA_BYTES: return "bytes after the message";
    case MSGPACK_UNPACK_NOMEM_ERROR:
        return "out of memory, or nested deeper than 32";
    default: return "not one msgpack value";
    }
}

/* [version, type, ...]: sets m->type. */
static const char *check_header(const msgpack_object *top, zp__msg *m)
{
    if (top->type != MSGPACK_OBJECT_ARRAY)
        return "message is not a msgpack array";
    const msgpack_object *e = top->via.array.ptr;
    uint32_t n = top->via.array.size;
    if (n < 1 || e[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return "message does not start with a protocol version";
    if (e[0].via.u64 != ZP__PROTO_VERSION)
        return wrong_version(e[0].via.u64);
    if (n < 2 || e[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return "message has no type after its version";
    if (layout_of(e[1].via.u64) == NULL)
        return "unknown message type";
    m->type = (int)e[1].via.u64;
    return NULL;
}

static const char *check_fields(const msgpack_object *top, zp__msg *m)
{
    const layout *l = layout_of((uint64_t)m->type);
    size_t n = top->via.array.size - 2; /* the header was checked */
    if (n > l->n || n < l->n - l->optional)
        return l->why;
    if (m->type == ZP__OUT || m->type == ZP__DONE || m->type == ZP__FAIL)
        m->busy = ZP__BUSY_UNSAID; /* the optional field, until read */
    for (size_t i = 0; i < n; i++)
        if (!take(&l->fields[i], &top->via.array.ptr[2 + i], m))
            return l->fields[i].why;
    return NULL;
}

int zp__msg_decode(const void *body, size_t len, msgpack_zone *zone, zp__msg *m,
                   const char **why)
{
    msgpack_object top;
    assert(zone != NULL && m != NULL && why != NULL);
    assert(body != NULL || len == 0);
    memset(m, 0, sizeof *m);
    const char *reason = unpack(body, len, zone, &top);
    if (reason == NULL)
        reason = check_header(&top, m);
    if (reason == NULL)
        reason = check_fields(&top, m);
    if (reason == NULL)
        return 0;
    *why = reason;
    return ZP_EPROTO;
}
