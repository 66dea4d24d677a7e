/* SPDX-License-Identifier: MIT */
/*
 * The timers of a dispatched stage, see supervise.h. Part of coordinator;
 * runs on the dispatcher's thread.
 */
#include "coordinator/supervise.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "coordinator/roster.h"

/* The first in-flight batch that ran past the timeout, or NULL. */
static dbatch *overdue(zp__dispatch *d, uint64_t now, uint64_t timeout)
{
    for (zp__qnode *n = d->ledger.inflight.head; n != NULL; n = n->next) {
        dbatch *b = zp__dbatch_of(n);
        /* A batch's clock starts when its worker could start it. */
        uint64_t start = b->w->done > b->sent ? b->w->done : b->sent;
        if (now - start > timeout * b->n &&
            zp__ledger_running(&d->ledger, b, b->w->threads))
            return b;
    }
    return NULL;
}

/*
 * Whether a member holds batches yet has done none for far longer than
 * the stage's batches take (STUCK_TIMES a batch's time, and STUCK_MIN_NS
 * at least): it takes work and keeps it. Known only once a batch is done;
 * a stage with a timeout has its own rule.
 */
static bool stuck(const zp__dispatch *d, const zp__member *m, uint64_t now)
{
    uint64_t batch_ns = d->roster.batch_ns;
    if (m->inflight == 0 || batch_ns == 0 || d->cfg.def->opts.timeout_ms > 0)
        return false;
    uint64_t since = m->done > m->busy_since ? m->done : m->busy_since;
    uint64_t limit = STUCK_TIMES * batch_ns;
    return now - since > (limit > STUCK_MIN_NS ? limit : STUCK_MIN_NS);
}

/* A member whose process ended: given up on once what it sent before it
 * died has been read (a batch it finished is no culprit). */
static void mourn(zp__dispatch *d, zp__member *m, uint64_t now)
{
    if (now - m->died > MOURN_NS) {
        char *why = m->death;
        m->death = NULL;
        zp__roster_lose(d, m, why);
    }
}

/* Whether member m is given up on: unheard for too long, or stuck. */
static bool give_up(zp__dispatch *d, zp__member *m, uint64_t now)
{
    static zp__ratelog silent = ZP__RATELOG_INIT, held = ZP__RATELOG_INIT;
    if (now - m->heard > DEAD_NS) {
        zp__ratelog_say(&silent,
                        "task '%s': worker %s (pid %u) stopped answering; "
                        "its items run again elsewhere",
                        task(d), m->name, m->pid);
        zp__roster_kill(d, m, NULL);
        return true;
    }
    if (stuck(d, m, now)) {
        zp__ratelog_say(
            &held,
            "task '%s': worker %s (pid %u) has held its items "
            "for %llu s, many times longer than the stage's "
            "batches take; they run again elsewhere",
            task(d), m->name, m->pid,
            (unsigned long long)((now - m->busy_since) / 1000 / ZP__NS_PER_MS));
        zp__roster_kill(d, m, NULL);
        return true;
    }
    return false;
}

/* Heartbeats out; members dead, unheard for too long, stuck on an item
 * past the timeout or holding their items for too long are given up on. */
static void check_members(zp__dispatch *d, uint64_t now)
{
    uint64_t timeout = (uint64_t)d->cfg.def->opts.timeout_ms * ZP__NS_PER_MS;
    for (dbatch *b; timeout > 0 && (b = overdue(d, now, timeout)) != NULL;)
        zp__roster_kill(d, b->w,
                        zp__strdupf("it ran for more than %d ms (timeout)",
                                    d->cfg.def->opts.timeout_ms));
    for (size_t i = 0; i < d->roster.n; i++) {
        zp__member *m = d->roster.members[i];
        if (m->gone)
            continue;
        if (m->death != NULL) {
            mourn(d, m, now);
            continue;
        }
        if (give_up(d, m, now))
            continue;
        if (now - m->beat >= HEARTBEAT_NS && zp__msg_heartbeat(&d->sb) == 0) {
            m->beat = now;
            if (zp__roster_send(d, m) != 0)
                zp__roster_lose(d, m, NULL);
        }
    }
}

/* Fails the stage when, for wait_workers_ms, items waited and none could
 * be sent though members serving it are connected. */
static void check_progress(zp__dispatch *d, uint64_t now)
{
    uint64_t limit = (uint64_t)d->cfg.wait_workers_ms * ZP__NS_PER_MS;
    if (zp__queue_empty(&d->ledger.waiting) ||
        !zp__queue_empty(&d->ledger.inflight))
        d->roster.progressed = now;
    if (limit > 0 && now - d->roster.progressed > limit &&
        zp__roster_serving(d))
        fail_run(d, zp__strdupf("task '%s': no worker took its items for "
                                "%d ms, though workers serving it are "
                                "connected: none has credit for them",
                                task(d), d->cfg.wait_workers_ms));
}

void zp__supervise(zp__dispatch *d, uint64_t now)
{
    /* The kind first: a child reaped now is mourned, with blame, rather
     * than given up on as silent. */
    if (d->kind->tick != NULL)
        d->kind->tick(d, now);
    check_members(d, now);
    check_progress(d, now);
    zp__roster_sweep(d);
}
