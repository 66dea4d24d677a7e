/* SPDX-License-Identifier: MIT */
/*
 * CURVE security for sockets that cross machines: key files, CURVE server
 * and client sockets, and a ZAP handler (RFC 27) that admits only the
 * public keys of an allow-list. Key files are a Z85 key of 40 characters
 * on one line, optionally after '#' comment lines; a secret key file must
 * not be accessible to group or others. Every file is untrusted input:
 * anything else in it is refused with a message naming the file.
 *
 * Part of transport (it includes <zmq.h>). It never shuts down or
 * terminates a ZeroMQ context: contexts belong to their callers.
 */
#ifndef ZP_TRANSPORT_CURVE_H
#define ZP_TRANSPORT_CURVE_H

#include <stdbool.h>

#include "zpipe.h"

/* Length of a Z85 CURVE key, without its NUL. */
#define ZP__CURVE_KEY_LEN 40

/*
 * Reads the key file at `path` into `out` (40 Z85 characters and a NUL).
 * `secret` says the file holds a secret key: then it must be a regular file
 * whose mode grants nothing to group or others. A file that zpipe keygen
 * marked as the other kind (its comment line "# zpipe CURVE public key" or
 * "... secret key") is refused: a secret key given where the server's
 * public key is wanted, or the reverse. Returns 0, or ZP_EINVAL
 * with *why (malloc'ed, the caller frees it; untouched when `why` is NULL)
 * naming the file and what is wrong with it. Blocks on file I/O only;
 * thread-safe.
 */
int zp__curve_read_key(const char *path, bool secret, char out[41], char **why);

/*
 * Makes a new key pair: NAME.key (the secret key, mode 0600) and NAME.pub
 * (the public key, mode 0644), each a comment line and the Z85 key. Refuses
 * to overwrite either file. Returns 0, ZP_EINVAL (bad name, a file exists
 * or cannot be created: no such folder, no permission; no CURVE in libzmq),
 * ZP_EIO (writing a created file failed) or ZP_ENOMEM, with *why; on
 * failure this call leaves neither file behind.
 */
int zp__curve_keygen(const char *name, char **why);

/*
 * Makes `sock` a CURVE server with the secret key in `secret_path`. Call it
 * before zmq_bind, after zp__zap_new in the socket's context: the socket
 * asks the ZAP handler about every client and, where libzmq supports it,
 * refuses every client while no handler is bound (otherwise libzmq would
 * admit any CURVE client). Returns 0, or ZP_EINVAL/ZP_EIO with *why.
 */
int zp__curve_server(void *sock, const char *secret_path, char **why);

/*
 * Makes `sock` a CURVE client of the server whose public key is in
 * `server_pub_path`, with its own secret key in `secret_path` (its public
 * key is derived from it). Call it before zmq_connect. Returns 0, or
 * ZP_EINVAL/ZP_EIO with *why.
 */
int zp__curve_client(void *sock, const char *server_pub_path,
                     const char *secret_path, char **why);

/*
 * The ZAP handler of one ZeroMQ context: an actor thread answering on
 * inproc://zeromq.zap.01. It admits CURVE clients whose public key is listed
 * in the allow file (one Z85 key per line; blank lines and '#' comments
 * ignored) and refuses every other key and mechanism with status 400,
 * logging the first refusal of each key or mechanism to stderr. Malformed
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
