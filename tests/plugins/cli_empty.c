/* SPDX-License-Identifier: MIT */
/* A shared library with no task: loading it as a plugin is an error. */
int cli_empty_answer(void);

int cli_empty_answer(void)
{
    return 42;
}
