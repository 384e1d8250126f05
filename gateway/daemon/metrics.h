/* SPDX-License-Identifier: Apache-2.0 */
/* The metrics endpoint: GET /metrics in the Prometheus text format (see metrics.c). */
#ifndef GW_METRICS_H
#define GW_METRICS_H

#include "health.h"
#include "gw/loop.h"

struct gw_metrics;

/* Listens on listen ("127.0.0.1:9105") on loop; src is borrowed and must outlive the endpoint.
 * Returns 0, GW_EINVAL (bad address) or GW_EIO (cannot listen). */
int gw_metrics_start(struct gw_loop *loop, const char *listen, const struct gw_health_src *src,
                     struct gw_metrics **out);
void gw_metrics_stop(struct gw_metrics *m);

#endif
