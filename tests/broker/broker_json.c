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

/* Growing text buffer for gw_broker_json_dumps. */
struct jbuf {
    char *p;
    size_t len, cap;
};

static void jb_put(struct jbuf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        while (b->len + n + 1 > b->cap)
            b->cap = b->cap ? b->cap * 2 : 256;
        b->p = gw_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

/* Jansson writes strings, integers and literals; reals get the shortest round-trip form. */
static void jb_value(struct jbuf *b, const json_t *j)
{
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        int first = 1;
        jb_put(b, "{", 1);
        json_object_foreach((json_t *)j, k, v) {
            if (!first)
                jb_put(b, ",", 1);
            first = 0;
            json_t *key = json_string(k);
            jb_value(b, key);
            json_decref(key);
            jb_put(b, ":", 1);
            jb_value(b, v);
        }
        jb_put(b, "}", 1);
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        jb_put(b, "[", 1);
        json_array_foreach((json_t *)j, i, v) {
            if (i)
                jb_put(b, ",", 1);
            jb_value(b, v);
        }
        jb_put(b, "]", 1);
    } else if (json_is_real(j)) {
        double d = json_real_value(j);
        char t[40];
        for (int prec = 1; prec <= 17; prec++) {
            snprintf(t, sizeof(t), "%.*g", prec, d);
            if (strtod(t, NULL) == d)
                break;
        }
        /* JSON needs a fraction or exponent to stay a real once read back ("2.0", not "2"). */
        if (!strpbrk(t, ".eEn"))
            strcat(t, ".0");
        jb_put(b, t, strlen(t));
    } else {
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
        jb_put(b, s ? s : "null", s ? strlen(s) : 4);
        free(s);
    }
}

char *gw_broker_json_dumps(const json_t *j)
{
    struct jbuf b = {0};
    if (!j)
        return gw_strdup("null");
    jb_value(&b, j);
    return b.p;
}

char *gw_broker_json_text(const json_t *j)
{
    if (!j)
        return gw_strdup("");
    if (json_is_string(j))
        return gw_strdup(json_string_value(j));
    return gw_broker_json_dumps(j);
}
