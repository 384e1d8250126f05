/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The "sim" adapter: simulated points, for trying the gateway without hardware, for the demo and
 * for tests that need many resources or a slow one. Point kinds: counter (+1 per interval), sine
 * (between min and max over a period), random (uniform in [min, max]), memory (writable: holds the
 * last value written). A point may delay its answers (delay_ms) to show that a slow resource never
 * blocks the uplink. "generate" adds N numbered counter points at once.
 * Everything runs on the loop thread: timers publish values, delayed answers use timers too.
 */
#include "gw/adapter.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/mem.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum kind { K_COUNTER, K_SINE, K_RANDOM, K_MEMORY };

struct point {
    struct sim *sim;
    char *name;       /* resource name: "<instance>/<point>" */
    enum kind kind;
    double min, max, period_s;
    unsigned interval_ms, delay_ms;
    char *unit;
    struct gw_value value; /* current value */
    uint32_t id;
    struct gw_timer *timer;
    double t;
};

struct sim {
    const struct gw_host *host;
    struct point *points;
    size_t n;
    struct pending *pending; /* delayed answers not yet sent */
};

struct pending {
    struct pending *next;
    struct sim *sim;
    struct gw_call *call;
    struct gw_value out;
    struct gw_timer *timer;
};

static double num(const struct gw_value *obj, const char *key, double def)
{
    const struct gw_value *v = gw_value_map_get(obj, key);
    double d;
    return v && gw_value_to_double(v, &d) == 0 ? d : def;
}

static const char *str(const struct gw_value *obj, const char *key, const char *def)
{
    const struct gw_value *v = gw_value_map_get(obj, key);
    return v && v->type == GW_VALUE_STRING ? v->s.p : def;
}

static void point_init(struct sim *s, struct point *p, const char *name, enum kind k,
                       const struct gw_value *cfg)
{
    char full[256];
    snprintf(full, sizeof full, "%s/%s", s->host->instance, name);
    p->sim = s;
    p->name = gw_strdup(full);
    p->kind = k;
    p->min = num(cfg, "min", 0);
    p->max = num(cfg, "max", 100);
    p->period_s = num(cfg, "period", 60);
    p->interval_ms = (unsigned)num(cfg, "interval_ms", 1000);
    p->delay_ms = (unsigned)num(cfg, "delay_ms", 0);
    const char *unit = str(cfg, "unit", NULL);
    p->unit = unit ? gw_strdup(unit) : NULL;
    const struct gw_value *init = gw_value_map_get(cfg, "value");
    if (init)
        gw_value_copy(&p->value, init);
    else
        p->value = k == K_MEMORY ? GW_VALUE_INIT_NULL : gw_value_double(p->min);
}

/* Releases the points and the state (timers and pending answers must be gone already). */
static void sim_free(struct sim *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->points[i].name);
        free(s->points[i].unit);
        gw_value_fini(&s->points[i].value);
    }
    free(s->points);
    free(s);
}

static int sim_create(const struct gw_host *host, const struct gw_value *config, void **state)
{
    struct sim *s = gw_calloc(1, sizeof *s);
    s->host = host;
    const struct gw_value *points = gw_value_map_get(config, "points");
    const struct gw_value *gen = gw_value_map_get(config, "generate");
    size_t n = gw_value_count(points) + (gen ? (size_t)num(gen, "count", 0) : 0);
    s->points = gw_calloc(n + 1, sizeof *s->points);
    static const char *const kinds[] = {"counter", "sine", "random", "memory"};
    for (size_t i = 0; i < gw_value_count(points); i++) {
        const struct gw_value *pc = &points->c.items[i];
        const char *kind = str(pc, "kind", "counter");
        enum kind k = K_COUNTER;
        for (int j = 0; j < 4; j++)
            if (strcmp(kind, kinds[j]) == 0)
                k = (enum kind)j;
        const char *name = str(pc, "name", "");
        for (size_t j = 0; j < s->n; j++) {
            char full[256];
            snprintf(full, sizeof full, "%s/%s", host->instance, name);
            if (strcmp(s->points[j].name, full) == 0) {
                char ptr[64];
                snprintf(ptr, sizeof ptr, "/points/%zu/name", i);
                host->config_error(host, ptr, "point name \"%s\" is used twice", name);
                sim_free(s);
                return GW_ECONFIG;
            }
        }
        if (num(pc, "min", 0) > num(pc, "max", 100)) {
            char ptr[64];
            snprintf(ptr, sizeof ptr, "/points/%zu/max", i);
            host->config_error(host, ptr, "max %g is below min %g", num(pc, "max", 100),
                               num(pc, "min", 0));
            sim_free(s);
            return GW_ECONFIG;
        }
        point_init(s, &s->points[s->n++], name, k, pc);
    }
    if (gen) {
        const char *prefix = str(gen, "prefix", "p");
        size_t count = (size_t)num(gen, "count", 0);
        for (size_t i = 0; i < count; i++) {
            char name[128];
            snprintf(name, sizeof name, "%s%zu", prefix, i);
            point_init(s, &s->points[s->n++], name, K_COUNTER, gen);
        }
    }
    *state = s;
    return 0;
}

/* --- Answers --- */

static void pending_fire(void *arg)
{
    struct pending *p = arg;
    struct sim *s = p->sim;
    for (struct pending **pp = &s->pending; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    gw_call_reply(p->call, &p->out);
    gw_timer_free(p->timer);
    free(p);
}

static void answer(struct point *p, struct gw_call *call)
{
    struct gw_value out;
    gw_value_copy(&out, &p->value);
    if (!p->delay_ms) {
        gw_call_reply(call, &out);
        return;
    }
    struct pending *d = gw_calloc(1, sizeof *d);
    d->sim = p->sim;
    d->call = call;
    d->out = out;
    d->timer = gw_timer_new(p->sim->host->loop, pending_fire, d);
    d->next = p->sim->pending;
    p->sim->pending = d;
    gw_timer_start(d->timer, p->delay_ms);
}

static int point_run(void *ctx, struct gw_call *call)
{
    struct point *p = ctx;
    const struct gw_value *in = gw_call_input(call);
    if (in->type != GW_VALUE_NULL) {
        if (p->kind != K_MEMORY)
            return GW_EREADONLY;
        gw_value_fini(&p->value);
        gw_value_copy(&p->value, in);
        struct gw_value pub;
        gw_value_copy(&pub, &p->value);
        gw_registry_publish(p->sim->host->registry, p->id, &pub, gw_loop_wall_ms());
    }
    answer(p, call);
    return 0;
}

static void point_tick(void *arg)
{
    struct point *p = arg;
    double dt = p->interval_ms / 1000.0;
    p->t += dt;
    double v;
    switch (p->kind) {
    case K_COUNTER:
        v = (p->value.type == GW_VALUE_DOUBLE ? p->value.d : 0) + 1;
        break;
    case K_SINE:
        v = p->min + (p->max - p->min) * (0.5 + 0.5 * sin(2 * M_PI * p->t / p->period_s));
        break;
    default:
        v = p->min + (p->max - p->min) * ((double)rand() / RAND_MAX);
        break;
    }
    gw_value_fini(&p->value);
    p->value = gw_value_double(v);
    struct gw_value pub = gw_value_double(v);
    gw_registry_publish(p->sim->host->registry, p->id, &pub, gw_loop_wall_ms());
    gw_timer_start(p->timer, p->interval_ms);
}

static int sim_start(void *state)
{
    struct sim *s = state;
    for (size_t i = 0; i < s->n; i++) {
        struct point *p = &s->points[i];
        struct gw_value meta = gw_value_map();
        static const char *const kinds[] = {"counter", "sine", "random", "memory"};
        *gw_value_map_set(&meta, "source", 6) = gw_value_cstr(kinds[p->kind]);
        if (p->unit)
            *gw_value_map_set(&meta, "unit", 4) = gw_value_cstr(p->unit);
        struct gw_resource_desc d = {
            .name = p->name,
            .fn = p->kind == K_MEMORY ? GW_FN_INOUT : GW_FN_OUTPUT,
            .in = p->kind == K_MEMORY ? &p->value : NULL,
            .out = &p->value,
            .meta = &meta,
            .run = point_run,
            .ctx = p,
            .owner = s,
        };
        int rc = gw_registry_add(s->host->registry, &d, &p->id);
        gw_value_fini(&meta);
        if (rc < 0) {
            s->host->log(s->host, GW_LOG_ERR, "cannot add resource %s: %s", p->name,
                         gw_strerror(rc));
            return rc;
        }
        if (p->value.type != GW_VALUE_NULL) { /* the initial value is known at once */
            struct gw_value pub;
            gw_value_copy(&pub, &p->value);
            gw_registry_publish(s->host->registry, p->id, &pub, gw_loop_wall_ms());
        }
        if (p->kind != K_MEMORY && p->interval_ms) {
            p->timer = gw_timer_new(s->host->loop, point_tick, p);
            gw_timer_start(p->timer, p->interval_ms);
        }
    }
    s->host->log(s->host, GW_LOG_INFO, "%zu simulated point(s)", s->n);
    return 0;
}

static void sim_stop(void *state)
{
    struct sim *s = state;
    for (size_t i = 0; i < s->n; i++) {
        gw_timer_free(s->points[i].timer);
        s->points[i].timer = NULL;
        /* No more updates: the last values are stale from now on (a post that reaches the loop
         * after stop(), like those of adapters with worker threads). */
        if (s->points[i].id)
            gw_registry_mark_stale(s->host->registry, s->points[i].id);
    }
    /* Delayed answers are sent now rather than lost: a call always gets its answer. */
    while (s->pending)
        pending_fire(s->pending);
}

static void sim_destroy(void *state)
{
    struct sim *s = state;
    sim_stop(s);
    sim_free(s);
}

const struct gw_adapter_ops gw_sim_adapter = {
    .name = "sim",
    .create = sim_create,
    .start = sim_start,
    .stop = sim_stop,
    .destroy = sim_destroy,
};
