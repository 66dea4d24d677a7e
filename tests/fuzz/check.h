/* SPDX-License-Identifier: MIT */
/*
 * CHECK(cond) for the libFuzzer targets: an assert() that holds in every
 * build, naming the file, line and condition before it aborts, which
 * libFuzzer reports as a crash with its input.
 */
#ifndef ZP_TESTS_FUZZ_CHECK_H
#define ZP_TESTS_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            abort();                                                         \
        }                                                                    \
    } while (0)

#endif
