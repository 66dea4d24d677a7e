/* SPDX-License-Identifier: MIT */
/*
 * Thread stages: a stage whose task runs on `workers` threads of this
 * process (zp__thread_stage_ops in stage.h), and the loop each of those
 * threads runs. Part of worker: it runs tasks and moves their items
 * through transport links; it knows nothing of how a run is built, and
 * reports failures to the run through zp__runctl. Each thread worker is
 * the host (call.h) of the calls it makes: their direct outputs go into
 * its batch.
 */
#ifndef ZP_WORKER_THREAD_H
#define ZP_WORKER_THREAD_H

#include <pthread.h>

#include "transport/link.h"
#include "worker/call.h"
#include "worker/order.h"

/* One worker thread of a thread stage; defined in thread.c. */
typedef struct zp__thread_worker zp__thread_worker;

#endif
