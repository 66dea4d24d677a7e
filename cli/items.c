/* SPDX-License-Identifier: MIT */
/*
 * Items in and out of the zpipe CLI, see items.h. Input is read in chunks
 * of 64 KiB and cut at newlines in place, so a line costs one memchr and,
 * for JSON, one pass of the JSON reader into a zone that every line
 * reuses. Outputs are gathered in one buffer and written 64 KiB at a time;
 * the CLI flushes it early whenever the run has nothing ready for it, so a
 * slow pipeline's outputs still show as they come.
 */
#include "cli/items.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/value.h"
#include "worker/call.h"

#define CHUNK ((size_t)64 << 10) /* bytes read at once; first buffer size */
#define LINE_MAX_BYTES ((size_t)64 << 20) /* a longer line is an error */
#define TOO_LONG (-100) /* fill(): a line is longer than LINE_MAX_BYTES */
#define LOOK_MS 100     /* longest wait between stop checks */

/* ---- Reading lines ------------------------------------------------------- */

typedef struct reader {
    int fd;
    zp_call *call;                /* borrowed; the call emitting lines */
    const _Atomic bool *stop;     /* borrowed; the run's stop flag */
    char *buf;                    /* owned; buf[start, end) is unread */
    size_t cap, start, scan, end; /* scan: no '\n' in buf[start, scan) */
    bool eof;
} reader;

/* Sends the lines emitted so far on before the reader waits for more, as
 * a worker does before it waits for items: otherwise lines that came in a
 * burst would wait in a batch until the next burst, or the end. Parked
 * outputs (process workers, ordered stages) go at the call's end. */
static int flush_emitted(reader *r)
{
    return zp__call_flush(r->call);
}

/* Reads more: 1 when bytes came, 0 at the end of the input, ZP_ECANCELED,
 * TOO_LONG, ZP_ENOMEM or ZP_EIO (errno set). */
static int fill(reader *r)
{
    if (r->start > 0) { /* make room at the end */
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->scan -= r->start;
        r->start = 0;
    }
    if (r->end == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : CHUNK;
        if (cap > LINE_MAX_BYTES + CHUNK)
            return TOO_LONG;
        char *b = realloc(r->buf, cap);
        if (b == NULL)
            return ZP_ENOMEM;
        r->buf = b;
        r->cap = cap;
    }
    for (bool flushed = false;;) {
        struct pollfd p = {.fd = r->fd, .events = POLLIN};
        if (atomic_load(r->stop))
            return ZP_ECANCELED;
        int n = poll(&p, 1, flushed ? LOOK_MS : 0);
        if (n < 0 && errno != EINTR)
            return ZP_EIO;
        if (n == 0 && !flushed) { /* nothing yet: it will wait */
            int rc = flush_emitted(r);
            if (rc != 0)
                return rc; /* ZP_ECANCELED or ZP_EIO */
            flushed = true;
        }
        if (n <= 0)
            continue;
        ssize_t got = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (got >= 0) {
            r->end += (size_t)got;
            return got > 0;
        }
        if (errno != EINTR && errno != EAGAIN)
            return ZP_EIO;
    }
}

/* 1 with the next line in *line (valid until the next call), 0 at the
 * end, or an error of fill(). */
static int next_line(reader *r, const char **line, size_t *len)
{
    for (;;) {
        assert(r->start <= r->scan && r->scan <= r->end && r->end <= r->cap);
        char *nl = r->scan < r->end
                       ? memchr(r->buf + r->scan, '\n', r->end - r->scan)
                       : NULL;
        size_t stop = nl ? (size_t)(nl - r->buf) : r->end;
        if (nl != NULL || (r->eof && r->start < r->end)) {
            *line = r->buf + r->start;
            *len = stop - r->start;
            if (*len > 0 && (*line)[*len - 1] == '\r')
                (*len)--;
            r->start = r->scan = nl ? stop + 1 : stop;
            return 1;
        }
        if (r->eof)
            return 0;
        r->scan = r->end;
        int rc = fill(r);
        if (rc < 0)
            return rc;
        r->eof = rc == 0;
    }
}

/* ---- Lines into items ---------------------------------------------------- */

static bool blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
            return false;
    return true;
}

static int emit_json(zp_call *call, msgpack_zone *zone, const char *line,
                     size_t len, const char *name, uint64_t lineno)
{
    msgpack_object o;
    zp__json_error e;
    if (blank(line, len))
        return 0;
    int rc = zp__json_read(line, len, zone, &o, &e);
    if (rc == ZP_EINVAL)
        return zp_fail(call, "%s:%llu:%d: invalid JSON: %s", name,
                       (unsigned long long)lineno, e.column, e.reason);
    if (rc != 0)
        return zp_fail(call, "%s:%llu: out of memory", name,
                       (unsigned long long)lineno);
    rc = zp_emit_obj(call, &o);
    msgpack_zone_clear(zone);
    return rc;
}

static int emit_text(zp_call *call, const char *line, size_t len)
{
    if (len > UINT32_MAX)
        return zp_fail(call, "a line longer than 4 GiB");
    msgpack_pack_str_with_body(zp_out(call), line, len);
    return zp_emit(call);
}

/* Emits every line of r; returns 0, a task failure, or a reader error. */
static int emit_all(zp_call *call, reader *r, const char *name, bool json)
{
    const char *line;
    size_t len;
    uint64_t lineno = 0;
    int rc = 0;
    msgpack_zone *zone =
        json ? msgpack_zone_new(MSGPACK_ZONE_CHUNK_SIZE) : NULL;
    if (json && zone == NULL)
        return zp_fail(call, "out of memory");
    while (rc == 0 && (rc = next_line(r, &line, &len)) == 1) {
        lineno++;
        rc = json ? emit_json(call, zone, line, len, name, lineno)
                  : emit_text(call, line, len);
    }
    int err = errno;
    if (zone != NULL)
        msgpack_zone_free(zone);
    if (rc == TOO_LONG)
        rc = zp_fail(call, "%s: line %llu is longer than %zu MiB", name,
                     (unsigned long long)lineno + 1, LINE_MAX_BYTES >> 20);
    else if (rc == ZP_EIO || rc == ZP_ENOMEM)
        rc = zp_fail(call, "%s: reading line %llu: %s", name,
                     (unsigned long long)lineno + 1,
                     rc == ZP_EIO ? strerror(err) : "out of memory");
    return rc;
}

int zp__emit_lines(zp_call *call, const char *path, bool json)
{
    bool std_in = strcmp(path, "-") == 0;
    reader r = {.fd = std_in ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC),
                .call = call,
                .stop = &zp__call_run(call)->stop};
    if (r.fd < 0)
        return zp_fail(call, "cannot open '%s': %s", path, strerror(errno));
    int rc = emit_all(call, &r, std_in ? "<stdin>" : path, json);
    if (!std_in)
        close(r.fd);
    free(r.buf);
    return rc;
}

/* Lines counted so far, and the one under way. */
typedef struct line_count {
    uint64_t n;
    bool open;  /* the current line has bytes */
    bool solid; /* and some that are not blank */
} line_count;

static void count_chunk(line_count *k, const char *p, size_t len, bool json)
{
    const char *end = p + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        k->open = k->open || stop > p;
        k->solid = k->solid || (json && !blank(p, (size_t)(stop - p)));
        if (nl != NULL) {
            k->n += json ? k->solid : 1;
            k->open = k->solid = false;
        }
        p = nl ? nl + 1 : end;
    }
}

int zp__count_lines(const char *path, bool json, uint64_t *count)
{
    struct stat st;
    line_count k = {0, false, false};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *buf = fd >= 0 ? malloc(CHUNK) : NULL;
    int rc = buf == NULL ? ZP_EIO : 0;
    if (rc == 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)))
        rc = ZP_EINVAL;
    for (ssize_t got = 1; rc == 0 && got != 0;) {
        got = read(fd, buf, CHUNK);
        if (got > 0)
            count_chunk(&k, buf, (size_t)got, json);
        else if (got < 0 && errno != EINTR)
            rc = ZP_EIO;
    }
    if (fd >= 0)
        close(fd);
    free(buf);
    *count = k.n + (json ? k.solid : k.open);
    return rc;
}

int zp__input_task(zp_call *call)
{
    const zp__input *in = zp_user(call);
    return zp__emit_lines(call, in->path, in->json);
}

/* ---- Outputs ------------------------------------------------------------- */

void zp__writer_init(zp__writer *w, int fd, zp__format format)
{
    w->fd = fd;
    w->format = format;
    msgpack_sbuffer_init(&w->buf);
    msgpack_packer_init(&w->pk, &w->buf, msgpack_sbuffer_write);
}

void zp__writer_fini(zp__writer *w)
{
    msgpack_sbuffer_destroy(&w->buf);
}

int zp__writer_flush(zp__writer *w)
{
    size_t done = 0;
    while (done < w->buf.size) {
        ssize_t n = write(w->fd, w->buf.data + done, w->buf.size - done);
        if (n < 0 && errno != EINTR)
            return ZP_EIO;
        done += n > 0 ? (size_t)n : 0;
    }
    msgpack_sbuffer_clear(&w->buf);
    return 0;
}

int zp__writer_put(zp__writer *w, const msgpack_object *o)
{
    int rc;
    if (w->format == ZP__FORMAT_MSGPACK)
        rc = msgpack_pack_object(&w->pk, *o) == 0 ? 0 : ZP_ENOMEM;
    else if (w->format == ZP__FORMAT_LINES && o->type == MSGPACK_OBJECT_STR)
        rc =
            msgpack_sbuffer_write(&w->buf, o->via.str.ptr, o->via.str.size) == 0
                ? 0
                : ZP_ENOMEM;
    else
        rc = zp__json_write(o, &w->buf);
    if (rc == 0 && w->format != ZP__FORMAT_MSGPACK &&
        msgpack_sbuffer_write(&w->buf, "\n", 1) != 0)
        rc = ZP_ENOMEM;
    if (rc == 0 && w->buf.size >= CHUNK)
        rc = zp__writer_flush(w);
    return rc;
}
