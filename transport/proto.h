/* SPDX-License-Identifier: MIT */
/*
 * The wire protocol between a coordinator and its process and remote
 * workers (docs/protocol.md is the reference). Part of transport; pure
 * bytes, no sockets: encoders append to a msgpack_sbuffer, the decoder
 * reads one ZeroMQ message body and never trusts it.
 *
 * A message body is one msgpack array: [version, type, fields...]. Item
 * payloads inside ITEM, OUT and DONE are batches in the framing of
 * batch.h, carried as msgpack bin, so items are decoded once, where a task
 * reads them.
 */
#ifndef ZP_TRANSPORT_PROTO_H
#define ZP_TRANSPORT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "zpipe.h"

#define ZP__PROTO_VERSION 1
/* Largest message either side accepts. */
#define ZP__PROTO_MAX_MSG ((size_t)64 << 20)
/* Largest batch of items (framed) an ITEM, OUT or DONE can carry: the
 * message less room for its other fields. */
#define ZP__PROTO_MAX_BATCH (ZP__PROTO_MAX_MSG - 64)
/*
 * A worker offers this many items of credit per item it runs at once (its
 * threads): enough batches in flight to hide the round trip. A coordinator
 * reads the worker's concurrency back as capacity / this.
 */
#define ZP__PROTO_CREDIT_PER_THREAD 16384

/* zp__msg.busy of a worker that did not say it. */
#define ZP__BUSY_UNSAID UINT64_MAX

/* Most task names a HELLO may announce. */
#define ZP__PROTO_MAX_TASKS 4096

enum zp__msg_type {
    ZP__HELLO = 1,     /* worker: who it is, its capacity, its tasks     */
    ZP__READY = 2,     /* worker: it can take `credit` more items        */
    ZP__STAGE = 3,     /* coordinator: how to run stage `stage` of `run` */
    ZP__ITEM = 4,      /* coordinator: a batch of items to run           */
    ZP__OUT = 5,       /* worker: some outputs of a batch, more to come  */
    ZP__DONE = 6,      /* worker: the batch is done, its last outputs    */
    ZP__FAIL = 7,      /* worker: an item of the batch failed for good   */
    ZP__HEARTBEAT = 8, /* either side: still alive                       */
    ZP__BYE = 9,       /* either side: leaving (worker) / leave (coord.) */
};

/* STAGE flags. */
#define ZP__STAGE_BRANCH 1u
#define ZP__STAGE_SKIP 2u /* on_error = ZP_SKIP */

/*
 * A decoded message. Pointers borrow from the message body (and from the
 * zone given to the decoder): valid while both live.
 */
typedef struct zp__msg {
    int type;
    uint64_t run;     /* STAGE ITEM OUT DONE FAIL: the run's id         */
    uint32_t stage;   /* STAGE ITEM OUT DONE FAIL: stage index          */
    uint64_t batch;   /* ITEM OUT DONE FAIL: the coordinator's batch id */
    uint64_t seq;     /* FAIL: index of the item that failed            */
    uint32_t credit;  /* READY: more items; HELLO: capacity             */
    uint32_t pid;     /* HELLO: the worker's process id                 */
    uint32_t flags;   /* STAGE: ZP__STAGE_*                             */
    uint32_t retries; /* STAGE: extra attempts per item                 */
    uint32_t retried; /* DONE: extra attempts made for the batch        */
    uint32_t skipped; /* DONE: items dropped by on_error = skip         */
    uint64_t busy;    /* OUT DONE FAIL: ns the task ran on the batch
                         so far (0: not said)                           */
    const char *str;  /* HELLO: worker name; STAGE: task name;
                         FAIL: message; BYE: reason                     */
    size_t str_len;
    const char *data; /* ITEM OUT DONE: batch bytes (batch.h);
                         STAGE: the bind value as msgpack, or empty     */
    size_t data_len;
    const msgpack_object *tasks; /* HELLO: array of task-name strings      */
    const char *pool; /* HELLO: the worker's pool, or NULL for none     */
    size_t pool_len;
} zp__msg;

/*
 * Decodes one message body. `zone` holds what the decoder allocates
 * (bounded by a small multiple of len). Returns 0, or ZP_EPROTO with *why
 * set to a static reason ("unknown message type", "wrong protocol version
 * 2 (this side speaks 1)"...). Never allocates more than that, never
 * crashes, whatever the bytes.
 */
int zp__msg_decode(const void *body, size_t len, msgpack_zone *zone, zp__msg *m,
                   const char **why);

/*
 * Encoders: append the message body to `sb` (which the caller resets).
 * Return 0 or ZP_ENOMEM.
 */
int zp__msg_hello(msgpack_sbuffer *sb, const char *name, uint32_t pid,
                  uint32_t capacity, const char *const *tasks, size_t ntasks,
                  const char *pool /* NULL: the field is left out */);
int zp__msg_ready(msgpack_sbuffer *sb, uint32_t credit);
int zp__msg_stage(msgpack_sbuffer *sb, uint64_t run, uint32_t stage,
                  const char *task, uint32_t flags, uint32_t retries,
                  const void *bind, size_t bind_len);
int zp__msg_item(msgpack_sbuffer *sb, uint64_t run, uint32_t stage,
                 uint64_t batch, const void *items, size_t len);
int zp__msg_out(msgpack_sbuffer *sb, int type /* ZP__OUT or ZP__DONE */,
                uint64_t run, uint32_t stage, uint64_t batch,
                const void *outputs, size_t len, uint32_t retried,
                uint32_t skipped, uint64_t busy);
int zp__msg_fail(msgpack_sbuffer *sb, uint64_t run, uint32_t stage,
                 uint64_t batch, uint64_t seq, const char *message,
                 uint64_t busy);
int zp__msg_heartbeat(msgpack_sbuffer *sb);
int zp__msg_bye(msgpack_sbuffer *sb, const char *reason);

/*
 * Whether the worker of HELLO `m` serves `task` for a stage of `pool`: it
 * announced the task, and, when `pool` is not NULL, it joined that pool (a
 * stage without a pool takes any worker).
 */
bool zp__msg_serves(const zp__msg *m, const char *task, const char *pool);

/* The name of a message type, for logs ("HELLO"), or "unknown". */
const char *zp__msg_type_name(int type);

#endif
