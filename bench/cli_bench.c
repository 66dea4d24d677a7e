/* SPDX-License-Identifier: MIT */
/*
 * The zpipe CLI beside what it replaces, printed side by side with ratios:
 *
 *  1. `zpipe run 'range branch | identity' N > /dev/null` against the same
 *     two-stage pipeline built in C with libzpipe in this process, its
 *     outputs read and summed (the pipeline alone), and read and printed
 *     as text lines to /dev/null (what the CLI does, in C).
 *  2. `zpipe run 'lines branch | exec workers=8 bind=...'` over a file of
 *     M lines against `xargs -P 8` running the same command per line, and
 *     GNU parallel -j 8 when it is installed, each with the command run
 *     directly (argv) and through /bin/sh.
 *
 * Every variant runs ROUNDS times; the best round counts. Not a test:
 * nothing is asserted about speed. The path of the zpipe executable is
 * built in; commands run through /bin/sh -c, outputs go to /dev/null.
 * Usage: cli_bench [N] [M] [ROUNDS]
 */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zpipe.h>

extern char **environ;

ZP_TASK(numbers)
{
    uint64_t n = zp_input(call)->via.array.ptr[0].via.u64;
    for (uint64_t i = 0; i < n; i++)
        if (zp_emit_uint(call, i) != 0)
            return -1;
    return 0;
}

ZP_TASK(same)
{
    return zp_emit_obj(call, zp_input(call));
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The pipeline in C; `print` writes each output as a text line. */
static double in_c(zp_pipeline *p, uint64_t n, bool print, FILE *devnull)
{
    char args[32];
    const msgpack_object *out;
    uint64_t sum = 0;
    snprintf(args, sizeof args, "[%llu]", (unsigned long long)n);
    double t0 = now();
    zp_run *run = zp_start(p, args);
    while (zp_run_next(run, &out)) {
        sum += out->via.u64;
        if (print)
            fprintf(devnull, "%llu\n", (unsigned long long)out->via.u64);
    }
    int rc = zp_finish(run);
    fflush(devnull);
    double t = now() - t0;
    if (rc != 0 || sum != n * (n - 1) / 2)
        fprintf(stderr, "the C pipeline failed: %s\n", zp_error(run));
    zp_run_free(run);
    return rc == 0 ? t : -1;
}

/* Wall seconds of `sh -c cmd`, or -1 when it fails (and `loud` says so). */
static double shell(const char *cmd, bool loud)
{
    char *argv[] = {"sh", "-c", (char *)cmd, NULL};
    pid_t pid;
    int status;
    double t0 = now();
    if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) != 0)
        return -1;
    while (waitpid(pid, &status, 0) < 0)
        ;
    double t = now() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (loud)
            fprintf(stderr, "failed: %s\n", cmd);
        return -1;
    }
    return t;
}

static void row(const char *what, double secs, uint64_t items, double zpipe)
{
    if (secs < 0) {
        printf("  %-44s failed\n", what);
        return;
    }
    printf("  %-44s %8.3f s %10.0f items/s", what, secs, (double)items / secs);
    if (zpipe > 0)
        printf("   zpipe CLI / this = %.2fx", zpipe / secs);
    printf("\n");
}

static double least(double best, double t)
{
    return best < 0 || (t >= 0 && t < best) ? t : best;
}

/* Rounds interleave the variants, so that a slow minute of a shared
 * machine does not fall on one of them only. */
static void bench_range(uint64_t n, int rounds)
{
    char cmd[512];
    double c = -1, printed = -1, cli = -1;
    FILE *devnull = fopen("/dev/null", "w");
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true), zp_task(same));
    snprintf(cmd, sizeof cmd,
             "%s run 'range branch | identity' %llu > /dev/null", ZPIPE_BIN,
             (unsigned long long)n);
    for (int i = 0; devnull != NULL && i < rounds; i++) {
        c = least(c, in_c(p, n, false, devnull));
        printed = least(printed, in_c(p, n, true, devnull));
        cli = least(cli, shell(cmd, true));
    }
    printf("range branch | identity, %llu items, best of %d:\n",
           (unsigned long long)n, rounds);
    row("zpipe run ... > /dev/null", cli, n, -1);
    row("the pipeline in C, outputs summed", c, n, cli);
    row("the pipeline in C, outputs printed", printed, n, cli);
    zp_pipeline_free(p);
    if (devnull != NULL)
        fclose(devnull);
}

/* A file of m lines, "line 0" ... ; returns its path (static). */
static const char *lines_file(uint64_t m)
{
    static char path[] = "/tmp/zpipe-cli-bench-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    for (uint64_t i = 0; f != NULL && i < m; i++)
        fprintf(f, "line %llu\n", (unsigned long long)i);
    if (f == NULL || fclose(f) != 0)
        return NULL;
    return path;
}

static void bench_exec(uint64_t m, int rounds)
{
    static const char *const what[] = {
        "zpipe exec, argv form: echo LINE",
        "xargs -P 8 -I{} echo {}",
        "zpipe exec, shell form: sh -c 'echo LINE'",
        "xargs -P 8 ... sh -c 'echo \"$1\"' sh {}",
        "parallel -j 8 echo {}",
    };
    const char *file = lines_file(m);
    int variants = shell("command -v parallel > /dev/null", false) >= 0 ? 5 : 4;
    char cmd[5][1024];
    double best[5] = {-1, -1, -1, -1, -1};
    if (file == NULL)
        return;
    snprintf(cmd[0], sizeof cmd[0],
             "%s run --format lines 'lines branch | exec workers=8 "
             "bind=[\"echo\",\"{}\"]' '\"%s\"' > /dev/null",
             ZPIPE_BIN, file);
    snprintf(cmd[1], sizeof cmd[1], "xargs -P 8 -I{} echo {} < %s > /dev/null",
             file);
    snprintf(cmd[2], sizeof cmd[2],
             "%s run --format lines 'lines branch | exec workers=8 "
             "bind=\"echo {}\"' '\"%s\"' > /dev/null",
             ZPIPE_BIN, file);
    snprintf(cmd[3], sizeof cmd[3],
             "xargs -P 8 -I{} sh -c 'echo \"$1\"' sh {} < %s > /dev/null",
             file);
    snprintf(cmd[4], sizeof cmd[4], "parallel -j 8 echo {} < %s > /dev/null",
             file);
    for (int i = 0; i < rounds; i++)
        for (int v = 0; v < variants; v++)
            best[v] = least(best[v], shell(cmd[v], true));
    printf("a command per line, %llu lines, 8 at once, best of %d:\n",
           (unsigned long long)m, rounds);
    for (int v = 0; v < variants; v++)
        row(what[v], best[v], m, v == 1 ? best[0] : v > 2 ? best[2] : -1);
    if (variants == 4)
        printf("  (GNU parallel is not installed: not measured)\n");
    unlink(file);
}

int main(int argc, char **argv)
{
    zp_init(&argc, &argv);
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 5000000;
    uint64_t m = argc > 2 ? strtoull(argv[2], NULL, 10) : 2000;
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    if (n == 0 || m == 0 || rounds < 1) {
        fprintf(stderr, "usage: cli_bench [N] [M] [ROUNDS]\n");
        return 2;
    }
    bench_range(n, rounds);
    bench_exec(m, rounds);
    return 0;
}
