/* SPDX-License-Identifier: MIT */
/*
 * The ZAP handler, see zap.h: an actor thread that owns a REP socket bound
 * at ZAP_ENDPOINT and the pipe's far end, and answers one request per new
 * connection of a CURVE server in its context. It only reads the
 * allow-list (curve.h), which nobody changes once the handler runs.
 */
#include "transport/zap.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "transport/curve.h"

#define KEY_BYTES ZP__CURVE_KEY_BYTES /* a CURVE key, decoded */
#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_MAX_FRAMES 8   /* RFC 27 requests have 6 + credentials    */
#define ZAP_MAX_LOGGED 256 /* refused keys remembered, not to log twice */

/* Bits of zp__zap.logged_mechs: refused mechanisms already logged. */
enum { MECH_NULL = 1, MECH_PLAIN = 2, MECH_GSSAPI = 4, MECH_OTHER = 8 };

struct zp__zap {
    void *zctx;            /* borrowed                                      */
    void *pipe;            /* owned PAIR: our end of the control pipe       */
    void *pipe_back;       /* PAIR, its other end: the actor's once it runs */
    pthread_t thread;      /* the actor                                     */
    bool started;          /* the thread must be joined                     */
    zp__curve_allow allow; /* owned; the admitted public keys               */
    char pipe_name[64];    /* inproc endpoint of the pipe                   */
    /* The actor's own: refusals already logged. */
    uint8_t logged[ZAP_MAX_LOGGED][KEY_BYTES]; /* refused keys        */
    size_t n_logged;                           /* keys in logged      */
    bool logged_full;      /* said that it stops logging keys          */
    unsigned logged_mechs; /* MECH_* bits                              */
};

/* Hands `msg` (malloc'ed; NULL when out of memory) to *why, or frees it
 * when `why` is NULL; returns `err`. */
static int say(char **why, int err, char *msg)
{
    if (why != NULL)
        *why = msg;
    else
        free(msg);
    return err;
}

/* ---- ZAP requests (RFC 27) ----------------------------------------------- */

/* The frames of one request: version, request id, domain, address,
 * identity, mechanism, credentials... */
typedef struct zap_request {
    zmq_msg_t f[ZAP_MAX_FRAMES];
    int n;         /* frames kept                         */
    bool too_many; /* frames beyond ZAP_MAX_FRAMES dropped */
} zap_request;

enum { F_VERSION, F_ID, F_DOMAIN, F_ADDRESS, F_IDENTITY, F_MECH, F_CRED };

/* Receives a whole multipart request. Returns 0, or -1 when the context
 * is shutting down (or the socket broke). */
static int recv_request(void *rep, zap_request *r)
{
    zmq_msg_t extra;
    r->n = 0;
    r->too_many = false;
    for (bool more = true; more;) {
        zmq_msg_t *m = r->n < ZAP_MAX_FRAMES ? &r->f[r->n] : &extra;
        zmq_msg_init(m);
        while (zmq_msg_recv(m, rep, 0) < 0)
            if (zmq_errno() != EINTR) {
                zmq_msg_close(m);
                return -1;
            }
        more = zmq_msg_more(m);
        if (m == &extra) {
            r->too_many = true;
            zmq_msg_close(m);
        } else
            r->n++;
    }
    return 0;
}

static void close_request(zap_request *r)
{
    for (int i = 0; i < r->n; i++)
        zmq_msg_close(&r->f[i]);
    r->n = 0;
}

static bool frame_is(zmq_msg_t *m, const char *s)
{
    size_t n = strlen(s);
    return zmq_msg_size(m) == n && memcmp(zmq_msg_data(m), s, n) == 0;
}

/* A printable copy of a frame (an address, a mechanism) for the log. */
static void printable(zmq_msg_t *m, char *out, size_t cap)
{
    const unsigned char *d = zmq_msg_data(m);
    size_t n = zmq_msg_size(m) < cap - 1 ? zmq_msg_size(m) : cap - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = isprint(d[i]) ? (char)d[i] : '?';
    out[n] = '\0';
}

/* Logs the first refusal of each key; stays quiet once the set is full. */
static void log_key(zp__zap *z, zap_request *r, const uint8_t *key)
{
    char z85[ZP__CURVE_KEY_LEN + 1], addr[64];
    for (size_t i = 0; i < z->n_logged; i++)
        if (memcmp(z->logged[i], key, KEY_BYTES) == 0)
            return;
    if (z->n_logged == ZAP_MAX_LOGGED) {
        if (!z->logged_full)
            zp__log(ZP_LOG_WARN, "zpipe: refused more unknown CURVE clients; "
                                 "not logging them anymore");
        z->logged_full = true;
        return;
    }
    assert(z->n_logged < ZAP_MAX_LOGGED);
    memcpy(z->logged[z->n_logged++], key, KEY_BYTES);
    zmq_z85_encode(z85, key, KEY_BYTES);
    printable(&r->f[F_ADDRESS], addr, sizeof addr);
    zp__log(ZP_LOG_WARN,
            "zpipe: refused a CURVE client with key %.8s... from %s", z85,
            addr);
}

/* Logs the first refusal of each mechanism other than CURVE. */
static void log_mechanism(zp__zap *z, zap_request *r)
{
    zmq_msg_t *m = &r->f[F_MECH];
    unsigned bit = frame_is(m, "NULL")     ? MECH_NULL
                   : frame_is(m, "PLAIN")  ? MECH_PLAIN
                   : frame_is(m, "GSSAPI") ? MECH_GSSAPI
                                           : MECH_OTHER;
    char mech[16], addr[64];
    if (z->logged_mechs & bit)
        return;
    z->logged_mechs |= bit;
    printable(m, mech, sizeof mech);
    printable(&r->f[F_ADDRESS], addr, sizeof addr);
    zp__log(ZP_LOG_WARN, "zpipe: refused a %s client from %s (CURVE only)",
            mech, addr);
}

/* The verdict on a CURVE request; `user` gets the client's Z85 key. */
static const char *judge_curve(zp__zap *z, zap_request *r, char *user,
                               const char **text)
{
    if (r->n != F_CRED + 1 || zmq_msg_size(&r->f[F_CRED]) != KEY_BYTES) {
        *text = "malformed CURVE credentials";
        return "500";
    }
    const uint8_t *key = zmq_msg_data(&r->f[F_CRED]);
    if (!zp__curve_allow_has(&z->allow, key)) {
        log_key(z, r, key);
        *text = "key not allowed";
        return "400";
    }
    zmq_z85_encode(user, key, KEY_BYTES);
    *text = "OK";
    return "200";
}

/* The status code of a request, its text, and the user id (or ""). */
static const char *judge(zp__zap *z, zap_request *r, char *user,
                         const char **text)
{
    user[0] = '\0';
    if (r->n <= F_MECH || r->too_many) {
        *text = "malformed ZAP request";
        return "500";
    }
    if (!frame_is(&r->f[F_VERSION], "1.0")) {
        *text = "unsupported ZAP version";
        return "500";
    }
    if (frame_is(&r->f[F_MECH], "CURVE"))
        return judge_curve(z, r, user, text);
    log_mechanism(z, r);
    *text = "mechanism not allowed";
    return "400";
}

/* Sends one frame of a reply. Returns 0 or -1. */
static int send_frame(void *rep, const void *data, size_t len, bool more)
{
    while (zmq_send(rep, data, len, more ? ZMQ_SNDMORE : 0) < 0)
        if (zmq_errno() != EINTR)
            return -1;
    return 0;
}

/* Replies: version, request id, status code, status text, user id,
 * metadata (empty). */
static int send_reply(void *rep, zap_request *r, const char *status,
                      const char *text, const char *user)
{
    const void *id = r->n > F_ID ? zmq_msg_data(&r->f[F_ID]) : "";
    size_t id_len = r->n > F_ID ? zmq_msg_size(&r->f[F_ID]) : 0;
    if (send_frame(rep, "1.0", 3, true) != 0 ||
        send_frame(rep, id, id_len, true) != 0 ||
        send_frame(rep, status, strlen(status), true) != 0 ||
        send_frame(rep, text, strlen(text), true) != 0 ||
        send_frame(rep, user, strlen(user), true) != 0 ||
        send_frame(rep, "", 0, false) != 0)
        return -1;
    return 0;
}

/* Answers one request. Returns 0, or -1 when the actor must stop. */
static int answer(zp__zap *z, void *rep)
{
    zap_request r;
    char user[ZP__CURVE_KEY_LEN + 1];
    const char *text;
    if (recv_request(rep, &r) != 0) {
        close_request(&r);
        return -1;
    }
    const char *status = judge(z, &r, user, &text);
    int rc = send_reply(rep, &r, status, text, user);
    close_request(&r);
    return rc;
}

/* ---- The actor ------------------------------------------------------------
 */

/* Serves requests until told to stop or the context shuts down. */
static void serve(zp__zap *z, void *rep)
{
    zmq_pollitem_t items[2] = {{z->pipe_back, 0, ZMQ_POLLIN, 0},
                               {rep, 0, ZMQ_POLLIN, 0}};
    for (;;) {
        if (zmq_poll(items, 2, -1) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            break; /* the stop message; nothing else comes on the pipe */
        if ((items[1].revents & ZMQ_POLLIN) && answer(z, rep) != 0)
            break;
    }
}

/* The actor: binds, reports the errno of the bind (0 = ready), serves. */
static void *zap_main(void *arg)
{
    zp__zap *z = arg;
    int linger = 0, err = 0;
    void *rep = zmq_socket(z->zctx, ZMQ_REP);
    if (rep == NULL)
        err = zmq_errno();
    else {
        zmq_setsockopt(rep, ZMQ_LINGER, &linger, sizeof linger);
        if (zmq_bind(rep, ZAP_ENDPOINT) != 0)
            err = zmq_errno();
    }
    if (zmq_send(z->pipe_back, &err, sizeof err, 0) == sizeof err && err == 0)
        serve(z, rep);
    /* zmq_close frees an inproc endpoint later, in the reaper thread;
     * unbinding frees it now, for the next handler of the context. */
    if (rep != NULL && err == 0)
        zmq_unbind(rep, ZAP_ENDPOINT);
    if (rep != NULL)
        zmq_close(rep);
    zmq_close(z->pipe_back);
    z->pipe_back = NULL; /* seen by the joiner */
    return NULL;
}

/* Makes the control pipe: a bound PAIR and its connected peer. */
static int open_pipe(zp__zap *z, char **why)
{
    int linger = 0;
    static _Atomic unsigned long pipes;
    /* Not the address of z: a closed pipe's name stays taken a while. */
    snprintf(z->pipe_name, sizeof z->pipe_name, "inproc://zp-zap-pipe-%lu",
             atomic_fetch_add(&pipes, 1));
    z->pipe = zmq_socket(z->zctx, ZMQ_PAIR);
    z->pipe_back = zmq_socket(z->zctx, ZMQ_PAIR);
    if (z->pipe == NULL || z->pipe_back == NULL)
        return say(why, ZP_EIO,
                   zp__strdupf("cannot make the ZAP handler's pipe: %s",
                               zmq_strerror(zmq_errno())));
    zmq_setsockopt(z->pipe, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(z->pipe_back, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(z->pipe, z->pipe_name) != 0 ||
        zmq_connect(z->pipe_back, z->pipe_name) != 0)
        return say(why, ZP_EIO,
                   zp__strdupf("cannot make the ZAP handler's pipe: %s",
                               zmq_strerror(zmq_errno())));
    return 0;
}

/* Starts the actor and waits until it is bound (or failed to bind). */
static int start(zp__zap *z, char **why)
{
    int err = 0, n;
    if ((err = pthread_create(&z->thread, NULL, zap_main, z)) != 0)
        return say(
            why, ZP_EIO,
            zp__strdupf("cannot start the ZAP handler: %s", strerror(err)));
    z->started = true;
    while ((n = zmq_recv(z->pipe, &err, sizeof err, 0)) < 0 &&
           zmq_errno() == EINTR)
        ;
    if (n < 0)
        return say(why, ZP_EIO,
                   zp__strdupf("cannot start the ZAP handler: %s",
                               zmq_strerror(zmq_errno())));
    if (err == 0)
        return 0;
    if (err == EADDRINUSE)
        return say(why, ZP_EINVAL,
                   zp__strdupf("a ZAP handler is already bound in this "
                               "ZeroMQ context"));
    return say(why, ZP_EIO,
               zp__strdupf("cannot bind the ZAP handler at %s: %s",
                           ZAP_ENDPOINT, zmq_strerror(err)));
}

zp__zap *zp__zap_new(void *zctx, const char *allow_path, char **why)
{
    zp__zap *z = zp__calloc(1, sizeof *z);
    if (z == NULL) {
        say(why, ZP_ENOMEM, zp__strdupf("out of memory"));
        return NULL;
    }
    z->zctx = zctx;
    if (zp__curve_allow_read(&z->allow, allow_path, why) != 0 ||
        open_pipe(z, why) != 0 || start(z, why) != 0)
        goto out_destroy;
    return z;
out_destroy:
    zp__zap_destroy(&z);
    return NULL;
}

void zp__zap_destroy(zp__zap **zap)
{
    zp__zap *z = zap != NULL ? *zap : NULL;
    if (z == NULL)
        return;
    if (z->started) {
        /* Fails only when the context is shutting down, and then the
         * actor's poll fails too: either way it stops. */
        zmq_send(z->pipe, "", 0, ZMQ_DONTWAIT);
        pthread_join(z->thread, NULL);
        assert(z->pipe_back == NULL); /* the actor closed its end */
    }
    if (z->pipe_back != NULL)
        zmq_close(z->pipe_back);
    if (z->pipe != NULL)
        zmq_close(z->pipe);
    zp__curve_allow_fini(&z->allow);
    free(z);
    *zap = NULL;
}
