/* SPDX-License-Identifier: MIT */
/*
 * Tallies of the batches each worker of a dispatched stage has done, by
 * the name the worker gave in its HELLO, for the metrics endpoint. Part of
 * coordinator. The table has a fixed number of slots, so that workers
 * coming and going (process workers replaced, containers scaled) cannot
 * grow it: a worker gone for ZP__TALLY_KEEP_NS leaves the table and its
 * slot goes to the next newcomer; when every slot is taken, newcomers go
 * uncounted.
 *
 * The dispatcher's thread is the only writer. Counting a batch is one
 * relaxed atomic store; names change under a mutex, at a worker's HELLO
 * and departure only, never per batch. Readers (a scrape) copy the table
 * from any thread.
 */
#ifndef ZP_COORDINATOR_TALLY_H
#define ZP_COORDINATOR_TALLY_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/clock.h"

#define ZP__TALLY_MAX 256                     /* slots           */
#define ZP__TALLY_NAME 128                    /* bytes of a name */
#define ZP__TALLY_KEEP_NS (60 * ZP__NS_PER_S) /* a leaver stays  */

typedef struct zp__tally_slot {
    char name[ZP__TALLY_NAME]; /* "" when the slot is free          */
    _Atomic uint64_t batches;  /* done by the worker of that name   */
    int present;               /* connections under the name        */
    uint64_t left;             /* when present fell to 0, ns        */
} zp__tally_slot;

/* Embedded in its owner; zp__tally_init, zp__tally_fini. */
typedef struct zp__tally {
    pthread_mutex_t lock; /* guards names, present, left */
    zp__tally_slot slot[ZP__TALLY_MAX];
} zp__tally;

/* A copy of one slot. */
typedef struct zp__tally_row {
    char name[ZP__TALLY_NAME];
    uint64_t batches;
} zp__tally_row;

void zp__tally_init(zp__tally *t);
void zp__tally_fini(zp__tally *t);

/*
 * A worker named name[0..len) joined at `now` (ns): returns its slot, the
 * one it had if it was counted under that name before, or -1 when the
 * table is full. Names are cut at ZP__TALLY_NAME - 1 bytes.
 */
int zp__tally_join(zp__tally *t, const char *name, size_t len, uint64_t now);

/* Counts n batches done by the worker of `slot` (-1 is harmless). */
void zp__tally_count(zp__tally *t, int slot, uint64_t n);

/* The worker of `slot` left at `now` (-1 is harmless). */
void zp__tally_leave(zp__tally *t, int slot, uint64_t now);

/*
 * Copies into rows[0..max) the workers present, or gone for less than
 * ZP__TALLY_KEEP_NS at `now`; returns how many. Any thread.
 */
size_t zp__tally_read(zp__tally *t, uint64_t now, zp__tally_row *rows,
                      size_t max);

#endif
