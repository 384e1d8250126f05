/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for JSON documents with positions (gw/config.h): the pointer → line:col index on
 * nested containers, escaped and non-ASCII keys, "~0"/"~1" pointers; syntax errors (trailing
 * commas, bad tokens, duplicate keys) with their positions; unreadable files; diagnostics
 * sorting and formatting; gw_config_take_value(): the value tree read from the text equals
 * jansson's tree converted (on every mutant and on the config fuzz corpus), and positions keep
 * working once the JSON tree is gone, also for a document large enough for the index's mapped
 * arrays. Fixtures are in tests/data/config/.
 */
#include "gw/config.h"
#include "gw/error.h"
#include "gw/json.h"
#include "gw/value.h"
#include "text_value.h" /* gateway/config: the text -> value reader behind take_value */

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA GW_TEST_DATA "/config/"

static struct gw_config_doc *load_ok(const char *name)
{
    struct gw_config_doc *doc = NULL;
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    int rc = gw_config_load(name, &doc, &diags);
    ck_assert_msg(rc == 0, "%s: %s (%s)", name, gw_strerror(rc),
                  diags.n ? diags.items[0].message : "");
    ck_assert_uint_eq(diags.n, 0);
    gw_diag_list_fini(&diags);
    return doc;
}

static void assert_pos(const struct gw_config_doc *doc, const char *ptr, int line, int col)
{
    int l = -1, c = -1;
    int rc = gw_config_pos(doc, ptr, &l, &c);
    ck_assert_msg(rc == 0, "no position for \"%s\"", ptr);
    ck_assert_msg(l == line && c == col, "\"%s\": expected %d:%d, got %d:%d", ptr, line, col, l,
                  c);
}

/* --- position index --- */

START_TEST(test_config_pos_nested_containers)
{
    struct gw_config_doc *doc = load_ok(DATA "positions.json");
    assert_pos(doc, "", 1, 1);
    assert_pos(doc, "/adapters", 2, 15);
    assert_pos(doc, "/adapters/0", 3, 5);
    assert_pos(doc, "/adapters/0/name", 4, 15);
    assert_pos(doc, "/adapters/0/points", 5, 17);
    assert_pos(doc, "/adapters/0/points/0", 5, 18);
    assert_pos(doc, "/adapters/0/points/0/type", 5, 27);
    assert_pos(doc, "/adapters/0/points/1", 5, 37);
    assert_pos(doc, "/adapters/0/points/1/type", 5, 46);
    assert_pos(doc, "/adapters/0/points/1/addr", 5, 63);
    assert_pos(doc, "/tab", 10, 9); /* a tab counts as one column */
    /* every value of the file is indexed, and nothing else */
    ck_assert_uint_eq(gw_config_count(doc), 20);
    gw_config_free(doc);
}
END_TEST

START_TEST(test_config_pos_escaped_pointers)
{
    struct gw_config_doc *doc = load_ok(DATA "positions.json");
    assert_pos(doc, "/a~1b", 8, 10);
    assert_pos(doc, "/a~1b/c~0d", 8, 18);
    assert_pos(doc, "/a~1b/c~0d/0", 8, 19);
    assert_pos(doc, "/a~1b/c~0d/1", 8, 22);
    assert_pos(doc, "/a~1b/c~0d/1/0", 8, 23);
    assert_pos(doc, "/a~1b/c~0d/1/1", 8, 26);
    assert_pos(doc, "/", 11, 7); /* the member whose name is "" */
    /* the unescaped spelling is not a pointer to that member */
    int l, c;
    ck_assert_int_eq(gw_config_pos(doc, "/a/b", &l, &c), GW_ENOENT);
    ck_assert_int_eq(gw_config_pos(doc, "/adapters/1", &l, &c), GW_ENOENT);
    /* pointers resolve to the same values jansson built */
    json_t *v = gw_config_pointer_get(gw_config_root(doc), "/a~1b/c~0d/1/1");
    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(json_integer_value(v), 3);
    ck_assert_ptr_null(gw_config_pointer_get(gw_config_root(doc), "/a~1b/c~0d/01"));
    ck_assert_ptr_null(gw_config_pointer_get(gw_config_root(doc), "/a~2b"));
    gw_config_free(doc);
}
END_TEST

START_TEST(test_config_pos_unicode_and_escapes)
{
    struct gw_config_doc *doc = load_ok(DATA "positions.json");
    /* columns count code points: "ünï" is 5 columns with its quotes */
    assert_pos(doc, "/\xc3\xbcn\xc3\xaf", 9, 10);
    /* the key "k\u0041y" is indexed by its decoded name "kAy" */
    assert_pos(doc, "/kAy", 9, 46);
    int l, c;
    ck_assert_int_eq(gw_config_key_pos(doc, "/kAy", &l, &c), 0);
    ck_assert_int_eq(l, 9);
    ck_assert_int_eq(c, 34);
    ck_assert_int_eq(gw_config_key_pos(doc, "/adapters/0", &l, &c), GW_ENOENT); /* array item */
    /* escaped quotes in a value do not end the string early */
    json_t *name = gw_config_pointer_get(gw_config_root(doc), "/adapters/0/name");
    ck_assert_str_eq(json_string_value(name), "plc\"1\"");
    json_t *s = gw_config_pointer_get(gw_config_root(doc), "/\xc3\xbcn\xc3\xaf");
    ck_assert_str_eq(json_string_value(s), "\xc3\xa9\xc3\xa9\xf0\x9f\x98\x80x");
    gw_config_free(doc);
}
END_TEST

START_TEST(test_config_pos_large_document)
{
    /* 5000 points: the index grows and every pointer is still found at its line */
    size_t cap = 5000 * 64 + 64, len = 0;
    char *text = malloc(cap);
    len += (size_t)snprintf(text + len, cap - len, "{\"points\": [\n");
    for (int i = 0; i < 5000; i++)
        len += (size_t)snprintf(text + len, cap - len, "  {\"addr\": %d}%s\n", i,
                                i < 4999 ? "," : "");
    len += (size_t)snprintf(text + len, cap - len, "]}\n");
    struct gw_config_doc *doc;
    ck_assert_int_eq(gw_config_parse(text, len, "big.json", &doc, NULL), 0);
    ck_assert_uint_eq(gw_config_count(doc), 2 + 5000 * 2);
    for (int i = 0; i < 5000; i += 499) {
        char ptr[64];
        snprintf(ptr, sizeof(ptr), "/points/%d/addr", i);
        assert_pos(doc, ptr, i + 2, 12);
    }
    gw_config_free(doc);
    free(text);
}
END_TEST

/* Every value of jansson's tree must have a position, and its pointer must lead back to it. */
static void check_indexed(const struct gw_config_doc *doc, json_t *v, char **ptr)
{
    int l, c;
    ck_assert_msg(gw_config_pos(doc, *ptr, &l, &c) == 0, "no position for \"%s\"", *ptr);
    ck_assert_int_ge(l, 1);
    ck_assert_int_ge(c, 1);
    ck_assert_ptr_eq(gw_config_pointer_get(gw_config_root(doc), *ptr), v);
    size_t base = strlen(*ptr);
    if (json_is_object(v)) {
        for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
            gw_config_pointer_append(ptr, json_object_iter_key(it), json_object_iter_key_len(it));
            check_indexed(doc, json_object_iter_value(it), ptr);
            (*ptr)[base] = '\0';
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) {
            char idx[24];
            snprintf(idx, sizeof(idx), "%zu", i);
            gw_config_pointer_append(ptr, idx, strlen(idx));
            check_indexed(doc, json_array_get(v, i), ptr);
            (*ptr)[base] = '\0';
        }
    }
}

static size_t count_values(json_t *v)
{
    size_t n = 1;
    if (json_is_object(v)) {
        for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it))
            n += count_values(json_object_iter_value(it));
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            n += count_values(json_array_get(v, i));
    }
    return n;
}

/*
 * The three ways to a value tree agree on root (borrowed) and its text: jansson's tree converted,
 * the same emptied on the way (on a copy), and the text read directly.
 */
static void check_conversions(json_t *root, const char *text, size_t len)
{
    struct gw_value a, b, c;
    int ra = gw_json_to_value(root, &a);
    json_t *copy = json_deep_copy(root);
    int rb = gw_json_take_value(copy, &b);
    json_decref(copy);
    int rc = gw_json_text_to_value(text, len, &c, NULL, NULL);
    ck_assert_int_eq(ra, rb);
    ck_assert_int_eq(ra, rc);
    ck_assert_msg(gw_value_identical(&a, &b), "take differs on %.*s", (int)len, text);
    ck_assert_msg(gw_value_identical(&a, &c), "text reader differs on %.*s", (int)len, text);
    gw_value_fini(&a);
    gw_value_fini(&b);
    gw_value_fini(&c);
}

/* Parses text; on success cross-checks the index against jansson, on failure the diag. */
static int parse_and_check(const char *text, size_t len)
{
    struct gw_config_doc *doc;
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    int rc = gw_config_parse(text, len, "m.json", &doc, &diags);
    if (rc == 0) {
        ck_assert_uint_eq(diags.n, 0);
        char *ptr = strdup("");
        check_indexed(doc, gw_config_root(doc), &ptr);
        free(ptr);
        ck_assert_uint_eq(gw_config_count(doc), count_values(gw_config_root(doc)));
        check_conversions(gw_config_root(doc), text, len);
        gw_config_free(doc);
    } else {
        ck_assert_int_eq(rc, GW_EJSON);
        ck_assert_uint_eq(diags.n, 1);
        ck_assert_int_ge(diags.items[0].line, 1);
        ck_assert_int_ge(diags.items[0].col, 1);
        ck_assert_str_eq(diags.items[0].file, "m.json");
        /* text jansson refuses never reaches the text reader; still, it must not crash on it */
        struct gw_value v;
        gw_json_text_to_value(text, len, &v, NULL, NULL);
        gw_value_fini(&v);
    }
    gw_diag_list_fini(&diags);
    return rc;
}

static char *read_fixture(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    char *buf = malloc(65536);
    *len = fread(buf, 1, 65536, f);
    fclose(f);
    return buf;
}

START_TEST(test_config_pos_matches_jansson_on_mutants)
{
    /* Truncations and one-byte replacements of the fixtures: either a clean syntax error with a
     * position, or a document whose index has exactly jansson's values. */
    const char *files[] = {DATA "positions.json", DATA "bad.json"};
    const char repl[] = {',', '}', ']', '"', '\\', ':', ' ', '\0', '\xff', '[', '{', '1'};
    int ok = 0, bad = 0;
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        size_t len;
        char *text = read_fixture(files[f], &len);
        ck_assert_int_eq(parse_and_check(text, len), 0);
        for (size_t cut = 0; cut < len; cut++)
            parse_and_check(text, cut) == 0 ? ok++ : bad++;
        char *m = malloc(len);
        for (size_t i = 0; i < len; i++) {
            for (size_t r = 0; r < sizeof(repl); r++) {
                memcpy(m, text, len);
                m[i] = repl[r];
                parse_and_check(m, len) == 0 ? ok++ : bad++;
            }
        }
        free(m);
        free(text);
    }
    /* both outcomes were exercised */
    ck_assert_int_gt(ok, 100);
    ck_assert_int_gt(bad, 1000);
}
END_TEST

/* --- gw_config_take_value --- */

/* Writes len bytes of text to a new temporary file; returns its path (caller unlinks, frees). */
static char *temp_file(const char *text, size_t len)
{
    char *path = strdup("/tmp/gw-test-config-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

/* Every value of v (at pointer *ptr) has the same position in a and b. */
static void check_same_positions(const struct gw_config_doc *a, const struct gw_config_doc *b,
                                 const struct gw_value *v, char **ptr)
{
    int la, ca, lb, cb;
    ck_assert_msg(gw_config_pos(a, *ptr, &la, &ca) == 0, "no position for \"%s\"", *ptr);
    ck_assert_int_eq(gw_config_pos(b, *ptr, &lb, &cb), 0);
    ck_assert_msg(la == lb && ca == cb, "\"%s\": %d:%d against %d:%d", *ptr, la, ca, lb, cb);
    int ka = gw_config_key_pos(a, *ptr, &la, &ca), kb = gw_config_key_pos(b, *ptr, &lb, &cb);
    ck_assert_int_eq(ka, kb);
    if (ka == 0)
        ck_assert(la == lb && ca == cb);
    if (v->type != GW_VALUE_MAP && v->type != GW_VALUE_ARRAY)
        return;
    size_t base = strlen(*ptr);
    for (size_t i = 0; i < v->c.n; i++) {
        char idx[24];
        if (v->type == GW_VALUE_MAP) {
            gw_config_pointer_append(ptr, v->c.keys[i], v->c.key_lens[i]);
        } else {
            snprintf(idx, sizeof(idx), "%zu", i);
            gw_config_pointer_append(ptr, idx, strlen(idx));
        }
        check_same_positions(a, b, &v->c.items[i], ptr);
        (*ptr)[base] = '\0';
    }
}

/*
 * Loads path (the lazy index, built at take_value when the JSON tree has gone) and compares it
 * with the same text parsed in memory (index built at once): same values, same positions, and
 * the JSON tree is released. Returns gw_config_load()'s result.
 */
static int load_and_take(const char *path)
{
    struct gw_config_doc *doc, *ref;
    int rc = gw_config_load(path, &doc, NULL);
    if (rc < 0)
        return rc;
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    rewind(f);
    char *text = malloc(len + 1);
    ck_assert_uint_eq(fread(text, 1, len, f), len);
    fclose(f);
    ck_assert_int_eq(gw_config_parse(text, len, "ref.json", &ref, NULL), 0);
    struct gw_value want, got;
    int want_rc = gw_json_to_value(gw_config_root(ref), &want);
    ck_assert_int_eq(gw_config_take_value(doc, &got), want_rc);
    ck_assert_ptr_null(gw_config_root(doc));
    if (want_rc == 0) {
        ck_assert(gw_value_identical(&want, &got));
        ck_assert_uint_eq(gw_config_count(doc), gw_config_count(ref));
        char *ptr = strdup("");
        check_same_positions(doc, ref, &want, &ptr);
        free(ptr);
    } else {
        ck_assert_int_eq(got.type, GW_VALUE_NULL);
    }
    /* taken once only */
    struct gw_value again;
    ck_assert_int_eq(gw_config_take_value(doc, &again), GW_EINVAL);
    ck_assert_int_eq(again.type, GW_VALUE_NULL);
    gw_value_fini(&want);
    gw_value_fini(&got);
    gw_config_free(ref);
    gw_config_free(doc);
    free(text);
    return 0;
}

START_TEST(test_config_take_value_keeps_positions)
{
    struct gw_config_doc *doc = load_ok(DATA "positions.json");
    struct gw_value v;
    ck_assert_int_eq(gw_config_take_value(doc, &v), 0);
    ck_assert_ptr_null(gw_config_root(doc));
    ck_assert_int_eq(v.type, GW_VALUE_MAP);
    const struct gw_value *name =
        gw_value_map_get(&v.c.items[0].c.items[0], "name"); /* /adapters/0/name */
    ck_assert_ptr_nonnull(name);
    ck_assert_str_eq(name->s.p, "plc\"1\"");
    /* the positions stay (the index was built when the value was taken) */
    assert_pos(doc, "/adapters/0/points/1/addr", 5, 63);
    assert_pos(doc, "/a~1b/c~0d/1/1", 8, 26);
    assert_pos(doc, "/kAy", 9, 46);
    ck_assert_uint_eq(gw_config_count(doc), 20);
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    gw_diag_add(&diags, "/tab/nothing", NULL, "located after the take");
    gw_config_locate(doc, &diags, 0);
    ck_assert_int_eq(diags.items[0].line, 10);
    ck_assert_int_eq(diags.items[0].col, 9);
    gw_diag_list_fini(&diags);
    gw_value_fini(&v);
    gw_config_free(doc);
    ck_assert_int_eq(load_and_take(DATA "positions.json"), 0);
    ck_assert_int_eq(load_and_take(DATA "bad.json"), 0);
}
END_TEST

START_TEST(test_config_take_value_tagged_and_bom)
{
    const char *texts[] = {
        "\xef\xbb\xbf{\"a\": [true, {\"$int\": \"18446744073709551615\"}]}",
        "{\"b\": {\"$bytes\": \"00ff\"}, \"d\": {\"$double\": \"-inf\"}, \"e\": 1.5e3}",
        "{\"bad\": {\"$int\": \"12x\"}}", /* malformed tag: GW_EINVAL from both */
        "{\"$int\": \"1\", \"other\": 2}",  /* two members: a plain map */
        "[-0, 0.0, -0.0, 1e-400, 9223372036854775807, -9223372036854775808, 0.1, 5E+2]",
        "\"\\ud83d\\ude00 \\u00e9 \\n\\/\"",
        "{\"k\\u0041y\": {}, \"\": [], \"~/\": null}",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        char *path = temp_file(texts[i], strlen(texts[i]));
        ck_assert_msg(load_and_take(path) == 0, "%s", texts[i]);
        unlink(path);
        free(path);
    }
}
END_TEST

START_TEST(test_config_take_value_large_document)
{
    /* 60,000 points: entries and hash slots above 1 MiB are mapped, not malloc'd */
    size_t cap = 60000 * 64 + 64, len = 0;
    char *text = malloc(cap);
    len += (size_t)snprintf(text + len, cap - len, "{\"points\": [\n");
    for (int i = 0; i < 60000; i++)
        len += (size_t)snprintf(text + len, cap - len, "  {\"addr\": %d, \"n\": \"p%d\"}%s\n", i,
                                i, i < 59999 ? "," : "");
    len += (size_t)snprintf(text + len, cap - len, "]}\n");
    char *path = temp_file(text, len);
    struct gw_config_doc *doc = load_ok(path);
    struct gw_value v;
    ck_assert_int_eq(gw_config_take_value(doc, &v), 0);
    ck_assert_uint_eq(gw_config_count(doc), 2 + 60000 * 3);
    ck_assert_uint_eq(gw_value_count(gw_value_map_get(&v, "points")), 60000);
    for (int i = 0; i < 60000; i += 4999) {
        char ptr[64];
        int n = snprintf(ptr, sizeof(ptr), "/points/%d/n", i);
        assert_pos(doc, ptr, i + 2, 20 + (n - 11)); /* `  {"addr": i, "n": ` */
        const struct gw_value *pt = &gw_value_map_get(&v, "points")->c.items[i];
        ck_assert_int_eq(gw_value_map_get(pt, "addr")->i, i);
    }
    gw_value_fini(&v);
    gw_config_free(doc);
    unlink(path);
    free(path);
    free(text);
}
END_TEST

START_TEST(test_config_take_value_fuzz_corpus)
{
    /* Every input of the config fuzz corpus: loaded, taken, compared with the in-memory parse. */
    const char *dir = GW_TEST_DATA "/../fuzz/corpus/config";
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int loaded = 0, refused = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        load_and_take(path) == 0 ? loaded++ : refused++;
    }
    closedir(d);
    ck_assert_int_gt(loaded, 100);
}
END_TEST

/* --- syntax errors and unreadable files --- */

static char *load_error(const char *name, int want_rc)
{
    struct gw_config_doc *doc = (struct gw_config_doc *)1;
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    int rc = gw_config_load(name, &doc, &diags);
    ck_assert_msg(rc == want_rc, "%s: expected %s, got %s", name, gw_strerror_name(want_rc),
                  gw_strerror_name(rc));
    ck_assert_ptr_null(doc);
    ck_assert_uint_eq(diags.n, 1);
    char *text = gw_diag_format(&diags);
    gw_diag_list_fini(&diags);
    return text;
}

START_TEST(test_config_syntax_trailing_comma_object)
{
    char *text = load_error(DATA "trailing_comma.json", GW_EJSON);
    /* reported at the comma (line 4), not at the '}' on line 5 where jansson notices */
    ck_assert_str_eq(text, DATA "trailing_comma.json:4:18: syntax error: trailing comma before "
                                "'}' (JSON allows no comma after the last member)\n");
    free(text);
}
END_TEST

START_TEST(test_config_syntax_trailing_comma_array)
{
    char *text = load_error(DATA "trailing_comma_array.json", GW_EJSON);
    ck_assert_str_eq(text, DATA "trailing_comma_array.json:3:4: syntax error: trailing comma "
                                "before ']' (JSON allows no comma after the last element)\n");
    free(text);
}
END_TEST

START_TEST(test_config_syntax_bad_token)
{
    char *text = load_error(DATA "bad_token.json", GW_EJSON);
    /* jansson's message, at the start of the bad token */
    ck_assert_str_eq(text, DATA "bad_token.json:3:10: syntax error: invalid token near 'tru'\n");
    free(text);
}
END_TEST

START_TEST(test_config_syntax_duplicate_key)
{
    char *text = load_error(DATA "duplicate_key.json", GW_EJSON);
    ck_assert_msg(strstr(text, "duplicate_key.json:3:3: syntax error: duplicate object key") ==
                      text + strlen(DATA),
                  "got: %s", text);
    free(text);
}
END_TEST

START_TEST(test_config_syntax_comma_in_string_is_not_trailing)
{
    /* a ",}" inside a string is data; the real error is the missing value later */
    const char *t = "{\"a\": \",}\",\n \"b\": }";
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_config_doc *doc;
    ck_assert_int_eq(gw_config_parse(t, strlen(t), "s.json", &doc, &diags), GW_EJSON);
    ck_assert_uint_eq(diags.n, 1);
    ck_assert_ptr_null(strstr(diags.items[0].message, "trailing comma"));
    ck_assert_int_eq(diags.items[0].line, 2);
    gw_diag_list_fini(&diags);
}
END_TEST

START_TEST(test_config_syntax_nul_byte)
{
    /* jansson alone would accept "[1\0]" as [1]; a raw NUL is refused with its position */
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_config_doc *doc;
    ck_assert_int_eq(gw_config_parse("[\n 1\0]", 6, "n.json", &doc, &diags), GW_EJSON);
    char *text = gw_diag_format(&diags);
    ck_assert_str_eq(text, "n.json:2:3: syntax error: NUL byte in the text (not JSON)\n");
    free(text);
    gw_diag_list_fini(&diags);
}
END_TEST

static char *parse_error(const char *text)
{
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_config_doc *doc;
    ck_assert_int_eq(gw_config_parse(text, strlen(text), "h.json", &doc, &diags), GW_EJSON);
    ck_assert_uint_eq(diags.n, 1);
    char *out = gw_diag_format(&diags);
    gw_diag_list_fini(&diags);
    return out;
}

START_TEST(test_config_syntax_hints)
{
    char *t = parse_error("{\n  \"a\": 1\n  \"b\": 2\n}");
    ck_assert_str_eq(t, "h.json:3:3: syntax error: '}' expected near '\"b\"' (missing ',' after "
                        "the previous member?)\n");
    free(t);
    t = parse_error("[1\n 2]");
    ck_assert_str_eq(t, "h.json:2:2: syntax error: ']' expected near '2' (missing ',' between "
                        "elements?)\n");
    free(t);
    t = parse_error("{\n  // note\n  \"a\": 1\n}");
    ck_assert_str_eq(t, "h.json:2:3: syntax error: string or '}' expected near '/' (JSON has no "
                        "comments)\n");
    free(t);
}
END_TEST

START_TEST(test_config_byte_order_mark_is_skipped)
{
    const char *text = "\xef\xbb\xbf{\"a\": [true]}";
    struct gw_config_doc *doc;
    ck_assert_int_eq(gw_config_parse(text, strlen(text), "bom.json", &doc, NULL), 0);
    assert_pos(doc, "", 1, 1);
    assert_pos(doc, "/a/0", 1, 8);
    gw_config_free(doc);
}
END_TEST

START_TEST(test_config_load_unreadable)
{
    char *text = load_error(DATA "does-not-exist.json", GW_ECONFIG_READ);
    ck_assert_str_eq(text, DATA "does-not-exist.json: cannot read: No such file or directory\n");
    free(text);
    /* a directory opens but cannot be read */
    text = load_error(DATA, GW_ECONFIG_READ);
    ck_assert_ptr_nonnull(strstr(text, "cannot read: Is a directory"));
    free(text);
}
END_TEST

START_TEST(test_config_load_empty_file)
{
    struct gw_config_doc *doc;
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    ck_assert_int_eq(gw_config_parse("", 0, "empty.json", &doc, &diags), GW_EJSON);
    ck_assert_uint_eq(diags.n, 1);
    ck_assert_int_eq(diags.items[0].line, 1);
    ck_assert_int_ge(diags.items[0].col, 1);
    gw_diag_list_fini(&diags);
}
END_TEST

/* --- diagnostics --- */

START_TEST(test_config_diag_sorted_and_located)
{
    struct gw_config_doc *doc = load_ok(DATA "positions.json");
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    gw_diag_add(&diags, "/tab", "/x", "third");
    gw_diag_add(&diags, "/adapters/0/points/1/type", NULL, "second");
    gw_diag_add(&diags, "/adapters/0/missing/deeper", NULL, "falls back to /adapters/0");
    gw_diag_add(&diags, "", NULL, "root");
    gw_config_locate(doc, &diags, 0);
    gw_diag_list_sort(&diags);
    char *text = gw_diag_format(&diags);
    ck_assert_str_eq(text, DATA "positions.json:1:1: (root): root\n" DATA
                           "positions.json:3:5: /adapters/0/missing/deeper: falls back to "
                           "/adapters/0\n" DATA
                           "positions.json:5:46: /adapters/0/points/1/type: second\n" DATA
                           "positions.json:10:9: /tab: third\n");
    free(text);
    gw_diag_list_fini(&diags);
    gw_config_free(doc);
}
END_TEST

START_TEST(test_config_diag_move_keeps_order)
{
    struct gw_diag_list a, b;
    gw_diag_list_init(&a);
    gw_diag_list_init(&b);
    for (int i = 0; i < 20; i++)
        gw_diag_add(i % 2 ? &b : &a, "", NULL, "m%d", i);
    gw_diag_list_move(&a, &b);
    ck_assert_uint_eq(a.n, 20);
    ck_assert_uint_eq(b.n, 0);
    gw_diag_list_sort(&a); /* all unpositioned: insertion order stays */
    ck_assert_str_eq(a.items[0].message, "m0");
    ck_assert_str_eq(a.items[10].message, "m1");
    ck_assert_str_eq(a.items[19].message, "m19");
    gw_diag_list_fini(&a);
    gw_diag_list_fini(&b);
}
END_TEST

START_TEST(test_config_pointer_helpers)
{
    char *p = NULL;
    gw_config_pointer_append(&p, "a/b~c", 5);
    gw_config_pointer_append(&p, "", 0);
    ck_assert_str_eq(p, "/a~1b~0c/");
    free(p);
    size_t len;
    char *k = gw_config_pointer_unescape("x~1~0y", 6, &len);
    ck_assert_str_eq(k, "x/~y");
    ck_assert_uint_eq(len, 4);
    free(k);
    ck_assert_ptr_null(gw_config_pointer_unescape("bad~2", 5, &len));
    ck_assert_ptr_null(gw_config_pointer_unescape("bad~", 4, &len));
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("positions");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_config_pos_nested_containers);
    tcase_add_test(tc, test_config_pos_escaped_pointers);
    tcase_add_test(tc, test_config_pos_unicode_and_escapes);
    tcase_add_test(tc, test_config_pos_large_document);
    tcase_add_test(tc, test_config_pointer_helpers);
    tcase_add_test(tc, test_config_pos_matches_jansson_on_mutants);
    suite_add_tcase(s, tc);
    tc = tcase_create("take_value");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_config_take_value_keeps_positions);
    tcase_add_test(tc, test_config_take_value_tagged_and_bom);
    tcase_add_test(tc, test_config_take_value_large_document);
    tcase_add_test(tc, test_config_take_value_fuzz_corpus);
    suite_add_tcase(s, tc);
    tc = tcase_create("syntax");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_config_syntax_trailing_comma_object);
    tcase_add_test(tc, test_config_syntax_trailing_comma_array);
    tcase_add_test(tc, test_config_syntax_bad_token);
    tcase_add_test(tc, test_config_syntax_duplicate_key);
    tcase_add_test(tc, test_config_syntax_comma_in_string_is_not_trailing);
    tcase_add_test(tc, test_config_syntax_nul_byte);
    tcase_add_test(tc, test_config_syntax_hints);
    tcase_add_test(tc, test_config_byte_order_mark_is_skipped);
    tcase_add_test(tc, test_config_load_unreadable);
    tcase_add_test(tc, test_config_load_empty_file);
    suite_add_tcase(s, tc);
    tc = tcase_create("diag");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_config_diag_sorted_and_located);
    tcase_add_test(tc, test_config_diag_move_keeps_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
