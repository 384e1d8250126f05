/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Modbus point map: the pure half of the Modbus adapter. It describes one configured point (table,
 * address, data type, byte/word order, scale, offset, limits, access), parses the names and
 * address notations the config uses, and converts between the registers or bits libmodbus reads
 * and writes and struct gw_value. No I/O and no libmodbus: the adapter's worker (modbus.c) calls
 * these around modbus_read_registers()/modbus_write_registers(), and the unit tests call them
 * without hardware. Relies on gw/value.h (gw_codec) for values and gw/error.h for codes.
 *
 * Every function that can fail on input takes an optional message buffer (err, errlen; NULL/0 for
 * none) and writes one line there that names the point and the reason, ready for a log line.
 */
#ifndef GW_MODBUS_MAP_H
#define GW_MODBUS_MAP_H

#include "gw/value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The four Modbus data tables. The enums of this header are packed (one byte each, GCC and Clang):
 * a gateway holds a gw_modbus_point per configured point, 56 bytes instead of 80. */
enum __attribute__((packed)) gw_modbus_table {
    GW_MODBUS_TABLE_COIL = 0,     /* 0xxxx, read FC 1, write FC 5/15, 1 bit */
    GW_MODBUS_TABLE_DISCRETE,     /* 1xxxx, read FC 2, read-only, 1 bit */
    GW_MODBUS_TABLE_INPUT,        /* 3xxxx, read FC 4, read-only, 16-bit registers */
    GW_MODBUS_TABLE_HOLDING,      /* 4xxxx, read FC 3, write FC 6/16, 16-bit registers */
    GW_MODBUS_TABLE_COUNT
};

/* Data types of a point. */
enum __attribute__((packed)) gw_modbus_type {
    GW_MODBUS_TYPE_BOOL = 0,  /* a coil or discrete input; in a register: 0 = false, else true */
    GW_MODBUS_TYPE_BIT,       /* one bit (0 = LSB .. 15) of a register */
    GW_MODBUS_TYPE_INT16,
    GW_MODBUS_TYPE_UINT16,
    GW_MODBUS_TYPE_INT32,
    GW_MODBUS_TYPE_UINT32,
    GW_MODBUS_TYPE_INT64,
    GW_MODBUS_TYPE_UINT64,
    GW_MODBUS_TYPE_FLOAT32,   /* IEEE 754 binary32 */
    GW_MODBUS_TYPE_FLOAT64,   /* IEEE 754 binary64 */
    GW_MODBUS_TYPE_STRING,    /* count registers, 2 bytes each */
    GW_MODBUS_TYPE_COUNT
};

/*
 * Byte and word order, named by where the bytes of the big-endian value A B C D (A = most
 * significant) land in the registers as they appear on the wire, register 0 first. The order is
 * two independent swaps, so one enum serves 16-, 32- and 64-bit types:
 *   - byte swap: the two bytes inside every register are exchanged;
 *   - word swap: the registers are taken in reverse order (all of them, for 64-bit types).
 *              16-bit  32-bit  64-bit      aliases
 *   ABCD       AB      ABCD    ABCDEFGH    big, big-endian, be, none, high-first
 *   BADC       BA      BADC    BADCFEHG    byte-swapped, byte, low-first
 *   CDAB       AB      CDAB    GHEFCDAB    swapped, word-swapped, word, little-word
 *   DCBA       BA      DCBA    HGFEDCBA    little, little-endian, le, word_byte, byte-word
 * For strings only ABCD (first character in the high byte) and BADC (in the low byte) apply.
 */
enum __attribute__((packed)) gw_modbus_order {
    GW_MODBUS_ORDER_ABCD = 0,
    GW_MODBUS_ORDER_BADC = 1, /* bit 0: byte swap */
    GW_MODBUS_ORDER_CDAB = 2, /* bit 1: word swap */
    GW_MODBUS_ORDER_DCBA = 3, /* both */
};

enum __attribute__((packed)) gw_modbus_access {
    GW_MODBUS_ACCESS_READ = 0,
    GW_MODBUS_ACCESS_READ_WRITE,
};

/* The largest string point, in registers (a single read of 125 registers is the protocol limit). */
#define GW_MODBUS_MAX_STRING_REGS 125

/*
 * One configured point. Initialise with gw_modbus_point_init() and validate with
 * gw_modbus_point_check() before handing it to the codec functions below.
 * Engineering value = raw value * scale + offset.
 */
struct gw_modbus_point {
    const char *name;            /* borrowed; used in messages only ("plc1/temp"); may be NULL */
    double scale;                /* default 1; finite and not 0 */
    double offset;               /* default 0; finite */
    double min, max;             /* write limits, in engineering units (has_min, has_max) */
    uint16_t address;            /* 0-based protocol address of the first register or bit */
    uint16_t count;              /* registers, STRING only (1 .. GW_MODBUS_MAX_STRING_REGS) */
    enum gw_modbus_table table;
    enum gw_modbus_type type;
    enum gw_modbus_order order;
    enum gw_modbus_access access;
    uint8_t bit;                 /* BIT only: 0 (least significant) .. 15 */
    bool has_min, has_max;
};

/* --- Names and addresses --- */

/* Sets defaults: holding register 0, uint16, ABCD, scale 1, offset 0, no limits, read-only. */
void gw_modbus_point_init(struct gw_modbus_point *p);

/*
 * Parses a table name: "coil"/"coils"/"co", "discrete"/"discrete_input(s)"/"di",
 * "input"/"input_register(s)"/"ir", "holding"/"holding_register(s)"/"hr" (case-insensitive).
 * name is borrowed. Returns 0 or GW_EINVAL (message in err).
 */
int gw_modbus_table_parse(const char *name, enum gw_modbus_table *out, char *err, size_t errlen);

/* Parses "bool", "bit", "int16" ... "float64", "string" (case-insensitive; also "float" = float32,
 * "double" = float64, "int"/"uint" = 16-bit). Returns 0 or GW_EINVAL (message in err). */
int gw_modbus_type_parse(const char *name, enum gw_modbus_type *out, char *err, size_t errlen);

/* Parses an order name or alias from the table above (case-insensitive; '-', '_' and ' ' are the
 * same). Returns 0 or GW_EINVAL (message in err). */
int gw_modbus_order_parse(const char *name, enum gw_modbus_order *out, char *err, size_t errlen);

/* Canonical names (static strings, never NULL): "holding", "float32", and the order spelled for
 * the width of type ("BA", "CDAB", "GHEFCDAB"). */
const char *gw_modbus_table_name(enum gw_modbus_table t);
const char *gw_modbus_type_name(enum gw_modbus_type t);
const char *gw_modbus_order_name(enum gw_modbus_order o, enum gw_modbus_type t);

/* The read function code of a table: 1 coils, 2 discrete inputs, 3 holding, 4 input registers. */
int gw_modbus_table_function(enum gw_modbus_table t);

/* True for coils and discrete inputs (addressed in bits), false for the register tables. */
bool gw_modbus_table_is_bits(enum gw_modbus_table t);

/*
 * Registers (or bits, for coils and discrete inputs) a point occupies: 1 for bool/bit/16-bit,
 * 2 for 32-bit, 4 for 64-bit types, count for strings.
 */
unsigned gw_modbus_point_width(const struct gw_modbus_point *p);

/*
 * Parses an address as written in a config. table is in/out:
 *   - *table < 0 on entry (no table configured): the address must be in Modicon notation, five or
 *     six digits whose first digit names the table (0 coil, 1 discrete input, 3 input register,
 *     4 holding register) and whose rest is 1-based: "40001" and "400001" are holding register 0,
 *     "30010" input register 9, "00001" coil 0, "465536" holding register 65535. The table found
 *     is stored in *table.
 *   - *table >= 0 (a table was configured): s is a plain decimal number in base 0 or 1
 *     ("1" with base 1 is address 0); it is never read as Modicon notation, so holding register
 *     40001 stays 40001.
 * s is borrowed. On success *addr is the 0-based protocol address. Returns 0, GW_EINVAL (not a
 * number, unknown table digit, base not 0/1) or GW_ERANGE (outside 0..65535 after conversion);
 * the message in err quotes s.
 */
int gw_modbus_address_parse(const char *s, int base, int *table, uint16_t *addr, char *err,
                            size_t errlen);

/*
 * Checks a point's fields against each other: type allowed in table (coils and discrete inputs
 * hold bool only; bit needs a register table), bit index, string count, the point fits below
 * address 65536, access (discrete inputs and input registers are read-only), order (strings: ABCD
 * or BADC), scale finite and non-zero, offset finite, min <= max, and no scale, offset or limits
 * on bool, bit or string points.
 * Returns 0 or GW_EINVAL (message in err names the point).
 */
int gw_modbus_point_check(const struct gw_modbus_point *p, char *err, size_t errlen);

/* --- Values --- */

/*
 * Decodes a point from the registers read for it. regs (borrowed) holds at least
 * gw_modbus_point_width(p) registers, register 0 being the point's address, as libmodbus returns
 * them (host-order uint16_t of the big-endian wire words). *out is overwritten (not finalised):
 *   bool/bit           GW_VALUE_BOOL
 *   int16/32/64        GW_VALUE_INT, unsigned types GW_VALUE_UINT, floats GW_VALUE_DOUBLE
 *                      (NaN and infinities pass through); with scale != 1 or offset != 0 every
 *                      numeric type becomes GW_VALUE_DOUBLE raw * scale + offset
 *   string             GW_VALUE_STRING (heap; gw_value_fini frees it) with trailing NUL bytes
 *                      and spaces removed
 * Returns 0 or GW_EINVAL (nregs too small, bits table).
 */
int gw_modbus_decode(const struct gw_modbus_point *p, const uint16_t *regs, size_t nregs,
                     struct gw_value *out, char *err, size_t errlen);

/* Decodes a coil or discrete input from the bit libmodbus read (0 or 1) into GW_VALUE_BOOL. */
int gw_modbus_decode_bit(const struct gw_modbus_point *p, uint8_t bit, struct gw_value *out);

/*
 * Encodes a value to write into registers. v is borrowed; regs receives gw_modbus_point_width(p)
 * registers (nregs must be at least that). For GW_MODBUS_TYPE_BIT, regs[0] must hold the register's
 * current value on entry and only the point's bit is changed (read-modify-write).
 * Accepted values: numbers (BOOL/UINT/INT/DOUBLE) for numeric types; BOOL, or a number equal to 0
 * or 1, for bool/bit; STRING for strings (at most 2 * count bytes; shorter ones are padded with
 * NUL). A value of 0 or false is an ordinary value and is written like any other.
 * Order of checks: min/max on the engineering value, then raw = (value - offset) / scale, then
 * raw against the type's limits. Integer types round raw to the nearest integer, halves away from
 * zero (2.5 -> 3, -2.5 -> -3); integers given exactly with scale 1 and offset 0 are converted
 * without passing through double, so all 64-bit values are exact. float32 rounds to nearest; a
 * finite value beyond the float32 range is an error; NaN and infinities are written as such.
 * Returns 0, GW_EREADONLY (point is read-only), GW_EINVAL (value of the wrong kind, e.g. a string
 * for an int16 point, or NaN for an integer point) or GW_ERANGE
 * ("value 70000 out of range for uint16 point plc1/x (0 .. 65535)").
 */
int gw_modbus_encode(const struct gw_modbus_point *p, const struct gw_value *v, uint16_t *regs,
                     size_t nregs, char *err, size_t errlen);

/* Encodes a value for a coil (BOOL, or a number 0 or 1) into *bit (0 or 1). Same codes. */
int gw_modbus_encode_bit(const struct gw_modbus_point *p, const struct gw_value *v, uint8_t *bit,
                         char *err, size_t errlen);

#endif
