/* SPDX-License-Identifier: MIT */
/*
 * The ordering ring, see order.h. It grows (doubling) when an item arrives
 * more than `cap` places ahead of the next one to leave; what bounds it is
 * the stage's input credits, given back only when items leave.
 */
#include "worker/order.h"

#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "worker/call.h"

static void parked_free(zp__parked *p)
{
    free(p->data);
    free(p->ends);
    memset(p, 0, sizeof *p);
}

/* Makes room in the ring for item `index`. */
static int reserve(zp__order *o, uint64_t index)
{
    if (index - o->next < o->cap)
        return 0;
    uint64_t cap = o->cap ? o->cap : 64;
    while (index - o->next >= cap)
        cap *= 2;
    zp__parked *ring = zp__calloc(cap, sizeof *ring);
    if (ring == NULL)
        return ZP_ENOMEM;
    for (uint64_t i = o->next; i < o->next + o->cap; i++)
        ring[i % cap] = o->ring[i % o->cap];
    free(o->ring);
    o->ring = ring;
    o->cap = cap;
    return 0;
}

int zp__order_put(zp__order *o, zp_call *c)
{
    int rc = reserve(o, c->index);
    if (rc != 0)
        return rc;
    zp__parked *p = &o->ring[c->index % o->cap];
    p->n = c->emitted;
    if (c->emitted) {
        p->data = msgpack_sbuffer_release(&c->buf);
        p->ends = c->ends;
        c->ends = NULL;
        c->ends_cap = 0;
    }
    p->done = true;
    zp__call_drop(c);
    return 0;
}

zp__parked *zp__order_ready(zp__order *o)
{
    if (o->cap == 0 || !o->ring[o->next % o->cap].done)
        return NULL;
    return &o->ring[o->next % o->cap];
}

void zp__order_pop(zp__order *o)
{
    parked_free(&o->ring[o->next % o->cap]);
    o->next++;
}

void zp__order_fini(zp__order *o)
{
    for (uint64_t i = 0; i < o->cap; i++)
        parked_free(&o->ring[i]);
    free(o->ring);
    memset(o, 0, sizeof *o);
}
