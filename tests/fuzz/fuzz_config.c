/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the configuration path an operator's file takes. The input is parsed as a JSON
 * document with positions (gw_config_parse), validated against the real schema it claims to be
 * (an adapter schema when it has a "type" of a known kind, else the gateway schema), every
 * diagnostic is located and formatted, and the document goes through JSON -> value -> JSON: the
 * output must read back to an equal value and be canonical (a second round trip gives the same
 * text), and a document without tagged forms ({"$int": ".."}, {"$bytes": ".."}, {"$double": ".."},
 * which have non-canonical spellings such as {"$int": "2"} for 2) must come back unchanged.
 * The same input also goes through gw_config's own text reader (text_value.h, what
 * gw_config_take_value() uses for a file): for text jansson accepts it must give exactly the value
 * gw_json_to_value() gives (or fail the same way), and for any other text it must not crash.
 * Schemas come from GW_FUZZ_SCHEMA_DIR (the source tree's schema/).
 */
#include "gw/config.h"
#include "gw/json.h"
#include "gw/schema.h"
#include "gw/value.h"
#include "text_value.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef GW_FUZZ_SCHEMA_DIR
#define GW_FUZZ_SCHEMA_DIR "schema"
#endif

static const char *const kinds[] = {"gateway", "modbus", "mqtt", "gpio", "sim"};
static struct gw_schema *schemas[5];

static void load_schemas(void)
{
    for (int i = 0; i < 5; i++) {
        char path[512];
        snprintf(path, sizeof path, i == 0 ? "%s/%s.schema.json" : "%s/adapters/%s.schema.json",
                 GW_FUZZ_SCHEMA_DIR, kinds[i]);
        if (gw_schema_load(path, &schemas[i], NULL) < 0) {
            fprintf(stderr, "fuzz_config: cannot load %s\n", path);
            abort();
        }
    }
}

/* True when j holds an object gw/json.h reads as a tagged value (one "$..." member, a string). */
static int has_tagged(json_t *j)
{
    if (json_is_array(j)) {
        size_t i;
        json_t *e;
        json_array_foreach(j, i, e) {
            if (has_tagged(e))
                return 1;
        }
    } else if (json_is_object(j)) {
        const char *k;
        json_t *e;
        if (json_object_size(j) == 1) {
            json_object_foreach(j, k, e) {
                if (k[0] == '$' && json_is_string(e))
                    return 1;
            }
        }
        json_object_foreach(j, k, e) {
            if (has_tagged(e))
                return 1;
        }
    }
    return 0;
}

/* The text reader against jansson's tree of the same text (root NULL: jansson refused it). */
static void text_reader(const uint8_t *data, size_t size, json_t *root)
{
    struct gw_value t = GW_VALUE_INIT_NULL, j = GW_VALUE_INIT_NULL;
    /* The document keeps (and the reader gets) its text after a UTF-8 byte order mark. */
    if (size >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) {
        data += 3;
        size -= 3;
    }
    int trc = gw_json_text_to_value((const char *)data, size, &t, NULL, NULL);
    if (root) {
        int jrc = gw_json_to_value(root, &j);
        if ((trc < 0) != (jrc < 0))
            abort(); /* one reader refused what the other accepted */
        if (trc >= 0 && !gw_value_identical(&t, &j))
            abort(); /* the two readers built different values (types, bits or key order) */
    }
    gw_value_fini(&t);
    gw_value_fini(&j);
}

static void round_trip(json_t *root)
{
    struct gw_value v, v2;
    if (gw_json_to_value(root, &v) != 0)
        return;
    json_t *back = gw_value_to_json(&v);
    if (!back) { /* a string that is not UTF-8 cannot come from parsed JSON text */
        gw_value_fini(&v);
        return;
    }
    if (!has_tagged(root) && !json_equal(root, back))
        abort(); /* JSON -> value -> JSON changed a plain document */
    if (gw_json_to_value(back, &v2) != 0 || !gw_value_equal(&v, &v2))
        abort(); /* the output does not read back to the same value */
    json_t *back2 = gw_value_to_json(&v2);
    if (!back2 || !json_equal(back, back2))
        abort(); /* the output is not canonical */
    json_decref(back2);
    json_decref(back);
    gw_value_fini(&v2);
    gw_value_fini(&v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!schemas[0])
        load_schemas();
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_config_doc *doc = NULL;
    if (gw_config_parse((const char *)data, size, "fuzz.json", &doc, &diags) == 0) {
        json_t *root = gw_config_root(doc);
        int line, col;
        if (gw_config_pos(doc, "", &line, &col) != 0)
            abort(); /* the root always has a position */
        const struct gw_schema *schema = schemas[0];
        json_t *type = json_is_object(root) ? json_object_get(root, "type") : NULL;
        for (int i = 1; i < 5 && json_is_string(type); i++)
            if (strcmp(json_string_value(type), kinds[i]) == 0)
                schema = schemas[i];
        gw_schema_validate_doc(schema, doc, &diags);
        round_trip(root);
        text_reader(data, size, root);
        gw_config_free(doc);
    } else {
        text_reader(data, size, NULL);
    }
    char *text = gw_diag_format(&diags);
    if (!text)
        abort();
    free(text);
    gw_diag_list_fini(&diags);
    return 0;
}
