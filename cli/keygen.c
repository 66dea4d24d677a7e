/* SPDX-License-Identifier: MIT */
/*
 * `zpipe keygen` (docs/cli.md is the reference): makes a CURVE key pair,
 * never over an existing file. Part of cli/; the key files are
 * transport/curve.h's.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>

#include "transport/curve.h"

const char zp__cli_keygen_help[] =
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

/* ---- zpipe keygen -------------------------------------------------------- */

int zp__cli_keygen(int argc, char **argv)
{
    static const struct option options[] = {
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char *why = NULL;
    int rc =
        zp__cli_parse_options("keygen", zp__cli_keygen_help, options, NULL,
                              NULL, argc, argv); /* -h is its only option */
    if (rc != GO_ON)
        return rc;
    if (argc - optind != 1)
        return zp__cli_usage_error("keygen",
                                   argc == optind
                                       ? "missing the NAME of the key pair"
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
