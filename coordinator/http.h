/* SPDX-License-Identifier: MIT */
/*
 * The HTTP server of the metrics endpoint: libmicrohttpd on a thread of
 * its own, answering GET /metrics with the page a render callback writes
 * in Prometheus's text format (prom.h), 404 on any other path and 405 to
 * any other method. Part of coordinator. It knows nothing of what a page
 * says: the run's page is metrics.h's, a worker's worker_metrics.h's. Its
 * names are zp__metrics_*, after the one path it serves.
 *
 * It never calls into a run: a page is whatever the render callback
 * writes, on the server's thread, so a slow or stuck client holds one of
 * the server's connections, nothing else, and not for long: a request
 * must be whole 3 s after the connection opened (or after its previous
 * answer), the answer sent within 10 s, and of 64 connections waiting for
 * their request, a 65th drops the one that has waited longest, so that
 * a scrape gets in while slow clients are many.
 */
#ifndef ZP_COORDINATOR_HTTP_H
#define ZP_COORDINATOR_HTTP_H

#include <stdbool.h>

#include "coordinator/prom.h"

typedef struct zp__metrics zp__metrics;

/*
 * Writes the page of one scrape into `p`; returns whether it is a page
 * the owner waits for (zp__metrics_wait). Called on the server's thread,
 * one scrape at a time.
 */
typedef bool (*zp__metrics_render)(void *arg, zp__prom *p);

/*
 * Listens on `addr` ("HOST:PORT", ":PORT" for every IPv4 address,
 * "[V6]:PORT"; port 0 picks a free one) and serves there until destroyed.
 * Returns NULL with *why (malloc'ed) naming the address and the reason
 * when the address is malformed, unknown or in use.
 */
zp__metrics *zp__metrics_new(const char *addr, zp__metrics_render render,
                             void *arg, char **why);

/* Stops the server (open connections are closed) and frees it. NULL-safe;
 * *m becomes NULL. */
void zp__metrics_destroy(zp__metrics **m);

/* The address and port listened on, such as "127.0.0.1:9464". */
const char *zp__metrics_where(const zp__metrics *m);

/*
 * Waits until a page for which the render said true was sent whole to a
 * client, or `timeout_ms` passed. Returns true for the former.
 */
bool zp__metrics_wait(zp__metrics *m, int timeout_ms);

#endif
