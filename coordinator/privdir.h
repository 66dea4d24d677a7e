/* SPDX-License-Identifier: MIT */
/*
 * A run's private folder: where its process workers' ipc endpoints live,
 * made 0700 under /tmp on first use and removed with the run, whatever
 * ZeroMQ left in it. Part of coordinator. Not thread-safe: its owner
 * (the run) guards the path.
 */
#ifndef ZP_COORDINATOR_PRIVDIR_H
#define ZP_COORDINATOR_PRIVDIR_H

/* Makes a new private folder and sets *path to it (malloc'ed). Returns 0,
 * ZP_ENOMEM, or ZP_EIO with *why (malloc'ed) saying why. */
int zp__privdir_make(char **path, char **why);

/* Removes the folder and the files in it. NULL is harmless. */
void zp__privdir_remove(const char *path);

#endif
