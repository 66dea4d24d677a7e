/* SPDX-License-Identifier: MIT */
/*
 * Metrics for the benchmarks: with ZPIPE_BENCH_METRICS=1 in the
 * environment, every zpipe run of a benchmark serves its metrics on one
 * address of 127.0.0.1, and a thread GETs /metrics there every 100 ms
 * while the benchmark goes, ten times as often as the tests' Prometheus,
 * so that what serving and scraping cost shows in the figures. Part of
 * bench/ only.
 */
#ifndef ZP_BENCH_SCRAPE_H
#define ZP_BENCH_SCRAPE_H

#include <stdint.h>

/*
 * The address the runs serve their metrics on (for
 * zp_run_opts.metrics_listen), or NULL when ZPIPE_BENCH_METRICS is not
 * set; the first call starts the scraping thread and says so on stdout.
 */
const char *zpb_metrics_addr(void);

/* Stops the scraping thread, if any, and prints how many pages it got. */
void zpb_metrics_done(void);

#endif
