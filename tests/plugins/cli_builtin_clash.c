/* SPDX-License-Identifier: MIT */
/* A plugin with a task named as a built-in task of the CLI (identity). */
#include <zpipe.h>

ZP_TASK(identity)
{
    return zp_emit_nil(call);
}
