/* SPDX-License-Identifier: MIT */
/*
 * Time, see clock.h. Part of core.
 */
#include "core/clock.h"

#include "zpipe.h"

static uint64_t ns_of(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (uint64_t)t.tv_sec * ZP__NS_PER_S + (uint64_t)t.tv_nsec;
}

uint64_t zp__now_ns(void)
{
    return ns_of(CLOCK_MONOTONIC);
}

void zp__deadline_after(struct timespec *t, uint64_t ns)
{
    clock_gettime(CLOCK_MONOTONIC, t);
    ns += (uint64_t)t->tv_nsec;
    t->tv_sec += (time_t)(ns / ZP__NS_PER_S);
    t->tv_nsec = (long)(ns % ZP__NS_PER_S);
}

int zp__cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0)
        return ZP_ENOMEM;
    int rc = pthread_condattr_setclock(&a, CLOCK_MONOTONIC) == 0 &&
                     pthread_cond_init(c, &a) == 0
                 ? 0
                 : ZP_ENOMEM;
    pthread_condattr_destroy(&a);
    return rc;
}
