/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Varint and PSON v2 beyond the conformance vectors: malformed input (each with its own error
 * code, read from buffers that end at a guard page), the double rules at their edges, the size-only
 * writer, and the pull reader's walk through maps and arrays.
 */
#include "guard.h"

#include "gw/error.h"
#include "gw/pson.h"

#include <check.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Decodes one whole value from hex (guarded) and returns the first error, or 0. */
static int decode_hex(const char *hex)
{
    size_t n;
    const uint8_t *p = guard_hex(hex, &n);
    size_t vlen;
    return gw_pson_value_len(p, n, &vlen);
}

static void teardown(void)
{
    guard_free_all();
}

/* --- varint --- */

START_TEST(test_pson_varint_roundtrip_boundaries)
{
    for (int bit = 0; bit < 64; bit++) {
        uint64_t vals[3] = {(uint64_t)1 << bit, ((uint64_t)1 << bit) - 1, ((uint64_t)1 << bit) + 1};
        for (int k = 0; k < 3; k++) {
            uint8_t buf[GW_VARINT_MAX];
            size_t n = gw_varint_encode(vals[k], buf);
            ck_assert_uint_eq(n, gw_varint_size(vals[k]));
            const uint8_t *g = guard_copy(buf, n);
            uint64_t back;
            ck_assert_int_eq(gw_varint_decode(g, n, &back), (int)n);
            ck_assert_uint_eq(back, vals[k]);
        }
    }
    uint8_t buf[GW_VARINT_MAX];
    ck_assert_uint_eq(gw_varint_encode(UINT64_MAX, buf), 10);
}
END_TEST

START_TEST(test_pson_varint_rejects_truncated)
{
    size_t n;
    uint64_t v;
    const uint8_t *p = guard_hex("80", &n);
    ck_assert_int_eq(gw_varint_decode(p, n, &v), GW_ETRUNC);
    p = guard_hex("ff ff ff ff ff ff ff ff ff", &n); /* 9 continuation bytes, then the end */
    ck_assert_int_eq(gw_varint_decode(p, n, &v), GW_ETRUNC);
    ck_assert_int_eq(gw_varint_decode(p, 0, &v), GW_ETRUNC);
}
END_TEST

START_TEST(test_pson_varint_rejects_overlong)
{
    size_t n;
    uint64_t v;
    /* 11 bytes */
    const uint8_t *p = guard_hex("80 80 80 80 80 80 80 80 80 80 01", &n);
    ck_assert_int_eq(gw_varint_decode(p, n, &v), GW_EVARINT);
    /* 10 bytes whose last carries more than bit 63 */
    p = guard_hex("ff ff ff ff ff ff ff ff ff 02", &n);
    ck_assert_int_eq(gw_varint_decode(p, n, &v), GW_EVARINT);
    /* the largest valid one */
    p = guard_hex("ff ff ff ff ff ff ff ff ff 01", &n);
    ck_assert_int_eq(gw_varint_decode(p, n, &v), 10);
    ck_assert_uint_eq(v, UINT64_MAX);
    /* non-minimal but within 10 bytes: accepted, as the references do */
    p = guard_hex("80 00", &n);
    ck_assert_int_eq(gw_varint_decode(p, n, &v), 2);
    ck_assert_uint_eq(v, 0);
}
END_TEST

/* --- malformed PSON --- */

START_TEST(test_pson_decode_rejects_truncated)
{
    ck_assert_int_eq(decode_hex(""), GW_ETRUNC);
    ck_assert_int_eq(decode_hex("1f"), GW_ETRUNC);          /* escape without its varint */
    ck_assert_int_eq(decode_hex("1f 80"), GW_ETRUNC);       /* varint cut */
    ck_assert_int_eq(decode_hex("40 00 00 bc"), GW_ETRUNC); /* float32 cut */
    ck_assert_int_eq(decode_hex("41 00 00 00 00 00 00 00"), GW_ETRUNC);
    ck_assert_int_eq(decode_hex("e1 1f"), GW_ETRUNC);       /* its only element cut */
    ck_assert_int_eq(decode_hex("c1 81 61"), GW_ETRUNC);    /* map pair without its value */
}
END_TEST

START_TEST(test_pson_decode_rejects_length_past_end)
{
    ck_assert_int_eq(decode_hex("85 68 65 6c 6c"), GW_EPSON_LEN);     /* string 5, 4 bytes */
    ck_assert_int_eq(decode_hex("a4 de ad be"), GW_EPSON_LEN);        /* bytes 4, 3 bytes */
    ck_assert_int_eq(decode_hex("9f ff ff ff ff 0f 61"), GW_EPSON_LEN);
    ck_assert_int_eq(decode_hex("e3 01 02"), GW_EPSON_LEN);           /* 3 elements, 2 bytes */
    ck_assert_int_eq(decode_hex("c2 81 61 01"), GW_EPSON_LEN);        /* 2 pairs need 4+ bytes */
    /* a count of 2^64-1 must be refused at once, not looped over */
    ck_assert_int_eq(decode_hex("ff ff ff ff ff ff ff ff ff ff 01 00"), GW_EPSON_LEN);
}
END_TEST

START_TEST(test_pson_decode_rejects_depth_33)
{
    char hex[1024] = "";
    for (int i = 0; i < 32; i++)
        strcat(hex, "e1");
    strcat(hex, "00");
    ck_assert_int_eq(decode_hex(hex), 0); /* 32 nested arrays: allowed */
    hex[0] = '\0';
    for (int i = 0; i < 33; i++)
        strcat(hex, "e1");
    strcat(hex, "00");
    ck_assert_int_eq(decode_hex(hex), GW_EPSON_DEPTH);
    /* maps count too */
    hex[0] = '\0';
    for (int i = 0; i < 33; i++)
        strcat(hex, "c1 81 61 ");
    strcat(hex, "00");
    ck_assert_int_eq(decode_hex(hex), GW_EPSON_DEPTH);
}
END_TEST

START_TEST(test_pson_decode_rejects_unknown_tags)
{
    int rejected = 0;
    for (unsigned tag = 0; tag < 256; tag++) {
        bool invalid = (tag >= 0x42 && tag <= 0x5f) || (tag >= 0x63 && tag <= 0x7f);
        uint8_t in[16] = {(uint8_t)tag};
        memset(in + 1, 0, sizeof in - 1);
        const uint8_t *p = guard_copy(in, sizeof in);
        size_t vlen;
        int rc = gw_pson_value_len(p, sizeof in, &vlen);
        if (invalid) {
            ck_assert_msg(rc == GW_EPSON_TAG, "tag %02x gave %s", tag, gw_strerror_name(rc));
            rejected++;
        } else {
            ck_assert_msg(rc != GW_EPSON_TAG, "valid tag %02x rejected", tag);
        }
    }
    ck_assert_int_eq(rejected, 30 + 29);
}
END_TEST

START_TEST(test_pson_decode_rejects_non_string_key)
{
    ck_assert_int_eq(decode_hex("c1 01 01"), GW_EPSON_KEY);   /* integer key */
    ck_assert_int_eq(decode_hex("c1 a1 61 01"), GW_EPSON_KEY); /* bytes key */
    ck_assert_int_eq(decode_hex("c1 c0 01"), GW_EPSON_KEY);   /* map as key */
}
END_TEST

START_TEST(test_pson_decode_rejects_negative_beyond_int64)
{
    ck_assert_int_eq(decode_hex("3f 81 80 80 80 80 80 80 80 80 01"), GW_EPSON_RANGE);
    ck_assert_int_eq(decode_hex("3f 80 80 80 80 80 80 80 80 80 01"), 0); /* INT64_MIN */
}
END_TEST

START_TEST(test_pson_error_codes_are_distinct)
{
    int codes[] = {GW_ETRUNC, GW_EVARINT, GW_EPSON_TAG, GW_EPSON_LEN, GW_EPSON_DEPTH,
                   GW_EPSON_KEY, GW_EPSON_RANGE, GW_EFRAME_SIZE, GW_EWIRE};
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_lt(codes[i], 0);
        ck_assert_str_ne(gw_strerror(codes[i]), "unknown error");
        for (size_t j = i + 1; j < n; j++)
            ck_assert_int_ne(codes[i], codes[j]);
    }
}
END_TEST

/* Every input of up to 3 bytes: the decoder returns (0 or an error) without touching the guard. */
START_TEST(test_pson_decode_all_short_inputs)
{
    uint8_t in[3];
    const uint8_t *p;
    for (unsigned a = 0; a < 256; a++) {
        in[0] = (uint8_t)a;
        for (unsigned b = 0; b < 256; b++) {
            in[1] = (uint8_t)b;
            size_t vlen;
            p = guard_copy(in, 2);
            int rc = gw_pson_value_len(p, 2, &vlen);
            ck_assert(rc <= 0);
            if (rc == 0)
                ck_assert_uint_le(vlen, 2);
            guard_free_all();
        }
    }
}
END_TEST

/* --- encoder --- */

static size_t enc_double(double d, uint8_t *out)
{
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, out, 16);
    gw_pson_put_double(&w, d);
    ck_assert(gw_pson_writer_ok(&w));
    return w.len;
}

START_TEST(test_pson_double_edges)
{
    uint8_t o[16];
    ck_assert_uint_eq(enc_double(NAN, o), 9);
    ck_assert_uint_eq(o[0], 0x41);
    ck_assert_uint_eq(enc_double(INFINITY, o), 5);
    ck_assert(memcmp(o, "\x40\x00\x00\x80\x7f", 5) == 0);
    ck_assert_uint_eq(enc_double(-INFINITY, o), 5);
    ck_assert(memcmp(o, "\x40\x00\x00\x80\xff", 5) == 0);
    /* 2^63 is outside int64: the references' cast is undefined there; we send float32 (exact). */
    ck_assert_uint_eq(enc_double(9223372036854775808.0, o), 5);
    ck_assert_uint_eq(o[0], 0x40);
    /* -2^63 is INT64_MIN: an integer with magnitude 2^63 */
    ck_assert_uint_eq(enc_double(-9223372036854775808.0, o), 11);
    ck_assert_uint_eq(o[0], 0x3f);
    /* beyond float range and not integral-representable as int64: float64, no UB cast to float */
    ck_assert_uint_eq(enc_double(1e300, o), 9);
    ck_assert_uint_eq(enc_double(-1e39, o), 9);
    /* FLT_MAX is integral but above 2^63, and exact in float: float32 */
    ck_assert_uint_eq(enc_double(FLT_MAX, o), 5);
}
END_TEST

START_TEST(test_pson_writer_counts_past_capacity)
{
    /* The writer's buffer ends at a guard page: writing past cap would crash. */
    const uint8_t *g = guard_copy("\0\0\0\0", 4);
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, (void *)g, 4);
    gw_pson_put_cstr(&w, "hello world");
    ck_assert(!gw_pson_writer_ok(&w));
    ck_assert_uint_eq(w.len, 12);
    struct gw_pson_writer count;
    gw_pson_writer_init(&count, NULL, 0);
    gw_pson_put_map(&count, 1);
    gw_pson_put_cstr(&count, "temperature");
    gw_pson_put_double(&count, 23.5);
    ck_assert_uint_eq(count.len, 1 + 12 + 5);
}
END_TEST

START_TEST(test_pson_int_encoding)
{
    uint8_t o[16];
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, o, sizeof o);
    gw_pson_put_int(&w, INT64_MIN);
    ck_assert_uint_eq(w.len, 11);
    struct gw_pson_reader r;
    struct gw_pson_item it;
    gw_pson_reader_init(&r, o, w.len);
    ck_assert_int_eq(gw_pson_next(&r, &it), 0);
    ck_assert_int_eq(it.kind, GW_PSON_INT);
    ck_assert(it.i == INT64_MIN);
}
END_TEST

/* --- pull reader --- */

START_TEST(test_pson_reader_walks_nested)
{
    /* {"data":{"temp":22.5,"hum":55},"list":[1,"x"]} */
    uint8_t buf[128];
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_pson_put_map(&w, 2);
    gw_pson_put_cstr(&w, "data");
    gw_pson_put_map(&w, 2);
    gw_pson_put_cstr(&w, "temp");
    gw_pson_put_double(&w, 22.5);
    gw_pson_put_cstr(&w, "hum");
    gw_pson_put_uint(&w, 55);
    gw_pson_put_cstr(&w, "list");
    gw_pson_put_array(&w, 2);
    gw_pson_put_uint(&w, 1);
    gw_pson_put_cstr(&w, "x");
    ck_assert(gw_pson_writer_ok(&w));

    const uint8_t *g = guard_copy(buf, w.len);
    struct gw_pson_reader r;
    struct gw_pson_item it;
    gw_pson_reader_init(&r, g, w.len);
    enum gw_pson_kind want[] = {GW_PSON_MAP,  GW_PSON_MAP,   GW_PSON_DOUBLE, GW_PSON_UINT,
                                GW_PSON_END,  GW_PSON_ARRAY, GW_PSON_UINT,   GW_PSON_STRING,
                                GW_PSON_END,  GW_PSON_END};
    const char *keys[] = {NULL, "data", "temp", "hum", NULL, "list", NULL, NULL, NULL, NULL};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        ck_assert_int_eq(gw_pson_next(&r, &it), 0);
        ck_assert_int_eq(it.kind, want[i]);
        if (keys[i])
            ck_assert(gw_pson_item_key_is(&it, keys[i]));
        else
            ck_assert_ptr_null(it.key);
    }
    ck_assert_int_eq(gw_pson_next(&r, &it), GW_EPSON_END);

    /* skip the inner map and land on "list" */
    gw_pson_reader_init(&r, g, w.len);
    ck_assert_int_eq(gw_pson_next(&r, &it), 0);
    ck_assert_int_eq(gw_pson_next(&r, &it), 0);
    ck_assert_int_eq(gw_pson_skip(&r, &it), 0);
    ck_assert_int_eq(gw_pson_next(&r, &it), 0);
    ck_assert(gw_pson_item_key_is(&it, "list"));
}
END_TEST

START_TEST(test_pson_item_conversions)
{
    struct gw_pson_item it = {.kind = GW_PSON_DOUBLE, .d = 3.0};
    int64_t i;
    uint64_t u;
    ck_assert_int_eq(gw_pson_item_to_int64(&it, &i), 0);
    ck_assert_int_eq(i, 3);
    it.d = 3.5;
    ck_assert_int_eq(gw_pson_item_to_int64(&it, &i), GW_ERANGE);
    it.d = NAN;
    ck_assert_int_eq(gw_pson_item_to_uint64(&it, &u), GW_ERANGE);
    it = (struct gw_pson_item){.kind = GW_PSON_INT, .i = -1};
    ck_assert_int_eq(gw_pson_item_to_uint64(&it, &u), GW_ERANGE);
    it = (struct gw_pson_item){.kind = GW_PSON_UINT, .u = UINT64_MAX};
    ck_assert_int_eq(gw_pson_item_to_int64(&it, &i), GW_ERANGE);
    it = (struct gw_pson_item){.kind = GW_PSON_STRING};
    double d;
    ck_assert_int_eq(gw_pson_item_to_double(&it, &d), GW_EPSON_TYPE);
}
END_TEST

static Suite *pson_suite(void)
{
    Suite *s = suite_create("pson");
    TCase *tc = tcase_create("varint");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_pson_varint_roundtrip_boundaries);
    tcase_add_test(tc, test_pson_varint_rejects_truncated);
    tcase_add_test(tc, test_pson_varint_rejects_overlong);
    suite_add_tcase(s, tc);

    tc = tcase_create("decode");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_pson_decode_rejects_truncated);
    tcase_add_test(tc, test_pson_decode_rejects_length_past_end);
    tcase_add_test(tc, test_pson_decode_rejects_depth_33);
    tcase_add_test(tc, test_pson_decode_rejects_unknown_tags);
    tcase_add_test(tc, test_pson_decode_rejects_non_string_key);
    tcase_add_test(tc, test_pson_decode_rejects_negative_beyond_int64);
    tcase_add_test(tc, test_pson_error_codes_are_distinct);
    tcase_add_test(tc, test_pson_decode_all_short_inputs);
    tcase_add_test(tc, test_pson_reader_walks_nested);
    tcase_add_test(tc, test_pson_item_conversions);
    suite_add_tcase(s, tc);

    tc = tcase_create("encode");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_pson_double_edges);
    tcase_add_test(tc, test_pson_writer_counts_past_capacity);
    tcase_add_test(tc, test_pson_int_encoding);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(pson_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
