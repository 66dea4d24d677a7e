/* SPDX-License-Identifier: MIT */
/*
 * The day-one benchmark: `range branch | x*2+1 | sum join` over N items
 * (default 10 million) through zpipe, side by side in one process with the
 * same job hand-written as threads joined by mutex/condvar queues, and as a
 * raw ZeroMQ inproc PUSH/PULL chain with msgpack items, one per message and
 * 64 per message. Prints items/s of each and zpipe's ratio to each, and the
 * process's peak RSS after the zpipe run. Not a test: nothing is asserted
 * about speed. Usage: pipeline_bench [N] [ROUNDS]; ZPIPE_BENCH_METRICS=1
 * serves and scrapes the metrics of every zpipe run (scrape.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

#include <zpipe.h>

#include "baselines.h"
#include "scrape.h"

ZP_TASK(range)
{
    uint64_t n = zp_input(call)->via.array.ptr[0].via.u64;
    for (uint64_t i = 0; i < n; i++)
        if (zp_emit_uint(call, i) != 0)
            return -1;
    return 0;
}

ZP_TASK(twice_plus_one)
{
    return zp_emit_uint(call, zp_input(call)->via.u64 * 2 + 1);
}

ZP_TASK(sum)
{
    const msgpack_object *item;
    uint64_t total = 0;
    while (zp_next(call, &item))
        total += item->via.u64;
    return zp_emit_uint(call, total);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double zpipe_run(zp_pipeline *p, uint64_t n, uint64_t *sum_out)
{
    char args[32];
    const msgpack_object *out;
    zp_run_opts o = {.metrics_listen = zpb_metrics_addr()};
    snprintf(args, sizeof args, "[%llu]", (unsigned long long)n);
    double t0 = now();
    zp_run *run = zp_start_with(p, args, &o);
    while (zp_run_next(run, &out))
        *sum_out = out->via.u64;
    int rc = zp_finish(run);
    double t = now() - t0;
    if (rc != 0)
        fprintf(stderr, "zpipe run failed: %s\n", zp_error(run));
    zp_run_free(run);
    return rc == 0 ? t : -1;
}

static void report(const char *what, uint64_t n, double secs, uint64_t sum,
                   double zpipe_secs)
{
    uint64_t want = n * n;
    printf("%-28s %8.2f M items/s  %6.3f s  %s", what, n / secs / 1e6, secs,
           sum == want ? "ok" : "WRONG SUM");
    if (zpipe_secs > 0)
        printf("  zpipe/this = %.2fx", secs / zpipe_secs);
    printf("\n");
}

int main(int argc, char **argv)
{
    zp_init(&argc, &argv);
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 10000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 3;
    zp_pipeline *p =
        zp_pipe(zp_task(range, .branch = true), zp_task(twice_plus_one),
                zp_task(sum, .join = true));
    printf("items: %llu, rounds: %d (best of each)\n", (unsigned long long)n,
           rounds);
    double best[4] = {1e9, 1e9, 1e9, 1e9};
    uint64_t sums[4] = {0};
    for (int r = 0; r < rounds; r++) {
        double t[4];
        t[0] = zpipe_run(p, n, &sums[0]);
        t[1] = zpb_mutex_pipeline(n, &sums[1]);
        t[2] = zpb_zmq_chain(n, 1, &sums[2]);
        t[3] = zpb_zmq_chain(n, 64, &sums[3]);
        for (int i = 0; i < 4; i++)
            if (t[i] < 0)
                return 1;
            else if (t[i] < best[i])
                best[i] = t[i];
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    report("zpipe", n, best[0], sums[0], 0);
    report("mutex/condvar threads", n, best[1], sums[1], best[0]);
    report("raw zmq, 1 item/message", n, best[2], sums[2], best[0]);
    report("raw zmq, 64 items/message", n, best[3], sums[3], best[0]);
    printf("peak RSS of the process: %.1f MB\n", ru.ru_maxrss / 1024.0);
    zpb_metrics_done();
    zp_pipeline_free(p);
    return 0;
}
