/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jansson values ↔ gw_value trees (gw/json.h), with the tagged forms of the conformance vectors
 * ({"$bytes": hex}, {"$int": "…"}, {"$double": "inf"}) for what JSON cannot say directly.
 * Used by the test broker, the MQTT adapter and REST bodies. Relies on gw_codec's value tree.
 */
#include "gw/json.h"
#include "gw/error.h"
#include "gw/mem.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* --- JSON → value --- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int tagged_bytes(const char *s, size_t len, struct gw_value *out)
{
    if (len % 2)
        return GW_EINVAL;
    unsigned char *buf = gw_malloc(len / 2 + 1);
    for (size_t i = 0; i < len; i += 2) {
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0) {
            free(buf);
            return GW_EINVAL;
        }
        buf[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    *out = gw_value_bytes(buf, len / 2);
    free(buf);
    return 0;
}

static int tagged_int(const char *s, size_t len, struct gw_value *out)
{
    if (len == 0 || len > 24 || strlen(s) != len)
        return GW_EINVAL;
    char *end;
    errno = 0;
    if (s[0] == '-') {
        long long v = strtoll(s, &end, 10);
        if (errno || *end || end == s + 1)
            return GW_EINVAL;
        *out = gw_value_int(v);
        return 0;
    }
    if (s[0] < '0' || s[0] > '9')
        return GW_EINVAL;
    unsigned long long u = strtoull(s, &end, 10);
    if (errno || *end)
        return GW_EINVAL;
    *out = u <= INT64_MAX ? gw_value_int((int64_t)u) : gw_value_uint(u);
    return 0;
}

static int tagged_double(const char *s, struct gw_value *out)
{
    if (strcmp(s, "inf") == 0 || strcmp(s, "+inf") == 0)
        *out = gw_value_double(INFINITY);
    else if (strcmp(s, "-inf") == 0)
        *out = gw_value_double(-INFINITY);
    else if (strcmp(s, "nan") == 0)
        *out = gw_value_double(NAN);
    else if (strcmp(s, "-0.0") == 0 || strcmp(s, "-0") == 0)
        *out = gw_value_double(-0.0);
    else
        return GW_EINVAL;
    return 0;
}

/* 1 and fills *out if obj is a tagged form, 0 if it is a plain object, or an error. */
static int tagged(json_t *obj, struct gw_value *out)
{
    if (json_object_size(obj) != 1)
        return 0;
    void *it = json_object_iter(obj);
    const char *k = json_object_iter_key(it);
    json_t *v = json_object_iter_value(it);
    if (!json_is_string(v))
        return 0;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    int rc;
    if (strcmp(k, "$bytes") == 0)
        rc = tagged_bytes(s, len, out);
    else if (strcmp(k, "$int") == 0)
        rc = tagged_int(s, len, out);
    else if (strcmp(k, "$double") == 0)
        rc = tagged_double(s, out);
    else
        return 0;
    return rc < 0 ? rc : 1;
}

int gw_json_to_value(json_t *json, struct gw_value *out)
{
    *out = GW_VALUE_INIT_NULL;
    switch (json_typeof(json)) {
    case JSON_NULL:
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        *out = gw_value_bool(json_is_true(json));
        return 0;
    case JSON_INTEGER:
        *out = gw_value_int(json_integer_value(json));
        return 0;
    case JSON_REAL:
        *out = gw_value_double(json_real_value(json));
        return 0;
    case JSON_STRING:
        *out = gw_value_str(json_string_value(json), json_string_length(json));
        return 0;
    case JSON_ARRAY:
        *out = gw_value_array();
        for (size_t i = 0; i < json_array_size(json); i++) {
            struct gw_value *slot = gw_value_array_add(out);
            int rc = gw_json_to_value(json_array_get(json, i), slot);
            if (rc < 0) {
                gw_value_fini(out);
                return rc;
            }
        }
        return 0;
    case JSON_OBJECT: {
        int rc = tagged(json, out);
        if (rc != 0)
            return rc < 0 ? rc : 0;
        *out = gw_value_map();
        for (void *it = json_object_iter(json); it; it = json_object_iter_next(json, it)) {
            struct gw_value tmp;
            rc = gw_json_to_value(json_object_iter_value(it), &tmp);
            if (rc < 0) {
                gw_value_fini(out);
                return rc;
            }
            struct gw_value *slot = gw_value_map_set(out, json_object_iter_key(it),
                                                     json_object_iter_key_len(it));
            *slot = tmp;
        }
        return 0;
    }
    }
    return GW_EINVAL;
}

/* --- value → JSON --- */

static json_t *tag(const char *name, json_t *str)
{
    json_t *o = json_object();
    json_object_set_new(o, name, str);
    return o;
}

json_t *gw_value_to_json(const struct gw_value *v)
{
    switch (v->type) {
    case GW_VALUE_NULL:
        return json_null();
    case GW_VALUE_BOOL:
        return json_boolean(v->b);
    case GW_VALUE_INT:
        return json_integer(v->i);
    case GW_VALUE_UINT:
        if (v->u <= INT64_MAX)
            return json_integer((json_int_t)v->u);
        char num[24];
        snprintf(num, sizeof(num), "%" PRIu64, v->u);
        return tag("$int", json_string(num));
    case GW_VALUE_DOUBLE:
        if (isnan(v->d))
            return tag("$double", json_string("nan"));
        if (isinf(v->d))
            return tag("$double", json_string(v->d > 0 ? "inf" : "-inf"));
        return json_real(v->d);
    case GW_VALUE_STRING:
        return json_stringn(v->s.p, v->s.len); /* NULL if not UTF-8 */
    case GW_VALUE_BYTES: {
        static const char digits[] = "0123456789abcdef";
        char *hex = gw_malloc(v->s.len * 2 + 1);
        const unsigned char *b = (const unsigned char *)v->s.p;
        for (size_t i = 0; i < v->s.len; i++) {
            hex[2 * i] = digits[b[i] >> 4];
            hex[2 * i + 1] = digits[b[i] & 15];
        }
        json_t *s = json_stringn(hex, v->s.len * 2);
        free(hex);
        return tag("$bytes", s);
    }
    case GW_VALUE_ARRAY: {
        json_t *a = json_array();
        for (size_t i = 0; i < v->c.n; i++) {
            json_t *e = gw_value_to_json(&v->c.items[i]);
            if (!e) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, e);
        }
        return a;
    }
    case GW_VALUE_MAP: {
        json_t *o = json_object();
        for (size_t i = 0; i < v->c.n; i++) {
            json_t *e = gw_value_to_json(&v->c.items[i]);
            if (!e || json_object_setn_new(o, v->c.keys[i], v->c.key_lens[i], e) < 0) {
                json_decref(o);
                return NULL; /* json_object_setn_new released e */
            }
        }
        return o;
    }
    }
    return NULL;
}
