/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Modbus adapter's config: schema/adapters/modbus.schema.json loads in our validator and
 * accepts schema/examples/modbus.json, which the adapter's create() accepts too (and builds its
 * resources from, on a real registry); bad configs the schema cannot catch are refused by create()
 * with GW_ECONFIG and a config_error at the right JSON Pointer (overlapping points, addresses out
 * of range, unknown poll group, duplicate unit id, duplicate names, a type the table cannot hold).
 */
#include "modbus_adapter.h"

#include "gw/config.h"
#include "gw/error.h"
#include "gw/json.h"
#include "gw/schema.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCHEMA GW_TEST_DATA "/../../schema/adapters/modbus.schema.json"
#define EXAMPLE GW_TEST_DATA "/../../schema/examples/modbus.json"

static char last_ptr[256], last_msg[512];
static int n_errors;

static void t_log(const struct gw_host *h, int level, const char *fmt, ...)
{
    (void)h;
    (void)level;
    (void)fmt;
}

static void t_config_error(const struct gw_host *h, const char *ptr, const char *fmt, ...)
{
    (void)h;
    va_list ap;
    va_start(ap, fmt);
    if (n_errors++ == 0) {
        snprintf(last_ptr, sizeof last_ptr, "%s", ptr);
        vsnprintf(last_msg, sizeof last_msg, fmt, ap);
    }
    va_end(ap);
}

static int create_from(const char *text, void **st)
{
    n_errors = 0;
    last_ptr[0] = last_msg[0] = 0;
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    ck_assert_msg(j != NULL, "test JSON: %s", e.text);
    struct gw_value v;
    ck_assert_int_eq(gw_json_to_value(j, &v), 0);
    json_decref(j);
    struct gw_host host = {.instance = "plc1", .log = t_log, .config_error = t_config_error};
    int rc = gw_modbus_adapter.create(&host, &v, st);
    gw_value_fini(&v);
    return rc;
}

START_TEST(test_schema_accepts_example)
{
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_schema *schema = NULL;
    ck_assert_int_eq(gw_schema_load(SCHEMA, &schema, &diags), 0);
    struct gw_config_doc *doc = NULL;
    ck_assert_int_eq(gw_config_load(EXAMPLE, &doc, &diags), 0);
    int rc = gw_schema_validate_doc(schema, doc, &diags);
    if (rc != 0) {
        char *s = gw_diag_format(&diags);
        ck_abort_msg("example invalid: %s", s);
    }
    /* A shape error is found by the schema (not by create()). */
    struct gw_config_doc *bad = NULL;
    const char *text = "{\"type\": \"modbus\", \"name\": \"x\", \"connections\": [{\"tcp\": "
                       "{\"host\": \"h\", \"port\": 70000}, \"devices\": [{\"name\": \"d\", "
                       "\"unit\": 1, \"points\": [{\"name\": \"p\", \"address\": 1, "
                       "\"colour\": 1}]}]}]}";
    ck_assert_int_eq(gw_config_parse(text, strlen(text), "bad.json", &bad, &diags), 0);
    size_t before = diags.n;
    ck_assert_int_eq(gw_schema_validate_doc(schema, bad, &diags), GW_ECONFIG);
    ck_assert_uint_ge(diags.n, before + 2); /* port maximum, unknown "colour" */
    gw_config_free(bad);

    /* The adapter accepts the example and registers every point and device. */
    json_t *root = gw_config_root(doc);
    struct gw_value v;
    ck_assert_int_eq(gw_json_to_value(root, &v), 0);
    struct gw_loop *loop;
    struct gw_registry *reg;
    ck_assert_int_eq(gw_loop_new(&loop), 0);
    ck_assert_int_eq(gw_registry_new(loop, &reg), 0);
    struct gw_host host = {.loop = loop, .registry = reg, .instance = "plc1", .log = t_log,
                           .config_error = t_config_error};
    void *st = NULL;
    n_errors = 0;
    ck_assert_int_eq(gw_modbus_adapter.create(&host, &v, &st), 0);
    ck_assert_int_eq(n_errors, 0);
    gw_value_fini(&v);
    /* start() registers resources and starts workers (connecting to hosts that do not exist
     * fails in the background); stop() joins them. */
    ck_assert_int_eq(gw_modbus_adapter.start(st), 0);
    ck_assert_ptr_nonnull(gw_registry_find(reg, "plc1/temperature", 16));
    ck_assert_ptr_nonnull(gw_registry_find(reg, "plc1/boiler", 11));
    ck_assert_ptr_nonnull(gw_registry_find(reg, "plc1/_stats/rs485", 17));
    struct gw_res *sp = gw_registry_find(reg, "plc1/setpoint", 13);
    ck_assert_int_eq(gw_res_fn(sp), GW_FN_INOUT);
    ck_assert_int_eq(gw_res_fn(gw_registry_find(reg, "plc1/pressure", 13)), GW_FN_OUTPUT);
    ck_assert_uint_eq(gw_registry_count(reg), 10 + 2 + 2);
    gw_modbus_adapter.stop(st);
    gw_loop_drain(loop); /* the workers' last posts refer to the registry: run them first */
    gw_registry_remove_owner(reg, st);
    gw_modbus_adapter.destroy(st);
    gw_registry_free(reg);
    gw_loop_free(loop);
    gw_config_free(doc);
    gw_schema_free(schema);
    gw_diag_list_fini(&diags);
}
END_TEST

#define HEAD                                                                                      \
    "{\"type\": \"modbus\", \"name\": \"plc1\", \"connections\": [{\"tcp\": {\"host\": \"h\"}, " \
    "\"devices\": ["
#define TAIL "]}]}"

static void expect_bad(const char *text, const char *ptr, const char *words)
{
    void *st = NULL;
    int rc = create_from(text, &st);
    ck_assert_msg(rc == GW_ECONFIG, "create accepted a bad config (rc %d): %s", rc, text);
    ck_assert_msg(strcmp(last_ptr, ptr) == 0, "pointer '%s', expected '%s' (message: %s)",
                  last_ptr, ptr, last_msg);
    ck_assert_msg(strstr(last_msg, words) != NULL, "message '%s' lacks '%s'", last_msg, words);
}

START_TEST(test_bad_configs_point_at_the_problem)
{
    expect_bad(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"a\", \"address\": \"40001\", \"type\": \"float32\"},"
                    "{\"name\": \"b\", \"address\": \"40002\"}]}" TAIL,
               "/connections/0/devices/0/points/1", "overlaps point \"a\"");
    expect_bad(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"a\", \"address\": \"465537\"}]}" TAIL,
               "/connections/0/devices/0/points/0/address", "465537");
    expect_bad(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"a\", \"table\": \"holding\", \"address\": 65535, "
                    "\"type\": \"float32\"}]}" TAIL,
               "/connections/0/devices/0/points/0", "65535");
    expect_bad(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"a\", \"table\": \"holding\", \"address\": 70000}]}" TAIL,
               "/connections/0/devices/0/points/0/address", "70000");
    expect_bad(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"a\", \"address\": 1, \"table\": \"coil\", "
                    "\"type\": \"int16\"}]}" TAIL,
               "/connections/0/devices/0/points/0", "a");
    expect_bad(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"a\", \"address\": \"40001\", \"poll_group\": \"fast\"}]}" TAIL,
               "/connections/0/devices/0/points/0/poll_group", "unknown poll group \"fast\"");
    expect_bad(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"a\", \"address\": \"40001\"}]},"
                    "{\"name\": \"e\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"b\", \"address\": \"40001\"}]}" TAIL,
               "/connections/0/devices/1/unit", "unit id 1 is already used by device \"d\"");
    expect_bad(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"a\", \"address\": \"40001\"}]},"
                    "{\"name\": \"e\", \"unit\": 2, \"points\": ["
                    "{\"name\": \"a\", \"address\": \"40001\"}]}" TAIL,
               "/connections", "point name \"a\" is used twice");
    expect_bad(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"a\", \"address\": \"30001\", \"access\": \"read-write\"}]}" TAIL,
               "/connections/0/devices/0/points/0", "a");
    /* Two bits of one register are fine; the same bit twice overlaps. */
    void *st = NULL;
    ck_assert_int_eq(create_from(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                                      "{\"name\": \"a\", \"address\": \"40001\", "
                                      "\"type\": \"bit\", \"bit\": 1},"
                                      "{\"name\": \"b\", \"address\": \"40001\", "
                                      "\"type\": \"bit\", \"bit\": 2}]}" TAIL,
                                 &st), 0);
    gw_modbus_adapter.destroy(st);
    expect_bad(HEAD "{\"name\": \"d\", \"unit\": 1, \"points\": ["
                    "{\"name\": \"a\", \"address\": \"40001\", \"type\": \"bit\", \"bit\": 1},"
                    "{\"name\": \"b\", \"address\": \"40001\", \"type\": \"bit\", "
                    "\"bit\": 1}]}" TAIL,
               "/connections/0/devices/0/points/1", "overlaps");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("modbus_config");
    TCase *tc = tcase_create("config");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_schema_accepts_example);
    tcase_add_test(tc, test_bad_configs_point_at_the_problem);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
