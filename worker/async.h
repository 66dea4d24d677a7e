/* SPDX-License-Identifier: MIT */
/*
 * Async stages: a stage whose task was registered with ZP_ASYNC_TASK
 * runs on a libuv event loop (the async engine, engine.h), with up to
 * `workers` calls in flight (zp__async_stage_ops in stage.h). Part of
 * worker; like thread stages, it knows nothing of how a run is built and
 * reports failures to the run through zp__runctl.
 *
 * Each async stage owns one loop thread (its single worker): the stage's
 * ZeroMQ sockets belong to that thread, a slow callback in one stage
 * never stalls another, and the cost is one thread per stage, not per
 * item. The input socket is watched through ZMQ_FD with a uv_poll
 * handle, the output side never blocks: outputs go downstream while there
 * are credits, wait in the stage's backlog when there are none (and then
 * no new call starts), and a uv_async handle wakes the loop when credits
 * come back or the run stops.
 */
#ifndef ZP_WORKER_ASYNC_H
#define ZP_WORKER_ASYNC_H

#include "worker/call.h"

#endif
