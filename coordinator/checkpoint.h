/* SPDX-License-Identifier: MIT */
/*
 * Checkpoints of a run (durable runs): the options that ask for them, the
 * fingerprint of a pipeline and its arguments, and the tokens a run hands
 * its caller and takes back to resume. The cut itself travels through the
 * run's edges as markers (transport/link.h); this module only says what a
 * marker that went through the whole run means to the caller, and names
 * the spill files of join stages (worker/spill.h), which it removes once
 * the run finished. Part of coordinator: no threads.
 *
 * A token is "zpipe1.FINGERPRINT.K" (the first stage's first K outputs
 * and nothing after them), followed for each join stage, in order, by
 * ".B-N" (the first B bytes of its spill file are the items it took, and
 * it sent N outputs), or "zpipe1.FINGERPRINT.done" (the run finished);
 * FINGERPRINT 16 hex digits.
 */
#ifndef ZP_COORDINATOR_CHECKPOINT_H
#define ZP_COORDINATOR_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/pipeline.h"
#include "transport/link.h"
#include "worker/spill.h"

/* Join stages a checkpointed run may hold, at most. */
#define ZP__CKPT_JOINS_MAX 8
/* Bytes of a token, its NUL included, at most. */
#define ZP__TOKEN_MAX (48 + 42 * ZP__CKPT_JOINS_MAX)

/* Embedded in its run; filled by zp__ckpt_init, freed by zp__ckpt_fini. */
typedef struct zp__ckpt {
    int (*fn)(void *user, const char *token); /* NULL: no checkpoints   */
    void *user;
    uint64_t every_ns;     /* between two checkpoints                      */
    uint64_t print;        /* fingerprint of the pipeline and arguments    */
    uint64_t skip;         /* resumed: the first stage's outputs delivered  */
    bool done;             /* resumed from a finished run                   */
    zp__spill_slot *slots; /* owned, nstages; one per join stage (path
                              set), or NULL without join stages        */
    size_t nstages;
} zp__ckpt;

/*
 * Reads the run options' checkpoint fields for pipeline p run on the
 * packed arguments args[0..len). Returns 0, or ZP_EINVAL with *why
 * (malloc'ed) when the resume token is malformed or belongs to another
 * pipeline or other arguments, when the pipeline holds a stage that
 * checkpoints do not cover (a join stage with several workers), or join
 * stages and no checkpoint_dir; or ZP_ENOMEM.
 */
int zp__ckpt_init(zp__ckpt *c, const zp_run_opts *o, const zp_pipeline *p,
                  const char *args, size_t len, char **why);

/* Frees what zp__ckpt_init() made; idempotent. */
void zp__ckpt_fini(zp__ckpt *c);

/* Stage k's slot (zp__stage_cfg.spill): a join stage's of a run with
 * checkpoints or resumed, else NULL. */
zp__spill_slot *zp__ckpt_slot(zp__ckpt *c, size_t k);

/* Sets up the first stage's edge (before any stage starts): markers every
 * so often, the outputs a resumed run already delivered dropped. */
void zp__ckpt_arm(const zp__ckpt *c, zp__edge *first);

/* Writes the token of the cut marker m made (its join stages' slots
 * filled for it), or (done, m NULL) of a finished run, into out. */
void zp__ckpt_token(const zp__ckpt *c, bool done, const zp__mark *m,
                    char out[ZP__TOKEN_MAX]);

/*
 * The run's outputs (`out`, the caller's receiver) reached a marker: hands
 * the caller its token, passes the marker, and lets the first edge mark
 * again. On the thread that reads the outputs. Returns 0, or ZP_ETASK
 * with *why (malloc'ed) when the caller did not commit it.
 */
int zp__ckpt_passed(zp__ckpt *c, zp__rx *out, zp__edge *first, char **why);

/* The run succeeded and its outputs ended: hands the caller the finished
 * token, then removes the spill files. Returns as zp__ckpt_passed(). */
int zp__ckpt_finished(zp__ckpt *c, char **why);

#endif
