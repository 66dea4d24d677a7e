/* SPDX-License-Identifier: MIT */
/*
 * The text encodings that both halves of the JSON codec (json_read.c,
 * json_write.c) speak: UTF-8 sequences, padded base64, and the "C" locale
 * that numbers are read and written in whatever locale the program set.
 * Private to the codec; part of core. Pure functions on memory: they never
 * allocate but for the one "C" locale, made once.
 */
#ifndef ZP_CORE_JSON_TEXT_H
#define ZP_CORE_JSON_TEXT_H

#include <locale.h>
#include <stdbool.h>
#include <stddef.h>

/* Whether c continues a UTF-8 sequence (10xxxxxx). */
static inline bool zp__json_utf8_cont(unsigned char c)
{
    return (c & 0xC0) == 0x80;
}

/* Length of the valid UTF-8 sequence at s (1 to 4), of the `avail` >= 1
 * bytes there, or 0 when invalid: overlong forms, surrogates and code
 * points above U+10FFFF are refused. */
size_t zp__json_utf8_len(const char *s, size_t avail);

/* Decodes padded base64 s[0..n) into out (room for n / 4 * 3 bytes), its
 * length into *len. False for anything else than canonical padded base64
 * text (then out holds garbage). */
bool zp__json_base64_decode(const char *s, size_t n, char *out, size_t *len);

/* Encodes the n bytes at p as padded base64 at out, which has room for
 * (n + 2) / 3 * 4 characters; returns how many it wrote (no NUL). */
size_t zp__json_base64_encode(const unsigned char *p, size_t n, char *out);

/* The "C" locale, or (locale_t)0 when it could not be made. Thread-safe;
 * the locale lives as long as the process. */
locale_t zp__json_c_locale(void);

#endif
