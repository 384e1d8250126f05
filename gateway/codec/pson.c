/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Varints and PSON v2: the encoder and the pull decoder declared in gw/pson.h. Used by the frame
 * codec (iotmp.c), the value tree (value.c) and everything that builds or reads payloads directly.
 * Relies on nothing but the C library: no allocation, no I/O. The byte rules are those of
 * PROTOCOL.md section 9; the "why" of each bound is next to the check that enforces it.
 */
#include "gw/pson.h"
#include "gw/error.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* PSON v2 types: the high 3 bits of the tag byte. */
enum {
    T_UINT = 0,
    T_NEG = 1,
    T_FLOAT = 2,
    T_DISCRETE = 3,
    T_STRING = 4,
    T_BYTES = 5,
    T_MAP = 6,
    T_ARRAY = 7,
};
#define INLINE_ESCAPE 0x1f

/* --- Varint --- */

size_t gw_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t gw_varint_encode(uint64_t v, uint8_t *out)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

int gw_varint_decode(const uint8_t *p, size_t len, uint64_t *v)
{
    uint64_t r = 0;
    for (size_t i = 0; i < GW_VARINT_MAX; i++) {
        if (i == len)
            return GW_ETRUNC;
        uint8_t b = p[i];
        /* The 10th byte carries bit 63 only: anything above it would not fit in 64 bits. */
        if (i == GW_VARINT_MAX - 1 && b > 1)
            return GW_EVARINT;
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = r;
            return (int)i + 1;
        }
    }
    return GW_EVARINT;
}

/* --- Encoder --- */

void gw_pson_writer_init(struct gw_pson_writer *w, void *buf, size_t cap)
{
    w->buf = buf;
    w->cap = buf ? cap : 0;
    w->len = 0;
}

static inline void put_bytes(struct gw_pson_writer *w, const void *p, size_t n)
{
    if (w->len <= w->cap && n <= w->cap - w->len && n)
        memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static inline void put_byte(struct gw_pson_writer *w, uint8_t b)
{
    if (w->len < w->cap)
        w->buf[w->len] = b;
    w->len++;
}

/* A tag with an inline value (0..30) or the escape followed by a varint. */
static inline void put_tag(struct gw_pson_writer *w, unsigned type, uint64_t v)
{
    if (v < INLINE_ESCAPE) {
        put_byte(w, (uint8_t)(type << 5 | v));
        return;
    }
    uint8_t tmp[1 + GW_VARINT_MAX];
    tmp[0] = (uint8_t)(type << 5 | INLINE_ESCAPE);
    size_t n = 1 + gw_varint_encode(v, tmp + 1);
    put_bytes(w, tmp, n);
}

void gw_pson_put_null(struct gw_pson_writer *w)
{
    put_byte(w, T_DISCRETE << 5 | 2);
}

void gw_pson_put_bool(struct gw_pson_writer *w, bool b)
{
    put_byte(w, (uint8_t)(T_DISCRETE << 5 | (b ? 1 : 0)));
}

void gw_pson_put_uint(struct gw_pson_writer *w, uint64_t u)
{
    put_tag(w, T_UINT, u);
}

void gw_pson_put_int(struct gw_pson_writer *w, int64_t i)
{
    if (i >= 0)
        put_tag(w, T_UINT, (uint64_t)i);
    else /* magnitude without overflow, INT64_MIN included */
        put_tag(w, T_NEG, (uint64_t)0 - (uint64_t)i);
}

static inline void store_le(uint8_t *out, const void *src, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    const uint8_t *s = src;
    for (size_t k = 0; k < n; k++)
        out[k] = s[n - 1 - k];
#else
    memcpy(out, src, n);
#endif
}

void gw_pson_put_float32(struct gw_pson_writer *w, float f)
{
    uint8_t tmp[5] = {T_FLOAT << 5 | 0};
    store_le(tmp + 1, &f, 4);
    put_bytes(w, tmp, 5);
}

void gw_pson_put_float64(struct gw_pson_writer *w, double d)
{
    uint8_t tmp[9] = {T_FLOAT << 5 | 1};
    store_le(tmp + 1, &d, 8);
    put_bytes(w, tmp, 9);
}

void gw_pson_put_double(struct gw_pson_writer *w, double d)
{
    /* Step 1 of the reference rule, (double)(int64_t)d == d, without its undefined cases: the
     * cast is only made for values in [-2^63, 2^63), and NaN fails every comparison. */
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == trunc(d)) {
        gw_pson_put_int(w, (int64_t)d);
        return;
    }
    /* Step 2: float32 when exact. (float)d is only defined inside float's range; infinities
     * convert exactly (and the references send them as float32 too). */
    if (isinf(d) || (fabs(d) <= FLT_MAX && (double)(float)d == d)) {
        gw_pson_put_float32(w, (float)d);
        return;
    }
    gw_pson_put_float64(w, d);
}

void gw_pson_put_str(struct gw_pson_writer *w, const void *s, size_t len)
{
    put_tag(w, T_STRING, len);
    put_bytes(w, s, len);
}

void gw_pson_put_cstr(struct gw_pson_writer *w, const char *s)
{
    gw_pson_put_str(w, s, strlen(s));
}

void gw_pson_put_bytes(struct gw_pson_writer *w, const void *p, size_t len)
{
    put_tag(w, T_BYTES, len);
    put_bytes(w, p, len);
}

void gw_pson_put_map(struct gw_pson_writer *w, uint64_t n)
{
    put_tag(w, T_MAP, n);
}

void gw_pson_put_array(struct gw_pson_writer *w, uint64_t n)
{
    put_tag(w, T_ARRAY, n);
}

void gw_pson_put_raw(struct gw_pson_writer *w, const void *p, size_t len)
{
    put_bytes(w, p, len);
}

/* --- Pull decoder --- */

void gw_pson_reader_init(struct gw_pson_reader *r, const void *buf, size_t len)
{
    r->p = buf;
    r->end = r->p + len;
    r->depth = 0;
}

static inline double load_f32(const uint8_t *p)
{
    float f;
    store_le((uint8_t *)&f, p, 4);
    return f;
}

static inline double load_f64(const uint8_t *p)
{
    double d;
    store_le((uint8_t *)&d, p, 8);
    return d;
}

/* Reads the tag's value: inline 0..30, or the varint after the escape. */
static inline int read_tag_value(struct gw_pson_reader *r, uint8_t tag, uint64_t *v)
{
    uint8_t low = tag & 0x1f;
    if (low != INLINE_ESCAPE) {
        *v = low;
        return 0;
    }
    int n = gw_varint_decode(r->p, (size_t)(r->end - r->p), v);
    if (n < 0)
        return n;
    r->p += n;
    return 0;
}

/* Reads one value's tag and payload (not a container's entries) into it. */
static int read_value(struct gw_pson_reader *r, struct gw_pson_item *it)
{
    if (r->p == r->end)
        return GW_ETRUNC;
    uint8_t tag = *r->p++;
    unsigned type = tag >> 5;
    uint64_t v;
    int rc;

    it->is_float32 = false;
    switch (type) {
    case T_UINT:
        if ((rc = read_tag_value(r, tag, &v)) < 0)
            return rc;
        it->kind = GW_PSON_UINT;
        it->u = v;
        return 0;
    case T_NEG:
        if ((rc = read_tag_value(r, tag, &v)) < 0)
            return rc;
        /* -(2^63) is the most negative int64; a larger magnitude has no int64 form. */
        if (v > (uint64_t)INT64_MAX + 1)
            return GW_EPSON_RANGE;
        it->kind = GW_PSON_INT;
        it->i = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
        return 0;
    case T_FLOAT: {
        unsigned sub = tag & 0x1f;
        size_t need = sub == 0 ? 4 : sub == 1 ? 8 : 0;
        if (!need)
            return GW_EPSON_TAG;
        if ((size_t)(r->end - r->p) < need)
            return GW_ETRUNC;
        it->kind = GW_PSON_DOUBLE;
        it->is_float32 = sub == 0;
        it->d = sub == 0 ? load_f32(r->p) : load_f64(r->p);
        r->p += need;
        return 0;
    }
    case T_DISCRETE:
        switch (tag & 0x1f) {
        case 0:
        case 1:
            it->kind = GW_PSON_BOOL;
            it->b = tag & 1;
            return 0;
        case 2:
            it->kind = GW_PSON_NULL;
            return 0;
        default:
            return GW_EPSON_TAG;
        }
    case T_STRING:
    case T_BYTES:
        if ((rc = read_tag_value(r, tag, &v)) < 0)
            return rc;
        if (v > (uint64_t)(r->end - r->p))
            return GW_EPSON_LEN;
        it->kind = type == T_STRING ? GW_PSON_STRING : GW_PSON_BYTES;
        it->s = r->p;
        it->len = (size_t)v;
        r->p += v;
        return 0;
    default: /* T_MAP, T_ARRAY */
        if ((rc = read_tag_value(r, tag, &v)) < 0)
            return rc;
        /* Believe a count only if the bytes left could hold it: an element needs at least one
         * byte, a pair (key + value) at least two. This bounds every loop over entries by the
         * input size, whatever the count claims. */
        if (v > (uint64_t)(r->end - r->p) / (type == T_MAP ? 2 : 1))
            return GW_EPSON_LEN;
        if (r->depth == GW_PSON_MAX_DEPTH)
            return GW_EPSON_DEPTH;
        it->kind = type == T_MAP ? GW_PSON_MAP : GW_PSON_ARRAY;
        it->count = v;
        r->stack[r->depth].left = v;
        r->stack[r->depth].is_map = type == T_MAP;
        r->depth++;
        return 0;
    }
}

int gw_pson_next(struct gw_pson_reader *r, struct gw_pson_item *it)
{
    it->key = NULL;
    it->key_len = 0;
    if (r->depth == 0) {
        if (r->p == r->end)
            return GW_EPSON_END;
        return read_value(r, it);
    }
    unsigned top = r->depth - 1;
    if (r->stack[top].left == 0) {
        r->depth--;
        it->kind = GW_PSON_END;
        return 0;
    }
    r->stack[top].left--;
    if (r->stack[top].is_map) {
        if (r->p == r->end)
            return GW_ETRUNC;
        uint8_t tag = *r->p;
        if (tag >> 5 != T_STRING)
            return GW_EPSON_KEY;
        struct gw_pson_item key;
        int rc = read_value(r, &key);
        if (rc < 0)
            return rc;
        int vr = read_value(r, it);
        it->key = (const char *)key.s;
        it->key_len = key.len;
        return vr;
    }
    return read_value(r, it);
}

int gw_pson_skip(struct gw_pson_reader *r, const struct gw_pson_item *it)
{
    if (it->kind != GW_PSON_MAP && it->kind != GW_PSON_ARRAY)
        return 0;
    /* The container is open at depth `target`; read until it closes. Bounded: each iteration
     * consumes input or closes a container, and both are finite. */
    unsigned target = r->depth;
    struct gw_pson_item sub;
    while (r->depth >= target) {
        int rc = gw_pson_next(r, &sub);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int gw_pson_value_len(const void *buf, size_t len, size_t *value_len)
{
    struct gw_pson_reader r;
    struct gw_pson_item it;
    gw_pson_reader_init(&r, buf, len);
    int rc = gw_pson_next(&r, &it);
    if (rc == GW_EPSON_END)
        return GW_ETRUNC;
    if (rc < 0)
        return rc;
    if ((rc = gw_pson_skip(&r, &it)) < 0)
        return rc;
    *value_len = (size_t)(r.p - (const uint8_t *)buf);
    return 0;
}

/* --- Item helpers --- */

int gw_pson_item_to_double(const struct gw_pson_item *it, double *d)
{
    switch (it->kind) {
    case GW_PSON_UINT:
        *d = (double)it->u;
        return 0;
    case GW_PSON_INT:
        *d = (double)it->i;
        return 0;
    case GW_PSON_DOUBLE:
        *d = it->d;
        return 0;
    default:
        return GW_EPSON_TYPE;
    }
}

int gw_pson_item_to_int64(const struct gw_pson_item *it, int64_t *i)
{
    switch (it->kind) {
    case GW_PSON_UINT:
        if (it->u > INT64_MAX)
            return GW_ERANGE;
        *i = (int64_t)it->u;
        return 0;
    case GW_PSON_INT:
        *i = it->i;
        return 0;
    case GW_PSON_DOUBLE:
        if (!(it->d >= -9223372036854775808.0 && it->d < 9223372036854775808.0) ||
            it->d != trunc(it->d))
            return GW_ERANGE;
        *i = (int64_t)it->d;
        return 0;
    default:
        return GW_EPSON_TYPE;
    }
}

int gw_pson_item_to_uint64(const struct gw_pson_item *it, uint64_t *u)
{
    switch (it->kind) {
    case GW_PSON_UINT:
        *u = it->u;
        return 0;
    case GW_PSON_INT:
        return GW_ERANGE;
    case GW_PSON_DOUBLE:
        if (!(it->d >= 0 && it->d < 18446744073709551616.0) || it->d != trunc(it->d))
            return GW_ERANGE;
        *u = (uint64_t)it->d;
        return 0;
    default:
        return GW_EPSON_TYPE;
    }
}
