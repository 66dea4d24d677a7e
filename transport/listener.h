/* SPDX-License-Identifier: MIT */
/*
 * The listener of a run: the one ROUTER, bound at the run's `listen`
 * endpoint, through which every remote stage of the run talks to remote
 * workers, however many stages there are. Each stage joins it and gets a
 * hub (peer.h) of its own, the stage's end of an inproc PAIR; the
 * listener's I/O thread, which alone uses the ROUTER, passes each message
 * of a worker to the stages it concerns and each message of a stage to
 * its worker. Part of transport: it reads the type and the run and stage
 * of messages (proto.h), nothing more; what the messages mean is the
 * stages' business.
 *
 * Routing, from workers: OUT, DONE and FAIL go to the stage they name
 * (those naming another run, or a stage that did not join, are dropped);
 * HELLO, READY, HEARTBEAT and BYE go to every stage, since a worker may
 * serve several stages of the run at once. The listener remembers the
 * last HELLO of each worker and hands it to a stage that joins later, so
 * that no stage misses a worker that came first. A message from a worker
 * that never said HELLO is answered with the coordinator's HELLO, which
 * asks it to introduce itself, and goes no further. A worker that cannot
 * be reached any more is said to have left: each stage gets a BYE from
 * it. Malformed messages are dropped with a logged reason.
 */
#ifndef ZP_TRANSPORT_LISTENER_H
#define ZP_TRANSPORT_LISTENER_H

#include <stdint.h>

#include "transport/peer.h"

typedef struct zp__listener zp__listener;

/*
 * Binds the ROUTER at `endpoint` in `zctx` (which needs an I/O thread;
 * CURVE as for zp__hub_new) for run `run` and starts the I/O thread.
 * Returns NULL with *why (malloc'ed, may stay NULL when out of memory) on
 * failure. The thread ends when the listener is destroyed or the context
 * is shut down.
 */
zp__listener *zp__listener_new(void *zctx, const char *endpoint,
                               const char *curve_secret,
                               const char *curve_allow, uint64_t run,
                               char **why);

/*
 * Joins stage `stage` of the run: its hub into *hub, whose messages are
 * those of the workers for that stage and whose sends go to the workers.
 * The caller owns the hub, uses it from one thread at a time, and destroys
 * it (zp__hub_destroy) before the listener. A stage that closes its hub
 * gets nothing more. Returns 0, or ZP_EIO or ZP_ENOMEM with *why.
 * Thread-safe.
 */
int zp__listener_join(zp__listener *l, uint32_t stage, zp__hub **hub,
                      char **why);

/* Stops and joins the I/O thread, closes its sockets, frees. NULL-safe. */
void zp__listener_destroy(zp__listener **l);

#endif
