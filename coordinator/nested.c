/* SPDX-License-Identifier: MIT */
/*
 * Nested pipelines: zp_task_pipeline() makes a stage whose task runs a
 * whole inner pipeline per item, with [item] as the inner run's arguments.
 * Part of coordinator, since the task starts runs. The inner run stops
 * when the outer one does.
 */
#include <stdlib.h>
#include <string.h>

#include "coordinator/run.h"
#include "core/alloc.h"
#include "core/error.h"
#include "worker/call.h"

/* Emits the inner outputs one by one (branch) or as one array. */
static int forward(zp_call *c, zp_run *inner, bool branch)
{
    const msgpack_object *o;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    uint32_t n = 0;
    int rc = 0;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    while (rc == 0 && zp_run_next(inner, &o)) {
        if (branch)
            rc = zp_emit_obj(c, o);
        else if (msgpack_pack_object(&pk, *o) != 0)
            rc = zp_fail(c, "out of memory");
        else
            n++;
    }
    if (rc == 0 && !branch) {
        msgpack_packer *out = zp_out(c);
        msgpack_pack_array(out, n);
        out->callback(out->data, sb.data, sb.size);
        rc = zp_emit(c);
    }
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

static int run_nested(zp_call *c)
{
    const zp__stage_def *def = zp__call_stage(c);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_object(&pk, *zp_input(c));
    zp_run *inner = zp__run_start_packed(def->inner, sb.data, sb.size, NULL,
                                         zp__call_run(c));
    msgpack_sbuffer_destroy(&sb);
    if (inner == NULL)
        return zp_fail(c, "out of memory");
    int rc = forward(c, inner, def->opts.branch);
    if (rc != 0)
        zp_cancel(inner);
    int irc = zp_finish(inner);
    if (rc == 0 && irc != 0)
        rc = zp_fail(c, "%s", zp_error(inner));
    zp_run_free(inner);
    return rc;
}

/* "pipeline(a | b)" from the inner stages' names. */
static char *nested_name(const zp_pipeline *inner)
{
    size_t len = sizeof "pipeline()";
    for (size_t i = 0; i < inner->n; i++)
        len += strlen(inner->stages[i].name) + 3;
    char *name = zp__malloc(len);
    if (name == NULL)
        return NULL;
    strcpy(name, "pipeline(");
    for (size_t i = 0; i < inner->n; i++) {
        if (i > 0)
            strcat(name, " | ");
        strcat(name, inner->stages[i].name);
    }
    strcat(name, ")");
    return name;
}

zp_pipeline *zp_task_pipeline_new(zp_pipeline *inner, const zp_opts *opts)
{
    const char *why = inner ? zp_pipeline_error(inner) : "it is NULL";
    char *name = why == NULL ? nested_name(inner) : NULL;
    char *msg = why ? zp__strdupf("%s", why) : NULL;
    zp_pipeline *p = zp__pipeline_stage(name ? name : "pipeline", run_nested,
                                        NULL, opts, inner);
    if (msg != NULL)
        zp__pipeline_fail(p, "task '%s': the nested pipeline is invalid: %s",
                          name ? name : "pipeline", msg);
    free(msg);
    free(name);
    return p;
}
