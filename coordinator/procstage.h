/* SPDX-License-Identifier: MIT */
/*
 * Process stages (mode=process): a dispatched stage (dispatch.h) whose
 * workers are children it spawns (spawn.h), reaps and replaces, that
 * connect to an ipc endpoint of its own in the run's private folder.
 * Part of coordinator.
 */
#ifndef ZP_COORDINATOR_PROCSTAGE_H
#define ZP_COORDINATOR_PROCSTAGE_H

#include "worker/stage.h"

extern const zp__stage_ops zp__process_stage_ops;

#endif
