/* SPDX-License-Identifier: MIT */
/*
 * File descriptors, see fds.h. Raising the limit is best effort: when the
 * hard limit cannot be had (RLIM_INFINITY above fs.nr_open, a seccomp
 * filter), the soft limit stays as it was and runs are checked against
 * it.
 */
#include "core/fds.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

static pthread_once_t raised = PTHREAD_ONCE_INIT;

/* fs.nr_open, the most any process may have, or 0 when unknown. */
static rlim_t nr_open(void)
{
    FILE *f = fopen("/proc/sys/fs/nr_open", "re");
    unsigned long n = 0;
    if (f != NULL) {
        if (fscanf(f, "%lu", &n) != 1)
            n = 0;
        fclose(f);
    }
    return (rlim_t)n;
}

static void raise_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max)
        return;
    rlim_t soft = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0 || rl.rlim_max != RLIM_INFINITY)
        return;
    /* An infinite hard limit cannot be had: the kernel's bound can. */
    rl.rlim_cur = nr_open();
    if (rl.rlim_cur > soft)
        setrlimit(RLIMIT_NOFILE, &rl);
}

void zp__fds_raise_limit(void)
{
    pthread_once(&raised, raise_limit);
}

long zp__fds_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur > (rlim_t)LONG_MAX)
        return -1;
    return (long)rl.rlim_cur;
}

long zp__fds_in_use(void)
{
    DIR *d = opendir("/proc/self/fd");
    long n = 0;
    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

bool zp__fds_write_all(int fd, const void *p, size_t n)
{
    const char *at = p;
    while (n > 0) {
        ssize_t k = write(fd, at, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return false;
        at += k;
        n -= (size_t)k;
    }
    return true;
}
