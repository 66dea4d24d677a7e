/* SPDX-License-Identifier: MIT */
/*
 * Rate-limited log lines: what a peer can make the process say (a worker
 * that stops answering, a dropped message, a refused connection) is said
 * the first time, then at most once every few seconds with a count of
 * what was kept quiet meanwhile, so that no peer can flood the log. Part
 * of core. Thread-safe.
 */
#ifndef ZP_CORE_LOG_H
#define ZP_CORE_LOG_H

#include <pthread.h>
#include <stdint.h>

#include "zpipe.h"

/* Seconds between two lines of one kind, at most one each. */
#define ZP__RATELOG_SECONDS 5

/* One kind of line: a static zp__ratelog per call site. */
typedef struct zp__ratelog {
    pthread_mutex_t lock;
    uint64_t last;  /* when a line was last written (ns), 0: never */
    uint64_t quiet; /* occurrences not written since */
} zp__ratelog;

#define ZP__RATELOG_INIT                \
    {                                   \
        PTHREAD_MUTEX_INITIALIZER, 0, 0 \
    }

/*
 * Writes "zpipe: " and the line to stderr when it is the first of its kind
 * or the last was written ZP__RATELOG_SECONDS ago, adding how many were
 * kept quiet since; else only counts it. Returns whether it wrote.
 */
bool zp__ratelog_say(zp__ratelog *rl, const char *fmt, ...) ZP__PRINTF(2, 3);

#endif
