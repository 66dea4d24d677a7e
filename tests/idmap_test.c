/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the id map (core/idmap.c): keys found by their bytes, not
 * their address; keys that share a prefix or differ in length kept apart;
 * a value replaced in place; deleted keys gone while the keys probed past
 * them stay found; and thousands of keys through growth and churn, checked
 * against a plain array.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/idmap.h"

/* A ZeroMQ ROUTER's routing id: a zero byte, then a 32-bit number. */
typedef struct rid {
    unsigned char b[5];
} rid;

static rid rid_of(uint32_t n)
{
    rid r = {{0, (unsigned char)(n >> 24), (unsigned char)(n >> 16),
              (unsigned char)(n >> 8), (unsigned char)n}};
    return r;
}

static void test_a_key_is_found_by_its_bytes(void **state)
{
    (void)state;
    zp__idmap m = ZP__IDMAP_INIT;
    int v = 1;
    char key[] = "worker-a", copy[] = "worker-a";
    assert_null(zp__idmap_get(&m, key, strlen(key)));
    assert_int_equal(zp__idmap_put(&m, key, strlen(key), &v), 0);
    assert_ptr_equal(zp__idmap_get(&m, copy, strlen(copy)), &v);
    zp__idmap_fini(&m);
}

static void test_prefixes_and_lengths_are_different_keys(void **state)
{
    (void)state;
    zp__idmap m = ZP__IDMAP_INIT;
    int a = 1, b = 2, c = 3;
    const char *key = "abcabc";
    assert_int_equal(zp__idmap_put(&m, key, 3, &a), 0);
    assert_int_equal(zp__idmap_put(&m, key, 6, &b), 0);
    assert_int_equal(zp__idmap_put(&m, key, 0, &c), 0);
    assert_ptr_equal(zp__idmap_get(&m, "abc", 3), &a);
    assert_ptr_equal(zp__idmap_get(&m, "abcabc", 6), &b);
    assert_ptr_equal(zp__idmap_get(&m, "", 0), &c);
    assert_null(zp__idmap_get(&m, "ab", 2));
    assert_int_equal(m.used, 3);
    zp__idmap_fini(&m);
}

static void test_a_second_put_replaces_the_value(void **state)
{
    (void)state;
    zp__idmap m = ZP__IDMAP_INIT;
    int a = 1, b = 2;
    rid k = rid_of(7);
    assert_int_equal(zp__idmap_put(&m, k.b, sizeof k.b, &a), 0);
    assert_int_equal(zp__idmap_put(&m, k.b, sizeof k.b, &b), 0);
    assert_ptr_equal(zp__idmap_get(&m, k.b, sizeof k.b), &b);
    assert_int_equal(m.used, 1);
    zp__idmap_fini(&m);
}

static void test_deleted_keys_leave_the_others_reachable(void **state)
{
    (void)state;
    zp__idmap m = ZP__IDMAP_INIT;
    enum { N = 64 };
    rid k[N];
    int v[N];
    for (int i = 0; i < N; i++) {
        k[i] = rid_of((uint32_t)i);
        assert_int_equal(zp__idmap_put(&m, k[i].b, sizeof k[i].b, &v[i]), 0);
    }
    for (int i = 0; i < N; i += 2)
        zp__idmap_del(&m, k[i].b, sizeof k[i].b);
    zp__idmap_del(&m, "absent", 6);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(zp__idmap_get(&m, k[i].b, sizeof k[i].b),
                         i % 2 ? &v[i] : NULL);
    assert_int_equal(m.used, N / 2);
    zp__idmap_fini(&m);
}

static void test_thousands_of_keys_through_growth_and_churn(void **state)
{
    (void)state;
    enum { N = 5000 };
    static rid k[N];
    static int v[N];
    static _Bool in[N];
    zp__idmap m = ZP__IDMAP_INIT;
    for (int round = 0; round < 4; round++) {
        for (int i = 0; i < N; i++) {
            k[i] = rid_of((uint32_t)i);
            if ((i + round) % 3 != 0) {
                assert_int_equal(
                    zp__idmap_put(&m, k[i].b, sizeof k[i].b, &v[i]), 0);
                in[i] = 1;
            } else {
                zp__idmap_del(&m, k[i].b, sizeof k[i].b);
                in[i] = 0;
            }
        }
        size_t count = 0;
        for (int i = 0; i < N; i++) {
            count += in[i];
            assert_ptr_equal(zp__idmap_get(&m, k[i].b, sizeof k[i].b),
                             in[i] ? &v[i] : NULL);
        }
        assert_int_equal(m.used, count);
        /* Deleted slots are swept on growth: never more than half full. */
        assert_true(2 * (m.used + m.dead) <= m.cap);
    }
    zp__idmap_fini(&m);
    assert_null(zp__idmap_get(&m, k[1].b, sizeof k[1].b));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_key_is_found_by_its_bytes),
        cmocka_unit_test(test_prefixes_and_lengths_are_different_keys),
        cmocka_unit_test(test_a_second_put_replaces_the_value),
        cmocka_unit_test(test_deleted_keys_leave_the_others_reachable),
        cmocka_unit_test(test_thousands_of_keys_through_growth_and_churn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
