/* SPDX-License-Identifier: MIT */
/*
 * Sockets of the wire protocol (proto.h). A zp__peer is a worker's link to
 * its coordinator: one DEALER, plus an outbox per executor thread through
 * which finished work is handed to the I/O thread that owns the DEALER. A
 * zp__hub is a coordinator's side: one ROUTER, bound where process or
 * remote workers connect, optionally CURVE with a ZAP allow-list; or, for
 * a remote stage, its PAIR to the run's listener (listener.h), which owns
 * the ROUTER that every remote stage of the run shares. Part of
 * transport; the bodies they carry are opaque here.
 */
#ifndef ZP_TRANSPORT_PEER_H
#define ZP_TRANSPORT_PEER_H

#include <stdbool.h>
#include <stddef.h>

#include "transport/link.h"

typedef struct zp__peer zp__peer;
typedef struct zp__outbox zp__outbox;
typedef struct zp__hub zp__hub;

/* ---- Worker side ---------------------------------------------------------
 * Connects to the coordinator at `endpoint`, as a CURVE client when
 * `server_key` (the server's public key file) is given, with the secret
 * key in `secret_key`. Returns NULL with *why (malloc'ed) on failure. */
zp__peer *zp__peer_new(const char *endpoint, const char *server_key,
                       const char *secret_key, char **why);
void zp__peer_destroy(zp__peer **p);

/* Sends a body to the coordinator. I/O thread only. Returns 0 or ZP_EIO. */
int zp__peer_send(zp__peer *p, const void *body, size_t len);

/*
 * Waits up to timeout_ms for a message from the coordinator, forwarding
 * whatever executors posted meanwhile. Returns 1 with the body (valid
 * until the next call), 0 on timeout, ZP__AGAIN when a signal interrupted
 * the wait, or ZP_EIO. I/O thread only.
 */
int zp__peer_recv(zp__peer *p, int timeout_ms, const void **body, size_t *len);

/*
 * Reads the events of the link to the coordinator that came since the
 * last look (zp__peer_recv looks on its own). I/O thread only, or whoever
 * holds the peer's sockets meanwhile.
 */
void zp__peer_watch(zp__peer *p);

/*
 * Whether the link to the coordinator is up now (its handshake done, not
 * lost since), and how many times it came up so far. Any thread.
 */
void zp__peer_link(const zp__peer *p, bool *up, uint64_t *links);

/* An executor thread's way to the coordinator. Make it on that thread. */
zp__outbox *zp__outbox_new(zp__peer *p);
void zp__outbox_destroy(zp__outbox **o);
/* Queues a body for the I/O thread to send. Returns 0 or ZP_EIO. */
int zp__outbox_post(zp__outbox *o, const void *body, size_t len);

/* ---- Coordinator side ---------------------------------------------------- */

/* A message from a worker: who (routing id) and what. Valid until the next
 * zp__hub_recv. */
typedef struct zp__hub_msg {
    const void *id;
    size_t id_len;
    const void *body;
    size_t len;
} zp__hub_msg;

/*
 * Binds a ROUTER at `endpoint` in `zctx` (which needs an I/O thread). With
 * `curve_secret` the socket is a CURVE server and only the public keys
 * listed in `curve_allow` may connect. Returns NULL with *why on failure.
 */
zp__hub *zp__hub_new(void *zctx, const char *endpoint, const char *curve_secret,
                     const char *curve_allow, char **why);
void zp__hub_destroy(zp__hub **h);

/* The endpoint actually bound (a tcp port chosen by the OS is filled in). */
const char *zp__hub_endpoint(const zp__hub *h);

/* Sends a body to the worker with routing id `id`. Returns 0, or ZP_EIO
 * when that worker is gone. Never blocks. */
int zp__hub_send(zp__hub *h, const void *id, size_t id_len, const void *body,
                 size_t len);

/*
 * Waits up to timeout_ms for a message from a worker, or for input on any
 * of the `n` receivers whose want[i] is true (then ready[i] is set).
 * Returns 1 with *m filled, 0 when it returns for the receivers or the
 * timeout, ZP_ECANCELED when the context is shut down, or ZP_EIO.
 */
int zp__hub_poll(zp__hub *h, zp__rx *const *rx, const bool *want, bool *ready,
                 int n, int timeout_ms, zp__hub_msg *m);

/* The next message already received, without waiting: 1 with *m filled,
 * or 0 when there is none. */
int zp__hub_next(zp__hub *h, zp__hub_msg *m);

/* ---- Hubs of the listener (transport/listener.c) -------------------------
 * A hub may also be one end of an inproc PAIR: the same messages, routing
 * id and body, between a stage and the listener that owns the ROUTER. */

/*
 * A hub on a PAIR socket at inproc endpoint `name`, bound or connected,
 * whose zp__hub_endpoint() is `shown`. Returns NULL with *why on failure.
 */
zp__hub *zp__hub_pair(void *zctx, const char *name, bool bind,
                      const char *shown, char **why);

/* The hub's socket, for polling it with others. */
void *zp__hub_socket(const zp__hub *h);

/*
 * Sends the message last read from `from` on to `to`, with its routing id,
 * sharing its bytes rather than copying them; it stays readable in `from`.
 * Returns 0, or ZP_EIO when `to` cannot take it (a worker that is gone, a
 * PAIR whose other end is closed). Never blocks.
 */
int zp__hub_pass(zp__hub *from, zp__hub *to);

#endif
