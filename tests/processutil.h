/* SPDX-License-Identifier: MIT */
/*
 * What the test programs of stages whose workers are other processes
 * share: process_test (process workers at work), process_fault_test
 * (process workers that crash, are killed or hang), process_hostile_test
 * (peers on a run's port that break the protocol, keep their items, flood
 * it or send garbage) and remote_test (remote workers that come, go,
 * pause, sit far away, serve pools, or need CURVE keys). Process workers
 * (mode = ZP_PROCESS, children the coordinator spawns and supervises) and
 * remote workers (mode = ZP_REMOTE, processes that connect to the run's
 * listening endpoint) are each program re-executed in worker mode, which
 * is why main() calls process_tests_init() (zp_init()) first and why
 * every task that crosses a process boundary is here, registered with
 * ZP_TASK, in each program. Header-only (static inline), as testutil.h.
 *
 * Waiting is for events with a deadline (a child's exit through a pidfd,
 * an output of the run, a figure of the run's statistics, a file that
 * opens a gate); sleeping is only for playing slow work. Workers die at
 * given items of a run, not at given times. The last test of each
 * program checks that nothing is left behind: no child process, no
 * temporary directory.
 */
#ifndef ZP_TESTS_PROCESSUTIL_H
#define ZP_TESTS_PROCESSUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "transport/proto.h"
#include "zpipe.h"

/* How long a test waits for an event before it calls it a failure. */
#define DEADLINE_MS 30000

extern char **environ;

/* ---- Time -------------------------------------------------------------- */

static inline int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- Tasks --------------------------------------------------------------
 * Every task but `numbers` (testutil.h) runs in worker processes, which find it
 * by name.
 */

static inline int64_t item(zp_call *call)
{
    return zp_input(call)->via.i64;
}

ZP_TASK(twice)
{
    return zp_emit_int(call, 2 * item(call));
}

/* twice, taking 200 us of the task's own time an item. */
ZP_TASK(slow_twice)
{
    nap_us(200);
    return zp_emit_int(call, 2 * item(call));
}

/* The variable that names the tests' private directory to the worker
 * processes, which inherit it: the gate of whoami_at_the_gate and the
 * marks of twice_dying_once are files in it. */
#define TEST_DIR_VAR "ZP_TEST_DIR"

/* "$ZP_TEST_DIR/name" into out; false when there is no such directory. */
static inline bool in_test_dir(const char *name, char *out, size_t len)
{
    const char *dir = getenv(TEST_DIR_VAR);
    return dir != NULL && snprintf(out, len, "%s/%s", dir, name) < (int)len;
}

/* twice, but the worker process dies of SIGKILL the first time it is on
 * item 750, 1500, 2250 or 3000 (a file marks that it did). */
ZP_TASK(twice_dying_once)
{
    int64_t x = item(call);
    char mark[128], name[32];
    snprintf(name, sizeof name, "died-on-%lld", (long long)x);
    if (x > 0 && x <= 3000 && x % 750 == 0 &&
        in_test_dir(name, mark, sizeof mark)) {
        int fd = open(mark, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd >= 0) {
            close(fd);
            raise(SIGKILL);
        }
    }
    return zp_emit_int(call, 2 * x);
}

ZP_TASK(fail_on_7)
{
    int64_t x = item(call);
    if (x == 7)
        return zp_fail(call, "seven is not welcome");
    return zp_emit_int(call, x);
}

/* Dies of a real SIGSEGV, without a core file, also under AddressSanitizer
 * (whose own SIGSEGV handler would turn the signal into an exit status). */
static inline void crash(void)
{
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
}

ZP_TASK(segv_on_7)
{
    int64_t x = item(call);
    if (x == 7)
        crash();
    return zp_emit_int(call, x);
}

/* Item 3 hangs for longer than any run may take (RUN_DEADLINE_MS): only
 * its timeout ends it. */
ZP_TASK(hang_on_3)
{
    int64_t x = item(call);
    if (x == 3)
        nap_us(600L * 1000 * 1000);
    return zp_emit_int(call, x);
}

/* Emits [the serving process, x], after 2 ms of work. */
ZP_TASK(segv_on_4321)
{
    int64_t x = item(call);
    if (x == 4321)
        crash();
    return zp_emit_int(call, x);
}

/* Item 0 takes longer than a worker may stay silent (3 s). */
ZP_TASK(long_first)
{
    if (item(call) == 0)
        nap_us(3500L * 1000);
    return zp_emit_int(call, item(call));
}

/* A bin of `n` zero bytes. */
static inline int emit_bin(zp_call *call, size_t n)
{
    char *b = calloc(1, n);
    if (b == NULL)
        return zp_fail(call, "out of memory");
    msgpack_packer *pk = zp_out(call);
    msgpack_pack_bin(pk, n);
    msgpack_pack_bin_body(pk, b, n);
    free(b);
    return zp_emit(call);
}

/* [n, size]: n bins of `size` bytes. */
ZP_TASK(bins)
{
    const msgpack_object *a = zp_input(call)->via.array.ptr;
    for (uint64_t i = 0; i < a[0].via.u64; i++)
        if (emit_bin(call, a[1].via.u64) != 0)
            return -1;
    return 0;
}

ZP_TASK(size_of)
{
    return zp_emit_int(call, (int64_t)zp_input(call)->via.bin.size);
}

/* x -> a bin larger than any message may be. */
ZP_TASK(huge_output)
{
    return emit_bin(call, ZP__PROTO_MAX_MSG + 1000);
}

ZP_TASK(whoami)
{
    int64_t x = item(call);
    nap_us(2000);
    msgpack_packer *pk = zp_out(call);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, (int64_t)getpid());
    msgpack_pack_int64(pk, x);
    return zp_emit(call);
}

/* whoami, once the gate (the file "open" in the test directory) exists,
 * or after DEADLINE_MS. */
ZP_TASK(whoami_at_the_gate)
{
    char gate[128];
    bool closed = in_test_dir("open", gate, sizeof gate);
    for (int64_t end = now_ms() + DEADLINE_MS;
         closed && access(gate, F_OK) != 0 && now_ms() < end;)
        nap_us(1000);
    return whoami(call);
}

/* x -> [pid, x], and [...] -> [..., pid]: the processes that served each
 * stage, in order, after the bind value's microseconds of work, if any. */
ZP_TASK(tag)
{
    const msgpack_object *in = zp_input(call), *us = zp_bound(call);
    msgpack_packer *pk = zp_out(call);
    int64_t pid = (int64_t)getpid();
    if (us != NULL)
        nap_us((long)us->via.u64);
    if (in->type != MSGPACK_OBJECT_ARRAY) { /* the first stage */
        msgpack_pack_array(pk, 2);
        msgpack_pack_int64(pk, pid);
        msgpack_pack_object(pk, *in);
        return zp_emit(call);
    }
    msgpack_pack_array(pk, in->via.array.size + 1);
    for (uint32_t i = 0; i < in->via.array.size; i++)
        msgpack_pack_object(pk, in->via.array.ptr[i]);
    msgpack_pack_int64(pk, pid);
    return zp_emit(call);
}

/* Registered in worker processes only (see main()): the coordinator of the
 * tests does not have it. x -> x + 1000. */
static inline int only_in_workers(zp_call *call)
{
    return zp_emit_int(call, zp_input(call)->via.i64 + 1000);
}

/* ---- Child processes ---------------------------------------------------- */

/* Directories of process workers' endpoints seen during the tests. */
static pthread_mutex_t dirs_lock = PTHREAD_MUTEX_INITIALIZER;
static char seen_dirs[64][128];
static size_t nseen_dirs;

static inline void note_dir(const char *dir)
{
    pthread_mutex_lock(&dirs_lock);
    bool known = false;
    for (size_t i = 0; i < nseen_dirs && !known; i++)
        known = strcmp(seen_dirs[i], dir) == 0;
    if (!known && nseen_dirs < sizeof seen_dirs / sizeof seen_dirs[0])
        snprintf(seen_dirs[nseen_dirs++], sizeof seen_dirs[0], "%s", dir);
    pthread_mutex_unlock(&dirs_lock);
}

static inline ssize_t read_small_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return (ssize_t)n;
}

/* Whether `pid` runs in worker mode; notes its ipc directory, if any. */
static inline bool is_worker(long pid)
{
    char path[64], cmd[4096];
    snprintf(path, sizeof path, "/proc/%ld/cmdline", pid);
    ssize_t n = read_small_file(path, cmd, sizeof cmd);
    bool worker = false;
    for (ssize_t i = 0; i < n; i += (ssize_t)strlen(cmd + i) + 1) {
        if (strcmp(cmd + i, "--zp-worker") != 0)
            continue;
        worker = true;
        char dir[128];
        const char *ep = cmd + i + strlen(cmd + i) + 1, *slash;
        if (ep >= cmd + n || strncmp(ep, "ipc://", 6) != 0 ||
            (slash = strrchr(ep, '/')) == NULL)
            continue; /* ipc://DIR/sK: note DIR */
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - ep - 6), ep + 6);
        note_dir(dir);
    }
    return worker;
}

/* This process's living children in worker mode, at most `max`. */
static inline size_t find_workers(pid_t *out, size_t max)
{
    DIR *proc = opendir("/proc");
    struct dirent *e;
    size_t n = 0;
    while (proc != NULL && n < max && (e = readdir(proc)) != NULL) {
        char *end, path[64], stat[512], state;
        long pid = strtol(e->d_name, &end, 10), ppid;
        if (*end != '\0' || pid <= 0)
            continue;
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        if (read_small_file(path, stat, sizeof stat) <= 0)
            continue;
        const char *paren = strrchr(stat, ')'); /* the name may hold any */
        if (paren == NULL || sscanf(paren + 1, " %c %ld", &state, &ppid) != 2 ||
            ppid != (long)getpid() || state == 'Z')
            continue;
        if (is_worker(pid))
            out[n++] = (pid_t)pid;
    }
    if (proc != NULL)
        closedir(proc);
    return n;
}

/* Waits up to `ms` for `pid` to end and reaps it into *status. */
static inline bool wait_exit(pid_t pid, int ms, int *status)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int rc;
        while ((rc = poll(&pfd, 1, ms)) < 0 && errno == EINTR)
            ;
        close(fd);
        return rc == 1 && waitpid(pid, status, 0) == pid;
    }
    for (int64_t end = now_ms() + ms; now_ms() < end; nap_us(5000))
        if (waitpid(pid, status, WNOHANG) == pid)
            return true; /* no pidfd in this kernel: poll the status */
    return false;
}

/* Remote workers started by the tests, killed by the teardown when a test
 * failed before it could stop them. */
static pid_t remote_pids[8];

/*
 * Starts a remote worker: this binary, re-executed as `worker --zp-worker
 * ENDPOINT` and the arguments `more` (NULL-terminated, may be NULL), with
 * no ZPIPE_* variable, so that it is no child worker of a run. fork()
 * rather than posix_spawn(), for PR_SET_PDEATHSIG: the worker dies with
 * this test process instead of reconnecting forever after a crash of the
 * test.
 */
static inline pid_t start_worker_with(const char *endpoint,
                                      const char *const *more)
{
    char *argv[16] = {"worker", "--zp-worker", (char *)endpoint};
    for (size_t i = 0; more != NULL && more[i] != NULL; i++)
        argv[3 + i] = (char *)more[i];
    size_t n = 0, k = 0;
    while (environ[n] != NULL)
        n++;
    char **envp = calloc(n + 1, sizeof *envp);
    assert_non_null(envp);
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "ZPIPE_", 6) != 0)
            envp[k++] = environ[i];
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == parent)
            execve("/proc/self/exe", argv, envp);
        _exit(127);
    }
    free(envp);
    assert_true(pid > 0);
    for (size_t i = 0; i < sizeof remote_pids / sizeof *remote_pids; i++)
        if (remote_pids[i] == 0) {
            remote_pids[i] = pid;
            return pid;
        }
    fail_msg("too many remote workers");
    return -1;
}

/* A remote worker, a CURVE client when server_pub is not NULL. */
static inline pid_t start_worker(const char *endpoint, const char *server_pub,
                                 const char *secret)
{
    const char *curve[] = {"--zp-curve-server", server_pub, "--zp-curve-secret",
                           secret, NULL};
    return start_worker_with(endpoint, server_pub ? curve : NULL);
}

/* A remote worker in the pool `pool`. */
static inline pid_t start_pool_worker(const char *endpoint, const char *pool)
{
    const char *more[] = {"--zp-pool", pool, NULL};
    return start_worker_with(endpoint, more);
}

/* A remote worker whose memory rss_kib() measures: in the sanitizer
 * builds, without the quarantine of freed memory (which would count as
 * resident what the worker gave back). */
static inline pid_t start_measured_worker(const char *endpoint)
{
    const char *had = getenv("ASAN_OPTIONS");
    char *old = had ? strdup(had) : NULL, opts[1024];
    snprintf(opts, sizeof opts, "%s%squarantine_size_mb=0", old ? old : "",
             old ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    pid_t w = start_worker_with(endpoint, NULL);
    if (old != NULL)
        setenv("ASAN_OPTIONS", old, 1);
    else
        unsetenv("ASAN_OPTIONS");
    free(old);
    return w;
}

/* The resident memory of process pid, in KiB. */
static inline long rss_kib(pid_t pid)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    ssize_t n = read_small_file(path, buf, sizeof buf - 1);
    assert_true(n > 0);
    buf[n] = '\0';
    const char *at = strstr(buf, "VmRSS:");
    assert_non_null(at);
    return atol(at + 6);
}

static inline void forget_worker(pid_t pid)
{
    for (size_t i = 0; i < sizeof remote_pids / sizeof *remote_pids; i++)
        if (remote_pids[i] == pid)
            remote_pids[i] = 0;
}

/* Waits for a worker told to leave; asserts it left cleanly. */
static inline void reap_worker(pid_t pid)
{
    int status = 0;
    bool gone = wait_exit(pid, DEADLINE_MS, &status);
    if (gone)
        forget_worker(pid);
    if (!gone)
        fail_msg("remote worker %d did not leave within %d ms", (int)pid,
                 DEADLINE_MS);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("remote worker %d ended with status 0x%x", (int)pid, status);
}

static inline void stop_worker(pid_t pid)
{
    assert_int_equal(kill(pid, SIGTERM), 0);
    reap_worker(pid);
}

static char key_dir[64]; /* the CURVE test's keys, "" when none */

static inline void remove_key_dir(void)
{
    const char *names[] = {"server", "good", "bad"};
    const char *exts[] = {".key", ".pub"};
    char path[128];
    if (key_dir[0] == '\0')
        return;
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < 2; j++) {
            snprintf(path, sizeof path, "%s/%s%s", key_dir, names[i], exts[j]);
            unlink(path);
        }
    rmdir(key_dir);
    key_dir[0] = '\0';
}

/* The test directory, named to the workers started after test_dir_make()
 * (before a run, while no thread of the library reads the environment);
 * "" when there is none. */
static char test_dir[64];

static inline void test_dir_make(void)
{
    snprintf(test_dir, sizeof test_dir, "/tmp/zpipe-ptest-XXXXXX");
    assert_non_null(mkdtemp(test_dir));
    note_dir(test_dir);
    assert_int_equal(setenv(TEST_DIR_VAR, test_dir, 1), 0);
}

/* How many files the test directory holds that start with `prefix`. */
static inline int test_dir_count(const char *prefix)
{
    DIR *d = opendir(test_dir);
    struct dirent *e;
    int n = 0;
    while (d != NULL && (e = readdir(d)) != NULL)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    if (d != NULL)
        closedir(d);
    return n;
}

static inline void gate_open(void)
{
    char gate[128];
    assert_true(in_test_dir("open", gate, sizeof gate));
    FILE *f = fopen(gate, "w");
    assert_non_null(f);
    fclose(f);
}

static inline void test_dir_remove(void)
{
    char path[64 + 256 + 2];
    DIR *d = test_dir[0] != '\0' ? opendir(test_dir) : NULL;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') {
            snprintf(path, sizeof path, "%s/%s", test_dir, e->d_name);
            unlink(path);
        }
    if (d != NULL)
        closedir(d);
    if (test_dir[0] != '\0')
        rmdir(test_dir);
    unsetenv(TEST_DIR_VAR);
    test_dir[0] = '\0';
}

/* A tcp endpoint on 127.0.0.1 with a port the OS just called free. */
static inline void free_endpoint(char *out, size_t len)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(s >= 0);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
    close(s);
    snprintf(out, len, "tcp://127.0.0.1:%d", (int)ntohs(a.sin_port));
}

/* ---- Collecting a run ------------------------------------------------------
 */

/* How long a run may take before the test cancels it and fails. */
#define RUN_DEADLINE_MS 60000

/* Cancels a run that has not ended by its deadline, so that a hung engine
 * fails one test instead of timing out the whole program. */
typedef struct watchdog {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    zp_run *run; /* borrowed */
    bool done;   /* the run ended: stand down */
    bool fired;  /* it cancelled the run */
} watchdog;

static inline void *watchdog_main(void *arg)
{
    watchdog *w = arg;
    struct timespec t;
    int rc = 0;
    deadline_in(&t, RUN_DEADLINE_MS);
    pthread_mutex_lock(&w->lock);
    while (!w->done && rc == 0)
        rc = pthread_cond_timedwait(&w->cond, &w->lock, &t);
    if (!w->done) {
        w->fired = true;
        zp_cancel(w->run);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static inline void watchdog_start(watchdog *w, zp_run *run)
{
    *w = (watchdog){.run = run};
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    assert_int_equal(pthread_create(&w->thread, NULL, watchdog_main, w), 0);
}

/* Stands the watchdog down; whether it had to cancel the run. */
static inline bool watchdog_stop(watchdog *w)
{
    pthread_mutex_lock(&w->lock);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    return w->fired;
}

/* The outputs of a run: integers, [pid, x] pairs from `whoami` or `tag`,
 * or [pid, x, pid2] from two stages of `tag`. */
typedef struct collected {
    int64_t *v;          /* output values (x of a pair)               */
    int64_t *pid;        /* the serving process of a pair, else 0     */
    int64_t *pid2;       /* that of the second stage, else 0          */
    size_t n, cap;       /* outputs                                   */
    _Atomic size_t read; /* n, for other threads                      */
    int rc;              /* zp_finish's result                        */
    char *error;         /* owned copy of zp_error, or NULL           */
    zp_stage_stats st;   /* stage 1 once the run finished             */
    int64_t ms;          /* how long the run took                     */
    zp_run *run;         /* owned while the run goes, else NULL       */
    watchdog dog;        /* guards `run`                              */
} collected;

/* Called after each output; may act on the run (kill a worker...). */
typedef void (*output_hook)(collected *c, void *ctx);

static inline void keep(collected *c, const msgpack_object *out)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 1024;
        c->v = realloc(c->v, c->cap * sizeof *c->v);
        c->pid = realloc(c->pid, c->cap * sizeof *c->pid);
        c->pid2 = realloc(c->pid2, c->cap * sizeof *c->pid2);
        assert_non_null(c->v);
        assert_non_null(c->pid);
        assert_non_null(c->pid2);
    }
    uint32_t size = out->type == MSGPACK_OBJECT_ARRAY ? out->via.array.size : 0;
    const msgpack_object *a = out->via.array.ptr;
    c->v[c->n] = size >= 2 ? a[1].via.i64 : out->via.i64;
    c->pid[c->n] = size >= 2 ? a[0].via.i64 : 0;
    c->pid2[c->n] = size == 3 ? a[2].via.i64 : 0;
    c->n++;
    atomic_store(&c->read, c->n);
}

/* Starts a run of `p` whose outputs and results go to `c`. */
static inline zp_run *begin_run(collected *c, zp_pipeline *p, const char *args,
                                const zp_run_opts *ro)
{
    memset(c, 0, sizeof *c);
    c->ms = now_ms();
    c->run = zp_start_with(p, args, ro);
    assert_non_null(c->run);
    watchdog_start(&c->dog, c->run);
    return c->run;
}

/* Finishes the run, keeps its results and statistics, and frees it;
 * fails the test when the watchdog had to cancel it. */
static inline void end_run(collected *c)
{
    c->rc = zp_finish(c->run);
    bool hung = watchdog_stop(&c->dog);
    c->ms = now_ms() - c->ms;
    const char *e = zp_error(c->run);
    c->error = e ? strdup(e) : NULL;
    if (zp_run_stats(c->run, 1, &c->st) != 0)
        memset(&c->st, 0, sizeof c->st);
    zp_run_free(c->run);
    c->run = NULL;
    if (hung)
        fail_msg("the run did not end within %d ms (%zu outputs): the "
                 "test cancelled it",
                 RUN_DEADLINE_MS, c->n);
}

/* Runs `p` to its end, keeping its outputs and stage 1's statistics. */
static inline void collect_with(zp_pipeline *p, const char *args,
                                const zp_run_opts *ro, collected *c,
                                output_hook hook, void *ctx)
{
    const msgpack_object *out;
    zp_run *run = begin_run(c, p, args, ro);
    while (zp_run_next(run, &out)) {
        keep(c, out);
        if (hook != NULL)
            hook(c, ctx);
    }
    end_run(c);
}

/* Notes the run's ipc directory from its workers' command lines, once. */
static inline void note_workers(collected *c, void *ctx)
{
    pid_t pids[16];
    (void)c;
    if (!*(bool *)ctx)
        *(bool *)ctx = find_workers(pids, 16) > 0;
}

static inline void collect(zp_pipeline *p, const char *args, collected *c)
{
    bool noted = false;
    collect_with(p, args, NULL, c, note_workers, &noted);
}

static inline void collected_fini(collected *c)
{
    if (c->run != NULL) { /* a test failed while its run went on */
        zp_cancel(c->run);
        watchdog_stop(&c->dog);
        zp_run_free(c->run);
    }
    free(c->v);
    free(c->pid);
    free(c->pid2);
    free(c->error);
    memset(c, 0, sizeof *c);
}

/* What a test leaves to its teardown, so that a failed test leaks
 * nothing either. */
typedef struct fixture {
    collected c;
    zp_pipeline *p;
} fixture;

static inline int setup(void **state)
{
    *state = calloc(1, sizeof(fixture));
    return *state != NULL ? 0 : -1;
}

/* Nothing a test started outlives it, even when it failed. */
static inline int teardown(void **state)
{
    fixture *f = *state;
    collected_fini(&f->c);
    zp_pipeline_free(f->p);
    free(f);
    for (size_t i = 0; i < sizeof remote_pids / sizeof *remote_pids; i++)
        if (remote_pids[i] > 0) {
            kill(remote_pids[i], SIGKILL);
            waitpid(remote_pids[i], NULL, 0);
            remote_pids[i] = 0;
        }
    remove_key_dir();
    test_dir_remove();
    return 0;
}

static inline void assert_run_ok(const collected *c)
{
    if (c->rc != 0)
        fail_msg("the run failed (%d): %s", c->rc, c->error);
    assert_null(c->error);
}

static inline void assert_error_has(const collected *c, const char *part)
{
    if (c->error == NULL || strstr(c->error, part) == NULL)
        fail_msg("the run's error \"%s\" does not say \"%s\"",
                 c->error ? c->error : "(none)", part);
}

/* Asserts the outputs are k * i for every i in [0, n) but `except`, each
 * exactly once, in any order. */
static inline void assert_each_once(const collected *c, int64_t n, int64_t k,
                                    int64_t except)
{
    unsigned char *seen = calloc((size_t)n, 1);
    char missing[256] = "";
    size_t len = 0, nmissing = 0;
    assert_non_null(seen);
    for (size_t i = 0; i < c->n; i++) {
        int64_t v = c->v[i];
        if (v % k != 0 || v / k < 0 || v / k >= n || v / k == except)
            fail_msg("output %zu is %lld, which nobody asked for", i,
                     (long long)v);
        if (seen[v / k]++ > 0)
            fail_msg("output %lld came twice", (long long)v);
    }
    for (int64_t i = 0; i < n; i++)
        if (i != except && seen[i] == 0 && nmissing++ < 20 &&
            len < sizeof missing)
            len += (size_t)snprintf(missing + len, sizeof missing - len,
                                    " %lld", (long long)(k * i));
    free(seen);
    if (nmissing > 0)
        fail_msg("%zu outputs are missing:%s%s", nmissing, missing,
                 nmissing > 20 ? " ..." : "");
    assert_int_equal(c->n, except >= 0 && except < n ? n - 1 : n);
}

/* How many outputs process `pid` served. */
static inline size_t served_by(const collected *c, int64_t pid)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++)
        n += c->pid[i] == pid;
    return n;
}

/* Reads stage 1's statistics of `run` until `cond` holds of them, for up
 * to DEADLINE_MS; whether it came to hold. */
static inline bool stats_soon(zp_run *run, bool (*cond)(const zp_stage_stats *))
{
    zp_stage_stats st;
    for (int64_t end = now_ms() + DEADLINE_MS;; nap_us(1000)) {
        memset(&st, 0, sizeof st);
        assert_int_equal(zp_run_stats(run, 1, &st), 0);
        if (cond(&st) || now_ms() > end)
            return cond(&st);
    }
}

/* ---- Leftovers ------------------------------------------------------------
 */

/* Asserts that no child process of this program is left, running or a
 * zombie. */
static inline void assert_no_child_left(void)
{
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid != -1 || errno != ECHILD)
        fail_msg("a child process is left: waitpid gave %d (%s)", (int)pid,
                 pid == 0 ? "a child still runs" : "a zombie");
}

static inline void
test_no_child_process_or_temp_dir_is_left_behind(void **state)
{
    (void)state;
    assert_no_child_left();
    pthread_mutex_lock(&dirs_lock);
    size_t n = nseen_dirs;
    pthread_mutex_unlock(&dirs_lock);
    assert_true(n >= 1); /* the check is not empty */
    for (size_t i = 0; i < n; i++)
        if (access(seen_dirs[i], F_OK) == 0 || errno != ENOENT)
            fail_msg("%s is left behind", seen_dirs[i]);
}

/* The last test of a program whose tests make no directory of their own
 * and start no process worker: only remote workers, all reaped. */
static inline void test_no_child_process_is_left_behind(void **state)
{
    (void)state;
    assert_no_child_left();
}

/* ---- main ---------------------------------------------------------------- */

/* Every test but the last gets a fixture and a teardown. */
#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

/*
 * The start of main() of each of these programs, `name`: worker processes
 * (the program re-executed) serve inside zp_init() and end there. Returns
 * 0 when the tests may run (with the filter of $ZP_TEST_FILTER, such as
 * "*killed*"), or 3 when the program was started as a worker and yet
 * zp_init() returned.
 */
static inline int process_tests_init(const char *name, int *argc, char ***argv)
{
    /* A task that only the workers have: the coordinator has it not. */
    for (int i = 1; i < *argc; i++)
        if (strcmp((*argv)[i], "--zp-worker") == 0)
            zp_register("only_in_workers", only_in_workers);
    zp_init(argc, argv); /* worker processes end inside */
    if (getenv("ZPIPE_WORKER_PARENT") != NULL ||
        (*argc > 0 && strcmp((*argv)[0], "worker") == 0)) {
        /* Never run the tests nested, in a worker slot. */
        fprintf(stderr, "%s: started as a worker, yet zp_init() returned\n",
                name);
        return 3;
    }
    if (getenv("ZP_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("ZP_TEST_FILTER"));
    return 0;
}

#endif
