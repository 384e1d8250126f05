/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Poll lateness of one Modbus connection: how late each scheduled poll started against its due
 * time (monotonic clock, microseconds), as a log-linear histogram (8 buckets per power of two,
 * so a quantile is within 12.5 % of the true value; exact below 8 us), its maximum, and the count
 * of missed deadlines: polls that started a whole interval (or more) late, plus polls that were
 * skipped (the scheduler jumped over them, or the link was down when they were due). Pure: no
 * clock, no locking; the worker that runs the polls owns the struct.
 */
#ifndef GW_MODBUS_LATE_H
#define GW_MODBUS_LATE_H

#include <stdint.h>

#define GW_MODBUS_LATE_SUB 8
#define GW_MODBUS_LATE_OCTAVES 36  /* up to 2^38 us, about 3 days */
#define GW_MODBUS_LATE_BUCKETS (GW_MODBUS_LATE_SUB * GW_MODBUS_LATE_OCTAVES)

struct gw_modbus_late {
    uint32_t bucket[GW_MODBUS_LATE_BUCKETS];
    uint64_t polls;     /* polls recorded */
    uint64_t max_us;    /* worst lateness */
    uint64_t missed;    /* started >= one interval late, or skipped */
    uint64_t skipped;   /* of which skipped */
};

/* Records one poll that started late_us after its due time, interval_us its period. */
void gw_modbus_late_record(struct gw_modbus_late *l, uint64_t late_us, uint64_t interval_us);

/* Counts n polls that were skipped (never run): each is a missed deadline. */
void gw_modbus_late_skip(struct gw_modbus_late *l, uint64_t n);

/* The q-quantile (0 < q <= 1) of the recorded lateness in us (bucket midpoint, at most max_us);
 * 0 when nothing was recorded. */
uint64_t gw_modbus_late_quantile(const struct gw_modbus_late *l, double q);

#endif
