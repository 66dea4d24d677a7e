/* SPDX-License-Identifier: MIT */
/*
 * Links: the bounded queue between one stage's producers and the next
 * stage's consumers, made of ZeroMQ inproc sockets.
 *
 * Every consumer owns a DEALER bound at its own endpoint; every producer
 * owns a ROUTER connected to all consumers under routing ids 0..C-1, so a
 * producer picks its consumer: the one with the fewest items waiting, which
 * balances slow tasks as a shared queue would. Items travel in batches
 * (batch.h); a producer flushes its batch when it is full, when it is about
 * to wait (for input or credits), when a consumer waits for input (checked
 * every few items), and after every item when either side is slow (then a
 * batch would queue items behind one busy consumer while others idle). So
 * batching happens only while both sides are busy and fast: it adds no
 * latency to a shallow queue and never unbalances slow work.
 *
 * The bound is a credit count in items (the throttle): a producer takes
 * credits before it sends, a consumer gives them back when it takes the
 * items (or later, for an ordered stage, when the items leave the stage).
 * ZeroMQ's own high-water marks are off: credits are the only bound, so a
 * blocked producer is always waiting on credits, which cancellation wakes.
 *
 * Checkpoint markers (durable runs) travel in the same stream: a producer
 * sends a marker to every consumer after everything it sent before it,
 * then holds what it sends next until every consumer has passed the
 * marker on. A consumer sees the marker once it has one from every
 * producer that has not closed: everything before it, from all of them,
 * has been taken, and nothing after it has been sent yet. So a stage that
 * finishes what it took, then marks its own output and passes, cuts the
 * whole run's stream at one place without holding any item aside. The
 * first stage's edge marks itself every so often (zp__edge_mark_every).
 *
 * Part of transport: the only layer that includes <zmq.h>.
 */
#ifndef ZP_TRANSPORT_LINK_H
#define ZP_TRANSPORT_LINK_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "zpipe.h"

/* Items per batch, at most: small where consumers share the work, so that
 * it spreads; large where one consumer takes it all. */
#define ZP__BATCH_MAX_SHARED 64
#define ZP__BATCH_MAX_ALONE 4096

/* Returned by zp__rx_next when nothing is ready and it may not wait. */
#define ZP__AGAIN 2
/* Returned by zp__rx_next and zp__rx_take at a checkpoint marker. */
#define ZP__MARK 3

/* What a checkpoint marker carries. */
typedef struct zp__mark {
    uint64_t epoch; /* 1, 2, ...: the run's checkpoints in turn           */
    uint64_t first; /* items the first stage sent before it, resumed ones
                       included                                           */
} zp__mark;

typedef struct zp__tx zp__tx;
typedef struct zp__rx zp__rx;

/*
 * A ZeroMQ context for one run, for at least `sockets` sockets, with an
 * I/O thread when `io` (ipc and tcp need one). Returns NULL when out of
 * memory.
 */
void *zp__zctx_new(int sockets, bool io);
/* Makes every blocking socket call of the context return (cancellation). */
void zp__zctx_shutdown(void *zctx);
/* Terminates the context; every socket must be closed. NULL is harmless. */
void zp__zctx_term(void *zctx);

/* One edge. Embedded in its owner; zp__edge_init/zp__edge_fini. */
typedef struct zp__edge {
    int producers;             /* senders, each with one zp__tx          */
    int consumers;             /* receivers, each with one zp__rx        */
    int64_t limit;             /* credits: items queued at most          */
    bool defer_release;        /* credits come back via zp__edge_release */
    const _Atomic bool *stop;  /* borrowed; set when the run stops       */
    zp__tx **tx;               /* owned, `producers` of them             */
    zp__rx **rx;               /* owned, `consumers` of them             */
    _Atomic int64_t queued;    /* items sent and not yet released        */
    _Atomic int64_t *pending;  /* owned; per consumer, items not taken   */
    _Atomic uint64_t next_seq; /* index of the next item sent            */
    _Atomic uint64_t hwm;      /* most items ever queued                 */
    _Atomic int waiting;       /* consumers blocked waiting for input    */
    _Atomic bool slow;         /* consumers take long per item: items are
                                  sent one by one, so that they spread  */
    _Atomic int waiters;       /* producers blocked waiting for credits  */
    pthread_mutex_t lock;      /* guards the credit wait and `notify`    */
    pthread_cond_t cond;
    void (*notify)(void *arg); /* an event loop's producer: called when
                                  credits come back after zp__edge_arm(),
                                  and on zp__edge_wake(); or NULL        */
    void *notify_arg;
    _Atomic bool armed; /* a release should call notify          */
    /* Checkpoint markers; all 0 on an edge that never sees one. */
    _Atomic uint64_t passed;  /* markers passed on, all consumers together */
    uint64_t mark_every_ns;   /* the first edge: a marker this often      */
    _Atomic uint64_t settled; /* the first edge: the last epoch whose
                                 marker went through the whole run       */
    uint64_t skip;            /* the first edge: items dropped unsent,
                                 counted in its markers' `first`         */
} zp__edge;

/*
 * Creates the sockets of an edge in `zctx`: consumers bind
 * inproc://NAME/j, producers connect to all of them. `stop` is the run's
 * stop flag. Returns 0, ZP_ENOMEM or ZP_EIO; on failure zp__edge_fini()
 * still must be called.
 */
int zp__edge_init(zp__edge *e, void *zctx, const char *name, int producers,
                  int consumers, int limit, const _Atomic bool *stop);

/* Closes every socket and frees the edge. No thread may use it anymore. */
void zp__edge_fini(zp__edge *e);

/* Tells producers whether the consumers are slow (see `slow`). */
void zp__edge_set_slow(zp__edge *e, bool slow);

/* Wakes producers waiting for credits (after the stop flag was set). */
void zp__edge_wake(zp__edge *e);

/* Gives back `n` credits (edges with defer_release). Thread-safe. */
void zp__edge_release(zp__edge *e, int64_t n);

/*
 * A producer that must never block (an event loop) registers `notify` (NULL
 * unregisters it; after that returns, notify is not running and will not
 * be called). It must be thread-safe and quick, such as uv_async_send().
 */
void zp__edge_on_room(zp__edge *e, void (*notify)(void *), void *arg);

/* Asks for one notify call at the next release of credits. */
void zp__edge_arm(zp__edge *e);

/*
 * Makes the first stage's edge (one producer) send a checkpoint marker
 * after a flush whenever `every_ns` passed since the last one and that one
 * has gone through the whole run (zp__edge_mark_settled), and drop the
 * first `skip` items committed (a resumed run's, sent before its crash).
 * Before any producer sends.
 */
void zp__edge_mark_every(zp__edge *e, uint64_t every_ns, uint64_t skip);

/*
 * Makes the edge's one producer drop the first `n` items it commits or
 * sends unsent (a resumed run's, delivered before its crash). Before the
 * producer sends.
 */
void zp__edge_skip(zp__edge *e, uint64_t n);

/* The marker of `epoch` went through the whole run. Thread-safe. */
void zp__edge_mark_settled(zp__edge *e, uint64_t epoch);

/* ---- Producer side: a zp__tx is used by one thread at a time. ---------- */

/* The packer of the next item: pack one value, then zp__tx_commit(). */
msgpack_packer *zp__tx_packer(zp__tx *tx);

/*
 * Ends the item packed since the last commit. Flushes when the batch is
 * full or the consumers are slow. Returns 0, ZP_EINVAL when nothing was
 * packed, or an error from zp__tx_flush().
 */
int zp__tx_commit(zp__tx *tx);

/*
 * Flushes if a consumer is waiting for input. Producers call it now and
 * then while they produce fast (not per item: a consumer that is faster
 * than its producer is always waiting, and flushing per item would make
 * every batch one item long). Returns as zp__tx_flush().
 */
int zp__tx_nudge(zp__tx *tx);

/* Appends one already-packed item and commits it, as zp__tx_commit(). */
int zp__tx_append(zp__tx *tx, const char *item, size_t len);

/*
 * Drops what was packed since the last commit (an item that broke a rule).
 */
void zp__tx_discard(zp__tx *tx);

/*
 * Sends the current batch: takes credits (blocking while the queue is full)
 * and picks the least-loaded consumer. Returns 0, or ZP_ECANCELED when the
 * run stops, or ZP_EIO.
 */
int zp__tx_flush(zp__tx *tx);

/* Items per batch of this sender, at most. */
uint32_t zp__tx_max(const zp__tx *tx);

/*
 * Sends n items already packed back to back in items[0..len) as one batch,
 * after what was committed before; n is at most zp__tx_max(). Returns as
 * zp__tx_flush(), or ZP_EINVAL when n is too large.
 */
int zp__tx_send_items(zp__tx *tx, const char *items, size_t len, uint32_t n);

/* Flushes, then tells every consumer this producer is done. */
int zp__tx_close(zp__tx *tx);

/*
 * Flushes, then sends marker m to every consumer. What the producer sends
 * after it (items, its close) waits, as for credits, until every consumer
 * has passed the marker on. Returns as zp__tx_flush().
 */
int zp__tx_mark(zp__tx *tx, const zp__mark *m);

/*
 * Whether one more item can be committed with no flush ever waiting for
 * credits or for a marker to be passed. True only while this tx is its
 * edge's sole producer, as an event loop's is: then nobody else takes
 * credits. A producer held by a marker is notified when it may go on.
 */
bool zp__tx_room(const zp__tx *tx);

/* ---- Consumer side: a zp__rx is used by one thread at a time. ---------- */

/*
 * The next item and its index in the edge's stream. Returns 1 (item valid
 * until the next call), 0 at the end of the stream (every producer closed),
 * ZP__AGAIN when !wait and nothing is ready, ZP_ECANCELED when the run
 * stops, ZP_EPROTO for a malformed message, or ZP_EIO.
 */
int zp__rx_next(zp__rx *rx, bool wait, const msgpack_object **item,
                uint64_t *seq);

/* The bytes of the item zp__rx_next() returned last (valid as long as the
 * item). */
void zp__rx_raw(const zp__rx *rx, const char **p, size_t *len);

/*
 * The items of the current batch not taken yet, as raw bytes back to back,
 * no more than `max_bytes` of them but for the first: n items from index
 * *seq, valid until the next call. Returns as zp__rx_next(). Items are
 * not checked one by one (but where the batch must be cut): for edges
 * whose producers are stages of this process, which pack them with
 * msgpack-c.
 */
int zp__rx_take(zp__rx *rx, bool wait, size_t max_bytes, const char **items,
                size_t *len, uint32_t *n, uint64_t *seq);

/* The marker zp__rx_next() or zp__rx_take() returned ZP__MARK for. */
zp__mark zp__rx_mark(const zp__rx *rx);

/*
 * The consumer has finished every item it took before the marker and sent
 * the marker on: once every consumer of the edge has, its producers go on
 * (those waiting are woken, an event loop's notified). Call it exactly
 * once per ZP__MARK.
 */
void zp__rx_pass(zp__rx *rx);

/* The receiver's socket, for zmq_poll (transport only). */
void *zp__rx_socket(zp__rx *rx);

/* Whether the receiver holds items already received and not yet taken. */
bool zp__rx_buffered(const zp__rx *rx);

/*
 * Event loops: the file descriptor that signals (edge-triggered) that the
 * receiver's socket may have become readable (ZeroMQ's ZMQ_FD). Returns
 * 0 or ZP_EIO.
 */
int zp__rx_fd(zp__rx *rx, int *fd);

/*
 * Event loops: says whether the receiver waits for input (producers then
 * flush early, as for a consumer blocked in zp__rx_next). Idempotent.
 */
void zp__rx_set_waiting(zp__rx *rx, bool waiting);

#endif
