/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the configuration path an operator's file takes. The input is parsed as a JSON
 * document with positions (gw_config_parse), validated against the real schema it claims to be
 * (an adapter schema when it has a "type" of a known kind, else the gateway schema), every
 * diagnostic is located and formatted, and the document goes through JSON -> value -> JSON, which
 * must give an equal document. Schemas come from GW_FUZZ_SCHEMA_DIR (the source tree's schema/).
 */
#include "gw/config.h"
#include "gw/json.h"
#include "gw/schema.h"
#include "gw/value.h"

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
        struct gw_value v;
        if (gw_json_to_value(root, &v) == 0) {
            json_t *back = gw_value_to_json(&v);
            if (!back || !json_equal(root, back))
                abort(); /* JSON -> value -> JSON must not change the document */
            json_decref(back);
            gw_value_fini(&v);
        }
        gw_config_free(doc);
    }
    char *text = gw_diag_format(&diags);
    if (!text)
        abort();
    free(text);
    gw_diag_list_fini(&diags);
    return 0;
}
