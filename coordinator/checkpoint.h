/* SPDX-License-Identifier: MIT */
/*
 * Checkpoints of a run (durable runs): the options that ask for them, the
 * fingerprint of a pipeline and its arguments, and the tokens a run hands
 * its caller and takes back to resume. The cut itself travels through the
 * run's edges as markers (transport/link.h); this module only says what a
 * marker that went through the whole run means to the caller. Part of
 * coordinator: no threads, no files of its own.
 *
 * A token is "zpipe1.FINGERPRINT.K" (the first stage's first K outputs
 * and nothing after them) or "zpipe1.FINGERPRINT.done" (the run
 * finished), FINGERPRINT 16 hex digits.
 */
#ifndef ZP_COORDINATOR_CHECKPOINT_H
#define ZP_COORDINATOR_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/pipeline.h"
#include "transport/link.h"

/* Bytes of a token, its NUL included, at most. */
#define ZP__TOKEN_MAX 48

/* Embedded in its run; filled by zp__ckpt_init, nothing to free. */
typedef struct zp__ckpt {
    int (*fn)(void *user, const char *token); /* NULL: no checkpoints   */
    void *user;
    uint64_t every_ns; /* between two checkpoints                      */
    uint64_t print;    /* fingerprint of the pipeline and arguments    */
    uint64_t skip;     /* resumed: the first stage's outputs delivered  */
    bool done;         /* resumed from a finished run                   */
} zp__ckpt;

/*
 * Reads the run options' checkpoint fields for pipeline p run on the
 * packed arguments args[0..len). Returns 0, or ZP_EINVAL with *why
 * (malloc'ed) when the resume token is malformed or belongs to another
 * pipeline or other arguments, or when the pipeline holds a stage that
 * checkpoints do not cover.
 */
int zp__ckpt_init(zp__ckpt *c, const zp_run_opts *o, const zp_pipeline *p,
                  const char *args, size_t len, char **why);

/* Sets up the first stage's edge (before any stage starts): markers every
 * so often, the outputs a resumed run already delivered dropped. */
void zp__ckpt_arm(const zp__ckpt *c, zp__edge *first);

/* Writes the token of a cut after the first stage's first `first` outputs,
 * or (done) of a finished run, into out. */
void zp__ckpt_token(const zp__ckpt *c, bool done, uint64_t first,
                    char out[ZP__TOKEN_MAX]);

/*
 * The run's outputs (`out`, the caller's receiver) reached a marker: hands
 * the caller its token, passes the marker, and lets the first edge mark
 * again. On the thread that reads the outputs. Returns 0, or ZP_ETASK
 * with *why (malloc'ed) when the caller did not commit it.
 */
int zp__ckpt_passed(zp__ckpt *c, zp__rx *out, zp__edge *first, char **why);

/* The run succeeded and its outputs ended: hands the caller the finished
 * token. Returns as zp__ckpt_passed(). */
int zp__ckpt_finished(zp__ckpt *c, char **why);

#endif
