/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Conformance: every vector of tests/data/iotmp/vectors.json that is not marked informative.
 * Varints and PSON v2 values encode to exactly `hex` and decode back to `value`; frames encode to
 * exactly `hex`, and both `hex` and `hex_iotmp_linux` decode (whole, and fed one byte at a time)
 * to the same fields. jansson reads the vector file; the vectors' JSON conventions ($int, $bytes,
 * $double) are interpreted here, not by the gateway's JSON conversion, because they are specific
 * to this file.
 */
#include "gw/error.h"
#include "gw/iotmp.h"
#include "gw/value.h"

#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *vectors;
static int checked_varint, checked_pson, checked_frames, checked_linux_orders, informative;

static size_t unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    ck_assert_uint_le(n, cap);
    for (size_t i = 0; i < n; i++) {
        unsigned b;
        ck_assert_int_eq(sscanf(hex + 2 * i, "%2x", &b), 1);
        out[i] = (uint8_t)b;
    }
    return n;
}

static void tohex(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * n] = '\0';
}

/* The vector's JSON value → gw_value, honouring the file's conventions. source_type "double"
 * means the encoder was handed a double even where JSON shows an integer. */
static void from_json(json_t *j, struct gw_value *out, const char *source_type)
{
    bool as_double = source_type && strcmp(source_type, "double") == 0;
    switch (json_typeof(j)) {
    case JSON_NULL:
        *out = GW_VALUE_INIT_NULL;
        return;
    case JSON_TRUE:
    case JSON_FALSE:
        *out = gw_value_bool(json_is_true(j));
        return;
    case JSON_INTEGER:
        *out = as_double ? gw_value_double((double)json_integer_value(j))
                         : gw_value_int(json_integer_value(j));
        return;
    case JSON_REAL:
        *out = gw_value_double(json_real_value(j));
        return;
    case JSON_STRING:
        *out = gw_value_str(json_string_value(j), json_string_length(j));
        return;
    case JSON_ARRAY: {
        *out = gw_value_array();
        size_t i;
        json_t *e;
        json_array_foreach(j, i, e) from_json(e, gw_value_array_add(out), NULL);
        return;
    }
    case JSON_OBJECT: {
        json_t *special;
        if ((special = json_object_get(j, "$bytes")) && json_object_size(j) == 1) {
            uint8_t buf[4096];
            size_t n = unhex(json_string_value(special), buf, sizeof buf);
            *out = gw_value_bytes(buf, n);
            return;
        }
        if ((special = json_object_get(j, "$int")) && json_object_size(j) == 1) {
            const char *s = json_string_value(special);
            if (s[0] == '-')
                *out = gw_value_int(strtoll(s, NULL, 10));
            else
                *out = gw_value_uint(strtoull(s, NULL, 10));
            return;
        }
        if ((special = json_object_get(j, "$double")) && json_object_size(j) == 1) {
            const char *s = json_string_value(special);
            double d = strcmp(s, "inf") == 0    ? INFINITY
                       : strcmp(s, "-inf") == 0 ? -INFINITY
                       : strcmp(s, "nan") == 0  ? NAN
                                                : strtod(s, NULL);
            *out = gw_value_double(d);
            return;
        }
        *out = gw_value_map();
        const char *key;
        json_t *e;
        json_object_foreach(j, key, e) from_json(e, gw_value_map_set(out, key, strlen(key)), NULL);
        return;
    }
    }
}

static json_t *section(const char *name)
{
    json_t *s = json_object_get(vectors, name);
    ck_assert_msg(json_is_array(s), "vectors.json has no section %s", name);
    return s;
}

START_TEST(test_vectors_varint)
{
    size_t i;
    json_t *v;
    json_array_foreach(section("varints"), i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        struct gw_value val;
        from_json(json_object_get(v, "value"), &val, NULL);
        uint64_t u = val.type == GW_VALUE_UINT ? val.u : (uint64_t)val.i;
        uint8_t out[GW_VARINT_MAX], want[GW_VARINT_MAX];
        size_t n = gw_varint_encode(u, out);
        size_t wn = unhex(json_string_value(json_object_get(v, "hex")), want, sizeof want);
        ck_assert_msg(n == wn && memcmp(out, want, n) == 0, "%s: encoding differs", name);
        ck_assert_uint_eq(gw_varint_size(u), n);
        uint64_t back;
        ck_assert_int_eq(gw_varint_decode(want, wn, &back), (int)wn);
        ck_assert_msg(back == u, "%s: decoded %llu", name, (unsigned long long)back);
        checked_varint++;
    }
}
END_TEST

START_TEST(test_vectors_pson_v2)
{
    size_t i;
    json_t *v;
    json_array_foreach(section("pson_v2"), i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        if (json_is_true(json_object_get(v, "informative"))) {
            informative++;
            continue;
        }
        const char *st = json_string_value(json_object_get(v, "source_type"));
        struct gw_value val, back;
        from_json(json_object_get(v, "value"), &val, st);

        uint8_t out[8192], want[8192];
        char hex[16385];
        struct gw_pson_writer w;
        gw_pson_writer_init(&w, out, sizeof out);
        gw_value_encode(&val, &w);
        ck_assert(gw_pson_writer_ok(&w));
        size_t wn = unhex(json_string_value(json_object_get(v, "hex")), want, sizeof want);
        tohex(out, w.len, hex);
        ck_assert_msg(w.len == wn && memcmp(out, want, wn) == 0, "%s: encoded %s, want %s", name,
                      hex, json_string_value(json_object_get(v, "hex")));

        /* The size-only writer agrees with the real one. */
        struct gw_pson_writer count;
        gw_pson_writer_init(&count, NULL, 0);
        gw_value_encode(&val, &count);
        ck_assert_uint_eq(count.len, wn);

        ck_assert_int_eq(gw_value_decode(want, wn, &back), (int)wn);
        ck_assert_msg(gw_value_equal(&val, &back), "%s: decodes to another value", name);
        gw_value_fini(&back);

        /* [linux] sorts map keys: its bytes decode to the same value. */
        const char *lhex = json_string_value(json_object_get(v, "hex_iotmp_linux"));
        if (lhex) {
            size_t ln = unhex(lhex, want, sizeof want);
            ck_assert_int_eq(gw_value_decode(want, ln, &back), (int)ln);
            ck_assert_msg(gw_value_equal(&val, &back), "%s: linux order differs", name);
            gw_value_fini(&back);
            checked_linux_orders++;
        }
        gw_value_fini(&val);
        checked_pson++;
    }
}
END_TEST

/* Decodes one frame from bytes, in one piece or byte by byte, and checks it has exactly the
 * vector's fields. */
static void check_frame_decode(const char *name, json_t *value, const uint8_t *bytes, size_t n,
                               bool bytewise)
{
    uint8_t buf[4096];
    struct gw_iotmp_reader r;
    gw_iotmp_reader_init(&r, buf, sizeof buf, GW_IOTMP_MAX_FRAME_DEFAULT);
    uint64_t type = 0;
    const uint8_t *body = NULL;
    size_t body_len = 0, used, pos = 0;
    int rc = 0;
    while (pos < n) {
        size_t chunk = bytewise ? 1 : n - pos;
        rc = gw_iotmp_feed(&r, bytes + pos, chunk, &used, &type, &body, &body_len);
        ck_assert_msg(rc >= 0, "%s: feed failed: %s", name, gw_strerror(rc));
        pos += used;
        if (rc == 1)
            break;
    }
    ck_assert_msg(rc == 1 && pos == n, "%s: frame not complete after %zu bytes", name, pos);
    ck_assert_int_eq(type, json_integer_value(json_object_get(value, "type_code")));
    ck_assert_int_eq(body_len, json_integer_value(json_object_get(value, "body_size")));

    struct gw_iotmp_frame f;
    ck_assert_int_eq(gw_iotmp_parse(&f, type, body, body_len), 0);
    json_t *fields = json_object_get(value, "fields"), *fj;
    size_t i;
    uint32_t expected = 0;
    json_array_foreach(fields, i, fj)
    {
        unsigned id = (unsigned)json_integer_value(json_object_get(fj, "id"));
        const char *wire = json_string_value(json_object_get(fj, "wire_type"));
        expected |= 1u << id;
        ck_assert_msg(gw_iotmp_has(&f, id), "%s: field %u missing", name, id);
        struct gw_value want, got;
        from_json(json_object_get(fj, "value"), &want, NULL);
        if (strcmp(wire, "varint") == 0) {
            ck_assert_int_eq(f.field[id].wire, GW_IOTMP_WIRE_VARINT);
            got = gw_value_uint(f.field[id].u);
        } else {
            ck_assert_str_eq(wire, "pson_v2");
            ck_assert_int_eq(f.field[id].wire, GW_IOTMP_WIRE_PSON);
            ck_assert_int_eq(gw_value_decode(f.field[id].p, f.field[id].len, &got),
                             (int)f.field[id].len);
        }
        ck_assert_msg(gw_value_equal(&want, &got), "%s: field %u differs", name, id);
        gw_value_fini(&want);
        gw_value_fini(&got);
    }
    ck_assert_msg(f.present == expected, "%s: unexpected extra fields", name);
}

START_TEST(test_vectors_frames)
{
    size_t i;
    json_t *v;
    json_array_foreach(section("frames"), i, v)
    {
        const char *name = json_string_value(json_object_get(v, "name"));
        if (json_is_true(json_object_get(v, "informative"))) {
            informative++;
            continue;
        }
        json_t *value = json_object_get(v, "value");
        uint8_t buf[4096], want[4096];
        char hex[8193];
        struct gw_iotmp_writer w;
        gw_iotmp_writer_init(&w, buf, sizeof buf,
                             (uint64_t)json_integer_value(json_object_get(value, "type_code")));
        json_t *fj;
        size_t k;
        json_array_foreach(json_object_get(value, "fields"), k, fj)
        {
            unsigned id = (unsigned)json_integer_value(json_object_get(fj, "id"));
            struct gw_value fv;
            from_json(json_object_get(fj, "value"), &fv, NULL);
            if (strcmp(json_string_value(json_object_get(fj, "wire_type")), "varint") == 0)
                gw_iotmp_put_varint(&w, id, fv.type == GW_VALUE_UINT ? fv.u : (uint64_t)fv.i);
            else
                gw_value_encode(&fv, gw_iotmp_put_pson(&w, id));
            gw_value_fini(&fv);
        }
        const uint8_t *frame;
        size_t len;
        ck_assert_int_eq(gw_iotmp_finish(&w, &frame, &len), 0);
        size_t wn = unhex(json_string_value(json_object_get(v, "hex")), want, sizeof want);
        tohex(frame, len, hex);
        ck_assert_msg(len == wn && memcmp(frame, want, wn) == 0, "%s: encoded %s, want %s", name,
                      hex, json_string_value(json_object_get(v, "hex")));
        ck_assert_int_eq(len, json_integer_value(json_object_get(v, "size")));

        check_frame_decode(name, value, want, wn, false);
        check_frame_decode(name, value, want, wn, true);
        const char *lhex = json_string_value(json_object_get(v, "hex_iotmp_linux"));
        if (lhex) {
            size_t ln = unhex(lhex, want, sizeof want);
            check_frame_decode(name, value, want, ln, false);
            check_frame_decode(name, value, want, ln, true);
            checked_linux_orders++;
        }
        checked_frames++;
    }
}
END_TEST

/* All non-informative frames back to back in one buffer, fed in chunks of every size 1..64. */
START_TEST(test_vectors_frames_concatenated)
{
    static uint8_t stream[65536];
    size_t total = 0, count = 0, i;
    json_t *v;
    json_array_foreach(section("frames"), i, v)
    {
        if (json_is_true(json_object_get(v, "informative")))
            continue;
        total += unhex(json_string_value(json_object_get(v, "hex")), stream + total,
                       sizeof stream - total);
        count++;
    }
    for (size_t chunk = 1; chunk <= 64; chunk++) {
        uint8_t buf[4096];
        struct gw_iotmp_reader r;
        gw_iotmp_reader_init(&r, buf, sizeof buf, GW_IOTMP_MAX_FRAME_DEFAULT);
        size_t pos = 0, frames = 0;
        while (pos < total) {
            size_t end = pos + chunk < total ? pos + chunk : total;
            while (pos < end) {
                uint64_t type;
                const uint8_t *body;
                size_t body_len, used;
                int rc = gw_iotmp_feed(&r, stream + pos, end - pos, &used, &type, &body, &body_len);
                ck_assert_int_ge(rc, 0);
                pos += used;
                if (rc == 1) {
                    struct gw_iotmp_frame f;
                    ck_assert_int_eq(gw_iotmp_parse(&f, type, body, body_len), 0);
                    frames++;
                }
            }
        }
        ck_assert_uint_eq(frames, count);
    }
}
END_TEST

static Suite *vectors_suite(void)
{
    Suite *s = suite_create("vectors");
    TCase *tc = tcase_create("vectors");
    tcase_add_test(tc, test_vectors_varint);
    tcase_add_test(tc, test_vectors_pson_v2);
    tcase_add_test(tc, test_vectors_frames);
    tcase_add_test(tc, test_vectors_frames_concatenated);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    json_error_t err;
    vectors = json_load_file(GW_TEST_DATA "/iotmp/vectors.json", 0, &err);
    if (!vectors) {
        fprintf(stderr, "cannot load vectors: %s:%d: %s\n", err.source, err.line, err.text);
        return 1;
    }
    SRunner *sr = srunner_create(vectors_suite());
    /* No fork: the counters below are summed in this process. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    printf("vectors checked: %d varints, %d PSON v2 values, %d frames, %d reference-order "
           "variants; %d informative vectors not required\n",
           checked_varint, checked_pson, checked_frames, checked_linux_orders, informative);
    json_decref(vectors);
    return failed ? 1 : 0;
}
