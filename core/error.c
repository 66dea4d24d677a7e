/* SPDX-License-Identifier: MIT */
/*
 * Error codes and message formatting. Part of core.
 */
#include "core/error.h"

#include "core/alloc.h"

#include <stdio.h>
#include <stdlib.h>

const char *zp_strerror(int err)
{
    switch (err) {
    case ZP_OK: return "success";
    case ZP_EINVAL: return "invalid argument or configuration";
    case ZP_ENOMEM: return "out of memory";
    case ZP_ETASK: return "a task failed";
    case ZP_ECANCELED: return "the run was cancelled";
    case ZP_ENOTSUP: return "not supported by this build";
    case ZP_EPROTO: return "malformed message or item";
    case ZP_EIO: return "transport or system failure";
    default: return "unknown error";
    }
}

const char *zp_version(void)
{
    return ZP_VERSION_STRING;
}

char *zp__vstrdupf(const char *fmt, va_list ap)
{
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(NULL, 0, fmt, copy);
    va_end(copy);
    if (n < 0)
        return NULL;
    char *s = zp__malloc((size_t)n + 1);
    if (s != NULL)
        vsnprintf(s, (size_t)n + 1, fmt, ap);
    return s;
}

char *zp__strdupf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = zp__vstrdupf(fmt, ap);
    va_end(ap);
    return s;
}
