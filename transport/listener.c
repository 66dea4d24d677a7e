/* SPDX-License-Identifier: MIT */
/*
 * The run's listener, see listener.h. Its thread alone uses the ROUTER,
 * its end of each stage's PAIR and the table of workers that said HELLO;
 * other threads reach it only through zp__listener_join, which hands the
 * listener's end of a new PAIR over under the lock and wakes the thread.
 * Messages are passed on without copying their bytes (zp__hub_pass); only
 * a worker's HELLO is copied, to be told to stages that join later.
 */
#include "transport/listener.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/idmap.h"
#include "core/log.h"
#include "transport/proto.h"

#define BURST 1024 /* messages taken from one socket before the others */

/* A stage that joined. */
typedef struct port {
    zp__hub *hub; /* owned; the listener's end of the stage's PAIR */
    uint32_t stage;
} port;

/* A worker that said HELLO. */
typedef struct worker {
    char *id; /* owned; its routing id */
    size_t id_len;
    char *hello; /* owned; its last HELLO */
    size_t hello_len;
    uint64_t given; /* bit i: ports[i] sent it an ITEM (i < GIVEN_BITS) */
} worker;

#define GIVEN_BITS 64 /* ports past it are not checked */

struct zp__listener {
    void *zctx;      /* borrowed */
    zp__hub *router; /* owned; the workers' ROUTER */
    uint64_t run;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock; /* guards fresh, nfresh, wake_tx, stop, next */
    port *fresh;          /* owned; joined, not yet taken by the thread */
    size_t nfresh;
    void *wake_tx; /* owned PAIR: a join or the end wakes the thread */
    void *wake_rx; /* owned; the thread's end */
    bool stop;
    unsigned next; /* numbers the PAIRs' endpoints */
    /* The thread's alone from here on. */
    port *ports; /* owned */
    size_t nports;
    worker *workers; /* owned */
    size_t nworkers;
    zp__idmap ids; /* a worker's routing id to its index + 1 in workers */
    zmq_pollitem_t *items; /* owned; the ROUTER, wake_rx, the ports */
    msgpack_zone *zone;    /* owned; decoding */
    msgpack_sbuffer hello; /* the coordinator's HELLO */
    msgpack_sbuffer bye;   /* the BYE of a worker that cannot be reached */
};

/* ---- Workers ------------------------------------------------------------- */

static worker *find_worker(zp__listener *l, const void *id, size_t len)
{
    uintptr_t i = (uintptr_t)zp__idmap_get(&l->ids, id, len);
    assert(i <= l->nworkers);
    return i > 0 ? &l->workers[i - 1] : NULL;
}

/* Files the worker at index i under its id. Returns 0 or ZP_ENOMEM (never
 * for an id filed already). */
static int file_worker(zp__listener *l, size_t i)
{
    return zp__idmap_put(&l->ids, l->workers[i].id, l->workers[i].id_len,
                         (void *)(uintptr_t)(i + 1));
}

/* Keeps the worker's HELLO for the stages that join later. */
static void remember(zp__listener *l, const zp__hub_msg *hm)
{
    worker *w = find_worker(l, hm->id, hm->id_len);
    char *hello = zp__malloc(hm->len);
    if (hello == NULL)
        return; /* the stages that joined know it all the same */
    memcpy(hello, hm->body, hm->len);
    if (w == NULL) {
        char *id = zp__malloc(hm->id_len);
        worker *v =
            id ? zp__realloc(l->workers, (l->nworkers + 1) * sizeof *v) : NULL;
        if (v == NULL) {
            free(id);
            free(hello);
            return;
        }
        memcpy(id, hm->id, hm->id_len);
        l->workers = v;
        w = &v[l->nworkers];
        *w = (worker){.id = id, .id_len = hm->id_len};
        if (file_worker(l, l->nworkers) != 0) {
            free(id);
            free(hello);
            return;
        }
        l->nworkers++;
    }
    free(w->hello);
    w->hello = hello;
    w->hello_len = hm->len;
}

static void forget(zp__listener *l, worker *w)
{
    size_t i = (size_t)(w - l->workers);
    assert(w >= l->workers && i < l->nworkers); /* one of the table's */
    zp__idmap_del(&l->ids, w->id, w->id_len);
    free(w->id);
    free(w->hello);
    *w = l->workers[--l->nworkers];
    if (i < l->nworkers)
        file_worker(l, i); /* the last one, moved to i */
}

/* ---- Routing ------------------------------------------------------------- */

/* Passes the message last read from the ROUTER to every stage. */
static void to_all(zp__listener *l)
{
    for (size_t i = 0; i < l->nports; i++)
        zp__hub_pass(l->router, l->ports[i].hub);
}

/* Passes the message about a batch to the stage it names. One naming
 * another run, a stage without remote workers, or a stage that never
 * gave that worker a batch breaks the protocol: every stage hears it,
 * and drops the worker that sent it. */
static void to_stage(zp__listener *l, const worker *w, const zp__msg *m)
{
    for (size_t i = 0; m->run == l->run && i < l->nports; i++)
        if (l->ports[i].stage == m->stage) {
            /* A stage that never gave it a batch: as another stage. */
            if (i < GIVEN_BITS && !(w->given >> i & 1))
                break;
            zp__hub_pass(l->router, l->ports[i].hub);
            return;
        }
    to_all(l);
}

static void route(zp__listener *l, const zp__hub_msg *hm)
{
    zp__msg m;
    const char *why = NULL;
    msgpack_zone_clear(l->zone);
    worker *w = find_worker(l, hm->id, hm->id_len);
    if (zp__msg_decode(hm->body, hm->len, l->zone, &m, &why) != 0) {
        static zp__ratelog dropped = ZP__RATELOG_INIT;
        if (w != NULL) /* each stage drops the worker that sent it */
            to_all(l);
        else
            zp__ratelog_say(&dropped, "dropped a message: %s", why);
        return;
    }
    if (m.type == ZP__HELLO) {
        remember(l, hm);
        to_all(l);
    } else if (w == NULL) {
        /* A worker of an earlier run, or of a coordinator that restarted:
         * a HELLO asks it to introduce itself. A leaving one is let go. */
        if (m.type != ZP__BYE)
            zp__hub_send(l->router, hm->id, hm->id_len, l->hello.data,
                         l->hello.size);
    } else if (m.type == ZP__OUT || m.type == ZP__DONE || m.type == ZP__FAIL) {
        to_stage(l, w, &m);
    } else if (m.type == ZP__READY || m.type == ZP__HEARTBEAT ||
               m.type == ZP__BYE) {
        to_all(l);
        if (m.type == ZP__BYE)
            forget(l, w);
    } else { /* a type a worker may not send: each stage drops it */
        to_all(l);
    }
}

/* A stage's message cannot reach its worker: the worker is gone, and each
 * stage hears it leave. */
static void unreachable(zp__listener *l, const zp__hub_msg *hm)
{
    worker *w = find_worker(l, hm->id, hm->id_len);
    if (w == NULL)
        return;
    for (size_t i = 0; i < l->nports; i++)
        zp__hub_send(l->ports[i].hub, hm->id, hm->id_len, l->bye.data,
                     l->bye.size);
    forget(l, w);
}

/* Notes that port p gives worker hm->id a batch, when hm is an ITEM
 * ([version, type, ...]: its type is its third byte). */
static void note_given(zp__listener *l, const port *p, const zp__hub_msg *hm)
{
    size_t i = (size_t)(p - l->ports);
    const unsigned char *b = hm->body;
    if (i >= GIVEN_BITS || hm->len < 3 || b[2] != ZP__ITEM)
        return;
    worker *w = find_worker(l, hm->id, hm->id_len);
    if (w != NULL)
        w->given |= (uint64_t)1 << i;
}

static void from_stage(zp__listener *l, port *p)
{
    zp__hub_msg hm;
    for (int n = 0; n < BURST && zp__hub_next(p->hub, &hm) == 1; n++) {
        note_given(l, p, &hm);
        if (zp__hub_pass(p->hub, l->router) != 0)
            unreachable(l, &hm);
    }
}

static void from_workers(zp__listener *l)
{
    zp__hub_msg hm;
    for (int n = 0; n < BURST && zp__hub_next(l->router, &hm) == 1; n++)
        route(l, &hm);
}

/* ---- The thread ---------------------------------------------------------- */

/* Adds a stage that joined and tells it the workers known so far. */
static void add_port(zp__listener *l, port p)
{
    port *v = zp__realloc(l->ports, (l->nports + 1) * sizeof *v);
    zmq_pollitem_t *items =
        v ? zp__realloc(l->items, (l->nports + 3) * sizeof *items) : NULL;
    if (v != NULL)
        l->ports = v;
    if (items == NULL) {
        zp__log(ZP_LOG_ERROR, "zpipe: out of memory: stage %u hears no worker",
                p.stage);
        zp__hub_destroy(&p.hub);
        return;
    }
    l->items = items;
    l->ports[l->nports++] = p;
    for (size_t i = 0; i < l->nworkers; i++)
        zp__hub_send(p.hub, l->workers[i].id, l->workers[i].id_len,
                     l->workers[i].hello, l->workers[i].hello_len);
}

/* Takes the stages that joined since the last call; false once the
 * listener is to end. */
static bool take_fresh(zp__listener *l)
{
    pthread_mutex_lock(&l->lock);
    bool go_on = !l->stop;
    port *fresh = l->fresh;
    size_t n = l->nfresh;
    l->fresh = NULL;
    l->nfresh = 0;
    pthread_mutex_unlock(&l->lock);
    for (size_t i = 0; i < n; i++)
        add_port(l, fresh[i]);
    free(fresh);
    return go_on;
}

static int poll_all(zp__listener *l)
{
    size_t n = 0;
    l->items[n++] =
        (zmq_pollitem_t){zp__hub_socket(l->router), 0, ZMQ_POLLIN, 0};
    l->items[n++] = (zmq_pollitem_t){l->wake_rx, 0, ZMQ_POLLIN, 0};
    for (size_t i = 0; i < l->nports; i++)
        l->items[n++] =
            (zmq_pollitem_t){zp__hub_socket(l->ports[i].hub), 0, ZMQ_POLLIN, 0};
    return zmq_poll(l->items, (int)n, -1);
}

static void *listen_main(void *arg)
{
    zp__listener *l = arg;
    char wake;
    while (take_fresh(l)) {
        if (poll_all(l) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break; /* the context was shut down: the run is stopping */
        }
        while (zmq_recv(l->wake_rx, &wake, 1, ZMQ_DONTWAIT) >= 0)
            ;
        for (size_t i = 0; i < l->nports; i++)
            if (l->items[2 + i].revents & ZMQ_POLLIN)
                from_stage(l, &l->ports[i]);
        if (l->items[0].revents & ZMQ_POLLIN)
            from_workers(l);
    }
    return NULL;
}

/* ---- The listener -------------------------------------------------------- */

/* Wakes the thread. Under the lock. */
static void wake(zp__listener *l)
{
    zmq_send(l->wake_tx, "", 0, ZMQ_DONTWAIT);
}

/* Everything but the thread and the ROUTER. */
static int set_up(zp__listener *l, char **why)
{
    char name[64];
    int zero = 0;
    snprintf(name, sizeof name, "inproc://zp-listener-%p", (void *)l);
    l->zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    l->items = zp__calloc(2, sizeof *l->items);
    l->wake_rx = zmq_socket(l->zctx, ZMQ_PAIR);
    l->wake_tx = zmq_socket(l->zctx, ZMQ_PAIR);
    if (l->zone == NULL || l->items == NULL ||
        zp__msg_hello(&l->hello, "coordinator", (uint32_t)getpid(), 1, NULL, 0,
                      NULL) != 0 ||
        zp__msg_bye(&l->bye, "it cannot be reached") != 0)
        return ZP_ENOMEM;
    if (l->wake_rx == NULL || l->wake_tx == NULL ||
        zmq_setsockopt(l->wake_rx, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_setsockopt(l->wake_tx, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_bind(l->wake_rx, name) != 0 || zmq_connect(l->wake_tx, name) != 0) {
        *why = zp__strdupf("cannot make the listener's inproc sockets: %s",
                           zmq_strerror(zmq_errno()));
        return ZP_EIO;
    }
    return 0;
}

zp__listener *zp__listener_new(void *zctx, const char *endpoint,
                               const char *curve_secret,
                               const char *curve_allow, uint64_t run,
                               char **why)
{
    zp__listener *l = zp__calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    l->zctx = zctx;
    l->run = run;
    pthread_mutex_init(&l->lock, NULL);
    msgpack_sbuffer_init(&l->hello);
    msgpack_sbuffer_init(&l->bye);
    if (set_up(l, why) != 0)
        goto out_destroy;
    l->router = zp__hub_new(zctx, endpoint, curve_secret, curve_allow, why);
    if (l->router == NULL)
        goto out_destroy;
    int err = pthread_create(&l->thread, NULL, listen_main, l);
    if (err != 0) {
        *why = zp__strdupf("cannot start the listener's thread: %s",
                           strerror(err));
        goto out_destroy;
    }
    l->started = true;
    return l;
out_destroy:
    zp__listener_destroy(&l);
    return NULL;
}

int zp__listener_join(zp__listener *l, uint32_t stage, zp__hub **hub,
                      char **why)
{
    char name[96];
    const char *shown = zp__hub_endpoint(l->router);
    pthread_mutex_lock(&l->lock);
    snprintf(name, sizeof name, "inproc://zp-listener-%p-%u", (void *)l,
             l->next++);
    zp__hub *mine = zp__hub_pair(l->zctx, name, true, shown, why);
    *hub = mine ? zp__hub_pair(l->zctx, name, false, shown, why) : NULL;
    port *v = *hub ? zp__realloc(l->fresh, (l->nfresh + 1) * sizeof *v) : NULL;
    int rc = 0;
    if (v == NULL) {
        rc = *why != NULL ? ZP_EIO : ZP_ENOMEM;
        zp__hub_destroy(&mine);
        zp__hub_destroy(hub);
    } else {
        l->fresh = v;
        v[l->nfresh++] = (port){mine, stage};
        wake(l);
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

void zp__listener_destroy(zp__listener **lp)
{
    zp__listener *l = *lp;
    if (l == NULL)
        return;
    if (l->started) {
        pthread_mutex_lock(&l->lock);
        l->stop = true;
        wake(l);
        pthread_mutex_unlock(&l->lock);
        pthread_join(l->thread, NULL);
    }
    for (size_t i = 0; i < l->nfresh; i++) /* the thread ended first */
        zp__hub_destroy(&l->fresh[i].hub);
    for (size_t i = 0; i < l->nports; i++)
        zp__hub_destroy(&l->ports[i].hub);
    for (size_t i = 0; i < l->nworkers; i++) {
        free(l->workers[i].id);
        free(l->workers[i].hello);
    }
    free(l->fresh);
    free(l->ports);
    free(l->workers);
    zp__idmap_fini(&l->ids);
    free(l->items);
    zp__hub_destroy(&l->router);
    if (l->wake_tx != NULL)
        zmq_close(l->wake_tx);
    if (l->wake_rx != NULL)
        zmq_close(l->wake_rx);
    if (l->zone != NULL)
        msgpack_zone_free(l->zone);
    msgpack_sbuffer_destroy(&l->hello);
    msgpack_sbuffer_destroy(&l->bye);
    pthread_mutex_destroy(&l->lock);
    free(l);
    *lp = NULL;
}
