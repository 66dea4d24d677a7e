/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target of the spec parser (core/spec.c), which reads the
 * pipeline a user types on the zpipe command line. Any text must give
 * either a pipeline or an error message, never a crash: the message quotes
 * the spec on its second line and points a caret into it on its third, and
 * a pipeline has a stage per '|'-separated task, each with a registered
 * task's name (or, for a mode=remote stage, any name) and options the
 * pipeline module accepted: a pool, if any, well named and on a remote
 * stage.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pipeline.h"
#include "tests/fuzz/check.h"

/* Tasks to name in specs; the parser never runs them. */
ZP_TASK(square)
{
    (void)call;
    return 0;
}

ZP_TASK(range)
{
    (void)call;
    return 0;
}

ZP_ASYNC_TASK(fetch)
{
    (void)call;
    (void)loop;
}

/* The error's caret points into the quoted spec: its column is at most
 * one past the spec's last character. */
static void check_message(const char *msg)
{
    const char *spec = strchr(msg, '\n');
    CHECK(spec != NULL && strncmp(spec, "\n  ", 3) == 0);
    spec += 3;
    const char *caret_line = strchr(spec, '\n');
    CHECK(caret_line != NULL);
    const char *caret = strchr(caret_line, '^');
    CHECK(caret != NULL && strchr(caret, '\n') == NULL);
    CHECK(caret - caret_line - 3 <= caret_line - spec);
}

static void check_pipeline(const zp_pipeline *p, const char *spec)
{
    size_t bars = 0;
    CHECK(p->error == NULL && p->n >= 1);
    for (const char *s = spec; *s != '\0'; s++)
        bars += *s == '|';
    CHECK(p->n <= bars + 1); /* bind JSON may hold more bars */
    for (size_t i = 0; i < p->n; i++) {
        const zp__stage_def *s = &p->stages[i];
        CHECK((s->fn == zp_lookup(s->name)) &&
              (s->afn == zp_lookup_async(s->name)));
        CHECK(s->opts.workers >= 1 && s->opts.throttle >= 1);
        CHECK((s->bind_json == NULL) == (zp__stage_bound(s) == NULL));
        CHECK(s->fn != NULL || s->afn != NULL || s->opts.mode == ZP_REMOTE);
        CHECK(s->opts.pool == NULL ||
              (s->opts.mode == ZP_REMOTE &&
               zp__pool_name_ok(s->opts.pool, strlen(s->opts.pool))));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *spec = malloc(size + 1);
    char *err = NULL;
    CHECK(spec != NULL);
    memcpy(spec, data, size);
    spec[size] = '\0';
    zp_pipeline *p = zp_parse(spec, &err);
    CHECK(p == NULL || err == NULL);
    if (p != NULL)
        check_pipeline(p, spec);
    else if (err != NULL) /* NULL only when out of memory */
        check_message(err);
    zp_pipeline_free(p);
    free(err);
    free(spec);
    return 0;
}
