/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MQTT adapter's pure core (mqtt_map.h): filters, templates, JSON Pointers, payload decoding
 * and coercion, write payloads. No libmosquitto here, so the rules can be tested exhaustively
 * without a broker; the adapter (mqtt.c) only wires them to messages and calls.
 */
#include "mqtt_map.h"

#include "gw/error.h"
#include "gw/json.h"
#include "gw/mem.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int gw_mqtt_format_parse(const char *s, enum gw_mqtt_format *out)
{
    if (!s || !strcmp(s, "auto"))
        *out = GW_MQTT_FMT_AUTO;
    else if (!strcmp(s, "json"))
        *out = GW_MQTT_FMT_JSON;
    else if (!strcmp(s, "text"))
        *out = GW_MQTT_FMT_TEXT;
    else
        return GW_EINVAL;
    return 0;
}

static const char *const as_names[] = {"auto", "number", "integer", "bool", "string"};

int gw_mqtt_as_parse(const char *s, enum gw_mqtt_as *out)
{
    if (!s) {
        *out = GW_MQTT_AS_AUTO;
        return 0;
    }
    for (size_t i = 0; i < sizeof as_names / sizeof as_names[0]; i++) {
        if (!strcmp(s, as_names[i])) {
            *out = (enum gw_mqtt_as)i;
            return 0;
        }
    }
    return GW_EINVAL;
}

const char *gw_mqtt_as_name(enum gw_mqtt_as as)
{
    return (unsigned)as < sizeof as_names / sizeof as_names[0] ? as_names[as] : "?";
}

/* --- Topics and filters --- */

int gw_mqtt_filter_check(const char *filter, size_t *levels, bool *multi, bool *wild,
                         const char **why)
{
    size_t n = 1;
    bool m = false, w = false;
    if (!filter || !*filter) {
        *why = "empty topic filter";
        return GW_EINVAL;
    }
    for (const char *p = filter; *p; p++) {
        bool start = p == filter || p[-1] == '/';
        if (*p == '/') {
            n++;
        } else if (*p == '+') {
            if (!start || (p[1] && p[1] != '/')) {
                *why = "'+' must be a whole topic level";
                return GW_EINVAL;
            }
            w = true;
        } else if (*p == '#') {
            if (!start || p[1]) {
                *why = "'#' must be the whole last topic level";
                return GW_EINVAL;
            }
            w = m = true;
        }
    }
    if (levels)
        *levels = n;
    if (multi)
        *multi = m;
    if (wild)
        *wild = w;
    return 0;
}

int gw_mqtt_topic_check(const char *topic, const char **why)
{
    if (!topic || !*topic) {
        *why = "empty topic";
        return GW_EINVAL;
    }
    if (strpbrk(topic, "+#")) {
        *why = "a topic to publish to cannot contain the wildcards '+' or '#'";
        return GW_EINVAL;
    }
    return 0;
}

bool gw_mqtt_topic_match(const char *f, const char *t)
{
    if (*t == '$' && (*f == '+' || *f == '#'))
        return false;
    for (;;) {
        if (*f == '#')
            return true; /* matches the parent level too ("a/#" matches "a") */
        if (*f == '+') {
            while (*t && *t != '/')
                t++;
            f++;
        } else {
            while (*f && *f != '/' && *t && *t != '/' && *f == *t) {
                f++;
                t++;
            }
            if ((*f && *f != '/') || (*t && *t != '/'))
                return false;
        }
        /* both at '/' or end */
        if (!*f && !*t)
            return true;
        if (!*t) /* topic ended: "a/#" matches "a" */
            return f[0] == '/' && f[1] == '#' && !f[2];
        if (!*f)
            return false;
        f++;
        t++;
    }
}

/* --- Templates --- */

static int template_walk(const char *tmpl, const char *topic, char **out, unsigned *max_index,
                         const char **why)
{
    size_t cap = strlen(tmpl) + 16, len = 0;
    char *buf = out ? gw_malloc(cap) : NULL;
    unsigned maxi = 0;
    int rc = 0;
#define PUT(ptr, n)                                                                                \
    do {                                                                                           \
        if (buf) {                                                                                 \
            if (len + (n) + 1 > cap) {                                                             \
                cap = (len + (n) + 1) * 2;                                                         \
                buf = gw_realloc(buf, cap);                                                        \
            }                                                                                      \
            memcpy(buf + len, (ptr), (n));                                                         \
            len += (n);                                                                            \
        }                                                                                          \
    } while (0)
    for (const char *p = tmpl; *p;) {
        if (p[0] == '{' && p[1] == '{') {
            PUT("{", 1);
            p += 2;
        } else if (p[0] == '}' && p[1] == '}') {
            PUT("}", 1);
            p += 2;
        } else if (p[0] == '{') {
            unsigned n = 0;
            const char *q = p + 1;
            while (isdigit((unsigned char)*q) && n < 1000)
                n = n * 10 + (unsigned)(*q++ - '0');
            if (q == p + 1 || *q != '}' || n == 0 || n > 999) {
                *why = "'{' must start a placeholder {N} with N = 1..999 (write '{{' for a brace)";
                rc = GW_EINVAL;
                break;
            }
            if (n > maxi)
                maxi = n;
            if (topic) {
                const char *s = topic;
                for (unsigned i = 1; i < n && s; i++) {
                    s = strchr(s, '/');
                    if (s)
                        s++;
                }
                if (!s) {
                    *why = "the topic has fewer levels than the placeholder needs";
                    rc = GW_ERANGE;
                    break;
                }
                const char *e = strchr(s, '/');
                PUT(s, e ? (size_t)(e - s) : strlen(s));
            }
            p = q + 1;
        } else if (p[0] == '}') {
            *why = "unmatched '}' (write '}}' for a brace)";
            rc = GW_EINVAL;
            break;
        } else {
            PUT(p, 1);
            p++;
        }
    }
#undef PUT
    if (max_index)
        *max_index = maxi;
    if (buf) {
        if (rc) {
            free(buf);
            buf = NULL;
        } else {
            buf[len] = '\0';
        }
        *out = buf;
    }
    return rc;
}

int gw_mqtt_template_check(const char *tmpl, unsigned *max_index, const char **why)
{
    return template_walk(tmpl, NULL, NULL, max_index, why);
}

int gw_mqtt_template_expand(const char *tmpl, const char *topic, char **out)
{
    const char *why;
    *out = NULL;
    return template_walk(tmpl, topic, out, NULL, &why);
}

/* --- JSON Pointer --- */

json_t *gw_mqtt_json_pointer(json_t *root, const char *ptr)
{
    if (!ptr || !*ptr)
        return root;
    if (*ptr != '/')
        return NULL;
    json_t *cur = root;
    char key[512];
    const char *p = ptr;
    while (cur && *p == '/') {
        p++;
        size_t n = 0;
        while (*p && *p != '/') {
            char c = *p++;
            if (c == '~') {
                if (*p == '0')
                    c = '~';
                else if (*p == '1')
                    c = '/';
                else
                    return NULL;
                p++;
            }
            if (n + 1 >= sizeof key)
                return NULL;
            key[n++] = c;
        }
        key[n] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_getn(cur, key, n);
        } else if (json_is_array(cur)) {
            if (n == 0 || (n > 1 && key[0] == '0'))
                return NULL;
            size_t idx = 0;
            for (size_t i = 0; i < n; i++) {
                if (!isdigit((unsigned char)key[i]) || idx > 100000000)
                    return NULL;
                idx = idx * 10 + (size_t)(key[i] - '0');
            }
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
    }
    return cur;
}

/* --- Coercion --- */

static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

/* Parses a whole string (spaces around allowed) as a number. */
static bool parse_number(const char *s, size_t len, struct gw_value *out)
{
    char buf[64];
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (!len || len >= sizeof buf)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    bool intlike = strspn(buf + (buf[0] == '-' || buf[0] == '+'), "0123456789") ==
                   len - (size_t)(buf[0] == '-' || buf[0] == '+');
    if (intlike) {
        long long v = strtoll(buf, &end, 10);
        if (!*end && errno == 0) {
            *out = gw_value_int(v);
            return true;
        }
        errno = 0;
    }
    double d = strtod(buf, &end);
    if (*end || end == buf || !isfinite(d))
        return false;
    *out = gw_value_double(d);
    return true;
}

static void fmt_double(double d, char *buf, size_t cap)
{
    snprintf(buf, cap, "%.15g", d);
    if (strtod(buf, NULL) != d)
        snprintf(buf, cap, "%.17g", d);
}

static char *value_json_text(const struct gw_value *v, size_t *len)
{
    json_t *j = gw_value_to_json(v);
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(j);
    if (s && len)
        *len = strlen(s);
    return s;
}

int gw_mqtt_coerce(struct gw_value *v, enum gw_mqtt_as as, char *err, size_t errcap)
{
    struct gw_value nv = GW_VALUE_INIT_NULL;
    double d;
    switch (as) {
    case GW_MQTT_AS_AUTO:
        return 0;
    case GW_MQTT_AS_NUMBER:
    case GW_MQTT_AS_INTEGER:
        if (v->type == GW_VALUE_BOOL) {
            d = v->b ? 1 : 0;
        } else if (v->type == GW_VALUE_STRING) {
            struct gw_value n;
            if (!parse_number(v->s.p, v->s.len, &n)) {
                snprintf(err, errcap, "string \"%.40s\" is not a number", v->s.p);
                return GW_EINVAL;
            }
            if (n.type == GW_VALUE_INT && as == GW_MQTT_AS_INTEGER) {
                gw_value_fini(v);
                *v = n;
                return 0;
            }
            gw_value_to_double(&n, &d);
        } else if (v->type == GW_VALUE_INT || v->type == GW_VALUE_UINT) {
            if (as == GW_MQTT_AS_INTEGER)
                return 0;
            gw_value_to_double(v, &d);
        } else if (v->type == GW_VALUE_DOUBLE) {
            d = v->d;
        } else {
            snprintf(err, errcap, "a %s cannot be read as a %s",
                     v->type == GW_VALUE_NULL    ? "null"
                     : v->type == GW_VALUE_MAP   ? "JSON object"
                     : v->type == GW_VALUE_ARRAY ? "JSON array"
                                                 : "binary value",
                     as == GW_MQTT_AS_NUMBER ? "number" : "integer");
            return GW_EINVAL;
        }
        if (as == GW_MQTT_AS_NUMBER) {
            nv = gw_value_double(d);
        } else {
            double r = round(d);
            if (!(r >= -9223372036854775808.0 && r < 9223372036854775808.0)) {
                snprintf(err, errcap, "%g is outside the 64-bit integer range", d);
                return GW_EINVAL;
            }
            nv = gw_value_int((int64_t)r);
        }
        break;
    case GW_MQTT_AS_BOOL:
        if (v->type == GW_VALUE_BOOL)
            return 0;
        if (v->type == GW_VALUE_INT || v->type == GW_VALUE_UINT || v->type == GW_VALUE_DOUBLE) {
            gw_value_to_double(v, &d);
            nv = gw_value_bool(d != 0);
        } else if (v->type == GW_VALUE_STRING) {
            static const char *const yes[] = {"true", "on", "yes", "1"};
            static const char *const no[] = {"false", "off", "no", "0"};
            const char *s = v->s.p;
            size_t len = v->s.len;
            while (len && isspace((unsigned char)*s)) {
                s++;
                len--;
            }
            while (len && isspace((unsigned char)s[len - 1]))
                len--;
            int found = -1;
            for (size_t i = 0; i < 4 && found < 0; i++) {
                if (strlen(yes[i]) == len && !strncasecmp(s, yes[i], len))
                    found = 1;
                else if (strlen(no[i]) == len && !strncasecmp(s, no[i], len))
                    found = 0;
            }
            if (found < 0) {
                snprintf(err, errcap,
                         "string \"%.40s\" is not a boolean (true/false, on/off, yes/no, 1/0)",
                         v->s.p);
                return GW_EINVAL;
            }
            nv = gw_value_bool(found == 1);
        } else {
            snprintf(err, errcap, "a %s cannot be read as a boolean",
                     v->type == GW_VALUE_NULL ? "null" : "JSON object, array or binary value");
            return GW_EINVAL;
        }
        break;
    case GW_MQTT_AS_STRING: {
        char buf[64];
        switch (v->type) {
        case GW_VALUE_STRING:
            return 0;
        case GW_VALUE_BOOL:
            nv = gw_value_cstr(v->b ? "true" : "false");
            break;
        case GW_VALUE_INT:
            snprintf(buf, sizeof buf, "%" PRId64, v->i);
            nv = gw_value_cstr(buf);
            break;
        case GW_VALUE_UINT:
            snprintf(buf, sizeof buf, "%" PRIu64, v->u);
            nv = gw_value_cstr(buf);
            break;
        case GW_VALUE_DOUBLE:
            fmt_double(v->d, buf, sizeof buf);
            nv = gw_value_cstr(buf);
            break;
        case GW_VALUE_NULL:
            nv = gw_value_cstr("null");
            break;
        default: {
            size_t n = 0;
            char *s = value_json_text(v, &n);
            if (!s) {
                snprintf(err, errcap, "value cannot be written as JSON text");
                return GW_EINVAL;
            }
            nv = gw_value_str(s, n);
            free(s);
        }
        }
        break;
    }
    default:
        snprintf(err, errcap, "unknown coercion");
        return GW_EINVAL;
    }
    gw_value_fini(v);
    *v = nv;
    return 0;
}

/* --- Decoding --- */

static struct gw_value text_value(const void *p, size_t len)
{
    if (utf8_valid(p, len) && !memchr(p, '\0', len))
        return gw_value_str(p, len);
    return gw_value_bytes(p, len);
}

int gw_mqtt_decode(const void *payload, size_t len, enum gw_mqtt_format format, const char *pointer,
                   enum gw_mqtt_as as, struct gw_value *out, char *err, size_t errcap)
{
    *out = GW_VALUE_INIT_NULL;
    bool want_ptr = pointer && *pointer;
    if (format == GW_MQTT_FMT_TEXT) {
        *out = text_value(payload, len);
    } else {
        json_error_t jerr;
        json_t *root = len ? json_loadb(payload, len, JSON_DECODE_ANY, &jerr) : NULL;
        if (!root) {
            if (format == GW_MQTT_FMT_JSON) {
                if (!len)
                    snprintf(err, errcap, "empty payload is not JSON");
                else
                    snprintf(err, errcap, "payload is not JSON: %s at byte %d", jerr.text,
                             jerr.position);
                return GW_EJSON;
            }
            if (want_ptr) {
                snprintf(err, errcap, "payload is not JSON, so pointer %s has nothing to pick",
                         pointer);
                return GW_ENOENT;
            }
            /* auto: plain text; a numeric text is still a number for as=auto */
            *out = text_value(payload, len);
        } else {
            json_t *j = gw_mqtt_json_pointer(root, pointer);
            if (!j) {
                snprintf(err, errcap, "JSON payload has no field at %s", pointer);
                json_decref(root);
                return GW_ENOENT;
            }
            int rc = gw_json_to_value(j, out);
            json_decref(root);
            if (rc) {
                snprintf(err, errcap, "JSON value at %s is a malformed tagged object",
                         want_ptr ? pointer : "(root)");
                *out = GW_VALUE_INIT_NULL;
                return GW_EJSON;
            }
        }
    }
    int rc = gw_mqtt_coerce(out, as, err, errcap);
    if (rc) {
        gw_value_fini(out);
        return rc;
    }
    return 0;
}

/* --- Encoding --- */

static json_t *fill_template(json_t *t, json_t *val)
{
    if (json_is_string(t) && !strcmp(json_string_value(t), "$value"))
        return json_incref(val);
    if (json_is_object(t)) {
        json_t *o = json_object();
        const char *k;
        json_t *v;
        json_object_foreach(t, k, v) json_object_set_new(o, k, fill_template(v, val));
        return o;
    }
    if (json_is_array(t)) {
        json_t *a = json_array();
        size_t i;
        json_t *v;
        json_array_foreach(t, i, v) json_array_append_new(a, fill_template(v, val));
        return a;
    }
    return json_incref(t);
}

int gw_mqtt_encode(const struct gw_value *in, const struct gw_mqtt_write_fmt *fmt, char **out,
                   size_t *len, char *err, size_t errcap)
{
    char buf[64];
    *out = NULL;
    *len = 0;
    if (fmt->tmpl) {
        json_t *val = gw_value_to_json(in);
        if (!val) {
            snprintf(err, errcap, "input cannot be written as JSON (invalid UTF-8)");
            return GW_EINVAL;
        }
        json_t *doc = fill_template(fmt->tmpl, val);
        json_decref(val);
        *out = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
        json_decref(doc);
        if (!*out) {
            snprintf(err, errcap, "cannot render the JSON payload");
            return GW_EINVAL;
        }
        *len = strlen(*out);
        return 0;
    }
    const char *p = NULL;
    size_t n = 0;
    switch (in->type) {
    case GW_VALUE_NULL:
        p = "";
        break;
    case GW_VALUE_BOOL:
        p = in->b ? (fmt->true_text ? fmt->true_text : "true")
                  : (fmt->false_text ? fmt->false_text : "false");
        break;
    case GW_VALUE_INT:
        snprintf(buf, sizeof buf, "%" PRId64, in->i);
        p = buf;
        break;
    case GW_VALUE_UINT:
        snprintf(buf, sizeof buf, "%" PRIu64, in->u);
        p = buf;
        break;
    case GW_VALUE_DOUBLE:
        if (!isfinite(in->d)) {
            snprintf(err, errcap, "a non-finite number cannot be published as text");
            return GW_EINVAL;
        }
        fmt_double(in->d, buf, sizeof buf);
        p = buf;
        break;
    case GW_VALUE_STRING:
    case GW_VALUE_BYTES:
        *out = gw_malloc(in->s.len + 1);
        memcpy(*out, in->s.p, in->s.len);
        (*out)[in->s.len] = '\0';
        *len = in->s.len;
        return 0;
    default:
        *out = value_json_text(in, len);
        if (!*out) {
            snprintf(err, errcap, "input cannot be written as JSON (invalid UTF-8)");
            return GW_EINVAL;
        }
        return 0;
    }
    n = strlen(p);
    *out = gw_malloc(n + 1);
    memcpy(*out, p, n + 1);
    *len = n;
    return 0;
}
