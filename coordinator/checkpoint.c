/* SPDX-License-Identifier: MIT */
/*
 * Checkpoint options, fingerprints and tokens, see checkpoint.h.
 */
#include "coordinator/checkpoint.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Appends to out[0..ZP__TOKEN_MAX) what each join stage holds at the
 * checkpoint of `epoch` (as its slot says). */
static void join_parts(const zp__ckpt *c, uint64_t epoch,
                       char out[ZP__TOKEN_MAX])
{
    for (size_t k = 0; c->slots != NULL && k < c->nstages; k++) {
        zp__spill_slot *slot = &c->slots[k];
        if (slot->path == NULL)
            continue;
        uint64_t at = atomic_load_explicit(&slot->epoch, memory_order_acquire);
        assert(at == epoch); /* the stage marked before its marker came */
        (void)at;
        (void)epoch;
        size_t n = strlen(out);
        snprintf(out + n, ZP__TOKEN_MAX - n, ".%" PRIu64 "-%" PRIu64,
                 atomic_load_explicit(&slot->bytes, memory_order_relaxed),
                 atomic_load_explicit(&slot->outputs, memory_order_relaxed));
    }
}

void zp__ckpt_token(const zp__ckpt *c, bool done, const zp__mark *m,
                    char out[ZP__TOKEN_MAX])
{
    if (done) {
        snprintf(out, ZP__TOKEN_MAX, TOKEN_PREFIX "%016" PRIx64 ".done",
                 c->print);
        return;
    }
    snprintf(out, ZP__TOKEN_MAX, TOKEN_PREFIX "%016" PRIx64 ".%" PRIu64,
             c->print, m->first);
    join_parts(c, m->epoch, out);
}

/* Reads a decimal count at *p, which must end at `end` or at the token's
 * end. Returns 0 or ZP_EINVAL. */
static int count_at(const char **p, char end, uint64_t *out)
{
    char *after;
    if (**p < '0' || **p > '9')
        return ZP_EINVAL;
    errno = 0;
    *out = strtoull(*p, &after, 10);
    if (errno != 0 || (*after != end && *after != '\0'))
        return ZP_EINVAL;
    *p = after;
    return 0;
}

/* Reads what a token says of each join stage into its slot: ".B-N" per
 * join stage, in order, at k. Returns 0 or ZP_EINVAL. */
static int parse_joins(zp__ckpt *c, const char *k)
{
    for (size_t j = 0; c->slots != NULL && j < c->nstages; j++) {
        zp__spill_slot *slot = &c->slots[j];
        if (slot->path == NULL)
            continue;
        if (*k++ != '.' || count_at(&k, '-', &slot->replay_bytes) != 0 ||
            *k++ != '-' || count_at(&k, '.', &slot->replay_outputs) != 0)
            return ZP_EINVAL;
    }
    return *k == '\0' ? 0 : ZP_EINVAL;
}

/* Reads a token's fingerprint; *rest is what follows it. Returns 0 or
 * ZP_EINVAL. */
static int parse_print(const char *t, uint64_t *print, const char **rest)
{
    size_t np = strlen(TOKEN_PREFIX);
    if (strncmp(t, TOKEN_PREFIX, np) != 0 || strlen(t) < np + 18 ||
        t[np + 16] != '.')
        return ZP_EINVAL;
    for (size_t i = np; i < np + 16; i++)
        if (!strchr("0123456789abcdef", t[i]))
            return ZP_EINVAL;
    *print = strtoull(t + np, NULL, 16);
    *rest = t + np + 17;
    return 0;
}

/* Reads what follows a token's fingerprint: K with each join stage's
 * part, or done. Returns 0 or ZP_EINVAL. */
static int parse_cut(zp__ckpt *c, const char *k)
{
    c->done = strcmp(k, "done") == 0;
    if (c->done)
        return 0;
    if (count_at(&k, '.', &c->skip) != 0)
        return ZP_EINVAL;
    return parse_joins(c, k);
}

/* ---- Join stages' spill files ------------------------------------------ */

/* A join stage checkpoints do not cover (its workers share its input, so
 * no one call's outputs follow from the items before a cut), or NULL;
 * *joins counts those they do. */
static const zp__stage_def *uncovered(const zp_pipeline *p, size_t *joins)
{
    *joins = 0;
    for (size_t k = 0; k < p->n; k++)
        if (p->stages[k].opts.join && p->stages[k].opts.workers > 1)
            return &p->stages[k];
        else if (p->stages[k].opts.join)
            ++*joins;
    return NULL;
}

/* Names each join stage's spill file in `dir`. Returns 0, ZP_ENOMEM, or
 * ZP_EINVAL with *why. */
static int name_spills(zp__ckpt *c, const zp_pipeline *p, const char *dir,
                       char **why)
{
    size_t joins;
    const zp__stage_def *bad = uncovered(p, &joins);
    if (bad != NULL || joins > ZP__CKPT_JOINS_MAX) {
        *why = bad ? zp__strdupf("task '%s': a join stage takes part in "
                                 "checkpoints with one worker only",
                                 bad->name)
                   : zp__strdupf("checkpoints cover %d join stages at most",
                                 ZP__CKPT_JOINS_MAX);
        return ZP_EINVAL;
    }
    if (joins == 0)
        return 0;
    if (dir == NULL) {
        *why = zp__strdupf("a pipeline with a join stage needs "
                           "checkpoint_dir, where it keeps its input");
        return ZP_EINVAL;
    }
    if ((c->slots = zp__calloc(p->n, sizeof *c->slots)) == NULL)
        return ZP_ENOMEM;
    c->nstages = p->n;
    for (size_t k = 0; k < p->n; k++)
        if (p->stages[k].opts.join &&
            (c->slots[k].path = zp__strdupf("%s/zpipe-%016" PRIx64 "-%zu.spill",
                                            dir, c->print, k)) == NULL)
            return ZP_ENOMEM;
    return 0;
}

zp__spill_slot *zp__ckpt_slot(zp__ckpt *c, size_t k)
{
    return c->slots != NULL && k < c->nstages && c->slots[k].path != NULL
               ? &c->slots[k]
               : NULL;
}

void zp__ckpt_fini(zp__ckpt *c)
{
    for (size_t k = 0; c->slots != NULL && k < c->nstages; k++)
        free(c->slots[k].path);
    free(c->slots);
    c->slots = NULL;
}

/* Removes the spill files: the run is finished. */
static void remove_spills(zp__ckpt *c)
{
    for (size_t k = 0; c->slots != NULL && k < c->nstages; k++)
        if (c->slots[k].path != NULL)
            unlink(c->slots[k].path);
}

static int read_opts(zp__ckpt *c, const zp_run_opts *o, const zp_pipeline *p,
                     char **why)
{
    c->fn = o->on_checkpoint;
    c->user = o->checkpoint_user;
    c->every_ns =
        (uint64_t)(o->checkpoint_ms > 0 ? o->checkpoint_ms : DEFAULT_EVERY_MS) *
        ZP__NS_PER_MS;
    int rc = name_spills(c, p, o->checkpoint_dir, why);
    if (rc != 0 || o->resume == NULL)
        return rc;
    uint64_t print = 0;
    const char *rest = NULL;
    rc = parse_print(o->resume, &print, &rest);
    if (rc == 0 && print != c->print) {
        *why = zp__strdupf("the checkpoint token '%.64s' is of another "
                           "pipeline or other arguments",
                           o->resume);
        return ZP_EINVAL;
    }
    if (rc != 0 || parse_cut(c, rest) != 0) {
        *why = zp__strdupf("'%.64s' is not a checkpoint token", o->resume);
        return ZP_EINVAL;
    }
    return 0;
}

int zp__ckpt_init(zp__ckpt *c, const zp_run_opts *o, const zp_pipeline *p,
                  const char *args, size_t len, char **why)
{
    memset(c, 0, sizeof *c);
    if (o == NULL || (o->on_checkpoint == NULL && o->resume == NULL))
        return 0;
    c->print = fingerprint(p, args, len);
    int rc = read_opts(c, o, p, why);
    if (rc != 0)
        zp__ckpt_fini(c);
    return rc;
}

void zp__ckpt_arm(const zp__ckpt *c, zp__edge *first)
{
    if (c->fn != NULL || c->skip > 0)
        zp__edge_mark_every(first, c->fn ? c->every_ns : 0, c->skip);
}

/* Hands the caller a token. Returns 0, or ZP_ETASK with *why. */
static int hand(zp__ckpt *c, bool done, const zp__mark *m, char **why)
{
    char token[ZP__TOKEN_MAX];
    if (c->fn == NULL)
        return 0;
    zp__ckpt_token(c, done, m, token);
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
    int rc = hand(c, false, &m, why);
    zp__rx_pass(out);
    zp__edge_mark_settled(first, m.epoch);
    return rc;
}

/* The spill files go only once the caller committed the finished token:
 * until then its last token may still need them to resume. */
int zp__ckpt_finished(zp__ckpt *c, char **why)
{
    int rc = hand(c, true, NULL, why);
    if (rc == 0)
        remove_spills(c);
    return rc;
}
