/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON text <-> gw_value for the test device's CLI and tests: jansson parses and prints, the
 * project's gw/json.h (gw_config) converts, so the tagged forms ({"$bytes":"hex"}, {"$int":..},
 * {"$double":..}) are the same as in the broker's REST API and the conformance vectors.
 */
#include "testdev.h"

#include "gw/error.h"
#include "gw/json.h"
#include "gw/mem.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gw_testdev_json_parse(const char *text, struct gw_value *out, char *err, size_t err_len)
{
    json_error_t je;
    *out = GW_VALUE_INIT_NULL;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    if (!j) {
        snprintf(err, err_len, "invalid JSON at line %d column %d: %s", je.line, je.column,
                 je.text);
        return GW_EJSON;
    }
    int rc = gw_json_to_value(j, out);
    json_decref(j);
    if (rc < 0) {
        snprintf(err, err_len, "malformed tagged value ($bytes, $int or $double): %s",
                 gw_strerror(rc));
        return GW_EJSON;
    }
    return 0;
}

char *gw_testdev_json_dump(const struct gw_value *v)
{
    json_t *j = gw_value_to_json(v);
    if (!j)
        return gw_strdup("null");
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (!s)
        return gw_strdup("null");
    char *copy = gw_strdup(s);
    free(s);
    return copy;
}
