/* SPDX-License-Identifier: MIT */
/*
 * Dispatched batches: the unit of work a dispatcher sends to a worker
 * process (one ITEM message), with what it needs to send it again, split
 * it when it is a suspect, collect its outputs, and deliver those in input
 * order. Part of coordinator; used by one dispatcher's thread alone.
 */
#ifndef ZP_COORDINATOR_DBATCH_H
#define ZP_COORDINATOR_DBATCH_H

#include "core/list.h"
#include "zpipe.h"

typedef struct zp__member zp__member; /* a worker, in dstate.h */

typedef struct zp__dbatch {
    zp__qnode node; /* in one of the ledger's lists (ledger.h) */
    uint64_t id;
    uint64_t seq; /* index of the first item */
    uint32_t n;   /* items */
    char *bytes;  /* owned; batch framing (transport/batch.h) */
    size_t len;
    zp__member *w;       /* borrowed; NULL while waiting */
    uint64_t sent;       /* when it was sent (ns) */
    uint32_t kills;      /* workers lost while running it */
    bool blamed;         /* it was running when its worker crashed */
    uint64_t order;      /* when it was sent, as a count of sends */
    msgpack_sbuffer out; /* outputs received so far (OUT), framed */
} zp__dbatch;

/* The batch `id` of n items packed back to back in items[0..len), the
 * first of index `seq` (the bytes are copied). NULL when out of memory. */
zp__dbatch *zp__dbatch_new(uint64_t id, uint64_t seq, uint32_t n,
                           const char *items, size_t len);

/* Frees a batch. NULL-safe. */
void zp__dbatch_free(zp__dbatch *b);

/* Frees every batch of a queue. */
void zp__dbatch_free_all(zp__queue *q);

/* The batch of node `n`. */
static inline zp__dbatch *zp__dbatch_of(zp__qnode *n)
{
    return n != NULL ? zp__container_of(n, zp__dbatch, node) : NULL;
}

/*
 * Splits batch b of several items in two, its first k items (0 < k < n)
 * and the rest, numbered `id` and id + 1, into h[0] and h[1]; b is left as
 * it was. Returns 0 or ZP_ENOMEM.
 */
int zp__dbatch_split(const zp__dbatch *b, uint32_t k, uint64_t id,
                     zp__dbatch *h[2]);

/*
 * Adds the outputs of an OUT or DONE (framed, as they came) to the batch's
 * outputs, checking each. Returns 0, ZP_EPROTO or ZP_ENOMEM.
 */
int zp__dbatch_gather(zp__dbatch *b, const char *framed, size_t len);

/* Keeps a done batch of an ordered stage in `held`, sorted by index. */
void zp__dbatch_hold(zp__queue *held, zp__dbatch *b);

/* Takes the held batch whose first item is `next` out of `held`, or NULL
 * when it is not done yet. */
zp__dbatch *zp__dbatch_turn(zp__queue *held, uint64_t next);

#endif
