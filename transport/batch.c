/* SPDX-License-Identifier: MIT */
/*
 * Batch framing, see batch.h. On the hot path: one header per message, and
 * one msgpack_unpack() per item into a zone that is cleared, not freed,
 * between items.
 */
#include "transport/batch.h"

#include <string.h>

static size_t put_uint(char *out, uint64_t v)
{
    if (v < 128) {
        out[0] = (char)v;
        return 1;
    }
    out[0] = (char)0xcf;
    for (int i = 0; i < 8; i++)
        out[1 + i] = (char)(v >> (56 - 8 * i));
    return 9;
}

size_t zp__batch_header(char out[ZP__BATCH_HEADER_MAX], uint64_t seq,
                        uint32_t count)
{
    size_t n = put_uint(out, seq);
    return n + put_uint(out + n, count);
}

bool zp__batch_is_eos(const void *data, size_t len)
{
    return len == 1 && *(const unsigned char *)data == 0xc0;
}

int zp__batch_reader_init(zp__batch_reader *r)
{
    memset(r, 0, sizeof *r);
    r->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    return r->zone ? 0 : ZP_ENOMEM;
}

void zp__batch_reader_fini(zp__batch_reader *r)
{
    if (r->zone != NULL)
        msgpack_zone_free(r->zone);
    r->zone = NULL;
}

/* Reads one msgpack unsigned integer of the header. */
static int get_uint(zp__batch_reader *r, uint64_t *v)
{
    msgpack_object o;
    msgpack_unpack_return ret =
        msgpack_unpack(r->data, r->len, &r->off, r->zone, &o);
    if (ret != MSGPACK_UNPACK_SUCCESS && ret != MSGPACK_UNPACK_EXTRA_BYTES)
        return ZP_EPROTO;
    if (o.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return ZP_EPROTO;
    *v = o.via.u64;
    return 0;
}

int zp__batch_open(zp__batch_reader *r, const void *data, size_t len)
{
    uint64_t count = 0;
    r->data = data;
    r->len = len;
    r->off = 0;
    r->left = 0;
    msgpack_zone_clear(r->zone);
    if (get_uint(r, &r->seq) != 0 || get_uint(r, &count) != 0 ||
        count > UINT32_MAX || count > len - r->off)
        return ZP_EPROTO;
    r->left = (uint32_t)count;
    return 0;
}

/* Big-endian unsigned integer of `n` bytes. */
static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void set_int(msgpack_object *o, int64_t v)
{
    o->type = v < 0 ? MSGPACK_OBJECT_NEGATIVE_INTEGER
                    : MSGPACK_OBJECT_POSITIVE_INTEGER;
    o->via.i64 = v;
}

/*
 * Decodes the common scalars (integers, nil, booleans) without the general
 * parser and its zone: most items of fast pipelines are such. Returns the
 * bytes used, or 0 to let msgpack_unpack() handle the item.
 */
static size_t scalar(const unsigned char *p, size_t avail, msgpack_object *o)
{
    static const signed char width[] = {1, 2, 4, 8};
    unsigned c = p[0];
    if (c <= 0x7f || c >= 0xe0) {
        set_int(o, c <= 0x7f ? (int64_t)c : (int64_t)(int8_t)c);
        return 1;
    }
    if (c == 0xc0 || c == 0xc2 || c == 0xc3) {
        o->type = c == 0xc0 ? MSGPACK_OBJECT_NIL : MSGPACK_OBJECT_BOOLEAN;
        o->via.boolean = c == 0xc3;
        return 1;
    }
    if (c < 0xcc || c > 0xd3)
        return 0;
    int n = width[(c - 0xcc) & 3];
    if (avail < (size_t)n + 1)
        return 0;
    uint64_t v = be(p + 1, n);
    if (c <= 0xcf) {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = v;
    } else {
        int shift = 64 - 8 * n; /* sign-extend from n bytes */
        set_int(o, (int64_t)(v << shift) >> shift);
    }
    return (size_t)n + 1;
}

static msgpack_unpack_return unpack(zp__batch_reader *r)
{
    size_t n = scalar((const unsigned char *)r->data + r->off, r->len - r->off,
                      &r->obj);
    if (n > 0) {
        r->off += n;
        return r->off == r->len ? MSGPACK_UNPACK_SUCCESS
                                : MSGPACK_UNPACK_EXTRA_BYTES;
    }
    msgpack_zone_clear(r->zone);
    return msgpack_unpack(r->data, r->len, &r->off, r->zone, &r->obj);
}

int zp__batch_next(zp__batch_reader *r, const msgpack_object **item,
                   uint64_t *seq)
{
    if (r->left == 0)
        return r->off == r->len ? 0 : ZP_EPROTO;
    msgpack_unpack_return ret = unpack(r);
    bool last = r->left == 1;
    if (ret != (last ? MSGPACK_UNPACK_SUCCESS : MSGPACK_UNPACK_EXTRA_BYTES)) {
        r->left = 0;
        return ZP_EPROTO;
    }
    r->left--;
    *item = &r->obj;
    *seq = r->seq++;
    return 1;
}
