/* SPDX-License-Identifier: MIT */
/*
 * Async stage benchmark, each case beside its baseline in the same run:
 *
 *   1. N items each waiting W ms on a libuv timer, all in flight at once
 *      (workers = N), through a zpipe pipeline (generator | async wait |
 *      the caller reading), against a bare libuv program starting the
 *      same N timers on one loop. Printed as multiples of the ideal W ms.
 *      Cases: 10,000 x 100 ms and 200 x 50 ms.
 *   2. Per-item cost of trivial work (emit the item, end the call) in an
 *      async stage against a thread stage, one worker each and then 64.
 *
 * Usage: async_bench [repeats]   (default 3; every line is one run)
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <uv.h>

#include <zpipe.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- Tasks -------------------------------------------------------------- */

/* [n] -> 0 .. n-1 */
ZP_TASK(numbers)
{
    int64_t n = zp_input(call)->via.array.ptr[0].via.i64;
    for (int64_t i = 0; i < n; i++)
        if (zp_emit_int(call, i) != 0)
            return 0;
    return 0;
}

typedef struct waiter {
    uv_timer_t timer;
    zp_call *call;
} waiter;

static void free_handle(uv_handle_t *h)
{
    free(h->data);
}

static void on_wait_over(uv_timer_t *t)
{
    waiter *w = t->data;
    zp_emit_obj(w->call, zp_input(w->call));
    zp_done(w->call);
    uv_close((uv_handle_t *)t, free_handle);
}

/* Waits bind milliseconds on a timer, then emits its item. */
ZP_ASYNC_TASK(wait_ms)
{
    waiter *w = malloc(sizeof *w);
    if (w == NULL) {
        zp_fail(call, "out of memory");
        return;
    }
    w->call = call;
    w->timer.data = w;
    uv_timer_init(loop, &w->timer);
    uv_timer_start(&w->timer, on_wait_over, zp_bound(call)->via.u64, 0);
}

ZP_TASK(pass)
{
    return zp_emit_obj(call, zp_input(call));
}

ZP_ASYNC_TASK(pass_async)
{
    (void)loop;
    zp_emit_obj(call, zp_input(call));
    zp_done(call);
}

/* ---- Runs -----------------------------------------------------------------
 */

/* Runs p on [n] and reads every output; seconds, or -1 on failure. */
static double time_run(zp_pipeline *p, int n)
{
    char args[32];
    snprintf(args, sizeof args, "[%d]", n);
    double t0 = now();
    zp_run *r = zp_start(p, args);
    const msgpack_object *o;
    int got = 0;
    while (zp_run_next(r, &o))
        got++;
    int rc = zp_finish(r);
    double t = now() - t0;
    if (rc != 0 || got != n) {
        fprintf(stderr, "run failed (%d of %d outputs): %s\n", got, n,
                zp_error(r) ? zp_error(r) : "outputs missing");
        t = -1;
    }
    zp_run_free(r);
    return t;
}

static void on_bare_timer(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, free_handle);
}

/* The baseline: n timers of ms milliseconds on one bare loop. */
static double bare_libuv(int n, uint64_t ms)
{
    uv_loop_t loop;
    double t0 = now();
    uv_loop_init(&loop);
    for (int i = 0; i < n; i++) {
        uv_timer_t *t = malloc(sizeof *t);
        if (t == NULL)
            return -1;
        t->data = t;
        uv_timer_init(&loop, t);
        uv_timer_start(t, on_bare_timer, ms, 0);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return now() - t0;
}

static void waits(int n, int ms, int repeats)
{
    char bind[16];
    snprintf(bind, sizeof bind, "%d", ms);
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_async_task(wait_ms, .workers = n, .bind = bind));
    double ideal = ms / 1e3;
    printf("%d items x %d ms, all in flight:\n", n, ms);
    for (int i = 0; i < repeats; i++) {
        double z = time_run(p, n), b = bare_libuv(n, (uint64_t)ms);
        printf("  zpipe %.3f s = %.2fx ideal   bare libuv %.3f s = %.2fx "
               "ideal   zpipe/libuv %.2f\n",
               z, z / ideal, b, b / ideal, z / b);
    }
    zp_pipeline_free(p);
}

static void overhead(int n, int workers, int repeats)
{
    zp_pipeline *t = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(pass, .workers = workers));
    zp_pipeline *a = zp_pipe(zp_task(numbers, .branch = true),
                             zp_async_task(pass_async, .workers = workers));
    printf("%d trivial items, %d worker(s):\n", n, workers);
    for (int i = 0; i < repeats; i++) {
        double tt = time_run(t, n), ta = time_run(a, n);
        printf("  thread stage %.0f ns/item   async stage %.0f ns/item   "
               "async/thread %.2f\n",
               tt / n * 1e9, ta / n * 1e9, ta / tt);
    }
    zp_pipeline_free(t);
    zp_pipeline_free(a);
}

int main(int argc, char **argv)
{
    zp_init(&argc, &argv);
    int repeats = argc > 1 ? atoi(argv[1]) : 3;
    if (repeats < 1)
        repeats = 1;
    waits(10000, 100, repeats);
    waits(200, 50, repeats);
    overhead(1000000, 1, repeats);
    overhead(1000000, 64, repeats);
    return 0;
}
