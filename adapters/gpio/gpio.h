/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GPIO adapter's one export, gw_gpio_adapter (see gpio.c for its resources), and a read-only
 * statistics hook the tests use to see what the kernel delivered before debounce.
 */
#ifndef GW_GPIO_H
#define GW_GPIO_H

#include "gw/adapter.h"

#include <stdbool.h>
#include <stdint.h>

extern const struct gw_adapter_ops gw_gpio_adapter;

struct gw_gpio_stats {
    bool found;          /* the point exists */
    bool open;           /* its line is requested */
    uint64_t events;     /* edge events read from the kernel */
    uint64_t changes;    /* debounced level changes */
    uint64_t count;      /* edge counter */
};

/* Statistics of point (borrowed) of an instance state returned by gw_gpio_adapter.create. */
void gw_gpio_adapter_stats(void *state, const char *point, struct gw_gpio_stats *out);

#endif
