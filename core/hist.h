/* SPDX-License-Identifier: MIT */
/*
 * Histograms of durations: the fixed buckets of the public header
 * (ZP_HIST_BOUNDS_US, 10 us to 60 s by decades, then the rest) kept in
 * atomic counters, so that any thread may read a histogram while its one
 * writer records into it. Part of core. A record costs a few comparisons
 * and relaxed loads and stores: no lock, no read-modify-write, nothing a
 * reader can slow down. Readers see each counter whole, though not all
 * of them at the same instant.
 */
#ifndef ZP_CORE_HIST_H
#define ZP_CORE_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#include "zpipe.h"

/* Embedded in its owner, zeroed to start. */
typedef struct zp__hist {
    _Atomic uint64_t count[ZP_HIST_BUCKETS]; /* items per bucket    */
    _Atomic uint64_t sum_ns;                 /* their total time    */
} zp__hist;

/* The bucket of a duration of `ns` nanoseconds. */
int zp__hist_bucket(uint64_t ns);

/* The upper bound of bucket i in nanoseconds; UINT64_MAX for the last. */
uint64_t zp__hist_bound_ns(int i);

/*
 * Records n items that took `each` nanoseconds each and `sum` together
 * (the caller's exact total, when `each` is an average). One thread at a
 * time may record into a histogram.
 */
void zp__hist_record(zp__hist *h, uint64_t each, uint64_t n, uint64_t sum);

/* Adds h's counts into counts[ZP_HIST_BUCKETS] and its total time into
 * *sum_ns. Any thread. */
void zp__hist_add_to(const zp__hist *h, uint64_t *counts, uint64_t *sum_ns);

#endif
