/* SPDX-License-Identifier: MIT */
/*
 * The JSON codec: JSON text to msgpack (json_read.c) and back
 * (json_write.c), the library's one JSON implementation. JSON enters where
 * a run starts (run arguments, bind values) and, in the zpipe CLI, once per
 * item read from a JSON lines input; msgpack leaves as JSON once per output
 * the CLI writes, and once per run in the statistics file. Part of core;
 * never touches sockets, never depends on the current locale.
 *
 * The mapping, documented for users in docs/cli.md:
 *   null, true, false, strings  <->  nil, boolean, str
 *   integers                    <->  positive / negative integers, exactly,
 *                                    from -2^63 to 2^64-1; integers beyond
 *                                    become doubles
 *   numbers with '.', 'e', 'E'  <->  float64 (float32 is written too)
 *   arrays, objects             <->  arrays, maps
 *   {"$bin": "BASE64"}          <->  bin
 *   {"$ext": [TYPE, "BASE64"]}  <->  ext (TYPE from -128 to 127)
 * Writing, a map key that is not a string is written as a string of its
 * JSON text (in which keys are written as their own text, quoted only when
 * they are strings, so that nested keys are escaped once and the text stays
 * linear in the value's size), invalid UTF-8 in a str as U+FFFD, and NaN or
 * an infinity as null: JSON has no way to say them.
 */
#ifndef ZP_CORE_JSON_H
#define ZP_CORE_JSON_H

#include "zpipe.h"

/* The deepest nesting of arrays and objects that JSON text may have: what
 * msgpack-c can unpack again, the protocol's limit. The writer counts the
 * containers of map keys too, as msgpack-c does. */
#define ZP__JSON_MAX_DEPTH 32

/* Where and why JSON text was refused. */
typedef struct zp__json_error {
    int line;           /* 1-based                                       */
    int column;         /* 1-based, in characters (UTF-8 sequences)      */
    const char *reason; /* static text, e.g. "expected ',' or ']'"       */
} zp__json_error;

/*
 * Reads the JSON text [json, json + len) (one value, with optional
 * whitespace around it) into *out, whose memory (strings included) lives in
 * `zone`. Returns 0, ZP_EINVAL with *e filled in (when e != NULL), or
 * ZP_ENOMEM. What the zone holds of a failed read stays until the zone is
 * freed or cleared. Never reads past `len`; NUL bytes are ordinary
 * (invalid) characters. Thread-safe.
 */
int zp__json_read(const char *json, size_t len, msgpack_zone *zone,
                  msgpack_object *out, zp__json_error *e);

/*
 * Packs run arguments: NULL or blank text is an empty array, a JSON array is
 * packed as it is, any other JSON value becomes a one-element array.
 * Returns 0, or ZP_EINVAL with *err (if err != NULL) set to a malloc'ed
 * message naming the line, column and reason, or ZP_ENOMEM. Nothing is
 * packed on failure.
 */
int zp__json_pack_args(const char *json, msgpack_packer *pk, char **err);

/*
 * Converts JSON text into a msgpack object whose memory (strings included)
 * lives in `zone`. Errors as zp__json_pack_args.
 */
int zp__json_to_object(const char *json, msgpack_zone *zone,
                       msgpack_object *out, char **err);

/*
 * Appends the JSON text of `o` (one line: no newline is ever written) to
 * `sb`, in time and space linear in the size of `o`. Returns 0, ZP_EINVAL
 * when `o` nests arrays and maps (keys included) deeper than
 * ZP__JSON_MAX_DEPTH, or ZP_ENOMEM (on error `sb` holds a partial text; its
 * size before the call is where the text began). Thread-safe.
 */
int zp__json_write(const msgpack_object *o, msgpack_sbuffer *sb);

/*
 * As zp__json_write, laid out for people to read: each element of a
 * non-empty array or object on a line of its own, indented by `indent`
 * spaces (1 to 16) per level of nesting, and ": " after each key, as
 * jansson's JSON_INDENT lays it out. No newline follows the text.
 */
int zp__json_write_indented(const msgpack_object *o, int indent,
                            msgpack_sbuffer *sb);

#endif
