/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Health figures (health.h). collect() fills one table of metrics from the session, the store, the
 * registry and /proc; both outputs are printed from that table, so the metrics endpoint and the
 * "$gateway/health" resource always say the same thing.
 */
#include "health.h"
#include "gw/error.h"
#include "gw/mem.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct metric {
    const char *name;   /* without the iotmp_gateway_ prefix */
    const char *type;   /* "gauge" or "counter" */
    const char *help;
    const char *label;  /* "direction=\"in\"" or NULL */
    double value;
};

#define MAX_METRICS 64

struct table {
    struct metric m[MAX_METRICS];
    size_t n;
    struct gw_registry_stats reg;
    const char *uplink;
};

static void add(struct table *t, const char *name, const char *type, const char *help,
                const char *label, double v)
{
    if (t->n < MAX_METRICS)
        t->m[t->n++] = (struct metric){name, type, help, label, v};
}

static double rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "re");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return (double)rss * (double)sysconf(_SC_PAGESIZE);
}

static double open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1; /* the directory stream itself */
}

static void collect(const struct gw_health_src *src, struct table *t)
{
    memset(t, 0, sizeof *t);
    gw_registry_get_stats(src->reg, &t->reg);
    t->uplink = "none";
    add(t, "resources", "gauge", "Resources registered by the adapters and the gateway", NULL,
        (double)t->reg.resources);
    add(t, "adapters", "gauge", "Adapter instances running", NULL, (double)src->adapters);
    if (src->session) {
        struct gw_session_stats s;
        gw_session_get_stats(src->session, &s);
        enum gw_session_state st = gw_session_state(src->session);
        t->uplink = gw_session_state_name(st);
        add(t, "uplink_connected", "gauge", "1 while the IOTMP session is ready", NULL,
            st == GW_SESSION_READY);
        add(t, "uplink_connects_total", "counter", "Connection attempts", NULL, (double)s.connects);
        add(t, "uplink_connect_failures_total", "counter", "Attempts that never became ready",
            NULL, (double)s.connect_failures);
        add(t, "uplink_link_losses_total", "counter", "Ready sessions lost", NULL,
            (double)s.link_losses);
        add(t, "uplink_dead_links_total", "counter", "Losses detected by keep-alive silence", NULL,
            (double)s.dead_links);
        add(t, "uplink_auth_failures_total", "counter", "Credentials refused", NULL,
            (double)s.auth_failures);
        add(t, "frames_total", "counter", "IOTMP frames", "direction=\"in\"", (double)s.frames_in);
        add(t, "frames_total", "counter", "IOTMP frames", "direction=\"out\"",
            (double)s.frames_out);
        add(t, "bytes_total", "counter", "IOTMP bytes", "direction=\"in\"", (double)s.bytes_in);
        add(t, "bytes_total", "counter", "IOTMP bytes", "direction=\"out\"", (double)s.bytes_out);
        add(t, "server_calls_total", "counter", "Calls to server resources", NULL,
            (double)s.calls_out);
        add(t, "calls_refused_total", "counter",
            "Calls from the server refused because uplink.max_calls were running", NULL,
            (double)s.calls_refused);
        add(t, "server_calls_failed_total", "counter", "Calls to server resources that failed",
            NULL, (double)s.calls_out_failed);
        add(t, "stream_samples_total", "counter", "STREAM_DATA samples sent", NULL,
            (double)s.stream_samples);
        add(t, "stream_samples_coalesced_total", "counter",
            "Samples replaced by a newer one while the link was busy", NULL,
            (double)s.samples_coalesced);
        add(t, "streams_open", "gauge", "Streams opened by the server", NULL,
            (double)s.streams_open);
    }
    add(t, "run_calls_total", "counter", "Resource calls that ended", "outcome=\"ok\"",
        (double)t->reg.ok.count);
    add(t, "run_calls_total", "counter", "Resource calls that ended", "outcome=\"error\"",
        (double)t->reg.failed.count);
    if (src->store) {
        struct gw_store_stats s;
        gw_store_read_stats(src->store, &s);
        add(t, "store_depth", "gauge", "Rows waiting in the store", NULL, (double)s.depth);
        add(t, "store_bytes", "gauge", "Bytes counted against the store budget", NULL,
            (double)s.bytes);
        add(t, "store_budget_bytes", "gauge", "Store budget", NULL, (double)s.budget_bytes);
        add(t, "store_oldest_age_seconds", "gauge", "Age of the oldest row (-1 when empty)", NULL,
            s.oldest_age_ms < 0 ? -1 : (double)s.oldest_age_ms / 1000);
        add(t, "store_delivered_total", "counter", "Rows acknowledged by the broker", NULL,
            (double)s.delivered);
        add(t, "store_dropped_total", "counter", "Rows dropped by the drop_oldest policy", NULL,
            (double)s.dropped);
        add(t, "store_refused_total", "counter", "Rows refused (budget)", NULL, (double)s.refused);
        add(t, "store_expired_total", "counter", "Rows dropped for their age", NULL,
            (double)s.expired);
        add(t, "store_write_errors_total", "counter",
            "Store commits that failed (disk full, I/O error)", NULL, (double)s.write_errors);
        add(t, "store_lost_total", "counter",
            "Rows never accepted because their commit failed", NULL, (double)s.lost);
        add(t, "store_write_failing", "gauge", "1 while the store's last commit failed", NULL,
            s.fault != 0);
        add(t, "store_disk_full", "gauge",
            "1 while the file system is full (the store's size acts as its budget)", NULL,
            s.disk_full);
    }
    add(t, "resident_memory_bytes", "gauge", "Resident memory of the daemon", NULL, rss_bytes());
    add(t, "open_fds", "gauge", "Open file descriptors", NULL, open_fds());
}

/* --- Prometheus text --- */

struct sbuf {
    char **buf;
    size_t *len;
    size_t cap;
};

static void out(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*b->buf + *b->len, b->cap - *b->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < b->cap - *b->len) {
            *b->len += (size_t)n;
            return;
        }
        b->cap = b->cap * 2 + (n > 0 ? (size_t)n : 0);
        *b->buf = gw_realloc(*b->buf, b->cap);
    }
}

/* Adapter statistics as labelled samples: every number or boolean leaf of each cached _stats
 * answer, its path joined with "." ({"devices":{"boiler":{"timeouts":3}}} -> devices.boiler.timeouts). */
/*
 * The cache of _stats answers keeps each as its PSON encoding (a BYTES value): with 1,000 Modbus
 * connections the answers as value trees took ~1.8 MiB, encoded ~0.3 MiB. They are decoded when
 * the metrics or $gateway/health are asked for, every few seconds at most.
 */
static struct gw_value stats_pack(const struct gw_value *v)
{
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, NULL, 0);
    gw_value_encode(v, &w);
    uint8_t *buf = gw_malloc(w.len + 1);
    size_t len = w.len;
    gw_pson_writer_init(&w, buf, len);
    gw_value_encode(v, &w);
    struct gw_value out = gw_value_bytes(buf, len);
    free(buf);
    return out;
}

static struct gw_value stats_unpack(const struct gw_value *packed)
{
    struct gw_value v = GW_VALUE_INIT_NULL;
    if (packed->type == GW_VALUE_BYTES && gw_value_decode(packed->s.p, packed->s.len, &v) < 0)
        v = GW_VALUE_INIT_NULL;
    return v;
}

static void stat_leaves(struct sbuf *b, const char *res, const struct gw_value *v, char *path,
                        size_t len, size_t cap)
{
    double d;
    if (v->type == GW_VALUE_MAP) {
        for (size_t i = 0; i < v->c.n; i++) {
            int w = snprintf(path + len, cap - len, "%s%s", len ? "." : "", v->c.keys[i]);
            if (w > 0 && (size_t)w < cap - len)
                stat_leaves(b, res, &v->c.items[i], path, len + (size_t)w, cap);
        }
        return;
    }
    if (v->type == GW_VALUE_BOOL)
        d = v->b;
    else if (gw_value_to_double(v, &d) < 0)
        return;
    path[len] = '\0';
    /* Label values come from configured names: escape what the text format requires. */
    out(b, "iotmp_gateway_adapter_stat{resource=\"");
    for (const char *c = res; *c; c++)
        out(b, *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
    out(b, "\",key=\"");
    for (const char *c = path; *c; c++)
        out(b, *c == '"' || *c == '\\' ? "\\%c" : "%c", *c);
    out(b, "\"} %.17g\n", d);
}

static void histogram(struct sbuf *b, const char *outcome, const struct gw_registry_outcome *o)
{
    for (int i = 0; i < GW_REGISTRY_LAT_BUCKETS; i++) {
        uint64_t bound = gw_registry_lat_bounds_us[i];
        if (bound == UINT64_MAX)
            out(b, "iotmp_gateway_run_latency_seconds_bucket{outcome=\"%s\",le=\"+Inf\"} %llu\n",
                outcome, (unsigned long long)o->buckets[i]);
        else
            out(b, "iotmp_gateway_run_latency_seconds_bucket{outcome=\"%s\",le=\"%g\"} %llu\n",
                outcome, (double)bound / 1e6, (unsigned long long)o->buckets[i]);
    }
    out(b, "iotmp_gateway_run_latency_seconds_sum{outcome=\"%s\"} %.6f\n", outcome,
        (double)o->sum_us / 1e6);
    out(b, "iotmp_gateway_run_latency_seconds_count{outcome=\"%s\"} %llu\n", outcome,
        (unsigned long long)o->count);
}

void gw_health_prometheus(const struct gw_health_src *src, char **buf, size_t *len)
{
    struct table t;
    collect(src, &t);
    struct sbuf b = {buf, len, *len + 4096};
    *buf = gw_realloc(*buf, b.cap);
    out(&b, "# HELP iotmp_gateway_info Version of the running daemon\n"
            "# TYPE iotmp_gateway_info gauge\n"
            "iotmp_gateway_info{version=\"%s\",uplink_state=\"%s\"} 1\n",
        GW_VERSION, t.uplink);
    for (size_t i = 0; i < t.n; i++) {
        const struct metric *m = &t.m[i];
        if (i == 0 || strcmp(t.m[i - 1].name, m->name) != 0)
            out(&b, "# HELP iotmp_gateway_%s %s\n# TYPE iotmp_gateway_%s %s\n", m->name, m->help,
                m->name, m->type);
        if (m->label)
            out(&b, "iotmp_gateway_%s{%s} %.17g\n", m->name, m->label, m->value);
        else
            out(&b, "iotmp_gateway_%s %.17g\n", m->name, m->value);
    }
    out(&b, "# HELP iotmp_gateway_run_latency_seconds Time from a call's start to its answer\n"
            "# TYPE iotmp_gateway_run_latency_seconds histogram\n");
    histogram(&b, "ok", &t.reg.ok);
    histogram(&b, "error", &t.reg.failed);
    if (gw_value_count(&src->stats)) {
        out(&b, "# HELP iotmp_gateway_adapter_stat Adapter counters and device status from the "
                "adapters' _stats resources (refreshed every %d s)\n"
                "# TYPE iotmp_gateway_adapter_stat gauge\n", GW_HEALTH_STATS_MS / 1000);
        char path[512];
        for (size_t i = 0; i < src->stats.c.n; i++) {
            struct gw_value v = stats_unpack(&src->stats.c.items[i]);
            stat_leaves(&b, src->stats.c.keys[i], &v, path, 0, sizeof path);
            gw_value_fini(&v);
        }
    }
}

/* --- $gateway/health --- */

struct gw_value gw_health_value(const struct gw_health_src *src)
{
    struct table t;
    collect(src, &t);
    struct gw_value v = gw_value_map();
    *gw_value_map_set(&v, "version", 7) = gw_value_cstr(GW_VERSION);
    *gw_value_map_set(&v, "uplink", 6) = gw_value_cstr(t.uplink);
    for (size_t i = 0; i < t.n; i++) {
        char key[128];
        if (t.m[i].label) { /* direction="in" → frames_total.in */
            const char *q = strchr(t.m[i].label, '"');
            snprintf(key, sizeof key, "%s.%.*s", t.m[i].name,
                     q ? (int)strcspn(q + 1, "\"") : 0, q ? q + 1 : "");
        } else {
            snprintf(key, sizeof key, "%s", t.m[i].name);
        }
        *gw_value_map_set(&v, key, strlen(key)) = gw_value_double(t.m[i].value);
    }
    if (gw_value_count(&src->stats)) {
        struct gw_value *all = gw_value_map_set(&v, "adapters_stats", 14);
        *all = gw_value_map();
        for (size_t i = 0; i < src->stats.c.n; i++)
            *gw_value_map_set(all, src->stats.c.keys[i], strlen(src->stats.c.keys[i])) =
                stats_unpack(&src->stats.c.items[i]);
    }
    return v;
}

static int health_run(void *ctx, struct gw_call *call)
{
    struct gw_value v = gw_health_value(ctx);
    gw_call_reply(call, &v);
    return 0;
}

/* --- Adapter statistics --- */

struct stats_call {
    struct gw_health_src *src;
    char *name;
};

static void stats_done(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    struct stats_call *c = arg;
    (void)msg;
    c->src->stats_pending--;
    /* After gw_health_stop() (timer gone) the answer has nowhere to go; src itself outlives the
     * loop's final drain, which is when such a late answer arrives. */
    if (rc == 0 && out && c->src->stats_timer) {
        struct gw_value *slot = gw_value_map_set(&c->src->stats, c->name, strlen(c->name));
        gw_value_fini(slot);
        *slot = stats_pack(out);
    }
    free(c->name);
    free(c);
}

static void stats_call_one(void *arg, struct gw_res *res)
{
    struct gw_health_src *src = arg;
    if (!strstr(gw_res_name(res), "/_stats"))
        return;
    struct stats_call *c = gw_malloc(sizeof *c);
    c->src = src;
    c->name = gw_strdup(gw_res_name(res));
    src->stats_pending++;
    gw_registry_call(src->reg, res, NULL, NULL, stats_done, c);
}

static void stats_tick(void *arg)
{
    struct gw_health_src *src = arg;
    /* Resources come and go with reloads: start from an empty cache each round. */
    if (src->stats_pending == 0) {
        gw_value_fini(&src->stats);
        src->stats = gw_value_map();
        gw_registry_foreach(src->reg, stats_call_one, src);
    }
    gw_timer_start(src->stats_timer, GW_HEALTH_STATS_MS);
}

int gw_health_register(struct gw_health_src *src, struct gw_loop *loop)
{
    src->stats = gw_value_map();
    src->stats_timer = gw_timer_new(loop, stats_tick, src);
    gw_timer_start(src->stats_timer, 0);
    struct gw_resource_desc d = {.name = "$gateway/health", .fn = GW_FN_OUTPUT, .run = health_run,
                                 .ctx = src, .owner = src};
    return gw_registry_add(src->reg, &d, NULL);
}

void gw_health_stop(struct gw_health_src *src)
{
    gw_timer_free(src->stats_timer);
    src->stats_timer = NULL;
    gw_registry_remove_owner(src->reg, src);
    gw_value_fini(&src->stats);
}
