/* SPDX-License-Identifier: MIT */
/*
 * The JSON writer, see json.h for the mapping: appends the text of a
 * msgpack object to a msgpack_sbuffer, on one line (each output of the
 * zpipe CLI) or indented for people (the statistics file). Any msgpack
 * value within the depth limit has a text: what JSON cannot say (invalid
 * UTF-8, NaN, keys that are not strings) is written as json.h says, never
 * refused. One pass over the value, in time and space linear in its size:
 * the text of a key that is not a string is escaped as it is written, once,
 * however deep keys nest in keys. The only errors are a value nested deeper
 * than ZP__JSON_MAX_DEPTH and running out of memory.
 */
#include "core/json.h"

#include <assert.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_text.h"

typedef struct writer {
    msgpack_sbuffer *sb; /* borrowed */
    int indent;          /* spaces per level; 0: all on one line */
    int level;           /* containers open, those of keys too; never
                            negative, at most ZP__JSON_MAX_DEPTH */
    bool in_key;         /* writing the text of a key that is not a string:
                            what is put is escaped into that string */
    bool too_deep;       /* sticky: a container beyond the limit was met */
    bool out_of_memory;  /* sticky */
} writer;

static void put_raw(writer *w, const char *s, size_t n)
{
    if (!w->out_of_memory && n > 0 && msgpack_sbuffer_write(w->sb, s, n) != 0)
        w->out_of_memory = true;
}

/* Appends text; inside a key, escaped as a JSON string's characters. The
 * writer never puts a control character (put_string escapes them), so
 * '"' and the backslash are the only characters to escape. */
static void put(writer *w, const char *s, size_t n)
{
    size_t run = 0;
    if (!w->in_key) {
        put_raw(w, s, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        assert((unsigned char)s[i] >= 0x20);
        if (s[i] != '"' && s[i] != '\\')
            continue;
        put_raw(w, s + run, i - run);
        put_raw(w, "\\", 1);
        run = i; /* the character itself starts the next run */
    }
    put_raw(w, s + run, n - run);
}

/* Indented: a new line, at the current level. */
static void new_line(writer *w)
{
    static const char spaces[] = "\n                                ";
    if (w->indent == 0)
        return;
    assert(w->level >= 0);
    size_t n = (size_t)w->level * (size_t)w->indent;
    put(w, spaces, 1);
    for (; n > sizeof spaces - 2; n -= sizeof spaces - 2)
        put(w, spaces + 1, sizeof spaces - 2);
    put(w, spaces + 1, n);
}

/* Before element i of the container just opened. */
static void next_element(writer *w, uint32_t i)
{
    if (i > 0)
        put(w, ",", 1);
    new_line(w);
}

static void put_u64(writer *w, uint64_t v, bool neg)
{
    char buf[24];
    char *p = buf + sizeof buf;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    if (neg)
        *--p = '-';
    put(w, p, (size_t)(buf + sizeof buf - p));
}

/* The shortest text that reads back as the same double (or float). */
static void put_real(writer *w, double v, bool single)
{
    char buf[40];
    int n = 0;
    if (!isfinite(v)) {
        put(w, "null", 4);
        return;
    }
    locale_t c = zp__json_c_locale();
    locale_t old = c != (locale_t)0 ? uselocale(c) : (locale_t)0;
    /* Digits beyond the type's guaranteed ones (15 or 6) are only needed
     * when fewer do not read back; subnormals may need fewer still. */
    bool tiny = fabs(v) < (single ? FLT_MIN : DBL_MIN);
    for (int prec = tiny     ? 1
                    : single ? 6
                             : 15;
         prec <= (single ? 9 : 17); prec++) {
        n = snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (single ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v)
            break;
    }
    if (old != (locale_t)0)
        uselocale(old);
    put(w, buf, (size_t)n);
    if (strpbrk(buf, ".e") == NULL)
        put(w, ".0", 2); /* stays a real when read back */
}

static void put_escape(writer *w, unsigned char c)
{
    static const char from[] = "\"\\\b\f\n\r\t", to[] = "\"\\bfnrt";
    const char *hit = c != '\0' ? strchr(from, c) : NULL;
    char buf[8];
    if (hit != NULL) {
        buf[0] = '\\';
        buf[1] = to[hit - from];
        put(w, buf, 2);
    } else {
        snprintf(buf, sizeof buf, "\\u%04x", c);
        put(w, buf, 6);
    }
}

static void put_string(writer *w, const char *s, size_t n)
{
    size_t i = 0, run = 0;
    put(w, "\"", 1);
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t k = c >= 0x80 ? zp__json_utf8_len(s + i, n - i) : 0;
        if ((c >= 0x20 && c < 0x80 && c != '"' && c != '\\') || k > 0) {
            i += k > 0 ? k : 1;
            continue;
        }
        put(w, s + run, i - run);
        if (c >= 0x80)
            put(w, "\xEF\xBF\xBD", 3); /* U+FFFD for an invalid byte */
        else
            put_escape(w, c);
        run = ++i;
    }
    put(w, s + run, n - run);
    put(w, "\"", 1);
}

static void put_base64(writer *w, const char *data, size_t n)
{
    const unsigned char *p = (const unsigned char *)data;
    char buf[256]; /* the text of 192 bytes */
    put(w, "\"", 1);
    for (size_t i = 0; i < n; i += 192) {
        size_t k =
            zp__json_base64_encode(p + i, n - i < 192 ? n - i : 192, buf);
        put(w, buf, k);
    }
    put(w, "\"", 1);
}

static void put_value(writer *w, const msgpack_object *o);

/* A map key: a string as it is, anything else as the string of its JSON
 * text, on one line. Within that text a key is written as its own text,
 * quoted only when it is a string: escaping each nested key again would
 * double its backslashes at each level. */
static void put_key(writer *w, const msgpack_object *k)
{
    if (k->type == MSGPACK_OBJECT_STR || w->in_key) {
        put_value(w, k);
        return;
    }
    int indent = w->indent;
    put_raw(w, "\"", 1);
    w->in_key = true;
    w->indent = 0;
    put_value(w, k);
    w->in_key = false;
    w->indent = indent;
    put_raw(w, "\"", 1);
}

/* Opens an array or object: `bracket`, then one level deeper. False, and
 * nothing written, beyond the depth limit. */
static bool open_container(writer *w, const char *bracket)
{
    assert(w->level >= 0 && w->level <= ZP__JSON_MAX_DEPTH);
    if (w->level == ZP__JSON_MAX_DEPTH) {
        w->too_deep = true;
        return false;
    }
    put(w, bracket, 1);
    w->level++;
    return true;
}

/* Closes a container of `size` elements: back a level, its own line when
 * indented and not empty, then `bracket`. */
static void close_container(writer *w, uint32_t size, const char *bracket)
{
    assert(w->level > 0);
    w->level--;
    if (size > 0)
        new_line(w);
    put(w, bracket, 1);
}

static void put_array(writer *w, const msgpack_object_array *a)
{
    if (!open_container(w, "["))
        return;
    for (uint32_t i = 0; i < a->size; i++) {
        next_element(w, i);
        put_value(w, &a->ptr[i]);
    }
    close_container(w, a->size, "]");
}

static void put_map(writer *w, const msgpack_object_map *m)
{
    if (!open_container(w, "{"))
        return;
    for (uint32_t i = 0; i < m->size; i++) {
        next_element(w, i);
        put_key(w, &m->ptr[i].key);
        put(w, ": ", w->indent > 0 ? 2 : 1);
        put_value(w, &m->ptr[i].val);
    }
    close_container(w, m->size, "}");
}

static void put_ext(writer *w, const msgpack_object_ext *e)
{
    put(w, "{\"$ext\":[", 9);
    put_u64(w, (uint64_t)(e->type < 0 ? -e->type : e->type), e->type < 0);
    put(w, ",", 1);
    put_base64(w, e->ptr, e->size);
    put(w, "]}", 2);
}

static void put_value(writer *w, const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: put(w, "null", 4); break;
    case MSGPACK_OBJECT_BOOLEAN:
        put(w, o->via.boolean ? "true" : "false", o->via.boolean ? 4 : 5);
        break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: put_u64(w, o->via.u64, false); break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        put_u64(w, (uint64_t)(-(o->via.i64 + 1)) + 1, true);
        break;
    case MSGPACK_OBJECT_FLOAT32: put_real(w, o->via.f64, true); break;
    case MSGPACK_OBJECT_FLOAT64: put_real(w, o->via.f64, false); break;
    case MSGPACK_OBJECT_STR:
        put_string(w, o->via.str.ptr, o->via.str.size);
        break;
    case MSGPACK_OBJECT_ARRAY: put_array(w, &o->via.array); break;
    case MSGPACK_OBJECT_MAP: put_map(w, &o->via.map); break;
    case MSGPACK_OBJECT_BIN:
        put(w, "{\"$bin\":", 8);
        put_base64(w, o->via.bin.ptr, o->via.bin.size);
        put(w, "}", 1);
        break;
    case MSGPACK_OBJECT_EXT: put_ext(w, &o->via.ext); break;
    }
}

int zp__json_write(const msgpack_object *o, msgpack_sbuffer *sb)
{
    return zp__json_write_indented(o, 0, sb);
}

int zp__json_write_indented(const msgpack_object *o, int indent,
                            msgpack_sbuffer *sb)
{
    assert(indent >= 0 && indent <= 16);
    writer w = {.sb = sb, .indent = indent};
    put_value(&w, o);
    assert(w.level == 0 && !w.in_key);
    if (w.out_of_memory)
        return ZP_ENOMEM;
    return w.too_deep ? ZP_EINVAL : 0;
}
