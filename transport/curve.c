/* SPDX-License-Identifier: MIT */
/*
 * CURVE key files, allow files and CURVE sockets, see curve.h. Key files
 * are small and read whole (bounded); allow files up to 1 MiB. An
 * allow-list is asked once per new connection (by the ZAP handler,
 * zap.c), so it favours simplicity (a linear scan) over speed. Secret keys
 * are wiped from every buffer that held them, and never appear in a
 * message.
 */
#include "transport/curve.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "core/alloc.h"
#include "core/error.h"

#define KEY_BYTES ZP__CURVE_KEY_BYTES /* a CURVE key, decoded          */
#define KEY_FILE_MAX 4096             /* bytes of a key file, at most */
#define ALLOW_FILE_MAX (1024 * 1024)  /* bytes of an allow file       */
#define ZAP_DOMAIN "zpipe"            /* of our CURVE servers' ZAP requests */
/* The first lines of zpipe keygen's files, which tell the kinds apart. */
#define SECRET_MARK "# zpipe CURVE secret key"
#define PUBLIC_MARK "# zpipe CURVE public key"

/*
 * ZMQ_ZAP_ENFORCE_DOMAIN, a draft option of libzmq since 4.2.3 (its header
 * declares it only to draft builds). With it and a ZAP domain, a CURVE
 * server refuses clients while no ZAP handler is bound instead of
 * admitting them all; with it and no domain, ZAP would not be asked at all.
 */
enum { ZAP_ENFORCE_DOMAIN = 93 };

/* Sets *why (when `why` is not NULL) and returns `err`. */
static int fail(char **why, int err, const char *fmt, ...) ZP__PRINTF(3, 4);

static int fail(char **why, int err, const char *fmt, ...)
{
    va_list ap;
    if (why == NULL)
        return err;
    va_start(ap, fmt);
    *why = zp__vstrdupf(fmt, ap);
    va_end(ap);
    return err;
}

/* ---- Reading files ------------------------------------------------------ */

/* Checks that fd is a regular file within `max`; *mode gets its mode. */
static int check_file(int fd, const char *path, size_t max, mode_t *mode,
                      char **why)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return fail(why, ZP_EINVAL, "cannot read %s: %s", path,
                    strerror(errno));
    *mode = st.st_mode;
    if (!S_ISREG(st.st_mode))
        return fail(why, ZP_EINVAL, "%s is not a regular file", path);
    if (st.st_size < 0 || (uintmax_t)st.st_size > max)
        return fail(why, ZP_EINVAL, "%s is too large (%jd bytes, at most %zu)",
                    path, (intmax_t)st.st_size, max);
    return 0;
}

/* Reads up to max + 1 bytes of fd into buf; *len gets the count. */
static int read_all(int fd, char *buf, size_t max, size_t *len)
{
    size_t n = 0;
    while (n <= max) {
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r == 0)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (r > 0)
            n += (size_t)r;
    }
    *len = n;
    return 0;
}

/* Refuses a secret key file that others than its owner may read. */
static int check_private(const char *path, mode_t mode, char **why)
{
    if ((mode & (S_IRWXG | S_IRWXO)) == 0)
        return 0;
    return fail(why, ZP_EINVAL,
                "secret key file %s is accessible to group or others "
                "(mode %03o); refusing it: run chmod 600 %s",
                path, (unsigned)(mode & 0777), path);
}

/*
 * Reads the whole text file at `path` (at most `max` bytes, no NUL byte)
 * into *text (malloc'ed, NUL-terminated; *size is its allocation, for
 * wiping); *mode gets the file's mode. `what` names the file in messages.
 * Returns 0, ZP_EINVAL or ZP_ENOMEM with *why.
 */
static int read_text(const char *path, const char *what, size_t max,
                     char **text, size_t *size, mode_t *mode, char **why)
{
    size_t len = 0;
    int rc = ZP_EINVAL;
    if (path == NULL)
        return fail(why, ZP_EINVAL, "no %s given", what);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return fail(why, ZP_EINVAL, "cannot open %s %s: %s", what, path,
                    strerror(errno));
    if ((rc = check_file(fd, path, max, mode, why)) != 0)
        goto out_close;
    *size = max + 2;
    if ((*text = zp__malloc(*size)) == NULL) {
        rc = fail(why, ZP_ENOMEM, "out of memory reading %s", path);
        goto out_close;
    }
    if (read_all(fd, *text, max, &len) != 0)
        rc = fail(why, ZP_EINVAL, "cannot read %s: %s", path, strerror(errno));
    else if (len > max)
        rc = fail(why, ZP_EINVAL, "%s is too large (at most %zu bytes)", path,
                  max);
    else if (memchr(*text, '\0', len) != NULL)
        rc = fail(why, ZP_EINVAL, "%s holds binary data, not text", path);
    (*text)[len] = '\0';
out_close:
    close(fd);
    return rc;
}

/* Frees a buffer read by read_text, wiping it first. NULL is harmless. */
static void wipe_free(char *text, size_t size)
{
    if (text == NULL)
        return;
    explicit_bzero(text, size);
    free(text);
}

/* ---- Parsing keys -------------------------------------------------------- */

/* One line of a text, trimmed. */
typedef struct line_reader {
    const char *p; /* the rest of the text */
    int lineno;    /* of the last line read, from 1 */
} line_reader;

enum line_kind { LINE_BLANK, LINE_COMMENT, LINE_KEY, LINE_BAD };

/* The next line of r, without surrounding whitespace; false at the end. */
static bool next_line(line_reader *r, const char **s, size_t *len)
{
    if (*r->p == '\0')
        return false;
    const char *end = strchr(r->p, '\n');
    size_t n = end != NULL ? (size_t)(end - r->p) : strlen(r->p);
    *s = r->p;
    r->p += n + (end != NULL);
    r->lineno++;
    while (n > 0 && isspace((unsigned char)**s)) {
        (*s)++;
        n--;
    }
    while (n > 0 && isspace((unsigned char)(*s)[n - 1]))
        n--;
    *len = n;
    return true;
}

/* Decodes a Z85 key of exactly 40 characters into `key`. */
static bool decode_key(const char *s, size_t len, uint8_t key[KEY_BYTES])
{
    char z85[ZP__CURVE_KEY_LEN + 1];
    if (len != ZP__CURVE_KEY_LEN)
        return false;
    memcpy(z85, s, len);
    z85[len] = '\0';
    bool ok = zmq_z85_decode(key, z85) != NULL;
    explicit_bzero(z85, sizeof z85);
    return ok;
}

/*
 * What a trimmed line is. '#' is a Z85 digit, but never the first of a
 * key: the first digit of a 4-byte block is at most '%' (82 * 85^4 < 2^32 <
 * 83 * 85^4), so a line starting with '#' is always a comment.
 */
static enum line_kind classify(const char *s, size_t len,
                               uint8_t key[KEY_BYTES])
{
    if (len == 0)
        return LINE_BLANK;
    if (s[0] == '#')
        return LINE_COMMENT;
    return decode_key(s, len, key) ? LINE_KEY : LINE_BAD;
}

/* Explains a bad line of a key or allow file. */
static int bad_line(const char *path, int lineno, size_t len, char **why)
{
    if (len != ZP__CURVE_KEY_LEN)
        return fail(why, ZP_EINVAL,
                    "%s:%d: expected a Z85 key of 40 characters, found a "
                    "line of %zu",
                    path, lineno, len);
    return fail(why, ZP_EINVAL,
                "%s:%d: not a Z85 key (a character outside the Z85 alphabet)",
                path, lineno);
}

/* Whether a trimmed line is the comment `mark`. */
static bool is_mark(const char *s, size_t len, const char *mark)
{
    return len == strlen(mark) && memcmp(s, mark, len) == 0;
}

/* A key file whose mark says it holds the other kind of key. */
static int wrong_kind(const char *path, bool secret, char **why)
{
    if (secret)
        return fail(why, ZP_EINVAL,
                    "%s is a public key (its line '" PUBLIC_MARK "' says "
                    "so), where a secret key is wanted: a NAME.key file of "
                    "zpipe keygen",
                    path);
    return fail(why, ZP_EINVAL,
                "%s is a secret key (its line '" SECRET_MARK "' says so), "
                "where a public key is wanted: the NAME.pub file of the pair "
                "(the NAME.key stays with its owner)",
                path);
}

/*
 * Finds the one key of a key file's text; comments may only precede it.
 * A file of the other kind (`secret` says which is wanted), as its mark
 * from zpipe keygen tells, is refused.
 */
static int parse_key_file(const char *text, const char *path, bool secret,
                          char out[41], char **why)
{
    const char *other = secret ? PUBLIC_MARK : SECRET_MARK;
    line_reader r = {text, 0};
    uint8_t key[KEY_BYTES];
    const char *s;
    size_t len;
    bool found = false;
    int rc = 0;
    while (rc == 0 && next_line(&r, &s, &len)) {
        enum line_kind kind = classify(s, len, key);
        if (kind == LINE_BAD)
            rc = bad_line(path, r.lineno, len, why);
        else if (kind == LINE_COMMENT && is_mark(s, len, other))
            rc = wrong_kind(path, secret, why);
        else if (kind != LINE_BLANK && found)
            rc = fail(why, ZP_EINVAL,
                      "%s:%d: nothing may follow the key of a key file", path,
                      r.lineno);
        else if (kind == LINE_KEY) {
            memcpy(out, s, ZP__CURVE_KEY_LEN);
            out[ZP__CURVE_KEY_LEN] = '\0';
            found = true;
        }
    }
    explicit_bzero(key, sizeof key);
    if (rc == 0 && !found)
        rc = fail(why, ZP_EINVAL, "%s holds no key", path);
    return rc;
}

int zp__curve_read_key(const char *path, bool secret, char out[41], char **why)
{
    const char *what = secret ? "secret key file" : "public key file";
    char *text = NULL;
    size_t size = 0;
    mode_t mode = 0;
    int rc = read_text(path, what, KEY_FILE_MAX, &text, &size, &mode, why);
    if (rc == 0)
        rc = parse_key_file(text, path, secret, out, why);
    if (rc == 0 && secret)
        rc = check_private(path, mode, why);
    if (rc != 0)
        explicit_bzero(out, ZP__CURVE_KEY_LEN + 1);
    wipe_free(text, size);
    return rc;
}

/* ---- Key generation ------------------------------------------------------ */

/* Writes all of buf to fd. Returns 0, or -1 with errno. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno != EINTR)
            return -1;
        if (w > 0) {
            buf += w;
            len -= (size_t)w;
        }
    }
    return 0;
}

/* Why `path` cannot be created (errno says): a path that names no
 * folder, an existing file, no permission... all mistakes of the caller's
 * (ZP_EINVAL), unlike a write that fails once the file exists. */
static int cannot_create(const char *path, char **why)
{
    const char *slash = strrchr(path, '/');
    if (errno == EEXIST)
        return fail(why, ZP_EINVAL, "%s exists; refusing to overwrite a key",
                    path);
    if (errno == ENOENT && slash != NULL)
        return fail(why, ZP_EINVAL,
                    "cannot create %s: there is no folder '%.*s'", path,
                    slash == path ? 1 : (int)(slash - path), path);
    return fail(why, ZP_EINVAL, "cannot create %s: %s", path, strerror(errno));
}

/* Creates `path` (never over an existing file) holding one key after its
 * mark. */
static int write_key_file(const char *path, const char *mark, const char *key,
                          mode_t mode, char **why)
{
    char text[128];
    int fd =
        open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return cannot_create(path, why);
    int n = snprintf(text, sizeof text, "%s\n%s\n", mark, key);
    int rc = 0;
    /* The mode is exact, whatever the umask. */
    if (fchmod(fd, mode) != 0 || write_all(fd, text, (size_t)n) != 0)
        rc = fail(why, ZP_EIO, "cannot write %s: %s", path, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = fail(why, ZP_EIO, "cannot write %s: %s", path, strerror(errno));
    if (rc != 0)
        unlink(path);
    explicit_bzero(text, sizeof text);
    return rc;
}

/* Makes a key pair and writes its two files. */
static int write_pair(const char *key_path, const char *pub_path, char **why)
{
    char pub[ZP__CURVE_KEY_LEN + 1], sec[ZP__CURVE_KEY_LEN + 1];
    int rc;
    if (zmq_curve_keypair(pub, sec) != 0)
        return fail(why, ZP_EINVAL, "cannot make a CURVE key pair: %s",
                    zmq_strerror(zmq_errno()));
    rc = write_key_file(key_path, SECRET_MARK, sec, 0600, why);
    if (rc == 0 &&
        (rc = write_key_file(pub_path, PUBLIC_MARK, pub, 0644, why)) != 0)
        unlink(key_path);
    explicit_bzero(sec, sizeof sec);
    return rc;
}

int zp__curve_keygen(const char *name, char **why)
{
    int rc = ZP_ENOMEM;
    if (name == NULL || *name == '\0')
        return fail(why, ZP_EINVAL, "a key pair needs a name");
    char *key_path = zp__strdupf("%s.key", name);
    char *pub_path = zp__strdupf("%s.pub", name);
    if (key_path == NULL || pub_path == NULL) {
        fail(why, ZP_ENOMEM, "out of memory");
        goto out_free;
    }
    rc = write_pair(key_path, pub_path, why);
out_free:
    free(key_path);
    free(pub_path);
    return rc;
}

/* ---- CURVE sockets ------------------------------------------------------- */

/* Sets a socket option, explaining a failure. */
static int set_opt(void *sock, int opt, const void *v, size_t len,
                   const char *what, char **why)
{
    if (zmq_setsockopt(sock, opt, v, len) == 0)
        return 0;
    return fail(why, ZP_EIO, "cannot set up %s: %s", what,
                zmq_strerror(zmq_errno()));
}

/* Reads the secret key at `path` and derives its public key. */
static int read_pair(const char *path, char sec[41], char pub[41], char **why)
{
    int rc = zp__curve_read_key(path, true, sec, why);
    if (rc == 0 && zmq_curve_public(pub, sec) != 0)
        rc = fail(why, ZP_EINVAL, "cannot derive the public key of %s: %s",
                  path, zmq_strerror(zmq_errno()));
    return rc;
}

int zp__curve_server(void *sock, const char *secret_path, char **why)
{
    char sec[ZP__CURVE_KEY_LEN + 1], pub[ZP__CURVE_KEY_LEN + 1];
    const char *what = "a CURVE server";
    int one = 1;
    int rc = read_pair(secret_path, sec, pub, why);
    if (rc == 0)
        rc = set_opt(sock, ZMQ_CURVE_SERVER, &one, sizeof one, what, why);
    if (rc == 0)
        rc = set_opt(sock, ZMQ_CURVE_SECRETKEY, sec, ZP__CURVE_KEY_LEN, what,
                     why);
    if (rc == 0)
        rc = set_opt(sock, ZMQ_CURVE_PUBLICKEY, pub, ZP__CURVE_KEY_LEN, what,
                     why);
    if (rc == 0)
        rc = set_opt(sock, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN, strlen(ZAP_DOMAIN), what,
                     why);
    /* Best effort: a libzmq without draft options cannot enforce ZAP. */
    if (rc == 0)
        zmq_setsockopt(sock, ZAP_ENFORCE_DOMAIN, &one, sizeof one);
    explicit_bzero(sec, sizeof sec);
    return rc;
}

int zp__curve_client(void *sock, const char *server_pub_path,
                     const char *secret_path, char **why)
{
    char server[ZP__CURVE_KEY_LEN + 1];
    char sec[ZP__CURVE_KEY_LEN + 1], pub[ZP__CURVE_KEY_LEN + 1];
    const char *what = "a CURVE client";
    int rc = zp__curve_read_key(server_pub_path, false, server, why);
    if (rc == 0)
        rc = read_pair(secret_path, sec, pub, why);
    if (rc == 0)
        rc = set_opt(sock, ZMQ_CURVE_SERVERKEY, server, ZP__CURVE_KEY_LEN, what,
                     why);
    if (rc == 0)
        rc = set_opt(sock, ZMQ_CURVE_PUBLICKEY, pub, ZP__CURVE_KEY_LEN, what,
                     why);
    if (rc == 0)
        rc = set_opt(sock, ZMQ_CURVE_SECRETKEY, sec, ZP__CURVE_KEY_LEN, what,
                     why);
    explicit_bzero(sec, sizeof sec);
    return rc;
}

/* ---- Allow files --------------------------------------------------------- */

/* Appends a key to the allow-list, growing it by doubling. */
static int allow_add(zp__curve_allow *a, const uint8_t key[KEY_BYTES],
                     size_t *cap)
{
    if (a->n == *cap) {
        size_t n = *cap == 0 ? 16 : *cap * 2;
        void *p = zp__realloc(a->keys, n * sizeof *a->keys);
        if (p == NULL)
            return ZP_ENOMEM;
        a->keys = p;
        *cap = n;
    }
    assert(a->n < *cap);
    memcpy(a->keys[a->n++], key, KEY_BYTES);
    return 0;
}

/* Fills the allow-list from the text of `path`. A key after the mark of
 * a secret key file (`cat *.key` where `cat *.pub` was meant) is refused:
 * its owner's secret would be no secret anymore, and nobody could connect
 * with it. */
static int parse_allow_file(zp__curve_allow *a, const char *text,
                            const char *path, char **why)
{
    line_reader r = {text, 0};
    uint8_t key[KEY_BYTES];
    const char *s;
    size_t len, cap = 0;
    bool secret = false; /* the key that follows is a secret key */
    int rc = 0;
    while (rc == 0 && next_line(&r, &s, &len)) {
        enum line_kind kind = classify(s, len, key);
        if (kind == LINE_COMMENT &&
            (is_mark(s, len, SECRET_MARK) || is_mark(s, len, PUBLIC_MARK)))
            secret = is_mark(s, len, SECRET_MARK);
        if (kind == LINE_BAD)
            rc = bad_line(path, r.lineno, len, why);
        else if (kind == LINE_KEY && secret)
            rc = fail(why, ZP_EINVAL,
                      "%s:%d: a secret key (after the line '" SECRET_MARK
                      "'): an allow file lists public keys, from NAME.pub "
                      "files",
                      path, r.lineno);
        else if (kind == LINE_KEY && allow_add(a, key, &cap) != 0)
            rc = fail(why, ZP_ENOMEM, "out of memory reading %s", path);
        secret = secret && kind != LINE_KEY; /* a mark marks one key */
    }
    if (rc == 0 && a->n == 0)
        rc = fail(why, ZP_EINVAL,
                  "%s lists no public keys: no client could connect", path);
    return rc;
}

int zp__curve_allow_read(zp__curve_allow *a, const char *path, char **why)
{
    char *text = NULL;
    size_t size = 0;
    mode_t mode = 0;
    *a = (zp__curve_allow){NULL, 0};
    int rc = read_text(path, "CURVE allow file", ALLOW_FILE_MAX, &text, &size,
                       &mode, why);
    if (rc == 0)
        rc = parse_allow_file(a, text, path, why);
    wipe_free(text, size);
    if (rc != 0)
        zp__curve_allow_fini(a);
    return rc;
}

bool zp__curve_allow_has(const zp__curve_allow *a,
                         const uint8_t key[ZP__CURVE_KEY_BYTES])
{
    for (size_t i = 0; i < a->n; i++)
        if (memcmp(a->keys[i], key, KEY_BYTES) == 0)
            return true;
    return false;
}

void zp__curve_allow_fini(zp__curve_allow *a)
{
    if (a == NULL)
        return;
    free(a->keys);
    *a = (zp__curve_allow){NULL, 0};
}
