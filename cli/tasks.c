/* SPDX-License-Identifier: MIT */
/*
 * `zpipe tasks` (docs/cli.md is the reference): lists the tasks that run
 * and worker can use with the given plugins, one a line. Part of cli/.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/plugin.h"
#include "core/registry.h"

const char zp__cli_tasks_help[] =
    "usage: zpipe tasks [--plugin LIB]...\n"
    "\n"
    "Lists the tasks that zpipe run and zpipe worker can use with these\n"
    "plugins, one per line: its name, sync or async, and where it comes\n"
    "from (built-in, or the plugin's path).\n"
    "\n"
    "exit status: 0, or 2 when a plugin cannot be loaded.\n";

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
    return zp__cli_names_add(cfg, arg)
               ? GO_ON
               : zp__cli_usage_error("tasks", "out of memory");
}

int zp__cli_tasks(int argc, char **argv)
{
    static const struct option options[] = {
        {"plugin", required_argument, NULL, OPT_PLUGIN},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    zp__cli_names l = {NULL, 0};
    int rc = zp__cli_parse_options("tasks", zp__cli_tasks_help, options,
                                   plugin_option, &l, argc, argv);
    if (rc == GO_ON && optind < argc)
        rc = zp__cli_usage_error("tasks", "unexpected argument '%s'",
                                 argv[optind]);
    listing li = {NULL, 0};
    zp__plugins *ps = rc == GO_ON ? zp__cli_load_plugins("tasks", &l) : NULL;
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
