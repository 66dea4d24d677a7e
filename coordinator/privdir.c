/* SPDX-License-Identifier: MIT */
/*
 * A run's private folder, see privdir.h.
 */
#include "coordinator/privdir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"

int zp__privdir_make(char **path, char **why)
{
    char tmpl[] = "/tmp/zpipe-XXXXXX"; /* mkdtemp makes it 0700 */
    if (mkdtemp(tmpl) == NULL) {
        *why = zp__strdupf("cannot make a private folder for its worker "
                           "processes: %s",
                           strerror(errno));
        return ZP_EIO;
    }
    if ((*path = zp__strdup(tmpl)) == NULL) {
        rmdir(tmpl);
        return ZP_ENOMEM;
    }
    return 0;
}

void zp__privdir_remove(const char *path)
{
    if (path == NULL)
        return;
    DIR *dir = opendir(path);
    struct dirent *e;
    char file[512];
    while (dir != NULL && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(file, sizeof file, "%s/%s", path, e->d_name);
        unlink(file);
    }
    if (dir != NULL)
        closedir(dir);
    rmdir(path);
}
