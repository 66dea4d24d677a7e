/* SPDX-License-Identifier: MIT */
/*
 * The kinds of stage, see stage.h. A new kind of stage is a file that
 * implements zp__stage_ops and a line in this table. Part of coordinator.
 */
#include "coordinator/stage.h"

#include <stddef.h>

#include "coordinator/dispatch.h"

/* Asked in order; the last one takes every stage the others left. */
static const zp__stage_ops *const kinds[] = {
    &zp__dispatch_stage_ops,
    &zp__async_stage_ops,
    &zp__thread_stage_ops,
};

const zp__stage_ops *zp__stage_kind(const zp__stage_def *def)
{
    size_t n = sizeof kinds / sizeof kinds[0];
    for (size_t i = 0; i + 1 < n; i++)
        if (kinds[i]->claims(def))
            return kinds[i];
    return kinds[n - 1];
}
