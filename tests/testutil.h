/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the test programs: deadlines for bounded waits, naps
 * that stand for slow work in tasks, a reader of progress lines, and the
 * sample tasks several suites use. Header-only (static inline), so each
 * test program stays one file.
 */
#ifndef ZP_TESTS_TESTUTIL_H
#define ZP_TESTS_TESTUTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zpipe.h>

/* Whether the program is built with the thread sanitizer, whose reports
 * under a low limit of open files cannot be symbolized, and so cannot be
 * matched by tests/tsan.supp either. */
#if defined(__SANITIZE_THREAD__)
#define ZP_TEST_TSAN 1
#else
#define ZP_TEST_TSAN 0
#endif

/* *t = now + ms on CLOCK_REALTIME, for pthread_cond_timedwait. */
static inline void deadline_in(struct timespec *t, int ms)
{
    clock_gettime(CLOCK_REALTIME, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

/* Sleeps `us` microseconds (slow work inside a task; never a wait). */
static inline void nap_us(long us)
{
    struct timespec t = {us / 1000000, (us % 1000000) * 1000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
}

/* Whether `text` holds a periodic progress line, "zpipe: 1.0s: " and then
 * `rest`, printed at whatever second of the run. */
static inline bool has_progress_line(const char *text, const char *rest)
{
    for (const char *l = text; l != NULL && *l != '\0';) {
        char *end;
        if (strncmp(l, "zpipe: ", 7) == 0) {
            strtod(l + 7, &end);
            if (end != l + 7 && strncmp(end, "s: ", 3) == 0 &&
                strncmp(end + 3, rest, strlen(rest)) == 0)
                return true;
        }
        l = strchr(l, '\n');
        l = l != NULL ? l + 1 : NULL;
    }
    return false;
}

/* The first task: emits 0 .. n-1 for the run argument [n]. */
static inline int numbers(zp_call *call)
{
    int64_t n = zp_input(call)->via.array.ptr[0].via.i64;
    for (int64_t i = 0; i < n; i++)
        if (zp_emit_int(call, i) != 0)
            return -1;
    return 0;
}

/* x -> x * x */
static inline int square(zp_call *call)
{
    int64_t x = zp_input(call)->via.i64;
    return zp_emit_int(call, x * x);
}

/* A join task: the sum of the whole stream. */
static inline int total(zp_call *call)
{
    const msgpack_object *item;
    int64_t sum = 0;
    while (zp_next(call, &item))
        sum += item->via.i64;
    return zp_emit_int(call, sum);
}

#endif
