/* SPDX-License-Identifier: MIT */
/*
 * `zpipe worker` (docs/cli.md is the reference): serves the tasks of its
 * plugins to a coordinator's mode=remote stages, with its metrics endpoint
 * when asked for; and the process workers that `zpipe run` spawns, which
 * are this program again. Part of cli/. The serving itself is the
 * library's (worker/serve.h).
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/plugin.h"
#include "coordinator/worker_metrics.h"
#include "core/pipeline.h"
#include "worker/serve.h"

const char zp__cli_worker_help[] =
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

/* ---- zpipe worker -------------------------------------------------------- */

typedef struct worker_cfg {
    zp__cli_names plugins;
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
    if (opt == OPT_PLUGIN && !zp__cli_names_add(&c->plugins, arg))
        return zp__cli_usage_error("worker", "out of memory");
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
        return zp__cli_usage_error("worker", "unexpected argument '%s'",
                                   argv[optind]);
    c->connect = or_env(c->connect, "ZPIPE_WORKER");
    c->threads = or_env(c->threads, "ZPIPE_THREADS");
    c->pool = or_env(c->pool, "ZPIPE_POOL");
    c->curve_server = or_env(c->curve_server, "ZPIPE_CURVE_SERVER");
    c->curve_secret = or_env(c->curve_secret, "ZPIPE_CURVE_SECRET");
    c->metrics = or_env(c->metrics, "ZPIPE_METRICS");
    if (c->connect == NULL)
        return zp__cli_usage_error("worker", "--connect ENDPOINT is needed (or "
                                             "$ZPIPE_WORKER), such as "
                                             "tcp://coordinator:5555");
    long n;
    if (c->threads != NULL && !zp__cli_whole(c->threads, 1, 4096, &n))
        return zp__cli_usage_error(
            "worker",
            "bad value '%s' for --threads: expected a whole "
            "number from 1 to 4096",
            c->threads);
    if (c->pool != NULL && !zp__pool_name_ok(c->pool, strlen(c->pool)))
        return zp__cli_usage_error(
            "worker",
            "bad value '%s' for --pool: expected a name of 1 "
            "to %d characters of A-Z a-z 0-9 _ . -",
            c->pool, ZP__POOL_MAX);
    if ((c->curve_server == NULL) != (c->curve_secret == NULL))
        return zp__cli_usage_error(
            "worker", "%s needs %s too",
            c->curve_server ? "--curve-server" : "--curve-secret",
            c->curve_server ? "--curve-secret" : "--curve-server");
    return GO_ON;
}

static int parse_worker(worker_cfg *c, int argc, char **argv)
{
    int rc =
        zp__cli_parse_options("worker", zp__cli_worker_help, worker_options,
                              worker_option, c, argc, argv);
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

int zp__cli_worker(int argc, char **argv)
{
    worker_cfg c = {.plugins = {NULL, 0}};
    zp__plugins *ps = NULL;
    zp__serve_stats stats = {0};
    zp__metrics *m = NULL;
    int rc = parse_worker(&c, argc, argv);
    if (rc == GO_ON)
        rc =
            zp__cli_curve_files_ok("worker", c.curve_server, c.curve_secret) &&
                    (ps = zp__cli_load_plugins("worker", &c.plugins)) != NULL &&
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
int zp__cli_spawned_worker(int argc, char **argv)
{
    zp__cli_names l = {NULL, 0};
    bool ok = true;
    for (int i = 3; ok && i + 1 < argc; i += 2)
        ok = strcmp(argv[i], "--plugin") == 0 &&
             zp__cli_names_add(&l, argv[i + 1]);
    zp__plugins *ps = ok ? zp__cli_load_plugins("worker", &l) : NULL;
    free(l.v);
    if (ps == NULL)
        return EXIT_USAGE;
    zp__plugins_destroy(&ps);
    zp_init(&argc, &argv); /* serves, then exits */
    return EXIT_USAGE;
}
