/* SPDX-License-Identifier: MIT */
/*
 * The async engine: one libuv loop with a fixed set of call slots, on
 * which tasks registered with ZP_ASYNC_TASK run, many calls in flight at
 * once. Part of worker. A driver says where the engine's items come from
 * and where outputs go: a run's async stage (async.c: sockets, credits,
 * ordering) or a worker process's batches (aserver.c: buffers sent back
 * when a batch is done). The engine is the host (call.h) of its calls.
 *
 * Everything happens on the loop thread, the engine's only thread: no
 * function here may be called from another one, but for what wakes the
 * loop (uv_async_send on `wake`). The engine knows nothing of sockets or
 * of the wire protocol: those are its drivers'.
 */
#ifndef ZP_WORKER_ENGINE_H
#define ZP_WORKER_ENGINE_H

#include <uv.h>

#include "core/list.h"
#include "worker/call.h"

typedef struct zp__engine zp__engine;

/* One call slot. */
typedef struct zp__acall {
    zp_call call; /* first: a zp_call of an async task is an acall */
    zp__engine *eng;
    zp__qnode node;             /* free list or retry queue             */
    const msgpack_object *item; /* the input every attempt runs on      */
    msgpack_object input;       /* a copied item: in `raw` and `zone`   */
    char *raw;                  /* owned bytes of a copied item         */
    size_t raw_cap;
    msgpack_zone zone;
    bool zone_ready;
    uint64_t started; /* when the attempt began, ns          */
    uint64_t begun;   /* when the first attempt began, ns    */
    uint64_t took;    /* ended: the time of all its attempts */
    int attempt;
    bool live; /* started, not yet ended */
    void *tag; /* the driver's: the call's batch */
} zp__acall;

/* Where a call comes from, as the driver says. */
typedef struct zp__source {
    const msgpack_object *item;
    uint64_t index;
    bool copy;                /* the item must be copied to outlive the call */
    const zp__stage_def *def; /* the call's task */
    void *tag;
} zp__source;

/* What a driver does for its engine; every operation runs on the loop
 * thread. */
typedef struct zp__driver {
    /* The next item into *src: 1, 0 when there will be no more,
     * ZP__AGAIN, or an error code. */
    int (*next)(zp__engine *e, zp__source *src);
    /* The current item's bytes, to copy (drivers that ask for copies). */
    void (*raw)(zp__engine *e, const char **p, size_t *len);
    /* One output of a call, to send on. Returns 0 or an error code. */
    int (*output)(zp__engine *e, zp__acall *a, const char *data, size_t len);
    /* A call ended: ZP__CALL_OK (held outputs still parked in it),
     * ZP__CALL_SKIPPED or ZP_ETASK. Returns 0 or an error code. */
    int (*ended)(zp__engine *e, zp__acall *a, int outcome);
    /* Moves outputs that wait for room on, and clears e->held once none
     * wait; returns whether none wait. NULL: outputs never wait. */
    bool (*drain)(zp__engine *e);
    /* Sends what the turn of the pump made. Returns 0 or an error code.
     * NULL: nothing to send. */
    int (*flush)(zp__engine *e);
    /* Watches the input while a call could start. NULL: nothing to
     * watch (items are handed over through `wake`). */
    void (*watch)(zp__engine *e);
} zp__driver;

struct zp__engine {
    uv_loop_t loop;
    uv_prepare_t prep; /* runs the pump before every wait             */
    uv_async_t wake;   /* other threads: credits came back, or stop   */
    const zp__driver *drv;
    zp__runctl *run;   /* borrowed: failures and the stop flag        */
    zp__wstats *stats; /* borrowed: where calls count                 */
    const char *name;  /* borrowed: the task, for messages; NULL: a
                          worker process's loop of several tasks      */
    bool ordered;      /* calls hold their outputs for their turn     */
    bool held;         /* outputs wait for room (the driver says so):
                          no call starts meanwhile                    */
    zp__acall *slots;  /* owned, nslots */
    int nslots;
    zp__queue free_slots; /* of zp__acall */
    zp__queue retries;    /* of zp__acall: attempts to run again */
    int live;             /* calls started and not ended; >= 0 */
    bool input_over;      /* no more items will come */
    bool starved;         /* the last look at the input found nothing */
    bool over;            /* the loop is ending */
    bool loop_ready;      /* uv_loop_init succeeded */
    int rc;               /* the engine's own first error */
    /* Clock readings for the calls' times (see engine.c, start_time). */
    uint64_t now;   /* the last reading, ns */
    bool bursting;  /* inside start_more: calls start one after another */
    bool just_read; /* `now` is when the call before ended, in the burst */
};

/* Whether the run (or the worker process) is stopping. */
static inline bool zp__engine_stopping(const zp__engine *e)
{
    return atomic_load_explicit(&e->run->stop, memory_order_relaxed);
}

/* Whether a call could start now: a slot is free and no output waits. */
static inline bool zp__engine_can_start(const zp__engine *e)
{
    return !zp__queue_empty(&e->free_slots) && !e->held;
}

/*
 * Sets the engine up with `slots` calls in flight at most, driven by
 * `drv` (borrowed). The caller zeroed it and set its run, stats, name and
 * ordered fields. Returns 0, ZP_ENOMEM or ZP_EIO; zp__engine_fini() is
 * due either way.
 */
int zp__engine_init(zp__engine *e, const zp__driver *drv, int slots);

/* Closes every handle left on the loop (a task's too), closes the loop
 * and frees the slots. The loop is not running. */
void zp__engine_fini(zp__engine *e);

/* Records the engine's first error and stops the run with it (takes
 * `msg`). */
void zp__engine_fail(zp__engine *e, int rc, char *msg);

/* Runs a turn of the pump: calls start, outputs move, the loop ends once
 * the work is over (a driver's input callback calls it). */
void zp__engine_pump(zp__engine *e);

/* Sends the outputs parked in a call on through the driver's output,
 * and empties it. Returns 0 or an error code. */
int zp__engine_pass_on(zp__engine *e, zp__acall *a);

#endif
