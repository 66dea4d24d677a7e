/* SPDX-License-Identifier: MIT */
/*
 * Tests of the metrics of a run: the histograms of core/hist.c, the text
 * format writer (coordinator/prom.c: escaping, cumulative buckets), the
 * per-worker tallies (core/tally.c), the pages of a run and of a
 * worker, and the endpoint itself (coordinator/http.c, metrics.c,
 * worker_metrics.c) over real
 * sockets on 127.0.0.1: GET /metrics, 404 and 405, bad addresses and
 * ports in use, a run's live and final figures, the linger, nested runs,
 * $ZPIPE_METRICS, slow clients (a scrape gets in past 100 of them; a
 * request never finished is cut at its deadline; the run's and the
 * worker's pages share the one server, so its own tests cover both). The
 * process stage's workers are this program again (zp_init is main's first
 * line).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/http.h"
#include "tests/testutil.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "coordinator/http.h"
#include "coordinator/metrics.h"
#include "coordinator/prom.h"
#include "coordinator/worker_metrics.h"
#include "core/clock.h"
#include "core/tally.h"
#include "core/hist.h"

#define DEADLINE_MS 30000
#define S 1000000000ull

/* ---- Tasks --------------------------------------------------------------- */

/* Takes 2 ms per item. */
ZP_TASK(nap2ms)
{
    nap_us(2000);
    return zp_emit_obj(call, zp_input(call));
}

ZP_TASK(add_one)
{
    return zp_emit_int(call, zp_input(call)->via.i64 + 1);
}

static void timer_closed(uv_handle_t *h)
{
    free(h);
}

static void timer_fired(uv_timer_t *t)
{
    zp_call *call = t->data;
    zp_emit_obj(call, zp_input(call));
    zp_done(call);
    uv_close((uv_handle_t *)t, timer_closed);
}

/* Passes its item on 5 ms later. */
ZP_ASYNC_TASK(later)
{
    uv_timer_t *t = malloc(sizeof *t);
    if (t == NULL) {
        zp_fail(call, "out of memory");
        return;
    }
    uv_timer_init(loop, t);
    t->data = call;
    uv_timer_start(t, timer_fired, 5, 0);
}

/* ---- Helpers ------------------------------------------------------------- */

/* The value of the sample `series` (name and labels as written) in a page;
 * fails the test when the page has none. */
static double sample(const char *page, const char *series)
{
    size_t n = strlen(series);
    for (const char *l = page; l != NULL && *l; l = strchr(l, '\n')) {
        l += *l == '\n';
        if (strncmp(l, series, n) == 0 && l[n] == ' ')
            return strtod(l + n + 1, NULL);
    }
    fail_msg("no sample %s in:\n%s", series, page);
    return -1;
}

static void assert_contains(const char *text, const char *part)
{
    if (text == NULL || strstr(text, part) == NULL)
        fail_msg("'%s' does not contain '%s'", text ? text : "(null)", part);
}

/* The page a render writes, as one string (malloc'ed). */
static char *page_of(zp__prom *p)
{
    size_t len;
    char *text = zp__prom_take(p, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    return text;
}

/* Starts a run of p with the options `o` (metrics on 127.0.0.1, a free
 * port, unless o->metrics_listen says otherwise; NULL leaves the choice
 * to $ZPIPE_METRICS); the endpoint's "ADDRESS:PORT" goes to `where`. */
static zp_run *start_with_metrics(zp_pipeline *p, const char *args,
                                  zp_run_opts *o, char *where, size_t len)
{
    char tmpl[] = "/tmp/zp-metrics-err-XXXXXX";
    int fd = mkstemp(tmpl), saved = dup(STDERR_FILENO);
    assert_true(fd >= 0 && saved >= 0);
    unlink(tmpl);
    fflush(stderr);
    dup2(fd, STDERR_FILENO);
    zp_run *run = zp_start_with(p, args, o);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char text[512] = "";
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    const char *at = strstr(text, "http://");
    if (at == NULL)
        fail_msg("no address said on stderr: '%s' (%s)", text, zp_error(run));
    at += strlen("http://");
    snprintf(where, len, "%.*s", (int)strcspn(at, "/"), at);
    return run;
}

/* GET /metrics from `where`, which must answer 200; the body (malloc'ed). */
static char *scrape(const char *where)
{
    http_reply r;
    if (http_call(where, "GET", "/metrics", NULL, &r) != 200)
        fail_msg("GET http://%s/metrics: %d %s", where, r.status,
                 r.text ? r.text : "");
    char *body = strdup(r.body);
    http_reply_free(&r);
    return body;
}

/* Scrapes until `series` reaches at least `min`; returns the last page. */
static char *scrape_until(const char *where, const char *series, double min)
{
    for (int waited = 0;; waited += 10) {
        char *page = scrape(where);
        if (strstr(page, series) && sample(page, series) >= min)
            return page;
        if (waited > DEADLINE_MS)
            fail_msg("%s stayed under %g:\n%s", series, min, page);
        free(page);
        nap_us(10000);
    }
}

/* Scrapes until the page shows the run is over; returns that page. */
static char *final_page(const char *where)
{
    for (int waited = 0;; waited += 10) {
        char *page = scrape(where);
        if (sample(page, "zpipe_run_up") == 0)
            return page;
        free(page);
        if (waited > DEADLINE_MS)
            fail_msg("the run at %s never ended", where);
        nap_us(10000);
    }
}

/* ---- Histograms ---------------------------------------------------------- */

static void test_a_bucket_holds_durations_up_to_its_bound(void **state)
{
    (void)state;
    assert_int_equal(zp__hist_bucket(0), 0);
    assert_int_equal(zp__hist_bucket(10000), 0); /* 10 us: le="1e-05" */
    assert_int_equal(zp__hist_bucket(10001), 1);
    assert_int_equal(zp__hist_bucket(1000000), 2);
    assert_int_equal(zp__hist_bucket(60 * S), 7);
    assert_int_equal(zp__hist_bucket(60 * S + 1), 8);
    assert_int_equal(zp__hist_bucket(UINT64_MAX), 8);
    assert_int_equal(zp__hist_bound_ns(0), 10000);
    assert_int_equal(zp__hist_bound_ns(7), 60 * S);
    assert_true(zp__hist_bound_ns(8) == UINT64_MAX);
    zp__hist h = {0};
    uint64_t counts[ZP_HIST_BUCKETS] = {0}, sum = 0;
    zp__hist_record(&h, 50000, 16, 800001); /* a window of 16 items */
    zp__hist_record(&h, 2 * S, 1, 2 * S);
    zp__hist_add_to(&h, counts, &sum);
    zp__hist_add_to(&h, counts, &sum); /* adds, as for several workers */
    assert_int_equal(counts[1], 32);
    assert_int_equal(counts[6], 2);
    assert_int_equal(sum, 2 * (800001 + 2 * S));
}

/* ---- The text format ----------------------------------------------------- */

static void test_label_values_are_escaped_and_made_utf8(void **state)
{
    (void)state;
    zp__prom p;
    zp__prom_init(&p);
    const zp__prom_label l[] = {{"a", "back\\slash \"quoted\"\nnext"},
                                {"b", "caf\xc3\xa9 \xe2\x82\xac"},
                                {"c", "x\xffy\xc0\xafz"},
                                {"d", "\xed\xa0\x80|\xe2\x82"},
                                {NULL, NULL}};
    zp__prom_uint(&p, "m", l, 7);
    zp__prom_uint(&p, "bare", NULL, 0);
    char *text = page_of(&p);
    assert_string_equal(
        text,
        "m{a=\"back\\\\slash \\\"quoted\\\"\\nnext\","
        "b=\"caf\xc3\xa9 \xe2\x82\xac\","
        "c=\"x\xef\xbf\xbdy\xef\xbf\xbd\xef\xbf\xbdz\","
        "d=\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd|\xef\xbf\xbd\xef\xbf\xbd\""
        "} 7\nbare 0\n");
    free(text);
}

static void test_help_escapes_backslash_and_newline_not_quotes(void **state)
{
    (void)state;
    zp__prom p;
    zp__prom_init(&p);
    zp__prom_family(&p, "zpipe_x_total", "counter", "a \"b\"\\c\nd");
    char *text = page_of(&p);
    assert_string_equal(text, "# HELP zpipe_x_total a \"b\"\\\\c\\nd\n"
                              "# TYPE zpipe_x_total counter\n");
    free(text);
}

static void test_histogram_buckets_are_cumulative_to_inf(void **state)
{
    (void)state;
    zp__prom p;
    zp__prom_init(&p);
    const zp__prom_label l[] = {{"stage", "2"}, {NULL, NULL}};
    const uint64_t counts[ZP_HIST_BUCKETS] = {1, 2, 0, 0, 3, 0, 0, 0, 4};
    zp__prom_histogram(&p, "h", l, counts, 1500000000ull);
    zp__prom_seconds(&p, "s", NULL, 42);
    char *text = page_of(&p);
    assert_string_equal(text, "h_bucket{stage=\"2\",le=\"1e-05\"} 1\n"
                              "h_bucket{stage=\"2\",le=\"0.0001\"} 3\n"
                              "h_bucket{stage=\"2\",le=\"0.001\"} 3\n"
                              "h_bucket{stage=\"2\",le=\"0.01\"} 3\n"
                              "h_bucket{stage=\"2\",le=\"0.1\"} 6\n"
                              "h_bucket{stage=\"2\",le=\"1\"} 6\n"
                              "h_bucket{stage=\"2\",le=\"10\"} 6\n"
                              "h_bucket{stage=\"2\",le=\"60\"} 6\n"
                              "h_bucket{stage=\"2\",le=\"+Inf\"} 10\n"
                              "h_sum{stage=\"2\"} 1.500000000\n"
                              "h_count{stage=\"2\"} 10\n"
                              "s 0.000000042\n");
    free(text);
}

/* Every metric of a run's page, with a sample for stages 1 and 2. */
static const char *const stage_metrics[] = {
    "zpipe_stage_items_in_total",     "zpipe_stage_items_out_total",
    "zpipe_stage_failed_total",       "zpipe_stage_retried_total",
    "zpipe_stage_skipped_total",      "zpipe_stage_restarts_total",
    "zpipe_stage_busy_seconds_total", "zpipe_stage_in_flight",
    "zpipe_stage_workers_alive",      "zpipe_stage_queue_items",
    "zpipe_stage_item_seconds",
};

static void assert_every_stage_metric(const char *page, const char *const *task,
                                      size_t n)
{
    char series[256];
    for (size_t m = 0; m < sizeof stage_metrics / sizeof *stage_metrics; m++) {
        const char *name = stage_metrics[m];
        bool hist = strcmp(name, "zpipe_stage_item_seconds") == 0;
        snprintf(series, sizeof series, "# TYPE %s %s\n", name,
                 hist                     ? "histogram"
                 : strstr(name, "_total") ? "counter"
                                          : "gauge");
        assert_contains(page, series);
        snprintf(series, sizeof series, "# HELP %s ", name);
        assert_contains(page, series);
        for (size_t i = 0; i < n; i++) {
            snprintf(series, sizeof series, "%s%s{stage=\"%zu\",task=\"%s\"%s",
                     name, hist ? "_bucket" : "", i + 1, task[i],
                     hist ? ",le=\"+Inf\"}" : "}");
            (void)sample(page, series);
        }
    }
    assert_contains(page, "# TYPE zpipe_run_info gauge\n");
    assert_contains(page,
                    "zpipe_run_info{version=\"" ZP_VERSION_STRING "\"} 1\n");
    assert_contains(page, "# TYPE zpipe_run_up gauge\n");
}

static void test_a_run_page_has_every_metric_of_every_stage(void **state)
{
    (void)state;
    zp_stage_stats st[2] = {{.task = "range", .items_out = 9},
                            {.task = "we\"ird",
                             .items_in = 9,
                             .busy_ns = 1234567890,
                             .workers_alive = 3,
                             .item_hist = {[3] = 9},
                             .item_hist_ns = 45000000}};
    zp__metrics_worker w[] = {{1, {"host:42", 5}}};
    zp__prom p;
    zp__prom_init(&p);
    zp__metrics_run_page(&p, st, 2, w, 1, true);
    char *page = page_of(&p);
    const char *tasks[] = {"range", "we\\\"ird"};
    assert_every_stage_metric(page, tasks, 2);
    assert_true(sample(page, "zpipe_run_up") == 1);
    assert_true(sample(page, "zpipe_stage_items_out_total{stage=\"1\",task="
                             "\"range\"}") == 9);
    assert_true(sample(page, "zpipe_stage_busy_seconds_total{stage=\"2\","
                             "task=\"we\\\"ird\"}") == 1.23456789);
    assert_true(sample(page, "zpipe_stage_workers_alive{stage=\"2\",task="
                             "\"we\\\"ird\"}") == 3);
    assert_true(sample(page, "zpipe_stage_item_seconds_bucket{stage=\"2\","
                             "task=\"we\\\"ird\",le=\"0.001\"}") == 0);
    assert_true(sample(page, "zpipe_stage_item_seconds_bucket{stage=\"2\","
                             "task=\"we\\\"ird\",le=\"0.01\"}") == 9);
    assert_true(sample(page, "zpipe_worker_batches_total{stage=\"2\",task="
                             "\"we\\\"ird\",worker=\"host:42\"}") == 5);
    free(page);
}

static void test_a_worker_page_has_its_five_metrics(void **state)
{
    (void)state;
    zp__serve_stats s = {0};
    atomic_store(&s.batches, 3);
    atomic_store(&s.items, 300);
    atomic_store(&s.busy_ns, 2500000000ull);
    atomic_store(&s.reconnects, 1);
    atomic_store(&s.connected, true);
    zp__prom p;
    zp__prom_init(&p);
    zp__metrics_worker_page(&p, &s);
    char *page = page_of(&p);
    assert_true(sample(page, "zpipe_worker_batches_total") == 3);
    assert_true(sample(page, "zpipe_worker_items_total") == 300);
    assert_true(sample(page, "zpipe_worker_busy_seconds_total") == 2.5);
    assert_true(sample(page, "zpipe_worker_reconnects_total") == 1);
    assert_true(sample(page, "zpipe_worker_coordinator_connected") == 1);
    assert_contains(page, "# TYPE zpipe_worker_coordinator_connected gauge\n");
    assert_contains(page, "# TYPE zpipe_worker_reconnects_total counter\n");
    free(page);
}

/* ---- Tallies of workers -------------------------------------------------- */

static void test_a_tally_counts_by_name_and_forgets_leavers(void **state)
{
    (void)state;
    zp__tally *t = calloc(1, sizeof *t);
    zp__tally_row rows[4];
    assert_non_null(t);
    zp__tally_init(t);
    int a = zp__tally_join(t, "host:1", 6, 100);
    int b = zp__tally_join(t, "host:2", 6, 100);
    assert_true(a >= 0 && b >= 0 && a != b);
    zp__tally_count(t, a, 2);
    zp__tally_count(t, b, 1);
    zp__tally_leave(t, a, 1000);
    /* Back under the same name within the minute: the count goes on. */
    assert_int_equal(zp__tally_join(t, "host:1", 6, 2000), a);
    zp__tally_count(t, a, 1);
    assert_int_equal(zp__tally_read(t, 3000, rows, 4), 2);
    assert_string_equal(rows[0].name, "host:1");
    assert_int_equal(rows[0].count, 3);
    /* Gone for a minute: off the page, its slot for the next newcomer. */
    zp__tally_leave(t, a, 4000);
    assert_int_equal(zp__tally_read(t, 4000 + ZP__TALLY_KEEP_NS - 1, rows, 4),
                     2);
    assert_int_equal(zp__tally_read(t, 4000 + ZP__TALLY_KEEP_NS, rows, 4), 1);
    assert_string_equal(rows[0].name, "host:2");
    int c = zp__tally_join(t, "host:3", 6, 4000 + ZP__TALLY_KEEP_NS);
    assert_int_equal(c, a);
    assert_int_equal(zp__tally_read(t, 4000 + ZP__TALLY_KEEP_NS, rows, 4), 2);
    assert_int_equal(rows[0].count, 0);
    /* -1 is harmless; names are cut, and never empty. */
    zp__tally_count(t, -1, 1);
    zp__tally_leave(t, -1, 1);
    char longname[300];
    memset(longname, 'x', sizeof longname);
    int d = zp__tally_join(t, longname, sizeof longname, 5000);
    int e = zp__tally_join(t, "", 0, 5000);
    assert_int_equal(zp__tally_read(t, 5000, rows, 4), 4);
    assert_int_equal(strlen(rows[d].name), ZP__TALLY_NAME - 1);
    assert_string_equal(rows[e].name, "?");
    zp__tally_fini(t);
    free(t);
}

static void test_a_tally_holds_a_bounded_number_of_workers(void **state)
{
    (void)state;
    zp__tally *t = calloc(1, sizeof *t);
    char name[32];
    assert_non_null(t);
    zp__tally_init(t);
    for (int i = 0; i < ZP__TALLY_MAX; i++) {
        snprintf(name, sizeof name, "w%d", i);
        assert_int_equal(zp__tally_join(t, name, strlen(name), 1), i);
    }
    assert_int_equal(zp__tally_join(t, "one more", 8, 1), -1);
    zp__tally_leave(t, 7, 10);
    assert_int_equal(zp__tally_join(t, "one more", 8, 11), -1);
    assert_int_equal(zp__tally_join(t, "one more", 8, 10 + ZP__TALLY_KEEP_NS),
                     7);
    zp__tally_fini(t);
    free(t);
}

/* ---- The endpoint -------------------------------------------------------- */

static bool render_fixed(void *arg, zp__prom *p)
{
    zp__prom_family(p, "zpipe_test_total", "counter", "A test.");
    zp__prom_uint(p, "zpipe_test_total", NULL, ++*(uint64_t *)arg);
    return false;
}

static void
test_the_endpoint_serves_get_metrics_and_refuses_the_rest(void **state)
{
    (void)state;
    uint64_t scrapes = 0;
    char *why = NULL, allow[64], type[128];
    zp__metrics *m =
        zp__metrics_new("127.0.0.1:0", render_fixed, &scrapes, &why);
    assert_non_null(m);
    const char *where = zp__metrics_where(m);
    assert_int_equal(strncmp(where, "127.0.0.1:", 10), 0);
    http_reply r;
    assert_int_equal(http_call(where, "GET", "/metrics", NULL, &r), 200);
    assert_true(http_header(&r, "Content-Type", type, sizeof type));
    assert_string_equal(type, "text/plain; version=0.0.4; charset=utf-8");
    assert_string_equal(r.body, "# HELP zpipe_test_total A test.\n"
                                "# TYPE zpipe_test_total counter\n"
                                "zpipe_test_total 1\n");
    http_reply_free(&r);
    assert_int_equal(http_call(where, "GET", "/metrics?x=1", NULL, &r), 200);
    http_reply_free(&r);
    assert_int_equal(http_call(where, "GET", "/", NULL, &r), 404);
    http_reply_free(&r);
    assert_int_equal(http_call(where, "GET", "/metrics/x", NULL, &r), 404);
    http_reply_free(&r);
    assert_int_equal(http_call(where, "POST", "/nope", "a=1", &r), 404);
    http_reply_free(&r);
    const char *methods[] = {"POST", "PUT", "DELETE", "HEAD"};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(
            http_call(where, methods[i], "/metrics", i < 2 ? "body" : NULL, &r),
            405);
        assert_true(http_header(&r, "Allow", allow, sizeof allow));
        assert_string_equal(allow, "GET");
        http_reply_free(&r);
    }
    assert_int_equal(scrapes, 2); /* only the two GETs made a page */
    /* Garbage instead of HTTP gets an answer or a closed connection. */
    int s = http_connect(where);
    assert_true(s >= 0);
    assert_int_equal(write(s, "\x01\x02 garbage\r\n\r\n", 14), 14);
    free(http_read_all(s));
    close(s);
    zp__metrics_destroy(&m);
    zp__metrics_destroy(&m); /* idempotent */
    assert_null(why);
}

/* ---- Slow clients -------------------------------------------------------- */

#define SLOW_CLIENTS 100

/* SLOW_CLIENTS connections that each send one byte of a request every
 * 100 ms and never finish it; a connection the server closes is opened
 * again, as an attacker would. */
typedef struct slowloris {
    const char *where;
    atomic_bool stop;
    atomic_uint rounds; /* times every connection was sent a byte */
    atomic_uint closed; /* connections the server closed */
    int fd[SLOW_CLIENTS];
    size_t sent[SLOW_CLIENTS];
} slowloris;

/* The n-th byte of a request that never ends: a header that goes on. */
static char slow_byte(size_t n)
{
    static const char head[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    return n < sizeof head - 1 ? head[n] : 'a';
}

/* A server of render_fixed's page on a port of 127.0.0.1. */
static zp__metrics *fixed_server(uint64_t *scrapes)
{
    char *why = NULL;
    zp__metrics *m =
        zp__metrics_new("127.0.0.1:0", render_fixed, scrapes, &why);
    if (m == NULL)
        fail_msg("%s", why);
    return m;
}

static void *trickle(void *arg)
{
    slowloris *s = arg;
    while (!atomic_load(&s->stop)) {
        for (int i = 0; i < SLOW_CLIENTS; i++) {
            if (s->fd[i] < 0) {
                s->fd[i] = http_connect(s->where);
                s->sent[i] = 0;
            }
            char c = slow_byte(s->sent[i]);
            if (s->fd[i] >= 0 &&
                send(s->fd[i], &c, 1, MSG_NOSIGNAL | MSG_DONTWAIT) == 1) {
                s->sent[i]++;
            } else if (s->fd[i] >= 0) {
                close(s->fd[i]);
                s->fd[i] = -1;
                atomic_fetch_add(&s->closed, 1);
            }
        }
        atomic_fetch_add(&s->rounds, 1);
        nap_us(100000);
    }
    for (int i = 0; i < SLOW_CLIENTS; i++)
        if (s->fd[i] >= 0)
            close(s->fd[i]);
    return NULL;
}

static void test_a_scrape_gets_in_past_100_slow_connections(void **state)
{
    (void)state;
    uint64_t scrapes = 0;
    zp__metrics *m = fixed_server(&scrapes);
    slowloris s = {.where = zp__metrics_where(m)};
    for (int i = 0; i < SLOW_CLIENTS; i++)
        s.fd[i] = -1;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, trickle, &s), 0);
    for (int waited = 0; atomic_load(&s.rounds) < 3; waited += 10) {
        if (waited > DEADLINE_MS)
            fail_msg("the slow connections never opened");
        nap_us(10000);
    }
    for (int i = 0; i < 6; i++) {
        http_reply r;
        assert_int_equal(http_call(s.where, "GET", "/metrics", NULL, &r), 200);
        assert_non_null(strstr(r.body, "zpipe_test_total"));
        http_reply_free(&r);
        nap_us(200000);
    }
    atomic_store(&s.stop, true);
    assert_int_equal(pthread_join(t, NULL), 0);
    /* Of 100 waiting connections the server keeps 64: it dropped some. */
    assert_true(atomic_load(&s.closed) > 0);
    assert_int_equal(scrapes, 6); /* no slow request was ever answered */
    zp__metrics_destroy(&m);
}

static void test_a_request_never_finished_is_cut_at_its_deadline(void **state)
{
    (void)state;
    uint64_t scrapes = 0;
    zp__metrics *m = fixed_server(&scrapes);
    const char *where = zp__metrics_where(m);
    int fd = http_connect(where);
    assert_true(fd >= 0);
    uint64_t start = zp__now_ns();
    bool over = false;
    for (size_t n = 0; !over; n++) {
        if (zp__now_ns() - start > 60 * S)
            fail_msg("a request never finished was never cut");
        char c = slow_byte(n), buf[256];
        if (send(fd, &c, 1, MSG_NOSIGNAL) != 1)
            break; /* reset: the server closed it */
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) > 0)
            over = read(fd, buf, sizeof buf) <= 0; /* the end, no reply */
    }
    /* The deadline is 3 s from the accept; never sooner. */
    assert_true(zp__now_ns() - start >= 2 * S);
    close(fd);
    http_reply r;
    assert_int_equal(http_call(where, "GET", "/metrics", NULL, &r), 200);
    http_reply_free(&r);
    assert_int_equal(scrapes, 1);
    zp__metrics_destroy(&m);
}

static void test_bad_metrics_addresses_are_refused_naming_them(void **state)
{
    (void)state;
    /* No name that would need DNS: the tests run without a network. */
    const char *bad[] = {
        "9464",          "localhost", "127.0.0.1:", ":99999",
        "127.0.0.1:12a", "::1:9464",  "[::1:9464",  "[::1]9464",
        ":-1",           "",          "[]:80"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *why = NULL;
        uint64_t n = 0;
        zp__metrics *m = zp__metrics_new(bad[i], render_fixed, &n, &why);
        if (m != NULL)
            fail_msg("'%s' was taken", bad[i]);
        assert_non_null(why);
        assert_contains(why, bad[i]);
        free(why);
    }
}

static void test_a_port_in_use_fails_the_run_naming_it(void **state)
{
    (void)state;
    uint64_t n = 0;
    char *why = NULL, addr[64];
    zp__metrics *taken = zp__metrics_new("127.0.0.1:0", render_fixed, &n, &why);
    assert_non_null(taken);
    snprintf(addr, sizeof addr, "%s", zp__metrics_where(taken));
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true), zp_task(square));
    zp_run_opts o = {.metrics_listen = addr};
    zp_run *run = zp_start_with(p, "[10]", &o);
    assert_int_equal(zp_finish(run), ZP_EINVAL);
    assert_contains(zp_error(run), addr);
    assert_contains(zp_error(run), "Address already in use");
    zp_run_free(run);
    /* A malformed one, too. */
    o.metrics_listen = "localhost";
    run = zp_start_with(p, "[10]", &o);
    assert_int_equal(zp_finish(run), ZP_EINVAL);
    assert_contains(zp_error(run), "bad metrics address 'localhost'");
    zp_run_free(run);
    zp_pipeline_free(p);
    zp__metrics_destroy(&taken);
}

/* ---- A run's endpoint ---------------------------------------------------- */

static void test_a_run_serves_its_live_figures_while_it_goes(void **state)
{
    (void)state;
    char where[64];
    zp_run_opts o = {.metrics_listen = "127.0.0.1:0"};
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true), zp_task(nap2ms, .workers = 2),
                zp_task(add_one, .throttle = 8));
    zp_run *run = start_with_metrics(p, "[300]", &o, where, sizeof where);
    /* Outputs not read yet: they wait at the last stage's output, no more
     * than its throttle (the stage sends them in batches, so the queue
     * stops wherever the next batch would not fit). */
    const char *queue = "zpipe_stage_queue_items{stage=\"3\",task=\"add_one\"}";
    char *page = scrape_until(where, queue, 1);
    assert_true(sample(page, queue) <= 8);
    const char *tasks[] = {"numbers", "nap2ms", "add_one"};
    assert_every_stage_metric(page, tasks, 3);
    assert_true(sample(page, "zpipe_run_up") == 1);
    assert_true(sample(page, "zpipe_stage_workers_alive{stage=\"2\",task="
                             "\"nap2ms\"}") == 2);
    free(page);
    const msgpack_object *out;
    int outputs = 0;
    while (zp_run_next(run, &out))
        outputs++;
    assert_int_equal(zp_finish(run), 0);
    assert_int_equal(outputs, 300);
    /* The endpoint closed with the run (no linger asked for). */
    assert_int_equal(http_connect(where), -1);
    zp_run_free(run);
    zp_pipeline_free(p);
}

typedef struct finisher {
    zp_run *run;
    int rc;
} finisher;

static void *finish_run(void *arg)
{
    finisher *f = arg;
    f->rc = zp_finish(f->run);
    return NULL;
}

static void test_the_final_figures_stay_until_scraped_once(void **state)
{
    (void)state;
    char where[64];
    zp_run_opts o = {.metrics_listen = "127.0.0.1:0",
                     .metrics_linger_ms = 60000};
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(add_one, .workers = 2));
    zp_run *run = start_with_metrics(p, "[1000]", &o, where, sizeof where);
    const msgpack_object *out;
    int outputs = 0;
    while (zp_run_next(run, &out))
        outputs++;
    finisher f = {run, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, finish_run, &f), 0);
    /* zp_finish waits for a scrape of the final figures, then returns. */
    char *page = final_page(where);
    assert_true(sample(page, "zpipe_stage_items_out_total{stage=\"2\",task="
                             "\"add_one\"}") == outputs);
    assert_true(sample(page, "zpipe_stage_item_seconds_count{stage=\"2\","
                             "task=\"add_one\"}") == 1000);
    free(page);
    struct timespec until;
    deadline_in(&until, DEADLINE_MS);
    assert_int_equal(pthread_timedjoin_np(t, NULL, &until), 0);
    assert_int_equal(f.rc, 0);
    assert_int_equal(http_connect(where), -1);
    zp_run_free(run);
    zp_pipeline_free(p);
}

static void test_nested_runs_leave_the_endpoint_to_their_parent(void **state)
{
    (void)state;
    char where[64];
    zp_run_opts o = {.metrics_listen = "127.0.0.1:0"};
    zp_pipeline *inner = zp_pipe(zp_task(add_one), zp_task(add_one));
    zp_pipeline *p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task_pipeline(inner, .workers = 2), zp_task(nap2ms));
    zp_run *run = start_with_metrics(p, "[20]", &o, where, sizeof where);
    const msgpack_object *out;
    int outputs = 0;
    char *page = scrape(where);
    assert_contains(page, "task=\"nap2ms\"");
    free(page);
    while (zp_run_next(run, &out))
        outputs++;
    assert_int_equal(zp_finish(run), 0);
    assert_int_equal(outputs, 20);
    zp_run_free(run);
    zp_pipeline_free(p);
}

static void test_zpipe_metrics_in_the_environment_is_the_default(void **state)
{
    (void)state;
    char where[64];
    zp_run_opts o = {.metrics_listen = NULL};
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true), zp_task(nap2ms));
    setenv("ZPIPE_METRICS", "127.0.0.1:0", 1);
    zp_run *run = start_with_metrics(p, "[5]", &o, where, sizeof where);
    assert_int_equal(zp_finish(run), 0);
    zp_run_free(run);
    /* With no options at all. */
    int saved = dup(STDERR_FILENO), null = open("/dev/null", O_WRONLY);
    dup2(null, STDERR_FILENO);
    setenv("ZPIPE_METRICS", "localhost", 1);
    run = zp_start(p, "[5]");
    int rc = zp_finish(run);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(null);
    assert_int_equal(rc, ZP_EINVAL);
    assert_contains(zp_error(run), "'localhost'");
    zp_run_free(run);
    unsetenv("ZPIPE_METRICS");
    zp_pipeline_free(p);
}

/* ---- What the histograms and tallies hold -------------------------------- */

static void test_thread_and_async_stages_time_every_item(void **state)
{
    (void)state;
    zp_pipeline *p = zp_pipe(
        zp_task(numbers, .branch = true), zp_task(add_one, .workers = 3),
        zp_task(nap2ms), zp_async_task(later, .workers = 8),
        zp_task(add_one, .mode = ZP_PROCESS), zp_task(total, .join = true));
    zp_run *run = zp_start(p, "[100]");
    assert_int_equal(zp_finish(run), 0);
    zp_stage_stats st;
    uint64_t n[6];
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(zp_run_stats(run, i, &st), 0);
        n[i] = 0;
        for (int b = 0; b < ZP_HIST_BUCKETS; b++)
            n[i] += st.item_hist[b];
        if (i == 2 || i == 3) { /* 2 ms naps, 5 ms timers: none under 1 ms */
            assert_int_equal(
                st.item_hist[0] + st.item_hist[1] + st.item_hist[2], 0);
            assert_true(st.item_hist_ns >= 100 * (i == 2 ? 2 : 4) * 1000000ull);
        }
        assert_int_equal(st.queue_items, 0);
    }
    assert_int_equal(n[0], 1);   /* the first task's one call */
    assert_int_equal(n[1], 100); /* fast items, timed in windows */
    assert_int_equal(n[2], 100);
    assert_int_equal(n[3], 100);
    assert_int_equal(n[4], 100); /* from the task time workers report */
    assert_int_equal(n[5], 1);   /* the join task's one call */
    zp_run_free(run);
    zp_pipeline_free(p);
}

static void test_a_process_stage_lists_its_workers_batches(void **state)
{
    (void)state;
    char where[64], series[256];
    zp_run_opts o = {.metrics_listen = "127.0.0.1:0",
                     .metrics_linger_ms = 60000};
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(nap2ms, .mode = ZP_PROCESS, .workers = 2));
    zp_run *run = start_with_metrics(p, "[200]", &o, where, sizeof where);
    const msgpack_object *out;
    while (zp_run_next(run, &out))
        ;
    finisher f = {run, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, finish_run, &f), 0);
    char *page = final_page(where);
    assert_true(sample(page, "zpipe_stage_items_out_total{stage=\"2\",task="
                             "\"nap2ms\"}") == 200);
    /* One row per worker process, by the name it said HELLO with. */
    double batches = 0;
    int rows = 0;
    const char *row =
        "\nzpipe_worker_batches_total{stage=\"2\",task=\"nap2ms\","
        "worker=\"";
    for (const char *l = strstr(page, "\nzpipe_worker_batches_total{"); l;
         l = strstr(l + 1, "\nzpipe_worker_batches_total{")) {
        assert_int_equal(strncmp(l, row, strlen(row)), 0);
        snprintf(series, sizeof series, "%.*s", (int)strcspn(l + 1, " "),
                 l + 1);
        batches += sample(page, series);
        rows++;
    }
    assert_true(rows >= 1 && rows <= 2);
    assert_true(batches >= 100); /* slow items travel one to a batch */
    free(page);
    struct timespec until;
    deadline_in(&until, DEADLINE_MS);
    assert_int_equal(pthread_timedjoin_np(t, NULL, &until), 0);
    assert_int_equal(f.rc, 0);
    zp_run_free(run);
    zp_pipeline_free(p);
}

int main(int argc, char **argv)
{
    zp_init(&argc, &argv); /* process workers: this program again */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_bucket_holds_durations_up_to_its_bound),
        cmocka_unit_test(test_label_values_are_escaped_and_made_utf8),
        cmocka_unit_test(test_help_escapes_backslash_and_newline_not_quotes),
        cmocka_unit_test(test_histogram_buckets_are_cumulative_to_inf),
        cmocka_unit_test(test_a_run_page_has_every_metric_of_every_stage),
        cmocka_unit_test(test_a_worker_page_has_its_five_metrics),
        cmocka_unit_test(test_a_tally_counts_by_name_and_forgets_leavers),
        cmocka_unit_test(test_a_tally_holds_a_bounded_number_of_workers),
        cmocka_unit_test(
            test_the_endpoint_serves_get_metrics_and_refuses_the_rest),
        cmocka_unit_test(test_a_scrape_gets_in_past_100_slow_connections),
        cmocka_unit_test(test_a_request_never_finished_is_cut_at_its_deadline),
        cmocka_unit_test(test_bad_metrics_addresses_are_refused_naming_them),
        cmocka_unit_test(test_a_port_in_use_fails_the_run_naming_it),
        cmocka_unit_test(test_a_run_serves_its_live_figures_while_it_goes),
        cmocka_unit_test(test_the_final_figures_stay_until_scraped_once),
        cmocka_unit_test(test_nested_runs_leave_the_endpoint_to_their_parent),
        cmocka_unit_test(test_zpipe_metrics_in_the_environment_is_the_default),
        cmocka_unit_test(test_thread_and_async_stages_time_every_item),
        cmocka_unit_test(test_a_process_stage_lists_its_workers_batches),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
