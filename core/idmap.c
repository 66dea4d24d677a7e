/* SPDX-License-Identifier: MIT */
/* The id map, see idmap.h. */
#include "core/idmap.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

#define MIN_SLOTS 16

/* A slot is empty (key and val NULL), deleted (val NULL, key not), or
 * holds a key. */
struct zp__idslot {
    const void *key;
    size_t len;
    uint64_t hash;
    void *val;
};

/* FNV-1a, 64 bits. */
static uint64_t hash_of(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static bool empty(const zp__idslot *s)
{
    return s->val == NULL && s->key == NULL;
}

/* The slot holding key, or NULL. */
static zp__idslot *find(const zp__idmap *m, const void *key, size_t len,
                        uint64_t h)
{
    if (m->cap == 0)
        return NULL;
    assert((m->cap & (m->cap - 1)) == 0); /* a power of two */
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        zp__idslot *s = &m->slots[i];
        if (empty(s))
            return NULL;
        if (s->val != NULL && s->hash == h && s->len == len &&
            memcmp(s->key, key, len) == 0)
            return s;
    }
}

/* Puts a key known to be absent, with room for it. */
static void place(zp__idmap *m, const zp__idslot *from)
{
    assert(from->val != NULL && m->used + m->dead < m->cap);
    size_t i = from->hash & (m->cap - 1);
    while (m->slots[i].val != NULL)
        i = (i + 1) & (m->cap - 1);
    if (!empty(&m->slots[i]))
        m->dead--;
    m->slots[i] = *from;
    m->used++;
}

/* Rebuilds the map in cap slots, dropping the deleted ones. */
static int rebuild(zp__idmap *m, size_t cap)
{
    zp__idslot *old = m->slots;
    size_t n = m->cap;
    m->slots = zp__calloc(cap, sizeof *m->slots);
    if (m->slots == NULL) {
        m->slots = old;
        return ZP_ENOMEM;
    }
    m->cap = cap;
    m->used = m->dead = 0;
    for (size_t i = 0; i < n; i++)
        if (old[i].val != NULL)
            place(m, &old[i]);
    free(old);
    return 0;
}

void zp__idmap_fini(zp__idmap *m)
{
    free(m->slots);
    *m = (zp__idmap)ZP__IDMAP_INIT;
}

void *zp__idmap_get(const zp__idmap *m, const void *key, size_t len)
{
    zp__idslot *s = find(m, key, len, hash_of(key, len));
    return s != NULL ? s->val : NULL;
}

int zp__idmap_put(zp__idmap *m, const void *key, size_t len, void *val)
{
    assert(val != NULL); /* NULL is what get says of a missing key */
    uint64_t h = hash_of(key, len);
    zp__idslot *s = find(m, key, len, h);
    if (s != NULL) {
        *s = (zp__idslot){.key = key, .len = len, .hash = h, .val = val};
        return 0;
    }
    /* At most half the slots taken, deleted ones included, so that every
     * probe ends soon at an empty one. */
    if (2 * (m->used + m->dead + 1) > m->cap) {
        size_t cap = m->cap < MIN_SLOTS ? MIN_SLOTS : m->cap;
        while (4 * (m->used + 1) > cap) /* room to grow before the next */
            cap *= 2;
        if (rebuild(m, cap) != 0)
            return ZP_ENOMEM;
    }
    place(m, &(zp__idslot){.key = key, .len = len, .hash = h, .val = val});
    assert(2 * (m->used + m->dead) <= m->cap);
    return 0;
}

void zp__idmap_del(zp__idmap *m, const void *key, size_t len)
{
    zp__idslot *s = find(m, key, len, hash_of(key, len));
    if (s == NULL)
        return;
    assert(m->used > 0);
    s->key = s; /* deleted, not empty: probes go on past it */
    s->val = NULL;
    m->used--;
    m->dead++;
}
