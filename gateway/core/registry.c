/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The resource registry (gw/registry.h). Resources live in two open-addressing hash tables (by
 * name, by id) and a name-sorted array rebuilt lazily for DESCRIBE and iteration. Calls and
 * published values that come from worker threads reach the loop thread as posted tasks, so all
 * registry state is only ever touched by the loop thread and needs no lock.
 *
 * A resource that is removed while calls into it are still running stays allocated until the last
 * of them ends (reference count), so an adapter answering late never touches freed memory.
 *
 * Memory (issue 11, 100,000 resources): a resource is one allocation of ~170 bytes for a Modbus
 * point: the name is stored inline, the DESCRIBE-one samples and metadata as their PSON bytes (no
 * value trees), and an owner that passes a describe callback keeps no metadata here at all.
 */
#include "gw/registry.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct gw_sub {
    struct gw_sub *next;
    struct gw_res *res;
    gw_sub_fn fn;
    void *arg;
};

/*
 * One resource, in ONE allocation (about 200-300 bytes for a typical point): the fixed fields, then
 * the name (NUL-terminated) and the DESCRIBE-one samples and metadata as the PSON bytes they are
 * answered with (encoded once at registration: "in" sample, "out" sample, then meta_n key/value
 * pairs). Only the last value is a live gw_value.
 */
struct gw_res {
    uint32_t hash;              /* low 32 bits of hash_name() */
    uint32_t id;
    uint16_t name_len;          /* <= 1024 */
    uint8_t fn;                 /* enum gw_fn */
    bool params, not_streamable;
    bool has_last, stale, removed;
    unsigned refs; /* 1 while registered + 1 per running call */
    uint32_t in_len, out_len, meta_len, meta_n; /* PSON byte counts in desc, meta entries */
    gw_run_fn run;
    gw_describe_fn describe;
    void *ctx;
    void *owner;
    struct gw_sub *subs;
    uint64_t last_ts;
    struct gw_value last;
    char name[];                /* name_len + 1 bytes, then in_len + out_len + meta_len bytes */
};

/* The PSON bytes after the name. */
static const uint8_t *res_desc(const struct gw_res *r)
{
    return (const uint8_t *)r->name + r->name_len + 1;
}

const uint64_t gw_registry_lat_bounds_us[GW_REGISTRY_LAT_BUCKETS] = {
    100, 500, 1000, 5000, 10000, 50000, 100000, 500000, 1000000, UINT64_MAX};

struct gw_registry {
    struct gw_loop *loop;
    struct gw_registry_stats stats;
    struct gw_res **by_name; /* open addressing, size cap (power of two) */
    struct gw_res **by_id;
    size_t cap, count;
    struct gw_res **sorted; /* name order, rebuilt when dirty */
    bool dirty;
};

struct gw_call {
    struct gw_registry *reg;
    struct gw_res *res;
    struct gw_value input, params;
    gw_call_done_fn done;
    void *arg;
    uint64_t start_us;
    bool cancelled;
    /* The answer, filled by reply/fail on any thread, consumed on the loop thread. */
    int rc;
    struct gw_value out;
    bool has_out;
    char *msg;
};

/* --- Hashing and tables --- */

static uint64_t hash_name(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint32_t id_for_name(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    h &= 0x7fffffff;
    return h ? h : 1;
}

static void table_insert(struct gw_registry *reg, struct gw_res *r)
{
    size_t mask = reg->cap - 1;
    size_t i = (size_t)r->hash & mask;
    while (reg->by_name[i])
        i = (i + 1) & mask;
    reg->by_name[i] = r;
    i = (size_t)(r->id * 2654435761u) & mask;
    while (reg->by_id[i])
        i = (i + 1) & mask;
    reg->by_id[i] = r;
}

static void rebuild_tables(struct gw_registry *reg, size_t cap, struct gw_res **all, size_t n)
{
    free(reg->by_name);
    free(reg->by_id);
    reg->cap = cap;
    reg->by_name = gw_calloc(cap, sizeof *reg->by_name);
    reg->by_id = gw_calloc(cap, sizeof *reg->by_id);
    for (size_t i = 0; i < n; i++)
        table_insert(reg, all[i]);
}

/* All registered resources, in table order (caller frees the array). */
static struct gw_res **collect(struct gw_registry *reg)
{
    struct gw_res **all = gw_malloc((reg->count + 1) * sizeof *all);
    size_t n = 0;
    for (size_t i = 0; i < reg->cap; i++)
        if (reg->by_name[i])
            all[n++] = reg->by_name[i];
    return all;
}

struct gw_res *gw_registry_find(struct gw_registry *reg, const char *name, size_t len)
{
    if (!reg->cap)
        return NULL;
    size_t mask = reg->cap - 1;
    uint32_t h = (uint32_t)hash_name(name, len);
    for (size_t i = (size_t)h & mask; reg->by_name[i]; i = (i + 1) & mask) {
        struct gw_res *r = reg->by_name[i];
        if (r->hash == h && r->name_len == len && memcmp(r->name, name, len) == 0)
            return r;
    }
    return NULL;
}

struct gw_res *gw_registry_find_id(struct gw_registry *reg, uint32_t id)
{
    if (!reg->cap)
        return NULL;
    size_t mask = reg->cap - 1;
    for (size_t i = (size_t)(id * 2654435761u) & mask; reg->by_id[i]; i = (i + 1) & mask)
        if (reg->by_id[i]->id == id)
            return reg->by_id[i];
    return NULL;
}

/* --- Lifecycle --- */

int gw_registry_new(struct gw_loop *loop, struct gw_registry **out)
{
    struct gw_registry *reg = gw_calloc(1, sizeof *reg);
    reg->loop = loop;
    rebuild_tables(reg, 64, NULL, 0);
    *out = reg;
    return 0;
}

/* Tells subscribers the resource is gone (v == NULL); each subscription keeps it allocated
 * until gw_sub_free(). */
static void res_removed(struct gw_res *r)
{
    r->removed = true;
    for (struct gw_sub *sub = r->subs, *n; sub; sub = n) {
        n = sub->next;
        sub->fn(sub->arg, r, NULL);
    }
}

static void res_unref(struct gw_res *r)
{
    if (--r->refs)
        return;
    gw_value_fini(&r->last);
    free(r);
}

void gw_registry_free(struct gw_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->cap; i++)
        if (reg->by_name[i]) {
            res_removed(reg->by_name[i]);
            res_unref(reg->by_name[i]);
        }
    free(reg->by_name);
    free(reg->by_id);
    free(reg->sorted);
    free(reg);
}

int gw_registry_add(struct gw_registry *reg, const struct gw_resource_desc *d, uint32_t *id)
{
    size_t len = d->name ? strlen(d->name) : 0;
    if (!len || len > 1024 || d->fn < GW_FN_RUN || d->fn > GW_FN_INOUT || !d->run)
        return GW_EINVAL;
    if (gw_registry_find(reg, d->name, len))
        return GW_EEXIST;
    if ((reg->count + 1) * 2 > reg->cap) {
        struct gw_res **all = collect(reg);
        rebuild_tables(reg, reg->cap * 2, all, reg->count);
        free(all);
    }
    /* Measure the DESCRIBE-one bytes (a writer without buffer only counts), then write them. */
    const struct gw_value *meta = d->meta && d->meta->type == GW_VALUE_MAP ? d->meta : NULL;
    struct gw_pson_writer m;
    gw_pson_writer_init(&m, NULL, 0);
    if (d->in)
        gw_value_encode(d->in, &m);
    size_t in_len = m.len;
    if (d->out)
        gw_value_encode(d->out, &m);
    size_t out_len = m.len - in_len;
    for (size_t i = 0; meta && i < meta->c.n; i++) {
        gw_pson_put_str(&m, meta->c.keys[i], meta->c.key_lens[i]);
        gw_value_encode(&meta->c.items[i], &m);
    }
    size_t meta_len = m.len - in_len - out_len;
    if (m.len > UINT32_MAX / 2)
        return GW_EINVAL;
    struct gw_res *r = gw_calloc(1, sizeof *r + len + 1 + m.len);
    memcpy(r->name, d->name, len + 1);
    r->name_len = (uint16_t)len;
    r->hash = (uint32_t)hash_name(d->name, len);
    r->id = id_for_name(d->name, len);
    while (gw_registry_find_id(reg, r->id)) /* rare collision: probe */
        r->id = (r->id + 1) & 0x7fffffff ? (r->id + 1) & 0x7fffffff : 1;
    r->fn = (uint8_t)d->fn;
    r->params = d->params;
    r->not_streamable = d->not_streamable;
    r->in_len = (uint32_t)in_len;
    r->out_len = (uint32_t)out_len;
    r->meta_len = (uint32_t)meta_len;
    r->meta_n = meta ? (uint32_t)meta->c.n : 0;
    gw_pson_writer_init(&m, (uint8_t *)r->name + len + 1, in_len + out_len + meta_len);
    if (d->in)
        gw_value_encode(d->in, &m);
    if (d->out)
        gw_value_encode(d->out, &m);
    for (size_t i = 0; i < r->meta_n; i++) {
        gw_pson_put_str(&m, meta->c.keys[i], meta->c.key_lens[i]);
        gw_value_encode(&meta->c.items[i], &m);
    }
    r->run = d->run;
    r->describe = d->describe;
    r->ctx = d->ctx;
    r->owner = d->owner;
    r->refs = 1;
    table_insert(reg, r);
    reg->count++;
    reg->dirty = true;
    if (id)
        *id = r->id;
    return 0;
}

void gw_registry_remove_owner(struct gw_registry *reg, void *owner)
{
    struct gw_res **all = collect(reg);
    size_t n = reg->count, kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (all[i]->owner == owner) {
            res_removed(all[i]);
            res_unref(all[i]);
        } else {
            all[kept++] = all[i];
        }
    }
    reg->count = kept;
    rebuild_tables(reg, reg->cap, all, kept);
    free(all);
    reg->dirty = true;
}

size_t gw_registry_count(const struct gw_registry *reg)
{
    return reg->count;
}

static int cmp_res(const void *a, const void *b)
{
    const struct gw_res *x = *(struct gw_res *const *)a, *y = *(struct gw_res *const *)b;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

static struct gw_res **sorted(struct gw_registry *reg)
{
    if (reg->dirty || !reg->sorted) {
        free(reg->sorted);
        reg->sorted = collect(reg);
        qsort(reg->sorted, reg->count, sizeof *reg->sorted, cmp_res);
        reg->dirty = false;
    }
    return reg->sorted;
}

void gw_registry_foreach(struct gw_registry *reg, void (*fn)(void *arg, struct gw_res *res),
                         void *arg)
{
    struct gw_res **s = sorted(reg);
    size_t n = reg->count;
    for (size_t i = 0; i < n; i++)
        fn(arg, s[i]);
}

const char *gw_res_name(const struct gw_res *res)
{
    return res->name;
}

uint32_t gw_res_id(const struct gw_res *res)
{
    return res->id;
}

enum gw_fn gw_res_fn(const struct gw_res *res)
{
    return (enum gw_fn)res->fn;
}

bool gw_res_streamable(const struct gw_res *res)
{
    return !res->not_streamable;
}

/* --- DESCRIBE --- */

void gw_registry_describe_all(struct gw_registry *reg, struct gw_pson_writer *w)
{
    struct gw_res **s = sorted(reg);
    gw_pson_put_map(w, reg->count);
    for (size_t i = 0; i < reg->count; i++) {
        struct gw_res *r = s[i];
        gw_pson_put_str(w, r->name, r->name_len);
        gw_pson_put_map(w, 2 + (r->params ? 1 : 0) + (r->not_streamable ? 1 : 0));
        gw_pson_put_str(w, "fn", 2);
        gw_pson_put_uint(w, (uint64_t)r->fn);
        gw_pson_put_str(w, "id", 2);
        gw_pson_put_uint(w, r->id);
        if (r->params) {
            gw_pson_put_str(w, "pr", 2);
            gw_pson_put_bool(w, true);
        }
        if (r->not_streamable) {
            gw_pson_put_str(w, "st", 2);
            gw_pson_put_bool(w, false);
        }
    }
}

void gw_registry_describe_one(struct gw_res *r, struct gw_pson_writer *w)
{
    bool has_in = r->fn == GW_FN_INPUT || r->fn == GW_FN_INOUT;
    bool has_out = r->fn == GW_FN_OUTPUT || r->fn == GW_FN_INOUT;
    const uint8_t *desc = res_desc(r);
    struct gw_value extra = GW_VALUE_INIT_NULL;
    if (r->describe && !r->removed) {
        extra = gw_value_map();
        r->describe(r->ctx, &extra);
    }
    size_t n_extra = extra.type == GW_VALUE_MAP ? extra.c.n : 0;
    gw_pson_put_map(w, (has_in ? 1 : 0) + (has_out ? 1 : 0) + r->meta_n + n_extra);
    if (has_in) {
        gw_pson_put_str(w, "in", 2);
        if (r->in_len)
            gw_pson_put_raw(w, desc, r->in_len);
        else
            gw_pson_put_null(w);
    }
    if (has_out) {
        gw_pson_put_str(w, "out", 3);
        if (r->has_last)
            gw_value_encode(&r->last, w);
        else if (r->out_len)
            gw_pson_put_raw(w, desc + r->in_len, r->out_len);
        else
            gw_pson_put_null(w);
    }
    if (r->meta_len)
        gw_pson_put_raw(w, desc + r->in_len + r->out_len, r->meta_len);
    for (size_t i = 0; i < n_extra; i++) {
        gw_pson_put_str(w, extra.c.keys[i], extra.c.key_lens[i]);
        gw_value_encode(&extra.c.items[i], w);
    }
    gw_value_fini(&extra);
}

/* --- Calls --- */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void count_call(struct gw_registry_stats *st, int rc, bool cancelled, uint64_t us)
{
    struct gw_registry_outcome *o = rc == 0 ? &st->ok : &st->failed;
    o->count++;
    o->sum_us += us;
    for (int i = 0; i < GW_REGISTRY_LAT_BUCKETS; i++)
        if (us <= gw_registry_lat_bounds_us[i])
            o->buckets[i]++;
    if (cancelled)
        st->cancelled++;
}

static void call_finish(void *arg)
{
    struct gw_call *c = arg;
    count_call(&c->reg->stats, c->rc, c->cancelled, now_us() - c->start_us);
    if (!c->cancelled)
        c->done(c->arg, c->rc, c->has_out ? &c->out : NULL, c->msg ? c->msg : "");
    gw_value_fini(&c->input);
    gw_value_fini(&c->params);
    gw_value_fini(&c->out);
    free(c->msg);
    res_unref(c->res);
    free(c);
}

struct gw_call *gw_registry_call(struct gw_registry *reg, struct gw_res *res,
                                 struct gw_value *input, struct gw_value *params,
                                 gw_call_done_fn done, void *arg)
{
    struct gw_call *c = gw_calloc(1, sizeof *c);
    c->reg = reg;
    c->res = res;
    res->refs++;
    if (input) {
        c->input = *input;
        *input = GW_VALUE_INIT_NULL;
    }
    if (params) {
        c->params = *params;
        *params = GW_VALUE_INIT_NULL;
    }
    c->done = done;
    c->arg = arg;
    c->start_us = now_us();
    if (res->removed) {
        gw_call_fail(c, GW_ERESOURCE, "resource \"%s\" was removed", res->name);
        return c;
    }
    int rc = res->run(res->ctx, c);
    if (rc < 0)
        gw_call_fail(c, rc, "%s", gw_strerror(rc));
    return c;
}

void gw_call_cancel(struct gw_call *call)
{
    call->cancelled = true;
}

const struct gw_value *gw_call_input(const struct gw_call *call)
{
    return &call->input;
}

const struct gw_value *gw_call_params(const struct gw_call *call)
{
    return &call->params;
}

struct gw_res *gw_call_res(const struct gw_call *call)
{
    return call->res;
}

void gw_call_reply(struct gw_call *call, struct gw_value *out)
{
    call->rc = 0;
    if (out) {
        call->out = *out;
        call->has_out = true;
        *out = GW_VALUE_INIT_NULL;
    }
    gw_loop_post(call->reg->loop, call_finish, call);
}

void gw_call_fail(struct gw_call *call, int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    call->rc = code < 0 ? code : GW_EDEVICE;
    call->msg = gw_strdup(msg);
    gw_loop_post(call->reg->loop, call_finish, call);
}

/* --- Values --- */

struct publish {
    struct gw_registry *reg;
    uint32_t id;
    struct gw_value v;
    uint64_t ts;
    bool stale_only;
};

/* Loop thread: applies one new value (taken) or stale mark to resource id. */
static void apply_publish(struct gw_registry *reg, uint32_t id, struct gw_value *v, uint64_t ts,
                          bool stale_only)
{
    reg->stats.publishes++;
    struct gw_res *r = gw_registry_find_id(reg, id);
    if (r && stale_only) {
        r->stale = true;
    } else if (r) {
        gw_value_fini(&r->last);
        r->last = *v;
        *v = GW_VALUE_INIT_NULL;
        r->last_ts = ts;
        r->has_last = true;
        r->stale = false;
        for (struct gw_sub *s = r->subs, *n; s; s = n) {
            n = s->next; /* a subscriber may free itself */
            s->fn(s->arg, r, &r->last);
        }
    }
    gw_value_fini(v);
}

static void publish_task(void *arg)
{
    struct publish *p = arg;
    apply_publish(p->reg, p->id, &p->v, p->ts, p->stale_only);
    free(p);
}

/* --- Batches --- */

struct batch_entry {
    uint32_t id;
    bool stale_only;
    uint64_t ts;
    struct gw_value v;
};

struct gw_publish_batch {
    struct gw_registry *reg;    /* set when handed over */
    struct batch_entry *e;
    size_t n, cap;
};

struct gw_publish_batch *gw_publish_batch_new(void)
{
    return gw_calloc(1, sizeof(struct gw_publish_batch));
}

void gw_publish_batch_free(struct gw_publish_batch *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        gw_value_fini(&b->e[i].v);
    free(b->e);
    free(b);
}

static struct batch_entry *batch_slot(struct gw_publish_batch *b)
{
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 64;
        b->e = gw_realloc(b->e, b->cap * sizeof *b->e);
    }
    return &b->e[b->n++];
}

void gw_publish_batch_add(struct gw_publish_batch *b, uint32_t id, struct gw_value *v,
                          uint64_t ts_ms)
{
    struct batch_entry *e = batch_slot(b);
    *e = (struct batch_entry){.id = id, .ts = ts_ms, .v = *v};
    *v = GW_VALUE_INIT_NULL;
}

void gw_publish_batch_add_stale(struct gw_publish_batch *b, uint32_t id)
{
    *batch_slot(b) = (struct batch_entry){.id = id, .stale_only = true};
}

size_t gw_publish_batch_count(const struct gw_publish_batch *b)
{
    return b->n;
}

static void batch_task(void *arg)
{
    struct gw_publish_batch *b = arg;
    for (size_t i = 0; i < b->n; i++)
        apply_publish(b->reg, b->e[i].id, &b->e[i].v, b->e[i].ts, b->e[i].stale_only);
    b->n = 0;
    gw_publish_batch_free(b);
}

void gw_registry_publish_batch(struct gw_registry *reg, struct gw_publish_batch *b)
{
    if (!b->n)
        return;
    /* The entries move to a heap copy that travels to the loop; b keeps its storage empty. */
    struct gw_publish_batch *t = gw_malloc(sizeof *t);
    *t = *b;
    t->reg = reg;
    b->e = NULL;
    b->n = b->cap = 0;
    gw_loop_post(reg->loop, batch_task, t);
}

void gw_registry_publish(struct gw_registry *reg, uint32_t id, struct gw_value *v, uint64_t ts_ms)
{
    struct publish *p = gw_calloc(1, sizeof *p);
    p->reg = reg;
    p->id = id;
    p->v = *v;
    *v = GW_VALUE_INIT_NULL;
    p->ts = ts_ms;
    gw_loop_post(reg->loop, publish_task, p);
}

void gw_registry_mark_stale(struct gw_registry *reg, uint32_t id)
{
    struct publish *p = gw_calloc(1, sizeof *p);
    p->reg = reg;
    p->id = id;
    p->stale_only = true;
    gw_loop_post(reg->loop, publish_task, p);
}

const struct gw_value *gw_res_last(const struct gw_res *res, uint64_t *ts_ms, bool *stale)
{
    if (ts_ms)
        *ts_ms = res->last_ts;
    if (stale)
        *stale = res->stale;
    return res->has_last ? &res->last : NULL;
}

struct gw_sub *gw_res_subscribe(struct gw_res *res, gw_sub_fn fn, void *arg)
{
    struct gw_sub *s = gw_calloc(1, sizeof *s);
    s->res = res;
    s->fn = fn;
    s->arg = arg;
    s->next = res->subs;
    res->subs = s;
    res->refs++;
    return s;
}

void gw_sub_free(struct gw_sub *sub)
{
    if (!sub)
        return;
    for (struct gw_sub **pp = &sub->res->subs; *pp; pp = &(*pp)->next)
        if (*pp == sub) {
            *pp = sub->next;
            break;
        }
    struct gw_res *res = sub->res;
    free(sub);
    res_unref(res);
}

void gw_registry_get_stats(const struct gw_registry *reg, struct gw_registry_stats *out)
{
    *out = reg->stats;
    out->resources = reg->count;
}
