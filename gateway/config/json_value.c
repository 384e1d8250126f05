/* SPDX-License-Identifier: Apache-2.0 */
/*
 * jansson values ↔ gw_value trees (gw/json.h), with the tagged forms of the conformance vectors
 * ({"$bytes": hex}, {"$int": "…"}, {"$double": "inf"}) for what JSON cannot say directly.
 * Used by the test broker, the MQTT adapter and REST bodies. Relies on gw_codec's value tree.
 */
#include "gw/json.h"
#include "text_value.h"
#include "gw/error.h"
#include "gw/mem.h"

#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* --- JSON → value --- */

int gw_config_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

char gw_config_unescape(char e)
{
    switch (e) {
    case 'b': return '\b';
    case 'f': return '\f';
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    default: return e; /* '"', '\\', '/' stand for themselves */
    }
}

size_t gw_config_put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int tagged_bytes(const char *s, size_t len, struct gw_value *out)
{
    if (len % 2)
        return GW_EINVAL;
    unsigned char *buf = gw_malloc(len / 2 + 1);
    for (size_t i = 0; i < len; i += 2) {
        int hi = gw_config_hexval(s[i]), lo = gw_config_hexval(s[i + 1]);
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

/*
 * An empty map or array (c, just made) with room for exactly n entries: the growth of
 * gw_value_array_add()/gw_value_map_set() (doubling from 4) would leave up to half of the
 * slots unused, 64 bytes each, and most maps in a configuration have 2 to 5 members.
 */
static void reserve(struct gw_value *c, size_t n)
{
    if (n == 0)
        return;
    c->c.items = gw_malloc(n * sizeof(*c->c.items));
    if (c->type == GW_VALUE_MAP) {
        c->c.keys = gw_malloc(n * sizeof(*c->c.keys));
        c->c.key_lens = gw_malloc(n * sizeof(*c->c.key_lens));
    }
    c->c.cap = n;
}

/* gw_json_to_value(); with take, each converted member or element is replaced by null. */
static int convert(json_t *json, struct gw_value *out, bool take)
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
    case JSON_ARRAY: {
        size_t n = json_array_size(json);
        *out = gw_value_array();
        reserve(out, n);
        for (size_t i = 0; i < n; i++) {
            struct gw_value *slot = gw_value_array_add(out);
            int rc = convert(json_array_get(json, i), slot, take);
            if (take)
                json_array_set_new(json, i, json_null());
            if (rc < 0) {
                gw_value_fini(out);
                return rc;
            }
        }
        return 0;
    }
    case JSON_OBJECT: {
        int rc = tagged(json, out);
        if (rc != 0)
            return rc < 0 ? rc : 0;
        *out = gw_value_map();
        reserve(out, json_object_size(json));
        for (void *it = json_object_iter(json); it; it = json_object_iter_next(json, it)) {
            struct gw_value tmp;
            rc = convert(json_object_iter_value(it), &tmp, take);
            if (take)
                json_object_iter_set_new(json, it, json_null());
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

int gw_json_to_value(json_t *json, struct gw_value *out)
{
    return convert(json, out, false);
}

int gw_json_take_value(json_t *json, struct gw_value *out)
{
    return convert(json, out, true);
}

/* --- JSON text → value (gw_config_take_value) --- */

/*
 * A recursive-descent reader over text jansson has already accepted, so it only needs to be
 * safe on anything else, not to diagnose it. It builds the same tree as convert() would from
 * jansson's: containers at their exact size (shrunk once complete), and an object that is a
 * tagged form ({"$int": "..."}) decoded by the same functions.
 */
struct text_reader {
    const char *start, *p, *end;
    const char *reported;                   /* where read() was last told */
    void (*read)(void *arg, size_t done);   /* NULL, or told of the bytes done with */
    void *arg;
    uint32_t *counts;                       /* container sizes (tr_count_all()) */
    size_t n_counts, counts_cap, next_count;
    char *buf;          /* scratch for decoded strings and number tokens */
    size_t buf_cap;
    unsigned depth;
};

static void tr_ws(struct text_reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static void tr_need(struct text_reader *r, size_t n)
{
    if (n > r->buf_cap) {
        r->buf_cap = n * 2;
        free(r->buf);
        r->buf = gw_malloc(r->buf_cap);
    }
}

static unsigned tr_u4(struct text_reader *r)
{
    unsigned v = 0;
    for (int i = 0; i < 4 && r->p < r->end; i++, r->p++) {
        int h = gw_config_hexval(*r->p);
        v = v * 16 + (unsigned)(h < 0 ? 0 : h);
    }
    return v;
}

/* Decodes the string at r->p (its opening quote) into r->buf (NUL-terminated); its length. */
static int tr_string(struct text_reader *r, size_t *len)
{
    if (r->p >= r->end || *r->p != '"')
        return GW_EINVAL;
    const char *q = r->p + 1;
    while (q < r->end && *q != '"') {
        if (*q == '\\' && ++q == r->end)
            break;
        q++;
    }
    if (q >= r->end)
        return GW_EINVAL;
    /* Decoding never grows valid text; the slack covers a truncated escape in other text. */
    tr_need(r, 2 * (size_t)(q - r->p) + 8);
    size_t n = 0;
    r->p++;
    while (r->p < q) {
        char c = *r->p++;
        if (c != '\\') {
            r->buf[n++] = c;
            continue;
        }
        char e = *r->p++;
        if (e == 'u') {
            unsigned cp = tr_u4(r);
            if (cp >= 0xD800 && cp < 0xDC00 && q - r->p >= 6 && r->p[0] == '\\' &&
                r->p[1] == 'u') {
                const char *save = r->p;
                r->p += 2;
                unsigned lo = tr_u4(r);
                if (lo >= 0xDC00 && lo < 0xE000)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else
                    r->p = save; /* not a pair (jansson refuses this text anyway) */
            }
            n += gw_config_put_utf8(r->buf + n, cp);
        } else {
            r->buf[n++] = gw_config_unescape(e);
        }
    }
    r->p = q + 1;
    r->buf[n] = '\0';
    *len = n;
    return 0;
}

/* A number token, as jansson reads it: an integer (int64) unless it has '.', 'e' or 'E'. */
static int tr_number(struct text_reader *r, struct gw_value *out)
{
    const char *start = r->p;
    bool real = false;
    while (r->p < r->end && *r->p && strchr("0123456789+-.eE", *r->p)) {
        if (*r->p == '.' || *r->p == 'e' || *r->p == 'E')
            real = true;
        r->p++;
    }
    size_t n = (size_t)(r->p - start);
    if (n == 0)
        return GW_EINVAL;
    tr_need(r, n + 1);
    memcpy(r->buf, start, n);
    r->buf[n] = '\0';
    char *end;
    errno = 0;
    if (!real) {
        long long v = strtoll(r->buf, &end, 10);
        if (errno || *end)
            return GW_EINVAL; /* jansson refuses integers beyond int64 */
        *out = gw_value_int(v);
        return 0;
    }
    /* strtod reads the locale's decimal point, JSON has '.' (jansson does the same swap). */
    const char *point = localeconv()->decimal_point;
    if (point && point[0] && point[0] != '.' && !point[1]) {
        char *dot = strchr(r->buf, '.');
        if (dot)
            *dot = point[0];
    }
    double d = strtod(r->buf, &end);
    if (*end || (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL)))
        return GW_EINVAL;
    *out = gw_value_double(d);
    return 0;
}

/*
 * Sizes of every container, in the order the reader opens them (document order), counted in one
 * pass before reading: the reader then allocates each at its exact size. A count is only a hint
 * (the reader grows a container past it), so text the counter does not understand costs nothing
 * but spare slots.
 */
#define TR_MAX_DEPTH 4096 /* jansson refuses more than 2048 */

static void tr_count_all(struct text_reader *r)
{
    uint32_t *stack = gw_malloc(TR_MAX_DEPTH * sizeof(*stack));
    unsigned depth = 0;
    bool opened = false; /* a container was just opened: the next token is its first member */
    for (const char *p = r->p; p < r->end; p++) {
        char c = *p;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        if (opened && c != '}' && c != ']')
            r->counts[stack[depth - 1]] = 1;
        opened = false;
        if (c == '{' || c == '[') {
            if (depth == TR_MAX_DEPTH)
                break;
            if (r->n_counts == r->counts_cap) {
                r->counts_cap = r->counts_cap ? r->counts_cap * 2 : 64;
                r->counts = gw_realloc(r->counts, r->counts_cap * sizeof(*r->counts));
            }
            r->counts[r->n_counts] = 0;
            stack[depth++] = (uint32_t)r->n_counts++;
            opened = true;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                break;
            depth--;
        } else if (c == ',') {
            if (depth > 0)
                r->counts[stack[depth - 1]]++;
        } else if (c == '"') {
            for (p++; p < r->end && *p != '"'; p++)
                if (*p == '\\')
                    p++;
            if (p >= r->end)
                break;
        }
    }
    free(stack);
}

/* Gives a container its final size: the spare slots of the doubling growth go back. */
static void tr_shrink(struct gw_value *c)
{
    if (c->c.cap <= c->c.n || c->c.index)
        return; /* a map with an index keeps its slots (the index holds positions only) */
    if (c->c.n == 0) {
        free(c->c.items);
        free(c->c.keys);
        free(c->c.key_lens);
        c->c.items = NULL;
        c->c.keys = NULL;
        c->c.key_lens = NULL;
        c->c.cap = 0;
        return;
    }
    c->c.items = gw_realloc(c->c.items, c->c.n * sizeof(*c->c.items));
    if (c->type == GW_VALUE_MAP) {
        c->c.keys = gw_realloc(c->c.keys, c->c.n * sizeof(*c->c.keys));
        c->c.key_lens = gw_realloc(c->c.key_lens, c->c.n * sizeof(*c->c.key_lens));
    }
    c->c.cap = c->c.n;
}

/* A map of one member that is a tagged form becomes that value (as tagged() decides). */
static int tr_tagged(struct gw_value *map)
{
    if (map->c.n != 1 || map->c.items[0].type != GW_VALUE_STRING)
        return 0;
    const char *k = map->c.keys[0];
    if (strlen(k) != map->c.key_lens[0])
        return 0; /* jansson keys have no NUL; such a key is no tag */
    const struct gw_value *v = &map->c.items[0];
    struct gw_value t = GW_VALUE_INIT_NULL;
    int rc;
    if (strcmp(k, "$bytes") == 0)
        rc = tagged_bytes(v->s.p, v->s.len, &t);
    else if (strcmp(k, "$int") == 0)
        rc = tagged_int(v->s.p, v->s.len, &t);
    else if (strcmp(k, "$double") == 0)
        rc = tagged_double(v->s.p, &t);
    else
        return 0;
    gw_value_fini(map);
    if (rc < 0)
        return rc;
    *map = t;
    return 0;
}

static int tr_value(struct text_reader *r, struct gw_value *out)
{
    *out = GW_VALUE_INIT_NULL;
    tr_ws(r);
    if (r->p >= r->end || ++r->depth > TR_MAX_DEPTH)
        return GW_EINVAL;
    int rc = 0;
    char c = *r->p;
    if (c == '{' || c == '[') {
        bool map = c == '{';
        char close = map ? '}' : ']';
        *out = map ? gw_value_map() : gw_value_array();
        r->p++;
        if (r->next_count < r->n_counts)
            reserve(out, r->counts[r->next_count++]);
        tr_ws(r);
        if (r->p < r->end && *r->p == close) {
            r->p++;
        } else {
            for (;;) {
                struct gw_value *slot;
                if (map) {
                    size_t klen;
                    tr_ws(r);
                    if ((rc = tr_string(r, &klen)) < 0)
                        break;
                    tr_ws(r);
                    if (r->p >= r->end || *r->p != ':') {
                        rc = GW_EINVAL;
                        break;
                    }
                    r->p++;
                    slot = gw_value_map_set(out, r->buf, klen);
                } else {
                    slot = gw_value_array_add(out);
                }
                if ((rc = tr_value(r, slot)) < 0)
                    break;
                if (r->read && r->p - r->reported >= (1 << 20)) {
                    r->read(r->arg, (size_t)(r->p - r->start));
                    r->reported = r->p;
                }
                tr_ws(r);
                if (r->p < r->end && *r->p == ',') {
                    r->p++;
                    continue;
                }
                if (r->p < r->end && *r->p == close) {
                    r->p++;
                    break;
                }
                rc = GW_EINVAL;
                break;
            }
        }
        if (rc == 0) {
            tr_shrink(out);
            if (map)
                rc = tr_tagged(out);
        }
    } else if (c == '"') {
        size_t len;
        rc = tr_string(r, &len);
        if (rc == 0)
            *out = gw_value_str(r->buf, len);
    } else if (r->end - r->p >= 4 && memcmp(r->p, "true", 4) == 0) {
        *out = gw_value_bool(true);
        r->p += 4;
    } else if (r->end - r->p >= 5 && memcmp(r->p, "false", 5) == 0) {
        *out = gw_value_bool(false);
        r->p += 5;
    } else if (r->end - r->p >= 4 && memcmp(r->p, "null", 4) == 0) {
        r->p += 4;
    } else {
        rc = tr_number(r, out);
    }
    r->depth--;
    if (rc < 0)
        gw_value_fini(out);
    return rc;
}

int gw_json_text_to_value(const char *text, size_t len, struct gw_value *out,
                          void (*read)(void *arg, size_t done), void *arg)
{
    struct text_reader r = {.start = text, .p = text, .end = text + len, .reported = text,
                            .read = read, .arg = arg};
    tr_count_all(&r);
    int rc = tr_value(&r, out);
    if (rc == 0) {
        tr_ws(&r);
        if (r.p != r.end) {
            gw_value_fini(out);
            rc = GW_EINVAL;
        }
    }
    free(r.buf);
    free(r.counts);
    return rc;
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
