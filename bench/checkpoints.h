/* SPDX-License-Identifier: MIT */
/*
 * Checkpoints for the benchmarks: run options that take a checkpoint
 * every `ms` and commit nothing (the caller's sink is the benchmark's
 * counter), so that a run with checkpoints and one without can be timed
 * side by side and the difference is the run's own cost: markers through
 * every stage and the bubble each stage takes to pass them. Part of bench/
 * only.
 */
#ifndef ZP_BENCH_CHECKPOINTS_H
#define ZP_BENCH_CHECKPOINTS_H

#include <stdint.h>

#include <zpipe.h>

/* `o` with a checkpoint every `ms` counted by zpb_checkpoints(). */
zp_run_opts zpb_with_checkpoints(zp_run_opts o, int ms);

/* Checkpoints taken since the last call (not thread-safe: one run at a
 * time). */
uint64_t zpb_checkpoints(void);

#endif
