/* SPDX-License-Identifier: MIT */
/*
 * `zpipe run` (docs/cli.md is the reference): reads its options, builds
 * the pipeline from the spec, checks what it can before the run (plugins,
 * files, endpoints), feeds the input in, writes the outputs out and turns
 * the run's end into an exit status. Part of cli/. It never handles items
 * itself, besides converting them at the two ends.
 *
 * Signals: it blocks SIGINT and SIGTERM before it starts the run (so every
 * thread of the run inherits the mask) and a watcher thread reads them
 * from a signalfd: the first cancels the run, which then ends as it would
 * on a failure (threads joined, workers reaped, outputs already written
 * left whole); the second ends the process at once.
 */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/builtins.h"
#include "cli/checkpoint.h"
#include "cli/items.h"
#include "cli/plugin.h"
#include "coordinator/checkpoint.h"
#include "coordinator/run.h"
#include "coordinator/spawn.h"
#include "core/json.h"
#include "core/pipeline.h"
#include "core/value.h"

const char zp__cli_run_help[] =
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
    "  --checkpoint STATE    commit the outputs to --output FILE every\n"
    "                        --checkpoint-interval, and what they are in\n"
    "                        STATE; the same command run again after a\n"
    "                        crash goes on from there (a STATE of a run\n"
    "                        that finished: nothing is done again)\n"
    "  --checkpoint-interval TIME\n"
    "                        between two checkpoints, such as 500ms or 2s\n"
    "                        (default: 1s)\n"
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
    "line, a checkpoint not written...), 2 a usage or configuration error (a\n"
    "STATE that does not fit the command or FILE included), 128+N stopped\n"
    "by signal N.\n"
    "SIGINT or SIGTERM stops the run, keeping the outputs written so far\n"
    "whole; a second one stops zpipe at once.\n";

/* ---- zpipe run: options -------------------------------------------------- */

typedef struct run_cfg {
    zp__cli_names plugins;
    const char *input, *output, *stats, *listen, *metrics;
    const char *curve_secret, *curve_allow;
    const char *spec, *args;
    const char *checkpoint; /* --checkpoint STATE, or NULL */
    bool json_input, progress;
    zp__format format;
    int wait_ms, linger_ms, checkpoint_ms;
} run_cfg;

static const char *const format_names[] = {"json", "lines", "msgpack", NULL};

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
    {"checkpoint", required_argument, NULL, OPT_CHECKPOINT},
    {"checkpoint-interval", required_argument, NULL, OPT_CHECKPOINT_INTERVAL},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int run_choice(const char *opt, const char *value,
                      const char *const *words, const char *expected, int *out)
{
    *out = zp__cli_choice(value, words);
    if (*out < 0)
        return zp__cli_usage_error("run", "bad value '%s' for %s: expected %s",
                                   value, opt, expected);
    return GO_ON;
}

static int run_duration(const char *opt, const char *value, const char *example,
                        int *ms)
{
    if (zp__cli_duration_ms(value, ms))
        return GO_ON;
    return zp__cli_usage_error("run",
                               "bad value '%s' for %s: expected a duration "
                               "such as 500ms or %s",
                               value, opt, example);
}

/* One option of zpipe run. Returns GO_ON, or the exit status. */
static int run_option(void *cfg, int opt, char *arg)
{
    run_cfg *c = cfg;
    static const char *const inputs[] = {"json", "lines", NULL};
    int pick, rc = GO_ON;
    switch (opt) {
    case OPT_PLUGIN:
        if (!zp__cli_names_add(&c->plugins, arg))
            rc = zp__cli_usage_error("run", "out of memory");
        break;
    case OPT_INPUT: c->input = arg; break;
    case OPT_INPUT_FORMAT:
        rc = run_choice("--input-format", arg, inputs, "json or lines", &pick);
        c->json_input = pick == 0;
        break;
    case OPT_OUTPUT: c->output = arg; break;
    case OPT_FORMAT:
        rc = run_choice("--format", arg, format_names, "json, lines or msgpack",
                        &pick);
        c->format = (zp__format)pick;
        break;
    case OPT_PROGRESS: c->progress = true; break;
    case OPT_STATS: c->stats = arg; break;
    case OPT_LISTEN: c->listen = arg; break;
    case OPT_WAIT:
        rc = run_duration("--wait-workers", arg, "10s", &c->wait_ms);
        break;
    case OPT_CURVE_SECRET: c->curve_secret = arg; break;
    case OPT_CURVE_ALLOW: c->curve_allow = arg; break;
    case OPT_METRICS: c->metrics = arg; break;
    case OPT_METRICS_LINGER:
        c->linger_ms = 0;
        if (strcmp(arg, "0") != 0)
            rc = run_duration("--metrics-linger", arg, "15s", &c->linger_ms);
        break;
    case OPT_CHECKPOINT: c->checkpoint = arg; break;
    case OPT_CHECKPOINT_INTERVAL:
        rc =
            run_duration("--checkpoint-interval", arg, "2s", &c->checkpoint_ms);
        break;
    }
    return rc;
}

/* --checkpoint STATE needs an output file of its own. */
static int checkpoint_operands(const run_cfg *c)
{
    if (c->checkpoint == NULL)
        return c->checkpoint_ms == 0
                   ? GO_ON
                   : zp__cli_usage_error("run", "--checkpoint-interval needs "
                                                "--checkpoint STATE");
    if (c->output == NULL || strcmp(c->output, "-") == 0)
        return zp__cli_usage_error(
            "run",
            "--checkpoint STATE needs --output FILE: the outputs go to "
            "a file that a resumed run can cut back to its last checkpoint");
    if (strcmp(c->checkpoint, c->output) == 0)
        return zp__cli_usage_error(
            "run", "--checkpoint and --output name the same file '%s'",
            c->output);
    return GO_ON;
}

/* The SPEC and ARGS_JSON operands, and the options they exclude. */
static int run_operands(run_cfg *c, int argc, char **argv)
{
    int left = argc - optind;
    if (left < 1)
        return zp__cli_usage_error("run",
                                   "missing the SPEC of the pipeline, such "
                                   "as 'range branch | identity'");
    if (left > 2)
        return zp__cli_usage_error(
            "run",
            "unexpected argument '%s' (quote the SPEC as one "
            "argument; ARGS_JSON is one JSON value)",
            argv[optind + 2]);
    c->spec = argv[optind];
    c->args = left == 2 ? argv[optind + 1] : NULL;
    if (c->args != NULL && c->input != NULL)
        return zp__cli_usage_error(
            "run",
            "ARGS_JSON '%s' and --input exclude each other: "
            "with --input the first task reads the input",
            c->args);
    if ((c->curve_secret == NULL) != (c->curve_allow == NULL))
        return zp__cli_usage_error(
            "run", "%s needs %s too",
            c->curve_secret ? "--curve-secret" : "--curve-allow",
            c->curve_secret ? "--curve-allow" : "--curve-secret");
    return checkpoint_operands(c);
}

static int parse_run(run_cfg *c, int argc, char **argv)
{
    int rc = zp__cli_parse_options("run", zp__cli_run_help, run_options,
                                   run_option, c, argc, argv);
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

/* A remote stage needs an endpoint to listen on, and one ZeroMQ can bind
 * workers of other processes to. */
static bool listen_ok(const run_cfg *c, const zp_pipeline *p)
{
    const char *ep = c->listen ? c->listen : getenv("ZPIPE_LISTEN");
    for (size_t k = 0; k < p->n; k++) {
        if (p->stages[k].opts.mode != ZP_REMOTE)
            continue;
        if (ep == NULL || ep[0] == '\0') {
            zp__cli_usage_error(
                "run",
                "task '%s' has mode=remote: give --listen ENDPOINT "
                "(or $ZPIPE_LISTEN), such as tcp://*:5555",
                p->stages[k].name);
            return false;
        }
    }
    if (c->listen != NULL && strncmp(c->listen, "tcp://", 6) != 0 &&
        strncmp(c->listen, "ipc://", 6) != 0) {
        zp__cli_usage_error(
            "run",
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
    if (!zp__cli_curve_files_ok("run", NULL, c->curve_secret))
        return false;
    int fd = c->stats ? open_for_writing("--stats", c->stats, false) : -2;
    if (fd >= 0)
        close(fd);
    return fd != -1;
}

/* ---- zpipe run: resuming from a checkpoint ------------------------------- */

static bool same(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The folder of --checkpoint STATE, where join stages keep their spill
 * files beside it: in buf, or a static string. */
static const char *state_dir(const run_cfg *c, char buf[PATH_MAX])
{
    snprintf(buf, PATH_MAX, "%s", c->checkpoint);
    return dirname(buf);
}

/* Whether `token` is one of a run of p on the run's arguments: the check
 * zp_start_with() makes, made before anything is touched. */
static bool token_fits(const run_cfg *c, const zp_pipeline *p,
                       const char *token, char **why)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    zp__ckpt k;
    char dir[PATH_MAX];
    zp_run_opts o = {.resume = token, .checkpoint_dir = state_dir(c, dir)};
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int rc = zp__json_pack_args(c->args, &pk, why);
    if (rc == 0)
        rc = zp__ckpt_init(&k, &o, p, sb.data, sb.size, why);
    if (rc == 0)
        zp__ckpt_fini(&k);
    msgpack_sbuffer_destroy(&sb);
    return rc == 0;
}

/* Says why the STATE does not fit this command. Returns EXIT_USAGE. */
static int refuse(const run_cfg *c, const char *fmt, ...) ZP__PRINTF(2, 3);

static int refuse(const run_cfg *c, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr,
            "zpipe run: cannot resume from --checkpoint '%s': ", c->checkpoint);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "; '%s' and '%s' are left as they are\n", c->checkpoint,
            c->output);
    return EXIT_USAGE;
}

/* Whether the STATE st was written by this command (the spec's workers=,
 * throttle=, mode= and pool= may change). Returns GO_ON or EXIT_USAGE. */
static int state_fits(const run_cfg *c, const zp_pipeline *p,
                      const zp__checkpoint *st)
{
    char *why = NULL;
    const char *format = format_names[c->format];
    if (!same(st->output, c->output))
        return refuse(c, "it was written for --output '%s'", st->output);
    if (!same(st->format, format))
        return refuse(c, "'%s' was written with --format %s, not %s", c->output,
                      st->format, format);
    if (!same(st->input, c->input))
        return refuse(c, "it was written for %s%s%s",
                      st->input ? "--input '" : "no --input",
                      st->input ? st->input : "", st->input ? "'" : "");
    if (token_fits(c, p, st->token, &why))
        return GO_ON;
    refuse(c,
           "it was written for another spec or other arguments (spec '%s', "
           "arguments %s): %s",
           st->spec, st->args ? st->args : "none", why ? why : "out of memory");
    free(why);
    return EXIT_USAGE;
}

/* Reads the STATE of --checkpoint into *st (all zero when there is none
 * yet) and checks that it fits this command. Returns GO_ON to run,
 * EXIT_OK when STATE says the run is done, or EXIT_USAGE after saying
 * why it cannot go on. */
static int read_state(const run_cfg *c, const zp_pipeline *p,
                      zp__checkpoint *st)
{
    char *why = NULL;
    int rc = zp__checkpoint_read(c->checkpoint, st, &why);
    if (rc == ZP__CHECKPOINT_NONE && !zp__checkpoint_writable(c->checkpoint))
        return zp__cli_usage_error("run", "cannot write --checkpoint '%s': %s",
                                   c->checkpoint, strerror(errno));
    if (rc == ZP__CHECKPOINT_NONE)
        return GO_ON;
    if (rc != 0) {
        rc = refuse(c, "%s", why ? why : zp_strerror(rc));
        free(why);
        return rc;
    }
    rc = state_fits(c, p, st);
    if (rc == GO_ON && st->done) {
        fprintf(stderr,
                "zpipe: %s: the run is done already (%llu outputs in "
                "'%s'); nothing to do\n",
                c->checkpoint, (unsigned long long)st->outputs, c->output);
        rc = EXIT_OK;
    }
    return rc;
}

/* The --output file of a run that goes on from the STATE st: there,
 * and at least as long as st says. Returns the descriptor, or -1 after
 * saying why. */
static int open_to_resume(const run_cfg *c, const zp__checkpoint *st)
{
    struct stat sb;
    int fd = open(c->output, O_WRONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        refuse(c, "'%s' is missing, and it held %llu bytes", c->output,
               (unsigned long long)st->bytes);
        return -1;
    }
    if (fd < 0)
        return open_for_writing("--output", c->output, false); /* says why */
    if (fstat(fd, &sb) == 0 && (uint64_t)sb.st_size < st->bytes) {
        refuse(c, "'%s' is %lld bytes, shorter than the %llu bytes committed",
               c->output, (long long)sb.st_size, (unsigned long long)st->bytes);
        close(fd);
        return -1;
    }
    return fd;
}

/* The --output file: stdout, a file truncated, or with --checkpoint a
 * regular file (truncated, or as open_to_resume). -1 after saying why. */
static int open_output(const run_cfg *c, const zp__checkpoint *st)
{
    struct stat sb;
    if (c->output == NULL || strcmp(c->output, "-") == 0)
        return STDOUT_FILENO;
    if (c->checkpoint != NULL && stat(c->output, &sb) == 0 &&
        !S_ISREG(sb.st_mode)) {
        zp__cli_usage_error("run",
                            "--checkpoint needs --output to be a regular "
                            "file, and '%s' is not",
                            c->output);
        return -1;
    }
    if (st->token != NULL)
        return open_to_resume(c, st);
    return open_for_writing("--output", c->output, true);
}

/* Cuts the output back to what the STATE committed and says so. */
static int keep(const run_cfg *c, const zp__checkpoint *st, int fd)
{
    if (ftruncate(fd, (off_t)st->bytes) != 0 ||
        lseek(fd, (off_t)st->bytes, SEEK_SET) < 0)
        return ZP_EIO;
    fprintf(stderr, "zpipe: resuming from %s: %llu outputs kept\n",
            c->checkpoint, (unsigned long long)st->outputs);
    return 0;
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

/* Where the run's outputs go. */
typedef struct sink {
    zp__writer w;
    uint64_t outputs; /* in the file, those kept from before included */
    const run_cfg *c; /* borrowed */
} sink;

/* on_checkpoint of --checkpoint: the outputs so far on disk, then the
 * STATE that commits them. Nonzero (after saying why) fails the run. */
static int commit(void *user, const char *token)
{
    sink *s = user;
    const run_cfg *c = s->c;
    size_t len = strlen(token);
    char *why = NULL;
    off_t end = -1;
    if (zp__writer_flush(&s->w) != 0 || fsync(s->w.fd) != 0 ||
        (end = lseek(s->w.fd, 0, SEEK_CUR)) < 0) {
        fprintf(stderr, "zpipe run: checkpoint: writing '%s': %s\n", c->output,
                strerror(errno));
        return -1;
    }
    zp__checkpoint st = {.token = token,
                         .done =
                             len > 5 && strcmp(token + len - 5, ".done") == 0,
                         .output = c->output,
                         .format = format_names[c->format],
                         .bytes = (uint64_t)end,
                         .outputs = s->outputs,
                         .spec = c->spec,
                         .args = c->args,
                         .input = c->input};
    int rc = zp__checkpoint_write(c->checkpoint, &st, &why);
    if (rc != 0)
        fprintf(stderr, "zpipe run: checkpoint: %s\n",
                why ? why : zp_strerror(rc));
    free(why);
    return rc;
}

/* Writes the run's outputs; flushes whenever the run has none ready.
 * Returns 0, or the writer's error with errno in *err; the run is then
 * cancelled. */
static int write_outputs(zp_run *run, sink *s, int *err)
{
    zp__writer *w = &s->w;
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
        s->outputs++;
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
                write_rc == ZP_ENOMEM ? "out of memory"
                : write_rc == ZP_EINVAL
                    ? "an output nested deeper than 32 levels"
                    : strerror(err));
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

/* Writes the outputs of a run that started: after the outputs kept when
 * it resumes, unless it failed at its start (a resume token refused: the
 * file is left as it is). */
static int write_run(zp_run *run, sink *s, const zp__checkpoint *st, int *err)
{
    if (st->token != NULL && zp_error(run) != NULL) {
        fprintf(stderr,
                "zpipe run: cannot resume from --checkpoint '%s'; "
                "'%s' and '%s' are left as they are\n",
                s->c->checkpoint, s->c->checkpoint, s->c->output);
        return 0;
    }
    if (st->token != NULL && keep(s->c, st, s->w.fd) != 0) {
        *err = errno;
        zp_cancel(run);
        return ZP_EIO;
    }
    return write_outputs(run, s, err);
}

static int start_and_wait(const run_cfg *c, zp_pipeline *p, int out_fd,
                          const zp__checkpoint *st)
{
    sink out = {.outputs = st->outputs, .c = c};
    char dir[PATH_MAX];
    zp_run_opts o = {.listen = c->listen,
                     .wait_workers_ms = c->wait_ms,
                     .curve_secret = c->curve_secret,
                     .curve_allow = c->curve_allow,
                     .progress = c->progress,
                     .stats_path = c->stats,
                     .metrics_listen = c->metrics,
                     .metrics_linger_ms = c->linger_ms,
                     .progress_total = items_expected(c, p),
                     .on_checkpoint = c->checkpoint ? commit : NULL,
                     .checkpoint_user = &out,
                     .checkpoint_ms = c->checkpoint_ms,
                     .resume = st->token,
                     .checkpoint_dir =
                         c->checkpoint ? state_dir(c, dir) : NULL};
    sigset_t set;
    watcher w;
    signal(SIGPIPE, SIG_IGN); /* a closed output is an EPIPE, handled */
    block_stop_signals(&set);
    if (!watcher_open(&w, &set))
        return EXIT_FAILED;
    zp_run *run = zp_start_with(p, c->args, &o);
    if (!watcher_start(&w, run)) {
        zp_run_free(run);
        return EXIT_FAILED;
    }
    zp__writer_init(&out.w, out_fd, c->format);
    int err = 0, write_rc = write_run(run, &out, st, &err);
    int code = zp_finish(run);
    int status = run_status(run, code, watcher_stop(&w), write_rc, err);
    zp__writer_fini(&out.w);
    zp_run_free(run);
    return status;
}

int zp__cli_run(int argc, char **argv)
{
    run_cfg c = {.json_input = true, .format = ZP__FORMAT_JSON};
    zp__checkpoint st = {.zone = NULL};
    zp__input in;
    zp_pipeline *p = NULL;
    zp__plugins *ps = NULL;
    int out_fd = -1, rc = parse_run(&c, argc, argv);
    if (rc != GO_ON)
        goto out;
    rc = EXIT_USAGE;
    if ((ps = zp__cli_load_plugins("run", &c.plugins)) == NULL ||
        (p = build_pipeline(&c, &in)) == NULL || !listen_ok(&c, p))
        goto out;
    if (c.checkpoint != NULL && (rc = read_state(&c, p, &st)) != GO_ON)
        goto out;
    rc = EXIT_USAGE;
    if (!run_files_ok(&c) || (out_fd = open_output(&c, &st)) < 0)
        goto out;
    bool to_stdout = c.output == NULL || strcmp(c.output, "-") == 0;
    zp__spawn_set_worker_args(zp__plugins_args(ps));
    rc = start_and_wait(&c, p, out_fd, &st);
    zp__spawn_set_worker_args(NULL);
    if (!to_stdout && close(out_fd) != 0 && rc == EXIT_OK) {
        fprintf(stderr, "zpipe run: writing '%s': %s\n", c.output,
                strerror(errno));
        rc = EXIT_FAILED;
    }
out:
    zp__checkpoint_fini(&st);
    zp_pipeline_free(p);
    zp__plugins_destroy(&ps);
    free(c.plugins.v);
    return rc;
}
