/* SPDX-License-Identifier: MIT */
/*
 * The pipeline graph: an immutable, flattened list of stage definitions.
 * Part of core: knows tasks and options, nothing of sockets or threads.
 * A pipeline is built once and may then be run many times, also at once, so
 * nothing here changes after construction.
 */
#ifndef ZP_CORE_PIPELINE_H
#define ZP_CORE_PIPELINE_H

#include "zpipe.h"

/* One stage of a pipeline. Owned by its pipeline. */
typedef struct zp__stage_def {
    char *name;              /* owned; the task's name                      */
    zp_task_fn fn;           /* the task, or NULL for an async one or a
                                remote-only one                             */
    zp_async_fn afn;         /* the async task, or NULL                     */
    zp_opts opts;            /* validated; workers and throttle resolved    */
    char *bind_json;         /* owned; opts.bind points here, or NULL       */
    char *pool;              /* owned; opts.pool points here, or NULL       */
    msgpack_zone *bind_zone; /* owned; holds `bound`                        */
    msgpack_object bound;    /* the bind value, when bind_json != NULL      */
    zp_pipeline *inner;      /* owned; the nested pipeline of a
                                zp_task_pipeline stage, else NULL           */
} zp__stage_def;

struct zp_pipeline {
    zp__stage_def *stages; /* owned array of n                            */
    size_t n;
    char *error;       /* owned; NULL, or why the pipeline is invalid */
    char *first_error; /* owned; NULL, or why stages[0] cannot be the
                          first task of a run                         */
};

/*
 * A pipeline of one stage running `fn` (or the async `afn`: exactly one of
 * them) under `name`. Never NULL: errors are kept in ->error. `inner` (may
 * be NULL) is consumed.
 */
zp_pipeline *zp__pipeline_stage(const char *name, zp_task_fn fn,
                                zp_async_fn afn, const zp_opts *opts,
                                zp_pipeline *inner);

/* Whether s[0..len) is a pool name: 1 to ZP__POOL_MAX characters of
 * A-Z a-z 0-9 _ . - (workers and stages alike). */
#define ZP__POOL_MAX 64
bool zp__pool_name_ok(const char *s, size_t len);

/* Records the first error of `p` (printf-style). Returns ZP_EINVAL. */
int zp__pipeline_fail(zp_pipeline *p, const char *fmt, ...) ZP__PRINTF(2, 3);

/*
 * Sets the bind value of the only stage of `p` from its msgpack encoding
 * (as a worker process receives it). Returns 0, ZP_EPROTO or ZP_ENOMEM.
 */
int zp__pipeline_bind_packed(zp_pipeline *p, const void *data, size_t len);

/* The stage's bind value, or NULL. */
const msgpack_object *zp__stage_bound(const zp__stage_def *s);

#endif
