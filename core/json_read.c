/* SPDX-License-Identifier: MIT */
/*
 * The JSON reader, see json.h for the mapping: a strict RFC 8259 parser
 * written for msgpack rather than jansson's, because jansson cannot hold
 * the integers from 2^63 to 2^64-1 that msgpack has, and because the zpipe
 * CLI reads one JSON value per input line: the reader builds the msgpack
 * object straight into a zone, in one pass, without a tree of its own.
 * Children of the containers being read wait on one stack until their
 * container closes and its size is known. It never reads past the text it
 * is given, and never trusts it: every refusal is an error with a place.
 */
#include "core/json.h"

#include <assert.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/json_text.h"

typedef struct reader {
    const char *start, *end; /* borrowed; the text */
    const char *at;          /* the next character */
    msgpack_zone *zone;      /* borrowed; where the value goes */
    msgpack_object *stack;   /* owned; children of the open containers */
    size_t top, cap;
    int depth;          /* containers open */
    const char *why;    /* static; the first error, or NULL */
    const char *where;  /* where it is */
    bool out_of_memory; /* the error is that */
} reader;

static bool refuse(reader *rd, const char *at, const char *why)
{
    if (rd->why == NULL) {
        rd->why = why;
        rd->where = at;
    }
    return false;
}

static bool no_memory(reader *rd)
{
    rd->out_of_memory = rd->why == NULL;
    return refuse(rd, rd->at, "out of memory");
}

static void skip_space(reader *rd)
{
    while (rd->at < rd->end && (*rd->at == ' ' || *rd->at == '\t' ||
                                *rd->at == '\n' || *rd->at == '\r'))
        rd->at++;
}

/* The next character, or -1 at the end. */
static int peek(const reader *rd)
{
    return rd->at < rd->end ? (unsigned char)*rd->at : -1;
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static bool push(reader *rd, const msgpack_object *o)
{
    if (rd->top == rd->cap) {
        size_t cap = rd->cap ? rd->cap * 2 : 64;
        msgpack_object *s = zp__realloc(rd->stack, cap * sizeof *s);
        if (s == NULL)
            return no_memory(rd);
        rd->stack = s;
        rd->cap = cap;
    }
    assert(rd->top < rd->cap);
    rd->stack[rd->top++] = *o;
    return true;
}

static bool read_value(reader *rd, msgpack_object *o);

static int hex_value(int c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits after "\u" at rd->at into *unit. */
static bool read_hex4(reader *rd, uint32_t *unit)
{
    const char *esc = rd->at;
    assert(rd->end - rd->at >= 2 && esc[0] == '\\' && esc[1] == 'u');
    *unit = 0;
    rd->at += 2;
    for (int i = 0; i < 4; i++) {
        int v = hex_value(peek(rd));
        if (v < 0)
            return refuse(rd, esc, "invalid \\u escape: expected 4 hex digits");
        *unit = *unit << 4 | (uint32_t)v;
        rd->at++;
    }
    return true;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    assert(cp <= 0x10FFFF && (cp < 0xD800 || cp > 0xDFFF));
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A \u escape (a surrogate pair counting as one) at rd->at into out. */
static bool read_unicode(reader *rd, char *out, size_t *n)
{
    const char *esc = rd->at;
    uint32_t cp, low;
    if (!read_hex4(rd, &cp))
        return false;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return refuse(rd, esc, "invalid \\u escape: a lone low surrogate");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (rd->end - rd->at < 6 || rd->at[0] != '\\' || rd->at[1] != 'u' ||
            !read_hex4(rd, &low) || low < 0xDC00 || low > 0xDFFF)
            return refuse(rd, esc,
                          "invalid \\u escape: a high surrogate without "
                          "its low surrogate");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    *n += put_utf8(out + *n, cp);
    return true;
}

/* The escape at rd->at (a backslash, not the string's last character). */
static bool read_escape(reader *rd, char *out, size_t *n)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *hit = rd->at[1] != '\0' ? strchr(from, rd->at[1]) : NULL;
    assert(rd->at[0] == '\\' && rd->end - rd->at >= 2);
    if (rd->at[1] == 'u')
        return read_unicode(rd, out, n);
    if (hit == NULL)
        return refuse(rd, rd->at, "invalid escape in a string");
    out[(*n)++] = to[hit - from];
    rd->at += 2;
    return true;
}

/* Copies the string's characters from rd->at to `close` into out. */
static bool read_chars(reader *rd, const char *close, char *out, size_t *n)
{
    while (rd->at < close) {
        const char *run = rd->at;
        while (rd->at < close && (unsigned char)*rd->at >= 0x20 &&
               (unsigned char)*rd->at < 0x80 && *rd->at != '\\')
            rd->at++;
        memcpy(out + *n, run, (size_t)(rd->at - run));
        *n += (size_t)(rd->at - run);
        if (rd->at == close)
            break;
        unsigned char c = (unsigned char)*rd->at;
        if (c == '\\') {
            if (!read_escape(rd, out, n))
                return false;
            continue;
        }
        if (c < 0x20)
            return refuse(rd, rd->at,
                          "control character in a string (write it as an "
                          "escape such as \\n)");
        size_t k = zp__json_utf8_len(rd->at, (size_t)(close - rd->at));
        if (k == 0)
            return refuse(rd, rd->at, "invalid UTF-8 in a string");
        memcpy(out + *n, rd->at, k);
        *n += k;
        rd->at += k;
    }
    return true;
}

/* A string at rd->at (its opening quote) into *out, in the zone. */
static bool read_string(reader *rd, msgpack_object_str *out)
{
    assert(*rd->at == '"');
    const char *open = rd->at++;
    const char *close = rd->at;
    while (close < rd->end && *close != '"')
        close += *close == '\\' && close + 1 < rd->end ? 2 : 1;
    if (close >= rd->end)
        return refuse(rd, open, "unterminated string");
    if (close - rd->at > (ptrdiff_t)UINT32_MAX)
        return refuse(rd, open, "string longer than 4 GiB");
    /* Escapes only shrink: the raw length is room enough. */
    char *buf = msgpack_zone_malloc(rd->zone, (size_t)(close - rd->at) + 1);
    size_t n = 0;
    if (buf == NULL)
        return no_memory(rd);
    if (!read_chars(rd, close, buf, &n))
        return false;
    assert(n <= (size_t)(close - open - 1));
    rd->at = close + 1;
    out->ptr = buf;
    out->size = (uint32_t)n;
    return true;
}

/* An integer token [s, end) (no sign) that fits msgpack, into *o. */
static bool exact_integer(const char *s, const char *end, bool neg,
                          msgpack_object *o)
{
    uint64_t v = 0;
    for (; s < end; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (neg && v > (uint64_t)1 << 63)
        return false;
    if (neg && v > 0) {
        o->type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
        o->via.i64 = -(int64_t)(v - 1) - 1;
    } else {
        o->type = MSGPACK_OBJECT_POSITIVE_INTEGER;
        o->via.u64 = v;
    }
    return true;
}

/* The number token [s, end) as a double, whatever the current locale. */
static bool real_number(reader *rd, const char *s, const char *end,
                        msgpack_object *o)
{
    char small[64];
    size_t len = (size_t)(end - s);
    char *copy = len < sizeof small ? small : zp__malloc(len + 1);
    if (copy == NULL)
        return no_memory(rd);
    memcpy(copy, s, len);
    copy[len] = '\0';
    locale_t c = zp__json_c_locale();
    double v = c != (locale_t)0 ? strtod_l(copy, NULL, c) : strtod(copy, NULL);
    if (copy != small)
        free(copy);
    if (isinf(v))
        return refuse(rd, s, "number out of range");
    o->type = MSGPACK_OBJECT_FLOAT64;
    o->via.f64 = v;
    return true;
}

/* Skips digits; false when there is none. */
static bool digits(reader *rd)
{
    const char *from = rd->at;
    while (is_digit(peek(rd)))
        rd->at++;
    return rd->at > from;
}

static bool read_number(reader *rd, msgpack_object *o)
{
    const char *s = rd->at;
    bool neg = *s == '-', real = false;
    rd->at += neg;
    if (peek(rd) == '0')
        rd->at++;
    else if (!digits(rd))
        return refuse(rd, s, "invalid number");
    const char *int_end = rd->at;
    if (peek(rd) == '.') {
        rd->at++;
        if (!digits(rd))
            return refuse(rd, rd->at, "expected a digit after '.'");
        real = true;
    }
    if (peek(rd) == 'e' || peek(rd) == 'E') {
        rd->at++;
        if (peek(rd) == '+' || peek(rd) == '-')
            rd->at++;
        if (!digits(rd))
            return refuse(rd, rd->at, "expected a digit in the exponent");
        real = true;
    }
    if (!real && exact_integer(s + neg, int_end, neg, o))
        return true;
    return real_number(rd, s, rd->at, o);
}

static bool read_literal(reader *rd, msgpack_object *o)
{
    static const struct {
        const char *word;
        msgpack_object value;
    } literals[] = {
        {"true", {.type = MSGPACK_OBJECT_BOOLEAN, .via.boolean = true}},
        {"false", {.type = MSGPACK_OBJECT_BOOLEAN, .via.boolean = false}},
        {"null", {.type = MSGPACK_OBJECT_NIL}},
    };
    size_t avail = (size_t)(rd->end - rd->at);
    for (size_t i = 0; i < sizeof literals / sizeof literals[0]; i++) {
        size_t n = strlen(literals[i].word);
        if (avail >= n && memcmp(rd->at, literals[i].word, n) == 0) {
            *o = literals[i].value;
            rd->at += n;
            return true;
        }
    }
    return refuse(rd, rd->at, "expected a value");
}

/* Opens a container at rd->at. */
static bool enter(reader *rd)
{
    if (rd->depth == ZP__JSON_MAX_DEPTH)
        return refuse(rd, rd->at,
                      "arrays and objects nested deeper than 32 levels");
    assert(*rd->at == '[' || *rd->at == '{');
    rd->depth++;
    rd->at++;
    return true;
}

/* After an element: true with *done at the closing bracket, true at a
 * comma, false at anything else. */
static bool next_element(reader *rd, char close, bool *done)
{
    skip_space(rd);
    int c = peek(rd);
    if (c != ',' && c != close)
        return refuse(rd, rd->at,
                      close == ']' ? "expected ',' or ']'"
                                   : "expected ',' or '}'");
    rd->at++;
    *done = c == close;
    return true;
}

/* Whether the container just opened is empty (and then closes it). */
static bool empty_container(reader *rd, char close)
{
    skip_space(rd);
    if (peek(rd) != close)
        return false;
    rd->at++;
    return true;
}

/* Moves the `n` objects at the top of the stack into the zone. */
static msgpack_object *pop(reader *rd, size_t n)
{
    assert(n <= rd->top);
    msgpack_object *a = msgpack_zone_malloc(rd->zone, n ? n * sizeof *a : 1);
    if (a == NULL) {
        no_memory(rd);
        return NULL;
    }
    rd->top -= n;
    if (n > 0)
        memcpy(a, rd->stack + rd->top, n * sizeof *a);
    return a;
}

static bool read_array(reader *rd, msgpack_object *o)
{
    size_t base = rd->top;
    bool done = false;
    if (!enter(rd))
        return false;
    done = empty_container(rd, ']');
    while (!done) {
        msgpack_object item;
        if (!read_value(rd, &item) || !push(rd, &item) ||
            !next_element(rd, ']', &done))
            return false;
    }
    assert(rd->depth > 0);
    rd->depth--;
    if (rd->top - base > UINT32_MAX)
        return refuse(rd, rd->at, "more than 2^32-1 elements");
    o->type = MSGPACK_OBJECT_ARRAY;
    o->via.array.size = (uint32_t)(rd->top - base);
    o->via.array.ptr = pop(rd, rd->top - base);
    return o->via.array.ptr != NULL;
}

static bool is_key(const msgpack_object *k, const char *s)
{
    return k->via.str.size == strlen(s) &&
           memcmp(k->via.str.ptr, s, k->via.str.size) == 0;
}

/* Base64 text into a zone buffer. */
static bool base64(reader *rd, const msgpack_object *text, const char **ptr,
                   uint32_t *size)
{
    size_t len = 0;
    char *buf = NULL;
    if (text->type == MSGPACK_OBJECT_STR)
        buf = msgpack_zone_malloc(rd->zone, text->via.str.size / 4 * 3 + 1);
    if (text->type == MSGPACK_OBJECT_STR && buf == NULL)
        return no_memory(rd);
    if (buf == NULL || !zp__json_base64_decode(text->via.str.ptr,
                                               text->via.str.size, buf, &len))
        return false;
    *ptr = buf;
    *size = (uint32_t)len;
    return true;
}

/* {"$bin": "BASE64"} or {"$ext": [TYPE, "BASE64"]} at `open` into *o. */
static bool special(reader *rd, const msgpack_object *kv, const char *open,
                    msgpack_object *o)
{
    const msgpack_object *v = &kv[1];
    if (is_key(&kv[0], "$bin")) {
        o->type = MSGPACK_OBJECT_BIN;
        if (!base64(rd, v, &o->via.bin.ptr, &o->via.bin.size))
            return refuse(rd, open, "\"$bin\" needs a base64 string");
        return true;
    }
    const msgpack_object *a = v->via.array.ptr;
    bool shape = v->type == MSGPACK_OBJECT_ARRAY && v->via.array.size == 2 &&
                 ((a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                   a[0].via.u64 <= 127) ||
                  (a[0].type == MSGPACK_OBJECT_NEGATIVE_INTEGER &&
                   a[0].via.i64 >= -128));
    o->type = MSGPACK_OBJECT_EXT;
    if (!shape || !base64(rd, &a[1], &o->via.ext.ptr, &o->via.ext.size))
        return refuse(rd, open,
                      "\"$ext\" needs [TYPE, BASE64]: a type from -128 to "
                      "127 and a base64 string");
    o->via.ext.type = (int8_t)a[0].via.i64;
    return true;
}

static bool read_member(reader *rd)
{
    msgpack_object kv[2] = {{.type = MSGPACK_OBJECT_STR}};
    skip_space(rd);
    if (peek(rd) != '"')
        return refuse(rd, rd->at, "expected a string (an object's key)");
    if (!read_string(rd, &kv[0].via.str))
        return false;
    skip_space(rd);
    if (peek(rd) != ':')
        return refuse(rd, rd->at, "expected ':'");
    rd->at++;
    return read_value(rd, &kv[1]) && push(rd, &kv[0]) && push(rd, &kv[1]);
}

static bool read_object(reader *rd, msgpack_object *o)
{
    const char *open = rd->at;
    size_t base = rd->top;
    bool done = false;
    if (!enter(rd))
        return false;
    done = empty_container(rd, '}');
    while (!done)
        if (!read_member(rd) || !next_element(rd, '}', &done))
            return false;
    assert(rd->depth > 0);
    rd->depth--;
    size_t n = (rd->top - base) / 2;
    if (n == 0) {
        *o = (msgpack_object){.type = MSGPACK_OBJECT_MAP};
        return true;
    }
    msgpack_object *kv = rd->stack + base;
    if (n == 1 && (is_key(&kv[0], "$bin") || is_key(&kv[0], "$ext"))) {
        rd->top = base;
        return special(rd, kv, open, o);
    }
    if (n > UINT32_MAX)
        return refuse(rd, rd->at, "more than 2^32-1 members");
    msgpack_object_kv *map = msgpack_zone_malloc(rd->zone, n * sizeof *map);
    if (map == NULL)
        return no_memory(rd);
    for (size_t i = 0; i < n; i++)
        map[i] = (msgpack_object_kv){kv[2 * i], kv[2 * i + 1]};
    rd->top = base;
    o->type = MSGPACK_OBJECT_MAP;
    o->via.map.size = (uint32_t)n;
    o->via.map.ptr = map;
    return true;
}

static bool read_value(reader *rd, msgpack_object *o)
{
    skip_space(rd);
    int c = peek(rd);
    if (c == '{')
        return read_object(rd, o);
    if (c == '[')
        return read_array(rd, o);
    if (c == '"') {
        o->type = MSGPACK_OBJECT_STR;
        return read_string(rd, &o->via.str);
    }
    if (c == '-' || is_digit(c))
        return read_number(rd, o);
    if (c == -1)
        return refuse(rd, rd->at,
                      "expected a value, found the end of the text");
    return read_literal(rd, o);
}

/* Line and column of rd->where. */
static void locate(const reader *rd, zp__json_error *e)
{
    const char *line = rd->start;
    e->line = 1;
    e->column = 1;
    for (const char *p = rd->start; p < rd->where; p++)
        if (*p == '\n') {
            e->line++;
            line = p + 1;
        }
    for (const char *p = line; p < rd->where; p++)
        e->column += !zp__json_utf8_cont((unsigned char)*p);
    e->reason = rd->why;
}

int zp__json_read(const char *json, size_t len, msgpack_zone *zone,
                  msgpack_object *out, zp__json_error *e)
{
    reader rd = {.start = json, .end = json + len, .at = json, .zone = zone};
    bool ok = read_value(&rd, out);
    skip_space(&rd);
    if (ok && rd.at < rd.end)
        ok = refuse(&rd, rd.at, "unexpected text after the value");
    free(rd.stack);
    if (ok)
        return 0;
    if (rd.out_of_memory)
        return ZP_ENOMEM;
    if (e != NULL)
        locate(&rd, e);
    return ZP_EINVAL;
}

int zp__json_to_object(const char *json, msgpack_zone *zone,
                       msgpack_object *out, char **err)
{
    zp__json_error e;
    int rc = zp__json_read(json, strlen(json), zone, out, &e);
    if (rc == ZP_EINVAL && err != NULL)
        *err = zp__strdupf("invalid JSON at line %d, column %d: %s", e.line,
                           e.column, e.reason);
    return rc;
}

/* Nesting of arrays and maps in o: 0 for a scalar. */
static int depth_of(const msgpack_object *o)
{
    int d = 0;
    if (o->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            int c = depth_of(&o->via.array.ptr[i]);
            d = c > d ? c : d;
        }
    else if (o->type == MSGPACK_OBJECT_MAP)
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            int c = depth_of(&o->via.map.ptr[i].val);
            d = c > d ? c : d;
        }
    else
        return 0;
    return d + 1;
}

static bool blank(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '\v' ||
           *s == '\f')
        s++;
    return *s == '\0';
}

int zp__json_pack_args(const char *json, msgpack_packer *pk, char **err)
{
    if (json == NULL || blank(json))
        return msgpack_pack_array(pk, 0) == 0 ? 0 : ZP_ENOMEM;
    msgpack_zone zone;
    msgpack_object o;
    if (!msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE))
        return ZP_ENOMEM;
    int rc = zp__json_to_object(json, &zone, &o, err);
    bool wrap = rc == 0 && o.type != MSGPACK_OBJECT_ARRAY;
    if (wrap && depth_of(&o) == ZP__JSON_MAX_DEPTH) {
        rc = ZP_EINVAL;
        if (err != NULL)
            *err =
                zp__strdup("nested deeper than 32 levels once wrapped in the "
                           "argument array: pass an array");
    }
    if (rc == 0 && ((wrap && msgpack_pack_array(pk, 1) != 0) ||
                    msgpack_pack_object(pk, o) != 0))
        rc = ZP_ENOMEM;
    msgpack_zone_destroy(&zone);
    return rc;
}
