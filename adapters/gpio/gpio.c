/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GPIO adapter (gw_gpio_adapter): each configured line becomes resources in the registry.
 *   <instance>/<point>         input: level (OUTPUT, streamed on every debounced change)
 *                              output: INOUT, input true/false sets the level, answers the level
 *                              read back; no input just reads
 *   <instance>/<point>/count   inputs with edge events: {"count", "rate"}; a number as input
 *                              sets the counter (0 resets it)
 *   <instance>/<point>/pulse   outputs with pulse_ms: drives the line active for N ms (input:
 *                              ms, default pulse_ms), then inactive
 * Edge events come from the line's event fd watched in the loop (gw_loop_watch), debounced by
 * gpio_map.c with the kernel's timestamps; nothing blocks and nothing polls. All hooks and
 * callbacks run on the loop thread; there are no worker threads (GPIO ioctls do not block).
 * A line that cannot be requested (missing chip, busy) does not stop the instance: it is logged
 * and every call into its resources fails with the reason, after trying once more to request it.
 * stop() drives outputs to their safe value and keeps holding them until destroy().
 */
#include "gpio.h"

#include "gpio_backend.h"
#include "gpio_map.h"

#include "gw/error.h"
#include "gw/log.h"
#include "gw/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct gpio_inst;

struct gpio_line {
    struct gpio_inst *inst;
    const struct gw_gpio_line_cfg *cfg;
    struct gw_gpio_handle *h;
    int open_rc;                /* 0 or why the line could not be requested */
    char open_err[256];
    struct gw_watch *watch;
    struct gw_timer *debounce_timer;
    struct gw_timer *pulse_timer;
    struct gw_gpio_debounce db;
    struct gw_gpio_counter counter;
    uint32_t id_level;
    bool has_level_id;
    uint64_t events;            /* edge events read from the kernel */
    uint64_t changes;           /* debounced level changes */
};

struct gpio_inst {
    const struct gw_host *host;
    struct gw_gpio_cfg cfg;
    struct gpio_line *lines;
    size_t n;
    bool started;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Wall-clock ms of a kernel (monotonic) timestamp. */
static uint64_t wall_ms_of(uint64_t ts_ns)
{
    uint64_t now = mono_ns(), wall = gw_loop_wall_ms();
    uint64_t age_ms = now > ts_ns ? (now - ts_ns) / 1000000u : 0;
    return wall > age_ms ? wall - age_ms : wall;
}

static bool wants_events(const struct gw_gpio_line_cfg *c)
{
    return c->dir == GW_GPIO_DIR_INPUT && c->edge != GW_GPIO_EDGE_NONE;
}

/* --- Input events --- */

static void publish_level(struct gpio_line *l, int level, uint64_t ts_ns)
{
    if (!l->has_level_id)
        return;
    struct gw_value v = gw_value_bool(level != 0);
    gw_registry_publish(l->inst->host->registry, l->id_level, &v, wall_ms_of(ts_ns));
}

static void commit(struct gpio_line *l, int level, uint64_t ts_ns)
{
    l->changes++;
    if (gw_gpio_edge_counts(l->cfg->edge, level))
        gw_gpio_counter_add(&l->counter, ts_ns);
    publish_level(l, level, ts_ns);
}

static void arm_debounce(struct gpio_line *l)
{
    uint64_t now = mono_ns(), dl = gw_gpio_debounce_deadline(&l->db);
    uint64_t ms = dl > now ? (dl - now + 999999u) / 1000000u : 0;
    gw_timer_start(l->debounce_timer, ms);
}

static void on_debounce(void *arg)
{
    struct gpio_line *l = arg;
    int before = l->db.stable;
    gw_gpio_debounce_settle(&l->db, mono_ns());
    if (l->db.busy) {
        arm_debounce(l); /* another edge arrived meanwhile: wait for quiet again */
        return;
    }
    /* Quiet for the whole window, so the line must now be at the last edge's level. If it is
     * not, the kernel dropped events (its queue holds 16 per line): trust the line. */
    int now_level;
    if (l->h && gw_gpio_backend_get(l->h, &now_level) == 0 && now_level != l->db.stable) {
        l->inst->host->log(l->inst->host, GW_LOG_WARN, "%s: level %d after the debounce window "
                           "differs from the edges seen (events lost?); using the line's level",
                           l->cfg->name, now_level);
        l->db.stable = l->db.pending = now_level;
    }
    if (l->db.stable != before)
        commit(l, l->db.stable, l->db.last_ns); /* stamped with the last edge's kernel time */
}

static void on_event_fd(void *arg, int fd, unsigned events)
{
    struct gpio_line *l = arg;
    (void)fd;
    struct gw_gpio_event ev[16];
    for (int round = 0; round < 64; round++) {
        int n = gw_gpio_backend_read_events(l->h, ev, 16);
        if (n < 0) {
            l->inst->host->log(l->inst->host, GW_LOG_ERR,
                               "%s: reading edge events of %s failed (%s), events stopped",
                               l->cfg->name, gw_gpio_backend_where(l->h), gw_strerror(n));
            gw_loop_unwatch(l->watch);
            l->watch = NULL;
            return;
        }
        for (int i = 0; i < n; i++) {
            l->events++;
            if (gw_gpio_debounce_feed(&l->db, ev[i].level, ev[i].ts_ns))
                commit(l, l->db.stable, ev[i].ts_ns);
        }
        if (n < 16)
            break;
    }
    if (l->db.busy)
        arm_debounce(l);
    (void)events;
}

/* --- Requesting lines --- */

static int line_open(struct gpio_line *l)
{
    const struct gpio_inst *in = l->inst;
    if (l->h)
        return 0;
    l->open_rc = gw_gpio_backend_open(l->cfg, in->cfg.consumer, wants_events(l->cfg), &l->h,
                                      l->open_err, sizeof l->open_err);
    if (l->open_rc < 0)
        return l->open_rc;
    if (l->cfg->dir == GW_GPIO_DIR_INPUT) {
        int level = 0;
        gw_gpio_backend_get(l->h, &level);
        gw_gpio_debounce_init(&l->db, l->cfg->debounce_ms, level);
        if (wants_events(l->cfg)) {
            l->watch = gw_loop_watch(in->host->loop, gw_gpio_backend_event_fd(l->h), GW_LOOP_IN,
                                     on_event_fd, l);
            if (!l->watch) {
                snprintf(l->open_err, sizeof l->open_err, "%s: the event loop refused its event fd",
                         gw_gpio_backend_where(l->h));
                gw_gpio_backend_close(l->h);
                l->h = NULL;
                return l->open_rc = GW_EIO;
            }
        }
        publish_level(l, level, mono_ns());
    } else {
        publish_level(l, l->cfg->initial, mono_ns());
    }
    return 0;
}

/* For calls: the line, requested now if it was not; else fails the call with the reason. */
static bool line_ready(struct gpio_line *l, struct gw_call *call)
{
    if (line_open(l) == 0)
        return true;
    gw_call_fail(call, l->open_rc, "gpio %s: %s: %s", l->inst->host->instance, l->cfg->name,
                 l->open_err);
    return false;
}

/* --- Resources --- */

/* true/false or 0/1 → level; -1 for anything else. */
static int level_of(const struct gw_value *v)
{
    if (v->type == GW_VALUE_BOOL)
        return v->b;
    if ((v->type == GW_VALUE_INT || v->type == GW_VALUE_UINT) && (v->u == 0 || v->u == 1))
        return (int)v->u;
    if (v->type == GW_VALUE_DOUBLE && (v->d == 0.0 || v->d == 1.0))
        return v->d == 1.0;
    return -1;
}

static int run_input_level(void *ctx, struct gw_call *call)
{
    struct gpio_line *l = ctx;
    const char *inst = l->inst->host->instance;
    if (gw_call_input(call)->type != GW_VALUE_NULL) {
        gw_call_fail(call, GW_EREADONLY, "gpio %s: %s is an input line; it cannot be written",
                     inst, l->cfg->name);
        return 0;
    }
    if (!line_ready(l, call))
        return 0;
    int level;
    int rc = gw_gpio_backend_get(l->h, &level);
    if (rc < 0) {
        gw_call_fail(call, rc, "gpio %s: %s: reading %s failed: %s", inst, l->cfg->name,
                     gw_gpio_backend_where(l->h), gw_strerror(rc));
        return 0;
    }
    struct gw_value out = gw_value_bool(level != 0);
    gw_call_reply(call, &out);
    return 0;
}

static int set_and_read(struct gpio_line *l, struct gw_call *call, int level)
{
    const char *inst = l->inst->host->instance;
    int rc = gw_gpio_backend_set(l->h, level);
    int back = level;
    if (rc == 0)
        rc = gw_gpio_backend_get(l->h, &back);
    if (rc < 0) {
        if (call)
            gw_call_fail(call, rc, "gpio %s: %s: writing %s failed: %s", inst, l->cfg->name,
                         gw_gpio_backend_where(l->h), gw_strerror(rc));
        return rc;
    }
    publish_level(l, back, mono_ns());
    if (call) {
        struct gw_value out = gw_value_bool(back != 0);
        gw_call_reply(call, &out);
    }
    return 0;
}

static int run_output_level(void *ctx, struct gw_call *call)
{
    struct gpio_line *l = ctx;
    const struct gw_value *in = gw_call_input(call);
    int level = -2;
    if (in->type != GW_VALUE_NULL) {
        level = level_of(in);
        if (level < 0) {
            gw_call_fail(call, GW_EINVAL, "gpio %s: %s: an output takes true/false or 0/1",
                         l->inst->host->instance, l->cfg->name);
            return 0;
        }
    }
    if (!line_ready(l, call))
        return 0;
    if (level == -2) {
        int back;
        int rc = gw_gpio_backend_get(l->h, &back);
        if (rc < 0)
            return rc;
        struct gw_value out = gw_value_bool(back != 0);
        gw_call_reply(call, &out);
        return 0;
    }
    gw_timer_stop(l->pulse_timer); /* an explicit level ends a running pulse */
    set_and_read(l, call, level);
    return 0;
}

static void on_pulse_end(void *arg)
{
    struct gpio_line *l = arg;
    if (l->h && set_and_read(l, NULL, 0) < 0)
        l->inst->host->log(l->inst->host, GW_LOG_ERR, "%s: ending the pulse on %s failed",
                           l->cfg->name, gw_gpio_backend_where(l->h));
}

static int run_pulse(void *ctx, struct gw_call *call)
{
    struct gpio_line *l = ctx;
    const struct gw_value *in = gw_call_input(call);
    double ms = l->cfg->pulse_ms;
    if (in->type != GW_VALUE_NULL &&
        (gw_value_to_double(in, &ms) < 0 || !(ms >= 1 && ms <= GW_GPIO_MAX_PULSE_MS))) {
        gw_call_fail(call, GW_EINVAL, "gpio %s: %s/pulse: input is the pulse length in ms "
                     "(1 to %u)", l->inst->host->instance, l->cfg->name, GW_GPIO_MAX_PULSE_MS);
        return 0;
    }
    if (!line_ready(l, call))
        return 0;
    int rc = gw_gpio_backend_set(l->h, 1);
    if (rc < 0) {
        gw_call_fail(call, rc, "gpio %s: %s: starting a pulse on %s failed: %s",
                     l->inst->host->instance, l->cfg->name, gw_gpio_backend_where(l->h),
                     gw_strerror(rc));
        return 0;
    }
    publish_level(l, 1, mono_ns());
    gw_timer_start(l->pulse_timer, (uint64_t)ms);
    gw_call_reply(call, NULL);
    return 0;
}

static int run_count(void *ctx, struct gw_call *call)
{
    struct gpio_line *l = ctx;
    const struct gw_value *in = gw_call_input(call);
    if (in->type != GW_VALUE_NULL) {
        double d;
        if (gw_value_to_double(in, &d) < 0 || !(d >= 0 && d <= 9007199254740992.0) ||
            d != (double)(uint64_t)d) {
            gw_call_fail(call, GW_EINVAL, "gpio %s: %s/count: input must be a whole number >= 0 "
                         "(the new counter value)", l->inst->host->instance, l->cfg->name);
            return 0;
        }
        l->counter.count = (uint64_t)d;
    }
    if (!line_ready(l, call))
        return 0;
    struct gw_value out = gw_value_map();
    *gw_value_map_set(&out, "count", 5) = gw_value_uint(l->counter.count);
    double rate = gw_gpio_counter_rate(&l->counter, mono_ns());
    *gw_value_map_set(&out, "rate", 4) = gw_value_double(rate);
    gw_call_reply(call, &out);
    return 0;
}

static void add_res(struct gpio_inst *in, struct gpio_line *l, const char *suffix, enum gw_fn fn,
                    gw_run_fn run, const struct gw_value *sample_in,
                    const struct gw_value *sample_out, const struct gw_value *meta, uint32_t *id)
{
    char name[160];
    snprintf(name, sizeof name, "%s/%s%s", in->host->instance, l->cfg->name, suffix);
    struct gw_resource_desc d = {.name = name, .fn = fn, .in = sample_in, .out = sample_out,
                                 .meta = meta, .run = run, .ctx = l, .owner = in};
    int rc = gw_registry_add(in->host->registry, &d, id);
    if (rc < 0)
        in->host->log(in->host, GW_LOG_ERR, "cannot add resource %s: %s", name, gw_strerror(rc));
}

static void register_line(struct gpio_inst *in, struct gpio_line *l)
{
    const struct gw_gpio_line_cfg *c = l->cfg;
    char src[192], where[96];
    gw_gpio_line_where(c, where, sizeof where);
    snprintf(src, sizeof src, "%s %s%s%s", where, c->dir == GW_GPIO_DIR_INPUT ? "input" : "output",
             c->active_low ? " active-low" : "",
             c->dir == GW_GPIO_DIR_INPUT && c->debounce_ms ? " debounced" : "");
    struct gw_value meta = gw_value_map();
    *gw_value_map_set(&meta, "source", 6) = gw_value_cstr(src);
    if (c->unit)
        *gw_value_map_set(&meta, "unit", 4) = gw_value_cstr(c->unit);
    struct gw_value f = gw_value_bool(false);
    if (c->dir == GW_GPIO_DIR_INPUT) {
        add_res(in, l, "", GW_FN_OUTPUT, run_input_level, NULL, &f, &meta, &l->id_level);
        l->has_level_id = true;
        if (wants_events(c)) {
            struct gw_value cnt = gw_value_map(), cmeta = gw_value_map();
            *gw_value_map_set(&cnt, "count", 5) = gw_value_uint(0);
            *gw_value_map_set(&cnt, "rate", 4) = gw_value_double(0.0);
            char s2[256];
            snprintf(s2, sizeof s2, "%s, %s edges; rate per second over %u s", src,
                     c->edge == GW_GPIO_EDGE_RISING    ? "rising"
                     : c->edge == GW_GPIO_EDGE_FALLING ? "falling"
                                                       : "both",
                     c->rate_window_s);
            *gw_value_map_set(&cmeta, "source", 6) = gw_value_cstr(s2);
            struct gw_value zero = gw_value_uint(0);
            add_res(in, l, "/count", GW_FN_INOUT, run_count, &zero, &cnt, &cmeta, NULL);
            gw_value_fini(&cnt);
            gw_value_fini(&cmeta);
        }
    } else {
        add_res(in, l, "", GW_FN_INOUT, run_output_level, &f, &f, &meta, &l->id_level);
        l->has_level_id = true;
        if (c->pulse_ms) {
            struct gw_value ms = gw_value_uint(c->pulse_ms);
            add_res(in, l, "/pulse", GW_FN_INPUT, run_pulse, &ms, NULL, &meta, NULL);
        }
    }
    gw_value_fini(&meta);
}

/* --- gw_adapter_ops --- */

static void report(void *arg, const char *pointer, const char *msg)
{
    const struct gw_host *host = arg;
    host->config_error(host, pointer, "%s", msg);
}

static int gpio_create(const struct gw_host *host, const struct gw_value *config, void **state)
{
    struct gpio_inst *in = gw_calloc(1, sizeof *in);
    in->host = host;
    int rc = gw_gpio_cfg_parse(config, &in->cfg, report, (void *)host);
    if (rc < 0) {
        free(in);
        return GW_ECONFIG;
    }
    in->n = in->cfg.n_lines;
    in->lines = gw_calloc(in->n, sizeof *in->lines);
    for (size_t i = 0; i < in->n; i++) {
        in->lines[i].inst = in;
        in->lines[i].cfg = &in->cfg.lines[i];
        gw_gpio_counter_init(&in->lines[i].counter, in->cfg.lines[i].rate_window_s);
    }
    *state = in;
    return 0;
}

static int gpio_start(void *state)
{
    struct gpio_inst *in = state;
    size_t ok = 0;
    for (size_t i = 0; i < in->n; i++) {
        struct gpio_line *l = &in->lines[i];
        l->debounce_timer = gw_timer_new(in->host->loop, on_debounce, l);
        l->pulse_timer = gw_timer_new(in->host->loop, on_pulse_end, l);
        register_line(in, l);
        if (line_open(l) == 0) {
            ok++;
            in->host->log(in->host, GW_LOG_INFO, "%s: %s as %s%s", l->cfg->name,
                          gw_gpio_backend_where(l->h),
                          l->cfg->dir == GW_GPIO_DIR_INPUT ? "input" : "output",
                          wants_events(l->cfg) ? " with edge events" : "");
        } else {
            in->host->log(in->host, GW_LOG_ERR, "%s (%s): %s; its resources answer with this "
                          "error until the line can be requested", l->cfg->name, l->cfg->pointer,
                          l->open_err);
        }
    }
    in->started = true;
    in->host->log(in->host, GW_LOG_INFO, "%zu of %zu lines ready (%s)", ok, in->n,
                  gw_gpio_backend_version());
    return 0;
}

static void gpio_stop(void *state)
{
    struct gpio_inst *in = state;
    if (!in->started)
        return;
    for (size_t i = 0; i < in->n; i++) {
        struct gpio_line *l = &in->lines[i];
        if (l->watch)
            gw_loop_unwatch(l->watch);
        l->watch = NULL;
        bool pulsing = l->pulse_timer && gw_timer_armed(l->pulse_timer);
        gw_timer_free(l->debounce_timer);
        gw_timer_free(l->pulse_timer);
        l->debounce_timer = l->pulse_timer = NULL;
        l->has_level_id = false;
        if (l->h && pulsing && l->cfg->safe < 0)
            gw_gpio_backend_set(l->h, 0); /* end a running pulse; the safe value does otherwise */
        if (l->h && l->cfg->dir == GW_GPIO_DIR_OUTPUT && l->cfg->safe >= 0) {
            int rc = gw_gpio_backend_set(l->h, l->cfg->safe);
            if (rc < 0)
                in->host->log(in->host, GW_LOG_ERR, "%s: applying the safe value %d to %s "
                              "failed: %s", l->cfg->name, l->cfg->safe,
                              gw_gpio_backend_where(l->h), gw_strerror(rc));
            else
                in->host->log(in->host, GW_LOG_INFO, "%s: safe value %d applied", l->cfg->name,
                              l->cfg->safe);
        }
    }
    in->started = false;
}

static void gpio_destroy(void *state)
{
    struct gpio_inst *in = state;
    gpio_stop(in);
    for (size_t i = 0; i < in->n; i++) {
        gw_gpio_backend_close(in->lines[i].h);
        gw_gpio_counter_fini(&in->lines[i].counter);
    }
    free(in->lines);
    gw_gpio_cfg_fini(&in->cfg);
    free(in);
}

const struct gw_adapter_ops gw_gpio_adapter = {
    .name = "gpio",
    .create = gpio_create,
    .start = gpio_start,
    .stop = gpio_stop,
    .destroy = gpio_destroy,
};

void gw_gpio_adapter_stats(void *state, const char *point, struct gw_gpio_stats *out)
{
    struct gpio_inst *in = state;
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < in->n; i++) {
        struct gpio_line *l = &in->lines[i];
        if (strcmp(l->cfg->name, point) == 0) {
            out->found = true;
            out->open = l->h != NULL;
            out->events = l->events;
            out->changes = l->changes;
            out->count = l->counter.count;
        }
    }
}
