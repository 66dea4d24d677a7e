/* SPDX-License-Identifier: MIT */
/*
 * Allocation, see alloc.h. Part of core.
 */
#include "core/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic long left = -1; /* allocations before failing; <0: never */
static _Atomic long failed;    /* allocations refused so far */

/* Whether this allocation may go ahead. */
static int allowed(void)
{
    if (atomic_load_explicit(&left, memory_order_relaxed) < 0)
        return 1;
    if (atomic_fetch_sub(&left, 1) > 0)
        return 1;
    atomic_store(&left, 0);
    atomic_fetch_add(&failed, 1);
    return 0;
}

void *zp__malloc(size_t n)
{
    return allowed() ? malloc(n) : NULL;
}

void *zp__calloc(size_t n, size_t size)
{
    return allowed() ? calloc(n, size) : NULL;
}

void *zp__realloc(void *p, size_t n)
{
    return allowed() ? realloc(p, n) : NULL;
}

char *zp__strdup(const char *s)
{
    return allowed() ? strdup(s) : NULL;
}

long zp__alloc_fail_after(long n)
{
    atomic_store(&left, n < 0 ? -1 : n);
    return atomic_exchange(&failed, 0);
}
