/* SPDX-License-Identifier: MIT */
/*
 * Per-worker tallies, see tally.h. Part of core. A linear search over 256 slots
 * runs at a worker's HELLO only; counting a batch indexes its slot.
 */
#include "core/tally.h"

#include <assert.h>

#include <stdbool.h>
#include <string.h>

void zp__tally_init(zp__tally *t)
{
    memset(t->slot, 0, sizeof t->slot);
    pthread_mutex_init(&t->lock, NULL);
}

void zp__tally_fini(zp__tally *t)
{
    pthread_mutex_destroy(&t->lock);
}

/* Whether the slot is free, or its worker is gone for long enough. */
static bool reusable(const zp__tally_slot *s, uint64_t now)
{
    return s->name[0] == '\0' ||
           (s->present == 0 && now - s->left >= ZP__TALLY_KEEP_NS);
}

/* The slot counting `name`, else a reusable one (emptied), else -1. */
static int find_slot(zp__tally *t, const char *name, uint64_t now)
{
    int spare = -1;
    for (int i = 0; i < ZP__TALLY_MAX; i++) {
        zp__tally_slot *s = &t->slot[i];
        if (s->name[0] != '\0' && strcmp(s->name, name) == 0 &&
            (s->present > 0 || !reusable(s, now)))
            return i;
        if (spare < 0 && reusable(s, now))
            spare = i;
    }
    if (spare >= 0) {
        zp__tally_slot *s = &t->slot[spare];
        strcpy(s->name, name);
        s->present = 0;
        atomic_store_explicit(&s->count, 0, memory_order_relaxed);
    }
    return spare;
}

int zp__tally_join(zp__tally *t, const char *name, size_t len, uint64_t now)
{
    char key[ZP__TALLY_NAME];
    len = len < sizeof key - 1 ? len : sizeof key - 1;
    memcpy(key, name, len);
    key[len] = '\0';
    if (key[0] == '\0')
        strcpy(key, "?"); /* "" marks a free slot */
    pthread_mutex_lock(&t->lock);
    int i = find_slot(t, key, now);
    if (i >= 0)
        t->slot[i].present++;
    pthread_mutex_unlock(&t->lock);
    return i;
}

void zp__tally_count(zp__tally *t, int slot, uint64_t n)
{
    if (slot < 0)
        return;
    assert(slot < ZP__TALLY_MAX);
    _Atomic uint64_t *c = &t->slot[slot].count;
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

void zp__tally_leave(zp__tally *t, int slot, uint64_t now)
{
    if (slot < 0)
        return;
    assert(slot < ZP__TALLY_MAX);
    pthread_mutex_lock(&t->lock);
    zp__tally_slot *s = &t->slot[slot];
    if (s->present > 0 && --s->present == 0)
        s->left = now;
    pthread_mutex_unlock(&t->lock);
}

size_t zp__tally_read(zp__tally *t, uint64_t now, zp__tally_row *rows,
                      size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < ZP__TALLY_MAX && n < max; i++) {
        const zp__tally_slot *s = &t->slot[i];
        if (reusable(s, now))
            continue;
        memcpy(rows[n].name, s->name, sizeof rows[n].name);
        rows[n].count = atomic_load_explicit(&s->count, memory_order_relaxed);
        n++;
    }
    pthread_mutex_unlock(&t->lock);
    return n;
}
