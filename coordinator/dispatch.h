/* SPDX-License-Identifier: MIT */
/*
 * Dispatched stages: how the coordinator runs a stage whose workers are
 * processes (mode=process: children it spawns and supervises) or remote
 * (mode=remote: processes that connect from elsewhere), as a stage runner
 * (worker/stage.h). To the rest of the run the stage has one worker, its
 * dispatcher thread: it takes the stage's input from its link, sends it in
 * batches to workers over the wire protocol, and sends each batch's
 * outputs on when the batch is done, so every output leaves exactly once
 * even when a crash made a batch run twice. A process stage listens on an
 * ipc endpoint of its own; the remote stages of a run, however many, share
 * the run's listener (transport/listener.h) and so its one endpoint.
 * Part of coordinator.
 */
#ifndef ZP_COORDINATOR_DISPATCH_H
#define ZP_COORDINATOR_DISPATCH_H

#include "worker/stage.h"

typedef struct zp__dispatch zp__dispatch;

extern const zp__stage_ops zp__dispatch_stage_ops;

/* The batches done by each of the stage's workers, by name (tally.h);
 * valid until zp__dispatch_destroy(). */
struct zp__tally *zp__dispatch_tally(zp__dispatch *d);

#endif
