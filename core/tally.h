/* SPDX-License-Identifier: MIT */
/*
 * Tallies: a counter per worker, by the name the worker goes by, that
 * workers coming and going cannot grow. Part of core: it knows nothing of
 * what a worker is or what it counts (a dispatched stage counts the
 * batches each of its worker processes did, for the metrics endpoint).
 * The table has a fixed number of slots: a worker gone for
 * ZP__TALLY_KEEP_NS leaves the table and its slot goes to the next
 * newcomer; when every slot is taken, newcomers go uncounted.
 *
 * One thread writes (joins, counts, leaves): its owner's. Counting is one
 * relaxed atomic store; names change under a mutex, at a join or a leave
 * only, never per count. Readers copy the table from any thread.
 */
#ifndef ZP_CORE_TALLY_H
#define ZP_CORE_TALLY_H

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
    _Atomic uint64_t count;    /* counted for the worker of that name */
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
    uint64_t count;
} zp__tally_row;

void zp__tally_init(zp__tally *t);
void zp__tally_fini(zp__tally *t);

/*
 * A worker named name[0..len) joined at `now` (ns): returns its slot, the
 * one it had if it was counted under that name before, or -1 when the
 * table is full. Names are cut at ZP__TALLY_NAME - 1 bytes.
 */
int zp__tally_join(zp__tally *t, const char *name, size_t len, uint64_t now);

/* Counts n for the worker of `slot` (-1 is harmless). Its owner's
 * thread only. */
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
