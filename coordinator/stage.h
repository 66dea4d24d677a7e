/* SPDX-License-Identifier: MIT */
/*
 * The kinds of stage a run can hold, and which one runs a given stage.
 * Part of coordinator: the one place that knows every kind.
 */
#ifndef ZP_COORDINATOR_STAGE_H
#define ZP_COORDINATOR_STAGE_H

#include "worker/stage.h"

/* The ops of the one kind that runs stages like `def` (a stage of a
 * valid pipeline). Never NULL. */
const zp__stage_ops *zp__stage_kind(const zp__stage_def *def);

#endif
