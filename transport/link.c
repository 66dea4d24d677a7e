/* SPDX-License-Identifier: MIT */
/*
 * Links over ZeroMQ inproc sockets, see link.h. The hot path per batch is
 * one credit take (a CAS), one pick of a consumer (a scan of C counters),
 * one two-frame ROUTER send; per item on the consumer side, one
 * msgpack_unpack(). Locks are taken only when a producer must wait.
 */
#include "transport/link.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "transport/batch.h"

/* A marker message: this byte (never the first of a msgpack value), then
 * the zp__mark as it is in memory: edges never leave the process. */
#define MARK_BYTE 0xc1

struct zp__tx {
    zp__edge *e;         /* borrowed; the edge owns this tx            */
    void *sock;          /* owned ROUTER                               */
    msgpack_sbuffer buf; /* items of the current batch                 */
    msgpack_packer pk;   /* writes into buf                            */
    size_t committed;    /* bytes of buf that are whole items          */
    uint32_t count;      /* items in buf                               */
    uint32_t max;        /* items per batch, at most                   */
    int next;            /* where the least-loaded scan starts         */
    uint64_t hold;       /* sends wait until every consumer passed the
                            marker of this epoch; 0: none              */
    uint64_t skip;       /* items still to drop unsent (a resumed run)  */
    uint64_t marked_ns;  /* when it last sent a marker (the first edge) */
    uint64_t epoch;      /* the last marker it sent (the first edge)    */
};

struct zp__rx {
    zp__edge *e;         /* borrowed; the edge owns this rx          */
    int index;           /* routing id                               */
    void *sock;          /* owned DEALER                             */
    zmq_msg_t msg;       /* the message being read                   */
    zp__batch_reader rd; /* reads msg's items                        */
    int closed;          /* producers that said they are done        */
    bool waiting;        /* counted in e->waiting (event loops)      */
    int marks;           /* producers whose marker came, this epoch  */
    zp__mark mark;       /* the marker being gathered                */
    bool unpassed;       /* ZP__MARK returned, zp__rx_pass not yet   */
};

void *zp__zctx_new(int sockets, bool io)
{
    void *zctx = zmq_ctx_new();
    if (zctx == NULL)
        return NULL;
    /* Inproc sockets alone need no I/O thread. */
    if (!io)
        zmq_ctx_set(zctx, ZMQ_IO_THREADS, 0);
    if (sockets > zmq_ctx_get(zctx, ZMQ_MAX_SOCKETS))
        zmq_ctx_set(zctx, ZMQ_MAX_SOCKETS, sockets);
    return zctx;
}

void zp__zctx_shutdown(void *zctx)
{
    if (zctx != NULL)
        zmq_ctx_shutdown(zctx);
}

void zp__zctx_term(void *zctx)
{
    if (zctx == NULL)
        return;
    while (zmq_ctx_term(zctx) != 0 && zmq_errno() == EINTR)
        ;
}

static void *make_socket(void *zctx, int type)
{
    void *s = zmq_socket(zctx, type);
    int zero = 0, one = 1;
    if (s == NULL)
        return NULL;
    zmq_setsockopt(s, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    if (type == ZMQ_ROUTER)
        zmq_setsockopt(s, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    return s;
}

static void routing_id(unsigned char id[4], int j)
{
    for (int i = 0; i < 4; i++)
        id[i] = (unsigned char)((unsigned)j >> (24 - 8 * i));
}

static zp__rx *rx_new(zp__edge *e, void *zctx, const char *name, int j)
{
    char ep[256];
    zp__rx *rx = zp__calloc(1, sizeof *rx);
    if (rx == NULL)
        return NULL;
    rx->e = e;
    rx->index = j;
    zmq_msg_init(&rx->msg);
    rx->sock = make_socket(zctx, ZMQ_DEALER);
    snprintf(ep, sizeof ep, "inproc://%s/%d", name, j);
    if (zp__batch_reader_init(&rx->rd) != 0 || rx->sock == NULL ||
        zmq_bind(rx->sock, ep) != 0) {
        zp__batch_reader_fini(&rx->rd);
        zmq_msg_close(&rx->msg);
        if (rx->sock != NULL)
            zmq_close(rx->sock);
        free(rx);
        return NULL;
    }
    return rx;
}

static void rx_destroy(zp__rx *rx)
{
    if (rx == NULL)
        return;
    zp__batch_reader_fini(&rx->rd);
    zmq_msg_close(&rx->msg);
    zmq_close(rx->sock);
    free(rx);
}

static int tx_connect(zp__tx *tx, const char *name)
{
    char ep[256];
    unsigned char id[4];
    for (int j = 0; j < tx->e->consumers; j++) {
        routing_id(id, j);
        snprintf(ep, sizeof ep, "inproc://%s/%d", name, j);
        if (zmq_setsockopt(tx->sock, ZMQ_CONNECT_ROUTING_ID, id, 4) != 0 ||
            zmq_connect(tx->sock, ep) != 0)
            return ZP_EIO;
    }
    return 0;
}

static void tx_destroy(zp__tx *tx)
{
    if (tx == NULL)
        return;
    if (tx->sock != NULL)
        zmq_close(tx->sock);
    msgpack_sbuffer_destroy(&tx->buf);
    free(tx);
}

static zp__tx *tx_new(zp__edge *e, void *zctx, const char *name)
{
    zp__tx *tx = zp__calloc(1, sizeof *tx);
    if (tx == NULL)
        return NULL;
    tx->e = e;
    msgpack_sbuffer_init(&tx->buf);
    msgpack_packer_init(&tx->pk, &tx->buf, msgpack_sbuffer_write);
    int64_t max = e->consumers > 1 ? ZP__BATCH_MAX_SHARED : ZP__BATCH_MAX_ALONE;
    tx->max = (uint32_t)(e->limit < max ? e->limit : max);
    tx->sock = make_socket(zctx, ZMQ_ROUTER);
    if (tx->sock == NULL || tx_connect(tx, name) != 0) {
        tx_destroy(tx);
        return NULL;
    }
    return tx;
}

int zp__edge_init(zp__edge *e, void *zctx, const char *name, int producers,
                  int consumers, int limit, const _Atomic bool *stop)
{
    memset(e, 0, sizeof *e);
    e->limit = limit;
    e->stop = stop;
    atomic_store(&e->slow, true); /* until a consumer measured itself */
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->cond, NULL);
    e->tx = zp__calloc((size_t)producers, sizeof *e->tx);
    e->rx = zp__calloc((size_t)consumers, sizeof *e->rx);
    e->pending = zp__calloc((size_t)consumers, sizeof *e->pending);
    if (e->tx == NULL || e->rx == NULL || e->pending == NULL)
        return ZP_ENOMEM;
    /* Counted as they are made, so that fini frees exactly these. */
    for (; e->consumers < consumers; e->consumers++)
        if ((e->rx[e->consumers] = rx_new(e, zctx, name, e->consumers)) == NULL)
            return ZP_EIO;
    for (; e->producers < producers; e->producers++)
        if ((e->tx[e->producers] = tx_new(e, zctx, name)) == NULL)
            return ZP_EIO;
    return 0;
}

void zp__edge_fini(zp__edge *e)
{
    assert(atomic_load(&e->waiters) == 0); /* no thread uses it anymore */
    for (int i = 0; e->tx != NULL && i < e->producers; i++)
        tx_destroy(e->tx[i]);
    for (int j = 0; e->rx != NULL && j < e->consumers; j++)
        rx_destroy(e->rx[j]);
    free(e->tx);
    free(e->rx);
    free(e->pending);
    e->tx = NULL;
    e->rx = NULL;
    e->pending = NULL;
    pthread_cond_destroy(&e->cond);
    pthread_mutex_destroy(&e->lock);
}

void zp__edge_set_slow(zp__edge *e, bool slow)
{
    if (atomic_load_explicit(&e->slow, memory_order_relaxed) != slow)
        atomic_store_explicit(&e->slow, slow, memory_order_relaxed);
}

void zp__edge_wake(zp__edge *e)
{
    pthread_mutex_lock(&e->lock);
    pthread_cond_broadcast(&e->cond);
    if (e->notify != NULL)
        e->notify(e->notify_arg);
    pthread_mutex_unlock(&e->lock);
}

void zp__edge_release(zp__edge *e, int64_t n)
{
    /* Not `queued >= n`: a receiver counts what a batch's header says, and
     * the bytes of a batch are not ours to trust. */
    assert(n >= 0);
    atomic_fetch_sub(&e->queued, n);
    /* Pairs with the waiter's increment before its last check; the loop
     * arms before its last check too. */
    if (atomic_load(&e->waiters) > 0 ||
        (atomic_load(&e->armed) && atomic_exchange(&e->armed, false)))
        zp__edge_wake(e);
}

void zp__edge_on_room(zp__edge *e, void (*notify)(void *), void *arg)
{
    pthread_mutex_lock(&e->lock);
    e->notify = notify;
    e->notify_arg = arg;
    pthread_mutex_unlock(&e->lock);
}

void zp__edge_arm(zp__edge *e)
{
    atomic_store(&e->armed, true);
}

void zp__edge_mark_every(zp__edge *e, uint64_t every_ns, uint64_t skip)
{
    assert(e->producers == 1); /* the first stage's edge */
    e->mark_every_ns = every_ns;
    e->skip = skip;
    zp__edge_skip(e, skip);
    e->tx[0]->marked_ns = zp__now_ns();
}

void zp__edge_skip(zp__edge *e, uint64_t n)
{
    assert(e->producers == 1); /* one producer: its outputs are in order */
    e->tx[0]->skip = n;
}

void zp__edge_mark_settled(zp__edge *e, uint64_t epoch)
{
    atomic_store(&e->settled, epoch);
}

static bool try_take(zp__edge *e, int64_t n)
{
    int64_t q = atomic_load_explicit(&e->queued, memory_order_relaxed);
    while (q + n <= e->limit)
        if (atomic_compare_exchange_weak(&e->queued, &q, q + n))
            return true;
    return false;
}

static void note_depth(zp__edge *e)
{
    uint64_t q =
        (uint64_t)atomic_load_explicit(&e->queued, memory_order_relaxed);
    uint64_t h = atomic_load_explicit(&e->hwm, memory_order_relaxed);
    while (q > h && !atomic_compare_exchange_weak(&e->hwm, &h, q))
        ;
}

/* Whether every consumer passed the marker of `epoch` on. */
static bool all_passed(const zp__edge *e, uint64_t epoch)
{
    return atomic_load(&e->passed) >= epoch * (uint64_t)e->consumers;
}

/* Waits until the marker tx sent last was passed on by every consumer.
 * Returns 0 or ZP_ECANCELED. */
static int wait_passed(zp__tx *tx)
{
    zp__edge *e = tx->e;
    int rc = 0;
    if (!all_passed(e, tx->hold)) {
        pthread_mutex_lock(&e->lock);
        atomic_fetch_add(&e->waiters, 1);
        while (!(rc = atomic_load(e->stop) ? ZP_ECANCELED : 0) &&
               !all_passed(e, tx->hold))
            pthread_cond_wait(&e->cond, &e->lock);
        atomic_fetch_sub(&e->waiters, 1);
        pthread_mutex_unlock(&e->lock);
    }
    if (rc == 0)
        tx->hold = 0;
    return rc;
}

static int take_credits(zp__edge *e, int64_t n)
{
    int rc = 0;
    if (!try_take(e, n)) {
        pthread_mutex_lock(&e->lock);
        atomic_fetch_add(&e->waiters, 1);
        while (!(rc = atomic_load(e->stop) ? ZP_ECANCELED : 0) &&
               !try_take(e, n))
            pthread_cond_wait(&e->cond, &e->lock);
        atomic_fetch_sub(&e->waiters, 1);
        pthread_mutex_unlock(&e->lock);
    }
    if (rc == 0)
        note_depth(e);
    return rc;
}

msgpack_packer *zp__tx_packer(zp__tx *tx)
{
    return &tx->pk;
}

int zp__tx_commit(zp__tx *tx)
{
    if (tx->buf.size == tx->committed)
        return ZP_EINVAL;
    if (tx->skip > 0) { /* sent before a crash: already delivered */
        tx->skip--;
        tx->buf.size = tx->committed;
        return 0;
    }
    tx->committed = tx->buf.size;
    tx->count++;
    if (tx->count >= tx->max ||
        atomic_load_explicit(&tx->e->slow, memory_order_relaxed))
        return zp__tx_flush(tx);
    return 0;
}

int zp__tx_nudge(zp__tx *tx)
{
    if (atomic_load_explicit(&tx->e->waiting, memory_order_relaxed) > 0)
        return zp__tx_flush(tx);
    return 0;
}

int zp__tx_append(zp__tx *tx, const char *item, size_t len)
{
    if (msgpack_sbuffer_write(&tx->buf, item, len) != 0)
        return ZP_ENOMEM;
    return zp__tx_commit(tx);
}

void zp__tx_discard(zp__tx *tx)
{
    tx->buf.size = tx->committed;
}

static int pick(zp__tx *tx)
{
    int c = tx->e->consumers, best = tx->next;
    assert(c > 0 && best >= 0 && best < c);
    int64_t least = INT64_MAX;
    for (int k = 0; k < c && least > 0; k++) {
        int j = (tx->next + k) % c;
        int64_t p =
            atomic_load_explicit(&tx->e->pending[j], memory_order_relaxed);
        if (p < least) {
            least = p;
            best = j;
        }
    }
    tx->next = (best + 1) % c;
    return best;
}

static int send_to(zp__tx *tx, int j, zmq_msg_t *m)
{
    unsigned char id[4];
    routing_id(id, j);
    while (zmq_send(tx->sock, id, 4, ZMQ_SNDMORE) < 0)
        if (zmq_errno() != EINTR)
            goto out_err;
    while (zmq_msg_send(m, tx->sock, 0) < 0)
        if (zmq_errno() != EINTR)
            goto out_err;
    return 0;
out_err:
    zmq_msg_close(m);
    return zmq_errno() == ETERM ? ZP_ECANCELED : ZP_EIO;
}

/* Sends n items, `len` bytes of them back to back, as one batch. */
static int send_batch(zp__tx *tx, const char *items, size_t len, uint32_t n)
{
    zmq_msg_t m;
    char hdr[ZP__BATCH_HEADER_MAX];
    int rc = tx->hold != 0 ? wait_passed(tx) : 0;
    if (rc == 0)
        rc = take_credits(tx->e, n);
    if (rc != 0)
        return rc;
    uint64_t seq = atomic_fetch_add(&tx->e->next_seq, n);
    size_t h = zp__batch_header(hdr, seq, n);
    if (zmq_msg_init_size(&m, h + len) != 0) {
        zp__edge_release(tx->e, n);
        return ZP_ENOMEM;
    }
    memcpy(zmq_msg_data(&m), hdr, h);
    memcpy((char *)zmq_msg_data(&m) + h, items, len);
    int j = pick(tx);
    atomic_fetch_add_explicit(&tx->e->pending[j], n, memory_order_relaxed);
    return send_to(tx, j, &m);
}

/* Sends a marker to every consumer and holds what comes next. */
static int send_mark(zp__tx *tx, const zp__mark *mk)
{
    int rc = 0;
    assert(tx->hold == 0 && tx->count == 0);
    for (int j = 0; rc == 0 && j < tx->e->consumers; j++) {
        zmq_msg_t m;
        if (zmq_msg_init_size(&m, 1 + sizeof *mk) != 0)
            return ZP_ENOMEM;
        *(unsigned char *)zmq_msg_data(&m) = MARK_BYTE;
        memcpy((char *)zmq_msg_data(&m) + 1, mk, sizeof *mk);
        rc = send_to(tx, j, &m);
    }
    if (rc == 0)
        tx->hold = mk->epoch;
    return rc;
}

/* After a batch on the first edge: a marker, when the time for one has
 * come and the last one went through the whole run. */
static int mark_if_due(zp__tx *tx)
{
    zp__edge *e = tx->e;
    uint64_t now = zp__now_ns();
    if (now - tx->marked_ns < e->mark_every_ns ||
        atomic_load(&e->settled) != tx->epoch)
        return 0;
    tx->marked_ns = now;
    zp__mark mk = {.epoch = ++tx->epoch,
                   .first = e->skip + atomic_load(&e->next_seq)};
    return send_mark(tx, &mk);
}

int zp__tx_flush(zp__tx *tx)
{
    uint32_t n = tx->count;
    if (n == 0)
        return 0;
    int rc = send_batch(tx, tx->buf.data, tx->committed, n);
    if (rc == 0) {
        tx->buf.size = 0;
        tx->committed = 0;
        tx->count = 0;
        if (tx->e->mark_every_ns != 0)
            rc = mark_if_due(tx);
    }
    return rc;
}

uint32_t zp__tx_max(const zp__tx *tx)
{
    return tx->max;
}

int zp__tx_send_items(zp__tx *tx, const char *items, size_t len, uint32_t n)
{
    if (n > tx->max)
        return ZP_EINVAL;
    for (size_t size; tx->skip > 0 && n > 0; tx->skip--, n--) {
        if ((size = zp__msgpack_size(items, len)) == 0)
            return ZP_EINVAL;
        items += size; /* sent before a crash: already delivered */
        len -= size;
    }
    if (n == 0)
        return 0;
    int rc = zp__tx_flush(tx);
    if (rc == 0)
        rc = send_batch(tx, items, len, n);
    if (rc == 0 && tx->e->mark_every_ns != 0)
        rc = mark_if_due(tx);
    return rc;
}

int zp__tx_mark(zp__tx *tx, const zp__mark *m)
{
    int rc = zp__tx_flush(tx);
    if (rc == 0 && tx->hold != 0)
        rc = wait_passed(tx); /* the first edge's own marker, just sent */
    return rc == 0 ? send_mark(tx, m) : rc;
}

int zp__tx_close(zp__tx *tx)
{
    int rc = zp__tx_flush(tx);
    if (rc == 0 && tx->hold != 0)
        rc = wait_passed(tx);
    for (int j = 0; rc == 0 && j < tx->e->consumers; j++) {
        zmq_msg_t m;
        zmq_msg_init_size(&m, 1);
        *(unsigned char *)zmq_msg_data(&m) = 0xc0;
        rc = send_to(tx, j, &m);
    }
    return rc;
}

bool zp__tx_room(const zp__tx *tx)
{
    if (tx->hold != 0 && !all_passed(tx->e, tx->hold))
        return false;
    return atomic_load(&tx->e->queued) + tx->count < tx->e->limit;
}

/* Receives the next message into rx->msg. */
static int receive(zp__rx *rx, bool wait)
{
    if (zmq_msg_recv(&rx->msg, rx->sock, ZMQ_DONTWAIT) >= 0)
        return 0;
    while (zmq_errno() == EAGAIN || zmq_errno() == EINTR) {
        if (!wait)
            return ZP__AGAIN;
        if (atomic_load(rx->e->stop))
            return ZP_ECANCELED;
        atomic_fetch_add(&rx->e->waiting, 1);
        int rc = zmq_msg_recv(&rx->msg, rx->sock, 0);
        atomic_fetch_sub(&rx->e->waiting, 1);
        if (rc >= 0)
            return 0;
    }
    return zmq_errno() == ETERM ? ZP_ECANCELED : ZP_EIO;
}

/* ZP__MARK when every producer that has not closed sent the marker being
 * gathered, else 0. */
static int aligned(zp__rx *rx)
{
    if (rx->marks + rx->closed < rx->e->producers)
        return 0;
    rx->marks = 0;
    rx->unpassed = true;
    return ZP__MARK;
}

/* A marker from one more producer: as aligned(). */
static int open_mark(zp__rx *rx, const void *data, size_t len)
{
    zp__mark m;
    if (len != 1 + sizeof m)
        return ZP_EPROTO;
    memcpy(&m, (const char *)data + 1, sizeof m);
    if (rx->marks == 0)
        rx->mark = m;
    else if (m.epoch != rx->mark.epoch)
        return ZP_EPROTO;
    rx->marks++;
    return aligned(rx);
}

/* Takes the next message apart: end of a producer, a marker, or a batch.
 * Returns 0, ZP__MARK or an error. */
static int open_message(zp__rx *rx)
{
    const void *data = zmq_msg_data(&rx->msg);
    size_t len = zmq_msg_size(&rx->msg);
    if (zp__batch_is_eos(data, len)) {
        /* Producers that closed before a marker was sent count as having
         * sent it; the close may still arrive after others' markers. */
        rx->closed++;
        return rx->marks > 0 ? aligned(rx) : 0;
    }
    if (len > 0 && *(const unsigned char *)data == MARK_BYTE)
        return open_mark(rx, data, len);
    if (zp__batch_open(&rx->rd, data, len) != 0)
        return ZP_EPROTO;
    zp__edge *e = rx->e;
    atomic_fetch_sub_explicit(&e->pending[rx->index], rx->rd.left,
                              memory_order_relaxed);
    if (!e->defer_release)
        zp__edge_release(e, rx->rd.left);
    return 0;
}

/* Opens messages until one has items left: 1, 0 at the end of the stream
 * (every producer closed), ZP__MARK at a marker, or as receive() and
 * open_message(). */
static int refill(zp__rx *rx, bool wait)
{
    assert(!rx->unpassed); /* nothing is taken between a marker and its pass */
    while (rx->rd.left == 0) {
        int rc = rx->rd.off == rx->rd.len ? 0 : ZP_EPROTO;
        if (rc == 0 && rx->closed == rx->e->producers)
            return 0;
        if (rc != 0 || (rc = receive(rx, wait)) != 0 ||
            (rc = open_message(rx)) != 0)
            return rc;
    }
    return 1;
}

int zp__rx_next(zp__rx *rx, bool wait, const msgpack_object **item,
                uint64_t *seq)
{
    int rc = refill(rx, wait);
    return rc == 1 ? zp__batch_next(&rx->rd, item, seq) : rc;
}

int zp__rx_take(zp__rx *rx, bool wait, size_t max_bytes, const char **items,
                size_t *len, uint32_t *n, uint64_t *seq)
{
    zp__batch_reader *rd = &rx->rd;
    int rc = refill(rx, wait);
    if (rc != 1)
        return rc;
    *seq = rd->seq;
    if (rd->len - rd->off > max_bytes) { /* cut at an item boundary */
        int k = zp__batch_skip(rd, UINT32_MAX, max_bytes, items, len);
        *n = (uint32_t)k;
        return k > 0 ? 1 : ZP_EPROTO;
    }
    *items = rd->data + rd->off;
    *len = rd->len - rd->off;
    *n = rd->left;
    rd->seq += rd->left;
    rd->left = 0;
    rd->off = rd->len;
    return 1;
}

zp__mark zp__rx_mark(const zp__rx *rx)
{
    assert(rx->unpassed);
    return rx->mark;
}

void zp__rx_pass(zp__rx *rx)
{
    zp__edge *e = rx->e;
    assert(rx->unpassed);
    rx->unpassed = false;
    uint64_t passed = atomic_fetch_add(&e->passed, 1) + 1;
    if (passed % (uint64_t)e->consumers == 0)
        zp__edge_wake(e); /* held producers, an event loop's notify */
}

void *zp__rx_socket(zp__rx *rx)
{
    return rx->sock;
}

bool zp__rx_buffered(const zp__rx *rx)
{
    return rx->rd.left > 0;
}

void zp__rx_raw(const zp__rx *rx, const char **p, size_t *len)
{
    zp__batch_raw(&rx->rd, p, len);
}

int zp__rx_fd(zp__rx *rx, int *fd)
{
    size_t len = sizeof *fd;
    return zmq_getsockopt(rx->sock, ZMQ_FD, fd, &len) == 0 ? 0 : ZP_EIO;
}

void zp__rx_set_waiting(zp__rx *rx, bool waiting)
{
    if (rx->waiting == waiting)
        return;
    rx->waiting = waiting;
    int before = atomic_fetch_add(&rx->e->waiting, waiting ? 1 : -1);
    assert(waiting || before > 0); /* never negative */
    (void)before;
}
