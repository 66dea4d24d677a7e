/* SPDX-License-Identifier: MIT */
/*
 * Tests of the zpipe CLI (cli/: cli.c and the modules beside it),
 * run as users run it: the real executable, spawned with its stdin,
 * stdout and stderr on pipes, with plugins built by the test suite
 * (tests/plugins/). Every command, every error exit status, JSON lines in
 * and out, the built-in tasks, process stages and remote stages served by
 * `zpipe worker` processes over tcp on 127.0.0.1, the statistics file
 * (read back with jansson), progress lines off a terminal, the metrics
 * endpoints of `zpipe run` and `zpipe worker`, and signals.
 *
 * This process is a child subreaper: whatever zpipe leaves running when
 * it exits (a worker, a command of exec) becomes our child, so "nothing is
 * left behind" is checked by finding no child at all. Waiting is for
 * events with a deadline: output on a pipe, a process's exit.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/http.h"
#include "tests/testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* How long any zpipe command may take before the test calls it stuck. */
#define DEADLINE_MS 60000
/* How long the processes zpipe ended may take to be gone: less than the
 * 30 s that the commands of the SIGTERM test would live on if left. */
#define LEFTOVER_MS 10000

static char dir[64]; /* a private temporary directory for every test */

/* ---- Running zpipe ------------------------------------------------------- */

/* A zpipe process with pipes to its standard streams. */
typedef struct proc {
    pid_t pid;
    int in, out, err;                /* our ends; -1 once closed */
    char *stdout_text, *stderr_text; /* what it wrote so far */
    size_t out_len, err_len;
    int status; /* once reaped */
} proc;

/* Starts the program argv[0] with the NULL-terminated arguments `args`
 * after argv[0 .. first). */
static void spawn(proc *p, const char **argv, size_t first,
                  const char *const *args)
{
    int in[2], out[2], err[2];
    size_t n = first;
    for (; args[n - first] != NULL && n < 63; n++)
        argv[n] = args[n - first];
    argv[n] = NULL;
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    assert_int_equal(pipe2(err, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    assert_int_equal(
        posix_spawn(&p->pid, argv[0], &fa, NULL, (char *const *)argv, environ),
        0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    *p = (proc){.pid = p->pid, .in = in[1], .out = out[0], .err = err[0]};
}

/* Starts zpipe with the NULL-terminated arguments `args`. */
static void start(proc *p, const char *const *args)
{
    const char *argv[64] = {ZPIPE_BIN};
    spawn(p, argv, 1, args);
}

/* Starts zpipe as start() does, but allowed at most `files` open files
 * (soft and hard limits, which it cannot raise). */
static void start_limited(proc *p, int files, const char *const *args)
{
    char script[64];
    snprintf(script, sizeof script, "ulimit -n %d && exec \"$0\" \"$@\"",
             files);
    const char *argv[64] = {"/bin/sh", "-c", script, ZPIPE_BIN};
    spawn(p, argv, 4, args);
}

static void append(int *fd, char **text, size_t *len)
{
    char buf[65536];
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
        return;
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return;
    }
    *text = realloc(*text, *len + (size_t)n + 1);
    assert_non_null(*text);
    memcpy(*text + *len, buf, (size_t)n);
    *len += (size_t)n;
    (*text)[*len] = '\0';
}

/* Reads what the process writes for up to `ms`, or until `until` shows up
 * on its stdout (its stderr when `err`), or until it closes both. */
static bool pump(proc *p, int ms, const char *until, bool err)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        const char *text = err ? p->stderr_text : p->stdout_text;
        if (until != NULL && text != NULL && strstr(text, until))
            return true;
        if (p->out < 0 && p->err < 0)
            return until == NULL;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = ms - ((t.tv_sec - t0.tv_sec) * 1000 +
                          (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            return false;
        struct pollfd fds[2] = {{.fd = p->out, .events = POLLIN},
                                {.fd = p->err, .events = POLLIN}};
        if (poll(fds, 2, (int)left) <= 0)
            continue;
        if (fds[0].revents)
            append(&p->out, &p->stdout_text, &p->out_len);
        if (fds[1].revents)
            append(&p->err, &p->stderr_text, &p->err_len);
    }
}

/* Reads until the process closes its outputs, then reaps it. */
static int finish(proc *p)
{
    if (p->in >= 0)
        close(p->in);
    p->in = -1;
    if (!pump(p, DEADLINE_MS, NULL, false)) {
        kill(p->pid, SIGKILL);
        fail_msg("zpipe is stuck; it wrote: %s / %s", p->stdout_text,
                 p->stderr_text);
    }
    while (waitpid(p->pid, &p->status, 0) < 0)
        assert_int_equal(errno, EINTR);
    if (!p->stdout_text)
        p->stdout_text = calloc(1, 1);
    if (!p->stderr_text)
        p->stderr_text = calloc(1, 1);
    return WIFEXITED(p->status) ? WEXITSTATUS(p->status) : -1;
}

/* Waits for `text` on the stdout of running zpipe (stderr when `err`);
 * kills it and fails when it does not come. */
static void wait_for(proc *p, const char *text, bool err)
{
    if (!pump(p, DEADLINE_MS, text, err)) {
        kill(p->pid, SIGKILL);
        fail_msg("no '%s' from zpipe: %s / %s", text, p->stdout_text,
                 p->stderr_text);
    }
}

/* Starts zpipe and waits for `first` on its stdout (stderr when `err`). */
static void start_until(proc *p, const char *first, bool err,
                        const char *const *args)
{
    start(p, args);
    wait_for(p, first, err);
}

static void proc_free(proc *p)
{
    if (p->in >= 0)
        close(p->in);
    if (p->out >= 0)
        close(p->out);
    if (p->err >= 0)
        close(p->err);
    free(p->stdout_text);
    free(p->stderr_text);
}

/* Runs zpipe to its end with `input` on its stdin (may be NULL); the
 * arguments follow, NULL-terminated. Returns the exit status. */
static int zpipe(proc *p, const char *input, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, input);
    while ((args[n] = va_arg(ap, const char *)) != NULL && n < 63)
        n++;
    va_end(ap);
    args[n] = NULL;
    start(p, args);
    if (input != NULL)
        assert_int_equal(write(p->in, input, strlen(input)),
                         (ssize_t)strlen(input));
    return finish(p);
}

static void assert_contains(const char *text, const char *part)
{
    if (text == NULL || strstr(text, part) == NULL)
        fail_msg("'%s' does not contain '%s'", text ? text : "(null)", part);
}

/* Runs zpipe, expecting `status` and `part` in its stderr. */
#define ASSERT_FAILS(status, part, ...)                                  \
    do {                                                                 \
        proc p_;                                                         \
        assert_int_equal(zpipe(&p_, NULL, __VA_ARGS__, NULL), (status)); \
        assert_contains(p_.stderr_text, (part));                         \
        proc_free(&p_);                                                  \
    } while (0)

/* Runs zpipe, expecting success and exactly `want` on stdout. */
#define ASSERT_OUTPUT(want, ...)                          \
    do {                                                  \
        proc p_;                                          \
        int rc_ = zpipe(&p_, NULL, __VA_ARGS__, NULL);    \
        if (rc_ != 0)                                     \
            fail_msg("exit %d: %s", rc_, p_.stderr_text); \
        assert_string_equal(p_.stdout_text, (want));      \
        proc_free(&p_);                                   \
    } while (0)

/* A path in the test directory (static buffer, one of eight). */
static const char *path(const char *name)
{
    static char bufs[8][160];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static const char *write_file(const char *name, const char *text)
{
    const char *p = path(name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

#define PLUGIN(name) PLUGIN_DIR "/" name ".so"
#define TASKS PLUGIN("cli_tasks")

static int by_text(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The lines of `text` sorted, for outputs of unordered stages. */
static char *sorted_lines(const char *text)
{
    char *copy = strdup(text), *save = NULL, *lines[4096];
    size_t n = 0, len = 0;
    for (char *l = strtok_r(copy, "\n", &save); l && n < 4096;
         l = strtok_r(NULL, "\n", &save))
        lines[n++] = l;
    qsort(lines, n, sizeof *lines, by_text);
    char *out = calloc(1, strlen(text) + 2);
    for (size_t i = 0; i < n; i++)
        len += (size_t)sprintf(out + len, "%s\n", lines[i]);
    free(copy);
    return out;
}

/* Whether any process is still our child, once the ended ones are reaped
 * (call it when none of the test's own processes is running). */
static bool children_left(void)
{
    siginfo_t si;
    int status;
    while (waitpid(-1, &status, WNOHANG) > 0)
        ;
    return waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0;
}

/* Waits up to `ms` for every child to be gone. */
static bool no_child_within(int ms)
{
    for (int i = 0; i < ms / 10 && children_left(); i++)
        nap_us(10000);
    return !children_left();
}

/* ---- The commands and their errors --------------------------------------- */

static void test_version_names_the_release(void **state)
{
    (void)state;
    ASSERT_OUTPUT("zpipe " ZP_VERSION_STRING "\n", "--version");
}

static void test_help_of_every_command_is_its_usage(void **state)
{
    (void)state;
    const char *cmds[][3] = {
        {"--help", NULL, "usage: zpipe COMMAND"},
        {"help", "run", "usage: zpipe run"},
        {"run", "--help", "usage: zpipe run [OPTION]... SPEC [ARGS_JSON]"},
        {"worker", "-h", "usage: zpipe worker --connect ENDPOINT"},
        {"tasks", "--help", "usage: zpipe tasks"},
        {"keygen", "--help", "usage: zpipe keygen NAME"},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        proc p;
        assert_int_equal(zpipe(&p, NULL, cmds[i][0], cmds[i][1], NULL), 0);
        assert_contains(p.stdout_text, cmds[i][2]);
        proc_free(&p);
    }
}

static void test_usage_errors_exit_2_naming_the_offending_word(void **state)
{
    (void)state;
    proc p;
    assert_int_equal(zpipe(&p, NULL, NULL), 2);
    assert_contains(p.stderr_text, "usage: zpipe COMMAND");
    proc_free(&p);
    ASSERT_FAILS(2, "unknown command 'rnu'", "rnu");
    ASSERT_FAILS(2, "unknown option '--bogus'", "run", "--bogus", "identity");
    ASSERT_FAILS(2, "unknown option '-x'", "tasks", "-x");
    ASSERT_FAILS(2, "option '--input' needs a value", "run", "identity",
                 "--input");
    ASSERT_FAILS(2, "missing the SPEC", "run");
    ASSERT_FAILS(2, "unexpected argument 'three'", "run", "identity", "1",
                 "three");
    ASSERT_FAILS(2, "bad value 'xml' for --format", "run", "--format", "xml",
                 "identity");
    ASSERT_FAILS(2, "bad value 'csv' for --input-format", "run",
                 "--input-format", "csv", "identity");
    ASSERT_FAILS(2, "bad value 'soon' for --wait-workers", "run",
                 "--wait-workers", "soon", "identity");
    ASSERT_FAILS(2, "--curve-secret needs --curve-allow", "run",
                 "--curve-secret", "k", "identity");
    ASSERT_FAILS(2, "and --input exclude each other", "run", "--input", "-",
                 "identity", "[1]");
    ASSERT_FAILS(2, "unexpected argument 'x'", "tasks", "x");
    ASSERT_FAILS(2, "missing the NAME", "keygen");
    ASSERT_FAILS(2, "--connect ENDPOINT is needed", "worker");
    ASSERT_FAILS(2, "bad value '0' for --threads", "worker", "--connect",
                 "tcp://127.0.0.1:1", "--threads", "0");
    ASSERT_FAILS(2, "--curve-server needs --curve-secret", "worker",
                 "--connect", "tcp://127.0.0.1:1", "--curve-server", "k");
    ASSERT_FAILS(2, "bad value 'a b' for --pool: expected a name of 1 to 64",
                 "worker", "--connect", "tcp://127.0.0.1:1", "--pool", "a b");
    setenv("ZPIPE_POOL", "x/y", 1);
    ASSERT_FAILS(2, "bad value 'x/y' for --pool", "worker", "--connect",
                 "tcp://127.0.0.1:1");
    unsetenv("ZPIPE_POOL");
}

static void test_configuration_errors_exit_2(void **state)
{
    (void)state;
    /* The spec's errors point at the word. */
    ASSERT_FAILS(2,
                 "unknown task 'nosuch' in stage 2 (column 16)\n"
                 "  range branch | nosuch\n"
                 "                 ^~~~~~",
                 "run", "range branch | nosuch");
    ASSERT_FAILS(2, "bad value 'many' for workers", "run",
                 "range branch | identity workers=many");
    /* Only a remote stage may name a task this zpipe does not have. */
    ASSERT_FAILS(2, "unknown task 'nosuch' in stage 2", "run",
                 "range branch | nosuch mode=process");
    ASSERT_FAILS(2, "task 'nosuch' has mode=remote: give --listen", "run",
                 "range branch | nosuch mode=remote", "[1]");
    ASSERT_FAILS(2, "task 'identity': pool 'io' needs mode=remote", "run",
                 "range branch | identity pool=io");
    ASSERT_FAILS(2, "task 'identity': bad pool name 'a/b'", "run",
                 "range branch | identity mode=remote pool=a/b");
    ASSERT_FAILS(2, "the first task cannot have workers > 1", "run",
                 "identity workers=2");
    ASSERT_FAILS(2,
                 "bad value '0' for workers: expected a whole number, at "
                 "least 1 (digits only, at most 2147483647) in stage 2 "
                 "(column 33)\n"
                 "  range branch | identity workers=0\n"
                 "                                  ^",
                 "run", "range branch | identity workers=0");
    ASSERT_FAILS(2, "invalid run arguments: invalid JSON at line 1, column 2",
                 "run", "identity", "[x]");
    ASSERT_FAILS(2, "task 'identity' has mode=remote: give --listen", "run",
                 "range branch | identity mode=remote", "[1]");
    ASSERT_FAILS(2, "bad value 'localhost:5555' for --listen", "run",
                 "--listen", "localhost:5555",
                 "range branch | identity mode=remote", "[1]");
    ASSERT_FAILS(2, "cannot write --stats", "run", "--stats",
                 "/nonexistent/dir/stats.json", "identity");
    ASSERT_FAILS(2, "cannot write --output", "run", "--output",
                 "/nonexistent/dir/out.jsonl", "identity");
    ASSERT_FAILS(2, "cannot read --curve-allow", "run", "--curve-secret",
                 "x.key", "--curve-allow", "/nonexistent/allow", "identity");
}

/* ---- Plugins ------------------------------------------------------------- */

static void test_tasks_lists_built_in_and_plugin_tasks(void **state)
{
    (void)state;
    proc p;
    assert_int_equal(zpipe(&p, NULL, "tasks", "--plugin", TASKS, NULL), 0);
    assert_contains(p.stdout_text, "exec       sync   built-in\n");
    assert_contains(p.stdout_text, "sleep      async  built-in\n");
    assert_contains(p.stdout_text, "double_it  sync   /");
    assert_contains(p.stdout_text, "/cli_tasks.so\n");
    assert_contains(p.stdout_text, "whoami     sync   /");
    proc_free(&p);
}

static void test_plugin_errors_exit_2_and_say_what_is_wrong(void **state)
{
    (void)state;
    ASSERT_FAILS(2, "plugin '/nonexistent/x.so': No such file or directory",
                 "tasks", "--plugin", "/nonexistent/x.so");
    ASSERT_FAILS(2, "registers no task", "tasks", "--plugin",
                 PLUGIN("cli_empty"));
    ASSERT_FAILS(2, "cannot load it", "tasks", "--plugin",
                 write_file("junk.so", "not a library\n"));
    ASSERT_FAILS(2, "both have a task named 'double_it'", "tasks", "--plugin",
                 TASKS, "--plugin", PLUGIN("cli_clash"));
    ASSERT_FAILS(2, "both have a task named 'double_it'", "run", "--plugin",
                 PLUGIN("cli_clash"), "--plugin", TASKS, "identity");
    ASSERT_FAILS(2, "a task named 'identity', which is a built-in task",
                 "tasks", "--plugin", PLUGIN("cli_builtin_clash"));
    ASSERT_FAILS(2, "plugin 'cli_tasks' is neither in $ZPIPE_PLUGIN_PATH",
                 "tasks", "--plugin", "cli_tasks");
}

static void test_the_same_plugin_twice_is_harmless(void **state)
{
    (void)state;
    ASSERT_OUTPUT("2\n", "run", "--plugin", TASKS, "--plugin", TASKS,
                  "range branch | double_it", "[1, 2]");
}

static void test_plugins_are_found_by_name_in_zpipe_plugin_path(void **state)
{
    (void)state;
    setenv("ZPIPE_PLUGIN_PATH", "/nonexistent:" PLUGIN_DIR, 1);
    ASSERT_OUTPUT("4\n", "run", "--plugin", "cli_tasks",
                  "range branch | double_it", "[2, 3]");
    ASSERT_OUTPUT("6\n", "run", "--plugin", "cli_tasks.so",
                  "range branch | double_it", "[3, 4]");
    unsetenv("ZPIPE_PLUGIN_PATH");
}

static void test_a_plugin_linked_with_libzpipe_works_too(void **state)
{
    (void)state;
    ASSERT_OUTPUT("0\n1\n4\n", "run", "--plugin", PLUGIN("cli_linked"),
                  "range branch | linked_square ordered", "3");
}

static void test_the_example_plugin_has_the_tasks_its_users_name(void **state)
{
    (void)state;
#ifdef EXAMPLES_PLUGIN
    char host[256], want[300];
    proc p;
    assert_int_equal(gethostname(host, sizeof host), 0);
    snprintf(want, sizeof want, "[3,\"%s\"]\n", host);
    ASSERT_OUTPUT(want, "run", "--plugin", EXAMPLES_PLUGIN,
                  "range branch | host_tag", "[3, 4]");
    ASSERT_OUTPUT("0\n9\n", "run", "--plugin", EXAMPLES_PLUGIN,
                  "range branch | slow_square mode=process workers=2 ordered",
                  "[0, 5, 3]");
    assert_int_equal(zpipe(&p, "\"localhost\"\n", "run", "--plugin",
                           EXAMPLES_PLUGIN, "--input", "-", "resolve", NULL),
                     0);
    assert_true(strcmp(p.stdout_text, "\"127.0.0.1\"\n") == 0 ||
                strcmp(p.stdout_text, "\"::1\"\n") == 0);
    proc_free(&p);
#else
    skip();
#endif
}

/* ---- Items: JSON lines in and out ---------------------------------------- */

static void test_arguments_are_json_and_outputs_json_lines(void **state)
{
    (void)state;
    ASSERT_OUTPUT("0\n1\n2\n", "run", "range branch | identity ordered", "3");
    ASSERT_OUTPUT("5\n7\n", "run", "range branch", "[5, 9, 2]");
    ASSERT_OUTPUT("[\"a\",{\"b\":null}]\n", "run", "identity",
                  "[\"a\", {\"b\": null}]");
}

static void test_every_kind_of_value_goes_through_unchanged(void **state)
{
    (void)state;
    const char *text = "18446744073709551615\n"
                       "-9223372036854775808\n"
                       "0.1\n"
                       "\"caf\xc3\xa9 \\\"\\u0001\\n\"\n"
                       "{\"a\":[true,false,null,{}],\"\":[]}\n"
                       "{\"$bin\":\"AAECAw==\"}\n"
                       "{\"$ext\":[-5,\"/w==\"]}\n";
    const char *in = write_file("values.jsonl", text);
    ASSERT_OUTPUT(text, "run", "--input", in, "identity ordered");
}

static void test_input_streams_into_a_first_stage_with_workers(void **state)
{
    (void)state;
    char text[8192] = "", want[8192] = "";
    for (int i = 1; i <= 300; i++) {
        sprintf(text + strlen(text), "%d\n%s", i, i % 7 ? "" : "\n");
        sprintf(want + strlen(want), "%d\n", 2 * i);
    }
    const char *in = write_file("numbers.jsonl", text);
    proc p;
    assert_int_equal(zpipe(&p, NULL, "run", "--plugin", TASKS, "--input", in,
                           "double_it workers=4", NULL),
                     0);
    char *got = sorted_lines(p.stdout_text), *expected = sorted_lines(want);
    assert_string_equal(got, expected);
    free(got);
    free(expected);
    proc_free(&p);
}

static void test_input_comes_from_stdin_as_json_or_raw_lines(void **state)
{
    (void)state;
    proc p;
    assert_int_equal(zpipe(&p, "{\"k\": 1}\n  \n[2]", "run", "--input", "-",
                           "identity", NULL),
                     0);
    assert_string_equal(p.stdout_text, "{\"k\":1}\n[2]\n");
    proc_free(&p);
    assert_int_equal(zpipe(&p, "a b\r\n\n{not json}\n", "run", "--input", "-",
                           "--input-format", "lines", "identity", NULL),
                     0);
    assert_string_equal(p.stdout_text, "\"a b\"\n\"\"\n\"{not json}\"\n");
    proc_free(&p);
}

static void test_input_lines_go_on_before_more_input_comes(void **state)
{
    (void)state;
    proc p;
    const char *args[] = {"run", "--input", "-", "identity", NULL};
    /* A burst of lines, then none for now: all of them come out while
     * stdin is still open. */
    start(&p, args);
    assert_int_equal(write(p.in, "1\n2\n3\n", 6), 6);
    wait_for(&p, "3\n", false);
    assert_string_equal(p.stdout_text, "1\n2\n3\n");
    assert_int_equal(finish(&p), 0);
    proc_free(&p);
}

static void test_a_malformed_input_line_fails_naming_its_line(void **state)
{
    (void)state;
    const char *in = write_file("bad.jsonl", "1\n2\n[3,\n4\n");
    proc p;
    assert_int_equal(
        zpipe(&p, NULL, "run", "--input", in, "identity ordered", NULL), 1);
    assert_contains(p.stderr_text, "bad.jsonl:3:4: invalid JSON: expected a "
                                   "value, found the end of the text");
    /* The failure stops the run at once: outputs not yet written are lost,
     * those written are whole. */
    assert_true(strncmp(p.stdout_text, "1\n2\n", p.out_len) == 0);
    assert_true(p.out_len % 2 == 0);
    proc_free(&p);
    ASSERT_FAILS(1, "cannot open '/nonexistent/in.jsonl'", "run", "--input",
                 "/nonexistent/in.jsonl", "identity");
}

static void test_outputs_go_to_a_file_as_json_lines_or_msgpack(void **state)
{
    (void)state;
    const char *out = path("out.txt");
    ASSERT_OUTPUT("", "run", "--output", out, "--format", "lines",
                  "range branch | exec ordered bind=[\"echo\",\"n={}\"]", "2");
    FILE *f = fopen(out, "r");
    char buf[64] = "";
    assert_non_null(f);
    assert_int_equal(fread(buf, 1, sizeof buf - 1, f), 8);
    fclose(f);
    assert_string_equal(buf, "n=0\nn=1\n");
    /* msgpack: values back to back, read back here with msgpack-c. */
    proc p;
    assert_int_equal(zpipe(&p, NULL, "run", "--format", "msgpack",
                           "range branch | identity ordered", "[254, 257]",
                           NULL),
                     0);
    size_t off = 0;
    for (uint64_t want = 254; want < 257; want++) {
        msgpack_zone zone;
        msgpack_object o;
        assert_true(msgpack_zone_init(&zone, 1024));
        assert_true(msgpack_unpack(p.stdout_text, p.out_len, &off, &zone, &o) >=
                    0);
        assert_int_equal(o.via.u64, want);
        msgpack_zone_destroy(&zone);
    }
    assert_int_equal(off, p.out_len);
    proc_free(&p);
}

/* ---- Built-in tasks ------------------------------------------------------ */

static void test_range_counts_as_python_does(void **state)
{
    (void)state;
    ASSERT_OUTPUT("3\n2\n1\n", "run", "range branch", "[3, 0, -1]");
    ASSERT_OUTPUT("", "run", "range branch", "[0]");
    ASSERT_OUTPUT("9223372036854775806\n", "run", "range branch",
                  "[9223372036854775806, 9223372036854775807]");
    ASSERT_FAILS(1, "the step must not be zero", "run", "range branch",
                 "[1, 5, 0]");
    ASSERT_FAILS(1, "range takes [STOP], [START, STOP]", "run", "range branch",
                 "[\"x\"]");
    ASSERT_FAILS(1, "give it the branch flag ('range branch')", "run", "range",
                 "2");
}

/* The threads of process `pid`, from /proc; -1 when unknown. */
static int threads_of(pid_t pid)
{
    char path[64], line[256];
    int n = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f != NULL && n < 0 && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "Threads: %d", &n) != 1)
            n = -1;
    if (f != NULL)
        fclose(f);
    return n;
}

static void
test_lines_reads_a_file_and_sleep_waits_without_threads(void **state)
{
    (void)state;
    const char *text = write_file("words.txt", "one\ntwo\n\nthree");
    char args[256];
    snprintf(args, sizeof args, "\"%s\"", text);
    ASSERT_OUTPUT("\"one\"\n\"two\"\n\"\"\n\"three\"\n", "run",
                  "lines branch | identity ordered", args);
    ASSERT_OUTPUT("0\n1\n2\n", "run", "range branch | sleep bind=1", "3");
    /* 1000 calls of an hour's sleep in flight at once, as the progress
     * shows, in a process of far fewer threads; SIGINT ends them. */
    proc p;
    const char *sleepers[] = {"run", "--progress",
                              "range branch | sleep workers=1000 bind=3600000",
                              "1000", NULL};
    start_until(&p,
                "stage 2 sleep: in 1000, out 0, failed 0, retried 0, "
                "in flight 1000,",
                true, sleepers);
    int threads = threads_of(p.pid);
    kill(p.pid, SIGINT);
    assert_int_equal(finish(&p), 130);
    assert_in_range(threads, 1, 99);
    proc_free(&p);
    ASSERT_FAILS(1, "sleep needs bind=MILLISECONDS", "run",
                 "range branch | sleep", "1");
}

/* ---- exec ---------------------------------------------------------------- */

static void test_exec_emits_the_output_of_a_command_per_item(void **state)
{
    (void)state;
    ASSERT_OUTPUT("\"<0>\"\n\"<1>\"\n", "run",
                  "range branch | exec ordered workers=2 "
                  "bind=\"printf '<%s>\\\\n\\\\n' {}\"",
                  "2");
    /* Without {} the item comes last, as with xargs. */
    ASSERT_OUTPUT("\"x 7\"\n", "run", "range branch | exec bind=\"echo x\"",
                  "[7, 8]");
    ASSERT_OUTPUT("\"y 7\"\n", "run",
                  "range branch | exec bind=[\"echo\",\"y\"]", "[7, 8]");
    /* A value that is not a string is passed as its JSON. */
    proc p;
    assert_int_equal(zpipe(&p, "[1, \"a b\"]\n", "run", "--input", "-",
                           "exec bind=[\"printf\",\"%s\",\"{}\"]", NULL),
                     0);
    assert_string_equal(p.stdout_text, "\"[1,\\\"a b\\\"]\"\n");
    proc_free(&p);
}

static void test_exec_never_lets_an_item_become_shell_syntax(void **state)
{
    (void)state;
    char canary[200], text[1024];
    snprintf(canary, sizeof canary, "%s/pwned", dir);
    snprintf(text, sizeof text,
             "$(touch %s)\n`touch %s`\n'; touch %s; '\n\"; touch %s; \"\n",
             canary, canary, canary, canary);
    const char *in = write_file("evil.txt", text);
    proc p;
    assert_int_equal(zpipe(&p, NULL, "run", "--input", in, "--input-format",
                           "lines", "--format", "lines",
                           "exec ordered bind=\"echo {}\"", NULL),
                     0);
    assert_string_equal(p.stdout_text, text);
    assert_int_equal(access(canary, F_OK), -1);
    proc_free(&p);
}

static void test_exec_failures_name_the_command_status_and_stderr(void **state)
{
    (void)state;
    ASSERT_FAILS(1,
                 "task 'exec' failed on item 0: `echo oops >&2; exit 3 '5'` "
                 "exited with status 3: oops",
                 "run", "range branch | exec bind=\"echo oops >&2; exit 3\"",
                 "[5, 6]");
    ASSERT_FAILS(1, "was killed by signal 9 (SIGKILL)", "run",
                 "exec bind=\"kill -9 $$ #\"", "1");
    ASSERT_FAILS(1, "cannot run `/nonexistent/tool 1`: No such file", "run",
                 "range branch | exec bind=[\"/nonexistent/tool\"]", "[1, 2]");
    ASSERT_FAILS(1, "exec needs its command in bind", "run", "exec", "1");
    proc p;
    assert_int_equal(zpipe(&p, "\"a\\u0000b\"\n", "run", "--input", "-",
                           "exec bind=\"echo\"", NULL),
                     1);
    assert_contains(p.stderr_text, "the item holds a NUL byte");
    proc_free(&p);
    /* stderr is passed through; with on_error=skip, failures are counted. */
    const char *stats = path("skip.json");
    assert_int_equal(
        zpipe(&p, NULL, "run", "--stats", stats,
              "range branch | exec on_error=skip bind=\"echo e{} >&2; "
              "test {} -ne 2\" | identity",
              "4", NULL),
        0);
    assert_string_equal(p.stdout_text, "\"\"\n\"\"\n\"\"\n");
    assert_contains(p.stderr_text, "e2\n");
    assert_contains(p.stderr_text, "e3\n");
    proc_free(&p);
    json_t *j = json_load_file(stats, 0, NULL);
    assert_non_null(j);
    json_t *exec = json_array_get(json_object_get(j, "stages"), 1);
    assert_int_equal(json_integer_value(json_object_get(exec, "skipped")), 1);
    assert_int_equal(json_integer_value(json_object_get(exec, "items_out")), 3);
    json_decref(j);
}

/* ---- Task failures ------------------------------------------------------- */

static void test_a_task_failure_exits_1_naming_the_task_and_item(void **state)
{
    (void)state;
    proc p;
    assert_int_equal(zpipe(&p, NULL, "run", "--plugin", TASKS,
                           "range branch | fail_on bind=3", "10", NULL),
                     1);
    assert_contains(p.stderr_text,
                    "zpipe run: task 'fail_on' failed on item 3: 3 is the "
                    "bad one\n");
    proc_free(&p);
}

/* ---- Process and remote stages ------------------------------------------- */

/* The pids in outputs [item, pid], each counted once, into pids[]. */
static size_t pids_of(const char *text, long *pids, size_t max, size_t *lines)
{
    size_t n = 0;
    *lines = 0;
    for (const char *l = text; l && *l;
         l = strchr(l, '\n'), l = l ? l + 1 : l) {
        long item, pid;
        assert_int_equal(sscanf(l, "[%ld,%ld]", &item, &pid), 2);
        (*lines)++;
        size_t i = 0;
        while (i < n && pids[i] != pid)
            i++;
        if (i == n && n < max)
            pids[n++] = pid;
    }
    return n;
}

static void
test_a_process_stage_runs_plugin_tasks_in_zpipe_workers(void **state)
{
    (void)state;
    proc p;
    long pids[8];
    size_t lines;
    assert_int_equal(zpipe(&p, NULL, "run", "--plugin", TASKS,
                           "range branch | whoami mode=process workers=2 | "
                           "exec mode=process bind=[\"echo\"]",
                           "200", NULL),
                     0);
    /* exec in a worker process: [i, pid] comes back as the text "[i,pid]" */
    char *text = strdup(p.stdout_text), *w = text;
    for (char *r = text; *r; r++)
        if (*r != '"')
            *w++ = *r;
    *w = '\0';
    size_t n = pids_of(text, pids, 8, &lines);
    assert_int_equal(lines, 200);
    assert_true(n >= 1 && n <= 2);
    for (size_t i = 0; i < n; i++)
        assert_true(pids[i] != p.pid && pids[i] > 0);
    free(text);
    proc_free(&p);
    assert_true(no_child_within(LEFTOVER_MS));
}

/* A tcp endpoint on 127.0.0.1 with a port that was just free. */
static void free_endpoint(char *out, size_t len)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t alen = sizeof a;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &alen), 0);
    close(s);
    snprintf(out, len, "tcp://127.0.0.1:%d", (int)ntohs(a.sin_port));
}

/* Two `zpipe worker`s of the test plugin at `ep`, with more arguments. */
static void start_workers(proc *w, const char *ep, const char *const *more)
{
    for (int i = 0; i < 2; i++) {
        const char *args[16] = {"worker", "--connect", ep, "--plugin",
                                TASKS,    "--threads", "2"};
        for (size_t k = 0; more && more[k]; k++)
            args[7 + k] = more[k];
        start(&w[i], args);
    }
}

/* Stops the workers with SIGTERM: they leave cleanly, with status 0. */
static void stop_workers(proc *w)
{
    for (int i = 0; i < 2; i++) {
        kill(w[i].pid, SIGTERM);
        assert_int_equal(finish(&w[i]), 0);
        proc_free(&w[i]);
    }
}

/* Runs `range branch | whoami mode=remote` over [n] with the workers. */
static void run_remote(const proc *w, const char *ep, int n,
                       const char *const *more)
{
    proc p;
    char args[16];
    long pids[8];
    size_t lines;
    const char *argv[24] = {"run", "--listen",       ep,   "--plugin",
                            TASKS, "--wait-workers", "60s"};
    size_t k = 7;
    for (; more && more[k - 7]; k++)
        argv[k] = more[k - 7];
    snprintf(args, sizeof args, "%d", n);
    argv[k++] = "range branch | whoami mode=remote";
    argv[k++] = args;
    argv[k] = NULL;
    start(&p, argv);
    if (finish(&p) != 0)
        fail_msg("zpipe run: %s", p.stderr_text);
    size_t got = pids_of(p.stdout_text, pids, 8, &lines);
    assert_int_equal(lines, (size_t)n);
    for (size_t i = 0; i < got; i++)
        assert_true(pids[i] == w[0].pid || pids[i] == w[1].pid);
    proc_free(&p);
}

static void
test_a_remote_stage_is_served_by_zpipe_workers_over_tcp(void **state)
{
    (void)state;
    char ep[64];
    proc w[2];
    free_endpoint(ep, sizeof ep);
    start_workers(w, ep, NULL);
    run_remote(w, ep, 500, NULL);
    run_remote(w, ep, 50, NULL); /* the workers stay for the next run */
    stop_workers(w);
    assert_true(no_child_within(LEFTOVER_MS));
}

/* `zpipe worker`s of the test plugin at `ep`, in pool `pool`. */
static void start_pool_workers(proc *w, int n, const char *ep, const char *pool)
{
    for (int i = 0; i < n; i++) {
        const char *args[] = {"worker", "--connect", ep,   "--plugin",
                              TASKS,    "--pool",    pool, NULL};
        start(&w[i], args);
    }
}

/* Whether `pid` is one of the workers w[0..n). */
static bool one_of(const proc *w, int n, long pid)
{
    for (int i = 0; i < n; i++)
        if (w[i].pid == pid)
            return true;
    return false;
}

static void
test_two_pools_serve_two_remote_stages_the_coordinator_lacks(void **state)
{
    (void)state;
    enum { N = 10000 };
    char ep[64];
    proc io[2], cpu[2], p;
    unsigned char *seen = calloc(N, 1);
    assert_non_null(seen);
    free_endpoint(ep, sizeof ep);
    /* Every worker has whoami, the coordinator none: the pools alone
     * keep each worker to its stage. */
    start_pool_workers(io, 2, ep, "io");
    start_pool_workers(cpu, 2, ep, "cpu");
    assert_int_equal(zpipe(&p, NULL, "run", "--listen", ep, "--wait-workers",
                           "20s",
                           "range branch | whoami mode=remote pool=io | "
                           "whoami mode=remote pool=cpu",
                           "10000", NULL),
                     0);
    size_t lines = 0;
    for (const char *l = p.stdout_text; *l; l = strchr(l, '\n') + 1) {
        long item, a, b;
        assert_int_equal(sscanf(l, "[[%ld,%ld],%ld]", &item, &a, &b), 3);
        assert_true(item >= 0 && item < N);
        if (seen[item]++ > 0)
            fail_msg("item %ld came twice", item);
        if (!one_of(io, 2, a) || !one_of(cpu, 2, b))
            fail_msg("item %ld went through %ld then %ld: not io then cpu",
                     item, a, b);
        lines++;
    }
    assert_int_equal(lines, N);
    free(seen);
    proc_free(&p);
    stop_workers(io);
    stop_workers(cpu);
    assert_true(no_child_within(1000));
}

static void test_a_remote_task_no_worker_has_fails_naming_it(void **state)
{
    (void)state;
    char ep[64], want[160];
    proc p;
    free_endpoint(ep, sizeof ep);
    assert_int_equal(zpipe(&p, NULL, "run", "--listen", ep, "--wait-workers",
                           "300ms", "range branch | nosuch mode=remote", "3",
                           NULL),
                     1);
    snprintf(want, sizeof want,
             "zpipe run: task 'nosuch': no worker serving it connected to %s "
             "within 300 ms\n",
             ep);
    assert_contains(p.stderr_text, want);
    proc_free(&p);
}

static void test_curve_keys_from_keygen_secure_a_remote_stage(void **state)
{
    (void)state;
    char ep[64];
    proc w[2], p;
    assert_int_equal(chdir(dir), 0);
    assert_int_equal(zpipe(&p, NULL, "keygen", "server", NULL), 0);
    assert_contains(p.stdout_text, "wrote server.key");
    proc_free(&p);
    ASSERT_FAILS(2, "server.key exists", "keygen", "server");
    ASSERT_FAILS(2,
                 "cannot create /nonexistent/dir/k.key: there is no folder "
                 "'/nonexistent/dir'",
                 "keygen", "/nonexistent/dir/k");
    assert_int_equal(zpipe(&p, NULL, "keygen", "worker", NULL), 0);
    proc_free(&p);
    struct stat st;
    assert_int_equal(stat("server.key", &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    free_endpoint(ep, sizeof ep);
    const char *worker_keys[] = {"--curve-server", "server.pub",
                                 "--curve-secret", "worker.key", NULL};
    const char *server_keys[] = {"--curve-secret", "server.key",
                                 "--curve-allow", "worker.pub", NULL};
    start_workers(w, ep, worker_keys);
    run_remote(w, ep, 100, server_keys);
    stop_workers(w);
    ASSERT_FAILS(2, "worker.pub is a public key", "worker", "--connect", ep,
                 "--curve-server", "server.pub", "--curve-secret",
                 "worker.pub");
    /* --curve-server wants the server's public key, not its secret one. */
    ASSERT_FAILS(2,
                 "zpipe worker: server.key is a secret key (its line '# zpipe "
                 "CURVE secret key' says so), where a public key is wanted",
                 "worker", "--connect", ep, "--curve-server", "server.key",
                 "--curve-secret", "worker.key");
    ASSERT_FAILS(2, "server.pub is a public key", "run", "--listen", ep,
                 "--curve-secret", "server.pub", "--curve-allow", "worker.pub",
                 "range branch | identity mode=remote", "3");
    assert_int_equal(chdir("/"), 0);
}

/* ---- Descriptors ----------------------------------------------------------
 */

/* zpipe() for a zpipe allowed at most `files` open files. */
static int zpipe_limited(proc *p, int files, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, files);
    while ((args[n] = va_arg(ap, const char *)) != NULL && n < 63)
        n++;
    va_end(ap);
    args[n] = NULL;
    start_limited(p, files, args);
    return finish(p);
}

static void test_more_workers_than_open_files_allow_fail_at_once(void **state)
{
    (void)state;
    proc p;
    /* A process worker's connection takes a descriptor, a thread worker's
     * sockets two: neither stage can start, and none of it starts. */
    assert_int_equal(zpipe_limited(&p, 256, "run", "--plugin", TASKS,
                                   "range branch | nap mode=process "
                                   "workers=100000 bind=1",
                                   "10", NULL),
                     2);
    assert_contains(p.stderr_text,
                    "zpipe run: task 'nap' (workers=100000) needs about ");
    assert_contains(p.stderr_text, "but this process may open 256 ");
    assert_contains(p.stderr_text, "raise the hard limit (ulimit -Hn)");
    assert_string_equal(p.stdout_text, "");
    proc_free(&p);
    assert_int_equal(zpipe_limited(&p, 256, "run", "--plugin", TASKS,
                                   "range branch | nap workers=200 bind=1",
                                   "10", NULL),
                     2);
    assert_contains(p.stderr_text, "task 'nap' (workers=200) needs about 4");
    proc_free(&p);
    /* What fits runs. */
    long pids[16];
    size_t lines;
    assert_int_equal(zpipe_limited(&p, 256, "run", "--plugin", TASKS,
                                   "range branch | whoami mode=process "
                                   "workers=10",
                                   "30", NULL),
                     0);
    pids_of(p.stdout_text, pids, 16, &lines);
    assert_int_equal(lines, 30);
    proc_free(&p);
    assert_true(no_child_within(1000));
}

/* The entries of /proc/PID/`what` (its threads, its open files), or -1. */
static int count_of(pid_t pid, const char *what)
{
    char path[64];
    int n = 0;
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, what);
    DIR *d = opendir(path);
    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void test_a_worker_runs_every_thread_it_announces(void **state)
{
    (void)state;
    char ep[64];
    proc w;
    free_endpoint(ep, sizeof ep); /* nobody there: it waits */
    const char *args[] = {"worker", "--connect", ep,     "--plugin",
                          TASKS,    "--threads", "2048", NULL};
    start(&w, args);
    /* Each executor thread has a socket, which holds an eventfd: more
     * than ZeroMQ's default of 1023 sockets per context, and than the
     * usual soft limit of 1024 open files. */
    for (int i = 0;
         count_of(w.pid, "fd") < 2048 || count_of(w.pid, "task") < 2048; i++) {
        if (i > DEADLINE_MS / 10 || count_of(w.pid, "fd") < 0)
            fail_msg("%d threads, %d open files: %s", count_of(w.pid, "task"),
                     count_of(w.pid, "fd"), w.stderr_text);
        pump(&w, 10, NULL, false);
    }
    kill(w.pid, SIGTERM);
    assert_int_equal(finish(&w), 0);
    proc_free(&w);
}

/* The port of a tcp endpoint on 127.0.0.1. */
static struct sockaddr_in address_of(const char *ep)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_port = htons((uint16_t)atoi(strrchr(ep, ':') + 1));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* Opens n connections to `ep` without waiting for them to be accepted,
 * and never says a word on them. */
static void open_silent(const char *ep, int *fds, int n)
{
    struct sockaddr_in a = address_of(ep);
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(fds[i] >= 0);
        if (connect(fds[i], (struct sockaddr *)&a, sizeof a) != 0)
            assert_int_equal(errno, EINPROGRESS);
    }
}

/* How many times `part` occurs in `text`. */
static int occurrences(const char *text, const char *part)
{
    int n = 0;
    for (const char *at = text; (at = strstr(at, part)) != NULL; at++)
        n++;
    return n;
}

/* The number of lines of `text`. */
static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (; text != NULL && *text; text++)
        n += *text == '\n';
    return n;
}

/* Reads the process's output until it wrote `n` lines. */
static void await_lines(proc *p, size_t n)
{
    for (int waited = 0; count_lines(p->stdout_text) < n; waited += 100) {
        if ((p->out < 0 && p->err < 0) || waited > DEADLINE_MS)
            fail_msg("%zu lines, not %zu: %s", count_lines(p->stdout_text), n,
                     p->stderr_text);
        pump(p, 100, NULL, false);
    }
}

static void
test_a_coordinator_out_of_files_says_so_once_and_serves_on(void **state)
{
    (void)state;
    char ep[64], said[160], want[4096];
    proc w[2], p;
    int fds[200];
    if (ZP_TEST_TSAN) /* zpipe's own reports of libzmq's hand-offs, which */
        skip();       /* tsan.supp cannot match without descriptors left */
    free_endpoint(ep, sizeof ep);
    start_workers(w, ep, NULL);
    const char *args[] = {"run",
                          "--listen",
                          ep,
                          "--plugin",
                          TASKS,
                          "--wait-workers",
                          "20s",
                          "range branch | nap mode=remote "
                          "bind=20",
                          "400",
                          NULL};
    start_limited(&p, 128, args);
    await_lines(&p, 20); /* it runs */
    /* More connections than it has descriptors left for, which it closes
     * 5 s later as none says a word. */
    open_silent(ep, fds, 200);
    snprintf(said, sizeof said,
             "zpipe: cannot accept more connections on %s: too many open "
             "files (limit 128)",
             ep);
    if (!pump(&p, DEADLINE_MS, said, true))
        fail_msg("it did not say '%s': %s", said, p.stderr_text);
    assert_int_equal(finish(&p), 0);
    for (int i = 0; i < 200; i++)
        close(fds[i]);
    /* Once; later lines only count the failures since. */
    assert_int_equal(occurrences(p.stderr_text, "(limit 128)\n"), 1);
    /* Its workers served every item, once. */
    size_t len = 0;
    for (int i = 0; i < 400; i++)
        len += (size_t)snprintf(want + len, sizeof want - len, "%d\n", i);
    char *a = sorted_lines(p.stdout_text), *b = sorted_lines(want);
    assert_string_equal(a, b);
    free(a);
    free(b);
    proc_free(&p);
    stop_workers(w);
    assert_true(no_child_within(1000));
}

static void test_a_connection_that_never_handshakes_is_closed(void **state)
{
    (void)state;
    char ep[64], buf[256];
    proc p;
    int fd;
    free_endpoint(ep, sizeof ep);
    const char *args[] = {
        "run", "--listen", ep, "--input", "-", "identity mode=remote", NULL};
    start(&p, args);
    struct sockaddr_in a = address_of(ep);
    for (int i = 0;; i++) { /* until it listens */
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            break;
        close(fd);
        assert_true(i < DEADLINE_MS / 10);
        nap_us(10000);
    }
    /* It greets, then gives up on a peer that never greets back: after
     * 5 s, well before ZeroMQ's default of 30 s. */
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ssize_t got = 1;
    for (long left = 25000; got > 0 && left > 0;) {
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, (int)left) > 0)
            got = read(fd, buf, sizeof buf);
        clock_gettime(CLOCK_MONOTONIC, &t);
        left = 25000 - ((t.tv_sec - t0.tv_sec) * 1000 +
                        (t.tv_nsec - t0.tv_nsec) / 1000000);
    }
    assert_true(got == 0 || (got < 0 && errno == ECONNRESET));
    close(fd);
    assert_int_equal(finish(&p), 0);
    assert_string_equal(p.stdout_text, "");
    proc_free(&p);
}

/* ---- Statistics and progress --------------------------------------------- */

static void test_stats_file_holds_the_final_statistics(void **state)
{
    (void)state;
    const char *stats = path("stats.json");
    proc p;
    assert_int_equal(zpipe(&p, NULL, "run", "--plugin", TASKS, "--stats", stats,
                           "range branch | double_it workers=3", "50", NULL),
                     0);
    proc_free(&p);
    json_error_t e;
    json_t *j = json_load_file(stats, 0, &e);
    if (j == NULL)
        fail_msg("%s: %s", stats, e.text);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    json_t *stages = json_object_get(j, "stages");
    assert_int_equal(json_array_size(stages), 2);
    json_t *d = json_array_get(stages, 1);
    assert_string_equal(json_string_value(json_object_get(d, "task")),
                        "double_it");
    assert_int_equal(json_integer_value(json_object_get(d, "workers")), 3);
    assert_int_equal(json_integer_value(json_object_get(d, "items_in")), 50);
    assert_int_equal(json_integer_value(json_object_get(d, "items_out")), 50);
    assert_int_equal(json_integer_value(json_object_get(d, "failed")), 0);
    assert_true(json_is_integer(json_object_get(d, "queue_hwm")));
    assert_true(json_is_real(json_object_get(d, "busy_seconds")));
    assert_true(json_is_integer(json_object_get(d, "restarts")));
    json_decref(j);
    /* A failed run says so. */
    assert_int_equal(zpipe(&p, NULL, "run", "--plugin", TASKS, "--stats", stats,
                           "range branch | fail_on bind=1", "5", NULL),
                     1);
    proc_free(&p);
    j = json_load_file(stats, 0, &e);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "status")),
                        "failed");
    assert_contains(json_string_value(json_object_get(j, "error")),
                    "1 is the bad one");
    json_decref(j);
}

static void test_progress_off_a_terminal_prints_plain_lines(void **state)
{
    (void)state;
    proc p;
    const char *args[] = {"run", "--progress",   "--input",
                          "-",   "sleep bind=1", NULL};
    /* The run lasts until its input ends, which comes once a report of
     * the second showed the three items through. */
    start(&p, args);
    assert_int_equal(write(p.in, "0\n1\n2\n", 6), 6);
    wait_for(&p,
             "s: stage 2 sleep: in 3, out 3, failed 0, retried 0, in flight 0",
             true);
    assert_int_equal(finish(&p), 0);
    assert_string_equal(p.stdout_text, "0\n1\n2\n");
    assert_true(
        has_progress_line(p.stderr_text, "stage 1 <input>: in 1, out "));
    assert_true(has_progress_line(p.stderr_text, "stage 2 sleep: in 3, out 3"));
    assert_contains(p.stderr_text, "zpipe: finished in ");
    assert_contains(p.stderr_text, "zpipe: stage 1 <input>: in 1, out 3, "
                                   "failed 0");
    assert_contains(p.stderr_text, "zpipe: stage 2 sleep: in 3, out 3, failed "
                                   "0, retried 0, skipped 0, restarts 0");
    assert_null(strchr(p.stderr_text, '\x1b'));
    proc_free(&p);
}

static void test_progress_knows_the_size_of_a_range_or_an_input(void **state)
{
    (void)state;
    proc p;
    assert_int_equal(zpipe(&p, NULL, "run", "--progress",
                           "range branch | sleep bind=400", "[1, 5]", NULL),
                     0);
    assert_contains(p.stderr_text, "% done, ");
    assert_contains(p.stderr_text, " of 4 items, ");
    proc_free(&p);
    /* JSON input: the blank line is no item; raw lines: it is one. */
    const char *in = write_file("in.jsonl", "1\n\n2\n3");
    assert_int_equal(zpipe(&p, NULL, "run", "--progress", "--input", in,
                           "sleep bind=400", NULL),
                     0);
    assert_contains(p.stderr_text, " of 3 items, ");
    proc_free(&p);
    assert_int_equal(zpipe(&p, NULL, "run", "--progress", "--input", in,
                           "--input-format", "lines", "sleep bind=300", NULL),
                     0);
    assert_contains(p.stderr_text, " of 4 items, ");
    proc_free(&p);
    /* From stdin, the size is unknown. */
    assert_int_equal(zpipe(&p, "1\n2\n3\n", "run", "--progress", "--input", "-",
                           "sleep bind=400", NULL),
                     0);
    assert_null(strstr(p.stderr_text, "% done"));
    proc_free(&p);
}

/* ---- Metrics ------------------------------------------------------------- */

/* The "ADDRESS:PORT" a zpipe process said it serves its metrics on. */
static void metrics_at(proc *p, char *where, size_t len)
{
    if (!pump(p, DEADLINE_MS, "/metrics\n", true))
        fail_msg("no metrics address from zpipe: %s", p->stderr_text);
    const char *at = strstr(p->stderr_text, "metrics at http://");
    assert_non_null(at);
    at += strlen("metrics at http://");
    snprintf(where, len, "%.*s", (int)strcspn(at, "/"), at);
}

/* The value of a sample without labels on the page at `where`. */
static double metric(const char *where, const char *name)
{
    http_reply r;
    char key[128];
    if (http_call(where, "GET", "/metrics", NULL, &r) != 200)
        fail_msg("GET http://%s/metrics: %d", where, r.status);
    snprintf(key, sizeof key, "\n%s ", name);
    const char *line = strstr(r.body, key);
    if (line == NULL)
        fail_msg("no %s in %s", name, r.body);
    double v = strtod(line + strlen(key), NULL);
    http_reply_free(&r);
    return v;
}

static void test_a_worker_serves_its_own_metrics(void **state)
{
    (void)state;
    char ep[64], where[64];
    proc w[2] = {{.pid = -1}, {.pid = -1}}, p; /* one worker: run_remote's */
    free_endpoint(ep, sizeof ep);
    const char *wargs[] = {"worker",      "--connect", ep,  "--plugin",
                           TASKS,         "--threads", "2", "--metrics",
                           "127.0.0.1:0", NULL};
    start(&w[0], wargs);
    metrics_at(&w[0], where, sizeof where);
    assert_true(metric(where, "zpipe_worker_coordinator_connected") == 0);
    /* Connected while a run goes, and counting what it ran. */
    const char *run_args[] = {"run",
                              "--listen",
                              ep,
                              "--plugin",
                              TASKS,
                              "range branch | nap bind=20 mode=remote "
                              "workers=2",
                              "100",
                              NULL};
    start(&p, run_args);
    for (int i = 0; metric(where, "zpipe_worker_coordinator_connected") != 1;
         i++) {
        assert_true(i < DEADLINE_MS / 10);
        nap_us(10000);
    }
    assert_int_equal(finish(&p), 0);
    proc_free(&p);
    assert_true(metric(where, "zpipe_worker_items_total") == 100);
    assert_true(metric(where, "zpipe_worker_batches_total") >= 1);
    assert_true(metric(where, "zpipe_worker_busy_seconds_total") >= 2 * 0.02);
    /* A second run: the link to it is made anew. */
    run_remote(w, ep, 10, NULL);
    assert_true(metric(where, "zpipe_worker_items_total") == 110);
    assert_true(metric(where, "zpipe_worker_reconnects_total") >= 1);
    kill(w[0].pid, SIGTERM);
    assert_int_equal(finish(&w[0]), 0);
    proc_free(&w[0]);
}

static void test_metrics_errors_name_the_address_and_exit_2(void **state)
{
    (void)state;
    char where[64];
    proc p;
    ASSERT_FAILS(2, "bad metrics address 'nonsense'", "run", "--metrics",
                 "nonsense", "range branch | identity", "3");
    ASSERT_FAILS(2, "bad value '5x' for --metrics-linger", "run",
                 "--metrics-linger", "5x", "identity");
    ASSERT_FAILS(2, "bad metrics address 'nonsense'", "worker", "--connect",
                 "tcp://127.0.0.1:1", "--metrics", "nonsense");
    /* A port in use: that of a run still going. */
    const char *args[] = {"run",         "--metrics",
                          "127.0.0.1:0", "range branch | sleep bind=100",
                          "100",         NULL};
    start(&p, args);
    metrics_at(&p, where, sizeof where);
    ASSERT_FAILS(2, where, "run", "--metrics", where, "identity");
    ASSERT_FAILS(2, "Address already in use", "run", "--metrics", where,
                 "identity");
    kill(p.pid, SIGTERM);
    finish(&p);
    proc_free(&p);
}

/* ---- Signals ------------------------------------------------------------- */

/* Every line of `text` is a whole JSON integer. */
static void assert_whole_lines(const char *text)
{
    assert_true(text[0] != '\0' && text[strlen(text) - 1] == '\n');
    for (const char *l = text; *l; l = strchr(l, '\n') + 1) {
        char *end;
        strtol(l, &end, 10);
        assert_true(*end == '\n');
    }
}

static void test_sigint_stops_the_run_keeping_whole_outputs(void **state)
{
    (void)state;
    proc p;
    /* A run of hours, which only the signal ends within the deadline. */
    const char *args[] = {"run", "range branch | sleep workers=4 bind=20",
                          "1000000", NULL};
    start_until(&p, "\n", false, args);
    kill(p.pid, SIGINT);
    assert_int_equal(finish(&p), 130);
    assert_whole_lines(p.stdout_text);
    assert_contains(p.stderr_text, "SIGINT: stopping the run");
    proc_free(&p);
    assert_true(no_child_within(LEFTOVER_MS));
}

static void test_sigterm_leaves_no_worker_process_behind(void **state)
{
    (void)state;
    proc p;
    const char *args[] = {"run",
                          "--plugin",
                          TASKS,
                          "--progress",
                          "range branch | nap mode=process workers=3 "
                          "bind=50 | exec workers=3 bind=\"sleep 30; echo\"",
                          "1000",
                          NULL};
    /* Once the progress says so, workers are up and commands running. */
    start_until(&p,
                "stage 3 exec: in 3, out 0, failed 0, retried 0, in flight 3",
                true, args);
    kill(p.pid, SIGTERM);
    assert_int_equal(finish(&p), 143);
    assert_contains(p.stderr_text, "zpipe: cancelled in ");
    /* The workers were reaped by zpipe, exec's commands killed and reaped. */
    assert_true(no_child_within(LEFTOVER_MS));
    proc_free(&p);
}

/* Whether process `pid` holds the socket of inode `inode`. */
static bool holds_socket(pid_t pid, unsigned long inode)
{
    char path[64], link[64], want[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    DIR *d = opendir(path);
    struct dirent *e;
    bool yes = false;
    while (d != NULL && !yes && (e = readdir(d)) != NULL) {
        char fd[330];
        snprintf(fd, sizeof fd, "%s/%s", path, e->d_name);
        ssize_t n = readlink(fd, link, sizeof link - 1);
        yes = n > 0 && (link[n] = '\0', strcmp(link, want) == 0);
    }
    if (d != NULL)
        closedir(d);
    return yes;
}

/* The private directory of zpipe `pid`'s process workers (where it
 * listens for them), into out; false while there is none. */
static bool workers_dir(pid_t pid, char *out, size_t len)
{
    FILE *f = fopen("/proc/net/unix", "r");
    char line[512], name[300];
    unsigned long inode;
    bool found = false;
    while (f != NULL && !found && fgets(line, sizeof line, f) != NULL) {
        if (sscanf(line, "%*s %*s %*s %*s %*s %*s %lu %299s", &inode, name) !=
                2 ||
            strncmp(name, "/tmp/zpipe-", 11) != 0 || !holds_socket(pid, inode))
            continue;
        *strrchr(name, '/') = '\0';
        snprintf(out, len, "%s", name);
        found = true;
    }
    if (f != NULL)
        fclose(f);
    return found;
}

static void test_a_second_sigint_stops_at_once(void **state)
{
    (void)state;
    proc p;
    char workers[300] = "", where[64];
    const char *nap = "zpipe_stage_in_flight{stage=\"2\",task=\"nap\"}";
    const char *args[] = {
        "run",
        "--plugin",
        TASKS,
        "--metrics",
        "127.0.0.1:0",
        "range branch | nap bind=3600000 | identity mode=process",
        "2",
        NULL};
    start(&p, args);
    metrics_at(&p, where, sizeof where);
    /* The process workers started and nap holds an item: the first SIGINT
     * finds a call that it must wait for. */
    for (int waited = 0; waited < DEADLINE_MS &&
                         (!workers_dir(p.pid, workers, sizeof workers) ||
                          metric(where, nap) < 1);
         waited += 50)
        assert_false(pump(&p, 50, "never", false));
    assert_true(workers[0] != '\0');
    assert_true(metric(where, nap) >= 1);
    kill(p.pid, SIGINT); /* the run waits for nap, which takes an hour */
    assert_false(pump(&p, 300, "never", false));
    assert_true(p.out >= 0); /* still running */
    /* The second ends it long before nap would: finish() would otherwise
     * call it stuck. */
    kill(p.pid, SIGINT);
    assert_int_equal(finish(&p), 130);
    if (access(workers, F_OK) == 0)
        fail_msg("%s is left behind", workers);
    proc_free(&p);
}

static void test_a_reader_that_goes_away_stops_the_run(void **state)
{
    (void)state;
    proc p;
    const char *args[] = {"run", "range branch | identity", "1000000000000",
                          NULL};
    start_until(&p, "\n", false, args);
    close(p.out); /* like `| head -1` */
    p.out = -1;
    assert_int_equal(finish(&p), 128 + SIGPIPE);
    proc_free(&p);
}

/* ---- main ---------------------------------------------------------------- */

/* ---- Checkpoints and resume ---------------------------------------------- */

/* The whole of `file` (malloc'ed, NUL-terminated), or NULL when there is
 * none; its length in *len. */
static char *file_bytes(const char *file, size_t *len)
{
    FILE *f = fopen(file, "rb");
    char *text = NULL;
    *len = 0;
    if (f == NULL)
        return NULL;
    for (size_t n = 1; n > 0;) {
        text = realloc(text, *len + 4097);
        assert_non_null(text);
        n = fread(text + *len, 1, 4096, f);
        *len += n;
    }
    text[*len] = '\0';
    fclose(f);
    return text;
}

static void assert_file_is(const char *file, const char *want)
{
    size_t len;
    char *text = file_bytes(file, &len);
    if (text == NULL)
        fail_msg("no file '%s'", file);
    assert_string_equal(text, want);
    free(text);
}

/* A number of the STATE `state`, or -1 when there is none. */
static long long state_number(const char *state, const char *key)
{
    json_t *j = json_load_file(state, 0, NULL);
    long long n = j ? json_integer_value(json_object_get(j, key)) : -1;
    json_decref(j);
    return n;
}

static bool state_done(const char *state)
{
    json_t *j = json_load_file(state, 0, NULL);
    bool done = j != NULL && json_is_true(json_object_get(j, "done"));
    json_decref(j);
    return done;
}

/* The files of a run with --checkpoint, in the test directory. */
typedef struct ckpt_files {
    char state[200], out[200];
} ckpt_files;

static void ckpt_files_init(ckpt_files *f)
{
    snprintf(f->state, sizeof f->state, "%s", path("state"));
    snprintf(f->out, sizeof f->out, "%s", path("out.jsonl"));
}

/* Runs `zpipe run --checkpoint state --output out SPEC ARGS` to its end
 * and returns the 16 hex digits of the run's fingerprint from its STATE. */
static void fingerprint_of(const char *state, const char *out, const char *spec,
                           const char *args, char fp[17])
{
    ASSERT_OUTPUT("", "run", "--checkpoint", state, "--output", out, spec,
                  args);
    json_t *j = json_load_file(state, 0, NULL);
    const char *token = json_string_value(json_object_get(j, "token"));
    assert_non_null(token);
    assert_int_equal(strncmp(token, "zpipe1.", 7), 0);
    snprintf(fp, 17, "%s", token + 7);
    json_decref(j);
}

/* A STATE of `range branch` on 5 as zpipe writes it after the first 3
 * outputs ("0\n1\n2\n": 6 bytes), whose FILE is `out`. */
static void write_cut_state(const char *state, const char *out)
{
    char fp[17], text[512];
    fingerprint_of(state, out, "range branch", "5", fp);
    snprintf(text, sizeof text,
             "{\"zpipe_state\": 1, \"token\": \"zpipe1.%s.3\", \"done\": "
             "false, \"output\": \"%s\", \"format\": \"json\", \"bytes\": 6, "
             "\"outputs\": 3, \"spec\": \"range branch\", \"args\": \"5\", "
             "\"input\": null}\n",
             fp, out);
    write_file("state", text);
}

/* Runs zpipe with the arguments after `part`, expecting exit 2 with
 * `part` on stderr, and `state` and `out` byte for byte as they were. */
#define ASSERT_REFUSED(state, out, part, ...)                                  \
    do {                                                                       \
        size_t l1_, l2_, l3_, l4_;                                             \
        char *s1_ = file_bytes(state, &l1_), *o1_ = file_bytes(out, &l2_);     \
        ASSERT_FAILS(2, part, __VA_ARGS__);                                    \
        char *s2_ = file_bytes(state, &l3_), *o2_ = file_bytes(out, &l4_);     \
        assert_true(l1_ == l3_ && (s1_ == s2_ || memcmp(s1_, s2_, l1_) == 0)); \
        assert_true(l2_ == l4_ && (o1_ == o2_ || memcmp(o1_, o2_, l2_) == 0)); \
        free(s1_);                                                             \
        free(s2_);                                                             \
        free(o1_);                                                             \
        free(o2_);                                                             \
    } while (0)

static void test_checkpoint_options_are_checked(void **state)
{
    (void)state;
    const char *st = path("state");
    ASSERT_FAILS(2, "--checkpoint STATE needs --output FILE", "run",
                 "--checkpoint", st, "range branch", "3");
    ASSERT_FAILS(2, "--checkpoint STATE needs --output FILE", "run",
                 "--checkpoint", st, "--output", "-", "range branch", "3");
    ASSERT_FAILS(2, "--checkpoint-interval needs --checkpoint STATE", "run",
                 "--output", path("out"), "--checkpoint-interval", "1s",
                 "range branch", "3");
    ASSERT_FAILS(2, "bad value 'often' for --checkpoint-interval", "run",
                 "--checkpoint", st, "--output", path("out"),
                 "--checkpoint-interval", "often", "range branch", "3");
    ASSERT_FAILS(2, "--checkpoint and --output name the same file", "run",
                 "--checkpoint", st, "--output", st, "range branch", "3");
    ASSERT_FAILS(2, "needs --output to be a regular file", "run",
                 "--checkpoint", st, "--output", "/dev/null", "range branch",
                 "3");
    ASSERT_FAILS(2, "a join stage takes part in checkpoints with one worker",
                 "run", "--checkpoint", st, "--output", path("out"),
                 "range branch | identity join workers=2", "3");
    ASSERT_FAILS(2, "cannot write --checkpoint '/nonexistent/state'", "run",
                 "--checkpoint", "/nonexistent/state", "--output", path("out"),
                 "range branch", "3");
    assert_int_equal(access(st, F_OK), -1); /* no STATE was written */
}

static void test_a_finished_state_exits_0_redoing_nothing(void **state)
{
    (void)state;
    ckpt_files f;
    ckpt_files_init(&f);
    const char *st = f.state, *out = f.out;
    ASSERT_OUTPUT("", "run", "--checkpoint", st, "--checkpoint-interval",
                  "500ms", "--output", out, "range branch", "5");
    assert_file_is(out, "0\n1\n2\n3\n4\n");
    assert_true(state_done(st));
    assert_int_equal(state_number(st, "outputs"), 5);
    assert_int_equal(state_number(st, "bytes"), 10);
    write_file("out.jsonl", "left alone\n");
    proc p;
    assert_int_equal(zpipe(&p, NULL, "run", "--checkpoint", st, "--output", out,
                           "range branch", "5", NULL),
                     0);
    assert_contains(p.stderr_text, "the run is done already (5 outputs");
    proc_free(&p);
    assert_file_is(out, "left alone\n");
    /* workers=, throttle=, mode= and pool= may change between runs. */
    ASSERT_OUTPUT("", "run", "--checkpoint", path("state2"), "--output", out,
                  "range branch | identity", "5");
    ASSERT_OUTPUT("", "run", "--checkpoint", path("state2"), "--output", out,
                  "range branch | identity workers=2 throttle=9", "5");
}

static void
test_a_resumed_run_keeps_what_was_committed_and_goes_on(void **state)
{
    (void)state;
    ckpt_files f;
    ckpt_files_init(&f);
    const char *st = f.state, *out = f.out;
    write_cut_state(st, out);
    write_file("out.jsonl", "0\n1\n2\n3\n4"); /* cut short by a crash */
    proc p;
    assert_int_equal(zpipe(&p, NULL, "run", "--checkpoint", st, "--output", out,
                           "range branch", "5", NULL),
                     0);
    assert_contains(p.stderr_text, "resuming from ");
    assert_contains(p.stderr_text, ": 3 outputs kept");
    proc_free(&p);
    assert_file_is(out, "0\n1\n2\n3\n4\n");
    assert_true(state_done(st));
    assert_int_equal(state_number(st, "outputs"), 5);
}

static void
test_a_state_that_does_not_fit_is_refused_touching_nothing(void **state)
{
    (void)state;
    ckpt_files f;
    ckpt_files_init(&f);
    const char *st = f.state, *out = f.out;
    write_cut_state(st, out);
    write_file("out.jsonl", "0\n1\n2\n3\n");
    ASSERT_REFUSED(st, out,
                   "another spec or other arguments (spec 'range "
                   "branch', arguments 5)",
                   "run", "--checkpoint", st, "--output", out, "range branch",
                   "6");
    ASSERT_REFUSED(st, out, "another spec or other arguments", "run",
                   "--checkpoint", st, "--output", out,
                   "range branch | identity", "5");
    ASSERT_REFUSED(st, out, "was written with --format json, not msgpack",
                   "run", "--checkpoint", st, "--output", out, "--format",
                   "msgpack", "range branch", "5");
    ASSERT_REFUSED(st, path("other"), "it was written for --output", "run",
                   "--checkpoint", st, "--output", path("other"),
                   "range branch", "5");
    const char *in = write_file("in", "1\n");
    ASSERT_REFUSED(st, in, "it was written for no --input", "run",
                   "--checkpoint", st, "--output", out, "--input", in,
                   "range branch");
    write_file("out.jsonl", "0\n");
    ASSERT_REFUSED(st, out, "is 2 bytes, shorter than the 6 bytes committed",
                   "run", "--checkpoint", st, "--output", out, "range branch",
                   "5");
    unlink(out);
    ASSERT_REFUSED(st, out, "is missing, and it held 6 bytes", "run",
                   "--checkpoint", st, "--output", out, "range branch", "5");
}

static void
test_a_corrupt_or_newer_state_is_refused_touching_nothing(void **state)
{
    (void)state;
    ckpt_files f;
    ckpt_files_init(&f);
    const char *st = f.state, *out = f.out;
    const char *whole =
        "{\"zpipe_state\": 1, \"token\": \"zpipe1.0123456789abcdef.1\", "
        "\"done\": false, \"output\": \"x\", \"format\": \"json\", "
        "\"bytes\": 2, \"outputs\": 1, \"spec\": \"range branch\", "
        "\"args\": \"5\", \"input\": null}\n";
    const char *bad[][2] = {
        {"garbage\n", "not JSON (line 1, column 1"},
        {"", "corrupt or cut short"},
        {"{\"zpipe_state\": 1, \"token\": \"zpi", "corrupt or cut short"},
        {"{}", "not a zpipe state file"},
        {"{\"zpipe_state\": 2, \"format\": \"new\"}",
         "written by a newer zpipe (state version 2; this one reads version "
         "1)"},
        {"{\"zpipe_state\": 1, \"token\": \"t\"}", "\"output\" is missing"},
    };
    assert_true(strlen(whole) > 40);
    write_file("out.jsonl", "0\n1\n");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file("state", bad[i][0]);
        ASSERT_REFUSED(st, out, bad[i][1], "run", "--checkpoint", st,
                       "--output", out, "range branch", "5");
    }
}

static void
test_a_checkpoint_not_written_fails_the_run_keeping_the_last(void **state)
{
    (void)state;
    ckpt_files f;
    ckpt_files_init(&f);
    const char *st = f.state, *out = f.out;
    char tmp[240];
    size_t before_len, after_len;
    write_cut_state(st, out);
    write_file("out.jsonl", "0\n1\n2\n");
    snprintf(tmp, sizeof tmp, "%s.tmp", st);
    assert_int_equal(mkdir(tmp, 0700), 0); /* STATE.tmp cannot be written */
    char *before = file_bytes(st, &before_len);
    ASSERT_FAILS(1, "checkpoint: creating", "run", "--checkpoint", st,
                 "--output", out, "range branch", "5");
    char *after = file_bytes(st, &after_len);
    assert_true(before_len == after_len &&
                memcmp(before, after, before_len) == 0);
    free(before);
    free(after);
    assert_int_equal(rmdir(tmp), 0);
    ASSERT_OUTPUT("", "run", "--checkpoint", st, "--output", out,
                  "range branch", "5");
    assert_file_is(out, "0\n1\n2\n3\n4\n");
}

static long long file_size(const char *file)
{
    struct stat sb;
    return stat(file, &sb) == 0 ? (long long)sb.st_size : -1;
}

/* Whether the process is gone (not reaped: finish() does that). */
static bool ended(const proc *p)
{
    siginfo_t si = {0};
    return waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           si.si_pid == p->pid;
}

/* Items of the killed run: more than the first edge holds, so that range
 * still emits when checkpoints come (a marker follows a batch it sends). */
#define KILL_ITEMS 20000

/* Reads back the values of a FILE written with `format` (json or msgpack)
 * and checks that they are 0 to KILL_ITEMS - 1, each once. */
static void assert_each_item_once(const char *out, const char *format)
{
    size_t len, off = 0, n = 0;
    char *text = file_bytes(out, &len), *line = text, *end;
    static bool seen[KILL_ITEMS];
    memset(seen, 0, sizeof seen);
    assert_non_null(text);
    for (; off < len; n++) {
        long long v = -1;
        if (strcmp(format, "msgpack") == 0) {
            msgpack_zone zone;
            msgpack_object o;
            assert_true(msgpack_zone_init(&zone, 256));
            assert_true(msgpack_unpack(text, len, &off, &zone, &o) >=
                        MSGPACK_UNPACK_EXTRA_BYTES);
            v = o.type == MSGPACK_OBJECT_POSITIVE_INTEGER ? (long long)o.via.u64
                                                          : -1;
            msgpack_zone_destroy(&zone);
        } else {
            v = strtoll(line, &end, 10);
            assert_true(end > line && *end == '\n');
            line = end + 1;
            off = (size_t)(line - text);
        }
        if (v < 0 || v >= KILL_ITEMS || seen[v])
            fail_msg("output %zu is %lld: out of range or seen before", n, v);
        seen[v] = true;
    }
    assert_int_equal(n, KILL_ITEMS);
    free(text);
}

/* Kills a run once it committed a checkpoint and wrote more, then runs the
 * same command again to its end: every output is in FILE exactly once. */
static void kill_and_resume(const char *format)
{
    const char *st = path("state"), *out = path("out");
    char items[16];
    snprintf(items, sizeof items, "%d", KILL_ITEMS);
    const char *const args[] = {
        "run",          "--plugin", TASKS,
        "--checkpoint", st,         "--checkpoint-interval",
        "50ms",         "--output", out,
        "--format",     format,     "range branch | nap bind=1 workers=8",
        items,          NULL};
    proc p;
    start(&p, args);
    bool ready = false;
    for (int i = 0; i < DEADLINE_MS / 5 && !ready; i++) {
        long long committed = state_number(st, "bytes");
        ready = committed >= 0 && file_size(out) > committed;
        if (!ready && ended(&p))
            fail_msg("the run ended before a checkpoint was seen: %s",
                     p.stderr_text ? p.stderr_text : "");
        if (!ready)
            nap_us(5000);
    }
    assert_true(ready);
    kill(p.pid, SIGKILL);
    assert_int_equal(finish(&p), -1);
    proc_free(&p);
    assert_false(state_done(st));
    start(&p, args);
    if (finish(&p) != 0)
        fail_msg("the resumed run failed: %s", p.stderr_text);
    assert_contains(p.stderr_text, " outputs kept");
    proc_free(&p);
    assert_true(state_done(st));
    assert_int_equal(state_number(st, "outputs"), KILL_ITEMS);
    assert_int_equal(state_number(st, "bytes"), file_size(out));
    assert_each_item_once(out, format);
}

static void test_a_killed_run_resumes_with_every_output_once(void **state)
{
    (void)state;
    kill_and_resume("json");
}

static void
test_a_killed_msgpack_run_resumes_with_every_output_once(void **state)
{
    (void)state;
    kill_and_resume("msgpack");
}

static void
test_keys_that_are_maps_of_maps_are_written_in_linear_size(void **state)
{
    (void)state;
    proc p;
    /* 28 and 32 levels of keys: 58 and 66 bytes of msgpack. */
    assert_int_equal(zpipe(&p, NULL, "run", "--plugin", TASKS,
                           "range branch | key_maps ordered", "[28, 33, 4]",
                           NULL),
                     0);
    assert_true(p.out_len < 64 * 58 + 64 * 66);
    assert_contains(p.stdout_text,
                    "{\"{{{{{{{{{{{{{{{{{{{{{{{{{{{\\\"a\\\":null}"
                    ":null}");
    assert_contains(p.stdout_text, ":null}\":null}\n{\"{{{{{{{{{{{{{{{{{{{{"
                                   "{{{{{{{{{{{\\\"a\\\":null}");
    proc_free(&p);
    /* One level more is beyond the protocol's depth. */
    assert_int_equal(zpipe(&p, NULL, "run", "--plugin", TASKS,
                           "range branch | key_maps", "[33, 34]", NULL),
                     1);
    assert_int_equal(p.out_len, 0);
    proc_free(&p);
}

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/zp-cli-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    char cmd[128];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

#define TEST(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    /* zpipe's leftovers, if any, become our children. */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        TEST(test_version_names_the_release),
        TEST(test_help_of_every_command_is_its_usage),
        TEST(test_usage_errors_exit_2_naming_the_offending_word),
        TEST(test_configuration_errors_exit_2),
        TEST(test_tasks_lists_built_in_and_plugin_tasks),
        TEST(test_plugin_errors_exit_2_and_say_what_is_wrong),
        TEST(test_the_same_plugin_twice_is_harmless),
        TEST(test_plugins_are_found_by_name_in_zpipe_plugin_path),
        TEST(test_a_plugin_linked_with_libzpipe_works_too),
        TEST(test_the_example_plugin_has_the_tasks_its_users_name),
        TEST(test_arguments_are_json_and_outputs_json_lines),
        TEST(test_every_kind_of_value_goes_through_unchanged),
        TEST(test_input_streams_into_a_first_stage_with_workers),
        TEST(test_input_comes_from_stdin_as_json_or_raw_lines),
        TEST(test_input_lines_go_on_before_more_input_comes),
        TEST(test_a_malformed_input_line_fails_naming_its_line),
        TEST(test_outputs_go_to_a_file_as_json_lines_or_msgpack),
        TEST(test_range_counts_as_python_does),
        TEST(test_lines_reads_a_file_and_sleep_waits_without_threads),
        TEST(test_exec_emits_the_output_of_a_command_per_item),
        TEST(test_exec_never_lets_an_item_become_shell_syntax),
        TEST(test_exec_failures_name_the_command_status_and_stderr),
        TEST(test_a_task_failure_exits_1_naming_the_task_and_item),
        TEST(test_a_process_stage_runs_plugin_tasks_in_zpipe_workers),
        TEST(test_a_remote_stage_is_served_by_zpipe_workers_over_tcp),
        TEST(test_curve_keys_from_keygen_secure_a_remote_stage),
        TEST(test_two_pools_serve_two_remote_stages_the_coordinator_lacks),
        TEST(test_a_remote_task_no_worker_has_fails_naming_it),
        TEST(test_more_workers_than_open_files_allow_fail_at_once),
        TEST(test_a_coordinator_out_of_files_says_so_once_and_serves_on),
        TEST(test_a_worker_runs_every_thread_it_announces),
        TEST(test_a_connection_that_never_handshakes_is_closed),
        TEST(test_stats_file_holds_the_final_statistics),
        TEST(test_progress_off_a_terminal_prints_plain_lines),
        TEST(test_progress_knows_the_size_of_a_range_or_an_input),
        TEST(test_a_worker_serves_its_own_metrics),
        TEST(test_metrics_errors_name_the_address_and_exit_2),
        TEST(test_sigint_stops_the_run_keeping_whole_outputs),
        TEST(test_sigterm_leaves_no_worker_process_behind),
        TEST(test_a_second_sigint_stops_at_once),
        TEST(test_a_reader_that_goes_away_stops_the_run),
        TEST(test_checkpoint_options_are_checked),
        TEST(test_a_finished_state_exits_0_redoing_nothing),
        TEST(test_a_resumed_run_keeps_what_was_committed_and_goes_on),
        TEST(test_a_state_that_does_not_fit_is_refused_touching_nothing),
        TEST(test_a_corrupt_or_newer_state_is_refused_touching_nothing),
        TEST(test_a_checkpoint_not_written_fails_the_run_keeping_the_last),
        TEST(test_a_killed_run_resumes_with_every_output_once),
        TEST(test_a_killed_msgpack_run_resumes_with_every_output_once),
        TEST(test_keys_that_are_maps_of_maps_are_written_in_linear_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
