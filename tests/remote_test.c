/* SPDX-License-Identifier: MIT */
/*
 * Tests of remote workers (mode = ZP_REMOTE: processes that connect to the
 * run's listening endpoint): workers that join late, share the load and
 * leave early; a run with no worker; a worker paused and taken back; a
 * worker behind a latency proxy that holds enough items; two remote
 * stages on one endpoint, each with its pool; a worker of both that dies
 * or leaves; tasks only the workers have; CURVE keys, allowed and not.
 * The helpers, the tasks and main()'s start are tests/processutil.h's.
 */
#include "tests/processutil.h"

#include <zmq.h>

#include "transport/curve.h"

/* ---- Remote workers -------------------------------------------------------
 */

/* Test 6's hook: once both workers served items, one leaves. */
typedef struct leaver {
    pid_t a, b; /* the two workers; `a` leaves */
    size_t at;  /* outputs read when it was told to, or 0 */
} leaver;

static void leave_when_both_served(collected *c, void *ctx)
{
    leaver *l = ctx;
    if (l->at == 0 && served_by(c, l->a) >= 1 && served_by(c, l->b) >= 1) {
        assert_int_equal(kill(l->a, SIGTERM), 0);
        l->at = c->n;
    }
}

static bool has_items(const zp_stage_stats *st)
{
    return st->items_in > 0;
}

static bool has_two_workers(const zp_stage_stats *st)
{
    return st->workers_alive == 2;
}

static void
test_remote_workers_join_late_share_the_load_and_leave_early(void **state)
{
    fixture *f = *state;
    char ep[64];
    collected *c = &f->c;
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = DEADLINE_MS};
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(whoami_at_the_gate, .mode = ZP_REMOTE));
    leaver l = {0, 0, 0};
    test_dir_make();
    zp_run *run = begin_run(c, p, "[600]", &ro);
    /* The workers join late: once items wait for them. */
    assert_true(stats_soon(run, has_items));
    l.a = start_worker(ep, NULL, NULL);
    l.b = start_worker(ep, NULL, NULL);
    /* No item is done before both are in and hold some: both serve. */
    assert_true(stats_soon(run, has_two_workers));
    gate_open();
    const msgpack_object *out;
    while (zp_run_next(run, &out)) {
        keep(c, out);
        leave_when_both_served(c, &l);
    }
    end_run(c);
    print_message("first run: %lld ms; worker %d served %zu items (left "
                  "after %zu outputs), worker %d served %zu\n",
                  (long long)c->ms, (int)l.a, served_by(c, l.a), l.at, (int)l.b,
                  served_by(c, l.b));
    assert_run_ok(c);
    assert_each_once(c, 600, 1, -1);
    assert_true(l.at > 0);
    assert_int_equal(served_by(c, l.a) + served_by(c, l.b), 600);
    reap_worker(l.a); /* it left when told to, cleanly */
    collected_fini(c);

    /* The worker that stayed serves the next run on the same endpoint. */
    collect_with(p, "[50]", &ro, c, NULL, NULL);
    print_message("second run: %lld ms\n", (long long)c->ms);
    assert_run_ok(c);
    assert_each_once(c, 50, 1, -1);
    assert_int_equal(served_by(c, l.b), 50);
    stop_worker(l.b);
    collected_fini(c);
    test_dir_remove();
}

static void
test_run_without_remote_worker_fails_after_wait_workers_ms(void **state)
{
    fixture *f = *state;
    char ep[64];
    collected *c = &f->c;
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 300};
    zp_pipeline *p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                                    zp_task(whoami, .mode = ZP_REMOTE));
    collect_with(p, "[10]", &ro, c, NULL, NULL);
    assert_int_not_equal(c->rc, 0);
    assert_error_has(c, "no worker");
    assert_error_has(c, "whoami");
    assert_error_has(c, "within 300 ms"); /* its own wait, not the default */
    assert_int_equal(c->n, 0);
    if (c->ms < 300)
        fail_msg("the run gave up after %lld ms, before its 300",
                 (long long)c->ms);
    collected_fini(c);
}

/* The only worker, paused (SIGSTOP) for 4 s: declared dead after 3 s,
 * and taken back as soon as it speaks again, within the 5 s the stage
 * waits for a worker (it used to say HELLO again only after 10 s of
 * silence, and the run failed). */
static void test_a_paused_worker_is_taken_back_when_it_returns(void **state)
{
    fixture *f = *state;
    char ep[64];
    collected *c = &f->c;
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 5000};
    zp_pipeline *p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                                    zp_task(whoami, .mode = ZP_REMOTE));
    zp_run *run = begin_run(c, p, "[1000]", &ro);
    pid_t w = start_worker(ep, NULL, NULL);
    const msgpack_object *out;
    bool paused = false;
    int64_t resumed = 0, back = -1;
    while (zp_run_next(run, &out)) {
        keep(c, out);
        if (!paused && c->n == 100) { /* it is serving: pause it */
            paused = true;
            kill(w, SIGSTOP);
            nap_us(4000 * 1000);
            kill(w, SIGCONT);
            resumed = now_ms();
        }
        if (paused && back < 0 && c->n > 100 && c->pid[c->n - 1] == w)
            back = now_ms() - resumed;
    }
    end_run(c);
    print_message("served again %lld ms after its return; run %lld ms\n",
                  (long long)back, (long long)c->ms);
    stop_worker(w);
    assert_true(paused);
    assert_run_ok(c);
    assert_each_once(c, 1000, 1, -1);
    assert_int_equal(served_by(c, w), 1000);
    collected_fini(c);
}

/* The latency proxy from `port` on to `target`, adding `ms` each way; it
 * dies with this test process. */
static pid_t start_proxy(int port, int target, int ms)
{
    char a[16], b[16], d[16];
    snprintf(a, sizeof a, "%d", port);
    snprintf(b, sizeof b, "%d", target);
    snprintf(d, sizeof d, "%d", ms);
    char *argv[] = {LATENCY_PROXY, a, b, d, NULL};
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (freopen("/dev/null", "w", stdout) != NULL && getppid() == parent)
            execv(LATENCY_PROXY, argv);
        _exit(127);
    }
    assert_true(pid > 0);
    return pid;
}

static int port_of(const char *endpoint)
{
    return atoi(strrchr(endpoint, ':') + 1);
}

static void
test_a_worker_far_away_holds_enough_items_to_cover_the_trip(void **state)
{
    fixture *f = *state;
    char ep[64], far[64];
    collected *c = &f->c;
    free_endpoint(ep, sizeof ep);
    free_endpoint(far, sizeof far);
    pid_t proxy = start_proxy(port_of(far), port_of(ep), 20);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
    zp_pipeline *p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                                    zp_task(twice, .mode = ZP_REMOTE));
    zp_run *run = begin_run(c, p, "[20000]", &ro);
    pid_t w = start_worker(far, NULL, NULL);
    const msgpack_object *out;
    while (zp_run_next(run, &out))
        keep(c, out);
    end_run(c);
    stop_worker(w);
    kill(proxy, SIGKILL);
    waitpid(proxy, NULL, 0);
    assert_run_ok(c);
    assert_each_once(c, 20000, 2, -1);
    /* 40 ms a round trip: trivial items must not wait for it one by one
     * (they did: 2 in flight, 50 items/s); its window covers it. */
    print_message("%llu items in flight at most\n",
                  (unsigned long long)c->st.peak_in_flight);
    assert_true(c->st.peak_in_flight >= 1000);
    collected_fini(c);
}

/* ---- Several remote stages, pools, tasks only workers have ---------------
 */

/* Asserts that the process of every output's stage 1 is one of `in[0..2)`
 * (pool `name`), and that of stage 2 one of `in2[0..2)`. */
static void assert_served_in(const collected *c, const pid_t in[2],
                             const pid_t in2[2])
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->pid[i] != in[0] && c->pid[i] != in[1])
            fail_msg("item %lld went through process %lld at stage 1, "
                     "which is none of its workers (%d, %d)",
                     (long long)c->v[i], (long long)c->pid[i], (int)in[0],
                     (int)in[1]);
        if (c->pid2[i] != in2[0] && c->pid2[i] != in2[1])
            fail_msg("item %lld went through process %lld at stage 2, "
                     "which is none of its workers (%d, %d)",
                     (long long)c->v[i], (long long)c->pid2[i], (int)in2[0],
                     (int)in2[1]);
    }
}

static void
test_two_remote_stages_share_one_endpoint_each_with_its_pool(void **state)
{
    fixture *f = *state;
    char ep[64];
    collected *c = &f->c;
    pid_t io[2], cpu[2];
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
    /* Every worker has `tag`: only the pools keep them to their stage. */
    for (int i = 0; i < 2; i++) {
        io[i] = start_pool_worker(ep, "io");
        cpu[i] = start_pool_worker(ep, "cpu");
    }
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(tag, .mode = ZP_REMOTE, .pool = "io"),
                zp_task(tag, .mode = ZP_REMOTE, .pool = "cpu"));
    collect_with(p, "[10000]", &ro, c, NULL, NULL);
    assert_run_ok(c);
    assert_each_once(c, 10000, 1, -1);
    assert_served_in(c, io, cpu);
    collected_fini(c);
    for (int i = 0; i < 2; i++) {
        stop_worker(io[i]);
        stop_worker(cpu[i]);
    }
}

/* The kill test's hook: worker a is killed once the run is well under way,
 * and worker b told to leave a little later. */
typedef struct culler {
    pid_t a, b;
    size_t killed_at, left_at; /* outputs read then, or 0 */
} culler;

static void cull(collected *c, void *ctx)
{
    culler *k = ctx;
    if (k->killed_at == 0 && c->n >= 100) {
        assert_int_equal(kill(k->a, SIGKILL), 0);
        k->killed_at = c->n;
    } else if (k->left_at == 0 && c->n >= 200) {
        assert_int_equal(kill(k->b, SIGTERM), 0);
        k->left_at = c->n;
    }
}

static void
test_a_worker_that_dies_or_leaves_is_lost_by_every_stage(void **state)
{
    fixture *f = *state;
    char ep[64];
    collected *c = &f->c;
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
    /* Three workers serve both stages; one dies, one leaves, one stays. */
    culler k = {start_worker(ep, NULL, NULL), start_worker(ep, NULL, NULL), 0,
                0};
    pid_t stays = start_worker(ep, NULL, NULL);
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(tag, .mode = ZP_REMOTE, .bind = "2000"),
                zp_task(tag, .mode = ZP_REMOTE, .bind = "2000"));
    collect_with(p, "[1000]", &ro, c, cull, &k);
    print_message("killed %d after %zu outputs, %d left after %zu; %zu "
                  "outputs in %lld ms\n",
                  (int)k.a, k.killed_at, (int)k.b, k.left_at, c->n,
                  (long long)c->ms);
    assert_run_ok(c);
    assert_each_once(c, 1000, 1, -1);
    assert_true(k.left_at > 0 && k.left_at < 1000);
    int status;
    assert_true(wait_exit(k.a, DEADLINE_MS, &status));
    forget_worker(k.a);
    reap_worker(k.b);
    /* Each stage gave the items of the workers it lost to the one left. */
    size_t late = 0;
    for (size_t i = k.left_at; i < c->n; i++)
        late += c->pid[i] == stays && c->pid2[i] == stays;
    assert_true(late > 0);
    stop_worker(stays);
    collected_fini(c);
}

static void test_a_remote_only_task_needs_no_task_here(void **state)
{
    fixture *f = *state;
    char ep[64];
    collected *c = &f->c;
    unsigned char seen[100] = {0};
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
    assert_null(zp_lookup("only_in_workers")); /* the workers' alone */
    pid_t w = start_worker(ep, NULL, NULL);
    zp_pipeline *p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                                    zp_remote_task("only_in_workers"));
    assert_null(zp_pipeline_error(p));
    collect_with(p, "[100]", &ro, c, NULL, NULL);
    assert_run_ok(c);
    assert_int_equal(c->n, 100);
    for (size_t i = 0; i < c->n; i++) {
        assert_true(c->v[i] >= 1000 && c->v[i] < 1100);
        assert_int_equal(seen[c->v[i] - 1000]++, 0);
    }
    stop_worker(w);
    collected_fini(c);
}

static void
test_a_remote_task_no_worker_serves_fails_the_run_naming_it(void **state)
{
    fixture *f = *state;
    char ep[64], want[160];
    collected *c = &f->c;
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
    pid_t w = start_pool_worker(ep, "io");
    /* The worker is there, and serves `tag` in its pool... */
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(tag, .mode = ZP_REMOTE, .pool = "io"));
    collect_with(p, "[10]", &ro, c, NULL, NULL);
    assert_run_ok(c);
    collected_fini(c);
    /* ... but no other task, and in no other pool. */
    ro.wait_workers_ms = 300;
    zp_pipeline_free(f->p);
    p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                       zp_remote_task("nobody_has_this"));
    collect_with(p, "[10]", &ro, c, NULL, NULL);
    assert_int_equal(c->rc, ZP_ETASK);
    snprintf(want, sizeof want,
             "task 'nobody_has_this': no worker serving it connected to %s "
             "within 300 ms",
             ep);
    assert_error_has(c, want);
    assert_int_equal(c->n, 0);
    collected_fini(c);
    zp_pipeline_free(f->p);
    p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                       zp_remote_task("tag", .pool = "gpu"));
    collect_with(p, "[10]", &ro, c, NULL, NULL);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'tag': no worker serving it in pool 'gpu' "
                        "connected to");
    collected_fini(c);
    stop_worker(w);
}

static void keygen(const char *name, char *pub, char *secret, size_t len)
{
    char path[96], *why = NULL;
    snprintf(path, sizeof path, "%s/%s", key_dir, name);
    if (zp__curve_keygen(path, &why) != 0)
        fail_msg("keygen %s: %s", path, why);
    snprintf(pub, len, "%s.pub", path);
    snprintf(secret, len, "%s.key", path);
}

static void
test_curve_admits_allowed_worker_and_refuses_unknown_key(void **state)
{
    fixture *f = *state;
    char ep[64], server_pub[128], server_key[128], good_pub[128], good_key[128],
        bad_pub[128], bad_key[128];
    collected *c = &f->c;
    if (!zmq_has("curve"))
        skip();
    snprintf(key_dir, sizeof key_dir, "/tmp/zpipe-ptest-XXXXXX");
    assert_non_null(mkdtemp(key_dir));
    note_dir(key_dir);
    keygen("server", server_pub, server_key, sizeof server_pub);
    keygen("good", good_pub, good_key, sizeof good_pub);
    keygen("bad", bad_pub, bad_key, sizeof bad_pub);
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep,
                      .wait_workers_ms = DEADLINE_MS,
                      .curve_secret = server_key,
                      .curve_allow = good_pub};
    zp_pipeline *p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                                    zp_task(whoami, .mode = ZP_REMOTE));
    pid_t bad = start_worker(ep, server_pub, bad_key);
    pid_t good = start_worker(ep, server_pub, good_key);
    collect_with(p, "[100]", &ro, c, NULL, NULL);
    assert_run_ok(c);
    assert_each_once(c, 100, 1, -1);
    assert_int_equal(served_by(c, good), 100);
    collected_fini(c);

    /* Without the allowed worker, nobody serves the run. */
    stop_worker(good);
    ro.wait_workers_ms = 500;
    collect_with(p, "[10]", &ro, c, NULL, NULL);
    assert_int_not_equal(c->rc, 0);
    assert_error_has(c, "no worker");
    assert_int_equal(c->n, 0);
    stop_worker(bad);
    collected_fini(c);
    remove_key_dir();
}

/* ---- main ---------------------------------------------------------------- */

/* A worker forgets the stages of runs that are over: one connected
 * through run after run (each binding a 512 KB value to its stage) stays
 * near where the first runs took it. The value is large so that what the
 * allocator keeps (the sanitizer builds' most of all) is small beside
 * what keeping the stages would cost. */
static void test_a_worker_through_many_runs_stays_flat(void **state)
{
    fixture *f = *state;
    enum { RUNS = 40, WARM = 10, BIND = 512 << 10 };
    char ep[64];
    collected *c = &f->c;
    long before = 0;
    free_endpoint(ep, sizeof ep);
    char *bind = malloc(BIND + 3);
    assert_non_null(bind);
    memset(bind, 'b', BIND + 2);
    bind[0] = bind[BIND + 1] = '"';
    bind[BIND + 2] = '\0';
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
    pid_t w = start_measured_worker(ep);
    f->p = zp_pipe(zp_task(numbers, .branch = true),
                   zp_task(twice, .mode = ZP_REMOTE, .bind = bind));
    free(bind);
    assert_null(zp_pipeline_error(f->p));
    for (int i = 0; i < RUNS; i++) {
        if (i == WARM)
            before = rss_kib(w);
        collect_with(f->p, "[1]", &ro, c, NULL, NULL);
        assert_run_ok(c);
        assert_int_equal(c->n, 1);
        collected_fini(c);
    }
    long after = rss_kib(w);
    print_message("worker RSS %ld KiB after %d runs, %ld KiB after %d\n",
                  before, WARM, after, RUNS);
    stop_worker(w);
    /* Each run's stage kept would be 512 KB more: 30 runs, 15 MB. */
    assert_true(after - before < 4096);
}

int main(int argc, char **argv)
{
    int rc = process_tests_init("remote_test", &argc, &argv);
    if (rc != 0)
        return rc;
    const struct CMUnitTest tests[] = {
        TEST(test_remote_workers_join_late_share_the_load_and_leave_early),
        TEST(test_run_without_remote_worker_fails_after_wait_workers_ms),
        TEST(test_a_paused_worker_is_taken_back_when_it_returns),
        TEST(test_a_worker_far_away_holds_enough_items_to_cover_the_trip),
        TEST(test_curve_admits_allowed_worker_and_refuses_unknown_key),
        TEST(test_two_remote_stages_share_one_endpoint_each_with_its_pool),
        TEST(test_a_worker_that_dies_or_leaves_is_lost_by_every_stage),
        TEST(test_a_remote_only_task_needs_no_task_here),
        TEST(test_a_remote_task_no_worker_serves_fails_the_run_naming_it),
        TEST(test_a_worker_through_many_runs_stays_flat),
        cmocka_unit_test(test_no_child_process_or_temp_dir_is_left_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
