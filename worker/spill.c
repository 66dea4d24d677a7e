/* SPDX-License-Identifier: MIT */
/*
 * Spill files of join stages, see spill.h.
 */
#include "worker/spill.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fds.h"
#include "transport/batch.h"

/* Bytes buffered before a write(). */
#define WRITE_BUF (1u << 20)
/* Bytes read at a time on replay. */
#define READ_CHUNK (1u << 20)
/* The largest item replay takes: a bigger one means a corrupt file. */
#define ITEM_MAX ((size_t)1 << 30)

struct zp__spill {
    int fd;        /* owned                                        */
    char *buf;     /* owned; WRITE_BUF bytes being appended         */
    size_t used;   /* bytes of buf not written yet                  */
    uint64_t size; /* the file's length, buffered bytes included    */
    uint64_t left; /* replay: bytes of the file not read yet        */
    char *rbuf;    /* owned; replay: bytes read, rbuf[rpos..rlen)   */
    size_t rcap;   /*   not taken yet                               */
    size_t rpos, rlen;
    msgpack_zone zone; /* the replayed item's, when `zoned`             */
    bool zoned;
    msgpack_object item;
};

/* Writes all of data[0..len). Returns 0 or ZP_EIO. */
static int write_all(int fd, const char *data, size_t len)
{
    return zp__fds_write_all(fd, data, len) ? 0 : ZP_EIO;
}

/* A new file's name is on disk only once its folder's is. */
static void sync_folder(const char *path)
{
    char *copy = zp__strdup(path);
    int fd =
        copy ? open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        fdatasync(fd);
        close(fd);
    }
    free(copy);
}

/* Opens the file to keep its first `keep` bytes. */
static int open_file(zp__spill *s, const char *path, uint64_t keep, char **why)
{
    int flags = O_RDWR | O_CLOEXEC | (keep == 0 ? O_CREAT | O_TRUNC : 0);
    s->fd = open(path, flags, 0600);
    if (s->fd < 0) {
        *why = zp__strdupf("cannot open the spill file '%s': %s", path,
                           strerror(errno));
        return keep > 0 && errno == ENOENT ? ZP_EINVAL : ZP_EIO;
    }
    off_t end = lseek(s->fd, 0, SEEK_END);
    if (end >= 0 && (uint64_t)end < keep) {
        *why = zp__strdupf("the spill file '%s' is %lld bytes, shorter "
                           "than the %llu bytes the checkpoint holds",
                           path, (long long)end, (unsigned long long)keep);
        return ZP_EINVAL;
    }
    if (end < 0 || ftruncate(s->fd, (off_t)keep) != 0 ||
        lseek(s->fd, (off_t)keep, SEEK_SET) < 0) {
        *why = zp__strdupf("cannot cut the spill file '%s': %s", path,
                           strerror(errno));
        return ZP_EIO;
    }
    if (keep == 0)
        sync_folder(path);
    return 0;
}

int zp__spill_open(zp__spill **out, const char *path, uint64_t keep, char **why)
{
    zp__spill *s = zp__calloc(1, sizeof *s);
    *out = s;
    if (s == NULL)
        return ZP_ENOMEM;
    s->fd = -1;
    s->size = s->left = keep;
    s->buf = zp__malloc(WRITE_BUF);
    s->zoned = s->buf != NULL && msgpack_zone_init(&s->zone, 4096);
    int rc = s->zoned ? open_file(s, path, keep, why) : ZP_ENOMEM;
    if (rc != 0)
        zp__spill_destroy(out);
    return rc;
}

/* Reads more of the kept bytes behind those not taken yet. Returns 0,
 * ZP_EPROTO (nothing left to read, or an item too large) or ZP_EIO. */
static int read_more(zp__spill *s)
{
    size_t have = s->rlen - s->rpos;
    if (s->left == 0 || have >= ITEM_MAX)
        return ZP_EPROTO;
    if (have > 0)
        memmove(s->rbuf, s->rbuf + s->rpos, have);
    s->rpos = 0;
    s->rlen = have;
    size_t want = s->left < READ_CHUNK ? (size_t)s->left : READ_CHUNK;
    if (have + want > s->rcap) {
        char *grown = zp__realloc(s->rbuf, have + want);
        if (grown == NULL)
            return ZP_ENOMEM;
        s->rbuf = grown;
        s->rcap = have + want;
    }
    off_t at = (off_t)(s->size - s->left);
    ssize_t n = pread(s->fd, s->rbuf + have, want, at);
    if (n <= 0)
        return ZP_EIO;
    s->rlen += (size_t)n;
    s->left -= (uint64_t)n;
    return 0;
}

int zp__spill_replay(zp__spill *s, const msgpack_object **item)
{
    size_t size = 0;
    int rc = 0;
    msgpack_zone_clear(&s->zone);
    if (s->rpos == s->rlen && s->left == 0)
        return 0;
    while (s->rpos == s->rlen ||
           (size = zp__msgpack_size(s->rbuf + s->rpos, s->rlen - s->rpos)) == 0)
        if ((rc = read_more(s)) != 0)
            return rc;
    size_t off = 0;
    if (msgpack_unpack(s->rbuf + s->rpos, size, &off, &s->zone, &s->item) !=
        MSGPACK_UNPACK_SUCCESS)
        return ZP_EPROTO;
    s->rpos += size;
    *item = &s->item;
    return 1;
}

/* Writes the buffer out and starts its writeback at once, so that the
 * disk works while the join does and a marker's fdatasync waits only for
 * the last buffer's worth. */
static int write_out(zp__spill *s)
{
    int rc = write_all(s->fd, s->buf, s->used);
    if (rc == 0)
        sync_file_range(s->fd, (off_t)(s->size - s->used), (off_t)s->used,
                        SYNC_FILE_RANGE_WRITE);
    s->used = 0;
    return rc;
}

int zp__spill_append(zp__spill *s, const char *item, size_t len)
{
    assert(s->left == 0 && s->rpos == s->rlen); /* replayed first */
    int rc = 0;
    if (s->used + len > WRITE_BUF)
        rc = write_out(s);
    if (rc == 0 && len > WRITE_BUF)
        rc = write_all(s->fd, item, len);
    else if (rc == 0)
        memcpy(s->buf + s->used, item, len);
    if (rc == 0 && len <= WRITE_BUF)
        s->used += len;
    if (rc == 0)
        s->size += len;
    return rc;
}

int zp__spill_sync(zp__spill *s, uint64_t *len)
{
    int rc = write_all(s->fd, s->buf, s->used);
    s->used = 0;
    if (rc == 0 && fdatasync(s->fd) != 0)
        rc = ZP_EIO;
    *len = s->size;
    return rc;
}

void zp__spill_destroy(zp__spill **sp)
{
    zp__spill *s = *sp;
    if (s == NULL)
        return;
    if (s->fd >= 0)
        close(s->fd);
    if (s->zoned)
        msgpack_zone_destroy(&s->zone);
    free(s->buf);
    free(s->rbuf);
    free(s);
    *sp = NULL;
}

void zp__spill_slot_put(zp__spill_slot *slot, uint64_t epoch, uint64_t bytes,
                        uint64_t outputs)
{
    atomic_store_explicit(&slot->bytes, bytes, memory_order_relaxed);
    atomic_store_explicit(&slot->outputs, outputs, memory_order_relaxed);
    atomic_store_explicit(&slot->epoch, epoch, memory_order_release);
}
