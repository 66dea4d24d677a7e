/* SPDX-License-Identifier: MIT */
/*
 * Many concurrent downloads, the seeds' "download all sites" example in C:
 * the same N pages are fetched once by a sync task on thread workers, with
 * blocking sockets, and once by an async task on libuv, with
 * uv_tcp_connect/uv_write/uv_read_start on the stage's loop.
 *
 * The "sites" are served by a small TCP server that the example starts on
 * 127.0.0.1 (a port the OS picks) on a libuv loop in a thread of its own.
 * Each connection sends one request line, "GET <page>\n"; the server thinks
 * for 50 ms on a timer, so that it serves any number of connections at once,
 * answers with a page of PAGE_BYTES bytes and closes the connection.
 *
 * How many at once. A thread worker blocks for the whole 50 ms round trip,
 * so thread workers fetch at most `workers` pages per 50 ms; 20 of them, as
 * in the seeds, already cost 20 kernel threads and their stacks. An async
 * call in flight costs one socket and a few KiB on the loop, so the async
 * stage has every page in flight at once (.workers = N), only capped when
 * the open-file limit would not hold two sockets per page (ours and the
 * server's): it then fetches in waves.
 *
 * Usage: async_fetch [PAGES]   (default 200)
 * Exit status: 0 when both runs fetched every page, 1 when a run failed.
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <zpipe.h>

#define PAGE_BYTES 4096 /* every page's size                           */
#define THINK_MS 50     /* the server's wait before it answers          */
#define THREAD_WORKERS 20
#define SPARE_FILES 256 /* files kept for zpipe's own sockets and stdio */
#define MAX_PAGES 1000000

/* ---- The server ---------------------------------------------------------- */

/* The page server: owned by main(); its loop is owned by its thread from
 * server_new() until server_destroy() joined it. */
typedef struct server {
    uv_loop_t loop;
    uv_tcp_t listener; /* data: the server */
    uv_async_t stop;   /* data: the server; wakes the loop to stop */
    uv_thread_t thread;
    struct sockaddr_in addr; /* where it listens */
} server;

/* One connection, freed when both its handles are closed. */
typedef struct conn {
    uv_tcp_t tcp;     /* data: the conn */
    uv_timer_t timer; /* data: the conn; the server's think time */
    uv_write_t write;
    int open; /* handles not closed yet */
    size_t req_len;
    char req[32]; /* the request line, "GET <page>\n" */
    char page[PAGE_BYTES];
} conn;

static void conn_handle_closed(uv_handle_t *h)
{
    conn *c = h->data;
    if (--c->open == 0)
        free(c);
}

/* Closes both handles of `c`; the last close callback frees it. */
static void conn_close(conn *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, conn_handle_closed);
    if (c->open == 2 && !uv_is_closing((uv_handle_t *)&c->timer))
        uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
}

static void on_page_written(uv_write_t *req, int status)
{
    (void)status; /* done either way: the client sees the page or not */
    conn_close(req->handle->data);
}

/* The think time is over: the page, its first line naming it. */
static void on_think_done(uv_timer_t *t)
{
    conn *c = t->data;
    long long page = strtoll(c->req + 4, NULL, 10);
    int head = snprintf(c->page, sizeof c->page, "page %lld\n", page);
    memset(c->page + head, '.', sizeof c->page - (size_t)head - 1);
    c->page[sizeof c->page - 1] = '\n';
    uv_buf_t buf = uv_buf_init(c->page, sizeof c->page);
    int rc =
        uv_write(&c->write, (uv_stream_t *)&c->tcp, &buf, 1, on_page_written);
    if (rc != 0)
        conn_close(c);
}

static void alloc_request(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    conn *c = h->data;
    (void)hint;
    *buf = uv_buf_init(c->req + c->req_len,
                       (unsigned)(sizeof c->req - 1 - c->req_len));
}

static void on_request(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    (void)buf;
    if (nread < 0) { /* the client left before a whole request */
        conn_close(c);
        return;
    }
    c->req_len += (size_t)nread;
    c->req[c->req_len] = '\0';
    if (strchr(c->req, '\n') != NULL && strncmp(c->req, "GET ", 4) == 0) {
        uv_read_stop(s);
        if (uv_timer_start(&c->timer, on_think_done, THINK_MS, 0) != 0)
            conn_close(c);
    } else if (strchr(c->req, '\n') != NULL ||
               c->req_len == sizeof c->req - 1) {
        conn_close(c); /* not a request we know */
    }
}

/* Accepts one connection into a new conn. Returns 0, or a libuv error with
 * *taken false when the connection is still waiting in the backlog. */
static int conn_accept(uv_stream_t *listener, bool *taken)
{
    conn *c = calloc(1, sizeof *c);
    int rc = c == NULL ? UV_ENOMEM : uv_tcp_init(listener->loop, &c->tcp);
    *taken = false;
    if (rc != 0) {
        free(c);
        return rc;
    }
    c->tcp.data = c;
    c->open = 1;
    if ((rc = uv_timer_init(listener->loop, &c->timer)) == 0) {
        c->timer.data = c;
        c->open = 2;
        rc = uv_accept(listener, (uv_stream_t *)&c->tcp);
        *taken = true;
    }
    if (rc == 0)
        rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_request, on_request);
    if (rc != 0)
        conn_close(c);
    return rc;
}

static void on_connection(uv_stream_t *listener, int status)
{
    bool taken = true;
    int rc = status < 0 ? status : conn_accept(listener, &taken);
    if (rc == 0)
        return;
    fprintf(stderr, "async_fetch: server: accept: %s\n", uv_strerror(rc));
    /* A connection left in the backlog would stall the listener: close
     * it, so that clients are refused and their calls fail clearly. */
    if (!taken && !uv_is_closing((uv_handle_t *)listener))
        uv_close((uv_handle_t *)listener, NULL);
}

/* uv_walk: closes a handle, with the close callback its owner needs. */
static void close_handle(uv_handle_t *h, void *srv)
{
    if (uv_is_closing(h))
        return;
    uv_close(h, h->data == srv ? NULL : conn_handle_closed);
}

/* Closes every handle of the server's loop, runs their close callbacks
 * and closes the loop. */
static void server_close_loop(server *s)
{
    uv_walk(&s->loop, close_handle, s);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&s->loop);
    if (rc != 0)
        fprintf(stderr, "async_fetch: server: closing its loop: %s\n",
                uv_strerror(rc));
}

static void on_stop(uv_async_t *a)
{
    uv_stop(a->loop);
}

/* The server's thread: serves until server_destroy() stops it. */
static void serve(void *arg)
{
    server *s = arg;
    uv_run(&s->loop, UV_RUN_DEFAULT);
    server_close_loop(s);
}

/* Binds 127.0.0.1 on a port the OS picks and listens, into s->addr. */
static int server_listen(server *s)
{
    struct sockaddr_in any;
    int len = sizeof s->addr;
    int rc = uv_ip4_addr("127.0.0.1", 0, &any);
    if (rc == 0)
        rc = uv_tcp_bind(&s->listener, (const struct sockaddr *)&any, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, SOMAXCONN, on_connection);
    if (rc == 0)
        rc =
            uv_tcp_getsockname(&s->listener, (struct sockaddr *)&s->addr, &len);
    return rc;
}

/*
 * Starts the page server in a thread of its own. Returns 0 with the server
 * in *out (the caller owns it: server_destroy()), or a libuv error code.
 * Returns once the server listens: its address is s->addr at once.
 */
static int server_new(server **out)
{
    server *s = calloc(1, sizeof *s);
    int rc = s == NULL ? UV_ENOMEM : uv_loop_init(&s->loop);
    if (rc != 0)
        goto out_free;
    if ((rc = uv_async_init(&s->loop, &s->stop, on_stop)) != 0)
        goto out_close_loop;
    s->stop.data = s;
    if ((rc = uv_tcp_init(&s->loop, &s->listener)) != 0)
        goto out_close_loop;
    s->listener.data = s;
    if ((rc = server_listen(s)) != 0)
        goto out_close_loop;
    if ((rc = uv_thread_create(&s->thread, serve, s)) != 0)
        goto out_close_loop;
    *out = s;
    return 0;
out_close_loop:
    server_close_loop(s);
out_free:
    free(s);
    return rc;
}

/* Stops the server, joins its thread and frees it; *sp becomes NULL.
 * NULL-safe and idempotent. */
static void server_destroy(server **sp)
{
    server *s = sp != NULL ? *sp : NULL;
    if (s == NULL)
        return;
    uv_async_send(&s->stop);
    uv_thread_join(&s->thread);
    free(s);
    *sp = NULL;
}

/* ---- The tasks ----------------------------------------------------------- */

/* [n] -> 0, 1, ..., n-1: the page numbers. */
ZP_TASK(page_numbers)
{
    int64_t n = zp_input(call)->via.array.ptr[0].via.i64;
    for (int64_t i = 0; i < n; i++) {
        int rc = zp_emit_int(call, i);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* This call's page number into *page; false when the item is not one. */
static bool page_of(zp_call *call, int64_t *page)
{
    const msgpack_object *in = zp_input(call);
    if (in->type != MSGPACK_OBJECT_POSITIVE_INTEGER || in->via.u64 > INT_MAX)
        return false;
    *page = in->via.i64;
    return true;
}

/* The request line for `page` into buf. Returns its length. */
static size_t request_line(char *buf, size_t cap, int64_t page)
{
    return (size_t)snprintf(buf, cap, "GET %lld\n", (long long)page);
}

/* Sends the request for `page` on the socket `fd` and reads the answer to
 * its end, counting its bytes into *got. Returns 0, or an errno value with
 * *what naming the step that failed. Blocks. */
static int get_page(int fd, const struct sockaddr_in *addr, int64_t page,
                    size_t *got, const char **what)
{
    char buf[PAGE_BYTES];
    size_t len = request_line(buf, sizeof buf, page), off = 0;
    *what = "connect";
    if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0)
        return errno;
    *what = "write";
    while (off < len) {
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno != EINTR)
            return errno;
        off += n > 0 ? (size_t)n : 0;
    }
    *what = "read";
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return errno;
        *got += n > 0 ? (size_t)n : 0;
    }
}

/* Fetches one page with blocking sockets; emits its size in bytes. The
 * address of the server is the task's .user. */
ZP_TASK(fetch_blocking)
{
    char why[128];
    const char *what = "socket";
    size_t got = 0;
    int64_t page;
    if (!page_of(call, &page))
        return zp_fail(call, "expected a page number");
    int err = 0, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err = errno;
    } else {
        err = get_page(fd, zp_user(call), page, &got, &what);
        close(fd);
    }
    if (err != 0)
        return zp_fail(
            call, "page %lld: %s: %s", (long long)page, what,
            uv_strerror_r(uv_translate_sys_error(err), why, sizeof why));
    if (got != PAGE_BYTES)
        return zp_fail(call, "page %lld: %zu bytes instead of %d",
                       (long long)page, got, PAGE_BYTES);
    return zp_emit_uint(call, got);
}

/* One async fetch: freed in the close callback of its connection. */
typedef struct fetch {
    uv_tcp_t tcp; /* data: the fetch */
    uv_connect_t connect;
    uv_write_t write;
    zp_call *call; /* NULL once the call has ended */
    int64_t page;
    size_t got; /* bytes of the page read so far */
    char req[32];
    char buf[PAGE_BYTES];
} fetch;

static void fetch_closed(uv_handle_t *h)
{
    free(h->data);
}

/*
 * Ends the call, unless it has ended already: err 0 emits the page's size
 * and calls zp_done(), a libuv error fails it with `what` for context. Then
 * closes the connection, whose close callback frees f. Requests still
 * pending on it come back with UV_ECANCELED first, and find the call ended.
 */
static void fetch_end(fetch *f, int err, const char *what)
{
    char why[128];
    if (f->call != NULL && err == 0) {
        (void)zp_emit_uint(f->call, f->got); /* nonzero: the run stops */
        zp_done(f->call);
    } else if (f->call != NULL) {
        zp_fail(f->call, "page %lld: %s: %s", (long long)f->page, what,
                uv_strerror_r(err, why, sizeof why));
    }
    f->call = NULL;
    if (!uv_is_closing((uv_handle_t *)&f->tcp))
        uv_close((uv_handle_t *)&f->tcp, fetch_closed);
}

static void alloc_page(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    fetch *f = h->data;
    (void)hint;
    *buf = uv_buf_init(f->buf, sizeof f->buf);
}

static void on_page(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    fetch *f = s->data;
    char what[64];
    (void)buf;
    if (nread > 0)
        f->got += (size_t)nread;
    if (f->got > PAGE_BYTES) {
        snprintf(what, sizeof what, "more than %d bytes", PAGE_BYTES);
        fetch_end(f, UV_EPROTO, what);
    } else if (nread == UV_EOF && f->got < PAGE_BYTES) {
        snprintf(what, sizeof what, "closed after %zu of %d bytes", f->got,
                 PAGE_BYTES);
        fetch_end(f, UV_EOF, what);
    } else if (nread < 0) {
        fetch_end(f, nread == UV_EOF ? 0 : (int)nread, "read");
    }
}

static void on_request_sent(uv_write_t *req, int status)
{
    if (status < 0)
        fetch_end(req->handle->data, status, "write");
}

static void on_connected(uv_connect_t *req, int status)
{
    fetch *f = req->handle->data;
    uv_buf_t buf;
    if (status < 0) {
        fetch_end(f, status, "connect");
        return;
    }
    buf = uv_buf_init(f->req,
                      (unsigned)request_line(f->req, sizeof f->req, f->page));
    int rc = uv_write(&f->write, req->handle, &buf, 1, on_request_sent);
    if (rc == 0)
        rc = uv_read_start(req->handle, alloc_page, on_page);
    if (rc != 0)
        fetch_end(f, rc, "request");
}

/* Fetches one page on `loop`; emits its size in bytes. The address of the
 * server is the task's .user. */
ZP_ASYNC_TASK(fetch_async)
{
    int64_t page;
    if (!page_of(call, &page)) {
        zp_fail(call, "expected a page number");
        return;
    }
    fetch *f = calloc(1, sizeof *f);
    if (f == NULL) {
        zp_fail(call, "page %lld: out of memory", (long long)page);
        return;
    }
    int rc = uv_tcp_init(loop, &f->tcp);
    if (rc != 0) {
        zp_fail(call, "page %lld: %s", (long long)page, uv_strerror(rc));
        free(f);
        return;
    }
    f->tcp.data = f;
    f->call = call;
    f->page = page;
    rc = uv_tcp_connect(&f->connect, &f->tcp, zp_user(call), on_connected);
    if (rc != 0)
        fetch_end(f, rc, "connect");
}

/* Join: the whole stream of page sizes -> [pages, bytes]. */
ZP_TASK(total_bytes)
{
    const msgpack_object *item;
    uint64_t pages = 0, bytes = 0;
    while (zp_next(call, &item)) {
        pages++;
        bytes += item->via.u64;
    }
    msgpack_packer *pk = zp_out(call);
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, pages);
    msgpack_pack_uint64(pk, bytes);
    return zp_emit(call);
}

/* ---- Main ---------------------------------------------------------------- */

/*
 * Runs `p` on `pages` pages and prints what it fetched, how long it took
 * and the fetch stage's peak in-flight count. Takes ownership of p.
 * Returns 0, or 1 when the run failed or missed pages.
 */
static int fetch_all(zp_pipeline *p, const char *label, int pages)
{
    char args[32];
    const msgpack_object *out;
    uint64_t got[2] = {0, 0};
    zp_stage_stats st = {0};
    snprintf(args, sizeof args, "[%d]", pages);
    uint64_t t0 = uv_hrtime();
    zp_run *r = zp_start(p, args);
    if (zp_run_next(r, &out) && out->type == MSGPACK_OBJECT_ARRAY &&
        out->via.array.size == 2) {
        got[0] = out->via.array.ptr[0].via.u64;
        got[1] = out->via.array.ptr[1].via.u64;
    }
    int rc = zp_finish(r);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    if (rc == 0)
        rc = zp_run_stats(r, 1, &st);
    bool ok =
        rc == 0 && got[0] == (uint64_t)pages && got[1] == got[0] * PAGE_BYTES;
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", label,
                zp_error(r) != NULL ? zp_error(r) : zp_strerror(rc));
    else if (!ok)
        fprintf(stderr, "%s: %llu pages, %llu bytes instead of %d pages\n",
                label, (unsigned long long)got[0], (unsigned long long)got[1],
                pages);
    else
        printf("%s: %llu pages, %llu bytes in %.2f s, peak in flight %llu\n",
               label, (unsigned long long)got[0], (unsigned long long)got[1],
               secs, (unsigned long long)st.peak_in_flight);
    zp_run_free(r);
    zp_pipeline_free(p);
    return ok ? 0 : 1;
}

/*
 * How many async fetches may be in flight: every page, when the open-file
 * limit (raised to its hard limit if need be) holds two sockets per page
 * and zpipe's own files; fewer otherwise.
 */
static int async_workers(int pages)
{
    struct rlimit lim;
    rlim_t want = (rlim_t)pages * 2 + SPARE_FILES;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
        return pages < 100 ? pages : 100;
    if (lim.rlim_cur < want && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = want < lim.rlim_max ? want : lim.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
            (void)getrlimit(RLIMIT_NOFILE, &lim);
    }
    if (lim.rlim_cur >= want)
        return pages;
    if (lim.rlim_cur <= SPARE_FILES + 2)
        return 1;
    return (int)((lim.rlim_cur - SPARE_FILES) / 2);
}

int main(int argc, char **argv)
{
    zp_init(&argc, &argv);
    char label[64], *end = NULL;
    long pages = argc > 1 ? strtol(argv[1], &end, 10) : 200;
    if (argc > 2 || (end != NULL && *end != '\0') || pages < 1 ||
        pages > MAX_PAGES) {
        fprintf(stderr, "usage: async_fetch [PAGES (1..%d)]\n", MAX_PAGES);
        return 1;
    }
    /* A peer that closed early must give EPIPE, not end the program. */
    signal(SIGPIPE, SIG_IGN);
    server *srv = NULL;
    int rc = server_new(&srv);
    if (rc != 0) {
        fprintf(stderr, "async_fetch: cannot start the server: %s\n",
                uv_strerror(rc));
        return 1;
    }
    snprintf(label, sizeof label, "threads (%d workers)", THREAD_WORKERS);
    int failed =
        fetch_all(zp_pipe(zp_task(page_numbers, .branch = true),
                          zp_task(fetch_blocking, .workers = THREAD_WORKERS,
                                  .user = &srv->addr),
                          zp_task(total_bytes, .join = true)),
                  label, (int)pages);
    int inflight = async_workers((int)pages);
    snprintf(label, sizeof label, "async (%d in flight)", inflight);
    failed |= fetch_all(zp_pipe(zp_task(page_numbers, .branch = true),
                                zp_async_task(fetch_async, .workers = inflight,
                                              .user = &srv->addr),
                                zp_task(total_bytes, .join = true)),
                        label, (int)pages);
    server_destroy(&srv);
    return failed;
}
