/* SPDX-License-Identifier: MIT */
/*
 * zp_init: the first line of main(). Part of coordinator. It owns zpipe's
 * command-line flags: with --zp-worker ENDPOINT (or $ZPIPE_WORKER) the
 * program becomes a worker that serves its registered tasks to the
 * coordinator at ENDPOINT (in the pool --zp-pool NAME, or $ZPIPE_POOL,
 * when given) and exits when done; otherwise it strips
 * zpipe's flags and returns. Process workers are started this way by their
 * coordinator; remote workers are started this way by people.
 */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/pipeline.h"
#include "worker/serve.h"
#include "zpipe.h"

typedef struct flag {
    const char *name; /* "--zp-worker" */
    const char *env;  /* "ZPIPE_WORKER" */
    const char *value;
} flag;

/* Removes argv[i] and its `take - 1` followers. */
static void strip(int *argc, char **argv, int i, int take)
{
    memmove(&argv[i], &argv[i + take],
            (size_t)(*argc - i - take + 1) * sizeof *argv);
    *argc -= take;
}

/* Takes `--name VALUE` or `--name=VALUE` out of argv into f->value. */
static bool take_flag(int *argc, char **argv, int i, flag *f)
{
    size_t n = strlen(f->name);
    if (strcmp(argv[i], f->name) == 0 && i + 1 < *argc) {
        f->value = argv[i + 1];
        strip(argc, argv, i, 2);
        return true;
    }
    if (strncmp(argv[i], f->name, n) == 0 && argv[i][n] == '=') {
        f->value = argv[i] + n + 1;
        strip(argc, argv, i, 1);
        return true;
    }
    return false;
}

static void parse(int *argc, char **argv, flag *flags, size_t nflags)
{
    for (int i = 1; i < *argc;) {
        bool taken = false;
        for (size_t k = 0; k < nflags && !taken; k++)
            taken = take_flag(argc, argv, i, &flags[k]);
        if (!taken)
            i++;
    }
    for (size_t k = 0; k < nflags; k++) {
        const char *env = getenv(flags[k].env);
        if (flags[k].value == NULL && env != NULL && env[0] != '\0')
            flags[k].value = env; /* an empty variable counts as unset */
    }
}

void zp_init(int *argc, char ***argv)
{
    flag flags[] = {{"--zp-worker", "ZPIPE_WORKER", NULL},
                    {"--zp-threads", "ZPIPE_THREADS", NULL},
                    {"--zp-curve-server", "ZPIPE_CURVE_SERVER", NULL},
                    {"--zp-curve-secret", "ZPIPE_CURVE_SECRET", NULL},
                    {"--zp-pool", "ZPIPE_POOL", NULL}};
    if (argc != NULL && argv != NULL && *argv != NULL)
        parse(argc, *argv, flags, sizeof flags / sizeof flags[0]);
    if (flags[0].value == NULL)
        return;
    if (flags[0].value[0] == '\0') {
        zp__log(ZP_LOG_ERROR,
                "zpipe worker: --zp-worker (or $ZPIPE_WORKER) needs "
                "the coordinator's endpoint, e.g. tcp://host:5555");
        exit(2);
    }
    int threads = flags[1].value ? atoi(flags[1].value) : 1;
    if (threads < 1 || threads > 4096) {
        zp__log(ZP_LOG_ERROR, "zpipe worker: --zp-threads must be 1 to 4096");
        exit(2);
    }
    const char *pool = flags[4].value;
    if (pool != NULL && !zp__pool_name_ok(pool, strlen(pool))) {
        zp__log(ZP_LOG_ERROR,
                "zpipe worker: bad pool name '%s' for --zp-pool (or "
                "$ZPIPE_POOL): expected 1 to %d characters of A-Z "
                "a-z 0-9 _ . -",
                pool, ZP__POOL_MAX);
        exit(2);
    }
    zp__serve_opts o = {.endpoint = flags[0].value,
                        .threads = threads,
                        .pool = pool,
                        .server_key = flags[2].value,
                        .secret_key = flags[3].value,
                        .child = getenv("ZPIPE_WORKER_PARENT") != NULL};
    if ((o.server_key == NULL) != (o.secret_key == NULL)) {
        zp__log(ZP_LOG_ERROR,
                "zpipe worker: CURVE needs both --zp-curve-server "
                "(the coordinator's public key) and "
                "--zp-curve-secret (this worker's secret key)");
        exit(2);
    }
    exit(zp__serve(&o));
}
