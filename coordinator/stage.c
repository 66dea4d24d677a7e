/* SPDX-License-Identifier: MIT */
/*
 * The kinds of stage, see stage.h. A new kind of stage is a file that
 * implements zp__stage_ops and a line in this table. Part of coordinator.
 */
#include "coordinator/stage.h"

#include <assert.h>
#include <stddef.h>

#include "coordinator/procstage.h"
#include "coordinator/remstage.h"

/* Every stage of a valid pipeline is claimed by exactly one of them. */
static const zp__stage_ops *const kinds[] = {
    &zp__process_stage_ops,
    &zp__remote_stage_ops,
    &zp__async_stage_ops,
    &zp__thread_stage_ops,
};

const zp__stage_ops *zp__stage_kind(const zp__stage_def *def)
{
    const zp__stage_ops *kind = NULL;
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (kinds[i]->claims(def)) {
            assert(kind == NULL); /* the kinds' claims never overlap */
            kind = kinds[i];
        }
    assert(kind != NULL); /* and leave no valid stage out */
    return kind != NULL ? kind : &zp__thread_stage_ops;
}
