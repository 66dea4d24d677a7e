/* SPDX-License-Identifier: MIT */
/*
 * Dispatched stages: how the coordinator runs a stage whose workers are
 * other processes, as a stage runner (worker/stage.h). To the rest of the
 * run the stage has one worker, its dispatcher thread: it takes the
 * stage's input from its link, sends it in batches to workers over the
 * wire protocol, and sends each batch's outputs on when the batch is
 * done, so every output leaves exactly once even when a crash made a
 * batch run twice. This is the core that both kinds share: the loop and
 * the input (dispatch.c), over the timers (supervise.c), the worker table
 * (roster.c) and the batch ledger (ledger.c). Each kind is a file with its
 * stage ops and its hooks (dstate.h): process stages (procstage.h) spawn
 * their workers and listen on an ipc endpoint of their own; remote stages
 * (remstage.h) share the run's listener (transport/listener.h), whose hub
 * the run hands them. Part of coordinator.
 */
#ifndef ZP_COORDINATOR_DISPATCH_H
#define ZP_COORDINATOR_DISPATCH_H

#include "worker/stage.h"

typedef struct zp__dispatch zp__dispatch;
typedef struct zp__dkind zp__dkind;

/* Descriptors of a dispatched stage besides its workers' connections: the
 * hub's listener and sockets, its monitor, the ZAP handler's sockets. */
#define ZP__DISPATCH_HUB_FILES 8

/*
 * A dispatcher of `size` bytes (a kind's struct, which begins with
 * zp__dispatch), zeroed, with stage ops `ops` and hooks `kind` (both
 * static), running as `cfg` says. It takes cfg->hub over, if any, even
 * when it fails. Returns NULL when out of memory.
 */
zp__dispatch *zp__dispatch_new(size_t size, const zp__stage_ops *ops,
                               const zp__dkind *kind, const zp__stage_cfg *cfg);

/* Starts the dispatcher's thread, once d has its hub. Returns 0, or
 * ZP_EIO with *why (malloc'ed). */
int zp__dispatch_run(zp__dispatch *d, char **why);

/* The shape of a dispatched stage with `children` worker processes of
 * its own (0 for a remote stage): one thread, the hub's sockets, and one
 * connection per child. A kind adds what it needs from the run. */
void zp__dispatch_shape(int children, zp__stage_shape *out);

/* The stage ops every kind of dispatched stage shares (worker/stage.h):
 * the core's part of a stage's life. */
void zp__dispatch_stop(zp__stage *s);
void zp__dispatch_join(zp__stage *s);
void zp__dispatch_stats(zp__stage *s, zp_stage_stats *st);
void zp__dispatch_destroy(zp__stage **s);
zp__tally *zp__dispatch_tally(zp__stage *s);

/* Those shared ops, as entries of a kind's zp__stage_ops initialiser. */
#define ZP__DISPATCH_OPS                                          \
    .stop = zp__dispatch_stop, .join = zp__dispatch_join,         \
    .stats = zp__dispatch_stats, .destroy = zp__dispatch_destroy, \
    .tally = zp__dispatch_tally

#endif
