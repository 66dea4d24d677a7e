/* SPDX-License-Identifier: MIT */
/*
 * UTF-8, base64 and the "C" locale for the JSON codec, see json_text.h.
 * The reader checks every string it reads with zp__json_utf8_len and the
 * writer every string it writes, so both refuse or replace exactly the same
 * bytes; $bin and $ext values go through the one base64 alphabet here.
 */
#include "core/json_text.h"

#include <assert.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static locale_t c_locale; /* "C", for numbers; (locale_t)0 if unavailable */

static void make_c_locale(void)
{
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

locale_t zp__json_c_locale(void)
{
    pthread_once(&c_locale_once, make_c_locale);
    return c_locale;
}

size_t zp__json_utf8_len(const char *s, size_t avail)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned char lo = 0x80, hi = 0xBF;
    size_t n;
    assert(avail >= 1);
    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF)
        n = 2;
    else if (p[0] >= 0xE0 && p[0] <= 0xEF)
        n = 3;
    else if (p[0] >= 0xF0 && p[0] <= 0xF4)
        n = 4;
    else
        return 0;
    if (p[0] == 0xE0)
        lo = 0xA0;
    else if (p[0] == 0xED)
        hi = 0x9F;
    else if (p[0] == 0xF0)
        lo = 0x90;
    else if (p[0] == 0xF4)
        hi = 0x8F;
    if (avail < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (!zp__json_utf8_cont(p[i]))
            return 0;
    return n;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c)
{
    const char *at = c != '\0' ? strchr(b64_alphabet, c) : NULL;
    return at != NULL ? (int)(at - b64_alphabet) : -1;
}

bool zp__json_base64_decode(const char *s, size_t n, char *out, size_t *len)
{
    size_t k = 0;
    if (n % 4 != 0)
        return false;
    for (size_t i = 0; i < n; i += 4) {
        int pad = (s[i + 3] == '=') + (s[i + 2] == '=' && s[i + 3] == '=');
        int v[4] = {b64_value((unsigned char)s[i]),
                    b64_value((unsigned char)s[i + 1]),
                    pad > 1 ? 0 : b64_value((unsigned char)s[i + 2]),
                    pad > 0 ? 0 : b64_value((unsigned char)s[i + 3])};
        if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[3] < 0 ||
            (pad > 0 && i + 4 != n))
            return false;
        uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                        (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[k++] = (char)(bits >> 16);
        if (pad < 2)
            out[k++] = (char)(bits >> 8);
        if (pad < 1)
            out[k++] = (char)bits;
    }
    assert(k <= n / 4 * 3);
    *len = k;
    return true;
}

size_t zp__json_base64_encode(const unsigned char *p, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t bits = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            bits |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            bits |= p[i + 2];
        out[k++] = b64_alphabet[bits >> 18];
        out[k++] = b64_alphabet[bits >> 12 & 63];
        out[k++] = i + 1 < n ? b64_alphabet[bits >> 6 & 63] : '=';
        out[k++] = i + 2 < n ? b64_alphabet[bits & 63] : '=';
    }
    assert(k == (n + 2) / 3 * 4);
    return k;
}
