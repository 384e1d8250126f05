/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Modbus adapter driven for real: a gw_loop and gw_registry in this process, the adapter
 * created from a JSON config and started, and resources called through gw_registry_call against
 * sim_server.py (pymodbus). Checked: on-demand reads of every type, writes with read-back
 * (negative numbers, NaN, 0 and false) compared with the simulator's stored registers, the device
 * map resource, exception 2 as a clear error, a unit that never answers quarantined while a healthy
 * unit keeps its 100 ms schedule (its poll-to-poll jitter is printed, not asserted), a killed and
 * restarted simulator reconnected. Mode rtu: read, write and read-back over a serial line, and,
 * when the line goes through crc_shim.py, bad-CRC replies counted, retried, never decoded.
 *     modbus_adapter_test tcp <python> <sim_server.py>
 *     modbus_adapter_test rtu <tty> <control port> [<shim control file>]
 */
#include "modbus_adapter.h"
#include "modbus_plan.h"

#include "gw/error.h"
#include "gw/json.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/registry.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures, checks;

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        checks++;                                                                                 \
        if (!(cond)) {                                                                            \
            printf("FAIL (line %d): ", __LINE__);                                                 \
            printf(__VA_ARGS__);                                                                  \
            putchar('\n');                                                                        \
            failures++;                                                                           \
        }                                                                                         \
    } while (0)

static struct gw_loop *loop;
static struct gw_registry *reg;

/* --- Host --- */

static void host_log(const struct gw_host *h, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (level <= GW_LOG_INFO) {
        fprintf(stderr, "  [log %d] modbus %s: ", level, h->instance);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
    }
    va_end(ap);
}

static void host_config_error(const struct gw_host *h, const char *ptr, const char *fmt, ...)
{
    (void)h;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  [config] %s: ", ptr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static struct gw_host host = {.instance = "plc1", .file = "test.json", .log = host_log,
                              .config_error = host_config_error};

/* --- Loop helpers --- */

static void stop_cb(void *arg)
{
    (void)arg;
    gw_loop_stop(loop);
}

static void run_for(unsigned ms)
{
    struct gw_timer *t = gw_timer_new(loop, stop_cb, NULL);
    gw_timer_start(t, ms);
    gw_loop_run(loop);
    gw_timer_free(t);
}

struct result {
    bool done;
    int rc;
    struct gw_value out;
    char msg[512];
};

static void call_done(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    struct result *r = arg;
    r->done = true;
    r->rc = rc;
    if (out)
        gw_value_copy(&r->out, out);
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "");
    gw_loop_stop(loop);
}

/* Calls resource name with input (taken; NULL = none) and waits up to 10 s. */
static struct result call(const char *name, struct gw_value *input)
{
    struct result r = {.rc = 1, .out = GW_VALUE_INIT_NULL};
    struct gw_res *res = gw_registry_find(reg, name, strlen(name));
    if (!res) {
        snprintf(r.msg, sizeof r.msg, "no resource %s", name);
        r.rc = GW_ERESOURCE;
        if (input)
            gw_value_fini(input);
        return r;
    }
    /* The registry takes the value (its contents), not the struct holding it. */
    struct gw_call *c = gw_registry_call(reg, res, input, NULL, call_done, &r);
    struct gw_timer *t = gw_timer_new(loop, stop_cb, NULL);
    gw_timer_start(t, 10000);
    while (!r.done && gw_timer_armed(t))
        gw_loop_run(loop);
    gw_timer_free(t);
    if (!r.done) {
        gw_call_cancel(c);
        snprintf(r.msg, sizeof r.msg, "no answer in 10 s");
    }
    return r;
}

static bool num_is(const struct gw_value *v, double want)
{
    double d;
    if (gw_value_to_double(v, &d) != 0)
        return false;
    return (isnan(want) && isnan(d)) || d == want;
}

static double num_of(const struct gw_value *v)
{
    double d = NAN;
    gw_value_to_double(v, &d);
    return d;
}

/* The last published value of a resource, a borrowed view in *v (false if none or no such
 * resource). */
static bool last_of(const char *name, struct gw_value *v, bool *stale)
{
    struct gw_res *res = gw_registry_find(reg, name, strlen(name));
    return res && gw_res_last(res, v, NULL, stale);
}

static int make_config(const char *text, struct gw_value *out)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j) {
        printf("bad test config JSON: %s line %d\n", e.text, e.line);
        return -1;
    }
    int rc = gw_json_to_value(j, out);
    json_decref(j);
    return rc;
}

/* --- Simulator control (TCP mode starts and stops it itself) --- */

static const char *py, *sim_path;
static pid_t sim_pid = -1;
static int sim_port, ctl_port;
static FILE *ctl_in;
static int ctl_fd = -1;

static int ctl_open(void)
{
    if (ctl_in)
        fclose(ctl_in);
    ctl_in = NULL;
    ctl_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)ctl_port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(ctl_fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -1;
    ctl_in = fdopen(ctl_fd, "r+");
    return 0;
}

static const char *ctl(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *ctl(const char *fmt, ...)
{
    static char line[65536];
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strcat(cmd, "\n");
    if (write(ctl_fd, cmd, strlen(cmd)) < 0 || !fgets(line, sizeof line, ctl_in))
        return "ERR control channel";
    line[strcspn(line, "\n")] = 0;
    return line;
}

/* Reads count registers of unit/table at address from the simulator's store. */
static int ctl_get(int unit, char table, unsigned addr, unsigned count, unsigned *out)
{
    const char *r = ctl("GET %d %c %u %u", unit, table, addr, count);
    if (strncmp(r, "OK", 2) != 0)
        return -1;
    const char *p = r + 2;
    for (unsigned i = 0; i < count; i++) {
        char *end;
        out[i] = (unsigned)strtoul(p, &end, 10);
        if (end == p)
            return -1;
        p = end;
    }
    return 0;
}

static int sim_start(int port)
{
    int pfd[2];
    if (pipe(pfd) != 0)
        return -1;
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", port);
    sim_pid = fork();
    if (sim_pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        execl(py, py, sim_path, "--tcp", portarg, "--units", "1,2,3,4,5", "--limit", "3:100",
              "--hole", "4:13:4", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    FILE *f = fdopen(pfd[0], "r");
    char line[256];
    int ok = -1;
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "READY modbus=%d control=%d", &sim_port, &ctl_port) == 2) {
            ok = 0;
            break;
        }
    }
    fclose(f);
    if (ok == 0)
        ok = ctl_open();
    return ok;
}

static void sim_kill(void)
{
    if (sim_pid > 0) {
        kill(sim_pid, SIGTERM);
        waitpid(sim_pid, NULL, 0);
    }
    sim_pid = -1;
}

/* --- Jitter of a healthy device, from its published values --- */

struct jitter {
    uint64_t last_ts;
    long n;
    double max_dev, sum_dev;
    long interval;
};

static void on_pub(void *arg, struct gw_res *res, const struct gw_value *v)
{
    struct jitter *j = arg;
    if (!v)
        return;
    uint64_t ts;
    gw_res_last(res, NULL, &ts, NULL);
    if (j->last_ts) {
        double dev = fabs((double)(ts - j->last_ts) - (double)j->interval);
        if (dev > j->max_dev)
            j->max_dev = dev;
        j->sum_dev += dev;
        j->n++;
    }
    j->last_ts = ts;
}

/* --- TCP --- */

#define TCP_CONFIG_FMT \
    "{\"type\": \"modbus\", \"name\": \"plc1\", \"interval_ms\": 1000," \
    " \"poll_groups\": [{\"name\": \"fast\", \"interval_ms\": 100}]," \
    " \"connections\": [{\"name\": \"line1\", \"tcp\": {\"host\": \"127.0.0.1\", \"port\": %d}," \
    "  \"reconnect_ms\": 100, \"reconnect_max_ms\": 400," \
    "  \"devices\": [" \
    "   {\"name\": \"meter\", \"unit\": 1, \"gap_registers\": 8, \"timeout_ms\": 1000," \
    "    \"points\": [" \
    "     {\"name\": \"temp\", \"address\": \"40001\", \"type\": \"float32\", \"unit\": \"degC\"," \
    "      \"access\": \"read-write\", \"min\": -50, \"max\": 150}," \
    "     {\"name\": \"f32_cdab\", \"table\": \"holding\", \"address\": 2, \"type\": \"float32\"," \
    "      \"order\": \"CDAB\", \"access\": \"read-write\"}," \
    "     {\"name\": \"i16\", \"table\": \"holding\", \"address\": 10, \"type\": \"int16\"," \
    "      \"access\": \"read-write\"}," \
    "     {\"name\": \"u32\", \"table\": \"holding\", \"address\": 12, \"type\": \"uint32\"," \
    "      \"order\": \"CDAB\", \"access\": \"read-write\"}," \
    "     {\"name\": \"i64\", \"table\": \"holding\", \"address\": 20, \"type\": \"int64\"," \
    "      \"order\": \"DCBA\", \"access\": \"read-write\"}," \
    "     {\"name\": \"f64\", \"table\": \"holding\", \"address\": 30, \"type\": \"float64\"," \
    "      \"order\": \"BADC\", \"access\": \"read-write\"}," \
    "     {\"name\": \"label\", \"table\": \"holding\", \"address\": 40, \"type\": \"string\"," \
    "      \"count\": 4, \"access\": \"read-write\"}," \
    "     {\"name\": \"flag3\", \"table\": \"holding\", \"address\": 50, \"type\": \"bit\"," \
    "      \"bit\": 3, \"access\": \"read-write\"}," \
    "     {\"name\": \"scaled\", \"table\": \"holding\", \"address\": 51, \"type\": \"int16\"," \
    "      \"scale\": 0.1, \"offset\": 0, \"access\": \"read-write\"}," \
    "     {\"name\": \"relay\", \"address\": \"00006\", \"access\": \"read-write\"}," \
    "     {\"name\": \"door\", \"address\": \"10008\"}," \
    "     {\"name\": \"level\", \"address\": \"30010\", \"type\": \"uint16\"}]}," \
    "   {\"name\": \"healthy\", \"unit\": 2, \"points\": [" \
    "     {\"name\": \"h2\", \"table\": \"holding\", \"address\": 0, \"type\": \"uint16\"," \
    "      \"poll_group\": \"fast\"}]}," \
    "   {\"name\": \"dead\", \"unit\": 9, \"timeout_ms\": 40, \"retries\": 0," \
    "    \"quarantine_after\": 3, \"points\": [" \
    "     {\"name\": \"d9\", \"table\": \"holding\", \"address\": 0, \"poll_group\": \"fast\"}]}," \
    "   {\"name\": \"small\", \"unit\": 3, \"points\": [" \
    "     {\"name\": \"inside\", \"table\": \"holding\", \"address\": 5}," \
    "     {\"name\": \"beyond\", \"table\": \"holding\", \"address\": 150," \
    "      \"type\": \"uint32\"}]}," \
    "   {\"name\": \"gappy\", \"unit\": 4, \"gap_registers\": 10, \"points\": [" \
    "     {\"name\": \"g1\", \"table\": \"holding\", \"address\": 10," \
    "      \"poll_group\": \"fast\"}," \
    "     {\"name\": \"g2\", \"table\": \"holding\", \"address\": 20," \
    "      \"poll_group\": \"fast\"}]}" \
    "  ]}]}"

static void expect_regs(int unit, unsigned addr, unsigned n, const unsigned *want, const char *what)
{
    unsigned got[8] = {0};
    int rc = ctl_get(unit, 'h', addr, n, got);
    bool same = rc == 0;
    for (unsigned i = 0; same && i < n; i++)
        same = got[i] == want[i];
    char g[128] = "", w[128] = "";
    for (unsigned i = 0; i < n; i++) {
        snprintf(g + strlen(g), sizeof g - strlen(g), " %04x", got[i]);
        snprintf(w + strlen(w), sizeof w - strlen(w), " %04x", want[i]);
    }
    CHECK(same, "%s: registers%s, expected%s", what, g, w);
}

/* Writes v to name, checks the answer is the value read back and equals want. */
static void write_check(const char *name, struct gw_value v, double want)
{
    struct result r = call(name, &v);
    CHECK(r.rc == 0, "write %s: rc %d %s", name, r.rc, r.msg);
    CHECK(r.rc != 0 || num_is(&r.out, want), "write %s: read back %g, want %g", name,
          num_of(&r.out), want);
    gw_value_fini(&r.out);
}

/*
 * Coalescing through the adapter: a second instance with 300 scattered points of 1, 2 and 4
 * registers on unit 5 (gap 3, at most 40 registers per request). One read of the device resource
 * must reach the simulator as exactly the planner's minimal number of requests.
 */
static void test_coalescing(void)
{
    enum { N = 300 };
    static const char *const types[] = {"uint16", "float32", "int64", "int16"};
    static const unsigned widths[] = {1, 2, 4, 1};
    static char text[65536];
    struct gw_modbus_plan_point pts[N];
    uint32_t rng = 12345;
    unsigned addr = 0;
    size_t n = (size_t)snprintf(text, sizeof text,
        "{\"type\": \"modbus\", \"name\": \"scan\", \"interval_ms\": 3600000,"
        " \"connections\": [{\"name\": \"line2\", \"tcp\": {\"host\": \"127.0.0.1\","
        " \"port\": %d}, \"devices\": [{\"name\": \"big\", \"unit\": 5,"
        " \"gap_registers\": 3, \"max_registers\": 40, \"points\": [", sim_port);
    for (int i = 0; i < N; i++) {
        rng = rng * 1103515245u + 12345u;
        unsigned k = (rng >> 16) % 4;
        rng = rng * 1103515245u + 12345u;
        addr += (rng >> 16) % 7; /* gaps of 0 .. 6 registers */
        pts[i] = (struct gw_modbus_plan_point){.unit = 5, .table = GW_MODBUS_TABLE_HOLDING,
                                               .address = (uint16_t)addr,
                                               .count = (uint16_t)widths[k]};
        n += (size_t)snprintf(text + n, sizeof text - n,
                              "%s{\"name\": \"s%d\", \"table\": \"holding\", \"address\": %u,"
                              " \"type\": \"%s\"}", i ? "," : "", i, addr, types[k]);
        addr += widths[k];
    }
    snprintf(text + n, sizeof text - n, "]}]}]}");
    struct gw_modbus_plan plan;
    struct gw_modbus_plan_limits lim = {.max_regs = 40, .gap_regs = 3};
    int want = gw_modbus_plan_build(pts, N, &lim, &plan, NULL, 0);
    gw_modbus_plan_fini(&plan);

    struct gw_value cfg;
    CHECK(make_config(text, &cfg) == 0, "coalescing config");
    struct gw_host h2 = host;
    h2.instance = "scan";
    void *st = NULL;
    int rc = gw_modbus_adapter.create(&h2, &cfg, &st);
    gw_value_fini(&cfg);
    CHECK(rc == 0, "create scan: %s", gw_strerror(rc));
    if (rc != 0)
        return;
    gw_modbus_adapter.start(st);
    run_for(500); /* the first (and, with a 1 h interval, only) poll */
    ctl("RESET");
    struct result r = call("scan/big", NULL);
    CHECK(r.rc == 0 && gw_value_count(&r.out) == N, "device read of 300 points: %d %s", r.rc,
          r.msg);
    gw_value_fini(&r.out);
    const char *counts = ctl("COUNTS");
    long got = -1;
    const char *p = strstr(counts, "5:3=");
    if (p)
        got = atol(p + 4);
    printf("  coalescing: 300 scattered points (%u registers span) read with %ld requests; "
           "planner minimum %d; one request per point would be 300\n", addr, got, want);
    CHECK(got == want, "requests at the simulator %ld, planner minimum %d (%s)", got, want, counts);
    gw_modbus_adapter.stop(st);
    gw_registry_remove_owner(reg, st);
    gw_modbus_adapter.destroy(st);
}

static void test_tcp(void)
{
    if (sim_start(0) != 0) {
        printf("FAIL: cannot start the simulator\n");
        failures++;
        return;
    }
    printf("simulator on port %d (control %d)\n", sim_port, ctl_port);
    /* Values in the simulator before the adapter starts. */
    ctl("SET 1 h 0 16936 0");            /* 42.0f ABCD = 0x4228 0x0000 */
    ctl("SET 1 h 10 65535");             /* int16 -1 */
    ctl("SET 1 h 40 18501 27756 28416 0"); /* "HEllo" -> "HE" "ll" "o\0" */
    ctl("SET 1 d 7 1");
    ctl("SET 1 i 9 1234");
    ctl("SET 2 h 0 77");
    ctl("SET 3 h 5 5");
    ctl("SET 4 h 10 111");
    ctl("SET 4 h 20 222"); /* 13..16 are a hole: a request bridging it gets exception 2 */

    char text[8192];
    snprintf(text, sizeof text, TCP_CONFIG_FMT, sim_port);
    struct gw_value cfg;
    CHECK(make_config(text, &cfg) == 0, "config");
    void *st = NULL;
    int rc = gw_modbus_adapter.create(&host, &cfg, &st);
    gw_value_fini(&cfg);
    CHECK(rc == 0, "create: %s", gw_strerror(rc));
    if (rc != 0)
        return;
    CHECK(gw_modbus_adapter.start(st) == 0, "start");
    run_for(300);

    /* The poll published values (DESCRIBE and streams see them). */
    struct gw_res *res = gw_registry_find(reg, "plc1/temp", 9);
    struct gw_value last;
    bool has_last = res && gw_res_last(res, &last, NULL, NULL);
    CHECK(has_last && num_is(&last, 42.0), "published temp %g", has_last ? num_of(&last) : NAN);

    /* On-demand reads of each kind. */
    struct result r = call("plc1/temp", NULL);
    CHECK(r.rc == 0 && num_is(&r.out, 42.0), "read temp: %d %s %g", r.rc, r.msg, num_of(&r.out));
    gw_value_fini(&r.out);
    r = call("plc1/i16", NULL);
    CHECK(r.rc == 0 && num_is(&r.out, -1), "read i16: %d %s %g", r.rc, r.msg, num_of(&r.out));
    gw_value_fini(&r.out);
    r = call("plc1/label", NULL);
    CHECK(r.rc == 0 && r.out.type == GW_VALUE_STRING && strcmp(r.out.s.p, "HEllo") == 0,
          "read label: %d %s '%s'", r.rc, r.msg, r.out.type == GW_VALUE_STRING ? r.out.s.p : "?");
    gw_value_fini(&r.out);
    r = call("plc1/door", NULL);
    CHECK(r.rc == 0 && r.out.type == GW_VALUE_BOOL && r.out.b, "read door: %d %s", r.rc, r.msg);
    gw_value_fini(&r.out);
    r = call("plc1/level", NULL);
    CHECK(r.rc == 0 && num_is(&r.out, 1234), "read level: %d %s", r.rc, r.msg);
    gw_value_fini(&r.out);

    /* Writes with read-back, and the bytes the simulator stored. */
    write_check("plc1/temp", gw_value_double(-12.5), -12.5); /* 0xC148 0x0000 */
    expect_regs(1, 0, 2, (unsigned[]){0xC148, 0x0000}, "temp -12.5 ABCD");
    write_check("plc1/temp", gw_value_int(0), 0);
    expect_regs(1, 0, 2, (unsigned[]){0, 0}, "temp 0");
    r = call("plc1/temp", &(struct gw_value){.type = GW_VALUE_DOUBLE, .d = 1000});
    CHECK(r.rc == GW_ERANGE, "temp 1000 beyond max: rc %d %s", r.rc, r.msg);
    printf("  out-of-range write: %s\n", r.msg);
    write_check("plc1/f32_cdab", gw_value_double(NAN), NAN);
    {
        unsigned got[2];
        ctl_get(1, 'h', 2, 2, got);
        CHECK((got[1] & 0x7F80) == 0x7F80 && ((got[1] & 0x7F) || got[0]),
              "NaN CDAB stored as %04x %04x", got[0], got[1]);
    }
    write_check("plc1/i16", gw_value_int(-2), -2);
    expect_regs(1, 10, 1, (unsigned[]){0xFFFE}, "i16 -2");
    write_check("plc1/i16", gw_value_int(0), 0);
    expect_regs(1, 10, 1, (unsigned[]){0}, "i16 0");
    write_check("plc1/u32", gw_value_uint(0x12345678), 0x12345678);
    expect_regs(1, 12, 2, (unsigned[]){0x5678, 0x1234}, "u32 CDAB");
    write_check("plc1/i64", gw_value_int(-2), -2); /* FF..FE DCBA: FEFF FFFF FFFF FFFF */
    expect_regs(1, 20, 4, (unsigned[]){0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF}, "i64 -2 DCBA");
    write_check("plc1/f64", gw_value_double(1.0), 1.0); /* 3FF0 0..: BADC = F03F 0000 0000 0000 */
    expect_regs(1, 30, 4, (unsigned[]){0xF03F, 0, 0, 0}, "f64 1.0 BADC");
    write_check("plc1/scaled", gw_value_double(-1.5), -1.5);
    expect_regs(1, 51, 1, (unsigned[]){0xFFF1}, "scaled -1.5 -> raw -15");
    {
        struct gw_value s = gw_value_cstr("ok");
        r = call("plc1/label", &s);
        CHECK(r.rc == 0 && r.out.type == GW_VALUE_STRING && strcmp(r.out.s.p, "ok") == 0,
              "write label: %d %s", r.rc, r.msg);
        gw_value_fini(&r.out);
        expect_regs(1, 40, 4, (unsigned[]){0x6F6B, 0, 0, 0}, "label ok");
    }
    /* Bit in a register: read-modify-write keeps the other bits. */
    ctl("SET 1 h 50 %u", 0x8001u);
    r = call("plc1/flag3", &(struct gw_value){.type = GW_VALUE_BOOL, .b = true});
    CHECK(r.rc == 0 && r.out.type == GW_VALUE_BOOL && r.out.b, "flag3 true: %d %s", r.rc, r.msg);
    expect_regs(1, 50, 1, (unsigned[]){0x8009}, "flag3 set");
    r = call("plc1/flag3", &(struct gw_value){.type = GW_VALUE_BOOL, .b = false});
    CHECK(r.rc == 0 && r.out.type == GW_VALUE_BOOL && !r.out.b, "flag3 false: %d %s", r.rc, r.msg);
    expect_regs(1, 50, 1, (unsigned[]){0x8001}, "flag3 cleared");
    /* Coil: true then false (false must be written, not skipped). */
    r = call("plc1/relay", &(struct gw_value){.type = GW_VALUE_BOOL, .b = true});
    CHECK(r.rc == 0 && r.out.type == GW_VALUE_BOOL && r.out.b, "relay true: %d %s", r.rc, r.msg);
    {
        const char *g = ctl("GET 1 c 5 1");
        CHECK(strcmp(g, "OK 1") == 0, "coil 5 after true: %s", g);
    }
    r = call("plc1/relay", &(struct gw_value){.type = GW_VALUE_BOOL, .b = false});
    CHECK(r.rc == 0 && r.out.type == GW_VALUE_BOOL && !r.out.b, "relay false: %d %s", r.rc, r.msg);
    {
        const char *g = ctl("GET 1 c 5 1");
        CHECK(strcmp(g, "OK 0") == 0, "coil 5 after false: %s", g);
    }
    /* Read-only points refuse writes. */
    r = call("plc1/level", &(struct gw_value){.type = GW_VALUE_INT, .i = 1});
    CHECK(r.rc == GW_EREADONLY, "write level (read-only): %d %s", r.rc, r.msg);

    /* The device resource: all points in one map. */
    r = call("plc1/meter", NULL);
    CHECK(r.rc == 0 && r.out.type == GW_VALUE_MAP && gw_value_count(&r.out) == 12,
          "device map: %d %s n=%zu", r.rc, r.msg, gw_value_count(&r.out));
    CHECK(num_is(gw_value_map_get(&r.out, "i16"), 0) &&
              num_is(gw_value_map_get(&r.out, "level"), 1234),
          "device map values");
    gw_value_fini(&r.out);

    /* Exception 2 as a clear error. */
    r = call("plc1/beyond", NULL);
    printf("  exception: %s\n", r.msg);
    CHECK(r.rc == GW_EDEVICE && strstr(r.msg, "illegal data address (exception 2)") &&
              strstr(r.msg, "holding 40151+2") && strstr(r.msg, "unit 3"),
          "beyond: rc %d msg '%s'", r.rc, r.msg);
    r = call("plc1/inside", NULL);
    CHECK(r.rc == 0 && num_is(&r.out, 5), "inside (same device, other request): %d %s", r.rc,
          r.msg);

    /* Gap fallback: the planned request 40011+11 bridges the hole and gets exception 2; the
     * device is re-planned without gaps and both points arrive. */
    {
        ctl("RESET");
        run_for(600);
        const char *counts = ctl("COUNTS");
        bool st1 = true, st2 = true;
        struct gw_value g1, g2;
        bool has1 = last_of("plc1/g1", &g1, &st1), has2 = last_of("plc1/g2", &g2, &st2);
        CHECK(has1 && !st1 && num_is(&g1, 111) && has2 && !st2 && num_is(&g2, 222),
              "gap fallback: g1 %g g2 %g", has1 ? num_of(&g1) : NAN, has2 ? num_of(&g2) : NAN);
        printf("  gap fallback: requests in 600 ms at the simulator: %s\n", counts);
    }

    /* Quarantine of unit 9 (never answers); unit 2 keeps its 100 ms schedule. */
    run_for(1000);
    r = call("plc1/d9", NULL);
    printf("  dead unit: %s\n", r.msg);
    CHECK(r.rc == GW_ESTALE && strstr(r.msg, "quarantined"), "d9: rc %d %s", r.rc, r.msg);
    struct gw_res *d9 = gw_registry_find(reg, "plc1/d9", 7);
    bool stale = false;
    bool d9_has = d9 && gw_res_last(d9, NULL, NULL, &stale);
    CHECK(d9 && (stale || !d9_has), "d9 stale");
    struct jitter j = {.interval = 100};
    struct gw_sub *sub = gw_res_subscribe(gw_registry_find(reg, "plc1/h2", 7), on_pub, &j);
    run_for(5000);
    gw_sub_free(sub);
    printf("  healthy unit 2 with unit 9 quarantined: %ld polls, interval deviation mean %.2f ms, "
           "max %.0f ms (target < 20 ms)\n",
           j.n, j.n ? j.sum_dev / (double)j.n : 0.0, j.max_dev);
    CHECK(j.n >= 10, "healthy device polled only %ld times in 5 s", j.n);
    r = call("plc1/_stats/line1", NULL);
    CHECK(r.rc == 0, "stats: %d %s", r.rc, r.msg);
    const struct gw_value *dd = gw_value_map_get(gw_value_map_get(&r.out, "devices"), "dead");
    CHECK(dd && num_of(gw_value_map_get(dd, "quarantines")) >= 1 &&
              num_of(gw_value_map_get(dd, "timeouts")) >= 3,
          "dead unit counters");
    printf("  dead unit: %g requests, %g timeouts in 6 s (probes with back-off)\n",
           num_of(gw_value_map_get(dd, "requests")), num_of(gw_value_map_get(dd, "timeouts")));
    gw_value_fini(&r.out);

    test_coalescing();

    /* Kill the simulator, restart it on the same port: the adapter reconnects. */
    sim_kill();
    run_for(500);
    r = call("plc1/h2", NULL);
    CHECK(r.rc != 0, "read with the server down must fail");
    printf("  server down: %s\n", r.msg);
    int port = sim_port;
    CHECK(sim_start(port) == 0 && sim_port == port, "simulator restart on port %d", port);
    ctl("SET 2 h 0 4242");
    bool back = false;
    for (int i = 0; i < 50 && !back; i++) {
        run_for(200);
        struct gw_res *h2 = gw_registry_find(reg, "plc1/h2", 7);
        bool is_stale = true;
        struct gw_value v;
        back = gw_res_last(h2, &v, NULL, &is_stale) && !is_stale && num_is(&v, 4242);
    }
    CHECK(back, "no fresh value of h2 within 10 s of the restart");
    r = call("plc1/_stats/line1", NULL);
    CHECK(num_of(gw_value_map_get(&r.out, "link_losses")) >= 1 &&
              num_of(gw_value_map_get(&r.out, "connects")) >= 2,
          "link counters: losses %g connects %g", num_of(gw_value_map_get(&r.out, "link_losses")),
          num_of(gw_value_map_get(&r.out, "connects")));
    gw_value_fini(&r.out);

    gw_modbus_adapter.stop(st);
    gw_registry_remove_owner(reg, st);
    gw_modbus_adapter.destroy(st);
    ctl("QUIT");
    sim_kill();
}

/* --- RTU --- */

static void test_rtu(const char *tty, const char *shim_ctl)
{
    ctl("SET 1 h 100 %u %u", 0x4049u, 0x0FDBu); /* 3.1415927f */
    char text[2048];
    snprintf(text, sizeof text,
             "{\"type\": \"modbus\", \"name\": \"plc1\", \"interval_ms\": 200,"
             " \"connections\": [{\"name\": \"rs485\", \"rtu\": {\"device\": \"%s\","
             " \"baud\": 115200, \"parity\": \"none\", \"data_bits\": 8, \"stop_bits\": 1},"
             " \"devices\": [{\"name\": \"drive\", \"unit\": 1, \"timeout_ms\": 300,"
             "  \"retries\": 2, \"points\": ["
             "  {\"name\": \"pi\", \"table\": \"holding\", \"address\": 100,"
             "   \"type\": \"float32\"},"
             "  {\"name\": \"speed\", \"table\": \"holding\", \"address\": 102,"
             "   \"type\": \"int32\","
             "   \"access\": \"read-write\"}]}]}]}",
             tty);
    struct gw_value cfg;
    make_config(text, &cfg);
    void *st = NULL;
    int rc = gw_modbus_adapter.create(&host, &cfg, &st);
    gw_value_fini(&cfg);
    CHECK(rc == 0, "create rtu");
    if (rc)
        return;
    CHECK(gw_modbus_adapter.start(st) == 0, "start rtu");
    struct result r = call("plc1/pi", NULL);
    CHECK(r.rc == 0 && fabs(num_of(&r.out) - 3.14159265) < 1e-6, "rtu read pi: %d %s %g", r.rc,
          r.msg, num_of(&r.out));
    write_check("plc1/speed", gw_value_int(-100000), -100000);
    expect_regs(1, 102, 2, (unsigned[]){0xFFFE, 0x7960}, "rtu int32 -100000");
    write_check("plc1/speed", gw_value_int(0), 0);
    expect_regs(1, 102, 2, (unsigned[]){0, 0}, "rtu int32 0");

    if (shim_ctl) {
        /* The shim corrupts the CRC of the next 2 replies: counted, retried, never decoded. */
        ctl("SET 1 h 102 0 7");
        FILE *f = fopen(shim_ctl, "w");
        if (f) {
            fputs("2\n", f);
            fclose(f);
        }
        run_for(300); /* let the shim pick the order up */
        r = call("plc1/speed", NULL);
        CHECK(r.rc == 0 && num_is(&r.out, 7), "read through 2 bad CRCs: %d %s %g", r.rc, r.msg,
              num_of(&r.out));
        struct result s = call("plc1/_stats/rs485", NULL);
        double crc = num_of(gw_value_map_get(&s.out, "crc_errors"));
        printf("  RTU bad-CRC replies counted: %g\n", crc);
        CHECK(crc >= 2, "crc_errors %g, expected >= 2", crc);
        gw_value_fini(&s.out);
    }
    gw_modbus_adapter.stop(st);
    gw_registry_remove_owner(reg, st);
    gw_modbus_adapter.destroy(st);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    if (argc < 4) {
        fprintf(stderr, "usage: %s tcp <python> <sim_server.py> | rtu <tty> <ctl port> [shim]\n",
                argv[0]);
        return 2;
    }
    if (gw_loop_new(&loop) != 0 || gw_registry_new(loop, &reg) != 0)
        return 1;
    host.loop = loop;
    host.registry = reg;
    if (strcmp(argv[1], "tcp") == 0) {
        py = argv[2];
        sim_path = argv[3];
        test_tcp();
        sim_kill();
    } else {
        ctl_port = atoi(argv[3]);
        if (ctl_open() != 0) {
            printf("FAIL: control port\n");
            return 1;
        }
        test_rtu(argv[2], argc > 4 ? argv[4] : NULL);
    }
    gw_registry_free(reg);
    gw_loop_free(loop);
    printf("%s: %d checks, %d failures\n", argv[1], checks, failures);
    return failures ? 1 : 0;
}
