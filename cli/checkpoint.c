/* SPDX-License-Identifier: MIT */
/*
 * The state file of `zpipe run --checkpoint`, see checkpoint.h. A STATE
 * reads, indented as jq would print it:
 *
 *   {"zpipe_state": 1, "done": false, "bytes": 1234, "outputs": 42,
 *    "token": "zpipe1.0123456789abcdef.42", "output": "out.jsonl",
 *    "format": "json", "spec": "range branch | square",
 *    "args": "[100]", "input": null}
 *
 * Every key is required; keys it does not know are ignored, so that a
 * later version 1 may add some. Anything else (not JSON, a key missing or
 * of the wrong type, a file cut short) is a corrupt STATE: refused, never
 * guessed at.
 */
#include "cli/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/json.h"

#define STATE_MAX_BYTES ((off_t)64 << 20) /* a bigger file is no STATE */
#define ZONE_CHUNK 4096

/* ---- Reading ------------------------------------------------------------- */

/* The whole file at `path` into a malloc'ed buffer. Returns 0,
 * ZP__CHECKPOINT_NONE, ZP_EINVAL (too big) or ZP_EIO with errno. */
static int slurp(const char *path, char **text, size_t *len)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;
    if (fd < 0)
        return errno == ENOENT ? ZP__CHECKPOINT_NONE : ZP_EIO;
    *text = NULL;
    *len = 0;
    if (fstat(fd, &st) != 0)
        rc = ZP_EIO;
    else if (!S_ISREG(st.st_mode) || st.st_size > STATE_MAX_BYTES)
        rc = ZP_EINVAL;
    else if ((*text = malloc((size_t)st.st_size + 1)) == NULL)
        rc = ZP_ENOMEM;
    while (rc == 0 && *len < (size_t)st.st_size) {
        ssize_t n = read(fd, *text + *len, (size_t)st.st_size - *len);
        if (n == 0)
            break; /* shrank under us: the parse will say */
        if (n > 0)
            *len += (size_t)n;
        else if (errno != EINTR)
            rc = ZP_EIO;
    }
    int err = errno;
    close(fd);
    errno = err;
    return rc;
}

/* The value of `key` in the map `m`, or NULL. */
static const msgpack_object *field(const msgpack_object *m, const char *key)
{
    size_t n = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

/* A string field as a NUL-terminated copy in the zone; false when it is
 * missing, not a string or holds a NUL. `nullable`: null reads as NULL. */
static bool text_field(const msgpack_object *m, const char *key, bool nullable,
                       msgpack_zone *zone, const char **out)
{
    const msgpack_object *v = field(m, key);
    *out = NULL;
    if (v != NULL && nullable && v->type == MSGPACK_OBJECT_NIL)
        return true;
    if (v == NULL || v->type != MSGPACK_OBJECT_STR ||
        memchr(v->via.str.ptr, '\0', v->via.str.size) != NULL)
        return false;
    char *s = msgpack_zone_malloc(zone, v->via.str.size + 1);
    if (s == NULL)
        return false;
    memcpy(s, v->via.str.ptr, v->via.str.size);
    s[v->via.str.size] = '\0';
    *out = s;
    return true;
}

static bool count_field(const msgpack_object *m, const char *key, uint64_t *out)
{
    const msgpack_object *v = field(m, key);
    if (v == NULL || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = v->via.u64;
    return true;
}

/* The fields of a version-1 STATE; false names the first bad one. */
static bool fields(const msgpack_object *m, zp__checkpoint *s, const char **bad)
{
    const msgpack_object *done = field(m, "done");
    if (!text_field(m, *bad = "token", false, s->zone, &s->token) ||
        !text_field(m, *bad = "output", false, s->zone, &s->output) ||
        !text_field(m, *bad = "format", false, s->zone, &s->format) ||
        !text_field(m, *bad = "spec", false, s->zone, &s->spec) ||
        !text_field(m, *bad = "args", true, s->zone, &s->args) ||
        !text_field(m, *bad = "input", true, s->zone, &s->input) ||
        !count_field(m, *bad = "bytes", &s->bytes) ||
        !count_field(m, *bad = "outputs", &s->outputs))
        return false;
    *bad = "done";
    if (done == NULL || done->type != MSGPACK_OBJECT_BOOLEAN)
        return false;
    s->done = done->via.boolean;
    return true;
}

/* Reads the JSON text of a STATE into *s. */
static int parse(const char *text, size_t len, zp__checkpoint *s, char **why)
{
    msgpack_object o;
    zp__json_error e;
    const char *bad = NULL;
    int rc = zp__json_read(text, len, s->zone, &o, &e);
    if (rc == ZP_EINVAL) {
        *why = zp__strdupf("not JSON (line %d, column %d: %s): corrupt or "
                           "cut short",
                           e.line, e.column, e.reason);
        return rc;
    }
    if (rc != 0)
        return rc;
    const msgpack_object *v =
        o.type == MSGPACK_OBJECT_MAP ? field(&o, "zpipe_state") : NULL;
    if (v == NULL || v->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        *why = zp__strdupf("not a zpipe state file (no \"zpipe_state\" "
                           "version)");
        return ZP_EINVAL;
    }
    if (v->via.u64 > ZP__CHECKPOINT_VERSION) {
        *why =
            zp__strdupf("written by a newer zpipe (state version %llu; "
                        "this one reads version %d)",
                        (unsigned long long)v->via.u64, ZP__CHECKPOINT_VERSION);
        return ZP_ENOTSUP;
    }
    if (!fields(&o, s, &bad)) {
        *why =
            zp__strdupf("corrupt: \"%s\" is missing or not of its type", bad);
        return ZP_EINVAL;
    }
    return 0;
}

int zp__checkpoint_read(const char *path, zp__checkpoint *s, char **why)
{
    char *text = NULL;
    size_t len = 0;
    *s = (zp__checkpoint){.zone = NULL};
    *why = NULL;
    int rc = slurp(path, &text, &len);
    if (rc == 0 && (s->zone = msgpack_zone_new(ZONE_CHUNK)) == NULL)
        rc = ZP_ENOMEM;
    if (rc == 0)
        rc = parse(text, len, s, why);
    if (rc == ZP_EIO)
        *why = zp__strdupf("cannot read it: %s", strerror(errno));
    else if (rc == ZP_EINVAL && *why == NULL)
        *why = zp__strdupf("not a zpipe state file (not a regular file, or "
                           "over %lld MiB)",
                           (long long)(STATE_MAX_BYTES >> 20));
    else if (rc == ZP_ENOMEM && *why == NULL)
        *why = zp__strdupf("out of memory");
    free(text);
    if (rc != 0)
        zp__checkpoint_fini(s);
    return rc;
}

void zp__checkpoint_fini(zp__checkpoint *s)
{
    if (s->zone != NULL)
        msgpack_zone_free(s->zone);
    *s = (zp__checkpoint){.zone = NULL};
}

/* ---- Writing ------------------------------------------------------------- */

static void pack_text(msgpack_packer *pk, const char *s)
{
    if (s == NULL) {
        msgpack_pack_nil(pk);
        return;
    }
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void pack_key(msgpack_packer *pk, const char *key)
{
    msgpack_pack_str_with_body(pk, key, strlen(key));
}

/* The STATE's fields: what it commits first, then what for. */
static void pack_state(msgpack_packer *pk, const zp__checkpoint *s)
{
    const struct {
        const char *key;
        uint64_t n;
    } counts[] = {{"bytes", s->bytes}, {"outputs", s->outputs}};
    const struct {
        const char *key, *text;
    } texts[] = {{"token", s->token},   {"output", s->output},
                 {"format", s->format}, {"spec", s->spec},
                 {"args", s->args},     {"input", s->input}};
    msgpack_pack_map(pk, 10);
    pack_key(pk, "zpipe_state");
    msgpack_pack_int(pk, ZP__CHECKPOINT_VERSION);
    pack_key(pk, "done");
    if (s->done)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        pack_key(pk, counts[i].key);
        msgpack_pack_uint64(pk, counts[i].n);
    }
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        pack_key(pk, texts[i].key);
        pack_text(pk, texts[i].text);
    }
}

/* The JSON text of `s`, a newline after it, into `text`. */
static int state_text(const zp__checkpoint *s, msgpack_sbuffer *text)
{
    msgpack_sbuffer packed;
    msgpack_packer pk;
    msgpack_zone zone;
    msgpack_object o;
    size_t off = 0;
    int rc = ZP_ENOMEM;
    msgpack_sbuffer_init(&packed);
    msgpack_packer_init(&pk, &packed, msgpack_sbuffer_write);
    pack_state(&pk, s);
    if (!msgpack_zone_init(&zone, ZONE_CHUNK))
        goto out_packed;
    if (packed.data != NULL &&
        msgpack_unpack(packed.data, packed.size, &off, &zone, &o) ==
            MSGPACK_UNPACK_SUCCESS &&
        zp__json_write_indented(&o, 2, text) == 0 &&
        msgpack_sbuffer_write(text, "\n", 1) == 0)
        rc = 0;
    msgpack_zone_destroy(&zone);
out_packed:
    msgpack_sbuffer_destroy(&packed);
    return rc;
}

/* Writes all of [data, data + len) to fd, then fsyncs it. */
static int write_synced(int fd, const char *data, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, data + done, len - done);
        if (n < 0 && errno != EINTR)
            return ZP_EIO;
        done += n > 0 ? (size_t)n : 0;
    }
    return fsync(fd) == 0 ? 0 : ZP_EIO;
}

/* Opens the folder that holds `path`; -1 with errno when it cannot. */
static int open_folder(const char *path)
{
    char *copy = strdup(path);
    if (copy == NULL) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int err = errno;
    free(copy);
    errno = err;
    return fd;
}

/* fsyncs the folder that holds `path`, so that a rename in it lasts. */
static int sync_folder(const char *path)
{
    int fd = open_folder(path);
    int rc = fd >= 0 && fsync(fd) == 0 ? 0 : ZP_EIO;
    int err = errno;
    if (fd >= 0)
        close(fd);
    errno = err;
    return rc;
}

bool zp__checkpoint_writable(const char *path)
{
    int fd = open_folder(path);
    bool ok = fd >= 0 && faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) == 0;
    int err = errno;
    if (fd >= 0)
        close(fd);
    errno = err;
    return ok;
}

/* Writes `text` to tmp, synced, and renames it over path. */
static int replace(const char *tmp, const char *path,
                   const msgpack_sbuffer *text, char **why)
{
    const char *step = "creating";
    int rc = ZP_EIO,
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0)
        goto out_say;
    step = "writing";
    rc = write_synced(fd, text->data, text->size);
    int err = errno;
    if (close(fd) != 0 && rc == 0)
        rc = ZP_EIO;
    else
        errno = err;
    if (rc == 0) {
        step = "renaming";
        rc = rename(tmp, path) == 0 ? 0 : ZP_EIO;
    }
    if (rc != 0) {
        err = errno;
        unlink(tmp);
        errno = err;
    }
out_say:
    if (rc != 0)
        *why = zp__strdupf("%s '%s': %s", step, tmp, strerror(errno));
    return rc;
}

int zp__checkpoint_write(const char *path, const zp__checkpoint *s, char **why)
{
    msgpack_sbuffer text;
    char *tmp = zp__strdupf("%s.tmp", path);
    int rc = ZP_ENOMEM;
    *why = NULL;
    msgpack_sbuffer_init(&text);
    if (tmp != NULL && state_text(s, &text) == 0)
        rc = replace(tmp, path, &text, why);
    if (rc == 0 && (rc = sync_folder(path)) != 0)
        *why = zp__strdupf("syncing the folder of '%s': %s", path,
                           strerror(errno));
    if (rc == ZP_ENOMEM && *why == NULL)
        *why = zp__strdupf("writing '%s': out of memory", path);
    msgpack_sbuffer_destroy(&text);
    free(tmp);
    return rc;
}
