/* SPDX-License-Identifier: MIT */
/*
 * zp_init: the first line of main(). Part of coordinator. It owns zpipe's
 * command-line flags; today that is only worker mode, which belongs to
 * process and remote workers and is refused clearly until they exist.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "zpipe.h"

/* Removes argv[i] and its `take - 1` followers. */
static void strip(int *argc, char **argv, int i, int take)
{
    memmove(&argv[i], &argv[i + take],
            (size_t)(*argc - i - take + 1) * sizeof *argv);
    *argc -= take;
}

static const char *find_worker_flag(int *argc, char **argv)
{
    const char *endpoint = NULL;
    for (int i = 1; i < *argc;) {
        if (strcmp(argv[i], "--zp-worker") == 0 && i + 1 < *argc) {
            endpoint = argv[i + 1];
            strip(argc, argv, i, 2);
        } else if (strncmp(argv[i], "--zp-worker=", 12) == 0) {
            endpoint = argv[i] + 12;
            strip(argc, argv, i, 1);
        } else {
            i++;
        }
    }
    return endpoint;
}

void zp_init(int *argc, char ***argv)
{
    const char *endpoint = NULL;
    if (argc != NULL && argv != NULL && *argv != NULL)
        endpoint = find_worker_flag(argc, *argv);
    if (endpoint == NULL)
        endpoint = getenv("ZPIPE_WORKER");
    if (endpoint == NULL || endpoint[0] == '\0')
        return;
    fprintf(stderr,
            "zpipe: worker mode (--zp-worker %s) is not available in zpipe "
            "%s: this version runs thread workers only\n",
            endpoint, ZP_VERSION_STRING);
    exit(2);
}
