/* SPDX-License-Identifier: Apache-2.0 */
/* The value tree: building, replacing keys, copying, equality rules, decoding and its failures. */
#include "gw/error.h"
#include "gw/value.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

START_TEST(test_value_map_set_replaces_in_place)
{
    struct gw_value m = gw_value_map();
    *gw_value_map_set(&m, "a", 1) = gw_value_uint(1);
    *gw_value_map_set(&m, "b", 1) = gw_value_cstr("two");
    *gw_value_map_set(&m, "a", 1) = gw_value_cstr("one again");
    ck_assert_uint_eq(gw_value_count(&m), 2);
    ck_assert_str_eq(m.c.keys[0], "a");
    ck_assert_str_eq(gw_value_map_get(&m, "a")->s.p, "one again");
    ck_assert_ptr_null(gw_value_map_get(&m, "zz"));
    ck_assert_uint_eq(gw_value_count(gw_value_map_get(&m, "zz")), 0); /* optional key absent */
    ck_assert_ptr_null(gw_value_map_get(NULL, "a"));
    gw_value_fini(&m);
    ck_assert_int_eq(m.type, GW_VALUE_NULL);
}
END_TEST

START_TEST(test_value_identity_rules)
{
    struct gw_value u = gw_value_uint(1), d = gw_value_double(1.0), i = gw_value_int(1);
    struct gw_value u2 = gw_value_uint(1), z = gw_value_double(0.0), nz = gw_value_double(-0.0);
    ck_assert(gw_value_identical(&u, &u2));
    ck_assert(!gw_value_identical(&u, &d)); /* equal by value, not identical */
    ck_assert(!gw_value_identical(&u, &i));
    ck_assert(gw_value_equal(&z, &nz) && !gw_value_identical(&z, &nz));
    struct gw_value m1 = gw_value_map(), m2 = gw_value_map();
    *gw_value_map_set(&m1, "a", 1) = gw_value_uint(1);
    *gw_value_map_set(&m1, "b", 1) = gw_value_cstr("x");
    *gw_value_map_set(&m2, "b", 1) = gw_value_cstr("x");
    *gw_value_map_set(&m2, "a", 1) = gw_value_uint(1);
    ck_assert(gw_value_equal(&m1, &m2) && !gw_value_identical(&m1, &m2)); /* key order */
    struct gw_value m3;
    gw_value_copy(&m3, &m1);
    ck_assert(gw_value_identical(&m1, &m3));
    struct gw_value *slot = gw_value_map_set(&m3, "b", 1);
    gw_value_fini(slot);
    *slot = gw_value_cstr("y");
    ck_assert(!gw_value_identical(&m1, &m3));
    gw_value_fini(&m1);
    gw_value_fini(&m2);
    gw_value_fini(&m3);
}
END_TEST

START_TEST(test_value_equality_rules)
{
    struct gw_value a = gw_value_uint(1), b = gw_value_double(1.0), c = gw_value_int(1);
    ck_assert(gw_value_equal(&a, &b));
    ck_assert(gw_value_equal(&a, &c));
    struct gw_value n1 = gw_value_double(NAN), n2 = gw_value_double(NAN);
    ck_assert(gw_value_equal(&n1, &n2));
    struct gw_value big = gw_value_uint(UINT64_MAX), bigd = gw_value_double(18446744073709551616.0);
    ck_assert(!gw_value_equal(&big, &bigd));
    struct gw_value neg = gw_value_int(-1);
    ck_assert(!gw_value_equal(&neg, &big));
    struct gw_value half = gw_value_double(0.5);
    ck_assert(!gw_value_equal(&half, &a));
    struct gw_value s = gw_value_cstr("1");
    ck_assert(!gw_value_equal(&s, &a));
    gw_value_fini(&s);

    /* maps compare regardless of key order */
    struct gw_value m1 = gw_value_map(), m2 = gw_value_map();
    *gw_value_map_set(&m1, "x", 1) = gw_value_uint(1);
    *gw_value_map_set(&m1, "y", 1) = gw_value_bool(true);
    *gw_value_map_set(&m2, "y", 1) = gw_value_bool(true);
    *gw_value_map_set(&m2, "x", 1) = gw_value_double(1.0);
    ck_assert(gw_value_equal(&m1, &m2));
    *gw_value_map_set(&m2, "x", 1) = gw_value_uint(2);
    ck_assert(!gw_value_equal(&m1, &m2));
    gw_value_fini(&m1);
    gw_value_fini(&m2);
}
END_TEST

START_TEST(test_value_copy_is_deep)
{
    struct gw_value m = gw_value_map(), copy;
    struct gw_value *arr = gw_value_map_set(&m, "list", 4);
    *arr = gw_value_array();
    *gw_value_array_add(arr) = gw_value_cstr("x");
    *gw_value_array_add(arr) = gw_value_bytes("\0\1", 2);
    gw_value_copy(&copy, &m);
    ck_assert(gw_value_equal(&m, &copy));
    gw_value_fini(&m);
    ck_assert_uint_eq(gw_value_count(gw_value_map_get(&copy, "list")), 2);
    gw_value_fini(&copy);
}
END_TEST

START_TEST(test_value_decode_duplicate_keys_last_wins)
{
    /* {"a":1,"a":2} */
    const uint8_t in[] = {0xc2, 0x81, 'a', 0x01, 0x81, 'a', 0x02};
    struct gw_value v;
    ck_assert_int_eq(gw_value_decode(in, sizeof in, &v), (int)sizeof in);
    ck_assert_uint_eq(gw_value_count(&v), 1);
    ck_assert_uint_eq(gw_value_map_get(&v, "a")->u, 2);
    gw_value_fini(&v);
}
END_TEST

START_TEST(test_value_decode_failure_releases_everything)
{
    /* ["abc", {"k": <invalid tag>}] : the partial tree must be freed (ASan checks leaks) */
    const uint8_t in[] = {0xe2, 0x83, 'a', 'b', 'c', 0xc1, 0x81, 'k', 0x4f};
    struct gw_value v;
    ck_assert_int_eq(gw_value_decode(in, sizeof in, &v), GW_EPSON_TAG);
    ck_assert_int_eq(v.type, GW_VALUE_NULL);
    ck_assert_int_eq(gw_value_decode(in, 0, &v), GW_ETRUNC);
}
END_TEST

START_TEST(test_value_keys_with_nul)
{
    struct gw_value m = gw_value_map(), back;
    *gw_value_map_set(&m, "a\0b", 3) = gw_value_uint(7);
    uint8_t buf[32];
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_value_encode(&m, &w);
    ck_assert_int_eq(gw_value_decode(buf, w.len, &back), (int)w.len);
    ck_assert_uint_eq(back.c.key_lens[0], 3);
    ck_assert(gw_value_equal(&m, &back));
    gw_value_fini(&m);
    gw_value_fini(&back);
}
END_TEST

/* Large maps use a hash index: every key found, replacement in place, duplicates last-wins. */
START_TEST(test_value_large_map_index)
{
    struct gw_value m = gw_value_map();
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        *gw_value_map_set(&m, key, strlen(key)) = gw_value_uint((uint64_t)i);
    }
    *gw_value_map_set(&m, "k17", 3) = gw_value_cstr("replaced");
    ck_assert_uint_eq(gw_value_count(&m), 5000);
    ck_assert_str_eq(m.c.keys[17], "k17"); /* position kept */
    ck_assert_str_eq(gw_value_map_get(&m, "k17")->s.p, "replaced");
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        const struct gw_value *v = gw_value_map_get(&m, key);
        ck_assert_ptr_nonnull(v);
        if (i != 17)
            ck_assert_uint_eq(v->u, (uint64_t)i);
    }
    ck_assert_ptr_null(gw_value_map_get(&m, "k5000"));

    /* Encoded with a duplicate of every key appended: decoding keeps 5000 keys, the last values. */
    static uint8_t buf[1 << 17];
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_pson_put_map(&w, 10000);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        gw_pson_put_cstr(&w, key);
        gw_pson_put_uint(&w, 1);
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        gw_pson_put_cstr(&w, key);
        gw_pson_put_uint(&w, 2);
    }
    ck_assert(gw_pson_writer_ok(&w));
    struct gw_value d;
    ck_assert_int_eq(gw_value_decode(buf, w.len, &d), (int)w.len);
    ck_assert_uint_eq(gw_value_count(&d), 5000);
    ck_assert_uint_eq(gw_value_map_get(&d, "k4999")->u, 2);
    struct gw_value copy;
    gw_value_copy(&copy, &d);
    ck_assert(gw_value_equal(&copy, &d));
    gw_value_fini(&copy);
    gw_value_fini(&d);
    gw_value_fini(&m);
}
END_TEST

static Suite *value_suite(void)
{
    Suite *s = suite_create("value");
    TCase *tc = tcase_create("tree");
    tcase_add_test(tc, test_value_map_set_replaces_in_place);
    tcase_add_test(tc, test_value_equality_rules);
    tcase_add_test(tc, test_value_identity_rules);
    tcase_add_test(tc, test_value_copy_is_deep);
    tcase_add_test(tc, test_value_decode_duplicate_keys_last_wins);
    tcase_add_test(tc, test_value_decode_failure_releases_everything);
    tcase_add_test(tc, test_value_keys_with_nul);
    tcase_add_test(tc, test_value_large_map_index);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(value_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
