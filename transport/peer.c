/* SPDX-License-Identifier: MIT */
/*
 * Protocol sockets, see peer.h. The hub never blocks on a send (a worker
 * that cannot take a message is one the coordinator treats as gone) and
 * drops connections that send messages over ZP__PROTO_MAX_MSG; the peer
 * reconnects by itself (ZeroMQ) when its coordinator restarts.
 */
#include "transport/peer.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/error.h"
#include "transport/curve.h"
#include "transport/zap.h"
#include "transport/monitor.h"
#include "transport/proto.h"

#define HANDSHAKE_MS 5000     /* to complete a ZeroMQ handshake */
#define PING_MS 1000          /* ZeroMQ's pings to each worker, every */
#define PING_TIMEOUT_MS 10000 /* then a connection unanswered is closed */
/* A worker's sockets: an outbox per executor thread (zpipe worker
 * --threads and --zp-threads take at most 4096), its link's own, the
 * async loop's. */
#define PEER_MAX_SOCKETS (4096 + 64)

struct zp__peer {
    void *zctx;    /* owned */
    void *dealer;  /* owned; to the coordinator */
    void *outbox;  /* owned PULL; what executors post */
    char name[64]; /* inproc endpoint of the outbox */
    zmq_msg_t msg; /* the last message received */
    /* The link's events, from the monitor; `up` since a handshake
     * succeeded with no loss after it, `links` counts handshakes. */
    void *monitor; /* owned PAIR */
    _Atomic bool up;
    _Atomic uint64_t links;
};

struct zp__outbox {
    void *push; /* owned */
};

struct zp__hub {
    void *router;       /* owned */
    zp__zap *zap;       /* owned; NULL without CURVE */
    zp__monitor *mon;   /* owned; tells when accepting fails */
    char endpoint[256]; /* as bound */
    zmq_msg_t id, body; /* the last message received */
};

static char *zmq_why(const char *what, const char *endpoint)
{
    return zp__strdupf("%s %s: %s", what, endpoint, zmq_strerror(zmq_errno()));
}

static void setint(void *s, int opt, int v)
{
    zmq_setsockopt(s, opt, &v, sizeof v);
}

/* Connection events of the dealer come to the monitor socket: a link is
 * up once its handshake succeeded (CURVE's too), down when it is lost. */
static int watch_links(zp__peer *p, char **why)
{
    char name[80];
    snprintf(name, sizeof name, "inproc://zp-monitor-%p", (void *)p);
    if (zmq_socket_monitor(p->dealer, name,
                           ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                               ZMQ_EVENT_DISCONNECTED) != 0 ||
        (p->monitor = zmq_socket(p->zctx, ZMQ_PAIR)) == NULL ||
        zmq_connect(p->monitor, name) != 0) {
        *why = zmq_why("cannot watch the link of", name);
        return ZP_EIO;
    }
    setint(p->monitor, ZMQ_LINGER, 0);
    return 0;
}

void zp__peer_watch(zp__peer *p)
{
    zmq_msg_t ev, addr;
    zmq_msg_init(&ev);
    zmq_msg_init(&addr);
    /* Each event is two frames: 16-bit event and 32-bit value, then the
     * endpoint. */
    while (zmq_msg_recv(&ev, p->monitor, ZMQ_DONTWAIT) >= 0) {
        uint16_t event = 0;
        if (zmq_msg_size(&ev) >= sizeof event)
            memcpy(&event, zmq_msg_data(&ev), sizeof event);
        while (zmq_msg_more(&ev) &&
               zmq_msg_recv(&addr, p->monitor, ZMQ_DONTWAIT) >= 0 &&
               zmq_msg_more(&addr))
            ;
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            atomic_fetch_add(&p->links, 1);
            atomic_store(&p->up, true);
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
            atomic_store(&p->up, false);
        }
    }
    zmq_msg_close(&ev);
    zmq_msg_close(&addr);
}

void zp__peer_link(const zp__peer *p, bool *up, uint64_t *links)
{
    *up = atomic_load(&p->up);
    *links = atomic_load(&p->links);
}

zp__peer *zp__peer_new(const char *endpoint, const char *server_key,
                       const char *secret_key, char **why)
{
    zp__peer *p = zp__calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    zmq_msg_init(&p->msg);
    snprintf(p->name, sizeof p->name, "inproc://zp-outbox-%p", (void *)p);
    p->zctx = zmq_ctx_new();
    if (p->zctx != NULL) /* ZeroMQ's default, 1023, would cap the threads */
        zmq_ctx_set(p->zctx, ZMQ_MAX_SOCKETS, PEER_MAX_SOCKETS);
    p->dealer = p->zctx ? zmq_socket(p->zctx, ZMQ_DEALER) : NULL;
    p->outbox = p->zctx ? zmq_socket(p->zctx, ZMQ_PULL) : NULL;
    if (p->dealer == NULL || p->outbox == NULL) {
        *why = zmq_why("cannot create a socket for", endpoint);
        goto out_destroy;
    }
    setint(p->dealer, ZMQ_LINGER, 100); /* time for a last BYE */
    setint(p->dealer, ZMQ_RECONNECT_IVL, 100);
    setint(p->dealer, ZMQ_SNDHWM, 0); /* credits bound the traffic */
    setint(p->dealer, ZMQ_SNDTIMEO, 1000);
    setint(p->dealer, ZMQ_RCVHWM, 0);
    setint(p->dealer, ZMQ_RECONNECT_IVL_MAX, 250); /* joins a new run soon */
    int64_t max = (int64_t)ZP__PROTO_MAX_MSG + 1024;
    zmq_setsockopt(p->dealer, ZMQ_MAXMSGSIZE, &max, sizeof max);
    setint(p->outbox, ZMQ_LINGER, 0);
    if (server_key != NULL &&
        zp__curve_client(p->dealer, server_key, secret_key, why) != 0)
        goto out_destroy;
    if (zmq_bind(p->outbox, p->name) != 0) {
        *why = zmq_why("cannot bind", p->name);
        goto out_destroy;
    }
    if (watch_links(p, why) != 0)
        goto out_destroy;
    if (zmq_connect(p->dealer, endpoint) != 0) {
        *why = zmq_why("cannot connect to", endpoint);
        goto out_destroy;
    }
    return p;
out_destroy:
    zp__peer_destroy(&p);
    return NULL;
}

void zp__peer_destroy(zp__peer **pp)
{
    zp__peer *p = *pp;
    if (p == NULL)
        return;
    zmq_msg_close(&p->msg);
    /* The monitor stops before its reader goes: ZeroMQ's I/O thread sends
     * an event (a link lost, say) blocking, with the monitor's lock held,
     * and with no reader on the other end it would wait forever, and so
     * would the stop, which takes that lock. */
    if (p->dealer != NULL)
        zmq_socket_monitor(p->dealer, NULL, 0);
    if (p->monitor != NULL)
        zmq_close(p->monitor);
    if (p->dealer != NULL)
        zmq_close(p->dealer);
    if (p->outbox != NULL)
        zmq_close(p->outbox);
    if (p->zctx != NULL)
        zmq_ctx_term(p->zctx);
    free(p);
    *pp = NULL;
}

int zp__peer_send(zp__peer *p, const void *body, size_t len)
{
    /* Blocks up to ZMQ_SNDTIMEO while the link is not up yet. */
    while (zmq_send(p->dealer, body, len, 0) < 0)
        if (zmq_errno() != EINTR)
            return ZP_EIO;
    return 0;
}

/* Sends on whatever the executors posted. */
static int forward_posts(zp__peer *p)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    int rc = 0;
    while (rc == 0 && zmq_msg_recv(&m, p->outbox, ZMQ_DONTWAIT) >= 0)
        rc = zp__peer_send(p, zmq_msg_data(&m), zmq_msg_size(&m));
    zmq_msg_close(&m);
    return rc;
}

int zp__peer_recv(zp__peer *p, int timeout_ms, const void **body, size_t *len)
{
    zmq_pollitem_t items[3] = {{p->dealer, 0, ZMQ_POLLIN, 0},
                               {p->outbox, 0, ZMQ_POLLIN, 0},
                               {p->monitor, 0, ZMQ_POLLIN, 0}};
    for (;;) {
        int n = zmq_poll(items, 3, timeout_ms);
        if (n < 0)
            return zmq_errno() == EINTR ? ZP__AGAIN : ZP_EIO;
        if (items[1].revents & ZMQ_POLLIN)
            forward_posts(p);
        if (items[2].revents & ZMQ_POLLIN)
            zp__peer_watch(p);
        if (items[0].revents & ZMQ_POLLIN &&
            zmq_msg_recv(&p->msg, p->dealer, ZMQ_DONTWAIT) >= 0) {
            *body = zmq_msg_data(&p->msg);
            *len = zmq_msg_size(&p->msg);
            return 1;
        }
        if (n == 0)
            return 0;
        if (!(items[0].revents & ZMQ_POLLIN))
            return 0; /* only posts: let the caller look at its clock */
    }
}

zp__outbox *zp__outbox_new(zp__peer *p)
{
    zp__outbox *o = zp__calloc(1, sizeof *o);
    if (o == NULL)
        return NULL;
    o->push = zmq_socket(p->zctx, ZMQ_PUSH);
    if (o->push == NULL || zmq_connect(o->push, p->name) != 0) {
        zp__outbox_destroy(&o);
        return NULL;
    }
    setint(o->push, ZMQ_LINGER, 0);
    setint(o->push, ZMQ_SNDHWM, 0);
    return o;
}

void zp__outbox_destroy(zp__outbox **op)
{
    zp__outbox *o = *op;
    if (o == NULL)
        return;
    if (o->push != NULL)
        zmq_close(o->push);
    free(o);
    *op = NULL;
}

int zp__outbox_post(zp__outbox *o, const void *body, size_t len)
{
    while (zmq_send(o->push, body, len, 0) < 0)
        if (zmq_errno() != EINTR)
            return ZP_EIO;
    return 0;
}

zp__hub *zp__hub_new(void *zctx, const char *endpoint, const char *curve_secret,
                     const char *curve_allow, char **why)
{
    zp__hub *h = zp__calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    zmq_msg_init(&h->id);
    zmq_msg_init(&h->body);
    h->router = zmq_socket(zctx, ZMQ_ROUTER);
    if (h->router == NULL) {
        *why = zmq_why("cannot create a socket for", endpoint);
        goto out_destroy;
    }
    setint(h->router, ZMQ_LINGER, 0);
    setint(h->router, ZMQ_ROUTER_MANDATORY, 1);
    /* Credits bound what is in flight; a full pipe must not look like a
     * worker that left. */
    setint(h->router, ZMQ_SNDHWM, 0);
    setint(h->router, ZMQ_RCVHWM, 0);
    int64_t max = (int64_t)ZP__PROTO_MAX_MSG + 1024;
    zmq_setsockopt(h->router, ZMQ_MAXMSGSIZE, &max, sizeof max);
    /* A connection that never completes its handshake gives its
     * descriptor back soon; so does one whose peer stops answering
     * ZeroMQ's own pings (a host gone, a frozen process); and the pings
     * tell workers to drop a connection on which the coordinator has been
     * silent as long (TTL), then to connect again. */
    setint(h->router, ZMQ_HANDSHAKE_IVL, HANDSHAKE_MS);
    setint(h->router, ZMQ_HEARTBEAT_IVL, PING_MS);
    setint(h->router, ZMQ_HEARTBEAT_TIMEOUT, PING_TIMEOUT_MS);
    setint(h->router, ZMQ_HEARTBEAT_TTL, PING_TIMEOUT_MS);
    if (curve_secret != NULL &&
        ((h->zap = zp__zap_new(zctx, curve_allow, why)) == NULL ||
         zp__curve_server(h->router, curve_secret, why) != 0))
        goto out_destroy;
    size_t n = sizeof h->endpoint;
    if (zmq_bind(h->router, endpoint) != 0) {
        *why = zmq_why("cannot listen on", endpoint);
        goto out_destroy;
    }
    zmq_getsockopt(h->router, ZMQ_LAST_ENDPOINT, h->endpoint, &n);
    if ((h->mon = zp__monitor_new(zctx, h->router, h->endpoint, why)) == NULL)
        goto out_destroy;
    return h;
out_destroy:
    zp__hub_destroy(&h);
    return NULL;
}

void zp__hub_destroy(zp__hub **hp)
{
    zp__hub *h = *hp;
    if (h == NULL)
        return;
    zmq_msg_close(&h->id);
    zmq_msg_close(&h->body);
    zp__monitor_destroy(&h->mon);
    if (h->router != NULL)
        zmq_close(h->router);
    zp__zap_destroy(&h->zap);
    free(h);
    *hp = NULL;
}

const char *zp__hub_endpoint(const zp__hub *h)
{
    return h->endpoint;
}

int zp__hub_send(zp__hub *h, const void *id, size_t id_len, const void *body,
                 size_t len)
{
    if (zmq_send(h->router, id, id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(h->router, body, len, ZMQ_DONTWAIT) < 0)
        return ZP_EIO;
    return 0;
}

/* Reads one [id, body] message; anything else is read whole and dropped. */
static int hub_read(zp__hub *h, zp__hub_msg *m)
{
    if (zmq_msg_recv(&h->id, h->router, ZMQ_DONTWAIT) < 0)
        return 0;
    int more = zmq_msg_more(&h->id);
    if (more && zmq_msg_recv(&h->body, h->router, ZMQ_DONTWAIT) < 0)
        return 0;
    if (!more || zmq_msg_more(&h->body)) {
        while (zmq_msg_more(&h->body) &&
               zmq_msg_recv(&h->body, h->router, ZMQ_DONTWAIT) >= 0)
            ;
        static zp__ratelog frames = ZP__RATELOG_INIT;
        zp__ratelog_say(&frames, "dropped a message that is not one frame");
        return 0;
    }
    m->id = zmq_msg_data(&h->id);
    m->id_len = zmq_msg_size(&h->id);
    m->body = zmq_msg_data(&h->body);
    m->len = zmq_msg_size(&h->body);
    return 1;
}

int zp__hub_poll(zp__hub *h, zp__rx *const *rx, const bool *want, bool *ready,
                 int n, int timeout_ms, zp__hub_msg *m)
{
    zmq_pollitem_t items[1 + 64];
    int k = 0;
    if (n > 64)
        return ZP_EINVAL;
    items[k++] = (zmq_pollitem_t){h->router, 0, ZMQ_POLLIN, 0};
    for (int i = 0; i < n; i++) {
        ready[i] = want[i] && zp__rx_buffered(rx[i]);
        if (ready[i])
            timeout_ms = 0;
        if (want[i])
            items[k++] =
                (zmq_pollitem_t){zp__rx_socket(rx[i]), 0, ZMQ_POLLIN, 0};
    }
    if (zmq_poll(items, k, timeout_ms) < 0)
        return zmq_errno() == ETERM   ? ZP_ECANCELED
               : zmq_errno() == EINTR ? 0
                                      : ZP_EIO;
    for (int i = 0, j = 1; i < n; i++)
        if (want[i])
            ready[i] = ready[i] || (items[j++].revents & ZMQ_POLLIN);
    return items[0].revents & ZMQ_POLLIN ? hub_read(h, m) : 0;
}

int zp__hub_next(zp__hub *h, zp__hub_msg *m)
{
    return hub_read(h, m);
}

zp__hub *zp__hub_pair(void *zctx, const char *name, bool bind,
                      const char *shown, char **why)
{
    zp__hub *h = zp__calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    zmq_msg_init(&h->id);
    zmq_msg_init(&h->body);
    snprintf(h->endpoint, sizeof h->endpoint, "%s", shown);
    h->router = zmq_socket(zctx, ZMQ_PAIR);
    if (h->router == NULL) {
        *why = zmq_why("cannot create a socket for", name);
        goto out_destroy;
    }
    setint(h->router, ZMQ_LINGER, 0);
    /* Credits bound what is in flight, as on the ROUTER. */
    setint(h->router, ZMQ_SNDHWM, 0);
    setint(h->router, ZMQ_RCVHWM, 0);
    if ((bind ? zmq_bind(h->router, name) : zmq_connect(h->router, name)) !=
        0) {
        *why = zmq_why(bind ? "cannot bind" : "cannot connect to", name);
        goto out_destroy;
    }
    return h;
out_destroy:
    zp__hub_destroy(&h);
    return NULL;
}

void *zp__hub_socket(const zp__hub *h)
{
    return h->router;
}

int zp__hub_pass(zp__hub *from, zp__hub *to)
{
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    int rc = zmq_msg_copy(&id, &from->id) == 0 &&
                     zmq_msg_copy(&body, &from->body) == 0 &&
                     zmq_msg_send(&id, to->router,
                                  ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
                     zmq_msg_send(&body, to->router, ZMQ_DONTWAIT) >= 0
                 ? 0
                 : ZP_EIO;
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    return rc;
}
