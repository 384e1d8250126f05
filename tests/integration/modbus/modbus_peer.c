/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Real-peer test of the Modbus adapter's pure core against pymodbus (sim_server.py), over TCP or
 * RTU. It writes every type in every order through gw_modbus_encode and libmodbus, then checks the
 * registers the simulator stored (read over its control port, not through our decoder) against
 * registers derived independently from the order's name ("GHEFCDAB": register 0 holds bytes G and
 * H of the big-endian value), and reads them back through gw_modbus_decode. Then it plans reads
 * for 300 scattered points and checks that the simulator counted exactly the planned requests per
 * unit and function code, that this equals an independent sweep's count, and that every point
 * decodes to what the control port stored. Run by run_peer.sh:
 *     modbus_peer tcp <port> <control port>     full test
 *     modbus_peer rtu <device> <control port>   a shorter round trip over a serial line
 * Exit status 0 = all checks passed; the failures are printed.
 */
#include "modbus_map.h"
#include "modbus_plan.h"

#include "gw/error.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <modbus.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int failures;
static int checks;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("FAIL: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    failures++;
}

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        checks++;                                                                                 \
        if (!(cond))                                                                              \
            fail(__VA_ARGS__);                                                                    \
    } while (0)

/* --- Control channel --- */

static FILE *ctl_in;
static int ctl_fd = -1;

static int ctl_open(int port)
{
    ctl_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (ctl_fd < 0 || connect(ctl_fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        printf("cannot connect to the control port %d: %s\n", port, strerror(errno));
        return -1;
    }
    ctl_in = fdopen(ctl_fd, "r");
    return ctl_in ? 0 : -1;
}

/* Sends one command line and returns the answer after "OK" (static buffer), or NULL. */
static const char *ctl(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *ctl(const char *fmt, ...)
{
    static char line[16384];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof line - 2)
        return NULL;
    line[n++] = '\n';
    if (write(ctl_fd, line, (size_t)n) != n)
        return NULL;
    if (fgets(line, sizeof line, ctl_in) == NULL)
        return NULL;
    line[strcspn(line, "\n")] = '\0';
    if (strncmp(line, "OK", 2) != 0) {
        fail("control command answered: %s", line);
        return NULL;
    }
    return line[2] == ' ' ? line + 3 : line + 2;
}

/* Reads count stored entries of a table ('c', 'd', 'i', 'h') through the control port. */
static int ctl_get(int unit, char table, unsigned addr, unsigned count, uint16_t *out)
{
    const char *s = ctl("GET %d %c %u %u", unit, table, addr, count);
    if (s == NULL)
        return -1;
    for (unsigned i = 0; i < count; i++) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s)
            return -1;
        out[i] = (uint16_t)v;
        s = end;
    }
    return 0;
}

static int ctl_set(int unit, char table, unsigned addr, const uint16_t *v, unsigned count)
{
    char buf[8192];
    size_t len = 0;
    for (unsigned i = 0; i < count && len < sizeof buf - 8; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, " %u", (unsigned)v[i]);
    return ctl("SET %d %c %u%s", unit, table, addr, buf) ? 0 : -1;
}

/* The request count the simulator saw for (unit, function code). */
static long ctl_count(const char *counts, int unit, int fc)
{
    char key[32];
    snprintf(key, sizeof key, "%d:%d=", unit, fc);
    for (const char *p = counts; (p = strstr(p, key)) != NULL; p++)
        if (p == counts || p[-1] == ' ')
            return strtol(p + strlen(key), NULL, 10);
    return 0;
}

/* --- Expected registers, derived from the order's name --- */

/*
 * The registers a raw value of nbytes bytes must occupy in order o, from the letters of the
 * order's name: letter 'A' + k is byte k of the big-endian value.
 */
static void expected_regs(uint64_t raw, unsigned nbytes, enum gw_modbus_order o,
                          enum gw_modbus_type t, uint16_t *regs)
{
    uint8_t b[8];
    for (unsigned k = 0; k < nbytes; k++)
        b[k] = (uint8_t)(raw >> (8 * (nbytes - 1 - k)));
    const char *name = gw_modbus_order_name(o, t);
    for (unsigned i = 0; i < nbytes / 2; i++)
        regs[i] = (uint16_t)(b[name[2 * i] - 'A'] << 8 | b[name[2 * i + 1] - 'A']);
}

/* --- Writing every type in every order --- */

struct tcase {
    enum gw_modbus_type type;
    struct gw_value value;
    double scale, offset;   /* 0, 0 = unscaled */
    bool has_raw;
    int64_t raw;            /* for scaled cases: the register value the scaling must give */
};

#define TI(t, v) {GW_MODBUS_TYPE_##t, {.type = GW_VALUE_INT, .i = (v)}, 0, 0, false, 0}
#define TU(t, v) {GW_MODBUS_TYPE_##t, {.type = GW_VALUE_UINT, .u = (v)}, 0, 0, false, 0}
#define TD(t, v) {GW_MODBUS_TYPE_##t, {.type = GW_VALUE_DOUBLE, .d = (v)}, 0, 0, false, 0}

static const struct tcase tcases[] = {
    TI(INT16, 0x1234), TI(INT16, -2), TI(INT16, -32768), TI(INT16, 0),
    TU(UINT16, 0xFEDC), TU(UINT16, 65535), TU(UINT16, 0),
    TI(INT32, 0x12345678), TI(INT32, -2), TI(INT32, INT32_MIN), TI(INT32, 0),
    TU(UINT32, 0xDEADBEEF), TU(UINT32, 0),
    TI(INT64, 0x0102030405060708), TI(INT64, -3), TI(INT64, INT64_MIN), TI(INT64, 0),
    TU(UINT64, 0xF1E2D3C4B5A69788u), TU(UINT64, UINT64_MAX), TU(UINT64, 0),
    TD(FLOAT32, 123.456), TD(FLOAT32, -2.5), TD(FLOAT32, NAN), TD(FLOAT32, INFINITY),
    TD(FLOAT32, -INFINITY), TD(FLOAT32, 0.0),
    TD(FLOAT64, -123.456), TD(FLOAT64, 1e300), TD(FLOAT64, NAN), TD(FLOAT64, INFINITY),
    TD(FLOAT64, -INFINITY), TD(FLOAT64, 0.0),
    /* Scaled: 21.5 degrees at 0.1 per bit and -40 offset is raw 615; -1234.56 at 0.01 is
     * raw -123456; -40 with offset -40 is raw 0. */
    {GW_MODBUS_TYPE_UINT16, {.type = GW_VALUE_DOUBLE, .d = 21.5}, 0.1, -40, true, 615},
    {GW_MODBUS_TYPE_INT32, {.type = GW_VALUE_DOUBLE, .d = -1234.56}, 0.01, 0, true, -123456},
    {GW_MODBUS_TYPE_INT16, {.type = GW_VALUE_DOUBLE, .d = -40}, 0.1, -40, true, 0},
};

/* The independent raw bits of an unscaled case. */
static uint64_t case_raw(const struct tcase *c)
{
    if (c->has_raw)
        return (uint64_t)c->raw;
    if (c->type == GW_MODBUS_TYPE_FLOAT32) {
        float f = (float)c->value.d;
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        return u;
    }
    if (c->type == GW_MODBUS_TYPE_FLOAT64) {
        uint64_t u;
        memcpy(&u, &c->value.d, sizeof u);
        return u;
    }
    return c->value.type == GW_VALUE_INT ? (uint64_t)c->value.i : c->value.u;
}

static bool decoded_ok(const struct tcase *c, const struct gw_value *v)
{
    if (c->scale != 0)
        return v->type == GW_VALUE_DOUBLE && fabs(v->d - c->value.d) < 1e-6;
    if (c->type == GW_MODBUS_TYPE_FLOAT32) {
        struct gw_value f = gw_value_double((double)(float)c->value.d);
        return v->type == GW_VALUE_DOUBLE && gw_value_equal(v, &f);
    }
    return gw_value_equal(v, &c->value);
}

static void test_types(modbus_t *mb, unsigned base, bool all_orders)
{
    unsigned addr = base;
    uint16_t ones[8] = {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF};
    int written = 0;
    for (size_t ci = 0; ci < sizeof tcases / sizeof tcases[0]; ci++) {
        const struct tcase *c = &tcases[ci];
        for (int o = 0; o < 4; o++) {
            if (!all_orders && o != (int)(ci % 4))
                continue;
            struct gw_modbus_point p;
            gw_modbus_point_init(&p);
            p.name = "peer";
            p.type = c->type;
            p.order = (enum gw_modbus_order)o;
            p.address = (uint16_t)addr;
            p.access = GW_MODBUS_ACCESS_READ_WRITE;
            if (c->scale != 0) {
                p.scale = c->scale;
                p.offset = c->offset;
            }
            char err[200];
            unsigned w = gw_modbus_point_width(&p);
            const char *what = gw_modbus_order_name(p.order, p.type);
            /* Fill with ones first so that a write of 0 must show. */
            ctl_set(1, 'h', addr, ones, w);
            uint16_t regs[4];
            int rc = gw_modbus_encode(&p, &c->value, regs, 4, err, sizeof err);
            CHECK(rc == 0, "encode %s %s case %zu: %s", gw_modbus_type_name(p.type), what, ci,
                  err);
            rc = w == 1 ? modbus_write_register(mb, addr, regs[0])
                        : modbus_write_registers(mb, addr, (int)w, regs);
            CHECK(rc == (w == 1 ? 1 : (int)w), "write %s %s at %u: %s",
                  gw_modbus_type_name(p.type), what, addr, modbus_strerror(errno));
            written++;

            uint16_t stored[4] = {0}, want[4];
            expected_regs(case_raw(c), 2 * w, p.order, p.type, want);
            CHECK(ctl_get(1, 'h', addr, w, stored) == 0, "control GET at %u", addr);
            for (unsigned i = 0; i < w; i++)
                CHECK(stored[i] == want[i],
                      "%s %s case %zu: simulator register %u is 0x%04X, expected 0x%04X",
                      gw_modbus_type_name(p.type), what, ci, i, stored[i], want[i]);

            uint16_t back[4];
            rc = modbus_read_registers(mb, addr, (int)w, back);
            CHECK(rc == (int)w, "read back at %u: %s", addr, modbus_strerror(errno));
            struct gw_value v;
            rc = gw_modbus_decode(&p, back, w, &v, err, sizeof err);
            CHECK(rc == 0 && decoded_ok(c, &v), "%s %s case %zu: decoded value differs",
                  gw_modbus_type_name(p.type), what, ci);

            /* The same registers in an input register decode the same (FC 4 path). */
            ctl_set(1, 'i', addr, want, w);
            p.table = GW_MODBUS_TABLE_INPUT;
            rc = modbus_read_input_registers(mb, addr, (int)w, back);
            CHECK(rc == (int)w, "read input at %u: %s", addr, modbus_strerror(errno));
            rc = gw_modbus_decode(&p, back, w, &v, err, sizeof err);
            CHECK(rc == 0 && decoded_ok(c, &v), "input %s %s case %zu: decoded value differs",
                  gw_modbus_type_name(p.type), what, ci);
            addr += w;
        }
    }
    printf("types: %d writes of %zu values in %s\n", written, sizeof tcases / sizeof tcases[0],
           all_orders ? "all 4 orders" : "one order each");
}

static void test_bits_strings(modbus_t *mb, unsigned base)
{
    char err[200];
    struct gw_modbus_point p;
    uint16_t stored[4], r[4];
    struct gw_value v;

    /* Coils: true then false (0 is a value), FC 5; read back through FC 1. */
    gw_modbus_point_init(&p);
    p.name = "coil";
    p.table = GW_MODBUS_TABLE_COIL;
    p.type = GW_MODBUS_TYPE_BOOL;
    p.access = GW_MODBUS_ACCESS_READ_WRITE;
    p.address = (uint16_t)base;
    struct gw_value vals[] = {gw_value_bool(true), gw_value_bool(false), gw_value_uint(1),
                              gw_value_int(0)};
    for (size_t i = 0; i < 4; i++) {
        uint8_t bit = 9;
        CHECK(gw_modbus_encode_bit(&p, &vals[i], &bit, err, sizeof err) == 0, "coil: %s", err);
        CHECK(modbus_write_bit(mb, base, bit) == 1, "write coil: %s", modbus_strerror(errno));
        CHECK(ctl_get(1, 'c', base, 1, stored) == 0 && stored[0] == (i % 2 == 0),
              "coil value %zu stored as %u", i, stored[0]);
        uint8_t rb = 7;
        CHECK(modbus_read_bits(mb, base, 1, &rb) == 1, "read coil: %s", modbus_strerror(errno));
        CHECK(gw_modbus_decode_bit(&p, rb, &v) == 0 && v.type == GW_VALUE_BOOL &&
                  v.b == (i % 2 == 0),
              "coil %zu decoded wrong", i);
    }
    /* A discrete input set by the simulator, read through FC 2. */
    uint16_t one = 1;
    ctl_set(1, 'd', base + 3, &one, 1);
    uint8_t dbits[4];
    p.table = GW_MODBUS_TABLE_DISCRETE;
    CHECK(modbus_read_input_bits(mb, base, 4, dbits) == 4, "read discrete: %s",
          modbus_strerror(errno));
    CHECK(gw_modbus_decode_bit(&p, dbits[3], &v) == 0 && v.b, "discrete input 3 not true");
    CHECK(gw_modbus_decode_bit(&p, dbits[2], &v) == 0 && !v.b, "discrete input 2 not false");

    /* A bit in a holding register: read, change one bit, write back. */
    gw_modbus_point_init(&p);
    p.name = "bit";
    p.type = GW_MODBUS_TYPE_BIT;
    p.bit = 4;
    p.access = GW_MODBUS_ACCESS_READ_WRITE;
    p.address = (uint16_t)(base + 10);
    uint16_t init = 0x00F1;
    ctl_set(1, 'h', base + 10, &init, 1);
    struct gw_value f = gw_value_bool(false);
    CHECK(modbus_read_registers(mb, base + 10, 1, r) == 1, "read bit register");
    CHECK(gw_modbus_encode(&p, &f, r, 1, err, sizeof err) == 0, "bit: %s", err);
    CHECK(modbus_write_register(mb, base + 10, r[0]) == 1, "write bit register");
    CHECK(ctl_get(1, 'h', base + 10, 1, stored) == 0 && stored[0] == 0x00E1,
          "bit 4 cleared: stored 0x%04X, expected 0x00E1", stored[0]);

    /* A bool in a holding register: false overwrites 0xFFFF with 0, true writes 1 (FC 6). */
    gw_modbus_point_init(&p);
    p.name = "flag";
    p.type = GW_MODBUS_TYPE_BOOL;
    p.access = GW_MODBUS_ACCESS_READ_WRITE;
    p.address = (uint16_t)(base + 11);
    for (int i = 0; i < 2; i++) {
        uint16_t ffff = 0xFFFF;
        ctl_set(1, 'h', base + 11, &ffff, 1);
        struct gw_value b = gw_value_bool(i == 1);
        CHECK(gw_modbus_encode(&p, &b, r, 1, err, sizeof err) == 0, "bool: %s", err);
        CHECK(modbus_write_register(mb, base + 11, r[0]) == 1, "write bool register");
        CHECK(ctl_get(1, 'h', base + 11, 1, stored) == 0 && stored[0] == i,
              "bool %d stored as 0x%04X", i, stored[0]);
        CHECK(modbus_read_registers(mb, base + 11, 1, r) == 1, "read bool register");
        CHECK(gw_modbus_decode(&p, r, 1, &v, err, sizeof err) == 0 && v.type == GW_VALUE_BOOL &&
                  v.b == (i == 1),
              "bool %d decoded wrong", i);
    }

    /* Strings, high byte first and low byte first. */
    for (int o = 0; o < 2; o++) {
        gw_modbus_point_init(&p);
        p.name = "text";
        p.type = GW_MODBUS_TYPE_STRING;
        p.count = 4;
        p.order = o ? GW_MODBUS_ORDER_BADC : GW_MODBUS_ORDER_ABCD;
        p.access = GW_MODBUS_ACCESS_READ_WRITE;
        p.address = (uint16_t)(base + 20 + 4 * o);
        struct gw_value s = gw_value_cstr("HELLO");
        CHECK(gw_modbus_encode(&p, &s, r, 4, err, sizeof err) == 0, "string: %s", err);
        CHECK(modbus_write_registers(mb, p.address, 4, r) == 4, "write string");
        CHECK(ctl_get(1, 'h', p.address, 4, stored) == 0, "get string");
        const char *txt = "HELLO\0\0\0";
        for (unsigned i = 0; i < 4; i++) {
            uint8_t a = (uint8_t)txt[2 * i], b = (uint8_t)txt[2 * i + 1];
            uint16_t want = o ? (uint16_t)(b << 8 | a) : (uint16_t)(a << 8 | b);
            CHECK(stored[i] == want, "string order %d register %u: 0x%04X, expected 0x%04X", o,
                  i, stored[i], want);
        }
        CHECK(modbus_read_registers(mb, p.address, 4, r) == 4, "read string");
        CHECK(gw_modbus_decode(&p, r, 4, &v, err, sizeof err) == 0 && v.type == GW_VALUE_STRING &&
                  strcmp(v.s.p, "HELLO") == 0,
              "string order %d decoded wrong", o);
        if (v.type == GW_VALUE_STRING)
            gw_value_fini(&v);
        gw_value_fini(&s);
    }
    printf("bits and strings: done\n");
}

/* --- Coalescing --- */

static uint32_t rng = 2463534242u;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng % n;
}

/*
 * An independent count of the minimum for non-overlapping points sorted by address: the plain
 * sweep that opens a new request when the next point would leave a run of more than gap unused
 * addresses or make the request longer than max.
 */
static unsigned sweep_count(struct gw_modbus_plan_point *pts, size_t n, unsigned max_regs,
                            unsigned max_bits, unsigned gap_regs, unsigned gap_bits)
{
    unsigned count = 0;
    size_t i = 0;
    while (i < n) {
        bool bits = gw_modbus_table_is_bits(pts[i].table);
        unsigned max = bits ? max_bits : max_regs, gap = bits ? gap_bits : gap_regs;
        unsigned start = pts[i].address, end = start + pts[i].count;
        size_t j = i + 1;
        while (j < n && pts[j].unit == pts[i].unit && pts[j].table == pts[i].table &&
               pts[j].address - end <= gap && pts[j].address + pts[j].count - start <= max) {
            end = pts[j].address + pts[j].count;
            j++;
        }
        count++;
        i = j;
    }
    return count;
}

static char table_letter(enum gw_modbus_table t)
{
    return "cdih"[t];
}

static void test_coalescing(modbus_t *mb, size_t npoints, unsigned max_regs, unsigned gap_regs,
                            unsigned gap_bits)
{
    /* Scattered points: four groups, in address order within each (the sweep needs that). */
    struct {
        uint8_t unit;
        enum gw_modbus_table table;
        size_t share; /* out of 10 */
    } groups[] = {{1, GW_MODBUS_TABLE_HOLDING, 5}, {1, GW_MODBUS_TABLE_INPUT, 2},
                  {1, GW_MODBUS_TABLE_COIL, 1},    {2, GW_MODBUS_TABLE_HOLDING, 2}};
    struct gw_modbus_plan_point *pts = calloc(npoints, sizeof *pts);
    struct gw_modbus_point *points = calloc(npoints, sizeof *points);
    size_t n = 0;
    for (size_t g = 0; g < 4; g++) {
        size_t want = g == 3 ? npoints - n : npoints * groups[g].share / 10;
        bool bits = gw_modbus_table_is_bits(groups[g].table);
        unsigned gap = bits ? gap_bits : gap_regs;
        unsigned a = 30000 + rnd(50);
        for (size_t k = 0; k < want; k++) {
            struct gw_modbus_point *p = &points[n];
            gw_modbus_point_init(p);
            p->table = groups[g].table;
            p->address = (uint16_t)a;
            if (bits) {
                p->type = GW_MODBUS_TYPE_BOOL;
            } else {
                static const enum gw_modbus_type types[] = {
                    GW_MODBUS_TYPE_UINT16, GW_MODBUS_TYPE_UINT32, GW_MODBUS_TYPE_UINT64,
                    GW_MODBUS_TYPE_INT16};
                p->type = types[rnd(4)];
            }
            pts[n] = (struct gw_modbus_plan_point){.unit = groups[g].unit, .table = p->table,
                                                   .address = p->address,
                                                   .count = (uint16_t)gw_modbus_point_width(p)};
            /* Gaps around the limit: at, just past, well past, and none. */
            unsigned r = rnd(10);
            unsigned skip = r < 3 ? 0 : r < 6 ? gap : r < 8 ? gap + 1 : gap + 1 + rnd(40);
            a += pts[n].count + skip;
            n++;
        }
    }

    /* Store a known value in every point, through the control port. */
    uint16_t *truth = calloc(npoints * 4, sizeof *truth);
    for (size_t i = 0; i < n; i++) {
        for (unsigned k = 0; k < pts[i].count; k++)
            truth[4 * i + k] = gw_modbus_table_is_bits(pts[i].table) ? (uint16_t)rnd(2)
                                                                     : (uint16_t)rnd(65536);
        ctl_set(pts[i].unit, table_letter(pts[i].table), pts[i].address, &truth[4 * i],
                pts[i].count);
    }

    struct gw_modbus_plan_limits lim = {.max_regs = (uint16_t)max_regs,
                                        .gap_regs = (uint16_t)gap_regs,
                                        .gap_bits = (uint16_t)gap_bits};
    struct gw_modbus_plan plan;
    char err[200];
    int nreq = gw_modbus_plan_build(pts, n, &lim, &plan, err, sizeof err);
    CHECK(nreq > 0, "plan: %s", err);
    if (nreq <= 0)
        goto out;
    unsigned sweep = sweep_count(pts, n, max_regs, 2000, gap_regs, gap_bits);
    CHECK((unsigned)nreq == sweep, "planner made %d requests, the independent sweep %u", nreq,
          sweep);

    /* Issue the plan and count at the simulator. */
    CHECK(ctl("RESET") != NULL, "control RESET");
    uint16_t (*buf)[125] = calloc(plan.nreqs, sizeof *buf);
    uint8_t (*bbuf)[2000] = calloc(plan.nreqs, sizeof *bbuf);
    for (size_t k = 0; k < plan.nreqs; k++) {
        const struct gw_modbus_request *r = &plan.reqs[k];
        modbus_set_slave(mb, r->unit);
        int rc = -1;
        switch (r->function) {
        case 1: rc = modbus_read_bits(mb, r->start, r->count, bbuf[k]); break;
        case 2: rc = modbus_read_input_bits(mb, r->start, r->count, bbuf[k]); break;
        case 3: rc = modbus_read_registers(mb, r->start, r->count, buf[k]); break;
        case 4: rc = modbus_read_input_registers(mb, r->start, r->count, buf[k]); break;
        }
        CHECK(rc == r->count, "request %zu (unit %u fc %u %u+%u): %s", k, r->unit, r->function,
              r->start, r->count, modbus_strerror(errno));
    }
    modbus_set_slave(mb, 1);
    const char *counts = ctl("COUNTS");
    CHECK(counts != NULL, "control COUNTS");
    long seen_total = 0;
    for (int unit = 1; unit <= 2 && counts; unit++) {
        for (int fc = 1; fc <= 4; fc++) {
            long planned = 0;
            for (size_t k = 0; k < plan.nreqs; k++)
                planned += plan.reqs[k].unit == unit && plan.reqs[k].function == fc;
            long seen = ctl_count(counts, unit, fc);
            seen_total += seen;
            CHECK(seen == planned, "unit %d fc %d: simulator counted %ld requests, plan has %ld",
                  unit, fc, seen, planned);
        }
    }

    /* Every point decodes from its request's reply at its offset to the stored value. */
    for (size_t i = 0; i < n; i++) {
        size_t k = plan.point_req[i];
        unsigned off = plan.point_offset[i];
        struct gw_value v;
        if (gw_modbus_table_is_bits(pts[i].table)) {
            CHECK(gw_modbus_decode_bit(&points[i], bbuf[k][off], &v) == 0 &&
                      v.b == (truth[4 * i] != 0),
                  "coil point %zu decoded wrong", i);
            continue;
        }
        CHECK(gw_modbus_decode(&points[i], &buf[k][off], pts[i].count, &v, err, sizeof err) == 0,
              "decode point %zu: %s", i, err);
        uint64_t want = 0;
        for (unsigned w = 0; w < pts[i].count; w++)
            want = want << 16 | truth[4 * i + w];
        uint64_t got = v.type == GW_VALUE_INT ? (uint64_t)v.i : v.u;
        if (points[i].type == GW_MODBUS_TYPE_INT16)
            got &= 0xFFFF;
        CHECK(got == want, "point %zu (%s at %u): decoded %llu, stored %llu", i,
              gw_modbus_type_name(points[i].type), pts[i].address, (unsigned long long)got,
              (unsigned long long)want);
    }
    printf("coalescing: %zu points, max %u registers, gap %u registers / %u bits: %d requests "
           "planned, %ld counted at the simulator, independent sweep %u\n",
           n, max_regs, gap_regs, gap_bits, nreq, seen_total, sweep);
    free(buf);
    free(bbuf);
    gw_modbus_plan_fini(&plan);
out:
    free(truth);
    free(points);
    free(pts);
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "tcp") != 0 && strcmp(argv[1], "rtu") != 0)) {
        fprintf(stderr, "usage: %s tcp <port> <control port> | rtu <device> <control port>\n",
                argv[0]);
        return 2;
    }
    bool rtu = strcmp(argv[1], "rtu") == 0;
    if (ctl_open(atoi(argv[3])) != 0)
        return 1;
    modbus_t *mb = rtu ? modbus_new_rtu(argv[2], 115200, 'N', 8, 1)
                       : modbus_new_tcp("127.0.0.1", atoi(argv[2]));
    if (mb == NULL || modbus_set_slave(mb, 1) != 0 || modbus_connect(mb) != 0) {
        printf("cannot open Modbus %s %s: %s\n", argv[1], argv[2], modbus_strerror(errno));
        return 1;
    }
    modbus_set_response_timeout(mb, 3, 0);

    if (rtu) {
        test_types(mb, 100, false);
        test_bits_strings(mb, 2000);
        test_coalescing(mb, 40, 125, 4, 16);
    } else {
        test_types(mb, 100, true);
        test_bits_strings(mb, 2000);
        test_coalescing(mb, 300, 125, 8, 32);
        test_coalescing(mb, 300, 16, 3, 0); /* a fussy device */
    }
    modbus_close(mb);
    modbus_free(mb);
    fclose(ctl_in);
    printf("%s: %d checks, %d failures\n", argv[1], checks, failures);
    return failures == 0 ? 0 : 1;
}
