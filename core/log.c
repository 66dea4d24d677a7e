/* SPDX-License-Identifier: MIT */
/*
 * Rate-limited log lines, see log.h. Part of core.
 */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>

#include "core/clock.h"

bool zp__ratelog_say(zp__ratelog *rl, const char *fmt, ...)
{
    uint64_t now = zp__now_ns();
    pthread_mutex_lock(&rl->lock);
    bool write =
        rl->last == 0 || now - rl->last >= ZP__RATELOG_SECONDS * 1000000000ull;
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
        fprintf(stderr,
                "zpipe: %s (and %llu more like it since the last such line, %d "
                "s or more ago)\n",
                line, (unsigned long long)quiet, ZP__RATELOG_SECONDS);
    else
        fprintf(stderr, "zpipe: %s\n", line);
    return true;
}
