/* SPDX-License-Identifier: MIT */
/*
 * Reports of a run for the people and scripts watching it: the live
 * progress on stderr (zp_run_opts.progress) and the final statistics as a
 * JSON file (zp_run_opts.stats_path). Part of coordinator. It only reads a
 * run's statistics through zp_run_stats(); it never changes a run.
 */
#ifndef ZP_COORDINATOR_PROGRESS_H
#define ZP_COORDINATOR_PROGRESS_H

#include "zpipe.h"

typedef struct zp__progress zp__progress;

/*
 * Starts the thread that prints the live statistics of `r` on stderr: a
 * table redrawn four times a second when stderr is a terminal, a line per
 * stage every second otherwise. With `total` (the items the first task
 * will emit; 0 when unknown) it also shows the share of them the second
 * stage is through with, and the time left (zp__progress_eta). `r` must have
 * started its stages. Returns NULL when the thread cannot start (the run then
 * goes on without it).
 */
zp__progress *zp__progress_start(zp_run *r, uint64_t total);

/*
 * Writes "45.0% done, 4500 of 10000 items, 12s left" into buf: `done` of
 * `total` items done after `ns` nanoseconds, the time left at the average
 * rate so far ("? left" before the first item is done).
 */
void zp__progress_eta(char *buf, size_t len, uint64_t done, uint64_t total,
                      uint64_t ns);

/*
 * Stops and joins the thread, then prints the summary: the final figures
 * `final` of the n stages, how the run ended (`code`, 0 or a zp_err) and
 * how long it took (`ns`). Call it before the run's stages are freed.
 * NULL and a NULL *p are harmless; *p becomes NULL.
 */
void zp__progress_stop(zp__progress **p, const zp_stage_stats *final, size_t n,
                       int code, uint64_t ns);

/*
 * Writes the statistics of a finished run to `path` as a JSON object:
 * "status" ("ok", "failed" or "cancelled"), "error" (the run's message or
 * null), "seconds" and "stages", an array of one object per stage. Returns
 * 0, or ZP_EIO with *why (malloc'ed) naming the file and the reason.
 */
int zp__stats_write(const char *path, const zp_stage_stats *st, size_t n,
                    int code, const char *error, uint64_t ns, char **why);

#endif
