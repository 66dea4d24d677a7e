/* SPDX-License-Identifier: MIT */
/*
 * Dispatched batches, see dbatch.h. Part of coordinator.
 */
#include "coordinator/dbatch.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "transport/batch.h"

zp__dbatch *zp__dbatch_new(uint64_t id, uint64_t seq, uint32_t n,
                           const char *items, size_t len)
{
    char hdr[ZP__BATCH_HEADER_MAX];
    size_t h = zp__batch_header(hdr, seq, n);
    zp__dbatch *b = zp__calloc(1, sizeof *b);
    char *bytes = zp__malloc(h + len);
    if (b == NULL || bytes == NULL) {
        free(b);
        free(bytes);
        return NULL;
    }
    memcpy(bytes, hdr, h);
    memcpy(bytes + h, items, len);
    *b = (zp__dbatch){
        .id = id, .seq = seq, .n = n, .bytes = bytes, .len = h + len};
    msgpack_sbuffer_init(&b->out);
    return b;
}

void zp__dbatch_free(zp__dbatch *b)
{
    if (b == NULL)
        return;
    msgpack_sbuffer_destroy(&b->out);
    free(b->bytes);
    free(b);
}

void zp__dbatch_free_all(zp__queue *q)
{
    for (zp__qnode *n; (n = zp__queue_pop(q)) != NULL;)
        zp__dbatch_free(zp__dbatch_of(n));
}

int zp__dbatch_split(const zp__dbatch *b, uint32_t k, uint64_t id,
                     zp__dbatch *h[2])
{
    zp__batch_reader rd = {.data = NULL};
    const char *items[2];
    size_t len[2];
    int n[2] = {0, 0};
    assert(k > 0 && k < b->n);
    h[0] = h[1] = NULL;
    if (zp__batch_open(&rd, b->bytes, b->len) == 0) {
        uint64_t seq = rd.seq;
        n[0] = zp__batch_skip(&rd, k, SIZE_MAX, &items[0], &len[0]);
        n[1] = zp__batch_skip(&rd, b->n, SIZE_MAX, &items[1], &len[1]);
        for (int i = 0; i < 2 && n[0] > 0 && n[1] > 0; i++)
            h[i] =
                zp__dbatch_new(id + (uint64_t)i, i ? seq + (uint64_t)n[0] : seq,
                               (uint32_t)n[i], items[i], len[i]);
    }
    if (h[0] != NULL && h[1] != NULL)
        return 0;
    zp__dbatch_free(h[0]);
    zp__dbatch_free(h[1]);
    h[0] = h[1] = NULL;
    return ZP_ENOMEM;
}

/* Appends the items of a framed batch (checked) to `items`; counts them. */
static int gather_items(msgpack_sbuffer *items, uint32_t *n, const char *framed,
                        size_t len)
{
    zp__batch_reader rd = {.data = NULL};
    const char *p;
    size_t size;
    int rc = len > 0 ? zp__batch_open(&rd, framed, len) : 0;
    if (rc == 0 && len > 0 &&
        (rc = zp__batch_skip(&rd, UINT32_MAX, SIZE_MAX, &p, &size)) >= 0) {
        *n += (uint32_t)rc;
        rc = msgpack_sbuffer_write(items, p, size) == 0 ? 0 : ZP_ENOMEM;
    }
    return rc;
}

int zp__dbatch_gather(zp__dbatch *b, const char *framed, size_t len)
{
    msgpack_sbuffer items;
    uint32_t n = 0;
    msgpack_sbuffer_init(&items);
    int rc = gather_items(&items, &n, b->out.data, b->out.size);
    if (rc == 0)
        rc = gather_items(&items, &n, framed, len);
    if (rc == 0) {
        char hdr[ZP__BATCH_HEADER_MAX];
        size_t h = zp__batch_header(hdr, 0, n);
        msgpack_sbuffer_clear(&b->out);
        if (msgpack_sbuffer_write(&b->out, hdr, h) != 0 ||
            msgpack_sbuffer_write(&b->out, items.data, items.size) != 0)
            rc = ZP_ENOMEM;
    }
    msgpack_sbuffer_destroy(&items);
    return rc;
}

void zp__dbatch_hold(zp__queue *held, zp__dbatch *b)
{
    zp__qnode *prev = NULL;
    for (zp__qnode *n = held->head; n != NULL; prev = n, n = n->next)
        if (zp__dbatch_of(n)->seq >= b->seq)
            break;
    zp__queue_insert_after(held, prev, &b->node);
}

zp__dbatch *zp__dbatch_turn(zp__queue *held, uint64_t next)
{
    zp__dbatch *first = zp__dbatch_of(held->head);
    if (first == NULL || first->seq != next)
        return NULL;
    zp__queue_pop(held);
    return first;
}
