/* SPDX-License-Identifier: MIT */
/*
 * Allocation: every allocation of the library goes through these, so that
 * tests can make them fail on purpose and check that each failure is a
 * clean error (no crash, no leak). Part of core. Outside tests they are
 * malloc and friends behind one relaxed atomic load.
 */
#ifndef ZP_CORE_ALLOC_H
#define ZP_CORE_ALLOC_H

#include <stddef.h>

void *zp__malloc(size_t n);
void *zp__calloc(size_t n, size_t size);
void *zp__realloc(void *p, size_t n);
char *zp__strdup(const char *s);

/*
 * Tests: from now on, the next `n` allocations succeed and every one after
 * them fails, until the next call; n < 0 lets all succeed (the default).
 * Returns how many allocations failed since the previous call.
 * Thread-safe.
 */
long zp__alloc_fail_after(long n);

#endif
