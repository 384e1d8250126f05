/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Poll lateness statistics (modbus_late.h). Bucket i < 8 holds exactly i us; above, octave o >= 1
 * covers [8 * 2^(o-1), 8 * 2^o) us in 8 equal buckets.
 */
#include "modbus_late.h"

#include <math.h>

static unsigned late_index(uint64_t us)
{
    if (us < GW_MODBUS_LATE_SUB)
        return (unsigned)us;
    unsigned msb = 63u - (unsigned)__builtin_clzll(us); /* >= 3 */
    unsigned oct = msb - 2u;
    unsigned sub = (unsigned)(us >> (msb - 3u)) & (GW_MODBUS_LATE_SUB - 1u);
    unsigned idx = oct * GW_MODBUS_LATE_SUB + sub;
    return idx < GW_MODBUS_LATE_BUCKETS ? idx : GW_MODBUS_LATE_BUCKETS - 1u;
}

static uint64_t late_mid(unsigned idx)
{
    if (idx < GW_MODBUS_LATE_SUB)
        return idx;
    unsigned oct = idx / GW_MODBUS_LATE_SUB, sub = idx % GW_MODBUS_LATE_SUB;
    uint64_t base = (uint64_t)GW_MODBUS_LATE_SUB << (oct - 1u);
    uint64_t width = base / GW_MODBUS_LATE_SUB;
    return base + sub * width + width / 2u;
}

void gw_modbus_late_record(struct gw_modbus_late *l, uint64_t late_us, uint64_t interval_us)
{
    l->bucket[late_index(late_us)]++;
    l->polls++;
    if (late_us > l->max_us)
        l->max_us = late_us;
    if (interval_us > 0 && late_us >= interval_us)
        l->missed++;
}

void gw_modbus_late_skip(struct gw_modbus_late *l, uint64_t n)
{
    l->missed += n;
    l->skipped += n;
}

uint64_t gw_modbus_late_quantile(const struct gw_modbus_late *l, double q)
{
    if (l->polls == 0)
        return 0;
    uint64_t rank = (uint64_t)ceil(q * (double)l->polls);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < GW_MODBUS_LATE_BUCKETS; i++) {
        seen += l->bucket[i];
        if (seen >= rank) {
            uint64_t v = late_mid(i);
            return v > l->max_us ? l->max_us : v;
        }
    }
    return l->max_us;
}
