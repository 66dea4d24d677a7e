/* SPDX-License-Identifier: MIT */
/*
 * What the commands of the zpipe program share: exit statuses, option
 * parsing and its messages, values of options, --plugin lists, the check
 * of CURVE key files, and the entry point and help of each command (one
 * file each: run.c, worker.c, tasks.c, keygen.c; main.c picks one). Part
 * of cli/, the zpipe program, above every layer of the library and
 * compiled into the zpipe executable only. Nothing here handles items.
 */
#ifndef ZP_CLI_CLI_H
#define ZP_CLI_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

#include "zpipe.h"
#include "cli/plugin.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

/* Returned by the option parsers when the command should go on. */
#define GO_ON (-1)

/* The long options of the commands, as getopt_long returns them. */
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
    OPT_CHECKPOINT,
    OPT_CHECKPOINT_INTERVAL,
};

/* ---- Messages and options ------------------------------------------------ */

/* Says what is wrong with the command line. Returns EXIT_USAGE. */
int zp__cli_usage_error(const char *cmd, const char *fmt, ...) ZP__PRINTF(2, 3);

/* Takes one option of a command: returns GO_ON or an exit status. */
typedef int (*zp__cli_option_fn)(void *cfg, int opt, char *arg);

/* Reads the options of `cmd` (getopt_long, so they may come anywhere
 * before a `--`), handing each to `fn` (NULL when `options` holds --help
 * only). Returns GO_ON, EXIT_OK after printing `help` for -h, or the
 * status of a usage error; optind is then the first operand. */
int zp__cli_parse_options(const char *cmd, const char *help,
                          const struct option *options, zp__cli_option_fn fn,
                          void *cfg, int argc, char **argv);

/* The index of `value` in the NULL-terminated `words`, or -1. */
int zp__cli_choice(const char *value, const char *const *words);

/* A whole number from min to max. */
bool zp__cli_whole(const char *s, long min, long max, long *out);

/* Milliseconds from "500", "500ms" or "10s". */
bool zp__cli_duration_ms(const char *s, int *out);

/* ---- Plugins and keys ---------------------------------------------------- */

/* A list of --plugin values, borrowed from argv. */
typedef struct zp__cli_names {
    const char **v; /* owned array */
    size_t n;
} zp__cli_names;

/* Appends `name` to `l`; false when out of memory. */
bool zp__cli_names_add(zp__cli_names *l, const char *name);

/* The plugins named in `l`, loaded; NULL after saying why. */
zp__plugins *zp__cli_load_plugins(const char *cmd, const zp__cli_names *l);

/* The CURVE files `pub` and `sec` (either may be NULL), read once now to
 * name a bad one before the command goes on; false after saying why. */
bool zp__cli_curve_files_ok(const char *cmd, const char *pub, const char *sec);

/* ---- The commands -------------------------------------------------------- */

/* Each takes the command's own argv (argv[0] is its name) and returns the
 * exit status; each help text is what --help prints. */
extern const char zp__cli_run_help[];
extern const char zp__cli_worker_help[];
extern const char zp__cli_tasks_help[];
extern const char zp__cli_keygen_help[];
int zp__cli_run(int argc, char **argv);
int zp__cli_worker(int argc, char **argv);
int zp__cli_tasks(int argc, char **argv);
int zp__cli_keygen(int argc, char **argv);

/* A process worker of `zpipe run`: "zpipe --zp-worker ENDPOINT [--plugin
 * PATH]...". It loads the plugins its coordinator loaded, then zp_init()
 * serves; returns only on a usage error. */
int zp__cli_spawned_worker(int argc, char **argv);

#endif
