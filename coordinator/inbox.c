/* SPDX-License-Identifier: MIT */
/*
 * A dispatched stage's inbox, see inbox.h: what its workers say. Each
 * message is decoded once and checked before anything is done with it: a
 * HELLO goes to the worker table, a stranger is asked to say HELLO, and a
 * member's READY, OUT, DONE, FAIL or BYE is acted on; outputs that break
 * a rule, or a message a worker may not send, drop the worker (its
 * batches run elsewhere) rather than reach the stage's output. Part of
 * coordinator; runs on the dispatcher's thread alone.
 */
#include "coordinator/inbox.h"

#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "coordinator/roster.h"
#include "transport/batch.h"

/*
 * Whether a worker's outputs for batch b keep the rules: well-formed
 * msgpack values, and no more of them than items for a stage that is not
 * a branch (at most one output per item). Checked whole before any of
 * them goes on, so that a batch run again elsewhere delivers each output
 * once. *why says which rule was broken.
 */
static bool outputs_keep_the_rules(const zp__dispatch *d, const dbatch *b,
                                   const char *framed, size_t len,
                                   const char **why)
{
    zp__batch_reader rd = {.data = NULL};
    const char *items;
    size_t size;
    int n = 0;
    if (len > 0 &&
        (zp__batch_open(&rd, framed, len) != 0 ||
         (n = zp__batch_skip(&rd, UINT32_MAX, SIZE_MAX, &items, &size)) < 0 ||
         rd.left > 0)) {
        *why = "malformed outputs";
        return false;
    }
    if (!d->cfg.def->opts.branch && (uint64_t)n > b->n) {
        *why = "more outputs than items, for a task that is not a branch";
        return false;
    }
    return true;
}

static void on_done(zp__dispatch *d, zp__member *w, const zp__msg *m)
{
    static zp__ratelog ignored = ZP__RATELOG_INIT;
    const char *why = NULL;
    dbatch *b = zp__ledger_take(&d->ledger, m->batch, w);
    if (b == NULL) {
        /* Not (or no longer) this worker's: it was given up on, and its
         * batches run elsewhere. */
        zp__ratelog_say(&ignored, "task '%s': ignored a late %s for batch %llu",
                        task(d), zp__msg_type_name(m->type),
                        (unsigned long long)m->batch);
        return;
    }
    /* The common case, a whole batch's outputs in its DONE for an
     * unordered stage, goes straight on once checked. */
    bool direct =
        m->type == ZP__DONE && b->out.size == 0 && !d->cfg.def->opts.ordered;
    if (direct)
        outputs_keep_the_rules(d, b, m->data, m->data_len, &why);
    else if (zp__dbatch_gather(b, m->data, m->data_len) != 0)
        why = "malformed outputs";
    else
        outputs_keep_the_rules(d, b, b->out.data, b->out.size, &why);
    if (why != NULL) { /* back in flight, to be given up with its worker */
        zp__ledger_fly(&d->ledger, b);
        zp__roster_drop(d, w, why);
        return;
    }
    if (m->type == ZP__OUT) { /* more to come: back in flight */
        zp__ledger_fly(&d->ledger, b);
        return;
    }
    zp__roster_done(d, w, b, m->busy);
    w->suspect = false;
    zp__count(&d->stats.retried, m->retried);
    zp__count(&d->stats.skipped, m->skipped);
    zp__count(&d->stats.failed, m->skipped);
    int rc = direct ? zp__ledger_send_outputs(&d->ledger, m->data, m->data_len)
                    : zp__ledger_deliver(&d->ledger, b);
    if (rc != 0 && !stopping(d))
        fail_run(d, zp__strdupf("task '%s': cannot send outputs on", task(d)));
    if (direct)
        zp__dbatch_free(b);
}

static void on_fail(zp__dispatch *d, zp__member *w, const zp__msg *m)
{
    dbatch *b = zp__ledger_take(&d->ledger, m->batch, w);
    if (b == NULL)
        return;
    if (m->seq < b->seq || m->seq - b->seq >= b->n) {
        zp__ledger_fly(&d->ledger, b); /* given up with its worker */
        zp__roster_drop(d, w, "a FAIL naming an item not in its batch");
        return;
    }
    zp__roster_done(d, w, b, m->busy);
    w->suspect = false;
    zp__count(&d->stats.failed, 1);
    fail_run(d,
             zp__strdupf("task '%s' failed on item %llu: %.*s", task(d),
                         (unsigned long long)m->seq, (int)m->str_len, m->str));
    zp__dbatch_free(b);
}

/* Asks a worker the stage does not know (or gave up on) to say HELLO:
 * one of an earlier run, of a coordinator that restarted, or back from a
 * pause or a partition. */
static void ask_hello(zp__dispatch *d, const zp__hub_msg *hm)
{
    if (zp__msg_hello(&d->sb, "coordinator", (uint32_t)getpid(), 1, NULL, 0,
                      NULL) == 0)
        zp__hub_send(d->hub, hm->id, hm->id_len, d->sb.data, d->sb.size);
    msgpack_sbuffer_clear(&d->sb);
}

/* A message of member w, decoded. */
static void on_member_message(zp__dispatch *d, zp__member *w, const zp__msg *m)
{
    w->heard = zp__now_ns();
    bool about_batch =
        m->type == ZP__OUT || m->type == ZP__DONE || m->type == ZP__FAIL;
    if (about_batch && (m->run != d->cfg.run_id || m->stage != d->cfg.index)) {
        zp__roster_drop(d, w, "a message naming another run or stage");
        return;
    }
    if (about_batch && !w->configured) {
        zp__roster_drop(d, w, "outputs of a stage that sent it no batch");
        return;
    }
    if (m->type == ZP__READY) {
        w->credit += m->credit;
        zp__roster_offer(d, w);
    } else if (m->type == ZP__OUT || m->type == ZP__DONE)
        on_done(d, w, m);
    else if (m->type == ZP__FAIL)
        on_fail(d, w, m);
    else if (m->type == ZP__BYE)
        zp__roster_lose(d, w, NULL);
    else if (m->type != ZP__HEARTBEAT)
        zp__roster_drop(d, w, "a message a worker may not send");
}

void zp__inbox_take(zp__dispatch *d, const zp__hub_msg *hm, msgpack_zone *zone)
{
    static zp__ratelog dropped = ZP__RATELOG_INIT;
    zp__msg m;
    const char *why = NULL;
    msgpack_zone_clear(zone);
    zp__member *w = zp__roster_find(d, hm->id, hm->id_len);
    if (zp__msg_decode(hm->body, hm->len, zone, &m, &why) != 0) {
        if (w != NULL && !w->gone)
            zp__roster_drop(d, w, why);
        else
            zp__ratelog_say(&dropped, "task '%s': dropped a message: %s",
                            task(d), why);
        return;
    }
    if (m.type == ZP__HELLO)
        zp__roster_hello(d, hm, &m);
    else if (w == NULL || w->gone) /* whatever it sends is void till HELLO */
        ask_hello(d, hm);
    else
        on_member_message(d, w, &m);
}
