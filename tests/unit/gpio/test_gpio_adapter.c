/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GPIO adapter through its gw_adapter_ops on a real loop and registry, on a machine without
 * the lines it names (this build host has no GPIO chip; the kernel-backed behaviour is tested in
 * the VM, tests/integration/gpio): config errors reach host->config_error with their pointers;
 * start() with a missing chip and a missing line name keeps the instance up, and every call into
 * those lines fails with a sentence naming the chip or line; writing an input resource and a
 * malformed output value are refused before any I/O; DESCRIBE carries the configured samples
 * and source. The schema and the example config are checked with our own validator.
 */
#include "gpio.h"

#include "gw/config.h"
#include "gw/error.h"
#include "gw/json.h"
#include "gw/loop.h"
#include "gw/registry.h"
#include "gw/schema.h"

#include "gw_test_call.h"

#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct gw_loop *loop;
static struct gw_registry *reg;
static char cfg_errs[4096];
static char logs[8192];

static void host_log(const struct gw_host *host, int level, const char *fmt, ...)
{
    (void)host;
    (void)level;
    va_list ap;
    va_start(ap, fmt);
    size_t len = strlen(logs);
    vsnprintf(logs + len, sizeof logs - len, fmt, ap);
    va_end(ap);
    len = strlen(logs);
    snprintf(logs + len, sizeof logs - len, "\n");
}

static void host_config_error(const struct gw_host *host, const char *pointer, const char *fmt, ...)
{
    (void)host;
    va_list ap;
    size_t len = strlen(cfg_errs);
    snprintf(cfg_errs + len, sizeof cfg_errs - len, "%s: ", pointer);
    len = strlen(cfg_errs);
    va_start(ap, fmt);
    vsnprintf(cfg_errs + len, sizeof cfg_errs - len, fmt, ap);
    va_end(ap);
    len = strlen(cfg_errs);
    snprintf(cfg_errs + len, sizeof cfg_errs - len, "\n");
}

static struct gw_host host;

static void setup(void)
{
    ck_assert_int_eq(gw_loop_new(&loop), 0);
    ck_assert_int_eq(gw_registry_new(loop, &reg), 0);
    host = (struct gw_host){.loop = loop, .registry = reg, .instance = "t", .file = "t.json",
                            .log = host_log, .config_error = host_config_error};
    cfg_errs[0] = logs[0] = '\0';
}

static void teardown(void)
{
    gw_registry_free(reg);
    gw_loop_free(loop);
}

static int create_text(const char *text, void **state)
{
    struct gw_config_doc *doc;
    ck_assert_int_eq(gw_config_parse(text, strlen(text), "t.json", &doc, NULL), 0);
    struct gw_value v;
    ck_assert_int_eq(gw_json_to_value(gw_config_root(doc), &v), 0);
    int rc = gw_gpio_adapter.create(&host, &v, state);
    gw_value_fini(&v);
    gw_config_free(doc);
    return rc;
}

/* Calls resource name with input (taken; NULL = none) and runs the loop until it answers. */
static struct gw_test_answer call(const char *name, struct gw_value *input)
{
    struct gw_test_answer a = gw_test_call(loop, reg, name, input, 5000);
    ck_assert_msg(a.rc != GW_ERESOURCE, "resource %s not registered", name);
    ck_assert_msg(a.done, "%s: no answer", name);
    return a;
}

START_TEST(test_create_reports_config_errors_with_pointers)
{
    void *state = NULL;
    const char *text = "{\"type\":\"gpio\",\"name\":\"t\",\"lines\":["
                       "{\"name\":\"a\",\"offset\":1,\"direction\":\"input\"},"
                       "{\"name\":\"b\",\"line\":\"L\",\"direction\":\"output\","
                       "\"edge\":\"both\"}]}";
    ck_assert_int_eq(create_text(text, &state), GW_ECONFIG);
    ck_assert_ptr_null(state);
    ck_assert_ptr_nonnull(strstr(cfg_errs, "/lines/0: \"offset\" needs a \"chip\""));
    ck_assert_ptr_nonnull(strstr(cfg_errs, "/lines/1/edge: \"edge\" applies to input lines only"));
}
END_TEST

START_TEST(test_missing_chip_and_line_are_clear_call_errors)
{
    void *state = NULL;
    const char *text =
        "{\"type\":\"gpio\",\"name\":\"t\",\"lines\":["
        "{\"name\":\"in\",\"chip\":\"no-such-chip\",\"offset\":2,\"direction\":\"input\","
        "\"unit\":\"pulses\"},"
        "{\"name\":\"out\",\"chip\":\"no-such-chip\",\"offset\":3,\"direction\":\"output\","
        "\"pulse_ms\":10,\"safe\":false},"
        "{\"name\":\"named\",\"line\":\"no-such-line\",\"direction\":\"input\","
        "\"edge\":\"none\"}]}";
    ck_assert_int_eq(create_text(text, &state), 0);
    ck_assert_int_eq(gw_gpio_adapter.start(state), 0); /* the instance stays up */
    ck_assert_ptr_nonnull(strstr(logs, "0 of 3 lines ready"));
    ck_assert_ptr_nonnull(strstr(logs, "in (/lines/0): GPIO chip 'no-such-chip' not found"));
    ck_assert_uint_eq(gw_registry_count(reg), 5); /* in, in/count, out, out/pulse, named */
    ck_assert_ptr_null(gw_registry_find(reg, "t/named/count", 13)); /* edge none: no counter */

    struct gw_test_answer a = call("t/in", NULL);
    ck_assert_int_eq(a.rc, GW_ENOENT);
    ck_assert_str_eq(a.msg, "gpio t: in: GPIO chip 'no-such-chip' not found (no chip with that "
                            "name, number, label or path)");
    a = call("t/in/count", NULL);
    ck_assert_int_eq(a.rc, GW_ENOENT);
    a = call("t/named", NULL);
    ck_assert_int_eq(a.rc, GW_ENOENT);
    ck_assert_str_eq(a.msg, "gpio t: named: no GPIO line named 'no-such-line' on any chip");

    struct gw_value v = gw_value_bool(true);
    a = call("t/out", &v);
    ck_assert_int_eq(a.rc, GW_ENOENT);
    ck_assert_ptr_nonnull(strstr(a.msg, "gpio t: out: GPIO chip 'no-such-chip' not found"));
    a = call("t/out/pulse", NULL);
    ck_assert_int_eq(a.rc, GW_ENOENT);

    /* Refused before any I/O, whatever the hardware. */
    v = gw_value_bool(true);
    a = call("t/in", &v);
    ck_assert_int_eq(a.rc, GW_EREADONLY);
    ck_assert_str_eq(a.msg, "gpio t: in is an input line; it cannot be written");
    v = gw_value_cstr("on");
    a = call("t/out", &v);
    ck_assert_int_eq(a.rc, GW_EINVAL);
    ck_assert_str_eq(a.msg, "gpio t: out: an output takes true/false or 0/1");
    v = gw_value_int(7);
    a = call("t/out", &v);
    ck_assert_int_eq(a.rc, GW_EINVAL);
    v = gw_value_int(-5);
    a = call("t/out/pulse", &v);
    ck_assert_int_eq(a.rc, GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(a.msg, "input is the pulse length in ms"));
    v = gw_value_double(1.5);
    a = call("t/in/count", &v);
    ck_assert_int_eq(a.rc, GW_EINVAL);

    struct gw_gpio_stats st;
    gw_gpio_adapter_stats(state, "in", &st);
    ck_assert(st.found);
    ck_assert(!st.open);
    gw_gpio_adapter_stats(state, "nope", &st);
    ck_assert(!st.found);

    gw_gpio_adapter.stop(state);
    gw_registry_remove_owner(reg, state);
    ck_assert_uint_eq(gw_registry_count(reg), 0);
    gw_gpio_adapter.destroy(state);
}
END_TEST

/* DESCRIBE-one of an input: the out sample and the meta keys (source, unit). */
START_TEST(test_describe_samples_and_meta)
{
    void *state = NULL;
    const char *text = "{\"type\":\"gpio\",\"name\":\"t\",\"lines\":["
                       "{\"name\":\"meter\",\"chip\":\"gw-sim\",\"offset\":4,"
                       "\"direction\":\"input\","
                       "\"edge\":\"falling\",\"debounce_ms\":5,\"active_low\":true,"
                       "\"unit\":\"pulses\"}]}";
    ck_assert_int_eq(create_text(text, &state), 0);
    ck_assert_int_eq(gw_gpio_adapter.start(state), 0);
    uint8_t buf[1024];
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_one(reg, gw_registry_find(reg, "t/meter", 7), &w);
    ck_assert(gw_pson_writer_ok(&w));
    struct gw_value v;
    ck_assert_int_gt(gw_value_decode(buf, w.len, &v), 0);
    const struct gw_value *src = gw_value_map_get(&v, "source");
    ck_assert_ptr_nonnull(src);
    ck_assert_str_eq(src->s.p, "gw-sim line 4 input active-low debounced");
    ck_assert_str_eq(gw_value_map_get(&v, "unit")->s.p, "pulses");
    ck_assert_int_eq(gw_value_map_get(&v, "out")->type, GW_VALUE_BOOL);
    gw_value_fini(&v);
    gw_gpio_adapter.stop(state);
    gw_registry_remove_owner(reg, state);
    gw_gpio_adapter.destroy(state);
}
END_TEST

/* Our validator accepts the schema and the example, and refuses typical mistakes. */
START_TEST(test_schema_and_example)
{
    struct gw_schema *schema;
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    int rc = gw_schema_load(GW_SOURCE_DIR "/schema/adapters/gpio.schema.json", &schema, &diags);
    if (rc != 0) {
        char *s = gw_diag_format(&diags);
        ck_abort_msg("schema refused: %s", s);
    }
    struct gw_config_doc *doc;
    ck_assert_int_eq(gw_config_load(GW_SOURCE_DIR "/schema/examples/gpio.json", &doc, &diags), 0);
    rc = gw_schema_validate_doc(schema, doc, &diags);
    if (rc != 0) {
        char *s = gw_diag_format(&diags);
        ck_abort_msg("example refused: %s", s);
    }
    gw_config_free(doc);

    static const char *const bad[] = {
        "{\"type\":\"gpio\",\"name\":\"t\",\"lines\":[{\"name\":\"a\",\"offset\":1,"
        "\"direction\":\"input\",\"pul\":\"up\"}]}",
        "{\"type\":\"gpio\",\"name\":\"t\",\"lines\":[{\"name\":\"a\",\"offset\":1,"
        "\"direction\":\"input\",\"bias\":\"up\"}]}",
        "{\"type\":\"gpio\",\"name\":\"t\",\"lines\":[]}",
        "{\"type\":\"modbus\",\"name\":\"t\",\"lines\":[{\"name\":\"a\",\"direction\":\"input\"}]}",
        "{\"type\":\"gpio\",\"name\":\"t/x\",\"lines\":[{\"name\":\"a\",\"direction\":\"input\"}]}",
        "{\"type\":\"gpio\",\"name\":\"t\",\"lines\":[{\"name\":\"a\",\"offset\":-1,"
        "\"direction\":\"output\"}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(gw_config_parse(bad[i], strlen(bad[i]), "bad.json", &doc, NULL), 0);
        gw_diag_list_fini(&diags);
        ck_assert_msg(gw_schema_validate_doc(schema, doc, &diags) == GW_ECONFIG,
                      "bad[%zu] accepted", i);
        ck_assert_uint_gt(diags.n, 0);
        gw_config_free(doc);
    }
    gw_diag_list_fini(&diags);
    gw_schema_free(schema);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("gpio_adapter");
    TCase *tc = tcase_create("host");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_create_reports_config_errors_with_pointers);
    tcase_add_test(tc, test_missing_chip_and_line_are_clear_call_errors);
    tcase_add_test(tc, test_describe_samples_and_meta);
    tcase_add_test(tc, test_schema_and_example);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
