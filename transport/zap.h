/* SPDX-License-Identifier: MIT */
/*
 * The ZAP handler (RFC 27) of one ZeroMQ context: an actor thread that
 * answers inproc://zeromq.zap.01 for the CURVE servers of its context
 * (curve.h), admitting only the public keys of an allow file. Part of
 * transport (it includes <zmq.h>). It never shuts down or terminates a
 * ZeroMQ context: contexts belong to their callers; and it never reads a
 * secret key.
 */
#ifndef ZP_TRANSPORT_ZAP_H
#define ZP_TRANSPORT_ZAP_H

/*
 * The ZAP handler of one ZeroMQ context: an actor thread answering on
 * inproc://zeromq.zap.01. It admits CURVE clients whose public key is listed
 * in the allow file (one Z85 key per line; blank lines and '#' comments
 * ignored) and refuses every other key and mechanism with status 400,
 * logging the first refusal of each key or mechanism (core/log.h). Malformed
 * requests get status 500. Admitted messages carry the client's Z85 public
 * key as their "User-Id" property.
 */
typedef struct zp__zap zp__zap;

/*
 * Reads `allow_path` and starts the handler in `zctx` (borrowed; it needs
 * an I/O thread for the sockets it guards). Returns once the handler is
 * bound, or NULL with *why: a bad allow file (naming file and line), out of
 * memory, or a handler already bound in this context (one per context).
 * Destroy it before terminating the context.
 */
zp__zap *zp__zap_new(void *zctx, const char *allow_path, char **why);

/*
 * Stops the handler and joins its thread; *zap becomes NULL. NULL and a
 * NULL *zap are harmless. Prompt, also after the context was shut down;
 * the context stays usable. Sockets it guarded admit nobody new afterwards
 * (where libzmq supports enforcing ZAP, see zp__curve_server).
 */
void zp__zap_destroy(zp__zap **zap);

#endif
