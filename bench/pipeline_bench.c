/* SPDX-License-Identifier: MIT */
/*
 * The day-one benchmark: `range branch | x*2+1 | sum join` over N items
 * (default 10 million) through zpipe, side by side in one process with the
 * same job hand-written as threads joined by mutex/condvar queues, and as a
 * raw ZeroMQ inproc PUSH/PULL chain with msgpack items, one per message and
 * 64 per message. Prints items/s of each and zpipe's ratio to each, and the
 * process's peak RSS after the zpipe run. Not a test: nothing is asserted
 * about speed. Then `range branch | x*2+1` summed by the caller with a
 * checkpoint every second and every 100 ms, beside the same run without,
 * over 4N items; then the whole pipeline, join included (which keeps its
 * input in a spill file in a temporary folder), the same way over N.
 * Usage: pipeline_bench [N] [ROUNDS]; ZPIPE_BENCH_METRICS=1
 * serves and scrapes the metrics of every zpipe run (scrape.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <zpipe.h>

#include "baselines.h"
#include "checkpoints.h"
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

/* Where the join stage keeps its input in runs with checkpoints. */
static char spill_dir[64];

/* Runs p on [n]; the sum of its outputs goes to *sum_out. Checkpoints
 * every `ckpt_ms`, unless 0. */
static double zpipe_run(zp_pipeline *p, uint64_t n, uint64_t *sum_out,
                        int ckpt_ms)
{
    char args[32];
    const msgpack_object *out;
    zp_run_opts o = {.metrics_listen = zpb_metrics_addr(),
                     .checkpoint_dir = spill_dir};
    if (ckpt_ms > 0)
        o = zpb_with_checkpoints(o, ckpt_ms);
    snprintf(args, sizeof args, "[%llu]", (unsigned long long)n);
    double t0 = now();
    zp_run *run = zp_start_with(p, args, &o);
    *sum_out = 0;
    while (zp_run_next(run, &out))
        *sum_out += out->via.u64;
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

/* p (`what`) on n items, with and without checkpoints, taking turns. */
static void checkpoint_cost(zp_pipeline *p, const char *what, uint64_t n,
                            int rounds)
{
    const int every[3] = {0, 1000, 100};
    double best[3] = {1e9, 1e9, 1e9};
    uint64_t sum, taken[3] = {0};
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < 3; i++) {
            double t = zpipe_run(p, n, &sum, every[i]);
            taken[i] += zpb_checkpoints();
            if (t > 0 && t < best[i] && sum == n * n)
                best[i] = t;
        }
    for (int i = 1; i < 3; i++)
        printf("%s, checkpoint every %4d ms: %6.2f M items/s | none "
               "%6.2f M/s | time vs none %.3fx (%.1f checkpoints a run)\n",
               what, every[i], n / best[i] / 1e6, n / best[0] / 1e6,
               best[i] / best[0], (double)taken[i] / rounds);
}

/* The pipeline without its join over 4n items, then with it over n, its
 * spill file in a temporary folder. */
static void checkpoint_costs(zp_pipeline *joined, uint64_t n, int rounds)
{
    zp_pipeline *p =
        zp_pipe(zp_task(range, .branch = true), zp_task(twice_plus_one));
    checkpoint_cost(p, "no join", 4 * n, rounds);
    zp_pipeline_free(p);
    snprintf(spill_dir, sizeof spill_dir, "/tmp/zpipe-bench-XXXXXX");
    if (mkdtemp(spill_dir) == NULL) {
        perror("pipeline_bench: mkdtemp");
        return;
    }
    checkpoint_cost(joined, "join   ", n, rounds);
    rmdir(spill_dir); /* the runs that ended well removed their spill */
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
        t[0] = zpipe_run(p, n, &sums[0], 0);
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
    checkpoint_costs(p, n, rounds);
    zpb_metrics_done();
    zp_pipeline_free(p);
    return 0;
}
