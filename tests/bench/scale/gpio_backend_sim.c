/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A simulated GPIO backend for the scale benchmark: the same functions as gpio_backend_v1.c
 * (gpio_backend.h), linked with the unchanged adapter (gpio.c) into bench_scale_gatewayd instead of
 * libgpiod. No kernel is involved: every input line requested with events toggles at a fixed rate,
 * and its "event fd" is a periodic timerfd, so the loop wakes for edges as it would for a real
 * chip.
 *
 * Model of the kernel (GPIO uAPI v1, which libgpiod 1.6 uses): each line has an event queue of
 * GW_GPIO_SIM_QUEUE entries (16 in the kernel); an edge that finds the queue full is dropped and
 * counted. Edges are produced when they are due on CLOCK_MONOTONIC (line i of n is shifted by
 * i/n of a period, so the lines' edges interleave), stamped with their due time, and queued the
 * next time the adapter reads: a reader that falls behind by more than the queue loses the edges
 * it would have lost on real hardware, and those losses are the figure this backend exists for.
 *
 * Environment (read when the first line is requested):
 *   GW_GPIO_SIM_RATE   edges per second per line (default 625: 10,000/s on 16 lines)
 *   GW_GPIO_SIM_QUEUE  events queued per line before edges are dropped (default 16)
 *   GW_GPIO_SIM_STATS  file rewritten (temporary file + rename) at most every 200 ms while events
 *                      are read, and when the last line is released:
 *                      {"lines": n, "rate_per_line": r, "queue": q, "generated": g,
 *                       "delivered": d, "dropped": x, "queued": k, "t_ms": monotonic ms}
 *                      where always generated = delivered + dropped + queued (queued: waiting
 *                      in a line's queue, or left there when the line was released).
 * Everything runs on the loop thread (as the adapter promises), so nothing here locks.
 */
#include "gpio_backend.h"

#include "gw/error.h"
#include "gw/mem.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define SIM_MAX_QUEUE 4096

struct gw_gpio_handle {
    int fd;                   /* timerfd for lines with events, else -1 */
    int level;                /* current logical level of the simulated line */
    uint64_t next_ns;         /* due time of the next edge (monotonic) */
    uint64_t period_ns;
    struct gw_gpio_event *q;  /* ring of queued events */
    size_t head, len;
    char where[96];
};

static struct {
    bool init;
    double rate;
    size_t queue;
    const char *stats;
    size_t lines;             /* event lines ever opened (for the phase shift) */
    size_t open;              /* handles currently open */
    uint64_t generated, delivered, dropped, queued;
    uint64_t last_write_ns;
} sim;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sim_init(void)
{
    if (sim.init)
        return;
    sim.init = true;
    sim.rate = 625.0;
    sim.queue = 16;
    const char *r = getenv("GW_GPIO_SIM_RATE"), *q = getenv("GW_GPIO_SIM_QUEUE");
    if (r && *r) {
        char *end;
        double v = strtod(r, &end);
        if (*end == '\0' && v > 0 && v <= 1e6)
            sim.rate = v;
        else
            fprintf(stderr, "gpio-sim: GW_GPIO_SIM_RATE=%s is not a rate in (0, 1e6]; using %g\n",
                    r, sim.rate);
    }
    if (q && *q) {
        char *end;
        unsigned long v = strtoul(q, &end, 10);
        if (*end == '\0' && v >= 1 && v <= SIM_MAX_QUEUE)
            sim.queue = v;
        else
            fprintf(stderr, "gpio-sim: GW_GPIO_SIM_QUEUE=%s is not in 1..%d; using %zu\n", q,
                    SIM_MAX_QUEUE, sim.queue);
    }
    const char *s = getenv("GW_GPIO_SIM_STATS");
    sim.stats = s && *s ? s : NULL;
}

static void write_stats(uint64_t now)
{
    sim.last_write_ns = now;
    if (!sim.stats)
        return;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", sim.stats) >= (int)sizeof tmp)
        return;
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "gpio-sim: cannot write %s: %s\n", tmp, strerror(errno));
        sim.stats = NULL;
        return;
    }
    fprintf(f, "{\"lines\": %zu, \"rate_per_line\": %.3f, \"queue\": %zu, \"generated\": %llu, "
               "\"delivered\": %llu, \"dropped\": %llu, \"queued\": %llu, \"t_ms\": %.3f}\n",
            sim.lines, sim.rate, sim.queue, (unsigned long long)sim.generated,
            (unsigned long long)sim.delivered, (unsigned long long)sim.dropped,
            (unsigned long long)sim.queued, (double)now / 1e6);
    if (fclose(f) != 0 || rename(tmp, sim.stats) != 0)
        fprintf(stderr, "gpio-sim: cannot write %s: %s\n", sim.stats, strerror(errno));
}

/* Queues every edge of h due by now; edges that find the queue full are dropped. */
static void advance(struct gw_gpio_handle *h, uint64_t now)
{
    while (h->next_ns <= now) {
        h->level = !h->level;
        sim.generated++;
        if (h->len < sim.queue) {
            struct gw_gpio_event *e = &h->q[(h->head + h->len) % sim.queue];
            e->level = h->level;
            e->ts_ns = h->next_ns;
            h->len++;
            sim.queued++;
        } else {
            sim.dropped++;
        }
        h->next_ns += h->period_ns;
    }
}

int gw_gpio_backend_open(const struct gw_gpio_line_cfg *cfg, const char *consumer, bool events,
                         struct gw_gpio_handle **out, char *err, size_t cap)
{
    (void)consumer;
    sim_init();
    struct gw_gpio_handle *h = gw_calloc(1, sizeof *h);
    h->fd = -1;
    h->level = cfg->dir == GW_GPIO_DIR_OUTPUT ? cfg->initial : 0;
    char where[64];
    gw_gpio_line_where(cfg, where, sizeof where);
    snprintf(h->where, sizeof h->where, "simulated %s", where);
    if (events) {
        h->q = gw_calloc(sim.queue, sizeof *h->q);
        h->period_ns = (uint64_t)(1e9 / sim.rate);
        if (h->period_ns == 0)
            h->period_ns = 1;
        h->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (h->fd < 0) {
            snprintf(err, cap, "%s: timerfd_create: %s", h->where, strerror(errno));
            free(h->q);
            free(h);
            return GW_EIO;
        }
        /* Line k starts k/16 of a period late (mod 1): the lines' edges interleave. */
        uint64_t shift = h->period_ns * (sim.lines % 16) / 16;
        h->next_ns = mono_ns() + h->period_ns + shift;
        struct itimerspec its = {
            .it_value = {.tv_sec = (time_t)(h->next_ns / 1000000000u),
                         .tv_nsec = (long)(h->next_ns % 1000000000u)},
            .it_interval = {.tv_sec = (time_t)(h->period_ns / 1000000000u),
                            .tv_nsec = (long)(h->period_ns % 1000000000u)},
        };
        if (timerfd_settime(h->fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
            snprintf(err, cap, "%s: timerfd_settime: %s", h->where, strerror(errno));
            close(h->fd);
            free(h->q);
            free(h);
            return GW_EIO;
        }
        sim.lines++;
    }
    sim.open++;
    *out = h;
    return 0;
}

void gw_gpio_backend_close(struct gw_gpio_handle *h)
{
    if (!h)
        return;
    if (h->fd >= 0)
        close(h->fd); /* its queued events stay counted as "queued": generated, never read */
    free(h->q);
    free(h);
    if (--sim.open == 0)
        write_stats(mono_ns());
}

int gw_gpio_backend_get(struct gw_gpio_handle *h, int *level)
{
    if (h->fd >= 0)
        advance(h, mono_ns());
    *level = h->level;
    return 0;
}

int gw_gpio_backend_set(struct gw_gpio_handle *h, int level)
{
    if (h->fd >= 0)
        return GW_EINVAL; /* an input line */
    h->level = level != 0;
    return 0;
}

int gw_gpio_backend_event_fd(const struct gw_gpio_handle *h)
{
    return h->fd;
}

int gw_gpio_backend_read_events(struct gw_gpio_handle *h, struct gw_gpio_event *ev, size_t max)
{
    if (h->fd < 0)
        return GW_EINVAL;
    uint64_t ticks;
    if (read(h->fd, &ticks, sizeof ticks) < 0 && errno != EAGAIN && errno != EINTR)
        return GW_EIO;
    uint64_t now = mono_ns();
    advance(h, now);
    size_t n = 0;
    while (n < max && h->len > 0) {
        ev[n++] = h->q[h->head];
        h->head = (h->head + 1) % sim.queue;
        h->len--;
    }
    sim.queued -= n;
    sim.delivered += n;
    if (now - sim.last_write_ns >= 200000000u)
        write_stats(now);
    return (int)n;
}

const char *gw_gpio_backend_where(const struct gw_gpio_handle *h)
{
    return h->where;
}

const char *gw_gpio_backend_version(void)
{
    return "simulated backend (bench, no kernel; see tests/bench/scale/gpio_backend_sim.c)";
}
