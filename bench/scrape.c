/* SPDX-License-Identifier: MIT */
/*
 * The benchmarks' scraper, see scrape.h: a plain HTTP/1.0 GET on a fresh
 * connection every 100 ms, the reply read to its end and counted when it
 * starts with "HTTP/1.1 200". Between two runs nothing listens; a refused
 * connection is just not counted.
 */
#include "scrape.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PERIOD_MS 100

static char addr[32];
static struct sockaddr_in target;
static pthread_t thread;
static bool started;
static _Atomic bool stop;
static _Atomic uint64_t pages;

/* One GET /metrics; whether a page came back. */
static bool get_page(void)
{
    static const char req[] = "GET /metrics HTTP/1.0\r\n\r\n";
    char buf[65536], head[16] = "";
    size_t got = 0;
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return false;
    if (connect(s, (struct sockaddr *)&target, sizeof target) == 0 &&
        write(s, req, sizeof req - 1) == (ssize_t)(sizeof req - 1))
        for (ssize_t n; (n = read(s, buf, sizeof buf)) > 0; got += (size_t)n)
            if (got == 0)
                snprintf(head, sizeof head, "%.*s", (int)n, buf);
    close(s);
    return strncmp(head, "HTTP/1.1 200", 12) == 0;
}

static void *scrape(void *arg)
{
    struct timespec t = {0, PERIOD_MS * 1000000L};
    (void)arg;
    while (!atomic_load(&stop)) {
        if (get_page())
            atomic_fetch_add(&pages, 1);
        nanosleep(&t, NULL);
    }
    return NULL;
}

/* 127.0.0.1 and a port free right now. */
static void pick_port(void)
{
    socklen_t len = sizeof target;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    target = (struct sockaddr_in){.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&target, sizeof target) != 0 ||
        getsockname(fd, (struct sockaddr *)&target, &len) != 0)
        target.sin_port = htons(47464);
    if (fd >= 0)
        close(fd);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(target.sin_port));
}

const char *zpb_metrics_addr(void)
{
    const char *on = getenv("ZPIPE_BENCH_METRICS");
    if (on == NULL || on[0] == '\0' || strcmp(on, "0") == 0)
        return NULL;
    if (!started) {
        pick_port();
        started = pthread_create(&thread, NULL, scrape, NULL) == 0;
        printf("metrics: on, at http://%s/metrics, scraped every %d ms\n", addr,
               PERIOD_MS);
    }
    return addr;
}

void zpb_metrics_done(void)
{
    if (!started)
        return;
    atomic_store(&stop, true);
    pthread_join(thread, NULL);
    started = false;
    printf("metrics: %llu pages scraped\n",
           (unsigned long long)atomic_load(&pages));
}
