/* SPDX-License-Identifier: MIT */
/*
 * Batch framing, see batch.h. On the hot path: one header per message, and
 * one msgpack_unpack() per item into a zone that is cleared, not freed,
 * between items.
 */
#include "transport/batch.h"

#include <assert.h>
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
    n += put_uint(out + n, count);
    assert(n <= ZP__BATCH_HEADER_MAX);
    return n;
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

/* Reads one msgpack unsigned integer of the header. */
static int get_uint(zp__batch_reader *r, uint64_t *v)
{
    msgpack_object o;
    size_t n = r->off < r->len ? scalar((const unsigned char *)r->data + r->off,
                                        r->len - r->off, &o)
                               : 0;
    if (n == 0 || o.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return ZP_EPROTO;
    r->off += n;
    *v = o.via.u64;
    return 0;
}

/* msgpack-c's parser stack: deeper items are refused. */
#define MAX_DEPTH 32

/*
 * Size of the msgpack header at p[0] (0 when truncated or invalid) and
 * what it announces: *body bytes of payload, *children elements after it.
 */
static size_t head(const unsigned char *p, size_t avail, uint64_t *body,
                   uint64_t *children)
{
    /* For 0xc0..0xdf: bytes after the type byte holding a length or value */
    static const unsigned char extra[32] = {0, 0, 0, 0, 1, 2, 4, 1, 2, 4, 4,
                                            8, 1, 2, 4, 8, 1, 2, 4, 8, 0, 0,
                                            0, 0, 0, 1, 2, 4, 2, 4, 2, 4};
    unsigned c = p[0];
    *body = *children = 0;
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
        return 1;
    if (c <= 0x9f) {
        *children = (c & 0x0fu) * (c <= 0x8f ? 2u : 1u); /* map, array */
        return 1;
    }
    if (c <= 0xbf) {
        *body = c & 0x1fu; /* fixstr */
        return 1;
    }
    size_t n = extra[c - 0xc0];
    if (c == 0xc1 || avail < 1 + n)
        return 0;
    uint64_t v = be(p + 1, (int)n);
    if (c <= 0xc6 || (c >= 0xd9 && c <= 0xdb))
        *body = v; /* bin, str */
    else if (c <= 0xc9)
        *body = v + 1; /* ext: a type byte, then the data */
    else if (c >= 0xd4 && c <= 0xd8)
        *body = 1 + ((uint64_t)1 << (c - 0xd4)); /* fixext */
    else if (c >= 0xdc)
        *children = c <= 0xdd ? v : 2 * v; /* array, map */
    return 1 + n;
}

size_t zp__msgpack_size(const void *data, size_t avail)
{
    const unsigned char *p = data;
    uint64_t body, children;
    if (avail == 0)
        return 0;
    /* A scalar, the common item, needs no stack; a byte-long one, no more
     * than a look. */
    if (p[0] <= 0x7f || p[0] >= 0xe0 || p[0] == 0xc0 || p[0] == 0xc2 ||
        p[0] == 0xc3)
        return 1;
    size_t h = head(p, avail, &body, &children);
    if (h > 0 && children == 0)
        return body <= avail - h ? h + body : 0;
    uint64_t pending[MAX_DEPTH + 1]; /* elements still owed per level */
    int depth = 0;
    size_t off = 0;
    pending[0] = 1;
    while (depth >= 0) {
        if (pending[depth] == 0) {
            depth--;
            continue;
        }
        pending[depth]--;
        h = off < avail ? head(p + off, avail - off, &body, &children) : 0;
        if (h == 0 || body > avail - off - h ||
            children > avail - off - h - body)
            return 0;
        off += h + body;
        if (children > 0) {
            if (depth == MAX_DEPTH)
                return 0;
            pending[++depth] = children;
        }
    }
    return off;
}

bool zp__msgpack_check(const void *data, size_t avail)
{
    return zp__msgpack_size(data, avail) > 0;
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
    if (!zp__msgpack_check(r->data + r->off, r->len - r->off))
        return MSGPACK_UNPACK_PARSE_ERROR;
    msgpack_zone_clear(r->zone);
    return msgpack_unpack(r->data, r->len, &r->off, r->zone, &r->obj);
}

int zp__batch_next(zp__batch_reader *r, const msgpack_object **item,
                   uint64_t *seq)
{
    assert(r->off <= r->len); /* the reader never reads past the end */
    if (r->left == 0)
        return r->off == r->len ? 0 : ZP_EPROTO;
    r->start = r->off;
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

int zp__batch_skip(zp__batch_reader *r, uint32_t max, size_t max_bytes,
                   const char **items, size_t *len)
{
    uint32_t n = 0;
    size_t start = r->off;
    for (; n < max && r->left > 0; n++, r->left--) {
        size_t size = zp__msgpack_size(r->data + r->off, r->len - r->off);
        if (size == 0) {
            r->left = 0;
            return ZP_EPROTO;
        }
        if (n > 0 && r->off - start + size > max_bytes)
            break;
        r->off += size;
        r->seq++;
    }
    assert(r->off <= r->len);
    if (r->left == 0 && r->off != r->len)
        return ZP_EPROTO;
    *items = r->data + start;
    *len = r->off - start;
    return (int)n;
}

int zp__batch_open(zp__batch_reader *r, const void *data, size_t len)
{
    uint64_t count = 0;
    r->data = data;
    r->len = len;
    r->off = 0;
    r->left = 0;
    if (get_uint(r, &r->seq) != 0 || get_uint(r, &count) != 0 ||
        count > UINT32_MAX || count > len - r->off)
        return ZP_EPROTO;
    r->left = (uint32_t)count;
    return 0;
}
