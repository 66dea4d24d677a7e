/* SPDX-License-Identifier: MIT */
/*
 * The task registry. Registrations happen from constructors, before main()
 * or at dlopen() time, so the table is a plain array under a mutex that is
 * initialised statically. A few hundred tasks at most are expected; lookups
 * happen when a spec is parsed, never per item.
 */
#include "core/registry.h"

#include "core/alloc.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *name;      /* owned */
    zp_task_fn fn;   /* a sync task, or NULL */
    zp_async_fn afn; /* an async task, or NULL */
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry *table; /* owned, `count` used of `cap` */
static size_t count;
static size_t cap;
static char *conflict; /* owned; the first refused name not yet taken */

static entry *find(const char *name)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

static int append(const char *name, zp_task_fn fn, zp_async_fn afn)
{
    assert((fn == NULL) != (afn == NULL)); /* sync or async, never both */
    assert(count <= cap);
    if (count == cap) {
        size_t ncap = cap ? cap * 2 : 32;
        entry *t = zp__realloc(table, ncap * sizeof *t);
        if (t == NULL)
            return ZP_ENOMEM;
        table = t;
        cap = ncap;
    }
    char *copy = zp__strdup(name);
    if (copy == NULL)
        return ZP_ENOMEM;
    table[count++] = (entry){copy, fn, afn};
    return 0;
}

/* Adds name -> fn or afn; a name another function holds is refused. */
static int add(const char *name, zp_task_fn fn, zp_async_fn afn)
{
    if (name == NULL || name[0] == '\0' || (fn == NULL && afn == NULL))
        return ZP_EINVAL;
    pthread_mutex_lock(&lock);
    entry *e = find(name);
    int rc = 0;
    if (e == NULL)
        rc = append(name, fn, afn);
    else if (e->fn != fn || e->afn != afn)
        rc = ZP_EINVAL;
    if (rc == ZP_EINVAL && conflict == NULL)
        conflict = zp__strdup(name);
    pthread_mutex_unlock(&lock);
    return rc;
}

int zp_register(const char *name, zp_task_fn fn)
{
    return add(name, fn, NULL);
}

int zp_register_async(const char *name, zp_async_fn fn)
{
    return add(name, NULL, fn);
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

zp_async_fn zp_lookup_async(const char *name)
{
    if (name == NULL)
        return NULL;
    pthread_mutex_lock(&lock);
    entry *e = find(name);
    zp_async_fn fn = e ? e->afn : NULL;
    pthread_mutex_unlock(&lock);
    return fn;
}

char *zp__registry_take_conflict(void)
{
    pthread_mutex_lock(&lock);
    char *name = conflict;
    conflict = NULL;
    pthread_mutex_unlock(&lock);
    return name;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

void zp__registry_each(void (*fn)(const char *, bool, void *), void *arg)
{
    pthread_mutex_lock(&lock);
    qsort(table, count, sizeof *table, by_name);
    for (size_t i = 0; i < count; i++)
        fn(table[i].name, table[i].afn != NULL, arg);
    pthread_mutex_unlock(&lock);
}
