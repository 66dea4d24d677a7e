/* SPDX-License-Identifier: MIT */
/*
 * Runs: building the stages and edges of one run of a pipeline,
 * handing its outputs to the caller, stopping and tearing it down. Part of
 * coordinator, the top layer.
 */
#ifndef ZP_COORDINATOR_RUN_H
#define ZP_COORDINATOR_RUN_H

#include "transport/link.h"
#include "worker/call.h"

/*
 * Starts a run whose arguments are already packed (a msgpack array). The
 * bytes are copied; `o` may be NULL. `parent` (may be NULL) is the run of the
 * call starting this one: a nested run stops when its parent stops. Never NULL.
 */
zp_run *zp__run_start_packed(zp_pipeline *p, const char *args, size_t len,
                             const zp_run_opts *o, zp__runctl *parent);

/*
 * As zp_run_next() without waiting: 1 with the next output in *out (valid
 * until the next call), ZP__AGAIN when none is ready yet, 0 at the end, on
 * failure or cancellation. For a reader that flushes its own output while
 * the run has nothing for it.
 */
int zp__run_poll(zp_run *r, const msgpack_object **out);

/* Forgets a nested run started with a parent, before it is freed. */
void zp__run_detach(zp_run *child, zp__runctl *parent);

/*
 * Removes the private directory of the run's process workers (their ipc
 * endpoints), if it has one, for a process about to end at once without
 * tearing the run down. Safe from any thread once zp_start() returned.
 */
void zp__run_remove_tmpdir(const zp_run *r);

#endif
