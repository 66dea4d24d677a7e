/* SPDX-License-Identifier: MIT */
/*
 * The batch ledger, see ledger.h. Part of coordinator.
 */
#include "coordinator/ledger.h"

#include <assert.h>
#include <stdlib.h>

#include "transport/batch.h"

void zp__ledger_init(zp__ledger *l, zp__tx *out, zp__wstats *stats,
                     bool ordered)
{
    *l = (zp__ledger){.ordered = ordered, .out = out, .stats = stats};
}

void zp__ledger_fini(zp__ledger *l)
{
    zp__dbatch_free_all(&l->waiting);
    zp__dbatch_free_all(&l->inflight);
    zp__dbatch_free_all(&l->held);
    l->nwaiting = l->waiting_bytes = 0;
}

bool zp__ledger_idle(const zp__ledger *l)
{
    return zp__queue_empty(&l->waiting) && zp__queue_empty(&l->inflight);
}

bool zp__ledger_empty(const zp__ledger *l)
{
    return zp__ledger_idle(l) && zp__queue_empty(&l->held);
}

int zp__ledger_add(zp__ledger *l, uint64_t seq, uint32_t n, const char *items,
                   size_t len)
{
    zp__dbatch *b = zp__dbatch_new(l->next_id++, seq, n, items, len);
    if (b == NULL)
        return ZP_ENOMEM;
    zp__ledger_enqueue(l, b, false);
    return 0;
}

void zp__ledger_enqueue(zp__ledger *l, zp__dbatch *b, bool front)
{
    b->w = NULL;
    l->nwaiting += b->n;
    l->waiting_bytes += b->len;
    if (front)
        zp__queue_push_front(&l->waiting, &b->node);
    else
        zp__queue_push(&l->waiting, &b->node);
}

zp__dbatch *zp__ledger_first(const zp__ledger *l)
{
    return zp__dbatch_of(l->waiting.head);
}

zp__dbatch *zp__ledger_dequeue(zp__ledger *l)
{
    zp__dbatch *b = zp__dbatch_of(zp__queue_pop(&l->waiting));
    if (b == NULL)
        return NULL;
    assert(b->w == NULL); /* a waiting batch runs nowhere */
    assert(l->nwaiting >= b->n && l->waiting_bytes >= b->len);
    l->nwaiting -= b->n;
    l->waiting_bytes -= b->len;
    return b;
}

zp__dbatch *zp__ledger_cut(zp__ledger *l, zp__dbatch *b, uint32_t k)
{
    zp__dbatch *part[2];
    assert(b == zp__ledger_first(l) && k > 0 && k < b->n);
    if (zp__dbatch_split(b, k, l->next_id, part) != 0)
        return NULL;
    l->next_id += 2;
    part[0]->kills = part[1]->kills = b->kills;
    zp__ledger_dequeue(l);
    zp__dbatch_free(b);
    zp__ledger_enqueue(l, part[1], true);
    zp__ledger_enqueue(l, part[0], true);
    return part[0];
}

/*
 * A suspect's halves are suspects too, queued at the front: the item at
 * fault is found in a crash per halving, and an item is blamed only for
 * a crash while it runs alone.
 */
int zp__ledger_split(zp__ledger *l, zp__dbatch *b)
{
    zp__dbatch *half[2];
    assert(b->n > 1);
    int rc = zp__dbatch_split(b, b->n / 2, l->next_id, half);
    if (rc == 0) {
        l->next_id += 2;
        for (int i = 1; i >= 0; i--) {
            half[i]->kills = 1; /* a suspect: it runs alone */
            zp__ledger_enqueue(l, half[i], true);
        }
    }
    zp__dbatch_free(b);
    return rc;
}

/* The in-flight list is oldest first: DONEs mostly come in the order
 * batches were sent, so a search is short. */
void zp__ledger_fly(zp__ledger *l, zp__dbatch *b)
{
    assert(b->w != NULL); /* in flight: on a worker */
    uint64_t n = atomic_fetch_add(&l->items_out, b->n) + b->n;
    if (n > atomic_load(&l->items_peak))
        atomic_store(&l->items_peak, n); /* written by this thread alone */
    zp__queue_push(&l->inflight, &b->node);
}

/* Unlinks in-flight batch b; prev is the one before it. */
static zp__dbatch *unlink_inflight(zp__ledger *l, zp__dbatch *prev,
                                   zp__dbatch *b)
{
    assert(atomic_load(&l->items_out) >= b->n);
    atomic_fetch_sub(&l->items_out, b->n);
    zp__queue_unlink(&l->inflight, prev ? &prev->node : NULL, &b->node);
    return b;
}

zp__dbatch *zp__ledger_take(zp__ledger *l, uint64_t id, const zp__member *w)
{
    zp__dbatch *prev = NULL;
    for (zp__qnode *n = l->inflight.head; n != NULL; n = n->next) {
        zp__dbatch *b = zp__dbatch_of(n);
        if (b->id == id && b->w == w)
            return unlink_inflight(l, prev, b);
        prev = b;
    }
    return NULL;
}

void zp__ledger_recall(zp__ledger *l, const zp__member *w, uint32_t threads,
                       bool blame, zp__queue *mine)
{
    /* Marked first: whether a batch was running depends on the others. */
    for (zp__qnode *n = l->inflight.head; n != NULL; n = n->next)
        if (zp__dbatch_of(n)->w == w)
            zp__dbatch_of(n)->blamed =
                blame && zp__ledger_running(l, zp__dbatch_of(n), threads);
    zp__dbatch *prev = NULL;
    for (zp__qnode *n = l->inflight.head, *next; n != NULL; n = next) {
        next = n->next;
        zp__dbatch *b = zp__dbatch_of(n);
        if (b->w != w) {
            prev = b;
            continue;
        }
        unlink_inflight(l, prev, b);
        msgpack_sbuffer_clear(&b->out);
        zp__queue_push(mine, &b->node);
    }
}

bool zp__ledger_running(const zp__ledger *l, const zp__dbatch *b,
                        uint32_t threads)
{
    uint32_t before = 0;
    for (const zp__qnode *n = l->inflight.head; n != NULL; n = n->next) {
        const zp__dbatch *o = zp__dbatch_of((zp__qnode *)n);
        before += o->w == b->w && o->order < b->order;
    }
    return before < threads;
}

int zp__ledger_send_outputs(zp__ledger *l, const char *framed, size_t len)
{
    zp__batch_reader rd = {.data = NULL};
    const char *items;
    size_t size;
    int n, rc = len > 0 ? zp__batch_open(&rd, framed, len) : 0;
    while (rc == 0 && len > 0 &&
           (n = zp__batch_skip(&rd, zp__tx_max(l->out), SIZE_MAX, &items,
                               &size)) != 0) {
        if (n < 0)
            return n;
        zp__count(&l->stats->out, (uint64_t)n);
        rc = zp__tx_send_items(l->out, items, size, (uint32_t)n);
    }
    return rc;
}

int zp__ledger_deliver(zp__ledger *l, zp__dbatch *b)
{
    int rc = 0;
    if (!l->ordered) {
        rc = zp__ledger_send_outputs(l, b->out.data, b->out.size);
        zp__dbatch_free(b);
        return rc;
    }
    zp__dbatch_hold(&l->held, b);
    for (zp__dbatch *first;
         rc == 0 && (first = zp__dbatch_turn(&l->held, l->next_seq)) != NULL;) {
        l->next_seq = first->seq + first->n;
        rc = zp__ledger_send_outputs(l, first->out.data, first->out.size);
        zp__dbatch_free(first);
    }
    return rc;
}
