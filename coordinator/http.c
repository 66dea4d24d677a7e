/* SPDX-License-Identifier: MIT */
/*
 * The metrics endpoint's HTTP server, see http.h. The listening socket is
 * made here, so that a bad address or a port in use is an error that
 * names it, and handed to libmicrohttpd, whose one thread (epoll) accepts
 * and serves the connections; a page is written on that thread when it is
 * asked for, into a buffer that libmicrohttpd frees once it is sent.
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
#define MAX_CONNECTIONS 32u
#define IDLE_TIMEOUT_S 10u

struct zp__metrics {
    struct MHD_Daemon *mhd; /* owned */
    zp__metrics_render render;
    void *arg;
    char where[80];       /* the address and port listened on */
    pthread_mutex_t lock; /* guards waited */
    pthread_cond_t cond;  /* signalled when waited grows */
    uint64_t waited;      /* pages the owner waits for, sent whole */
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
    (void)version;
    (void)upload;
    (void)upload_size;
    if (strcmp(url, "/metrics") != 0)
        return reply_text(c, MHD_HTTP_NOT_FOUND,
                          "not found: the metrics are at /metrics\n", NULL);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED,
                          "method not allowed: GET /metrics only\n",
                          MHD_HTTP_METHOD_GET);
    return reply_page(cls, c, mark);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **mark,
                         enum MHD_RequestTerminationCode toe)
{
    zp__metrics *m = cls;
    (void)c;
    if (*mark == &waited_page && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        pthread_mutex_lock(&m->lock);
        assert(m->waited < UINT64_MAX);
        m->waited++;
        pthread_cond_broadcast(&m->cond);
        pthread_mutex_unlock(&m->lock);
    }
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
        MHD_OPTION_CONNECTION_LIMIT, MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, IDLE_TIMEOUT_S, MHD_OPTION_END);
    if (m->mhd == NULL) {
        close(fd);
        *why = zp__strdupf("cannot serve metrics on '%s': the HTTP server "
                           "did not start",
                           addr);
        goto out_destroy;
    }
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
    if (m->mhd != NULL)
        MHD_stop_daemon(m->mhd); /* joins its thread, closes the socket */
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
