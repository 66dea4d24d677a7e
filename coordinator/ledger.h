/* SPDX-License-Identifier: MIT */
/*
 * The batch ledger of a dispatched stage: every batch (dbatch.h) the
 * stage holds is in exactly one of its three lists: waiting (to be sent),
 * in flight (sent to a worker, not done; oldest first) or held (done, in
 * an ordered stage, until every earlier batch is done). The ledger makes
 * batches of the input, cuts and splits them, and sends the outputs of
 * those done on, so that each output leaves once. Part of coordinator;
 * used by the dispatcher's thread alone but for the two atomics, which
 * statistics read. It knows no worker: which one runs a batch is the
 * worker table's (roster.h), and it never sends a worker anything.
 */
#ifndef ZP_COORDINATOR_LEDGER_H
#define ZP_COORDINATOR_LEDGER_H

#include <stdatomic.h>

#include "coordinator/dbatch.h"
#include "transport/link.h"
#include "worker/call.h"

typedef struct zp__ledger {
    zp__queue waiting;           /* owned dbatches to send                */
    zp__queue inflight;          /* owned dbatches sent, oldest first     */
    zp__queue held;              /* owned dbatches done, ordered stages   */
    size_t nwaiting;             /* items in the waiting list */
    size_t waiting_bytes;        /* and their bytes           */
    uint64_t next_id;            /* of the next batch made */
    uint64_t next_seq;           /* ordered: the next item index to deliver */
    uint64_t sends;              /* batches sent so far */
    bool ordered;                /* outputs leave in input order */
    zp__tx *out;                 /* borrowed; where outputs go */
    zp__wstats *stats;           /* borrowed; counts the outputs */
    _Atomic uint64_t items_out;  /* items in batches in flight */
    _Atomic uint64_t items_peak; /* most ever                  */
} zp__ledger;

/* An empty ledger whose outputs go to `out`, counted in `stats`. */
void zp__ledger_init(zp__ledger *l, zp__tx *out, zp__wstats *stats,
                     bool ordered);

/* Frees every batch. */
void zp__ledger_fini(zp__ledger *l);

/* Whether no batch waits or is in flight. */
bool zp__ledger_idle(const zp__ledger *l);

/* Whether it holds no batch at all: none waits, is in flight or is held
 * for its turn. */
bool zp__ledger_empty(const zp__ledger *l);

/* Makes a batch of n items packed in items[0..len), the first of index
 * `seq`, and puts it at the end of the waiting list. Returns 0 or
 * ZP_ENOMEM. */
int zp__ledger_add(zp__ledger *l, uint64_t seq, uint32_t n, const char *items,
                   size_t len);

/* Puts a batch in the waiting list: at its end, or its front (first to
 * go again). It runs on no worker. */
void zp__ledger_enqueue(zp__ledger *l, zp__dbatch *b, bool front);

/* The first waiting batch, left where it is, or NULL. */
zp__dbatch *zp__ledger_first(const zp__ledger *l);

/* Takes the first waiting batch out of the waiting list, or NULL. */
zp__dbatch *zp__ledger_dequeue(zp__ledger *l);

/* Cuts the first waiting batch b to its first k items (0 < k < b->n),
 * the rest waiting first in line. Returns the first part, still waiting
 * and first, or NULL when out of memory (b is left as it was). */
zp__dbatch *zp__ledger_cut(zp__ledger *l, zp__dbatch *b, uint32_t k);

/* Splits a suspect batch of several items (consumes b) in two suspects
 * queued at the front. Returns 0 or ZP_ENOMEM. */
int zp__ledger_split(zp__ledger *l, zp__dbatch *b);

/* Puts a batch (taken out of every list, b->w set) at the end of the
 * in-flight list, as sent. */
void zp__ledger_fly(zp__ledger *l, zp__dbatch *b);

/* Takes the in-flight batch `id` out of the list if worker `w` runs it;
 * else NULL. */
zp__dbatch *zp__ledger_take(zp__ledger *l, uint64_t id, const zp__member *w);

/*
 * Takes every in-flight batch of worker `w` (which runs `threads` at once)
 * out of the list into `mine`, oldest first, their outputs so far dropped.
 * With `blame`, each that was running (rather than waiting in the
 * worker's queue) is marked blamed.
 */
void zp__ledger_recall(zp__ledger *l, const zp__member *w, uint32_t threads,
                       bool blame, zp__queue *mine);

/*
 * Whether in-flight batch b was running on its worker, rather than
 * waiting in the worker's queue: a worker runs its batches in the order
 * they were sent, `threads` at a time.
 */
bool zp__ledger_running(const zp__ledger *l, const zp__dbatch *b,
                        uint32_t threads);

/*
 * Sends on a batch of outputs from a worker (framed; empty when there are
 * none), each item checked on the way since a worker's bytes are not
 * trusted, in as few messages as the output link takes. Returns 0,
 * ZP_EPROTO, or an error of the link.
 */
int zp__ledger_send_outputs(zp__ledger *l, const char *framed, size_t len);

/* Delivers a done batch's outputs (consumes b): at once, or in input
 * order for ordered stages. Returns 0 or an error of
 * zp__ledger_send_outputs(). */
int zp__ledger_deliver(zp__ledger *l, zp__dbatch *b);

#endif
