/* SPDX-License-Identifier: MIT */
/*
 * The workers of a dispatched stage, see dstate.h: who joined (HELLO),
 * who is alive (heartbeats), who died or went silent or ran past the
 * timeout, whose batches go back to the waiting list and which of them
 * are to blame, and the children of a process stage, reaped and
 * replaced. Part of coordinator; runs on the dispatcher's thread.
 */
#include "coordinator/dstate.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ctype.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"

int zp__dispatch_send(zp__dispatch *d, dworker *w)
{
    int rc = zp__hub_send(d->hub, w->id, w->id_len, d->sb.data, d->sb.size);
    msgpack_sbuffer_clear(&d->sb);
    return rc;
}

dworker *zp__dispatch_find_worker(zp__dispatch *d, const void *id, size_t len)
{
    return zp__idmap_get(&d->ids, id, len);
}

/* Counts the workers that can take items, for the statistics. */
static void note_workers(zp__dispatch *d)
{
    int alive = 0;
    for (size_t i = 0; i < d->nworkers; i++)
        alive += !d->workers[i]->gone && d->workers[i]->has_task;
    atomic_store(&d->alive, alive);
}

/*
 * Whether batch b was running on its worker, rather than waiting in the
 * worker's queue: a worker runs its batches in the order they were sent,
 * `threads` at a time.
 */
static bool running(const zp__dispatch *d, const dbatch *b)
{
    uint32_t before = 0;
    for (const zp__qnode *n = d->inflight.head; n != NULL; n = n->next) {
        const dbatch *o = zp__dbatch_of((zp__qnode *)n);
        before += o->w == b->w && o->order < b->order;
    }
    return before < b->w->threads;
}

/* A batch that was running when its worker crashed: split if it holds
 * several items (one of them is the culprit), run again, or — an item
 * that crashed workers more than retries + 1 times — fail or skip. */
static void blame(zp__dispatch *d, dbatch *b, const char *why)
{
    const zp_opts *o = &d->cfg.def->opts;
    if (b->n > 1) {
        if (zp__dispatch_split(d, b) != 0)
            fail_run(d, zp__strdupf("task '%s': out of memory", task(d)));
    } else if (++b->kills <= (uint32_t)o->retries + 1) {
        zp__count(&d->stats.retried, 1);
        zp__dispatch_enqueue(d, b, true);
    } else if (o->on_error == ZP_SKIP) {
        zp__count(&d->stats.failed, 1);
        zp__count(&d->stats.skipped, 1);
        zp__dispatch_deliver(d, b);
    } else {
        zp__count(&d->stats.failed, 1);
        fail_run(d, zp__strdupf("task '%s' failed on item %llu: %s", task(d),
                                (unsigned long long)b->seq, why));
        zp__dbatch_free(b);
    }
}

/*
 * A worker is gone: its batches go back to the waiting list. With `why`
 * (a crash or a timeout; consumed) the batches it was running are blamed;
 * those still waiting in its queue are not. A worker that left or stopped
 * answering blames none: nothing says its items were at fault.
 */
void zp__dispatch_lose_worker(zp__dispatch *d, dworker *w, char *why)
{
    zp__queue mine = {NULL, NULL};
    for (zp__qnode *n = d->inflight.head; n != NULL; n = n->next)
        if (zp__dbatch_of(n)->w == w)
            zp__dbatch_of(n)->blamed =
                why != NULL && running(d, zp__dbatch_of(n));
    dbatch *prev = NULL;
    for (zp__qnode *n = d->inflight.head, *next; n != NULL; n = next) {
        next = n->next;
        dbatch *b = zp__dbatch_of(n);
        if (b->w != w) {
            prev = b;
            continue;
        }
        zp__dispatch_unlink_inflight(d, prev, b); /* to `mine`, oldest first */
        msgpack_sbuffer_clear(&b->out);
        zp__queue_push(&mine, &b->node);
    }
    w->gone = true;
    zp__tally_leave(&d->tally, w->tally, zp__now_ns());
    w->tally = -1;
    note_workers(d);
    for (dbatch *b; (b = zp__dbatch_of(zp__queue_pop(&mine))) != NULL;)
        if (b->blamed)
            blame(d, b, why);
        else
            zp__dispatch_enqueue(d, b, true);
    free(why);
}

void zp__dispatch_on_hello(zp__dispatch *d, const zp__hub_msg *hm,
                           const zp__msg *m)
{
    dworker *w = zp__dispatch_find_worker(d, hm->id, hm->id_len);
    if (w != NULL && !w->gone && w->pid == m->pid) {
        /* The same process again, answering a HELLO of ours sent before
         * its first arrived: it lost nothing. */
        w->heard = zp__now_ns();
        return;
    }
    if (w != NULL && !w->gone)
        zp__dispatch_lose_worker(d, w, NULL); /* another process on that link */
    if (w == NULL) {
        dworker **v = zp__realloc(d->workers, (d->nworkers + 1) * sizeof *v);
        w = v ? zp__calloc(1, sizeof *w) : NULL;
        if (w == NULL || hm->id_len > sizeof w->id) {
            free(w);
            if (v != NULL)
                d->workers = v;
            return;
        }
        d->workers = v;
        memcpy(w->id, hm->id, hm->id_len);
        w->id_len = hm->id_len;
        if (zp__idmap_put(&d->ids, w->id, w->id_len, w) != 0) {
            free(w);
            return;
        }
        d->workers[d->nworkers++] = w;
    }
    free(w->death);
    /* A claim of capacity is believed up to MAX_THREADS threads; the items
     * it is trusted with grow as it returns them (slow start). */
    uint32_t threads = m->credit / ZP__PROTO_CREDIT_PER_THREAD;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    uint32_t credit = m->credit;
    if (credit > (uint32_t)MAX_THREADS * ZP__PROTO_CREDIT_PER_THREAD)
        credit = (uint32_t)MAX_THREADS * ZP__PROTO_CREDIT_PER_THREAD;
    zp__dispatch_unready(d, w);
    *w = (dworker){.id_len = w->id_len,
                   .pid = m->pid,
                   .credit = credit,
                   .threads = threads,
                   .granted =
                       (threads < NEW_THREADS ? threads : NEW_THREADS) + 1,
                   .rtt_cur = UINT64_MAX,
                   .rtt_prev = UINT64_MAX,
                   .rtt_epoch = zp__now_ns(),
                   .has_task = zp__msg_serves(m, task(d), pool(d))};
    memcpy(w->id, hm->id, hm->id_len);
    w->tally = zp__tally_join(&d->tally, m->str, m->str_len, zp__now_ns());
    size_t n =
        m->str_len < sizeof w->name - 1 ? m->str_len : sizeof w->name - 1;
    for (size_t i = 0; i < n; i++)
        w->name[i] = isprint((unsigned char)m->str[i]) ? m->str[i] : '?';
    int slot = zp__children_slot(d->kids, (pid_t)m->pid);
    if (slot >= 0)
        d->greeted[slot] = true;
    w->heard = w->beat = zp__now_ns();
    note_workers(d);
    zp__dispatch_offer(d, w);
}

static dworker *worker_of_pid(zp__dispatch *d, pid_t pid)
{
    for (size_t i = 0; i < d->nworkers; i++)
        if (!d->workers[i]->gone && d->workers[i]->pid == (uint32_t)pid)
            return d->workers[i];
    return NULL;
}

/* Spawns the worker of slot i, failing the run when it cannot. */
void zp__dispatch_spawn(zp__dispatch *d, int i)
{
    char *why = NULL;
    if (zp__children_spawn(d->kids, i, &why) != 0)
        fail_run(d, zp__strdupf("task '%s': %s", task(d),
                                why ? why : "cannot start a worker process"));
    free(why);
}

/* Reaps dead children, gives up on their batches, and replaces them. */
static void reap(zp__dispatch *d)
{
    int i, status;
    pid_t pid;
    while (d->kids != NULL &&
           (i = zp__children_reap(d->kids, &pid, &status)) >= 0) {
        /* Its batches are given up on a little later, once what it sent
         * before it died has been read: a batch it finished is no
         * culprit. */
        dworker *w = worker_of_pid(d, pid);
        if (w != NULL && w->death == NULL) {
            w->death = zp__describe_status(pid, status);
            w->died = zp__now_ns();
        }
        d->unborn = d->greeted[i] ? 0 : d->unborn + 1;
        d->greeted[i] = false;
        if (d->unborn >= MAX_UNBORN) {
            char *how = zp__describe_status(pid, status);
            fail_run(d, zp__strdupf("task '%s': worker processes cannot "
                                    "start: %d in a row ended before saying "
                                    "HELLO; the last: %s",
                                    task(d), d->unborn, how ? how : "?"));
            free(how);
        } else if (!stopping(d)) {
            zp__count(&d->restarts, 1);
            zp__dispatch_spawn(d, i);
        }
    }
}

static void kill_worker(zp__dispatch *d, dworker *w, char *why)
{
    if (zp__children_slot(d->kids, (pid_t)w->pid) >= 0)
        kill((pid_t)w->pid, SIGKILL); /* reap() replaces it */
    zp__dispatch_lose_worker(d, w, why);
}

/* The first in-flight batch that ran past the timeout, or NULL. */
static dbatch *overdue(zp__dispatch *d, uint64_t now, uint64_t timeout)
{
    for (zp__qnode *n = d->inflight.head; n != NULL; n = n->next) {
        dbatch *b = zp__dbatch_of(n);
        /* A batch's clock starts when its worker could start it. */
        uint64_t start = b->w->done > b->sent ? b->w->done : b->sent;
        if (now - start > timeout * b->n && running(d, b))
            return b;
    }
    return NULL;
}

/* Heartbeats out; workers unheard for too long, or stuck on an item past
 * the timeout, are given up on. */
void zp__dispatch_drop_worker(zp__dispatch *d, dworker *w, const char *rule)
{
    static zp__ratelog broke = ZP__RATELOG_INIT;
    zp__ratelog_say(&broke,
                    "task '%s': dropped worker %s (pid %u), which broke the "
                    "protocol: %s; its items run elsewhere",
                    task(d), w->name, w->pid, rule);
    kill_worker(d, w, NULL);
}

/*
 * Whether a worker holds batches yet has done none for far longer than the
 * stage's batches take (STUCK_TIMES a batch's time, and STUCK_MIN_NS at
 * least): it takes work and keeps it. Known only once a batch is done;
 * a stage with a timeout has its own rule.
 */
static bool stuck(const zp__dispatch *d, const dworker *w, uint64_t now)
{
    if (w->inflight == 0 || d->batch_ns == 0 || d->cfg.def->opts.timeout_ms > 0)
        return false;
    uint64_t since = w->done > w->busy_since ? w->done : w->busy_since;
    uint64_t limit = STUCK_TIMES * d->batch_ns;
    return now - since > (limit > STUCK_MIN_NS ? limit : STUCK_MIN_NS);
}

/* Frees the workers given up on: a message from one of them now finds no
 * worker and is answered with HELLO, as from any stranger. */
static void sweep(zp__dispatch *d)
{
    size_t k = 0;
    for (size_t i = 0; i < d->nworkers; i++) {
        dworker *w = d->workers[i];
        if (w->gone && w->death == NULL) {
            zp__dispatch_unready(d, w);
            zp__idmap_del(&d->ids, w->id, w->id_len);
            free(w);
        } else
            d->workers[k++] = w;
    }
    d->nworkers = k;
}

static void supervise(zp__dispatch *d, uint64_t now)
{
    static zp__ratelog silent = ZP__RATELOG_INIT, held = ZP__RATELOG_INIT;
    uint64_t timeout = (uint64_t)d->cfg.def->opts.timeout_ms * MS;
    for (dbatch *b; timeout > 0 && (b = overdue(d, now, timeout)) != NULL;)
        kill_worker(d, b->w,
                    zp__strdupf("it ran for more than %d ms (timeout)",
                                d->cfg.def->opts.timeout_ms));
    for (size_t i = 0; i < d->nworkers; i++) {
        dworker *w = d->workers[i];
        if (w->gone)
            continue;
        if (w->death != NULL) {
            if (now - w->died > MOURN_NS) {
                char *why = w->death;
                w->death = NULL;
                zp__dispatch_lose_worker(d, w, why);
            }
            continue;
        }
        if (now - w->heard > DEAD_NS) {
            zp__ratelog_say(&silent,
                            "task '%s': worker %s (pid %u) stopped answering; "
                            "its items run again elsewhere",
                            task(d), w->name, w->pid);
            kill_worker(d, w, NULL);
            continue;
        }
        if (stuck(d, w, now)) {
            zp__ratelog_say(
                &held,
                "task '%s': worker %s (pid %u) has held its items "
                "for %llu s, many times longer than the stage's "
                "batches take; they run again elsewhere",
                task(d), w->name, w->pid,
                (unsigned long long)((now - w->busy_since) / 1000 / MS));
            kill_worker(d, w, NULL);
            continue;
        }
        if (now - w->beat >= HEARTBEAT_NS && zp__msg_heartbeat(&d->sb) == 0) {
            w->beat = now;
            if (zp__dispatch_send(d, w) != 0)
                zp__dispatch_lose_worker(d, w, NULL);
        }
    }
}

/* Remote stages fail when no worker came within wait_workers_ms; any
 * stage when, for as long, items waited and none could be sent. */
static void check_waiting_for_workers(zp__dispatch *d, uint64_t now)
{
    bool any = false;
    uint64_t limit = (uint64_t)d->cfg.wait_workers_ms * MS;
    for (size_t i = 0; i < d->nworkers && !any; i++)
        any = !d->workers[i]->gone && d->workers[i]->has_task;
    if (zp__queue_empty(&d->waiting) || !zp__queue_empty(&d->inflight))
        d->progressed = now;
    if (any && limit > 0 && now - d->progressed > limit)
        fail_run(d, zp__strdupf("task '%s': no worker took its items for "
                                "%d ms, though workers serving it are "
                                "connected: none has credit for them",
                                task(d), d->cfg.wait_workers_ms));
    if (any || zp__queue_empty(&d->waiting) || d->kids != NULL) {
        d->no_worker_since = now;
        return;
    }
    if (limit > 0 && now - d->no_worker_since > limit)
        fail_run(d,
                 zp__strdupf("task '%s': no worker serving it%s%s%s "
                             "connected to %s within %d ms",
                             task(d), pool(d) ? " in pool '" : "",
                             pool(d) ? pool(d) : "", pool(d) ? "'" : "",
                             zp__hub_endpoint(d->hub), d->cfg.wait_workers_ms));
}

void zp__dispatch_supervise(zp__dispatch *d, uint64_t now)
{
    reap(d);
    supervise(d, now);
    check_waiting_for_workers(d, now);
    sweep(d);
}
