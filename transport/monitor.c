/* SPDX-License-Identifier: MIT */
/*
 * Accept failures, see monitor.h. The thread reads the events of ZeroMQ's
 * socket monitor (version 1: a frame of a 16-bit event and a 32-bit value,
 * then a frame with the endpoint) until MONITOR_STOPPED, which
 * zp__monitor_destroy asks for, or until the context shuts down. Only
 * failures for want of resources are told: a connection reset before it
 * was accepted (ECONNABORTED) is no news.
 */
#include "transport/monitor.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/fds.h"
#include "core/log.h"

#define EVERY_NS (5000 * ZP__NS_PER_MS) /* a line at most this often */

struct zp__monitor {
    void *socket;       /* borrowed; the watched socket                */
    void *events;       /* owned PAIR; the thread's while it runs      */
    pthread_t thread;   /* the reader                                  */
    char endpoint[256]; /* for messages                                */
    char name[64];      /* inproc endpoint of the events               */
    uint64_t failed;    /* failures since the last line                */
    uint64_t said;      /* when the last line was written; 0: never    */
    int err;            /* the errno of the last failure               */
};

static bool for_want_of_resources(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

static void say(zp__monitor *m, uint64_t now)
{
    char why[128];
    assert(m->failed > 0); /* only failures are told */
    if (m->err == EMFILE)
        snprintf(why, sizeof why, "too many open files (limit %ld)",
                 zp__fds_limit());
    else if (m->err == ENFILE)
        snprintf(why, sizeof why, "too many open files in the system");
    else
        snprintf(why, sizeof why, "%s", strerror(m->err));
    if (m->said == 0)
        zp__log(ZP_LOG_ERROR, "zpipe: cannot accept more connections on %s: %s",
                m->endpoint, why);
    else
        zp__log(ZP_LOG_ERROR,
                "zpipe: cannot accept more connections on %s: %s (%llu "
                "more failures in %.0f s)",
                m->endpoint, why, (unsigned long long)m->failed,
                (double)(now - m->said) / (double)ZP__NS_PER_S);
    m->said = now;
    m->failed = 0;
}

/* Reads one event: returns its number, or -1 when the context is
 * shutting down. */
static int read_event(zp__monitor *m)
{
    zmq_msg_t f;
    uint16_t event = 0;
    uint32_t value = 0;
    zmq_msg_init(&f);
    int rc = zmq_msg_recv(&f, m->events, 0);
    if (rc == (int)(sizeof event + sizeof value)) {
        memcpy(&event, zmq_msg_data(&f), sizeof event);
        memcpy(&value, (char *)zmq_msg_data(&f) + sizeof event, sizeof value);
    }
    while (rc >= 0 && zmq_msg_more(&f)) /* the endpoint */
        rc = zmq_msg_recv(&f, m->events, 0);
    zmq_msg_close(&f);
    if (rc < 0)
        return zmq_errno() == ETERM ? -1 : 0;
    if (event == ZMQ_EVENT_ACCEPT_FAILED && for_want_of_resources((int)value)) {
        m->err = (int)value;
        m->failed++;
    }
    return event;
}

/* Milliseconds until the next line is due, or -1 (none is). */
static long next_line_ms(const zp__monitor *m, uint64_t now)
{
    if (m->failed == 0)
        return -1;
    if (m->said == 0 || now - m->said >= EVERY_NS)
        return 0;
    return (long)((m->said + EVERY_NS - now) / ZP__NS_PER_MS) + 1;
}

static void *watch(void *arg)
{
    zp__monitor *m = arg;
    for (int event = 0; event != ZMQ_EVENT_MONITOR_STOPPED;) {
        zmq_pollitem_t it = {m->events, 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&it, 1, next_line_ms(m, zp__now_ns()));
        if (n < 0 && zmq_errno() == ETERM)
            break;
        if (n > 0 && (event = read_event(m)) < 0)
            break;
        if (next_line_ms(m, zp__now_ns()) == 0)
            say(m, zp__now_ns());
    }
    if (m->failed > 0)
        say(m, zp__now_ns());
    return NULL;
}

zp__monitor *zp__monitor_new(void *zctx, void *socket, const char *endpoint,
                             char **why)
{
    static _Atomic unsigned long made;
    int zero = 0, err;
    zp__monitor *m = zp__calloc(1, sizeof *m);
    if (m == NULL) {
        *why = zp__strdup("out of memory");
        return NULL;
    }
    m->socket = socket;
    snprintf(m->endpoint, sizeof m->endpoint, "%s", endpoint);
    snprintf(m->name, sizeof m->name, "inproc://zp-monitor-%lu",
             atomic_fetch_add(&made, 1));
    /* Connected before the monitor binds: the monitor never has a moment
     * without its reader, in which its events would block the I/O thread. */
    m->events = zmq_socket(zctx, ZMQ_PAIR);
    if (m->events == NULL ||
        zmq_setsockopt(m->events, ZMQ_LINGER, &zero, sizeof zero) != 0 ||
        zmq_connect(m->events, m->name) != 0 ||
        zmq_socket_monitor(socket, m->name,
                           ZMQ_EVENT_ACCEPT_FAILED |
                               ZMQ_EVENT_MONITOR_STOPPED) != 0) {
        *why = zp__strdupf("cannot watch %s: %s", endpoint,
                           zmq_strerror(zmq_errno()));
        goto out_close;
    }
    if ((err = pthread_create(&m->thread, NULL, watch, m)) != 0) {
        *why = zp__strdupf("cannot watch %s: %s", endpoint, strerror(err));
        zmq_socket_monitor(socket, NULL, 0);
        goto out_close;
    }
    return m;
out_close:
    if (m->events != NULL)
        zmq_close(m->events);
    free(m);
    return NULL;
}

void zp__monitor_destroy(zp__monitor **mp)
{
    zp__monitor *m = *mp;
    if (m == NULL)
        return;
    /* MONITOR_STOPPED ends the thread; when the context is shutting down
     * its poll fails instead. */
    zmq_socket_monitor(m->socket, NULL, 0);
    pthread_join(m->thread, NULL);
    zmq_close(m->events);
    free(m);
    *mp = NULL;
}
