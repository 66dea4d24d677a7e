/* SPDX-License-Identifier: MIT */
/*
 * Install smoke test: a program built against an installed zpipe, through
 * find_package or pkg-config (see CMakeLists.txt beside this file). It checks
 * that the public header is found, that it compiles on its own, and that the
 * library links and loads, and that the versions agree: zp_version() (the
 * library), ZP_VERSION_STRING (the header) and PACKAGE_VERSION, the version
 * of the CMake package or of zpipe.pc that found them. Exits 0 when they do,
 * 1 otherwise. CONSUMER_KIND and PACKAGE_VERSION are set by CMakeLists.txt.
 */
#include <zpipe.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    const char *version = zp_version();
    bool ok = version != NULL && strcmp(version, ZP_VERSION_STRING) == 0 &&
              strcmp(version, PACKAGE_VERSION) == 0;

    printf("%s: zp_version() = \"%s\", ZP_VERSION_STRING = \"%s\", "
           "package version = \"%s\": %s\n",
           CONSUMER_KIND, version != NULL ? version : "(null)",
           ZP_VERSION_STRING, PACKAGE_VERSION, ok ? "ok" : "MISMATCH");
    return ok ? 0 : 1;
}
