/* SPDX-License-Identifier: MIT */
/*
 * The state file of `zpipe run --checkpoint STATE` (docs/cli.md,
 * "Checkpoints and resume"): what a checkpoint committed (the run's
 * token, the length of the output file and the number of outputs in it)
 * and what it was committed for (the spec, the arguments, the input, the
 * output file and its format), read back when the same command runs
 * again. One JSON object, written through the library's JSON codec,
 * replaced atomically: a new STATE is written beside it, fsync'd, renamed
 * over it, and its folder fsync'd. Part of cli/, the zpipe program. It
 * never touches the output file nor the run: run.c does.
 */
#ifndef ZP_CLI_CHECKPOINT_H
#define ZP_CLI_CHECKPOINT_H

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>

/* The version of the layout written; a STATE of a higher one is refused. */
#define ZP__CHECKPOINT_VERSION 1

/* zp__checkpoint_read(): there is no STATE yet. */
#define ZP__CHECKPOINT_NONE 1

/* One STATE. Filled by the caller to write it (strings borrowed, zone
 * NULL), or by zp__checkpoint_read() (strings in zone). */
typedef struct zp__checkpoint {
    const char *token;  /* the run's token ("zpipe1.<hex>.<K>|done") */
    bool done;          /* the run finished                          */
    const char *output; /* --output FILE                             */
    const char *format; /* --format: json, lines or msgpack          */
    uint64_t bytes;     /* FILE's committed length                   */
    uint64_t outputs;   /* outputs in those bytes                    */
    const char *spec;   /* SPEC                                      */
    const char *args;   /* ARGS_JSON as given, or NULL               */
    const char *input;  /* --input FILE, or NULL                     */
    msgpack_zone *zone; /* owned; NULL when the strings are borrowed */
} zp__checkpoint;

/*
 * Reads the STATE at `path` into *s (free it with zp__checkpoint_fini).
 * Returns 0; ZP__CHECKPOINT_NONE when there is no such file; or, with
 * *why set (malloc'ed), ZP_EIO when it cannot be read, ZP_ENOTSUP when a
 * newer zpipe wrote it, ZP_EINVAL when it is not a whole STATE (corrupt,
 * truncated, another file), ZP_ENOMEM. Blocks on the file.
 */
int zp__checkpoint_read(const char *path, zp__checkpoint *s, char **why);

/* Frees what zp__checkpoint_read() allocated. Harmless twice. */
void zp__checkpoint_fini(zp__checkpoint *s);

/*
 * Replaces the STATE at `path` by `s`, atomically: PATH.tmp written and
 * fsync'd, renamed over PATH, and PATH's folder fsync'd. On failure (a
 * full disk...) PATH is left as it was and PATH.tmp removed. Returns 0,
 * or ZP_EIO or ZP_ENOMEM with *why set (malloc'ed). Blocks on the disk.
 */
int zp__checkpoint_write(const char *path, const zp__checkpoint *s, char **why);

/* Whether a STATE can be written at `path`: its folder is there and
 * writable (false with errno set). Blocks on the file system. */
bool zp__checkpoint_writable(const char *path);

#endif
