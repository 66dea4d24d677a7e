/* SPDX-License-Identifier: MIT */
/*
 * The metrics endpoint, see metrics.h. The listening socket is made here,
 * so that a bad address or a port in use is an error that names it, and
 * handed to libmicrohttpd, whose one thread (epoll) accepts and serves
 * the connections; a page is written on that thread when it is asked
 * for, into a buffer that libmicrohttpd frees once it is sent.
 */
#include "coordinator/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "worker/call.h"

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
    zp__deadline_after(&until, (uint64_t)timeout_ms * 1000000u);
    pthread_mutex_lock(&m->lock);
    int rc = 0;
    while (m->waited == 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&m->cond, &m->lock, &until);
    bool sent = m->waited > 0;
    pthread_mutex_unlock(&m->lock);
    return sent;
}

/* ---- Pages --------------------------------------------------------------- */

/* The plain counters and gauges of a stage, each a uint64_t of
 * zp_stage_stats. */
typedef struct stage_family {
    const char *name, *type, *help;
    size_t off;
} stage_family;

#define AT(field) offsetof(zp_stage_stats, field)

static const stage_family stage_families[] = {
    {"zpipe_stage_items_in_total", "counter",
     "Items the stage took from upstream.", AT(items_in)},
    {"zpipe_stage_items_out_total", "counter",
     "Outputs the stage sent downstream.", AT(items_out)},
    {"zpipe_stage_failed_total", "counter",
     "Items that failed, after their retries.", AT(failed)},
    {"zpipe_stage_retried_total", "counter",
     "Extra attempts made at failed items.", AT(retried)},
    {"zpipe_stage_skipped_total", "counter",
     "Failed items dropped (on_error=skip).", AT(skipped)},
    {"zpipe_stage_restarts_total", "counter",
     "Worker processes replaced after they died.", AT(restarts)},
    {"zpipe_stage_in_flight", "gauge", "Items being worked on now.",
     AT(in_flight)},
    {"zpipe_stage_queue_items", "gauge",
     "Items waiting at the stage's output now.", AT(queue_items)},
};

static uint64_t field_of(const zp_stage_stats *s, size_t off)
{
    uint64_t v;
    memcpy(&v, (const char *)s + off, sizeof v);
    return v;
}

/* The labels of stage i: stage (1-based) and task; `num` holds the number. */
static void stage_labels(zp__prom_label *l, char *num, size_t i,
                         const zp_stage_stats *s)
{
    snprintf(num, 24, "%zu", i + 1);
    l[0] = (zp__prom_label){"stage", num};
    l[1] = (zp__prom_label){"task", s->task ? s->task : ""};
    l[2] = (zp__prom_label){NULL, NULL};
}

static void stage_counts(zp__prom *p, const zp_stage_stats *st, size_t n)
{
    zp__prom_label l[4];
    char num[24];
    for (size_t f = 0; f < sizeof stage_families / sizeof *stage_families;
         f++) {
        const stage_family *sf = &stage_families[f];
        zp__prom_family(p, sf->name, sf->type, sf->help);
        for (size_t i = 0; i < n; i++) {
            stage_labels(l, num, i, &st[i]);
            zp__prom_uint(p, sf->name, l, field_of(&st[i], sf->off));
        }
    }
}

static void stage_times(zp__prom *p, const zp_stage_stats *st, size_t n)
{
    zp__prom_label l[4];
    char num[24];
    zp__prom_family(p, "zpipe_stage_workers_alive", "gauge",
                    "Workers running now: threads, the async loop's calls, "
                    "or connected worker processes.");
    for (size_t i = 0; i < n; i++) {
        stage_labels(l, num, i, &st[i]);
        zp__prom_uint(p, "zpipe_stage_workers_alive", l,
                      st[i].workers_alive > 0 ? (uint64_t)st[i].workers_alive
                                              : 0);
    }
    zp__prom_family(p, "zpipe_stage_busy_seconds_total", "counter",
                    "Time spent inside the task, all workers together.");
    for (size_t i = 0; i < n; i++) {
        stage_labels(l, num, i, &st[i]);
        zp__prom_seconds(p, "zpipe_stage_busy_seconds_total", l, st[i].busy_ns);
    }
    zp__prom_family(p, "zpipe_stage_item_seconds", "histogram",
                    "The task's own time per item (thread and async stages; "
                    "process and remote stages record none yet).");
    for (size_t i = 0; i < n; i++) {
        stage_labels(l, num, i, &st[i]);
        zp__prom_histogram(p, "zpipe_stage_item_seconds", l, st[i].item_hist,
                           st[i].item_hist_ns);
    }
}

static void worker_rows(zp__prom *p, const zp_stage_stats *st, size_t n,
                        const zp__metrics_worker *w, size_t nw)
{
    zp__prom_label l[4];
    char num[24];
    zp__prom_family(p, "zpipe_worker_batches_total", "counter",
                    "Batches done by each worker of a process or remote "
                    "stage, by the name in its HELLO.");
    for (size_t k = 0; k < nw; k++) {
        if (w[k].stage >= n)
            continue;
        stage_labels(l, num, w[k].stage, &st[w[k].stage]);
        l[2] = (zp__prom_label){"worker", w[k].row.name};
        l[3] = (zp__prom_label){NULL, NULL};
        zp__prom_uint(p, "zpipe_worker_batches_total", l, w[k].row.count);
    }
}

void zp__metrics_run_page(zp__prom *p, const zp_stage_stats *st, size_t n,
                          const zp__metrics_worker *w, size_t nw, bool up)
{
    const zp__prom_label version[] = {{"version", zp_version()}, {NULL, NULL}};
    zp__prom_family(p, "zpipe_run_info", "gauge",
                    "Always 1; the zpipe version in a label.");
    zp__prom_uint(p, "zpipe_run_info", version, 1);
    zp__prom_family(p, "zpipe_run_up", "gauge",
                    "1 while the run goes, 0 once it is over.");
    zp__prom_uint(p, "zpipe_run_up", NULL, up);
    stage_counts(p, st, n);
    stage_times(p, st, n);
    worker_rows(p, st, n, w, nw);
}

static uint64_t load(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

void zp__metrics_worker_page(zp__prom *p, const zp__serve_stats *s)
{
    zp__prom_family(p, "zpipe_worker_batches_total", "counter",
                    "Batches this worker finished.");
    zp__prom_uint(p, "zpipe_worker_batches_total", NULL, load(&s->batches));
    zp__prom_family(p, "zpipe_worker_items_total", "counter",
                    "Items this worker ran.");
    zp__prom_uint(p, "zpipe_worker_items_total", NULL, load(&s->items));
    zp__prom_family(p, "zpipe_worker_busy_seconds_total", "counter",
                    "Time spent running batches, all threads together.");
    zp__prom_seconds(p, "zpipe_worker_busy_seconds_total", NULL,
                     load(&s->busy_ns));
    zp__prom_family(p, "zpipe_worker_reconnects_total", "counter",
                    "Links to a coordinator made after the first one.");
    zp__prom_uint(p, "zpipe_worker_reconnects_total", NULL,
                  load(&s->reconnects));
    zp__prom_family(p, "zpipe_worker_coordinator_connected", "gauge",
                    "1 while the worker is linked to a coordinator.");
    zp__prom_uint(p, "zpipe_worker_coordinator_connected", NULL,
                  atomic_load(&s->connected));
}

/* ---- A run's endpoint ---------------------------------------------------- */

struct zp__run_metrics {
    zp__metrics *server;         /* owned */
    zp_run *run;                 /* borrowed */
    zp__tally *const *tallies;   /* borrowed, n; NULL for stages of
                                    no workers of their own */
    size_t n;                    /* stages */
    int linger_ms;               /* zp_run_opts.metrics_linger_ms */
    pthread_mutex_t lock;        /* guards final and n */
    const zp_stage_stats *final; /* borrowed, once the run is over */
    zp_stage_stats *st;          /* owned, n: a page's figures */
    zp__tally_row *rows;         /* owned, ZP__METRICS_MAX_WORKERS */
    zp__metrics_worker *w;       /* owned, ZP__METRICS_MAX_WORKERS */
};

/* Gathers the workers of every dispatched stage; returns how many. */
static size_t gather_workers(zp__run_metrics *m)
{
    size_t nw = 0;
    uint64_t now = zp__now_ns();
    for (size_t k = 0; k < m->n && nw < ZP__METRICS_MAX_WORKERS; k++) {
        if (m->tallies[k] == NULL)
            continue;
        size_t got = zp__tally_read(m->tallies[k], now, m->rows,
                                    ZP__METRICS_MAX_WORKERS - nw);
        for (size_t i = 0; i < got; i++, nw++)
            m->w[nw] = (zp__metrics_worker){k, m->rows[i]};
    }
    return nw;
}

static bool render_run(void *arg, zp__prom *p)
{
    zp__run_metrics *m = arg;
    pthread_mutex_lock(&m->lock);
    bool over = m->final != NULL;
    for (size_t i = 0; i < m->n; i++)
        if (over)
            m->st[i] = m->final[i];
        else if (zp_run_stats(m->run, i, &m->st[i]) != 0)
            memset(&m->st[i], 0, sizeof m->st[i]);
    size_t nw = gather_workers(m);
    zp__metrics_run_page(p, m->st, m->n, m->w, nw, !over);
    pthread_mutex_unlock(&m->lock);
    return over;
}

static void run_metrics_free(zp__run_metrics *m)
{
    zp__metrics_destroy(&m->server);
    pthread_mutex_destroy(&m->lock);
    free(m->st);
    free(m->rows);
    free(m->w);
    free(m);
}

int zp__run_metrics_start(zp__run_metrics **mp, zp_run *r,
                          zp__tally *const *tallies, size_t n,
                          const zp_run_opts *o, char **why)
{
    const char *addr =
        o && o->metrics_listen ? o->metrics_listen : getenv("ZPIPE_METRICS");
    *mp = NULL;
    if (addr == NULL || addr[0] == '\0')
        return 0;
    zp__run_metrics *m = zp__calloc(1, sizeof *m);
    if (m == NULL)
        return ZP_ENOMEM;
    *m = (zp__run_metrics){.run = r, .tallies = tallies, .n = n};
    m->linger_ms = o ? o->metrics_linger_ms : 0;
    pthread_mutex_init(&m->lock, NULL);
    m->st = zp__calloc(n, sizeof *m->st);
    m->rows = zp__calloc(ZP__METRICS_MAX_WORKERS, sizeof *m->rows);
    m->w = zp__calloc(ZP__METRICS_MAX_WORKERS, sizeof *m->w);
    if (m->st == NULL || m->rows == NULL || m->w == NULL) {
        run_metrics_free(m);
        return ZP_ENOMEM;
    }
    m->server = zp__metrics_new(addr, render_run, m, why);
    if (m->server == NULL) {
        run_metrics_free(m);
        return ZP_EINVAL;
    }
    fprintf(stderr, "zpipe: metrics at http://%s/metrics\n",
            zp__metrics_where(m->server));
    *mp = m;
    return 0;
}

void zp__run_metrics_stop(zp__run_metrics **mp, const zp_stage_stats *final,
                          size_t n)
{
    zp__run_metrics *m = mp ? *mp : NULL;
    if (m == NULL)
        return;
    *mp = NULL;
    pthread_mutex_lock(&m->lock);
    m->final = final;
    m->n = n < m->n ? n : m->n;
    pthread_mutex_unlock(&m->lock);
    if (m->linger_ms > 0)
        zp__metrics_wait(m->server, m->linger_ms);
    run_metrics_free(m);
}

/* ---- A worker's endpoint ------------------------------------------------- */

static bool render_worker(void *arg, zp__prom *p)
{
    zp__metrics_worker_page(p, arg);
    return false;
}

zp__metrics *zp__worker_metrics_new(const char *addr, zp__serve_stats *s,
                                    char **why)
{
    return zp__metrics_new(addr, render_worker, s, why);
}
