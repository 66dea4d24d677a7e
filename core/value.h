/* SPDX-License-Identifier: MIT */
/*
 * Values: items are msgpack values, and where they meet text they are JSON.
 * The JSON codec itself is core/json.h (its mapping, its functions); this
 * header gives it to the files that speak of values. Part of core; nothing
 * here touches sockets.
 */
#ifndef ZP_CORE_VALUE_H
#define ZP_CORE_VALUE_H

#include "core/json.h"

#endif
