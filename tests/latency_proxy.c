/* SPDX-License-Identifier: MIT */
/*
 * latency_proxy: a TCP proxy that delays every byte by D milliseconds in
 * each direction, so that benchmarks and tests can put a real network's
 * round trip between a coordinator and its remote workers on one host
 * (this kernel has no netem). One libuv loop; each chunk read is written
 * on once its time has come, in order.
 *
 *   latency_proxy LISTEN_PORT TARGET_PORT DELAY_MS
 *
 * Listens on 127.0.0.1:LISTEN_PORT (0: a free port) and connects each
 * client to 127.0.0.1:TARGET_PORT. Prints "port N" on stdout once it
 * listens, then runs until killed. Not part of the library.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct chunk {
    struct chunk *next;
    uint64_t due; /* loop time (ms) when it may go */
    uv_buf_t buf;
    uv_write_t req;
} chunk;

typedef struct pair pair;

/* One direction: bytes read from `from` wait, then go to `to`. */
typedef struct way {
    pair *p;
    uv_tcp_t *from, *to;
    uv_timer_t timer;
    chunk *head, *tail;
} way;

struct pair {
    uv_tcp_t client, server;
    uv_connect_t connect;
    way up, down; /* client -> server, server -> client */
    int closing;  /* handles being closed */
};

static uint64_t delay_ms;
static struct sockaddr_in target;

/* Every handle's data is its way. */
static void on_closed(uv_handle_t *h)
{
    pair *p = ((way *)h->data)->p;
    if (--p->closing > 0)
        return;
    for (int i = 0; i < 2; i++) {
        way *w = i ? &p->down : &p->up;
        while (w->head != NULL) {
            chunk *c = w->head;
            w->head = c->next;
            free(c->buf.base);
            free(c);
        }
    }
    free(p);
}

static void close_pair(pair *p)
{
    if (p->closing > 0)
        return;
    uv_handle_t *hs[] = {(uv_handle_t *)&p->client, (uv_handle_t *)&p->server,
                         (uv_handle_t *)&p->up.timer,
                         (uv_handle_t *)&p->down.timer};
    for (size_t i = 0; i < 4; i++) {
        p->closing++;
        uv_close(hs[i], on_closed);
    }
}

static void on_written(uv_write_t *req, int status)
{
    chunk *c = req->data;
    free(c->buf.base);
    free(c);
    (void)status; /* a failed write shows as a read error soon */
}

/* Writes every chunk whose time has come; waits for the next. */
static void on_due(uv_timer_t *t)
{
    way *w = t->data;
    uint64_t now = uv_now(t->loop);
    while (w->head != NULL && w->head->due <= now) {
        chunk *c = w->head;
        if ((w->head = c->next) == NULL)
            w->tail = NULL;
        c->req.data = c;
        if (uv_write(&c->req, (uv_stream_t *)w->to, &c->buf, 1, on_written) !=
            0) {
            free(c->buf.base);
            free(c);
            close_pair(w->p);
            return;
        }
    }
    if (w->head != NULL)
        uv_timer_start(t, on_due, w->head->due - now, 0);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    buf->base = malloc(hint);
    buf->len = buf->base ? hint : 0;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    way *w = s->data;
    if (n <= 0) {
        free(buf->base);
        if (n < 0)
            close_pair(w->p);
        return;
    }
    chunk *c = calloc(1, sizeof *c);
    if (c == NULL) {
        free(buf->base);
        close_pair(w->p);
        return;
    }
    c->due = uv_now(s->loop) + delay_ms;
    c->buf = uv_buf_init(buf->base, (unsigned)n);
    if (w->tail != NULL)
        w->tail->next = c;
    else
        w->head = c;
    w->tail = c;
    if (!uv_is_active((uv_handle_t *)&w->timer))
        uv_timer_start(&w->timer, on_due, delay_ms, 0);
}

static void way_init(uv_loop_t *loop, pair *p, way *w, uv_tcp_t *from,
                     uv_tcp_t *to)
{
    w->p = p;
    w->from = from;
    w->to = to;
    uv_timer_init(loop, &w->timer);
    w->timer.data = w;
    from->data = w;
}

static void on_connected(uv_connect_t *req, int status)
{
    pair *p = req->data;
    if (status != 0) {
        close_pair(p);
        return;
    }
    uv_read_start((uv_stream_t *)&p->client, on_alloc, on_read);
    uv_read_start((uv_stream_t *)&p->server, on_alloc, on_read);
}

static void on_connection(uv_stream_t *listener, int status)
{
    if (status != 0)
        return;
    uv_loop_t *loop = listener->loop;
    pair *p = calloc(1, sizeof *p);
    if (p == NULL)
        return;
    uv_tcp_init(loop, &p->client);
    uv_tcp_init(loop, &p->server);
    way_init(loop, p, &p->up, &p->client, &p->server);
    way_init(loop, p, &p->down, &p->server, &p->client);
    if (uv_accept(listener, (uv_stream_t *)&p->client) != 0) {
        close_pair(p);
        return;
    }
    uv_tcp_nodelay(&p->client, 1);
    uv_tcp_nodelay(&p->server, 1);
    p->connect.data = p;
    if (uv_tcp_connect(&p->connect, &p->server,
                       (const struct sockaddr *)&target, on_connected) != 0)
        close_pair(p);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s LISTEN_PORT TARGET_PORT DELAY_MS\n",
                argv[0]);
        return 2;
    }
    uv_loop_t *loop = uv_default_loop();
    struct sockaddr_in addr;
    uv_tcp_t listener;
    delay_ms = strtoull(argv[3], NULL, 10);
    uv_ip4_addr("127.0.0.1", atoi(argv[2]), &target);
    uv_ip4_addr("127.0.0.1", atoi(argv[1]), &addr);
    uv_tcp_init(loop, &listener);
    int rc = uv_tcp_bind(&listener, (const struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&listener, 128, on_connection);
    if (rc != 0) {
        fprintf(stderr, "latency_proxy: cannot listen: %s\n", uv_strerror(rc));
        return 1;
    }
    struct sockaddr_in bound;
    int len = sizeof bound;
    uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &len);
    printf("port %d\n", ntohs(bound.sin_port));
    fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}
