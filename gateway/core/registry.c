/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The resource registry (gw/registry.h). Resources are kept in a dense array of entry pointers
 * (put in name order, lazily, for DESCRIBE and iteration) indexed by one open-addressing table of
 * 32-bit slots keyed by id. Calls and published values that come from worker threads reach the
 * loop thread as posted tasks, so all registry state is only ever touched by the loop thread and
 * needs no lock.
 *
 * A resource that is removed while calls into it are still running stays allocated until the last
 * of them ends (reference count), so an adapter answering late never touches freed memory.
 *
 * Memory (issue 11: 1,000 Modbus devices x 100 points = 100,000 resources; bench_registry in
 * tests/bench/core measures it with mallinfo2()). A Modbus point used to cost 226 bytes of heap:
 * a 176-byte malloc chunk (88 bytes of fields, a 64-byte inline struct gw_value for the last value,
 * the name, the DESCRIBE samples), two tables of 8-byte pointers at load <= 0.5 (by name, by id:
 * 42 bytes at 100,000) and the name-sorted copy (8). Now it is about 85 bytes:
 * - The entry's fixed part is 42 bytes, so a point named like "mb/d999p99" with its one-byte
 *   sample and length fits malloc's 64-byte chunk (56 usable bytes). What went:
 *   . the last value is an 8-byte slot (bool, uint, int or double inline; a heap struct gw_value
 *     for strings, bytes, maps and arrays, which the Modbus adapter never publishes) and its type
 *     in 4 bits; gw_res_last() fills a borrowed view instead of returning a pointer into the entry;
 *   . run, describe and owner (24 bytes) are the same for every point of an adapter instance: they
 *     are interned in the registry's small "kinds" table and the entry keeps a 16-bit index (the
 *     table is only consulted while the resource is registered, so a removed entry kept alive by
 *     a call or subscription never needs it);
 *   . the flags, fn and last-value type share 16 bits with the last value's time (48 bits of
 *     milliseconds, enough until the year 10889); the name length and the name hash are not kept
 *     (strlen on the rare paths that need it; the table slot carries 8 bits of the id instead);
 *   . the DESCRIBE-one byte counts are varints before the PSON bytes, present only for the parts
 *     that exist, and an "out" sample equal to the "in" sample (every writable Modbus point) is
 *     stored once.
 * - One table instead of two: a name's lookup key is its id's starting value, id_for_name() (the
 *   FNV-1a hash that decision 14.12 makes the id), so find-by-name is find-by-id of that value
 *   plus a name comparison; the few resources whose id was probed past a collision (the first
 *   pair among the names "c/<n>" appears after 551,080 of them) are also listed in "moved" and
 *   searched linearly there (names made on purpose to collide would make that list long: the
 *   configuration is trusted). Slots are 32 bits: 8 bits of the id (to skip most non-matching
 *   slots without touching the entry) and the index into the dense array; a load factor of at
 *   most 0.5 keeps probes short (8 to 16 bytes per resource; 10.5 at 100,000). The dense array
 *   (8 bytes per resource, up to 16 just after it grew) replaces the second table and the
 *   name-sorted copy: sorting it in place for DESCRIBE only renumbers the slots.
 * - Kept per entry: ctx (per resource), the subscription list head (a side table was not worth
 *   it: subscriptions must stay valid after gw_registry_free()), the reference count.
 * Measured (bench_registry, 100,000 points): lookups by name and id and applied publishes as fast
 * as before or faster (publishing no longer copies a 64-byte value).
 * Limits that follow: 16,777,215 resources (24-bit index) and 65,536 distinct (run, describe,
 * owner) triples registered at once; beyond either gw_registry_add() answers GW_ENOSPC.
 */
#include "gw/registry.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/mem.h"

#include <stdarg.h>
#include <stddef.h>
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

/* The low 16 bits of gw_res.tsb; the upper 48 hold the last value's time in ms. */
#define RB_FN 0x0003u          /* enum gw_fn - 1 */
#define RB_PARAMS 0x0004u      /* DESCRIBE "pr": true */
#define RB_NOT_STREAM 0x0008u  /* DESCRIBE "st": false */
#define RB_STALE 0x0010u
#define RB_REMOVED 0x0020u
#define RB_HAS_IN 0x0040u      /* DESCRIBE-one bytes hold an "in" sample */
#define RB_HAS_OUT 0x0080u     /* ... an "out" sample */
#define RB_OUT_IS_IN 0x0100u   /* ... which is the same bytes as "in" (stored once) */
#define RB_HAS_META 0x0200u    /* ... meta key/value pairs */
#define RB_MOVED 0x0400u       /* id != id_for_name(name): listed in reg->moved */
#define RB_TYPE_SHIFT 12       /* bits 12-15: the last value's enum gw_value_type + 1; 0 = none */
#define RB_MASK 0xffffu
#define TS_MAX ((UINT64_C(1) << 48) - 1)

#define NAME_MAX_LEN 1024
#define SLOT_INDEX 0x00ffffffu /* index + 1 into reg->all; 0 = empty slot */
#define MAX_RESOURCES SLOT_INDEX
#define MAX_KINDS 65536

/* The last value: scalars inline, the rest as a heap gw_value (owned). */
union res_last {
    bool b;
    uint64_t u;
    int64_t i;
    double d;
    struct gw_value *box; /* STRING, BYTES, MAP, ARRAY */
};

/*
 * One resource, in ONE allocation: the fixed part (42 bytes, no padding before name), then the
 * name (NUL-terminated), then the DESCRIBE-one bytes: a varint byte count for each part that is
 * present ("in" if RB_HAS_IN; "out" if RB_HAS_OUT and not RB_OUT_IS_IN; the meta bytes and the
 * meta pair count if RB_HAS_META), then the parts' PSON bytes in the same order, encoded once at
 * registration.
 */
struct gw_res {
    void *ctx;              /* run / describe context (per resource) */
    struct gw_sub *subs;
    union res_last last;
    uint64_t tsb;           /* last value's time (ms) << 16 | RB_... bits */
    uint32_t id;
    uint32_t refs;          /* 1 while registered + 1 per running call and per subscription */
    uint16_t kind;          /* index into reg->kinds: run, describe, owner */
    char name[];
};

/* (run, describe, owner): the same for every resource of an adapter instance. */
struct res_kind {
    gw_run_fn run;
    gw_describe_fn describe;
    void *owner;
    size_t uses; /* registered resources of this kind */
};

static unsigned res_bits(const struct gw_res *r)
{
    return (unsigned)(r->tsb & RB_MASK);
}

static void res_set_bits(struct gw_res *r, unsigned set, unsigned clear)
{
    r->tsb = (r->tsb & ~(uint64_t)(clear & RB_MASK)) | (set & RB_MASK);
}

/* The last value's type + 1, or 0 if none yet. */
static unsigned res_type1(const struct gw_res *r)
{
    return res_bits(r) >> RB_TYPE_SHIFT;
}

static bool type_is_boxed(unsigned type)
{
    return type >= GW_VALUE_STRING;
}

/* The DESCRIBE-one parts of r. */
struct res_desc {
    const uint8_t *in, *out, *meta;
    uint64_t in_len, out_len, meta_len, meta_n;
};

static void res_desc(const struct gw_res *r, struct res_desc *d)
{
    unsigned bits = res_bits(r);
    const uint8_t *p = (const uint8_t *)r->name + strlen(r->name) + 1;
    memset(d, 0, sizeof *d);
    /* Our own varints (at most 10 bytes each, and they end inside the allocation). */
    if (bits & RB_HAS_IN)
        p += gw_varint_decode(p, GW_VARINT_MAX, &d->in_len);
    if ((bits & RB_HAS_OUT) && !(bits & RB_OUT_IS_IN))
        p += gw_varint_decode(p, GW_VARINT_MAX, &d->out_len);
    if (bits & RB_HAS_META) {
        p += gw_varint_decode(p, GW_VARINT_MAX, &d->meta_len);
        p += gw_varint_decode(p, GW_VARINT_MAX, &d->meta_n);
    }
    d->in = p;
    p += d->in_len;
    if (bits & RB_OUT_IS_IN) {
        d->out = d->in;
        d->out_len = d->in_len;
    } else {
        d->out = p;
        p += d->out_len;
    }
    d->meta = p;
}

const uint64_t gw_registry_lat_bounds_us[GW_REGISTRY_LAT_BUCKETS] = {
    100, 500, 1000, 5000, 10000, 50000, 100000, 500000, 1000000, UINT64_MAX};

struct gw_registry {
    struct gw_loop *loop;
    struct gw_registry_stats stats;
    struct gw_res **all;     /* the registered resources; in name order unless dirty */
    size_t count, all_cap;
    uint32_t *slots;         /* by id: 0 empty, else (id >> 23) << 24 | (index in all + 1) */
    size_t cap;              /* slots, a power of two */
    unsigned shift;          /* 32 - log2(cap) */
    struct gw_res **moved;   /* resources with RB_MOVED */
    size_t n_moved, moved_cap;
    struct res_kind *kinds;  /* n_kinds made, kinds_cap allocated; unused ones have run NULL */
    size_t n_kinds, kinds_cap, last_kind;
    uint16_t *free_kinds;     /* indices of unused kinds below n_kinds */
    size_t n_free_kinds;
    uint32_t *kind_slots;     /* kind_cap slots: kind index + 1, or 0 */
    size_t kind_cap;
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

static size_t slot_of(const struct gw_registry *reg, uint32_t id)
{
    return (uint32_t)(id * 2654435761u) >> reg->shift;
}

static uint32_t slot_tag(uint32_t id)
{
    return (id >> 23) << 24;
}

static void table_insert(struct gw_registry *reg, size_t index)
{
    uint32_t id = reg->all[index]->id;
    size_t mask = reg->cap - 1;
    size_t i = slot_of(reg, id);
    while (reg->slots[i])
        i = (i + 1) & mask;
    reg->slots[i] = slot_tag(id) | (uint32_t)(index + 1);
}

/* Rebuilds the slots (cap a power of two >= 64) from reg->all. */
static void rebuild_table(struct gw_registry *reg, size_t cap)
{
    if (cap != reg->cap) {
        free(reg->slots);
        reg->slots = gw_malloc(cap * sizeof *reg->slots);
        reg->cap = cap;
        unsigned bits = 0;
        while (((size_t)1 << bits) < cap)
            bits++;
        reg->shift = 32 - bits;
    }
    memset(reg->slots, 0, cap * sizeof *reg->slots);
    for (size_t i = 0; i < reg->count; i++)
        table_insert(reg, i);
}

struct gw_res *gw_registry_find_id(struct gw_registry *reg, uint32_t id)
{
    size_t mask = reg->cap - 1;
    uint32_t tag = slot_tag(id);
    for (size_t i = slot_of(reg, id);; i = (i + 1) & mask) {
        uint32_t s = reg->slots[i];
        if (!s)
            return NULL;
        if ((s & ~SLOT_INDEX) == tag) {
            struct gw_res *r = reg->all[(s & SLOT_INDEX) - 1];
            if (r->id == id)
                return r;
        }
    }
}

/* r's name is exactly name[0..len) (which may hold NULs: then it is not). */
static bool name_is(const struct gw_res *r, const char *name, size_t len)
{
    return strnlen(r->name, len + 1) == len && memcmp(r->name, name, len) == 0;
}

struct gw_res *gw_registry_find(struct gw_registry *reg, const char *name, size_t len)
{
    if (!len || len > NAME_MAX_LEN)
        return NULL;
    struct gw_res *r = gw_registry_find_id(reg, id_for_name(name, len));
    if (r && name_is(r, name, len))
        return r;
    for (size_t i = 0; i < reg->n_moved; i++)
        if (name_is(reg->moved[i], name, len))
            return reg->moved[i];
    return NULL;
}

/* --- Kinds --- */

/* Kinds are found by an open-addressing table of their indices + 1 (kind_cap slots, a power of
 * two, load <= 0.5), so registering stays O(1) however many adapter instances there are. */
static size_t kind_hash(const struct gw_registry *reg, gw_run_fn run, gw_describe_fn describe,
                        void *owner)
{
    uint64_t h = (uint64_t)(uintptr_t)owner * 0x9e3779b97f4a7c15ull;
    h ^= (uint64_t)(uintptr_t)run * 0xc2b2ae3d27d4eb4full;
    h ^= (uint64_t)(uintptr_t)describe * 0x165667b19e3779f9ull;
    return (size_t)(h ^ (h >> 29)) & (reg->kind_cap - 1);
}

static bool kind_is(const struct res_kind *k, gw_run_fn run, gw_describe_fn describe, void *owner)
{
    return k->run == run && k->describe == describe && k->owner == owner;
}

static void kind_slot_put(struct gw_registry *reg, size_t index)
{
    const struct res_kind *k = &reg->kinds[index];
    size_t i = kind_hash(reg, k->run, k->describe, k->owner);
    while (reg->kind_slots[i])
        i = (i + 1) & (reg->kind_cap - 1);
    reg->kind_slots[i] = (uint32_t)index + 1;
}

/* The index of the kind (run, describe, owner), made if new (with uses 0; a kind nobody uses
 * any more is forgotten, so its index is reused); -1 if MAX_KINDS are in use. The caller
 * counts the use. */
static long kind_get(struct gw_registry *reg, gw_run_fn run, gw_describe_fn describe,
                     void *owner)
{
    size_t last = reg->last_kind; /* resources of one instance are added together */
    if (last < reg->n_kinds && reg->kinds[last].uses && kind_is(&reg->kinds[last], run, describe,
                                                                 owner))
        return (long)last;
    if (reg->kind_cap) {
        for (size_t i = kind_hash(reg, run, describe, owner); reg->kind_slots[i];
             i = (i + 1) & (reg->kind_cap - 1)) {
            size_t k = reg->kind_slots[i] - 1;
            if (kind_is(&reg->kinds[k], run, describe, owner)) {
                reg->last_kind = k;
                return (long)k;
            }
        }
    }
    size_t index;
    if (reg->n_free_kinds) {
        index = reg->free_kinds[--reg->n_free_kinds];
    } else {
        if (reg->n_kinds == MAX_KINDS)
            return -1;
        if (reg->n_kinds == reg->kinds_cap) {
            reg->kinds_cap = reg->kinds_cap ? reg->kinds_cap * 2 : 8;
            reg->kinds = gw_realloc(reg->kinds, reg->kinds_cap * sizeof *reg->kinds);
            reg->free_kinds =
                gw_realloc(reg->free_kinds, reg->kinds_cap * sizeof *reg->free_kinds);
        }
        index = reg->n_kinds++;
    }
    reg->kinds[index] = (struct res_kind){.run = run, .describe = describe, .owner = owner};
    if (reg->n_kinds * 2 > reg->kind_cap) {
        free(reg->kind_slots);
        reg->kind_cap = reg->kind_cap ? reg->kind_cap * 2 : 16;
        reg->kind_slots = gw_calloc(reg->kind_cap, sizeof *reg->kind_slots);
        for (size_t i = 0; i < reg->n_kinds; i++)
            if (reg->kinds[i].run) /* in use, or just made */
                kind_slot_put(reg, i);
    } else {
        kind_slot_put(reg, index);
    }
    reg->last_kind = index;
    return (long)index;
}

/* Ends one use of kind index; the last one forgets the kind (linear probing deletion: later
 * entries of the probe run move back so that no lookup stops early). */
static void kind_release(struct gw_registry *reg, size_t index)
{
    struct res_kind *k = &reg->kinds[index];
    if (--k->uses)
        return;
    size_t mask = reg->kind_cap - 1;
    size_t i = kind_hash(reg, k->run, k->describe, k->owner);
    while (reg->kind_slots[i] != index + 1)
        i = (i + 1) & mask;
    for (size_t j = (i + 1) & mask; reg->kind_slots[j]; j = (j + 1) & mask) {
        const struct res_kind *o = &reg->kinds[reg->kind_slots[j] - 1];
        size_t home = kind_hash(reg, o->run, o->describe, o->owner);
        /* the entry at j may fill the hole at i if its home is not in (i, j] (cyclically) */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            reg->kind_slots[i] = reg->kind_slots[j];
            i = j;
        }
    }
    reg->kind_slots[i] = 0;
    *k = (struct res_kind){0};
    reg->free_kinds[reg->n_free_kinds++] = (uint16_t)index;
}

/* --- The last value --- */

/* Takes *v into u: a scalar inline, anything else moved into a heap box (NULL stores nothing). */
static void slot_store(union res_last *u, struct gw_value *v)
{
    switch (v->type) {
    case GW_VALUE_BOOL:
        u->b = v->b;
        break;
    case GW_VALUE_UINT:
        u->u = v->u;
        break;
    case GW_VALUE_INT:
        u->i = v->i;
        break;
    case GW_VALUE_DOUBLE:
        u->d = v->d;
        break;
    case GW_VALUE_NULL:
        break;
    default:
        u->box = gw_malloc(sizeof *u->box);
        *u->box = *v;
        break;
    }
    *v = GW_VALUE_INIT_NULL;
}

/* A shallow view of what u holds as type t (a boxed value's parts stay in the box). */
static void slot_view(const union res_last *u, enum gw_value_type t, struct gw_value *view)
{
    if (type_is_boxed(t)) {
        *view = *u->box;
        return;
    }
    *view = (struct gw_value){.type = t};
    switch (t) {
    case GW_VALUE_BOOL:
        view->b = u->b;
        break;
    case GW_VALUE_UINT:
        view->u = u->u;
        break;
    case GW_VALUE_INT:
        view->i = u->i;
        break;
    case GW_VALUE_DOUBLE:
        view->d = u->d;
        break;
    default:
        break;
    }
}

/* Drops the last value (type left as is: the caller sets it). */
static void last_drop(struct gw_res *r)
{
    unsigned t1 = res_type1(r);
    if (t1 && type_is_boxed(t1 - 1)) {
        gw_value_fini(r->last.box);
        free(r->last.box);
    }
    r->last.u = 0;
}

/* Takes *v as the last value. */
static void last_set(struct gw_res *r, struct gw_value *v)
{
    unsigned old1 = res_type1(r), new1 = (unsigned)v->type + 1;
    if (old1 && type_is_boxed(old1 - 1) && type_is_boxed(v->type)) {
        gw_value_fini(r->last.box); /* reuse the box */
        *r->last.box = *v;
    } else {
        last_drop(r);
        slot_store(&r->last, v);
    }
    *v = GW_VALUE_INIT_NULL;
    res_set_bits(r, new1 << RB_TYPE_SHIFT, 0xfu << RB_TYPE_SHIFT);
}

/* A shallow, borrowed view of r's last value; false (view null) if none yet. */
static bool last_view(const struct gw_res *r, struct gw_value *view)
{
    unsigned t1 = res_type1(r);
    if (!t1) {
        *view = GW_VALUE_INIT_NULL;
        return false;
    }
    slot_view(&r->last, (enum gw_value_type)(t1 - 1), view);
    return true;
}

/* --- Lifecycle --- */

int gw_registry_new(struct gw_loop *loop, struct gw_registry **out)
{
    struct gw_registry *reg = gw_calloc(1, sizeof *reg);
    reg->loop = loop;
    rebuild_table(reg, 64);
    *out = reg;
    return 0;
}

/* Unregisters r (the kind's use ends: the kinds table is never consulted for a removed entry)
 * and tells subscribers it is gone (v == NULL); each subscription keeps it allocated until
 * gw_sub_free(). */
static void res_removed(struct gw_registry *reg, struct gw_res *r)
{
    res_set_bits(r, RB_REMOVED, 0);
    kind_release(reg, r->kind);
    for (struct gw_sub *sub = r->subs, *n; sub; sub = n) {
        n = sub->next;
        sub->fn(sub->arg, r, NULL);
    }
}

static void res_unref(struct gw_res *r)
{
    if (--r->refs)
        return;
    last_drop(r);
    free(r);
}

void gw_registry_free(struct gw_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->count; i++)
        res_removed(reg, reg->all[i]);
    for (size_t i = 0; i < reg->count; i++)
        res_unref(reg->all[i]);
    free(reg->all);
    free(reg->slots);
    free(reg->moved);
    free(reg->kinds);
    free(reg->free_kinds);
    free(reg->kind_slots);
    free(reg);
}

/* Encodes the DESCRIBE-one parts of d into w ("in", "out", meta pairs), each part's end noted. */
static void encode_desc(const struct gw_resource_desc *d, const struct gw_value *meta,
                        struct gw_pson_writer *w, size_t ends[3])
{
    if (d->in)
        gw_value_encode(d->in, w);
    ends[0] = w->len;
    if (d->out)
        gw_value_encode(d->out, w);
    ends[1] = w->len;
    for (size_t i = 0; meta && i < meta->c.n; i++) {
        gw_pson_put_str(w, meta->c.keys[i], meta->c.key_lens[i]);
        gw_value_encode(&meta->c.items[i], w);
    }
    ends[2] = w->len;
}

int gw_registry_add(struct gw_registry *reg, const struct gw_resource_desc *d, uint32_t *id)
{
    size_t len = d->name ? strlen(d->name) : 0;
    if (!len || len > NAME_MAX_LEN || d->fn < GW_FN_RUN || d->fn > GW_FN_INOUT || !d->run)
        return GW_EINVAL;
    if (gw_registry_find(reg, d->name, len))
        return GW_EEXIST;
    if (reg->count >= MAX_RESOURCES)
        return GW_ENOSPC;

    /* The DESCRIBE-one bytes: measured (a writer without buffer only counts), then written to a
     * scratch buffer, then copied after the name behind their byte counts. */
    const struct gw_value *meta =
        d->meta && d->meta->type == GW_VALUE_MAP && d->meta->c.n ? d->meta : NULL;
    struct gw_pson_writer m;
    size_t ends[3];
    gw_pson_writer_init(&m, NULL, 0);
    encode_desc(d, meta, &m, ends);
    if (m.len > UINT32_MAX / 2)
        return GW_EINVAL;
    long kind = kind_get(reg, d->run, d->describe, d->owner);
    if (kind < 0)
        return GW_ENOSPC;
    uint8_t stackbuf[256];
    uint8_t *pson = m.len <= sizeof stackbuf ? stackbuf : gw_malloc(m.len);
    gw_pson_writer_init(&m, pson, m.len);
    encode_desc(d, meta, &m, ends);
    size_t in_len = ends[0], out_len = ends[1] - ends[0], meta_len = ends[2] - ends[1];
    unsigned bits = (unsigned)(d->fn - 1) | (d->params ? RB_PARAMS : 0) |
                    (d->not_streamable ? RB_NOT_STREAM : 0) | (d->in ? RB_HAS_IN : 0) |
                    (d->out ? RB_HAS_OUT : 0) | (meta ? RB_HAS_META : 0);
    if (d->in && d->out && in_len == out_len && memcmp(pson, pson + in_len, in_len) == 0)
        bits |= RB_OUT_IS_IN;
    uint8_t counts[4 * GW_VARINT_MAX];
    size_t nc = 0;
    if (bits & RB_HAS_IN)
        nc += gw_varint_encode(in_len, counts + nc);
    if ((bits & RB_HAS_OUT) && !(bits & RB_OUT_IS_IN))
        nc += gw_varint_encode(out_len, counts + nc);
    if (bits & RB_HAS_META) {
        nc += gw_varint_encode(meta_len, counts + nc);
        nc += gw_varint_encode(meta->c.n, counts + nc);
    }

    size_t size = offsetof(struct gw_res, name) + len + 1 + nc + m.len -
                  ((bits & RB_OUT_IS_IN) ? out_len : 0);
    struct gw_res *r = gw_malloc(size > sizeof *r ? size : sizeof *r);
    memset(r, 0, offsetof(struct gw_res, name));
    uint8_t *p = (uint8_t *)r->name;
    memcpy(p, d->name, len + 1);
    p += len + 1;
    memcpy(p, counts, nc);
    p += nc;
    memcpy(p, pson, in_len);
    p += in_len;
    if (!(bits & RB_OUT_IS_IN)) {
        memcpy(p, pson + in_len, out_len);
        p += out_len;
    }
    memcpy(p, pson + in_len + out_len, meta_len);
    if (pson != stackbuf)
        free(pson);

    r->id = id_for_name(d->name, len);
    while (gw_registry_find_id(reg, r->id)) { /* rare collision: probe */
        r->id = (r->id + 1) & 0x7fffffff ? (r->id + 1) & 0x7fffffff : 1;
        bits |= RB_MOVED;
    }
    r->tsb = bits;
    r->ctx = d->ctx;
    r->kind = (uint16_t)kind;
    r->refs = 1;
    reg->kinds[kind].uses++;
    if (bits & RB_MOVED) {
        if (reg->n_moved == reg->moved_cap) {
            reg->moved_cap = reg->moved_cap ? reg->moved_cap * 2 : 4;
            reg->moved = gw_realloc(reg->moved, reg->moved_cap * sizeof *reg->moved);
        }
        reg->moved[reg->n_moved++] = r;
    }
    if (reg->count == reg->all_cap) {
        reg->all_cap = reg->all_cap ? reg->all_cap * 2 : 64;
        reg->all = gw_realloc(reg->all, reg->all_cap * sizeof *reg->all);
    }
    reg->all[reg->count++] = r;
    if (reg->count * 2 > reg->cap)
        rebuild_table(reg, reg->cap * 2);
    else
        table_insert(reg, reg->count - 1);
    reg->dirty = true;
    if (id)
        *id = r->id;
    return 0;
}

void gw_registry_remove_owner(struct gw_registry *reg, void *owner)
{
    /* First every subscriber hears of it (the tables still hold everything), then the array and
     * the lists are compacted (keeping name order) and the registration's references dropped. */
    size_t n = reg->count, kept = 0;
    for (size_t i = 0; i < n; i++) {
        struct gw_res *r = reg->all[i];
        if (reg->kinds[r->kind].owner == owner && !(res_bits(r) & RB_REMOVED))
            res_removed(reg, r);
    }
    size_t moved_kept = 0;
    for (size_t i = 0; i < reg->n_moved; i++)
        if (!(res_bits(reg->moved[i]) & RB_REMOVED))
            reg->moved[moved_kept++] = reg->moved[i];
    reg->n_moved = moved_kept;
    for (size_t i = 0; i < n; i++) {
        struct gw_res *r = reg->all[i];
        if (res_bits(r) & RB_REMOVED)
            res_unref(r);
        else
            reg->all[kept++] = r;
    }
    if (kept == n)
        return;
    reg->count = kept;
    rebuild_table(reg, reg->cap);
}

size_t gw_registry_count(const struct gw_registry *reg)
{
    return reg->count;
}

static int cmp_res(const void *a, const void *b)
{
    const struct gw_res *x = *(struct gw_res *const *)a, *y = *(struct gw_res *const *)b;
    return strcmp(x->name, y->name); /* bytes as unsigned char, a prefix first */
}

/* Puts reg->all in name order (if it is not) and renumbers the slots. */
static void sort_all(struct gw_registry *reg)
{
    if (!reg->dirty)
        return;
    qsort(reg->all, reg->count, sizeof *reg->all, cmp_res);
    rebuild_table(reg, reg->cap);
    reg->dirty = false;
}

void gw_registry_foreach(struct gw_registry *reg, void (*fn)(void *arg, struct gw_res *res),
                         void *arg)
{
    sort_all(reg);
    for (size_t i = 0; i < reg->count; i++)
        fn(arg, reg->all[i]);
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
    return (enum gw_fn)((res_bits(res) & RB_FN) + 1);
}

bool gw_res_streamable(const struct gw_res *res)
{
    return !(res_bits(res) & RB_NOT_STREAM);
}

/* --- DESCRIBE --- */

void gw_registry_describe_all(struct gw_registry *reg, struct gw_pson_writer *w)
{
    sort_all(reg);
    gw_pson_put_map(w, reg->count);
    for (size_t i = 0; i < reg->count; i++) {
        const struct gw_res *r = reg->all[i];
        unsigned bits = res_bits(r);
        gw_pson_put_str(w, r->name, strlen(r->name));
        gw_pson_put_map(w, 2 + ((bits & RB_PARAMS) ? 1 : 0) + ((bits & RB_NOT_STREAM) ? 1 : 0));
        gw_pson_put_str(w, "fn", 2);
        gw_pson_put_uint(w, (uint64_t)(bits & RB_FN) + 1);
        gw_pson_put_str(w, "id", 2);
        gw_pson_put_uint(w, r->id);
        if (bits & RB_PARAMS) {
            gw_pson_put_str(w, "pr", 2);
            gw_pson_put_bool(w, true);
        }
        if (bits & RB_NOT_STREAM) {
            gw_pson_put_str(w, "st", 2);
            gw_pson_put_bool(w, false);
        }
    }
}

void gw_registry_describe_one(struct gw_registry *reg, struct gw_res *r, struct gw_pson_writer *w)
{
    enum gw_fn fn = gw_res_fn(r);
    bool has_in = fn == GW_FN_INPUT || fn == GW_FN_INOUT;
    bool has_out = fn == GW_FN_OUTPUT || fn == GW_FN_INOUT;
    struct res_desc d;
    res_desc(r, &d);
    struct gw_value extra = GW_VALUE_INIT_NULL;
    if (!(res_bits(r) & RB_REMOVED) && reg->kinds[r->kind].describe) {
        extra = gw_value_map();
        reg->kinds[r->kind].describe(r->ctx, &extra);
    }
    size_t n_extra = extra.type == GW_VALUE_MAP ? extra.c.n : 0;
    gw_pson_put_map(w, (has_in ? 1 : 0) + (has_out ? 1 : 0) + d.meta_n + n_extra);
    if (has_in) {
        gw_pson_put_str(w, "in", 2);
        if (d.in_len)
            gw_pson_put_raw(w, d.in, d.in_len);
        else
            gw_pson_put_null(w);
    }
    if (has_out) {
        struct gw_value last;
        gw_pson_put_str(w, "out", 3);
        if (last_view(r, &last))
            gw_value_encode(&last, w);
        else if (d.out_len)
            gw_pson_put_raw(w, d.out, d.out_len);
        else
            gw_pson_put_null(w);
    }
    if (d.meta_len)
        gw_pson_put_raw(w, d.meta, d.meta_len);
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
    if (res_bits(res) & RB_REMOVED) {
        gw_call_fail(c, GW_ERESOURCE, "resource \"%s\" was removed", res->name);
        return c;
    }
    int rc = reg->kinds[res->kind].run(res->ctx, c);
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
        res_set_bits(r, RB_STALE, 0);
    } else if (r) {
        last_set(r, v);
        r->tsb = (ts < TS_MAX ? ts : TS_MAX) << 16 | (res_bits(r) & ~RB_STALE);
        if (r->subs) {
            struct gw_value view;
            last_view(r, &view);
            for (struct gw_sub *s = r->subs, *n; s; s = n) {
                n = s->next; /* a subscriber may free itself */
                s->fn(s->arg, r, &view);
            }
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

/*
 * 24 bytes an entry, not a whole gw_value (64): scalars inline, strings and containers boxed.
 * A Modbus poll of 100 points fills one batch per second per connection, allocated on the worker
 * and freed on the loop; a smaller one touches fewer heap pages in flight.
 */
struct batch_entry {
    uint32_t id;
    uint8_t type1;              /* value type + 1; 0 = a stale mark */
    uint64_t ts;
    union res_last v;           /* as a resource's last value: scalars inline, others boxed */
};

/* Takes *v into e. */
static void entry_put(struct batch_entry *e, struct gw_value *v)
{
    e->type1 = (uint8_t)(v->type + 1);
    slot_store(&e->v, v);
}

/* Takes e's value out (e is left without one). */
static struct gw_value entry_take(struct batch_entry *e)
{
    struct gw_value v = GW_VALUE_INIT_NULL;
    if (e->type1) {
        enum gw_value_type t = (enum gw_value_type)(e->type1 - 1);
        slot_view(&e->v, t, &v);
        if (type_is_boxed(t))
            free(e->v.box); /* its contents are v's now */
    }
    e->type1 = 0;
    return v;
}

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
    for (size_t i = 0; i < b->n; i++) {
        struct gw_value v = entry_take(&b->e[i]);
        gw_value_fini(&v);
    }
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
    *e = (struct batch_entry){.id = id, .ts = ts_ms};
    entry_put(e, v);
}

void gw_publish_batch_add_stale(struct gw_publish_batch *b, uint32_t id)
{
    *batch_slot(b) = (struct batch_entry){.id = id, .type1 = 0};
}

size_t gw_publish_batch_count(const struct gw_publish_batch *b)
{
    return b->n;
}

static void batch_task(void *arg)
{
    struct gw_publish_batch *b = arg;
    for (size_t i = 0; i < b->n; i++) {
        bool stale_only = b->e[i].type1 == 0;
        struct gw_value v = entry_take(&b->e[i]);
        apply_publish(b->reg, b->e[i].id, &v, b->e[i].ts, stale_only);
    }
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

bool gw_res_last(const struct gw_res *res, struct gw_value *view, uint64_t *ts_ms, bool *stale)
{
    if (ts_ms)
        *ts_ms = res->tsb >> 16;
    if (stale)
        *stale = res_bits(res) & RB_STALE;
    struct gw_value scratch;
    return last_view(res, view ? view : &scratch);
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
