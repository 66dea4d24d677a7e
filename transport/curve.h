/* SPDX-License-Identifier: MIT */
/*
 * CURVE security for sockets that cross machines: key files (made by
 * zpipe keygen, read and checked), allow files (the public keys a CURVE
 * server admits) and CURVE server and client sockets; the ZAP handler
 * that applies an allow-list is zap.h. Key files are a Z85 key of 40
 * characters on one line, optionally after '#' comment lines; a secret
 * key file must not be accessible to group or others. Every file is
 * untrusted input: anything else in it is refused with a message naming
 * the file.
 *
 * Part of transport (it includes <zmq.h>). It never shuts down or
 * terminates a ZeroMQ context: contexts belong to their callers.
 */
#ifndef ZP_TRANSPORT_CURVE_H
#define ZP_TRANSPORT_CURVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "zpipe.h"

/* Length of a Z85 CURVE key, without its NUL. */
#define ZP__CURVE_KEY_LEN 40
/* Bytes of a CURVE key, decoded. */
#define ZP__CURVE_KEY_BYTES 32

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

/* The public keys of an allow file: the clients a CURVE server admits. */
typedef struct zp__curve_allow {
    uint8_t (*keys)[ZP__CURVE_KEY_BYTES]; /* owned, n keys */
    size_t n;
} zp__curve_allow;

/*
 * Reads the allow file at `path` into `a` (one Z85 public key per line;
 * blank lines and '#' comments ignored; a key after zpipe keygen's mark of
 * a secret key is refused, and so is a file of no key). Returns 0, or
 * ZP_EINVAL/ZP_ENOMEM with *why (as zp__curve_read_key) naming the file
 * and line, and `a` empty. Free it with zp__curve_allow_fini().
 */
int zp__curve_allow_read(zp__curve_allow *a, const char *path, char **why);

/* Whether `key` (decoded) is one of `a`. Thread-safe for readers. */
bool zp__curve_allow_has(const zp__curve_allow *a,
                         const uint8_t key[ZP__CURVE_KEY_BYTES]);

/* Frees the keys of `a` and empties it. NULL-safe, idempotent. */
void zp__curve_allow_fini(zp__curve_allow *a);

#endif
