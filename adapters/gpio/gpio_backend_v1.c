/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gpio_backend.h on libgpiod 1.x (the v1 API: gpiod_chip_open_lookup, gpiod_line_request), the
 * version Debian 12 and Raspberry Pi OS bookworm ship (1.6.3). The only file of the adapter that
 * includes <gpiod.h>; a libgpiod 2.x backend would be a sibling file with the same functions.
 */
#include "gpio_backend.h"

#include "gw/error.h"
#include "gw/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <gpiod.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_gpio_handle {
    struct gpiod_chip *chip;
    struct gpiod_line *line;
    bool events;
    char where[128];
};

static int from_errno(int e)
{
    switch (e) {
    case ENOENT:
    case ENODEV:
    case ENXIO:
        return GW_ENOENT;
    case EBUSY:
        return GW_EBUSY;
    case EACCES:
    case EPERM:
        return GW_EACCES;
    case EINVAL:
    case ENOTSUP:
        return GW_ENOTSUP;
    case ENOMEM:
        return GW_ENOMEM;
    default:
        return GW_EIO;
    }
}

int gw_gpio_backend_open(const struct gw_gpio_line_cfg *cfg, const char *consumer, bool events,
                         struct gw_gpio_handle **out, char *err, size_t cap)
{
    struct gw_gpio_handle *h = gw_calloc(1, sizeof *h);
    int rc;
    *out = NULL;
    err[0] = '\0';

    if (cfg->line_name && !cfg->chip) {
        errno = 0;
        h->line = gpiod_line_find(cfg->line_name);
        if (!h->line) {
            rc = errno == ENOENT || errno == 0 ? GW_ENOENT : from_errno(errno);
            if (rc == GW_ENOENT)
                snprintf(err, cap, "no GPIO line named '%s' on any chip", cfg->line_name);
            else
                snprintf(err, cap, "looking for line '%s' failed: %s", cfg->line_name,
                         strerror(errno));
            goto fail;
        }
        h->chip = gpiod_line_get_chip(h->line);
    } else {
        h->chip = gpiod_chip_open_lookup(cfg->chip);
        if (!h->chip) {
            int e = errno;
            rc = from_errno(e);
            if (rc == GW_ENOENT || rc == GW_ENOTSUP) {
                rc = GW_ENOENT;
                snprintf(err, cap, "GPIO chip '%s' not found (no chip with that name, number, "
                         "label or path)", cfg->chip);
            } else {
                snprintf(err, cap, "cannot open GPIO chip '%s': %s", cfg->chip, strerror(e));
            }
            goto fail;
        }
        if (cfg->line_name) {
            h->line = gpiod_chip_find_line(h->chip, cfg->line_name);
            if (!h->line) {
                rc = GW_ENOENT;
                snprintf(err, cap, "chip %s (%s) has no line named '%s'",
                         gpiod_chip_name(h->chip), gpiod_chip_label(h->chip), cfg->line_name);
                goto fail;
            }
        } else {
            unsigned n = gpiod_chip_num_lines(h->chip);
            if ((unsigned)cfg->offset >= n) {
                rc = GW_ERANGE;
                snprintf(err, cap, "chip %s (%s) has %u lines; offset %d does not exist",
                         gpiod_chip_name(h->chip), gpiod_chip_label(h->chip), n, cfg->offset);
                goto fail;
            }
            h->line = gpiod_chip_get_line(h->chip, (unsigned)cfg->offset);
            if (!h->line) {
                rc = from_errno(errno);
                snprintf(err, cap, "cannot get line %d of chip %s: %s", cfg->offset,
                         gpiod_chip_name(h->chip), strerror(errno));
                goto fail;
            }
        }
    }
    snprintf(h->where, sizeof h->where, "%s (%s) line %u", gpiod_chip_name(h->chip),
             gpiod_chip_label(h->chip), gpiod_line_offset(h->line));

    struct gpiod_line_request_config rq = {.consumer = consumer};
    if (cfg->dir == GW_GPIO_DIR_OUTPUT)
        rq.request_type = GPIOD_LINE_REQUEST_DIRECTION_OUTPUT;
    else if (events)
        rq.request_type = GPIOD_LINE_REQUEST_EVENT_BOTH_EDGES;
    else
        rq.request_type = GPIOD_LINE_REQUEST_DIRECTION_INPUT;
    if (cfg->active_low)
        rq.flags |= GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW;
    switch (cfg->bias) {
    case GW_GPIO_BIAS_DISABLED: rq.flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_DISABLE; break;
    case GW_GPIO_BIAS_PULL_UP: rq.flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_UP; break;
    case GW_GPIO_BIAS_PULL_DOWN: rq.flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_DOWN; break;
    case GW_GPIO_BIAS_AS_IS: break;
    }
    if (cfg->dir == GW_GPIO_DIR_OUTPUT) {
        if (cfg->drive == GW_GPIO_DRIVE_OPEN_DRAIN)
            rq.flags |= GPIOD_LINE_REQUEST_FLAG_OPEN_DRAIN;
        else if (cfg->drive == GW_GPIO_DRIVE_OPEN_SOURCE)
            rq.flags |= GPIOD_LINE_REQUEST_FLAG_OPEN_SOURCE;
    }
    if (gpiod_line_request(h->line, &rq, cfg->initial ? 1 : 0) < 0) {
        int e = errno;
        rc = from_errno(e);
        if (e == EBUSY) {
            const char *holder = NULL;
            if (gpiod_line_update(h->line) == 0)
                holder = gpiod_line_consumer(h->line);
            snprintf(err, cap, "%s is busy: already requested by %s%s%s", h->where,
                     holder ? "'" : "another process", holder ? holder : "", holder ? "'" : "");
        } else {
            snprintf(err, cap, "requesting %s as %s failed: %s%s", h->where,
                     cfg->dir == GW_GPIO_DIR_OUTPUT ? "output" : "input", strerror(e),
                     e == EINVAL ? " (bias or drive flags not supported by this kernel?)" : "");
        }
        h->line = NULL; /* not requested: nothing to release */
        goto fail;
    }
    h->events = cfg->dir == GW_GPIO_DIR_INPUT && events;
    if (h->events) {
        int fd = gpiod_line_event_get_fd(h->line);
        int fl = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            rc = GW_EIO;
            snprintf(err, cap, "%s: event fd not usable: %s", h->where, strerror(errno));
            goto fail;
        }
    }
    *out = h;
    return 0;

fail:
    if (h->line && gpiod_line_is_requested(h->line))
        gpiod_line_release(h->line);
    if (h->chip)
        gpiod_chip_close(h->chip);
    free(h);
    return rc;
}

void gw_gpio_backend_close(struct gw_gpio_handle *h)
{
    if (!h)
        return;
    if (h->line)
        gpiod_line_release(h->line);
    gpiod_chip_close(h->chip);
    free(h);
}

int gw_gpio_backend_get(struct gw_gpio_handle *h, int *level)
{
    int v = gpiod_line_get_value(h->line);
    if (v < 0)
        return from_errno(errno);
    *level = v;
    return 0;
}

int gw_gpio_backend_set(struct gw_gpio_handle *h, int level)
{
    if (gpiod_line_set_value(h->line, level ? 1 : 0) < 0)
        return from_errno(errno);
    return 0;
}

int gw_gpio_backend_event_fd(const struct gw_gpio_handle *h)
{
    return h->events ? gpiod_line_event_get_fd(h->line) : -1;
}

int gw_gpio_backend_read_events(struct gw_gpio_handle *h, struct gw_gpio_event *ev, size_t max)
{
    struct gpiod_line_event buf[16];
    if (max > 16)
        max = 16;
    int n = gpiod_line_event_read_multiple(h->line, buf, (unsigned)max);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : from_errno(errno);
    for (int i = 0; i < n; i++) {
        ev[i].level = buf[i].event_type == GPIOD_LINE_EVENT_RISING_EDGE ? 1 : 0;
        ev[i].ts_ns = (uint64_t)buf[i].ts.tv_sec * 1000000000u + (uint64_t)buf[i].ts.tv_nsec;
    }
    return n;
}

const char *gw_gpio_backend_where(const struct gw_gpio_handle *h)
{
    return h->where;
}

const char *gw_gpio_backend_version(void)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "libgpiod %s (v1 API)", gpiod_version_string());
    return buf;
}
