/* SPDX-License-Identifier: MIT */
/*
 * Histograms of durations, see hist.h. The bounds are few and ordered, so
 * a linear scan finds a bucket in as many comparisons as the item's
 * decade: one or two for the fast items that are recorded most.
 */
#include "core/hist.h"

#include <stddef.h>

static const uint64_t bounds_us[] = {ZP_HIST_BOUNDS_US};

_Static_assert(sizeof bounds_us / sizeof bounds_us[0] == ZP_HIST_BUCKETS - 1,
               "ZP_HIST_BOUNDS_US has a bound for every bucket but the last");

uint64_t zp__hist_bound_ns(int i)
{
    return i >= 0 && i < ZP_HIST_BUCKETS - 1 ? bounds_us[i] * 1000u
                                             : UINT64_MAX;
}

int zp__hist_bucket(uint64_t ns)
{
    int i = 0;
    while (i < ZP_HIST_BUCKETS - 1 && ns > bounds_us[i] * 1000u)
        i++;
    return i;
}

/* Adds n to a counter that only the caller's thread writes. */
static void add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

void zp__hist_record(zp__hist *h, uint64_t each, uint64_t n, uint64_t sum)
{
    add(&h->count[zp__hist_bucket(each)], n);
    add(&h->sum_ns, sum);
}

void zp__hist_add_to(const zp__hist *h, uint64_t *counts, uint64_t *sum_ns)
{
    for (size_t i = 0; i < ZP_HIST_BUCKETS; i++)
        counts[i] += atomic_load_explicit(&h->count[i], memory_order_relaxed);
    *sum_ns += atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
}
