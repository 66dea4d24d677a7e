/* SPDX-License-Identifier: MIT */
/*
 * Checkpoint options, fingerprints and tokens, see checkpoint.h.
 */
#include "coordinator/checkpoint.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"

#define TOKEN_PREFIX "zpipe1."
#define DEFAULT_EVERY_MS 1000

/* ---- Fingerprints: 64-bit FNV-1a over what decides a run's outputs ---- */

static uint64_t mix(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t mix_u64(uint64_t h, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    return mix(h, b, sizeof b);
}

/* A string with its length, so that ("ab","c") and ("a","bc") differ;
 * NULL differs from "". */
static uint64_t mix_str(uint64_t h, const char *s)
{
    if (s == NULL)
        return mix_u64(h, UINT64_MAX);
    size_t n = strlen(s);
    return mix(mix_u64(h, n), s, n);
}

/* Tasks, their order, flags and bind values; not workers, throttle,
 * timeouts, mode or pool, which change where and how fast items run, not
 * what comes out. */
static uint64_t mix_pipeline(uint64_t h, const zp_pipeline *p)
{
    h = mix_u64(h, p->n);
    for (size_t k = 0; k < p->n; k++) {
        const zp__stage_def *d = &p->stages[k];
        h = mix_str(h, d->name);
        h = mix_u64(h, (uint64_t)d->opts.branch | (uint64_t)d->opts.join << 1 |
                           (uint64_t)d->opts.ordered << 2 |
                           (uint64_t)(d->opts.on_error == ZP_SKIP) << 3 |
                           (uint64_t)(d->inner != NULL) << 4);
        h = mix_str(h, d->bind_json);
        if (d->inner != NULL)
            h = mix_pipeline(h, d->inner);
    }
    return h;
}

static uint64_t fingerprint(const zp_pipeline *p, const char *args, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    h = mix_pipeline(h, p);
    return mix(mix_u64(h, len), args, len);
}

/* ---- Tokens ------------------------------------------------------------ */

void zp__ckpt_token(const zp__ckpt *c, bool done, uint64_t first,
                    char out[ZP__TOKEN_MAX])
{
    if (done)
        snprintf(out, ZP__TOKEN_MAX, TOKEN_PREFIX "%016" PRIx64 ".done",
                 c->print);
    else
        snprintf(out, ZP__TOKEN_MAX, TOKEN_PREFIX "%016" PRIx64 ".%" PRIu64,
                 c->print, first);
}

/* Reads a token: its fingerprint, and K or done. Returns 0 or ZP_EINVAL. */
static int parse_token(const char *t, uint64_t *print, uint64_t *first,
                       bool *done)
{
    size_t np = strlen(TOKEN_PREFIX);
    char *end;
    if (strncmp(t, TOKEN_PREFIX, np) != 0 || strlen(t) < np + 18 ||
        t[np + 16] != '.')
        return ZP_EINVAL;
    for (size_t i = np; i < np + 16; i++)
        if (!strchr("0123456789abcdef", t[i]))
            return ZP_EINVAL;
    *print = strtoull(t + np, NULL, 16);
    const char *k = t + np + 17;
    *done = strcmp(k, "done") == 0;
    *first = 0;
    if (*done)
        return 0;
    if (*k < '0' || *k > '9')
        return ZP_EINVAL;
    *first = strtoull(k, &end, 10);
    return *end == '\0' ? 0 : ZP_EINVAL;
}

/* The first stage checkpoints do not cover, or NULL. */
static const zp__stage_def *uncovered(const zp_pipeline *p)
{
    for (size_t k = 0; k < p->n; k++)
        if (p->stages[k].opts.join)
            return &p->stages[k];
    return NULL;
}

int zp__ckpt_init(zp__ckpt *c, const zp_run_opts *o, const zp_pipeline *p,
                  const char *args, size_t len, char **why)
{
    memset(c, 0, sizeof *c);
    if (o == NULL || (o->on_checkpoint == NULL && o->resume == NULL))
        return 0;
    const zp__stage_def *join = uncovered(p);
    if (join != NULL) {
        *why = zp__strdupf("checkpoints do not cover join stages yet "
                           "(task '%s')",
                           join->name);
        return ZP_EINVAL;
    }
    c->fn = o->on_checkpoint;
    c->user = o->checkpoint_user;
    c->every_ns =
        (uint64_t)(o->checkpoint_ms > 0 ? o->checkpoint_ms : DEFAULT_EVERY_MS) *
        ZP__NS_PER_MS;
    c->print = fingerprint(p, args, len);
    if (o->resume == NULL)
        return 0;
    uint64_t print;
    if (parse_token(o->resume, &print, &c->skip, &c->done) != 0) {
        *why = zp__strdupf("'%.64s' is not a checkpoint token", o->resume);
        return ZP_EINVAL;
    }
    if (print != c->print) {
        *why = zp__strdupf("the checkpoint token '%.64s' is of another "
                           "pipeline or other arguments",
                           o->resume);
        return ZP_EINVAL;
    }
    return 0;
}

void zp__ckpt_arm(const zp__ckpt *c, zp__edge *first)
{
    if (c->fn != NULL || c->skip > 0)
        zp__edge_mark_every(first, c->fn ? c->every_ns : 0, c->skip);
}

/* Hands the caller a token. Returns 0, or ZP_ETASK with *why. */
static int hand(zp__ckpt *c, bool done, uint64_t first, char **why)
{
    char token[ZP__TOKEN_MAX];
    if (c->fn == NULL)
        return 0;
    zp__ckpt_token(c, done, first, token);
    int rc = c->fn(c->user, token);
    if (rc == 0)
        return 0;
    *why =
        zp__strdupf("the checkpoint at %s was not committed (%d)", token, rc);
    return ZP_ETASK;
}

int zp__ckpt_passed(zp__ckpt *c, zp__rx *out, zp__edge *first, char **why)
{
    zp__mark m = zp__rx_mark(out);
    int rc = hand(c, false, m.first, why);
    zp__rx_pass(out);
    zp__edge_mark_settled(first, m.epoch);
    return rc;
}

int zp__ckpt_finished(zp__ckpt *c, char **why)
{
    return hand(c, true, 0, why);
}
