/* SPDX-License-Identifier: MIT */
/*
 * The task registry: names to task functions, filled by ZP_TASK and
 * ZP_ASYNC_TASK at load time. Part of core. Thread-safe; entries are never
 * removed. A name holds one function, sync or async.
 */
#ifndef ZP_CORE_REGISTRY_H
#define ZP_CORE_REGISTRY_H

#include "zpipe.h"

/* Calls fn(name, async, arg) for every registered task, in name order. */
void zp__registry_each(void (*fn)(const char *name, bool async, void *arg),
                       void *arg);

/*
 * The name of the first registration refused since the last call because
 * another function already held the name (a constructor cannot report it),
 * or NULL. The caller frees it. Loaders of plugins call it after dlopen().
 */
char *zp__registry_take_conflict(void);

#endif
