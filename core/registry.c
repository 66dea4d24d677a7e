/* SPDX-License-Identifier: MIT */
/*
 * The task registry. Registrations happen from constructors, before main()
 * or at dlopen() time, so the table is a plain array under a mutex that is
 * initialised statically. A few hundred tasks at most are expected; lookups
 * happen when a spec is parsed, never per item.
 */
#include "core/registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *name; /* owned */
    zp_task_fn fn;
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry *table; /* owned, `count` used of `cap` */
static size_t count;
static size_t cap;

static entry *find(const char *name)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

static int append(const char *name, zp_task_fn fn)
{
    if (count == cap) {
        size_t ncap = cap ? cap * 2 : 32;
        entry *t = realloc(table, ncap * sizeof *t);
        if (t == NULL)
            return ZP_ENOMEM;
        table = t;
        cap = ncap;
    }
    char *copy = strdup(name);
    if (copy == NULL)
        return ZP_ENOMEM;
    table[count++] = (entry){copy, fn};
    return 0;
}

int zp_register(const char *name, zp_task_fn fn)
{
    if (name == NULL || name[0] == '\0' || fn == NULL)
        return ZP_EINVAL;
    pthread_mutex_lock(&lock);
    entry *e = find(name);
    int rc = e == NULL ? append(name, fn) : (e->fn == fn ? 0 : ZP_EINVAL);
    pthread_mutex_unlock(&lock);
    return rc;
}

zp_task_fn zp_lookup(const char *name)
{
    if (name == NULL)
        return NULL;
    pthread_mutex_lock(&lock);
    entry *e = find(name);
    zp_task_fn fn = e ? e->fn : NULL;
    pthread_mutex_unlock(&lock);
    return fn;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

void zp__registry_each(void (*fn)(const char *, zp_task_fn, void *), void *arg)
{
    pthread_mutex_lock(&lock);
    qsort(table, count, sizeof *table, by_name);
    for (size_t i = 0; i < count; i++)
        fn(table[i].name, table[i].fn, arg);
    pthread_mutex_unlock(&lock);
}
