/* SPDX-License-Identifier: MIT */
/*
 * Items in and out of the zpipe CLI: lines of a file or stdin become items
 * (JSON lines, or raw text lines as strings), and a run's outputs become
 * JSON lines, raw lines or msgpack on a file descriptor. Part of cli/,
 * the zpipe program, compiled into the zpipe executable only, not into
 * libzpipe.
 * Reading never blocks a run that is stopping: it waits for input at most
 * a tenth of a second between looks at the run's stop flag.
 */
#ifndef ZP_CLI_ITEMS_H
#define ZP_CLI_ITEMS_H

#include "zpipe.h"

/*
 * Emits each line of `path` ("-" is stdin) from the task `call`: as a
 * string, or parsed as JSON when `json` (blank lines are skipped then). A
 * line ends at '\n', and a '\r' before it is dropped. Returns 0 or the
 * task's failure (zp_fail was called, naming the file, line and reason).
 * The task must be a branch task (the caller checks).
 */
int zp__emit_lines(zp_call *call, const char *path, bool json);

/*
 * How many items zp__emit_lines() would emit from `path`, into *count:
 * for `zpipe run --progress` to say how far the input is. One pass over
 * the file at the speed of memchr. Returns 0, ZP_EINVAL when `path` is not
 * a regular file (a pipe, stdin: its size is unknown), or ZP_EIO.
 */
int zp__count_lines(const char *path, bool json, uint64_t *count);

/* The hidden first stage of `zpipe run --input`: its .user is this. */
typedef struct zp__input {
    const char *path; /* borrowed; "-" is stdin                  */
    bool json;        /* JSON lines, or raw lines as strings      */
} zp__input;

/* The task of that stage: zp__emit_lines() of the zp__input in .user. */
int zp__input_task(zp_call *call);

/* What zp__writer writes. */
typedef enum zp__format {
    ZP__FORMAT_JSON,    /* one JSON text per line                        */
    ZP__FORMAT_LINES,   /* strings as they are, other values as JSON, a
                           line each                                     */
    ZP__FORMAT_MSGPACK, /* msgpack values back to back                   */
} zp__format;

/* Outputs buffered on their way to a file descriptor. */
typedef struct zp__writer {
    int fd; /* borrowed */
    zp__format format;
    msgpack_sbuffer buf; /* owned; whole outputs not written yet */
    msgpack_packer pk;   /* into buf */
} zp__writer;

void zp__writer_init(zp__writer *w, int fd, zp__format format);
void zp__writer_fini(zp__writer *w);

/*
 * Appends one output; writes the buffer out once it holds 64 KiB. Returns
 * 0, ZP_ENOMEM, ZP_EINVAL (an output nested deeper than JSON is written),
 * or ZP_EIO with errno set (EPIPE: the reader is gone).
 */
int zp__writer_put(zp__writer *w, const msgpack_object *o);

/* Writes out whatever is buffered. Returns 0 or ZP_EIO with errno set. */
int zp__writer_flush(zp__writer *w);

#endif
