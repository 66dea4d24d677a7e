/* SPDX-License-Identifier: MIT */
/*
 * A transactional sink for a durable run (docs/durability.md): the outputs
 * of `numbers branch | square workers=4 mode=process` go into a SQLite
 * table, and at each checkpoint the rows inserted since the last one are
 * committed together with the run's token, in one transaction. Started
 * again after a crash (kill -9, power cut), it reads the token back and
 * passes it as zp_run_opts.resume: the run goes on after the rows that were
 * committed, and the table ends with each row exactly once. A finished
 * token makes it exit 0 at once.
 *
 * An example program: it only uses the public API (zpipe.h) and SQLite. The
 * process workers are this program again, which is why zp_init() comes
 * first. Nothing here may decide what the first task emits but N: a resumed
 * run drops the first task's outputs that were committed, so it must emit
 * the same items in the same order every time.
 *
 * Usage: sqlite_sink DB N [CHECKPOINT_MS]
 * Table squares(n, sq): n = 0..N-1, sq = n*n; table checkpoint(token): one
 * row, the token of the last commit.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zpipe.h>

/* The first task: 0..N-1, in this order on every start of the run. */
ZP_TASK(numbers)
{
    int64_t n = zp_input(call)->via.array.ptr[0].via.i64;
    int rc = 0;
    for (int64_t i = 0; rc == 0 && i < n; i++)
        rc = zp_emit_int(call, i); /* nonzero: the run is stopping */
    return rc == 0 ? 0 : -1;
}

/* [n, n*n]: the row. */
ZP_TASK(square)
{
    int64_t n = zp_input(call)->via.i64;
    msgpack_packer *pk = zp_out(call);
    msgpack_pack_array(pk, 2);
    msgpack_pack_int64(pk, n);
    msgpack_pack_int64(pk, n * n);
    return zp_emit(call);
}

typedef struct sink {
    sqlite3 *db;
    sqlite3_stmt *insert; /* a row of squares          */
    sqlite3_stmt *token;  /* the one row of checkpoint */
    uint64_t rows;        /* inserted by this run      */
    uint64_t pending;     /* inserted since the last commit */
    uint64_t commits;
    char last[64]; /* the last token committed */
} sink;

static int exec(sink *s, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &err) == SQLITE_OK)
        return 0;
    fprintf(stderr, "sqlite_sink: %s: %s\n", sql, err ? err : "?");
    sqlite3_free(err);
    return -1;
}

static int failed(sink *s, const char *what)
{
    fprintf(stderr, "sqlite_sink: %s: %s\n", what, sqlite3_errmsg(s->db));
    return -1;
}

/* Opens DB (WAL, synchronous=FULL: a commit survives a power cut), makes
 * the tables and reads the token of the last commit into s->last ("" if
 * none). */
static int open_db(sink *s, const char *path)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_open(path, &s->db) != SQLITE_OK)
        return failed(s, path);
    sqlite3_busy_timeout(s->db, 10000);
    if (exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                "CREATE TABLE IF NOT EXISTS squares"
                " (n INTEGER NOT NULL, sq INTEGER NOT NULL);"
                "CREATE TABLE IF NOT EXISTS checkpoint"
                " (id INTEGER PRIMARY KEY CHECK (id = 0),"
                "  token TEXT NOT NULL);") != 0)
        return -1;
    if (sqlite3_prepare_v2(s->db, "SELECT token FROM checkpoint WHERE id = 0",
                           -1, &st, NULL) != SQLITE_OK)
        return failed(s, "reading the token");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        snprintf(s->last, sizeof s->last, "%s",
                 (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return failed(s, "reading the token");
    if (sqlite3_prepare_v2(s->db, "INSERT INTO squares (n, sq) VALUES (?, ?)",
                           -1, &s->insert, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(
            s->db,
            "INSERT INTO checkpoint (id, token) VALUES (0, ?)"
            " ON CONFLICT (id) DO UPDATE SET token = excluded.token",
            -1, &s->token, NULL) != SQLITE_OK)
        return failed(s, "preparing the statements");
    return 0;
}

static int insert(sink *s, const msgpack_object *row)
{
    if (row->type != MSGPACK_OBJECT_ARRAY || row->via.array.size != 2) {
        fprintf(stderr, "sqlite_sink: an output is not [n, sq]\n");
        return -1;
    }
    sqlite3_bind_int64(s->insert, 1, row->via.array.ptr[0].via.i64);
    sqlite3_bind_int64(s->insert, 2, row->via.array.ptr[1].via.i64);
    int rc = sqlite3_step(s->insert);
    sqlite3_reset(s->insert);
    if (rc != SQLITE_DONE)
        return failed(s, "inserting a row");
    s->rows++;
    s->pending++;
    return 0;
}

/* on_checkpoint: every row inserted so far belongs to the run up to
 * `token`; the rows and the token commit together, or neither does. */
static int commit(void *user, const char *token)
{
    sink *s = user;
    sqlite3_bind_text(s->token, 1, token, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(s->token);
    sqlite3_reset(s->token);
    if (rc != SQLITE_DONE)
        return failed(s, "writing the token");
    if (exec(s, "COMMIT; BEGIN;") != 0)
        return -1;
    snprintf(s->last, sizeof s->last, "%s", token);
    s->pending = 0;
    s->commits++;
    return 0;
}

static int64_t table_rows(sink *s)
{
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM squares", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static bool finished(const char *token)
{
    size_t n = strlen(token);
    return n > 5 && strcmp(token + n - 5, ".done") == 0;
}

/* Runs the pipeline into the table from where the last commit left it:
 * from a finished token, the run checks that it is this pipeline's and
 * these arguments' and gives no output. Returns 0 or 1. */
static int run(sink *s, int64_t n, int every_ms)
{
    char args[32], resumed[64];
    const msgpack_object *out;
    snprintf(args, sizeof args, "[%" PRId64 "]", n);
    snprintf(resumed, sizeof resumed, "%s", s->last);
    zp_pipeline *p = zp_pipe(zp_task(numbers, .branch = true),
                             zp_task(square, .workers = 4, .mode = ZP_PROCESS));
    zp_run_opts o = {.on_checkpoint = commit,
                     .checkpoint_user = s,
                     .checkpoint_ms = every_ms,
                     .resume = resumed[0] ? resumed : NULL};
    int bad = exec(s, "BEGIN;");
    zp_run *r = zp_start_with(p, args, &o);
    while (bad == 0 && zp_run_next(r, &out))
        bad = insert(s, out);
    if (bad != 0)
        zp_cancel(r);
    int rc = zp_finish(r);
    if (rc != 0 && bad == 0)
        fprintf(stderr, "sqlite_sink: the run failed: %s\n",
                zp_error(r) ? zp_error(r) : zp_strerror(rc));
    /* Whatever came after the last checkpoint is not committed: the next
     * run makes it again. */
    exec(s, "ROLLBACK;");
    zp_run_free(r);
    zp_pipeline_free(p);
    fprintf(stderr,
            "sqlite_sink: %s%s, %" PRIu64 " rows inserted, %" PRIu64
            " checkpoints committed (last %s), %" PRId64 " rows in the table\n",
            finished(resumed) ? "the run was finished already: "
            : resumed[0]      ? "resumed from "
                              : "started",
            resumed, s->rows, s->commits, s->last[0] ? s->last : "none",
            table_rows(s));
    return rc != 0 || bad != 0 || !finished(s->last);
}

int main(int argc, char **argv)
{
    zp_init(&argc, &argv);
    if (argc < 3 || argc > 4 || atoll(argv[2]) < 0) {
        fprintf(stderr, "usage: sqlite_sink DB N [CHECKPOINT_MS]\n");
        return 2;
    }
    sink s = {0};
    int rc = 1;
    if (open_db(&s, argv[1]) == 0)
        rc = run(&s, atoll(argv[2]), argc > 3 ? atoi(argv[3]) : 0);
    sqlite3_finalize(s.insert);
    sqlite3_finalize(s.token);
    sqlite3_close(s.db);
    return rc;
}
