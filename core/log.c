/* SPDX-License-Identifier: MIT */
/*
 * The library's log and its rate-limited lines, see log.h. Part of core.
 * One lock guards the hook and is held while it runs, so that the hook is
 * called for one line at a time, and never again once zp_log_set() has
 * replaced it; lines are rare (the noisy ones are rate-limited), so the
 * lock costs nothing that matters.
 */
#include "core/log.h"

#include <assert.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/clock.h"

#define LINE 1024 /* bytes of a line formatted on the stack */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static zp_log_fn hook;  /* guarded by lock; NULL: stderr */
static void *hook_user; /* guarded by lock; handed to hook */
/* This thread is running the hook: what it says goes to stderr, since the
 * lock is held (a hook may not log through zpipe, but a mistake should
 * not hang the process). */
static _Thread_local bool in_hook;

void zp_log_set(zp_log_fn fn, void *user)
{
    /* Replacing the hook waits for it to return: from inside, forever. */
    assert(!in_hook);
    pthread_mutex_lock(&lock);
    hook = fn;
    hook_user = fn != NULL ? user : NULL;
    pthread_mutex_unlock(&lock);
}

/* Hands a whole line to the hook, or writes it and its newline to stderr
 * in one call, as the library always has. */
static void say(zp_log_level level, const char *line)
{
    assert(level == ZP_LOG_ERROR || level == ZP_LOG_WARN ||
           level == ZP_LOG_INFO);
    if (in_hook) {
        fprintf(stderr, "%s\n", line);
        return;
    }
    pthread_mutex_lock(&lock);
    if (hook != NULL) {
        in_hook = true;
        hook(hook_user, level, line);
        in_hook = false;
    } else {
        fprintf(stderr, "%s\n", line);
    }
    pthread_mutex_unlock(&lock);
}

void zp__log(zp_log_level level, const char *fmt, ...)
{
    char buf[LINE];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    char *line = (size_t)n < sizeof buf ? NULL : zp__malloc((size_t)n + 1);
    if (line != NULL) {
        va_start(ap, fmt);
        vsnprintf(line, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    say(level, line != NULL ? line : buf);
    free(line);
}

bool zp__ratelog_say(zp__ratelog *rl, const char *fmt, ...)
{
    uint64_t now = zp__now_ns();
    pthread_mutex_lock(&rl->lock);
    bool write =
        rl->last == 0 || now - rl->last >= ZP__RATELOG_SECONDS * ZP__NS_PER_S;
    uint64_t quiet = rl->quiet;
    if (write) {
        rl->last = now;
        rl->quiet = 0;
    } else {
        rl->quiet++;
    }
    pthread_mutex_unlock(&rl->lock);
    if (!write)
        return false;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (quiet > 0)
        zp__log(ZP_LOG_WARN,
                "zpipe: %s (and %llu more like it since the last such line, %d "
                "s or more ago)",
                line, (unsigned long long)quiet, ZP__RATELOG_SECONDS);
    else
        zp__log(ZP_LOG_WARN, "zpipe: %s", line);
    return true;
}
