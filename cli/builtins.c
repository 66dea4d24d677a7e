/* SPDX-License-Identifier: MIT */
/*
 * Built-in tasks, see builtins.h. They are registered by hand rather than
 * with ZP_TASK, under names (sleep, exec) that C already uses.
 *
 * exec is the GNU parallel / xargs -P use case and the only one here with
 * much to it: each item runs a command in a process group of its own
 * (posix_spawn), with stdin from /dev/null, its stdout captured as the
 * output and its stderr passed through. The item can never become shell
 * syntax: the shell form quotes it, the argv form passes it as one
 * argument. A task waiting for its command looks at the run's stop flag
 * every tenth of a second; when the run stops, the command's whole process
 * group gets SIGTERM, then SIGKILL a second later, and is always reaped.
 */
#include "cli/builtins.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "coordinator/spawn.h"
#include "cli/items.h"
#include "core/value.h"
#include "worker/call.h"

#define LOOK_MS 100                    /* longest wait between stop checks */
#define GRACE_MS 1000                  /* SIGTERM, then SIGKILL after this */
#define OUTPUT_MAX ((size_t)64 << 20)  /* a command's stdout, at most */
#define STDERR_KEPT ((size_t)64 << 10) /* of its stderr, passed through */
#define SHOWN_MAX 120                  /* of a command, in messages */

extern char **environ;

static bool stopping(zp_call *call)
{
    return atomic_load(&zp__call_run(call)->stop);
}

static bool as_int(const msgpack_object *o, int64_t *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        *v = (int64_t)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *v = o->via.i64;
    else
        return false;
    return true;
}

/* Fails a task that emits several outputs but has no branch flag, with a
 * message for people who write specs rather than C. */
static int needs_branch(zp_call *call, const char *task)
{
    if (zp__call_stage(call)->opts.branch)
        return 0;
    return zp_fail(call,
                   "%s emits several items: give it the branch flag "
                   "('%s branch')",
                   task, task);
}

/* ---- identity, range, lines ---------------------------------------------- */

static int identity(zp_call *call)
{
    return zp_emit_obj(call, zp_input(call));
}

/* How many of start, start + step, ... come before stop. */
static uint64_t range_count(int64_t start, int64_t stop, int64_t step)
{
    if (step > 0 && start < stop)
        return ((uint64_t)stop - (uint64_t)start - 1) / (uint64_t)step + 1;
    if (step < 0 && start > stop)
        return ((uint64_t)start - (uint64_t)stop - 1) /
                   ((uint64_t)0 - (uint64_t)step) +
               1;
    return 0;
}

/* Reads [stop], [start, stop] or [start, stop, step], or a lone stop,
 * into a[] = {start, stop, step}. */
static bool range_args(const msgpack_object *in, int64_t a[3])
{
    bool list = in->type == MSGPACK_OBJECT_ARRAY;
    size_t n = list ? in->via.array.size : 1;
    const msgpack_object *v = list ? in->via.array.ptr : in;
    bool ok = n >= 1 && n <= 3;
    a[0] = 0;
    a[2] = 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = as_int(&v[i], &a[n == 1 ? 1 : i]);
    return ok;
}

bool zp__range_items(const msgpack_object *args, uint64_t *count)
{
    int64_t a[3];
    if (!range_args(args, a) || a[2] == 0)
        return false;
    *count = range_count(a[0], a[1], a[2]);
    return true;
}

static int range(zp_call *call)
{
    int64_t a[3];
    if (!range_args(zp_input(call), a))
        return zp_fail(call, "range takes [STOP], [START, STOP] or [START, "
                             "STOP, STEP], whole numbers, as Python's does");
    if (a[2] == 0)
        return zp_fail(call, "range: the step must not be zero");
    uint64_t count = range_count(a[0], a[1], a[2]);
    if (count > 1 && needs_branch(call, "range") != 0)
        return ZP_ETASK;
    for (uint64_t k = 0; k < count; k++)
        if (zp_emit_int(call, (int64_t)((uint64_t)a[0] + k * (uint64_t)a[2])) !=
            0)
            return ZP_ECANCELED;
    return 0;
}

/* ["PATH"] or "PATH": each line of the file as a string. */
static int lines(zp_call *call)
{
    const msgpack_object *in = zp_input(call);
    if (in->type == MSGPACK_OBJECT_ARRAY && in->via.array.size == 1)
        in = &in->via.array.ptr[0];
    if (in->type != MSGPACK_OBJECT_STR)
        return zp_fail(call, "lines reads the file its item names: a "
                             "string such as \"data.txt\", or \"-\" for stdin");
    if (needs_branch(call, "lines") != 0)
        return ZP_ETASK;
    char *path = strndup(in->via.str.ptr, in->via.str.size);
    if (path == NULL)
        return zp_fail(call, "out of memory");
    int rc = zp__emit_lines(call, path, false);
    free(path);
    return rc;
}

/* ---- sleep --------------------------------------------------------------- */

typedef struct nap {
    uv_timer_t timer;
    zp_call *call;  /* borrowed until zp_done */
    uint64_t until; /* loop time, ms */
} nap;

static void nap_closed(uv_handle_t *h)
{
    free(h->data);
}

static void nap_tick(uv_timer_t *t)
{
    nap *n = t->data;
    uint64_t now = uv_now(t->loop);
    bool stop = stopping(n->call);
    if (!stop && now < n->until) {
        uint64_t left = n->until - now;
        uv_timer_start(t, nap_tick, left < LOOK_MS ? left : LOOK_MS, 0);
        return;
    }
    if (!stop)
        zp_emit_obj(n->call, zp_input(n->call)); /* fails only if stopping */
    zp_done(n->call);
    uv_close((uv_handle_t *)t, nap_closed);
}

/* Emits its item after bind milliseconds, without holding a thread. */
static void sleep_task(zp_call *call, uv_loop_t *loop)
{
    const msgpack_object *b = zp_bound(call);
    int64_t ms;
    if (b == NULL || !as_int(b, &ms) || ms < 0) {
        zp_fail(call, "sleep needs bind=MILLISECONDS, a whole number: "
                      "sleep bind=100");
        return;
    }
    nap *n = malloc(sizeof *n);
    if (n == NULL || uv_timer_init(loop, &n->timer) != 0) {
        free(n);
        zp_fail(call, "sleep: cannot make a timer");
        return;
    }
    uv_update_time(loop);
    n->timer.data = n;
    n->call = call;
    n->until = uv_now(loop) + (uint64_t)ms;
    nap_tick(&n->timer);
}

/* ---- exec: the command --------------------------------------------------- */

/* What one item runs. */
typedef struct command {
    char **argv; /* owned, strings included; NULL-terminated */
    int argc;
    msgpack_sbuffer sb; /* scratch */
    bool nomem;
} command;

static void put(command *c, const char *s, size_t n)
{
    if (!c->nomem && n > 0 && msgpack_sbuffer_write(&c->sb, s, n) != 0)
        c->nomem = true;
}

/* `v` as one shell word: in single quotes, each ' as '\''. */
static void put_quoted(command *c, const char *v)
{
    put(c, "'", 1);
    for (const char *q; (q = strchr(v, '\'')) != NULL; v = q + 1) {
        put(c, v, (size_t)(q - v));
        put(c, "'\\''", 4);
    }
    put(c, v, strlen(v));
    put(c, "'", 1);
}

static void put_value(command *c, const char *v, bool quote)
{
    if (quote)
        put_quoted(c, v);
    else
        put(c, v, strlen(v));
}

static void add_word(command *c, char *w)
{
    c->nomem = c->nomem || w == NULL;
    c->argv[c->argc++] = w;
}

/* Adds the template [t, t + n), each {} in it replaced by v, as a word;
 * *found says whether it held a {}. */
static void add_expanded(command *c, const char *t, size_t n, const char *v,
                         bool quote, bool *found)
{
    msgpack_sbuffer_clear(&c->sb);
    for (const char *end = t + n, *at; t < end; t = at + 2) {
        at = memmem(t, (size_t)(end - t), "{}", 2);
        put(c, t, (size_t)((at ? at : end) - t));
        if (at == NULL)
            break;
        put_value(c, v, quote);
        *found = true;
    }
    add_word(c, c->nomem ? NULL
                         : strndup(c->sb.data ? c->sb.data : "", c->sb.size));
}

/* A shell command without {}: the item goes at its end, quoted. */
static void append_quoted(command *c, const char *v)
{
    if (c->nomem)
        return;
    msgpack_sbuffer_clear(&c->sb);
    put(c, c->argv[2], strlen(c->argv[2]));
    put(c, " ", 1);
    put_quoted(c, v);
    char *w = c->nomem ? NULL : strndup(c->sb.data, c->sb.size);
    free(c->argv[2]);
    c->argv[--c->argc] = NULL;
    add_word(c, w);
}

static void command_fini(command *c)
{
    for (int i = 0; c->argv != NULL && i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    msgpack_sbuffer_destroy(&c->sb);
}

static bool plain_string(const msgpack_object *o)
{
    return o->type == MSGPACK_OBJECT_STR &&
           memchr(o->via.str.ptr, '\0', o->via.str.size) == NULL;
}

/* The bind value's shape: one string (the shell form) or an array of
 * strings (the argv form), none holding a NUL. */
static bool command_shape(const msgpack_object *b)
{
    if (b == NULL)
        return false;
    if (b->type == MSGPACK_OBJECT_STR)
        return plain_string(b);
    if (b->type != MSGPACK_OBJECT_ARRAY || b->via.array.size == 0)
        return false;
    for (uint32_t i = 0; i < b->via.array.size; i++)
        if (!plain_string(&b->via.array.ptr[i]))
            return false;
    return true;
}

/* The command that the bind value `b` makes of item text `v`. Without {},
 * the item is appended, as xargs does. */
static int command_build(command *c, const msgpack_object *b, const char *v)
{
    bool shell = b->type == MSGPACK_OBJECT_STR, found = false;
    uint32_t words = shell ? 1 : b->via.array.size;
    msgpack_sbuffer_init(&c->sb);
    c->argv = calloc(words + 4, sizeof *c->argv);
    if (c->argv == NULL)
        return ZP_ENOMEM;
    if (shell) {
        add_word(c, strdup("/bin/sh"));
        add_word(c, strdup("-c"));
    }
    for (uint32_t i = 0; i < words; i++) {
        const msgpack_object *w = shell ? b : &b->via.array.ptr[i];
        add_expanded(c, w->via.str.ptr, w->via.str.size, v, shell, &found);
    }
    if (!found && shell)
        append_quoted(c, v);
    else if (!found)
        add_expanded(c, "{}", 2, v, false, &found);
    return c->nomem ? ZP_ENOMEM : 0;
}

/* The command as messages show it: the shell command, or the words. */
static void shown(const command *c, char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = strcmp(c->argv[0], "/bin/sh") == 0 ? 2 : 0;
         i < c->argc && n < len; i++)
        n += (size_t)snprintf(out + n, len - n, "%s%s", n ? " " : "",
                              c->argv[i]);
    if (n >= len && len > 4)
        strcpy(out + len - 4, "...");
}

/* ---- exec: running it ---------------------------------------------------- */

/* Commands running now, for zp__exec_kill_all. */
typedef struct child {
    pid_t pid; /* also its process group */
    struct child *next;
} child;

static pthread_mutex_t children_lock = PTHREAD_MUTEX_INITIALIZER;
static child *children; /* borrowed nodes, on the stacks of exec calls */

static void track(child *c)
{
    assert(c->pid > 0); /* a started command: its group is its pid */
    pthread_mutex_lock(&children_lock);
    c->next = children;
    children = c;
    pthread_mutex_unlock(&children_lock);
}

static void untrack(child *c)
{
    bool found = false;
    pthread_mutex_lock(&children_lock);
    for (child **p = &children; *p != NULL; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            found = true;
            break;
        }
    pthread_mutex_unlock(&children_lock);
    assert(found); /* a tracked command, untracked once */
    (void)found;
}

void zp__exec_kill_all(void)
{
    pthread_mutex_lock(&children_lock);
    for (child *c = children; c != NULL; c = c->next)
        kill(-c->pid, SIGKILL);
    pthread_mutex_unlock(&children_lock);
}

/* Starts the command in a process group of its own, with stdin from
 * /dev/null, the given stdout and stderr, no signal blocked and the
 * default action of the signals that stop commands. Returns 0 or an errno
 * value. */
static int spawn(const command *c, int out, int err, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out, STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, err, STDERR_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY,
                                     0);
    zp__spawnattr_init(&at, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&at, 0);
    int rc = posix_spawnp(pid, c->argv[0], &fa, &at, c->argv, environ);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* What a command did. */
typedef struct capture {
    msgpack_sbuffer out, err; /* its stdout, and the start of its stderr */
    int status;               /* as waitpid gives it */
} capture;

/* Reads a pipe once: 1, or 0 once it is closed, or ZP_ENOMEM. */
static int drain(int fd, capture *cap, bool is_err)
{
    char buf[16384];
    ssize_t got = read(fd, buf, sizeof buf);
    if (got < 0 && (errno == EINTR || errno == EAGAIN))
        return 1;
    if (got <= 0)
        return 0;
    msgpack_sbuffer *sb = is_err ? &cap->err : &cap->out;
    size_t keep = (size_t)got;
    if (is_err && keep > STDERR_KEPT - sb->size)
        keep = STDERR_KEPT - sb->size; /* the rest is read and dropped */
    if (!is_err && sb->size + keep > OUTPUT_MAX)
        return ZP_ENOMEM;
    return msgpack_sbuffer_write(sb, buf, keep) == 0 ? 1 : ZP_ENOMEM;
}

/* Reads the command's stdout and stderr until both close and it exits
 * (its pidfd, when there is one, becomes readable). Returns 0,
 * ZP_ECANCELED when the run stops first, ZP_ENOMEM (its output is too big,
 * or memory ran out) or ZP_EIO. */
static int collect(zp_call *call, int out, int err, int pidfd, capture *cap)
{
    struct pollfd p[3] = {{.fd = out, .events = POLLIN},
                          {.fd = err, .events = POLLIN},
                          {.fd = pidfd, .events = POLLIN}};
    while (p[0].fd >= 0 || p[1].fd >= 0 || p[2].fd >= 0) {
        if (stopping(call))
            return ZP_ECANCELED;
        int n = poll(p, 3, LOOK_MS);
        if (n < 0 && errno != EINTR)
            return ZP_EIO;
        for (int i = 0; n > 0 && i < 2; i++) {
            int rc = p[i].revents != 0 ? drain(p[i].fd, cap, i == 1) : 1;
            if (rc < 0)
                return rc;
            if (rc == 0)
                p[i].fd = -1; /* poll skips it from now on */
        }
        if (n > 0 && p[2].revents != 0)
            p[2].fd = -1; /* it exited; its pipes may still hold output */
    }
    return 0;
}

/* Waits for the command; `stop` first asks its whole process group to
 * end, then makes it. The group is signalled while its leader is a zombie
 * (not yet reaped), so that its id cannot have been reused. */
static void reap(pid_t pid, bool stop, int *status)
{
    siginfo_t si;
    if (stop) {
        kill(-pid, SIGTERM);
        for (int i = 0; i < GRACE_MS / 10; i++) {
            si.si_pid = 0;
            if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) ==
                    0 &&
                si.si_pid == pid)
                break;
            struct timespec t = {0, 10 * 1000000L};
            nanosleep(&t, NULL);
        }
        kill(-pid, SIGKILL);
    }
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
}

/* Why the command failed, for the task's error. */
static int command_failed(zp_call *call, const command *c, const capture *cap)
{
    char what[SHOWN_MAX + 1], first[256] = "";
    shown(c, what, sizeof what);
    if (cap->err.size > 0) { /* the first line of its stderr */
        const char *nl = memchr(cap->err.data, '\n', cap->err.size);
        size_t n = nl ? (size_t)(nl - cap->err.data) : cap->err.size;
        snprintf(first, sizeof first, ": %.*s", (int)n, cap->err.data);
    }
    if (WIFSIGNALED(cap->status)) {
        const char *sig = sigabbrev_np(WTERMSIG(cap->status));
        return zp_fail(call, "`%s` was killed by signal %d (SIG%s)%s", what,
                       WTERMSIG(cap->status), sig ? sig : "?", first);
    }
    return zp_fail(call, "`%s` exited with status %d%s", what,
                   WEXITSTATUS(cap->status), first);
}

/* Its stdout, without its trailing newlines, as $(...) has it. */
static int command_output(zp_call *call, const capture *cap)
{
    size_t n = cap->out.size;
    while (n > 0 && cap->out.data[n - 1] == '\n')
        n--;
    msgpack_pack_str_with_body(zp_out(call), n ? cap->out.data : "", n);
    return zp_emit(call);
}

static int finish(zp_call *call, const command *c, capture *cap, int got)
{
    char what[SHOWN_MAX + 1];
    if (cap->err.size > 0) /* passed through, in one piece */
        (void)!write(STDERR_FILENO, cap->err.data, cap->err.size);
    if (got == ZP_ECANCELED)
        return ZP_ECANCELED; /* the run is stopping: no output */
    shown(c, what, sizeof what);
    if (got == ZP_ENOMEM)
        return zp_fail(call, "`%s`: its output is larger than %zu MiB", what,
                       OUTPUT_MAX >> 20);
    if (got != 0)
        return zp_fail(call, "`%s`: reading its output: %s", what,
                       strerror(errno));
    if (!WIFEXITED(cap->status) || WEXITSTATUS(cap->status) != 0)
        return command_failed(call, c, cap);
    return command_output(call, cap);
}

/* Runs the command to its end (or the run's) and emits its output. */
static int run_command(zp_call *call, const command *c)
{
    int out[2], err[2];
    char what[SHOWN_MAX + 1];
    capture cap = {.status = 0};
    if (pipe2(out, O_CLOEXEC) != 0)
        return zp_fail(call, "cannot make a pipe: %s", strerror(errno));
    if (pipe2(err, O_CLOEXEC) != 0) {
        int e = errno;
        close(out[0]);
        close(out[1]);
        return zp_fail(call, "cannot make a pipe: %s", strerror(e));
    }
    child node = {0};
    int e = spawn(c, out[1], err[1], &node.pid);
    close(out[1]);
    close(err[1]);
    int rc = 0;
    if (e != 0) {
        shown(c, what, sizeof what);
        rc = zp_fail(call, "cannot run `%s`: %s", what, strerror(e));
        goto out_close;
    }
    track(&node);
    msgpack_sbuffer_init(&cap.out);
    msgpack_sbuffer_init(&cap.err);
    int pidfd = pidfd_open(node.pid, 0); /* -1 on old kernels: poll skips */
    int got = collect(call, out[0], err[0], pidfd, &cap);
    reap(node.pid, got != 0, &cap.status);
    untrack(&node);
    if (pidfd >= 0)
        close(pidfd);
    rc = finish(call, c, &cap, got);
    msgpack_sbuffer_destroy(&cap.out);
    msgpack_sbuffer_destroy(&cap.err);
out_close:
    close(out[0]);
    close(err[0]);
    return rc;
}

/* The item as command text: a string as it is, anything else as JSON. */
static int item_text(const msgpack_object *o, msgpack_sbuffer *sb)
{
    int rc = o->type == MSGPACK_OBJECT_STR
                 ? msgpack_sbuffer_write(sb, o->via.str.ptr, o->via.str.size)
                 : zp__json_write(o, sb);
    return rc == 0 && msgpack_sbuffer_write(sb, "", 1) == 0 ? 0 : ZP_ENOMEM;
}

/* Runs the command in bind for each item; see the top of this file. */
static int exec_task(zp_call *call)
{
    const msgpack_object *b = zp_bound(call);
    if (!command_shape(b))
        return zp_fail(call,
                       "exec needs its command in bind: a shell command, "
                       "bind='\"wc -c {}\"', or its words, "
                       "bind='[\"wc\", \"-c\", \"{}\"]', where {} stands for "
                       "the item");
    msgpack_sbuffer text;
    command c = {0};
    msgpack_sbuffer_init(&text);
    int rc = item_text(zp_input(call), &text);
    if (rc == 0 && strlen(text.data) + 1 != text.size)
        rc = zp_fail(call, "the item holds a NUL byte, which no command "
                           "argument can hold");
    else if (rc == 0 && (rc = command_build(&c, b, text.data)) == 0)
        rc = run_command(call, &c);
    if (rc == ZP_ENOMEM)
        rc = zp_fail(call, "out of memory");
    command_fini(&c);
    msgpack_sbuffer_destroy(&text);
    return rc;
}

/* ---- Registration -------------------------------------------------------- */

int zp__builtins_register(void)
{
    int rc = zp_register("identity", identity);
    rc = rc ? rc : zp_register("range", range);
    rc = rc ? rc : zp_register("lines", lines);
    rc = rc ? rc : zp_register("exec", exec_task);
    return rc ? rc : zp_register_async("sleep", sleep_task);
}
