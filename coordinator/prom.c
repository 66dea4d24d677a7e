/* SPDX-License-Identifier: MIT */
/*
 * The Prometheus text format, see prom.h. Every write appends to one
 * buffer that doubles when full; after a failed allocation every later
 * write is skipped and the page is reported lost as a whole, never sent
 * cut short.
 */
#include "coordinator/prom.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/hist.h"
#include "zpipe.h"

void zp__prom_init(zp__prom *p)
{
    memset(p, 0, sizeof *p);
}

void zp__prom_fini(zp__prom *p)
{
    free(p->buf);
    memset(p, 0, sizeof *p);
}

char *zp__prom_take(zp__prom *p, size_t *len)
{
    char *page = p->nomem ? NULL : p->buf;
    *len = page ? p->len : 0;
    if (page == NULL)
        free(p->buf);
    memset(p, 0, sizeof *p);
    return page;
}

/* Room for n more bytes and the NUL. */
static bool reserve(zp__prom *p, size_t n)
{
    if (p->nomem)
        return false;
    if (p->len + n + 1 <= p->cap)
        return true;
    size_t cap = p->cap ? p->cap : 4096;
    while (cap < p->len + n + 1)
        cap *= 2;
    char *b = zp__realloc(p->buf, cap);
    if (b == NULL) {
        p->nomem = true;
        return false;
    }
    p->buf = b;
    p->cap = cap;
    return true;
}

static void put(zp__prom *p, const char *s, size_t n)
{
    if (!reserve(p, n))
        return;
    memcpy(p->buf + p->len, s, n);
    p->len += n;
    p->buf[p->len] = '\0';
}

static void put_str(zp__prom *p, const char *s)
{
    put(p, s, strlen(s));
}

static void putf(zp__prom *p, const char *fmt, ...) ZP__PRINTF(2, 3);
static void putf(zp__prom *p, const char *fmt, ...)
{
    char tmp[64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(p, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- Escaping ------------------------------------------------------------ */

/* The length of the UTF-8 sequence at s (n bytes left), or 0 when it is
 * not one: overlong forms, surrogates and code points past U+10FFFF are
 * refused, as Go's decoder (Prometheus's) refuses them. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len = s[0] >= 0xc2 && s[0] <= 0xdf   ? 2
                 : s[0] >= 0xe0 && s[0] <= 0xef ? 3
                 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                                : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
        return 0;
    return len;
}

/* What stands for byte c in a label value (`quote`) or a help text:
 * an escape, or NULL for the byte itself. */
static const char *escape_of(unsigned char c, bool quote)
{
    return c == '\\'           ? "\\\\"
           : c == '\n'         ? "\\n"
           : c == '"' && quote ? "\\\""
                               : NULL;
}

/* Appends s escaped, bytes that are not UTF-8 as U+FFFD. */
static void put_escaped(zp__prom *p, const char *s, bool quote)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s), i = 0;
    while (i < n) {
        size_t len = utf8_len(u + i, n - i);
        const char *esc = len ? escape_of(u[i], quote) : "\xef\xbf\xbd";
        if (esc != NULL)
            put_str(p, esc);
        else
            put(p, s + i, len);
        i += len ? len : 1;
    }
}

/* ---- Families and samples ------------------------------------------------ */

void zp__prom_family(zp__prom *p, const char *name, const char *type,
                     const char *help)
{
    put_str(p, "# HELP ");
    put_str(p, name);
    put_str(p, " ");
    put_escaped(p, help, false);
    put_str(p, "\n# TYPE ");
    put_str(p, name);
    put_str(p, " ");
    put_str(p, type);
    put_str(p, "\n");
}

/* name{labels[,le="le"]} followed by a space. */
static void sample_name(zp__prom *p, const char *name, const char *suffix,
                        const zp__prom_label *labels, const char *le)
{
    put_str(p, name);
    put_str(p, suffix);
    const char *sep = "{";
    for (size_t i = 0; labels != NULL && labels[i].name != NULL; i++) {
        put_str(p, sep);
        put_str(p, labels[i].name);
        put_str(p, "=\"");
        put_escaped(p, labels[i].value, true);
        put_str(p, "\"");
        sep = ",";
    }
    if (le != NULL) {
        put_str(p, sep);
        put_str(p, "le=\"");
        put_str(p, le);
        put_str(p, "\"");
        sep = ",";
    }
    put_str(p, sep[0] == ',' ? "} " : " ");
}

void zp__prom_uint(zp__prom *p, const char *name, const zp__prom_label *labels,
                   uint64_t v)
{
    sample_name(p, name, "", labels, NULL);
    putf(p, "%llu\n", (unsigned long long)v);
}

static void put_seconds(zp__prom *p, uint64_t ns)
{
    putf(p, "%llu.%09llu\n", (unsigned long long)(ns / ZP__NS_PER_S),
         (unsigned long long)(ns % ZP__NS_PER_S));
}

void zp__prom_seconds(zp__prom *p, const char *name,
                      const zp__prom_label *labels, uint64_t ns)
{
    sample_name(p, name, "", labels, NULL);
    put_seconds(p, ns);
}

void zp__prom_histogram(zp__prom *p, const char *name,
                        const zp__prom_label *labels, const uint64_t *counts,
                        uint64_t sum_ns)
{
    uint64_t total = 0;
    char le[32];
    for (int i = 0; i < ZP_HIST_BUCKETS; i++) {
        uint64_t bound = zp__hist_bound_ns(i);
        total += counts[i];
        if (bound == UINT64_MAX)
            strcpy(le, "+Inf");
        else /* as Prometheus's own clients write them: 1e-05, 0.1, 60 */
            snprintf(le, sizeof le, "%g", (double)bound / (double)ZP__NS_PER_S);
        sample_name(p, name, "_bucket", labels, le);
        putf(p, "%llu\n", (unsigned long long)total);
    }
    sample_name(p, name, "_sum", labels, NULL);
    put_seconds(p, sum_ns);
    sample_name(p, name, "_count", labels, NULL);
    putf(p, "%llu\n", (unsigned long long)total);
}
