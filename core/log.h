/* SPDX-License-Identifier: MIT */
/*
 * The library's log: every line the library says goes through zp__log,
 * which hands it to the hook a program set with zp_log_set(), or writes it
 * to stderr as it always did. On top of it, rate-limited lines: what a peer
 * can make the process say (a worker that stops answering, a dropped
 * message, a refused connection) is said the first time, then at most
 * once every few seconds with a count of what was kept quiet meanwhile, so
 * that no peer can flood the log. Part of core: it must never include a
 * layer above, nor block on anything but the hook and stderr. Thread-safe.
 */
#ifndef ZP_CORE_LOG_H
#define ZP_CORE_LOG_H

#include <pthread.h>
#include <stdint.h>

#include "zpipe.h"

/*
 * Says one line at `level`: the whole line as stderr shows it ("zpipe: ..."
 * or "zpipe worker: ..."), without its newline. The hook gets it, or stderr
 * gets it and a newline in one write. A line too long for the stack is
 * formatted on the heap; without memory for it, it is cut short.
 */
void zp__log(zp_log_level level, const char *fmt, ...) ZP__PRINTF(2, 3);

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
 * Says "zpipe: " and the line as a warning (zp__log) when it is the first
 * of its kind or the last was said ZP__RATELOG_SECONDS ago, adding how many
 * were kept quiet since; else only counts it. Returns whether it said it.
 */
bool zp__ratelog_say(zp__ratelog *rl, const char *fmt, ...) ZP__PRINTF(2, 3);

#endif
