/* SPDX-License-Identifier: MIT */
/*
 * The worker table of a dispatched stage: the worker processes that
 * joined it (HELLO), found by their routing id; which may have room (the
 * ready queue), how many items each may hold (its window) and which takes
 * the next batch; what is sent to each; and how one is lost (its batches
 * back to the ledger, those it was running blamed), dropped (it broke the
 * protocol) and, once given up on, swept away. Part of coordinator; runs
 * on the dispatcher's thread alone. It calls the ledger (ledger.h) and a
 * kind's hooks (dstate.h), nothing else of the dispatcher.
 */
#ifndef ZP_COORDINATOR_ROSTER_H
#define ZP_COORDINATOR_ROSTER_H

#include "coordinator/dstate.h"

/* An empty table; zp__roster_fini() frees it. */
void zp__roster_init(zp__roster *r);
void zp__roster_fini(zp__roster *r);

/* The member of a routing id, or NULL. */
zp__member *zp__roster_find(zp__dispatch *d, const void *id, size_t len);

/* The member of a live process `pid`, or NULL. */
zp__member *zp__roster_by_pid(zp__dispatch *d, uint32_t pid);

/* Sends the message encoded in d->sb to a member (and clears d->sb).
 * Returns 0 or ZP_EIO. */
int zp__roster_send(zp__dispatch *d, zp__member *m);

/* Sends every live member BYE, saying `why`. */
void zp__roster_bye(zp__dispatch *d, const char *why);

/* Puts a member that may have room (it said HELLO or READY, or returned a
 * batch) in the ready queue, where the next batches look for a worker,
 * unless it is there already. */
void zp__roster_offer(zp__dispatch *d, zp__member *m);

/* Items member m can take now: within its window and its credit. */
int64_t zp__roster_room(const zp__dispatch *d, const zp__member *m);

/* The room of every member that serves the task, added up (each at
 * least 0), and how many they are into *n. Looks at every member. */
int64_t zp__roster_total_room(const zp__dispatch *d, size_t *n);

/* Whether a member serves the task (is alive and in its pool). */
bool zp__roster_serving(const zp__dispatch *d);

/* Whether a member could take items and has none. */
bool zp__roster_idle(const zp__dispatch *d);

/* The member that should take batch b (or its first part), or NULL. */
zp__member *zp__roster_pick(zp__dispatch *d, const dbatch *b);

/* Sends waiting batch b (out of the waiting list) to member m and puts it
 * in flight. Returns 0, or an error of the send (b is left to the
 * caller). */
int zp__roster_give(zp__dispatch *d, zp__member *m, dbatch *b);

/* Batch b of member m is over (DONE or FAIL; b is out of the ledger):
 * m's credit comes back, and `busy`, the task's own time
 * (ZP__BUSY_UNSAID when unsaid), times the stage's items. */
void zp__roster_done(zp__dispatch *d, zp__member *m, const dbatch *b,
                     uint64_t busy);

/* A worker said HELLO (hm, m): it joins, or joins again afresh. */
void zp__roster_hello(zp__dispatch *d, const zp__hub_msg *hm, const zp__msg *m);

/*
 * A member is gone: its batches go back to the waiting list. With `why`
 * (a crash or a timeout; consumed) the batches it was running are blamed.
 */
void zp__roster_lose(zp__dispatch *d, zp__member *m, char *why);

/* Gives up on a member (its kind kills its process, if it can), then
 * loses it with `why` (consumed, may be NULL). */
void zp__roster_kill(zp__dispatch *d, zp__member *m, char *why);

/* A member broke the protocol (`rule` says how): it is given up on, its
 * batches run elsewhere and none is blamed; one log line names it. */
void zp__roster_drop(zp__dispatch *d, zp__member *m, const char *rule);

/* Frees the members given up on: a message from one of them now finds no
 * member and is answered with HELLO, as from any stranger. */
void zp__roster_sweep(zp__dispatch *d);

#endif
