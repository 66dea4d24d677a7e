/* SPDX-License-Identifier: MIT */
/*
 * Process stages, see procstage.h: what only they do, as hooks of the
 * dispatcher (dstate.h): spawn every worker process from the dispatcher's
 * thread, reap the dead ones and spawn others in their place (failing the
 * stage when they keep dying before saying HELLO), kill a worker given up
 * on, and say BYE to them all when the run is over. Part of coordinator;
 * the hooks run on the dispatcher's thread.
 */
#include "coordinator/procstage.h"

#include <assert.h>
#include <signal.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "coordinator/dispatch.h"
#include "coordinator/dstate.h"
#include "coordinator/roster.h"
#include "coordinator/spawn.h"

typedef struct pstage {
    zp__dispatch d;     /* first: the core's */
    zp__children *kids; /* owned; the worker processes           */
    bool *greeted;      /* owned; the slot's child said HELLO    */
    int unborn;         /* children in a row that died before HELLO */
} pstage;

static pstage *pstage_of(zp__dispatch *d)
{
    return (pstage *)d;
}

/* Spawns the worker of slot i, failing the run when it cannot. */
static void spawn(zp__dispatch *d, int i)
{
    char *why = NULL;
    if (zp__children_spawn(pstage_of(d)->kids, i, &why) != 0)
        fail_run(d, zp__strdupf("task '%s': %s", task(d),
                                why ? why : "cannot start a worker process"));
    free(why);
}

/* Spawned by the dispatcher's thread: a child dies with the thread that
 * spawned it (PR_SET_PDEATHSIG), and this one lasts as long as the stage. */
static void proc_begin(zp__dispatch *d)
{
    for (int i = 0; i < zp__children_count(pstage_of(d)->kids) && !stopping(d);
         i++)
        spawn(d, i);
}

/* A child of slot i ended: replaced, unless too many in a row ended
 * before saying HELLO (then they cannot start: the stage fails). */
static void replace(zp__dispatch *d, int i, pid_t pid, int status)
{
    pstage *ps = pstage_of(d);
    ps->unborn = ps->greeted[i] ? 0 : ps->unborn + 1;
    ps->greeted[i] = false;
    if (ps->unborn >= MAX_UNBORN) {
        char *how = zp__describe_status(pid, status);
        fail_run(d, zp__strdupf("task '%s': worker processes cannot "
                                "start: %d in a row ended before saying "
                                "HELLO; the last: %s",
                                task(d), ps->unborn, how ? how : "?"));
        free(how);
    } else if (!stopping(d)) {
        zp__count(&d->restarts, 1);
        spawn(d, i);
    }
}

/* Reaps dead children and replaces them. A dead child's batches are given
 * up on a little later (supervise.h), once what it sent before it died
 * has been read: a batch it finished is no culprit. */
static void proc_tick(zp__dispatch *d, uint64_t now)
{
    int i, status;
    pid_t pid;
    (void)now;
    while ((i = zp__children_reap(pstage_of(d)->kids, &pid, &status)) >= 0) {
        zp__member *m = zp__roster_by_pid(d, (uint32_t)pid);
        if (m != NULL && m->death == NULL) {
            m->death = zp__describe_status(pid, status);
            m->died = zp__now_ns();
        }
        replace(d, i, pid, status);
    }
}

static void proc_joined(zp__dispatch *d, const zp__member *m)
{
    pstage *ps = pstage_of(d);
    int slot = zp__children_slot(ps->kids, (pid_t)m->pid);
    if (slot >= 0)
        ps->greeted[slot] = true;
}

static void proc_kill(zp__dispatch *d, const zp__member *m)
{
    if (zp__children_slot(pstage_of(d)->kids, (pid_t)m->pid) >= 0)
        kill((pid_t)m->pid, SIGKILL); /* proc_tick replaces it */
}

/* Process workers stay only for this run. */
static void proc_end(zp__dispatch *d)
{
    zp__roster_bye(d, "run over");
}

static void proc_fini(zp__dispatch *d)
{
    pstage *ps = pstage_of(d);
    zp__children_destroy(&ps->kids);
    free(ps->greeted);
    ps->greeted = NULL;
}

static const zp__dkind proc_hooks = {.begin = proc_begin,
                                     .tick = proc_tick,
                                     .joined = proc_joined,
                                     .kill = proc_kill,
                                     .end = proc_end,
                                     .fini = proc_fini};

static bool proc_claims(const zp__stage_def *def)
{
    return def->opts.mode == ZP_PROCESS;
}

static void proc_shape(const zp__stage_def *def, size_t index,
                       zp__stage_shape *out)
{
    (void)index;
    zp__dispatch_shape(def->opts.workers, out);
    out->private_dir = true; /* for its endpoint */
}

/* Binds the stage's endpoint in the run's private folder and makes its
 * children's slots. */
static int set_up(pstage *ps, char **why)
{
    const zp__stage_cfg *cfg = &ps->d.cfg;
    int n = cfg->def->opts.workers;
    assert(cfg->private_dir != NULL); /* the shape asks for it */
    char *endpoint = zp__strdupf("ipc://%s/s%u", cfg->private_dir, cfg->index);
    if (endpoint == NULL)
        return ZP_ENOMEM;
    int rc = 0;
    ps->d.hub = zp__hub_new(cfg->zctx, endpoint, NULL, NULL, why);
    if (ps->d.hub == NULL)
        rc = ZP_EIO;
    else if ((ps->kids = zp__children_new(n, endpoint)) == NULL ||
             (ps->greeted = zp__calloc((size_t)n, sizeof(bool))) == NULL)
        rc = ZP_ENOMEM;
    free(endpoint);
    return rc;
}

/* On failure the stage in *out, if any, is safe to stop, join and
 * destroy: its thread never started. */
static int proc_start(const zp__stage_cfg *cfg, zp__stage **out, char **why)
{
    pstage *ps = (pstage *)zp__dispatch_new(sizeof *ps, &zp__process_stage_ops,
                                            &proc_hooks, cfg);
    *out = (zp__stage *)ps;
    if (ps == NULL)
        return ZP_ENOMEM;
    int rc = set_up(ps, why);
    return rc != 0 ? rc : zp__dispatch_run(&ps->d, why);
}

const zp__stage_ops zp__process_stage_ops = {.kind = "worker processes",
                                             .claims = proc_claims,
                                             .shape = proc_shape,
                                             .start = proc_start,
                                             ZP__DISPATCH_OPS};
