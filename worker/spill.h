/* SPDX-License-Identifier: MIT */
/*
 * Spill files: where a join stage of a checkpointed run keeps every item
 * it took, so that a resumed run can feed them to a new join call before
 * its live input (docs/durability.md). Items are the raw msgpack bytes
 * the stage's edge carried, back to back; a checkpoint records the
 * file's length once its bytes are on disk (zp__spill_sync). Appends go
 * through a large buffer and plain write()s; replay reads the file back
 * in chunks and checks every item before it unpacks it, since the file
 * comes from outside the process. Part of worker: no threads, one file
 * per spill, used by one thread at a time; never keeps more than one
 * item and one buffer in memory.
 *
 * The slot is how a join stage tells the run's sink what a checkpoint
 * holds of it: written by the stage before it sends the checkpoint's
 * marker on, read by the sink when that marker reaches it.
 */
#ifndef ZP_WORKER_SPILL_H
#define ZP_WORKER_SPILL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zpipe.h"

/* A join stage's part in the run's checkpoints. Owned by the run's
 * checkpoint state; the stage borrows it. */
typedef struct zp__spill_slot {
    char *path;              /* owned: the stage's spill file              */
    uint64_t replay_bytes;   /* resumed: bytes of the file to feed first   */
    uint64_t replay_outputs; /* resumed: the stage's outputs to drop       */
    /* The last checkpoint the stage marked: written by the stage's
     * thread, read by the sink's once that checkpoint's marker came. */
    _Atomic uint64_t epoch;
    _Atomic uint64_t bytes;   /* the spill's length at that checkpoint    */
    _Atomic uint64_t outputs; /* the stage's outputs before it            */
} zp__spill_slot;

typedef struct zp__spill zp__spill;

/*
 * Opens the spill file at `path`: created empty when `keep` is 0 (what it
 * held before is dropped), else an existing file cut to its first `keep`
 * bytes, which zp__spill_replay() then reads back. Returns 0 with the
 * spill in *out, or ZP_EINVAL (the file is missing or shorter than
 * `keep`) or ZP_EIO with *why (malloc'ed) naming the file.
 */
int zp__spill_open(zp__spill **out, const char *path, uint64_t keep,
                   char **why);

/*
 * The next item of the bytes kept at open: returns 1 with *item (valid
 * until the next call), 0 when all were read, ZP_EPROTO when the file
 * does not hold whole msgpack items, or ZP_EIO.
 */
int zp__spill_replay(zp__spill *s, const msgpack_object **item);

/* Appends one item's bytes. Returns 0 or ZP_EIO (a write failed). */
int zp__spill_append(zp__spill *s, const char *item, size_t len);

/* Writes out what is buffered and waits until the file's bytes are on
 * disk. Returns 0 with the file's length in *len, or ZP_EIO. */
int zp__spill_sync(zp__spill *s, uint64_t *len);

/* Closes the file (it stays on disk) and frees. NULL-safe, idempotent. */
void zp__spill_destroy(zp__spill **sp);

/* Publishes what checkpoint `epoch` holds of a stage (its thread). */
void zp__spill_slot_put(zp__spill_slot *slot, uint64_t epoch, uint64_t bytes,
                        uint64_t outputs);

#endif
