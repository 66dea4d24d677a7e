/* SPDX-License-Identifier: MIT */
/*
 * A plugin the CLI tests load (tests/cli_test.c), built like any plugin:
 * it includes <zpipe.h> and links nothing of zpipe.
 *   double_it  n -> 2n
 *   fail_on    fails on the item equal to bind, passes the others on
 *   nap        waits bind milliseconds, whatever happens, then passes its
 *              item on: a task that cannot be interrupted
 *   whoami     item -> [item, the pid of the process that ran it], after
 *              waiting bind milliseconds when bind is given
 *   odd_only   passes odd integers on, drops the others (a filter)
 *   key_maps   n -> a map whose only key is such a map, n levels deep, the
 *              innermost key "a", every value nil (58 bytes at n = 28)
 *   sum_every  a join task: the sum of its items so far after every
 *              bind items (1000 when no bind), then the sum of them all
 */
#include <time.h>
#include <unistd.h>

#include <zpipe.h>

ZP_TASK(double_it)
{
    return zp_emit_int(call, zp_input(call)->via.i64 * 2);
}

ZP_TASK(fail_on)
{
    const msgpack_object *in = zp_input(call);
    const msgpack_object *bad = zp_bound(call);
    if (bad != NULL && in->via.i64 == bad->via.i64)
        return zp_fail(call, "%lld is the bad one", (long long)in->via.i64);
    return zp_emit_obj(call, in);
}

/* Waits the milliseconds bound to the call, if any, whatever happens. */
static void wait_bound(zp_call *call)
{
    const msgpack_object *ms = zp_bound(call);
    long n = ms != NULL ? (long)ms->via.i64 : 0;
    struct timespec t = {n / 1000, (n % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0)
        ;
}

ZP_TASK(nap)
{
    wait_bound(call);
    return zp_emit_obj(call, zp_input(call));
}

ZP_TASK(whoami)
{
    wait_bound(call);
    msgpack_packer *pk = zp_out(call);
    msgpack_pack_array(pk, 2);
    msgpack_pack_object(pk, *zp_input(call));
    msgpack_pack_int64(pk, (int64_t)getpid());
    return zp_emit(call);
}

ZP_TASK(odd_only)
{
    int64_t v = zp_input(call)->via.i64;
    return v % 2 != 0 ? zp_emit_int(call, v) : 0;
}

ZP_TASK(key_maps)
{
    int64_t n = zp_input(call)->via.i64;
    msgpack_packer *pk = zp_out(call);
    for (int64_t i = 0; i < n; i++)
        msgpack_pack_map(pk, 1);
    msgpack_pack_str_with_body(pk, "a", 1);
    for (int64_t i = 0; i < n; i++)
        msgpack_pack_nil(pk);
    return zp_emit(call);
}

ZP_TASK(sum_every)
{
    const msgpack_object *every = zp_bound(call), *item;
    int64_t n = every != NULL ? every->via.i64 : 1000, sum = 0, seen = 0;
    while (zp_next(call, &item)) {
        sum += item->via.i64;
        if (++seen % n == 0 && zp_emit_int(call, sum) != 0)
            return -1;
    }
    return zp_emit_int(call, sum);
}
