/* SPDX-License-Identifier: MIT */
/*
 * Benchmarks of process and remote stages across the range users run,
 * each case beside its baseline from the same run: (1) trivial items
 * through a process stage of 1, 2, 4 and 8 workers, against 1 worker;
 * (2) trivial items through a remote stage of 1 and of 64 workers (more
 * workers than cores), against 1; (3) trivial items through one remote
 * worker behind a TCP proxy that adds 1 ms and 10 ms each way
 * (tests/latency_proxy), against no proxy; (4) 400 items of 10 ms over 4
 * remote workers behind the 10 ms proxy, against the ideal (the work
 * spread evenly, plus two round trips). Rates count from the first output,
 * which the first stage holds back until every worker of the measured
 * stage has joined the run; the whole run's figure, with the workers'
 * start-up (a remote worker reconnects to each new run), is in
 * parentheses. Not a test: nothing is asserted.
 * Usage: remote_bench [ITEMS [ROUNDS]] (2,000,000 and 3 by default).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zpipe.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The run being measured, and how many workers its second stage must
 * have before the first stage starts: the figures are the stage's, not
 * those of its workers' start-up (64 processes loading on two cores). */
static zp_run *_Atomic current;
static _Atomic int awaited;

static void await_workers(void)
{
    zp_stage_stats st;
    zp_run *r;
    struct timespec ms = {0, 1000 * 1000};
    double give_up = now() + 60;
    while (((r = atomic_load(&current)) == NULL ||
            (zp_run_stats(r, 1, &st) == 0 &&
             st.workers_alive < atomic_load(&awaited))) &&
           now() < give_up)
        nanosleep(&ms, NULL);
}

ZP_TASK(numbers)
{
    int64_t n = zp_input(call)->via.array.ptr[0].via.i64;
    await_workers();
    for (int64_t i = 0; i < n; i++)
        if (zp_emit_int(call, i) != 0)
            return -1;
    return 0;
}

ZP_TASK(plus_one)
{
    return zp_emit_int(call, zp_input(call)->via.i64 + 1);
}

ZP_TASK(ten_ms)
{
    struct timespec t = {0, 10 * 1000 * 1000};
    while (nanosleep(&t, &t) != 0)
        ;
    return zp_emit_obj(call, zp_input(call));
}

typedef struct timing {
    double whole, flowing; /* seconds; -1 when the run failed */
} timing;

/* numbers(n) | task on `workers` workers of `mode`, from the moment `up`
 * workers serve the stage. */
static timing run(zp_task_fn fn, const char *name, int mode, int workers,
                  int up, int64_t n, const char *listen)
{
    char args[32];
    const msgpack_object *out;
    int64_t got = 0;
    zp_opts opts = {.size = sizeof opts, .workers = workers, .mode = mode};
    zp_run_opts o = {.listen = listen};
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task_new(name, fn, &opts));
    snprintf(args, sizeof args, "[%lld]", (long long)n);
    atomic_store(&awaited, up);
    double t0 = now(), first = 0;
    zp_run *r = zp_start_with(p, args, &o);
    atomic_store(&current, r);
    while (zp_run_next(r, &out))
        if (got++ == 0)
            first = now();
    int rc = zp_finish(r);
    timing t = {now() - t0, now() - first};
    if (rc != 0 || got != n) {
        fprintf(stderr, "run failed: %s\n", zp_error(r) ? zp_error(r) : "?");
        t = (timing){-1, -1};
    }
    atomic_store(&current, NULL);
    zp_run_free(r);
    zp_pipeline_free(p);
    return t;
}

static timing best_of(timing a, timing b)
{
    if (a.flowing < 0 || (b.flowing >= 0 && b.flowing < a.flowing))
        return b;
    return a;
}

/* A free TCP port on 127.0.0.1 right now. */
static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 47313;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &alen) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* `n` worker processes of this program connecting to port, which die with
 * it (as process workers do). */
static void start_workers(pid_t *pids, int n, int port)
{
    char ep[64], parent[48];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    snprintf(parent, sizeof parent, "ZPIPE_WORKER_PARENT=%d", (int)getpid());
    char *argv[] = {"worker", "--zp-worker", ep, NULL};
    char *envp[] = {parent, NULL};
    for (int i = 0; i < n; i++)
        if (posix_spawn(&pids[i], "/proc/self/exe", NULL, NULL, argv, envp) !=
            0)
            pids[i] = -1;
}

static void stop_all(pid_t *pids, int n)
{
    for (int i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    for (int i = 0; i < n; i++)
        if (pids[i] > 0)
            waitpid(pids[i], NULL, 0);
}

/* The latency proxy from `port` on to `target`, delaying each way by ms. */
static pid_t start_proxy(int port, int target, int ms)
{
    char a[16], b[16], c[16];
    snprintf(a, sizeof a, "%d", port);
    snprintf(b, sizeof b, "%d", target);
    snprintf(c, sizeof c, "%d", ms);
    char *argv[] = {LATENCY_PROXY, a, b, c, NULL};
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY,
                                     0);
    int rc = posix_spawn(&pid, LATENCY_PROXY, &fa, NULL, argv, NULL);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? pid : -1;
}

static void print(const char *what, int64_t n, timing t, timing base)
{
    printf("%-44s %7.3f M items/s (%6.3f whole) | time vs baseline %.2fx\n",
           what, n / t.flowing / 1e6, n / t.whole / 1e6,
           t.flowing / base.flowing);
}

static void process_workers(int64_t n, int rounds)
{
    static const int counts[] = {1, 2, 4, 8};
    timing t[4] = {{-1, -1}, {-1, -1}, {-1, -1}, {-1, -1}};
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < 4; i++)
            t[i] = best_of(t[i], run(plus_one, "plus_one", ZP_PROCESS,
                                     counts[i], counts[i], n, NULL));
    for (int i = 0; i < 4; i++) {
        char what[64];
        snprintf(what, sizeof what, "process stage, %d worker(s)", counts[i]);
        print(what, n, t[i], t[0]);
    }
}

/* Remote workers behind a proxy of `ms` each way (0: none). */
static timing remote(zp_task_fn fn, const char *name, int nworkers, int64_t n,
                     int ms)
{
    pid_t pids[64], proxy = -1;
    int port = free_port(), wport = port;
    char listen[64];
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port);
    if (ms > 0) {
        wport = free_port();
        proxy = start_proxy(wport, port, ms);
    }
    start_workers(pids, nworkers, wport);
    timing t = run(fn, name, ZP_REMOTE, 1, nworkers, n, listen);
    stop_all(pids, nworkers);
    if (proxy > 0)
        stop_all(&proxy, 1);
    return t;
}

static void remote_workers(int64_t n, int rounds)
{
    timing one = {-1, -1}, many = {-1, -1}, d1 = {-1, -1}, d10 = {-1, -1};
    for (int r = 0; r < rounds; r++) {
        one = best_of(one, remote(plus_one, "plus_one", 1, n, 0));
        many = best_of(many, remote(plus_one, "plus_one", 64, n, 0));
        d1 = best_of(d1, remote(plus_one, "plus_one", 1, n, 1));
        d10 = best_of(d10, remote(plus_one, "plus_one", 1, n, 10));
    }
    print("remote stage, 1 worker", n, one, one);
    print("remote stage, 64 workers", n, many, one);
    print("remote stage, 1 worker, 1 ms each way", n, d1, one);
    print("remote stage, 1 worker, 10 ms each way", n, d10, one);
}

static void slow_items(int rounds)
{
    timing t = {-1, -1};
    for (int r = 0; r < rounds; r++)
        t = best_of(t, remote(ten_ms, "ten_ms", 4, 400, 10));
    /* From the first output on, one item and one round trip are already
     * behind: add them back for the run's time once the workers are up. */
    double up = t.flowing + 0.010 + 0.020, ideal = 400 * 0.010 / 4 + 2 * 0.020;
    printf("400 x 10 ms items, 4 remote workers, 10 ms each way: %.3f s once "
           "the workers are up (%.3f whole) | ideal %.3f s | ratio %.2f\n",
           up, t.whole, ideal, up / ideal);
}

int main(int argc, char **argv)
{
    zp_init(&argc, &argv);
    int64_t n = argc > 1 ? atoll(argv[1]) : 2000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    if (n < 1 || rounds < 1) {
        fprintf(stderr, "usage: remote_bench [ITEMS [ROUNDS]]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    printf("items: %lld, rounds: %d (best of each)\n", (long long)n, rounds);
    process_workers(n, rounds);
    remote_workers(n, rounds);
    slow_items(rounds);
    return 0;
}
