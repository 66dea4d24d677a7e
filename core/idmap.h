/* SPDX-License-Identifier: MIT */
/*
 * A map from byte strings (ZeroMQ routing ids) to pointers, so that a
 * message finds its sender in constant time however many workers there
 * are. Open addressing with linear probing. The map borrows its keys: a
 * key's bytes must stay put, unchanged, until it is deleted or the map is
 * finalized. Part of core. Not thread-safe.
 */
#ifndef ZP_CORE_IDMAP_H
#define ZP_CORE_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct zp__idslot zp__idslot;

typedef struct zp__idmap {
    zp__idslot *slots; /* owned; NULL until the first put */
    size_t cap;        /* slots, a power of two */
    size_t used;       /* keys in it */
    size_t dead;       /* slots of deleted keys, not yet reused */
} zp__idmap;

#define ZP__IDMAP_INIT \
    {                  \
        NULL, 0, 0, 0  \
    }

/* Frees the slots (not the keys, nor the values). */
void zp__idmap_fini(zp__idmap *m);

/* The value of key, or NULL. */
void *zp__idmap_get(const zp__idmap *m, const void *key, size_t len);

/* Sets key's value (val not NULL), in place of any it had. Returns 0 or
 * ZP_ENOMEM (the map is as it was). */
int zp__idmap_put(zp__idmap *m, const void *key, size_t len, void *val);

/* Deletes key, if there. */
void zp__idmap_del(zp__idmap *m, const void *key, size_t len);

#endif
