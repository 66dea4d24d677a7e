/* SPDX-License-Identifier: MIT */
/*
 * The built-in tasks of the zpipe CLI, so that it is useful without any
 * plugin: range, lines, exec, sleep (async) and identity; docs/cli.md
 * describes them. Part of cli/, the zpipe program, above every layer of
 * the library and compiled into the zpipe executable only: programs that link
 * libzpipe do not get tasks under these names.
 */
#ifndef ZP_CLI_BUILTINS_H
#define ZP_CLI_BUILTINS_H

#include "zpipe.h"

/*
 * Registers the built-in tasks. Call it once, first thing in main(), in
 * every process of the CLI (worker processes too: they find tasks by
 * name). Returns 0, or ZP_EINVAL when a name was already taken.
 */
int zp__builtins_register(void);

/*
 * How many items the built-in range emits for the run arguments `args`
 * (a msgpack array, as its input): true with *count, false for arguments
 * it refuses.
 */
bool zp__range_items(const msgpack_object *args, uint64_t *count);

/*
 * Kills at once (SIGKILL) every command that exec is running, with all the
 * processes of its process group: for a program that exits without
 * waiting for its run. Thread-safe.
 */
void zp__exec_kill_all(void);

#endif
