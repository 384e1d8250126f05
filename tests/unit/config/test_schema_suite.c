/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runs the official JSON Schema Test Suite (Debian's json-schema-test-suite, draft-07 files)
 * against gw_schema in draft-07 mode. Every top-level keyword file is run; a test group is
 * skipped only when its schema uses a remote (non-"#") $ref, which gw_schema refuses by design;
 * the optional/ directory (bignum, ECMA-262 regex, format, ...) is counted as skipped.
 * Any failing case fails the test. Override the directory with GW_SCHEMA_SUITE_DIR.
 * The same runner takes tests/data/config/cases2020.json (suite format, draft 2020-12 keywords
 * the Debian suite lacks); check_cases_oracle.py checks those expectations against Debian's
 * python3-jsonschema, an independent implementation.
 */
#include "gw/schema.h"

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUITE_DIR "/usr/share/json-schema-test-suite/tests/draft7"

struct tally {
    int passed, failed, skipped_remote, skipped_optional, files;
    char report[8192];
    size_t used;
};

static int has_remote_ref(json_t *j)
{
    if (json_is_object(j)) {
        json_t *r = json_object_get(j, "$ref");
        if (json_is_string(r) && json_string_value(r)[0] != '#')
            return 1;
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            if (has_remote_ref(v))
                return 1;
        }
    } else if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (has_remote_ref(json_array_get(j, i)))
                return 1;
        }
    }
    return 0;
}

static void note(struct tally *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(struct tally *t, const char *fmt, ...)
{
    if (t->used + 200 >= sizeof(t->report))
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->report + t->used, sizeof(t->report) - t->used, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->used += (size_t)n < sizeof(t->report) - t->used ? (size_t)n : 0;
}

static int count_tests(json_t *groups)
{
    int n = 0;
    for (size_t g = 0; g < json_array_size(groups); g++)
        n += (int)json_array_size(json_object_get(json_array_get(groups, g), "tests"));
    return n;
}

static void run_file(const char *dir, const char *name, enum gw_schema_dialect dialect,
                     struct tally *t)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    json_error_t err;
    json_t *groups = json_load_file(path, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    ck_assert_msg(groups != NULL, "%s:%d: %s", path, err.line, err.text);
    t->files++;
    for (size_t g = 0; g < json_array_size(groups); g++) {
        json_t *group = json_array_get(groups, g);
        json_t *schema_json = json_object_get(group, "schema");
        json_t *tests = json_object_get(group, "tests");
        const char *gdesc = json_string_value(json_object_get(group, "description"));
        if (has_remote_ref(schema_json)) {
            t->skipped_remote += (int)json_array_size(tests);
            continue;
        }
        struct gw_diag_list diags;
        gw_diag_list_init(&diags);
        struct gw_schema *schema;
        int rc = gw_schema_new(schema_json, dialect, &schema, &diags);
        if (rc < 0) {
            t->failed += (int)json_array_size(tests);
            note(t, "%s: \"%s\": schema refused: %s\n", name, gdesc,
                 diags.n ? diags.items[0].message : "?");
            gw_diag_list_fini(&diags);
            continue;
        }
        for (size_t i = 0; i < json_array_size(tests); i++) {
            json_t *test = json_array_get(tests, i);
            int want = json_is_true(json_object_get(test, "valid"));
            struct gw_diag_list out;
            gw_diag_list_init(&out);
            int got = gw_schema_validate(schema, json_object_get(test, "data"), &out) == 0;
            /* The verdict-only path (no list) must agree with the reporting path. */
            int quick = gw_schema_validate(schema, json_object_get(test, "data"), NULL) == 0;
            if (got == want && quick == want && (got || out.n > 0)) {
                t->passed++;
            } else {
                t->failed++;
                note(t, "%s: \"%s\" / \"%s\": expected %s, got %s (quick %s, %zu diags)\n", name,
                     gdesc, json_string_value(json_object_get(test, "description")),
                     want ? "valid" : "invalid", got ? "valid" : "invalid",
                     quick ? "valid" : "invalid", out.n);
            }
            gw_diag_list_fini(&out);
        }
        gw_schema_free(schema);
        gw_diag_list_fini(&diags);
    }
    json_decref(groups);
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void count_optional(const char *dir, struct tally *t)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0) {
            /* bignum.json has integers beyond 64 bits: read them as reals just to count */
            json_t *groups = json_load_file(
                path, JSON_DECODE_ANY | JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, NULL);
            if (groups)
                t->skipped_optional += count_tests(groups);
            json_decref(groups);
        } else {
            count_optional(path, t);
        }
    }
    closedir(d);
}

START_TEST(test_schema_suite_draft7)
{
    const char *dir = getenv("GW_SCHEMA_SUITE_DIR");
    if (!dir)
        dir = SUITE_DIR;
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "%s not found: install Debian's json-schema-test-suite", dir);
    char *names[256];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 256) {
        size_t len = strlen(e->d_name);
        if (len > 5 && strcmp(e->d_name + len - 5, ".json") == 0)
            names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), name_cmp);
    struct tally t;
    memset(&t, 0, sizeof(t));
    for (size_t i = 0; i < n; i++) {
        run_file(dir, names[i], GW_SCHEMA_DRAFT7, &t);
        free(names[i]);
    }
    char opt[1024];
    snprintf(opt, sizeof(opt), "%s/optional", dir);
    count_optional(opt, &t);
    printf("schema suite: %d cases passed, %d skipped (remote $ref, refused by design: %d; "
           "optional/ bignum, ecmascript-regex, format, ...: %d), %d failed, %d files\n",
           t.passed, t.skipped_remote + t.skipped_optional, t.skipped_remote, t.skipped_optional,
           t.failed, t.files);
    if (t.failed)
        printf("%s", t.report);
    fflush(stdout);
    ck_assert_msg(t.files >= 30, "only %d suite files found in %s", t.files, dir);
    ck_assert_msg(t.failed == 0, "%d suite cases failed:\n%s", t.failed, t.report);
}
END_TEST

START_TEST(test_schema_suite_own_2020_cases)
{
    struct tally t;
    memset(&t, 0, sizeof(t));
    run_file(GW_TEST_DATA "/config", "cases2020.json", GW_SCHEMA_DRAFT2020, &t);
    printf("schema cases2020: %d cases passed, %d failed\n", t.passed, t.failed);
    fflush(stdout);
    ck_assert_int_ge(t.passed, 60);
    ck_assert_msg(t.failed == 0, "%d cases failed:\n%s", t.failed, t.report);
}
END_TEST

static Suite *schema_suite_suite(void)
{
    Suite *s = suite_create("schema_suite");
    TCase *tc = tcase_create("draft7");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_schema_suite_draft7);
    tcase_add_test(tc, test_schema_suite_own_2020_cases);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(schema_suite_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
