/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for JSON <-> gw_value (gw/json.h): types, tagged forms ($bytes, $int, $double),
 * malformed tags, map order, keys with NUL, and a cross-check against the PSON v2 conformance
 * vectors (tests/data/iotmp/vectors.json): the JSON form of every vector, converted with
 * gw_json_to_value() and encoded by the codec, must give the vector's bytes, and the decoded
 * bytes must convert back to JSON and to an equal value.
 */
#include "gw/error.h"
#include "gw/json.h"

#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    ck_assert_msg(j != NULL, "bad test JSON %s: %s", text, err.text);
    return j;
}

static struct gw_value from_text(const char *text)
{
    json_t *j = parse(text);
    struct gw_value v;
    ck_assert_int_eq(gw_json_to_value(j, &v), 0);
    json_decref(j);
    return v;
}

static char *to_text(const struct gw_value *v)
{
    json_t *j = gw_value_to_json(v);
    ck_assert_ptr_nonnull(j);
    char *s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    json_decref(j);
    return s;
}

START_TEST(test_json_scalar_types)
{
    struct gw_value v = from_text("[null, true, false, -5, 7, 2.5, 3.0, \"s\"]");
    ck_assert_int_eq(v.type, GW_VALUE_ARRAY);
    ck_assert_uint_eq(gw_value_count(&v), 8);
    ck_assert_int_eq(v.c.items[0].type, GW_VALUE_NULL);
    ck_assert_int_eq(v.c.items[1].type, GW_VALUE_BOOL);
    ck_assert(v.c.items[1].b);
    ck_assert(!v.c.items[2].b);
    ck_assert_int_eq(v.c.items[3].type, GW_VALUE_INT);
    ck_assert_int_eq(v.c.items[3].i, -5);
    ck_assert_int_eq(v.c.items[4].type, GW_VALUE_INT);
    ck_assert_int_eq(v.c.items[5].type, GW_VALUE_DOUBLE);
    ck_assert_int_eq(v.c.items[6].type, GW_VALUE_DOUBLE); /* 3.0 stays a double */
    ck_assert_int_eq(v.c.items[7].type, GW_VALUE_STRING);
    char *s = to_text(&v);
    ck_assert_str_eq(s, "[null,true,false,-5,7,2.5,3.0,\"s\"]");
    free(s);
    gw_value_fini(&v);
}
END_TEST

START_TEST(test_json_tagged_forms)
{
    struct gw_value v = from_text("{\"b\":{\"$bytes\":\"00FF7f\"},"
                                  "\"u\":{\"$int\":\"18446744073709551615\"},"
                                  "\"n\":{\"$int\":\"-9223372036854775807\"},"
                                  "\"i\":{\"$double\":\"-inf\"},\"z\":{\"$double\":\"-0.0\"}}");
    const struct gw_value *b = gw_value_map_get(&v, "b");
    ck_assert_int_eq(b->type, GW_VALUE_BYTES);
    ck_assert_uint_eq(b->s.len, 3);
    ck_assert_int_eq(memcmp(b->s.p, "\x00\xff\x7f", 3), 0);
    ck_assert_int_eq(gw_value_map_get(&v, "u")->type, GW_VALUE_UINT);
    ck_assert(gw_value_map_get(&v, "u")->u == UINT64_MAX);
    ck_assert_int_eq(gw_value_map_get(&v, "n")->type, GW_VALUE_INT);
    ck_assert(gw_value_map_get(&v, "n")->i == -9223372036854775807LL);
    ck_assert(isinf(gw_value_map_get(&v, "i")->d) && gw_value_map_get(&v, "i")->d < 0);
    ck_assert(signbit(gw_value_map_get(&v, "z")->d));
    char *s = to_text(&v);
    /* bytes lower-case; UINT beyond int64 tagged; -0.0 is a plain JSON real */
    ck_assert_str_eq(s, "{\"b\":{\"$bytes\":\"00ff7f\"},\"u\":{\"$int\":\"18446744073709551615\"},"
                        "\"n\":-9223372036854775807,\"i\":{\"$double\":\"-inf\"},\"z\":-0.0}");
    free(s);
    gw_value_fini(&v);
    struct gw_value nan = gw_value_double(NAN);
    s = to_text(&nan);
    ck_assert_str_eq(s, "{\"$double\":\"nan\"}");
    free(s);
}
END_TEST

START_TEST(test_json_malformed_tags_are_errors)
{
    const char *bad[] = {
        "{\"$bytes\":\"0g\"}", "{\"$bytes\":\"abc\"}", "{\"$int\":\"12x\"}",
        "{\"$int\":\"\"}", "{\"$int\":\"99999999999999999999\"}", "{\"$int\":\"-\"}",
        "{\"$double\":\"big\"}",
        /* the error deep inside a container releases what was already built */
        "[1, \"two\", {\"k\": [{\"$bytes\":\"zz\"}]}]",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *j = parse(bad[i]);
        struct gw_value v = gw_value_int(5);
        ck_assert_msg(gw_json_to_value(j, &v) == GW_EINVAL, "%s accepted", bad[i]);
        ck_assert_int_eq(v.type, GW_VALUE_NULL);
        json_decref(j);
    }
    /* not tagged forms: plain maps */
    struct gw_value v = from_text("{\"$bytes\":1}");
    ck_assert_int_eq(v.type, GW_VALUE_MAP);
    gw_value_fini(&v);
    v = from_text("{\"$bytes\":\"00\",\"x\":1}");
    ck_assert_int_eq(v.type, GW_VALUE_MAP);
    gw_value_fini(&v);
}
END_TEST

START_TEST(test_json_map_order_and_nul_keys)
{
    struct gw_value v = from_text("{\"z\":1,\"a\":2,\"m\":{\"y\":[],\"x\":{}}}");
    ck_assert_uint_eq(gw_value_count(&v), 3);
    ck_assert_str_eq(v.c.keys[0], "z");
    ck_assert_str_eq(v.c.keys[2], "m");
    /* jansson cannot parse a NUL in a key, but it can hold one: value → JSON → value */
    *gw_value_map_set(&v, "k\0y", 3) = gw_value_str("v\0w", 3);
    json_t *j = gw_value_to_json(&v);
    ck_assert_ptr_nonnull(j);
    ck_assert_ptr_nonnull(json_object_getn(j, "k\0y", 3));
    char *s = json_dumps(j, JSON_COMPACT);
    ck_assert_str_eq(s, "{\"z\":1,\"a\":2,\"m\":{\"y\":[],\"x\":{}},\"k\\u0000y\":\"v\\u0000w\"}");
    free(s);
    struct gw_value back;
    ck_assert_int_eq(gw_json_to_value(j, &back), 0);
    ck_assert(gw_value_equal(&back, &v));
    ck_assert_uint_eq(back.c.key_lens[3], 3);
    ck_assert_uint_eq(back.c.items[3].s.len, 3);
    gw_value_fini(&back);
    json_decref(j);
    gw_value_fini(&v);
}
END_TEST

START_TEST(test_json_invalid_utf8_string_gives_null)
{
    struct gw_value arr = gw_value_array();
    *gw_value_array_add(&arr) = gw_value_str("ok", 2);
    *gw_value_array_add(&arr) = gw_value_str("\xff\xfe", 2);
    ck_assert_ptr_null(gw_value_to_json(&arr));
    gw_value_fini(&arr);
    /* the same bytes as BYTES are fine */
    struct gw_value b = gw_value_bytes("\xff\xfe", 2);
    char *s = to_text(&b);
    ck_assert_str_eq(s, "{\"$bytes\":\"fffe\"}");
    free(s);
    gw_value_fini(&b);
}
END_TEST

static int hex_to_bytes(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex) / 2;
    if (n > cap)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned x;
        if (sscanf(hex + 2 * i, "%2x", &x) != 1)
            return -1;
        out[i] = (uint8_t)x;
    }
    return (int)n;
}

START_TEST(test_json_pson_vectors_round_trip)
{
    json_error_t err;
    json_t *root = json_load_file(GW_TEST_DATA "/iotmp/vectors.json", 0, &err);
    ck_assert_msg(root != NULL, "vectors.json: %s", err.text);
    json_t *vecs = json_object_get(root, "pson_v2");
    ck_assert(json_array_size(vecs) > 40);
    int checked = 0;
    for (size_t i = 0; i < json_array_size(vecs); i++) {
        json_t *e = json_array_get(vecs, i);
        const char *name = json_string_value(json_object_get(e, "name"));
        if (json_is_true(json_object_get(e, "informative")))
            continue;
        struct gw_value v;
        ck_assert_msg(gw_json_to_value(json_object_get(e, "value"), &v) == 0, "%s", name);
        uint8_t want[4096], got[4096];
        int wl = hex_to_bytes(json_string_value(json_object_get(e, "hex")), want, sizeof(want));
        ck_assert_int_gt(wl, 0);
        struct gw_pson_writer w;
        gw_pson_writer_init(&w, got, sizeof(got));
        gw_value_encode(&v, &w);
        ck_assert_msg(gw_pson_writer_ok(&w) && w.len == (size_t)wl &&
                          memcmp(got, want, (size_t)wl) == 0,
                      "%s: encoding differs", name);
        /* bytes → value → JSON → value: equal to the vector's value */
        struct gw_value dec, back;
        ck_assert_int_eq(gw_value_decode(want, (size_t)wl, &dec), wl);
        json_t *j = gw_value_to_json(&dec);
        ck_assert_msg(j != NULL, "%s", name);
        ck_assert_int_eq(gw_json_to_value(j, &back), 0);
        ck_assert_msg(gw_value_equal(&back, &v), "%s: JSON round trip changed the value", name);
        json_decref(j);
        gw_value_fini(&v);
        gw_value_fini(&dec);
        gw_value_fini(&back);
        checked++;
    }
    printf("json: %d PSON v2 vectors round-tripped\n", checked);
    ck_assert_int_gt(checked, 40);
    json_decref(root);
}
END_TEST

static Suite *json_suite(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("convert");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_json_scalar_types);
    tcase_add_test(tc, test_json_tagged_forms);
    tcase_add_test(tc, test_json_malformed_tags_are_errors);
    tcase_add_test(tc, test_json_map_order_and_nul_keys);
    tcase_add_test(tc, test_json_invalid_utf8_string_gives_null);
    tcase_add_test(tc, test_json_pson_vectors_round_trip);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(json_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
