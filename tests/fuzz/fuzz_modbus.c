/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: device responses into typed values. The first bytes pick a point (type, byte/word
 * order, register count for strings, bit, scale); the rest are the registers a device answered.
 * Decoding must never crash or read past the registers, and for unscaled points what decodes must
 * encode and decode again to an equal value (the write path and the read path agree).
 */
#include "modbus_map.h"

#include "gw/value.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    static const enum gw_modbus_type types[] = {
        GW_MODBUS_TYPE_BIT,    GW_MODBUS_TYPE_INT16,   GW_MODBUS_TYPE_UINT16, GW_MODBUS_TYPE_INT32,
        GW_MODBUS_TYPE_UINT32, GW_MODBUS_TYPE_INT64,   GW_MODBUS_TYPE_UINT64, GW_MODBUS_TYPE_FLOAT32,
        GW_MODBUS_TYPE_FLOAT64, GW_MODBUS_TYPE_STRING, GW_MODBUS_TYPE_BOOL};
    static const double scales[] = {1, 0.1, 10, -1, 0.001};
    struct gw_modbus_point p;
    gw_modbus_point_init(&p);
    p.name = "fuzz/point";
    p.table = GW_MODBUS_TABLE_HOLDING;
    p.type = types[data[0] % (sizeof types / sizeof types[0])];
    p.order = (enum gw_modbus_order)(data[1] & 3);
    p.count = (uint16_t)(1 + data[2] % 16);
    p.bit = (uint8_t)(data[2] % 16);
    p.scale = scales[data[3] % 5];
    p.access = GW_MODBUS_ACCESS_READ_WRITE;
    char err[256];
    if (gw_modbus_point_check(&p, err, sizeof err) < 0)
        return 0;
    data += 4;
    size -= 4;
    size_t nregs = size / 2;
    uint16_t *regs = malloc((nregs ? nregs : 1) * sizeof *regs); /* exact size: ASan sees overreads */
    for (size_t i = 0; i < nregs; i++)
        regs[i] = (uint16_t)(data[2 * i] << 8 | data[2 * i + 1]);
    struct gw_value v;
    if (gw_modbus_decode(&p, regs, nregs, &v, err, sizeof err) == 0) {
        unsigned width = gw_modbus_point_width(&p);
        if (p.scale == 1 && p.type != GW_MODBUS_TYPE_BIT && width <= 64) {
            uint16_t back[64], again_regs[64];
            struct gw_value again;
            if (gw_modbus_encode(&p, &v, back, width, err, sizeof err) == 0) {
                memcpy(again_regs, back, width * sizeof *back);
                if (gw_modbus_decode(&p, again_regs, width, &again, err, sizeof err) != 0 ||
                    !gw_value_equal(&v, &again))
                    abort();
                gw_value_fini(&again);
            }
        }
        gw_value_fini(&v);
    }
    free(regs);
    return 0;
}
