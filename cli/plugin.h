/* SPDX-License-Identifier: MIT */
/*
 * Plugins of the zpipe CLI: shared libraries whose ZP_TASK and
 * ZP_ASYNC_TASK registrations run when they are loaded. Part of cli/, the
 * zpipe program, compiled into the zpipe executable only.
 *
 * A plugin does not need to link libzpipe: the executable exports the
 * public zp_* functions and every plugin's undefined zp_* symbols resolve
 * against them. (A plugin that does link libzpipe.so works as well: the
 * executable's definitions come first in the lookup, so its registrations
 * still reach the one registry that runs use.) Plugins are loaded with
 * RTLD_LOCAL, so that a task function of one plugin never stands in for a
 * task of another that has the same C name. They are never unloaded: the
 * registry holds pointers into them.
 */
#ifndef ZP_CLI_PLUGIN_H
#define ZP_CLI_PLUGIN_H

#include "zpipe.h"

typedef struct zp__plugins zp__plugins;

/*
 * A set of plugins, empty so far; the tasks registered already (the
 * built-in ones) are noted as such. NULL when out of memory.
 */
zp__plugins *zp__plugins_new(void);

/*
 * Loads the plugin `name`: a path (anything with a '/'), or a file name
 * looked for in the directories of $ZPIPE_PLUGIN_PATH (':'-separated) and
 * then in the directory zpipe's own plugins are installed in, with or
 * without ".so". Loading the same file twice is harmless. Returns 0, or
 * ZP_EINVAL with *why (malloc'ed) when the file is missing, cannot be
 * loaded, registers no task, or registers a task under a name another
 * function already has.
 */
int zp__plugins_load(zp__plugins *ps, const char *name, char **why);

/* Where the task `name` comes from: "built-in" or a plugin's path. */
const char *zp__plugins_origin(const zp__plugins *ps, const char *name);

/*
 * The arguments that make a worker process load the same plugins:
 * "--plugin PATH" for each, NULL-terminated; owned by ps.
 */
char *const *zp__plugins_args(const zp__plugins *ps);

/* Frees the set (the plugins stay loaded). NULL-safe; *ps becomes NULL. */
void zp__plugins_destroy(zp__plugins **ps);

#endif
