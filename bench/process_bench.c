/* SPDX-License-Identifier: MIT */
/*
 * Benchmarks of process and remote stages, each beside its baseline in the
 * same run: (1) trivial items through one process stage (ipc) and one
 * remote stage (tcp loopback, this program's own worker processes), against
 * raw ZeroMQ PUSH/PULL of msgpack ints over the same transport, 64 per
 * message; (2) CPU-bound speed-up with 1..N process workers (naive
 * fib(30) items); (3) round-trip latency of one item through a process
 * stage; (4) a process stage with a checkpoint every second, and every
 * 100 ms, beside the same runs without (durable runs: what passing the
 * markers costs). Not a test: nothing is asserted.
 * Usage: process_bench [ITEMS [ROUNDS]] (5,000,000 and 3 by default);
 * ZPIPE_BENCH_METRICS=1 serves and scrapes the metrics of every zpipe run
 * (scrape.h).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include <zpipe.h>

#include "checkpoints.h"
#include "scrape.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t fib(uint64_t n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

ZP_TASK(numbers)
{
    int64_t n = zp_input(call)->via.array.ptr[0].via.i64;
    int64_t v = zp_input(call)->via.array.ptr[1].via.i64;
    for (int64_t i = 0; i < n; i++)
        if (zp_emit_int(call, v ? v : i) != 0)
            return -1;
    return 0;
}

ZP_TASK(plus_one)
{
    return zp_emit_int(call, zp_input(call)->via.i64 + 1);
}

ZP_TASK(fib_of)
{
    return zp_emit_uint(call, fib(zp_input(call)->via.u64));
}

/* Runs numbers(n, v) | task on `workers` workers of `mode`; seconds, and
 * in *flowing (unless NULL) those from the first output on, when the
 * workers are up. */
static double run(zp_task_fn fn, const char *name, int mode, int workers,
                  int64_t n, int64_t v, const zp_run_opts *o, double *flowing)
{
    char args[64];
    const msgpack_object *out;
    int64_t got = 0;
    zp_opts opts = {.size = sizeof opts, .workers = workers, .mode = mode};
    zp_run_opts with = o ? *o : (zp_run_opts){.listen = NULL};
    with.metrics_listen = zpb_metrics_addr();
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task_new(name, fn, &opts));
    snprintf(args, sizeof args, "[%lld, %lld]", (long long)n, (long long)v);
    double t0 = now(), first = 0;
    zp_run *r = zp_start_with(p, args, &with);
    while (zp_run_next(r, &out))
        if (got++ == 0)
            first = now();
    int rc = zp_finish(r);
    double t = now() - t0;
    if (flowing != NULL)
        *flowing = now() - first;
    if (rc != 0 || got != n)
        fprintf(stderr, "run failed: %s\n", zp_error(r) ? zp_error(r) : "?");
    zp_run_free(r);
    zp_pipeline_free(p);
    return rc != 0 || got != n ? -1 : t;
}

typedef struct pusher {
    void *push; /* connected PUSH; closed by raw_zmq once all arrived */
    int64_t n;
} pusher;

/* Sends n msgpack ints, 64 per message. */
static void *push_all(void *arg)
{
    pusher *p = arg;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (int64_t i = 0; i < p->n; i += 64) {
        msgpack_sbuffer_clear(&sb);
        for (int64_t k = i; k < i + 64 && k < p->n; k++)
            msgpack_pack_int64(&pk, k);
        while (zmq_send(p->push, sb.data, sb.size, 0) < 0 &&
               zmq_errno() == EINTR)
            ;
    }
    msgpack_sbuffer_destroy(&sb);
    return NULL;
}

/* Raw ZeroMQ: n msgpack ints, 64 per message, PUSH -> PULL over `ep`,
 * sender and receiver in two threads; seconds. The sender's socket is
 * closed only after everything arrived: a close with messages still
 * queued may drop them. */
static double raw_zmq(const char *ep, int64_t n)
{
    void *ctx = zmq_ctx_new();
    void *pull = zmq_socket(ctx, ZMQ_PULL);
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    char buf[64 * 9 + 16], bound[256];
    size_t blen = sizeof bound;
    int64_t got = 0;
    zmq_bind(pull, ep);
    zmq_getsockopt(pull, ZMQ_LAST_ENDPOINT, bound, &blen);
    zmq_connect(push, bound);
    pusher p = {push, n};
    pthread_t t;
    double t0 = now();
    pthread_create(&t, NULL, push_all, &p);
    msgpack_zone z;
    msgpack_zone_init(&z, 2048);
    for (int len; got < n && (len = zmq_recv(pull, buf, sizeof buf, 0)) > 0;) {
        size_t off = 0;
        msgpack_object o;
        while ((size_t)len > off &&
               msgpack_unpack(buf, (size_t)len, &off, &z, &o) >= 0)
            got++;
        msgpack_zone_clear(&z);
    }
    double secs = now() - t0;
    pthread_join(t, NULL);
    msgpack_zone_destroy(&z);
    zmq_close(push);
    zmq_close(pull);
    zmq_ctx_term(ctx);
    return got == n ? secs : -1;
}

/* A worker process of this program for `ep`, which dies with it (as
 * process workers do), so that no worker of a benchmark cut short joins
 * the next one. */
static pid_t start_worker(const char *ep)
{
    pid_t pid;
    char *argv[] = {"worker", "--zp-worker", (char *)ep, NULL};
    char parent[48];
    snprintf(parent, sizeof parent, "ZPIPE_WORKER_PARENT=%d", (int)getpid());
    char *envp[] = {parent, NULL};
    return posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, envp) == 0
               ? pid
               : -1;
}

/* tcp://127.0.0.1:PORT with a port free right now. */
static void free_endpoint(char *ep, size_t len)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0)
        a.sin_port = htons(47311);
    if (fd >= 0)
        close(fd);
    snprintf(ep, len, "tcp://127.0.0.1:%d", ntohs(a.sin_port));
}

static double min_of(double best, double t)
{
    return t >= 0 && (best < 0 || t < best) ? t : best;
}

/* Best of `rounds` of each, taken in turn so that a slow spell of the
 * machine hits both sides of a ratio alike. */
static void throughput(int64_t n, int rounds)
{
    char dir[] = "/tmp/zpbench-XXXXXX", ipc[128], sock[160];
    if (mkdtemp(dir) == NULL)
        return;
    char tcp[64];
    free_endpoint(tcp, sizeof tcp);
    zp_run_opts o = {.listen = tcp};
    pid_t w = start_worker(tcp);
    double best[4] = {-1, -1, -1, -1}, whole[2] = {-1, -1}, flowing;
    for (int r = 0; r < rounds; r++) {
        double t =
            run(plus_one, "plus_one", ZP_PROCESS, 1, n, 0, NULL, &flowing);
        whole[0] = min_of(whole[0], t);
        best[0] = min_of(best[0], t < 0 ? t : flowing);
        snprintf(ipc, sizeof ipc, "ipc://%s/raw%d", dir, r);
        best[1] = min_of(best[1], raw_zmq(ipc, n));
        snprintf(sock, sizeof sock, "%s/raw%d", dir, r);
        unlink(sock);
        t = run(plus_one, "plus_one", ZP_REMOTE, 1, n, 0, &o, &flowing);
        whole[1] = min_of(whole[1], t);
        best[2] = min_of(best[2], t < 0 ? t : flowing);
        best[3] = min_of(best[3], raw_zmq("tcp://127.0.0.1:*", n));
    }
    /* Rates from the first output on; the whole run's in parentheses
     * (a remote worker reconnects to each new run, up to a second). */
    printf("process stage (ipc) %6.2f M items/s (%5.2f whole) | raw zmq ipc "
           "x64 %6.2f M/s | ratio %.3f\n",
           n / best[0] / 1e6, n / whole[0] / 1e6, n / best[1] / 1e6,
           best[1] / best[0]);
    printf("remote stage (tcp)  %6.2f M items/s (%5.2f whole) | raw zmq tcp "
           "x64 %6.2f M/s | ratio %.3f\n",
           n / best[2] / 1e6, n / whole[1] / 1e6, n / best[3] / 1e6,
           best[3] / best[2]);
    kill(w, SIGTERM);
    waitpid(w, NULL, 0);
    rmdir(dir);
}

/* A process stage of 2 workers over 4n items (long enough for a few
 * checkpoints a second apart) without checkpoints, with one every 1000 ms
 * and every 100 ms, taking turns. */
static void checkpoint_cost(int64_t n, int rounds)
{
    const int every[3] = {0, 1000, 100};
    double best[3] = {-1, -1, -1};
    uint64_t taken[3] = {0};
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < 3; i++) {
            zp_run_opts o = {.listen = NULL};
            if (every[i] > 0)
                o = zpb_with_checkpoints(o, every[i]);
            double flowing, t = run(plus_one, "plus_one", ZP_PROCESS, 2, 4 * n,
                                    0, &o, &flowing);
            best[i] = min_of(best[i], t < 0 ? t : flowing);
            taken[i] += zpb_checkpoints();
        }
    for (int i = 1; i < 3; i++)
        printf("process stage, checkpoint every %4d ms: %6.2f M items/s | "
               "none %6.2f M/s | time vs none %.3fx (%.1f checkpoints a "
               "run)\n",
               every[i], 4 * n / best[i] / 1e6, 4 * n / best[0] / 1e6,
               best[i] / best[0], (double)taken[i] / rounds);
}

typedef struct fibs {
    int64_t n;
    uint64_t sum;
} fibs;

static void *fib_thread(void *arg)
{
    fibs *f = arg;
    for (int64_t i = 0; i < f->n; i++)
        f->sum += fib(30);
    return NULL;
}

/* The baseline: fib(30) x items split over k plain threads; seconds. */
static double plain_threads(int64_t items, long k)
{
    pthread_t t[64];
    fibs f[64];
    double t0 = now();
    for (long i = 0; i < k; i++) {
        f[i] = (fibs){items / k + (i < items % k), 0};
        pthread_create(&t[i], NULL, fib_thread, &f[i]);
    }
    for (long i = 0; i < k; i++)
        pthread_join(t[i], NULL);
    return now() - t0;
}

/* fib(30) over `items` items on 1..cores process workers, and in as many
 * plain threads (what the machine allows), best of `rounds` each. */
static void speedup(int64_t items, int rounds)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cores = cores > 64 ? 64 : cores;
    double one = 0, one_plain = 0;
    for (long k = 1; k <= cores; k++) {
        double t = -1, plain = -1;
        for (int r = 0; r < rounds; r++) {
            t = min_of(t, run(fib_of, "fib_of", ZP_PROCESS, (int)k, items, 30,
                              NULL, NULL));
            plain = min_of(plain, plain_threads(items, k));
        }
        one = k == 1 ? t : one;
        one_plain = k == 1 ? plain : one_plain;
        printf("fib(30) x %lld, %ld process worker(s): %.3f s, speed-up "
               "%.2fx | %ld plain thread(s): %.3f s, speed-up %.2fx\n",
               (long long)items, k, t, one / t, k, plain, one_plain / plain);
    }
}

static void latency(void)
{
    double best = 1e9;
    for (int i = 0; i < 5; i++) {
        double t = run(plus_one, "plus_one", ZP_PROCESS, 1, 1, 0, NULL, NULL);
        best = t < best ? t : best;
    }
    printf("one item through a process stage, run included (spawn, connect, "
           "round trip, exit): best of 5 %.2f ms\n",
           best * 1e3);
}

int main(int argc, char **argv)
{
    zp_init(&argc, &argv);
    int64_t n = argc > 1 ? atoll(argv[1]) : 5000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    if (n < 1 || rounds < 1) {
        fprintf(stderr, "usage: process_bench [ITEMS [ROUNDS]]\n");
        return 2;
    }
    printf("items: %lld, rounds: %d (best of each)\n", (long long)n, rounds);
    throughput(n, rounds);
    speedup(400, rounds);
    latency();
    checkpoint_cost(n, rounds);
    zpb_metrics_done();
    return 0;
}
