/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MQTT adapter's pure core: filter checks and matching (cross-checked against libmosquitto's
 * own mosquitto_topic_matches_sub on a generated set of filters and topics),
 * test_mqtt_map_templates, JSON Pointer (RFC 6901 examples), payload decoding with every format and
 * coercion, and write payload rendering.
 */
#include "mqtt_map.h"

#include "gw/error.h"

#include <check.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_mqtt_map_filter_check)
{
    size_t lv;
    bool multi, wild;
    const char *why = NULL;
    ck_assert_int_eq(gw_mqtt_filter_check("a/+/c", &lv, &multi, &wild, &why), 0);
    ck_assert_uint_eq(lv, 3);
    ck_assert(!multi && wild);
    ck_assert_int_eq(gw_mqtt_filter_check("a/#", &lv, &multi, &wild, &why), 0);
    ck_assert(multi && wild);
    ck_assert_uint_eq(lv, 2);
    ck_assert_int_eq(gw_mqtt_filter_check("plain/topic", &lv, &multi, &wild, &why), 0);
    ck_assert(!wild);
    ck_assert_int_eq(gw_mqtt_filter_check("a/b#", NULL, NULL, NULL, &why), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(why, "'#'"));
    ck_assert_int_eq(gw_mqtt_filter_check("a/#/c", NULL, NULL, NULL, &why), GW_EINVAL);
    ck_assert_int_eq(gw_mqtt_filter_check("a+/c", NULL, NULL, NULL, &why), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(why, "'+'"));
    ck_assert_int_eq(gw_mqtt_filter_check("", NULL, NULL, NULL, &why), GW_EINVAL);
    ck_assert_int_eq(gw_mqtt_topic_check("a/+", &why), GW_EINVAL);
    ck_assert_int_eq(gw_mqtt_topic_check("a/b", &why), 0);
}
END_TEST

/* Every filter built from a small alphabet against every topic: our matcher and libmosquitto's
 * must agree on all of them. */
START_TEST(test_mqtt_map_match_vs_libmosquitto)
{
    static const char *const lv[] = {"a", "b", "+", "#", "", "$s"};
    static const char *const tl[] = {"a", "b", "", "$s"};
    char filters[2000][32], topics[200][32];
    size_t nf = 0, nt = 0;
    for (size_t n = 1; n <= 3; n++) {
        size_t total = 1;
        for (size_t i = 0; i < n; i++)
            total *= 6;
        for (size_t k = 0; k < total; k++) {
            char f[32] = "";
            size_t x = k;
            for (size_t i = 0; i < n; i++) {
                if (i)
                    strcat(f, "/");
                strcat(f, lv[x % 6]);
                x /= 6;
            }
            const char *why;
            if (gw_mqtt_filter_check(f, NULL, NULL, NULL, &why) == 0 && nf < 2000)
                strcpy(filters[nf++], f);
        }
        total = 1;
        for (size_t i = 0; i < n; i++)
            total *= 4;
        for (size_t k = 0; k < total; k++) {
            char t[32] = "";
            size_t x = k;
            for (size_t i = 0; i < n; i++) {
                if (i)
                    strcat(t, "/");
                strcat(t, tl[x % 4]);
                x /= 4;
            }
            if (*t && nt < 200)
                strcpy(topics[nt++], t);
        }
    }
    ck_assert_uint_gt(nf, 100);
    ck_assert_uint_gt(nt, 50);
    size_t checked = 0, matched = 0;
    for (size_t i = 0; i < nf; i++) {
        for (size_t j = 0; j < nt; j++) {
            bool ref = false;
            if (mosquitto_topic_matches_sub(filters[i], topics[j], &ref) != MOSQ_ERR_SUCCESS)
                continue;
            bool ours = gw_mqtt_topic_match(filters[i], topics[j]);
            if (ours != ref)
                ck_abort_msg("filter \"%s\" topic \"%s\": ours %d, libmosquitto %d", filters[i],
                             topics[j], ours, ref);
            checked++;
            matched += ours;
        }
    }
    printf("match: %zu filter/topic pairs agree with libmosquitto (%zu matches)\n", checked,
           matched);
    ck_assert_uint_gt(matched, 100);
}
END_TEST

START_TEST(test_mqtt_map_templates)
{
    unsigned maxi;
    const char *why;
    char *s;
    ck_assert_int_eq(gw_mqtt_template_check("{2}/temp", &maxi, &why), 0);
    ck_assert_uint_eq(maxi, 2);
    ck_assert_int_eq(gw_mqtt_template_check("fixed", &maxi, &why), 0);
    ck_assert_uint_eq(maxi, 0);
    ck_assert_int_eq(gw_mqtt_template_check("{x}", &maxi, &why), GW_EINVAL);
    ck_assert_int_eq(gw_mqtt_template_check("{0}", &maxi, &why), GW_EINVAL);
    ck_assert_int_eq(gw_mqtt_template_check("a}", &maxi, &why), GW_EINVAL);
    ck_assert_int_eq(gw_mqtt_template_check("{2", &maxi, &why), GW_EINVAL);

    ck_assert_int_eq(gw_mqtt_template_expand("{2}/temperature", "zigbee2mqtt/kitchen", &s), 0);
    ck_assert_str_eq(s, "kitchen/temperature");
    free(s);
    ck_assert_int_eq(gw_mqtt_template_expand("cmnd/{2}/{3}x{{}}", "stat/plug1/POWER", &s), 0);
    ck_assert_str_eq(s, "cmnd/plug1/POWERx{}");
    free(s);
    ck_assert_int_eq(gw_mqtt_template_expand("{1}-{1}", "a", &s), 0);
    ck_assert_str_eq(s, "a-a");
    free(s);
    ck_assert_int_eq(gw_mqtt_template_expand("{4}", "a/b/c", &s), GW_ERANGE);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(gw_mqtt_template_expand("{2}", "a//c", &s), 0);
    ck_assert_str_eq(s, "");
    free(s);
}
END_TEST

START_TEST(test_mqtt_map_json_pointer)
{
    /* RFC 6901 section 5 */
    json_error_t e;
    json_t *doc = json_loads("{\"foo\":[\"bar\",\"baz\"],\"\":0,\"a/b\":1,\"c%d\":2,\"e^f\":3,"
                             "\"g|h\":4,\"i\\\\j\":5,\"k\\\"l\":6,\" \":7,\"m~n\":8}",
                             0, &e);
    ck_assert_ptr_nonnull(doc);
    ck_assert_ptr_eq(gw_mqtt_json_pointer(doc, ""), doc);
    ck_assert_str_eq(json_string_value(gw_mqtt_json_pointer(doc, "/foo/0")), "bar");
    ck_assert_str_eq(json_string_value(gw_mqtt_json_pointer(doc, "/foo/1")), "baz");
    static const char *const ptrs[] = {"/",     "/a~1b", "/c%d", "/e^f", "/g|h",
                                       "/i\\j", "/k\"l", "/ ",   "/m~0n"};
    for (int i = 0; i < 9; i++)
        ck_assert_int_eq(json_integer_value(gw_mqtt_json_pointer(doc, ptrs[i])), i);
    ck_assert_ptr_null(gw_mqtt_json_pointer(doc, "/foo/2"));
    ck_assert_ptr_null(gw_mqtt_json_pointer(doc, "/foo/01"));
    ck_assert_ptr_null(gw_mqtt_json_pointer(doc, "/foo/-"));
    ck_assert_ptr_null(gw_mqtt_json_pointer(doc, "/nope"));
    ck_assert_ptr_null(gw_mqtt_json_pointer(doc, "/m~2n"));
    ck_assert_ptr_null(gw_mqtt_json_pointer(doc, "foo"));
    ck_assert_ptr_null(gw_mqtt_json_pointer(doc, "/foo/0/deeper"));
    json_decref(doc);
}
END_TEST

static int dec(const char *payload, enum gw_mqtt_format f, const char *ptr, enum gw_mqtt_as as,
               struct gw_value *out, char *err)
{
    return gw_mqtt_decode(payload, strlen(payload), f, ptr, as, out, err, 256);
}

START_TEST(test_mqtt_map_decode_formats)
{
    struct gw_value v;
    char err[256];
    /* auto: JSON when it parses */
    ck_assert_int_eq(dec("23.5", GW_MQTT_FMT_AUTO, NULL, GW_MQTT_AS_AUTO, &v, err), 0);
    ck_assert_int_eq(v.type, GW_VALUE_DOUBLE);
    ck_assert_double_eq(v.d, 23.5);
    ck_assert_int_eq(dec("{\"t\":21,\"h\":40}", GW_MQTT_FMT_AUTO, NULL, GW_MQTT_AS_AUTO, &v, err),
                     0);
    ck_assert_int_eq(v.type, GW_VALUE_MAP);
    ck_assert_int_eq(gw_value_map_get(&v, "h")->i, 40);
    gw_value_fini(&v);
    /* auto: text otherwise */
    ck_assert_int_eq(dec("ON", GW_MQTT_FMT_AUTO, NULL, GW_MQTT_AS_AUTO, &v, err), 0);
    ck_assert_int_eq(v.type, GW_VALUE_STRING);
    ck_assert_str_eq(v.s.p, "ON");
    gw_value_fini(&v);
    /* auto with a pointer on text: no field */
    ck_assert_int_eq(dec("ON", GW_MQTT_FMT_AUTO, "/x", GW_MQTT_AS_AUTO, &v, err), GW_ENOENT);
    ck_assert_int_eq(v.type, GW_VALUE_NULL);
    /* json: text refused with jansson's reason and position */
    ck_assert_int_eq(dec("{\"t\": 21,", GW_MQTT_FMT_JSON, NULL, GW_MQTT_AS_AUTO, &v, err),
                     GW_EJSON);
    ck_assert_ptr_nonnull(strstr(err, "not JSON"));
    ck_assert_ptr_nonnull(strstr(err, "at byte"));
    ck_assert_int_eq(gw_mqtt_decode("", 0, GW_MQTT_FMT_JSON, NULL, GW_MQTT_AS_AUTO, &v, err, 256),
                     GW_EJSON);
    /* text: never parsed */
    ck_assert_int_eq(dec("{\"a\":1}", GW_MQTT_FMT_TEXT, NULL, GW_MQTT_AS_AUTO, &v, err), 0);
    ck_assert_int_eq(v.type, GW_VALUE_STRING);
    ck_assert_str_eq(v.s.p, "{\"a\":1}");
    gw_value_fini(&v);
    /* text that is not UTF-8 becomes bytes */
    ck_assert_int_eq(
        gw_mqtt_decode("\xff\x00\x01", 3, GW_MQTT_FMT_TEXT, NULL, GW_MQTT_AS_AUTO, &v, err, 256),
        0);
    ck_assert_int_eq(v.type, GW_VALUE_BYTES);
    ck_assert_uint_eq(v.s.len, 3);
    gw_value_fini(&v);
    /* pointer picks a nested field */
    ck_assert_int_eq(dec("{\"ENERGY\":{\"Power\":[1,2,{\"x\":\"7.5\"}]}}", GW_MQTT_FMT_JSON,
                         "/ENERGY/Power/2/x", GW_MQTT_AS_NUMBER, &v, err),
                     0);
    ck_assert_int_eq(v.type, GW_VALUE_DOUBLE);
    ck_assert_double_eq(v.d, 7.5);
    ck_assert_int_eq(dec("{\"a\":1}", GW_MQTT_FMT_JSON, "/b", GW_MQTT_AS_AUTO, &v, err), GW_ENOENT);
    ck_assert_ptr_nonnull(strstr(err, "/b"));
}
END_TEST

START_TEST(test_mqtt_map_coercions)
{
    struct gw_value v;
    char err[256];
    struct {
        const char *payload;
        enum gw_mqtt_as as;
        int rc;
        enum gw_value_type type;
        double num; /* for numbers and bools */
        const char *str;
    } cases[] = {
        {"\"21.5\"", GW_MQTT_AS_NUMBER, 0, GW_VALUE_DOUBLE, 21.5, NULL},
        {"21", GW_MQTT_AS_NUMBER, 0, GW_VALUE_DOUBLE, 21, NULL},
        {"true", GW_MQTT_AS_NUMBER, 0, GW_VALUE_DOUBLE, 1, NULL},
        {"\"abc\"", GW_MQTT_AS_NUMBER, GW_EINVAL, GW_VALUE_NULL, 0, NULL},
        {"{}", GW_MQTT_AS_NUMBER, GW_EINVAL, GW_VALUE_NULL, 0, NULL},
        {"null", GW_MQTT_AS_NUMBER, GW_EINVAL, GW_VALUE_NULL, 0, NULL},
        {"2.6", GW_MQTT_AS_INTEGER, 0, GW_VALUE_INT, 3, NULL},
        {"-2.5", GW_MQTT_AS_INTEGER, 0, GW_VALUE_INT, -3, NULL},
        {"\" 42 \"", GW_MQTT_AS_INTEGER, 0, GW_VALUE_INT, 42, NULL},
        {"1e300", GW_MQTT_AS_INTEGER, GW_EINVAL, GW_VALUE_NULL, 0, NULL},
        {"\"ON\"", GW_MQTT_AS_BOOL, 0, GW_VALUE_BOOL, 1, NULL},
        {"\"off\"", GW_MQTT_AS_BOOL, 0, GW_VALUE_BOOL, 0, NULL},
        {"\"Yes\"", GW_MQTT_AS_BOOL, 0, GW_VALUE_BOOL, 1, NULL},
        {"0", GW_MQTT_AS_BOOL, 0, GW_VALUE_BOOL, 0, NULL},
        {"0.5", GW_MQTT_AS_BOOL, 0, GW_VALUE_BOOL, 1, NULL},
        {"\"maybe\"", GW_MQTT_AS_BOOL, GW_EINVAL, GW_VALUE_NULL, 0, NULL},
        {"[1]", GW_MQTT_AS_BOOL, GW_EINVAL, GW_VALUE_NULL, 0, NULL},
        {"12", GW_MQTT_AS_STRING, 0, GW_VALUE_STRING, 0, "12"},
        {"0.1", GW_MQTT_AS_STRING, 0, GW_VALUE_STRING, 0, "0.1"},
        {"false", GW_MQTT_AS_STRING, 0, GW_VALUE_STRING, 0, "false"},
        {"{\"a\":[1,true]}", GW_MQTT_AS_STRING, 0, GW_VALUE_STRING, 0, "{\"a\":[1,true]}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = dec(cases[i].payload, GW_MQTT_FMT_JSON, NULL, cases[i].as, &v, err);
        ck_assert_msg(rc == cases[i].rc, "case %zu (%s): rc %d", i, cases[i].payload, rc);
        ck_assert_msg(v.type == cases[i].type, "case %zu: type %d", i, v.type);
        if (rc) {
            ck_assert_msg(strlen(err) > 5, "case %zu: no reason", i);
            continue;
        }
        if (v.type == GW_VALUE_DOUBLE)
            ck_assert_double_eq(v.d, cases[i].num);
        else if (v.type == GW_VALUE_INT)
            ck_assert_int_eq(v.i, (long long)cases[i].num);
        else if (v.type == GW_VALUE_BOOL)
            ck_assert_int_eq(v.b, cases[i].num != 0);
        else
            ck_assert_str_eq(v.s.p, cases[i].str);
        gw_value_fini(&v);
    }
}
END_TEST

static char *enc(const struct gw_value *v, json_t *tmpl, const char *t, const char *f)
{
    struct gw_mqtt_write_fmt fmt = {tmpl, t, f};
    char *out = NULL, err[256];
    size_t len;
    ck_assert_int_eq(gw_mqtt_encode(v, &fmt, &out, &len, err, sizeof err), 0);
    ck_assert_uint_eq(len, strlen(out));
    return out;
}

START_TEST(test_mqtt_map_encode_payloads)
{
    struct gw_value v = gw_value_double(21.5);
    char *s = enc(&v, NULL, NULL, NULL);
    ck_assert_str_eq(s, "21.5");
    free(s);
    v = gw_value_double(0.1);
    s = enc(&v, NULL, NULL, NULL);
    ck_assert_str_eq(s, "0.1");
    free(s);
    v = gw_value_int(-7);
    s = enc(&v, NULL, NULL, NULL);
    ck_assert_str_eq(s, "-7");
    free(s);
    v = gw_value_bool(true);
    s = enc(&v, NULL, "ON", "OFF");
    ck_assert_str_eq(s, "ON");
    free(s);
    v = gw_value_bool(false);
    s = enc(&v, NULL, NULL, NULL);
    ck_assert_str_eq(s, "false");
    free(s);
    v = gw_value_cstr("hello \"x\"");
    s = enc(&v, NULL, NULL, NULL);
    ck_assert_str_eq(s, "hello \"x\"");
    free(s);
    json_error_t e;
    json_t *t = json_loads("{\"state\":\"$value\",\"src\":\"gw\",\"list\":[\"$value\",1]}", 0, &e);
    s = enc(&v, t, NULL, NULL);
    ck_assert_str_eq(
        s, "{\"state\":\"hello \\\"x\\\"\",\"src\":\"gw\",\"list\":[\"hello \\\"x\\\"\",1]}");
    free(s);
    gw_value_fini(&v);
    v = gw_value_double(3.25);
    s = enc(&v, t, NULL, NULL);
    ck_assert_str_eq(s, "{\"state\":3.25,\"src\":\"gw\",\"list\":[3.25,1]}");
    free(s);
    json_decref(t);
    v = gw_value_map();
    *gw_value_map_set(&v, "a", 1) = gw_value_int(1);
    s = enc(&v, NULL, NULL, NULL);
    ck_assert_str_eq(s, "{\"a\":1}");
    free(s);
    gw_value_fini(&v);
    /* a string that is not UTF-8 cannot go into a JSON template */
    v = gw_value_str("\xff", 1);
    t = json_string("$value");
    struct gw_mqtt_write_fmt fmt = {t, NULL, NULL};
    char *out, err[256];
    size_t len;
    ck_assert_int_eq(gw_mqtt_encode(&v, &fmt, &out, &len, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "UTF-8"));
    json_decref(t);
    gw_value_fini(&v);
}
END_TEST

/* Random and JSON-ish payloads through every format, pointer and coercion: only the documented
 * results, the coerced type when it succeeds, a reason when it fails (run under ASan too). */
START_TEST(test_mqtt_map_random_payloads)
{
    static const char *const frags[] = {
        "{",    "}",      "[",       "]",    "\"a\"", ":",      ",",       "1", "-2.5e3", "true",
        "null", "\"on\"", "\\u00e9", "\xff", " ",     "\"x\":", "{\"a\":", "0", "1e999",  "\"\\\""};
    static const char *const ptrs[] = {NULL, "", "/a", "/a/0", "/x", "/0", "/a~1b", "/~"};
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    size_t ok = 0, failed = 0;
    for (int n = 0; n < 20000; n++) {
        char buf[256];
        size_t len = 0;
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        int k = (int)(seed % 12);
        for (int i = 0; i < k; i++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            const char *f = frags[seed % (sizeof frags / sizeof frags[0])];
            size_t fl = strlen(f);
            if (len + fl < sizeof buf) {
                memcpy(buf + len, f, fl);
                len += fl;
            }
        }
        if (n % 3 == 0) /* plain random bytes too */
            for (size_t i = 0; i < len; i++)
                buf[i] = (char)((seed >> (i % 56)) ^ i);
        enum gw_mqtt_format fmt = (enum gw_mqtt_format)(seed % 3);
        enum gw_mqtt_as as = (enum gw_mqtt_as)((seed >> 8) % 5);
        const char *ptr = fmt == GW_MQTT_FMT_TEXT ? NULL : ptrs[(seed >> 16) % 8];
        struct gw_value v;
        char err[256] = "";
        int rc = gw_mqtt_decode(buf, len, fmt, ptr, as, &v, err, sizeof err);
        if (rc == 0) {
            ok++;
            enum gw_value_type want[] = {v.type, GW_VALUE_DOUBLE, GW_VALUE_INT, GW_VALUE_BOOL,
                                         GW_VALUE_STRING};
            ck_assert_msg(v.type == want[as], "payload %d: as %s gave type %d", n,
                          gw_mqtt_as_name(as), v.type);
            gw_value_fini(&v);
        } else {
            failed++;
            ck_assert_msg(rc == GW_EJSON || rc == GW_ENOENT || rc == GW_EINVAL, "rc %d", rc);
            ck_assert_msg(strlen(err) > 5, "payload %d: no reason", n);
            ck_assert_int_eq(v.type, GW_VALUE_NULL);
        }
    }
    printf("random payloads: %zu decoded, %zu refused with a reason\n", ok, failed);
    ck_assert_uint_gt(ok, 1000);
    ck_assert_uint_gt(failed, 1000);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mqtt_map");
    TCase *tc = tcase_create("map");
    tcase_add_test(tc, test_mqtt_map_filter_check);
    tcase_add_test(tc, test_mqtt_map_match_vs_libmosquitto);
    tcase_add_test(tc, test_mqtt_map_templates);
    tcase_add_test(tc, test_mqtt_map_json_pointer);
    tcase_add_test(tc, test_mqtt_map_decode_formats);
    tcase_add_test(tc, test_mqtt_map_coercions);
    tcase_add_test(tc, test_mqtt_map_encode_payloads);
    tcase_add_test(tc, test_mqtt_map_random_payloads);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
