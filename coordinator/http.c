/* SPDX-License-Identifier: MIT */
/*
 * The metrics endpoint's HTTP server, see http.h. The listening socket is
 * made here, so that a bad address or a port in use is an error that
 * names it, and handed to libmicrohttpd, whose one thread (epoll) accepts
 * and serves the connections; a page is written on that thread when it is
 * asked for, into a buffer that libmicrohttpd frees once it is sent.
 *
 * libmicrohttpd's own timeout is an idle one, restarted by every byte, so
 * a client that sends one byte a second would hold its connection for
 * ever. Each connection is therefore tracked here (NOTIFY_CONNECTION)
 * with a deadline for its whole request, and a thread of this file, the
 * reaper, shuts down (shutdown(2)) those past it; libmicrohttpd then
 * sees the end of the stream and closes them. Only connections waiting
 * for their request count towards MAX_WAITING: one more drops the one
 * that has waited longest, so that a new scrape always gets in. A
 * connection's socket is shut down only under the lock and while it is
 * listed, and libmicrohttpd closes it only after saying CLOSED, which
 * unlists it under the lock: a closed descriptor, reused since, is never
 * shut down.
 */
#include "coordinator/http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
/* Connections waiting for their request; one more drops the oldest. */
#define MAX_WAITING 64u
/* libmicrohttpd's own limit: those waiting, those being answered, and
 * those dropped that it has not closed yet. */
#define MAX_CONNECTIONS 256u
/* From a connection's accept, or its previous answer, to its request
 * whole; then from the request to the answer sent whole. */
#define REQUEST_S 3u
#define ANSWER_S 10u
#define IDLE_TIMEOUT_S 10u
/* How often the reaper looks for connections past their deadline. */
#define REAP_MS 100u

/* One open connection, as NOTIFY_CONNECTION announced it. */
typedef struct conn {
    struct conn *prev, *next; /* in zp__metrics.conns */
    int fd;                   /* libmicrohttpd's; only shut down here */
    uint64_t until;           /* zp__now_ns() past which it is dropped */
    bool answering;           /* its request is whole, the answer due */
    bool dropped;             /* shut down; libmicrohttpd closes it */
} conn;

struct zp__metrics {
    struct MHD_Daemon *mhd; /* owned */
    zp__metrics_render render;
    void *arg;
    char where[80];       /* the address and port listened on */
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;  /* signalled when waited grows */
    uint64_t waited;      /* pages the owner waits for, sent whole */
    conn *conns;          /* every open connection, owned */
    unsigned waiting;     /* those in conns neither answering nor dropped */
    pthread_cond_t tick;  /* wakes the reaper to stop */
    pthread_t reaper;
    bool reaping;  /* the reaper runs */
    bool stopping; /* the reaper is to return */
};

/* The request mark of a page the owner waits for. */
static char waited_page;

/* ---- Listening ----------------------------------------------------------- */

/* Splits "HOST:PORT", ":PORT" or "[V6]:PORT": host[] is "" for every
 * IPv4 address; port[] holds 1 to 5 digits up to 65535. */
static bool split_addr(const char *addr, char *host, size_t hlen, char *port)
{
    const char *colon, *start = addr;
    size_t n;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (end == NULL || end[1] != ':')
            return false;
        start = addr + 1;
        n = (size_t)(end - start);
        if (n == 0)
            return false;
        colon = end + 1;
    } else {
        colon = strchr(addr, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return false;
        n = (size_t)(colon - addr);
    }
    size_t digits = strspn(colon + 1, "0123456789");
    if (n >= hlen || digits == 0 || digits > 5 || colon[1 + digits] != '\0' ||
        atol(colon + 1) > 65535)
        return false;
    memcpy(host, start, n);
    host[n] = '\0';
    strcpy(port, colon + 1);
    return true;
}

/* "ADDRESS:PORT" of a bound socket, IPv6 in brackets. */
static void describe(int fd, char *out, size_t len)
{
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getsockname(fd, (struct sockaddr *)&sa, &salen) == 0 &&
        sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
        port = ntohs(s6->sin6_port);
        snprintf(out, len, "[%s]:%u", ip, port);
        return;
    }
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&sa;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    port = ntohs(s4->sin_port);
    snprintf(out, len, "%s:%u", ip, port);
}

/* A socket bound to one of the addresses, listening; -1 with errno. */
static int listen_on(const struct addrinfo *ai)
{
    int fd = -1, err = EADDRNOTAVAIL, one = 1;
    for (; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd >= 0 &&
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
            return fd;
        err = errno;
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    errno = err;
    return -1;
}

/* The listening socket for `addr`; -1 with *why naming it. */
static int open_listener(const char *addr, char **why)
{
    char host[256], port[8];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (!split_addr(addr, host, sizeof host, port)) {
        *why = zp__strdupf("bad metrics address '%s': expected HOST:PORT, "
                           "such as 127.0.0.1:9464, :9464 or [::1]:9464",
                           addr);
        return -1;
    }
    int rc = getaddrinfo(host[0] ? host : "0.0.0.0", port, &hints, &res);
    if (rc != 0) {
        *why = zp__strdupf("cannot serve metrics on '%s': %s", addr,
                           gai_strerror(rc));
        return -1;
    }
    int fd = listen_on(res);
    if (fd < 0)
        *why = zp__strdupf("cannot serve metrics on '%s': %s", addr,
                           strerror(errno));
    freeaddrinfo(res);
    return fd;
}

/* ---- Deadlines ----------------------------------------------------------- */

/* Whether the lock is held (by this thread, where it is asked); for
 * asserts only. */
static inline bool held(zp__metrics *m)
{
    return pthread_mutex_trylock(&m->lock) == EBUSY;
}

/* Shuts `k` down, so that libmicrohttpd closes it. The lock held. */
static void drop(zp__metrics *m, conn *k)
{
    assert(held(m) && !k->dropped);
    shutdown(k->fd, SHUT_RDWR);
    if (!k->answering) {
        assert(m->waiting > 0);
        m->waiting--;
    }
    k->dropped = true;
}

/* Counts `k` as waiting for a request from now; drops the connection
 * that has waited longest when too many wait. The lock held. */
static void wait_request(zp__metrics *m, conn *k)
{
    assert(held(m));
    k->answering = false;
    k->until = zp__now_ns() + REQUEST_S * ZP__NS_PER_S;
    if (++m->waiting <= MAX_WAITING)
        return;
    conn *oldest = NULL;
    for (conn *o = m->conns; o != NULL; o = o->next)
        if (o != k && !o->dropped && !o->answering &&
            (oldest == NULL || o->until < oldest->until))
            oldest = o;
    assert(oldest != NULL);
    drop(m, oldest);
}

/* The connection's entry, or NULL when it has none (out of memory). */
static conn *conn_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci != NULL ? ci->socket_context : NULL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **ctx,
                          enum MHD_ConnectionNotificationCode toe)
{
    zp__metrics *m = cls;
    conn *k = *ctx;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci == NULL)
            return;
        k = zp__calloc(1, sizeof *k);
        if (k == NULL) { /* untracked, it would have no deadline */
            shutdown(ci->connect_fd, SHUT_RDWR);
            return;
        }
        k->fd = ci->connect_fd;
        pthread_mutex_lock(&m->lock);
        k->next = m->conns;
        if (m->conns != NULL)
            m->conns->prev = k;
        m->conns = k;
        wait_request(m, k);
        pthread_mutex_unlock(&m->lock);
        *ctx = k;
        return;
    }
    if (k == NULL)
        return;
    pthread_mutex_lock(&m->lock);
    if (!k->dropped && !k->answering) {
        assert(m->waiting > 0);
        m->waiting--;
    }
    if (k->prev != NULL)
        k->prev->next = k->next;
    else
        m->conns = k->next;
    if (k->next != NULL)
        k->next->prev = k->prev;
    pthread_mutex_unlock(&m->lock);
    free(k);
    *ctx = NULL;
}

/* The reaper's thread: drops connections past their deadline. */
static void *reap(void *arg)
{
    zp__metrics *m = arg;
    pthread_mutex_lock(&m->lock);
    while (!m->stopping) {
        uint64_t now = zp__now_ns();
        for (conn *k = m->conns; k != NULL; k = k->next)
            if (!k->dropped && now >= k->until)
                drop(m, k);
        struct timespec until;
        zp__deadline_after(&until, REAP_MS * ZP__NS_PER_MS);
        pthread_cond_timedwait(&m->tick, &m->lock, &until);
    }
    pthread_mutex_unlock(&m->lock);
    return NULL;
}

/* ---- Answering ----------------------------------------------------------- */

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status,
                                  const char *text, const char *allow)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            "text/plain; charset=utf-8");
    if (allow != NULL)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_page(zp__metrics *m, struct MHD_Connection *c,
                                  void **mark)
{
    zp__prom p;
    size_t len;
    zp__prom_init(&p);
    bool wanted = m->render(m->arg, &p);
    char *page = zp__prom_take(&p, &len);
    if (page == NULL)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n",
                          NULL);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, page, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(page);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, CONTENT_TYPE);
    enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    if (wanted && rc == MHD_YES)
        *mark = &waited_page;
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **mark)
{
    zp__metrics *m = cls;
    conn *k = conn_of(c);
    (void)version;
    (void)upload;
    (void)upload_size;
    if (k != NULL) {
        pthread_mutex_lock(&m->lock);
        if (!k->dropped && !k->answering) {
            assert(m->waiting > 0);
            m->waiting--;
            k->answering = true;
            k->until = zp__now_ns() + ANSWER_S * ZP__NS_PER_S;
        }
        pthread_mutex_unlock(&m->lock);
    }
    if (strcmp(url, "/metrics") != 0)
        return reply_text(c, MHD_HTTP_NOT_FOUND,
                          "not found: the metrics are at /metrics\n", NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                          "method not allowed: GET /metrics only\n",
                          MHD_HTTP_METHOD_GET);
    return reply_page(m, c, mark);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **mark,
                         enum MHD_RequestTerminationCode toe)
{
    zp__metrics *m = cls;
    conn *k = conn_of(c);
    pthread_mutex_lock(&m->lock);
    if (*mark == &waited_page && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        assert(m->waited < UINT64_MAX);
        m->waited++;
        pthread_cond_broadcast(&m->cond);
    }
    if (k != NULL && !k->dropped && k->answering)
        wait_request(m, k); /* for the next request on the connection */
    pthread_mutex_unlock(&m->lock);
    *mark = NULL;
}

/* ---- The server ---------------------------------------------------------- */

zp__metrics *zp__metrics_new(const char *addr, zp__metrics_render render,
                             void *arg, char **why)
{
    assert(addr != NULL && render != NULL && why != NULL);
    zp__metrics *m = zp__calloc(1, sizeof *m);
    if (m == NULL || zp__cond_init_monotonic(&m->cond) != 0) {
        free(m);
        *why = zp__strdupf("cannot serve metrics on '%s': out of memory", addr);
        return NULL;
    }
    if (zp__cond_init_monotonic(&m->tick) != 0) {
        pthread_cond_destroy(&m->cond);
        free(m);
        *why = zp__strdupf("cannot serve metrics on '%s': out of memory", addr);
        return NULL;
    }
    pthread_mutex_init(&m->lock, NULL);
    m->render = render;
    m->arg = arg;
    int fd = open_listener(addr, why);
    if (fd < 0)
        goto out_destroy;
    describe(fd, m->where, sizeof m->where);
    m->mhd = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC, 0, NULL, NULL, on_request,
        m, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, m,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, m,
        MHD_OPTION_CONNECTION_LIMIT, MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S, MHD_OPTION_END);
    if (m->mhd == NULL) {
        close(fd);
        *why = zp__strdupf("cannot serve metrics on '%s': the HTTP server "
                           "did not start",
                           addr);
        goto out_destroy;
    }
    if (pthread_create(&m->reaper, NULL, reap, m) != 0) {
        *why = zp__strdupf("cannot serve metrics on '%s': no thread for its "
                           "deadlines",
                           addr);
        goto out_destroy;
    }
    m->reaping = true;
    return m;
out_destroy:
    zp__metrics_destroy(&m);
    return NULL;
}

void zp__metrics_destroy(zp__metrics **mp)
{
    zp__metrics *m = *mp;
    if (m == NULL)
        return;
    if (m->reaping) {
        pthread_mutex_lock(&m->lock);
        m->stopping = true;
        pthread_cond_signal(&m->tick);
        pthread_mutex_unlock(&m->lock);
        pthread_join(m->reaper, NULL);
    }
    if (m->mhd != NULL)
        MHD_stop_daemon(m->mhd); /* joins its thread, closes the socket */
    while (m->conns != NULL) {   /* those it did not say CLOSED of */
        conn *k = m->conns;
        m->conns = k->next;
        free(k);
    }
    pthread_cond_destroy(&m->tick);
    pthread_cond_destroy(&m->cond);
    pthread_mutex_destroy(&m->lock);
    free(m);
    *mp = NULL;
}

const char *zp__metrics_where(const zp__metrics *m)
{
    return m->where;
}

bool zp__metrics_wait(zp__metrics *m, int timeout_ms)
{
    struct timespec until;
    assert(m != NULL && timeout_ms >= 0);
    zp__deadline_after(&until, (uint64_t)timeout_ms * 1000000u);
    pthread_mutex_lock(&m->lock);
    int rc = 0;
    while (m->waited == 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&m->cond, &m->lock, &until);
    bool sent = m->waited > 0;
    pthread_mutex_unlock(&m->lock);
    return sent;
}
