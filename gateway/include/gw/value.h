/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small dynamic value (null, bool, integers, double, string, bytes, map, array) for the places
 * that need a whole value in memory: configs, cached last values, REST bodies, DESCRIBE samples.
 * Scalars live inline (no allocation); strings, bytes and containers own heap memory released by
 * gw_value_fini(). Maps keep insertion order. The hot paths read and write PSON directly instead.
 */
#ifndef GW_VALUE_H
#define GW_VALUE_H

#include "gw/pson.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_value_type {
    GW_VALUE_NULL = 0,
    GW_VALUE_BOOL,
    GW_VALUE_UINT,
    GW_VALUE_INT,    /* may hold any int64_t; encoders write non-negative ones as unsigned */
    GW_VALUE_DOUBLE,
    GW_VALUE_STRING, /* s.p is NUL-terminated (the length may still contain NULs) */
    GW_VALUE_BYTES,
    GW_VALUE_MAP,
    GW_VALUE_ARRAY,
};

struct gw_value {
    enum gw_value_type type;
    union {
        bool b;
        uint64_t u;
        int64_t i;
        double d;
        struct {
            char *p;
            size_t len;
        } s;
        struct {
            struct gw_value *items; /* values */
            char **keys;            /* MAP only: keys[i] (NUL-terminated) names items[i] */
            size_t *key_lens;
            size_t n, cap;
            uint32_t *index;        /* MAP only, built once it has more than a few keys: a hash
                                       table of item positions + 1 (0 = empty), index_cap slots */
            size_t index_cap;
        } c;
    };
};

#define GW_VALUE_INIT_NULL ((struct gw_value){.type = GW_VALUE_NULL})

static inline struct gw_value gw_value_bool(bool b)
{
    return (struct gw_value){.type = GW_VALUE_BOOL, .b = b};
}
static inline struct gw_value gw_value_uint(uint64_t u)
{
    return (struct gw_value){.type = GW_VALUE_UINT, .u = u};
}
static inline struct gw_value gw_value_int(int64_t i)
{
    return (struct gw_value){.type = GW_VALUE_INT, .i = i};
}
static inline struct gw_value gw_value_double(double d)
{
    return (struct gw_value){.type = GW_VALUE_DOUBLE, .d = d};
}

/* Heap-owning constructors: the bytes are copied. */
struct gw_value gw_value_str(const char *s, size_t len);
struct gw_value gw_value_cstr(const char *s);
struct gw_value gw_value_bytes(const void *p, size_t len);
struct gw_value gw_value_map(void);
struct gw_value gw_value_array(void);

/* Releases what v owns and leaves it null. */
void gw_value_fini(struct gw_value *v);

/* Deep copy into *dst (which is overwritten, not finalised). */
void gw_value_copy(struct gw_value *dst, const struct gw_value *src);

/* Appends a null element to an array and returns it for the caller to set. */
struct gw_value *gw_value_array_add(struct gw_value *arr);

/*
 * Sets key (copied) in a map and returns its slot: an existing key's value is released and
 * reset to null in place (its position is kept); a new key is appended.
 */
struct gw_value *gw_value_map_set(struct gw_value *map, const char *key, size_t key_len);

/* Looks a key up; NULL if absent or map is not a map. */
const struct gw_value *gw_value_map_get(const struct gw_value *map, const char *key);

/* Number of entries of a map or array; 0 for anything else, and for NULL (so the result of a
 * gw_value_map_get() for an optional key can be passed straight in). */
size_t gw_value_count(const struct gw_value *v);

/* Numeric view: 0, or GW_EPSON_TYPE if v is not a number. */
int gw_value_to_double(const struct gw_value *v, double *d);

/*
 * Equality by value: numbers compare numerically across UINT/INT/DOUBLE (1 == 1.0; NaN equals
 * NaN), strings and bytes by content, maps by key set regardless of order, arrays in order.
 */
bool gw_value_equal(const struct gw_value *a, const struct gw_value *b);

/*
 * Identity: the same types and contents bit for bit (1 is not 1.0, UINT 1 is not INT 1, -0.0 is
 * not 0.0, NaNs compare by their bits), maps with the same keys in the same order. For checking
 * that two ways of building a value agree exactly.
 */
bool gw_value_identical(const struct gw_value *a, const struct gw_value *b);

/* Encodes v as PSON v2 (doubles by the reference rules, see gw_pson_put_double). */
void gw_value_encode(const struct gw_value *v, struct gw_pson_writer *w);

/*
 * Decodes one PSON v2 value from buf into *out (allocating). Duplicate map keys: the last wins.
 * Returns the number of bytes consumed, or a PSON error (then *out is null and nothing leaks).
 */
int gw_value_decode(const void *buf, size_t len, struct gw_value *out);

/* Reads the value that starts with item it (already returned by gw_pson_next) from r. */
int gw_value_read(struct gw_pson_reader *r, const struct gw_pson_item *it, struct gw_value *out);

#endif
