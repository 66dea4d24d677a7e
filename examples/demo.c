/* SPDX-License-Identifier: MIT */
/*
 * The demo pipeline: Pyper's README example in C, every worker kind in
 * one pipeline. A generator branches out 20 items; an async stage waits
 * 200 ms per item on a libuv timer (20 calls in flight on one thread); a
 * stage of 20 thread workers waits 200 ms per item with a blocking call;
 * a stage of 20 worker processes counts primes (CPU-bound, crash-isolated,
 * this very program re-executed by zp_init); the outputs stream back to
 * main() as they are ready, unordered. Sequentially this takes over 8 s;
 * here, about half a second.
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <uv.h>

#include <zpipe.h>

ZP_TASK(get_data)
{
    int64_t limit = zp_input(call)->via.array.ptr[0].via.i64;
    for (int64_t i = 0; i < limit; i++)
        if (zp_emit_int(call, i) != 0)
            return -1;
    return 0;
}

static void free_timer(uv_handle_t *h)
{
    free(h);
}

static void waited(uv_timer_t *t)
{
    zp_call *call = t->data;
    zp_emit_obj(call, zp_input(call));
    zp_done(call);
    uv_close((uv_handle_t *)t, free_timer);
}

/* Waits 200 ms without holding a thread. */
ZP_ASYNC_TASK(async_wait)
{
    uv_timer_t *t = malloc(sizeof *t);
    if (t == NULL) {
        zp_fail(call, "out of memory");
        return;
    }
    t->data = call;
    uv_timer_init(loop, t);
    uv_timer_start(t, waited, 200, 0);
}

/* Waits 200 ms in a blocking call: a thread each. */
ZP_TASK(io_wait)
{
    struct timespec t = {0, 200 * 1000 * 1000};
    nanosleep(&t, NULL);
    return zp_emit_obj(call, zp_input(call));
}

/* CPU-bound: counts the primes below 20000 + 1000 * item, naively. */
ZP_TASK(heavy)
{
    uint64_t x = zp_input(call)->via.u64, limit = 20000 + 1000 * x, n = 0;
    for (uint64_t k = 2; k < limit; k++) {
        uint64_t d = 2;
        while (d * d <= k && k % d != 0)
            d++;
        n += d * d > k;
    }
    msgpack_packer *out = zp_out(call);
    msgpack_pack_map(out, 3);
    msgpack_pack_str_with_body(out, "item", 4);
    msgpack_pack_uint64(out, x);
    msgpack_pack_str_with_body(out, "below", 5);
    msgpack_pack_uint64(out, limit);
    msgpack_pack_str_with_body(out, "primes", 6);
    msgpack_pack_uint64(out, n);
    return zp_emit(call);
}

int main(int argc, char **argv)
{
    zp_init(&argc, &argv);
    zp_pipeline *p = zp_pipe(zp_task(get_data, .branch = true),
                             zp_async_task(async_wait, .workers = 20),
                             zp_task(io_wait, .workers = 20),
                             zp_task(heavy, .workers = 20, .mode = ZP_PROCESS));
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    zp_run *run = zp_start(p, "[20]");
    const msgpack_object *out;
    int n = 0;
    while (zp_run_next(run, &out)) {
        msgpack_object_print(stdout, *out);
        putchar('\n');
        n++;
    }
    int rc = zp_finish(run);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc != 0)
        fprintf(stderr, "demo failed: %s\n", zp_error(run));
    else
        printf("total of %d outputs in %.2f s\n", n,
               (double)(t1.tv_sec - t0.tv_sec) +
                   (t1.tv_nsec - t0.tv_nsec) / 1e9);
    zp_run_free(run);
    zp_pipeline_free(p);
    return rc == 0 ? 0 : 1;
}
