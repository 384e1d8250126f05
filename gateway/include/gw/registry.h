/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The resource registry: every point an adapter offers, by name and by a stable numeric id, with
 * its DESCRIBE information, its last known value, and asynchronous calls into it.
 *
 * Threads: everything runs on the loop thread, except gw_call_reply(), gw_call_fail() and
 * gw_registry_publish(), which any thread may call (adapters with blocking libraries answer from
 * their worker threads); their effects are delivered on the loop thread through gw_loop_post().
 *
 * Numeric ids (PROTOCOL.md decision 14.12): id = FNV-1a-32 of the name, masked to 31 bits, plus
 * linear probing in registration order on a collision. An id therefore depends only on the name
 * (and, for the rare colliding pair, on their order in the config), so it is stable across restarts
 * and across unrelated config changes; DESCRIBE reports it as "id".
 */
#ifndef GW_REGISTRY_H
#define GW_REGISTRY_H

#include "gw/pson.h"
#include "gw/value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_loop;
struct gw_registry;
struct gw_res;
struct gw_call;
struct gw_sub;

/* DESCRIBE "fn" kinds (PROTOCOL.md 5.6). */
enum gw_fn {
    GW_FN_RUN = 1,    /* no input, no output (an action) */
    GW_FN_INPUT = 2,  /* input only */
    GW_FN_OUTPUT = 3, /* output only (a reading) */
    GW_FN_INOUT = 4,  /* input and output (a write that answers with the value read back) */
};

/*
 * Starts a call. The resource answers exactly once, later or at once, from any thread, with
 * gw_call_reply() or gw_call_fail(). Alternatively it returns a negative GW_E... code and does not
 * answer: the call then fails with that code. It must never block the loop thread.
 */
typedef int (*gw_run_fn)(void *ctx, struct gw_call *call);

/*
 * Optional: adds the extra DESCRIBE-one keys (unit, min, ...) to meta (an empty map) when a
 * DESCRIBE-one asks, on the loop thread, instead of a copy kept per resource. Called only while the
 * resource is registered (ctx is the resource's run context).
 */
typedef void (*gw_describe_fn)(void *ctx, struct gw_value *meta);

struct gw_resource_desc {
    const char *name;               /* "modbus/plc1/temperature" (copied) */
    enum gw_fn fn;
    bool params;                    /* DESCRIBE "pr": requires parameters (default false) */
    bool not_streamable;            /* DESCRIBE "st": false (default: streamable) */
    const struct gw_value *in;      /* DESCRIBE-one "in" sample, or NULL (copied) */
    const struct gw_value *out;     /* DESCRIBE-one "out" sample, or NULL (copied) */
    const struct gw_value *meta;    /* extra DESCRIBE-one keys (unit, min, ...), a map or NULL
                                       (copied; kept compactly as PSON) */
    gw_describe_fn describe;        /* or NULL: builds the extra keys on demand (after meta's) */
    gw_run_fn run;
    void *ctx;                      /* passed to run (borrowed) */
    void *owner;                    /* who registered it (adapter instance), for removal */
};

int gw_registry_new(struct gw_loop *loop, struct gw_registry **out);
/* Frees the registry. Calls still running in adapters are cancelled (their answers dropped). */
void gw_registry_free(struct gw_registry *reg);

/* Adds a resource. Returns 0 and its id in *id (may be NULL); GW_EEXIST for a duplicate name,
 * GW_EINVAL for an empty name or a name the protocol cannot carry (longer than 1024 bytes),
 * GW_ENOSPC beyond 16,777,215 resources or 65,536 distinct (run, describe, owner) triples. */
int gw_registry_add(struct gw_registry *reg, const struct gw_resource_desc *desc, uint32_t *id);
/* Removes every resource of owner (on adapter stop/reload); their calls and streams end. */
void gw_registry_remove_owner(struct gw_registry *reg, void *owner);

size_t gw_registry_count(const struct gw_registry *reg);
struct gw_res *gw_registry_find(struct gw_registry *reg, const char *name, size_t len);
struct gw_res *gw_registry_find_id(struct gw_registry *reg, uint32_t id);
/* Calls fn for each resource in name order. */
void gw_registry_foreach(struct gw_registry *reg, void (*fn)(void *arg, struct gw_res *res),
                         void *arg);

const char *gw_res_name(const struct gw_res *res);
uint32_t gw_res_id(const struct gw_res *res);
enum gw_fn gw_res_fn(const struct gw_res *res);
bool gw_res_streamable(const struct gw_res *res);

/*
 * DESCRIBE all: writes the map name → {"fn":..,"id":..[,"pr":true][,"st":false]} straight to w.
 * DESCRIBE one: {"in":..,"out":.., meta keys...} from the configured samples and the last known
 * value (and the describe callback's keys); never calls the resource (decision 14.15).
 */
void gw_registry_describe_all(struct gw_registry *reg, struct gw_pson_writer *w);
void gw_registry_describe_one(struct gw_registry *reg, struct gw_res *res,
                              struct gw_pson_writer *w);

/* --- Calls --- */

/*
 * Called on the loop thread when a call ends: rc 0 with out (borrowed for the callback; may be
 * NULL = no payload), or rc < 0 with msg (a human-readable reason, borrowed).
 */
typedef void (*gw_call_done_fn)(void *arg, int rc, const struct gw_value *out, const char *msg);

/*
 * Runs res with input and params (both taken; NULL = none) and reports through done, always later
 * on the loop thread (never from inside this function, even when the resource answers at once).
 * The handle stays valid until done has run or gw_call_cancel() was called.
 */
struct gw_call *gw_registry_call(struct gw_registry *reg, struct gw_res *res,
                                 struct gw_value *input, struct gw_value *params,
                                 gw_call_done_fn done, void *arg);
/* The requester no longer wants the answer (link dropped, timeout): done will not run. */
void gw_call_cancel(struct gw_call *call);

/* For resources: the call's input and parameters (null values when absent), its resource. */
const struct gw_value *gw_call_input(const struct gw_call *call);
const struct gw_value *gw_call_params(const struct gw_call *call);
struct gw_res *gw_call_res(const struct gw_call *call);
/* Answers a call (any thread). out is taken (NULL = no payload). Exactly once per call. */
void gw_call_reply(struct gw_call *call, struct gw_value *out);
void gw_call_fail(struct gw_call *call, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- Values and change notification --- */

/* New value for resource id (taken), with the wall-clock time it was read. Any thread. The
 * registry caches it as the last known value and notifies subscribers on the loop thread. */
void gw_registry_publish(struct gw_registry *reg, uint32_t id, struct gw_value *v, uint64_t ts_ms);
/* Marks the last value stale (device unreachable); subscribers are not notified. Any thread. */
void gw_registry_mark_stale(struct gw_registry *reg, uint32_t id);
/*
 * Batched publishing for workers that produce many values at once (a Modbus poll): values are
 * added to a batch on the worker (no lock, no allocation per value beyond the value itself) and
 * handed to the loop thread as ONE posted task, instead of one task per value. A batch belongs to
 * one thread at a time; gw_registry_publish_batch() empties it for reuse.
 */
struct gw_publish_batch;
struct gw_publish_batch *gw_publish_batch_new(void);
void gw_publish_batch_free(struct gw_publish_batch *b);
/* Adds a new value for id (v taken) with its read time, or a stale mark for id. */
void gw_publish_batch_add(struct gw_publish_batch *b, uint32_t id, struct gw_value *v,
                          uint64_t ts_ms);
void gw_publish_batch_add_stale(struct gw_publish_batch *b, uint32_t id);
size_t gw_publish_batch_count(const struct gw_publish_batch *b);
/* Any thread: delivers everything in b, in order, on the loop thread; b is left empty. */
void gw_registry_publish_batch(struct gw_registry *reg, struct gw_publish_batch *b);

/*
 * Last known value: true if res has one (false: *view is null). *view (may be NULL) is filled
 * with a shallow view of it: borrowed, valid on the loop thread until the next publish to res or
 * its removal; never gw_value_fini() it (gw_value_copy() to keep it). *ts_ms gets its time (kept
 * to 48 bits of milliseconds; 0 if none yet), *stale whether it was marked stale since.
 */
bool gw_res_last(const struct gw_res *res, struct gw_value *view, uint64_t *ts_ms, bool *stale);

/*
 * Lifetime of a struct gw_res pointer: valid until the resource is removed (adapter stop or
 * reload). Code that keeps one across loop iterations either holds a subscription, which keeps the
 * resource allocated and reports its removal, or keeps the id and looks it up again. A call into a
 * removed resource fails with GW_ERESOURCE.
 */
typedef void (*gw_sub_fn)(void *arg, struct gw_res *res, const struct gw_value *v);
/* Calls fn on the loop thread after every publish to res (for event streams), and once with
 * v == NULL when res is removed (the subscriber should then gw_sub_free). v is borrowed for the
 * call only (gw_res_last() gives the same value later). */
struct gw_sub *gw_res_subscribe(struct gw_res *res, gw_sub_fn fn, void *arg);
void gw_sub_free(struct gw_sub *sub);

/* --- Statistics --- */

#define GW_REGISTRY_LAT_BUCKETS 10
/* Upper bounds of the latency buckets in microseconds (the last is +Inf). */
extern const uint64_t gw_registry_lat_bounds_us[GW_REGISTRY_LAT_BUCKETS];

struct gw_registry_outcome {
    uint64_t count;
    uint64_t sum_us;                              /* total latency */
    uint64_t buckets[GW_REGISTRY_LAT_BUCKETS];    /* cumulative: calls at or below bound i */
};

struct gw_registry_stats {
    struct gw_registry_outcome ok, failed;        /* calls that ended (cancelled ones included) */
    uint64_t cancelled;
    uint64_t publishes;
    size_t resources;
};

void gw_registry_get_stats(const struct gw_registry *reg, struct gw_registry_stats *out);

#endif
