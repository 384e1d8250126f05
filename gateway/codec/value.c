/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dynamic value tree of gw/value.h: construction, lookup, equality, and PSON v2 encoding and
 * decoding built on the pull decoder. For configs, cached values and REST bodies; the hot paths
 * use the PSON writer and reader directly.
 */
#include "gw/value.h"
#include "gw/error.h"
#include "gw/mem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct gw_value gw_value_str(const char *s, size_t len)
{
    struct gw_value v = {.type = GW_VALUE_STRING};
    v.s.p = gw_malloc(len + 1);
    if (len)
        memcpy(v.s.p, s, len);
    v.s.p[len] = '\0';
    v.s.len = len;
    return v;
}

struct gw_value gw_value_cstr(const char *s)
{
    return gw_value_str(s, strlen(s));
}

struct gw_value gw_value_bytes(const void *p, size_t len)
{
    struct gw_value v = gw_value_str(p, len);
    v.type = GW_VALUE_BYTES;
    return v;
}

struct gw_value gw_value_map(void)
{
    return (struct gw_value){.type = GW_VALUE_MAP};
}

struct gw_value gw_value_array(void)
{
    return (struct gw_value){.type = GW_VALUE_ARRAY};
}

void gw_value_fini(struct gw_value *v)
{
    switch (v->type) {
    case GW_VALUE_STRING:
    case GW_VALUE_BYTES:
        free(v->s.p);
        break;
    case GW_VALUE_MAP:
    case GW_VALUE_ARRAY:
        for (size_t i = 0; i < v->c.n; i++) {
            gw_value_fini(&v->c.items[i]);
            if (v->c.keys)
                free(v->c.keys[i]);
        }
        free(v->c.items);
        free(v->c.keys);
        free(v->c.key_lens);
        free(v->c.index);
        break;
    default:
        break;
    }
    *v = GW_VALUE_INIT_NULL;
}

void gw_value_copy(struct gw_value *dst, const struct gw_value *src)
{
    switch (src->type) {
    case GW_VALUE_STRING:
        *dst = gw_value_str(src->s.p, src->s.len);
        return;
    case GW_VALUE_BYTES:
        *dst = gw_value_bytes(src->s.p, src->s.len);
        return;
    case GW_VALUE_MAP:
        *dst = gw_value_map();
        for (size_t i = 0; i < src->c.n; i++)
            gw_value_copy(gw_value_map_set(dst, src->c.keys[i], src->c.key_lens[i]),
                          &src->c.items[i]);
        return;
    case GW_VALUE_ARRAY:
        *dst = gw_value_array();
        for (size_t i = 0; i < src->c.n; i++)
            gw_value_copy(gw_value_array_add(dst), &src->c.items[i]);
        return;
    default:
        *dst = *src;
        return;
    }
}

static void grow(struct gw_value *c)
{
    if (c->c.n < c->c.cap)
        return;
    size_t cap = c->c.cap ? c->c.cap * 2 : 4;
    c->c.items = gw_realloc(c->c.items, cap * sizeof *c->c.items);
    if (c->type == GW_VALUE_MAP) {
        c->c.keys = gw_realloc(c->c.keys, cap * sizeof *c->c.keys);
        c->c.key_lens = gw_realloc(c->c.key_lens, cap * sizeof *c->c.key_lens);
    }
    c->c.cap = cap;
}

struct gw_value *gw_value_array_add(struct gw_value *arr)
{
    grow(arr);
    struct gw_value *slot = &arr->c.items[arr->c.n++];
    *slot = GW_VALUE_INIT_NULL;
    return slot;
}

/*
 * Key lookup. Small maps (most: samples, configs) are searched linearly; above INDEX_MIN keys a
 * hash index keeps lookups constant-time, so decoding a map of n keys costs O(n), not O(n^2) (a
 * 256 KiB frame can hold tens of thousands of keys, and DESCRIBE answers do).
 */
#define INDEX_MIN 16

static uint64_t key_hash(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h;
}

static void index_put(struct gw_value *map, size_t pos)
{
    size_t mask = map->c.index_cap - 1;
    size_t i = (size_t)key_hash(map->c.keys[pos], map->c.key_lens[pos]) & mask;
    while (map->c.index[i])
        i = (i + 1) & mask;
    map->c.index[i] = (uint32_t)(pos + 1);
}

static void index_rebuild(struct gw_value *map, size_t cap)
{
    free(map->c.index);
    map->c.index = gw_calloc(cap, sizeof *map->c.index);
    map->c.index_cap = cap;
    for (size_t i = 0; i < map->c.n; i++)
        index_put(map, i);
}

static struct gw_value *map_find(const struct gw_value *map, const char *key, size_t key_len)
{
    if (!map->c.index) {
        for (size_t i = 0; i < map->c.n; i++)
            if (map->c.key_lens[i] == key_len && memcmp(map->c.keys[i], key, key_len) == 0)
                return &map->c.items[i];
        return NULL;
    }
    size_t mask = map->c.index_cap - 1;
    for (size_t i = (size_t)key_hash(key, key_len) & mask; map->c.index[i]; i = (i + 1) & mask) {
        size_t pos = map->c.index[i] - 1;
        if (map->c.key_lens[pos] == key_len && memcmp(map->c.keys[pos], key, key_len) == 0)
            return &map->c.items[pos];
    }
    return NULL;
}

struct gw_value *gw_value_map_set(struct gw_value *map, const char *key, size_t key_len)
{
    struct gw_value *slot = map_find(map, key, key_len);
    if (slot) {
        gw_value_fini(slot);
        return slot;
    }
    grow(map);
    size_t i = map->c.n++;
    map->c.keys[i] = gw_strndup(key, key_len);
    /* gw_strndup stops at a NUL; keys with NULs keep their full length in key_lens. */
    if (strlen(map->c.keys[i]) != key_len) {
        free(map->c.keys[i]);
        map->c.keys[i] = gw_malloc(key_len + 1);
        memcpy(map->c.keys[i], key, key_len);
        map->c.keys[i][key_len] = '\0';
    }
    map->c.key_lens[i] = key_len;
    map->c.items[i] = GW_VALUE_INIT_NULL;
    if (map->c.index) {
        if (map->c.n * 2 > map->c.index_cap)
            index_rebuild(map, map->c.index_cap * 2);
        else
            index_put(map, i);
    } else if (map->c.n > INDEX_MIN) {
        index_rebuild(map, 4 * INDEX_MIN);
    }
    return &map->c.items[i];
}

const struct gw_value *gw_value_map_get(const struct gw_value *map, const char *key)
{
    if (!map || map->type != GW_VALUE_MAP)
        return NULL;
    return map_find(map, key, strlen(key));
}

size_t gw_value_count(const struct gw_value *v)
{
    if (!v)
        return 0;
    return v->type == GW_VALUE_MAP || v->type == GW_VALUE_ARRAY ? v->c.n : 0;
}

int gw_value_to_double(const struct gw_value *v, double *d)
{
    switch (v->type) {
    case GW_VALUE_UINT:
        *d = (double)v->u;
        return 0;
    case GW_VALUE_INT:
        *d = (double)v->i;
        return 0;
    case GW_VALUE_DOUBLE:
        *d = v->d;
        return 0;
    default:
        return GW_EPSON_TYPE;
    }
}

static bool is_number(const struct gw_value *v)
{
    return v->type == GW_VALUE_UINT || v->type == GW_VALUE_INT || v->type == GW_VALUE_DOUBLE;
}

/* Exact numeric equality across representations (no rounding through double for integers). */
static bool numbers_equal(const struct gw_value *a, const struct gw_value *b)
{
    if (a->type == GW_VALUE_DOUBLE || b->type == GW_VALUE_DOUBLE) {
        double x, y;
        if (a->type == GW_VALUE_DOUBLE && b->type == GW_VALUE_DOUBLE)
            return a->d == b->d || (isnan(a->d) && isnan(b->d));
        const struct gw_value *dv = a->type == GW_VALUE_DOUBLE ? a : b;
        const struct gw_value *iv = dv == a ? b : a;
        x = dv->d;
        if (x != trunc(x))
            return false;
        if (iv->type == GW_VALUE_UINT) {
            if (!(x >= 0 && x < 18446744073709551616.0))
                return false;
            return (uint64_t)x == iv->u;
        }
        if (!(x >= -9223372036854775808.0 && x < 9223372036854775808.0))
            return false;
        y = x;
        return (int64_t)y == iv->i;
    }
    if (a->type == b->type)
        return a->type == GW_VALUE_UINT ? a->u == b->u : a->i == b->i;
    const struct gw_value *u = a->type == GW_VALUE_UINT ? a : b;
    const struct gw_value *i = u == a ? b : a;
    return i->i >= 0 && (uint64_t)i->i == u->u;
}

bool gw_value_equal(const struct gw_value *a, const struct gw_value *b)
{
    if (is_number(a) && is_number(b))
        return numbers_equal(a, b);
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case GW_VALUE_NULL:
        return true;
    case GW_VALUE_BOOL:
        return a->b == b->b;
    case GW_VALUE_STRING:
    case GW_VALUE_BYTES:
        return a->s.len == b->s.len && memcmp(a->s.p, b->s.p, a->s.len) == 0;
    case GW_VALUE_ARRAY:
        if (a->c.n != b->c.n)
            return false;
        for (size_t i = 0; i < a->c.n; i++)
            if (!gw_value_equal(&a->c.items[i], &b->c.items[i]))
                return false;
        return true;
    case GW_VALUE_MAP:
        if (a->c.n != b->c.n)
            return false;
        for (size_t i = 0; i < a->c.n; i++) {
            const struct gw_value *o = map_find(b, a->c.keys[i], a->c.key_lens[i]);
            if (!o || !gw_value_equal(&a->c.items[i], o))
                return false;
        }
        return true;
    default:
        return false;
    }
}

bool gw_value_identical(const struct gw_value *a, const struct gw_value *b)
{
    if (a->type != b->type)
        return false;
    switch (a->type) {
    case GW_VALUE_NULL:
        return true;
    case GW_VALUE_BOOL:
        return a->b == b->b;
    case GW_VALUE_UINT:
    case GW_VALUE_INT:
        return a->u == b->u;
    case GW_VALUE_DOUBLE:
        return memcmp(&a->d, &b->d, sizeof(a->d)) == 0;
    case GW_VALUE_STRING:
    case GW_VALUE_BYTES:
        return a->s.len == b->s.len && memcmp(a->s.p, b->s.p, a->s.len) == 0;
    case GW_VALUE_MAP:
    case GW_VALUE_ARRAY:
        if (a->c.n != b->c.n)
            return false;
        for (size_t i = 0; i < a->c.n; i++) {
            if (a->type == GW_VALUE_MAP &&
                (a->c.key_lens[i] != b->c.key_lens[i] ||
                 memcmp(a->c.keys[i], b->c.keys[i], a->c.key_lens[i]) != 0))
                return false;
            if (!gw_value_identical(&a->c.items[i], &b->c.items[i]))
                return false;
        }
        return true;
    default:
        return false;
    }
}

void gw_value_encode(const struct gw_value *v, struct gw_pson_writer *w)
{
    switch (v->type) {
    case GW_VALUE_NULL:
        gw_pson_put_null(w);
        return;
    case GW_VALUE_BOOL:
        gw_pson_put_bool(w, v->b);
        return;
    case GW_VALUE_UINT:
        gw_pson_put_uint(w, v->u);
        return;
    case GW_VALUE_INT:
        gw_pson_put_int(w, v->i);
        return;
    case GW_VALUE_DOUBLE:
        gw_pson_put_double(w, v->d);
        return;
    case GW_VALUE_STRING:
        gw_pson_put_str(w, v->s.p, v->s.len);
        return;
    case GW_VALUE_BYTES:
        gw_pson_put_bytes(w, v->s.p, v->s.len);
        return;
    case GW_VALUE_MAP:
        gw_pson_put_map(w, v->c.n);
        for (size_t i = 0; i < v->c.n; i++) {
            gw_pson_put_str(w, v->c.keys[i], v->c.key_lens[i]);
            gw_value_encode(&v->c.items[i], w);
        }
        return;
    case GW_VALUE_ARRAY:
        gw_pson_put_array(w, v->c.n);
        for (size_t i = 0; i < v->c.n; i++)
            gw_value_encode(&v->c.items[i], w);
        return;
    }
}

/* Fills a container already set in *out with entries until its END. Recursion depth is bounded
 * by the reader's GW_PSON_MAX_DEPTH. */
static int read_entries(struct gw_pson_reader *r, struct gw_value *out)
{
    struct gw_pson_item it;
    for (;;) {
        int rc = gw_pson_next(r, &it);
        if (rc < 0)
            return rc;
        if (it.kind == GW_PSON_END)
            return 0;
        struct gw_value *slot = out->type == GW_VALUE_MAP
                                    ? gw_value_map_set(out, it.key, it.key_len)
                                    : gw_value_array_add(out);
        if ((rc = gw_value_read(r, &it, slot)) < 0)
            return rc;
    }
}

int gw_value_read(struct gw_pson_reader *r, const struct gw_pson_item *it, struct gw_value *out)
{
    switch (it->kind) {
    case GW_PSON_NULL:
        *out = GW_VALUE_INIT_NULL;
        return 0;
    case GW_PSON_BOOL:
        *out = gw_value_bool(it->b);
        return 0;
    case GW_PSON_UINT:
        *out = gw_value_uint(it->u);
        return 0;
    case GW_PSON_INT:
        *out = gw_value_int(it->i);
        return 0;
    case GW_PSON_DOUBLE:
        *out = gw_value_double(it->d);
        return 0;
    case GW_PSON_STRING:
        *out = gw_value_str((const char *)it->s, it->len);
        return 0;
    case GW_PSON_BYTES:
        *out = gw_value_bytes(it->s, it->len);
        return 0;
    case GW_PSON_MAP:
    case GW_PSON_ARRAY: {
        *out = it->kind == GW_PSON_MAP ? gw_value_map() : gw_value_array();
        int rc = read_entries(r, out);
        if (rc < 0)
            gw_value_fini(out);
        return rc;
    }
    default:
        *out = GW_VALUE_INIT_NULL;
        return GW_EPSON_TYPE;
    }
}

int gw_value_decode(const void *buf, size_t len, struct gw_value *out)
{
    struct gw_pson_reader r;
    struct gw_pson_item it;
    gw_pson_reader_init(&r, buf, len);
    *out = GW_VALUE_INIT_NULL;
    int rc = gw_pson_next(&r, &it);
    if (rc == GW_EPSON_END)
        return GW_ETRUNC;
    if (rc < 0)
        return rc;
    if ((rc = gw_value_read(&r, &it, out)) < 0)
        return rc;
    return (int)(r.p - (const uint8_t *)buf);
}
