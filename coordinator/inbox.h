/* SPDX-License-Identifier: MIT */
/*
 * A dispatched stage's inbox: the messages its workers send through the
 * stage's hub, decoded, checked and acted on (the ledger's batches done or
 * failed, the worker table's members joining, ready, dropped or gone).
 * Part of coordinator; the dispatcher's loop (dispatch.c) calls it, and
 * it calls only the ledger and the worker table.
 */
#ifndef ZP_COORDINATOR_INBOX_H
#define ZP_COORDINATOR_INBOX_H

#include "coordinator/dstate.h"

/* Acts on one message from the hub; `zone` is scratch for decoding it.
 * On the dispatcher's thread. */
void zp__inbox_take(zp__dispatch *d, const zp__hub_msg *hm, msgpack_zone *zone);

#endif
