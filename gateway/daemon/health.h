/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's health figures, collected once and shown two ways: the Prometheus text format on
 * the metrics endpoint (metrics.c) and the "$gateway/health" resource callable through the broker.
 * Loop thread only.
 */
#ifndef GW_HEALTH_H
#define GW_HEALTH_H

#include "gw/loop.h"
#include "gw/registry.h"
#include "gw/session.h"
#include "gw/store.h"

#include <stddef.h>

struct gw_health_src {
    struct gw_registry *reg;
    struct gw_session *session;     /* may be NULL */
    struct gw_store *store;         /* may be NULL */
    size_t adapters;
    /* Adapter statistics: every resource whose name contains "/_stats" is called every
     * GW_HEALTH_STATS_MS and its last answer kept here (resource name -> value), so the metrics
     * and $gateway/health show per-adapter device status without reaching into adapter threads. */
    struct gw_value stats;
    struct gw_timer *stats_timer;
    unsigned stats_pending;
};

#define GW_HEALTH_STATS_MS 5000

/* Appends the Prometheus text exposition (format 0.0.4) to *buf (heap, *len bytes, realloc'd). */
void gw_health_prometheus(const struct gw_health_src *src, char **buf, size_t *len);

/* The same figures as a map value {"uplink": "READY", "resources": 12, ...} (caller owns it). */
struct gw_value gw_health_value(const struct gw_health_src *src);

/* Registers "$gateway/health" (owner = src) answering gw_health_value(src), and starts collecting
 * adapter statistics on loop. src must outlive it; gw_health_stop() releases what this made. */
int gw_health_register(struct gw_health_src *src, struct gw_loop *loop);
void gw_health_stop(struct gw_health_src *src);

#endif
