/* SPDX-License-Identifier: MIT */
/*
 * File descriptors: the process's limit on them (RLIMIT_NOFILE) and how
 * many it holds. Coordinators and workers raise the soft limit to the hard
 * one once, as Go's runtime does at start: a process stage holds a
 * connection per worker process, a thread stage two eventfds per thread,
 * and a remote stage a connection per worker, so the usual soft limit of
 * 1024 is soon too small, while the hard limit is the administrator's
 * real bound. And a write() of a whole buffer. Part of core: no sockets,
 * nothing but getrlimit, setrlimit, /proc/self/fd and write.
 */
#ifndef ZP_CORE_FDS_H
#define ZP_CORE_FDS_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit, the first time it is
 * called in the process (later calls do nothing). Thread-safe. Child
 * processes started afterwards inherit the raised limit.
 */
void zp__fds_raise_limit(void);

/* The soft RLIMIT_NOFILE now: the descriptors this process may hold, or
 * -1 when it has none (RLIM_INFINITY). */
long zp__fds_limit(void);

/* The descriptors this process holds now, counted in /proc/self/fd, or -1
 * when that cannot be read. */
long zp__fds_in_use(void);

/* Writes all of p[0..n) to fd, again after EINTR or a short write.
 * Returns false with errno set when it cannot. Blocks as write() does. */
bool zp__fds_write_all(int fd, const void *p, size_t n);

#endif
