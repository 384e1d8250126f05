/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Modbus adapter proper (see modbus.h): config parsing and checking, resources, and a pool of
 * worker threads that serve the connections, one thread at a time per connection (see mb_pool).
 *
 * Worker model. Each connection has jobs, one per (device, poll group) that has points; a job
 * holds the minimal read plan of its points (gw_modbus_plan_build with the device's limits), a
 * buffer for the replies and its next due time on the monotonic clock. The worker loop, in order:
 * queued operations from the loop thread (writes, on-demand reads; they jump the schedule), then
 * the due job of a healthy device with the earliest due time, then, only if the bus is idle long
 * enough before the next healthy job (the suspect's timeout fits), a job of a suspect or
 * quarantined device. So one request is in flight per connection, and a dead unit costs healthy
 * units nothing once it is suspect. A cycle in which a device does not answer (timeout after
 * retries) counts against it; `quarantine_after` such cycles quarantine it with exponential
 * back-off (its points are marked stale; calls to it fail at once); a successful probe lifts it.
 * A Modbus exception is an answer (the device lives): it marks the points of that request stale
 * and, if the request bridged a gap, the job falls back to gap 0 (the gap may hold unimplemented
 * registers). A lost link (TCP reset, serial error) closes the context and reconnects with
 * back-off, marking every point stale. A bad CRC or mismatched reply is counted, flushed and
 * retried, never decoded.
 *
 * Only the thread serving a connection touches its modbus_t/mbtcp client, its jobs and the
 * per-point publishing state; the loop thread hands it operations through a mutex-protected
 * queue and gets answers through gw_call_reply/gw_call_fail and values through
 * gw_registry_publish/_mark_stale.
 * The worker records how late each scheduled poll starts (modbus_late.h); `_stats/<connection>`
 * reports its p50/p99/max and the missed deadlines.
 */
#include "modbus_adapter.h"
#include "modbus_late.h"
#include "mbtcp.h"

#include "modbus_map.h"
#include "modbus_plan.h"

#include "gw/error.h"
#include "gw/log.h"
#include "gw/mem.h"

#include <errno.h>
#include <math.h>
#include <modbus.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

/* JSON Pointers and messages are built with snprintf into fixed buffers; a pointer into a
 * pathological config may be cut short in a message, which is harmless. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define MB_DEFAULT_INTERVAL_MS 1000
#define MB_PTR 160
#define MB_ERR 256
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define MB_STACK_SIZE (2u << 20)
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define MB_STACK_SIZE (2u << 20)
#endif
#endif
#ifndef MB_STACK_SIZE
#define MB_STACK_SIZE (256u << 10)
#endif

struct mb_inst;
struct mb_conn;
struct mb_device;

struct mb_group {
    char *name;
    uint64_t interval_ms;
};

/* A point with a deadband: the band and the last value published. */
struct mb_band {
    double band;
    bool has_last;
    struct gw_value last;
};

/*
 * One configured point: 96 bytes, there may be 100,000 of them. Its names live in the instance's
 * string arena (strings_add): p.name is the resource name "<instance>/<point>", the point name
 * starts name_off bytes into it.
 */
struct mb_point {
    struct gw_modbus_point p;
    const char *unit_text;      /* engineering unit, or NULL */
    struct mb_device *dev;
    struct mb_band *band;       /* NULL without a deadband */
    uint32_t id;                /* registry id */
    uint16_t group;
    uint8_t name_off;
    bool stale;                 /* worker-only publishing state */
};

_Static_assert(sizeof(void *) != 8 || sizeof(struct mb_point) <= 88,
               "struct mb_point grew: one per configured point, keep it small");

static const char *pt_name(const struct mb_point *pt)
{
    return pt->p.name + pt->name_off;
}

struct mb_job {
    struct mb_device *dev;
    size_t group;
    struct mb_point **pts;
    size_t npts;
    struct gw_modbus_plan plan;
    size_t *req_off;            /* offset of each request in buf16 / buf8 */
    uint16_t *buf16;
    uint8_t *buf8;
    bool gap_fallback;          /* planned with gap 0 after an exception */
    bool own_pts;               /* pts is its own array (else the device's: one poll group) */
    bool first;                 /* the first poll (at start) has not run yet */
    uint64_t phase_us;          /* added to the second due time (see conn_schedule_start) */
    uint64_t due;               /* next due time, monotonic microseconds */
};

struct mb_device {
    char *name;
    char *res_name;
    uint8_t unit;
    struct mb_conn *conn;
    struct gw_modbus_plan_limits lim;
    unsigned timeout_ms, retries, delay_ms, pause_ms;
    unsigned quarantine_after;
    uint64_t quarantine_max_ms;
    struct mb_point **pts;
    size_t npts;
    uint32_t id;
    /* worker-only */
    unsigned fails;             /* consecutive failed cycles */
    bool quarantined;
    uint64_t q_until, backoff_ms;
    unsigned seen_gen;          /* connect generation of its last request (pause after connect) */
    /* counters (written by the worker, read anywhere) */
    atomic_ulong n_requests, n_timeouts, n_exceptions, n_crc, n_quarantines;
};

enum mb_op_kind { OP_READ_POINT, OP_WRITE_POINT, OP_READ_DEVICE, OP_STATS };

struct mb_op {
    enum mb_op_kind kind;
    struct mb_point *pt;
    struct mb_device *dev;
    struct gw_value in;
    struct gw_call *call;
    struct mb_op *next;
};

/*
 * Backlog bound for values handed to the loop thread: every publish is a task posted to the loop,
 * and a loop slower than the bus must not let that queue grow without limit. After each job that
 * published, the worker posts a marker; it waits while more than MB_MAX_BATCHES markers are
 * outstanding. The pacer is reference-counted because markers may run after the adapter is gone.
 */
#define MB_MAX_BATCHES 64

struct mb_pacer {
    atomic_int refs;
    atomic_int pending;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

struct mb_conn {
    struct mb_inst *inst;
    struct mb_pacer *pacer;
    struct gw_publish_batch *batch; /* worker: values of the current job, handed over at once */
    unsigned posted;            /* worker: values posted since the last marker */
    char *name;
    bool rtu;
    char *host, *port;          /* TCP */
    char *device;               /* RTU */
    int baud, data_bits, stop_bits;
    char parity;
    int serial_mode, rts, rts_delay_us;
    unsigned byte_timeout_ms;
    uint64_t reconnect_ms, reconnect_max_ms;
    struct mb_device **devs;
    size_t ndevs;
    struct mb_job *jobs;
    size_t njobs;
    uint32_t stats_id;
    /* worker */
    modbus_t *mb;               /* RTU: libmodbus context */
    struct gw_mbtcp *tcp;       /* TCP: our poll()-based client (mbtcp.h) */
    bool connected;
    unsigned gen;
    uint64_t next_connect, cur_reconnect;
    bool down_logged;
    /* pool (under mb_pool.mu) */
    struct mb_op *head, *tail;  /* operations from the loop thread */
    uint64_t wake_us;           /* when it next needs a thread (monotonic us; 0 = now) */
    size_t heap_i;              /* position in the pool's heap, MB_NOT_QUEUED while a thread runs it */
    atomic_ulong n_requests, n_link_losses, n_connects, n_crc;
    struct gw_modbus_late late; /* worker-only (read by OP_STATS on the worker) */
};

/*
 * The worker pool of an instance: connections that are not being served wait in a min-heap keyed
 * by the time they next need a thread (their earliest due job, a reconnect, or now for a queued
 * operation). A pool thread takes the top connection when it is due, runs one step of it (one
 * operation, or one job with its requests; blocking I/O as before), computes its next wake time
 * and puts it back. So one request is in flight per connection, as with a thread per connection,
 * but the threads number what is in flight at once, not the connections.
 *
 * One idle thread, the watcher, sleeps until the top connection is due. When it takes work, the
 * most recently idle thread becomes the watcher, or, if none is idle, a new thread starts (up to
 * one per connection, the old worst case: a thousand dead devices that each block for their
 * timeout still each get a thread). Idle threads are woken last-in first-out, so a steady load
 * keeps reusing the same few and the others leave after MB_POOL_IDLE_MS. Measured with
 * 1,000 connections to a fast local server: the threads stay in single digits, where a thread
 * per connection cost 1,000 stacks and up to 16 malloc arenas (~21 MiB of RSS).
 */
#define MB_NOT_QUEUED SIZE_MAX
#define MB_POOL_IDLE_MS 10000u

struct mb_waiter;

struct mb_pool {
    pthread_mutex_t mu;
    pthread_cond_t gone;        /* the last thread has left (stop) */
    struct mb_conn **heap;      /* connections waiting, by wake_us */
    size_t nheap;
    unsigned threads, max_threads, peak_threads;
    unsigned blocked;           /* threads blocked in I/O, a delay or the pacer */
    unsigned ncpu;
    bool starting;              /* a thread was created and has not yet run */
    struct mb_waiter *watcher;  /* the idle thread that waits for heap[0]'s time, or NULL */
    struct mb_waiter *idle_stack; /* the other idle threads, most recent first */
    bool stop;
};

/* Strings that live as long as the instance (point names, units), packed in 64 KiB chunks: one
 * malloc per point name cost a 32-byte chunk for a name of ten. */
struct mb_chunk {
    struct mb_chunk *next;
    size_t used, cap;
    char data[];
};

struct mb_inst {
    struct gw_host host;
    struct mb_pool pool;
    struct mb_chunk *strings;
    char *name;
    struct mb_group *groups;
    size_t ngroups;
    struct mb_conn *conns;
    size_t nconns;
    struct mb_device *devs;     /* all devices, owned */
    size_t ndevs;
    struct mb_point *pts;       /* all points, owned */
    size_t npts;
    bool started;
};

/* --- Small helpers --- */

static char *strings_add(struct mb_inst *in, const char *a, const char *b)
{
    size_t la = strlen(a), lb = b ? strlen(b) : 0, need = la + (b ? 1 + lb : 0) + 1;
    struct mb_chunk *c = in->strings;
    if (!c || c->cap - c->used < need) {
        size_t cap = need > 65536 - sizeof *c ? need : 65536 - sizeof *c;
        c = gw_malloc(sizeof *c + cap);
        c->next = in->strings;
        c->used = 0;
        c->cap = cap;
        in->strings = c;
    }
    char *s = c->data + c->used;
    memcpy(s, a, la);
    if (b) {
        s[la] = '/';
        memcpy(s + la + 1, b, lb);
    }
    s[need - 1] = '\0';
    c->used += need;
    return s;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = gw_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Modicon-style name of an address range: "holding 40010+2", "coil 00001". */
static void range_text(char *buf, size_t len, enum gw_modbus_table t, uint16_t start,
                       uint16_t count)
{
    static const char digit[] = {'0', '1', '3', '4'};
    unsigned a = (unsigned)start + 1;
    if (a <= 9999)
        snprintf(buf, len, "%s %c%04u", gw_modbus_table_name(t), digit[t], a);
    else
        snprintf(buf, len, "%s %c%05u", gw_modbus_table_name(t), digit[t], a);
    if (count > 1) {
        size_t n = strlen(buf);
        snprintf(buf + n, len - n, "+%u", (unsigned)count);
    }
}

static const char *exception_name(int code)
{
    switch (code) {
    case 1: return "illegal function";
    case 2: return "illegal data address";
    case 3: return "illegal data value";
    case 4: return "server device failure";
    case 5: return "acknowledge";
    case 6: return "server device busy";
    case 7: return "negative acknowledge";
    case 8: return "memory parity error";
    case 10: return "gateway path unavailable";
    case 11: return "gateway target device failed to respond";
    default: return "unknown exception";
    }
}

/* --- Config reading --- */

struct cfg {
    const struct gw_host *host;
    int errors;
};

static void cfg_err(struct cfg *c, const char *ptr, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void cfg_err(struct cfg *c, const char *ptr, const char *fmt, ...)
{
    char msg[MB_ERR];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->errors++;
    if (c->host->config_error)
        c->host->config_error(c->host, ptr, "%s", msg);
}

static const struct gw_value *cfg_get(const struct gw_value *map, const char *key)
{
    const struct gw_value *v = gw_value_map_get(map, key);
    return v && v->type != GW_VALUE_NULL ? v : NULL;
}

static size_t cfg_count(const struct gw_value *v)
{
    return v ? gw_value_count(v) : 0;
}

static const char *cfg_str(const struct gw_value *map, const char *key, const char *def)
{
    const struct gw_value *v = cfg_get(map, key);
    return v && v->type == GW_VALUE_STRING ? v->s.p : def;
}

/* An integer member in min..max (shape is the schema's job; this checks and converts). */
static uint64_t cfg_uint(struct cfg *c, const struct gw_value *map, const char *base,
                         const char *key, uint64_t def, uint64_t min, uint64_t max)
{
    const struct gw_value *v = cfg_get(map, key);
    if (!v)
        return def;
    double d;
    if (gw_value_to_double(v, &d) != 0 || d != floor(d) || d < (double)min || d > (double)max) {
        char ptr[MB_PTR];
        snprintf(ptr, sizeof ptr, "%s/%s", base, key);
        cfg_err(c, ptr, "%s must be an integer in %llu .. %llu", key, (unsigned long long)min,
                (unsigned long long)max);
        return def;
    }
    return (uint64_t)d;
}

static bool cfg_num(struct cfg *c, const struct gw_value *map, const char *base, const char *key,
                    double *out)
{
    const struct gw_value *v = cfg_get(map, key);
    if (!v)
        return false;
    if (gw_value_to_double(v, out) != 0 || !isfinite(*out)) {
        char ptr[MB_PTR];
        snprintf(ptr, sizeof ptr, "%s/%s", base, key);
        cfg_err(c, ptr, "%s must be a finite number", key);
        return false;
    }
    return true;
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || ch == '.'))
            return false;
    }
    return true;
}

static bool points_overlap(const struct mb_point *a, const struct mb_point *b)
{
    if (a->p.table != b->p.table)
        return false;
    unsigned a0 = a->p.address, a1 = a0 + gw_modbus_point_width(&a->p);
    unsigned b0 = b->p.address, b1 = b0 + gw_modbus_point_width(&b->p);
    if (a1 <= b0 || b1 <= a0)
        return false;
    if (a->p.type == GW_MODBUS_TYPE_BIT && b->p.type == GW_MODBUS_TYPE_BIT)
        return a->p.bit == b->p.bit;
    return true;
}

static void parse_point(struct cfg *c, struct mb_inst *in, struct mb_device *dev,
                        const struct gw_value *pv, const char *base, unsigned addr_base,
                        struct mb_point *pt)
{
    char ptr[MB_PTR], err[MB_ERR];
    memset(pt, 0, sizeof *pt);
    gw_modbus_point_init(&pt->p);
    pt->dev = dev;
    const char *name = cfg_str(pv, "name", "");
    snprintf(ptr, sizeof ptr, "%s/name", base);
    if (!name_ok(name))
        cfg_err(c, ptr, "point name \"%s\" must be 1 to 64 of A-Z a-z 0-9 _ . -", name);
    pt->p.name = strings_add(in, in->name, name);
    pt->name_off = (uint8_t)(strlen(in->name) + 1);

    int table = -1;
    const char *tname = cfg_str(pv, "table", NULL);
    if (tname) {
        enum gw_modbus_table t;
        snprintf(ptr, sizeof ptr, "%s/table", base);
        if (gw_modbus_table_parse(tname, &t, err, sizeof err) != 0)
            cfg_err(c, ptr, "%s", err);
        else
            table = (int)t;
    }
    const struct gw_value *av = cfg_get(pv, "address");
    snprintf(ptr, sizeof ptr, "%s/address", base);
    char abuf[32];
    const char *atext = NULL;
    if (av && av->type == GW_VALUE_STRING) {
        atext = av->s.p;
    } else if (av) {
        double d = -1;
        gw_value_to_double(av, &d);
        if (d < 0 || d != floor(d) || d > 1e7)
            cfg_err(c, ptr, "address must be a non-negative integer or a string");
        else
            snprintf(abuf, sizeof abuf, "%.0f", d);
        atext = abuf;
    } else {
        cfg_err(c, ptr, "address is required");
    }
    if (atext && (tname == NULL || table >= 0)) {
        uint16_t a;
        if (gw_modbus_address_parse(atext, (int)addr_base, &table, &a, err, sizeof err) != 0)
            cfg_err(c, ptr, "%s", err);
        else
            pt->p.address = a;
    }
    if (table >= 0)
        pt->p.table = (enum gw_modbus_table)table;

    const char *type = cfg_str(pv, "type", NULL);
    if (type) {
        snprintf(ptr, sizeof ptr, "%s/type", base);
        if (gw_modbus_type_parse(type, &pt->p.type, err, sizeof err) != 0)
            cfg_err(c, ptr, "%s", err);
    } else if (gw_modbus_table_is_bits(pt->p.table)) {
        pt->p.type = GW_MODBUS_TYPE_BOOL;
    }
    const char *order = cfg_str(pv, "order", NULL);
    if (order) {
        snprintf(ptr, sizeof ptr, "%s/order", base);
        if (gw_modbus_order_parse(order, &pt->p.order, err, sizeof err) != 0)
            cfg_err(c, ptr, "%s", err);
    }
    pt->p.count = (uint16_t)cfg_uint(c, pv, base, "count",
                                     pt->p.type == GW_MODBUS_TYPE_STRING ? 1 : 0, 0,
                                     GW_MODBUS_MAX_STRING_REGS);
    pt->p.bit = (uint8_t)cfg_uint(c, pv, base, "bit", 0, 0, 15);
    cfg_num(c, pv, base, "scale", &pt->p.scale);
    cfg_num(c, pv, base, "offset", &pt->p.offset);
    pt->p.has_min = cfg_num(c, pv, base, "min", &pt->p.min);
    pt->p.has_max = cfg_num(c, pv, base, "max", &pt->p.max);
    double band;
    if (cfg_num(c, pv, base, "deadband", &band)) {
        pt->band = gw_calloc(1, sizeof *pt->band);
        pt->band->band = band;
        if (band < 0) {
            snprintf(ptr, sizeof ptr, "%s/deadband", base);
            cfg_err(c, ptr, "deadband must be >= 0");
        }
    }
    const char *access = cfg_str(pv, "access", "read");
    pt->p.access = strcmp(access, "read") == 0 ? GW_MODBUS_ACCESS_READ
                                               : GW_MODBUS_ACCESS_READ_WRITE;
    const char *u = cfg_str(pv, "unit", NULL);
    pt->unit_text = u ? strings_add(in, u, NULL) : NULL;

    const char *grp = cfg_str(pv, "poll_group", "default");
    pt->group = (uint16_t)in->ngroups;
    for (size_t g = 0; g < in->ngroups; g++)
        if (strcmp(in->groups[g].name, grp) == 0)
            pt->group = (uint16_t)g;
    if (pt->group == in->ngroups) {
        snprintf(ptr, sizeof ptr, "%s/poll_group", base);
        cfg_err(c, ptr, "unknown poll group \"%s\"", grp);
        pt->group = 0;
    }
    if (c->errors == 0 && gw_modbus_point_check(&pt->p, err, sizeof err) != 0)
        cfg_err(c, base, "%s", err);
}

static void parse_device(struct cfg *c, struct mb_inst *in, struct mb_conn *conn,
                         const struct gw_value *dv, const char *base, struct mb_device *dev,
                         size_t *npts)
{
    char ptr[MB_PTR];
    dev->conn = conn;
    const char *name = cfg_str(dv, "name", "");
    if (!name_ok(name)) {
        snprintf(ptr, sizeof ptr, "%s/name", base);
        cfg_err(c, ptr, "device name \"%s\" must be 1 to 64 of A-Z a-z 0-9 _ . -", name);
    }
    dev->name = gw_strdup(name);
    dev->res_name = xasprintf("%s/%s", in->name, name);
    dev->unit = (uint8_t)cfg_uint(c, dv, base, "unit", 1, 0, 255);
    dev->lim.max_regs = (uint16_t)cfg_uint(c, dv, base, "max_registers", 125, 1, 125);
    dev->lim.max_bits = (uint16_t)cfg_uint(c, dv, base, "max_bits", 2000, 1, 2000);
    dev->lim.gap_regs = (uint16_t)cfg_uint(c, dv, base, "gap_registers", 0, 0, 124);
    dev->lim.gap_bits = (uint16_t)cfg_uint(c, dv, base, "gap_bits", 0, 0, 1999);
    dev->timeout_ms = (unsigned)cfg_uint(c, dv, base, "timeout_ms", 500, 1, 60000);
    dev->retries = (unsigned)cfg_uint(c, dv, base, "retries", 1, 0, 10);
    dev->delay_ms = (unsigned)cfg_uint(c, dv, base, "delay_ms", 0, 0, 10000);
    dev->pause_ms = (unsigned)cfg_uint(c, dv, base, "pause_after_connect_ms", 0, 0, 60000);
    dev->quarantine_after = (unsigned)cfg_uint(c, dv, base, "quarantine_after", 3, 1, 1000);
    dev->quarantine_max_ms = cfg_uint(c, dv, base, "quarantine_max_ms", 60000, 100, 86400000);
    unsigned addr_base = (unsigned)cfg_uint(c, dv, base, "address_base", 0, 0, 1);

    const struct gw_value *pts = cfg_get(dv, "points");
    size_t n = cfg_count(pts);
    if (!pts || pts->type != GW_VALUE_ARRAY || n == 0) {
        snprintf(ptr, sizeof ptr, "%s/points", base);
        cfg_err(c, ptr, "a device needs at least one point");
        return;
    }
    dev->pts = gw_calloc(n, sizeof *dev->pts);
    for (size_t i = 0; i < n; i++) {
        char pbase[MB_PTR];
        snprintf(pbase, sizeof pbase, "%s/points/%zu", base, i);
        struct mb_point *pt = &in->pts[(*npts)++];
        int before = c->errors;
        parse_point(c, in, dev, &pts->c.items[i], pbase, addr_base, pt);
        dev->pts[dev->npts++] = pt;
        if (c->errors != before)
            continue;
        for (size_t j = 0; j + 1 < dev->npts; j++) {
            if (points_overlap(dev->pts[j], pt)) {
                char r[48];
                range_text(r, sizeof r, pt->p.table, pt->p.address,
                           (uint16_t)gw_modbus_point_width(&pt->p));
                cfg_err(c, pbase, "point \"%s\" (%s) overlaps point \"%s\" of device \"%s\"",
                        pt_name(pt), r, pt_name(dev->pts[j]), dev->name);
                break;
            }
        }
    }
}

static void parse_conn(struct cfg *c, struct mb_inst *in, const struct gw_value *cv,
                       const char *base, struct mb_conn *conn, size_t *ndevs, size_t *npts)
{
    char ptr[MB_PTR];
    conn->inst = in;
    const char *name = cfg_str(cv, "name", NULL);
    conn->name = name ? gw_strdup(name) : xasprintf("bus%zu", (size_t)(conn - in->conns));
    if (!name_ok(conn->name)) {
        snprintf(ptr, sizeof ptr, "%s/name", base);
        cfg_err(c, ptr, "connection name \"%s\" must be 1 to 64 of A-Z a-z 0-9 _ . -",
                conn->name);
    }
    const struct gw_value *tcp = cfg_get(cv, "tcp"), *rtu = cfg_get(cv, "rtu");
    if ((tcp == NULL) == (rtu == NULL)) {
        cfg_err(c, base, "a connection needs exactly one of \"tcp\" and \"rtu\"");
    } else if (tcp) {
        char b[MB_PTR];
        snprintf(b, sizeof b, "%s/tcp", base);
        conn->host = gw_strdup(cfg_str(tcp, "host", "127.0.0.1"));
        conn->port = xasprintf("%u", (unsigned)cfg_uint(c, tcp, b, "port", 502, 1, 65535));
    } else {
        char b[MB_PTR];
        snprintf(b, sizeof b, "%s/rtu", base);
        conn->rtu = true;
        conn->device = gw_strdup(cfg_str(rtu, "device", ""));
        if (conn->device[0] == 0) {
            snprintf(ptr, sizeof ptr, "%s/device", b);
            cfg_err(c, ptr, "device is required");
        }
        conn->baud = (int)cfg_uint(c, rtu, b, "baud", 9600, 50, 4000000);
        const char *par = cfg_str(rtu, "parity", "none");
        conn->parity = strcmp(par, "even") == 0 ? 'E' : strcmp(par, "odd") == 0 ? 'O' : 'N';
        conn->data_bits = (int)cfg_uint(c, rtu, b, "data_bits", 8, 5, 8);
        conn->stop_bits = (int)cfg_uint(c, rtu, b, "stop_bits", 1, 1, 2);
        conn->serial_mode = strcmp(cfg_str(rtu, "serial_mode", "rs232"), "rs485") == 0
                                ? MODBUS_RTU_RS485 : MODBUS_RTU_RS232;
        const char *rts = cfg_str(rtu, "rts", "none");
        conn->rts = strcmp(rts, "up") == 0     ? MODBUS_RTU_RTS_UP
                    : strcmp(rts, "down") == 0 ? MODBUS_RTU_RTS_DOWN
                                               : MODBUS_RTU_RTS_NONE;
        conn->rts_delay_us = (int)cfg_uint(c, rtu, b, "rts_delay_us", 0, 0, 1000000);
        conn->byte_timeout_ms = (unsigned)cfg_uint(c, rtu, b, "byte_timeout_ms", 0, 0, 10000);
    }
    conn->reconnect_ms = cfg_uint(c, cv, base, "reconnect_ms", 500, 10, 600000);
    conn->reconnect_max_ms = cfg_uint(c, cv, base, "reconnect_max_ms", 30000, 10, 3600000);
    if (conn->reconnect_max_ms < conn->reconnect_ms)
        conn->reconnect_max_ms = conn->reconnect_ms;

    const struct gw_value *devs = cfg_get(cv, "devices");
    size_t n = cfg_count(devs);
    if (!devs || devs->type != GW_VALUE_ARRAY || n == 0) {
        snprintf(ptr, sizeof ptr, "%s/devices", base);
        cfg_err(c, ptr, "a connection needs at least one device");
        return;
    }
    conn->devs = gw_calloc(n, sizeof *conn->devs);
    for (size_t i = 0; i < n; i++) {
        char dbase[MB_PTR];
        snprintf(dbase, sizeof dbase, "%s/devices/%zu", base, i);
        struct mb_device *dev = &in->devs[(*ndevs)++];
        parse_device(c, in, conn, &devs->c.items[i], dbase, dev, npts);
        for (size_t j = 0; j < conn->ndevs; j++)
            if (conn->devs[j]->unit == dev->unit) {
                snprintf(ptr, sizeof ptr, "%s/unit", dbase);
                cfg_err(c, ptr, "unit id %u is already used by device \"%s\" on connection \"%s\"",
                        dev->unit, conn->devs[j]->name, conn->name);
            }
        conn->devs[conn->ndevs++] = dev;
    }
}

/* --- Jobs and plans --- */

static int job_plan(struct mb_job *job, bool gap0, char *err, size_t errlen)
{
    struct gw_modbus_plan_limits lim = job->dev->lim;
    if (gap0)
        lim.gap_regs = lim.gap_bits = 0;
    gw_modbus_plan_fini(&job->plan);
    free(job->req_off);
    free(job->buf16);
    free(job->buf8);
    job->req_off = NULL;
    job->buf16 = NULL;
    job->buf8 = NULL;
    /* The plan's input is rebuilt from the points each time (rarely: at start and on a gap
     * fallback) rather than kept: 24 bytes a point. */
    struct gw_modbus_plan_point *pp = gw_calloc(job->npts + 1, sizeof *pp);
    for (size_t i = 0; i < job->npts; i++) {
        const struct mb_point *pt = job->pts[i];
        pp[i] = (struct gw_modbus_plan_point){
            .unit = job->dev->unit, .table = pt->p.table, .address = pt->p.address,
            .count = (uint16_t)gw_modbus_point_width(&pt->p), .name = pt->p.name};
    }
    int n = gw_modbus_plan_build(pp, job->npts, &lim, &job->plan, err, errlen);
    free(pp);
    if (n < 0)
        return n;
    job->req_off = gw_calloc((size_t)n + 1, sizeof *job->req_off);
    size_t regs = 0, bits = 0;
    for (int k = 0; k < n; k++) {
        const struct gw_modbus_request *r = &job->plan.reqs[k];
        if (gw_modbus_table_is_bits(r->table)) {
            job->req_off[k] = bits;
            bits += r->count;
        } else {
            job->req_off[k] = regs;
            regs += r->count;
        }
    }
    job->buf16 = gw_calloc(regs + 1, sizeof *job->buf16);
    job->buf8 = gw_calloc(bits + 1, 1);
    job->gap_fallback = gap0;
    return n;
}

static int build_jobs(struct mb_inst *in, char *err, size_t errlen)
{
    for (size_t ci = 0; ci < in->nconns; ci++) {
        struct mb_conn *conn = &in->conns[ci];
        conn->jobs = gw_calloc(conn->ndevs * in->ngroups + 1, sizeof *conn->jobs);
        for (size_t d = 0; d < conn->ndevs; d++) {
            struct mb_device *dev = conn->devs[d];
            for (size_t g = 0; g < in->ngroups; g++) {
                size_t n = 0;
                for (size_t i = 0; i < dev->npts; i++)
                    n += dev->pts[i]->group == g;
                if (n == 0)
                    continue;
                struct mb_job *job = &conn->jobs[conn->njobs++];
                job->dev = dev;
                job->group = g;
                if (n == dev->npts) {
                    job->pts = dev->pts; /* one poll group: the device's own list */
                    job->npts = n;
                } else {
                    job->pts = gw_calloc(n, sizeof *job->pts);
                    job->own_pts = true;
                    for (size_t i = 0; i < dev->npts; i++)
                        if (dev->pts[i]->group == g)
                            job->pts[job->npts++] = dev->pts[i];
                }
                int rc = job_plan(job, false, err, errlen);
                if (rc < 0)
                    return rc;
            }
        }
    }
    return 0;
}

/* --- Publishing (worker) --- */

static void point_stale(struct mb_point *pt)
{
    if (pt->stale)
        return;
    pt->stale = true;
    pt->dev->conn->posted++;
    gw_publish_batch_add_stale(pt->dev->conn->batch, pt->id);
}

static void device_stale(struct mb_device *dev)
{
    for (size_t i = 0; i < dev->npts; i++)
        point_stale(dev->pts[i]);
}

/* Publishes v (taken) unless a deadband says it has not changed enough. */
static void point_publish(struct mb_point *pt, struct gw_value *v, uint64_t ts)
{
    struct mb_band *db = pt->band;
    if (db) {
        if (db->has_last && !pt->stale) {
            double a, b;
            bool same;
            if (gw_value_to_double(v, &a) == 0 && gw_value_to_double(&db->last, &b) == 0 &&
                v->type != GW_VALUE_BOOL)
                same = (isnan(a) && isnan(b)) || fabs(a - b) < db->band ||
                       (db->band == 0 && a == b);
            else
                same = gw_value_equal(v, &db->last);
            if (same) {
                gw_value_fini(v);
                return;
            }
        }
        gw_value_fini(&db->last);
        gw_value_copy(&db->last, v);
        db->has_last = true;
    }
    pt->stale = false;
    pt->dev->conn->posted++;
    gw_publish_batch_add(pt->dev->conn->batch, pt->id, v, ts);
}

/* --- Backlog bound (see struct mb_pacer) --- */

static struct mb_pacer *pacer_new(void)
{
    struct mb_pacer *p = gw_calloc(1, sizeof *p);
    atomic_init(&p->refs, 1);
    atomic_init(&p->pending, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    return p;
}

static void pacer_unref(struct mb_pacer *p)
{
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free(p);
    }
}

static void pool_need_watcher(struct mb_inst *in);

/* A pool thread is about to block (begin: on the device, a delay, or the loop's backlog) or is
 * back. Threads running on a CPU and threads blocked count apart: the pool starts a thread for
 * due work only while fewer than one per CPU are running, so a busy CPU does not breed threads
 * that only add to its queue, while devices that keep threads waiting do get more. */
static void pool_blocking(struct mb_conn *conn, bool begin)
{
    struct mb_pool *pool = &conn->inst->pool;
    pthread_mutex_lock(&pool->mu);
    if (begin) {
        pool->blocked++;
        pool_need_watcher(conn->inst);
    } else {
        pool->blocked--;
    }
    pthread_mutex_unlock(&pool->mu);
}

/* Loop thread: a batch of values has been delivered. */
static void pacer_marker(void *arg)
{
    struct mb_pacer *p = arg;
    if (atomic_fetch_sub(&p->pending, 1) - 1 <= MB_MAX_BATCHES / 4) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_signal(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    pacer_unref(p);
}

/* Worker: after a job or operation, mark the end of what it posted. */
static void pacer_mark(struct mb_conn *conn)
{
    if (conn->posted == 0)
        return;
    /* One posted task for the whole job's values (not one per value), then the marker. */
    gw_registry_publish_batch(conn->inst->host.registry, conn->batch);
    conn->posted = 0;
    atomic_fetch_add(&conn->pacer->refs, 1);
    atomic_fetch_add(&conn->pacer->pending, 1);
    gw_loop_post(conn->inst->host.loop, pacer_marker, conn->pacer);
}

/* Worker: when the loop is more than MB_MAX_BATCHES batches behind, waits until it has caught up
 * to a quarter of that (hysteresis: no ping-pong of one batch per wake-up), or until stop. */
static void pacer_wait(struct mb_conn *conn)
{
    struct mb_pacer *p = conn->pacer;
    if (atomic_load(&p->pending) <= MB_MAX_BATCHES)
        return;
    pool_blocking(conn, true);
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->pending) > MB_MAX_BATCHES / 4 &&
           !__atomic_load_n(&conn->inst->pool.stop, __ATOMIC_ACQUIRE)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    pool_blocking(conn, false);
}

/* --- Requests (worker) --- */

enum { RQ_OK = 0, RQ_EXCEPTION, RQ_NOANSWER, RQ_LINK };

static void conn_log(struct mb_conn *conn, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_log(struct mb_conn *conn, int level, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const struct gw_host *h = &conn->inst->host;
    if (h->log)
        h->log(h, level, "%s: %s", conn->name, msg);
}

/*
 * I/O of one connection, worker only. TCP goes through mbtcp.h, which waits with poll() and so
 * takes any descriptor number; RTU through libmodbus, which waits with select() and aborts on a
 * descriptor >= FD_SETSIZE, so a serial port opened that high is closed again with an error.
 * Same convention as libmodbus: -1 and errno (libmodbus's codes) on failure.
 */
static int io_ret(int rc)
{
    if (rc >= 0)
        return rc;
    errno = -rc;
    return -1;
}

static int io_create(struct mb_conn *conn)
{
    if (!conn->rtu) {
        if (conn->tcp == NULL)
            conn->tcp = gw_mbtcp_new(conn->host, conn->port);
        return 0;
    }
    if (conn->mb)
        return 0;
    conn->mb = modbus_new_rtu(conn->device, conn->baud, conn->parity, conn->data_bits,
                              conn->stop_bits);
    if (conn->mb == NULL)
        return -1;
    if (conn->byte_timeout_ms)
        modbus_set_byte_timeout(conn->mb, conn->byte_timeout_ms / 1000,
                                (conn->byte_timeout_ms % 1000) * 1000);
    return 0;
}

static int io_connect(struct mb_conn *conn)
{
    if (!conn->rtu)
        return io_ret(gw_mbtcp_connect(conn->tcp, 1000));
    modbus_set_response_timeout(conn->mb, 1, 0);
    if (modbus_connect(conn->mb) != 0)
        return -1;
    int fd = modbus_get_socket(conn->mb);
    if (fd >= FD_SETSIZE) {
        if (!conn->down_logged)
            conn_log(conn, GW_LOG_ERR, "too many open files for libmodbus's select(): fd %d >= %d",
                     fd, FD_SETSIZE);
        modbus_close(conn->mb);
        errno = EMFILE;
        return -1;
    }
    return 0;
}

static void io_set_unit_timeout(struct mb_conn *conn, int unit, unsigned ms)
{
    if (!conn->rtu) {
        gw_mbtcp_set_unit(conn->tcp, (uint8_t)unit);
        gw_mbtcp_set_timeout(conn->tcp, ms);
        return;
    }
    modbus_set_slave(conn->mb, unit);
    modbus_set_response_timeout(conn->mb, ms / 1000, (ms % 1000) * 1000);
}

/* FC 1..4 read into regs/bits, 5/6/15/16 write from them: count (reads), >= 0 or -1 + errno. */
static int io_call(struct mb_conn *conn, int fc, uint16_t start, uint16_t count, uint16_t *regs,
                   uint8_t *bits)
{
    struct gw_mbtcp *t = conn->tcp;
    modbus_t *mb = conn->mb;
    if (!conn->rtu) {
        switch (fc) {
        case 1: case 2: return io_ret(gw_mbtcp_read_bits(t, fc, start, count, bits));
        case 3: case 4: return io_ret(gw_mbtcp_read_registers(t, fc, start, count, regs));
        case 5: return io_ret(gw_mbtcp_write_bit(t, start, bits[0]));
        case 6: return io_ret(gw_mbtcp_write_register(t, start, regs[0]));
        case 15: return io_ret(gw_mbtcp_write_bits(t, start, count, bits));
        default: return io_ret(gw_mbtcp_write_registers(t, start, count, regs));
        }
    }
    switch (fc) {
    case 1: return modbus_read_bits(mb, start, count, bits);
    case 2: return modbus_read_input_bits(mb, start, count, bits);
    case 3: return modbus_read_registers(mb, start, count, regs);
    case 4: return modbus_read_input_registers(mb, start, count, regs);
    case 5: return modbus_write_bit(mb, start, bits[0]);
    case 6: return modbus_write_register(mb, start, regs[0]);
    case 15: return modbus_write_bits(mb, start, count, bits);
    default: return modbus_write_registers(mb, start, count, regs);
    }
}

static void io_flush(struct mb_conn *conn)
{
    if (!conn->rtu)
        gw_mbtcp_flush(conn->tcp);
    else
        modbus_flush(conn->mb);
}

static void io_close(struct mb_conn *conn)
{
    if (!conn->rtu)
        gw_mbtcp_close(conn->tcp);
    else
        modbus_close(conn->mb);
}

static void io_free(struct mb_conn *conn)
{
    if (conn->mb) {
        if (conn->connected)
            modbus_close(conn->mb);
        modbus_free(conn->mb);
        conn->mb = NULL;
    }
    gw_mbtcp_free(conn->tcp);
    conn->tcp = NULL;
}

static void conn_drop(struct mb_conn *conn, const char *why)
{
    if (!conn->connected)
        return;
    conn_log(conn, GW_LOG_WARN, "link lost (%s); reconnecting", why);
    io_close(conn);
    conn->connected = false;
    atomic_fetch_add(&conn->n_link_losses, 1);
    conn->cur_reconnect = conn->reconnect_ms;
    conn->next_connect = mono_ms();
    for (size_t d = 0; d < conn->ndevs; d++)
        device_stale(conn->devs[d]);
}

static bool conn_ensure(struct mb_conn *conn)
{
    if (conn->connected)
        return true;
    uint64_t now = mono_ms();
    if (now < conn->next_connect)
        return false;
    if (io_create(conn) != 0) {
        conn_log(conn, GW_LOG_ERR, "cannot create libmodbus context: %s", modbus_strerror(errno));
        conn->next_connect = now + conn->reconnect_max_ms;
        return false;
    }
    pool_blocking(conn, true);
    int crc = io_connect(conn); /* 1 s connect timeout */
    pool_blocking(conn, false);
    if (crc != 0) {
        int e = errno;
        if (!conn->down_logged)
            conn_log(conn, GW_LOG_WARN, "cannot connect to %s%s%s: %s; retrying",
                     conn->rtu ? conn->device : conn->host, conn->rtu ? "" : ":",
                     conn->rtu ? "" : conn->port, modbus_strerror(e));
        conn->down_logged = true;
        if (conn->cur_reconnect == 0)
            conn->cur_reconnect = conn->reconnect_ms;
        conn->next_connect = now + conn->cur_reconnect;
        conn->cur_reconnect = conn->cur_reconnect * 2 > conn->reconnect_max_ms
                                  ? conn->reconnect_max_ms : conn->cur_reconnect * 2;
        for (size_t d = 0; d < conn->ndevs; d++)
            device_stale(conn->devs[d]);
        return false;
    }
    if (conn->rtu) {
        if (conn->serial_mode == MODBUS_RTU_RS485 &&
            modbus_rtu_set_serial_mode(conn->mb, MODBUS_RTU_RS485) != 0)
            conn_log(conn, GW_LOG_WARN, "cannot switch %s to RS-485 mode: %s", conn->device,
                     modbus_strerror(errno));
        if (conn->rts != MODBUS_RTU_RTS_NONE) {
            if (modbus_rtu_set_rts(conn->mb, conn->rts) != 0)
                conn_log(conn, GW_LOG_WARN, "cannot set RTS mode: %s", modbus_strerror(errno));
            if (conn->rts_delay_us)
                modbus_rtu_set_rts_delay(conn->mb, conn->rts_delay_us);
        }
    }
    conn->connected = true;
    conn->down_logged = false;
    conn->cur_reconnect = conn->reconnect_ms;
    conn->gen++;
    atomic_fetch_add(&conn->n_connects, 1);
    conn_log(conn, GW_LOG_INFO, "connected to %s%s%s", conn->rtu ? conn->device : conn->host,
             conn->rtu ? "" : ":", conn->rtu ? "" : conn->port);
    return true;
}

/*
 * One transaction with retries. fc: 1..4 read (into regs/bits), 5/6/15/16 write (from
 * regs/bits). On failure err gets "<reason> <verb> <range> on <device> unit <id>" and *exc the
 * exception code (RQ_EXCEPTION).
 */
static int transact(struct mb_device *dev, int fc, uint16_t start, uint16_t count, uint16_t *regs,
                    uint8_t *bits, int *exc, char *err, size_t errlen)
{
    struct mb_conn *conn = dev->conn;
    enum gw_modbus_table table = fc == 1 || fc == 5 || fc == 15 ? GW_MODBUS_TABLE_COIL
                                 : fc == 2                      ? GW_MODBUS_TABLE_DISCRETE
                                 : fc == 4                      ? GW_MODBUS_TABLE_INPUT
                                                                : GW_MODBUS_TABLE_HOLDING;
    const char *verb = fc <= 4 ? "reading" : "writing";
    char where[48];
    if (exc)
        *exc = 0;
    if (!conn_ensure(conn)) {
        range_text(where, sizeof where, table, start, count);
        snprintf(err, errlen, "not connected (%s) %s %s on %s unit %u",
                 conn->rtu ? conn->device : conn->host, verb, where, dev->res_name, dev->unit);
        return RQ_LINK;
    }
    if (dev->seen_gen != conn->gen) {
        dev->seen_gen = conn->gen;
        if (dev->pause_ms) {
            pool_blocking(conn, true);
            sleep_ms(dev->pause_ms);
            pool_blocking(conn, false);
        }
    }
    io_set_unit_timeout(conn, dev->unit, dev->timeout_ms);
    int e = 0;
    for (unsigned attempt = 0; attempt <= dev->retries; attempt++) {
        pool_blocking(conn, true);
        if (dev->delay_ms)
            sleep_ms(dev->delay_ms);
        atomic_fetch_add(&dev->n_requests, 1);
        atomic_fetch_add(&conn->n_requests, 1);
        int rc = io_call(conn, fc, start, count, regs, bits);
        pool_blocking(conn, false);
        if (rc >= 0) {
            if (fc > 4 || rc == (int)count)
                return RQ_OK;
            e = EMBBADDATA;
        } else {
            e = errno;
        }
        range_text(where, sizeof where, table, start, count);
        if (e > MODBUS_ENOBASE && e <= EMBXGTAR) {
            int code = e - MODBUS_ENOBASE;
            atomic_fetch_add(&dev->n_exceptions, 1);
            if (exc)
                *exc = code;
            snprintf(err, errlen, "%s (exception %d) %s %s on %s unit %u", exception_name(code),
                     code, verb, where, dev->res_name, dev->unit);
            return RQ_EXCEPTION;
        }
        if (e == EMBBADCRC) {
            atomic_fetch_add(&dev->n_crc, 1);
            atomic_fetch_add(&conn->n_crc, 1);
            conn_log(conn, GW_LOG_DEBUG, "bad CRC %s %s on unit %u (attempt %u)", verb, where,
                     dev->unit, attempt + 1);
            io_flush(conn);
            snprintf(err, errlen, "bad CRC %s %s on %s unit %u", verb, where, dev->res_name,
                     dev->unit);
            continue;
        }
        if (e == ETIMEDOUT) {
            atomic_fetch_add(&dev->n_timeouts, 1);
            snprintf(err, errlen, "no answer within %u ms %s %s on %s unit %u", dev->timeout_ms,
                     verb, where, dev->res_name, dev->unit);
            continue;
        }
        if (e == EMBBADDATA || e == EMBBADEXC || e == EMBUNKEXC || e == EMBMDATA ||
            e == EMBBADSLAVE) {
            io_flush(conn);
            snprintf(err, errlen, "bad reply (%s) %s %s on %s unit %u", modbus_strerror(e), verb,
                     where, dev->res_name, dev->unit);
            continue;
        }
        /* Anything else is the link (reset, closed, serial error). */
        snprintf(err, errlen, "link lost (%s) %s %s on %s unit %u", modbus_strerror(e), verb,
                 where, dev->res_name, dev->unit);
        conn_drop(conn, modbus_strerror(e));
        return RQ_LINK;
    }
    return RQ_NOANSWER;
}

/* Decodes point pt from registers or, for coils and discrete inputs, one bit. */
static int decode_at(struct mb_point *pt, const uint16_t *regs, const uint8_t *bits,
                     struct gw_value *v, char *err, size_t errlen)
{
    if (gw_modbus_table_is_bits(pt->p.table))
        return gw_modbus_decode_bit(&pt->p, bits[0], v);
    return gw_modbus_decode(&pt->p, regs, gw_modbus_point_width(&pt->p), v, err, errlen);
}

/* Decodes point i of job from the job's buffers (after its plan's requests ran). */
static int decode_job_point(struct mb_job *job, size_t i, struct gw_value *v, char *err,
                            size_t errlen)
{
    struct mb_point *pt = job->pts[i];
    size_t off = job->req_off[job->plan.point_req[i]] + job->plan.point_offset[i];
    if (gw_modbus_table_is_bits(pt->p.table))
        return decode_at(pt, NULL, job->buf8 + off, v, err, errlen);
    return decode_at(pt, job->buf16 + off, NULL, v, err, errlen);
}

/* The reply buffer of request k of job. */
static void job_bufs(struct mb_job *job, size_t k, uint16_t **regs, uint8_t **bits)
{
    bool isbits = gw_modbus_table_is_bits(job->plan.reqs[k].table);
    *regs = isbits ? NULL : job->buf16 + job->req_off[k];
    *bits = isbits ? job->buf8 + job->req_off[k] : NULL;
}

/* Reads one point now into *v. Returns RQ_*, message in err. */
static int read_point(struct mb_point *pt, struct gw_value *v, char *err, size_t errlen)
{
    uint16_t regs[GW_MODBUS_MAX_STRING_REGS];
    uint8_t bit = 0;
    uint16_t w = (uint16_t)gw_modbus_point_width(&pt->p);
    int rc = transact(pt->dev, gw_modbus_table_function(pt->p.table), pt->p.address, w, regs, &bit,
                      NULL, err, errlen);
    if (rc != RQ_OK)
        return rc;
    if (decode_at(pt, regs, &bit, v, err, errlen) != 0)
        return RQ_EXCEPTION;
    return RQ_OK;
}

static void device_ok(struct mb_device *dev)
{
    if (dev->quarantined || dev->fails)
        conn_log(dev->conn, GW_LOG_NOTICE, "device %s unit %u answers again", dev->res_name,
                 dev->unit);
    dev->fails = 0;
    dev->quarantined = false;
    dev->backoff_ms = 0;
}

static void device_failed(struct mb_device *dev, uint64_t interval_ms, const char *why)
{
    dev->fails++;
    device_stale(dev);
    if (dev->fails < dev->quarantine_after && !dev->quarantined)
        return;
    uint64_t first = interval_ms < 1000 ? 1000 : interval_ms;
    dev->backoff_ms = dev->backoff_ms == 0 ? first : dev->backoff_ms * 2;
    if (dev->backoff_ms > dev->quarantine_max_ms)
        dev->backoff_ms = dev->quarantine_max_ms;
    dev->q_until = mono_ms() + dev->backoff_ms;
    if (!dev->quarantined) {
        atomic_fetch_add(&dev->n_quarantines, 1);
        conn_log(dev->conn, GW_LOG_WARN,
                 "device %s unit %u quarantined after %u failed cycles (%s); next probe in %llu ms",
                 dev->res_name, dev->unit, dev->fails, why, (unsigned long long)dev->backoff_ms);
    }
    dev->quarantined = true;
}

/* Runs one poll of a job. Returns false if the device did not answer. */
static bool job_run(struct mb_job *job)
{
    struct mb_device *dev = job->dev;
    struct mb_inst *in = dev->conn->inst;
    char err[MB_ERR] = "";
    bool answered = true, replan = false;
    size_t failed_from = job->plan.nreqs;
    bool *bad = gw_calloc(job->plan.nreqs + 1, sizeof *bad);
    for (size_t k = 0; k < job->plan.nreqs; k++) {
        const struct gw_modbus_request *r = &job->plan.reqs[k];
        int exc = 0;
        uint16_t *regs;
        uint8_t *bits;
        job_bufs(job, k, &regs, &bits);
        int rc = transact(dev, r->function, r->start, r->count, regs, bits, &exc, err, sizeof err);
        if (rc == RQ_EXCEPTION) {
            bad[k] = true;
            if (exc == 2 && !job->gap_fallback &&
                (dev->lim.gap_regs > 0 || dev->lim.gap_bits > 0))
                replan = true;
            else
                conn_log(dev->conn, GW_LOG_WARN, "%s", err);
        } else if (rc != RQ_OK) {
            answered = rc == RQ_LINK; /* a lost link is not the device's fault */
            failed_from = k;
            break;
        }
    }
    uint64_t ts = wall_ms();
    for (size_t i = 0; i < job->npts; i++) {
        struct mb_point *pt = job->pts[i];
        size_t k = job->plan.point_req[i];
        if (k >= failed_from || bad[k]) {
            point_stale(pt);
            continue;
        }
        struct gw_value v;
        char derr[MB_ERR];
        if (decode_job_point(job, i, &v, derr, sizeof derr) != 0) {
            point_stale(pt);
            continue;
        }
        point_publish(pt, &v, ts);
    }
    free(bad);
    if (replan) {
        char perr[MB_ERR];
        conn_log(dev->conn, GW_LOG_NOTICE,
                 "%s; planning device %s without gaps (a gap holds unimplemented registers)", err,
                 dev->res_name);
        job_plan(job, true, perr, sizeof perr);
    }
    if (failed_from < job->plan.nreqs && !answered)
        device_failed(dev, in->groups[job->group].interval_ms, err);
    else if (failed_from == job->plan.nreqs)
        device_ok(dev);
    return answered;
}

/* --- Operations from the loop thread (worker side) --- */

static void reply_value(struct gw_call *call, struct gw_value *v)
{
    gw_call_reply(call, v);
}

static void fail_rq(struct gw_call *call, int rq, const char *err)
{
    gw_call_fail(call, rq == RQ_NOANSWER ? GW_ETIMEDOUT : rq == RQ_LINK ? GW_ENOTCONN : GW_EDEVICE,
                 "%s", err);
}

static bool device_refuses(struct mb_device *dev, struct gw_call *call)
{
    if (!dev->quarantined)
        return false;
    uint64_t now = mono_ms();
    gw_call_fail(call, GW_ESTALE,
                 "device %s unit %u is quarantined (no answer in %u cycles); next probe in %llu ms",
                 dev->res_name, dev->unit, dev->fails,
                 (unsigned long long)(dev->q_until > now ? dev->q_until - now : 0));
    return true;
}

static void op_write(struct mb_op *op)
{
    struct mb_point *pt = op->pt;
    struct mb_device *dev = pt->dev;
    char err[MB_ERR];
    uint16_t regs[GW_MODBUS_MAX_STRING_REGS] = {0};
    uint8_t bit = 0;
    uint16_t w = (uint16_t)gw_modbus_point_width(&pt->p);
    int rc;
    if (gw_modbus_table_is_bits(pt->p.table)) {
        rc = gw_modbus_encode_bit(&pt->p, &op->in, &bit, err, sizeof err);
        if (rc != 0) {
            gw_call_fail(op->call, rc, "%s", err);
            return;
        }
        rc = transact(dev, 5, pt->p.address, 1, NULL, &bit, NULL, err, sizeof err);
    } else {
        if (pt->p.type == GW_MODBUS_TYPE_BIT) {
            /* Read-modify-write of the register holding the bit. */
            rc = transact(dev, 3, pt->p.address, 1, regs, NULL, NULL, err, sizeof err);
            if (rc != RQ_OK) {
                fail_rq(op->call, rc, err);
                return;
            }
        }
        int erc = gw_modbus_encode(&pt->p, &op->in, regs, w, err, sizeof err);
        if (erc != 0) {
            gw_call_fail(op->call, erc, "%s", err);
            return;
        }
        rc = transact(dev, w == 1 ? 6 : 16, pt->p.address, w, regs, NULL, NULL, err, sizeof err);
    }
    if (rc != RQ_OK) {
        fail_rq(op->call, rc, err);
        return;
    }
    struct gw_value v;
    rc = read_point(pt, &v, err, sizeof err);
    if (rc != RQ_OK) {
        fail_rq(op->call, rc, err);
        return;
    }
    struct gw_value copy;
    gw_value_copy(&copy, &v);
    point_publish(pt, &copy, wall_ms());
    reply_value(op->call, &v);
}

static void op_read_device(struct mb_op *op)
{
    struct mb_device *dev = op->dev;
    struct mb_conn *conn = dev->conn;
    struct gw_value map = gw_value_map();
    char err[MB_ERR];
    uint64_t ts = wall_ms();
    for (size_t j = 0; j < conn->njobs; j++) {
        struct mb_job *job = &conn->jobs[j];
        if (job->dev != dev)
            continue;
        for (size_t k = 0; k < job->plan.nreqs; k++) {
            const struct gw_modbus_request *r = &job->plan.reqs[k];
            uint16_t *regs;
            uint8_t *bits;
            job_bufs(job, k, &regs, &bits);
            int rc = transact(dev, r->function, r->start, r->count, regs, bits, NULL, err,
                              sizeof err);
            if (rc != RQ_OK) {
                gw_value_fini(&map);
                fail_rq(op->call, rc, err);
                return;
            }
        }
        for (size_t i = 0; i < job->npts; i++) {
            struct mb_point *pt = job->pts[i];
            struct gw_value v;
            if (decode_job_point(job, i, &v, err, sizeof err) != 0) {
                gw_value_fini(&map);
                gw_call_fail(op->call, GW_EDEVICE, "%s", err);
                return;
            }
            struct gw_value copy;
            gw_value_copy(&copy, &v);
            point_publish(pt, &copy, ts);
            *gw_value_map_set(&map, pt_name(pt), strlen(pt_name(pt))) = v;
        }
    }
    reply_value(op->call, &map);
}

static void put_uint(struct gw_value *map, const char *key, uint64_t u)
{
    *gw_value_map_set(map, key, strlen(key)) = gw_value_uint(u);
}

/* Answers the connection's counters. With input {"reset_lateness": true} the lateness figures
 * (polls, quantiles, max, missed, skipped) start again from zero after this answer, so that a
 * caller can measure a window (e.g. after start-up). */
static void op_stats(struct mb_conn *conn, struct gw_call *call, const struct gw_value *in)
{
    struct gw_value m = gw_value_map();
    put_uint(&m, "connected", conn->connected);
    put_uint(&m, "requests", atomic_load(&conn->n_requests));
    put_uint(&m, "connects", atomic_load(&conn->n_connects));
    put_uint(&m, "link_losses", atomic_load(&conn->n_link_losses));
    put_uint(&m, "crc_errors", atomic_load(&conn->n_crc));
    /* Poll lateness: how late scheduled polls started against their due time. */
    put_uint(&m, "polls", conn->late.polls);
    put_uint(&m, "late_p50_us", gw_modbus_late_quantile(&conn->late, 0.50));
    put_uint(&m, "late_p99_us", gw_modbus_late_quantile(&conn->late, 0.99));
    put_uint(&m, "late_max_us", conn->late.max_us);
    put_uint(&m, "missed_deadlines", conn->late.missed);
    put_uint(&m, "skipped_polls", conn->late.skipped);
    /* The instance's worker pool (shared by its connections): threads now and at most. */
    pthread_mutex_lock(&conn->inst->pool.mu);
    put_uint(&m, "pool_threads", conn->inst->pool.threads);
    put_uint(&m, "pool_threads_peak", conn->inst->pool.peak_threads);
    pthread_mutex_unlock(&conn->inst->pool.mu);
    struct gw_value *devs = gw_value_map_set(&m, "devices", 7);
    *devs = gw_value_map();
    for (size_t d = 0; d < conn->ndevs; d++) {
        struct mb_device *dev = conn->devs[d];
        struct gw_value *dm = gw_value_map_set(devs, dev->name, strlen(dev->name));
        *dm = gw_value_map();
        put_uint(dm, "unit", dev->unit);
        put_uint(dm, "requests", atomic_load(&dev->n_requests));
        put_uint(dm, "timeouts", atomic_load(&dev->n_timeouts));
        put_uint(dm, "exceptions", atomic_load(&dev->n_exceptions));
        put_uint(dm, "crc_errors", atomic_load(&dev->n_crc));
        put_uint(dm, "quarantines", atomic_load(&dev->n_quarantines));
        *gw_value_map_set(dm, "quarantined", 11) = gw_value_bool(dev->quarantined);
        put_uint(dm, "failed_cycles", dev->fails);
    }
    gw_call_reply(call, &m);
    bool reset = false;
    if (in && in->type == GW_VALUE_MAP) {
        const struct gw_value *r = gw_value_map_get(in, "reset_lateness");
        reset = r && r->type == GW_VALUE_BOOL && r->b;
    }
    if (reset)
        memset(&conn->late, 0, sizeof conn->late);
}

static void op_run(struct mb_conn *conn, struct mb_op *op)
{
    char err[MB_ERR];
    switch (op->kind) {
    case OP_STATS:
        op_stats(conn, op->call, &op->in);
        break;
    case OP_READ_DEVICE:
        if (!device_refuses(op->dev, op->call))
            op_read_device(op);
        break;
    case OP_WRITE_POINT:
        if (!device_refuses(op->pt->dev, op->call))
            op_write(op);
        break;
    case OP_READ_POINT:
        if (!device_refuses(op->pt->dev, op->call)) {
            struct gw_value v;
            int rc = read_point(op->pt, &v, err, sizeof err);
            if (rc != RQ_OK) {
                fail_rq(op->call, rc, err);
            } else {
                struct gw_value copy;
                gw_value_copy(&copy, &v);
                point_publish(op->pt, &copy, wall_ms());
                reply_value(op->call, &v);
            }
        }
        break;
    }
    gw_value_fini(&op->in);
    free(op);
}

/* --- Scheduler (worker) --- */

static bool device_healthy(const struct mb_device *dev)
{
    return dev->fails == 0 && !dev->quarantined;
}

/*
 * Picks the job to run at now, or NULL and the time to wake up. Due jobs of healthy devices first
 * (shortest interval, then earliest due); a suspect or quarantined device only when its worst case
 * fits before the next healthy job.
 */
static struct mb_job *pick_job(struct mb_conn *conn, uint64_t now, uint64_t *wake) /* us */
{
    struct mb_job *best = NULL;
    uint64_t healthy_next = UINT64_MAX;
    const struct mb_group *groups = conn->inst->groups;
    for (size_t j = 0; j < conn->njobs; j++) {
        struct mb_job *job = &conn->jobs[j];
        if (!device_healthy(job->dev))
            continue;
        if (job->due < healthy_next)
            healthy_next = job->due;
        if (job->due > now)
            continue;
        /* Rate-monotonic among due jobs: the shortest interval first (it has the least slack),
         * then the earliest due time. */
        uint64_t iv = groups[job->group].interval_ms;
        uint64_t best_iv = best ? groups[best->group].interval_ms : 0;
        if (best == NULL || iv < best_iv || (iv == best_iv && job->due < best->due))
            best = job;
    }
    if (best)
        return best;
    uint64_t w = healthy_next;
    for (size_t j = 0; j < conn->njobs; j++) {
        struct mb_job *job = &conn->jobs[j];
        struct mb_device *dev = job->dev;
        if (device_healthy(dev))
            continue;
        uint64_t eligible = job->due;
        if (dev->quarantined && dev->q_until * 1000u > eligible)
            eligible = dev->q_until * 1000u;
        if (eligible > now) {
            if (eligible < w)
                w = eligible;
            continue;
        }
        uint64_t cost = ((uint64_t)dev->timeout_ms * (dev->retries + 1) + dev->delay_ms + 5) * 1000u;
        if (healthy_next == UINT64_MAX || healthy_next >= now + cost) {
            if (best == NULL || eligible < best->due)
                best = job;
        }
    }
    *wake = w;
    return best;
}

/* Moves a job to its next due time (now in us); polls jumped over count as skipped. */
static void job_reschedule(struct mb_inst *in, struct mb_conn *conn, struct mb_job *job,
                           uint64_t now)
{
    uint64_t iv = in->groups[job->group].interval_ms * 1000u;
    job->due += iv;
    if (job->first) {
        job->due += job->phase_us;
        job->first = false;
    }
    if (job->due + iv < now) {
        /* Far behind: run again soon, without a burst of catch-up polls. The polls due in
         * [due, now - iv) will never run. */
        gw_modbus_late_skip(&conn->late, iv ? (now - job->due) / iv : 0);
        job->due = now;
    }
}

/* Sets every job's first due time. The connections of an instance are spread over the interval
 * (connection i of n at i/n of it), so that a thousand connections do not all wake in the same
 * millisecond, every second, and queue behind each other for the CPU (and the pool does not start
 * a thread for each). The first polls are spread the same way but over at most one second, so a
 * long interval does not delay the first values; phase_us keeps the rest of the offset for the
 * second poll. */
static void conn_schedule_start(struct mb_conn *conn, uint64_t now)
{
    struct mb_inst *in = conn->inst;
    size_t ci = (size_t)(conn - in->conns), n = in->nconns;
    for (size_t j = 0; j < conn->njobs; j++) {
        struct mb_job *job = &conn->jobs[j];
        uint64_t iv = in->groups[job->group].interval_ms * 1000u;
        uint64_t first_span = iv < 1000000u ? iv : 1000000u;
        uint64_t phase = n > 1 ? iv * ci / n : 0, first = n > 1 ? first_span * ci / n : 0;
        job->due = now + first;
        job->first = true;
        job->phase_us = phase - first;
    }
}

/* Pool thread: runs one step of a connection it has taken: a queued operation, else the due job
 * (or, while the link is down and not yet due for a reconnect, skips the due polls). */
static void conn_step(struct mb_conn *conn)
{
    struct mb_inst *in = conn->inst;
    struct mb_pool *pool = &in->pool;
    pthread_mutex_lock(&pool->mu);
    struct mb_op *op = conn->head;
    if (op) {
        conn->head = op->next;
        if (!conn->head)
            conn->tail = NULL;
    }
    pthread_mutex_unlock(&pool->mu);
    if (op) {
        op_run(conn, op);
        pacer_mark(conn);
        return;
    }
    uint64_t now = mono_us(), wake;
    struct mb_job *job = pick_job(conn, now, &wake);
    if (!job)
        return;
    if (!conn_ensure(conn)) {
        /* Not connected and not yet time to retry: jobs wait for the link. */
        now = mono_us();
        for (size_t j = 0; j < conn->njobs; j++)
            if (conn->jobs[j].due <= now) {
                gw_modbus_late_skip(&conn->late, 1);
                job_reschedule(in, conn, &conn->jobs[j], now);
            }
        pacer_mark(conn); /* stale marks made while (re)connecting */
        return;
    }
    pacer_wait(conn);
    now = mono_us();
    /* Only polls of healthy devices count for lateness: a probe of a suspect or quarantined
     * device runs when its back-off and the idle windows allow, and its due time is long past by
     * design (fault.modbus_mix saw late_max 32 s from a dead unit's probes alone). */
    if (device_healthy(job->dev))
        gw_modbus_late_record(&conn->late, now > job->due ? now - job->due : 0,
                              in->groups[job->group].interval_ms * 1000u);
    job_run(job);
    pacer_mark(conn);
    job_reschedule(in, conn, job, mono_us());
}

/* When the connection next needs a thread, from its jobs (operations are checked by the caller). */
static uint64_t conn_wake(struct mb_conn *conn)
{
    uint64_t now = mono_us(), wake = UINT64_MAX;
    if (pick_job(conn, now, &wake))
        return now;
    return wake == UINT64_MAX ? now + 1000000u : wake;
}

/* --- The pool's heap (under pool->mu) --- */

static bool heap_before(const struct mb_conn *a, const struct mb_conn *b)
{
    return a->wake_us < b->wake_us;
}

static void heap_set(struct mb_pool *pool, size_t i, struct mb_conn *c)
{
    pool->heap[i] = c;
    c->heap_i = i;
}

static void heap_up(struct mb_pool *pool, size_t i)
{
    struct mb_conn *c = pool->heap[i];
    while (i > 0 && heap_before(c, pool->heap[(i - 1) / 2])) {
        heap_set(pool, i, pool->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(pool, i, c);
}

static void heap_down(struct mb_pool *pool, size_t i)
{
    struct mb_conn *c = pool->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        const struct mb_conn *best = c;
        if (l < pool->nheap && heap_before(pool->heap[l], best))
            best = pool->heap[m = l];
        if (l + 1 < pool->nheap && heap_before(pool->heap[l + 1], best))
            m = l + 1;
        if (m == i)
            break;
        heap_set(pool, i, pool->heap[m]);
        i = m;
    }
    heap_set(pool, i, c);
}

static void heap_push(struct mb_pool *pool, struct mb_conn *c)
{
    pool->heap[pool->nheap++] = c; /* capacity: one slot per connection */
    c->heap_i = pool->nheap - 1;
    heap_up(pool, c->heap_i);
}

static struct mb_conn *heap_pop(struct mb_pool *pool)
{
    struct mb_conn *top = pool->heap[0];
    top->heap_i = MB_NOT_QUEUED;
    if (--pool->nheap > 0) {
        heap_set(pool, 0, pool->heap[pool->nheap]);
        heap_down(pool, 0);
    }
    return top;
}

/* --- Pool threads --- */

/* An idle pool thread, on its own stack: woken one at a time, the most recently idle first, so
 * that a steady load keeps reusing the same few threads and the others time out and leave. */
struct mb_waiter {
    pthread_cond_t cv;          /* CLOCK_MONOTONIC */
    struct mb_waiter *next;
    bool woken;
};

static void *pool_thread(void *arg);

/* Under pool->mu: makes sure a thread will watch the clock: wakes the most recently idle thread,
 * or starts one if the pool may grow. A failed pthread_create only leaves the pool smaller (the
 * work still gets done, later). */
static void pool_need_watcher(struct mb_inst *in)
{
    struct mb_pool *pool = &in->pool;
    if (pool->watcher || pool->stop)
        return;
    struct mb_waiter *w = pool->idle_stack;
    if (w) {
        pool->idle_stack = w->next;
        w->woken = true;
        pool->watcher = w; /* now: a second call before it runs must not wake another */
        pthread_cond_signal(&w->cv);
        return;
    }
    if (pool->starting || pool->threads >= pool->max_threads ||
        pool->threads - pool->blocked >= pool->ncpu)
        return; /* a running thread will come back for the work */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, MB_STACK_SIZE);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t th;
    if (pthread_create(&th, &attr, pool_thread, in) == 0) {
        pool->threads++;
        pool->starting = true; /* until it has looked at the heap: one start at a time */
        if (pool->threads > pool->peak_threads)
            pool->peak_threads = pool->threads;
    }
    pthread_attr_destroy(&attr);
}

static void abs_time(struct timespec *ts, uint64_t us)
{
    ts->tv_sec = (time_t)(us / 1000000u);
    ts->tv_nsec = (long)(us % 1000000u) * 1000L;
}

static void waiter_wait(struct mb_pool *pool, struct mb_waiter *me, uint64_t until_us)
{
    struct timespec ts;
    abs_time(&ts, until_us);
    pthread_cond_timedwait(&me->cv, &pool->mu, &ts);
}

static void *pool_thread(void *arg)
{
    struct mb_inst *in = arg;
    struct mb_pool *pool = &in->pool;
    struct mb_waiter me = {.next = NULL};
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&me.cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_lock(&pool->mu);
    pool->starting = false;
    while (!pool->stop) {
        uint64_t now = mono_us();
        if (pool->nheap > 0 && pool->heap[0]->wake_us <= now) {
            struct mb_conn *conn = heap_pop(pool);
            if (pool->watcher == &me)
                pool->watcher = NULL;
            pool_need_watcher(in); /* someone watches the clock while this thread works */
            pthread_mutex_unlock(&pool->mu);
            conn_step(conn);
            uint64_t wake = conn_wake(conn);
            pthread_mutex_lock(&pool->mu);
            conn->wake_us = conn->head ? 0 : wake;
            heap_push(pool, conn);
            if (conn->heap_i == 0 && pool->watcher && pool->watcher != &me)
                pthread_cond_signal(&pool->watcher->cv); /* earlier than it waits for */
            continue;
        }
        if (pool->watcher == NULL || pool->watcher == &me) {
            /* The watcher: sleeps until the next connection is due (or a second, or a signal). */
            pool->watcher = &me;
            uint64_t until = now + 1000000u;
            if (pool->nheap > 0 && pool->heap[0]->wake_us < until)
                until = pool->heap[0]->wake_us;
            waiter_wait(pool, &me, until);
            continue;
        }
        /* Idle behind the watcher: leaves after MB_POOL_IDLE_MS unless woken. */
        me.woken = false;
        me.next = pool->idle_stack;
        pool->idle_stack = &me;
        uint64_t until = now + MB_POOL_IDLE_MS * 1000u;
        while (!me.woken && !pool->stop && mono_us() < until)
            waiter_wait(pool, &me, until);
        if (!me.woken) {
            struct mb_waiter **pp = &pool->idle_stack;
            while (*pp && *pp != &me)
                pp = &(*pp)->next;
            if (*pp)
                *pp = me.next;
            break;
        }
    }
    if (pool->watcher == &me)
        pool->watcher = NULL;
    if (--pool->threads == 0)
        pthread_cond_broadcast(&pool->gone);
    else if (!pool->stop)
        pool_need_watcher(in);
    pthread_mutex_unlock(&pool->mu);
    pthread_cond_destroy(&me.cv);
    return NULL;
}

/* Under pool->mu: wakes every pool thread (stop). */
static void pool_wake_all(struct mb_pool *pool)
{
    if (pool->watcher)
        pthread_cond_signal(&pool->watcher->cv);
    for (struct mb_waiter *w = pool->idle_stack; w; w = w->next)
        pthread_cond_signal(&w->cv);
}

/* --- Resources (loop thread) --- */

static int enqueue(struct mb_conn *conn, struct mb_op *op)
{
    struct mb_inst *in = conn->inst;
    struct mb_pool *pool = &in->pool;
    pthread_mutex_lock(&pool->mu);
    if (pool->stop) {
        pthread_mutex_unlock(&pool->mu);
        gw_call_fail(op->call, GW_ECANCELED, "modbus %s: adapter stopping", in->name);
        gw_value_fini(&op->in);
        free(op);
        return 0;
    }
    if (conn->tail)
        conn->tail->next = op;
    else
        conn->head = op;
    conn->tail = op;
    if (conn->heap_i != MB_NOT_QUEUED && conn->wake_us != 0) {
        conn->wake_us = 0; /* an operation jumps the schedule */
        heap_up(pool, conn->heap_i);
        if (conn->heap_i == 0) {
            if (pool->watcher)
                pthread_cond_signal(&pool->watcher->cv);
            else
                pool_need_watcher(in);
        }
    }
    pthread_mutex_unlock(&pool->mu);
    return 0;
}

static int run_point(void *ctx, struct gw_call *call)
{
    struct mb_point *pt = ctx;
    const struct gw_value *in = gw_call_input(call);
    struct mb_op *op = gw_calloc(1, sizeof *op);
    op->pt = pt;
    op->call = call;
    if (in && in->type != GW_VALUE_NULL) {
        if (pt->p.access != GW_MODBUS_ACCESS_READ_WRITE) {
            free(op);
            gw_call_fail(call, GW_EREADONLY, "point %s is read-only", pt->p.name);
            return 0;
        }
        op->kind = OP_WRITE_POINT;
        gw_value_copy(&op->in, in);
    } else {
        op->kind = OP_READ_POINT;
    }
    return enqueue(pt->dev->conn, op);
}

static int run_device(void *ctx, struct gw_call *call)
{
    struct mb_device *dev = ctx;
    struct mb_op *op = gw_calloc(1, sizeof *op);
    op->kind = OP_READ_DEVICE;
    op->dev = dev;
    op->call = call;
    return enqueue(dev->conn, op);
}

static int run_stats(void *ctx, struct gw_call *call)
{
    struct mb_conn *conn = ctx;
    const struct gw_value *in = gw_call_input(call);
    struct mb_op *op = gw_calloc(1, sizeof *op);
    op->kind = OP_STATS;
    op->call = call;
    if (in && in->type != GW_VALUE_NULL)
        gw_value_copy(&op->in, in);
    return enqueue(conn, op);
}

static struct gw_value sample_of(const struct mb_point *pt)
{
    switch (pt->p.type) {
    case GW_MODBUS_TYPE_BOOL:
    case GW_MODBUS_TYPE_BIT:
        return gw_value_bool(false);
    case GW_MODBUS_TYPE_STRING:
        return gw_value_cstr("");
    case GW_MODBUS_TYPE_FLOAT32:
    case GW_MODBUS_TYPE_FLOAT64:
        return gw_value_double(0.5);
    default:
        break;
    }
    if (pt->p.scale != 1 || pt->p.offset != 0)
        return gw_value_double(0.5);
    if (pt->p.type == GW_MODBUS_TYPE_INT16 || pt->p.type == GW_MODBUS_TYPE_INT32 ||
        pt->p.type == GW_MODBUS_TYPE_INT64)
        return gw_value_int(-1);
    return gw_value_uint(0);
}

static void source_text(const struct mb_point *pt, char *buf, size_t len)
{
    char r[48];
    range_text(r, sizeof r, pt->p.table, pt->p.address, 1);
    size_t n = (size_t)snprintf(buf, len, "%s %s", r, gw_modbus_type_name(pt->p.type));
    if (n < len && pt->p.type == GW_MODBUS_TYPE_BIT)
        n += (size_t)snprintf(buf + n, len - n, " %u", pt->p.bit);
    else if (n < len && pt->p.type == GW_MODBUS_TYPE_STRING)
        n += (size_t)snprintf(buf + n, len - n, "[%u] %s", pt->p.count,
                              gw_modbus_order_name(pt->p.order, pt->p.type));
    else if (n < len && pt->p.type != GW_MODBUS_TYPE_BOOL)
        n += (size_t)snprintf(buf + n, len - n, " %s",
                              gw_modbus_order_name(pt->p.order, pt->p.type));
    if (n < len)
        snprintf(buf + n, len - n, " unit %u", pt->dev->unit);
}

/* DESCRIBE-one keys of a point, built when asked (the registry keeps no copy per point). */
static void point_describe(void *ctx, struct gw_value *meta)
{
    const struct mb_point *pt = ctx;
    const struct mb_inst *in = pt->dev->conn->inst;
    char src[160];
    source_text(pt, src, sizeof src);
    *gw_value_map_set(meta, "source", 6) = gw_value_cstr(src);
    *gw_value_map_set(meta, "device", 6) = gw_value_cstr(pt->dev->res_name);
    if (pt->unit_text)
        *gw_value_map_set(meta, "unit", 4) = gw_value_cstr(pt->unit_text);
    if (pt->p.has_min)
        *gw_value_map_set(meta, "min", 3) = gw_value_double(pt->p.min);
    if (pt->p.has_max)
        *gw_value_map_set(meta, "max", 3) = gw_value_double(pt->p.max);
    if (pt->band)
        *gw_value_map_set(meta, "deadband", 8) = gw_value_double(pt->band->band);
    *gw_value_map_set(meta, "interval_ms", 11) = gw_value_uint(in->groups[pt->group].interval_ms);
}

static int add_point(struct mb_inst *in, struct mb_point *pt)
{
    struct gw_value sample = sample_of(pt);
    bool rw = pt->p.access == GW_MODBUS_ACCESS_READ_WRITE;
    struct gw_resource_desc d = {
        .name = pt->p.name, .fn = rw ? GW_FN_INOUT : GW_FN_OUTPUT,
        .in = rw ? &sample : NULL, .out = &sample, .describe = point_describe,
        .run = run_point, .ctx = pt, .owner = in};
    int rc = gw_registry_add(in->host.registry, &d, &pt->id);
    gw_value_fini(&sample);
    return rc;
}

static int add_device(struct mb_inst *in, struct mb_device *dev)
{
    struct gw_value out = gw_value_map();
    for (size_t i = 0; i < dev->npts; i++) {
        struct gw_value s = sample_of(dev->pts[i]);
        *gw_value_map_set(&out, pt_name(dev->pts[i]), strlen(pt_name(dev->pts[i]))) = s;
    }
    struct gw_value meta = gw_value_map();
    char src[96];
    snprintf(src, sizeof src, "%s unit %u", dev->conn->name, dev->unit);
    *gw_value_map_set(&meta, "source", 6) = gw_value_cstr(src);
    struct gw_resource_desc d = {.name = dev->res_name, .fn = GW_FN_OUTPUT, .out = &out,
                                 .meta = &meta, .run = run_device, .ctx = dev, .owner = in};
    int rc = gw_registry_add(in->host.registry, &d, &dev->id);
    gw_value_fini(&out);
    gw_value_fini(&meta);
    return rc;
}

static int add_stats(struct mb_inst *in, struct mb_conn *conn)
{
    char name[160];
    snprintf(name, sizeof name, "%s/_stats/%s", in->name, conn->name);
    struct gw_resource_desc d = {.name = name, .fn = GW_FN_OUTPUT, .not_streamable = false,
                                 .run = run_stats, .ctx = conn, .owner = in};
    return gw_registry_add(in->host.registry, &d, &conn->stats_id);
}

/* --- Adapter operations --- */

static void inst_free(struct mb_inst *in)
{
    if (!in)
        return;
    for (size_t ci = 0; ci < in->nconns; ci++) {
        struct mb_conn *conn = &in->conns[ci];
        for (size_t j = 0; j < conn->njobs; j++) {
            struct mb_job *job = &conn->jobs[j];
            gw_modbus_plan_fini(&job->plan);
            if (job->own_pts)
                free(job->pts);
            free(job->req_off);
            free(job->buf16);
            free(job->buf8);
        }
        free(conn->jobs);
        free(conn->devs);
        free(conn->name);
        free(conn->host);
        free(conn->port);
        free(conn->device);
        pacer_unref(conn->pacer);
        gw_publish_batch_free(conn->batch);
    }
    for (size_t d = 0; d < in->ndevs; d++) {
        free(in->devs[d].name);
        free(in->devs[d].res_name);
        free(in->devs[d].pts);
    }
    for (size_t i = 0; i < in->npts; i++) {
        if (in->pts[i].band)
            gw_value_fini(&in->pts[i].band->last);
        free(in->pts[i].band);
    }
    for (struct mb_chunk *c = in->strings, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    for (size_t g = 0; g < in->ngroups; g++)
        free(in->groups[g].name);
    free(in->groups);
    free(in->conns);
    free(in->pool.heap);
    pthread_mutex_destroy(&in->pool.mu);
    pthread_cond_destroy(&in->pool.gone);
    free(in->devs);
    free(in->pts);
    free(in->name);
    free(in);
}

struct name_ref {
    const char *name;
    const char *owner; /* device of a point */
    bool is_device;
};

static int name_ref_cmp(const void *a, const void *b)
{
    const struct name_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c == 0)
        c = (int)x->is_device - (int)y->is_device;
    return c;
}

static int mb_create(const struct gw_host *host, const struct gw_value *config, void **state)
{
    struct cfg c = {.host = host};
    struct mb_inst *in = gw_calloc(1, sizeof *in);
    in->host = *host;
    const char *name = cfg_str(config, "name", host->instance ? host->instance : "modbus");
    in->name = gw_strdup(name);
    if (strlen(name) > 128) /* the schema allows 64; a name from elsewhere is checked here */
        cfg_err(&c, "/name", "instance name \"%.40s...\" is longer than 128 characters", name);

    /* Poll groups: "default" first, then the configured ones. */
    const struct gw_value *groups = cfg_get(config, "poll_groups");
    size_t ng = cfg_count(groups);
    in->groups = gw_calloc(ng + 1, sizeof *in->groups);
    in->groups[0].name = gw_strdup("default");
    in->groups[0].interval_ms = cfg_uint(&c, config, "", "interval_ms", MB_DEFAULT_INTERVAL_MS,
                                         1, 86400000);
    in->ngroups = 1;
    for (size_t g = 0; g < ng && groups->type == GW_VALUE_ARRAY; g++) {
        char base[MB_PTR], ptr[MB_PTR];
        snprintf(base, sizeof base, "/poll_groups/%zu", g);
        const struct gw_value *gv = &groups->c.items[g];
        const char *gname = cfg_str(gv, "name", "");
        uint64_t iv = cfg_uint(&c, gv, base, "interval_ms", MB_DEFAULT_INTERVAL_MS, 1, 86400000);
        size_t slot = in->ngroups;
        for (size_t k = 0; k < in->ngroups; k++)
            if (strcmp(in->groups[k].name, gname) == 0)
                slot = k;
        if (slot == 0) {
            in->groups[0].interval_ms = iv; /* redefines "default" */
            continue;
        }
        if (slot < in->ngroups) {
            snprintf(ptr, sizeof ptr, "%s/name", base);
            cfg_err(&c, ptr, "poll group \"%s\" is defined twice", gname);
            continue;
        }
        in->groups[slot].name = gw_strdup(gname);
        in->groups[slot].interval_ms = iv;
        in->ngroups++;
    }

    /* Count devices and points to allocate them in one go (pointers stay stable). */
    const struct gw_value *conns = cfg_get(config, "connections");
    size_t nc = cfg_count(conns), nd = 0, np = 0;
    if (!conns || conns->type != GW_VALUE_ARRAY || nc == 0) {
        cfg_err(&c, "/connections", "at least one connection is required");
        nc = 0;
    }
    for (size_t i = 0; i < nc; i++) {
        const struct gw_value *devs = cfg_get(&conns->c.items[i], "devices");
        size_t n = devs && devs->type == GW_VALUE_ARRAY ? devs->c.n : 0;
        nd += n;
        for (size_t d = 0; d < n; d++) {
            const struct gw_value *pts = cfg_get(&devs->c.items[d], "points");
            np += pts && pts->type == GW_VALUE_ARRAY ? pts->c.n : 0;
        }
    }
    pthread_mutex_init(&in->pool.mu, NULL);
    pthread_cond_init(&in->pool.gone, NULL);
    in->pool.heap = gw_calloc(nc + 1, sizeof *in->pool.heap);
    in->conns = gw_calloc(nc + 1, sizeof *in->conns);
    in->devs = gw_calloc(nd + 1, sizeof *in->devs);
    in->pts = gw_calloc(np + 1, sizeof *in->pts);
    for (size_t i = 0; i < nc; i++) {
        char base[MB_PTR];
        snprintf(base, sizeof base, "/connections/%zu", i);
        struct mb_conn *conn = &in->conns[in->nconns++];
        conn->pacer = pacer_new();
        conn->batch = gw_publish_batch_new();
        conn->heap_i = MB_NOT_QUEUED;
        parse_conn(&c, in, &conns->c.items[i], base, conn, &in->ndevs, &in->npts);
        for (size_t j = 0; j < i; j++)
            if (strcmp(in->conns[j].name, conn->name) == 0)
                cfg_err(&c, base, "connection name \"%s\" is used twice", conn->name);
    }
    /* Names must be unique across the instance: points and devices share the namespace. Sorted,
     * so that a map of tens of thousands of points is checked in n log n. */
    if (c.errors == 0) {
        size_t nn = in->npts + in->ndevs;
        struct name_ref *refs = gw_calloc(nn + 1, sizeof *refs);
        for (size_t i = 0; i < in->npts; i++)
            refs[i] = (struct name_ref){pt_name(&in->pts[i]), in->pts[i].dev->name, false};
        for (size_t d = 0; d < in->ndevs; d++)
            refs[in->npts + d] = (struct name_ref){in->devs[d].name, NULL, true};
        qsort(refs, nn, sizeof *refs, name_ref_cmp);
        for (size_t i = 1; i < nn; i++) {
            if (strcmp(refs[i - 1].name, refs[i].name) != 0)
                continue;
            const struct name_ref *a = &refs[i - 1], *b = &refs[i];
            if (!a->is_device && !b->is_device)
                cfg_err(&c, "/connections", "point name \"%s\" is used twice (devices %s and %s)",
                        a->name, a->owner, b->owner);
            else if (a->is_device && b->is_device)
                cfg_err(&c, "/connections", "device name \"%s\" is used twice", a->name);
            else
                cfg_err(&c, "/connections",
                        "device \"%s\" and a point have the same name (both are resources)",
                        a->name);
        }
        free(refs);
    }
    if (c.errors == 0) {
        char err[MB_ERR];
        if (build_jobs(in, err, sizeof err) < 0)
            cfg_err(&c, "/connections", "%s", err);
    }
    if (c.errors) {
        inst_free(in);
        return GW_ECONFIG;
    }
    *state = in;
    return 0;
}

static void mb_stop(void *state);

static int mb_start(void *state)
{
    struct mb_inst *in = state;
    int rc = 0;
    for (size_t i = 0; i < in->npts && rc == 0; i++)
        rc = add_point(in, &in->pts[i]);
    for (size_t d = 0; d < in->ndevs && rc == 0; d++)
        rc = add_device(in, &in->devs[d]);
    for (size_t ci = 0; ci < in->nconns && rc == 0; ci++)
        rc = add_stats(in, &in->conns[ci]);
    if (rc != 0) {
        if (in->host.log)
            in->host.log(&in->host, GW_LOG_ERR, "cannot register resources: %s",
                         gw_strerror(rc));
        gw_registry_remove_owner(in->host.registry, in);
        return rc;
    }
    in->started = true;
    /* Pool threads are created with MB_STACK_SIZE: the default (8 MiB of address space each)
     * would take 8 GiB of a 32-bit address space if 1,000 connections ever needed a thread each.
     * The deepest path (a failing write with its log line: vsnprintf, gw_log) touched 12-16 KiB
     * of stack in the daemon (/proc/PID/smaps, Rss of the stack mappings), so 256 KiB leaves a
     * wide margin; sanitizer builds get 2 MiB for their bigger frames. */
    struct mb_pool *pool = &in->pool;
    uint64_t now = mono_us();
    pthread_mutex_lock(&pool->mu);
    __atomic_store_n(&pool->stop, false, __ATOMIC_RELEASE);
    pool->nheap = 0;
    pool->max_threads = (unsigned)in->nconns;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    pool->ncpu = ncpu > 0 ? (unsigned)ncpu : 1;
    for (size_t ci = 0; ci < in->nconns; ci++) {
        struct mb_conn *conn = &in->conns[ci];
        conn_schedule_start(conn, now);
        conn->wake_us = now + 1000000u;
        for (size_t j = 0; j < conn->njobs; j++)
            if (conn->jobs[j].due < conn->wake_us)
                conn->wake_us = conn->jobs[j].due;
        heap_push(pool, conn);
    }
    pool_need_watcher(in);
    bool ok = pool->threads > 0 || in->nconns == 0;
    pthread_mutex_unlock(&pool->mu);
    if (!ok) {
        if (in->host.log)
            in->host.log(&in->host, GW_LOG_ERR, "cannot start a worker thread");
        mb_stop(in);
        return GW_ENOMEM;
    }
    return 0;
}

static void mb_stop(void *state)
{
    struct mb_inst *in = state;
    struct mb_pool *pool = &in->pool;
    pthread_mutex_lock(&pool->mu);
    __atomic_store_n(&pool->stop, true, __ATOMIC_RELEASE);
    pool_wake_all(pool);
    while (pool->threads > 0)
        pthread_cond_wait(&pool->gone, &pool->mu); /* a thread finishes its step first */
    pool->nheap = 0;
    struct mb_op *ops = NULL;
    for (size_t ci = 0; ci < in->nconns; ci++) {
        struct mb_conn *conn = &in->conns[ci];
        conn->heap_i = MB_NOT_QUEUED;
        if (conn->head) {
            conn->tail->next = ops;
            ops = conn->head;
        }
        conn->head = conn->tail = NULL;
    }
    pthread_mutex_unlock(&pool->mu);
    /* Fail what is still queued. */
    while (ops) {
        struct mb_op *next = ops->next;
        gw_call_fail(ops->call, GW_ECANCELED, "modbus %s: adapter stopping", in->name);
        gw_value_fini(&ops->in);
        free(ops);
        ops = next;
    }
    for (size_t ci = 0; ci < in->nconns; ci++) {
        struct mb_conn *conn = &in->conns[ci];
        pacer_mark(conn);
        io_free(conn);
        conn->connected = false;
    }
    in->started = false;
}

static void mb_destroy(void *state)
{
    struct mb_inst *in = state;
    if (in && in->started)
        mb_stop(in);
    inst_free(in);
}

const struct gw_adapter_ops gw_modbus_adapter = {
    .name = "modbus",
    .create = mb_create,
    .start = mb_start,
    .stop = mb_stop,
    .destroy = mb_destroy,
};
