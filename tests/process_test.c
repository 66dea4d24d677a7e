/* SPDX-License-Identifier: MIT */
/*
 * Tests of stages whose workers are other processes: process workers
 * (mode = ZP_PROCESS, children the coordinator spawns and supervises) and
 * remote workers (mode = ZP_REMOTE, processes that connect to the run's
 * listening endpoint). Both are this very test binary re-executed in
 * worker mode, which is why main() calls zp_init() first and why every
 * task that crosses a process boundary is registered with ZP_TASK.
 *
 * Failures are made on purpose: a task that fails, one that segfaults,
 * one that hangs, workers killed with SIGKILL or told to leave with
 * SIGTERM, a stranger sending garbage to the listening port, a worker
 * whose CURVE key is not allowed. The last test checks that nothing is
 * left behind: no child process, no temporary directory.
 *
 * Waiting is for events with a deadline (a child's exit through a pidfd,
 * an output of the run, a figure of the run's statistics, a file that
 * opens a gate); sleeping is only for playing slow work. Workers die at
 * given items of a run, not at given times.
 */
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
#include <zmq.h>

#include "transport/batch.h"
#include "transport/curve.h"
#include "transport/proto.h"
#include "zpipe.h"

/* How long a test waits for an event before it calls it a failure. */
#define DEADLINE_MS 30000

extern char **environ;

/* ---- Time -------------------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- Tasks --------------------------------------------------------------
 * Every task but `numbers` (testutil.h) runs in worker processes, which find it
 * by name.
 */

static int64_t item(zp_call *call)
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
static bool in_test_dir(const char *name, char *out, size_t len)
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
static void crash(void)
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
static int emit_bin(zp_call *call, size_t n)
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
static int only_in_workers(zp_call *call)
{
    return zp_emit_int(call, zp_input(call)->via.i64 + 1000);
}

/* ---- Child processes ---------------------------------------------------- */

/* Directories of process workers' endpoints seen during the tests. */
static pthread_mutex_t dirs_lock = PTHREAD_MUTEX_INITIALIZER;
static char seen_dirs[64][128];
static size_t nseen_dirs;

static void note_dir(const char *dir)
{
    pthread_mutex_lock(&dirs_lock);
    bool known = false;
    for (size_t i = 0; i < nseen_dirs && !known; i++)
        known = strcmp(seen_dirs[i], dir) == 0;
    if (!known && nseen_dirs < sizeof seen_dirs / sizeof seen_dirs[0])
        snprintf(seen_dirs[nseen_dirs++], sizeof seen_dirs[0], "%s", dir);
    pthread_mutex_unlock(&dirs_lock);
}

static ssize_t read_small_file(const char *path, char *buf, size_t len)
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
static bool is_worker(long pid)
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
static size_t find_workers(pid_t *out, size_t max)
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
static bool wait_exit(pid_t pid, int ms, int *status)
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
static pid_t start_worker_with(const char *endpoint, const char *const *more)
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
static pid_t start_worker(const char *endpoint, const char *server_pub,
                          const char *secret)
{
    const char *curve[] = {"--zp-curve-server", server_pub, "--zp-curve-secret",
                           secret, NULL};
    return start_worker_with(endpoint, server_pub ? curve : NULL);
}

/* A remote worker in the pool `pool`. */
static pid_t start_pool_worker(const char *endpoint, const char *pool)
{
    const char *more[] = {"--zp-pool", pool, NULL};
    return start_worker_with(endpoint, more);
}

static void forget_worker(pid_t pid)
{
    for (size_t i = 0; i < sizeof remote_pids / sizeof *remote_pids; i++)
        if (remote_pids[i] == pid)
            remote_pids[i] = 0;
}

/* Waits for a worker told to leave; asserts it left cleanly. */
static void reap_worker(pid_t pid)
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

static void stop_worker(pid_t pid)
{
    assert_int_equal(kill(pid, SIGTERM), 0);
    reap_worker(pid);
}

static char key_dir[64]; /* the CURVE test's keys, "" when none */

static void remove_key_dir(void)
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

static void test_dir_make(void)
{
    snprintf(test_dir, sizeof test_dir, "/tmp/zpipe-ptest-XXXXXX");
    assert_non_null(mkdtemp(test_dir));
    note_dir(test_dir);
    assert_int_equal(setenv(TEST_DIR_VAR, test_dir, 1), 0);
}

/* How many files the test directory holds that start with `prefix`. */
static int test_dir_count(const char *prefix)
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

static void gate_open(void)
{
    char gate[128];
    assert_true(in_test_dir("open", gate, sizeof gate));
    FILE *f = fopen(gate, "w");
    assert_non_null(f);
    fclose(f);
}

static void test_dir_remove(void)
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
static void free_endpoint(char *out, size_t len)
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

static void *watchdog_main(void *arg)
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

static void watchdog_start(watchdog *w, zp_run *run)
{
    *w = (watchdog){.run = run};
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    assert_int_equal(pthread_create(&w->thread, NULL, watchdog_main, w), 0);
}

/* Stands the watchdog down; whether it had to cancel the run. */
static bool watchdog_stop(watchdog *w)
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

static void keep(collected *c, const msgpack_object *out)
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
static zp_run *begin_run(collected *c, zp_pipeline *p, const char *args,
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
static void end_run(collected *c)
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
static void collect_with(zp_pipeline *p, const char *args,
                         const zp_run_opts *ro, collected *c, output_hook hook,
                         void *ctx)
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
static void note_workers(collected *c, void *ctx)
{
    pid_t pids[16];
    (void)c;
    if (!*(bool *)ctx)
        *(bool *)ctx = find_workers(pids, 16) > 0;
}

static void collect(zp_pipeline *p, const char *args, collected *c)
{
    bool noted = false;
    collect_with(p, args, NULL, c, note_workers, &noted);
}

static void collected_fini(collected *c)
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

static int setup(void **state)
{
    *state = calloc(1, sizeof(fixture));
    return *state != NULL ? 0 : -1;
}

/* Nothing a test started outlives it, even when it failed. */
static int teardown(void **state)
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

static void assert_run_ok(const collected *c)
{
    if (c->rc != 0)
        fail_msg("the run failed (%d): %s", c->rc, c->error);
    assert_null(c->error);
}

static void assert_error_has(const collected *c, const char *part)
{
    if (c->error == NULL || strstr(c->error, part) == NULL)
        fail_msg("the run's error \"%s\" does not say \"%s\"",
                 c->error ? c->error : "(none)", part);
}

/* Asserts the outputs are k * i for every i in [0, n) but `except`, each
 * exactly once, in any order. */
static void assert_each_once(const collected *c, int64_t n, int64_t k,
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
static size_t served_by(const collected *c, int64_t pid)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++)
        n += c->pid[i] == pid;
    return n;
}

/* Reads stage 1's statistics of `run` until `cond` holds of them, for up
 * to DEADLINE_MS; whether it came to hold. */
static bool stats_soon(zp_run *run, bool (*cond)(const zp_stage_stats *))
{
    zp_stage_stats st;
    for (int64_t end = now_ms() + DEADLINE_MS;; nap_us(1000)) {
        memset(&st, 0, sizeof st);
        assert_int_equal(zp_run_stats(run, 1, &st), 0);
        if (cond(&st) || now_ms() > end)
            return cond(&st);
    }
}

/* ---- Process workers ------------------------------------------------------
 */

static void test_process_stage_delivers_every_item_exactly_once(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(twice, .workers = 2, .mode = ZP_PROCESS));
    collect(p, "[5000]", c);
    assert_run_ok(c);
    assert_each_once(c, 5000, 2, -1);
    assert_string_equal(c->st.task, "twice");
    assert_int_equal(c->st.workers, 2);
    assert_int_equal(c->st.items_in, 5000);
    assert_int_equal(c->st.items_out, 5000);
    assert_int_equal(c->st.failed, 0);
    assert_int_equal(c->st.restarts, 0);
    collected_fini(c);
}

static void test_ordered_process_stage_keeps_input_order(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p = zp_pipe(
        zp_task(numbers, .branch = true),
        zp_task(twice, .workers = 2, .ordered = true, .mode = ZP_PROCESS));
    collect(p, "[5000]", c);
    assert_run_ok(c);
    assert_int_equal(c->n, 5000);
    for (size_t i = 0; i < c->n; i++)
        if (c->v[i] != 2 * (int64_t)i)
            fail_msg("output %zu is %lld", i, (long long)c->v[i]);
    assert_int_equal(c->st.items_out, 5000);
    collected_fini(c);
}

static void test_task_error_crosses_the_process_boundary(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(fail_on_7, .workers = 2, .mode = ZP_PROCESS));
    collect(p, "[100]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_non_null(c->error);
    assert_string_equal(c->error,
                        "task 'fail_on_7' failed on item 7: seven is not "
                        "welcome");
    assert_int_equal(c->st.failed, 1);
    for (size_t i = 0; i < c->n; i++)
        assert_int_not_equal(c->v[i], 7);
    collected_fini(c);
}

static void
test_killed_worker_processes_are_replaced_and_lose_no_item(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    /* Four deaths by SIGKILL, each of a worker on an item (which runs
     * again), the last with 2000 items to go, however fast it all goes. */
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(twice_dying_once, .workers = 2, .mode = ZP_PROCESS));
    test_dir_make();
    collect(p, "[5000]", c);
    int deaths = test_dir_count("died-on-");
    print_message("%d worker processes killed; %llu restarts; %lld ms\n",
                  deaths, (unsigned long long)c->st.restarts, (long long)c->ms);
    assert_run_ok(c);
    assert_each_once(c, 5000, 2, -1);
    assert_int_equal(deaths, 4);
    assert_true(c->st.restarts >= 4);
    assert_int_equal(c->st.items_out, 5000);
    collected_fini(c);
    test_dir_remove();
}

static void
test_segfaulting_task_fails_the_run_naming_item_and_signal(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(segv_on_7, .workers = 2, .mode = ZP_PROCESS));
    collect(p, "[100]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'segv_on_7'");
    assert_error_has(c, "item 7:");
    assert_error_has(c, "SIGSEGV");
    assert_int_equal(c->st.failed, 1);
    collected_fini(c);
}

static void test_segfaulting_item_is_skipped_with_on_error_skip(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(segv_on_7, .workers = 2, .mode = ZP_PROCESS,
                        .on_error = ZP_SKIP));
    collect(p, "[100]", c);
    assert_run_ok(c);
    assert_each_once(c, 100, 1, 7);
    assert_int_equal(c->st.skipped, 1);
    assert_int_equal(c->st.items_out, 99);
    assert_true(c->st.restarts >= 1);
    collected_fini(c);
}

static void test_retries_do_not_hide_an_item_that_always_crashes(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p = zp_pipe(
        zp_task(numbers, .branch = true),
        zp_task(segv_on_7, .workers = 2, .mode = ZP_PROCESS, .retries = 1));
    collect(p, "[100]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'segv_on_7' failed on item 7:");
    assert_error_has(c, "SIGSEGV");
    assert_true(c->st.retried >= 1);
    assert_true(c->st.restarts >= 1); /* none once the run failed */
    collected_fini(c);
}

/* The timeout of the hung-item tests: long enough that no other item
 * outlasts it on a busy machine, so that item 3 is the one timed out. */
#define HANG_TIMEOUT_MS 2000

static void test_hung_item_fails_the_run_after_its_timeout(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(hang_on_3, .workers = 2, .mode = ZP_PROCESS,
                        .timeout_ms = HANG_TIMEOUT_MS));
    collect(p, "[20]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'hang_on_3' failed on item 3:");
    assert_error_has(c, "timeout");
    /* Not before its time (the watchdog fails a run whose timeout never
     * fires: item 3 would hang for longer). */
    assert_true(c->ms >= HANG_TIMEOUT_MS);
    collected_fini(c);
}

static void test_hung_item_is_skipped_after_its_timeout(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(hang_on_3, .workers = 2, .mode = ZP_PROCESS,
                        .timeout_ms = HANG_TIMEOUT_MS, .on_error = ZP_SKIP));
    collect(p, "[20]", c);
    assert_run_ok(c);
    assert_each_once(c, 20, 1, 3);
    assert_int_equal(c->st.skipped, 1);
    assert_true(c->ms >= HANG_TIMEOUT_MS);
    collected_fini(c);
}

static void test_item_that_crashes_inside_a_large_batch_is_found(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(segv_on_4321, .workers = 2, .mode = ZP_PROCESS));
    collect(p, "[10000]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'segv_on_4321' failed on item 4321:");
    assert_error_has(c, "SIGSEGV");
    collected_fini(c);
    zp_pipeline_free(f->p);
    p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                       zp_task(segv_on_4321, .workers = 2, .mode = ZP_PROCESS,
                               .on_error = ZP_SKIP));
    collect(p, "[10000]", c);
    assert_run_ok(c);
    assert_each_once(c, 10000, 1, 4321);
    assert_int_equal(c->st.skipped, 1);
    collected_fini(c);
}

static void
test_item_running_longer_than_the_silence_limit_is_waited_for(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(long_first, .workers = 1, .mode = ZP_PROCESS));
    collect(p, "[3]", c);
    assert_run_ok(c);
    assert_each_once(c, 3, 1, -1);
    assert_int_equal(c->st.restarts, 0);
    assert_true(c->ms >= 3500);
    collected_fini(c);
}

static void test_items_larger_than_a_message_in_all_fail_the_run(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    /* 1000 items of 100 kB: batches are cut by bytes, not only counted */
    zp_pipeline *p = f->p = zp_pipe(zp_task(bins, .branch = true),
                                    zp_task(size_of, .mode = ZP_PROCESS));
    collect(p, "[1000, 100000]", c);
    assert_run_ok(c);
    assert_int_equal(c->n, 1000);
    for (size_t i = 0; i < c->n; i++)
        assert_int_equal(c->v[i], 100000);
    collected_fini(c);
    /* one item larger than a message */
    char args[64];
    snprintf(args, sizeof args, "[1, %zu]", ZP__PROTO_MAX_MSG);
    collect(p, args, c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'size_of': item 0 takes");
    assert_error_has(c, "more than a message to a worker holds");
    collected_fini(c);
    /* outputs larger than a message */
    zp_pipeline_free(f->p);
    p = f->p = zp_pipe(zp_task(numbers, .branch = true),
                       zp_task(huge_output, .mode = ZP_PROCESS));
    collect(p, "[1]", c);
    assert_int_equal(c->rc, ZP_ETASK);
    assert_error_has(c, "task 'huge_output' failed on item 0: its outputs "
                        "take");
    assert_error_has(c, "more than a message to the coordinator holds");
    collected_fini(c);
}

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
    HONEST,   /* DONE with the outputs                             */
    SILENT,   /* never, but it sends heartbeats                    */
    NOT_BIN,  /* DONE whose outputs are a str, not a bin           */
    TWICE,    /* DONE with two outputs per item (not a branch)     */
    FAIL_OFF, /* FAIL naming an item outside the batch             */
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

/* A run of 1000 items served by a worker by hand in `manner` beside an
 * honest worker process: the run completes, each output once. */
static void run_beside_a_bad_worker(fixture *f, enum manner manner)
{
    char ep[64];
    collected *c = &f->c;
    int zero = 0;
    free_endpoint(ep, sizeof ep);
    zp_run_opts ro = {.listen = ep, .wait_workers_ms = 15000};
    zp_pipeline *p = f->p = zp_pipe(zp_task(numbers, .branch = true),
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
    assert_each_once(c, 1000, 2, -1);
    collected_fini(c);
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

static void test_a_process_stage_reports_its_task_time(void **state)
{
    fixture *f = *state;
    collected *c = &f->c;
    zp_pipeline *p = f->p =
        zp_pipe(zp_task(numbers, .branch = true),
                zp_task(slow_twice, .mode = ZP_PROCESS, .workers = 2));
    collect(p, "[200]", c);
    assert_run_ok(c);
    assert_each_once(c, 200, 2, -1);
    /* slow_twice sleeps 200 us an item: the task's own time, reported by
     * its workers (the coordinator used to count none) */
    print_message("busy %.3f s\n", (double)c->st.busy_ns / 1e9);
    assert_true(c->st.busy_ns >= 200 * 200 * 1000ull);
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

/* ---- Leftovers ------------------------------------------------------------
 */

static void test_no_child_process_or_temp_dir_is_left_behind(void **state)
{
    (void)state;
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid != -1 || errno != ECHILD)
        fail_msg("a child process is left: waitpid gave %d (%s)", (int)pid,
                 pid == 0 ? "a child still runs" : "a zombie");
    pthread_mutex_lock(&dirs_lock);
    size_t n = nseen_dirs;
    pthread_mutex_unlock(&dirs_lock);
    assert_true(n >= 1); /* the check is not empty */
    for (size_t i = 0; i < n; i++)
        if (access(seen_dirs[i], F_OK) == 0 || errno != ENOENT)
            fail_msg("%s is left behind", seen_dirs[i]);
}

/* Every test but the last gets a fixture and a teardown. */
#define TEST(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(int argc, char **argv)
{
    /* A task that only the workers have: the coordinator has it not. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--zp-worker") == 0)
            zp_register("only_in_workers", only_in_workers);
    zp_init(&argc, &argv); /* worker processes end inside */
    if (getenv("ZPIPE_WORKER_PARENT") != NULL ||
        (argc > 0 && strcmp(argv[0], "worker") == 0)) {
        /* Never run the tests nested, in a worker slot. */
        fprintf(stderr, "process_test: started as a worker, yet zp_init() "
                        "returned\n");
        return 3;
    }
    if (getenv("ZP_TEST_FILTER") != NULL) /* e.g. "*killed*" */
        cmocka_set_test_filter(getenv("ZP_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        TEST(test_process_stage_delivers_every_item_exactly_once),
        TEST(test_ordered_process_stage_keeps_input_order),
        TEST(test_task_error_crosses_the_process_boundary),
        TEST(test_killed_worker_processes_are_replaced_and_lose_no_item),
        TEST(test_segfaulting_task_fails_the_run_naming_item_and_signal),
        TEST(test_segfaulting_item_is_skipped_with_on_error_skip),
        TEST(test_retries_do_not_hide_an_item_that_always_crashes),
        TEST(test_hung_item_fails_the_run_after_its_timeout),
        TEST(test_hung_item_is_skipped_after_its_timeout),
        TEST(test_item_that_crashes_inside_a_large_batch_is_found),
        TEST(test_item_running_longer_than_the_silence_limit_is_waited_for),
        TEST(test_items_larger_than_a_message_in_all_fail_the_run),
        TEST(test_remote_workers_join_late_share_the_load_and_leave_early),
        TEST(test_run_without_remote_worker_fails_after_wait_workers_ms),
        TEST(test_strangers_on_the_port_do_not_disturb_the_run),
        TEST(test_a_worker_sending_another_runs_outputs_is_dropped),
        TEST(test_workers_of_any_capacity_are_served_within_it),
        TEST(test_a_worker_with_malformed_outputs_is_dropped),
        TEST(test_a_worker_with_two_outputs_per_item_is_dropped),
        TEST(test_a_worker_failing_an_item_not_in_its_batch_is_dropped),
        TEST(test_a_worker_that_keeps_its_items_is_given_up_on),
        TEST(test_a_flood_of_newcomers_holds_few_items),
        TEST(test_garbage_from_a_peer_is_logged_a_few_times),
        TEST(test_a_paused_worker_is_taken_back_when_it_returns),
        TEST(test_a_process_stage_reports_its_task_time),
        TEST(test_a_worker_far_away_holds_enough_items_to_cover_the_trip),
        TEST(test_curve_admits_allowed_worker_and_refuses_unknown_key),
        TEST(test_two_remote_stages_share_one_endpoint_each_with_its_pool),
        TEST(test_a_worker_that_dies_or_leaves_is_lost_by_every_stage),
        TEST(test_a_remote_only_task_needs_no_task_here),
        TEST(test_a_remote_task_no_worker_serves_fails_the_run_naming_it),
        cmocka_unit_test(test_no_child_process_or_temp_dir_is_left_behind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
