/* SPDX-License-Identifier: MIT */
/*
 * Progress and statistics reports, see progress.h. The progress thread
 * wakes a few times a second, reads every stage's counters (atomics, so
 * reading them costs the run nothing) and prints them; it owns nothing of
 * the run. On a terminal it redraws one table in place with ANSI cursor
 * movements; elsewhere (a file, a pipe, a CI log) it appends plain lines,
 * one per stage each second, which grep and humans read alike. What it
 * prints is output the caller asked for, not log lines: it writes to
 * stderr itself, never through the log hook (core/log.h). The
 * statistics file is written once the run is over, as a msgpack map turned
 * into indented JSON by the library's JSON writer (core/json.h).
 */
#include "coordinator/progress.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/fds.h"
#include "core/json.h"

#define TTY_PERIOD_MS 250
#define PLAIN_PERIOD_MS 1000

struct zp__progress {
    zp_run *run; /* borrowed */
    pthread_t thread;
    pthread_mutex_t lock; /* guards stop */
    pthread_cond_t cond;  /* on CLOCK_MONOTONIC; signalled by stop */
    bool stop;
    bool tty;           /* stderr is a terminal: redraw a table */
    size_t n;           /* stages */
    uint64_t start;     /* ns, when the thread started */
    uint64_t last;      /* ns, the last report */
    uint64_t *prev_out; /* owned, n; items_out at the last report */
    double *rate;       /* owned, n; items out per second since then */
    zp_stage_stats *st; /* owned, n; the figures being printed */
    size_t drawn;       /* tty: lines of the table on the screen */
    uint64_t total;     /* items the first task emits, or 0: unknown */
};

static double seconds(uint64_t ns)
{
    return (double)ns / (double)ZP__NS_PER_S;
}

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

/* ---- Printing ------------------------------------------------------------ */

/* "4.2s", "42s", "4m02s", "4h02m". */
static void duration(char *buf, size_t len, double s)
{
    unsigned long t = (unsigned long)(s + 0.5);
    if (s < 9.95)
        snprintf(buf, len, "%.1fs", s);
    else if (t < 60)
        snprintf(buf, len, "%lus", t);
    else if (t < 3600)
        snprintf(buf, len, "%lum%02lus", t / 60, t % 60);
    else
        snprintf(buf, len, "%luh%02lum", t / 3600, t / 60 % 60);
}

void zp__progress_eta(char *buf, size_t len, uint64_t done, uint64_t total,
                      uint64_t ns)
{
    char left[32] = "? left";
    if (done > total)
        done = total;
    if (done > 0) { /* the average rate so far, as GNU Parallel's --eta */
        duration(left, sizeof left - 5,
                 seconds(ns) * (double)(total - done) / (double)done);
        strcat(left, " left");
    }
    snprintf(buf, len, "%.1f%% done, %llu of %llu items, %s",
             total ? 100.0 * (double)done / (double)total : 100.0, ull(done),
             ull(total), left);
}

/* The items of the input the pipeline is through with: those the second
 * stage took in and no longer works on, or a one-stage pipeline's
 * outputs. */
static uint64_t through(const zp__progress *p)
{
    if (p->n == 1)
        return p->st[0].items_out;
    const zp_stage_stats *s = &p->st[1];
    return s->items_in > s->in_flight ? s->items_in - s->in_flight : 0;
}

static void draw_table(zp__progress *p, const char *footer)
{
    char workers[32];
    flockfile(stderr);
    if (p->drawn > 0) /* back to the table's first line */
        fprintf(stderr, "\r\x1b[%zuA", p->drawn);
    fprintf(stderr, "%3s %-16s %10s %10s %7s %7s %9s %9s %10s\x1b[K\n", "#",
            "task", "in", "out", "failed", "retried", "in flight", "workers",
            "items/s");
    for (size_t i = 0; i < p->n; i++) {
        const zp_stage_stats *s = &p->st[i];
        snprintf(workers, sizeof workers, "%d/%d", s->workers_alive,
                 s->workers);
        fprintf(stderr,
                "%3zu %-16.16s %10llu %10llu %7llu %7llu %9llu %9s %10.1f"
                "\x1b[K\n",
                i + 1, s->task, ull(s->items_in), ull(s->items_out),
                ull(s->failed), ull(s->retried), ull(s->in_flight), workers,
                p->rate[i]);
    }
    fprintf(stderr, "%s\x1b[K\n", footer);
    p->drawn = p->n + 2;
    funlockfile(stderr);
    fflush(stderr);
}

static void print_lines(zp__progress *p, uint64_t now)
{
    char eta[128];
    flockfile(stderr);
    for (size_t i = 0; i < p->n; i++) {
        const zp_stage_stats *s = &p->st[i];
        fprintf(stderr,
                "zpipe: %.1fs: stage %zu %s: in %llu, out %llu, failed %llu, "
                "retried %llu, in flight %llu, workers %d/%d, %.1f items/s\n",
                seconds(now - p->start), i + 1, s->task, ull(s->items_in),
                ull(s->items_out), ull(s->failed), ull(s->retried),
                ull(s->in_flight), s->workers_alive, s->workers, p->rate[i]);
    }
    if (p->total > 0) {
        zp__progress_eta(eta, sizeof eta, through(p), p->total, now - p->start);
        fprintf(stderr, "zpipe: %.1fs: %s\n", seconds(now - p->start), eta);
    }
    funlockfile(stderr);
    fflush(stderr);
}

static void print_summary_lines(zp__progress *p, const char *outcome)
{
    flockfile(stderr);
    fprintf(stderr, "zpipe: %s\n", outcome);
    for (size_t i = 0; i < p->n; i++) {
        const zp_stage_stats *s = &p->st[i];
        fprintf(stderr,
                "zpipe: stage %zu %s: in %llu, out %llu, failed %llu, retried "
                "%llu, skipped %llu, restarts %llu, busy %.3fs, queue "
                "high-water %llu, %.1f items/s\n",
                i + 1, s->task, ull(s->items_in), ull(s->items_out),
                ull(s->failed), ull(s->retried), ull(s->skipped),
                ull(s->restarts), seconds(s->busy_ns), ull(s->queue_hwm),
                p->rate[i]);
    }
    funlockfile(stderr);
    fflush(stderr);
}

/* ---- The thread ---------------------------------------------------------- */

static void report(zp__progress *p)
{
    uint64_t now = zp__now_ns();
    double dt = seconds(now - p->last);
    for (size_t i = 0; i < p->n; i++) {
        if (zp_run_stats(p->run, i, &p->st[i]) != 0)
            return;
        p->rate[i] =
            dt > 0 ? (double)(p->st[i].items_out - p->prev_out[i]) / dt : 0;
        p->prev_out[i] = p->st[i].items_out;
    }
    p->last = now;
    if (p->tty) {
        char footer[192], eta[128] = "";
        if (p->total > 0)
            zp__progress_eta(eta, sizeof eta, through(p), p->total,
                             now - p->start);
        snprintf(footer, sizeof footer, "running for %.1fs%s%s",
                 seconds(now - p->start), p->total ? ", " : "", eta);
        draw_table(p, footer);
    } else {
        print_lines(p, now);
    }
}

static void *progress_main(void *arg)
{
    zp__progress *p = arg;
    uint64_t period =
        (p->tty ? TTY_PERIOD_MS : PLAIN_PERIOD_MS) * ZP__NS_PER_MS;
    struct timespec next;
    zp__deadline_after(&next, period);
    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
        if (pthread_cond_timedwait(&p->cond, &p->lock, &next) != ETIMEDOUT)
            continue; /* stopped, or woken for nothing */
        pthread_mutex_unlock(&p->lock);
        report(p);
        zp__deadline_after(&next, period);
        pthread_mutex_lock(&p->lock);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void progress_free(zp__progress *p)
{
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p->prev_out);
    free(p->rate);
    free(p->st);
    free(p);
}

static bool init_sync(zp__progress *p)
{
    bool ok = zp__cond_init_monotonic(&p->cond) == 0;
    if (ok && pthread_mutex_init(&p->lock, NULL) != 0) {
        pthread_cond_destroy(&p->cond);
        ok = false;
    }
    return ok;
}

zp__progress *zp__progress_start(zp_run *r, uint64_t total)
{
    size_t n = zp_run_stages(r);
    zp__progress *p = zp__calloc(1, sizeof *p);
    if (p == NULL || n == 0 || !init_sync(p)) {
        free(p);
        return NULL;
    }
    p->run = r;
    p->n = n;
    p->total = total;
    p->prev_out = zp__calloc(n, sizeof *p->prev_out);
    p->rate = zp__calloc(n, sizeof *p->rate);
    p->st = zp__calloc(n, sizeof *p->st);
    const char *term = getenv("TERM");
    p->tty = isatty(STDERR_FILENO) && !(term && strcmp(term, "dumb") == 0);
    p->start = p->last = zp__now_ns();
    if (p->prev_out == NULL || p->rate == NULL || p->st == NULL ||
        pthread_create(&p->thread, NULL, progress_main, p) != 0) {
        progress_free(p);
        return NULL;
    }
    return p;
}

static const char *outcome_word(int code)
{
    return code == 0              ? "finished"
           : code == ZP_ECANCELED ? "cancelled"
                                  : "failed";
}

void zp__progress_stop(zp__progress **pp, const zp_stage_stats *final, size_t n,
                       int code, uint64_t ns)
{
    zp__progress *p = pp ? *pp : NULL;
    if (p == NULL)
        return;
    *pp = NULL;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    char outcome[64];
    snprintf(outcome, sizeof outcome, "%s in %.2fs", outcome_word(code),
             seconds(ns));
    p->n = n < p->n ? n : p->n;
    for (size_t i = 0; i < p->n; i++) { /* the summary gives averages */
        p->st[i] = final[i];
        p->rate[i] = ns > 0 ? (double) final[i].items_out / seconds(ns) : 0;
    }
    if (p->tty)
        draw_table(p, outcome);
    else
        print_summary_lines(p, outcome);
    progress_free(p);
}

/* ---- The statistics file ------------------------------------------------- */

/* The document is packed as msgpack (its keys in the order docs/cli.md
 * shows them, counts as integers, times and rates as reals), then written
 * as JSON indented by two spaces. */

static int pack_text(msgpack_packer *pk, const char *text)
{
    size_t n = strlen(text);
    return msgpack_pack_str(pk, n) | msgpack_pack_str_body(pk, text, n);
}

/* A key and its text, or null when there is none. */
static int pack_str(msgpack_packer *pk, const char *key, const char *v)
{
    return pack_text(pk, key) |
           (v != NULL ? pack_text(pk, v) : msgpack_pack_nil(pk));
}

static int pack_uint(msgpack_packer *pk, const char *key, uint64_t v)
{
    return pack_text(pk, key) | msgpack_pack_uint64(pk, v);
}

static int pack_int(msgpack_packer *pk, const char *key, int v)
{
    return pack_text(pk, key) | msgpack_pack_int(pk, v);
}

static int pack_real(msgpack_packer *pk, const char *key, double v)
{
    return pack_text(pk, key) | msgpack_pack_double(pk, v);
}

static int pack_stage(msgpack_packer *pk, size_t i, const zp_stage_stats *s,
                      uint64_t ns)
{
    return msgpack_pack_map(pk, 14) | pack_uint(pk, "stage", i + 1) |
           pack_str(pk, "task", s->task) | pack_int(pk, "workers", s->workers) |
           pack_int(pk, "throttle", s->throttle) |
           pack_uint(pk, "items_in", s->items_in) |
           pack_uint(pk, "items_out", s->items_out) |
           pack_uint(pk, "failed", s->failed) |
           pack_uint(pk, "retried", s->retried) |
           pack_uint(pk, "skipped", s->skipped) |
           pack_uint(pk, "queue_hwm", s->queue_hwm) |
           pack_real(pk, "busy_seconds", seconds(s->busy_ns)) |
           pack_uint(pk, "restarts", s->restarts) |
           pack_uint(pk, "peak_in_flight", s->peak_in_flight) |
           pack_real(pk, "items_per_second",
                     ns > 0 ? (double)s->items_out / seconds(ns) : 0.0);
}

/* Packs the statistics into sb; nonzero when memory ran out. */
static int pack_stats(msgpack_sbuffer *sb, const zp_stage_stats *st, size_t n,
                      int code, const char *error, uint64_t ns)
{
    static const char *const words[] = {"ok", "cancelled", "failed"};
    const char *status = words[code == 0 ? 0 : code == ZP_ECANCELED ? 1 : 2];
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int rc = msgpack_pack_map(&pk, 4) | pack_str(&pk, "status", status) |
             pack_str(&pk, "error", code != 0 ? error : NULL) |
             pack_real(&pk, "seconds", seconds(ns)) | pack_text(&pk, "stages") |
             msgpack_pack_array(&pk, n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = pack_stage(&pk, i, &st[i], ns);
    return rc;
}

/* The statistics as indented JSON text, with a final newline, into out. */
static int stats_text(msgpack_sbuffer *out, const zp_stage_stats *st, size_t n,
                      int code, const char *error, uint64_t ns)
{
    msgpack_sbuffer sb;
    msgpack_unpacked doc;
    msgpack_sbuffer_init(&sb);
    msgpack_unpacked_init(&doc);
    int rc = ZP_ENOMEM; /* all that packing our own map can run into */
    if (pack_stats(&sb, st, n, code, error, ns) == 0 &&
        msgpack_unpack_next(&doc, sb.data, sb.size, NULL) ==
            MSGPACK_UNPACK_SUCCESS)
        rc = zp__json_write_indented(&doc.data, 2, out);
    if (rc == 0 && msgpack_sbuffer_write(out, "\n", 1) != 0)
        rc = ZP_ENOMEM;
    msgpack_unpacked_destroy(&doc);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int zp__stats_write(const char *path, const zp_stage_stats *st, size_t n,
                    int code, const char *error, uint64_t ns, char **why)
{
    msgpack_sbuffer text;
    msgpack_sbuffer_init(&text);
    bool made = stats_text(&text, st, n, code, error, ns) == 0;
    int fd =
        made ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666) : -1;
    int rc = 0;
    if (!made)
        errno = ENOMEM;
    if (fd < 0 || !zp__fds_write_all(fd, text.data, text.size))
        rc = ZP_EIO;
    if (fd >= 0 && close(fd) != 0)
        rc = ZP_EIO;
    if (rc != 0)
        *why = zp__strdupf("cannot write the statistics to '%s': %s", path,
                           strerror(errno));
    msgpack_sbuffer_destroy(&text);
    return rc;
}
