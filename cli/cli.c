/* SPDX-License-Identifier: MIT */
/*
 * What the commands of the zpipe program share, see cli.h: messages,
 * option parsing, values of options, --plugin lists and the check of key
 * files. Part of cli/. It writes to stderr (and the help to stdout), and
 * never exits: every function returns, the caller picks the status.
 */
#include "cli/cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/curve.h"

/* ---- Messages ------------------------------------------------------------ */

int zp__cli_usage_error(const char *cmd, const char *fmt, ...)
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
        return zp__cli_usage_error(cmd, "option '%s' needs a value", word);
    if (optopt != 0 && optopt != '?')
        return zp__cli_usage_error(cmd, "unknown option '-%c'", optopt);
    return zp__cli_usage_error(cmd, "unknown option '%s'", word);
}

int zp__cli_parse_options(const char *cmd, const char *help,
                          const struct option *options, zp__cli_option_fn fn,
                          void *cfg, int argc, char **argv)
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

int zp__cli_choice(const char *value, const char *const *words)
{
    for (int i = 0; words[i] != NULL; i++)
        if (strcmp(value, words[i]) == 0)
            return i;
    return -1;
}

bool zp__cli_whole(const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

bool zp__cli_duration_ms(const char *s, int *out)
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
    if (!zp__cli_whole(digits, 1, 2147483647L / scale, &v))
        return false;
    *out = (int)(v * scale);
    return true;
}

/* ---- Plugins ------------------------------------------------------------- */

bool zp__cli_names_add(zp__cli_names *l, const char *name)
{
    const char **v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (v == NULL)
        return false;
    v[l->n++] = name;
    l->v = v;
    return true;
}

zp__plugins *zp__cli_load_plugins(const char *cmd, const zp__cli_names *l)
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

/* ---- Key files ----------------------------------------------------------- */

bool zp__cli_curve_files_ok(const char *cmd, const char *pub, const char *sec)
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
