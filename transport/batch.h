/* SPDX-License-Identifier: MIT */
/*
 * Batch framing: how items travel inside one ZeroMQ message.
 *
 * A data message is the msgpack uint `seq` (the index of its first item in
 * the edge's stream), the msgpack uint `count`, then `count` msgpack items
 * back to back; item i has index seq + i. The end-of-stream message is a
 * single msgpack nil. Part of transport; pure bytes, no sockets. The reader
 * never trusts its input: a truncated or malformed message is an error,
 * never a crash, and the nesting depth of items is bounded by msgpack-c's
 * parser stack (MSGPACK_EMBED_STACK_SIZE, 32 levels).
 */
#ifndef ZP_TRANSPORT_BATCH_H
#define ZP_TRANSPORT_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "zpipe.h"

/* Largest header: two msgpack uint64 (9 bytes each). */
#define ZP__BATCH_HEADER_MAX 18

/* Writes the header of a batch into `out`; returns its length. */
size_t zp__batch_header(char out[ZP__BATCH_HEADER_MAX], uint64_t seq,
                        uint32_t count);

/* Whether `data` is the end-of-stream message. */
bool zp__batch_is_eos(const void *data, size_t len);

/*
 * Whether data[0..len) starts with one complete msgpack value no deeper
 * than 32 levels whose every container announces no more elements than
 * bytes remain; bytes after that value are allowed (the caller checks
 * them). Never allocates, so that a msgpack_unpack() that follows cannot
 * be made to allocate more than a small multiple of len.
 */
bool zp__msgpack_check(const void *data, size_t len);

/* The length of the value zp__msgpack_check() accepts, or 0. */
size_t zp__msgpack_size(const void *data, size_t len);

/* Reads the items of one data message. Borrows the bytes. A reader used
 * with zp__batch_skip() alone needs no zone: zeroed, it needs no
 * zp__batch_reader_init() either. */
typedef struct zp__batch_reader {
    const char *data; /* borrowed */
    size_t len;
    size_t off;
    uint64_t seq;       /* index of the next item                 */
    uint32_t left;      /* items not read yet                     */
    msgpack_zone *zone; /* owned; holds the last item read        */
    msgpack_object obj; /* the last item read                     */
    size_t start;       /* where the last item read begins        */
} zp__batch_reader;

int zp__batch_reader_init(zp__batch_reader *r);
void zp__batch_reader_fini(zp__batch_reader *r);

/*
 * Starts reading a data message. Returns 0, or ZP_EPROTO when the header is
 * malformed (r then has no items left).
 */
int zp__batch_open(zp__batch_reader *r, const void *data, size_t len);

/*
 * The next item and its index. Returns 1 with *item valid until the next
 * call, 0 when the message is exhausted, or ZP_EPROTO when an item is
 * truncated or malformed, or when bytes are left over after the last one.
 */
int zp__batch_next(zp__batch_reader *r, const msgpack_object **item,
                   uint64_t *seq);

/*
 * Checks and passes over up to `max` items, and no more than `max_bytes`
 * of them but for the first, without decoding them; their bytes, back to
 * back, are (*items, *len). Returns how many (0 when the message is
 * exhausted), or ZP_EPROTO as zp__batch_next() would. For forwarding items
 * from a peer that is not trusted.
 */
int zp__batch_skip(zp__batch_reader *r, uint32_t max, size_t max_bytes,
                   const char **items, size_t *len);

/* The bytes of the item zp__batch_next() returned last. */
static inline void zp__batch_raw(const zp__batch_reader *r, const char **p,
                                 size_t *len)
{
    *p = r->data + r->start;
    *len = r->off - r->start;
}

#endif
