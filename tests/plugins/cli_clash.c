/* SPDX-License-Identifier: MIT */
/*
 * A plugin with a task named as one of cli_tasks.c's (double_it) but doing
 * something else: loading both must be an error, whichever comes first.
 */
#include <zpipe.h>

ZP_TASK(double_it)
{
    return zp_emit_int(call, zp_input(call)->via.i64 * 3);
}
