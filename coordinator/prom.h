/* SPDX-License-Identifier: MIT */
/*
 * The Prometheus text exposition format, version 0.0.4: writes metric
 * families (their HELP and TYPE lines) and samples with labels into a
 * growing buffer. Label values and help texts are escaped as the format
 * says (backslash, double quote, newline), and bytes that are not UTF-8
 * become U+FFFD, since a worker's name comes from the network and
 * Prometheus refuses a whole page for one bad label. Part of coordinator;
 * pure text: no sockets, no clock, no global state.
 */
#ifndef ZP_COORDINATOR_PROM_H
#define ZP_COORDINATOR_PROM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A page being written. Embedded; zp__prom_init, zp__prom_fini. */
typedef struct zp__prom {
    char *buf; /* owned; NUL-terminated */
    size_t len, cap;
    bool nomem; /* an allocation failed: the page is incomplete */
} zp__prom;

/* One label of a sample; arrays of them end with a NULL name. */
typedef struct zp__prom_label {
    const char *name;  /* a valid label name, such as "stage"  */
    const char *value; /* any text; escaped on the way          */
} zp__prom_label;

void zp__prom_init(zp__prom *p);
void zp__prom_fini(zp__prom *p);

/* Hands the page over (malloc'ed, NUL-terminated, *len bytes), or NULL
 * when writing it ran out of memory; p is empty afterwards. */
char *zp__prom_take(zp__prom *p, size_t *len);

/* "# HELP name help" and "# TYPE name type" (counter, gauge, histogram). */
void zp__prom_family(zp__prom *p, const char *name, const char *type,
                     const char *help);

/* A sample: name{labels} v. `labels` may be NULL. */
void zp__prom_uint(zp__prom *p, const char *name, const zp__prom_label *labels,
                   uint64_t v);

/* A sample of seconds given in nanoseconds, written exactly ("1.500000000"). */
void zp__prom_seconds(zp__prom *p, const char *name,
                      const zp__prom_label *labels, uint64_t ns);

/*
 * The samples of a histogram of durations with the buckets of core/hist.h
 * (`counts` per bucket, not cumulative; `sum_ns` their total time):
 * name_bucket{labels,le="..."} cumulative up to le="+Inf", then name_sum
 * in seconds and name_count.
 */
void zp__prom_histogram(zp__prom *p, const char *name,
                        const zp__prom_label *labels, const uint64_t *counts,
                        uint64_t sum_ns);

#endif
