/* SPDX-License-Identifier: MIT */
/*
 * Install smoke test: a program built against an installed zpipe, through
 * find_package or pkg-config (see CMakeLists.txt beside this file). It checks
 * that the public header is found, that it compiles on its own, and that the
 * library links and loads: zp_version() must match the header's
 * ZP_VERSION_STRING. Exits 0 when it does, 1 otherwise. CONSUMER_KIND, set by
 * CMakeLists.txt, names the way it was built.
 */
#include <zpipe.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    const char *version = zp_version();
    bool ok = version != NULL && strcmp(version, ZP_VERSION_STRING) == 0;

    printf("%s: zp_version() = \"%s\", ZP_VERSION_STRING = \"%s\": %s\n",
           CONSUMER_KIND, version != NULL ? version : "(null)",
           ZP_VERSION_STRING, ok ? "ok" : "MISMATCH");
    return ok ? 0 : 1;
}
