/* SPDX-License-Identifier: Apache-2.0 */
/*
 * IOTMP framing beyond the conformance vectors: malformed bodies and headers (distinct codes, no
 * read past the input), the max frame size enforced before buffering, unknown fields and wire
 * types, the reader's buffer hand-over, and the writer's order and size checks.
 */
#include "guard.h"

#include "gw/error.h"
#include "gw/iotmp.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void teardown(void)
{
    guard_free_all();
}

static int parse_hex(const char *hex, struct gw_iotmp_frame *f)
{
    size_t n;
    const uint8_t *p = guard_hex(hex, &n);
    return gw_iotmp_parse(f, GW_IOTMP_RUN, p, n);
}

START_TEST(test_iotmp_parse_unknown_wire_type_keeps_earlier_fields)
{
    struct gw_iotmp_frame f;
    /* STREAM_ID 7, then field 3 with wire type 3 (reserved), then bytes that cannot be read */
    ck_assert_int_eq(parse_hex("08 07 1b 00 00", &f), GW_EWIRE);
    ck_assert(gw_iotmp_has(&f, GW_IOTMP_STREAM_ID));
    uint16_t sid;
    ck_assert_int_eq(gw_iotmp_get_stream_id(&f, &sid), 0);
    ck_assert_uint_eq(sid, 7);
    ck_assert(!gw_iotmp_has(&f, GW_IOTMP_PAYLOAD));
    /* PSON v1 (wire type 1) is treated the same way (decision 14.7) */
    ck_assert_int_eq(parse_hex("08 07 19 4a 01 61", &f), GW_EWIRE);
    for (unsigned wire = 3; wire < 8; wire++) {
        char hex[16];
        snprintf(hex, sizeof hex, "%02x 00", 3u << 3 | wire);
        ck_assert_int_eq(parse_hex(hex, &f), GW_EWIRE);
    }
}
END_TEST

START_TEST(test_iotmp_parse_skips_unknown_fields)
{
    struct gw_iotmp_frame f;
    /* field 5 varint, field 6 PSON map, field 20 (two-byte key a0 01) varint, then RESOURCE */
    ck_assert_int_eq(parse_hex("28 07 32 c1 81 61 01 a0 01 05 22 83 6c 65 64", &f), 0);
    ck_assert_uint_eq(f.present, 1u << GW_IOTMP_RESOURCE);
    struct gw_pson_reader r;
    struct gw_pson_item it;
    uint8_t scratch[GW_VARINT_MAX + 1];
    ck_assert_int_eq(gw_iotmp_field_reader(&f, GW_IOTMP_RESOURCE, &r, scratch), 0);
    ck_assert_int_eq(gw_pson_next(&r, &it), 0);
    ck_assert(gw_pson_item_is_str(&it, "led"));
}
END_TEST

START_TEST(test_iotmp_parse_malformed_bodies)
{
    struct gw_iotmp_frame f;
    ck_assert_int_eq(parse_hex("08", &f), GW_ETRUNC);                /* varint value missing */
    ck_assert_int_eq(parse_hex("08 80", &f), GW_ETRUNC);             /* varint cut */
    ck_assert_int_eq(parse_hex("1a", &f), GW_ETRUNC);                /* PSON value missing */
    ck_assert_int_eq(parse_hex("1a 85 61 62", &f), GW_EPSON_LEN);    /* string past the end */
    ck_assert_int_eq(parse_hex("1a 4f", &f), GW_EPSON_TAG);          /* invalid PSON tag */
    ck_assert_int_eq(parse_hex("1a c1 01 01", &f), GW_EPSON_KEY);    /* non-string key */
    ck_assert_int_eq(parse_hex("02 01", &f), GW_EFIELD);             /* field id 0 */
    ck_assert_int_eq(parse_hex("80 80 80 80 80 80 80 80 80 80 01", &f), GW_EVARINT);
}
END_TEST

START_TEST(test_iotmp_parse_last_duplicate_wins_and_any_order)
{
    struct gw_iotmp_frame f;
    ck_assert_int_eq(parse_hex("22 83 6c 65 64 08 01 08 02", &f), 0);
    uint16_t sid;
    ck_assert_int_eq(gw_iotmp_get_stream_id(&f, &sid), 0);
    ck_assert_uint_eq(sid, 2);
}
END_TEST

START_TEST(test_iotmp_stream_id_forms)
{
    struct gw_iotmp_frame f;
    uint16_t sid;
    ck_assert_int_eq(parse_hex("0a 1f 2a", &f), 0); /* stream id as PSON 42 */
    ck_assert_int_eq(gw_iotmp_get_stream_id(&f, &sid), 0);
    ck_assert_uint_eq(sid, 42);
    ck_assert_int_eq(parse_hex("08 80 80 04", &f), 0); /* 65536 */
    ck_assert_int_eq(gw_iotmp_get_stream_id(&f, &sid), GW_ERANGE);
    ck_assert_int_eq(parse_hex("0a 85 68 65 6c 6c 6f", &f), 0); /* a string */
    ck_assert_int_eq(gw_iotmp_get_stream_id(&f, &sid), GW_EPSON_TYPE);
    ck_assert_int_eq(parse_hex("", &f), 0); /* absent → 0 */
    ck_assert_int_eq(gw_iotmp_get_stream_id(&f, &sid), 0);
    ck_assert_uint_eq(sid, 0);
}
END_TEST

/* --- reader --- */

START_TEST(test_iotmp_reader_rejects_body_over_limit_before_buffering)
{
    uint8_t buf[64];
    struct gw_iotmp_reader r;
    gw_iotmp_reader_init(&r, buf, sizeof buf, 1000);
    /* RUN, size 1001 (e9 07), fed one byte at a time: the error comes with the last size byte */
    size_t n;
    const uint8_t *p = guard_hex("06 e9 07 00 00", &n);
    uint64_t type;
    const uint8_t *body;
    size_t body_len, used;
    ck_assert_int_eq(gw_iotmp_feed(&r, p, 1, &used, &type, &body, &body_len), 0);
    ck_assert_int_eq(gw_iotmp_feed(&r, p + 1, 1, &used, &type, &body, &body_len), 0);
    ck_assert_int_eq(gw_iotmp_feed(&r, p + 2, 1, &used, &type, &body, &body_len), GW_EFRAME_SIZE);
    /* exactly the limit is fine */
    gw_iotmp_reader_init(&r, buf, sizeof buf, 1001);
    ck_assert_int_eq(gw_iotmp_feed(&r, p, 3, &used, &type, &body, &body_len), GW_ENOBUFS);
    ck_assert_uint_eq(used, 3);
    ck_assert_uint_eq(gw_iotmp_reader_need(&r), 1001);
    /* the default limit: 256 KiB + 1 is refused */
    gw_iotmp_reader_init(&r, NULL, 0, GW_IOTMP_MAX_FRAME_DEFAULT);
    p = guard_hex("06 81 80 10", &n);
    ck_assert_int_eq(gw_iotmp_feed(&r, p, n, &used, &type, &body, &body_len), GW_EFRAME_SIZE);
}
END_TEST

START_TEST(test_iotmp_reader_rejects_bad_header_varint)
{
    struct gw_iotmp_reader r;
    gw_iotmp_reader_init(&r, NULL, 0, GW_IOTMP_MAX_FRAME_DEFAULT);
    size_t n, used;
    const uint8_t *p = guard_hex("80 80 80 80 80 80 80 80 80 80 80 01", &n);
    uint64_t type;
    const uint8_t *body;
    size_t body_len;
    ck_assert_int_eq(gw_iotmp_feed(&r, p, n, &used, &type, &body, &body_len), GW_EVARINT);
}
END_TEST

START_TEST(test_iotmp_reader_asks_for_buffer)
{
    /* A 40-byte body that arrives in two pieces: no buffer at first, then one is given. */
    uint8_t frame[64];
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, frame, sizeof frame, GW_IOTMP_STREAM_DATA);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 9);
    gw_pson_put_cstr(gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD), "0123456789012345678901234567890123");
    const uint8_t *f;
    size_t len;
    ck_assert_int_eq(gw_iotmp_finish(&w, &f, &len), 0);

    struct gw_iotmp_reader r;
    gw_iotmp_reader_init(&r, NULL, 0, 1024);
    uint64_t type;
    const uint8_t *body;
    size_t body_len, used;
    ck_assert_int_eq(gw_iotmp_feed(&r, f, 10, &used, &type, &body, &body_len), GW_ENOBUFS);
    ck_assert_uint_eq(used, 2); /* the header only */
    uint8_t *buf = malloc(gw_iotmp_reader_need(&r));
    gw_iotmp_reader_set_buffer(&r, buf, gw_iotmp_reader_need(&r));
    ck_assert_int_eq(gw_iotmp_feed(&r, f + 2, 8, &used, &type, &body, &body_len), 0);
    ck_assert_uint_eq(used, 8);
    ck_assert_int_eq(gw_iotmp_feed(&r, f + 10, len - 10, &used, &type, &body, &body_len), 1);
    ck_assert_uint_eq(used, len - 10);
    ck_assert_ptr_eq(body, buf);
    ck_assert_uint_eq(type, GW_IOTMP_STREAM_DATA);
    ck_assert(memcmp(body, f + 2, len - 2) == 0);
    free(buf);
}
END_TEST

START_TEST(test_iotmp_reader_zero_length_and_unknown_type)
{
    struct gw_iotmp_reader r;
    gw_iotmp_reader_init(&r, NULL, 0, 1024);
    size_t n, used;
    /* KEEP_ALIVE, then an unknown type 0x7f with a 1-byte body, then type 200 (varint c8 01) */
    const uint8_t *p = guard_hex("05 00 7f 01 00 c8 01 00", &n);
    uint64_t type;
    const uint8_t *body;
    size_t body_len, pos = 0;
    uint64_t types[3];
    int k = 0;
    while (pos < n) {
        int rc = gw_iotmp_feed(&r, p + pos, n - pos, &used, &type, &body, &body_len);
        ck_assert_int_ge(rc, 0);
        pos += used;
        if (rc == 1)
            types[k++] = type;
    }
    ck_assert_int_eq(k, 3);
    ck_assert_uint_eq(types[0], GW_IOTMP_KEEP_ALIVE);
    ck_assert_uint_eq(types[1], 0x7f);
    ck_assert_uint_eq(types[2], 200);
    ck_assert_str_eq(gw_iotmp_type_name(200), "UNKNOWN");
}
END_TEST

/* --- writer --- */

START_TEST(test_iotmp_writer_rejects_out_of_order_fields)
{
    uint8_t buf[64];
    struct gw_iotmp_writer w;
    const uint8_t *f;
    size_t len;
    gw_iotmp_writer_init(&w, buf, sizeof buf, GW_IOTMP_RUN);
    gw_iotmp_put_varint(&w, GW_IOTMP_PAYLOAD, 1);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 1);
    ck_assert_int_eq(gw_iotmp_finish(&w, &f, &len), GW_EFIELD);
    gw_iotmp_writer_init(&w, buf, sizeof buf, GW_IOTMP_RUN);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 1);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 2);
    ck_assert_int_eq(gw_iotmp_finish(&w, &f, &len), GW_EFIELD);
}
END_TEST

START_TEST(test_iotmp_writer_reports_size_needed)
{
    uint8_t big[256];
    struct gw_iotmp_writer w;
    const uint8_t *f;
    size_t len, need;
    gw_iotmp_writer_init(&w, big, GW_IOTMP_HEADROOM + 4, GW_IOTMP_RUN);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 42);
    gw_pson_put_cstr(gw_iotmp_put_pson(&w, GW_IOTMP_RESOURCE), "temperature");
    ck_assert_int_eq(gw_iotmp_finish(&w, &f, &need), GW_ENOBUFS);
    /* with exactly that much it fits, and is the vector run_with_stream_id */
    gw_iotmp_writer_init(&w, big, need, GW_IOTMP_RUN);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 42);
    gw_pson_put_cstr(gw_iotmp_put_pson(&w, GW_IOTMP_RESOURCE), "temperature");
    ck_assert_int_eq(gw_iotmp_finish(&w, &f, &len), 0);
    ck_assert_uint_eq(len, 17);
    ck_assert(memcmp(f, "\x06\x0f\x08\x2a\x22\x8btemperature", 17) == 0);
    /* a buffer smaller than the headroom is refused, not written */
    gw_iotmp_writer_init(&w, big, 4, GW_IOTMP_KEEP_ALIVE);
    ck_assert_int_eq(gw_iotmp_finish(&w, &f, &len), GW_ENOBUFS);
}
END_TEST

START_TEST(test_iotmp_writer_multibyte_field_key)
{
    uint8_t buf[64];
    struct gw_iotmp_writer w;
    const uint8_t *f;
    size_t len;
    gw_iotmp_writer_init(&w, buf, sizeof buf, GW_IOTMP_RUN);
    gw_iotmp_put_varint(&w, 16, 1);
    ck_assert_int_eq(gw_iotmp_finish(&w, &f, &len), 0);
    ck_assert_uint_eq(len, 5);
    ck_assert(memcmp(f, "\x06\x03\x80\x01\x01", 5) == 0);
}
END_TEST

static Suite *iotmp_suite(void)
{
    Suite *s = suite_create("iotmp");
    TCase *tc = tcase_create("parse");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_iotmp_parse_unknown_wire_type_keeps_earlier_fields);
    tcase_add_test(tc, test_iotmp_parse_skips_unknown_fields);
    tcase_add_test(tc, test_iotmp_parse_malformed_bodies);
    tcase_add_test(tc, test_iotmp_parse_last_duplicate_wins_and_any_order);
    tcase_add_test(tc, test_iotmp_stream_id_forms);
    suite_add_tcase(s, tc);
    tc = tcase_create("reader");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_iotmp_reader_rejects_body_over_limit_before_buffering);
    tcase_add_test(tc, test_iotmp_reader_rejects_bad_header_varint);
    tcase_add_test(tc, test_iotmp_reader_asks_for_buffer);
    tcase_add_test(tc, test_iotmp_reader_zero_length_and_unknown_type);
    suite_add_tcase(s, tc);
    tc = tcase_create("writer");
    tcase_add_test(tc, test_iotmp_writer_rejects_out_of_order_fields);
    tcase_add_test(tc, test_iotmp_writer_reports_size_needed);
    tcase_add_test(tc, test_iotmp_writer_multibyte_field_key);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(iotmp_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
