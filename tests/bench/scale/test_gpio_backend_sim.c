/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The scale benchmark's simulated GPIO backend (gpio_backend_sim.c) through the gpio_backend.h
 * interface: edges come in order with alternating levels and timestamps one period apart, a full
 * queue drops edges and counts them, reads drain the queue across calls, the event fd wakes a
 * poller, outputs keep the level written, and the stats file balances (generated = delivered +
 * dropped + queued). Each test runs in its own process (Check's fork mode), so each starts with
 * fresh settings from the environment. No assertion depends on timing: sleeps only make sure
 * that at least some edges are due.
 */
#include "gpio_backend.h"

#include "gw/error.h"

#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct sim_stats {
    unsigned long long lines, generated, delivered, dropped, queued;
    double rate;
    unsigned long long queue;
};

static char stats_path[64];

static void setup_env(const char *rate, const char *queue)
{
    snprintf(stats_path, sizeof stats_path, "/tmp/gw-gpio-sim-test.%d.json", (int)getpid());
    setenv("GW_GPIO_SIM_RATE", rate, 1);
    setenv("GW_GPIO_SIM_QUEUE", queue, 1);
    setenv("GW_GPIO_SIM_STATS", stats_path, 1);
}

static void read_stats(struct sim_stats *st)
{
    FILE *f = fopen(stats_path, "r");
    ck_assert_msg(f != NULL, "no stats file %s", stats_path);
    int n = fscanf(f, "{\"lines\": %llu, \"rate_per_line\": %lf, \"queue\": %llu, "
                      "\"generated\": %llu, \"delivered\": %llu, \"dropped\": %llu, "
                      "\"queued\": %llu", &st->lines, &st->rate, &st->queue, &st->generated,
                   &st->delivered, &st->dropped, &st->queued);
    fclose(f);
    unlink(stats_path);
    ck_assert_int_eq(n, 7);
    ck_assert_uint_eq(st->generated, st->delivered + st->dropped + st->queued);
}

static struct gw_gpio_line_cfg line_cfg(int offset, enum gw_gpio_dir dir)
{
    struct gw_gpio_line_cfg c = {.name = "in", .chip = "sim", .offset = offset, .dir = dir,
                                 .edge = GW_GPIO_EDGE_BOTH, .safe = -1, .pointer = "/lines/0"};
    return c;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static struct gw_gpio_handle *open_input(int offset)
{
    struct gw_gpio_line_cfg c = line_cfg(offset, GW_GPIO_DIR_INPUT);
    struct gw_gpio_handle *h = NULL;
    char err[256] = "";
    ck_assert_int_eq(gw_gpio_backend_open(&c, "test", true, &h, err, sizeof err), 0);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_ge(gw_gpio_backend_event_fd(h), 0);
    return h;
}

/* Edges are consecutive: levels alternate and timestamps are exactly one period apart. */
static void check_consecutive(const struct gw_gpio_event *ev, int n, uint64_t period_ns)
{
    for (int i = 1; i < n; i++) {
        ck_assert_int_eq(ev[i].level, !ev[i - 1].level);
        ck_assert_uint_eq(ev[i].ts_ns - ev[i - 1].ts_ns, period_ns);
    }
}

START_TEST(test_gpio_sim_full_queue_drops_newest_edges)
{
    setup_env("2000", "4"); /* one edge every 0.5 ms, 4 queued at most */
    struct gw_gpio_handle *h = open_input(0);
    sleep_ms(50); /* at least ~100 edges due, far more than the queue holds */
    struct gw_gpio_event ev[16];
    int n = gw_gpio_backend_read_events(h, ev, 16);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(ev[0].level, 1); /* the line starts low; the first edge rises */
    check_consecutive(ev, n, 500000);
    /* The kernel keeps the oldest events: the queue's first is the first edge. */
    int level;
    ck_assert_int_eq(gw_gpio_backend_get(h, &level), 0);
    gw_gpio_backend_close(h);
    struct sim_stats st;
    read_stats(&st);
    ck_assert_uint_eq(st.delivered, 4);
    ck_assert_uint_gt(st.dropped, 0);
    ck_assert_uint_eq(st.queue, 4);
    ck_assert_uint_eq(st.lines, 1);
}
END_TEST

START_TEST(test_gpio_sim_reads_drain_in_order)
{
    setup_env("1000", "4096");
    struct gw_gpio_handle *h = open_input(0);
    sleep_ms(30);
    struct gw_gpio_event all[4096];
    int total = 0, n;
    /* Small reads: each continues where the last stopped. */
    while ((n = gw_gpio_backend_read_events(h, all + total, 3)) > 0) {
        ck_assert_int_le(n, 3);
        total += n;
        if (total > 4000)
            break;
    }
    ck_assert_int_ge(n, 0);
    ck_assert_int_ge(total, 20); /* >= 30 ms at 1 edge per ms, minus the first period */
    check_consecutive(all, total, 1000000);
    gw_gpio_backend_close(h);
    struct sim_stats st;
    read_stats(&st);
    ck_assert_uint_eq(st.dropped, 0);
    ck_assert_uint_eq(st.delivered, (unsigned long long)total);
}
END_TEST

START_TEST(test_gpio_sim_event_fd_wakes_a_poller)
{
    setup_env("1000", "16");
    struct gw_gpio_handle *h = open_input(3);
    struct pollfd p = {.fd = gw_gpio_backend_event_fd(h), .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 10000), 1); /* waits for the first edge (due after 1 ms) */
    struct gw_gpio_event ev[16];
    ck_assert_int_ge(gw_gpio_backend_read_events(h, ev, 16), 1);
    ck_assert_ptr_nonnull(strstr(gw_gpio_backend_where(h), "simulated"));
    gw_gpio_backend_close(h);
    struct sim_stats st;
    read_stats(&st);
    ck_assert_uint_ge(st.delivered, 1);
}
END_TEST

START_TEST(test_gpio_sim_output_keeps_written_level)
{
    setup_env("1000", "16");
    struct gw_gpio_line_cfg c = line_cfg(5, GW_GPIO_DIR_OUTPUT);
    c.initial = 1;
    struct gw_gpio_handle *h = NULL;
    char err[256];
    ck_assert_int_eq(gw_gpio_backend_open(&c, "test", false, &h, err, sizeof err), 0);
    ck_assert_int_eq(gw_gpio_backend_event_fd(h), -1);
    int level = -1;
    ck_assert_int_eq(gw_gpio_backend_get(h, &level), 0);
    ck_assert_int_eq(level, 1);
    ck_assert_int_eq(gw_gpio_backend_set(h, 0), 0);
    ck_assert_int_eq(gw_gpio_backend_get(h, &level), 0);
    ck_assert_int_eq(level, 0);
    struct gw_gpio_event ev[1];
    ck_assert_int_eq(gw_gpio_backend_read_events(h, ev, 1), GW_EINVAL);
    gw_gpio_backend_close(h);
    gw_gpio_backend_close(NULL);
}
END_TEST

START_TEST(test_gpio_sim_bad_settings_fall_back_to_defaults)
{
    setup_env("fast", "0");
    struct gw_gpio_handle *h = open_input(0);
    gw_gpio_backend_close(h);
    struct sim_stats st;
    read_stats(&st);
    ck_assert(st.rate > 624.9 && st.rate < 625.1);
    ck_assert_uint_eq(st.queue, 16);
}
END_TEST

static Suite *gpio_backend_sim_suite(void)
{
    Suite *s = suite_create("gpio_backend_sim");
    TCase *tc = tcase_create("sim");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_gpio_sim_full_queue_drops_newest_edges);
    tcase_add_test(tc, test_gpio_sim_reads_drain_in_order);
    tcase_add_test(tc, test_gpio_sim_event_fd_wakes_a_poller);
    tcase_add_test(tc, test_gpio_sim_output_keeps_written_level);
    tcase_add_test(tc, test_gpio_sim_bad_settings_fall_back_to_defaults);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(gpio_backend_sim_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
