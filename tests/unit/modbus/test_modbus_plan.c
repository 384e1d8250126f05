/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of adapters/modbus/modbus_plan.c: gaps at and past the limit, maxima, overlaps,
 * duplicates, mixed units and tables, bad points, input-order independence, and the plan's size
 * against an exhaustive minimum (set cover over every valid request) on random small instances.
 */
#include "modbus_plan.h"

#include "gw/error.h"

#include <check.h>
#include <valgrind/valgrind.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HR GW_MODBUS_TABLE_HOLDING
#define IR GW_MODBUS_TABLE_INPUT
#define CO GW_MODBUS_TABLE_COIL
#define DI GW_MODBUS_TABLE_DISCRETE

static struct gw_modbus_plan_point pt(uint8_t unit, enum gw_modbus_table t, uint16_t a,
                                      uint16_t n)
{
    return (struct gw_modbus_plan_point){.unit = unit, .table = t, .address = a, .count = n};
}

/*
 * Checks the invariants every plan must hold, independent of how it was built: each point lies
 * inside its request of the same unit and table; each request spans at most the maximum, starts
 * and ends on addresses that belong to points, and contains no run of addresses outside every
 * point longer than the gap; requests are sorted and do not repeat.
 */
static void check_plan(const struct gw_modbus_plan_point *pts, size_t n,
                       const struct gw_modbus_plan_limits *lim, const struct gw_modbus_plan *plan)
{
    ck_assert_uint_eq(plan->npoints, n);
    unsigned maxr = lim && lim->max_regs ? lim->max_regs : 125;
    unsigned maxb = lim && lim->max_bits ? lim->max_bits : 2000;
    unsigned gapr = lim ? lim->gap_regs : 0, gapb = lim ? lim->gap_bits : 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_lt(plan->point_req[i], plan->nreqs);
        const struct gw_modbus_request *r = &plan->reqs[plan->point_req[i]];
        ck_assert_uint_eq(r->unit, pts[i].unit);
        ck_assert_int_eq(r->table, pts[i].table);
        ck_assert_uint_eq(r->start + plan->point_offset[i], pts[i].address);
        ck_assert_uint_le(plan->point_offset[i] + pts[i].count, r->count);
    }
    for (size_t k = 0; k < plan->nreqs; k++) {
        const struct gw_modbus_request *r = &plan->reqs[k];
        bool bits = r->table == CO || r->table == DI;
        ck_assert_int_eq(r->function, gw_modbus_table_function(r->table));
        ck_assert_uint_ge(r->count, 1);
        ck_assert_uint_le(r->count, bits ? maxb : maxr);
        ck_assert_uint_le((unsigned)r->start + r->count, 65536);
        if (k > 0) {
            const struct gw_modbus_request *q = &plan->reqs[k - 1];
            ck_assert(q->unit < r->unit || (q->unit == r->unit && q->table < r->table) ||
                      (q->unit == r->unit && q->table == r->table && q->start < r->start));
        }
        /* Walk the request's addresses: which belong to some point of its unit and table? */
        unsigned run = 0, gap = bits ? gapb : gapr;
        for (unsigned a = r->start; a < (unsigned)r->start + r->count; a++) {
            bool used = false;
            for (size_t i = 0; i < n && !used; i++)
                used = pts[i].unit == r->unit && pts[i].table == r->table &&
                       a >= pts[i].address && a < (unsigned)pts[i].address + pts[i].count;
            if ((a == r->start || a + 1 == (unsigned)r->start + r->count))
                ck_assert_msg(used, "request %zu starts or ends on an unused address %u", k, a);
            run = used ? 0 : run + 1;
            ck_assert_msg(run <= gap, "request %zu bridges a run of %u > %u", k, run, gap);
        }
    }
}

static int build(const struct gw_modbus_plan_point *pts, size_t n,
                 const struct gw_modbus_plan_limits *lim, struct gw_modbus_plan *plan)
{
    char err[200] = "";
    int rc = gw_modbus_plan_build(pts, n, lim, plan, err, sizeof err);
    ck_assert_msg(rc >= 0, "plan failed: %s", err);
    check_plan(pts, n, lim, plan);
    return rc;
}

START_TEST(test_modbus_plan_empty_and_single)
{
    struct gw_modbus_plan plan;
    ck_assert_int_eq(gw_modbus_plan_build(NULL, 0, NULL, &plan, NULL, 0), 0);
    ck_assert_uint_eq(plan.nreqs, 0);
    gw_modbus_plan_fini(&plan);

    struct gw_modbus_plan_point p[] = {pt(7, IR, 300, 2)};
    ck_assert_int_eq(build(p, 1, NULL, &plan), 1);
    ck_assert_uint_eq(plan.reqs[0].unit, 7);
    ck_assert_uint_eq(plan.reqs[0].function, 4);
    ck_assert_uint_eq(plan.reqs[0].start, 300);
    ck_assert_uint_eq(plan.reqs[0].count, 2);
    gw_modbus_plan_fini(&plan);
    gw_modbus_plan_fini(&plan); /* twice is harmless */
}
END_TEST

START_TEST(test_modbus_plan_gap_at_limit)
{
    struct gw_modbus_plan_limits lim = {.gap_regs = 3, .gap_bits = 10};
    struct gw_modbus_plan plan;
    /* Registers 0-1 and 5: a run of 3 unused (2, 3, 4) is bridged. */
    struct gw_modbus_plan_point a[] = {pt(1, HR, 0, 2), pt(1, HR, 5, 1)};
    ck_assert_int_eq(build(a, 2, &lim, &plan), 1);
    ck_assert_uint_eq(plan.reqs[0].start, 0);
    ck_assert_uint_eq(plan.reqs[0].count, 6);
    ck_assert_uint_eq(plan.point_offset[1], 5);
    gw_modbus_plan_fini(&plan);
    /* One more unused register splits. */
    struct gw_modbus_plan_point b[] = {pt(1, HR, 0, 2), pt(1, HR, 6, 1)};
    ck_assert_int_eq(build(b, 2, &lim, &plan), 2);
    gw_modbus_plan_fini(&plan);
    /* Bits have their own gap. */
    struct gw_modbus_plan_point c[] = {pt(1, CO, 0, 1), pt(1, CO, 11, 1), pt(1, CO, 23, 1)};
    ck_assert_int_eq(build(c, 3, &lim, &plan), 2);
    ck_assert_uint_eq(plan.reqs[0].count, 12);
    ck_assert_uint_eq(plan.reqs[1].start, 23);
    gw_modbus_plan_fini(&plan);
    /* Gap 0: touching points join, one unused register between splits. */
    struct gw_modbus_plan_point d[] = {pt(1, HR, 10, 2), pt(1, HR, 12, 2), pt(1, HR, 15, 1)};
    ck_assert_int_eq(build(d, 3, NULL, &plan), 2);
    ck_assert_uint_eq(plan.reqs[0].count, 4);
    gw_modbus_plan_fini(&plan);
}
END_TEST

START_TEST(test_modbus_plan_maxima)
{
    struct gw_modbus_plan plan;
    /* 125 registers in one read; the 126th starts a second. */
    struct gw_modbus_plan_point a[] = {pt(1, HR, 0, 100), pt(1, HR, 100, 25), pt(1, HR, 125, 1)};
    ck_assert_int_eq(build(a, 2, NULL, &plan), 1);
    ck_assert_uint_eq(plan.reqs[0].count, 125);
    gw_modbus_plan_fini(&plan);
    ck_assert_int_eq(build(a, 3, NULL, &plan), 2);
    gw_modbus_plan_fini(&plan);
    /* 2000 bits in one read. */
    struct gw_modbus_plan_point b[] = {pt(1, DI, 0, 1), pt(1, DI, 1999, 1), pt(1, DI, 2000, 1)};
    struct gw_modbus_plan_limits gap = {.gap_bits = 2000};
    ck_assert_int_eq(build(b, 2, &gap, &plan), 1);
    ck_assert_uint_eq(plan.reqs[0].count, 2000);
    gw_modbus_plan_fini(&plan);
    ck_assert_int_eq(build(b, 2, NULL, &plan), 2); /* gap 1998 > 0 */
    gw_modbus_plan_fini(&plan);
    ck_assert_int_eq(build(b, 3, &gap, &plan), 2);
    gw_modbus_plan_fini(&plan);
    /* A fussy device: at most 8 registers per read, any gap bridged. */
    struct gw_modbus_plan_limits lim = {.max_regs = 8, .gap_regs = 100};
    struct gw_modbus_plan_point c[] = {pt(1, HR, 0, 4), pt(1, HR, 4, 4), pt(1, HR, 8, 4),
                                       pt(1, HR, 12, 2), pt(1, HR, 14, 4)};
    ck_assert_int_eq(build(c, 5, &lim, &plan), 3);
    gw_modbus_plan_fini(&plan);
}
END_TEST

START_TEST(test_modbus_plan_rejects_bad_points)
{
    struct gw_modbus_plan plan;
    char err[200];
    struct gw_modbus_plan_point a[] = {pt(1, HR, 0, 1), pt(1, HR, 10, 126)};
    a[1].name = "plc1/huge";
    ck_assert_int_eq(gw_modbus_plan_build(a, 2, NULL, &plan, err, sizeof err), GW_EINVAL);
    ck_assert_str_eq(err, "point plc1/huge: 126 registers at unit 1 holding 10, but a request "
                          "reads 1 .. 125");
    ck_assert_ptr_null(plan.reqs);
    struct gw_modbus_plan_limits lim = {.max_regs = 4};
    struct gw_modbus_plan_point b[] = {pt(1, HR, 0, 5)};
    ck_assert_int_eq(gw_modbus_plan_build(b, 1, &lim, &plan, err, sizeof err), GW_EINVAL);
    ck_assert_str_eq(err, "point #0: 5 registers at unit 1 holding 0, but a request reads 1 .. 4");
    struct gw_modbus_plan_point c[] = {pt(1, CO, 0, 0)};
    ck_assert_int_eq(gw_modbus_plan_build(c, 1, NULL, &plan, err, sizeof err), GW_EINVAL);
    struct gw_modbus_plan_point d[] = {pt(1, HR, 65534, 4)};
    ck_assert_int_eq(gw_modbus_plan_build(d, 1, NULL, &plan, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "past address 65535"));
    struct gw_modbus_plan_limits over = {.max_regs = 126};
    ck_assert_int_eq(gw_modbus_plan_build(d, 1, &over, &plan, err, sizeof err), GW_EINVAL);
    over = (struct gw_modbus_plan_limits){.max_bits = 2001};
    ck_assert_int_eq(gw_modbus_plan_build(d, 1, &over, &plan, err, sizeof err), GW_EINVAL);
    /* The very last register is fine. */
    struct gw_modbus_plan_point e[] = {pt(1, HR, 65535, 1), pt(1, HR, 65532, 4)};
    ck_assert_int_eq(build(e, 2, NULL, &plan), 1);
    ck_assert_uint_eq(plan.reqs[0].start, 65532);
    ck_assert_uint_eq(plan.reqs[0].count, 4);
    gw_modbus_plan_fini(&plan);
}
END_TEST

START_TEST(test_modbus_plan_overlaps_and_duplicates)
{
    struct gw_modbus_plan plan;
    struct gw_modbus_plan_point a[] = {pt(1, HR, 2, 4), pt(1, HR, 0, 4), pt(1, HR, 2, 4),
                                       pt(1, HR, 3, 1)};
    ck_assert_int_eq(build(a, 4, NULL, &plan), 1);
    ck_assert_uint_eq(plan.reqs[0].start, 0);
    ck_assert_uint_eq(plan.reqs[0].count, 6);
    ck_assert_uint_eq(plan.point_offset[0], 2);
    ck_assert_uint_eq(plan.point_offset[1], 0);
    ck_assert_uint_eq(plan.point_offset[2], 2);
    ck_assert_uint_eq(plan.point_offset[3], 3);
    gw_modbus_plan_fini(&plan);

    /* A long point overlapping two short ones at the span limit: 2 requests are the minimum
     * (the long one cannot share with the first), and the short one inside goes with either. */
    struct gw_modbus_plan_limits lim = {.max_regs = 10};
    struct gw_modbus_plan_point b[] = {pt(1, HR, 0, 1), pt(1, HR, 1, 10), pt(1, HR, 2, 1),
                                       pt(1, HR, 10, 1)};
    ck_assert_int_eq(build(b, 4, &lim, &plan), 2);
    gw_modbus_plan_fini(&plan);
}
END_TEST

START_TEST(test_modbus_plan_mixed_units_and_tables)
{
    struct gw_modbus_plan plan;
    struct gw_modbus_plan_point a[] = {
        pt(2, HR, 0, 2), pt(1, HR, 0, 2), pt(1, IR, 0, 2), pt(1, CO, 0, 1),
        pt(1, DI, 0, 1), pt(1, HR, 2, 2), pt(2, HR, 2, 1), pt(1, CO, 1, 1),
    };
    ck_assert_int_eq(build(a, 8, NULL, &plan), 5);
    /* Sorted by unit, then table (coil, discrete, input, holding). */
    static const struct {
        uint8_t unit, function;
        uint16_t start, count;
    } want[] = {{1, 1, 0, 2}, {1, 2, 0, 1}, {1, 4, 0, 2}, {1, 3, 0, 4}, {2, 3, 0, 3}};
    for (size_t k = 0; k < 5; k++) {
        ck_assert_uint_eq(plan.reqs[k].unit, want[k].unit);
        ck_assert_uint_eq(plan.reqs[k].function, want[k].function);
        ck_assert_uint_eq(plan.reqs[k].start, want[k].start);
        ck_assert_uint_eq(plan.reqs[k].count, want[k].count);
    }
    gw_modbus_plan_fini(&plan);
}
END_TEST

/* --- Random instances against an exhaustive minimum --- */

static uint32_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return (rng_state >> 8) % n;
}

/* True if [a, b) is a valid request for the points of pts (one unit and table). */
static bool valid_range(const struct gw_modbus_plan_point *pts, size_t n, unsigned a, unsigned b,
                        unsigned max, unsigned gap)
{
    if (b <= a || b - a > max)
        return false;
    unsigned run = 0;
    for (unsigned x = a; x < b; x++) {
        bool used = false;
        for (size_t i = 0; i < n && !used; i++)
            used = x >= pts[i].address && x < (unsigned)pts[i].address + pts[i].count;
        run = used ? 0 : run + 1;
        if (run > gap)
            return false;
    }
    return true;
}

/*
 * The fewest valid requests covering all points, by breadth-first search over subsets: the
 * candidate requests are every valid [start of a point, end of a point), each covering the set of
 * points inside it. Independent of the planner's reasoning: it tries everything.
 */
static unsigned brute_min(const struct gw_modbus_plan_point *pts, size_t n, unsigned max,
                          unsigned gap)
{
    unsigned cand[64 * 64];
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j++) {
            unsigned a = pts[i].address, b = (unsigned)pts[j].address + pts[j].count;
            if (!valid_range(pts, n, a, b, max, gap))
                continue;
            unsigned mask = 0;
            for (size_t k = 0; k < n; k++)
                if (pts[k].address >= a && (unsigned)pts[k].address + pts[k].count <= b)
                    mask |= 1u << k;
            cand[nc++] = mask;
        }
    }
    unsigned full = (1u << n) - 1;
    static unsigned char dist[1u << 12];
    memset(dist, 0xFF, (size_t)1 << n);
    unsigned queue[1u << 12];
    size_t qh = 0, qt = 0;
    dist[0] = 0;
    queue[qt++] = 0;
    while (qh < qt) {
        unsigned m = queue[qh++];
        if (m == full)
            return dist[m];
        for (size_t c = 0; c < nc; c++) {
            unsigned nm = m | cand[c];
            if (dist[nm] == 0xFF) {
                dist[nm] = (unsigned char)(dist[m] + 1);
                queue[qt++] = nm;
            }
        }
    }
    return 999; /* unreachable: every single point is a valid request */
}

START_TEST(test_modbus_plan_matches_brute_force)
{
    rng_state = 12345u;
    /* 3,000 instances; 300 under valgrind (valgrind.unit: the brute-force oracle is all CPU and
     * took a minute there, while the planner's memory use is the same on every instance). */
    unsigned total_reqs = 0, instances = RUNNING_ON_VALGRIND ? 300 : 3000;
    for (unsigned it = 0; it < instances; it++) {
        struct gw_modbus_plan_point pts[10];
        unsigned max = 1 + rnd(12), gap = rnd(6), span = 8 + rnd(40);
        size_t n = 1 + rnd(10);
        for (size_t i = 0; i < n; i++) {
            unsigned cnt = 1 + rnd(max < 4 ? max : 4);
            pts[i] = pt(1, HR, (uint16_t)rnd(span), (uint16_t)cnt);
        }
        struct gw_modbus_plan_limits lim = {.max_regs = (uint16_t)max, .gap_regs = (uint16_t)gap};
        struct gw_modbus_plan plan;
        int got = build(pts, n, &lim, &plan);
        gw_modbus_plan_fini(&plan);
        unsigned want = brute_min(pts, n, max, gap);
        ck_assert_msg((unsigned)got == want,
                      "instance %u: planner %d requests, minimum %u (max %u gap %u n %zu)", it, got,
                      want, max, gap, n);
        total_reqs += (unsigned)got;

        /* Same points in another order and spread over two units: same total. */
        struct gw_modbus_plan_point shuffled[20];
        for (size_t i = 0; i < n; i++) {
            shuffled[i] = pts[n - 1 - i];
            shuffled[n + i] = pts[i];
            shuffled[n + i].unit = 2;
        }
        got = build(shuffled, 2 * n, &lim, &plan);
        gw_modbus_plan_fini(&plan);
        ck_assert_uint_eq((unsigned)got, 2 * want);
    }
    ck_assert_uint_gt(total_reqs, instances); /* the instances were not all trivial */
}
END_TEST

static Suite *modbus_plan_suite(void)
{
    Suite *s = suite_create("modbus_plan");
    TCase *tc = tcase_create("edges");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_modbus_plan_empty_and_single);
    tcase_add_test(tc, test_modbus_plan_gap_at_limit);
    tcase_add_test(tc, test_modbus_plan_maxima);
    tcase_add_test(tc, test_modbus_plan_rejects_bad_points);
    tcase_add_test(tc, test_modbus_plan_overlaps_and_duplicates);
    tcase_add_test(tc, test_modbus_plan_mixed_units_and_tables);
    suite_add_tcase(s, tc);
    tc = tcase_create("minimal");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_modbus_plan_matches_brute_force);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(modbus_plan_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
