/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Modbus point map: names, address notations and the register <-> value codec for one point (see
 * modbus_map.h). Pure functions; the adapter's worker calls them around libmodbus, the unit tests
 * call them directly. Values are built with gw/value.h (gw_codec), errors are GW_E... codes plus an
 * optional one-line message.
 */
#include "modbus_map.h"

#include "gw/error.h"

#include <ctype.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --- Messages --- */

static void say(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* "plc1/temp", or "holding 100" for an unnamed point. */
static const char *label(const struct gw_modbus_point *p, char *buf, size_t len)
{
    if (p->name != NULL && p->name[0] != '\0')
        return p->name;
    snprintf(buf, len, "%s %u", gw_modbus_table_name(p->table), (unsigned)p->address);
    return buf;
}

/* Shortest %g form that reads back as the same double. */
static void fmt_double(char *buf, size_t len, double d)
{
    snprintf(buf, len, "%.15g", d);
    if (strtod(buf, NULL) != d && !isnan(d))
        snprintf(buf, len, "%.17g", d);
}

/* --- Names --- */

struct name_map {
    const char *name;
    int value;
};

/* Lower-cases name and maps '-' and ' ' to '_' into buf; false if it does not fit. */
static bool normalise(const char *name, char *buf, size_t len)
{
    size_t n = strlen(name);
    if (n == 0 || n >= len)
        return false;
    for (size_t i = 0; i <= n; i++) {
        char c = (char)tolower((unsigned char)name[i]);
        buf[i] = (c == '-' || c == ' ') ? '_' : c;
    }
    return true;
}

static int lookup(const struct name_map *map, const char *name, int *out)
{
    char buf[32];
    if (name == NULL || !normalise(name, buf, sizeof buf))
        return GW_EINVAL;
    for (const struct name_map *m = map; m->name != NULL; m++) {
        if (strcmp(m->name, buf) == 0) {
            *out = m->value;
            return 0;
        }
    }
    return GW_EINVAL;
}

static const struct name_map table_names[] = {
    {"coil", GW_MODBUS_TABLE_COIL},
    {"coils", GW_MODBUS_TABLE_COIL},
    {"co", GW_MODBUS_TABLE_COIL},
    {"discrete", GW_MODBUS_TABLE_DISCRETE},
    {"discrete_input", GW_MODBUS_TABLE_DISCRETE},
    {"discrete_inputs", GW_MODBUS_TABLE_DISCRETE},
    {"di", GW_MODBUS_TABLE_DISCRETE},
    {"input", GW_MODBUS_TABLE_INPUT},
    {"input_register", GW_MODBUS_TABLE_INPUT},
    {"input_registers", GW_MODBUS_TABLE_INPUT},
    {"ir", GW_MODBUS_TABLE_INPUT},
    {"holding", GW_MODBUS_TABLE_HOLDING},
    {"holding_register", GW_MODBUS_TABLE_HOLDING},
    {"holding_registers", GW_MODBUS_TABLE_HOLDING},
    {"hr", GW_MODBUS_TABLE_HOLDING},
    {NULL, 0},
};

static const struct name_map type_names[] = {
    {"bool", GW_MODBUS_TYPE_BOOL},
    {"boolean", GW_MODBUS_TYPE_BOOL},
    {"bit", GW_MODBUS_TYPE_BIT},
    {"int16", GW_MODBUS_TYPE_INT16},
    {"int", GW_MODBUS_TYPE_INT16},
    {"uint16", GW_MODBUS_TYPE_UINT16},
    {"uint", GW_MODBUS_TYPE_UINT16},
    {"int32", GW_MODBUS_TYPE_INT32},
    {"uint32", GW_MODBUS_TYPE_UINT32},
    {"int64", GW_MODBUS_TYPE_INT64},
    {"uint64", GW_MODBUS_TYPE_UINT64},
    {"float32", GW_MODBUS_TYPE_FLOAT32},
    {"float", GW_MODBUS_TYPE_FLOAT32},
    {"float64", GW_MODBUS_TYPE_FLOAT64},
    {"double", GW_MODBUS_TYPE_FLOAT64},
    {"string", GW_MODBUS_TYPE_STRING},
    {NULL, 0},
};

static const struct name_map order_names[] = {
    {"ab", GW_MODBUS_ORDER_ABCD},
    {"abcd", GW_MODBUS_ORDER_ABCD},
    {"abcdefgh", GW_MODBUS_ORDER_ABCD},
    {"big", GW_MODBUS_ORDER_ABCD},
    {"big_endian", GW_MODBUS_ORDER_ABCD},
    {"be", GW_MODBUS_ORDER_ABCD},
    {"none", GW_MODBUS_ORDER_ABCD},
    {"high_first", GW_MODBUS_ORDER_ABCD},
    {"ba", GW_MODBUS_ORDER_BADC},
    {"badc", GW_MODBUS_ORDER_BADC},
    {"badcfehg", GW_MODBUS_ORDER_BADC},
    {"byte_swapped", GW_MODBUS_ORDER_BADC},
    {"byte", GW_MODBUS_ORDER_BADC},
    {"low_first", GW_MODBUS_ORDER_BADC},
    {"cdab", GW_MODBUS_ORDER_CDAB},
    {"ghefcdab", GW_MODBUS_ORDER_CDAB},
    {"swapped", GW_MODBUS_ORDER_CDAB},
    {"word_swapped", GW_MODBUS_ORDER_CDAB},
    {"word", GW_MODBUS_ORDER_CDAB},
    {"little_word", GW_MODBUS_ORDER_CDAB},
    {"dcba", GW_MODBUS_ORDER_DCBA},
    {"hgfedcba", GW_MODBUS_ORDER_DCBA},
    {"little", GW_MODBUS_ORDER_DCBA},
    {"little_endian", GW_MODBUS_ORDER_DCBA},
    {"le", GW_MODBUS_ORDER_DCBA},
    {"word_byte", GW_MODBUS_ORDER_DCBA},
    {"byte_word", GW_MODBUS_ORDER_DCBA},
    {NULL, 0},
};

int gw_modbus_table_parse(const char *name, enum gw_modbus_table *out, char *err, size_t errlen)
{
    int v;
    if (lookup(table_names, name, &v) != 0) {
        say(err, errlen, "unknown Modbus table \"%s\" (expected coil, discrete, input or holding)",
            name ? name : "");
        return GW_EINVAL;
    }
    *out = (enum gw_modbus_table)v;
    return 0;
}

int gw_modbus_type_parse(const char *name, enum gw_modbus_type *out, char *err, size_t errlen)
{
    int v;
    if (lookup(type_names, name, &v) != 0) {
        say(err, errlen,
            "unknown Modbus type \"%s\" (expected bool, bit, int16, uint16, int32, uint32, int64, "
            "uint64, float32, float64 or string)",
            name ? name : "");
        return GW_EINVAL;
    }
    *out = (enum gw_modbus_type)v;
    return 0;
}

int gw_modbus_order_parse(const char *name, enum gw_modbus_order *out, char *err, size_t errlen)
{
    int v;
    if (lookup(order_names, name, &v) != 0) {
        say(err, errlen,
            "unknown byte order \"%s\" (expected ABCD, BADC, CDAB, DCBA, their 64-bit forms "
            "ABCDEFGH, BADCFEHG, GHEFCDAB, HGFEDCBA, or big, little, swapped, byte-swapped)",
            name ? name : "");
        return GW_EINVAL;
    }
    *out = (enum gw_modbus_order)v;
    return 0;
}

const char *gw_modbus_table_name(enum gw_modbus_table t)
{
    switch (t) {
    case GW_MODBUS_TABLE_COIL: return "coil";
    case GW_MODBUS_TABLE_DISCRETE: return "discrete";
    case GW_MODBUS_TABLE_INPUT: return "input";
    case GW_MODBUS_TABLE_HOLDING: return "holding";
    default: return "?";
    }
}

const char *gw_modbus_type_name(enum gw_modbus_type t)
{
    static const char *const names[GW_MODBUS_TYPE_COUNT] = {
        "bool", "bit", "int16", "uint16", "int32", "uint32",
        "int64", "uint64", "float32", "float64", "string",
    };
    return (unsigned)t < GW_MODBUS_TYPE_COUNT ? names[t] : "?";
}

const char *gw_modbus_order_name(enum gw_modbus_order o, enum gw_modbus_type t)
{
    static const char *const w16[4] = {"AB", "BA", "AB", "BA"};
    static const char *const w32[4] = {"ABCD", "BADC", "CDAB", "DCBA"};
    static const char *const w64[4] = {"ABCDEFGH", "BADCFEHG", "GHEFCDAB", "HGFEDCBA"};
    if ((unsigned)o > 3)
        return "?";
    switch (t) {
    case GW_MODBUS_TYPE_INT64:
    case GW_MODBUS_TYPE_UINT64:
    case GW_MODBUS_TYPE_FLOAT64: return w64[o];
    case GW_MODBUS_TYPE_INT32:
    case GW_MODBUS_TYPE_UINT32:
    case GW_MODBUS_TYPE_FLOAT32: return w32[o];
    case GW_MODBUS_TYPE_INT16:
    case GW_MODBUS_TYPE_UINT16:
    case GW_MODBUS_TYPE_STRING: return w16[o];
    default: return w32[o];
    }
}

int gw_modbus_table_function(enum gw_modbus_table t)
{
    static const int fc[GW_MODBUS_TABLE_COUNT] = {1, 2, 4, 3};
    return (unsigned)t < GW_MODBUS_TABLE_COUNT ? fc[t] : 0;
}

bool gw_modbus_table_is_bits(enum gw_modbus_table t)
{
    return t == GW_MODBUS_TABLE_COIL || t == GW_MODBUS_TABLE_DISCRETE;
}

void gw_modbus_point_init(struct gw_modbus_point *p)
{
    memset(p, 0, sizeof *p);
    p->table = GW_MODBUS_TABLE_HOLDING;
    p->type = GW_MODBUS_TYPE_UINT16;
    p->order = GW_MODBUS_ORDER_ABCD;
    p->scale = 1.0;
    p->offset = 0.0;
    p->access = GW_MODBUS_ACCESS_READ;
}

unsigned gw_modbus_point_width(const struct gw_modbus_point *p)
{
    switch (p->type) {
    case GW_MODBUS_TYPE_INT32:
    case GW_MODBUS_TYPE_UINT32:
    case GW_MODBUS_TYPE_FLOAT32: return 2;
    case GW_MODBUS_TYPE_INT64:
    case GW_MODBUS_TYPE_UINT64:
    case GW_MODBUS_TYPE_FLOAT64: return 4;
    case GW_MODBUS_TYPE_STRING: return p->count;
    default: return 1;
    }
}

/* --- Addresses --- */

int gw_modbus_address_parse(const char *s, int base, int *table, uint16_t *addr, char *err,
                            size_t errlen)
{
    if (s == NULL)
        s = "";
    size_t n = strlen(s);
    bool digits = n > 0;
    for (size_t i = 0; i < n; i++)
        digits = digits && isdigit((unsigned char)s[i]);
    if (!digits || n > 10) {
        say(err, errlen, "address \"%s\" is not a decimal register number", s);
        return GW_EINVAL;
    }
    unsigned long long v = strtoull(s, NULL, 10);

    if (*table < 0) {
        /* Modicon notation: the table digit, then a 1-based number in 4 or 5 digits. */
        if (n != 5 && n != 6) {
            say(err, errlen,
                "address \"%s\" names no table: configure a table or use the 5- or 6-digit "
                "notation (00001 coil, 10001 discrete input, 30001 input, 40001 holding)",
                s);
            return GW_EINVAL;
        }
        int t;
        switch (s[0]) {
        case '0': t = GW_MODBUS_TABLE_COIL; break;
        case '1': t = GW_MODBUS_TABLE_DISCRETE; break;
        case '3': t = GW_MODBUS_TABLE_INPUT; break;
        case '4': t = GW_MODBUS_TABLE_HOLDING; break;
        default:
            say(err, errlen,
                "address \"%s\": leading digit %c names no Modbus table (0 coil, 1 discrete "
                "input, 3 input register, 4 holding register)",
                s, s[0]);
            return GW_EINVAL;
        }
        unsigned long long rest = strtoull(s + 1, NULL, 10);
        if (rest == 0 || rest > 65536) {
            say(err, errlen,
                "address \"%s\" out of range: the notation is 1-based, %c%s1 is the first %s "
                "and %c65536 the last",
                s, s[0], n == 5 ? "000" : "0000", gw_modbus_table_name((enum gw_modbus_table)t),
                s[0]);
            return GW_ERANGE;
        }
        *table = t;
        *addr = (uint16_t)(rest - 1);
        return 0;
    }

    if (base != 0 && base != 1) {
        say(err, errlen, "address base %d invalid (expected 0 or 1)", base);
        return GW_EINVAL;
    }
    if (v < (unsigned long long)base || v > 65535ULL + (unsigned)base) {
        say(err, errlen, "address \"%s\" out of range for %d-based addressing (%d .. %u)", s, base,
            base, 65535u + (unsigned)base);
        return GW_ERANGE;
    }
    *addr = (uint16_t)(v - (unsigned)base);
    return 0;
}

/* --- Point validation --- */

static bool is_numeric(enum gw_modbus_type t)
{
    return t >= GW_MODBUS_TYPE_INT16 && t <= GW_MODBUS_TYPE_FLOAT64;
}

int gw_modbus_point_check(const struct gw_modbus_point *p, char *err, size_t errlen)
{
    char lb[48];
    const char *who = label(p, lb, sizeof lb);

    if ((unsigned)p->table >= GW_MODBUS_TABLE_COUNT || (unsigned)p->type >= GW_MODBUS_TYPE_COUNT ||
        (unsigned)p->order > 3 || (unsigned)p->access > GW_MODBUS_ACCESS_READ_WRITE) {
        say(err, errlen, "point %s: table, type, order or access out of range", who);
        return GW_EINVAL;
    }
    const char *type = gw_modbus_type_name(p->type);
    if (gw_modbus_table_is_bits(p->table) && p->type != GW_MODBUS_TYPE_BOOL) {
        say(err, errlen, "point %s: a %s holds single bits, so its type must be bool, not %s", who,
            gw_modbus_table_name(p->table), type);
        return GW_EINVAL;
    }
    if (p->type == GW_MODBUS_TYPE_BIT && p->bit > 15) {
        say(err, errlen, "point %s: bit index %u out of range (0 .. 15)", who, (unsigned)p->bit);
        return GW_EINVAL;
    }
    if (p->type == GW_MODBUS_TYPE_STRING &&
        (p->count == 0 || p->count > GW_MODBUS_MAX_STRING_REGS)) {
        say(err, errlen, "point %s: string length %u registers out of range (1 .. %d)", who,
            (unsigned)p->count, GW_MODBUS_MAX_STRING_REGS);
        return GW_EINVAL;
    }
    unsigned width = gw_modbus_point_width(p);
    if ((unsigned long)p->address + width > 65536UL) {
        say(err, errlen, "point %s: %s at address %u needs %u registers and runs past 65535", who,
            type, (unsigned)p->address, width);
        return GW_EINVAL;
    }
    if (p->access == GW_MODBUS_ACCESS_READ_WRITE &&
        (p->table == GW_MODBUS_TABLE_DISCRETE || p->table == GW_MODBUS_TABLE_INPUT)) {
        say(err, errlen, "point %s: a %s is read-only in Modbus and cannot be read-write", who,
            p->table == GW_MODBUS_TABLE_INPUT ? "input register" : "discrete input");
        return GW_EINVAL;
    }
    if (p->type == GW_MODBUS_TYPE_STRING && (p->order & GW_MODBUS_ORDER_CDAB)) {
        say(err, errlen, "point %s: strings take order ABCD (high byte first) or BADC (low byte "
            "first), not a word swap", who);
        return GW_EINVAL;
    }
    if (!isfinite(p->scale) || p->scale == 0.0 || !isfinite(p->offset)) {
        say(err, errlen, "point %s: scale must be finite and non-zero and offset finite", who);
        return GW_EINVAL;
    }
    if (!is_numeric(p->type) && (p->scale != 1.0 || p->offset != 0.0 || p->has_min ||
                                 p->has_max)) {
        say(err, errlen, "point %s: scale, offset, min and max apply to numbers, not to %s", who,
            type);
        return GW_EINVAL;
    }
    if ((p->has_min && isnan(p->min)) || (p->has_max && isnan(p->max)) ||
        (p->has_min && p->has_max && p->min > p->max)) {
        say(err, errlen, "point %s: min must not be above max", who);
        return GW_EINVAL;
    }
    return 0;
}

/* --- Register layout --- */

/*
 * The value's big-endian bytes b[0..2n) <-> n registers in the point's order. Canonical (ABCD)
 * register i holds b[2i] (high) and b[2i+1] (low); word swap reverses the registers, byte swap
 * exchanges the two bytes of each.
 */
static void bytes_to_regs(const uint8_t *b, unsigned n, enum gw_modbus_order o, uint16_t *regs)
{
    for (unsigned i = 0; i < n; i++) {
        unsigned src = (o & GW_MODBUS_ORDER_CDAB) ? n - 1 - i : i;
        uint8_t hi = b[2 * src], lo = b[2 * src + 1];
        if (o & GW_MODBUS_ORDER_BADC) {
            uint8_t t = hi;
            hi = lo;
            lo = t;
        }
        regs[i] = (uint16_t)((unsigned)hi << 8 | lo);
    }
}

static void regs_to_bytes(const uint16_t *regs, unsigned n, enum gw_modbus_order o, uint8_t *b)
{
    for (unsigned i = 0; i < n; i++) {
        unsigned dst = (o & GW_MODBUS_ORDER_CDAB) ? n - 1 - i : i;
        uint8_t hi = (uint8_t)(regs[i] >> 8), lo = (uint8_t)regs[i];
        if (o & GW_MODBUS_ORDER_BADC) {
            uint8_t t = hi;
            hi = lo;
            lo = t;
        }
        b[2 * dst] = hi;
        b[2 * dst + 1] = lo;
    }
}

/* Numeric types span 1, 2 or 4 registers (64 bits at most). */
#define MAX_NUMERIC_REGS 4

/* Raw bits of a numeric type of n registers as an unsigned integer. */
static uint64_t regs_to_raw(const uint16_t *regs, unsigned n, enum gw_modbus_order o)
{
    uint8_t b[2 * MAX_NUMERIC_REGS];
    if (n > MAX_NUMERIC_REGS) /* never for a numeric type; states the bound for the compiler */
        n = MAX_NUMERIC_REGS;
    regs_to_bytes(regs, n, o, b);
    uint64_t raw = 0;
    for (unsigned i = 0; i < 2 * n; i++)
        raw = raw << 8 | b[i];
    return raw;
}

static void raw_to_regs(uint64_t raw, unsigned n, enum gw_modbus_order o, uint16_t *regs)
{
    uint8_t b[2 * MAX_NUMERIC_REGS];
    if (n > MAX_NUMERIC_REGS)
        n = MAX_NUMERIC_REGS;
    for (unsigned i = 0; i < 2 * n; i++)
        b[i] = (uint8_t)(raw >> (8 * (2 * n - 1 - i)));
    bytes_to_regs(b, n, o, regs);
}

/* --- Decoding --- */

static bool identity(const struct gw_modbus_point *p)
{
    return p->scale == 1.0 && p->offset == 0.0;
}

int gw_modbus_decode(const struct gw_modbus_point *p, const uint16_t *regs, size_t nregs,
                     struct gw_value *out, char *err, size_t errlen)
{
    char lb[48];
    unsigned width = gw_modbus_point_width(p);
    if (gw_modbus_table_is_bits(p->table)) {
        say(err, errlen, "point %s: a %s is decoded from a bit, not from registers",
            label(p, lb, sizeof lb), gw_modbus_table_name(p->table));
        return GW_EINVAL;
    }
    if (regs == NULL || nregs < width || width == 0) {
        say(err, errlen, "point %s: %zu registers given, %s needs %u", label(p, lb, sizeof lb),
            regs ? nregs : 0, gw_modbus_type_name(p->type), width);
        return GW_EINVAL;
    }

    if (p->type == GW_MODBUS_TYPE_STRING) {
        uint8_t b[2 * GW_MODBUS_MAX_STRING_REGS];
        if (width > GW_MODBUS_MAX_STRING_REGS) {
            say(err, errlen, "point %s: string of %u registers too long", label(p, lb, sizeof lb),
                width);
            return GW_EINVAL;
        }
        /* Byte placement only: a string is a sequence of registers, never word-swapped. */
        regs_to_bytes(regs, width, p->order & GW_MODBUS_ORDER_BADC, b);
        size_t len = 2u * width;
        while (len > 0 && (b[len - 1] == '\0' || b[len - 1] == ' '))
            len--;
        *out = gw_value_str((const char *)b, len);
        return 0;
    }

    uint64_t raw = regs_to_raw(regs, width, p->order);
    double d = 0.0;
    bool is_double = true;
    switch (p->type) {
    case GW_MODBUS_TYPE_BOOL: *out = gw_value_bool(raw != 0); return 0;
    case GW_MODBUS_TYPE_BIT: *out = gw_value_bool((regs[0] >> p->bit) & 1u); return 0;
    case GW_MODBUS_TYPE_INT16:
        *out = gw_value_int((int16_t)raw);
        is_double = false;
        break;
    case GW_MODBUS_TYPE_INT32:
        *out = gw_value_int((int32_t)(uint32_t)raw);
        is_double = false;
        break;
    case GW_MODBUS_TYPE_INT64:
        *out = gw_value_int((int64_t)raw);
        is_double = false;
        break;
    case GW_MODBUS_TYPE_UINT16:
    case GW_MODBUS_TYPE_UINT32:
    case GW_MODBUS_TYPE_UINT64:
        *out = gw_value_uint(raw);
        is_double = false;
        break;
    case GW_MODBUS_TYPE_FLOAT32: {
        uint32_t u = (uint32_t)raw;
        float f;
        memcpy(&f, &u, sizeof f);
        d = f;
        break;
    }
    case GW_MODBUS_TYPE_FLOAT64: memcpy(&d, &raw, sizeof d); break;
    default:
        say(err, errlen, "point %s: unknown type", label(p, lb, sizeof lb));
        return GW_EINVAL;
    }

    if (identity(p)) {
        if (is_double)
            *out = gw_value_double(d);
        return 0;
    }
    if (!is_double)
        d = out->type == GW_VALUE_INT ? (double)out->i : (double)out->u;
    *out = gw_value_double(d * p->scale + p->offset);
    return 0;
}

int gw_modbus_decode_bit(const struct gw_modbus_point *p, uint8_t bit, struct gw_value *out)
{
    if (!gw_modbus_table_is_bits(p->table))
        return GW_EINVAL;
    *out = gw_value_bool(bit != 0);
    return 0;
}

/* --- Encoding --- */

/* Type limits of the integer types. */
static void int_limits(enum gw_modbus_type t, bool *is_signed, int64_t *smin, int64_t *smax,
                       uint64_t *umax)
{
    *is_signed = t == GW_MODBUS_TYPE_INT16 || t == GW_MODBUS_TYPE_INT32 ||
                 t == GW_MODBUS_TYPE_INT64;
    switch (t) {
    case GW_MODBUS_TYPE_INT16: *smin = INT16_MIN, *smax = INT16_MAX; break;
    case GW_MODBUS_TYPE_INT32: *smin = INT32_MIN, *smax = INT32_MAX; break;
    case GW_MODBUS_TYPE_INT64: *smin = INT64_MIN, *smax = INT64_MAX; break;
    default: *smin = 0, *smax = 0; break;
    }
    switch (t) {
    case GW_MODBUS_TYPE_UINT16: *umax = UINT16_MAX; break;
    case GW_MODBUS_TYPE_UINT32: *umax = UINT32_MAX; break;
    case GW_MODBUS_TYPE_UINT64: *umax = UINT64_MAX; break;
    default: *umax = (uint64_t)*smax; break;
    }
}

/* Writes "value V" for v into buf. */
static void fmt_value(char *buf, size_t len, const struct gw_value *v)
{
    switch (v->type) {
    case GW_VALUE_BOOL: snprintf(buf, len, "%s", v->b ? "true" : "false"); break;
    case GW_VALUE_UINT: snprintf(buf, len, "%" PRIu64, v->u); break;
    case GW_VALUE_INT: snprintf(buf, len, "%" PRId64, v->i); break;
    case GW_VALUE_DOUBLE: fmt_double(buf, len, v->d); break;
    default: snprintf(buf, len, "(non-number)"); break;
    }
}

static int out_of_range(const struct gw_modbus_point *p, const struct gw_value *v,
                        const char *limits, char *err, size_t errlen)
{
    char lb[48], vb[40];
    fmt_value(vb, sizeof vb, v);
    say(err, errlen, "value %s out of range for %s point %s (%s)", vb,
        gw_modbus_type_name(p->type), label(p, lb, sizeof lb), limits);
    return GW_ERANGE;
}

static int type_limits_text(const struct gw_modbus_point *p, char *buf, size_t len)
{
    bool sg;
    int64_t smin, smax;
    uint64_t umax;
    int_limits(p->type, &sg, &smin, &smax, &umax);
    if (sg)
        return snprintf(buf, len, "%" PRId64 " .. %" PRId64, smin, smax);
    return snprintf(buf, len, "0 .. %" PRIu64, umax);
}

/* Encodes an integer-typed value exactly (scale 1, offset 0): no detour through double. */
static int encode_exact(const struct gw_modbus_point *p, const struct gw_value *v, uint64_t *raw,
                        char *err, size_t errlen)
{
    bool sg;
    int64_t smin, smax;
    uint64_t umax;
    int_limits(p->type, &sg, &smin, &smax, &umax);
    bool ok;
    uint64_t bits;
    if (v->type == GW_VALUE_INT && v->i < 0) {
        ok = sg && v->i >= smin;
        bits = (uint64_t)v->i;
    } else {
        uint64_t u = v->type == GW_VALUE_INT ? (uint64_t)v->i
                     : v->type == GW_VALUE_UINT ? v->u
                                                : (uint64_t)v->b;
        ok = u <= umax;
        bits = u;
    }
    if (!ok) {
        char lim[64];
        type_limits_text(p, lim, sizeof lim);
        return out_of_range(p, v, lim, err, errlen);
    }
    *raw = bits;
    return 0;
}

/* Encodes a raw (already unscaled) double into an integer type, rounding half away from zero. */
static int encode_rounded(const struct gw_modbus_point *p, const struct gw_value *v, double raw_d,
                          uint64_t *raw, char *err, size_t errlen)
{
    char lb[48];
    if (!isfinite(raw_d)) {
        say(err, errlen, "value %s cannot be written to %s point %s: not a finite number",
            isnan(raw_d) ? "NaN" : (raw_d > 0 ? "inf" : "-inf"), gw_modbus_type_name(p->type),
            label(p, lb, sizeof lb));
        return GW_EINVAL;
    }
    bool sg;
    int64_t smin, smax;
    uint64_t umax;
    int_limits(p->type, &sg, &smin, &smax, &umax);
    double r = round(raw_d);
    bool ok;
    /* Compare against powers of two, which doubles hold exactly. */
    if (sg)
        ok = r >= (double)smin && r < -(double)smin;
    else
        ok = r >= 0.0 && (p->type == GW_MODBUS_TYPE_UINT64 ? r < 18446744073709551616.0
                                                           : r <= (double)umax);
    if (!ok) {
        char lim[120], tl[64];
        type_limits_text(p, tl, sizeof tl);
        if (identity(p)) {
            snprintf(lim, sizeof lim, "%s", tl);
        } else {
            char rb[32];
            fmt_double(rb, sizeof rb, raw_d);
            snprintf(lim, sizeof lim, "raw %s not in %s", rb, tl);
        }
        return out_of_range(p, v, lim, err, errlen);
    }
    *raw = sg ? (uint64_t)(int64_t)r : (uint64_t)r;
    return 0;
}

/* Reads a bool-like value: BOOL, or a number that is exactly 0 or 1. */
static int as_bool(const struct gw_modbus_point *p, const struct gw_value *v, bool *b, char *err,
                   size_t errlen)
{
    char lb[48], vb[40];
    switch (v->type) {
    case GW_VALUE_BOOL: *b = v->b; return 0;
    case GW_VALUE_UINT:
        if (v->u <= 1) {
            *b = v->u == 1;
            return 0;
        }
        break;
    case GW_VALUE_INT:
        if (v->i == 0 || v->i == 1) {
            *b = v->i == 1;
            return 0;
        }
        break;
    case GW_VALUE_DOUBLE:
        if (v->d == 0.0 || v->d == 1.0) {
            *b = v->d == 1.0;
            return 0;
        }
        break;
    default:
        say(err, errlen, "point %s: %s needs true/false or 0/1, got a non-number",
            label(p, lb, sizeof lb), gw_modbus_type_name(p->type));
        return GW_EINVAL;
    }
    fmt_value(vb, sizeof vb, v);
    say(err, errlen, "value %s out of range for %s point %s (false/true or 0/1)", vb,
        gw_modbus_type_name(p->type), label(p, lb, sizeof lb));
    return GW_ERANGE;
}

static int check_writable(const struct gw_modbus_point *p, char *err, size_t errlen)
{
    char lb[48];
    if (p->access != GW_MODBUS_ACCESS_READ_WRITE) {
        say(err, errlen, "point %s is read-only", label(p, lb, sizeof lb));
        return GW_EREADONLY;
    }
    return 0;
}

static int check_min_max(const struct gw_modbus_point *p, const struct gw_value *v, double d,
                         char *err, size_t errlen)
{
    if ((p->has_min && !(d >= p->min)) || (p->has_max && !(d <= p->max))) {
        char lim[80], a[32] = "-inf", b[32] = "inf";
        if (p->has_min)
            fmt_double(a, sizeof a, p->min);
        if (p->has_max)
            fmt_double(b, sizeof b, p->max);
        snprintf(lim, sizeof lim, "min %s, max %s", a, b);
        return out_of_range(p, v, lim, err, errlen);
    }
    return 0;
}

static int encode_string(const struct gw_modbus_point *p, const struct gw_value *v, uint16_t *regs,
                         char *err, size_t errlen)
{
    char lb[48];
    unsigned width = gw_modbus_point_width(p);
    if (v->type != GW_VALUE_STRING) {
        say(err, errlen, "point %s: a string point needs a string value",
            label(p, lb, sizeof lb));
        return GW_EINVAL;
    }
    if (width > GW_MODBUS_MAX_STRING_REGS || v->s.len > 2u * width) {
        say(err, errlen, "string of %zu bytes too long for string point %s (%u bytes in %u "
            "registers)", v->s.len, label(p, lb, sizeof lb), 2u * width, width);
        return GW_ERANGE;
    }
    uint8_t b[2 * GW_MODBUS_MAX_STRING_REGS];
    memset(b, 0, sizeof b);
    if (v->s.len > 0)
        memcpy(b, v->s.p, v->s.len);
    bytes_to_regs(b, width, p->order & GW_MODBUS_ORDER_BADC, regs);
    return 0;
}

int gw_modbus_encode(const struct gw_modbus_point *p, const struct gw_value *v, uint16_t *regs,
                     size_t nregs, char *err, size_t errlen)
{
    char lb[48];
    unsigned width = gw_modbus_point_width(p);
    int rc = check_writable(p, err, errlen);
    if (rc < 0)
        return rc;
    if (gw_modbus_table_is_bits(p->table)) {
        say(err, errlen, "point %s: a coil is written as a bit, not as registers",
            label(p, lb, sizeof lb));
        return GW_EINVAL;
    }
    if (regs == NULL || nregs < width || width == 0) {
        say(err, errlen, "point %s: room for %zu registers, %s needs %u", label(p, lb, sizeof lb),
            regs ? nregs : 0, gw_modbus_type_name(p->type), width);
        return GW_EINVAL;
    }

    if (p->type == GW_MODBUS_TYPE_STRING)
        return encode_string(p, v, regs, err, errlen);
    if (p->type == GW_MODBUS_TYPE_BOOL || p->type == GW_MODBUS_TYPE_BIT) {
        bool b;
        rc = as_bool(p, v, &b, err, errlen);
        if (rc < 0)
            return rc;
        if (p->type == GW_MODBUS_TYPE_BOOL)
            regs[0] = b ? 1 : 0;
        else if (b)
            regs[0] = (uint16_t)(regs[0] | (1u << p->bit));
        else
            regs[0] = (uint16_t)(regs[0] & ~(1u << p->bit));
        return 0;
    }

    /* Numbers from here on. */
    double d;
    switch (v->type) {
    case GW_VALUE_BOOL: d = v->b ? 1.0 : 0.0; break;
    case GW_VALUE_UINT: d = (double)v->u; break;
    case GW_VALUE_INT: d = (double)v->i; break;
    case GW_VALUE_DOUBLE: d = v->d; break;
    default:
        say(err, errlen, "point %s: %s needs a number", label(p, lb, sizeof lb),
            gw_modbus_type_name(p->type));
        return GW_EINVAL;
    }
    rc = check_min_max(p, v, d, err, errlen);
    if (rc < 0)
        return rc;

    uint64_t raw = 0; /* set on every path below; GCC cannot see it through the calls */
    if (p->type == GW_MODBUS_TYPE_FLOAT32 || p->type == GW_MODBUS_TYPE_FLOAT64) {
        double r = identity(p) ? d : (d - p->offset) / p->scale;
        if (p->type == GW_MODBUS_TYPE_FLOAT64) {
            memcpy(&raw, &r, sizeof raw);
        } else {
            if (isfinite(r) && fabs(r) > FLT_MAX)
                return out_of_range(p, v, "float32 holds at most 3.40282347e+38 in magnitude",
                                    err, errlen);
            float f = (float)r;
            uint32_t u;
            memcpy(&u, &f, sizeof u);
            raw = u;
        }
    } else if (identity(p) && v->type != GW_VALUE_DOUBLE) {
        rc = encode_exact(p, v, &raw, err, errlen);
        if (rc < 0)
            return rc;
    } else {
        rc = encode_rounded(p, v, identity(p) ? d : (d - p->offset) / p->scale, &raw, err, errlen);
        if (rc < 0)
            return rc;
    }
    raw_to_regs(raw, width, p->order, regs);
    return 0;
}

int gw_modbus_encode_bit(const struct gw_modbus_point *p, const struct gw_value *v, uint8_t *bit,
                         char *err, size_t errlen)
{
    char lb[48];
    int rc = check_writable(p, err, errlen);
    if (rc < 0)
        return rc;
    if (p->table != GW_MODBUS_TABLE_COIL) {
        say(err, errlen, "point %s: only coils are written as bits", label(p, lb, sizeof lb));
        return GW_EINVAL;
    }
    bool b;
    rc = as_bool(p, v, &b, err, errlen);
    if (rc < 0)
        return rc;
    *bit = b ? 1 : 0;
    return 0;
}
