/* SPDX-License-Identifier: Apache-2.0 */
/*
 * iotmp-broker: PSON v2 <-> JSON for the REST API and the SQLite rows, through the project's own
 * value tree (gw/value.h, gw_codec) and its JSON mapping (gw/json.h, gw_config), so the broker
 * shows values exactly as the rest of the project does: bytes as {"$bytes":"hex"}, integers above
 * INT64_MAX as {"$int":".."}, non-finite doubles as {"$double":".."}.
 */
#include "broker.h"

#include "gw/error.h"
#include "gw/json.h"
#include "gw/mem.h"
#include "gw/value.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *gw_broker_pson_to_json(const uint8_t *p, size_t len, int *err)
{
    struct gw_value v;
    int dummy;
    if (!err)
        err = &dummy;
    *err = 0;
    int rc = gw_value_decode(p, len, &v);
    if (rc < 0) {
        *err = rc;
        return NULL;
    }
    json_t *j = gw_value_to_json(&v);
    gw_value_fini(&v);
    if (!j)
        *err = GW_EINVAL; /* a string that is not UTF-8 */
    return j;
}

int gw_broker_field_to_json(const struct gw_iotmp_frame *f, unsigned id, json_t **out)
{
    *out = NULL;
    if (!gw_iotmp_has(f, id))
        return 0;
    const struct gw_iotmp_field *fl = &f->field[id];
    if (fl->wire == GW_IOTMP_WIRE_VARINT) {
        *out = fl->u <= (uint64_t)INT64_MAX ? json_integer((json_int_t)fl->u)
                                            : json_real((double)fl->u);
        return 0;
    }
    int err = 0;
    *out = gw_broker_pson_to_json(fl->p, fl->len, &err);
    return *out ? 0 : (err ? err : GW_EFRAME);
}

int gw_broker_json_check(const json_t *j)
{
    struct gw_value v;
    int rc = gw_json_to_value((json_t *)j, &v);
    if (rc == 0)
        gw_value_fini(&v);
    return rc;
}

void gw_broker_json_to_pson(const json_t *j, struct gw_pson_writer *w)
{
    struct gw_value v;
    if (gw_json_to_value((json_t *)j, &v) < 0) {
        gw_pson_put_null(w); /* callers check bodies with gw_broker_json_check first */
        return;
    }
    gw_value_encode(&v, w);
    gw_value_fini(&v);
}

char *gw_broker_json_text(const json_t *j)
{
    if (!j)
        return gw_strdup("");
    if (json_is_string(j))
        return gw_strdup(json_string_value(j));
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    return s ? s : gw_strdup("?");
}
