/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Modbus read planner (see modbus_plan.h): groups points by unit and table, and within a group
 * covers them with the fewest requests a greedy sweep finds, which is the minimum (proof below).
 * Called once per map by the adapter's worker; pure, allocates only the plan it returns.
 *
 * The model. Fix one unit and table. U is the set of addresses that belong to some point. A
 * request is a range [a, b) of addresses; it is valid when b - a <= max and every maximal run of
 * addresses in [a, b) outside U is at most gap long. A point [ps, pe) is served by a request that
 * contains it. Requests of different units or tables never share anything, so the minimum for the
 * bus is the sum of the minima per group, and it is enough to show the sweep is minimal per group.
 * (Whether an address in U is unused *by the request's own points* does not matter: reading a
 * register another request also reads is harmless, and this definition makes validity depend
 * on the range alone.)
 *
 * The sweep. Let X be the points not yet served and s the smallest start in X. Let E(s) be
 * min(s + max, L), where L is the end of the last block of U reachable from s by crossing only
 * runs outside U of length <= gap. Emit the request [s, e) with e the largest end among the
 * points of X that end at or before E(s), and mark all those points served. Repeat.
 *
 * Why it is minimal. Call a range "trimmed" when its first and last addresses are in U; trimming
 * a valid request keeps it valid and keeps every point it serves, so only trimmed ranges matter.
 * A trimmed [s, b) is valid exactly when b <= E(s): the span bound is b <= s + max, and a run
 * outside U longer than gap between s and b - 1 exists exactly when b > L (b - 1 is in U).
 * Now take any minimal solution S for X and its request Q = [qa, qb) that serves the point p with
 * the smallest start s. Replace Q with [s, qb): no point of X starts before s, so it serves the
 * same points of X; it is still valid (shorter, and s is in U so no run is cut), trimmed, hence
 * qb <= E(s). The sweep's request R serves every point of X with end <= E(s), which includes every
 * point of X that Q serves. So S - {Q} + {R} is a solution of the same size that contains R, and
 * S - {Q} serves all of X minus R's points. By induction on |X| the sweep needs at most
 * |S| - 1 further requests for the rest, so it uses at most |S| in total: it is minimal.
 * Consequences used by the tests: a gap of exactly `gap` is bridged and gap + 1 splits; the
 * result does not depend on the input order; duplicates and overlaps cost nothing extra.
 */
#include "modbus_plan.h"

#include "gw/error.h"
#include "gw/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void gw_modbus_plan_fini(struct gw_modbus_plan *plan)
{
    free(plan->reqs);
    free(plan->point_req);
    free(plan->point_offset);
    memset(plan, 0, sizeof *plan);
}

/* --- Sorting --- */

struct item {
    uint8_t unit;
    uint8_t table;
    uint32_t start, end; /* [start, end), end <= 65536 */
    size_t index;        /* position in the caller's array */
};

static int cmp_item(const void *pa, const void *pb)
{
    const struct item *a = pa, *b = pb;
    if (a->unit != b->unit)
        return a->unit < b->unit ? -1 : 1;
    if (a->table != b->table)
        return a->table < b->table ? -1 : 1;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

/* --- Planning one group --- */

struct block {
    uint32_t start, end;
};

/*
 * Plans items[0..m) of one unit and table (sorted) and appends the requests to plan.
 * blocks is scratch room for m blocks, served scratch for m flags.
 */
static void plan_group(const struct item *items, size_t m, uint32_t max, uint32_t gap,
                       struct block *blocks, bool *served, struct gw_modbus_plan *plan)
{
    /* The blocks of U: maximal runs of addresses covered by some point (touching ones merge). */
    size_t nb = 0;
    for (size_t i = 0; i < m; i++) {
        if (nb > 0 && items[i].start <= blocks[nb - 1].end) {
            if (items[i].end > blocks[nb - 1].end)
                blocks[nb - 1].end = items[i].end;
        } else {
            blocks[nb].start = items[i].start;
            blocks[nb].end = items[i].end;
            nb++;
        }
    }
    memset(served, 0, m * sizeof *served);

    size_t first = 0, b = 0;
    while (first < m) {
        uint32_t s = items[first].start;
        while (blocks[b].end <= s) /* s only grows, so the block index only moves forward */
            b++;
        /* L: follow blocks while the run between them is <= gap and still below s + max. */
        uint32_t limit = s + max;
        uint32_t reach = blocks[b].end;
        for (size_t k = b + 1; k < nb && blocks[k].start - blocks[k - 1].end <= gap &&
                               blocks[k].start < limit;
             k++)
            reach = blocks[k].end;
        uint32_t e_max = reach < limit ? reach : limit;

        struct gw_modbus_request *r = &plan->reqs[plan->nreqs];
        uint32_t e = s;
        for (size_t j = first; j < m && items[j].start < e_max; j++) {
            if (served[j] || items[j].end > e_max)
                continue;
            served[j] = true;
            if (items[j].end > e)
                e = items[j].end;
            plan->point_req[items[j].index] = (uint32_t)plan->nreqs;
            plan->point_offset[items[j].index] = (uint16_t)(items[j].start - s);
        }
        r->unit = items[first].unit;
        r->table = (enum gw_modbus_table)items[first].table;
        r->function = (uint8_t)gw_modbus_table_function(r->table);
        r->start = (uint16_t)s;
        r->count = (uint16_t)(e - s);
        plan->nreqs++;
        while (first < m && served[first])
            first++;
    }
}

/* --- Entry point --- */

int gw_modbus_plan_build(const struct gw_modbus_plan_point *points, size_t n,
                         const struct gw_modbus_plan_limits *lim, struct gw_modbus_plan *plan,
                         char *err, size_t errlen)
{
    memset(plan, 0, sizeof *plan);
    struct gw_modbus_plan_limits l = {0};
    if (lim != NULL)
        l = *lim;
    if (l.max_regs == 0)
        l.max_regs = GW_MODBUS_PLAN_MAX_REGS;
    if (l.max_bits == 0)
        l.max_bits = GW_MODBUS_PLAN_MAX_BITS;
    if (l.max_regs > GW_MODBUS_PLAN_MAX_REGS || l.max_bits > GW_MODBUS_PLAN_MAX_BITS) {
        say(err, errlen, "read limits %u registers / %u bits above the protocol maxima (%d / %d)",
            (unsigned)l.max_regs, (unsigned)l.max_bits, GW_MODBUS_PLAN_MAX_REGS,
            GW_MODBUS_PLAN_MAX_BITS);
        return GW_EINVAL;
    }
    if (n == 0)
        return 0;
    if (points == NULL) {
        say(err, errlen, "no point array");
        return GW_EINVAL;
    }

    struct item *items = gw_malloc(n * sizeof *items);
    for (size_t i = 0; i < n; i++) {
        const struct gw_modbus_plan_point *p = &points[i];
        char lb[48];
        const char *who = p->name;
        if (who == NULL) {
            snprintf(lb, sizeof lb, "#%zu", i);
            who = lb;
        }
        if ((unsigned)p->table >= GW_MODBUS_TABLE_COUNT) {
            say(err, errlen, "point %s: unknown table %d", who, (int)p->table);
            goto fail_items;
        }
        bool bits = gw_modbus_table_is_bits(p->table);
        unsigned max = bits ? l.max_bits : l.max_regs;
        if (p->count == 0 || p->count > max) {
            say(err, errlen, "point %s: %u %s at unit %u %s %u, but a request reads 1 .. %u", who,
                (unsigned)p->count, bits ? "bits" : "registers", (unsigned)p->unit,
                gw_modbus_table_name(p->table), (unsigned)p->address, max);
            goto fail_items;
        }
        if ((uint32_t)p->address + p->count > 65536u) {
            say(err, errlen, "point %s: %u %s at %s %u run past address 65535", who,
                (unsigned)p->count, bits ? "bits" : "registers", gw_modbus_table_name(p->table),
                (unsigned)p->address);
            goto fail_items;
        }
        items[i] = (struct item){.unit = p->unit, .table = (uint8_t)p->table,
                                 .start = p->address, .end = (uint32_t)p->address + p->count,
                                 .index = i};
    }
    qsort(items, n, sizeof *items, cmp_item);

    plan->reqs = gw_malloc(n * sizeof *plan->reqs);
    plan->point_req = gw_malloc(n * sizeof *plan->point_req);
    plan->point_offset = gw_malloc(n * sizeof *plan->point_offset);
    plan->npoints = n;
    struct block *blocks = gw_malloc(n * sizeof *blocks);
    bool *served = gw_malloc(n * sizeof *served);
    for (size_t g = 0; g < n;) {
        size_t h = g + 1;
        while (h < n && items[h].unit == items[g].unit && items[h].table == items[g].table)
            h++;
        bool bits = gw_modbus_table_is_bits((enum gw_modbus_table)items[g].table);
        plan_group(items + g, h - g, bits ? l.max_bits : l.max_regs, bits ? l.gap_bits : l.gap_regs,
                   blocks, served, plan);
        g = h;
    }
    free(served);
    free(blocks);
    free(items);
    plan->reqs = gw_realloc(plan->reqs, plan->nreqs * sizeof *plan->reqs);
    return (int)plan->nreqs;

fail_items:
    free(items);
    return GW_EINVAL;
}
