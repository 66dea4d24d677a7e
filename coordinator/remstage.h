/* SPDX-License-Identifier: MIT */
/*
 * Remote stages (mode=remote): a dispatched stage (dispatch.h) whose
 * workers connect from elsewhere to the run's listener, through the hub
 * the run hands it, and stay for the next run. It fails when no worker
 * serving it (in its pool) comes in time. Part of coordinator.
 */
#ifndef ZP_COORDINATOR_REMSTAGE_H
#define ZP_COORDINATOR_REMSTAGE_H

#include "worker/stage.h"

extern const zp__stage_ops zp__remote_stage_ops;

#endif
