/* SPDX-License-Identifier: MIT */
/* The README's example, kept identical to it: squares of 0..9 summed. */
// clang-format off
#include <stdio.h>
#include <zpipe.h>

ZP_TASK(numbers) {                       /* the first task: called once on the run's arguments */
    for (int64_t i = 0; i < zp_input(call)->via.array.ptr[0].via.i64; i++)
        if (zp_emit_int(call, i)) return -1;        /* nonzero: the run is stopping */
    return 0;
}
ZP_TASK(square) { int64_t x = zp_input(call)->via.i64; return zp_emit_int(call, x * x); }
ZP_TASK(total) {                         /* a join task pulls the whole stream */
    const msgpack_object *item; int64_t sum = 0;
    while (zp_next(call, &item)) sum += item->via.i64;
    return zp_emit_int(call, sum);
}

int main(int argc, char **argv) {
    zp_init(&argc, &argv);
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(square, .workers = 4), zp_task(total, .join = true));
    zp_run *run = zp_start(p, "[10]");
    const msgpack_object *out;
    while (zp_run_next(run, &out)) printf("%lld\n", (long long)out->via.i64);   /* 285 */
    if (zp_finish(run) != 0) fprintf(stderr, "%s\n", zp_error(run));
    zp_run_free(run);
    zp_pipeline_free(p);
}
