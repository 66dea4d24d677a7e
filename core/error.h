/* SPDX-License-Identifier: MIT */
/*
 * Error helpers shared by every layer: formatted messages into malloc'ed
 * strings. Part of core; allocates, never logs, never exits.
 */
#ifndef ZP_CORE_ERROR_H
#define ZP_CORE_ERROR_H

#include <stdarg.h>

#include "zpipe.h"

/* A malloc'ed printf-formatted string, or NULL when out of memory. */
char *zp__strdupf(const char *fmt, ...) ZP__PRINTF(1, 2);
char *zp__vstrdupf(const char *fmt, va_list ap) ZP__PRINTF(1, 0);

#endif
