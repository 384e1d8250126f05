/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of adapters/modbus/modbus_map.c: every numeric type in every byte/word order against
 * register contents written out by hand, negatives, NaN and infinities, 0 and false, scale and
 * offset with rounding, range and access errors, strings, bits, names and address notations.
 */
#include "modbus_map.h"

#include "gw/error.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static struct gw_modbus_point mkpoint(enum gw_modbus_type type, enum gw_modbus_order order)
{
    struct gw_modbus_point p;
    gw_modbus_point_init(&p);
    p.name = "plc1/x";
    p.type = type;
    p.order = order;
    p.access = GW_MODBUS_ACCESS_READ_WRITE;
    return p;
}

/* --- Every type x every order --- */

struct known {
    enum gw_modbus_type type;
    enum gw_modbus_order order;
    struct gw_value value;   /* what is written; also what decodes, unless expect is set */
    uint16_t regs[4];        /* as libmodbus hands them over, register 0 first */
    bool has_expect;
    struct gw_value expect;  /* decoded value when it differs (float32 rounding) */
};

#define I(v) {.type = GW_VALUE_INT, .i = (v)}
#define U(v) {.type = GW_VALUE_UINT, .u = (v)}
#define D(v) {.type = GW_VALUE_DOUBLE, .d = (v)}
#define O(x) GW_MODBUS_ORDER_##x
#define T(x) GW_MODBUS_TYPE_##x

static const struct known known[] = {
    /* int16 0x1234 */
    {T(INT16), O(ABCD), I(0x1234), {0x1234}, false, {0}},
    {T(INT16), O(BADC), I(0x1234), {0x3412}, false, {0}},
    {T(INT16), O(CDAB), I(0x1234), {0x1234}, false, {0}},
    {T(INT16), O(DCBA), I(0x1234), {0x3412}, false, {0}},
    /* int16 -2 = 0xFFFE, -32768 */
    {T(INT16), O(ABCD), I(-2), {0xFFFE}, false, {0}},
    {T(INT16), O(BADC), I(-2), {0xFEFF}, false, {0}},
    {T(INT16), O(ABCD), I(-32768), {0x8000}, false, {0}},
    {T(INT16), O(DCBA), I(-32768), {0x0080}, false, {0}},
    /* uint16 0xFEDC */
    {T(UINT16), O(ABCD), U(0xFEDC), {0xFEDC}, false, {0}},
    {T(UINT16), O(BADC), U(0xFEDC), {0xDCFE}, false, {0}},
    {T(UINT16), O(CDAB), U(0xFEDC), {0xFEDC}, false, {0}},
    {T(UINT16), O(DCBA), U(0xFEDC), {0xDCFE}, false, {0}},
    /* int32 0x12345678 */
    {T(INT32), O(ABCD), I(0x12345678), {0x1234, 0x5678}, false, {0}},
    {T(INT32), O(BADC), I(0x12345678), {0x3412, 0x7856}, false, {0}},
    {T(INT32), O(CDAB), I(0x12345678), {0x5678, 0x1234}, false, {0}},
    {T(INT32), O(DCBA), I(0x12345678), {0x7856, 0x3412}, false, {0}},
    /* int32 -2 = 0xFFFFFFFE, INT32_MIN */
    {T(INT32), O(ABCD), I(-2), {0xFFFF, 0xFFFE}, false, {0}},
    {T(INT32), O(BADC), I(-2), {0xFFFF, 0xFEFF}, false, {0}},
    {T(INT32), O(CDAB), I(-2), {0xFFFE, 0xFFFF}, false, {0}},
    {T(INT32), O(DCBA), I(-2), {0xFEFF, 0xFFFF}, false, {0}},
    {T(INT32), O(CDAB), I(INT32_MIN), {0x0000, 0x8000}, false, {0}},
    /* uint32 0xDEADBEEF */
    {T(UINT32), O(ABCD), U(0xDEADBEEF), {0xDEAD, 0xBEEF}, false, {0}},
    {T(UINT32), O(BADC), U(0xDEADBEEF), {0xADDE, 0xEFBE}, false, {0}},
    {T(UINT32), O(CDAB), U(0xDEADBEEF), {0xBEEF, 0xDEAD}, false, {0}},
    {T(UINT32), O(DCBA), U(0xDEADBEEF), {0xEFBE, 0xADDE}, false, {0}},
    /* int64 0x0102030405060708 (ABCDEFGH, BADCFEHG, GHEFCDAB, HGFEDCBA) */
    {T(INT64), O(ABCD), I(0x0102030405060708), {0x0102, 0x0304, 0x0506, 0x0708}, false, {0}},
    {T(INT64), O(BADC), I(0x0102030405060708), {0x0201, 0x0403, 0x0605, 0x0807}, false, {0}},
    {T(INT64), O(CDAB), I(0x0102030405060708), {0x0708, 0x0506, 0x0304, 0x0102}, false, {0}},
    {T(INT64), O(DCBA), I(0x0102030405060708), {0x0807, 0x0605, 0x0403, 0x0201}, false, {0}},
    /* int64 -3 = 0xFF..FD, INT64_MIN */
    {T(INT64), O(ABCD), I(-3), {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD}, false, {0}},
    {T(INT64), O(BADC), I(-3), {0xFFFF, 0xFFFF, 0xFFFF, 0xFDFF}, false, {0}},
    {T(INT64), O(CDAB), I(-3), {0xFFFD, 0xFFFF, 0xFFFF, 0xFFFF}, false, {0}},
    {T(INT64), O(DCBA), I(-3), {0xFDFF, 0xFFFF, 0xFFFF, 0xFFFF}, false, {0}},
    {T(INT64), O(ABCD), I(INT64_MIN), {0x8000, 0, 0, 0}, false, {0}},
    {T(INT64), O(DCBA), I(INT64_MIN), {0, 0, 0, 0x0080}, false, {0}},
    /* uint64 0xF1E2D3C4B5A69788 and UINT64_MAX */
    {T(UINT64), O(ABCD), U(0xF1E2D3C4B5A69788u), {0xF1E2, 0xD3C4, 0xB5A6, 0x9788}, false, {0}},
    {T(UINT64), O(BADC), U(0xF1E2D3C4B5A69788u), {0xE2F1, 0xC4D3, 0xA6B5, 0x8897}, false, {0}},
    {T(UINT64), O(CDAB), U(0xF1E2D3C4B5A69788u), {0x9788, 0xB5A6, 0xD3C4, 0xF1E2}, false, {0}},
    {T(UINT64), O(DCBA), U(0xF1E2D3C4B5A69788u), {0x8897, 0xA6B5, 0xC4D3, 0xE2F1}, false, {0}},
    {T(UINT64), O(ABCD), U(UINT64_MAX), {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF}, false, {0}},
    /* float32 123.456 = 0x42F6E979 (decodes as the nearest float) */
    {T(FLOAT32), O(ABCD), D(123.456), {0x42F6, 0xE979}, true, D((double)123.456f)},
    {T(FLOAT32), O(BADC), D(123.456), {0xF642, 0x79E9}, true, D((double)123.456f)},
    {T(FLOAT32), O(CDAB), D(123.456), {0xE979, 0x42F6}, true, D((double)123.456f)},
    {T(FLOAT32), O(DCBA), D(123.456), {0x79E9, 0xF642}, true, D((double)123.456f)},
    /* float32 -2.5 = 0xC0200000, +inf = 0x7F800000, -inf = 0xFF800000 */
    {T(FLOAT32), O(ABCD), D(-2.5), {0xC020, 0x0000}, false, {0}},
    {T(FLOAT32), O(BADC), D(-2.5), {0x20C0, 0x0000}, false, {0}},
    {T(FLOAT32), O(CDAB), D(-2.5), {0x0000, 0xC020}, false, {0}},
    {T(FLOAT32), O(DCBA), D(-2.5), {0x0000, 0x20C0}, false, {0}},
    {T(FLOAT32), O(ABCD), D(INFINITY), {0x7F80, 0x0000}, false, {0}},
    {T(FLOAT32), O(DCBA), D(-INFINITY), {0x0000, 0x80FF}, false, {0}},
    /* float64 -123.456 = 0xC05EDD2F1A9FBE77 */
    {T(FLOAT64), O(ABCD), D(-123.456), {0xC05E, 0xDD2F, 0x1A9F, 0xBE77}, false, {0}},
    {T(FLOAT64), O(BADC), D(-123.456), {0x5EC0, 0x2FDD, 0x9F1A, 0x77BE}, false, {0}},
    {T(FLOAT64), O(CDAB), D(-123.456), {0xBE77, 0x1A9F, 0xDD2F, 0xC05E}, false, {0}},
    {T(FLOAT64), O(DCBA), D(-123.456), {0x77BE, 0x9F1A, 0x2FDD, 0x5EC0}, false, {0}},
    {T(FLOAT64), O(CDAB), D(-INFINITY), {0x0000, 0x0000, 0x0000, 0xFFF0}, false, {0}},
    /* zero is a value: every type writes all-zero registers */
    {T(INT16), O(ABCD), I(0), {0}, false, {0}},
    {T(UINT32), O(DCBA), U(0), {0, 0}, false, {0}},
    {T(INT64), O(CDAB), I(0), {0, 0, 0, 0}, false, {0}},
    {T(FLOAT32), O(ABCD), D(0.0), {0, 0}, false, {0}},
    {T(FLOAT64), O(BADC), D(0.0), {0, 0, 0, 0}, false, {0}},
};

START_TEST(test_modbus_map_known_encode)
{
    const struct known *k = &known[_i];
    struct gw_modbus_point p = mkpoint(k->type, k->order);
    unsigned w = gw_modbus_point_width(&p);
    uint16_t regs[4] = {0xAAAA, 0xAAAA, 0xAAAA, 0xAAAA}; /* garbage: 0 must overwrite it */
    char err[200] = "";
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), 0);
    ck_assert_msg(gw_modbus_encode(&p, &k->value, regs, 4, err, sizeof err) == 0, "row %d: %s", _i,
                  err);
    for (unsigned r = 0; r < w; r++)
        ck_assert_msg(regs[r] == k->regs[r], "row %d (%s %s) reg %u: got 0x%04X, want 0x%04X", _i,
                      gw_modbus_type_name(k->type), gw_modbus_order_name(k->order, k->type), r,
                      regs[r], k->regs[r]);
    for (unsigned r = w; r < 4; r++)
        ck_assert_uint_eq(regs[r], 0xAAAA); /* nothing written past the point */
}
END_TEST

START_TEST(test_modbus_map_known_decode)
{
    const struct known *k = &known[_i];
    struct gw_modbus_point p = mkpoint(k->type, k->order);
    struct gw_value v;
    char err[200] = "";
    ck_assert_int_eq(gw_modbus_decode(&p, k->regs, 4, &v, err, sizeof err), 0);
    const struct gw_value *want = k->has_expect ? &k->expect : &k->value;
    ck_assert_msg(gw_value_equal(&v, want), "row %d: decoded another value", _i);
    /* Signedness of the result follows the type. */
    switch (k->type) {
    case GW_MODBUS_TYPE_INT16:
    case GW_MODBUS_TYPE_INT32:
    case GW_MODBUS_TYPE_INT64: ck_assert_int_eq(v.type, GW_VALUE_INT); break;
    case GW_MODBUS_TYPE_UINT16:
    case GW_MODBUS_TYPE_UINT32:
    case GW_MODBUS_TYPE_UINT64: ck_assert_int_eq(v.type, GW_VALUE_UINT); break;
    default: ck_assert_int_eq(v.type, GW_VALUE_DOUBLE); break;
    }
}
END_TEST

START_TEST(test_modbus_map_nan_round_trips)
{
    for (int o = 0; o < 4; o++) {
        struct gw_modbus_point p32 = mkpoint(GW_MODBUS_TYPE_FLOAT32, (enum gw_modbus_order)o);
        struct gw_modbus_point p64 = mkpoint(GW_MODBUS_TYPE_FLOAT64, (enum gw_modbus_order)o);
        struct gw_value nan = gw_value_double(NAN), out;
        uint16_t r[4] = {0};
        ck_assert_int_eq(gw_modbus_encode(&p32, &nan, r, 4, NULL, 0), 0);
        /* The exponent bits are all ones and the mantissa is not zero, in whichever register. */
        uint16_t hi = (o & 2) ? r[1] : r[0], lo = (o & 2) ? r[0] : r[1];
        if (o & 1) {
            hi = (uint16_t)(hi << 8 | hi >> 8);
            lo = (uint16_t)(lo << 8 | lo >> 8);
        }
        uint32_t bits = (uint32_t)hi << 16 | lo;
        ck_assert_uint_eq(bits & 0x7F800000u, 0x7F800000u);
        ck_assert_uint_ne(bits & 0x007FFFFFu, 0);
        ck_assert_int_eq(gw_modbus_decode(&p32, r, 4, &out, NULL, 0), 0);
        ck_assert(out.type == GW_VALUE_DOUBLE && isnan(out.d));

        ck_assert_int_eq(gw_modbus_encode(&p64, &nan, r, 4, NULL, 0), 0);
        ck_assert_int_eq(gw_modbus_decode(&p64, r, 4, &out, NULL, 0), 0);
        ck_assert(out.type == GW_VALUE_DOUBLE && isnan(out.d));
    }
}
END_TEST

START_TEST(test_modbus_map_float32_range)
{
    struct gw_modbus_point p = mkpoint(GW_MODBUS_TYPE_FLOAT32, GW_MODBUS_ORDER_ABCD);
    uint16_t r[2];
    char err[200];
    struct gw_value big = gw_value_double(1e39), max = gw_value_double(FLT_MAX);
    ck_assert_int_eq(gw_modbus_encode(&p, &big, r, 2, err, sizeof err), GW_ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "out of range for float32 point plc1/x"));
    ck_assert_int_eq(gw_modbus_encode(&p, &max, r, 2, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0x7F7F);
    ck_assert_uint_eq(r[1], 0xFFFF);
    /* Integers go into floats too. */
    struct gw_value i = gw_value_int(-7);
    ck_assert_int_eq(gw_modbus_encode(&p, &i, r, 2, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0xC0E0);
    ck_assert_uint_eq(r[1], 0x0000);
}
END_TEST

START_TEST(test_modbus_map_random_registers_round_trip)
{
    /* Any registers decode to a value that encodes back to the same registers (floats: any but
     * NaN, whose payload a float32 -> double -> float32 trip need not keep). */
    uint32_t x = 2463534242u;
    for (int t = GW_MODBUS_TYPE_INT16; t <= GW_MODBUS_TYPE_FLOAT64; t++) {
        for (int o = 0; o < 4; o++) {
            struct gw_modbus_point p = mkpoint((enum gw_modbus_type)t, (enum gw_modbus_order)o);
            unsigned w = gw_modbus_point_width(&p);
            for (int n = 0; n < 2000; n++) {
                uint16_t r[4], back[4];
                for (unsigned i = 0; i < 4; i++) {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    r[i] = (uint16_t)x;
                }
                struct gw_value v;
                char err[200];
                ck_assert_int_eq(gw_modbus_decode(&p, r, 4, &v, err, sizeof err), 0);
                if (v.type == GW_VALUE_DOUBLE && isnan(v.d))
                    continue;
                ck_assert_msg(gw_modbus_encode(&p, &v, back, 4, err, sizeof err) == 0, "%s", err);
                for (unsigned i = 0; i < w; i++)
                    ck_assert_msg(back[i] == r[i], "%s %s: 0x%04X came back as 0x%04X",
                                  gw_modbus_type_name(p.type),
                                  gw_modbus_order_name(p.order, p.type), r[i], back[i]);
            }
        }
    }
}
END_TEST

/* --- Zero and false --- */

START_TEST(test_modbus_map_writes_zero_and_false)
{
    char err[200];
    /* bool in a holding register: false is 0, true is 1, whatever was there before. */
    struct gw_modbus_point p = mkpoint(GW_MODBUS_TYPE_BOOL, GW_MODBUS_ORDER_ABCD);
    uint16_t r[1] = {0x5555};
    struct gw_value f = gw_value_bool(false), t = gw_value_bool(true), zero = gw_value_uint(0),
                    one = gw_value_int(1), dzero = gw_value_double(0.0);
    ck_assert_int_eq(gw_modbus_encode(&p, &f, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0);
    ck_assert_int_eq(gw_modbus_encode(&p, &t, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 1);
    ck_assert_int_eq(gw_modbus_encode(&p, &zero, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0);
    ck_assert_int_eq(gw_modbus_encode(&p, &one, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 1);
    ck_assert_int_eq(gw_modbus_encode(&p, &dzero, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0);

    /* A coil: false and 0 give bit 0. */
    struct gw_modbus_point c = mkpoint(GW_MODBUS_TYPE_BOOL, GW_MODBUS_ORDER_ABCD);
    c.table = GW_MODBUS_TABLE_COIL;
    ck_assert_int_eq(gw_modbus_point_check(&c, err, sizeof err), 0);
    uint8_t bit = 7;
    ck_assert_int_eq(gw_modbus_encode_bit(&c, &f, &bit, err, sizeof err), 0);
    ck_assert_uint_eq(bit, 0);
    bit = 7;
    ck_assert_int_eq(gw_modbus_encode_bit(&c, &zero, &bit, err, sizeof err), 0);
    ck_assert_uint_eq(bit, 0);
    ck_assert_int_eq(gw_modbus_encode_bit(&c, &t, &bit, err, sizeof err), 0);
    ck_assert_uint_eq(bit, 1);
    struct gw_value v;
    ck_assert_int_eq(gw_modbus_decode_bit(&c, 0, &v), 0);
    ck_assert(v.type == GW_VALUE_BOOL && !v.b);
    ck_assert_int_eq(gw_modbus_decode_bit(&c, 1, &v), 0);
    ck_assert(v.type == GW_VALUE_BOOL && v.b);

    /* A value of 2 is not a bool. */
    struct gw_value two = gw_value_uint(2);
    ck_assert_int_eq(gw_modbus_encode_bit(&c, &two, &bit, err, sizeof err), GW_ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "value 2 out of range for bool point plc1/x"));

    /* Scaled zero: 0 degrees with offset -40 is raw 400 at scale 0.1; raw 0 decodes to -40. */
    struct gw_modbus_point s = mkpoint(GW_MODBUS_TYPE_UINT16, GW_MODBUS_ORDER_ABCD);
    s.scale = 0.1;
    s.offset = -40;
    ck_assert_int_eq(gw_modbus_encode(&s, &zero, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 400);
    r[0] = 0;
    ck_assert_int_eq(gw_modbus_decode(&s, r, 1, &v, err, sizeof err), 0);
    ck_assert_double_eq_tol(v.d, -40.0, 1e-12);
}
END_TEST

/* --- Bits in registers --- */

START_TEST(test_modbus_map_bit_in_register)
{
    char err[200];
    struct gw_modbus_point p = mkpoint(GW_MODBUS_TYPE_BIT, GW_MODBUS_ORDER_ABCD);
    p.bit = 0;
    uint16_t r[1] = {0x00F0};
    struct gw_value t = gw_value_bool(true), f = gw_value_bool(false), v;
    ck_assert_int_eq(gw_modbus_encode(&p, &t, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0x00F1);
    p.bit = 4;
    ck_assert_int_eq(gw_modbus_encode(&p, &f, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0x00E1);
    p.bit = 15;
    ck_assert_int_eq(gw_modbus_encode(&p, &t, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0x80E1);
    ck_assert_int_eq(gw_modbus_decode(&p, r, 1, &v, err, sizeof err), 0);
    ck_assert(v.type == GW_VALUE_BOOL && v.b);
    p.bit = 3;
    ck_assert_int_eq(gw_modbus_decode(&p, r, 1, &v, err, sizeof err), 0);
    ck_assert(v.type == GW_VALUE_BOOL && !v.b);
    p.bit = 16;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "bit index 16"));
}
END_TEST

/* --- Scale, offset, rounding, limits --- */

START_TEST(test_modbus_map_scale_offset_round_trip)
{
    char err[200];
    struct gw_modbus_point p = mkpoint(GW_MODBUS_TYPE_INT16, GW_MODBUS_ORDER_ABCD);
    p.scale = 0.1;
    p.offset = -40.0;
    uint16_t r[1];
    struct gw_value v;
    /* Every raw value decodes and encodes back to itself. */
    for (int raw = -32768; raw <= 32767; raw += 7) {
        r[0] = (uint16_t)(int16_t)raw;
        ck_assert_int_eq(gw_modbus_decode(&p, r, 1, &v, err, sizeof err), 0);
        ck_assert_int_eq(v.type, GW_VALUE_DOUBLE);
        ck_assert_double_eq_tol(v.d, raw * 0.1 - 40.0, 1e-9);
        uint16_t back[1];
        ck_assert_msg(gw_modbus_encode(&p, &v, back, 1, err, sizeof err) == 0, "%s", err);
        ck_assert_uint_eq(back[0], r[0]);
    }
    /* 21.5 degrees -> raw 615; 21.54 rounds to 615, 21.56 to 616. */
    struct gw_value a = gw_value_double(21.54), b = gw_value_double(21.56);
    ck_assert_int_eq(gw_modbus_encode(&p, &a, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 615);
    ck_assert_int_eq(gw_modbus_encode(&p, &b, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 616);

    /* Unsigned 32-bit with a scale: a decoded value is a double. */
    struct gw_modbus_point q = mkpoint(GW_MODBUS_TYPE_UINT32, GW_MODBUS_ORDER_CDAB);
    q.scale = 0.001;
    uint16_t r2[2] = {0x5678, 0x1234}; /* 0x12345678 = 305419896 */
    ck_assert_int_eq(gw_modbus_decode(&q, r2, 2, &v, err, sizeof err), 0);
    ck_assert_double_eq_tol(v.d, 305419.896, 1e-6);
    uint16_t r3[2];
    ck_assert_int_eq(gw_modbus_encode(&q, &v, r3, 2, err, sizeof err), 0);
    ck_assert_uint_eq(r3[0], 0x5678);
    ck_assert_uint_eq(r3[1], 0x1234);
}
END_TEST

START_TEST(test_modbus_map_rounds_half_away_from_zero)
{
    char err[200];
    struct gw_modbus_point p = mkpoint(GW_MODBUS_TYPE_INT16, GW_MODBUS_ORDER_ABCD);
    uint16_t r[1];
    struct gw_value v = gw_value_double(2.5);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 3);
    v = gw_value_double(-2.5);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0xFFFD);
    v = gw_value_double(2.49);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 2);
    /* 32767.4 rounds into range; 32767.5 rounds out of it. */
    v = gw_value_double(32767.4);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0x7FFF);
    v = gw_value_double(32767.5);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), GW_ERANGE);
}
END_TEST

START_TEST(test_modbus_map_range_errors)
{
    char err[200];
    uint16_t r[4];
    struct gw_modbus_point p = mkpoint(GW_MODBUS_TYPE_UINT16, GW_MODBUS_ORDER_ABCD);
    struct gw_value v = gw_value_uint(70000);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), GW_ERANGE);
    ck_assert_str_eq(err, "value 70000 out of range for uint16 point plc1/x (0 .. 65535)");
    v = gw_value_int(-1);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), GW_ERANGE);
    ck_assert_str_eq(err, "value -1 out of range for uint16 point plc1/x (0 .. 65535)");
    v = gw_value_uint(65535);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0xFFFF);

    p.type = GW_MODBUS_TYPE_INT16;
    v = gw_value_int(32768);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), GW_ERANGE);
    ck_assert_str_eq(err, "value 32768 out of range for int16 point plc1/x (-32768 .. 32767)");
    v = gw_value_int(-32769);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), GW_ERANGE);

    p.type = GW_MODBUS_TYPE_INT64;
    v = gw_value_uint((uint64_t)INT64_MAX + 1);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 4, err, sizeof err), GW_ERANGE);
    v = gw_value_uint((uint64_t)INT64_MAX);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 4, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0x7FFF);
    ck_assert_uint_eq(r[3], 0xFFFF);
    v = gw_value_double(1e19);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 4, err, sizeof err), GW_ERANGE);

    p.type = GW_MODBUS_TYPE_UINT64;
    v = gw_value_double(-0.6);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 4, err, sizeof err), GW_ERANGE);
    v = gw_value_double(-0.4); /* rounds to 0 */
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 4, err, sizeof err), 0);
    ck_assert_uint_eq(r[0] | r[1] | r[2] | r[3], 0);

    /* NaN and infinities cannot go into an integer. */
    p.type = GW_MODBUS_TYPE_INT32;
    v = gw_value_double(NAN);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 2, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "not a finite number"));
    v = gw_value_double(-INFINITY);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 2, err, sizeof err), GW_EINVAL);

    /* With a scale the message shows the raw value too. */
    p.type = GW_MODBUS_TYPE_UINT16;
    p.scale = 0.1;
    v = gw_value_double(7000);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), GW_ERANGE);
    ck_assert_str_eq(err, "value 7000 out of range for uint16 point plc1/x (raw 70000 not in 0 .. "
                          "65535)");
}
END_TEST

START_TEST(test_modbus_map_min_max)
{
    char err[200];
    uint16_t r[2];
    struct gw_modbus_point p = mkpoint(GW_MODBUS_TYPE_FLOAT32, GW_MODBUS_ORDER_ABCD);
    p.has_min = p.has_max = true;
    p.min = -10;
    p.max = 100;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), 0);
    struct gw_value v = gw_value_double(100.5);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 2, err, sizeof err), GW_ERANGE);
    ck_assert_str_eq(err, "value 100.5 out of range for float32 point plc1/x (min -10, max 100)");
    v = gw_value_int(-11);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 2, err, sizeof err), GW_ERANGE);
    v = gw_value_double(NAN); /* NaN is inside no limits */
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 2, err, sizeof err), GW_ERANGE);
    v = gw_value_int(100);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 2, err, sizeof err), 0);
    v = gw_value_int(-10);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 2, err, sizeof err), 0);
    p.min = 200;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
}
END_TEST

START_TEST(test_modbus_map_access_and_kind_errors)
{
    char err[200];
    uint16_t r[4];
    struct gw_modbus_point p = mkpoint(GW_MODBUS_TYPE_INT16, GW_MODBUS_ORDER_ABCD);
    p.access = GW_MODBUS_ACCESS_READ;
    struct gw_value v = gw_value_int(1);
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 1, err, sizeof err), GW_EREADONLY);
    ck_assert_str_eq(err, "point plc1/x is read-only");
    p.access = GW_MODBUS_ACCESS_READ_WRITE;
    struct gw_value s = gw_value_cstr("12");
    ck_assert_int_eq(gw_modbus_encode(&p, &s, r, 1, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "needs a number"));
    gw_value_fini(&s);
    /* Too little room. */
    p.type = GW_MODBUS_TYPE_INT64;
    ck_assert_int_eq(gw_modbus_encode(&p, &v, r, 3, err, sizeof err), GW_EINVAL);
    ck_assert_int_eq(gw_modbus_decode(&p, r, 3, &v, err, sizeof err), GW_EINVAL);
    ck_assert_int_eq(gw_modbus_decode(&p, NULL, 0, &v, err, sizeof err), GW_EINVAL);
}
END_TEST

/* --- Strings --- */

START_TEST(test_modbus_map_strings)
{
    char err[200];
    struct gw_modbus_point p = mkpoint(GW_MODBUS_TYPE_STRING, GW_MODBUS_ORDER_ABCD);
    p.count = 3;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), 0);
    ck_assert_uint_eq(gw_modbus_point_width(&p), 3);
    uint16_t r[3] = {0xAAAA, 0xAAAA, 0xAAAA};
    struct gw_value s = gw_value_cstr("ABCDE"), v;
    ck_assert_int_eq(gw_modbus_encode(&p, &s, r, 3, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0x4142);
    ck_assert_uint_eq(r[1], 0x4344);
    ck_assert_uint_eq(r[2], 0x4500);
    ck_assert_int_eq(gw_modbus_decode(&p, r, 3, &v, err, sizeof err), 0);
    ck_assert_int_eq(v.type, GW_VALUE_STRING);
    ck_assert_str_eq(v.s.p, "ABCDE");
    ck_assert_uint_eq(v.s.len, 5);
    gw_value_fini(&v);

    p.order = GW_MODBUS_ORDER_BADC; /* low byte first */
    ck_assert_int_eq(gw_modbus_encode(&p, &s, r, 3, err, sizeof err), 0);
    ck_assert_uint_eq(r[0], 0x4241);
    ck_assert_uint_eq(r[1], 0x4443);
    ck_assert_uint_eq(r[2], 0x0045);
    ck_assert_int_eq(gw_modbus_decode(&p, r, 3, &v, err, sizeof err), 0);
    ck_assert_str_eq(v.s.p, "ABCDE");
    gw_value_fini(&v);
    gw_value_fini(&s);

    /* Trailing spaces and NULs are trimmed, leading and inner ones kept. */
    p.order = GW_MODBUS_ORDER_ABCD;
    uint16_t pad[3] = {0x2041, 0x2042, 0x2000};
    ck_assert_int_eq(gw_modbus_decode(&p, pad, 3, &v, err, sizeof err), 0);
    ck_assert_str_eq(v.s.p, " A B");
    gw_value_fini(&v);
    uint16_t empty[3] = {0, 0, 0x2020};
    ck_assert_int_eq(gw_modbus_decode(&p, empty, 3, &v, err, sizeof err), 0);
    ck_assert_uint_eq(v.s.len, 0);
    gw_value_fini(&v);

    /* The empty string writes zeros; a string of 7 bytes does not fit in 3 registers. */
    struct gw_value e = gw_value_cstr("");
    ck_assert_int_eq(gw_modbus_encode(&p, &e, r, 3, err, sizeof err), 0);
    ck_assert_uint_eq(r[0] | r[1] | r[2], 0);
    gw_value_fini(&e);
    struct gw_value l = gw_value_cstr("ABCDEFG");
    ck_assert_int_eq(gw_modbus_encode(&p, &l, r, 3, err, sizeof err), GW_ERANGE);
    ck_assert_str_eq(err, "string of 7 bytes too long for string point plc1/x (6 bytes in 3 "
                          "registers)");
    gw_value_fini(&l);
    struct gw_value n = gw_value_int(3);
    ck_assert_int_eq(gw_modbus_encode(&p, &n, r, 3, err, sizeof err), GW_EINVAL);

    /* Word swaps make no sense for strings; neither do 0 or 126 registers. */
    p.order = GW_MODBUS_ORDER_CDAB;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
    p.order = GW_MODBUS_ORDER_ABCD;
    p.count = 0;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
    p.count = 126;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
}
END_TEST

/* --- Names and addresses --- */

START_TEST(test_modbus_map_names)
{
    char err[200];
    enum gw_modbus_order o;
    struct {
        const char *name;
        enum gw_modbus_order order;
    } orders[] = {
        {"ABCD", GW_MODBUS_ORDER_ABCD},     {"abcdefgh", GW_MODBUS_ORDER_ABCD},
        {"big", GW_MODBUS_ORDER_ABCD},      {"Big-Endian", GW_MODBUS_ORDER_ABCD},
        {"BADC", GW_MODBUS_ORDER_BADC},     {"BADCFEHG", GW_MODBUS_ORDER_BADC},
        {"byte swapped", GW_MODBUS_ORDER_BADC},
        {"CDAB", GW_MODBUS_ORDER_CDAB},     {"GHEFCDAB", GW_MODBUS_ORDER_CDAB},
        {"swapped", GW_MODBUS_ORDER_CDAB},  {"word_swapped", GW_MODBUS_ORDER_CDAB},
        {"DCBA", GW_MODBUS_ORDER_DCBA},     {"HGFEDCBA", GW_MODBUS_ORDER_DCBA},
        {"little", GW_MODBUS_ORDER_DCBA},   {"little-endian", GW_MODBUS_ORDER_DCBA},
        {"low-first", GW_MODBUS_ORDER_BADC}, {"high_first", GW_MODBUS_ORDER_ABCD},
    };
    for (size_t i = 0; i < sizeof orders / sizeof orders[0]; i++) {
        ck_assert_msg(gw_modbus_order_parse(orders[i].name, &o, err, sizeof err) == 0, "%s",
                      orders[i].name);
        ck_assert_int_eq(o, orders[i].order);
    }
    ck_assert_int_eq(gw_modbus_order_parse("ACBD", &o, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "unknown byte order \"ACBD\""));
    ck_assert_int_eq(gw_modbus_order_parse("", &o, err, sizeof err), GW_EINVAL);
    ck_assert_int_eq(gw_modbus_order_parse(NULL, &o, err, sizeof err), GW_EINVAL);

    ck_assert_str_eq(gw_modbus_order_name(GW_MODBUS_ORDER_CDAB, GW_MODBUS_TYPE_FLOAT64),
                     "GHEFCDAB");
    ck_assert_str_eq(gw_modbus_order_name(GW_MODBUS_ORDER_BADC, GW_MODBUS_TYPE_INT32), "BADC");
    ck_assert_str_eq(gw_modbus_order_name(GW_MODBUS_ORDER_DCBA, GW_MODBUS_TYPE_UINT16), "BA");

    enum gw_modbus_type t;
    for (int k = 0; k < GW_MODBUS_TYPE_COUNT; k++) {
        ck_assert_int_eq(gw_modbus_type_parse(gw_modbus_type_name((enum gw_modbus_type)k), &t,
                                              err, sizeof err), 0);
        ck_assert_int_eq(t, k);
    }
    ck_assert_int_eq(gw_modbus_type_parse("FLOAT", &t, err, sizeof err), 0);
    ck_assert_int_eq(t, GW_MODBUS_TYPE_FLOAT32);
    ck_assert_int_eq(gw_modbus_type_parse("int128", &t, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "unknown Modbus type \"int128\""));

    enum gw_modbus_table tb;
    ck_assert_int_eq(gw_modbus_table_parse("Holding-Registers", &tb, err, sizeof err), 0);
    ck_assert_int_eq(tb, GW_MODBUS_TABLE_HOLDING);
    ck_assert_int_eq(gw_modbus_table_parse("di", &tb, err, sizeof err), 0);
    ck_assert_int_eq(tb, GW_MODBUS_TABLE_DISCRETE);
    ck_assert_int_eq(gw_modbus_table_parse("register", &tb, err, sizeof err), GW_EINVAL);
    ck_assert_int_eq(gw_modbus_table_function(GW_MODBUS_TABLE_COIL), 1);
    ck_assert_int_eq(gw_modbus_table_function(GW_MODBUS_TABLE_DISCRETE), 2);
    ck_assert_int_eq(gw_modbus_table_function(GW_MODBUS_TABLE_HOLDING), 3);
    ck_assert_int_eq(gw_modbus_table_function(GW_MODBUS_TABLE_INPUT), 4);
}
END_TEST

START_TEST(test_modbus_map_address_notations)
{
    struct {
        const char *s;
        int table_in, base;
        int rc, table_out;
        unsigned addr;
    } cases[] = {
        {"40001", -1, 0, 0, GW_MODBUS_TABLE_HOLDING, 0},
        {"400001", -1, 0, 0, GW_MODBUS_TABLE_HOLDING, 0},
        {"49999", -1, 0, 0, GW_MODBUS_TABLE_HOLDING, 9998},
        {"465536", -1, 1, 0, GW_MODBUS_TABLE_HOLDING, 65535},
        {"410000", -1, 0, 0, GW_MODBUS_TABLE_HOLDING, 9999},
        {"30010", -1, 0, 0, GW_MODBUS_TABLE_INPUT, 9},
        {"10001", -1, 0, 0, GW_MODBUS_TABLE_DISCRETE, 0},
        {"00001", -1, 0, 0, GW_MODBUS_TABLE_COIL, 0},
        {"000100", -1, 0, 0, GW_MODBUS_TABLE_COIL, 99},
        {"40000", -1, 0, GW_ERANGE, -1, 0},
        {"465537", -1, 0, GW_ERANGE, -1, 0},
        {"20001", -1, 0, GW_EINVAL, -1, 0},
        {"100", -1, 0, GW_EINVAL, -1, 0},
        {"4000001", -1, 0, GW_EINVAL, -1, 0},
        /* A configured table: plain numbers, never Modicon notation. */
        {"40001", GW_MODBUS_TABLE_HOLDING, 0, 0, GW_MODBUS_TABLE_HOLDING, 40001},
        {"0", GW_MODBUS_TABLE_HOLDING, 0, 0, GW_MODBUS_TABLE_HOLDING, 0},
        {"65535", GW_MODBUS_TABLE_INPUT, 0, 0, GW_MODBUS_TABLE_INPUT, 65535},
        {"65536", GW_MODBUS_TABLE_INPUT, 0, GW_ERANGE, GW_MODBUS_TABLE_INPUT, 0},
        {"1", GW_MODBUS_TABLE_COIL, 1, 0, GW_MODBUS_TABLE_COIL, 0},
        {"65536", GW_MODBUS_TABLE_COIL, 1, 0, GW_MODBUS_TABLE_COIL, 65535},
        {"0", GW_MODBUS_TABLE_COIL, 1, GW_ERANGE, GW_MODBUS_TABLE_COIL, 0},
        {"65537", GW_MODBUS_TABLE_COIL, 1, GW_ERANGE, GW_MODBUS_TABLE_COIL, 0},
        {"5", GW_MODBUS_TABLE_COIL, 2, GW_EINVAL, GW_MODBUS_TABLE_COIL, 0},
        {"-1", GW_MODBUS_TABLE_HOLDING, 0, GW_EINVAL, GW_MODBUS_TABLE_HOLDING, 0},
        {"12a", GW_MODBUS_TABLE_HOLDING, 0, GW_EINVAL, GW_MODBUS_TABLE_HOLDING, 0},
        {" 12", GW_MODBUS_TABLE_HOLDING, 0, GW_EINVAL, GW_MODBUS_TABLE_HOLDING, 0},
        {"", GW_MODBUS_TABLE_HOLDING, 0, GW_EINVAL, GW_MODBUS_TABLE_HOLDING, 0},
        {"99999999999999999999", GW_MODBUS_TABLE_HOLDING, 0, GW_EINVAL, GW_MODBUS_TABLE_HOLDING,
         0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int table = cases[i].table_in;
        uint16_t addr = 0xBEEF;
        char err[200] = "";
        int rc = gw_modbus_address_parse(cases[i].s, cases[i].base, &table, &addr, err,
                                         sizeof err);
        ck_assert_msg(rc == cases[i].rc, "\"%s\": rc %d, want %d (%s)", cases[i].s, rc,
                      cases[i].rc, err);
        if (rc == 0) {
            ck_assert_msg(table == cases[i].table_out && addr == cases[i].addr,
                          "\"%s\": table %d addr %u", cases[i].s, table, addr);
        } else {
            ck_assert_msg(strstr(err, cases[i].s) != NULL || cases[i].base == 2,
                          "message does not quote the address: %s", err);
        }
    }
    /* The messages explain what to do. */
    int table = -1;
    uint16_t addr;
    char err[200];
    gw_modbus_address_parse("40000", 0, &table, &addr, err, sizeof err);
    ck_assert_str_eq(err, "address \"40000\" out of range: the notation is 1-based, 40001 is the "
                          "first holding and 465536 the last");
}
END_TEST

START_TEST(test_modbus_map_point_check)
{
    char err[200];
    struct gw_modbus_point p = mkpoint(GW_MODBUS_TYPE_FLOAT32, GW_MODBUS_ORDER_ABCD);
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), 0);
    p.table = GW_MODBUS_TABLE_COIL;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
    ck_assert_str_eq(err, "point plc1/x: a coil holds single bits, so its type must be bool, not "
                          "float32");
    p.table = GW_MODBUS_TABLE_INPUT; /* read-write input register */
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "read-only"));
    p.access = GW_MODBUS_ACCESS_READ;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), 0);
    p.address = 65535; /* 2 registers from 65535 */
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "runs past 65535"));
    p.address = 65534;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), 0);
    p.scale = 0;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
    p.scale = NAN;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
    p.scale = 2;
    p.type = GW_MODBUS_TYPE_BOOL;
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
    p.name = NULL; /* unnamed points are named by table and address */
    ck_assert_int_eq(gw_modbus_point_check(&p, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "point input 65534"));
}
END_TEST

static Suite *modbus_map_suite(void)
{
    Suite *s = suite_create("modbus_map");
    int nknown = (int)(sizeof known / sizeof known[0]);
    TCase *tc = tcase_create("types");
    tcase_set_timeout(tc, 30);
    tcase_add_loop_test(tc, test_modbus_map_known_encode, 0, nknown);
    tcase_add_loop_test(tc, test_modbus_map_known_decode, 0, nknown);
    tcase_add_test(tc, test_modbus_map_nan_round_trips);
    tcase_add_test(tc, test_modbus_map_random_registers_round_trip);
    tcase_add_test(tc, test_modbus_map_float32_range);
    tcase_add_test(tc, test_modbus_map_writes_zero_and_false);
    tcase_add_test(tc, test_modbus_map_bit_in_register);
    tcase_add_test(tc, test_modbus_map_strings);
    suite_add_tcase(s, tc);

    tc = tcase_create("scale");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_modbus_map_scale_offset_round_trip);
    tcase_add_test(tc, test_modbus_map_rounds_half_away_from_zero);
    tcase_add_test(tc, test_modbus_map_range_errors);
    tcase_add_test(tc, test_modbus_map_min_max);
    tcase_add_test(tc, test_modbus_map_access_and_kind_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("config");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_modbus_map_names);
    tcase_add_test(tc, test_modbus_map_address_notations);
    tcase_add_test(tc, test_modbus_map_point_check);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(modbus_map_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
