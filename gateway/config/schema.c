/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON Schema validator (gw/schema.h). gw_schema_new() compiles a schema document into a
 * graph of nodes, one per subschema, keyed by schema location (a JSON Pointer into the document):
 * every keyword's value is checked and converted once (numbers, regexes, property tables), $refs
 * are resolved to nodes, and anything the validator cannot check is refused with its location.
 * gw_schema_validate() then walks node and instance together and reports every error with the
 * instance pointer, the keyword's schema location and a plain-words message. Only jansson and
 * the C library (regcomp) are used. Called by the daemon's config loader and by tests.
 */
#include "gw/schema.h"
#include "gw/error.h"
#include "gw/mem.h"

#include <math.h>
#include <regex.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- Compiled form --- */

enum {
    T_NULL = 1 << 0,
    T_BOOLEAN = 1 << 1,
    T_OBJECT = 1 << 2,
    T_ARRAY = 1 << 3,
    T_NUMBER = 1 << 4,
    T_STRING = 1 << 5,
    T_INTEGER = 1 << 6,
};

static const char *const type_names[] = {"null",   "boolean", "object", "array",
                                         "number", "string",  "integer"};
#define N_TYPES 7

struct regex_entry {
    char *src;          /* the pattern as written in the schema */
    regex_t re;
};

struct node;

struct node_list {
    struct node **v;
    size_t n;
};

struct prop {
    char *name;
    size_t len;
    struct node *schema;
};

struct pat {
    struct regex_entry *re;
    struct node *schema;
};

struct dep_req {
    char *name;
    size_t len;
    json_t *req;        /* borrowed array of strings */
};

struct node {
    char *path;             /* schema location, "" = root */
    json_t *json;           /* borrowed from the schema document */
    bool is_bool, bool_val;
    bool ref_only;          /* draft-07: $ref hides its siblings */
    const char *ref;        /* borrowed $ref text */
    struct node *ref_target;
    unsigned types;         /* 0 = no "type" keyword */
    json_t *enum_, *const_; /* borrowed */
    struct prop *props;
    size_t nprops;
    struct node *additional_props;
    struct pat *pats;
    size_t npats;
    struct node *property_names;
    long long min_props, max_props;         /* -1 = absent */
    json_t *required;                       /* borrowed array of strings */
    struct dep_req *dep_req;
    size_t ndep_req;
    struct prop *dep_schemas;
    size_t ndep_schemas;
    struct node_list prefix;                /* prefixItems, or draft-07 items array */
    struct node *items;                     /* items after the prefix */
    struct node *contains;
    long long min_contains, max_contains;   /* min defaults to 1; max -1 = absent */
    long long min_items, max_items;
    bool unique;
    json_t *minimum, *maximum, *ex_minimum, *ex_maximum, *multiple_of; /* borrowed */
    long long min_len, max_len;
    struct regex_entry *pattern;
    struct node_list all_of, any_of, one_of;
    struct node *not_, *if_, *then_, *else_;
    int color;              /* cycle check */
};

struct gw_schema {
    json_t *root;
    enum gw_schema_dialect dialect;
    struct node *root_node;
    struct node **nodes;    /* hash table by path, open addressing; owns the nodes */
    size_t cap, n;
    struct regex_entry **regexes;
    size_t nregex;
};

/* --- Small helpers --- */

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

static struct node **node_slot(const struct gw_schema *s, const char *path)
{
    size_t mask = s->cap - 1;
    for (size_t i = hash_str(path) & mask;; i = (i + 1) & mask) {
        if (!s->nodes[i] || strcmp(s->nodes[i]->path, path) == 0)
            return &s->nodes[i];
    }
}

static void node_table_grow(struct gw_schema *s)
{
    size_t old_cap = s->cap;
    struct node **old = s->nodes;
    s->cap = old_cap ? old_cap * 2 : 64;
    s->nodes = gw_calloc(s->cap, sizeof(*s->nodes));
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i])
            *node_slot(s, old[i]->path) = old[i];
    }
    free(old);
}

static char *path_join(const char *base, const char *key)
{
    char *p = gw_strdup(base);
    gw_config_pointer_append(&p, key, strlen(key));
    return p;
}

static const char *json_type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "value";
}

/* Compact JSON text of j, cut to about 60 bytes; caller frees. */
static char *preview(const json_t *j)
{
    char *s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    if (!s)
        return gw_strdup("(value)");
    size_t len = strlen(s);
    if (len > 60) {
        char *t = gw_malloc(64);
        size_t cut = 56;
        while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
            cut--; /* do not split a UTF-8 sequence */
        memcpy(t, s, cut);
        memcpy(t + cut, "...", 4);
        free(s);
        return t;
    }
    char *t = gw_strdup(s);
    free(s);
    return t;
}

/* A string value quoted for a message (NULs and controls shown as JSON escapes). */
static char *quote(const char *p, size_t len)
{
    json_t *j = json_stringn_nocheck(p, len);
    char *s = preview(j);
    json_decref(j);
    return s;
}

static bool is_number(const json_t *j)
{
    return json_is_integer(j) || json_is_real(j);
}

static long double num_value(const json_t *j)
{
    return json_is_integer(j) ? (long double)json_integer_value(j)
                              : (long double)json_real_value(j);
}

/* Exact comparison of two JSON numbers: -1, 0, 1. */
static int num_cmp(const json_t *a, const json_t *b)
{
    if (json_is_integer(a) && json_is_integer(b)) {
        json_int_t x = json_integer_value(a), y = json_integer_value(b);
        return x < y ? -1 : x > y;
    }
    long double x = num_value(a), y = num_value(b);
    return x < y ? -1 : x > y;
}

/* JSON equality: numbers by value (1 == 1.0), objects regardless of member order. */
static bool json_eq(json_t *a, json_t *b)
{
    if (is_number(a) && is_number(b))
        return num_cmp(a, b) == 0;
    if (json_typeof(a) != json_typeof(b))
        return false;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++) {
            if (!json_eq(json_array_get(a, i), json_array_get(b, i)))
                return false;
        }
        return true;
    case JSON_OBJECT:
        if (json_object_size(a) != json_object_size(b))
            return false;
        for (void *it = json_object_iter(a); it; it = json_object_iter_next(a, it)) {
            json_t *o = json_object_getn(b, json_object_iter_key(it), json_object_iter_key_len(it));
            if (!o || !json_eq(json_object_iter_value(it), o))
                return false;
        }
        return true;
    default:
        return true; /* true, false, null: same type is equal */
    }
}

static unsigned instance_types(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: return T_OBJECT;
    case JSON_ARRAY: return T_ARRAY;
    case JSON_STRING: return T_STRING;
    case JSON_INTEGER: return T_NUMBER | T_INTEGER;
    case JSON_REAL: {
        double d = json_real_value(j);
        return T_NUMBER | (d == floor(d) ? T_INTEGER : 0);
    }
    case JSON_TRUE:
    case JSON_FALSE: return T_BOOLEAN;
    case JSON_NULL: return T_NULL;
    }
    return 0;
}

/* "string", "string or null", "integer, string or null" */
static void types_text(unsigned mask, char *buf, size_t cap)
{
    const char *names[N_TYPES];
    size_t n = 0;
    for (int i = 0; i < N_TYPES; i++) {
        if (mask & (1u << i))
            names[n++] = type_names[i];
    }
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        const char *sep = i == 0 ? "" : (i + 1 == n ? " or " : ", ");
        int w = snprintf(buf + used, cap - used, "%s%s", sep, names[i]);
        if (w < 0 || (size_t)w >= cap - used)
            break;
        used += (size_t)w;
    }
}

static size_t utf8_length(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            n++;
    }
    return n;
}

/* Optimal-string-alignment distance, for "did you mean". Long inputs are not compared. */
static size_t edit_distance(const char *a, size_t la, const char *b, size_t lb)
{
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    size_t d[65][65];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best)
                best = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < best)
                best = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    }
    return d[la][lb];
}

/* Every keyword compile_keyword() accepts, for "did you mean". */
static const char *const known_kw[] = {
    "type", "enum", "const", "properties", "patternProperties", "additionalProperties",
    "propertyNames", "required", "minProperties", "maxProperties", "dependentRequired",
    "dependentSchemas", "dependencies", "items", "prefixItems", "additionalItems", "contains",
    "minContains", "maxContains", "minItems", "maxItems", "uniqueItems", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "pattern",
    "allOf", "anyOf", "oneOf", "not", "if", "then", "else", "$ref", "$defs", "definitions",
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "readOnly",
    "writeOnly", "deprecated", NULL};

/* --- Compiler --- */

struct unknown_kw {
    char *path;         /* location of the member */
    char *name;
};

struct compiler {
    struct gw_schema *s;
    struct gw_diag_list *diags;
    int errors;
    struct node **refs;         /* nodes whose $ref awaits resolution */
    size_t nrefs, refs_cap;
    char **targets;             /* resolved $ref target paths */
    size_t ntargets, targets_cap;
    struct unknown_kw *unknown;
    size_t nunknown, unknown_cap;
};

#define GROW(arr, n, cap)                                                                         \
    do {                                                                                          \
        if ((n) == (cap)) {                                                                       \
            (cap) = (cap) ? (cap) * 2 : 8;                                                        \
            (arr) = gw_realloc((arr), (cap) * sizeof(*(arr)));                                    \
        }                                                                                         \
    } while (0)

static void cerr(struct compiler *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void cerr(struct compiler *c, const char *path, const char *fmt, ...)
{
    c->errors++;
    if (!c->diags)
        return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gw_diag_add(c->diags, path, path, "%s", msg);
}

static struct node *compile(struct compiler *c, const char *path, json_t *json);

/* --- Regular expressions --- */

/*
 * Translates the ECMA-262 pattern src into a POSIX ERE (heap string) or returns NULL with *why
 * set. See gw/schema.h for what is translated and what is refused.
 */
static char *ecma_to_posix(const char *src, const char **why)
{
    size_t len = strlen(src);
    char *out = gw_malloc(len * 12 + 1);
    size_t o = 0;
    bool in_bracket = false, after_quant = false;
    for (size_t i = 0; i < len; i++) {
        char ch = src[i];
        bool quant = false;
        if (ch == '\\' && i + 1 < len) {
            char e = src[++i];
            const char *rep = NULL;
            switch (e) {
            case 'd': rep = in_bracket ? "0-9" : "[0-9]"; break;
            case 'w': rep = in_bracket ? "A-Za-z0-9_" : "[A-Za-z0-9_]"; break;
            case 's': rep = in_bracket ? " \t\n\r\f\v" : "[ \t\n\r\f\v]"; break;
            case 'D': rep = in_bracket ? NULL : "[^0-9]"; break;
            case 'W': rep = in_bracket ? NULL : "[^A-Za-z0-9_]"; break;
            case 'S': rep = in_bracket ? NULL : "[^ \t\n\r\f\v]"; break;
            case 'n': rep = "\n"; break;
            case 't': rep = "\t"; break;
            case 'r': rep = "\r"; break;
            case 'f': rep = "\f"; break;
            case 'v': rep = "\v"; break;
            default: break;
            }
            if (!rep && (e == 'D' || e == 'W' || e == 'S')) {
                *why = "\\D, \\W and \\S inside [...] cannot be expressed in POSIX regex";
                goto fail;
            }
            if (rep) {
                memcpy(out + o, rep, strlen(rep));
                o += strlen(rep);
            } else if (e == 'u' || e == 'x') {
                size_t nd = e == 'u' ? 4 : 2;
                unsigned cp = 0;
                for (size_t k = 0; k < nd; k++) {
                    char h = i + 1 + k < len ? src[i + 1 + k] : '\0';
                    int v = (h >= '0' && h <= '9')   ? h - '0'
                            : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                            : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                                     : -1;
                    if (v < 0) {
                        *why = "bad \\u or \\x escape";
                        goto fail;
                    }
                    cp = cp * 16 + (unsigned)v;
                }
                i += nd;
                if (cp == 0 || (in_bracket && cp >= 0x80) || (cp >= 0xD800 && cp < 0xE000)) {
                    *why = "\\u escape of NUL, a surrogate, or a non-ASCII character inside [...]";
                    goto fail;
                }
                if (cp < 0x80) {
                    if (!in_bracket && strchr(".[]()*+?{}|^$\\", (int)cp))
                        out[o++] = '\\';
                    out[o++] = (char)cp;
                } else if (cp < 0x800) {
                    out[o++] = (char)(0xC0 | (cp >> 6));
                    out[o++] = (char)(0x80 | (cp & 0x3F));
                } else {
                    out[o++] = (char)(0xE0 | (cp >> 12));
                    out[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    out[o++] = (char)(0x80 | (cp & 0x3F));
                }
            } else if (e >= '0' && e <= '9' && !in_bracket) {
                if (e == '0') {
                    *why = "\\0 is not supported";
                    goto fail;
                }
                out[o++] = '\\'; /* backreference */
                out[o++] = e;
            } else if (in_bracket) {
                /* A backslash is literal inside a POSIX bracket: use collating symbols. */
                if (e == ']' || e == '-' || e == '^' || e == '[') {
                    out[o++] = '[';
                    out[o++] = '.';
                    out[o++] = e;
                    out[o++] = '.';
                    out[o++] = ']';
                } else if (e == 'b') {
                    out[o++] = '\b';
                } else {
                    out[o++] = e;
                }
            } else if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z')) {
                if (e == 'b' || e == 'B') {
                    out[o++] = '\\'; /* word boundary: GNU regex has it too */
                    out[o++] = e;
                } else {
                    *why = "unsupported escape sequence";
                    goto fail;
                }
            } else {
                out[o++] = '\\';
                out[o++] = e;
            }
        } else if (in_bracket) {
            if (ch == ']')
                in_bracket = false;
            out[o++] = ch;
        } else if (ch == '[') {
            in_bracket = true;
            out[o++] = ch;
            if (i + 1 < len && src[i + 1] == '^')
                out[o++] = src[++i];
            if (i + 1 < len && src[i + 1] == ']') {
                *why = "empty character class [] is not supported";
                goto fail;
            }
        } else if (ch == '(' && i + 1 < len && src[i + 1] == '?') {
            if (i + 2 < len && src[i + 2] == ':') {
                out[o++] = '(';
                i += 2;
            } else {
                *why = "lookahead, lookbehind and named groups are not supported";
                goto fail;
            }
        } else if (ch == '?' && after_quant) {
            /* lazy quantifier: matching or not does not depend on laziness */
        } else {
            quant = ch == '*' || ch == '+' || ch == '?' || ch == '}';
            out[o++] = ch;
        }
        after_quant = quant;
    }
    out[o] = '\0';
    return out;
fail:
    free(out);
    return NULL;
}

static struct regex_entry *regex_get(struct compiler *c, const char *path, const char *src)
{
    struct gw_schema *s = c->s;
    for (size_t i = 0; i < s->nregex; i++) {
        if (strcmp(s->regexes[i]->src, src) == 0)
            return s->regexes[i];
    }
    const char *why = NULL;
    char *posix = ecma_to_posix(src, &why);
    if (!posix) {
        cerr(c, path, "pattern \"%s\": %s", src, why);
        return NULL;
    }
    struct regex_entry *r = gw_calloc(1, sizeof(*r));
    int rc = regcomp(&r->re, posix, REG_EXTENDED | REG_NOSUB);
    free(posix);
    if (rc != 0) {
        char msg[128];
        regerror(rc, &r->re, msg, sizeof(msg));
        cerr(c, path, "pattern \"%s\" is not a supported regular expression: %s", src, msg);
        free(r);
        return NULL;
    }
    r->src = gw_strdup(src);
    s->regexes = gw_realloc(s->regexes, (s->nregex + 1) * sizeof(*s->regexes));
    s->regexes[s->nregex++] = r;
    return r;
}

static bool regex_match(const struct regex_entry *r, const char *p, size_t len)
{
    regmatch_t m[1];
    m[0].rm_so = 0;
    m[0].rm_eo = (regoff_t)len;
    return regexec(&r->re, p, 1, m, REG_STARTEND) == 0;
}

/* --- Keyword compilation --- */

static bool get_count(struct compiler *c, const char *path, const char *kw, json_t *v,
                      long long *out)
{
    if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
        json_real_value(v) >= 0 && json_real_value(v) < 9e18) {
        *out = (long long)json_real_value(v);
        return true;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        cerr(c, path, "%s must be a non-negative integer", kw);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}

static void compile_list(struct compiler *c, const char *path, const char *kw, json_t *v,
                         struct node_list *out, bool allow_empty)
{
    if (!json_is_array(v) || (json_array_size(v) == 0 && !allow_empty)) {
        cerr(c, path, "%s must be a non-empty array of schemas", kw);
        return;
    }
    out->n = json_array_size(v);
    out->v = gw_calloc(out->n ? out->n : 1, sizeof(*out->v));
    for (size_t i = 0; i < out->n; i++) {
        char *base = gw_strdup(path);
        char idx[24];
        int w = snprintf(idx, sizeof(idx), "%zu", i);
        gw_config_pointer_append(&base, idx, (size_t)w);
        out->v[i] = compile(c, base, json_array_get(v, i));
        free(base);
    }
}

static bool string_array(json_t *v, bool unique)
{
    if (!json_is_array(v))
        return false;
    for (size_t i = 0; i < json_array_size(v); i++) {
        if (!json_is_string(json_array_get(v, i)))
            return false;
        for (size_t j = 0; unique && j < i; j++) {
            if (json_eq(json_array_get(v, i), json_array_get(v, j)))
                return false;
        }
    }
    return true;
}

static void compile_type(struct compiler *c, struct node *n, const char *kpath, json_t *v)
{
    size_t cnt = json_is_array(v) ? json_array_size(v) : 1;
    if (json_is_array(v) && cnt == 0) {
        cerr(c, kpath, "type must not be an empty array");
        return;
    }
    for (size_t i = 0; i < cnt; i++) {
        json_t *t = json_is_array(v) ? json_array_get(v, i) : v;
        if (!json_is_string(t)) {
            cerr(c, kpath, "type must be a type name or an array of type names");
            return;
        }
        int k;
        for (k = 0; k < N_TYPES; k++) {
            if (strcmp(json_string_value(t), type_names[k]) == 0)
                break;
        }
        if (k == N_TYPES) {
            cerr(c, kpath,
                 "unknown type \"%s\" (types are null, boolean, object, array, number, string, "
                 "integer)",
                 json_string_value(t));
            return;
        }
        n->types |= 1u << k;
    }
}

/* Keywords the validator knows but does not check: refused by name. */
static const char *const unsupported_kw[] = {
    "format", "unevaluatedProperties", "unevaluatedItems", "$anchor", "$dynamicRef",
    "$dynamicAnchor", "$recursiveRef", "$recursiveAnchor", "$vocabulary", "contentMediaType",
    "contentEncoding", "contentSchema", NULL};

static const char *const annotation_kw[] = {"title",   "description", "default", "examples",
                                            "$schema", "$id",         "$comment", "readOnly",
                                            "writeOnly", "deprecated", NULL};

static bool in_list(const char *const *list, const char *k)
{
    for (; *list; list++) {
        if (strcmp(*list, k) == 0)
            return true;
    }
    return false;
}

static void compile_props(struct compiler *c, const char *kpath, json_t *v, struct prop **out,
                          size_t *nout, const char *kw)
{
    if (!json_is_object(v)) {
        cerr(c, kpath, "%s must be an object of schemas", kw);
        return;
    }
    *nout = json_object_size(v);
    *out = gw_calloc(*nout ? *nout : 1, sizeof(**out));
    size_t i = 0;
    for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it), i++) {
        const char *k = json_object_iter_key(it);
        size_t kl = json_object_iter_key_len(it);
        char *p = gw_strdup(kpath);
        gw_config_pointer_append(&p, k, kl);
        (*out)[i].name = gw_malloc(kl + 1);
        memcpy((*out)[i].name, k, kl + 1);
        (*out)[i].len = kl;
        (*out)[i].schema = compile(c, p, json_object_iter_value(it));
        free(p);
    }
}

static void compile_defs(struct compiler *c, const char *kpath, json_t *v, const char *kw)
{
    if (!json_is_object(v)) {
        cerr(c, kpath, "%s must be an object of schemas", kw);
        return;
    }
    for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
        char *p = gw_strdup(kpath);
        gw_config_pointer_append(&p, json_object_iter_key(it), json_object_iter_key_len(it));
        compile(c, p, json_object_iter_value(it));
        free(p);
    }
}

static void compile_keyword(struct compiler *c, struct node *n, const char *k, size_t klen,
                            json_t *v, json_t *obj)
{
    bool d7 = c->s->dialect == GW_SCHEMA_DRAFT7;
    char *kpath = gw_strdup(n->path);
    gw_config_pointer_append(&kpath, k, klen);
    if (strlen(k) != klen) {
        cerr(c, kpath, "keyword name contains a NUL character");
    } else if (in_list(annotation_kw, k)) {
        /* accepted, not checked */
    } else if (in_list(unsupported_kw, k)) {
        cerr(c, kpath, "unsupported keyword \"%s\" (this validator cannot check it)", k);
    } else if (strcmp(k, "type") == 0) {
        compile_type(c, n, kpath, v);
    } else if (strcmp(k, "enum") == 0) {
        if (!json_is_array(v))
            cerr(c, kpath, "enum must be an array");
        else
            n->enum_ = v;
    } else if (strcmp(k, "const") == 0) {
        n->const_ = v;
    } else if (strcmp(k, "properties") == 0) {
        compile_props(c, kpath, v, &n->props, &n->nprops, k);
    } else if (strcmp(k, "patternProperties") == 0) {
        if (!json_is_object(v)) {
            cerr(c, kpath, "patternProperties must be an object of schemas");
        } else {
            n->pats = gw_calloc(json_object_size(v) + 1, sizeof(*n->pats));
            for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
                char *p = gw_strdup(kpath);
                gw_config_pointer_append(&p, json_object_iter_key(it),
                                         json_object_iter_key_len(it));
                struct regex_entry *re = regex_get(c, p, json_object_iter_key(it));
                struct node *sub = compile(c, p, json_object_iter_value(it));
                if (re) {
                    n->pats[n->npats].re = re;
                    n->pats[n->npats].schema = sub;
                    n->npats++;
                }
                free(p);
            }
        }
    } else if (strcmp(k, "additionalProperties") == 0) {
        n->additional_props = compile(c, kpath, v);
    } else if (strcmp(k, "propertyNames") == 0) {
        n->property_names = compile(c, kpath, v);
    } else if (strcmp(k, "required") == 0) {
        if (!string_array(v, true))
            cerr(c, kpath, "required must be an array of distinct strings");
        else
            n->required = v;
    } else if (strcmp(k, "minProperties") == 0) {
        get_count(c, kpath, k, v, &n->min_props);
    } else if (strcmp(k, "maxProperties") == 0) {
        get_count(c, kpath, k, v, &n->max_props);
    } else if (strcmp(k, "dependentRequired") == 0 || strcmp(k, "dependentSchemas") == 0 ||
               (d7 && strcmp(k, "dependencies") == 0)) {
        if (!json_is_object(v)) {
            cerr(c, kpath, "%s must be an object", k);
        } else {
            bool want_req = strcmp(k, "dependentSchemas") != 0;
            bool want_schema = strcmp(k, "dependentRequired") != 0;
            for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it)) {
                const char *name = json_object_iter_key(it);
                size_t nl = json_object_iter_key_len(it);
                json_t *dv = json_object_iter_value(it);
                char *p = gw_strdup(kpath);
                gw_config_pointer_append(&p, name, nl);
                if (want_req && json_is_array(dv)) {
                    if (!string_array(dv, true)) {
                        cerr(c, p, "%s entries must be arrays of distinct strings", k);
                    } else {
                        n->dep_req = gw_realloc(n->dep_req, (n->ndep_req + 1) *
                                                                sizeof(*n->dep_req));
                        struct dep_req *d = &n->dep_req[n->ndep_req++];
                        d->name = gw_malloc(nl + 1);
                        memcpy(d->name, name, nl + 1);
                        d->len = nl;
                        d->req = dv;
                    }
                } else if (want_schema && (json_is_object(dv) || json_is_boolean(dv))) {
                    n->dep_schemas = gw_realloc(n->dep_schemas, (n->ndep_schemas + 1) *
                                                                    sizeof(*n->dep_schemas));
                    struct prop *d = &n->dep_schemas[n->ndep_schemas++];
                    d->name = gw_malloc(nl + 1);
                    memcpy(d->name, name, nl + 1);
                    d->len = nl;
                    d->schema = compile(c, p, dv);
                } else {
                    cerr(c, p, "%s entries must be %s", k,
                         want_req && want_schema ? "arrays of strings or schemas"
                         : want_req              ? "arrays of strings"
                                                 : "schemas");
                }
                free(p);
            }
        }
    } else if (strcmp(k, "items") == 0) {
        if (json_is_array(v)) {
            if (!d7)
                cerr(c, kpath,
                     "items must be a schema in draft 2020-12 (use prefixItems for a tuple)");
            else
                compile_list(c, kpath, "items", v, &n->prefix, true);
        } else {
            n->items = compile(c, kpath, v);
        }
    } else if (strcmp(k, "prefixItems") == 0 && !d7) {
        compile_list(c, kpath, k, v, &n->prefix, false);
    } else if (strcmp(k, "additionalItems") == 0 && d7) {
        json_t *items = json_object_get(obj, "items");
        struct node *sub = compile(c, kpath, v);
        if (json_is_array(items))
            n->items = sub; /* only meaningful after an items array */
    } else if (strcmp(k, "contains") == 0) {
        n->contains = compile(c, kpath, v);
    } else if (strcmp(k, "minContains") == 0 && !d7) {
        get_count(c, kpath, k, v, &n->min_contains);
    } else if (strcmp(k, "maxContains") == 0 && !d7) {
        get_count(c, kpath, k, v, &n->max_contains);
    } else if (strcmp(k, "minItems") == 0) {
        get_count(c, kpath, k, v, &n->min_items);
    } else if (strcmp(k, "maxItems") == 0) {
        get_count(c, kpath, k, v, &n->max_items);
    } else if (strcmp(k, "uniqueItems") == 0) {
        if (!json_is_boolean(v))
            cerr(c, kpath, "uniqueItems must be true or false");
        else
            n->unique = json_is_true(v);
    } else if (strcmp(k, "minimum") == 0 || strcmp(k, "maximum") == 0 ||
               strcmp(k, "exclusiveMinimum") == 0 || strcmp(k, "exclusiveMaximum") == 0 ||
               strcmp(k, "multipleOf") == 0) {
        if (!is_number(v)) {
            cerr(c, kpath, "%s must be a number%s", k,
                 json_is_boolean(v) ? " (the draft-04 boolean form is not supported)" : "");
        } else if (k[0] == 'm' && k[1] == 'u' && num_value(v) <= 0) {
            cerr(c, kpath, "multipleOf must be greater than 0");
        } else if (strcmp(k, "minimum") == 0) {
            n->minimum = v;
        } else if (strcmp(k, "maximum") == 0) {
            n->maximum = v;
        } else if (strcmp(k, "exclusiveMinimum") == 0) {
            n->ex_minimum = v;
        } else if (strcmp(k, "exclusiveMaximum") == 0) {
            n->ex_maximum = v;
        } else {
            n->multiple_of = v;
        }
    } else if (strcmp(k, "minLength") == 0) {
        get_count(c, kpath, k, v, &n->min_len);
    } else if (strcmp(k, "maxLength") == 0) {
        get_count(c, kpath, k, v, &n->max_len);
    } else if (strcmp(k, "pattern") == 0) {
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            cerr(c, kpath, "pattern must be a string");
        else
            n->pattern = regex_get(c, kpath, json_string_value(v));
    } else if (strcmp(k, "allOf") == 0) {
        compile_list(c, kpath, k, v, &n->all_of, false);
    } else if (strcmp(k, "anyOf") == 0) {
        compile_list(c, kpath, k, v, &n->any_of, false);
    } else if (strcmp(k, "oneOf") == 0) {
        compile_list(c, kpath, k, v, &n->one_of, false);
    } else if (strcmp(k, "not") == 0) {
        n->not_ = compile(c, kpath, v);
    } else if (strcmp(k, "if") == 0) {
        n->if_ = compile(c, kpath, v);
    } else if (strcmp(k, "then") == 0) {
        n->then_ = compile(c, kpath, v);
    } else if (strcmp(k, "else") == 0) {
        n->else_ = compile(c, kpath, v);
    } else if (strcmp(k, "$ref") == 0) {
        if (!json_is_string(v)) {
            cerr(c, kpath, "$ref must be a string");
        } else {
            n->ref = json_string_value(v);
            n->ref_only = d7;
            GROW(c->refs, c->nrefs, c->refs_cap);
            c->refs[c->nrefs++] = n;
        }
    } else if (strcmp(k, "$defs") == 0 || strcmp(k, "definitions") == 0) {
        compile_defs(c, kpath, v, k);
    } else if (strcmp(k, "prefixItems") == 0 || strcmp(k, "minContains") == 0 ||
               strcmp(k, "maxContains") == 0) {
        cerr(c, kpath, "%s is a draft 2020-12 keyword; this schema is draft-07", k);
    } else if (strcmp(k, "additionalItems") == 0 || strcmp(k, "dependencies") == 0) {
        cerr(c, kpath, "%s is a draft-07 keyword; in draft 2020-12 use %s", k,
             k[0] == 'a' ? "prefixItems with items" : "dependentRequired or dependentSchemas");
    } else {
        /* Maybe a container that only serves as a $ref target: decided after resolution. */
        GROW(c->unknown, c->nunknown, c->unknown_cap);
        c->unknown[c->nunknown].path = kpath;
        c->unknown[c->nunknown].name = gw_strdup(k);
        c->nunknown++;
        return;
    }
    free(kpath);
}

static struct node *compile(struct compiler *c, const char *path, json_t *json)
{
    struct gw_schema *s = c->s;
    if ((s->n + 1) * 4 > s->cap * 3)
        node_table_grow(s);
    struct node **slot = node_slot(s, path);
    if (*slot)
        return *slot;
    struct node *n = gw_calloc(1, sizeof(*n));
    n->path = gw_strdup(path);
    n->json = json;
    n->min_props = n->max_props = n->max_contains = -1;
    n->min_items = n->max_items = n->min_len = n->max_len = -1;
    n->min_contains = 1;
    *slot = n;
    s->n++;
    if (json_is_boolean(json)) {
        n->is_bool = true;
        n->bool_val = json_is_true(json);
        return n;
    }
    if (!json_is_object(json)) {
        cerr(c, path, "a schema must be an object or a boolean, not %s", json_type_name(json));
        n->is_bool = true;
        n->bool_val = true;
        return n;
    }
    for (void *it = json_object_iter(json); it; it = json_object_iter_next(json, it))
        compile_keyword(c, n, json_object_iter_key(it), json_object_iter_key_len(it),
                        json_object_iter_value(it), json);
    if (n->min_items >= 0 && n->max_items >= 0 && n->min_items > n->max_items)
        cerr(c, path, "minItems %lld is greater than maxItems %lld", n->min_items, n->max_items);
    if (n->min_len >= 0 && n->max_len >= 0 && n->min_len > n->max_len)
        cerr(c, path, "minLength %lld is greater than maxLength %lld", n->min_len, n->max_len);
    return n;
}

/* Decodes %XX escapes of a URI fragment; NULL if malformed. */
static char *percent_decode(const char *s)
{
    size_t len = strlen(s);
    char *out = gw_malloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%') {
            unsigned v = 0;
            for (int k = 1; k <= 2; k++) {
                char h = i + (size_t)k < len ? s[i + (size_t)k] : '\0';
                int d = (h >= '0' && h <= '9')   ? h - '0'
                        : (h >= 'a' && h <= 'f') ? h - 'a' + 10
                        : (h >= 'A' && h <= 'F') ? h - 'A' + 10
                                                 : -1;
                if (d < 0) {
                    free(out);
                    return NULL;
                }
                v = v * 16 + (unsigned)d;
            }
            if (v == 0) {
                free(out);
                return NULL;
            }
            out[o++] = (char)v;
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

static void resolve_refs(struct compiler *c)
{
    for (size_t i = 0; i < c->nrefs; i++) {
        struct node *n = c->refs[i];
        char *kpath = path_join(n->path, "$ref");
        const char *r = n->ref;
        char *frag = NULL;
        if (r[0] != '#') {
            cerr(c, kpath,
                 "$ref \"%s\" is not supported: only references inside this document (\"#\" or "
                 "\"#/json/pointer\") are",
                 r);
        } else if (!(frag = percent_decode(r + 1))) {
            cerr(c, kpath, "$ref \"%s\" has a malformed %%-escape", r);
        } else if (frag[0] != '\0' && frag[0] != '/') {
            cerr(c, kpath, "$ref \"%s\": anchors (\"#name\") are not supported, use a JSON Pointer",
                 r);
        } else {
            json_t *target = gw_config_pointer_get(c->s->root, frag);
            if (!target) {
                cerr(c, kpath, "$ref \"%s\" points to nothing in this document", r);
            } else {
                n->ref_target = compile(c, frag, target);
                GROW(c->targets, c->ntargets, c->targets_cap);
                c->targets[c->ntargets++] = gw_strdup(frag);
            }
        }
        free(frag);
        free(kpath);
    }
}

static void check_unknown(struct compiler *c)
{
    for (size_t i = 0; i < c->nunknown; i++) {
        const char *p = c->unknown[i].path;
        size_t pl = strlen(p);
        bool used = false;
        for (size_t t = 0; t < c->ntargets && !used; t++) {
            const char *tp = c->targets[t];
            used = strncmp(tp, p, pl) == 0 && (tp[pl] == '\0' || tp[pl] == '/');
        }
        if (!used) {
            const char *name = c->unknown[i].name, *best = NULL;
            size_t best_d = SIZE_MAX, nl = strlen(name);
            for (const char *const *k = known_kw; *k; k++) {
                size_t d = edit_distance(name, nl, *k, strlen(*k));
                if (d < best_d) {
                    best_d = d;
                    best = *k;
                }
            }
            if (best && best_d <= (nl < 4 ? 1 : nl / 3 + 1))
                cerr(c, p, "unknown keyword \"%s\" (did you mean \"%s\"?)", name, best);
            else
                cerr(c, p, "unknown keyword \"%s\" (not a JSON Schema keyword this validator "
                     "supports)", name);
        }
    }
}

/* Edges that apply to the same instance location (no descent). */
static bool cycle_visit(struct compiler *c, struct node *n)
{
    if (!n || n->is_bool || n->color == 2)
        return false;
    if (n->color == 1) {
        cerr(c, n->path,
             "$ref cycle: this schema refers back to itself without descending into the value");
        return true;
    }
    n->color = 1;
    bool found = cycle_visit(c, n->ref_target);
    if (!n->ref_only) {
        struct node_list *lists[] = {&n->all_of, &n->any_of, &n->one_of};
        for (size_t l = 0; l < 3 && !found; l++) {
            for (size_t i = 0; i < lists[l]->n && !found; i++)
                found = cycle_visit(c, lists[l]->v[i]);
        }
        struct node *one[] = {n->not_, n->if_, n->then_, n->else_};
        for (size_t i = 0; i < 4 && !found; i++)
            found = cycle_visit(c, one[i]);
        for (size_t i = 0; i < n->ndep_schemas && !found; i++)
            found = cycle_visit(c, n->dep_schemas[i].schema);
    }
    n->color = 2;
    return found;
}

static enum gw_schema_dialect dialect_of(json_t *root, struct compiler *c)
{
    json_t *sv = json_is_object(root) ? json_object_get(root, "$schema") : NULL;
    if (!sv)
        return GW_SCHEMA_DRAFT2020;
    const char *u = json_string_value(sv);
    if (!u) {
        cerr(c, "/$schema", "$schema must be a string");
        return GW_SCHEMA_DRAFT2020;
    }
    const char *p = strstr(u, "://");
    p = p ? p + 3 : u;
    if (strncmp(p, "json-schema.org/draft-07/schema", 31) == 0 &&
        (p[31] == '\0' || strcmp(p + 31, "#") == 0))
        return GW_SCHEMA_DRAFT7;
    if (strncmp(p, "json-schema.org/draft/2020-12/schema", 36) == 0 &&
        (p[36] == '\0' || strcmp(p + 36, "#") == 0))
        return GW_SCHEMA_DRAFT2020;
    cerr(c, "/$schema",
         "unsupported $schema \"%s\" (supported: https://json-schema.org/draft/2020-12/schema, "
         "http://json-schema.org/draft-07/schema#)",
         u);
    return GW_SCHEMA_DRAFT2020;
}

static void node_free(struct node *n)
{
    free(n->path);
    for (size_t i = 0; i < n->nprops; i++)
        free(n->props[i].name);
    free(n->props);
    free(n->pats);
    for (size_t i = 0; i < n->ndep_req; i++)
        free(n->dep_req[i].name);
    free(n->dep_req);
    for (size_t i = 0; i < n->ndep_schemas; i++)
        free(n->dep_schemas[i].name);
    free(n->dep_schemas);
    free(n->prefix.v);
    free(n->all_of.v);
    free(n->any_of.v);
    free(n->one_of.v);
    free(n);
}

void gw_schema_free(struct gw_schema *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->cap; i++) {
        if (s->nodes[i])
            node_free(s->nodes[i]);
    }
    free(s->nodes);
    for (size_t i = 0; i < s->nregex; i++) {
        regfree(&s->regexes[i]->re);
        free(s->regexes[i]->src);
        free(s->regexes[i]);
    }
    free(s->regexes);
    json_decref(s->root);
    free(s);
}

int gw_schema_new(json_t *root, enum gw_schema_dialect dialect, struct gw_schema **out,
                  struct gw_diag_list *diags)
{
    *out = NULL;
    struct gw_schema *s = gw_calloc(1, sizeof(*s));
    s->root = json_incref(root);
    struct compiler c = {.s = s, .diags = diags};
    enum gw_schema_dialect declared = dialect_of(root, &c);
    s->dialect = dialect == GW_SCHEMA_AUTO ? declared : dialect;
    node_table_grow(s);
    s->root_node = compile(&c, "", root);
    resolve_refs(&c);
    check_unknown(&c);
    if (c.errors == 0 && !cycle_visit(&c, s->root_node)) {
        for (size_t i = 0; i < s->cap; i++) {
            if (s->nodes[i] && cycle_visit(&c, s->nodes[i]))
                break;
        }
    }
    for (size_t i = 0; i < c.ntargets; i++)
        free(c.targets[i]);
    free(c.targets);
    for (size_t i = 0; i < c.nunknown; i++) {
        free(c.unknown[i].path);
        free(c.unknown[i].name);
    }
    free(c.unknown);
    free(c.refs);
    if (c.errors) {
        gw_schema_free(s);
        return GW_ESCHEMA;
    }
    *out = s;
    return 0;
}

int gw_schema_load(const char *path, struct gw_schema **out, struct gw_diag_list *diags)
{
    *out = NULL;
    struct gw_config_doc *doc;
    int rc = gw_config_load(path, &doc, diags);
    if (rc < 0)
        return rc;
    size_t from = diags ? diags->n : 0;
    rc = gw_schema_new(gw_config_root(doc), GW_SCHEMA_AUTO, out, diags);
    if (diags)
        gw_config_locate(doc, diags, from);
    gw_config_free(doc);
    return rc;
}

enum gw_schema_dialect gw_schema_dialect_get(const struct gw_schema *schema)
{
    return schema->dialect;
}

/* --- Validation --- */

/*
 * Work limit of one validation. Alternatives that recurse (two anyOf branches that both $ref back)
 * can make validation exponential in the depth of the instance; past this many subschema visits
 * the validation stops with an error instead of hanging the daemon.
 */
#define MAX_STEPS 10000000ul

struct vctx {
    const struct gw_schema *s;
    char *ptr;              /* instance pointer, heap, NUL-terminated */
    size_t ptr_len;
    unsigned long steps;    /* subschema visits so far */
    bool aborted;           /* MAX_STEPS reached: every visit now fails */
};

static void ptr_push(struct vctx *c, const char *key, size_t len)
{
    gw_config_pointer_append(&c->ptr, key, len);
    c->ptr_len = strlen(c->ptr);
}

static void ptr_push_index(struct vctx *c, size_t i)
{
    char idx[24];
    int n = snprintf(idx, sizeof(idx), "%zu", i);
    ptr_push(c, idx, (size_t)n);
}

static void ptr_pop(struct vctx *c, size_t len)
{
    c->ptr[len] = '\0';
    c->ptr_len = len;
}

static void verr(struct vctx *c, struct gw_diag_list *out, const struct node *n, const char *kw,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void verr(struct vctx *c, struct gw_diag_list *out, const struct node *n, const char *kw,
                 const char *fmt, ...)
{
    char *kpath = gw_strdup(n->path);
    if (kw)
        gw_config_pointer_append(&kpath, kw, strlen(kw));
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    gw_diag_add(out, c->ptr, kpath, "%s", msg);
    free(kpath);
}

/*
 * Reports a failure: counts it, returns at once when only the verdict is wanted (out == NULL).
 * Callers that allocate message parts check !out themselves first, so nothing leaks.
 */
#define FAIL(kw, ...)                                                                             \
    do {                                                                                          \
        nerr++;                                                                                   \
        if (!out)                                                                                 \
            return nerr;                                                                          \
        verr(c, out, n, (kw), __VA_ARGS__);                                                       \
    } while (0)

/* Adds errors that sub-validation produced; returns early in verdict mode. */
#define SUB(expr)                                                                                 \
    do {                                                                                          \
        int sub_ = (expr);                                                                        \
        nerr += sub_;                                                                             \
        if (sub_ && !out)                                                                         \
            return nerr;                                                                          \
    } while (0)

static int v_node(struct vctx *c, const struct node *n, json_t *inst, struct gw_diag_list *out);

/* True if s can be listed without quotes: non-empty, no controls, spaces, commas or quotes. */
static bool plain_word(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || ch == ',' || ch == '"' || ch == '\\' || ch == 0x7F)
            return false;
    }
    return true;
}

/* "a, b, c" of a list of JSON values (strings bare), at most 16, into a heap string. */
static char *values_text(json_t *arr)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return gw_strdup("...");
    size_t n = json_array_size(arr);
    for (size_t i = 0; i < n && i < 16; i++) {
        json_t *v = json_array_get(arr, i);
        if (i)
            fputs(", ", f);
        if (json_is_string(v) && plain_word(json_string_value(v), json_string_length(v))) {
            fputs(json_string_value(v), f);
        } else {
            char *p = preview(v);
            fputs(p, f);
            free(p);
        }
    }
    if (n > 16)
        fprintf(f, ", ... (%zu more)", n - 16);
    fclose(f);
    return buf;
}

static void unknown_property(struct vctx *c, struct gw_diag_list *out, const struct node *n,
                             const char *key, size_t klen)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return;
    char *q = quote(key, klen);
    fprintf(f, "unknown property %s", q);
    free(q);
    const struct prop *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < n->nprops; i++) {
        size_t dd = edit_distance(key, klen, n->props[i].name, n->props[i].len);
        if (dd < best_d) {
            best_d = dd;
            best = &n->props[i];
        }
    }
    size_t limit = klen < 4 ? 1 : klen / 3 + 1;
    const char *sep = " (";
    if (best && best_d <= limit) {
        q = quote(best->name, best->len);
        fprintf(f, " (did you mean %s?", q);
        free(q);
        sep = " ";
    }
    if (n->nprops) {
        fprintf(f, "%sallowed: ", sep);
        for (size_t i = 0; i < n->nprops && i < 24; i++) {
            fputs(i ? ", " : "", f);
            if (plain_word(n->props[i].name, n->props[i].len)) {
                fputs(n->props[i].name, f);
            } else {
                q = quote(n->props[i].name, n->props[i].len);
                fputs(q, f);
                free(q);
            }
        }
        if (n->nprops > 24)
            fprintf(f, ", ... (%zu more)", n->nprops - 24);
        sep = "; ";
    }
    for (size_t i = 0; i < n->npats; i++) {
        fprintf(f, "%s%s\"%s\"", sep, i ? "" : "names matching ", n->pats[i].re->src);
        sep = ", ";
    }
    if (strcmp(sep, " (") != 0)
        fputc(')', f);
    fclose(f);
    verr(c, out, n, "additionalProperties", "%s", buf);
    free(buf);
}

static int v_object(struct vctx *c, const struct node *n, json_t *inst, struct gw_diag_list *out)
{
    int nerr = 0;
    size_t base = c->ptr_len;
    for (void *it = json_object_iter(inst); it; it = json_object_iter_next(inst, it)) {
        const char *k = json_object_iter_key(it);
        size_t kl = json_object_iter_key_len(it);
        json_t *v = json_object_iter_value(it);
        bool matched = false;
        ptr_push(c, k, kl);
        for (size_t i = 0; i < n->nprops; i++) {
            if (n->props[i].len == kl && memcmp(n->props[i].name, k, kl) == 0) {
                matched = true;
                int sub = v_node(c, n->props[i].schema, v, out);
                nerr += sub;
                if (sub && !out)
                    goto done;
                break;
            }
        }
        for (size_t i = 0; i < n->npats; i++) {
            if (regex_match(n->pats[i].re, k, kl)) {
                matched = true;
                int sub = v_node(c, n->pats[i].schema, v, out);
                nerr += sub;
                if (sub && !out)
                    goto done;
            }
        }
        if (!matched && n->additional_props) {
            const struct node *ap = n->additional_props;
            if (ap->is_bool && !ap->bool_val) {
                nerr++;
                if (!out)
                    goto done;
                unknown_property(c, out, n, k, kl);
            } else {
                int sub = v_node(c, ap, v, out);
                nerr += sub;
                if (sub && !out)
                    goto done;
            }
        }
        if (n->property_names) {
            json_t *name = json_stringn_nocheck(k, kl);
            struct gw_diag_list tmp;
            gw_diag_list_init(&tmp);
            int sub = v_node(c, n->property_names, name, out ? &tmp : NULL);
            json_decref(name);
            nerr += sub;
            if (sub && !out) {
                gw_diag_list_fini(&tmp);
                goto done;
            }
            for (size_t i = 0; i < tmp.n; i++) {
                char *q = quote(k, kl);
                gw_diag_add(out, c->ptr, tmp.items[i].keyword, "property name %s: %s", q,
                            tmp.items[i].message);
                free(q);
            }
            gw_diag_list_fini(&tmp);
        }
        ptr_pop(c, base);
    }
    if (n->required) {
        for (size_t i = 0; i < json_array_size(n->required); i++) {
            json_t *r = json_array_get(n->required, i);
            if (!json_object_getn(inst, json_string_value(r), json_string_length(r))) {
                if (!out)
                    return nerr + 1;
                char *q = quote(json_string_value(r), json_string_length(r));
                FAIL("required", "missing required property %s", q);
                free(q);
            }
        }
    }
    size_t np = json_object_size(inst);
    if (n->min_props >= 0 && np < (unsigned long long)n->min_props)
        FAIL("minProperties", "object has %zu propert%s, fewer than the minimum %lld", np,
             np == 1 ? "y" : "ies", n->min_props);
    if (n->max_props >= 0 && np > (unsigned long long)n->max_props)
        FAIL("maxProperties", "object has %zu propert%s, more than the maximum %lld", np,
             np == 1 ? "y" : "ies", n->max_props);
    for (size_t i = 0; i < n->ndep_req; i++) {
        const struct dep_req *d = &n->dep_req[i];
        if (!json_object_getn(inst, d->name, d->len))
            continue;
        for (size_t j = 0; j < json_array_size(d->req); j++) {
            json_t *r = json_array_get(d->req, j);
            if (!json_object_getn(inst, json_string_value(r), json_string_length(r))) {
                if (!out)
                    return nerr + 1;
                char *q1 = quote(json_string_value(r), json_string_length(r));
                char *q2 = quote(d->name, d->len);
                FAIL(c->s->dialect == GW_SCHEMA_DRAFT7 ? "dependencies" : "dependentRequired",
                     "missing property %s, which is required when %s is present", q1, q2);
                free(q1);
                free(q2);
            }
        }
    }
    for (size_t i = 0; i < n->ndep_schemas; i++) {
        if (json_object_getn(inst, n->dep_schemas[i].name, n->dep_schemas[i].len))
            SUB(v_node(c, n->dep_schemas[i].schema, inst, out));
    }
    return nerr;
done:
    ptr_pop(c, base);
    return nerr;
}

static int v_array(struct vctx *c, const struct node *n, json_t *inst, struct gw_diag_list *out)
{
    int nerr = 0;
    size_t base = c->ptr_len;
    size_t cnt = json_array_size(inst);
    for (size_t i = 0; i < cnt && i < n->prefix.n; i++) {
        ptr_push_index(c, i);
        int sub = v_node(c, n->prefix.v[i], json_array_get(inst, i), out);
        ptr_pop(c, base);
        SUB(sub);
    }
    if (n->items && cnt > n->prefix.n) {
        const struct node *it = n->items;
        if (it->is_bool && !it->bool_val) {
            FAIL(c->s->dialect == GW_SCHEMA_DRAFT7 ? "additionalItems" : "items",
                 "array has %zu items, at most %zu allowed", cnt, n->prefix.n);
        } else {
            for (size_t i = n->prefix.n; i < cnt; i++) {
                ptr_push_index(c, i);
                int sub = v_node(c, it, json_array_get(inst, i), out);
                ptr_pop(c, base);
                SUB(sub);
            }
        }
    }
    if (n->contains) {
        long long matches = 0;
        for (size_t i = 0; i < cnt; i++) {
            if (v_node(c, n->contains, json_array_get(inst, i), NULL) == 0)
                matches++;
        }
        if (matches < n->min_contains) {
            if (n->min_contains == 1)
                FAIL("contains", "no item matches the \"contains\" schema");
            else
                FAIL("minContains", "%lld items match the \"contains\" schema, at least %lld "
                     "required", matches, n->min_contains);
        }
        if (n->max_contains >= 0 && matches > n->max_contains)
            FAIL("maxContains", "%lld items match the \"contains\" schema, at most %lld allowed",
                 matches, n->max_contains);
    }
    if (n->min_items >= 0 && cnt < (unsigned long long)n->min_items)
        FAIL("minItems", "array has %zu item%s, fewer than the minimum %lld", cnt,
             cnt == 1 ? "" : "s", n->min_items);
    if (n->max_items >= 0 && cnt > (unsigned long long)n->max_items)
        FAIL("maxItems", "array has %zu item%s, more than the maximum %lld", cnt,
             cnt == 1 ? "" : "s", n->max_items);
    if (n->unique) {
        for (size_t i = 1; i < cnt; i++) {
            for (size_t j = 0; j < i; j++) {
                if (json_eq(json_array_get(inst, i), json_array_get(inst, j))) {
                    FAIL("uniqueItems", "items %zu and %zu are equal (items must be unique)", j,
                         i);
                    i = cnt; /* one report is enough */
                    break;
                }
            }
        }
    }
    return nerr;
}

static bool is_multiple(const json_t *v, const json_t *m)
{
    if (json_is_integer(v) && json_is_integer(m))
        return json_integer_value(v) % json_integer_value(m) == 0; /* m > 0, checked at load */
    long double q = num_value(v) / num_value(m);
    if (!isfinite(q))
        return false;
    long double r = nearbyintl(q);
    return fabsl(q - r) <= 1e-9L * (fabsl(q) > 1 ? fabsl(q) : 1);
}

static int v_number(struct vctx *c, const struct node *n, json_t *inst, struct gw_diag_list *out)
{
    int nerr = 0;
    char *val = NULL, *lim = NULL;
    const struct {
        json_t *limit;
        const char *kw;
        int bad_sign;       /* fails when num_cmp(inst, limit) has this sign ... */
        bool or_equal;      /* ... or is 0 */
        const char *fmt;
    } checks[] = {
        {n->minimum, "minimum", -1, false, "%s is less than the minimum %s"},
        {n->maximum, "maximum", 1, false, "%s is greater than the maximum %s"},
        {n->ex_minimum, "exclusiveMinimum", -1, true, "%s must be greater than %s"},
        {n->ex_maximum, "exclusiveMaximum", 1, true, "%s must be less than %s"},
    };
    for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        if (!checks[i].limit)
            continue;
        int cmp = num_cmp(inst, checks[i].limit);
        if (cmp == checks[i].bad_sign || (checks[i].or_equal && cmp == 0)) {
            nerr++;
            if (!out)
                return nerr;
            val = preview(inst);
            lim = preview(checks[i].limit);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
            verr(c, out, n, checks[i].kw, checks[i].fmt, val, lim);
#pragma GCC diagnostic pop
            free(val);
            free(lim);
        }
    }
    if (n->multiple_of && !is_multiple(inst, n->multiple_of)) {
        nerr++;
        if (!out)
            return nerr;
        val = preview(inst);
        lim = preview(n->multiple_of);
        verr(c, out, n, "multipleOf", "%s is not a multiple of %s", val, lim);
        free(val);
        free(lim);
    }
    return nerr;
}

static int v_string(struct vctx *c, const struct node *n, json_t *inst, struct gw_diag_list *out)
{
    int nerr = 0;
    const char *p = json_string_value(inst);
    size_t bytes = json_string_length(inst);
    if (n->min_len >= 0 || n->max_len >= 0) {
        size_t len = utf8_length(p, bytes);
        if (n->min_len >= 0 && len < (unsigned long long)n->min_len)
            FAIL("minLength", "string is %zu character%s long, shorter than the minimum %lld", len,
                 len == 1 ? "" : "s", n->min_len);
        if (n->max_len >= 0 && len > (unsigned long long)n->max_len)
            FAIL("maxLength", "string is %zu character%s long, longer than the maximum %lld", len,
                 len == 1 ? "" : "s", n->max_len);
    }
    if (n->pattern && !regex_match(n->pattern, p, bytes)) {
        nerr++;
        if (!out)
            return nerr;
        char *q = quote(p, bytes);
        verr(c, out, n, "pattern", "%s does not match the pattern \"%s\"", q, n->pattern->src);
        free(q);
    }
    return nerr;
}

/* --- anyOf / oneOf explanations --- */

/* The node's subschema for property name (own properties, then through $ref and allOf). */
static const struct node *find_prop(const struct node *n, const char *name, size_t len, int depth)
{
    if (!n || n->is_bool || depth > 8)
        return NULL;
    if (!n->ref_only) {
        for (size_t i = 0; i < n->nprops; i++) {
            if (n->props[i].len == len && memcmp(n->props[i].name, name, len) == 0)
                return n->props[i].schema;
        }
        for (size_t i = 0; i < n->all_of.n; i++) {
            const struct node *r = find_prop(n->all_of.v[i], name, len, depth + 1);
            if (r)
                return r;
        }
    }
    return find_prop(n->ref_target, name, len, depth + 1);
}

/* const or enum of a node (through a $ref), or NULL. */
static const struct node *with_const(const struct node *n)
{
    for (int d = 0; n && d < 8; d++, n = n->ref_target) {
        if (!n->ref_only && (n->const_ || n->enum_))
            return n;
    }
    return NULL;
}

static bool const_accepts(const struct node *n, json_t *v)
{
    if (n->const_ && !json_eq(n->const_, v))
        return false;
    if (n->enum_) {
        for (size_t i = 0; i < json_array_size(n->enum_); i++) {
            if (json_eq(json_array_get(n->enum_, i), v))
                return true;
        }
        return false;
    }
    return true;
}

/* The declared types of a node (through $ref and allOf), 0 if any type may pass. */
static unsigned node_types(const struct node *n, int depth)
{
    if (!n || depth > 8)
        return 0;
    if (n->is_bool)
        return n->bool_val ? 0 : (1u << N_TYPES) - 1; /* false: not a type mismatch either */
    unsigned t = n->ref_only ? 0 : n->types;
    if (t & T_NUMBER)
        t |= T_INTEGER;
    unsigned r = node_types(n->ref_target, depth + 1);
    if (r && (!t || (r & t)))
        t = t ? (t & r) : r;
    return t;
}

/*
 * Tries to find the discriminator of an object-valued alternative list: a property that every
 * alternative constrains by const/enum. Returns its name, or NULL.
 */
static const char *find_discriminator(const struct node_list *alts, size_t *len)
{
    const struct node *first = alts->v[0];
    for (int d = 0; first && d < 8 && first->nprops == 0; d++)
        first = first->ref_target;
    if (!first || first->is_bool)
        return NULL;
    for (size_t p = 0; p < first->nprops; p++) {
        const char *name = first->props[p].name;
        size_t nl = first->props[p].len;
        bool all = true;
        for (size_t i = 0; i < alts->n && all; i++)
            all = with_const(find_prop(alts->v[i], name, nl, 0)) != NULL;
        if (all) {
            *len = nl;
            return name;
        }
    }
    return NULL;
}

static int explain_alternatives(struct vctx *c, const struct node *n, const char *kw,
                                const struct node_list *alts, json_t *inst,
                                struct gw_diag_list *out)
{
    int nerr = 1;
    unsigned have = instance_types(inst);
    /* 1. A const/enum discriminator ("type": "modbus") picks the alternative. */
    size_t dlen;
    const char *disc = json_is_object(inst) ? find_discriminator(alts, &dlen) : NULL;
    if (disc) {
        json_t *dv = json_object_getn(inst, disc, dlen);
        char *qname = quote(disc, dlen);
        if (!dv) {
            verr(c, out, n, kw, "missing property %s, which selects the kind of object", qname);
            free(qname);
            return nerr;
        }
        for (size_t i = 0; i < alts->n; i++) {
            const struct node *cn = with_const(find_prop(alts->v[i], disc, dlen, 0));
            if (const_accepts(cn, dv)) {
                free(qname);
                int sub = v_node(c, alts->v[i], inst, out);
                return sub ? sub : 1;
            }
        }
        /* No alternative accepts the value: list every accepted one. */
        json_t *all = json_array();
        for (size_t i = 0; i < alts->n; i++) {
            const struct node *cn = with_const(find_prop(alts->v[i], disc, dlen, 0));
            if (cn->const_)
                json_array_append(all, cn->const_);
            for (size_t j = 0; cn->enum_ && j < json_array_size(cn->enum_); j++)
                json_array_append(all, json_array_get(cn->enum_, j));
        }
        char *val = preview(dv), *list = values_text(all);
        size_t base = c->ptr_len;
        ptr_push(c, disc, dlen);
        verr(c, out, n, kw, "%s is not one of %s", val, list);
        ptr_pop(c, base);
        free(val);
        free(list);
        free(qname);
        json_decref(all);
        return nerr;
    }
    /* 2. No alternative takes this type at all. */
    unsigned any = 0;
    bool typed = true;
    for (size_t i = 0; i < alts->n && typed; i++) {
        unsigned t = node_types(alts->v[i], 0);
        typed = t != 0;
        any |= t;
    }
    if (typed && !(any & have)) {
        char want[128];
        types_text(any & ((1u << N_TYPES) - 1), want, sizeof(want));
        char *val = preview(inst);
        verr(c, out, n, kw, "expected %s, got %s %s", want, json_type_name(inst), val);
        free(val);
        return nerr;
    }
    /* 3. Report the closest alternative: no type mismatch at this level, fewest errors. */
    struct gw_diag_list best;
    gw_diag_list_init(&best);
    size_t best_i = 0;
    long best_score = -1;
    for (size_t i = 0; i < alts->n; i++) {
        struct gw_diag_list tmp;
        gw_diag_list_init(&tmp);
        v_node(c, alts->v[i], inst, &tmp);
        long score = (long)tmp.n;
        unsigned t = node_types(alts->v[i], 0);
        if (t && !(t & have))
            score += 100000;
        if (best_score < 0 || score < best_score) {
            gw_diag_list_fini(&best);
            best = tmp;
            best_score = score;
            best_i = i;
        } else {
            gw_diag_list_fini(&tmp);
        }
    }
    verr(c, out, n, kw,
         "matches none of the %zu alternatives of %s; the closest is alternative %zu%s", alts->n,
         kw, best_i + 1, best.n ? ", whose errors follow" : "");
    nerr += (int)best.n;
    gw_diag_list_move(out, &best);
    return nerr;
}

static int v_node(struct vctx *c, const struct node *n, json_t *inst, struct gw_diag_list *out)
{
    int nerr = 0;
    if (c->aborted || ++c->steps > MAX_STEPS) {
        c->aborted = true;
        return 1;
    }
    if (n->is_bool) {
        if (!n->bool_val)
            FAIL(NULL, "no value is allowed here (the schema is false)");
        return nerr;
    }
    if (n->ref_target)
        SUB(v_node(c, n->ref_target, inst, out));
    if (n->ref_only)
        return nerr;
    unsigned have = instance_types(inst);
    if (n->types && !(n->types & have)) {
        if (!out)
            return nerr + 1;
        char want[128];
        types_text(n->types, want, sizeof(want));
        char *val = preview(inst);
        FAIL("type", "expected %s, got %s %s", want, json_type_name(inst), val);
        free(val);
        return nerr; /* the other keywords would only repeat the mismatch */
    }
    if (n->const_ && !json_eq(n->const_, inst)) {
        if (!out)
            return nerr + 1;
        char *want = preview(n->const_), *val = preview(inst);
        FAIL("const", "expected %s, got %s", want, val);
        free(want);
        free(val);
    }
    if (n->enum_) {
        bool found = false;
        for (size_t i = 0; i < json_array_size(n->enum_) && !found; i++)
            found = json_eq(json_array_get(n->enum_, i), inst);
        if (!found) {
            if (!out)
                return nerr + 1;
            char *val = preview(inst), *list = values_text(n->enum_);
            FAIL("enum", "%s is not one of %s", val, list);
            free(val);
            free(list);
        }
    }
    if (json_is_object(inst))
        SUB(v_object(c, n, inst, out));
    else if (json_is_array(inst))
        SUB(v_array(c, n, inst, out));
    else if (json_is_string(inst))
        SUB(v_string(c, n, inst, out));
    else if (is_number(inst))
        SUB(v_number(c, n, inst, out));
    for (size_t i = 0; i < n->all_of.n; i++)
        SUB(v_node(c, n->all_of.v[i], inst, out));
    if (n->any_of.n) {
        bool ok = false;
        for (size_t i = 0; i < n->any_of.n && !ok; i++)
            ok = v_node(c, n->any_of.v[i], inst, NULL) == 0;
        if (!ok) {
            if (!out)
                return nerr + 1;
            nerr += explain_alternatives(c, n, "anyOf", &n->any_of, inst, out);
        }
    }
    if (n->one_of.n) {
        size_t first = SIZE_MAX, second = SIZE_MAX;
        for (size_t i = 0; i < n->one_of.n && second == SIZE_MAX; i++) {
            if (v_node(c, n->one_of.v[i], inst, NULL) == 0) {
                if (first == SIZE_MAX)
                    first = i;
                else
                    second = i;
            }
        }
        if (first == SIZE_MAX) {
            if (!out)
                return nerr + 1;
            nerr += explain_alternatives(c, n, "oneOf", &n->one_of, inst, out);
        } else if (second != SIZE_MAX) {
            FAIL("oneOf", "matches alternatives %zu and %zu of oneOf; exactly one must match",
                 first + 1, second + 1);
        }
    }
    if (n->not_ && v_node(c, n->not_, inst, NULL) == 0)
        FAIL("not", "must not match the schema at %s (\"not\")",
             n->not_->path[0] ? n->not_->path : "(root)");
    if (n->if_) {
        if (v_node(c, n->if_, inst, NULL) == 0) {
            if (n->then_)
                SUB(v_node(c, n->then_, inst, out));
        } else if (n->else_) {
            SUB(v_node(c, n->else_, inst, out));
        }
    }
    return nerr;
}

int gw_schema_validate(const struct gw_schema *schema, json_t *instance, struct gw_diag_list *out)
{
    struct vctx c = {.s = schema, .ptr = gw_strdup(""), .ptr_len = 0};
    int nerr = v_node(&c, schema->root_node, instance, out);
    if (c.aborted && out)
        gw_diag_add(out, "", "",
                    "validation stopped after %lu steps: alternatives (anyOf/oneOf) that refer "
                    "back to themselves make this value too expensive to check",
                    MAX_STEPS);
    free(c.ptr);
    return nerr ? GW_ECONFIG : 0;
}

int gw_schema_validate_doc(const struct gw_schema *schema, const struct gw_config_doc *doc,
                           struct gw_diag_list *out)
{
    size_t from = out ? out->n : 0;
    int rc = gw_schema_validate(schema, gw_config_root(doc), out);
    if (out) {
        gw_config_locate(doc, out, from);
        gw_diag_list_sort(out);
    }
    return rc;
}
