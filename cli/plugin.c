/* SPDX-License-Identifier: MIT */
/*
 * Plugins, see plugin.h. Which plugin a task comes from is found by
 * listing the registry before and after each dlopen: the names that
 * appeared are the plugin's. A registration refused because another
 * function holds the name cannot be reported by the constructor that made
 * it, so the registry keeps the name for zp__registry_take_conflict().
 */
#include "cli/plugin.h"

#include <dlfcn.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/registry.h"

/* Where `make install` puts plugins, relative to the zpipe executable
 * (or absolute), as the build says. */
#ifndef ZP_PLUGIN_DIR
#define ZP_PLUGIN_DIR "../lib/zpipe"
#endif

static const char builtin[] = "built-in";

typedef struct origin {
    char *name;       /* owned; a task's name */
    const char *from; /* borrowed: `builtin` or a path in args */
} origin;

struct zp__plugins {
    origin *tasks; /* owned, ntasks */
    size_t ntasks, cap;
    char **args; /* owned: "--plugin" (static), path (owned), ..., NULL */
    size_t nargs;
    void **handles; /* owned array; the handles stay open */
    size_t nhandles;
    bool nomem; /* noting tasks ran out of memory */
};

/* ---- Which task comes from where ----------------------------------------- */

static const origin *find(const zp__plugins *ps, const char *name)
{
    for (size_t i = 0; i < ps->ntasks; i++)
        if (strcmp(ps->tasks[i].name, name) == 0)
            return &ps->tasks[i];
    return NULL;
}

typedef struct noting {
    zp__plugins *ps;
    const char *from;
    size_t added;
} noting;

/* zp__registry_each's callback: notes a task not seen before. */
static void note(const char *name, bool async, void *arg)
{
    noting *n = arg;
    zp__plugins *ps = n->ps;
    (void)async;
    if (find(ps, name) != NULL || ps->nomem)
        return;
    if (ps->ntasks == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16;
        origin *t = realloc(ps->tasks, cap * sizeof *t);
        ps->nomem = t == NULL;
        if (t == NULL)
            return;
        ps->tasks = t;
        ps->cap = cap;
    }
    char *copy = strdup(name);
    ps->nomem = copy == NULL;
    if (copy != NULL) {
        ps->tasks[ps->ntasks++] = (origin){copy, n->from};
        n->added++;
    }
}

/* Notes the tasks registered since the last call as coming from `from`;
 * returns how many there are. */
static size_t note_new(zp__plugins *ps, const char *from)
{
    noting n = {ps, from, 0};
    zp__registry_each(note, &n);
    return n.added;
}

zp__plugins *zp__plugins_new(void)
{
    zp__plugins *ps = calloc(1, sizeof *ps);
    if (ps == NULL)
        return NULL;
    ps->args = calloc(1, sizeof *ps->args);
    note_new(ps, builtin);
    if (ps->args == NULL || ps->nomem)
        zp__plugins_destroy(&ps);
    return ps;
}

const char *zp__plugins_origin(const zp__plugins *ps, const char *name)
{
    const origin *o = find(ps, name);
    return o ? o->from : "?";
}

char *const *zp__plugins_args(const zp__plugins *ps)
{
    return ps->args;
}

void zp__plugins_destroy(zp__plugins **pps)
{
    zp__plugins *ps = pps ? *pps : NULL;
    if (ps == NULL)
        return;
    for (size_t i = 0; i < ps->ntasks; i++)
        free(ps->tasks[i].name);
    for (size_t i = 1; i < ps->nargs; i += 2)
        free(ps->args[i]);
    free(ps->tasks);
    free(ps->args);
    free(ps->handles);
    free(ps);
    *pps = NULL;
}

/* ---- Finding the file ---------------------------------------------------- */

/* The directory zpipe's plugins are installed in (malloc'ed), or NULL. */
static char *installed_dir(void)
{
    char exe[PATH_MAX];
    if (ZP_PLUGIN_DIR[0] == '/')
        return strdup(ZP_PLUGIN_DIR);
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return NULL;
    exe[n] = '\0';
    return zp__strdupf("%s/%s", dirname(exe), ZP_PLUGIN_DIR);
}

/* dir/name or dir/name.so, if either exists (malloc'ed real path). */
static char *look_in(const char *dir, size_t len, const char *name)
{
    static const char *const suffixes[] = {"", ".so"};
    for (size_t i = 0; i < 2; i++) {
        char *path = zp__strdupf("%.*s/%s%s", (int)len, dir, name, suffixes[i]);
        char *real = path ? realpath(path, NULL) : NULL;
        free(path);
        if (real != NULL)
            return real;
    }
    return NULL;
}

/* A plugin named without a '/': in $ZPIPE_PLUGIN_PATH, then installed. */
static char *search(const char *name, char **why)
{
    const char *list = getenv("ZPIPE_PLUGIN_PATH");
    char *found = NULL, *dir = installed_dir();
    for (const char *s = list; s != NULL && found == NULL;) {
        const char *colon = strchr(s, ':');
        size_t len = colon ? (size_t)(colon - s) : strlen(s);
        if (len > 0)
            found = look_in(s, len, name);
        s = colon ? colon + 1 : NULL;
    }
    if (found == NULL && dir != NULL)
        found = look_in(dir, strlen(dir), name);
    if (found == NULL)
        *why = zp__strdupf("plugin '%s' is neither in $ZPIPE_PLUGIN_PATH "
                           "nor in %s (give a path, such as ./%s, to load a "
                           "file from elsewhere)",
                           name, dir ? dir : ZP_PLUGIN_DIR, name);
    free(dir);
    return found;
}

static char *resolve(const char *name, char **why)
{
    if (strchr(name, '/') == NULL)
        return search(name, why);
    char *real = realpath(name, NULL);
    if (real == NULL)
        *why = zp__strdupf("plugin '%s': %s", name, strerror(errno));
    return real;
}

/* ---- Loading ------------------------------------------------------------- */

/* Why the registration of `name` was refused, for the plugin `path`. */
static char *conflict(const zp__plugins *ps, const char *path, const char *name)
{
    const origin *o = find(ps, name);
    if (o == NULL)
        return zp__strdupf("plugin '%s' registers two functions as the task "
                           "'%s': two tasks cannot have one name",
                           path, name);
    if (o->from == builtin)
        return zp__strdupf("plugin '%s' has a task named '%s', which is a "
                           "built-in task: two tasks cannot have one name",
                           path, name);
    return zp__strdupf("plugins '%s' and '%s' both have a task named '%s': "
                       "two tasks cannot have one name",
                       o->from, path, name);
}

static bool loaded(const zp__plugins *ps, void *handle)
{
    for (size_t i = 0; i < ps->nhandles; i++)
        if (ps->handles[i] == handle)
            return true;
    return false;
}

/* Keeps the handle and the worker arguments of a plugin (taking `path`). */
static int keep(zp__plugins *ps, void *handle, char *path)
{
    void **h = realloc(ps->handles, (ps->nhandles + 1) * sizeof *h);
    if (h != NULL)
        ps->handles = h;
    char **a = realloc(ps->args, (ps->nargs + 3) * sizeof *a);
    if (a != NULL)
        ps->args = a;
    if (h == NULL || a == NULL) {
        free(path);
        return ZP_ENOMEM;
    }
    ps->handles[ps->nhandles++] = handle;
    ps->args[ps->nargs++] = "--plugin";
    ps->args[ps->nargs++] = path;
    ps->args[ps->nargs] = NULL;
    return 0;
}

/* Checks what loading `path` registered. Returns 0 or ZP_EINVAL. */
static int check_tasks(zp__plugins *ps, const char *path, char **why)
{
    char *taken = zp__registry_take_conflict();
    if (taken != NULL) {
        *why = conflict(ps, path, taken);
        free(taken);
        return ZP_EINVAL;
    }
    if (note_new(ps, path) > 0)
        return 0;
    *why = ps->nomem ? strdup("out of memory")
                     : zp__strdupf("plugin '%s' registers no task (a plugin "
                                   "declares its tasks with ZP_TASK or "
                                   "ZP_ASYNC_TASK)",
                                   path);
    return ZP_EINVAL;
}

int zp__plugins_load(zp__plugins *ps, const char *name, char **why)
{
    char *path = resolve(name, why);
    if (path == NULL)
        return ZP_EINVAL;
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        *why = zp__strdupf("plugin '%s': cannot load it: %s", name, dlerror());
        free(path);
        return ZP_EINVAL;
    }
    if (loaded(ps, handle)) { /* the same file again */
        dlclose(handle);
        free(path);
        return 0;
    }
    /* The path is kept first: the names noted point to it. */
    int rc = keep(ps, handle, path);
    if (rc == 0)
        rc = check_tasks(ps, ps->args[ps->nargs - 1], why);
    else
        *why = strdup("out of memory");
    return rc;
}
