/* SPDX-License-Identifier: MIT */
/*
 * Values: JSON text to msgpack, done once where JSON enters (run arguments,
 * bind values). Part of core; uses jansson, never sockets.
 */
#ifndef ZP_CORE_VALUE_H
#define ZP_CORE_VALUE_H

#include "zpipe.h"

/*
 * Packs the JSON text `json` (any JSON value) into `pk`. Returns 0, or
 * ZP_EINVAL with *err (if err != NULL) set to a malloc'ed message naming the
 * line, column and reason, or ZP_ENOMEM.
 */
int zp__json_pack(const char *json, msgpack_packer *pk, char **err);

/*
 * Packs run arguments: NULL or blank text is an empty array, a JSON array is
 * packed as it is, any other JSON value becomes a one-element array.
 * Errors as zp__json_pack.
 */
int zp__json_pack_args(const char *json, msgpack_packer *pk, char **err);

/*
 * Converts JSON text into a msgpack object whose memory (strings included)
 * lives in `zone`. Errors as zp__json_pack.
 */
int zp__json_to_object(const char *json, msgpack_zone *zone,
                       msgpack_object *out, char **err);

#endif
