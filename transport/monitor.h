/* SPDX-License-Identifier: MIT */
/*
 * Accept failures of a listening socket, told once: when the process runs
 * out of descriptors, ZeroMQ cannot accept a new connection and would say
 * nothing about it. A monitor is a small thread that reads the socket's
 * ZeroMQ monitor events (ZMQ_EVENT_ACCEPT_FAILED) and logs one error
 * (core/log.h: stderr, or the program's hook), "zpipe: cannot accept more
 * connections on ENDPOINT: too many open files (limit N)", then at most
 * one line every few seconds with the count of failures since, while they
 * go on. Connections already made are served meanwhile: only new ones
 * wait. Part of transport.
 *
 * Why a thread of its own rather than a socket in the hub's poll loop:
 * ZeroMQ's I/O thread sends monitor events with a blocking send, and
 * while descriptors run out it retries the accept, and sends an event, as
 * fast as it can. A reader that is ever busy elsewhere (a dispatcher
 * waiting for room downstream) would then stop that I/O thread, and with
 * it every connection of the run.
 */
#ifndef ZP_TRANSPORT_MONITOR_H
#define ZP_TRANSPORT_MONITOR_H

typedef struct zp__monitor zp__monitor;

/*
 * Starts watching `socket` (of context `zctx`, bound at `endpoint`, which
 * is copied). Call it from the thread that uses the socket. Returns NULL
 * with *why (malloc'ed) on failure.
 */
zp__monitor *zp__monitor_new(void *zctx, void *socket, const char *endpoint,
                             char **why);

/* Stops watching and joins the thread; before the socket is closed, from
 * the thread that uses it. NULL-safe, sets *m to NULL. */
void zp__monitor_destroy(zp__monitor **m);

#endif
