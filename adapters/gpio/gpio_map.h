/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GPIO adapter's pure core: the instance config turned into line settings (with the semantic
 * checks the schema cannot express), the software debounce driven by kernel event timestamps,
 * and the edge counter with its rate. No libgpiod, no I/O, no clock: callers pass timestamps, so
 * tests/unit/gpio runs all of it without hardware. gpio.c (the adapter) uses it.
 */
#ifndef GW_GPIO_MAP_H
#define GW_GPIO_MAP_H

#include "gw/value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_gpio_dir { GW_GPIO_DIR_INPUT = 0, GW_GPIO_DIR_OUTPUT };
enum gw_gpio_bias {
    GW_GPIO_BIAS_AS_IS = 0,   /* leave the line's bias as the kernel has it */
    GW_GPIO_BIAS_DISABLED,
    GW_GPIO_BIAS_PULL_UP,
    GW_GPIO_BIAS_PULL_DOWN,
};
enum gw_gpio_drive {
    GW_GPIO_DRIVE_PUSH_PULL = 0,
    GW_GPIO_DRIVE_OPEN_DRAIN,
    GW_GPIO_DRIVE_OPEN_SOURCE,
};
enum gw_gpio_edge {
    GW_GPIO_EDGE_NONE = 0,
    GW_GPIO_EDGE_RISING,
    GW_GPIO_EDGE_FALLING,
    GW_GPIO_EDGE_BOTH,
};

/* Limits (the schema says the same). */
#define GW_GPIO_MAX_DEBOUNCE_MS 10000u
#define GW_GPIO_MAX_RATE_WINDOW_S 3600u
#define GW_GPIO_MAX_PULSE_MS 3600000u

struct gw_gpio_line_cfg {
    char *name;            /* point name: resource "<instance>/<name>" */
    char *chip;            /* chip name, label, number or path; NULL when found by line name */
    int offset;            /* line offset on chip, or -1 when found by line name */
    char *line_name;       /* kernel line name ("relay1"), or NULL */
    enum gw_gpio_dir dir;
    bool active_low;       /* levels are logical: 1 = active */
    enum gw_gpio_bias bias;
    enum gw_gpio_drive drive;      /* outputs only */
    enum gw_gpio_edge edge;        /* inputs: which edges the counter counts; NONE = no events */
    unsigned debounce_ms;          /* inputs: 0 = every edge counts */
    unsigned rate_window_s;        /* inputs: window of the counter's rate */
    int initial;                   /* outputs: level applied when the line is requested */
    int safe;                      /* outputs: level applied on stop and reload, -1 = none */
    unsigned pulse_ms;             /* outputs: default pulse length, 0 = no pulse resource */
    char *unit;                    /* DESCRIBE meta "unit", or NULL */
    char *pointer;                 /* "/lines/3", for messages */
};

struct gw_gpio_cfg {
    char *consumer;                /* consumer label shown by gpioinfo */
    struct gw_gpio_line_cfg *lines;
    size_t n_lines;
};

/* Reports a semantic config error at a JSON Pointer (message without trailing period). */
typedef void (*gw_gpio_report_fn)(void *arg, const char *pointer, const char *msg);

/*
 * Reads an instance config (borrowed; already valid against schema/adapters/gpio.schema.json)
 * into *out (caller storage, released with gw_gpio_cfg_fini). Every semantic error is reported
 * through report (pointer and message); then the result is GW_ECONFIG and *out is left empty.
 * Shape errors a schema would catch are reported too (never a crash on an unvalidated tree).
 */
int gw_gpio_cfg_parse(const struct gw_value *config, struct gw_gpio_cfg *out,
                      gw_gpio_report_fn report, void *arg);
void gw_gpio_cfg_fini(struct gw_gpio_cfg *cfg);

/* "gw-sim line 3", "line 'door'": where a line is, for messages and DESCRIBE "source". */
void gw_gpio_line_where(const struct gw_gpio_line_cfg *l, char *buf, size_t cap);

/* --- Debounce --- */

/*
 * Stable-state debounce: a new level counts only once no further edge has arrived for the window
 * (so a burst of toggles that ends at the old level changes nothing, and one that ends at the
 * other level is one change). Times are nanoseconds of one clock (the kernel's event clock).
 */
struct gw_gpio_debounce {
    uint64_t window_ns;
    int stable;        /* the debounced level */
    int pending;       /* the level after the last edge */
    uint64_t last_ns;  /* time of the last edge */
    bool busy;         /* an edge arrived and the window has not passed yet */
};

void gw_gpio_debounce_init(struct gw_gpio_debounce *d, unsigned window_ms, int level);
/* Feeds the level after an edge at ts_ns. Returns 1 when the debounced level changed now
 * (window 0), else 0 (with a window: call gw_gpio_debounce_settle at the deadline). */
int gw_gpio_debounce_feed(struct gw_gpio_debounce *d, int level, uint64_t ts_ns);
/* When to call settle (valid while d->busy). */
uint64_t gw_gpio_debounce_deadline(const struct gw_gpio_debounce *d);
/* Returns 1 if the debounced level changed (new level in d->stable), 0 if not; d->busy stays
 * true when now_ns is still inside the window (call again at the new deadline). */
int gw_gpio_debounce_settle(struct gw_gpio_debounce *d, uint64_t now_ns);

/* Whether a change to new_level is an edge the counter counts under edge. */
bool gw_gpio_edge_counts(enum gw_gpio_edge edge, int new_level);

/* --- Counter --- */

struct gw_gpio_counter {
    uint64_t count;
    unsigned window_s;
    uint64_t *sec;     /* ring of window_s buckets: which second each holds ... */
    uint32_t *n;       /* ... and how many edges in it */
};

void gw_gpio_counter_init(struct gw_gpio_counter *c, unsigned window_s);
void gw_gpio_counter_fini(struct gw_gpio_counter *c);
void gw_gpio_counter_add(struct gw_gpio_counter *c, uint64_t ts_ns);
/* Edges per second over the last window_s whole seconds up to now_ns (1 s resolution). */
double gw_gpio_counter_rate(const struct gw_gpio_counter *c, uint64_t now_ns);

#endif
