/* SPDX-License-Identifier: MIT */
/*
 * CPU-bound work, the seeds' example: naive fib(30) over many inputs, run
 * once with thread workers and once with process workers (the program
 * re-executes itself in worker mode, which is why zp_init() comes first).
 * In C both scale with the cores — there is no interpreter lock — so the
 * point of process workers is isolation: a task that crashes takes down a
 * worker process, which is replaced, not the program.
 * Usage: cpu_bound [ITEMS] [WORKERS]
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <zpipe.h>

static uint64_t fib(uint64_t n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

ZP_TASK(inputs)
{
    int64_t n = zp_input(call)->via.array.ptr[0].via.i64;
    for (int64_t i = 0; i < n; i++)
        if (zp_emit_int(call, 30) != 0)
            return -1;
    return 0;
}

ZP_TASK(naive_fib)
{
    return zp_emit_uint(call, fib(zp_input(call)->via.u64));
}

static double run(int items, int workers, int mode)
{
    char args[32];
    struct timespec t0, t1;
    const msgpack_object *out;
    int n = 0;
    zp_pipeline *p =
        zp_pipe(zp_task(inputs, .branch = true),
                zp_task(naive_fib, .workers = workers, .mode = mode));
    snprintf(args, sizeof args, "[%d]", items);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    zp_run *r = zp_start(p, args);
    while (zp_run_next(r, &out))
        n += out->via.u64 == 832040;
    int rc = zp_finish(r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != 0 || n != items)
        fprintf(stderr, "run failed: %s\n", zp_error(r) ? zp_error(r) : "?");
    zp_run_free(r);
    zp_pipeline_free(p);
    return rc != 0 || n != items ? -1
                                 : (double)(t1.tv_sec - t0.tv_sec) +
                                       (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

int main(int argc, char **argv)
{
    zp_init(&argc, &argv);
    int items = argc > 1 ? atoi(argv[1]) : 400;
    int workers = argc > 2 ? atoi(argv[2]) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    double threads = run(items, workers, ZP_INPROC);
    double procs = run(items, workers, ZP_PROCESS);
    double one = run(items, 1, ZP_PROCESS);
    if (threads < 0 || procs < 0 || one < 0)
        return 1;
    printf("fib(30) x %d: %d thread workers %.2f s, %d process workers %.2f "
           "s, 1 process worker %.2f s (speed-up %.2fx)\n",
           items, workers, threads, workers, procs, one, one / procs);
    return 0;
}
