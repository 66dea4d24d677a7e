/* SPDX-License-Identifier: MIT */
/*
 * Children: the worker processes of one process stage, each in a slot,
 * spawned from /proc/self/exe in worker mode, reaped and replaced by the
 * stage's dispatcher, and all ended with the stage. Also how any child of
 * zpipe starts: with no signal blocked and the default actions of the
 * stop signals, whatever this process set up for itself. Part of
 * coordinator. One thread uses a zp__children (the dispatcher's): a child
 * dies with the thread that spawned it (PR_SET_PDEATHSIG).
 */
#ifndef ZP_COORDINATOR_SPAWN_H
#define ZP_COORDINATOR_SPAWN_H

#include <spawn.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct zp__children zp__children;

/*
 * `n` empty slots for workers connecting to `endpoint` (copied). Returns
 * NULL when out of memory.
 */
zp__children *zp__children_new(int n, const char *endpoint);

/* Slots. */
int zp__children_count(const zp__children *c);

/*
 * Spawns the worker of slot `i` (empty): `zpipe-worker --zp-worker
 * ENDPOINT` and the worker arguments set with zp__spawn_set_worker_args().
 * Returns 0, or an error code with *why (malloc'ed) saying what failed.
 */
int zp__children_spawn(zp__children *c, int i, char **why);

/*
 * Reaps one child that ended, without waiting: returns its slot (now
 * empty) with its pid and wait status, or -1 when none ended.
 */
int zp__children_reap(zp__children *c, pid_t *pid, int *status);

/* The slot of child `pid`, or -1. */
int zp__children_slot(const zp__children *c, pid_t pid);

/*
 * Ends every child: SIGTERM (to those that never connected, too), waits
 * up to ~2 s, then SIGKILL; reaps them all and frees. NULL-safe.
 */
void zp__children_destroy(zp__children **c);

/*
 * Extra arguments of the process workers spawned from now on, after
 * `--zp-worker ENDPOINT`: a NULL-terminated array borrowed for as long as
 * runs may start, or NULL for none. The zpipe CLI passes its --plugin flags
 * this way, so that its workers load the tasks it loaded. Set it before any
 * run starts; not thread-safe.
 */
void zp__spawn_set_worker_args(char *const *args);

/*
 * Initialises `at` for a child process that starts with no signal blocked
 * and the default action of SIGINT, SIGTERM, SIGQUIT and SIGPIPE: process
 * workers, and the commands of the CLI's exec. `flags` are more
 * POSIX_SPAWN_* flags to set. posix_spawnattr_destroy() ends it.
 */
void zp__spawnattr_init(posix_spawnattr_t *at, short flags);

/* "process 1234 was killed by signal 9", "... exited with status 3";
 * malloc'ed, or NULL when out of memory. */
char *zp__describe_status(pid_t pid, int status);

#endif
