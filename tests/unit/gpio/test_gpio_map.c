/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GPIO adapter's pure core without hardware: config mapping (defaults, every semantic error
 * with its JSON Pointer), the stable-state debounce on given timestamps (single edges, bursts
 * that end at either level, a burst longer than the window, window 0), which edges count, and
 * the counter's rate window.
 */
#include "gpio_map.h"

#include "gw/config.h"
#include "gw/error.h"
#include "gw/json.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MS 1000000ull

/* Collected config errors: "pointer: message" lines. */
static char errs[4096];
static int n_errs;

static void collect(void *arg, const char *pointer, const char *msg)
{
    (void)arg;
    size_t len = strlen(errs);
    snprintf(errs + len, sizeof errs - len, "%s: %s\n", pointer, msg);
    n_errs++;
}

static int parse_text(const char *text, struct gw_gpio_cfg *cfg)
{
    struct gw_config_doc *doc;
    ck_assert_int_eq(gw_config_parse(text, strlen(text), "t.json", &doc, NULL), 0);
    struct gw_value v;
    ck_assert_int_eq(gw_json_to_value(gw_config_root(doc), &v), 0);
    errs[0] = '\0';
    n_errs = 0;
    int rc = gw_gpio_cfg_parse(&v, cfg, collect, NULL);
    gw_value_fini(&v);
    gw_config_free(doc);
    return rc;
}

/* Parses a config that must fail and checks that the errors mention want. */
static void expect_error(const char *text, const char *want)
{
    struct gw_gpio_cfg cfg;
    ck_assert_int_eq(parse_text(text, &cfg), GW_ECONFIG);
    ck_assert_ptr_null(cfg.lines);
    if (!strstr(errs, want))
        ck_abort_msg("expected an error containing \"%s\", got:\n%s", want, errs);
}

START_TEST(test_cfg_defaults_and_fields)
{
    struct gw_gpio_cfg cfg;
    const char *text =
        "{\"type\":\"gpio\",\"name\":\"pi\",\"chip\":\"gpiochip0\",\"lines\":["
        "{\"name\":\"relay\",\"offset\":17,\"direction\":\"output\",\"initial\":true,"
        "\"safe\":false,\"drive\":\"open-drain\",\"pulse_ms\":250},"
        "{\"name\":\"door\",\"line\":\"GPIO22\",\"direction\":\"input\",\"bias\":\"pull-up\","
        "\"active_low\":true,\"debounce_ms\":30,\"edge\":\"falling\",\"rate_window_s\":10},"
        "{\"name\":\"plain\",\"chip\":\"gw-sim\",\"offset\":3,\"direction\":\"input\"}]}";
    ck_assert_int_eq(parse_text(text, &cfg), 0);
    ck_assert_int_eq(n_errs, 0);
    ck_assert_str_eq(cfg.consumer, "iotmp-gateway");
    ck_assert_uint_eq(cfg.n_lines, 3);
    const struct gw_gpio_line_cfg *r = &cfg.lines[0], *d = &cfg.lines[1], *p = &cfg.lines[2];
    ck_assert_str_eq(r->name, "relay");
    ck_assert_str_eq(r->chip, "gpiochip0"); /* from the top level */
    ck_assert_int_eq(r->offset, 17);
    ck_assert_int_eq(r->dir, GW_GPIO_DIR_OUTPUT);
    ck_assert_int_eq(r->initial, 1);
    ck_assert_int_eq(r->safe, 0);
    ck_assert_int_eq(r->drive, GW_GPIO_DRIVE_OPEN_DRAIN);
    ck_assert_uint_eq(r->pulse_ms, 250);
    ck_assert_int_eq(r->edge, GW_GPIO_EDGE_NONE);
    ck_assert_ptr_null(d->chip);
    ck_assert_str_eq(d->line_name, "GPIO22");
    ck_assert_int_eq(d->offset, -1);
    ck_assert(d->active_low);
    ck_assert_int_eq(d->bias, GW_GPIO_BIAS_PULL_UP);
    ck_assert_uint_eq(d->debounce_ms, 30);
    ck_assert_int_eq(d->edge, GW_GPIO_EDGE_FALLING);
    ck_assert_uint_eq(d->rate_window_s, 10);
    ck_assert_int_eq(d->safe, -1);
    ck_assert_str_eq(p->chip, "gw-sim"); /* a line's chip beats the top level */
    ck_assert_int_eq(p->edge, GW_GPIO_EDGE_BOTH); /* inputs default to both edges */
    ck_assert_uint_eq(p->rate_window_s, 60);
    ck_assert_int_eq(p->bias, GW_GPIO_BIAS_AS_IS);
    ck_assert_str_eq(p->pointer, "/lines/2");
    char where[64];
    gw_gpio_line_where(p, where, sizeof where);
    ck_assert_str_eq(where, "gw-sim line 3");
    gw_gpio_line_where(d, where, sizeof where);
    ck_assert_str_eq(where, "line 'GPIO22'");
    gw_gpio_cfg_fini(&cfg);
}
END_TEST

START_TEST(test_cfg_semantic_errors)
{
#define HDR "{\"type\":\"gpio\",\"name\":\"pi\",\"lines\":["
    expect_error(HDR "{\"name\":\"a\",\"offset\":1,\"direction\":\"input\"}]}",
                 "/lines/0: \"offset\" needs a \"chip\"");
    expect_error(HDR "{\"name\":\"a\",\"chip\":\"c\",\"offset\":1,\"line\":\"x\","
                     "\"direction\":\"input\"}]}",
                 "/lines/0: give either \"line\"");
    expect_error(HDR "{\"name\":\"a\",\"direction\":\"input\"}]}",
                 "/lines/0: name the line with \"line\"");
    expect_error(HDR "{\"name\":\"a\",\"chip\":\"c\",\"offset\":1,\"direction\":\"input\"},"
                     "{\"name\":\"a\",\"chip\":\"c\",\"offset\":2,\"direction\":\"input\"}]}",
                 "/lines/1/name: point name \"a\" is already used at /lines/0");
    expect_error(HDR "{\"name\":\"a\",\"chip\":\"c\",\"offset\":1,\"direction\":\"input\"},"
                     "{\"name\":\"b\",\"chip\":\"c\",\"offset\":1,\"direction\":\"output\"}]}",
                 "/lines/1: c line 1 is already declared at /lines/0");
    expect_error(HDR "{\"name\":\"a\",\"line\":\"L\",\"direction\":\"input\"},"
                     "{\"name\":\"b\",\"line\":\"L\",\"direction\":\"input\"}]}",
                 "/lines/1: line 'L' is already declared at /lines/0");
    expect_error(HDR "{\"name\":\"a\",\"line\":\"L\",\"direction\":\"input\",\"safe\":true}]}",
                 "/lines/0/safe: \"safe\" applies to output lines only; this line is an input");
    expect_error(HDR "{\"name\":\"a\",\"line\":\"L\",\"direction\":\"input\",\"pulse_ms\":5}]}",
                 "/lines/0/pulse_ms: \"pulse_ms\" applies to output lines only");
    expect_error(HDR "{\"name\":\"a\",\"line\":\"L\",\"direction\":\"output\",\"edge\":\"both\"}]}",
                 "/lines/0/edge: \"edge\" applies to input lines only; this line is an output");
    expect_error(HDR "{\"name\":\"a\",\"line\":\"L\",\"direction\":\"output\",\"debounce_ms\":5}]}",
                 "/lines/0/debounce_ms: \"debounce_ms\" applies to input lines only");
    expect_error(HDR "{\"name\":\"a\",\"line\":\"L\",\"direction\":\"input\",\"edge\":\"none\","
                     "\"debounce_ms\":5}]}",
                 "/lines/0/debounce_ms: debounce needs edge events");
    /* Shape errors the schema would catch are still errors, not crashes. */
    expect_error(HDR "{\"name\":\"a b\",\"line\":\"L\",\"direction\":\"input\"}]}",
                 "/lines/0/name: \"a b\" is not a valid point name");
    expect_error(HDR "{\"name\":\"a\",\"line\":\"L\",\"direction\":\"sideways\"}]}",
                 "/lines/0/direction: must be one of input, output");
    expect_error(HDR "{\"name\":\"a\",\"chip\":\"c\",\"offset\":5000,\"direction\":\"input\"}]}",
                 "/lines/0/offset: 5000 is out of range 0..1023");
    expect_error(HDR "{\"name\":\"a\",\"line\":\"L\",\"direction\":\"input\","
                     "\"debounce_ms\":\"x\"}]}",
                 "/lines/0/debounce_ms: must be an integer");
    expect_error(HDR "7]}", "/lines/0: must be an object");
    expect_error(HDR "]}", "/lines: \"lines\" must be a non-empty array");
    expect_error("{\"type\":\"gpio\",\"name\":\"pi\"}", ": \"lines\" must be a non-empty array");
    expect_error("[1]", ": the instance config must be an object");
#undef HDR
}
END_TEST

START_TEST(test_cfg_reports_every_error)
{
    struct gw_gpio_cfg cfg;
    const char *text = "{\"type\":\"gpio\",\"name\":\"pi\",\"lines\":["
                       "{\"name\":\"a\",\"offset\":1,\"direction\":\"input\",\"safe\":true},"
                       "{\"name\":\"b\",\"line\":\"L\",\"direction\":\"output\","
                       "\"edge\":\"both\"}]}";
    ck_assert_int_eq(parse_text(text, &cfg), GW_ECONFIG);
    ck_assert_int_eq(n_errs, 3);
}
END_TEST

START_TEST(test_debounce_single_edges_after_window)
{
    struct gw_gpio_debounce d;
    gw_gpio_debounce_init(&d, 20, 0);
    ck_assert_int_eq(gw_gpio_debounce_feed(&d, 1, 1000 * MS), 0);
    ck_assert(d.busy);
    ck_assert_uint_eq(gw_gpio_debounce_deadline(&d), 1020 * MS);
    ck_assert_int_eq(gw_gpio_debounce_settle(&d, 1019 * MS), 0); /* too early */
    ck_assert(d.busy);
    ck_assert_int_eq(gw_gpio_debounce_settle(&d, 1020 * MS), 1);
    ck_assert_int_eq(d.stable, 1);
    ck_assert(!d.busy);
    ck_assert_int_eq(gw_gpio_debounce_settle(&d, 1100 * MS), 0); /* nothing pending */
    ck_assert_int_eq(gw_gpio_debounce_feed(&d, 0, 2000 * MS), 0);
    ck_assert_int_eq(gw_gpio_debounce_settle(&d, 2050 * MS), 1);
    ck_assert_int_eq(d.stable, 0);
}
END_TEST

START_TEST(test_debounce_burst_back_to_old_level_is_nothing)
{
    struct gw_gpio_debounce d;
    gw_gpio_debounce_init(&d, 20, 0);
    uint64_t t = 5000 * MS;
    for (int i = 0; i < 10; i++) /* 0→1→0 ... ten edges, 1 ms apart, ends at 0 */
        ck_assert_int_eq(gw_gpio_debounce_feed(&d, i % 2 == 0, t + (uint64_t)i * MS), 0);
    ck_assert_int_eq(d.pending, 0);
    ck_assert_uint_eq(gw_gpio_debounce_deadline(&d), t + 9 * MS + 20 * MS);
    ck_assert_int_eq(gw_gpio_debounce_settle(&d, t + 29 * MS), 0);
    ck_assert(!d.busy);
    ck_assert_int_eq(d.stable, 0);
}
END_TEST

START_TEST(test_debounce_burst_to_new_level_is_one_change)
{
    struct gw_gpio_debounce d;
    gw_gpio_debounce_init(&d, 20, 1);
    uint64_t t = 5000 * MS;
    for (int i = 0; i < 9; i++) /* 1→0→1 ... nine edges, ends at 0 */
        gw_gpio_debounce_feed(&d, i % 2, t + (uint64_t)i * 2 * MS);
    ck_assert_int_eq(d.pending, 0);
    /* The settle timer fired early (while still bouncing): no change, still busy. */
    ck_assert_int_eq(gw_gpio_debounce_settle(&d, t + 10 * MS), 0);
    ck_assert(d.busy);
    ck_assert_int_eq(gw_gpio_debounce_settle(&d, gw_gpio_debounce_deadline(&d)), 1);
    ck_assert_int_eq(d.stable, 0);
}
END_TEST

START_TEST(test_debounce_long_burst_extends_window)
{
    struct gw_gpio_debounce d;
    gw_gpio_debounce_init(&d, 10, 0);
    /* Edges every 5 ms for 200 ms: never quiet for 10 ms, so nothing settles until the end. */
    uint64_t t = 0;
    for (int i = 0; i < 40; i++) {
        gw_gpio_debounce_feed(&d, i % 2 == 0, t);
        ck_assert_int_eq(gw_gpio_debounce_settle(&d, t + 4 * MS), 0);
        t += 5 * MS;
    }
    ck_assert_int_eq(d.stable, 0);
    ck_assert_int_eq(d.pending, 0); /* 40 edges: ends where it started */
    gw_gpio_debounce_feed(&d, 1, t);
    ck_assert_int_eq(gw_gpio_debounce_settle(&d, t + 10 * MS), 1);
    ck_assert_int_eq(d.stable, 1);
}
END_TEST

START_TEST(test_debounce_window_zero_counts_every_change)
{
    struct gw_gpio_debounce d;
    gw_gpio_debounce_init(&d, 0, 0);
    ck_assert_int_eq(gw_gpio_debounce_feed(&d, 1, 1), 1);
    ck_assert_int_eq(gw_gpio_debounce_feed(&d, 1, 2), 0); /* repeated level: no change */
    ck_assert_int_eq(gw_gpio_debounce_feed(&d, 0, 3), 1);
    ck_assert_int_eq(d.stable, 0);
    ck_assert(!d.busy);
}
END_TEST

START_TEST(test_edge_counts)
{
    ck_assert(gw_gpio_edge_counts(GW_GPIO_EDGE_RISING, 1));
    ck_assert(!gw_gpio_edge_counts(GW_GPIO_EDGE_RISING, 0));
    ck_assert(gw_gpio_edge_counts(GW_GPIO_EDGE_FALLING, 0));
    ck_assert(!gw_gpio_edge_counts(GW_GPIO_EDGE_FALLING, 1));
    ck_assert(gw_gpio_edge_counts(GW_GPIO_EDGE_BOTH, 0));
    ck_assert(gw_gpio_edge_counts(GW_GPIO_EDGE_BOTH, 1));
    ck_assert(!gw_gpio_edge_counts(GW_GPIO_EDGE_NONE, 1));
}
END_TEST

START_TEST(test_counter_rate_window)
{
    struct gw_gpio_counter c;
    gw_gpio_counter_init(&c, 10);
    uint64_t s = 1000000000ull;
    for (int i = 0; i < 20; i++) /* 20 edges within second 100 */
        gw_gpio_counter_add(&c, 100 * s + (uint64_t)i * 10 * MS);
    for (int i = 0; i < 10; i++) /* 10 within second 104 */
        gw_gpio_counter_add(&c, 104 * s + (uint64_t)i * MS);
    ck_assert_uint_eq(c.count, 30);
    ck_assert_double_eq_tol(gw_gpio_counter_rate(&c, 104 * s + 500 * MS), 3.0, 1e-9);
    ck_assert_double_eq_tol(gw_gpio_counter_rate(&c, 109 * s), 3.0, 1e-9);
    ck_assert_double_eq_tol(gw_gpio_counter_rate(&c, 110 * s), 1.0, 1e-9); /* second 100 left */
    ck_assert_double_eq_tol(gw_gpio_counter_rate(&c, 114 * s), 0.0, 1e-9);
    /* A slot reused by a later second drops the old second's edges. */
    gw_gpio_counter_add(&c, 110 * s);
    ck_assert_double_eq_tol(gw_gpio_counter_rate(&c, 110 * s), 1.1, 1e-9);
    ck_assert_uint_eq(c.count, 31);
    gw_gpio_counter_fini(&c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gpio_map");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_cfg_defaults_and_fields);
    tcase_add_test(tc, test_cfg_semantic_errors);
    tcase_add_test(tc, test_cfg_reports_every_error);
    tcase_add_test(tc, test_debounce_single_edges_after_window);
    tcase_add_test(tc, test_debounce_burst_back_to_old_level_is_nothing);
    tcase_add_test(tc, test_debounce_burst_to_new_level_is_one_change);
    tcase_add_test(tc, test_debounce_long_burst_extends_window);
    tcase_add_test(tc, test_debounce_window_zero_counts_every_change);
    tcase_add_test(tc, test_edge_counts);
    tcase_add_test(tc, test_counter_rate_window);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
