/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the JSON Schema validator (gw/schema.h): the messages and locations of every
 * error in a config with many mistakes, anyOf/oneOf explanations, schemas refused at load
 * (unsupported and unknown keywords, remote $ref, $ref cycles, bad regexes, draft mismatches),
 * and the 2020-12 keywords the draft-07 suite does not cover. Fixtures: tests/data/config/.
 */
#include "gw/error.h"
#include "gw/schema.h"

#include <check.h>
#include <valgrind/valgrind.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DATA GW_TEST_DATA "/config/"

static json_t *parse(const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &err);
    ck_assert_msg(j != NULL, "bad test JSON %s: %s", text, err.text);
    return j;
}

static struct gw_schema *compile_ok(const char *schema_text, enum gw_schema_dialect dialect)
{
    json_t *sj = parse(schema_text);
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_schema *s;
    int rc = gw_schema_new(sj, dialect, &s, &diags);
    ck_assert_msg(rc == 0, "schema %s refused: %s", schema_text,
                  diags.n ? diags.items[0].message : "?");
    json_decref(sj); /* the schema keeps its own reference */
    gw_diag_list_fini(&diags);
    return s;
}

/* Validates and returns the formatted diagnostics ("" when valid); caller frees. */
static char *check_with(const char *schema_text, const char *instance_text,
                        enum gw_schema_dialect dialect)
{
    struct gw_schema *s = compile_ok(schema_text, dialect);
    json_t *inst = parse(instance_text);
    struct gw_diag_list out;
    gw_diag_list_init(&out);
    int rc = gw_schema_validate(s, inst, &out);
    ck_assert_int_eq(rc, out.n ? GW_ECONFIG : 0);
    ck_assert_int_eq(gw_schema_validate(s, inst, NULL), rc); /* verdict-only agrees */
    char *text = gw_diag_format(&out);
    gw_diag_list_fini(&out);
    json_decref(inst);
    gw_schema_free(s);
    return text;
}

static char *check(const char *schema_text, const char *instance_text)
{
    return check_with(schema_text, instance_text, GW_SCHEMA_AUTO);
}

#define ASSERT_CHECK(schema, inst, expected)                                                      \
    do {                                                                                          \
        char *got_ = check((schema), (inst));                                                     \
        ck_assert_str_eq(got_, (expected));                                                       \
        free(got_);                                                                               \
    } while (0)

/* Compiles and expects a refusal; returns the formatted diagnostics. */
static char *refuse(const char *schema_text, enum gw_schema_dialect dialect)
{
    json_t *sj = parse(schema_text);
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_schema *s = (struct gw_schema *)1;
    int rc = gw_schema_new(sj, dialect, &s, &diags);
    ck_assert_msg(rc == GW_ESCHEMA, "schema %s was accepted", schema_text);
    ck_assert_ptr_null(s);
    ck_assert_uint_ge(diags.n, 1);
    char *text = gw_diag_format(&diags);
    gw_diag_list_fini(&diags);
    json_decref(sj);
    return text;
}

#define ASSERT_REFUSED(schema, dialect, expected)                                                 \
    do {                                                                                          \
        char *got_ = refuse((schema), (dialect));                                                 \
        ck_assert_str_eq(got_, (expected));                                                       \
        free(got_);                                                                               \
    } while (0)

/* --- A config with many mistakes: every one reported, in file order --- */

START_TEST(test_schema_reports_every_error_with_position)
{
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_schema *s;
    ck_assert_int_eq(gw_schema_load(DATA "sample.schema.json", &s, &diags), 0);
    ck_assert_int_eq(gw_schema_dialect_get(s), GW_SCHEMA_DRAFT2020);
    struct gw_config_doc *doc;
    ck_assert_int_eq(gw_config_load(DATA "bad.json", &doc, &diags), 0);
    ck_assert_int_eq(gw_schema_validate_doc(s, doc, &diags), GW_ECONFIG);
    char *text = gw_diag_format(&diags);
    const char *f = DATA "bad.json";
    char want[4096];
    snprintf(want, sizeof(want),
             "%s:2:13: /uplink: missing required property \"host\"\n"
             "%s:3:13: /uplink/prot: unknown property \"prot\" (did you mean \"port\"? allowed: "
             "host, port, user, device, keepalive)\n"
             "%s:5:15: /uplink/device: \"gw 1\" does not match the pattern \"^\\w+$\"\n"
             "%s:6:13: /uplink/port: 70000 is greater than the maximum 65535\n"
             "%s:13:34: /adapters/0/points/0/type: \"flaot\" is not one of int16, uint16, int32, "
             "uint32, float, bool\n"
             "%s:14:18: /adapters/0/points/1/name: \"Hum\" does not match the pattern "
             "\"^[a-z][a-z0-9_]*$\"\n"
             "%s:14:50: /adapters/0/points/1/addr: -1 is less than the minimum 0\n"
             "%s:14:63: /adapters/0/points/1/sclae: unknown property \"sclae\" (did you mean "
             "\"scale\"? allowed: name, type, addr, scale)\n"
             "%s:17:5: /adapters/1: missing required property \"broker\"\n"
             "%s:18:14: /adapters/2/type: \"gpio\" is not one of modbus, mqtt\n",
             f, f, f, f, f, f, f, f, f, f);
    ck_assert_str_eq(text, want);
    /* keyword paths are schema locations, through the $refs */
    ck_assert_str_eq(diags.items[0].keyword, "/properties/uplink/required");
    ck_assert_str_eq(diags.items[4].keyword, "/$defs/point/properties/type/enum");
    ck_assert_str_eq(diags.items[9].keyword, "/properties/adapters/items/oneOf");
    free(text);
    gw_config_free(doc);
    gw_diag_list_fini(&diags);

    ck_assert_int_eq(gw_config_load(DATA "good.json", &doc, &diags), 0);
    ck_assert_int_eq(gw_schema_validate_doc(s, doc, &diags), 0);
    ck_assert_uint_eq(diags.n, 0);
    gw_config_free(doc);
    gw_schema_free(s);
}
END_TEST

START_TEST(test_schema_type_and_value_messages)
{
    ASSERT_CHECK("{\"type\":\"integer\"}", "\"12\"",
                 "(root): expected integer, got string \"12\"\n");
    ASSERT_CHECK("{\"type\":[\"string\",\"null\"]}", "5",
                 "(root): expected null or string, got integer 5\n");
    ASSERT_CHECK("{\"type\":\"integer\"}", "1.0", "");  /* integral reals are integers */
    ASSERT_CHECK("{\"type\":\"integer\"}", "1.5", "(root): expected integer, got number 1.5\n");
    ASSERT_CHECK("{\"const\":\"modbus\"}", "\"mqtt\"",
                 "(root): expected \"modbus\", got \"mqtt\"\n");
    ASSERT_CHECK("{\"enum\":[1,\"a b\",null]}", "2", "(root): 2 is not one of 1, \"a b\", null\n");
    ASSERT_CHECK("{\"enum\":[1]}", "1.0", "");
    ASSERT_CHECK("{\"exclusiveMinimum\":0}", "0", "(root): 0 must be greater than 0\n");
    ASSERT_CHECK("{\"exclusiveMaximum\":1.5}", "1.5", "(root): 1.5 must be less than 1.5\n");
    ASSERT_CHECK("{\"multipleOf\":5}", "12", "(root): 12 is not a multiple of 5\n");
    ASSERT_CHECK("{\"multipleOf\":0.01}", "0.07", "");
    ASSERT_CHECK("{\"maximum\":9007199254740993}", "9007199254740992", ""); /* exact int64 */
    ASSERT_CHECK("{\"maximum\":9007199254740992}", "9007199254740993",
                 "(root): 9007199254740993 is greater than the maximum 9007199254740992\n");
}
END_TEST

START_TEST(test_schema_string_length_counts_code_points)
{
    /* "héllo" is 6 bytes, 5 code points; the emoji is 4 bytes, 1 code point */
    ASSERT_CHECK("{\"maxLength\":5}", "\"h\xc3\xa9llo\"", "");
    ASSERT_CHECK("{\"minLength\":2}", "\"\xf0\x9f\x98\x80\"",
                 "(root): string is 1 character long, shorter than the minimum 2\n");
    ASSERT_CHECK("{\"maxLength\":3}", "\"abcd\"",
                 "(root): string is 4 characters long, longer than the maximum 3\n");
}
END_TEST

START_TEST(test_schema_patterns_ecma_subset)
{
    ASSERT_CHECK("{\"pattern\":\"^\\\\d{2,}$\"}", "\"123\"", "");
    ASSERT_CHECK("{\"pattern\":\"^\\\\d{2,}$\"}", "\"1a\"",
                 "(root): \"1a\" does not match the pattern \"^\\d{2,}$\"\n");
    ASSERT_CHECK("{\"pattern\":\"^[\\\\w.-]+$\"}", "\"a_b.c-d\"", "");
    ASSERT_CHECK("{\"pattern\":\"^(?:ab)+?$\"}", "\"abab\"", "");
    ASSERT_CHECK("{\"pattern\":\"\\\\s\"}", "\"nospace\"",
                 "(root): \"nospace\" does not match the pattern \"\\s\"\n");
    ASSERT_CHECK("{\"pattern\":\"b\"}", "\"abc\"", ""); /* unanchored, as in ECMA-262 */
    ASSERT_CHECK("{\"patternProperties\":{\"^x-\":{\"type\":\"string\"}},"
                 "\"additionalProperties\":false}",
                 "{\"x-a\":\"s\",\"x-b\":1,\"y\":2}",
                 "/x-b: expected string, got integer 1\n"
                 "/y: unknown property \"y\" (names matching \"^x-\")\n");
}
END_TEST

START_TEST(test_schema_arrays)
{
    ASSERT_CHECK("{\"uniqueItems\":true}", "[1, 2, 1.0]",
                 "(root): items 0 and 2 are equal (items must be unique)\n");
    ASSERT_CHECK("{\"uniqueItems\":true}", "[{\"a\":1,\"b\":2},{\"b\":2,\"a\":1}]",
                 "(root): items 0 and 1 are equal (items must be unique)\n");
    ASSERT_CHECK("{\"minItems\":2,\"items\":{\"type\":\"string\"}}", "[3]",
                 "/0: expected string, got integer 3\n"
                 "(root): array has 1 item, fewer than the minimum 2\n");
    /* 2020-12 tuples */
    ASSERT_CHECK("{\"prefixItems\":[{\"type\":\"string\"},{\"type\":\"integer\"}],"
                 "\"items\":false}",
                 "[\"a\", \"b\", 3]",
                 "/1: expected integer, got string \"b\"\n"
                 "(root): array has 3 items, at most 2 allowed\n");
    ASSERT_CHECK("{\"contains\":{\"const\":1},\"minContains\":2,\"maxContains\":3}", "[1,2]",
                 "(root): 1 items match the \"contains\" schema, at least 2 required\n");
    ASSERT_CHECK("{\"contains\":{\"const\":1}}", "[2]",
                 "(root): no item matches the \"contains\" schema\n");
}
END_TEST

START_TEST(test_schema_objects)
{
    ASSERT_CHECK("{\"propertyNames\":{\"pattern\":\"^[a-z]+$\"}}", "{\"ok\":1,\"Bad\":2}",
                 "/Bad: property name \"Bad\": \"Bad\" does not match the pattern "
                 "\"^[a-z]+$\"\n");
    ASSERT_CHECK("{\"dependentRequired\":{\"user\":[\"password\"]}}", "{\"user\":\"a\"}",
                 "(root): missing property \"password\", which is required when \"user\" is "
                 "present\n");
    ASSERT_CHECK("{\"dependentSchemas\":{\"tls\":{\"required\":[\"ca\"]}}}", "{\"tls\":true}",
                 "(root): missing required property \"ca\"\n");
    ASSERT_CHECK("{\"minProperties\":1}", "{}",
                 "(root): object has 0 properties, fewer than the minimum 1\n");
    ASSERT_CHECK("{\"properties\":{\"a\":false}}", "{\"a\":1}",
                 "/a: no value is allowed here (the schema is false)\n");
    /* no properties: no "allowed" list */
    ASSERT_CHECK("{\"additionalProperties\":false}", "{\"k\":1}", "/k: unknown property \"k\"\n");
}
END_TEST

START_TEST(test_schema_anyof_oneof_explanations)
{
    /* a type mismatch against every alternative: one line naming what is accepted */
    ASSERT_CHECK("{\"anyOf\":[{\"type\":\"string\"},{\"type\":\"integer\",\"minimum\":0}]}",
                 "[1]", "(root): expected string or integer, got array [1]\n");
    /* otherwise the closest alternative's errors, after one summary line */
    ASSERT_CHECK("{\"anyOf\":[{\"type\":\"string\"},"
                 "{\"type\":\"object\",\"required\":[\"a\",\"b\"]},"
                 "{\"type\":\"object\",\"required\":[\"a\"],\"properties\":{\"a\":{\"type\":"
                 "\"integer\"}}}]}",
                 "{\"a\":\"x\"}",
                 "(root): matches none of the 3 alternatives of anyOf; the closest is alternative "
                 "2, whose errors follow\n"
                 "(root): missing required property \"b\"\n");
    /* more than one match for oneOf */
    ASSERT_CHECK("{\"oneOf\":[{\"type\":\"integer\"},{\"minimum\":0}]}", "3",
                 "(root): matches alternatives 1 and 2 of oneOf; exactly one must match\n");
    /* discriminator present but missing in the instance */
    ASSERT_CHECK("{\"oneOf\":[{\"properties\":{\"kind\":{\"const\":\"a\"}}},"
                 "{\"properties\":{\"kind\":{\"enum\":[\"b\",\"c\"]}}}],"
                 "\"required\":[\"kind\"]}",
                 "{\"kind\":\"d\"}", "/kind: \"d\" is not one of a, b, c\n");
}
END_TEST

START_TEST(test_schema_if_then_else_not_allof)
{
    const char *s = "{\"if\":{\"properties\":{\"tls\":{\"const\":true}},\"required\":[\"tls\"]},"
                    "\"then\":{\"required\":[\"ca\"]},\"else\":{\"not\":{\"required\":[\"ca\"]}},"
                    "\"allOf\":[{\"required\":[\"host\"]},{\"required\":[\"port\"]}]}";
    /* same location: reported in evaluation order (allOf before if/then/else) */
    ASSERT_CHECK(s, "{\"tls\":true}", "(root): missing required property \"host\"\n"
                                      "(root): missing required property \"port\"\n"
                                      "(root): missing required property \"ca\"\n");
    ASSERT_CHECK(s, "{\"tls\":false,\"ca\":\"x\",\"host\":\"h\",\"port\":1}",
                 "(root): must not match the schema at /else/not (\"not\")\n");
    ASSERT_CHECK(s, "{\"host\":\"h\",\"port\":1}", "");
}
END_TEST

START_TEST(test_schema_refs_and_dialects)
{
    /* 2020-12: siblings of $ref apply; draft-07: they are ignored */
    const char *s =
        "{\"$defs\":{\"n\":{\"type\":\"integer\"}},\"$ref\":\"#/$defs/n\",\"minimum\":5}";
    char *got = check_with(s, "3", GW_SCHEMA_DRAFT2020);
    ck_assert_str_eq(got, "(root): 3 is less than the minimum 5\n");
    free(got);
    got = check_with(s, "3", GW_SCHEMA_DRAFT7);
    ck_assert_str_eq(got, "");
    free(got);
    /* $schema picks draft-07 */
    struct gw_schema *sc =
        compile_ok("{\"$schema\":\"http://json-schema.org/draft-07/schema#\",\"items\":[true]}",
                   GW_SCHEMA_AUTO);
    ck_assert_int_eq(gw_schema_dialect_get(sc), GW_SCHEMA_DRAFT7);
    gw_schema_free(sc);
    /* recursive schema through "#" */
    ASSERT_CHECK("{\"type\":\"object\",\"additionalProperties\":{\"$ref\":\"#\"}}",
                 "{\"a\":{\"b\":{\"c\":1}}}", "/a/b/c: expected object, got integer 1\n");
    /* percent-encoded and ~-escaped pointers */
    ASSERT_CHECK("{\"$defs\":{\"a b/c\":{\"type\":\"null\"}},\"$ref\":\"#/$defs/a%20b~1c\"}", "1",
                 "(root): expected null, got integer 1\n");
}
END_TEST

/* Every byte position is mutated; under valgrind (valgrind.unit) every 7th, where the two mutant
 * tests took 90 s: the code paths are the same, the memory checks see them all. */
static size_t mutant_step(void)
{
    return RUNNING_ON_VALGRIND ? 7 : 1;
}

START_TEST(test_schema_mutants_give_located_errors)
{
    /* One-byte changes of a config: whatever parses must validate without crashing, and every
     * error must name an existing instance value and an existing schema location. */
    struct gw_schema *s;
    struct gw_config_doc *sdoc;
    ck_assert_int_eq(gw_schema_load(DATA "sample.schema.json", &s, NULL), 0);
    ck_assert_int_eq(gw_config_load(DATA "sample.schema.json", &sdoc, NULL), 0);
    const char *files[] = {DATA "bad.json", DATA "good.json"};
    const char repl[] = {'0', '-', 'x', '"', '{', '[', ']', '}', ' ', 't'};
    size_t parsed = 0, invalid = 0, diags_seen = 0;
    for (size_t f = 0; f < 2; f++) {
        FILE *fp = fopen(files[f], "rb");
        ck_assert_ptr_nonnull(fp);
        char text[8192], m[8192];
        size_t len = fread(text, 1, sizeof(text), fp);
        fclose(fp);
        for (size_t i = 0; i < len; i += mutant_step()) {
            for (size_t r = 0; r < sizeof(repl); r++) {
                memcpy(m, text, len);
                m[i] = repl[r];
                struct gw_config_doc *doc;
                if (gw_config_parse(m, len, "m.json", &doc, NULL) != 0)
                    continue;
                parsed++;
                struct gw_diag_list out;
                gw_diag_list_init(&out);
                int rc = gw_schema_validate_doc(s, doc, &out);
                ck_assert_int_eq(gw_schema_validate(s, gw_config_root(doc), NULL), rc);
                ck_assert_int_eq(rc, out.n ? GW_ECONFIG : 0);
                invalid += rc != 0;
                for (size_t k = 0; k < out.n; k++) {
                    const struct gw_diag *d = &out.items[k];
                    ck_assert_msg(gw_config_pointer_get(gw_config_root(doc), d->pointer),
                                  "diag pointer %s names no value", d->pointer);
                    ck_assert_msg(gw_config_pointer_get(gw_config_root(sdoc), d->keyword),
                                  "diag keyword %s names no schema location", d->keyword);
                    ck_assert_int_ge(d->line, 1);
                    ck_assert(d->message[0] != '\0');
                    if (k > 0) /* sorted by position */
                        ck_assert(out.items[k - 1].line < d->line ||
                                  (out.items[k - 1].line == d->line &&
                                   out.items[k - 1].col <= d->col));
                }
                diags_seen += out.n;
                gw_diag_list_fini(&out);
                gw_config_free(doc);
            }
        }
    }
    ck_assert_uint_gt(parsed, 200 / mutant_step());
    ck_assert_uint_gt(invalid, 200 / mutant_step());
    ck_assert_uint_gt(diags_seen, invalid);
    gw_config_free(sdoc);
    gw_schema_free(s);
}
END_TEST

START_TEST(test_schema_exponential_alternatives_stop)
{
    /* Two recursive alternatives: naive checking is 2^depth; the work limit stops it. */
    struct gw_schema *s =
        compile_ok("{\"anyOf\":[{\"type\":\"array\",\"items\":{\"$ref\":\"#\"}},"
                   "{\"type\":\"array\",\"items\":{\"$ref\":\"#\"},\"minItems\":0}]}",
                   GW_SCHEMA_AUTO);
    char text[256];
    size_t n = 0;
    for (int i = 0; i < 60; i++)
        text[n++] = '[';
    memcpy(text + n, "\"x\"", 3);
    n += 3;
    for (int i = 0; i < 60; i++)
        text[n++] = ']';
    text[n] = '\0';
    json_t *inst = parse(text);
    struct gw_diag_list out;
    gw_diag_list_init(&out);
    ck_assert_int_eq(gw_schema_validate(s, inst, &out), GW_ECONFIG);
    ck_assert_uint_ge(out.n, 1);
    ck_assert_ptr_nonnull(strstr(out.items[out.n - 1].message, "validation stopped after"));
    gw_diag_list_fini(&out);
    /* a shallow value is still checked normally */
    json_decref(inst);
    inst = parse("[[[]]]");
    ck_assert_int_eq(gw_schema_validate(s, inst, NULL), 0);
    json_decref(inst);
    gw_schema_free(s);
}
END_TEST

/* --- Schemas refused at load --- */

START_TEST(test_schema_refuses_unsupported_keywords_file)
{
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_schema *s = (struct gw_schema *)1;
    ck_assert_int_eq(gw_schema_load(DATA "unsupported.schema.json", &s, &diags), GW_ESCHEMA);
    ck_assert_ptr_null(s);
    gw_diag_list_sort(&diags);
    char *text = gw_diag_format(&diags);
    const char *f = DATA "unsupported.schema.json";
    char want[2048];
    snprintf(want, sizeof(want),
             "%s:4:42: /properties/host/format: unsupported keyword \"format\" (this validator "
             "cannot check it)\n"
             "%s:5:44: /properties/port/maximun: unknown keyword \"maximun\" (did you mean "
             "\"maximum\"?)\n"
             "%s:7:28: /unevaluatedProperties: unsupported keyword \"unevaluatedProperties\" "
             "(this validator cannot check it)\n",
             f, f, f);
    ck_assert_str_eq(text, want);
    free(text);
    gw_diag_list_fini(&diags);
}
END_TEST

START_TEST(test_schema_refuses_bad_schemas)
{
    ASSERT_REFUSED("{\"required\":\"host\"}", GW_SCHEMA_AUTO,
                   "/required: required must be an array of distinct strings\n");
    ASSERT_REFUSED("{\"type\":\"float\"}", GW_SCHEMA_AUTO,
                   "/type: unknown type \"float\" (types are null, boolean, object, array, "
                   "number, string, integer)\n");
    ASSERT_REFUSED("{\"$ref\":\"http://example.com/s.json\"}", GW_SCHEMA_AUTO,
                   "/$ref: $ref \"http://example.com/s.json\" is not supported: only references "
                   "inside this document (\"#\" or \"#/json/pointer\") are\n");
    ASSERT_REFUSED("{\"$ref\":\"#/$defs/none\"}", GW_SCHEMA_AUTO,
                   "/$ref: $ref \"#/$defs/none\" points to nothing in this document\n");
    ASSERT_REFUSED("{\"$ref\":\"#foo\"}", GW_SCHEMA_AUTO,
                   "/$ref: $ref \"#foo\": anchors (\"#name\") are not supported, use a JSON "
                   "Pointer\n");
    ASSERT_REFUSED("{\"$defs\":{\"a\":{\"$ref\":\"#/$defs/b\"},\"b\":{\"anyOf\":[{\"$ref\":"
                   "\"#/$defs/a\"}]}},\"$ref\":\"#/$defs/a\"}",
                   GW_SCHEMA_AUTO,
                   "/$defs/a: $ref cycle: this schema refers back to itself without descending "
                   "into the value\n");
    ASSERT_REFUSED("{\"pattern\":\"(?=a)b\"}", GW_SCHEMA_AUTO,
                   "/pattern: pattern \"(?=a)b\": lookahead, lookbehind and named groups are not "
                   "supported\n");
    ASSERT_REFUSED("{\"pattern\":\"a(b\"}", GW_SCHEMA_AUTO,
                   "/pattern: pattern \"a(b\" is not a supported regular expression: Unmatched ( "
                   "or \\(\n");
    ASSERT_REFUSED("{\"items\":[{\"type\":\"string\"}]}", GW_SCHEMA_DRAFT2020,
                   "/items: items must be a schema in draft 2020-12 (use prefixItems for a "
                   "tuple)\n");
    ASSERT_REFUSED("{\"additionalItems\":false}", GW_SCHEMA_DRAFT2020,
                   "/additionalItems: additionalItems is a draft-07 keyword; in draft 2020-12 use "
                   "prefixItems with items\n");
    ASSERT_REFUSED("{\"$schema\":\"http://json-schema.org/draft-04/schema#\"}", GW_SCHEMA_AUTO,
                   "/$schema: unsupported $schema \"http://json-schema.org/draft-04/schema#\" "
                   "(supported: https://json-schema.org/draft/2020-12/schema, "
                   "http://json-schema.org/draft-07/schema#)\n");
    ASSERT_REFUSED("{\"properties\":{\"a\":{\"minimum\":true}}}", GW_SCHEMA_AUTO,
                   "/properties/a/minimum: minimum must be a number (the draft-04 boolean form "
                   "is not supported)\n");
    ASSERT_REFUSED("{\"multipleOf\":0}", GW_SCHEMA_AUTO,
                   "/multipleOf: multipleOf must be greater than 0\n");
    ASSERT_REFUSED("{\"properties\":{\"a\":3}}", GW_SCHEMA_AUTO,
                   "/properties/a: a schema must be an object or a boolean, not integer\n");
}
END_TEST

START_TEST(test_schema_unknown_member_allowed_only_as_ref_target)
{
    /* "my/defs" is not a keyword, but a $ref target container: accepted */
    ASSERT_CHECK("{\"my/defs\":{\"n\":{\"type\":\"null\"}},\"$ref\":\"#/my~1defs/n\"}", "null",
                 "");
    /* the same member without a reference into it is refused */
    ASSERT_REFUSED("{\"my/defs\":{\"n\":{\"type\":\"null\"}}}", GW_SCHEMA_AUTO,
                   "/my~1defs: unknown keyword \"my/defs\" (did you mean \"$defs\"?)\n");
    ASSERT_REFUSED("{\"x-vendor\":{}}", GW_SCHEMA_AUTO,
                   "/x-vendor: unknown keyword \"x-vendor\" (not a JSON Schema keyword this "
                   "validator supports)\n");
    /* an unsupported keyword inside a referenced container is still refused */
    ASSERT_REFUSED("{\"x\":{\"format\":\"ipv4\"},\"$ref\":\"#/x\"}", GW_SCHEMA_AUTO,
                   "/x/format: unsupported keyword \"format\" (this validator cannot check "
                   "it)\n");
}
END_TEST

START_TEST(test_schema_mutated_schemas_load_or_refuse_cleanly)
{
    /* One-byte changes of a schema: each one is compiled or refused with located diags, and a
     * compiled one validates a config without crashing (ASan/UBSan build checks the rest). */
    FILE *fp = fopen(DATA "sample.schema.json", "rb");
    ck_assert_ptr_nonnull(fp);
    static char text[16384], m[16384];
    size_t len = fread(text, 1, sizeof(text), fp);
    fclose(fp);
    struct gw_config_doc *inst;
    ck_assert_int_eq(gw_config_load(DATA "bad.json", &inst, NULL), 0);
    const char repl[] = {'0', '"', 'x', '#', '[', '-'};
    size_t compiled = 0, refused = 0;
    for (size_t i = 0; i < len; i += mutant_step()) {
        for (size_t r = 0; r < sizeof(repl); r++) {
            memcpy(m, text, len);
            m[i] = repl[r];
            struct gw_config_doc *doc;
            if (gw_config_parse(m, len, "s.json", &doc, NULL) != 0)
                continue;
            struct gw_diag_list diags;
            gw_diag_list_init(&diags);
            struct gw_schema *s;
            int rc = gw_schema_new(gw_config_root(doc), GW_SCHEMA_AUTO, &s, &diags);
            if (rc == 0) {
                compiled++;
                ck_assert_uint_eq(diags.n, 0);
                gw_schema_validate(s, gw_config_root(inst), &diags);
                gw_schema_free(s);
            } else {
                refused++;
                ck_assert_int_eq(rc, GW_ESCHEMA);
                ck_assert_uint_ge(diags.n, 1);
                gw_config_locate(doc, &diags, 0);
                for (size_t k = 0; k < diags.n; k++) {
                    ck_assert_int_ge(diags.items[k].line, 1);
                    ck_assert(diags.items[k].message[0] != '\0');
                }
            }
            gw_diag_list_fini(&diags);
            gw_config_free(doc);
        }
    }
    ck_assert_uint_gt(compiled, 500 / mutant_step());
    ck_assert_uint_gt(refused, 500 / mutant_step());
    gw_config_free(inst);
}
END_TEST

START_TEST(test_schema_load_unreadable_and_syntax)
{
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_schema *s;
    ck_assert_int_eq(gw_schema_load(DATA "missing.schema.json", &s, &diags), GW_ECONFIG_READ);
    ck_assert_int_eq(gw_schema_load(DATA "trailing_comma.json", &s, &diags), GW_EJSON);
    ck_assert_uint_eq(diags.n, 2);
    ck_assert_int_eq(diags.items[1].line, 4);
    gw_diag_list_fini(&diags);
}
END_TEST

static Suite *schema_suite(void)
{
    Suite *s = suite_create("schema");
    TCase *tc = tcase_create("validate");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_schema_reports_every_error_with_position);
    tcase_add_test(tc, test_schema_type_and_value_messages);
    tcase_add_test(tc, test_schema_string_length_counts_code_points);
    tcase_add_test(tc, test_schema_patterns_ecma_subset);
    tcase_add_test(tc, test_schema_arrays);
    tcase_add_test(tc, test_schema_objects);
    tcase_add_test(tc, test_schema_anyof_oneof_explanations);
    tcase_add_test(tc, test_schema_if_then_else_not_allof);
    tcase_add_test(tc, test_schema_refs_and_dialects);
    tcase_add_test(tc, test_schema_mutants_give_located_errors);
    tcase_add_test(tc, test_schema_exponential_alternatives_stop);
    suite_add_tcase(s, tc);
    tc = tcase_create("load");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_schema_refuses_unsupported_keywords_file);
    tcase_add_test(tc, test_schema_refuses_bad_schemas);
    tcase_add_test(tc, test_schema_unknown_member_allowed_only_as_ref_target);
    tcase_add_test(tc, test_schema_load_unreadable_and_syntax);
    tcase_add_test(tc, test_schema_mutated_schemas_load_or_refuse_cleanly);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(schema_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
