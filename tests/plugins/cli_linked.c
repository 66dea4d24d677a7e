/* SPDX-License-Identifier: MIT */
/*
 * A plugin that links libzpipe.so, as a plugin built against an installed
 * zpipe with `pkg-config --libs zpipe` does: its zp_* calls must still
 * reach the zpipe executable's registry, so that its task can run.
 */
#include <zpipe.h>

ZP_TASK(linked_square)
{
    int64_t x = zp_input(call)->via.i64;
    return zp_emit_int(call, x * x);
}
