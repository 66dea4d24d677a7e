/* SPDX-License-Identifier: MIT */
/*
 * Baselines for the pipeline benchmark: the same three-stage job that
 * bench/pipeline_bench.c runs through zpipe, written by hand without zpipe.
 * Stage 1 produces 0..n-1, stage 2 maps x to 2x+1, stage 3 sums; each stage
 * is a thread. One baseline joins the stages with mutex/condvar ring
 * buffers, the other with raw ZeroMQ inproc PUSH/PULL sockets carrying
 * msgpack-encoded items. Part of bench/ only: nothing in the library may
 * include this header, and this code must never use zpipe itself.
 */
#ifndef ZP_BENCH_BASELINES_H
#define ZP_BENCH_BASELINES_H

#include <stdint.h>

/* The largest n the baselines accept: 2(n-1)+1 must fit an int64 item. */
#define ZPB_MAX_ITEMS ((uint64_t)1 << 62)

/*
 * Runs the job with two bounded mutex/condvar queues of int64 (1024 slots
 * each, one item per push and pop). Writes the sum of all mapped items,
 * modulo 2^64 (n*n for n items), to *sum_out, which must not be NULL.
 * Returns the wall seconds from starting the stage threads to joining them,
 * or a negative value after printing the reason to stderr (then *sum_out is
 * untouched). Blocks until the run ends. Thread-safe: every call owns its
 * queues and threads.
 */
double zpb_mutex_pipeline(uint64_t n, uint64_t *sum_out);

/*
 * Runs the job over raw ZeroMQ: one context, stages joined by inproc
 * PUSH/PULL pairs with a bounded high-water mark. Every item is encoded with
 * msgpack; up to `batch` (>= 1) items share one message, the last message
 * of the stream may hold fewer, and an empty message ends the stream.
 * Writes the sum (n*n, modulo 2^64) to *sum_out, which must not be NULL.
 * Returns the wall seconds from starting the stage threads to joining them
 * (context and socket setup are outside the clock), or a negative value
 * after printing the reason to stderr (then *sum_out is untouched). Blocks
 * until the run ends. Thread-safe: every call has its own ZeroMQ context.
 */
double zpb_zmq_chain(uint64_t n, int batch, uint64_t *sum_out);

#endif
