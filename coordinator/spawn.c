/* SPDX-License-Identifier: MIT */
/*
 * Children, see spawn.h. Part of coordinator.
 */
#include "coordinator/spawn.h"

#include <assert.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"

extern char **environ;

struct zp__children {
    pid_t *pids; /* owned, n; 0 = an empty slot */
    int n;
    char *endpoint; /* owned */
};

static char *const *worker_args; /* borrowed; see spawn.h */

void zp__spawn_set_worker_args(char *const *args)
{
    worker_args = args;
}

void zp__spawnattr_init(posix_spawnattr_t *at, short flags)
{
    sigset_t none, stops;
    sigemptyset(&none);
    sigemptyset(&stops);
    sigaddset(&stops, SIGINT);
    sigaddset(&stops, SIGTERM);
    sigaddset(&stops, SIGQUIT);
    sigaddset(&stops, SIGPIPE);
    posix_spawnattr_init(at);
    posix_spawnattr_setsigmask(at, &none);
    posix_spawnattr_setsigdefault(at, &stops);
    posix_spawnattr_setflags(
        at, (short)(flags | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF));
}

char *zp__describe_status(pid_t pid, int status)
{
    if (WIFSIGNALED(status))
        return zp__strdupf("its worker (pid %d) was killed by signal %d "
                           "(SIG%s)",
                           (int)pid, WTERMSIG(status),
                           sigabbrev_np(WTERMSIG(status))
                               ? sigabbrev_np(WTERMSIG(status))
                               : "?");
    return zp__strdupf("its worker (pid %d) exited with status %d", (int)pid,
                       WEXITSTATUS(status));
}

zp__children *zp__children_new(int n, const char *endpoint)
{
    zp__children *c = zp__calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->n = n;
    c->pids = zp__calloc((size_t)n, sizeof *c->pids);
    c->endpoint = zp__strdup(endpoint);
    if (c->pids == NULL || c->endpoint == NULL)
        zp__children_destroy(&c);
    return c;
}

int zp__children_count(const zp__children *c)
{
    return c != NULL ? c->n : 0;
}

/* Workers start as zp__spawnattr_init says, whatever the program they are
 * spawned from set up for itself. */
static posix_spawnattr_t spawn_attr;
static pthread_once_t spawn_attr_once = PTHREAD_ONCE_INIT;

static void make_spawn_attr(void)
{
    zp__spawnattr_init(&spawn_attr, 0);
}

/* "zpipe-worker --zp-worker ENDPOINT", then the worker arguments. */
static char **spawn_argv(const zp__children *c)
{
    size_t extra = 0;
    while (worker_args != NULL && worker_args[extra] != NULL)
        extra++;
    char **argv = zp__calloc(extra + 4, sizeof *argv);
    if (argv == NULL)
        return NULL;
    argv[0] = "zpipe-worker";
    argv[1] = "--zp-worker";
    argv[2] = c->endpoint;
    for (size_t i = 0; i < extra; i++)
        argv[3 + i] = worker_args[i];
    return argv;
}

/* This process's environment but for its own worker-mode variables, and
 * the coordinator's pid for the child to watch. */
static char **spawn_envp(char *parent)
{
    size_t n = 0, k = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = zp__calloc(n + 2, sizeof *envp);
    if (envp == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "ZPIPE_WORKER", 12) != 0)
            envp[k++] = environ[i];
    envp[k] = parent;
    return envp;
}

int zp__children_spawn(zp__children *c, int i, char **why)
{
    char parent[64];
    assert(i >= 0 && i < c->n && c->pids[i] == 0); /* an empty slot */
    snprintf(parent, sizeof parent, "ZPIPE_WORKER_PARENT=%d", (int)getpid());
    char **envp = spawn_envp(parent);
    char **argv = spawn_argv(c);
    int rc = ZP_ENOMEM;
    pthread_once(&spawn_attr_once, make_spawn_attr);
    if (envp == NULL || argv == NULL) {
        *why = zp__strdupf("out of memory");
        goto out_free;
    }
    pid_t pid;
    int err =
        posix_spawn(&pid, "/proc/self/exe", NULL, &spawn_attr, argv, envp);
    if (err != 0) {
        *why = zp__strdupf("cannot start a worker process: %s", strerror(err));
        rc = ZP_EIO;
        goto out_free;
    }
    c->pids[i] = pid;
    rc = 0;
out_free:
    free(argv);
    free(envp);
    return rc;
}

int zp__children_reap(zp__children *c, pid_t *pid, int *status)
{
    for (int i = 0; i < c->n; i++) {
        pid_t p = c->pids[i];
        if (p > 0 && waitpid(p, status, WNOHANG) == p) {
            c->pids[i] = 0;
            *pid = p;
            return i;
        }
    }
    return -1;
}

int zp__children_slot(const zp__children *c, pid_t pid)
{
    for (int i = 0; c != NULL && pid > 0 && i < c->n; i++)
        if (c->pids[i] == pid)
            return i;
    return -1;
}

/* Waits up to ~2 s for the children to end; returns how many are left. */
static int wait_for_all(zp__children *c)
{
    int left = 0;
    for (int tries = 0; tries < 200; tries++) {
        left = 0;
        for (int i = 0; i < c->n; i++)
            if (c->pids[i] > 0 && waitpid(c->pids[i], NULL, WNOHANG) == 0)
                left++;
            else
                c->pids[i] = 0;
        if (left == 0)
            break;
        struct timespec t = {0, 10 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    return left;
}

void zp__children_destroy(zp__children **cp)
{
    zp__children *c = cp ? *cp : NULL;
    if (c == NULL)
        return;
    for (int i = 0; c->pids != NULL && i < c->n; i++)
        if (c->pids[i] > 0)
            kill(c->pids[i], SIGTERM);
    if (c->pids != NULL && wait_for_all(c) > 0)
        for (int i = 0; i < c->n; i++)
            if (c->pids[i] > 0) {
                kill(c->pids[i], SIGKILL);
                waitpid(c->pids[i], NULL, 0);
            }
    free(c->pids);
    free(c->endpoint);
    free(c);
    *cp = NULL;
}
