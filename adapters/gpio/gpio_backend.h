/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The small interface between the GPIO adapter (gpio.c) and the kernel's GPIO character device.
 * One implementation per libgpiod API: gpio_backend_v1.c (libgpiod 1.x, Debian and Raspberry Pi
 * OS bookworm). A libgpiod 2.x backend implements the same functions in its own file and
 * CMake picks one; nothing else in the adapter includes <gpiod.h>.
 *
 * Levels are logical (active-low already applied by the kernel): 1 = active. Functions return 0
 * or a negative GW_E... code; those that can fail for a reason a user must act on (missing chip,
 * busy line) also write one plain sentence to err.
 */
#ifndef GW_GPIO_BACKEND_H
#define GW_GPIO_BACKEND_H

#include "gpio_map.h"

#include <stddef.h>
#include <stdint.h>

struct gw_gpio_handle;

struct gw_gpio_event {
    int level;        /* logical level after the edge */
    uint64_t ts_ns;   /* kernel timestamp, CLOCK_MONOTONIC */
};

/*
 * Finds and requests the line cfg (borrowed) describes, as input (with edge events on both edges
 * when events is true) or as output (driving cfg->initial), with its flags. consumer is the label
 * the kernel shows for the line. Errors: GW_ENOENT (no such chip or line name), GW_ERANGE (offset
 * beyond the chip), GW_EBUSY (line requested by someone else; err names the holder), GW_ENOTSUP
 * (flags the kernel refuses), GW_EACCES, GW_EIO.
 */
int gw_gpio_backend_open(const struct gw_gpio_line_cfg *cfg, const char *consumer, bool events,
                         struct gw_gpio_handle **out, char *err, size_t cap);
/* Releases the line (the kernel then decides its level; apply a safe value first). NULL is ok. */
void gw_gpio_backend_close(struct gw_gpio_handle *h);
int gw_gpio_backend_get(struct gw_gpio_handle *h, int *level);
int gw_gpio_backend_set(struct gw_gpio_handle *h, int level);
/* The event fd (non-blocking) of a line requested with events, else -1. */
int gw_gpio_backend_event_fd(const struct gw_gpio_handle *h);
/* Reads up to max pending events; returns how many (0 = none pending) or a GW_E... code. */
int gw_gpio_backend_read_events(struct gw_gpio_handle *h, struct gw_gpio_event *ev, size_t max);
/* "gpiochip0 (gw-sim) line 3": the resolved chip and offset, for messages and DESCRIBE. */
const char *gw_gpio_backend_where(const struct gw_gpio_handle *h);
/* "libgpiod 1.6.3 (v1 API)". */
const char *gw_gpio_backend_version(void);

#endif
