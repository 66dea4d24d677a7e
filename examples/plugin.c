/* SPDX-License-Identifier: MIT */
/*
 * An example plugin of the zpipe CLI: a shared library whose tasks
 * `zpipe run --plugin zpipe-examples.so` (and `zpipe worker`) can run.
 * A plugin only includes <zpipe.h> and declares its tasks with ZP_TASK or
 * ZP_ASYNC_TASK; it does not link libzpipe: the zpipe executable provides
 * the zp_* functions (and msgpack-c's and libuv's) when it loads the
 * plugin. Build one outside this tree with
 *   cc -shared -fPIC -fvisibility=hidden plugin.c \
 *      $(pkg-config --cflags zpipe) -o my-tasks.so
 *
 *   host_tag     item -> [item, "the host name of the worker that ran it"],
 *                after 2 ms (work slow enough to be spread over workers)
 *   slow_square  n -> n * n, after 10 ms of "work" (for scaling out)
 *   resolve      "host name" -> its first address, looked up without
 *                holding a thread (an async task on libuv's getaddrinfo)
 *   summarize    a join task: the stream of numbers -> {"count", "mean",
 *                "stdev", "min", "max"}
 */
#include <arpa/inet.h>
#include <math.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <zpipe.h>

/* Tags the item with this worker's host name (its container's, under
 * docker compose), to show which worker served which item. It takes 2 ms:
 * instant items would travel in big batches to the first worker idle. */
ZP_TASK(host_tag)
{
    struct timespec t = {0, 2 * 1000 * 1000};
    while (nanosleep(&t, &t) != 0)
        ;
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        return zp_fail(call, "gethostname failed");
    host[sizeof host - 1] = '\0';
    msgpack_packer *pk = zp_out(call);
    msgpack_pack_array(pk, 2);
    msgpack_pack_object(pk, *zp_input(call));
    msgpack_pack_str_with_body(pk, host, strlen(host));
    return zp_emit(call);
}

/* Squares an integer after 10 ms, standing for real work. */
ZP_TASK(slow_square)
{
    const msgpack_object *in = zp_input(call);
    if (in->type != MSGPACK_OBJECT_POSITIVE_INTEGER &&
        in->type != MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return zp_fail(call, "slow_square takes integers");
    struct timespec t = {0, 10 * 1000 * 1000};
    while (nanosleep(&t, &t) != 0)
        ;
    return zp_emit_int(call, in->via.i64 * in->via.i64);
}

/* ---- resolve: an async task ---------------------------------------------- */

typedef struct lookup {
    uv_getaddrinfo_t req;
    zp_call *call;
} lookup;

static void resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    lookup *l = req->data;
    char text[INET6_ADDRSTRLEN] = "";
    if (status == 0 && res->ai_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)res->ai_addr, text, sizeof text);
    else if (status == 0)
        uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, text, sizeof text);
    if (status != 0)
        zp_fail(l->call, "cannot resolve it: %s", uv_strerror(status));
    else if (zp_emit_str(l->call, text) == 0)
        zp_done(l->call);
    else
        zp_fail(l->call, "the run is stopping");
    uv_freeaddrinfo(res);
    free(l);
}

/* Starts the lookup and returns; `resolved` ends the call. */
ZP_ASYNC_TASK(resolve)
{
    const msgpack_object *in = zp_input(call);
    lookup *l = malloc(sizeof *l);
    char *host = in->type == MSGPACK_OBJECT_STR
                     ? strndup(in->via.str.ptr, in->via.str.size)
                     : NULL;
    if (l == NULL || host == NULL) {
        free(l);
        free(host);
        zp_fail(call, "resolve takes a host name (a string)");
        return;
    }
    l->call = call;
    l->req.data = l;
    int rc = uv_getaddrinfo(loop, &l->req, resolved, host, NULL, NULL);
    free(host); /* libuv copied it */
    if (rc != 0) {
        free(l);
        zp_fail(call, "cannot look it up: %s", uv_strerror(rc));
    }
}

/* ---- summarize: a join task ---------------------------------------------- */

static bool number(const msgpack_object *o, double *v)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *v = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *v = (double)o->via.i64;
    else if (o->type == MSGPACK_OBJECT_FLOAT32 ||
             o->type == MSGPACK_OBJECT_FLOAT64)
        *v = o->via.f64;
    else
        return false;
    return true;
}

static void pack_key(msgpack_packer *pk, const char *key)
{
    msgpack_pack_str_with_body(pk, key, strlen(key));
}

/* Reads the whole stream of numbers and emits its summary: count, mean,
 * sample standard deviation (Welford's running sums), minimum, maximum. */
ZP_TASK(summarize)
{
    const msgpack_object *item;
    double x, mean = 0, m2 = 0, lo = INFINITY, hi = -INFINITY;
    uint64_t n = 0;
    while (zp_next(call, &item)) {
        if (!number(item, &x))
            return zp_fail(call,
                           "summarize takes numbers; item %llu is not "
                           "one",
                           (unsigned long long)n);
        double d = x - mean;
        mean += d / (double)++n;
        m2 += d * (x - mean);
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
    }
    msgpack_packer *pk = zp_out(call);
    msgpack_pack_map(pk, 5);
    pack_key(pk, "count");
    msgpack_pack_uint64(pk, n);
    pack_key(pk, "mean");
    msgpack_pack_double(pk, n > 0 ? mean : NAN);
    pack_key(pk, "stdev");
    msgpack_pack_double(pk, n > 1 ? sqrt(m2 / (double)(n - 1)) : NAN);
    pack_key(pk, "min");
    msgpack_pack_double(pk, n > 0 ? lo : NAN);
    pack_key(pk, "max");
    msgpack_pack_double(pk, n > 0 ? hi : NAN);
    return zp_emit(call);
}
