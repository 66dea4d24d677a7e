/* SPDX-License-Identifier: MIT */
/*
 * The tasks of the worker conformance suite (tests/conformance), for
 * `zpipe worker --plugin`. tests/conformance/tasks.py has their Python
 * twins, of the same names and behaviour, for `python3 -m zpipe_worker`;
 * a worker in another language needs the same. The coordinator loads this
 * plugin too, to know the names. Items are integers.
 *   whoami   n -> [n, the pid of the process that ran it]
 *   fail_on  fails on the item equal to bind ("N is the bad one"), passes
 *            the others on
 *   flaky    fails the first `bind` attempts at each item in this process
 *            ("attempt K at item N fails"), then passes it on
 *   nap      waits bind milliseconds (asleep), then passes its item on
 *   spin     keeps the CPU busy for bind milliseconds, then passes its item
 *   gate     bind [AT, DIR]: at item AT, creates DIR/reached, then waits
 *            while DIR/hold exists (at most 120 s); passes its item on
 *   meet     bind N: waits until N calls are in it at once (at most 60 s),
 *            stays 50 ms more, and fails if more than N are ever in it at
 *            once: the worker must run exactly as many items at once as its
 *            --threads. Its items are slow, so the coordinator sends them
 *            one per batch, and one more than the worker's threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include <zpipe.h>

#define MAX_FLAKY 65536 /* items flaky keeps count of: 0 to this - 1 */

static int64_t int_of(const msgpack_object *o)
{
    return o != NULL && (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                         o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
               ? o->via.i64
               : 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void nap_ms(long ms)
{
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR)
        ;
}

ZP_TASK(whoami)
{
    msgpack_packer *pk = zp_out(call);
    msgpack_pack_array(pk, 2);
    msgpack_pack_object(pk, *zp_input(call));
    msgpack_pack_int64(pk, (int64_t)getpid());
    return zp_emit(call);
}

ZP_TASK(fail_on)
{
    int64_t n = int_of(zp_input(call));
    const msgpack_object *bad = zp_bound(call);
    if (bad != NULL && n == int_of(bad))
        return zp_fail(call, "%lld is the bad one", (long long)n);
    return zp_emit_obj(call, zp_input(call));
}

ZP_TASK(flaky)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static int attempts[MAX_FLAKY];
    int64_t n = int_of(zp_input(call));
    if (n < 0 || n >= MAX_FLAKY)
        return zp_fail(call, "flaky takes items from 0 to %d", MAX_FLAKY - 1);
    pthread_mutex_lock(&lock);
    int k = ++attempts[n];
    pthread_mutex_unlock(&lock);
    if (k <= int_of(zp_bound(call)))
        return zp_fail(call, "attempt %d at item %lld fails", k, (long long)n);
    return zp_emit_obj(call, zp_input(call));
}

ZP_TASK(nap)
{
    nap_ms((long)int_of(zp_bound(call)));
    return zp_emit_obj(call, zp_input(call));
}

ZP_TASK(spin)
{
    double end = now_s() + (double)int_of(zp_bound(call)) / 1000;
    volatile unsigned long x = 0;
    while (now_s() < end)
        x++;
    return zp_emit_obj(call, zp_input(call));
}

/* Creates an empty file at dir/name; 0 or -1. */
static int touch(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    return fd < 0 ? -1 : close(fd);
}

ZP_TASK(gate)
{
    const msgpack_object *b = zp_bound(call);
    if (b == NULL || b->type != MSGPACK_OBJECT_ARRAY ||
        b->via.array.size != 2 ||
        b->via.array.ptr[1].type != MSGPACK_OBJECT_STR ||
        b->via.array.ptr[1].via.str.size >= 4000)
        return zp_fail(call, "gate needs bind=[AT, \"DIR\"]");
    char dir[4000], hold[4096];
    snprintf(dir, sizeof dir, "%.*s", (int)b->via.array.ptr[1].via.str.size,
             b->via.array.ptr[1].via.str.ptr);
    snprintf(hold, sizeof hold, "%s/hold", dir);
    if (int_of(zp_input(call)) == int_of(&b->via.array.ptr[0])) {
        if (touch(dir, "reached") != 0)
            return zp_fail(call, "cannot create %s/reached", dir);
        for (double end = now_s() + 120; access(hold, F_OK) == 0;)
            if (now_s() > end)
                return zp_fail(call, "%s stayed for 120 s", hold);
            else
                nap_ms(10);
    }
    return zp_emit_obj(call, zp_input(call));
}

ZP_TASK(meet)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static pthread_cond_t met = PTHREAD_COND_INITIALIZER;
    static long inside, arrived;
    long n = (long)int_of(zp_bound(call));
    int rc = 0;
    n = n < 1 ? 1 : n;
    pthread_mutex_lock(&lock);
    long most = ++inside, round = arrived++ / n;
    pthread_cond_broadcast(&met);
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += 60;
    while (rc == 0 && most <= n && arrived < (round + 1) * n)
        rc = pthread_cond_timedwait(&met, &lock, &t);
    long seen = arrived - round * n;
    pthread_mutex_unlock(&lock);
    if (most <= n && rc == 0)
        nap_ms(50); /* still in: a call more would be seen */
    pthread_mutex_lock(&lock);
    inside--;
    pthread_mutex_unlock(&lock);
    if (most > n)
        return zp_fail(call, "%ld calls at once, more than %ld", most, n);
    if (rc != 0)
        return zp_fail(call, "only %ld of %ld calls met within 60 s", seen, n);
    return zp_emit_obj(call, zp_input(call));
}
