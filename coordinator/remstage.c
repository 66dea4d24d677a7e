/* SPDX-License-Identifier: MIT */
/*
 * Remote stages, see remstage.h: what only they do, as hooks of the
 * dispatcher (dstate.h): wait for a first worker serving the stage, and
 * let the workers be once the run is over (they stay for the next run,
 * and what they say now concerns the stage no more). Part of
 * coordinator; the hooks run on the dispatcher's thread.
 */
#include "coordinator/remstage.h"

#include "core/alloc.h"
#include "core/error.h"
#include "coordinator/dispatch.h"
#include "coordinator/dstate.h"
#include "coordinator/roster.h"

typedef struct rstage {
    zp__dispatch d;           /* first: the core's */
    uint64_t no_worker_since; /* waiting for a worker since */
} rstage;

/* Fails the stage when no worker serving it came within wait_workers_ms
 * while items waited. */
static void remote_tick(zp__dispatch *d, uint64_t now)
{
    rstage *rs = (rstage *)d;
    uint64_t limit = (uint64_t)d->cfg.wait_workers_ms * ZP__NS_PER_MS;
    if (zp__roster_serving(d) || zp__queue_empty(&d->ledger.waiting)) {
        rs->no_worker_since = now;
        return;
    }
    if (limit > 0 && now - rs->no_worker_since > limit)
        fail_run(d,
                 zp__strdupf("task '%s': no worker serving it%s%s%s "
                             "connected to %s within %d ms",
                             task(d), pool(d) ? " in pool '" : "",
                             pool(d) ? pool(d) : "", pool(d) ? "'" : "",
                             zp__hub_endpoint(d->hub), d->cfg.wait_workers_ms));
}

/* The workers stay for the next run; the stage closes its share of the
 * listener, and hears nothing more. */
static void remote_end(zp__dispatch *d)
{
    zp__hub_destroy(&d->hub);
}

static const zp__dkind remote_hooks = {.tick = remote_tick, .end = remote_end};

static void remote_shape(const zp__stage_def *def, size_t index,
                         zp__stage_shape *out)
{
    (void)def;
    (void)index;
    zp__dispatch_shape(0, out);
    out->hub = true; /* its share of the run's listener */
}

static bool remote_claims(const zp__stage_def *def)
{
    return def->opts.mode == ZP_REMOTE;
}

/* On failure the stage in *out, if any, is safe to stop, join and
 * destroy: its thread never started. */
static int remote_start(const zp__stage_cfg *cfg, zp__stage **out, char **why)
{
    rstage *rs = (rstage *)zp__dispatch_new(sizeof *rs, &zp__remote_stage_ops,
                                            &remote_hooks, cfg);
    *out = (zp__stage *)rs;
    if (rs == NULL)
        return ZP_ENOMEM;
    rs->no_worker_since = zp__now_ns();
    return zp__dispatch_run(&rs->d, why);
}

const zp__stage_ops zp__remote_stage_ops = {.kind = "remote workers",
                                            .claims = remote_claims,
                                            .shape = remote_shape,
                                            .start = remote_start,
                                            ZP__DISPATCH_OPS};
