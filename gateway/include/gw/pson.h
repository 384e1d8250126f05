/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Varints and PSON v2 (../shared/iotmp/PROTOCOL.md sections 3.2 and 9): an encoder that writes into
 * a caller's buffer and a pull decoder that reads straight from one. Nothing here allocates or does
 * I/O. Strings and bytes are returned as pointer + length into the input; they are not terminated.
 *
 * Decoder guarantees, for any input: it never reads outside [buf, buf+len); nesting deeper than
 * GW_PSON_MAX_DEPTH containers is refused; every element or pair count is checked against the
 * bytes left before it is believed (an element takes at least 1 byte, a pair at least 2).
 */
#ifndef GW_PSON_H
#define GW_PSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- Varint (unsigned LEB128, at most 10 bytes for 64 bits) --- */

#define GW_VARINT_MAX 10

/* Number of bytes gw_varint_encode() writes for v (1..10). */
size_t gw_varint_size(uint64_t v);

/* Writes v to out (room for GW_VARINT_MAX bytes); returns the number of bytes written. */
size_t gw_varint_encode(uint64_t v, uint8_t *out);

/*
 * Reads a varint from p (len bytes available). Returns the number of bytes consumed (1..10), or
 * GW_ETRUNC if the input ends inside the varint, or GW_EVARINT if it is longer than 10 bytes or
 * its value does not fit in 64 bits. Non-minimal forms (80 00) are accepted, as the reference
 * decoders accept them.
 */
int gw_varint_decode(const uint8_t *p, size_t len, uint64_t *v);

/* --- Encoder --- */

/*
 * Appends to buf. Writing past cap is not an error at the time: the bytes are counted in len but
 * not stored, so a writer with cap 0 measures an encoding. gw_pson_writer_ok() tells whether
 * everything fitted.
 */
struct gw_pson_writer {
    uint8_t *buf;   /* borrowed */
    size_t cap;
    size_t len;     /* bytes produced so far, including any that did not fit */
};

void gw_pson_writer_init(struct gw_pson_writer *w, void *buf, size_t cap);

static inline bool gw_pson_writer_ok(const struct gw_pson_writer *w)
{
    return w->len <= w->cap;
}

void gw_pson_put_null(struct gw_pson_writer *w);
void gw_pson_put_bool(struct gw_pson_writer *w, bool b);
void gw_pson_put_uint(struct gw_pson_writer *w, uint64_t u);
void gw_pson_put_int(struct gw_pson_writer *w, int64_t i);
/*
 * Encodes d as the reference encoders do: an integral value in [-2^63, 2^63) as an integer (so
 * -0.0 becomes 0), else float32 when (double)(float)d == d, else float64. The range checks are
 * explicit, so infinities and NaN never meet an undefined cast (inf → float32, NaN → float64).
 */
void gw_pson_put_double(struct gw_pson_writer *w, double d);
/* Always float32 / always float64, whatever the value (for callers that need the exact form). */
void gw_pson_put_float32(struct gw_pson_writer *w, float f);
void gw_pson_put_float64(struct gw_pson_writer *w, double d);
void gw_pson_put_str(struct gw_pson_writer *w, const void *s, size_t len);
void gw_pson_put_cstr(struct gw_pson_writer *w, const char *s);
void gw_pson_put_bytes(struct gw_pson_writer *w, const void *p, size_t len);
/* A map of n pairs follows: n times a key (gw_pson_put_str / _cstr) then its value. */
void gw_pson_put_map(struct gw_pson_writer *w, uint64_t n);
/* An array of n elements follows. */
void gw_pson_put_array(struct gw_pson_writer *w, uint64_t n);
/* Copies len bytes that are already a complete PSON encoding (for example a decoded field). */
void gw_pson_put_raw(struct gw_pson_writer *w, const void *p, size_t len);

/* --- Pull decoder --- */

#define GW_PSON_MAX_DEPTH 32

enum gw_pson_kind {
    GW_PSON_NULL,
    GW_PSON_BOOL,
    GW_PSON_UINT,   /* u */
    GW_PSON_INT,    /* i, always negative (non-negative integers are GW_PSON_UINT) */
    GW_PSON_DOUBLE, /* d; float32 on the wire is widened, is_float32 says so */
    GW_PSON_STRING, /* s, len: not terminated, not checked for UTF-8 */
    GW_PSON_BYTES,  /* s, len */
    GW_PSON_MAP,    /* count pairs follow */
    GW_PSON_ARRAY,  /* count elements follow */
    GW_PSON_END,    /* the innermost open map or array has no more entries */
};

struct gw_pson_item {
    enum gw_pson_kind kind;
    bool is_float32;
    const char *key;    /* when this value is a map member: its key (into the input), else NULL */
    size_t key_len;
    union {
        bool b;
        uint64_t u;
        int64_t i;
        double d;
        uint64_t count;
    };
    const uint8_t *s;   /* STRING, BYTES: into the input */
    size_t len;
};

struct gw_pson_reader {
    const uint8_t *p;
    const uint8_t *end;
    unsigned depth;                         /* open containers */
    struct {
        uint64_t left;                      /* entries still to read */
        bool is_map;
    } stack[GW_PSON_MAX_DEPTH];
};

/* Starts reading len bytes at buf (borrowed; it must outlive every item read from it). */
void gw_pson_reader_init(struct gw_pson_reader *r, const void *buf, size_t len);

/*
 * Reads the next item in document order. Inside a map the item carries its key; when a map or
 * array has no entries left, one GW_PSON_END item closes it. At the top level, GW_EPSON_END is
 * returned when the input is used up. Errors: GW_ETRUNC, GW_EVARINT, GW_EPSON_TAG, GW_EPSON_LEN,
 * GW_EPSON_DEPTH, GW_EPSON_KEY, GW_EPSON_RANGE (a negative magnitude above 2^63). After an error
 * the reader must not be used again.
 */
int gw_pson_next(struct gw_pson_reader *r, struct gw_pson_item *it);

/*
 * Skips what item it opened: for a map or array, every entry up to and including its END; for a
 * scalar, nothing. Returns 0 or an error as gw_pson_next().
 */
int gw_pson_skip(struct gw_pson_reader *r, const struct gw_pson_item *it);

/*
 * Reads exactly one complete value from buf and returns its encoded length in bytes (so a PSON
 * value can be delimited and validated without looking at it), or an error as gw_pson_next().
 */
int gw_pson_value_len(const void *buf, size_t len, size_t *value_len);

/* Numeric conversions of a scalar item; GW_EPSON_TYPE if it is not a number, GW_ERANGE if it does
 * not fit (to_int64/to_uint64 accept integral doubles in range). */
int gw_pson_item_to_double(const struct gw_pson_item *it, double *d);
int gw_pson_item_to_int64(const struct gw_pson_item *it, int64_t *i);
int gw_pson_item_to_uint64(const struct gw_pson_item *it, uint64_t *u);

/* True when the item is a STRING equal to the NUL-terminated s. (Inline: with a constant s the
 * length folds away, which matters on the decode hot path.) */
static inline bool gw_pson_item_is_str(const struct gw_pson_item *it, const char *s)
{
    size_t n = __builtin_strlen(s);
    return it->kind == GW_PSON_STRING && it->len == n && __builtin_memcmp(it->s, s, n) == 0;
}

/* True when the item's key equals the NUL-terminated key. */
static inline bool gw_pson_item_key_is(const struct gw_pson_item *it, const char *key)
{
    size_t n = __builtin_strlen(key);
    return it->key && it->key_len == n && __builtin_memcmp(it->key, key, n) == 0;
}

#endif
