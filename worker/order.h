/* SPDX-License-Identifier: MIT */
/*
 * Ordering: the outputs of an ordered stage's items wait in a ring, keyed
 * by item index, until every earlier item has left. Part of worker. Not
 * thread-safe: thread stages guard it with a lock, async stages use it from
 * their loop thread alone.
 */
#ifndef ZP_WORKER_ORDER_H
#define ZP_WORKER_ORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zpipe.h"

/* Outputs of one item of an ordered stage, waiting for their turn. */
typedef struct zp__parked {
    bool done;    /* the item's call has ended                          */
    char *data;   /* owned; packed outputs back to back                 */
    size_t *ends; /* owned; end offset of each output                   */
    uint32_t n;   /* outputs                                            */
} zp__parked;

typedef struct zp__order {
    zp__parked *ring; /* owned; `cap` slots, item i in i % cap */
    uint64_t cap;
    uint64_t next; /* index of the next item to leave */
} zp__order;

/*
 * Takes the parked outputs of the call that just ended (its item is
 * c->index) into the ring, leaving the call with none. Returns 0 or
 * ZP_ENOMEM.
 */
int zp__order_put(zp__order *o, zp_call *c);

/* The outputs of item `next` when its call has ended, else NULL. */
zp__parked *zp__order_ready(zp__order *o);

/* Frees the ready outputs and moves on to the next item. */
void zp__order_pop(zp__order *o);

/* Frees everything still waiting. */
void zp__order_fini(zp__order *o);

#endif
