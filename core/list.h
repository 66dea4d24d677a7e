/* SPDX-License-Identifier: MIT */
/*
 * An intrusive FIFO queue: the element embeds a zp__qnode and the queue
 * links the nodes, so putting an element in a queue never allocates.
 * Part of core. Not thread-safe: the owner of the queue locks if it must.
 */
#ifndef ZP_CORE_LIST_H
#define ZP_CORE_LIST_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct zp__qnode {
    struct zp__qnode *next;
} zp__qnode;

typedef struct zp__queue {
    zp__qnode *head, *tail; /* both NULL when empty */
} zp__queue;

/* The element that embeds `node` as its member `member`. */
#define zp__container_of(node, type, member) \
    ((type *)(void *)((char *)(node)-offsetof(type, member)))

static inline bool zp__queue_empty(const zp__queue *q)
{
    return q->head == NULL;
}

/* Appends `n` at the tail. */
static inline void zp__queue_push(zp__queue *q, zp__qnode *n)
{
    assert((q->head == NULL) == (q->tail == NULL));
    assert(q->tail == NULL || q->tail->next == NULL);
    n->next = NULL;
    if (q->tail != NULL)
        q->tail->next = n;
    else
        q->head = n;
    q->tail = n;
}

/* Puts `n` at the head. */
static inline void zp__queue_push_front(zp__queue *q, zp__qnode *n)
{
    assert((q->head == NULL) == (q->tail == NULL));
    n->next = q->head;
    q->head = n;
    if (q->tail == NULL)
        q->tail = n;
}

/* Puts `n` after `prev`, or at the head when `prev` is NULL. */
static inline void zp__queue_insert_after(zp__queue *q, zp__qnode *prev,
                                          zp__qnode *n)
{
    if (prev == NULL) {
        zp__queue_push_front(q, n);
        return;
    }
    assert(prev->next != NULL || q->tail == prev); /* prev is in q */
    n->next = prev->next;
    prev->next = n;
    if (q->tail == prev)
        q->tail = n;
}

/* Takes the head, or NULL when empty. */
static inline zp__qnode *zp__queue_pop(zp__queue *q)
{
    zp__qnode *n = q->head;
    assert((n == NULL) == (q->tail == NULL));
    if (n != NULL && (q->head = n->next) == NULL)
        q->tail = NULL;
    if (n != NULL)
        n->next = NULL;
    return n;
}

/* Unlinks `n`, whose predecessor is `prev` (NULL: `n` is the head). */
static inline void zp__queue_unlink(zp__queue *q, zp__qnode *prev, zp__qnode *n)
{
    assert(prev != NULL ? prev->next == n : q->head == n);
    if (prev != NULL)
        prev->next = n->next;
    else
        q->head = n->next;
    if (q->tail == n)
        q->tail = prev;
    n->next = NULL;
}

#endif
