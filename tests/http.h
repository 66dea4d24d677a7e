/* SPDX-License-Identifier: MIT */
/*
 * A minimal HTTP/1.0 client for the tests of the metrics endpoint: one
 * request per connection, "Connection: close", the whole reply read until
 * the server closes. IPv4 "ADDRESS:PORT" only. Header-only, as testutil.h.
 */
#ifndef ZP_TESTS_HTTP_H
#define ZP_TESTS_HTTP_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct http_reply {
    int status;       /* the status code, or -1 when there was no reply */
    char *text;       /* owned; the whole reply, NUL-terminated         */
    const char *body; /* in text, after the blank line                  */
} http_reply;

/* A connected socket to "ADDRESS:PORT", or -1. */
static inline int http_connect(const char *where)
{
    char host[64];
    const char *colon = strrchr(where, ':');
    if (colon == NULL || (size_t)(colon - where) >= sizeof host)
        return -1;
    memcpy(host, where, (size_t)(colon - where));
    host[colon - where] = '\0';
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)atoi(colon + 1))};
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
        connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        if (s >= 0)
            close(s);
        return -1;
    }
    return s;
}

/* Reads until the peer closes, 10 s at most; returns the text. */
static inline char *http_read_all(int s)
{
    size_t len = 0, cap = 4096;
    char *text = malloc(cap);
    struct pollfd p = {.fd = s, .events = POLLIN};
    while (text != NULL && poll(&p, 1, 10000) > 0) {
        if (len + 1024 >= cap)
            text = realloc(text, cap *= 2);
        ssize_t n = text ? read(s, text + len, cap - len - 1) : -1;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    if (text != NULL)
        text[len] = '\0';
    return text;
}

/*
 * Sends `method path` (with `body`, which may be NULL) to `where` and
 * reads the reply into *r; http_reply_free() frees it. Returns r->status.
 */
static inline int http_call(const char *where, const char *method,
                            const char *path, const char *body, http_reply *r)
{
    char req[512];
    *r = (http_reply){.status = -1};
    int s = http_connect(where);
    if (s < 0)
        return -1;
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n"
                     "Content-Length: %zu\r\n\r\n%s",
                     method, path, where, body ? strlen(body) : 0,
                     body ? body : "");
    if (write(s, req, (size_t)n) == n)
        r->text = http_read_all(s);
    close(s);
    if (r->text == NULL || sscanf(r->text, "HTTP/1.%*d %d", &r->status) != 1)
        return r->status = -1;
    const char *end = strstr(r->text, "\r\n\r\n");
    r->body = end ? end + 4 : "";
    return r->status;
}

/* The value of header `name` (case as the server writes it) in a reply,
 * copied into out; false when it has none. */
static inline bool http_header(const http_reply *r, const char *name, char *out,
                               size_t len)
{
    char key[64];
    snprintf(key, sizeof key, "\r\n%s: ", name);
    const char *h = r->text ? strstr(r->text, key) : NULL;
    if (h == NULL || h > r->body)
        return false;
    h += strlen(key);
    size_t n = strcspn(h, "\r\n");
    snprintf(out, len, "%.*s", (int)n, h);
    return true;
}

static inline void http_reply_free(http_reply *r)
{
    free(r->text);
    r->text = NULL;
}

#endif
