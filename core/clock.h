/* SPDX-License-Identifier: MIT */
/*
 * Time: the monotonic clock every layer reads, timed waits on condition
 * variables against that clock, and the relaxed counters that statistics
 * are kept in. Part of core, the lowest layer: no sockets, no threads of
 * its own.
 */
#ifndef ZP_CORE_CLOCK_H
#define ZP_CORE_CLOCK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* Nanoseconds in a millisecond and in a second: the one copy of each, for
 * every layer that turns milliseconds or seconds into the clock's unit. */
#define ZP__NS_PER_MS 1000000ull
#define ZP__NS_PER_S 1000000000ull

/* Monotonic time in nanoseconds. */
uint64_t zp__now_ns(void);

/* Sets *t to `ns` from now on the monotonic clock, for timed waits on a
 * condition variable made by zp__cond_init_monotonic(). */
void zp__deadline_after(struct timespec *t, uint64_t ns);

/* Initialises a condition variable whose timed waits use the monotonic
 * clock. Returns 0 or ZP_ENOMEM. */
int zp__cond_init_monotonic(pthread_cond_t *c);

/*
 * Adds `n` to a statistics counter that one thread writes and any thread
 * reads: a relaxed load and store, cheaper than an atomic add because the
 * writer is alone.
 */
static inline void zp__count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

#endif
