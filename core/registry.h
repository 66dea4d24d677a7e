/* SPDX-License-Identifier: MIT */
/*
 * The task registry: names to task functions, filled by ZP_TASK at load
 * time. Part of core. Thread-safe; entries are never removed.
 */
#ifndef ZP_CORE_REGISTRY_H
#define ZP_CORE_REGISTRY_H

#include "zpipe.h"

/* Calls fn(name, task, arg) for every registered task, in name order. */
void zp__registry_each(void (*fn)(const char *name, zp_task_fn task, void *arg),
                       void *arg);

#endif
