/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target of batch framing (transport/batch.c). Any input read as
 * a batch must give items with consecutive indexes from the header's, no
 * more than its count, then 0 or ZP_EPROTO, never a crash. One reader
 * serves every input, as one serves every message of an edge. Passing
 * over the items (zp__batch_skip, in runs of sizes taken from the input)
 * must take every item reading takes, in order, back to back. And where
 * zp__msgpack_check() passes a value, msgpack-c must unpack it, to the
 * length zp__msgpack_size() gives.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "transport/batch.h"
#include "tests/fuzz/check.h"

/* Reads the input as a batch; whether every item came out whole. */
static bool read_batch(zp__batch_reader *r, const uint8_t *data, size_t size)
{
    int rc = zp__batch_open(r, data, size);
    if (rc != 0) {
        CHECK(rc == ZP_EPROTO && r->left == 0);
        return false;
    }
    uint64_t first = r->seq, seq, n = 0;
    uint32_t count = r->left;
    const msgpack_object *item;
    CHECK(count <= size);
    while ((rc = zp__batch_next(r, &item, &seq)) == 1) {
        CHECK(item != NULL && seq == first + n);
        CHECK(++n <= count);
    }
    CHECK(rc == 0 || rc == ZP_EPROTO);
    CHECK(rc != 0 || n == count);
    CHECK(r->left == 0);
    return rc == 0;
}

/* Passes over the items in runs; whether every item was passed over. */
static bool skip_batch(const uint8_t *data, size_t size)
{
    zp__batch_reader r = {.data = NULL};
    if (zp__batch_open(&r, data, size) != 0)
        return false;
    uint32_t count = r.left, max = 1 + (size > 0 ? data[size - 1] % 7 : 0);
    size_t max_bytes = size > 1 ? data[size - 2] : SIZE_MAX, end = r.off;
    uint64_t n = 0;
    const char *items;
    size_t len;
    int k;
    while ((k = zp__batch_skip(&r, max, max_bytes, &items, &len)) > 0) {
        CHECK((uint32_t)k <= max && (k == 1 || len <= max_bytes));
        CHECK(items == (const char *)data + end && len > 0);
        end += len;
        n += (uint64_t)k;
        CHECK(n <= count);
    }
    CHECK(k == 0 || k == ZP_EPROTO);
    CHECK(k != 0 || (n == count && end == size));
    return k == 0;
}

/*
 * What the check lets through, the parser must take. One known exception:
 * the check counts only containers with elements towards its 32 levels,
 * so an empty array or map below 32 others passes it while msgpack-c's
 * 32-entry stack refuses it (MSGPACK_UNPACK_NOMEM_ERROR, nothing
 * allocated): safe, both callers then answer ZP_EPROTO.
 */
static void check_agrees_with_msgpack(const uint8_t *data, size_t size)
{
    msgpack_zone zone;
    msgpack_object o;
    size_t off = 0;
    if (!zp__msgpack_check(data, size))
        return;
    CHECK(msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE));
    msgpack_unpack_return ret =
        msgpack_unpack((const char *)data, size, &off, &zone, &o);
    CHECK(ret == MSGPACK_UNPACK_SUCCESS || ret == MSGPACK_UNPACK_EXTRA_BYTES ||
          (ret == MSGPACK_UNPACK_NOMEM_ERROR && size > 32));
    CHECK(off <= size && (ret != MSGPACK_UNPACK_SUCCESS || off == size));
    CHECK(ret == MSGPACK_UNPACK_NOMEM_ERROR ||
          zp__msgpack_size(data, size) == off);
    msgpack_zone_destroy(&zone);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static zp__batch_reader r; /* lives as long as the process */
    static bool ready;
    if (!ready) {
        CHECK(zp__batch_reader_init(&r) == 0);
        ready = true;
    }
    CHECK(zp__batch_is_eos(data, size) == (size == 1 && data[0] == 0xc0));
    bool read = read_batch(&r, data, size);
    CHECK(skip_batch(data, size) || !read);
    check_agrees_with_msgpack(data, size);
    return 0;
}
