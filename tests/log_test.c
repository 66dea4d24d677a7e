/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the library's log (core/log.c) and its hook, zp_log_set():
 * the hook gets the library's lines with their levels, from the listener's
 * thread as from zp_init(); NULL gives them back to stderr byte for byte;
 * the rate limit holds through the hook; lines from many threads all
 * arrive, whole, one at a time; a long line arrives whole; a line said
 * inside the hook goes to stderr instead of hanging; a task that ends its
 * call the wrong way (zp_done in a task that is not async, zp_done twice)
 * is warned of through the hook.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include <cmocka.h>

#include "core/clock.h"
#include "core/log.h"
#include "tests/testutil.h"
#include "transport/link.h"
#include "transport/listener.h"

#define THREADS 8
#define LINES 200 /* per thread */

/* What a hook heard. */
typedef struct heard {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n;                   /* lines heard */
    zp_log_level level;      /* of the last one */
    char last[4096];         /* the last one */
    int per_thread[THREADS]; /* "zpipe: thread T line L" lines, by T */
    atomic_int inside;       /* hooks running now */
    atomic_bool overlapped;  /* two ran at once */
    bool echo;               /* say a line from inside the hook */
} heard;

static void hear(void *user, zp_log_level level, const char *line);

/* Sets the hook to `hear`, into *h. */
static void hook_on(heard *h)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->lock, NULL);
    pthread_cond_init(&h->cond, NULL);
    zp_log_set(hear, h);
}

/* Gives the lines back to stderr; no two hooks ever ran at once. */
static void hook_off(heard *h)
{
    zp_log_set(NULL, NULL);
    assert_false(atomic_load(&h->overlapped));
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
}

static void hear(void *user, zp_log_level level, const char *line)
{
    heard *h = user;
    int t, l;
    if (atomic_fetch_add(&h->inside, 1) != 0)
        atomic_store(&h->overlapped, true);
    pthread_mutex_lock(&h->lock);
    h->n++;
    h->level = level;
    snprintf(h->last, sizeof h->last, "%s", line);
    if (sscanf(line, "zpipe: thread %d line %d", &t, &l) == 2 && t >= 0 &&
        t < THREADS)
        h->per_thread[t]++;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->lock);
    if (h->echo)
        zp__log(ZP_LOG_INFO, "zpipe: said inside the hook");
    atomic_fetch_sub(&h->inside, 1);
}

/* Waits up to 10 s for the hook to have heard n lines. */
static bool heard_soon(heard *h, int n)
{
    struct timespec t;
    deadline_in(&t, 10000);
    pthread_mutex_lock(&h->lock);
    while (h->n < n)
        if (pthread_cond_timedwait(&h->cond, &h->lock, &t) != 0)
            break;
    int got = h->n;
    pthread_mutex_unlock(&h->lock);
    return got >= n;
}

/* ---- stderr, captured through a pipe ------------------------------------- */

typedef struct capture {
    int pipe[2];
    int saved; /* the real stderr */
} capture;

static void capture_start(capture *c)
{
    fflush(stderr);
    assert_int_equal(pipe(c->pipe), 0);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_true(dup2(c->pipe[1], STDERR_FILENO) >= 0);
    close(c->pipe[1]);
}

/* Puts stderr back and reads what was written to it into buf. */
static void capture_end(capture *c, char *buf, size_t size)
{
    fflush(stderr);
    assert_true(dup2(c->saved, STDERR_FILENO) >= 0);
    close(c->saved);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < size && (r = read(c->pipe[0], buf + n, size - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(c->pipe[0]);
}

/* ---- zp_init, in a child process ----------------------------------------- */

/* A hook that writes "LEVEL LINE\n" to the descriptor in *user. */
static void write_down(void *user, zp_log_level level, const char *line)
{
    dprintf(*(int *)user, "%d %s\n", (int)level, line);
}

/* Runs zp_init() with a bad --zp-threads in a child, its stderr and (with
 * `hook`) its hook writing to a pipe; returns what came through. */
static void bad_worker_flags(bool hook, char *buf, size_t size)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char *args[] = {"log_test",     "--zp-worker", "tcp://127.0.0.1:9",
                        "--zp-threads", "0",           NULL};
        char **argv = args;
        int argc = 5;
        dup2(fds[1], STDERR_FILENO);
        if (hook)
            zp_log_set(write_down, &fds[1]);
        zp_init(&argc, &argv);
        _exit(99); /* zp_init exits on a bad flag */
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < size && (r = read(fds[0], buf + n, size - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
}

static void
test_zp_init_errors_reach_the_hook_and_stderr_unchanged(void **state)
{
    (void)state;
    char got[512];
    bad_worker_flags(false, got, sizeof got);
    assert_string_equal(got, "zpipe worker: --zp-threads must be 1 to 4096\n");
    bad_worker_flags(true, got, sizeof got);
    assert_string_equal(got,
                        "3 zpipe worker: --zp-threads must be 1 to 4096\n");
}

/* ---- The hook ------------------------------------------------------------ */

static void test_a_dropped_message_reaches_the_hook_as_a_warning(void **state)
{
    (void)state;
    heard h;
    hook_on(&h);
    char *why = NULL;
    void *zctx = zp__zctx_new(16, true);
    assert_non_null(zctx);
    zp__listener *l =
        zp__listener_new(zctx, "tcp://127.0.0.1:*", NULL, NULL, 1, &why);
    assert_non_null(l);
    zp__hub *hub = NULL;
    assert_int_equal(zp__listener_join(l, 0, &hub, &why), 0);
    /* A peer that never said HELLO sends what is not msgpack at all. */
    void *dealer = zmq_socket(zctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(dealer, zp__hub_endpoint(hub)), 0);
    assert_int_equal(zmq_send(dealer, "\xc1", 1, 0), 1);
    assert_true(heard_soon(&h, 1));
    pthread_mutex_lock(&h.lock);
    assert_int_equal(h.level, ZP_LOG_WARN);
    assert_true(strncmp(h.last, "zpipe: dropped a message: ", 26) == 0);
    assert_null(strchr(h.last, '\n'));
    pthread_mutex_unlock(&h.lock);
    zmq_close(dealer);
    zp__hub_destroy(&hub);
    zp__listener_destroy(&l);
    zp__zctx_term(zctx);
    hook_off(&h);
}

static void test_null_gives_the_lines_back_to_stderr(void **state)
{
    (void)state;
    static zp__ratelog rl = ZP__RATELOG_INIT;
    heard h;
    hook_on(&h);
    zp__log(ZP_LOG_ERROR, "zpipe: to the hook");
    hook_off(&h);
    capture c;
    char got[512];
    capture_start(&c);
    zp__log(ZP_LOG_ERROR, "zpipe: cannot accept more connections on %s: %s",
            "tcp://*:5555", "too many open files (limit 1024)");
    assert_true(zp__ratelog_say(&rl, "dropped a message: %s", "no type"));
    capture_end(&c, got, sizeof got);
    assert_string_equal(got, "zpipe: cannot accept more connections on "
                             "tcp://*:5555: too many open files (limit 1024)\n"
                             "zpipe: dropped a message: no type\n");
    assert_int_equal(h.n, 1);
    assert_string_equal(h.last, "zpipe: to the hook");
    assert_int_equal(h.level, ZP_LOG_ERROR);
}

static void test_the_rate_limit_holds_through_the_hook(void **state)
{
    (void)state;
    static zp__ratelog rl = ZP__RATELOG_INIT;
    heard h;
    hook_on(&h);
    assert_true(zp__ratelog_say(&rl, "worker %d stopped answering", 1));
    for (int i = 0; i < 99; i++)
        assert_false(zp__ratelog_say(&rl, "worker %d stopped answering", 1));
    assert_int_equal(h.n, 1);
    assert_int_equal(h.level, ZP_LOG_WARN);
    assert_string_equal(h.last, "zpipe: worker 1 stopped answering");
    /* As if the last line had been said long enough ago. */
    pthread_mutex_lock(&rl.lock);
    rl.last = zp__now_ns() - (ZP__RATELOG_SECONDS + 1) * 1000000000ull;
    pthread_mutex_unlock(&rl.lock);
    assert_true(zp__ratelog_say(&rl, "worker %d stopped answering", 1));
    hook_off(&h);
    assert_int_equal(h.n, 2);
    assert_string_equal(h.last,
                        "zpipe: worker 1 stopped answering (and 99 more like "
                        "it since the last such line, 5 s or more ago)");
}

/* ---- A task's mistakes -------------------------------------------------- */

/* Ends its call with zp_done(), which only async tasks may do. */
static int done_but_not_async(zp_call *c)
{
    zp_done(c);
    return zp_emit_obj(c, zp_input(c));
}

/* Ends its call twice. */
static void done_twice(zp_call *c, uv_loop_t *loop)
{
    (void)loop;
    zp_emit_obj(c, zp_input(c));
    zp_done(c);
    zp_done(c);
}

/* Runs p (and frees it) on one item, which comes out, while the hook
 * listens; the hook heard `line` alone, as a warning. */
static void run_warns(zp_pipeline *p, const char *line)
{
    const msgpack_object *o;
    int n = 0;
    heard h;
    hook_on(&h);
    zp_run *r = zp_start(p, "[7]");
    while (zp_run_next(r, &o))
        n++;
    assert_int_equal(zp_finish(r), 0);
    zp_run_free(r);
    zp_pipeline_free(p);
    hook_off(&h);
    assert_int_equal(n, 1);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.level, ZP_LOG_WARN);
    assert_string_equal(h.last, line);
}

static void test_zp_done_in_a_task_that_is_not_async_is_warned_of(void **state)
{
    (void)state;
    run_warns(zp_task(done_but_not_async),
              "zpipe: zp_done() called by task 'done_but_not_async', which "
              "is not an async task; ignored");
}

static void test_a_call_ended_twice_is_warned_of(void **state)
{
    (void)state;
    run_warns(zp_async_task(done_twice),
              "zpipe: task 'done_twice' ended a call that had already ended "
              "(zp_done or zp_fail twice); ignored");
}

/* Says LINES lines as thread number (intptr_t)arg. */
static void *say_lines(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < LINES; i++)
        zp__log(ZP_LOG_INFO, "zpipe: thread %d line %d", t, i);
    return NULL;
}

static void test_lines_from_many_threads_all_arrive_one_at_a_time(void **state)
{
    (void)state;
    heard h;
    pthread_t threads[THREADS];
    hook_on(&h);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(
            pthread_create(&threads[t], NULL, say_lines, (void *)(intptr_t)t),
            0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);
    hook_off(&h);
    assert_int_equal(h.n, THREADS * LINES);
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(h.per_thread[t], LINES);
}

static void test_a_long_line_arrives_whole(void **state)
{
    (void)state;
    char word[3001];
    heard h;
    memset(word, 'x', sizeof word - 1);
    word[sizeof word - 1] = '\0';
    hook_on(&h);
    zp__log(ZP_LOG_ERROR, "zpipe: bad pool name '%s'", word);
    hook_off(&h);
    assert_int_equal(h.n, 1);
    assert_int_equal(strlen(h.last), strlen("zpipe: bad pool name ''") + 3000);
    assert_true(strncmp(h.last + 22, word, 3000) == 0);
}

static void test_a_line_said_inside_the_hook_goes_to_stderr(void **state)
{
    (void)state;
    heard h;
    capture c;
    char got[512];
    hook_on(&h);
    h.echo = true;
    capture_start(&c);
    zp__log(ZP_LOG_WARN, "zpipe: to the hook");
    capture_end(&c, got, sizeof got);
    hook_off(&h);
    assert_int_equal(h.n, 1);
    assert_string_equal(h.last, "zpipe: to the hook");
    assert_string_equal(got, "zpipe: said inside the hook\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        /* First, while the process has one thread: it forks. */
        cmocka_unit_test(
            test_zp_init_errors_reach_the_hook_and_stderr_unchanged),
        cmocka_unit_test(test_a_dropped_message_reaches_the_hook_as_a_warning),
        cmocka_unit_test(test_null_gives_the_lines_back_to_stderr),
        cmocka_unit_test(test_the_rate_limit_holds_through_the_hook),
        cmocka_unit_test(test_lines_from_many_threads_all_arrive_one_at_a_time),
        cmocka_unit_test(test_a_long_line_arrives_whole),
        cmocka_unit_test(test_a_line_said_inside_the_hook_goes_to_stderr),
        cmocka_unit_test(test_zp_done_in_a_task_that_is_not_async_is_warned_of),
        cmocka_unit_test(test_a_call_ended_twice_is_warned_of),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
