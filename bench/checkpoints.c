/* SPDX-License-Identifier: MIT */
/*
 * Checkpoints for the benchmarks, see checkpoints.h.
 */
#include "checkpoints.h"

static uint64_t taken;

static int count(void *user, const char *token)
{
    (void)user;
    (void)token;
    taken++;
    return 0;
}

zp_run_opts zpb_with_checkpoints(zp_run_opts o, int ms)
{
    o.on_checkpoint = count;
    o.checkpoint_ms = ms;
    return o;
}

uint64_t zpb_checkpoints(void)
{
    uint64_t n = taken;
    taken = 0;
    return n;
}
