/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Modbus read planner: turns the points of one bus (unit id, table, address, width) into the
 * fewest read requests that cover them all, bridging runs of unused addresses up to a configured
 * gap and never exceeding the per-request maxima; and says, for every point, which request serves
 * it and at which offset. Pure: no I/O, no libmodbus. The adapter's worker builds a plan once at
 * start (and again if the map changes), then each poll issues plan.reqs in order and decodes each
 * point from its request's buffer at plan.point_offset. The proof that the plan is minimal is in
 * modbus_plan.c; tests/unit/modbus checks it against an exhaustive search.
 */
#ifndef GW_MODBUS_PLAN_H
#define GW_MODBUS_PLAN_H

#include "modbus_map.h"

#include <stddef.h>
#include <stdint.h>

/* Protocol maxima for one read (Modbus application protocol v1.1b3, FC 1/2 and 3/4). */
#define GW_MODBUS_PLAN_MAX_REGS 125
#define GW_MODBUS_PLAN_MAX_BITS 2000

/* One point as the planner sees it. */
struct gw_modbus_plan_point {
    uint8_t unit;                /* unit (slave) id */
    enum gw_modbus_table table;
    uint16_t address;            /* 0-based first register or bit */
    uint16_t count;              /* registers or bits, >= 1 (gw_modbus_point_width) */
    const char *name;            /* borrowed, for messages; may be NULL */
};

/* Limits of one device (or a whole bus). Zero-initialised fields take the defaults. */
struct gw_modbus_plan_limits {
    uint16_t max_regs;           /* registers per read, 1 .. 125; 0 = 125 */
    uint16_t max_bits;           /* bits per read, 1 .. 2000; 0 = 2000 */
    uint16_t gap_regs;           /* longest run of unused registers read to join two points */
    uint16_t gap_bits;           /* the same for coils and discrete inputs */
};

/* One read request. */
struct gw_modbus_request {
    uint8_t unit;
    enum gw_modbus_table table;
    uint8_t function;            /* 1, 2, 3 or 4 (gw_modbus_table_function) */
    uint16_t start;              /* 0-based */
    uint16_t count;              /* registers or bits */
};

/* A plan: requests sorted by unit, table (coil, discrete, input, holding) and start. */
struct gw_modbus_plan {
    struct gw_modbus_request *reqs;
    size_t nreqs;
    uint32_t *point_req;         /* point i is served by reqs[point_req[i]] ... */
    uint16_t *point_offset;      /* ... starting point_offset[i] registers/bits into its reply */
    size_t npoints;
};

/*
 * Builds the minimal plan for points[0..n) (borrowed; any order; overlaps and duplicates allowed)
 * under lim (borrowed; NULL = defaults) into *plan (caller storage, overwritten; release with
 * gw_modbus_plan_fini). Two points of one unit and table share a request when the request spans
 * at most max_regs/max_bits and no run of addresses inside it that belongs to no point is longer
 * than gap_regs/gap_bits. A gap of exactly the limit is bridged; one more splits.
 * Returns the number of requests (>= 0), or GW_EINVAL (a limit out of range, a point of count 0,
 * wider than the maximum or running past address 65535; the message in err names the point).
 * On error *plan is empty and nothing leaks.
 */
int gw_modbus_plan_build(const struct gw_modbus_plan_point *points, size_t n,
                         const struct gw_modbus_plan_limits *lim, struct gw_modbus_plan *plan,
                         char *err, size_t errlen);

/* Releases what plan holds and leaves it empty. Safe on an empty or zeroed plan. */
void gw_modbus_plan_fini(struct gw_modbus_plan *plan);

#endif
