/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of adapters/modbus/modbus_late.c: missed deadlines (a poll a whole interval late is
 * missed, one microsecond less is not; skipped polls count), the maximum, and quantiles within
 * the histogram's resolution (12.5 %) against exact quantiles of random samples.
 */
#include "modbus_late.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

START_TEST(empty)
{
    struct gw_modbus_late l;
    memset(&l, 0, sizeof l);
    ck_assert_uint_eq(gw_modbus_late_quantile(&l, 0.99), 0);
    ck_assert_uint_eq(l.missed, 0);
}
END_TEST

START_TEST(missed_deadlines)
{
    struct gw_modbus_late l;
    memset(&l, 0, sizeof l);
    gw_modbus_late_record(&l, 0, 1000000);
    gw_modbus_late_record(&l, 999999, 1000000);
    ck_assert_uint_eq(l.missed, 0);
    gw_modbus_late_record(&l, 1000000, 1000000);
    ck_assert_uint_eq(l.missed, 1);
    gw_modbus_late_record(&l, 5000000, 1000000);
    ck_assert_uint_eq(l.missed, 2);
    gw_modbus_late_skip(&l, 3);
    ck_assert_uint_eq(l.missed, 5);
    ck_assert_uint_eq(l.skipped, 3);
    ck_assert_uint_eq(l.polls, 4);
    ck_assert_uint_eq(l.max_us, 5000000);
    /* An interval of 0 (unknown) never counts as missed. */
    gw_modbus_late_record(&l, 10, 0);
    ck_assert_uint_eq(l.missed, 5);
}
END_TEST

START_TEST(small_values_exact)
{
    struct gw_modbus_late l;
    memset(&l, 0, sizeof l);
    for (uint64_t v = 0; v < 8; v++)
        gw_modbus_late_record(&l, v, 1000);
    ck_assert_uint_eq(gw_modbus_late_quantile(&l, 0.125), 0);
    ck_assert_uint_eq(gw_modbus_late_quantile(&l, 0.5), 3);
    ck_assert_uint_eq(gw_modbus_late_quantile(&l, 1.0), 7);
}
END_TEST

START_TEST(max_caps_quantile)
{
    struct gw_modbus_late l;
    memset(&l, 0, sizeof l);
    gw_modbus_late_record(&l, 1000, 0);
    ck_assert_uint_le(gw_modbus_late_quantile(&l, 0.99), 1000);
    ck_assert_uint_ge(gw_modbus_late_quantile(&l, 0.99), 875);
    /* Huge values land in the last bucket without overflow. */
    gw_modbus_late_record(&l, UINT64_MAX / 2, 0);
    ck_assert_uint_eq(l.max_us, UINT64_MAX / 2);
    ck_assert_uint_gt(gw_modbus_late_quantile(&l, 1.0), 1000);
}
END_TEST

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

START_TEST(quantiles_against_exact)
{
    enum { N = 20000 };
    static uint64_t v[N];
    struct gw_modbus_late l;
    memset(&l, 0, sizeof l);
    srand(42 + (unsigned)_i);
    for (int i = 0; i < N; i++) {
        /* Log-uniform from 1 us to about 16 s. */
        int shift = rand() % 24;
        v[i] = ((uint64_t)1 << shift) + (uint64_t)rand() % ((uint64_t)1 << shift);
        gw_modbus_late_record(&l, v[i], 1000000);
    }
    qsort(v, N, sizeof v[0], cmp_u64);
    const double qs[] = {0.5, 0.9, 0.99, 0.999};
    for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
        uint64_t exact = v[(size_t)(qs[k] * N + 0.999999) - 1];
        uint64_t est = gw_modbus_late_quantile(&l, qs[k]);
        double rel = exact ? ((double)est - (double)exact) / (double)exact : (double)est;
        ck_assert_msg(rel < 0.125 && rel > -0.125, "q%.3f: exact %llu, estimate %llu", qs[k],
                      (unsigned long long)exact, (unsigned long long)est);
    }
    uint64_t missed = 0;
    for (int i = 0; i < N; i++)
        missed += v[i] >= 1000000;
    ck_assert_uint_eq(l.missed, missed);
    ck_assert_uint_eq(l.max_us, v[N - 1]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("modbus_late");
    TCase *tc = tcase_create("late");
    tcase_add_test(tc, empty);
    tcase_add_test(tc, missed_deadlines);
    tcase_add_test(tc, small_values_exact);
    tcase_add_test(tc, max_caps_quantile);
    tcase_add_loop_test(tc, quantiles_against_exact, 0, 4);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
