/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GPIO adapter against a real kernel GPIO chip (gpio-sim), run inside the VM that
 * gpio_vm.sh boots. It links the real adapter, gw_core (loop + registry) and libgpiod, creates
 * one adapter instance through gw_gpio_adapter and drives it only through gw_registry_call, and
 * checks the kernel side through gpio-sim's sysfs attributes:
 *   outputs set and read back (sim_gpioN/value), active-low, initial and safe values, pulse;
 *   inputs following pull-up / pull-down written to sim_gpioN/pull (active-low too);
 *   rising and falling edges streamed to a subscriber, with kernel timestamps;
 *   debounce suppressing a burst of toggles, and turning a burst that ends elsewhere into one
 *   change;
 *   the edge counter and its reset; bad input: missing chip, missing line name, offset beyond the
 *   chip, a line held by another process (and recovery once it is released), a write to an input.
 * Output is TAP ("ok N - what"); the exit code is the number of failures (0 = all passed).
 * The chip (8 lines, label gw-sim, line 0 named relay1, line 6 named door) is made by the VM's
 * /init; its name is in $GW_GPIO_SIM_CHIP.
 */
#include "gpio.h"

#include "gw/config.h"
#include "gw_test_call.h"
#include "gw/error.h"
#include "gw/json.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/registry.h"
#include "gw/value.h"

#include <gpiod.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int n_test, n_fail;
static struct gw_loop *loop;
static struct gw_registry *reg;
static const char *chip;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%sok %d - ", ok ? "" : "not ", ++n_test);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!ok)
        n_fail++;
}

/* --- gpio-sim sysfs --- */

static void sim_path(char *buf, size_t cap, int line, const char *attr)
{
    snprintf(buf, cap, "/sys/bus/gpio/devices/%s/sim_gpio%d/%s", chip, line, attr);
}

static int sim_value(int line)
{
    char p[160], b[8] = "";
    sim_path(p, sizeof p, line, "value");
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    if (!fgets(b, sizeof b, f))
        b[0] = '\0';
    fclose(f);
    return b[0] == '1' ? 1 : b[0] == '0' ? 0 : -1;
}

static void sim_pull(int line, bool up)
{
    char p[160];
    sim_path(p, sizeof p, line, "pull");
    FILE *f = fopen(p, "w");
    if (!f) {
        check(false, "open %s", p);
        return;
    }
    fputs(up ? "pull-up" : "pull-down", f);
    fclose(f);
}

/* --- host and calls --- */

static void host_log(const struct gw_host *host, int level, const char *fmt, ...)
{
    (void)host;
    va_list ap;
    va_start(ap, fmt);
    printf("# gpio t: [%d] ", level);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static void host_config_error(const struct gw_host *host, const char *pointer, const char *fmt, ...)
{
    (void)host;
    va_list ap;
    va_start(ap, fmt);
    printf("# config error at %s: ", pointer);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

/* Runs the loop for about ms (lets events and timers fire). */
static void run_for(uint64_t ms)
{
    gw_test_run_for(loop, ms);
}

/* Runs the loop until pred(arg) holds, checking every 10 ms, for at most max_ms. */
static bool wait_until(bool (*pred)(void *), void *arg, uint64_t max_ms)
{
    uint64_t end = gw_loop_now_ms() + max_ms;
    while (!pred(arg)) {
        if (gw_loop_now_ms() > end)
            return false;
        run_for(10);
    }
    return true;
}

static struct gw_test_answer call(const char *name, struct gw_value *input)
{
    return gw_test_call(loop, reg, name, input, 5000); /* 5 s: a safety net, not a timing check */
}

static struct gw_test_answer call_bool(const char *name, bool b)
{
    struct gw_value v = gw_value_bool(b);
    return call(name, &v);
}

static bool is_bool(const struct gw_test_answer *a, bool b)
{
    return a->rc == 0 && a->out.type == GW_VALUE_BOOL && a->out.b == b;
}

static uint64_t count_of(const struct gw_test_answer *a)
{
    const struct gw_value *c = gw_value_map_get(&a->out, "count");
    return c && (c->type == GW_VALUE_UINT || c->type == GW_VALUE_INT) ? c->u : UINT64_MAX;
}

/* --- stream subscriber --- */

struct stream {
    int n;
    bool vals[64];
    uint64_t ts[64];
};

static void on_publish(void *arg, struct gw_res *res, const struct gw_value *v)
{
    struct stream *s = arg;
    if (!v || s->n >= 64)
        return;
    uint64_t ts = 0;
    gw_res_last(res, NULL, &ts, NULL);
    s->vals[s->n] = v->type == GW_VALUE_BOOL && v->b;
    s->ts[s->n] = ts;
    s->n++;
}

struct want_n {
    struct stream *s;
    int n;
};

static bool stream_has(void *arg)
{
    struct want_n *w = arg;
    return w->s->n >= w->n;
}

struct sim_want {
    int line, value;
};

static bool sim_is(void *arg)
{
    struct sim_want *w = arg;
    return sim_value(w->line) == w->value;
}

struct stat_want {
    void *state;
    const char *point;
    uint64_t events;
};

static bool events_at_least(void *arg)
{
    struct stat_want *w = arg;
    struct gw_gpio_stats st;
    gw_gpio_adapter_stats(w->state, w->point, &st);
    return st.events >= w->events;
}

/* --- a line held by another process --- */

static pid_t hold_line(int offset, int *ready_fd)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        struct gpiod_chip *c = gpiod_chip_open_lookup("gw-sim");
        struct gpiod_line *l = c ? gpiod_chip_get_line(c, (unsigned)offset) : NULL;
        char ok = l && gpiod_line_request_output(l, "other-process", 0) == 0 ? 'y' : 'n';
        if (write(p[1], &ok, 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(p[1]);
    *ready_fd = p[0];
    return pid;
}

static struct gw_host host;

static const char *const config_text =
    "{\"type\":\"gpio\",\"name\":\"t\",\"consumer\":\"gw-test\",\"chip\":\"gw-sim\",\"lines\":["
    "{\"name\":\"relay\",\"line\":\"relay1\",\"direction\":\"output\",\"safe\":false,"
    "\"pulse_ms\":150},"
    "{\"name\":\"valve\",\"offset\":1,\"direction\":\"output\",\"active_low\":true,"
    "\"initial\":true,\"safe\":false},"
    "{\"name\":\"up\",\"offset\":2,\"direction\":\"input\",\"bias\":\"pull-up\",\"edge\":\"none\"},"
    "{\"name\":\"btn\",\"offset\":3,\"direction\":\"input\",\"bias\":\"pull-down\","
    "\"edge\":\"rising\"},"
    "{\"name\":\"bouncy\",\"offset\":4,\"direction\":\"input\",\"bias\":\"pull-down\","
    "\"edge\":\"both\",\"debounce_ms\":300},"
    "{\"name\":\"busy\",\"offset\":5,\"direction\":\"input\",\"edge\":\"none\"},"
    "{\"name\":\"door\",\"line\":\"door\",\"direction\":\"input\",\"active_low\":true,"
    "\"bias\":\"pull-up\"},"
    "{\"name\":\"meter\",\"offset\":7,\"direction\":\"input\",\"bias\":\"pull-up\","
    "\"edge\":\"falling\",\"rate_window_s\":10},"
    "{\"name\":\"ghost\",\"chip\":\"no-such-chip\",\"offset\":0,\"direction\":\"input\"},"
    "{\"name\":\"noname\",\"line\":\"no-such-line\",\"direction\":\"output\"},"
    "{\"name\":\"far\",\"offset\":12,\"direction\":\"input\"}]}";

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    chip = getenv("GW_GPIO_SIM_CHIP");
    if (!chip) {
        printf("# GW_GPIO_SIM_CHIP not set: run me through gpio_vm.sh\n");
        return 99;
    }
    gw_log_set_level(GW_LOG_DEBUG);
    if (gw_loop_new(&loop) < 0 || gw_registry_new(loop, &reg) < 0) {
        printf("# cannot create loop/registry\n");
        return 98;
    }
    host = (struct gw_host){.loop = loop, .registry = reg, .instance = "t", .file = "t.json",
                            .log = host_log, .config_error = host_config_error};

    /* Line 5 is held by another process before the adapter starts. */
    int ready = -1;
    pid_t holder = hold_line(5, &ready);
    char ok = 'n';
    check(holder > 0 && read(ready, &ok, 1) == 1 && ok == 'y',
          "another process holds gw-sim line 5");
    if (ready >= 0)
        close(ready);

    struct gw_config_doc *doc;
    struct gw_value cfg;
    if (gw_config_parse(config_text, strlen(config_text), "t.json", &doc, NULL) < 0 ||
        gw_json_to_value(gw_config_root(doc), &cfg) < 0) {
        printf("# bad test config\n");
        return 97;
    }
    gw_config_free(doc);
    void *state = NULL;
    int rc = gw_gpio_adapter.create(&host, &cfg, &state);
    gw_value_fini(&cfg);
    check(rc == 0, "create (%s)", gw_strerror(rc));
    if (rc)
        return 1;
    rc = gw_gpio_adapter.start(state);
    check(rc == 0, "start with 3 bad lines still succeeds");

    struct stream s_btn = {0}, s_door = {0}, s_bouncy = {0};
    struct gw_sub *sub1 = gw_res_subscribe(gw_registry_find(reg, "t/btn", 5), on_publish, &s_btn);
    struct gw_sub *sub2 = gw_res_subscribe(gw_registry_find(reg, "t/door", 6), on_publish, &s_door);
    struct gw_sub *sub3 =
        gw_res_subscribe(gw_registry_find(reg, "t/bouncy", 8), on_publish, &s_bouncy);
    run_for(50); /* initial levels published at start */
    s_btn.n = s_door.n = s_bouncy.n = 0;

    /* --- outputs --- */
    struct gw_test_answer a = call("t/relay", NULL);
    check(is_bool(&a, false) && sim_value(0) == 0, "relay (by line name) starts at 0 (sysfs %d)",
          sim_value(0));
    a = call_bool("t/relay", true);
    check(is_bool(&a, true), "relay set true answers the level read back (rc %d)", a.rc);
    check(sim_value(0) == 1, "relay: simulator sysfs value is 1 (%d)", sim_value(0));
    a = call_bool("t/relay", false);
    check(is_bool(&a, false) && sim_value(0) == 0, "relay set false: answer false, sysfs 0");
    struct gw_value one = gw_value_int(1);
    a = call("t/relay", &one);
    check(is_bool(&a, true) && sim_value(0) == 1, "relay set with 1: answer true, sysfs 1");
    a = call_bool("t/relay", false);

    check(sim_value(1) == 0, "valve (active-low, initial true) drives the line low (sysfs %d)",
          sim_value(1));
    a = call_bool("t/valve", false);
    check(is_bool(&a, false) && sim_value(1) == 1, "valve set false: answer false, sysfs 1 (%d)",
          sim_value(1));

    struct gw_value ms = gw_value_int(200);
    a = call("t/relay/pulse", &ms);
    check(a.rc == 0 && sim_value(0) == 1, "pulse 200 ms: line on at once (rc %d, sysfs %d)", a.rc,
          sim_value(0));
    struct sim_want w0 = {0, 0};
    bool off = wait_until(sim_is, &w0, 3000);
    check(off, "pulse: line back off afterwards (sysfs %d)", sim_value(0));

    /* --- inputs following pull-up / pull-down --- */
    a = call("t/up", NULL);
    check(is_bool(&a, true), "up: bias pull-up reads 1 (rc %d %s)", a.rc, a.msg);
    sim_pull(2, false);
    a = call("t/up", NULL);
    check(is_bool(&a, false), "up: after sysfs pull-down reads 0");
    sim_pull(2, true);
    a = call("t/up", NULL);
    check(is_bool(&a, true), "up: after sysfs pull-up reads 1 again");

    a = call("t/door", NULL);
    check(is_bool(&a, false), "door (by name, active-low, pull-up) reads logical 0");
    sim_pull(6, false);
    struct want_n wd = {&s_door, 1};
    check(wait_until(stream_has, &wd, 3000) && s_door.vals[0] == true,
          "door: sysfs pull-down streams logical 1 (active-low)");
    a = call("t/door", NULL);
    check(is_bool(&a, true), "door reads logical 1");

    /* --- edges and counter --- */
    a = call("t/btn", NULL);
    check(is_bool(&a, false), "btn: bias pull-down reads 0");
    uint64_t before = gw_loop_wall_ms();
    for (int i = 0; i < 3; i++) {
        sim_pull(3, true);
        struct want_n w = {&s_btn, 2 * i + 1};
        wait_until(stream_has, &w, 3000);
        sim_pull(3, false);
        w.n = 2 * i + 2;
        wait_until(stream_has, &w, 3000);
    }
    bool seq = s_btn.n == 6;
    for (int i = 0; i < s_btn.n && i < 6; i++)
        seq = seq && s_btn.vals[i] == (i % 2 == 0);
    check(seq, "btn: 3 rising and 3 falling edges streamed in order (%d values)", s_btn.n);
    check(s_btn.n > 0 && s_btn.ts[0] + 5000 >= before && s_btn.ts[0] <= gw_loop_wall_ms(),
          "btn: stream timestamps come from the kernel event time (wall clock)");
    a = call("t/btn/count", NULL);
    const struct gw_value *rate = gw_value_map_get(&a.out, "rate");
    check(a.rc == 0 && count_of(&a) == 3, "btn/count counts the 3 rising edges only (%llu)",
          (unsigned long long)count_of(&a));
    check(rate && rate->type == GW_VALUE_DOUBLE && rate->d > 0, "btn/count has a rate > 0 (%g)",
          rate ? rate->d : -1);
    gw_value_fini(&a.out);
    struct gw_value zero = gw_value_int(0);
    a = call("t/btn/count", &zero);
    check(a.rc == 0 && count_of(&a) == 0, "btn/count reset with input 0");
    gw_value_fini(&a.out);

    a = call("t/meter/count", NULL);
    uint64_t m0 = count_of(&a);
    gw_value_fini(&a.out);
    for (int i = 0; i < 5; i++) {
        struct stat_want sw = {state, "meter", 0};
        struct gw_gpio_stats st;
        gw_gpio_adapter_stats(state, "meter", &st);
        sim_pull(7, false);
        sw.events = st.events + 1;
        wait_until(events_at_least, &sw, 3000);
        sim_pull(7, true);
        sw.events = st.events + 2;
        wait_until(events_at_least, &sw, 3000);
    }
    a = call("t/meter/count", NULL);
    check(a.rc == 0 && count_of(&a) - m0 == 5, "meter (edge falling): 5 pulses counted (%llu)",
          (unsigned long long)(count_of(&a) - m0));
    gw_value_fini(&a.out);

    /* --- debounce --- */
    struct gw_gpio_stats st0, st1;
    gw_gpio_adapter_stats(state, "bouncy", &st0);
    for (int i = 0; i < 10; i++) { /* 10 toggles ending where they started (low) */
        sim_pull(4, i % 2 == 0);
        usleep(2000);
    }
    struct stat_want sb = {state, "bouncy", st0.events + 2};
    wait_until(events_at_least, &sb, 3000);
    run_for(700); /* more than the 300 ms window */
    gw_gpio_adapter_stats(state, "bouncy", &st1);
    check(st1.events - st0.events >= 2 && st1.changes == st0.changes && s_bouncy.n == 0,
          "bouncy: burst of 10 toggles (%llu kernel events) ending low: no change, nothing "
          "streamed", (unsigned long long)(st1.events - st0.events));
    a = call("t/bouncy/count", NULL);
    check(count_of(&a) == 0, "bouncy: counter unchanged by the burst (%llu)",
          (unsigned long long)count_of(&a));
    gw_value_fini(&a.out);
    for (int i = 0; i < 9; i++) { /* 9 toggles ending high */
        sim_pull(4, i % 2 == 0);
        usleep(2000);
    }
    struct want_n wb = {&s_bouncy, 1};
    check(wait_until(stream_has, &wb, 3000) && s_bouncy.vals[0] == true,
          "bouncy: burst of 9 toggles ending high: one change to 1 after the window");
    run_for(500);
    gw_gpio_adapter_stats(state, "bouncy", &st1);
    a = call("t/bouncy/count", NULL);
    check(st1.changes == st0.changes + 1 && s_bouncy.n == 1 && count_of(&a) == 1,
          "bouncy: exactly one debounced change and one count (%llu changes, %d streamed)",
          (unsigned long long)(st1.changes - st0.changes), s_bouncy.n);
    gw_value_fini(&a.out);

    /* --- bad input --- */
    a = call_bool("t/btn", true);
    check(a.rc == GW_EREADONLY && strstr(a.msg, "input line"), "write to an input: %s (%s)",
          gw_strerror_name(a.rc), a.msg);
    a = call("t/ghost", NULL);
    check(a.rc == GW_ENOENT && strstr(a.msg, "GPIO chip 'no-such-chip' not found"),
          "missing chip: %s", a.msg);
    a = call_bool("t/noname", true);
    check(a.rc == GW_ENOENT && strstr(a.msg, "no GPIO line named 'no-such-line'"),
          "missing line name: %s", a.msg);
    a = call("t/far", NULL);
    check(a.rc == GW_ERANGE && strstr(a.msg, "has 8 lines; offset 12 does not exist"),
          "offset beyond the chip: %s", a.msg);
    a = call("t/busy", NULL);
    check(a.rc == GW_EBUSY && strstr(a.msg, "is busy: already requested by 'other-process'"),
          "line held by another process: %s", a.msg);
    a = call("t/btn", NULL);
    check(a.rc == 0, "the other lines keep working meanwhile");
    kill(holder, SIGKILL);
    waitpid(holder, NULL, 0);
    a = call("t/busy", NULL);
    check(a.rc == 0 && a.out.type == GW_VALUE_BOOL,
          "busy line requested on the next call once the other process released it (rc %d %s)",
          a.rc, a.msg);

    /* --- safe values on stop --- */
    call_bool("t/relay", true);
    call_bool("t/valve", true);
    check(sim_value(0) == 1 && sim_value(1) == 0, "before stop: relay 1, valve active (sysfs 0)");
    gw_gpio_adapter.stop(state);
    check(sim_value(0) == 0, "stop: relay safe value false applied (sysfs %d)", sim_value(0));
    check(sim_value(1) == 1, "stop: valve safe value false (active-low) applied (sysfs %d)",
          sim_value(1));
    gw_registry_remove_owner(reg, state);
    run_for(20);
    gw_sub_free(sub1);
    gw_sub_free(sub2);
    gw_sub_free(sub3);
    check(gw_registry_count(reg) == 0, "resources removed after stop");
    gw_gpio_adapter.destroy(state);

    /* Released lines are free again for others. */
    struct gpiod_chip *c = gpiod_chip_open_lookup("gw-sim");
    struct gpiod_line *l = c ? gpiod_chip_get_line(c, 0) : NULL;
    check(l && gpiod_line_request_output(l, "after", 0) == 0, "destroy released the lines");
    if (c)
        gpiod_chip_close(c);

    gw_registry_free(reg);
    gw_loop_free(loop);
    printf("1..%d\n# %d failed\n", n_test, n_fail);
    return n_fail;
}
