/* SPDX-License-Identifier: MIT */
/*
 * The zpipe command: `zpipe run`, `zpipe worker`, `zpipe tasks` and
 * `zpipe keygen` (docs/cli.md is the reference). Part of cli/, the zpipe
 * program, above every layer of the library and compiled into the zpipe
 * executable only. It is a
 * thin layer over the library: it loads plugins, builds the pipeline from
 * the spec, feeds items in, writes outputs out, and turns signals and
 * errors into exit statuses. It never handles items itself, besides
 * converting them at the two ends.
 *
 * Signals: `zpipe run` blocks SIGINT and SIGTERM before it starts the run
 * (so every thread of the run inherits the mask) and a watcher thread
 * reads them from a signalfd: the first cancels the run, which then ends
 * as it would on a failure (threads joined, workers reaped, outputs
 * already written left whole); the second ends the process at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli/builtins.h"
#include "coordinator/spawn.h"
#include "cli/items.h"
#include "cli/plugin.h"
#include "coordinator/metrics.h"
#include "coordinator/run.h"
#include "core/pipeline.h"
#include "core/registry.h"
#include "core/value.h"
#include "transport/curve.h"
#include "worker/serve.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

/* Returned by the option parsers when the command should go on. */
#define GO_ON (-1)

/* ---- Help ---------------------------------------------------------------- */

static const char main_help[] =
    "usage: zpipe COMMAND [OPTION]...\n"
    "       zpipe --version | --help | help COMMAND\n"
    "\n"
    "Runs pipelines of tasks from the shell: the built-in tasks, and those\n"
    "that plugins (shared libraries) register with ZP_TASK or ZP_ASYNC_TASK.\n"
    "\n"
    "commands:\n"
    "  run     run a pipeline written as a spec: 'range branch | exec ...'\n"
    "  worker  serve tasks to a coordinator's mode=remote stage\n"
    "  tasks   list the tasks that run and worker can use\n"
    "  keygen  make a CURVE key pair (NAME.key, NAME.pub)\n"
    "\n"
    "'zpipe COMMAND --help' says more; docs/cli.md is the reference.\n";

static const char run_help[] =
    "usage: zpipe run [OPTION]... SPEC [ARGS_JSON]\n"
    "\n"
    "Runs the pipeline SPEC and writes its outputs on stdout, one JSON value\n"
    "per line. ARGS_JSON is the first task's input: a JSON array, or one\n"
    "value that becomes a one-element array (default: []). Put -- before an\n"
    "ARGS_JSON that starts with '-'.\n"
    "\n"
    "SPEC is 'stage | stage | ...', a stage being a task then its options:\n"
    "  branch join ordered workers=N throttle=N retries=N timeout=500ms|2s\n"
    "  on_error=fail|skip mode=inproc|process|remote pool=NAME bind=JSON\n"
    "a mode=remote stage may name a task that only its workers have, and\n"
    "pool=NAME sends its items only to workers started with --pool NAME\n"
    "built-in tasks: range, lines, exec, sleep, identity (see zpipe tasks)\n"
    "\n"
    "options:\n"
    "  --plugin LIB          load the tasks of the shared library LIB\n"
    "                        (repeatable; a bare name is looked for in\n"
    "                        $ZPIPE_PLUGIN_PATH, then in zpipe's plugin dir)\n"
    "  --input FILE|-        stream the lines of FILE (- is stdin) into the\n"
    "                        first task, which may then have workers=N\n"
    "  --input-format json|lines\n"
    "                        json (default): a JSON value per line;\n"
    "                        lines: each line is a string item\n"
    "  --output FILE|-       write the outputs to FILE (default: stdout)\n"
    "  --format json|lines|msgpack\n"
    "                        json (default): a JSON value per line; lines:\n"
    "                        strings as they are, other values as JSON;\n"
    "                        msgpack: raw msgpack values back to back\n"
    "  --progress            live per-stage statistics on stderr, with the\n"
    "                        share done and the time left when the input\n"
    "                        is a regular file or the first task is range\n"
    "  --stats FILE          write the final statistics to FILE as JSON\n"
    "  --metrics ADDR:PORT   serve Prometheus metrics at GET /metrics there\n"
    "                        while the run lasts, such as 127.0.0.1:9464\n"
    "                        or :9464 (default: $ZPIPE_METRICS)\n"
    "  --metrics-linger TIME once the run is over, serve its final figures\n"
    "                        until scraped once more, TIME at most, such\n"
    "                        as 15s (default: 0, close at once)\n"
    "  --listen ENDPOINT     where mode=remote workers connect, such as\n"
    "                        tcp://*:5555 (default: $ZPIPE_LISTEN)\n"
    "  --wait-workers TIME   longest a remote stage waits for a worker,\n"
    "                        such as 500ms or 10s (default: 30s)\n"
    "  --curve-secret FILE   CURVE: the coordinator's secret key file\n"
    "  --curve-allow FILE    CURVE: the public keys of the workers let in\n"
    "  -h, --help            show this help\n"
    "\n"
    "exit status: 0 done, 1 the run failed (a task failed, a malformed input\n"
    "line...), 2 a usage or configuration error, 128+N stopped by signal N.\n"
    "SIGINT or SIGTERM stops the run, keeping the outputs written so far\n"
    "whole; a second one stops zpipe at once.\n";

static const char worker_help[] =
    "usage: zpipe worker --connect ENDPOINT [OPTION]...\n"
    "\n"
    "Serves tasks (the built-in ones and those of its plugins) to the\n"
    "mode=remote stages of the coordinator at ENDPOINT, a `zpipe run\n"
    "--listen`. It waits for the coordinator to come, stays for its next\n"
    "runs, and ends on SIGINT or SIGTERM, or when the coordinator tells it "
    "to.\n"
    "\n"
    "options:\n"
    "  --connect ENDPOINT    the coordinator, such as tcp://host:5555\n"
    "                        (default: $ZPIPE_WORKER)\n"
    "  --plugin LIB          load the tasks of the shared library LIB\n"
    "                        (repeatable, as for zpipe run)\n"
    "  --threads N           items run at once, 1 to 4096\n"
    "                        (default: $ZPIPE_THREADS, or 1)\n"
    "  --pool NAME           join the pool NAME: serve the stages with\n"
    "                        pool=NAME, and those without a pool\n"
    "                        (default: $ZPIPE_POOL, or no pool)\n"
    "  --curve-server FILE   CURVE: the coordinator's public key file\n"
    "                        (its NAME.pub, never its NAME.key)\n"
    "                        (default: $ZPIPE_CURVE_SERVER)\n"
    "  --curve-secret FILE   CURVE: this worker's secret key file\n"
    "                        (default: $ZPIPE_CURVE_SECRET)\n"
    "  --metrics ADDR:PORT   serve this worker's Prometheus metrics at GET\n"
    "                        /metrics there, such as :9464\n"
    "                        (default: $ZPIPE_METRICS)\n"
    "  -h, --help            show this help\n"
    "\n"
    "exit status: 0 after a clean end, 2 a usage or configuration error.\n";

static const char tasks_help[] =
    "usage: zpipe tasks [--plugin LIB]...\n"
    "\n"
    "Lists the tasks that zpipe run and zpipe worker can use with these\n"
    "plugins, one per line: its name, sync or async, and where it comes\n"
    "from (built-in, or the plugin's path).\n"
    "\n"
    "exit status: 0, or 2 when a plugin cannot be loaded.\n";

static const char keygen_help[] =
    "usage: zpipe keygen NAME\n"
    "\n"
    "Makes a CURVE key pair: NAME.key, the secret key (mode 0600), and\n"
    "NAME.pub, the public key. It never overwrites a file. A coordinator\n"
    "uses its .key with --curve-secret and lists the workers' .pub keys in\n"
    "its --curve-allow file; a worker uses its own .key with --curve-secret\n"
    "and the coordinator's .pub with --curve-server.\n"
    "\n"
    "exit status: 0, 1 when writing a created file fails (a full disk), 2 a\n"
    "usage error, or a file that exists already or cannot be created (no\n"
    "such folder, no permission).\n";

/* ---- Messages ------------------------------------------------------------ */

static int usage_error(const char *cmd, const char *fmt, ...) ZP__PRINTF(2, 3);

/* Says what is wrong with the command line. Returns EXIT_USAGE. */
static int usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "zpipe %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(see zpipe %s --help)\n", cmd);
    return EXIT_USAGE;
}

/* The error of an option getopt refused. */
static int bad_option(const char *cmd, int c, char **argv)
{
    const char *word = argv[optind - 1];
    if (c == ':')
        return usage_error(cmd, "option '%s' needs a value", word);
    if (optopt != 0 && optopt != '?')
        return usage_error(cmd, "unknown option '-%c'", optopt);
    return usage_error(cmd, "unknown option '%s'", word);
}

/* Takes one option of a command: returns GO_ON or an exit status. */
typedef int (*option_fn)(void *cfg, int opt, char *arg);

/* Reads the options of `cmd` (getopt_long, so they may come anywhere
 * before a `--`), handing each to `fn` (NULL when `options` holds --help
 * only). Returns GO_ON, EXIT_OK after printing `help` for -h, or the
 * status of a usage error; optind is then the first operand. */
static int parse_options(const char *cmd, const char *help,
                         const struct option *options, option_fn fn, void *cfg,
                         int argc, char **argv)
{
    int opt, rc = GO_ON;
    optind = 1;
    opterr = 0;
    while (rc == GO_ON &&
           (opt = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
        if (opt == 'h') {
            fputs(help, stdout);
            return EXIT_OK;
        }
        rc = opt == '?' || opt == ':' ? bad_option(cmd, opt, argv)
                                      : fn(cfg, opt, optarg);
    }
    return rc;
}

/* ---- Option values ------------------------------------------------------- */

/* The index of `value` in the NULL-terminated `words`, or -1. */
static int choice(const char *value, const char *const *words)
{
    for (int i = 0; words[i] != NULL; i++)
        if (strcmp(value, words[i]) == 0)
            return i;
    return -1;
}

/* A whole number from min to max. */
static bool whole(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* Milliseconds from "500", "500ms" or "10s". */
static bool duration_ms(const char *s, int *out)
{
    char digits[16];
    size_t n = strspn(s, "0123456789");
    const char *unit = s + n;
    long v, scale = strcmp(unit, "s") == 0 ? 1000 : 1;
    if (n == 0 || n >= sizeof digits ||
        !(*unit == '\0' || strcmp(unit, "ms") == 0 || scale == 1000))
        return false;
    memcpy(digits, s, n);
    digits[n] = '\0';
    if (!whole(digits, 1, 2147483647L / scale, &v))
        return false;
    *out = (int)(v * scale);
    return true;
}

/* ---- Plugins ------------------------------------------------------------- */

/* A list of --plugin values, borrowed from argv. */
typedef struct names {
    const char **v; /* owned array */
    size_t n;
} names;

static bool names_add(names *l, const char *name)
{
    const char **v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (v == NULL)
        return false;
    v[l->n++] = name;
    l->v = v;
    return true;
}

/* The plugins named in `l`, loaded; NULL after saying why. */
static zp__plugins *load_plugins(const char *cmd, const names *l)
{
    char *why = NULL;
    zp__plugins *ps = zp__plugins_new();
    if (ps == NULL)
        why = strdup("out of memory");
    for (size_t i = 0; ps != NULL && i < l->n; i++)
        if (zp__plugins_load(ps, l->v[i], &why) != 0)
            zp__plugins_destroy(&ps);
    if (ps == NULL)
        fprintf(stderr, "zpipe %s: %s\n", cmd, why ? why : "out of memory");
    free(why);
    return ps;
}

/* ---- zpipe run: options -------------------------------------------------- */

typedef struct run_cfg {
    names plugins;
    const char *input, *output, *stats, *listen, *metrics;
    const char *curve_secret, *curve_allow;
    const char *spec, *args;
    bool json_input, progress;
    zp__format format;
    int wait_ms, linger_ms;
} run_cfg;

enum {
    OPT_PLUGIN = 256,
    OPT_INPUT,
    OPT_INPUT_FORMAT,
    OPT_OUTPUT,
    OPT_FORMAT,
    OPT_PROGRESS,
    OPT_STATS,
    OPT_LISTEN,
    OPT_WAIT,
    OPT_CURVE_SECRET,
    OPT_CURVE_ALLOW,
    OPT_CONNECT,
    OPT_THREADS,
    OPT_CURVE_SERVER,
    OPT_POOL,
    OPT_METRICS,
    OPT_METRICS_LINGER,
};

static const struct option run_options[] = {
    {"plugin", required_argument, NULL, OPT_PLUGIN},
    {"input", required_argument, NULL, OPT_INPUT},
    {"input-format", required_argument, NULL, OPT_INPUT_FORMAT},
    {"output", required_argument, NULL, OPT_OUTPUT},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"progress", no_argument, NULL, OPT_PROGRESS},
    {"stats", required_argument, NULL, OPT_STATS},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"wait-workers", required_argument, NULL, OPT_WAIT},
    {"curve-secret", required_argument, NULL, OPT_CURVE_SECRET},
    {"curve-allow", required_argument, NULL, OPT_CURVE_ALLOW},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"metrics-linger", required_argument, NULL, OPT_METRICS_LINGER},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int run_choice(const char *opt, const char *value,
                      const char *const *words, const char *expected, int *out)
{
    *out = choice(value, words);
    if (*out < 0)
        return usage_error("run", "bad value '%s' for %s: expected %s", value,
                           opt, expected);
    return GO_ON;
}

/* One option of zpipe run. Returns GO_ON, or the exit status. */
static int run_option(void *cfg, int opt, char *arg)
{
    run_cfg *c = cfg;
    static const char *const inputs[] = {"json", "lines", NULL};
    static const char *const formats[] = {"json", "lines", "msgpack", NULL};
    int pick, rc = GO_ON;
    switch (opt) {
    case OPT_PLUGIN:
        if (!names_add(&c->plugins, arg))
            rc = usage_error("run", "out of memory");
        break;
    case OPT_INPUT: c->input = arg; break;
    case OPT_INPUT_FORMAT:
        rc = run_choice("--input-format", arg, inputs, "json or lines", &pick);
        c->json_input = pick == 0;
        break;
    case OPT_OUTPUT: c->output = arg; break;
    case OPT_FORMAT:
        rc = run_choice("--format", arg, formats, "json, lines or msgpack",
                        &pick);
        c->format = (zp__format)pick;
        break;
    case OPT_PROGRESS: c->progress = true; break;
    case OPT_STATS: c->stats = arg; break;
    case OPT_LISTEN: c->listen = arg; break;
    case OPT_WAIT:
        if (!duration_ms(arg, &c->wait_ms))
            rc = usage_error("run",
                             "bad value '%s' for --wait-workers: expected a "
                             "duration such as 500ms or 10s",
                             arg);
        break;
    case OPT_CURVE_SECRET: c->curve_secret = arg; break;
    case OPT_CURVE_ALLOW: c->curve_allow = arg; break;
    case OPT_METRICS: c->metrics = arg; break;
    case OPT_METRICS_LINGER:
        c->linger_ms = 0;
        if (strcmp(arg, "0") != 0 && !duration_ms(arg, &c->linger_ms))
            rc = usage_error("run",
                             "bad value '%s' for --metrics-linger: expected "
                             "a duration such as 500ms or 15s",
                             arg);
        break;
    }
    return rc;
}

/* The SPEC and ARGS_JSON operands, and the options they exclude. */
static int run_operands(run_cfg *c, int argc, char **argv)
{
    int left = argc - optind;
    if (left < 1)
        return usage_error("run", "missing the SPEC of the pipeline, such "
                                  "as 'range branch | identity'");
    if (left > 2)
        return usage_error("run",
                           "unexpected argument '%s' (quote the SPEC as one "
                           "argument; ARGS_JSON is one JSON value)",
                           argv[optind + 2]);
    c->spec = argv[optind];
    c->args = left == 2 ? argv[optind + 1] : NULL;
    if (c->args != NULL && c->input != NULL)
        return usage_error("run",
                           "ARGS_JSON '%s' and --input exclude each other: "
                           "with --input the first task reads the input",
                           c->args);
    if ((c->curve_secret == NULL) != (c->curve_allow == NULL))
        return usage_error("run", "%s needs %s too",
                           c->curve_secret ? "--curve-secret" : "--curve-allow",
                           c->curve_secret ? "--curve-allow"
                                           : "--curve-secret");
    return GO_ON;
}

static int parse_run(run_cfg *c, int argc, char **argv)
{
    int rc =
        parse_options("run", run_help, run_options, run_option, c, argc, argv);
    return rc == GO_ON ? run_operands(c, argc, argv) : rc;
}

/* ---- zpipe run: checks before the run ------------------------------------ */

/* The pipeline of the spec, behind the input stage when there is --input;
 * NULL after saying why. */
static zp_pipeline *build_pipeline(const run_cfg *c, zp__input *in)
{
    char *err = NULL;
    zp_pipeline *p = zp_parse(c->spec, &err);
    if (p == NULL) {
        fprintf(stderr, "zpipe run: %s\n", err ? err : "out of memory");
        free(err);
        return NULL;
    }
    if (c->input != NULL) {
        zp_opts o = {.size = sizeof o, .branch = true, .user = in};
        *in = (zp__input){c->input, c->json_input};
        p = zp_pipe(zp_task_new("<input>", zp__input_task, &o), p);
    }
    const char *why = zp_pipeline_error(p);
    if (why != NULL) {
        /* The first task runs once, unless --input streams items in. */
        bool hint = p->error == NULL && p->stages[0].opts.workers > 1;
        fprintf(stderr, "zpipe run: %s%s\n", why,
                hint ? "; --input streams items into a first task" : "");
        zp_pipeline_free(p);
        return NULL;
    }
    return p;
}

/* A file zpipe will write, opened or created now so that a bad path is a
 * usage error rather than a failure at the end. Returns the descriptor, or
 * -1 after saying why. */
static int open_for_writing(const char *what, const char *path, bool truncate)
{
    int fd = open(
        path, O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0666);
    if (fd < 0)
        fprintf(stderr, "zpipe run: cannot write %s '%s': %s\n", what, path,
                strerror(errno));
    return fd;
}

/* The CURVE files, read once now to name a bad one before the run. */
static bool curve_files_ok(const char *cmd, const char *pub, const char *sec)
{
    char key[ZP__CURVE_KEY_LEN + 1], *why = NULL;
    int rc = pub ? zp__curve_read_key(pub, false, key, &why) : 0;
    if (rc == 0 && sec != NULL)
        rc = zp__curve_read_key(sec, true, key, &why);
    explicit_bzero(key, sizeof key);
    if (rc != 0)
        fprintf(stderr, "zpipe %s: %s\n", cmd, why ? why : "bad key file");
    free(why);
    return rc == 0;
}

/* A remote stage needs an endpoint to listen on, and one ZeroMQ can bind
 * workers of other processes to. */
static bool listen_ok(const run_cfg *c, const zp_pipeline *p)
{
    const char *ep = c->listen ? c->listen : getenv("ZPIPE_LISTEN");
    for (size_t k = 0; k < p->n; k++) {
        if (p->stages[k].opts.mode != ZP_REMOTE)
            continue;
        if (ep == NULL || ep[0] == '\0') {
            usage_error("run",
                        "task '%s' has mode=remote: give --listen ENDPOINT "
                        "(or $ZPIPE_LISTEN), such as tcp://*:5555",
                        p->stages[k].name);
            return false;
        }
    }
    if (c->listen != NULL && strncmp(c->listen, "tcp://", 6) != 0 &&
        strncmp(c->listen, "ipc://", 6) != 0) {
        usage_error("run",
                    "bad value '%s' for --listen: expected tcp://HOST:PORT "
                    "(such as tcp://*:5555) or ipc://PATH",
                    c->listen);
        return false;
    }
    return true;
}

static bool run_files_ok(const run_cfg *c)
{
    if (c->curve_allow != NULL && access(c->curve_allow, R_OK) != 0) {
        fprintf(stderr, "zpipe run: cannot read --curve-allow '%s': %s\n",
                c->curve_allow, strerror(errno));
        return false;
    }
    if (!curve_files_ok("run", NULL, c->curve_secret))
        return false;
    int fd = c->stats ? open_for_writing("--stats", c->stats, false) : -2;
    if (fd >= 0)
        close(fd);
    return fd != -1;
}

/* ---- zpipe run: signals -------------------------------------------------- */

typedef struct watcher {
    zp_run *run; /* borrowed */
    pthread_t thread;
    int sfd, efd;      /* signals in; "stop watching" in */
    _Atomic int signo; /* the first signal, or 0 */
} watcher;

static void *watch(void *arg)
{
    watcher *w = arg;
    struct pollfd p[2] = {{.fd = w->sfd, .events = POLLIN},
                          {.fd = w->efd, .events = POLLIN}};
    struct signalfd_siginfo si;
    for (;;) {
        p[0].revents = p[1].revents = 0;
        if (poll(p, 2, -1) < 0 && errno != EINTR)
            break;
        if (p[1].revents != 0)
            break;
        if (read(w->sfd, &si, sizeof si) != sizeof si) /* non-blocking */
            continue;
        int sig = (int)si.ssi_signo, first = 0;
        if (!atomic_compare_exchange_strong(&w->signo, &first, sig)) {
            zp__exec_kill_all(); /* process workers die with us */
            zp__run_remove_tmpdir(w->run);
            _exit(128 + sig);
        }
        fprintf(stderr,
                "zpipe: SIG%s: stopping the run (again to stop at once)\n",
                sigabbrev_np(sig));
        zp_cancel(w->run);
    }
    return NULL;
}

/* Blocks SIGINT and SIGTERM in this thread and the threads it will make. */
static void block_stop_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, set, NULL);
}

/* Opens the watcher's descriptors before any thread of the run exists
 * (a descriptor number a run thread has just closed would otherwise come
 * back here). */
static bool watcher_open(watcher *w, const sigset_t *set)
{
    atomic_init(&w->signo, 0);
    w->sfd = signalfd(-1, set, SFD_NONBLOCK | SFD_CLOEXEC);
    w->efd = eventfd(0, EFD_CLOEXEC);
    if (w->sfd >= 0 && w->efd >= 0)
        return true;
    fprintf(stderr, "zpipe run: cannot watch for signals: %s\n",
            strerror(errno));
    if (w->sfd >= 0)
        close(w->sfd);
    if (w->efd >= 0)
        close(w->efd);
    return false;
}

static bool watcher_start(watcher *w, zp_run *run)
{
    w->run = run;
    int err = pthread_create(&w->thread, NULL, watch, w);
    if (err == 0)
        return true;
    fprintf(stderr, "zpipe run: cannot watch for signals: %s\n", strerror(err));
    close(w->sfd);
    close(w->efd);
    return false;
}

/* Stops the watcher; returns the signal it saw first, or 0. */
static int watcher_stop(watcher *w)
{
    uint64_t one = 1;
    (void)!write(w->efd, &one, sizeof one);
    pthread_join(w->thread, NULL);
    close(w->sfd);
    close(w->efd);
    return atomic_load(&w->signo);
}

/* ---- zpipe run: the run -------------------------------------------------- */

/* Writes the run's outputs; flushes whenever the run has none ready.
 * Returns 0, or the writer's error with errno in *err; the run is then
 * cancelled. */
static int write_outputs(zp_run *run, zp__writer *w, int *err)
{
    const msgpack_object *o;
    int rc = 0;
    for (;;) {
        int got = zp__run_poll(run, &o);
        if (got == ZP__AGAIN) {
            if ((rc = zp__writer_flush(w)) != 0)
                break;
            got = zp_run_next(run, &o);
        }
        if (got != 1 || (rc = zp__writer_put(w, o)) != 0)
            break;
    }
    if (rc == 0)
        rc = zp__writer_flush(w);
    *err = errno;
    if (rc != 0)
        zp_cancel(run);
    return rc;
}

/* The exit status of a run, after saying what went wrong. */
static int run_status(zp_run *run, int code, int sig, int write_rc, int err)
{
    if (sig != 0)
        return 128 + sig;
    if (write_rc != 0 && err == EPIPE)
        return 128 + SIGPIPE; /* the reader is gone: as if killed by it */
    if (write_rc != 0) {
        fprintf(stderr, "zpipe run: writing the outputs: %s\n",
                write_rc == ZP_ENOMEM ? "out of memory" : strerror(err));
        return EXIT_FAILED;
    }
    if (code == 0)
        return EXIT_OK;
    fprintf(stderr, "zpipe run: %s\n", zp_error(run));
    return code == ZP_EINVAL ? EXIT_USAGE : EXIT_FAILED;
}

/* The items of the built-in range for the run's arguments, or 0. */
static uint64_t range_items(const char *args_json)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_zone zone;
    msgpack_object args;
    uint64_t n = 0;
    size_t off = 0;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    bool zoned = msgpack_zone_init(&zone, 1024);
    if (zoned && zp__json_pack_args(args_json, &pk, NULL) == 0 &&
        msgpack_unpack(sb.data, sb.size, &off, &zone, &args) ==
            MSGPACK_UNPACK_SUCCESS &&
        !zp__range_items(&args, &n))
        n = 0;
    if (zoned)
        msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&sb);
    return n;
}

/* For --progress, the items the first task will emit when that can be
 * told before the run: the lines of a regular --input file, or those of
 * the built-in range; 0 otherwise. */
static uint64_t items_expected(const run_cfg *c, const zp_pipeline *p)
{
    uint64_t n = 0;
    if (!c->progress)
        return 0;
    if (c->input != NULL)
        return strcmp(c->input, "-") != 0 &&
                       zp__count_lines(c->input, c->json_input, &n) == 0
                   ? n
                   : 0;
    return strcmp(p->stages[0].name, "range") == 0 ? range_items(c->args) : 0;
}

static int start_and_wait(const run_cfg *c, zp_pipeline *p, int out_fd)
{
    zp_run_opts o = {.listen = c->listen,
                     .wait_workers_ms = c->wait_ms,
                     .curve_secret = c->curve_secret,
                     .curve_allow = c->curve_allow,
                     .progress = c->progress,
                     .stats_path = c->stats,
                     .metrics_listen = c->metrics,
                     .metrics_linger_ms = c->linger_ms,
                     .progress_total = items_expected(c, p)};
    sigset_t set;
    watcher w;
    zp__writer out;
    signal(SIGPIPE, SIG_IGN); /* a closed output is an EPIPE, handled */
    block_stop_signals(&set);
    if (!watcher_open(&w, &set))
        return EXIT_FAILED;
    zp_run *run = zp_start_with(p, c->args, &o);
    if (!watcher_start(&w, run)) {
        zp_run_free(run);
        return EXIT_FAILED;
    }
    zp__writer_init(&out, out_fd, c->format);
    int err = 0, write_rc = write_outputs(run, &out, &err);
    int code = zp_finish(run);
    int status = run_status(run, code, watcher_stop(&w), write_rc, err);
    zp__writer_fini(&out);
    zp_run_free(run);
    return status;
}

static int cmd_run(int argc, char **argv)
{
    run_cfg c = {.json_input = true, .format = ZP__FORMAT_JSON};
    zp__input in;
    zp_pipeline *p = NULL;
    zp__plugins *ps = NULL;
    int out_fd = -1, rc = parse_run(&c, argc, argv);
    if (rc != GO_ON)
        goto out;
    rc = EXIT_USAGE;
    if ((ps = load_plugins("run", &c.plugins)) == NULL ||
        (p = build_pipeline(&c, &in)) == NULL || !listen_ok(&c, p) ||
        !run_files_ok(&c))
        goto out;
    bool to_stdout = c.output == NULL || strcmp(c.output, "-") == 0;
    out_fd = to_stdout ? STDOUT_FILENO
                       : open_for_writing("--output", c.output, true);
    if (out_fd < 0)
        goto out;
    zp__spawn_set_worker_args(zp__plugins_args(ps));
    rc = start_and_wait(&c, p, out_fd);
    zp__spawn_set_worker_args(NULL);
    if (!to_stdout && close(out_fd) != 0 && rc == EXIT_OK) {
        fprintf(stderr, "zpipe run: writing '%s': %s\n", c.output,
                strerror(errno));
        rc = EXIT_FAILED;
    }
out:
    zp_pipeline_free(p);
    zp__plugins_destroy(&ps);
    free(c.plugins.v);
    return rc;
}

/* ---- zpipe worker -------------------------------------------------------- */

typedef struct worker_cfg {
    names plugins;
    const char *connect, *threads, *pool, *curve_server, *curve_secret,
        *metrics;
} worker_cfg;

static const struct option worker_options[] = {
    {"connect", required_argument, NULL, OPT_CONNECT},
    {"plugin", required_argument, NULL, OPT_PLUGIN},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"pool", required_argument, NULL, OPT_POOL},
    {"curve-server", required_argument, NULL, OPT_CURVE_SERVER},
    {"curve-secret", required_argument, NULL, OPT_CURVE_SECRET},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int worker_option(void *cfg, int opt, char *arg)
{
    worker_cfg *c = cfg;
    if (opt == OPT_PLUGIN && !names_add(&c->plugins, arg))
        return usage_error("worker", "out of memory");
    if (opt == OPT_CONNECT)
        c->connect = arg;
    else if (opt == OPT_THREADS)
        c->threads = arg;
    else if (opt == OPT_POOL)
        c->pool = arg;
    else if (opt == OPT_CURVE_SERVER)
        c->curve_server = arg;
    else if (opt == OPT_CURVE_SECRET)
        c->curve_secret = arg;
    else if (opt == OPT_METRICS)
        c->metrics = arg;
    return GO_ON;
}

/* A flag's value, or the environment variable's when the flag is absent. */
static const char *or_env(const char *value, const char *name)
{
    const char *env = getenv(name);
    return value ? value : env && *env ? env : NULL;
}

static int worker_check(worker_cfg *c, int argc, char **argv)
{
    if (optind < argc)
        return usage_error("worker", "unexpected argument '%s'", argv[optind]);
    c->connect = or_env(c->connect, "ZPIPE_WORKER");
    c->threads = or_env(c->threads, "ZPIPE_THREADS");
    c->pool = or_env(c->pool, "ZPIPE_POOL");
    c->curve_server = or_env(c->curve_server, "ZPIPE_CURVE_SERVER");
    c->curve_secret = or_env(c->curve_secret, "ZPIPE_CURVE_SECRET");
    c->metrics = or_env(c->metrics, "ZPIPE_METRICS");
    if (c->connect == NULL)
        return usage_error("worker", "--connect ENDPOINT is needed (or "
                                     "$ZPIPE_WORKER), such as "
                                     "tcp://coordinator:5555");
    long n;
    if (c->threads != NULL && !whole(c->threads, 1, 4096, &n))
        return usage_error("worker",
                           "bad value '%s' for --threads: expected a whole "
                           "number from 1 to 4096",
                           c->threads);
    if (c->pool != NULL && !zp__pool_name_ok(c->pool, strlen(c->pool)))
        return usage_error("worker",
                           "bad value '%s' for --pool: expected a name of 1 "
                           "to %d characters of A-Z a-z 0-9 _ . -",
                           c->pool, ZP__POOL_MAX);
    if ((c->curve_server == NULL) != (c->curve_secret == NULL))
        return usage_error(
            "worker", "%s needs %s too",
            c->curve_server ? "--curve-server" : "--curve-secret",
            c->curve_server ? "--curve-secret" : "--curve-server");
    return GO_ON;
}

static int parse_worker(worker_cfg *c, int argc, char **argv)
{
    int rc = parse_options("worker", worker_help, worker_options, worker_option,
                           c, argc, argv);
    return rc == GO_ON ? worker_check(c, argc, argv) : rc;
}

/* The worker's metrics endpoint, when asked for: true with *m (NULL when
 * not asked for), false after saying why it cannot start. */
static bool worker_metrics(const char *addr, zp__serve_stats *s,
                           zp__metrics **m)
{
    char *why = NULL;
    *m = addr ? zp__worker_metrics_new(addr, s, &why) : NULL;
    if (addr != NULL && *m == NULL)
        fprintf(stderr, "zpipe worker: %s\n", why ? why : "out of memory");
    else if (*m != NULL)
        fprintf(stderr, "zpipe worker: metrics at http://%s/metrics\n",
                zp__metrics_where(*m));
    free(why);
    return addr == NULL || *m != NULL;
}

static int cmd_worker(int argc, char **argv)
{
    worker_cfg c = {.plugins = {NULL, 0}};
    zp__plugins *ps = NULL;
    zp__serve_stats stats = {0};
    zp__metrics *m = NULL;
    int rc = parse_worker(&c, argc, argv);
    if (rc == GO_ON)
        rc = curve_files_ok("worker", c.curve_server, c.curve_secret) &&
                     (ps = load_plugins("worker", &c.plugins)) != NULL &&
                     worker_metrics(c.metrics, &stats, &m)
                 ? GO_ON
                 : EXIT_USAGE;
    if (rc == GO_ON) {
        zp__serve_opts o = {.endpoint = c.connect,
                            .threads = c.threads ? atoi(c.threads) : 1,
                            .pool = c.pool,
                            .server_key = c.curve_server,
                            .secret_key = c.curve_secret,
                            .stats = &stats};
        rc = zp__serve(&o);
    }
    zp__metrics_destroy(&m);
    zp__plugins_destroy(&ps);
    free(c.plugins.v);
    return rc;
}

/* The process workers of `zpipe run`: this program again, as
 * "zpipe-worker --zp-worker ENDPOINT [--plugin PATH]...". They load the
 * plugins their coordinator loaded, then zp_init() serves. */
static int spawned_worker(int argc, char **argv)
{
    names l = {NULL, 0};
    bool ok = true;
    for (int i = 3; ok && i + 1 < argc; i += 2)
        ok = strcmp(argv[i], "--plugin") == 0 && names_add(&l, argv[i + 1]);
    zp__plugins *ps = ok ? load_plugins("worker", &l) : NULL;
    free(l.v);
    if (ps == NULL)
        return EXIT_USAGE;
    zp__plugins_destroy(&ps);
    zp_init(&argc, &argv); /* serves, then exits */
    return EXIT_USAGE;
}

/* ---- zpipe tasks --------------------------------------------------------- */

typedef struct listing {
    const zp__plugins *ps;
    int width; /* of the longest name */
} listing;

static void measure(const char *name, bool async, void *arg)
{
    listing *l = arg;
    int n = (int)strlen(name);
    (void)async;
    l->width = n > l->width ? n : l->width;
}

static void print_task(const char *name, bool async, void *arg)
{
    listing *l = arg;
    printf("%-*s  %-5s  %s\n", l->width, name, async ? "async" : "sync",
           zp__plugins_origin(l->ps, name));
}

static int plugin_option(void *cfg, int opt, char *arg)
{
    (void)opt; /* --plugin, the only one */
    return names_add(cfg, arg) ? GO_ON : usage_error("tasks", "out of memory");
}

static int cmd_tasks(int argc, char **argv)
{
    static const struct option options[] = {
        {"plugin", required_argument, NULL, OPT_PLUGIN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    names l = {NULL, 0};
    int rc = parse_options("tasks", tasks_help, options, plugin_option, &l,
                           argc, argv);
    if (rc == GO_ON && optind < argc)
        rc = usage_error("tasks", "unexpected argument '%s'", argv[optind]);
    listing li = {NULL, 0};
    zp__plugins *ps = rc == GO_ON ? load_plugins("tasks", &l) : NULL;
    if (ps != NULL) {
        li.ps = ps;
        zp__registry_each(measure, &li);
        zp__registry_each(print_task, &li);
        rc = EXIT_OK;
    }
    zp__plugins_destroy(&ps);
    free(l.v);
    return rc == GO_ON ? EXIT_USAGE : rc;
}

/* ---- zpipe keygen -------------------------------------------------------- */

static int cmd_keygen(int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char *why = NULL;
    int rc = parse_options("keygen", keygen_help, options, plugin_option, NULL,
                           argc, argv); /* -h is its only option */
    if (rc != GO_ON)
        return rc;
    if (argc - optind != 1)
        return usage_error("keygen",
                           argc == optind ? "missing the NAME of the key pair"
                                          : "unexpected argument '%s'",
                           argv[argc - 1]);
    const char *name = argv[optind];
    rc = zp__curve_keygen(name, &why);
    if (rc == 0)
        printf("wrote %s.key (the secret key: keep it private) and %s.pub "
               "(the public key)\n",
               name, name);
    else
        fprintf(stderr, "zpipe keygen: %s\n", why ? why : zp_strerror(rc));
    free(why);
    return rc == 0 ? EXIT_OK : rc == ZP_EINVAL ? EXIT_USAGE : EXIT_FAILED;
}

/* ---- main ---------------------------------------------------------------- */

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"run", cmd_run, run_help},
    {"worker", cmd_worker, worker_help},
    {"tasks", cmd_tasks, tasks_help},
    {"keygen", cmd_keygen, keygen_help},
};

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    fprintf(stderr,
            "zpipe: unknown command '%s' (commands: run, worker, tasks, "
            "keygen; see zpipe --help)\n",
            name);
    return NULL;
}

/* zpipe help [COMMAND] */
static int help(int argc, char **argv)
{
    const command *c = argc > 2 ? find_command(argv[2]) : NULL;
    if (argc > 2 && c == NULL)
        return EXIT_USAGE;
    fputs(c ? c->help : main_help, stdout);
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    if (zp__builtins_register() != 0) {
        fprintf(stderr, "zpipe: cannot register the built-in tasks\n");
        return EXIT_FAILED;
    }
    if (argc >= 3 && strcmp(argv[1], "--zp-worker") == 0)
        return spawned_worker(argc, argv);
    if (argc < 2) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("zpipe %s\n", zp_version());
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0)
        return help(argc, argv);
    const command *c = find_command(argv[1]);
    return c ? c->fn(argc - 1, argv + 1) : EXIT_USAGE;
}
