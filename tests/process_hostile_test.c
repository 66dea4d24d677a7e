/* SPDX-License-Identifier: MIT */
/*
 * Tests of a remote stage (mode = ZP_REMOTE) beside peers that are not
 * the workers they should be, made by hand on raw ZeroMQ sockets: a
 * stranger sending garbage and a HELLO of the wrong version, a worker
 * sending DONEs of another run or stage, workers of any capacity (each
 * held to it), workers whose outputs are malformed or too many, one that
 * fails an item not in its batch, one that answers for a stage that gave
 * it nothing, one that keeps its items, a flood of
 * newcomers, and garbage logged a few times only. Each run completes
 * with every output once, served by an honest remote worker. And a real
 * worker sent thousands of STAGEs by a hand-made coordinator keeps its
 * memory bounded. The helpers, the tasks and main()'s start are
 * tests/processutil.h's.
 */
#include "tests/processutil.h"

#include <zmq.h>

#include "transport/batch.h"
#include "transport/timing.h"

/* ---- Hostile peers --------------------------------------------------------
 */

/* A raw DEALER on the run's port: garbage, then a worker that never
 * answers. Returns the socket (its context in *zctx). */
static void *stranger_connects(const char *ep, void **zctx)
{
    const char *tasks[] = {"whoami"};
    char junk[97];
    unsigned seed = 7;
    int zero = 0;
    msgpack_sbuffer sb;
    *zctx = zmq_ctx_new();
    void *s = zmq_socket(*zctx, ZMQ_DEALER);
    assert_non_null(s);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(s, ep), 0);
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (char)rand_r(&seed);
    assert_int_equal(zmq_send(s, junk, sizeof junk, 0), (int)sizeof junk);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(zp__msg_hello(&sb, "stranger", 999999, 64, tasks, 1, NULL),
                     0);
    assert_int_equal(sb.data[1], ZP__PROTO_VERSION); /* [version, ... */
    sb.data[1] = ZP__PROTO_VERSION + 1;
    assert_int_equal(zmq_send(s, sb.data, sb.size, 0), (int)sb.size);
    sb.data[1] = ZP__PROTO_VERSION;
    assert_int_equal(zmq_send(s, sb.data, sb.size - 5, 0), (int)sb.size - 5);
    assert_int_equal(zmq_send(s, sb.data, sb.size, 0), (int)sb.size);
    msgpack_sbuffer_destroy(&sb);
    return s;
}

/* How many ITEM messages the stranger was sent: those already there, or
 * with `first`, those until the first (for up to DEADLINE_MS). */
static int items_sent_to(void *s, bool first)
{
    zmq_msg_t m;
    zp__msg msg;
    const char *why;
    int items = 0;
    int64_t end = now_ms() + DEADLINE_MS;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    assert_non_null(zone);
    zmq_msg_init(&m);
    while (!(first && items > 0)) {
        if (zmq_msg_recv(&m, s, ZMQ_DONTWAIT) < 0) {
            zmq_pollitem_t pi = {s, 0, ZMQ_POLLIN, 0};
            if (!first || now_ms() > end)
                break;
            zmq_poll(&pi, 1, 100);
            continue;
        }
        msgpack_zone_clear(zone);
        if (zp__msg_decode(zmq_msg_data(&m), zmq_msg_size(&m), zone, &msg,
                           &why) == 0)
            items += msg.type == ZP__ITEM;
    }
    zmq_msg_close(&m);
    msgpack_zone_free(zone);
    return items;
}

static void test_strangers_on_the_port_do_not_disturb_the_run(void **state)
{
    fixture *f = *state;
    char ep[64];
    collected *c = &f->c;
    void *zctx;
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = DEADLINE_MS};
    zp_pipeline *p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                                    zp_task(whoami, .mode = ZP_REMOTE));
    zp_run *run = begin_run(c, p, "[300]", &ro);
    void *s = stranger_connects(ep, &zctx);
    /* The real worker comes once the stranger holds items. */
    int items = items_sent_to(s, true);
    pid_t w = start_worker(ep, NULL, NULL);
    const msgpack_object *out;
    while (zp_run_next(run, &out))
        keep(c, out);
    end_run(c);
    items += items_sent_to(s, false);
    zmq_close(s);
    zmq_ctx_term(zctx);
    stop_worker(w);
    print_message("the stranger was sent %d batches\n", items);
    assert_run_ok(c);
    assert_each_once(c, 300, 1, -1);
    assert_int_equal(served_by(c, w), 300);
    assert_true(items >= 1); /* it did hold items, which were run again */
    collected_fini(c);
}

/* Sends DONE for `m` (an ITEM) with outputs f(x) of its items x. */
static void send_done(void *s, const zp__msg *m, uint64_t run, uint32_t stage,
                      int64_t mul, int64_t add)
{
    zp__batch_reader rd;
    const msgpack_object *x;
    uint64_t seq;
    msgpack_sbuffer out, body;
    msgpack_packer pk;
    char hdr[ZP__BATCH_HEADER_MAX];
    uint32_t n = 0;
    msgpack_sbuffer_init(&out);
    msgpack_sbuffer_init(&body);
    assert_int_equal(zp__batch_reader_init(&rd), 0);
    assert_int_equal(zp__batch_open(&rd, m->data, m->data_len), 0);
    size_t h = zp__batch_header(hdr, 0, rd.left);
    msgpack_sbuffer_write(&out, hdr, h);
    msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
    for (; zp__batch_next(&rd, &x, &seq) == 1; n++)
        msgpack_pack_int64(&pk, x->via.i64 * mul + add);
    zp__batch_reader_fini(&rd);
    assert_int_equal(zp__msg_out(&body, ZP__DONE, run, stage, m->batch,
                                 out.data, out.size, 0, 0, 1000),
                     0);
    assert_int_equal(zmq_send(s, body.data, body.size, 0), (int)body.size);
    msgpack_sbuffer_destroy(&out);
    msgpack_sbuffer_destroy(&body);
}

/*
 * A worker by hand: announces `twice`, then answers each batch first with
 * DONEs naming another run and another stage, whose outputs are forged,
 * then with the true DONE. Returns the items it served.
 */
static int64_t serve_with_forgeries(void *s, int64_t want)
{
    const char *tasks[] = {"twice"};
    msgpack_sbuffer sb;
    zmq_msg_t in;
    int64_t served = 0, deadline = now_ms() + DEADLINE_MS;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    assert_non_null(zone);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(zp__msg_hello(&sb, "forger", 888888, 64, tasks, 1, NULL),
                     0);
    assert_int_equal(zmq_send(s, sb.data, sb.size, 0), (int)sb.size);
    zmq_msg_init(&in);
    while (served < want && now_ms() < deadline) {
        zmq_pollitem_t pi = {s, 0, ZMQ_POLLIN, 0};
        zp__msg m;
        const char *why;
        if (zmq_poll(&pi, 1, 100) <= 0 || zmq_msg_recv(&in, s, 0) < 0)
            continue;
        msgpack_zone_clear(zone);
        if (zp__msg_decode(zmq_msg_data(&in), zmq_msg_size(&in), zone, &m,
                           &why) != 0 ||
            m.type != ZP__ITEM)
            continue;
        send_done(s, &m, m.run + 1, m.stage, 0, 1000001);
        send_done(s, &m, m.run, m.stage + 1, 0, 1000003);
        send_done(s, &m, m.run, m.stage, 2, 0);
        served += (int64_t)(m.data_len > 0);
    }
    zmq_msg_close(&in);
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_free(zone);
    return served;
}

static void test_a_worker_sending_another_runs_outputs_is_dropped(void **state)
{
    fixture *f = *state;
    char ep[64];
    collected *c = &f->c;
    int zero = 0;
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = DEADLINE_MS};
    zp_pipeline *p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                                    zp_task(twice, .mode = ZP_REMOTE));
    zp_run *run = begin_run(c, p, "[5]", &ro);
    void *zctx = zmq_ctx_new();
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(s, ep), 0);
    /* Its first batch: forged DONEs, then the true one, too late: the
     * worker was dropped at the first forgery and its items run on the
     * honest worker. */
    serve_with_forgeries(s, 1);
    pid_t w = start_worker(ep, NULL, NULL);
    const msgpack_object *out;
    while (zp_run_next(run, &out))
        keep(c, out);
    end_run(c);
    stop_worker(w);
    zmq_close(s);
    zmq_ctx_term(zctx);
    assert_run_ok(c);
    assert_each_once(c, 5, 2, -1); /* and nothing forged */
    collected_fini(c);
}

/* How a worker by hand answers its batches. */
enum manner {
    HONEST,    /* DONE with the outputs                             */
    SILENT,    /* never, but it sends heartbeats                    */
    NOT_BIN,   /* DONE whose outputs are a str, not a bin           */
    TWICE,     /* DONE with two outputs per item (not a branch)     */
    FAIL_OFF,  /* FAIL naming an item outside the batch             */
    ELSEWHERE, /* DONE naming the run's other stage, which gave it none */
};

/* A worker by hand that announces `capacity`, answers batches in its
 * `manner`, and checks the coordinator never had more of its items out
 * than that. It stops once it served `want` items or `stop` is set; after
 * `stop_after` batches (when > 0) it takes no more, but still sends its
 * heartbeats. */
typedef struct small_worker {
    void *s;
    uint32_t capacity;
    enum manner manner;
    int64_t want, served, stop_after;
    _Atomic int64_t batches;
    int64_t most_out; /* most items it held at once */
    _Atomic bool stop;
    pthread_t thread;
} small_worker;

/* DONE for ITEM m with 2 outputs per item. */
static void done_twice(void *s, const zp__msg *m, msgpack_sbuffer *sb)
{
    zp__batch_reader rd = {.data = NULL};
    zp__batch_open(&rd, m->data, m->data_len);
    msgpack_sbuffer out;
    msgpack_sbuffer_init(&out);
    char hdr[ZP__BATCH_HEADER_MAX];
    size_t h = zp__batch_header(hdr, 0, 2 * rd.left);
    msgpack_sbuffer_write(&out, hdr, h);
    msgpack_packer opk;
    msgpack_packer_init(&opk, &out, msgpack_sbuffer_write);
    for (uint32_t i = 0; i < 2 * rd.left; i++)
        msgpack_pack_int64(&opk, 0);
    zp__msg_out(sb, ZP__DONE, m->run, m->stage, m->batch, out.data, out.size, 0,
                0, 1000);
    msgpack_sbuffer_destroy(&out);
    (void)s;
}

/* A DONE for ITEM m whose outputs are a str. */
static void done_not_bin(const zp__msg *m, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 8);
    msgpack_pack_uint64(&pk, ZP__PROTO_VERSION);
    msgpack_pack_uint64(&pk, ZP__DONE);
    msgpack_pack_uint64(&pk, m->run);
    msgpack_pack_uint64(&pk, m->stage);
    msgpack_pack_uint64(&pk, m->batch);
    msgpack_pack_str_with_body(&pk, "xx", 2);
    msgpack_pack_uint64(&pk, 0);
    msgpack_pack_uint64(&pk, 0);
}

/* Answers ITEM m as `manner` says. */
static void answer(void *s, const zp__msg *m, enum manner manner)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (manner == HONEST)
        send_done(s, m, m->run, m->stage, 2, 0);
    else if (manner == TWICE)
        done_twice(s, m, &sb);
    else if (manner == NOT_BIN)
        done_not_bin(m, &sb);
    else if (manner == ELSEWHERE)
        send_done(s, m, m->run, m->stage == 1 ? 2 : 1, 2, 0);
    else if (manner == FAIL_OFF)
        zp__msg_fail(&sb, m->run, m->stage, m->batch, 123456789, "boom", 1);
    if (sb.size > 0)
        assert_int_equal(zmq_send(s, sb.data, sb.size, 0), (int)sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void *small_worker_main(void *arg)
{
    small_worker *w = arg;
    const char *tasks[] = {"twice"};
    msgpack_sbuffer sb;
    zmq_msg_t in;
    int64_t deadline = now_ms() + 6 * DEADLINE_MS;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    assert_non_null(zone);
    msgpack_sbuffer_init(&sb);
    assert_int_equal(
        zp__msg_hello(&sb, "small", 777777, w->capacity, tasks, 1, NULL), 0);
    assert_int_equal(zmq_send(w->s, sb.data, sb.size, 0), (int)sb.size);
    msgpack_sbuffer_clear(&sb);
    zmq_msg_init(&in);
    zp__msg held[128];
    zmq_msg_t bodies[128];
    int64_t beat = now_ms();
    while (w->served < w->want && now_ms() < deadline && !w->stop) {
        zmq_pollitem_t pi = {w->s, 0, ZMQ_POLLIN, 0};
        if (now_ms() - beat >= 500) { /* alive, whatever it does */
            assert_int_equal(zp__msg_heartbeat(&sb), 0);
            zmq_send(w->s, sb.data, sb.size, 0);
            msgpack_sbuffer_clear(&sb);
            beat = now_ms();
        }
        if (zmq_poll(&pi, 1, 100) <= 0)
            continue;
        if (w->stop_after > 0 && w->batches >= w->stop_after) {
            zmq_msg_recv(&in, w->s, 0); /* taken, never answered */
            continue;
        }
        /* Everything queued first, then the answers: what it holds is
         * every item sent and not answered. */
        int n = 0;
        int64_t out = 0;
        while (n < 128) {
            zmq_msg_init(&bodies[n]);
            if (zmq_msg_recv(&bodies[n], w->s, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&bodies[n]);
                break;
            }
            const char *why;
            if (zp__msg_decode(zmq_msg_data(&bodies[n]),
                               zmq_msg_size(&bodies[n]), zone, &held[n],
                               &why) != 0 ||
                held[n].type != ZP__ITEM) {
                zmq_msg_close(&bodies[n]);
                continue;
            }
            zp__batch_reader rd = {.data = NULL};
            assert_int_equal(
                zp__batch_open(&rd, held[n].data, held[n].data_len), 0);
            out += rd.left;
            n++;
        }
        w->most_out = out > w->most_out ? out : w->most_out;
        for (int i = 0; i < n; i++) {
            zp__batch_reader rd = {.data = NULL};
            zp__batch_open(&rd, held[i].data, held[i].data_len);
            w->served += rd.left;
            w->batches++;
            answer(w->s, &held[i], w->manner);
            zmq_msg_close(&bodies[i]);
        }
        msgpack_zone_clear(zone);
    }
    zmq_msg_close(&in);
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_free(zone);
    return NULL;
}

static void test_workers_of_any_capacity_are_served_within_it(void **state)
{
    fixture *f = *state;
    static const uint32_t capacities[] = {1, 7, 100};
    for (size_t k = 0; k < 3; k++) {
        char ep[64];
        collected *c = &f->c;
        int zero = 0;
        free_endpoint(ep, sizeof ep);
        zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
        zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                                 zp_task(twice, .mode = ZP_REMOTE));
        zp_run *run = begin_run(c, p, "[10000]", &ro);
        void *zctx = zmq_ctx_new();
        small_worker w = {.s = zmq_socket(zctx, ZMQ_DEALER),
                          .capacity = capacities[k],
                          .want = 10000};
        zmq_setsockopt(w.s, ZMQ_LINGER, &zero, sizeof zero);
        assert_int_equal(zmq_connect(w.s, ep), 0);
        assert_int_equal(pthread_create(&w.thread, NULL, small_worker_main, &w),
                         0);
        const msgpack_object *out;
        while (zp_run_next(run, &out))
            keep(c, out);
        end_run(c);
        pthread_join(w.thread, NULL);
        zmq_close(w.s);
        zmq_ctx_term(zctx);
        print_message("capacity %u: it held %lld items at most\n",
                      capacities[k], (long long)w.most_out);
        assert_run_ok(c);
        assert_each_once(c, 10000, 2, -1);
        assert_true(w.most_out >= 1 && w.most_out <= capacities[k]);
        collected_fini(c);
        zp_pipeline_free(p);
    }
}

/* A run of 1000 items through `stages` remote stages (1 or 2) served by
 * a worker by hand in `manner` beside an honest worker process: the run
 * completes, each output once. Returns how long it took, in ms. */
static int64_t run_beside_a_bad_worker_of(fixture *f, enum manner manner,
                                          int stages)
{
    char ep[64];
    collected *c = &f->c;
    int zero = 0;
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
    zp_pipeline *p = f->p = stages == 1
                                ? zp_pipe(zp_task(numbers, .branch = true),
                                          zp_task(twice, .mode = ZP_REMOTE))
                                : zp_pipe(zp_task(numbers, .branch = true),
                                          zp_task(twice, .mode = ZP_REMOTE),
                                          zp_task(twice, .mode = ZP_REMOTE));
    zp_run *run = begin_run(c, p, "[1000]", &ro);
    void *zctx = zmq_ctx_new();
    small_worker bad = {.s = zmq_socket(zctx, ZMQ_DEALER),
                        .capacity = 16384,
                        .manner = manner,
                        .want = 1000,
                        .stop_after = 1};
    zmq_setsockopt(bad.s, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(bad.s, ep), 0);
    /* It has a batch, and answers it, before the honest worker comes; then
     * it stays, alive and silent. */
    assert_int_equal(pthread_create(&bad.thread, NULL, small_worker_main, &bad),
                     0);
    for (int64_t t = now_ms(); bad.batches < 1 && now_ms() - t < DEADLINE_MS;)
        nap_us(1000);
    assert_true(bad.batches >= 1);
    pid_t w = start_worker(ep, NULL, NULL);
    const msgpack_object *out;
    while (zp_run_next(run, &out))
        keep(c, out);
    end_run(c);
    bad.stop = true;
    pthread_join(bad.thread, NULL);
    stop_worker(w);
    zmq_close(bad.s);
    zmq_ctx_term(zctx);
    assert_run_ok(c);
    assert_each_once(c, 1000, stages == 1 ? 2 : 4, -1);
    int64_t ms = c->ms;
    collected_fini(c);
    return ms;
}

static void run_beside_a_bad_worker(fixture *f, enum manner manner)
{
    run_beside_a_bad_worker_of(f, manner, 1);
}

/* Outputs naming a stage that exists but never gave the worker a batch
 * break the protocol: it is dropped at once, and its batch runs
 * elsewhere well before the stuck-batch rule would give up on it. */
static void test_a_worker_answering_for_another_stage_is_dropped(void **state)
{
    int64_t ms = run_beside_a_bad_worker_of(*state, ELSEWHERE, 2);
    print_message("run %lld ms\n", (long long)ms);
    assert_true(ms < ZP__STUCK_MIN_MS / 2);
}

static void test_a_worker_with_malformed_outputs_is_dropped(void **state)
{
    run_beside_a_bad_worker(*state, NOT_BIN);
}

static void test_a_worker_with_two_outputs_per_item_is_dropped(void **state)
{
    run_beside_a_bad_worker(*state, TWICE);
}

static void
test_a_worker_failing_an_item_not_in_its_batch_is_dropped(void **state)
{
    run_beside_a_bad_worker(*state, FAIL_OFF);
}

/* Items a flood of sockets were sent, in ITEMs (read without waiting). */
static int64_t items_sent_to_all(void **socks, int n)
{
    int64_t items = 0;
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    assert_non_null(zone);
    for (int i = 0; i < n; i++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (zmq_msg_recv(&m, socks[i], ZMQ_DONTWAIT) >= 0) {
            zp__msg msg;
            const char *why;
            zp__batch_reader rd = {.data = NULL};
            msgpack_zone_clear(zone);
            if (zp__msg_decode(zmq_msg_data(&m), zmq_msg_size(&m), zone, &msg,
                               &why) == 0 &&
                msg.type == ZP__ITEM &&
                zp__batch_open(&rd, msg.data, msg.data_len) == 0)
                items += rd.left;
        }
        zmq_msg_close(&m);
    }
    msgpack_zone_free(zone);
    return items;
}

/* 150 strangers say HELLO claiming the largest capacity, then nothing: a
 * newcomer is trusted with at most 65 items until it returns some (not
 * what it claims, 2^32 - 1), so they hold
 * few, and those run again elsewhere once they are found silent. */
static void test_a_flood_of_newcomers_holds_few_items(void **state)
{
    enum { FAKES = 150 };
    fixture *f = *state;
    char ep[64];
    collected *c = &f->c;
    int zero = 0;
    const char *tasks[] = {"twice"};
    void *socks[FAKES];
    msgpack_sbuffer sb;
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
    zp_pipeline *p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                                    zp_task(twice, .mode = ZP_REMOTE));
    zp_run *run = begin_run(c, p, "[20000]", &ro);
    void *zctx = zmq_ctx_new();
    msgpack_sbuffer_init(&sb);
    assert_int_equal(
        zp__msg_hello(&sb, "fake", 555555, UINT32_MAX, tasks, 1, NULL), 0);
    for (int i = 0; i < FAKES; i++) {
        socks[i] = zmq_socket(zctx, ZMQ_DEALER);
        zmq_setsockopt(socks[i], ZMQ_LINGER, &zero, sizeof zero);
        assert_int_equal(zmq_connect(socks[i], ep), 0);
        assert_int_equal(zmq_send(socks[i], sb.data, sb.size, 0), (int)sb.size);
    }
    msgpack_sbuffer_destroy(&sb);
    pid_t w = start_worker(ep, NULL, NULL);
    const msgpack_object *out;
    while (zp_run_next(run, &out))
        keep(c, out);
    end_run(c);
    stop_worker(w);
    int64_t held = items_sent_to_all(socks, FAKES);
    for (int i = 0; i < FAKES; i++)
        zmq_close(socks[i]);
    zmq_ctx_term(zctx);
    print_message("%d fakes were sent %lld items\n", FAKES, (long long)held);
    assert_run_ok(c);
    assert_each_once(c, 20000, 2, -1);
    assert_true(held <= 65 * FAKES);
    collected_fini(c);
}

/* 2000 garbage frames from a stranger during a run: a few log lines,
 * not one a frame (it used to be thousands). */
static void test_garbage_from_a_peer_is_logged_a_few_times(void **state)
{
    fixture *f = *state;
    char ep[64], log[] = "/tmp/zp-garbage-XXXXXX";
    collected *c = &f->c;
    int zero = 0;
    free_endpoint(ep, sizeof ep);
    int fd = mkstemp(log), saved = dup(STDERR_FILENO);
    assert_true(fd >= 0 && saved >= 0);
    fflush(stderr);
    dup2(fd, STDERR_FILENO);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
    zp_pipeline *p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                                    zp_task(twice, .mode = ZP_REMOTE));
    zp_run *run = begin_run(c, p, "[200]", &ro);
    void *zctx = zmq_ctx_new();
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(s, ep), 0);
    for (int i = 0; i < 2000; i++)
        assert_int_equal(zmq_send(s, "\xc1junk", 5, 0), 5);
    pid_t w = start_worker(ep, NULL, NULL);
    const msgpack_object *out;
    while (zp_run_next(run, &out))
        keep(c, out);
    end_run(c);
    stop_worker(w);
    zmq_close(s);
    zmq_ctx_term(zctx);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char text[8192];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    close(fd);
    unlink(log);
    text[n > 0 ? n : 0] = '\0';
    int lines = 0;
    for (char *q = text; (q = strstr(q, "dropped a message")) != NULL; q++)
        lines++;
    print_message("%d lines about dropped messages\n", lines);
    assert_run_ok(c);
    assert_each_once(c, 200, 2, -1);
    assert_true(lines >= 1 && lines <= 5);
    collected_fini(c);
}

/* Takes a batch, sends heartbeats, never answers: after STUCK_MIN_NS (30
 * s) and many times a batch's time, its items run elsewhere. */
static void test_a_worker_that_keeps_its_items_is_given_up_on(void **state)
{
    run_beside_a_bad_worker(*state, SILENT);
}

/* ---- A coordinator that sends STAGE after STAGE ---------------------------
 */

/* Sends `n` STAGEs of runs `*run`, `*run` + 1, ... to the worker `id`,
 * then a HELLO, and waits for its answer: the worker has handled them.
 * Fewer than the ROUTER's high-water mark, lest it drop some. */
static void send_some_stages(void *router, zmq_msg_t *id, uint64_t *run, int n)
{
    static char text[4000];
    msgpack_sbuffer sb, bind;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_sbuffer_init(&bind);
    msgpack_packer_init(&pk, &bind, msgpack_sbuffer_write);
    memset(text, 'b', sizeof text);
    msgpack_pack_str_with_body(&pk, text, sizeof text); /* a bind value */
    for (int i = 0; i < n; i++, (*run)++) {
        assert_int_equal(
            zp__msg_stage(&sb, *run, 1, "twice", 0, 0, bind.data, bind.size),
            0);
        assert_int_equal(
            zmq_send(router, zmq_msg_data(id), zmq_msg_size(id), ZMQ_SNDMORE),
            (int)zmq_msg_size(id));
        assert_int_equal(zmq_send(router, sb.data, sb.size, 0), (int)sb.size);
        msgpack_sbuffer_clear(&sb);
    }
    assert_int_equal(
        zp__msg_hello(&sb, "coordinator", (uint32_t)getpid(), 1, NULL, 0, NULL),
        0);
    zmq_send(router, zmq_msg_data(id), zmq_msg_size(id), ZMQ_SNDMORE);
    zmq_send(router, sb.data, sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
    msgpack_sbuffer_destroy(&bind);
    msgpack_zone *zone = msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE);
    assert_non_null(zone);
    zmq_msg_t from, body;
    zmq_msg_init(&from);
    zmq_msg_init(&body);
    zp__msg m = {.type = ZP__BYE};
    const char *why;
    while (m.type != ZP__HELLO) {
        assert_true(zmq_msg_recv(&from, router, 0) >= 0);
        assert_true(zmq_msg_recv(&body, router, 0) >= 0);
        msgpack_zone_clear(zone);
        if (zp__msg_decode(zmq_msg_data(&body), zmq_msg_size(&body), zone, &m,
                           &why) != 0)
            m.type = ZP__BYE;
    }
    zmq_msg_close(&from);
    zmq_msg_close(&body);
    msgpack_zone_free(zone);
}

/* send_some_stages() of n STAGEs, in steps of 500. */
static void send_stages(void *router, zmq_msg_t *id, uint64_t *run, int n)
{
    for (int i = 0; i < n; i += 500)
        send_some_stages(router, id, run, n - i < 500 ? n - i : 500);
}

/* A worker keeps at most ZP__WORKER_MAX_STAGES stages: thousands of
 * STAGEs leave its memory where the first ones took it. */
static void test_a_worker_sent_stage_after_stage_stays_bounded(void **state)
{
    (void)state;
    char ep[64];
    int zero = 0, wait_ms = DEADLINE_MS;
    free_endpoint(ep, sizeof ep);
    void *zctx = zmq_ctx_new();
    void *router = zmq_socket(zctx, ZMQ_ROUTER);
    assert_non_null(router);
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &wait_ms, sizeof wait_ms);
    assert_int_equal(zmq_bind(router, ep), 0);
    pid_t w = start_measured_worker(ep);
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    assert_true(zmq_msg_recv(&id, router, 0) >= 0); /* its HELLO */
    assert_true(zmq_msg_recv(&body, router, 0) >= 0);
    uint64_t run = 1;
    send_stages(router, &id, &run, 3000); /* past the cap: it drops some */
    long before = rss_kib(w);
    send_stages(router, &id, &run, 9000);
    long after = rss_kib(w);
    print_message("worker RSS %ld KiB, then %ld KiB after 9000 more STAGEs\n",
                  before, after);
    stop_worker(w);
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    zmq_close(router);
    zmq_ctx_term(zctx);
    /* Each kept costs its bind value's 4 KB: 9000 would be 36 MB. */
    assert_true(after - before < 4096);
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    int rc = process_tests_init("process_hostile_test", &argc, &argv);
    if (rc != 0)
        return rc;
    const struct CMUnitTest tests[] = {
        TEST(test_strangers_on_the_port_do_not_disturb_the_run),
        TEST(test_a_worker_sending_another_runs_outputs_is_dropped),
        TEST(test_workers_of_any_capacity_are_served_within_it),
        TEST(test_a_worker_with_malformed_outputs_is_dropped),
        TEST(test_a_worker_with_two_outputs_per_item_is_dropped),
        TEST(test_a_worker_failing_an_item_not_in_its_batch_is_dropped),
        TEST(test_a_worker_answering_for_another_stage_is_dropped),
        TEST(test_a_worker_that_keeps_its_items_is_given_up_on),
        TEST(test_a_flood_of_newcomers_holds_few_items),
        TEST(test_garbage_from_a_peer_is_logged_a_few_times),
        TEST(test_a_worker_sent_stage_after_stage_stays_bounded),
        cmocka_unit_test(test_no_child_process_is_left_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
