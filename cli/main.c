/* SPDX-License-Identifier: MIT */
/*
 * The zpipe command: `zpipe run`, `zpipe worker`, `zpipe tasks` and
 * `zpipe keygen` (docs/cli.md is the reference). Part of cli/, the zpipe
 * program, above every layer of the library and compiled into the zpipe
 * executable only. It is a thin layer over the library: it loads plugins,
 * builds the pipeline from the spec, feeds items in, writes outputs out,
 * and turns signals and errors into exit statuses. It never handles items
 * itself, besides converting them at the two ends.
 *
 * This file registers the built-in tasks and hands the command line to
 * its command (cli.h lists them), or prints the help or the version.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>

#include "cli/builtins.h"

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

/* ---- main ---------------------------------------------------------------- */

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"run", zp__cli_run, zp__cli_run_help},
    {"worker", zp__cli_worker, zp__cli_worker_help},
    {"tasks", zp__cli_tasks, zp__cli_tasks_help},
    {"keygen", zp__cli_keygen, zp__cli_keygen_help},
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
        return zp__cli_spawned_worker(argc, argv);
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
