/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MQTT adapter (mqtt_adapter.h). One libmosquitto client per instance, driven by the gateway
 * loop: the client's socket is watched (readable always, writable while mosquitto_want_write()),
 * a 1 s timer runs mosquitto_loop_misc() (keep-alive) and write time-outs, and a one-shot timer
 * reconnects with doubling back-off. All libmosquitto callbacks therefore run on the loop thread,
 * which is also where the registry calls us, so no state here needs a lock. The one blocking call
 * libmosquitto would make, the broker's name lookup, runs in a short-lived thread per attempt.
 *
 * Resources: a mapping whose name has no "{N}" (or whose subscription has no wildcard) is one
 * resource registered at start; a mapping with "{N}" and a wildcard subscription registers one
 * resource per new topic, up to max_topics per instance (further topics are counted and logged).
 * The last value and the time it arrived are kept per resource; the registry gets a publish when
 * the value changes (or on every message with "publish": "every").
 *
 * Writes: a call with an input renders the payload (mqtt_map.c) and publishes it; the call is
 * answered from on_publish, which libmosquitto runs after sending a QoS 0 message and after
 * PUBACK (QoS 1) or PUBCOMP (QoS 2). A QoS 0 publish may complete inside mosquitto_publish()
 * itself, which is why the mid is matched after the call returns as well.
 *
 * Bad input is counted (see _stats) and logged: the first five of each kind, then every 1000th.
 */
#include "mqtt_adapter.h"
#include "mqtt_map.h"

#include "gw/error.h"
#include "gw/json.h"
#include "gw/log.h"
#include "gw/mem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <mosquitto.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MQ_TICK_MS 1000
#define MQ_READ_BURST 256

struct mq;
struct mq_resolve;

struct mq_map {
    size_t index; /* position in "mappings", for messages */
    char *name;   /* template, without the instance prefix */
    char *filter; /* NULL: write-only */
    int sub_qos;
    bool dynamic; /* one resource per topic */
    enum gw_mqtt_format format;
    char *pointer;
    enum gw_mqtt_as as;
    bool every;
    char *unit;
    bool has_min, has_max;
    double min, max;
    bool writable;
    char *wtopic;
    int wqos;
    bool wretain;
    json_t *wtmpl;
    char *true_text, *false_text;
    struct mq_res *fixed; /* the resource of a non-dynamic mapping */
};

struct mq_res {
    struct mq_res *hnext;
    struct mq *q;
    struct mq_map *map;
    char *name;  /* full resource name */
    char *topic; /* topic whose segments fill "{N}" (NULL: none) */
    uint32_t id;
    struct gw_value last;
    bool has_last;
    bool stale;            /* marked stale in the registry while the broker link was down */
    uint64_t last_rx_ms;   /* monotonic */
    uint64_t last_rx_wall; /* wall clock, for "ts" */
    uint64_t messages;
};

struct mq_pending {
    struct mq_pending *next;
    int mid;
    struct gw_call *call;
    uint64_t deadline;
    char *topic;
};

struct mq_stats {
    uint64_t messages, bytes, unmatched, oversize, bad_json, no_field, coerce, unnamed, over_limit,
        name_clash, register_failed, published, connects, connect_failures, disconnects, writes,
        write_errors, write_timeouts, lib_errors;
};

struct mq {
    const struct gw_host *host; /* borrowed: the core keeps it for the instance's lifetime */
    char *instance;
    /* config */
    char *hostname;
    int port, keepalive;
    char *client_id, *username, *password_file;
    bool clean_session;
    bool tls;
    char *ca_file, *ca_dir, *cert_file, *key_file;
    bool tls_insecure;
    char *will_topic, *will_payload;
    int will_qos;
    bool will_retain;
    unsigned reconnect_min, reconnect_max, connect_timeout;
    size_t max_topics, max_payload;
    unsigned write_timeout;
    struct mq_map *maps;
    size_t n_maps;
    /* run time */
    struct mosquitto *mosq;
    struct gw_watch *watch;
    int watch_fd;
    unsigned watch_events;
    struct gw_timer *tick, *retry;
    unsigned backoff;
    bool started, stopping, connected, ever_connected;
    uint64_t connect_started;     /* monotonic ms of the last attempt, 0 = none under way */
    bool numeric_host;            /* host is an address: no name lookup */
    struct mq_resolve *resolving; /* name lookup under way in a thread, or NULL */
    int publishing_mid;           /* mid that completed inside mosquitto_publish() */
    bool in_publish;
    struct mq_res **buckets;
    size_t n_buckets, n_res, n_dynamic;
    struct mq_res *stats_res;
    struct mq_pending *pending;
    struct mq_stats st;
    char last_error[256];
    char tls_error[200]; /* last OpenSSL error libmosquitto logged */
};

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static void lib_init(void)
{
    mosquitto_lib_init();
}

/* Text for a libmosquitto error code, with the OpenSSL reason for TLS failures. */
static void set_error(struct mq *q, int rc)
{
    if (rc == MOSQ_ERR_ERRNO)
        snprintf(q->last_error, sizeof q->last_error, "%s", strerror(errno));
    else if (rc == MOSQ_ERR_TLS && q->tls_error[0])
        snprintf(q->last_error, sizeof q->last_error, "TLS failure: %s", q->tls_error);
    else
        snprintf(q->last_error, sizeof q->last_error, "%s", mosquitto_strerror(rc));
}

static bool should_log(uint64_t count)
{
    return count <= 5 || count % 1000 == 0;
}

/* --- Config --- */

static const char *cfg_str(const struct gw_value *m, const char *key)
{
    const struct gw_value *v = gw_value_map_get(m, key);
    return v && v->type == GW_VALUE_STRING ? v->s.p : NULL;
}

static char *cfg_dup(const struct gw_value *m, const char *key)
{
    const char *s = cfg_str(m, key);
    return s ? gw_strdup(s) : NULL;
}

static bool cfg_num(const struct gw_value *m, const char *key, double *d)
{
    const struct gw_value *v = gw_value_map_get(m, key);
    return v && gw_value_to_double(v, d) == 0;
}

static long long cfg_int(const struct gw_value *m, const char *key, long long def)
{
    double d;
    return cfg_num(m, key, &d) ? (long long)d : def;
}

static bool cfg_bool(const struct gw_value *m, const char *key, bool def)
{
    const struct gw_value *v = gw_value_map_get(m, key);
    return v && v->type == GW_VALUE_BOOL ? v->b : def;
}

static void mq_free(struct mq *q);

static int parse_map(struct mq *q, const struct gw_value *m, struct mq_map *map, size_t i)
{
    const struct gw_host *h = q->host;
    const char *why;
    int bad = 0;
    unsigned maxi = 0;
    size_t levels = 0;
    bool multi = false, wild = false;
    map->index = i;
    map->name = cfg_dup(m, "name");
    map->filter = cfg_dup(m, "subscribe");
    map->pointer = cfg_dup(m, "pointer");
    map->unit = cfg_dup(m, "unit");
    map->sub_qos = (int)cfg_int(m, "qos", 0);
    map->has_min = cfg_num(m, "min", &map->min);
    map->has_max = cfg_num(m, "max", &map->max);
    const char *pub = cfg_str(m, "publish");
    map->every = pub && !strcmp(pub, "every");
    if (!map->name) {
        h->config_error(h, "", "mappings/%zu has no name", i);
        return GW_ECONFIG;
    }
    if (gw_mqtt_format_parse(cfg_str(m, "format"), &map->format)) {
        h->config_error(h, "", "mappings/%zu/format: unknown format", i);
        bad = 1;
    }
    if (gw_mqtt_as_parse(cfg_str(m, "as"), &map->as)) {
        h->config_error(h, "", "mappings/%zu/as: unknown type", i);
        bad = 1;
    }
    char ptr[64];
    snprintf(ptr, sizeof ptr, "/mappings/%zu/name", i);
    if (gw_mqtt_template_check(map->name, &maxi, &why)) {
        h->config_error(h, ptr, "%s", why);
        bad = 1;
    }
    if (map->filter) {
        snprintf(ptr, sizeof ptr, "/mappings/%zu/subscribe", i);
        if (gw_mqtt_filter_check(map->filter, &levels, &multi, &wild, &why)) {
            h->config_error(h, ptr, "%s", why);
            bad = 1;
        } else if (maxi > levels && !multi) {
            snprintf(ptr, sizeof ptr, "/mappings/%zu/name", i);
            h->config_error(h, ptr,
                            "placeholder {%u} names topic level %u, but \"%s\" matches topics of "
                            "%zu level%s only",
                            maxi, maxi, map->filter, levels, levels == 1 ? "" : "s");
            bad = 1;
        }
        map->dynamic = wild && maxi > 0;
    } else if (maxi > 0) {
        h->config_error(
            h, ptr, "placeholder {%u} needs a topic, but this mapping has no \"subscribe\"", maxi);
        bad = 1;
    }
    if (map->pointer && *map->pointer && map->format == GW_MQTT_FMT_TEXT) {
        snprintf(ptr, sizeof ptr, "/mappings/%zu/pointer", i);
        h->config_error(h, ptr, "a JSON Pointer cannot apply to format \"text\"");
        bad = 1;
    }
    const struct gw_value *w = gw_value_map_get(m, "write");
    if (w && w->type == GW_VALUE_MAP) {
        unsigned wmax = 0;
        map->writable = true;
        map->wtopic = cfg_dup(w, "topic");
        map->wqos = (int)cfg_int(w, "qos", 0);
        map->wretain = cfg_bool(w, "retain", false);
        map->true_text = cfg_dup(w, "true_text");
        map->false_text = cfg_dup(w, "false_text");
        snprintf(ptr, sizeof ptr, "/mappings/%zu/write/topic", i);
        if (!map->wtopic) {
            h->config_error(h, ptr, "missing");
            bad = 1;
        } else if (gw_mqtt_template_check(map->wtopic, &wmax, &why) ||
                   gw_mqtt_topic_check(map->wtopic, &why)) {
            h->config_error(h, ptr, "%s", why);
            bad = 1;
        } else if (wmax > 0 && (!map->filter || (!map->dynamic && wild))) {
            h->config_error(h, ptr,
                            "placeholder {%u} needs the resource's own topic, but this mapping "
                            "%s",
                            wmax,
                            map->filter ? "makes one resource for many topics (no {N} in name)"
                                        : "has no \"subscribe\"");
            bad = 1;
        } else if (wmax > levels && !multi) {
            h->config_error(h, ptr, "placeholder {%u} is beyond the %zu levels of \"%s\"", wmax,
                            levels, map->filter);
            bad = 1;
        }
        const struct gw_value *pl = gw_value_map_get(w, "payload");
        if (pl) {
            map->wtmpl = gw_value_to_json(pl);
            if (!map->wtmpl) {
                snprintf(ptr, sizeof ptr, "/mappings/%zu/write/payload", i);
                h->config_error(h, ptr, "template is not valid UTF-8");
                bad = 1;
            }
        }
    }
    return bad ? GW_ECONFIG : 0;
}

static int mq_create(const struct gw_host *host, const struct gw_value *config, void **state)
{
    struct mq *q = gw_calloc(1, sizeof *q);
    q->host = host;
    const char *iname = host->instance ? host->instance : cfg_str(config, "name");
    q->instance = gw_strdup(iname ? iname : "mqtt");
    q->watch_fd = -1;
    q->publishing_mid = -1;
    const struct gw_host *h = q->host;
    int bad = 0;

    const struct gw_value *b = gw_value_map_get(config, "broker");
    if (!b || b->type != GW_VALUE_MAP) {
        h->config_error(h, "/broker", "missing");
        mq_free(q);
        return GW_ECONFIG;
    }
    const struct gw_value *tls = gw_value_map_get(b, "tls");
    q->tls = tls && tls->type == GW_VALUE_MAP;
    q->hostname = cfg_dup(b, "host");
    q->port = (int)cfg_int(b, "port", q->tls ? 8883 : 1883);
    if (q->hostname) {
        struct in6_addr a6;
        q->numeric_host =
            inet_pton(AF_INET, q->hostname, &a6) == 1 || inet_pton(AF_INET6, q->hostname, &a6) == 1;
    }
    q->keepalive = (int)cfg_int(b, "keepalive", 60);
    q->clean_session = cfg_bool(b, "clean_session", true);
    q->client_id = cfg_dup(b, "client_id");
    if (!q->client_id) {
        size_t n = strlen(q->instance) + 16;
        q->client_id = gw_malloc(n);
        snprintf(q->client_id, n, "iotmp-gw-%s", q->instance);
    }
    q->username = cfg_dup(b, "username");
    q->password_file = cfg_dup(b, "password_file");
    q->reconnect_min = (unsigned)cfg_int(b, "reconnect_min", 500);
    q->reconnect_max = (unsigned)cfg_int(b, "reconnect_max", 30000);
    q->connect_timeout = (unsigned)cfg_int(b, "connect_timeout", 15000);
    if (!q->hostname) {
        h->config_error(h, "/broker/host", "missing");
        bad = 1;
    }
    if (q->password_file && !q->username) {
        h->config_error(h, "/broker/password_file", "a password needs \"username\" as well");
        bad = 1;
    }
    if (q->reconnect_max < q->reconnect_min) {
        h->config_error(h, "/broker/reconnect_max", "is smaller than reconnect_min (%u ms)",
                        q->reconnect_min);
        bad = 1;
    }
    if (q->tls) {
        q->ca_file = cfg_dup(tls, "ca_file");
        q->ca_dir = cfg_dup(tls, "ca_dir");
        q->cert_file = cfg_dup(tls, "cert_file");
        q->key_file = cfg_dup(tls, "key_file");
        q->tls_insecure = cfg_bool(tls, "insecure", false);
        if (!q->ca_file && !q->ca_dir) {
            h->config_error(h, "/broker/tls",
                            "needs \"ca_file\" or \"ca_dir\" to verify the broker");
            bad = 1;
        }
        if (!q->cert_file != !q->key_file) {
            h->config_error(h, q->cert_file ? "/broker/tls/cert_file" : "/broker/tls/key_file",
                            "cert_file and key_file go together");
            bad = 1;
        }
    }
    const struct gw_value *will = gw_value_map_get(b, "will");
    if (will && will->type == GW_VALUE_MAP) {
        const char *why;
        q->will_topic = cfg_dup(will, "topic");
        q->will_payload = cfg_dup(will, "payload");
        q->will_qos = (int)cfg_int(will, "qos", 0);
        q->will_retain = cfg_bool(will, "retain", false);
        if (gw_mqtt_topic_check(q->will_topic, &why)) {
            h->config_error(h, "/broker/will/topic", "%s", why);
            bad = 1;
        }
    }
    q->max_topics = (size_t)cfg_int(config, "max_topics", 1000);
    q->max_payload = (size_t)cfg_int(config, "max_payload", 65536);
    q->write_timeout = (unsigned)cfg_int(config, "write_timeout", 10000);

    const struct gw_value *maps = gw_value_map_get(config, "mappings");
    if (!maps || maps->type != GW_VALUE_ARRAY || maps->c.n == 0) {
        h->config_error(h, "/mappings", "needs at least one mapping");
        mq_free(q);
        return GW_ECONFIG;
    }
    q->n_maps = maps->c.n;
    q->maps = gw_calloc(q->n_maps, sizeof *q->maps);
    for (size_t i = 0; i < q->n_maps; i++) {
        if (maps->c.items[i].type != GW_VALUE_MAP) {
            h->config_error(h, "/mappings", "entry %zu is not an object", i);
            bad = 1;
            continue;
        }
        if (parse_map(q, &maps->c.items[i], &q->maps[i], i))
            bad = 1;
    }
    /* Fixed names must be unique (dynamic ones clash only at run time, and are counted). */
    for (size_t i = 0; i < q->n_maps && !bad; i++) {
        for (size_t j = 0; j < i; j++) {
            if (!q->maps[i].dynamic && !q->maps[j].dynamic && q->maps[i].name && q->maps[j].name &&
                !strcmp(q->maps[i].name, q->maps[j].name) && !strchr(q->maps[i].name, '{')) {
                char ptr[64];
                snprintf(ptr, sizeof ptr, "/mappings/%zu/name", i);
                h->config_error(h, ptr, "resource \"%s/%s\" is already defined by mappings/%zu",
                                q->instance, q->maps[i].name, j);
                bad = 1;
            }
        }
    }
    if (bad) {
        mq_free(q);
        return GW_ECONFIG;
    }
    *state = q;
    return 0;
}

/* --- Resource table --- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211ull;
    return h;
}

static struct mq_res *res_find(struct mq *q, const char *name)
{
    if (!q->n_buckets)
        return NULL;
    for (struct mq_res *r = q->buckets[hash_str(name) & (q->n_buckets - 1)]; r; r = r->hnext)
        if (!strcmp(r->name, name))
            return r;
    return NULL;
}

static void res_insert(struct mq *q, struct mq_res *r)
{
    if (q->n_res + 1 > q->n_buckets) {
        size_t nb = q->n_buckets ? q->n_buckets * 2 : 64;
        struct mq_res **nbk = gw_calloc(nb, sizeof *nbk);
        for (size_t i = 0; i < q->n_buckets; i++) {
            struct mq_res *x = q->buckets[i], *next;
            for (; x; x = next) {
                next = x->hnext;
                size_t k = hash_str(x->name) & (nb - 1);
                x->hnext = nbk[k];
                nbk[k] = x;
            }
        }
        free(q->buckets);
        q->buckets = nbk;
        q->n_buckets = nb;
    }
    size_t k = hash_str(r->name) & (q->n_buckets - 1);
    r->hnext = q->buckets[k];
    q->buckets[k] = r;
    q->n_res++;
}

static void res_free_all(struct mq *q)
{
    for (size_t i = 0; i < q->n_buckets; i++) {
        struct mq_res *r = q->buckets[i], *next;
        for (; r; r = next) {
            next = r->hnext;
            gw_value_fini(&r->last);
            free(r->name);
            free(r->topic);
            free(r);
        }
    }
    free(q->buckets);
    q->buckets = NULL;
    q->n_buckets = q->n_res = q->n_dynamic = 0;
}

static struct gw_value sample_for(enum gw_mqtt_as as)
{
    switch (as) {
    case GW_MQTT_AS_NUMBER:
        return gw_value_double(0);
    case GW_MQTT_AS_INTEGER:
        return gw_value_int(0);
    case GW_MQTT_AS_BOOL:
        return gw_value_bool(false);
    case GW_MQTT_AS_STRING:
        return gw_value_cstr("");
    default:
        return GW_VALUE_INIT_NULL;
    }
}

static int res_run(void *ctx, struct gw_call *call);

/* Registers a resource. Returns it, or NULL (logged) if the registry refuses the name. */
static struct mq_res *res_add(struct mq *q, struct mq_map *map, const char *name, const char *topic)
{
    struct mq_res *r = gw_calloc(1, sizeof *r);
    r->q = q;
    r->map = map;
    r->name = gw_strdup(name);
    r->topic = topic ? gw_strdup(topic) : NULL;

    struct gw_value meta = gw_value_map(), in = sample_for(map->as), out = sample_for(map->as);
    char src[600];
    if (map->filter)
        snprintf(src, sizeof src, "mqtt %s%s%s", topic ? topic : map->filter,
                 map->pointer && *map->pointer ? " " : "", map->pointer ? map->pointer : "");
    else
        snprintf(src, sizeof src, "mqtt (write only)");
    *gw_value_map_set(&meta, "source", 6) = gw_value_cstr(src);
    if (map->as != GW_MQTT_AS_AUTO)
        *gw_value_map_set(&meta, "type", 4) = gw_value_cstr(gw_mqtt_as_name(map->as));
    if (map->filter)
        *gw_value_map_set(&meta, "params", 6) =
            gw_value_cstr("optional {\"age\": true}: answer {value, age_ms, ts, stale, messages}");
    if (map->unit && *map->unit)
        *gw_value_map_set(&meta, "unit", 4) = gw_value_cstr(map->unit);
    if (map->has_min)
        *gw_value_map_set(&meta, "min", 3) = gw_value_double(map->min);
    if (map->has_max)
        *gw_value_map_set(&meta, "max", 3) = gw_value_double(map->max);
    if (map->writable) {
        char *wt = NULL;
        char wbuf[700];
        if (gw_mqtt_template_expand(map->wtopic, topic ? topic : "", &wt) == 0) {
            snprintf(wbuf, sizeof wbuf, "%s qos %d%s", wt, map->wqos,
                     map->wretain ? " retain" : "");
            *gw_value_map_set(&meta, "write", 5) = gw_value_cstr(wbuf);
        }
        free(wt);
    }
    struct gw_resource_desc d = {
        .name = name,
        .fn = map->writable ? (map->filter ? GW_FN_INOUT : GW_FN_INPUT) : GW_FN_OUTPUT,
        .in = map->writable ? &in : NULL,
        .out = map->filter && map->as != GW_MQTT_AS_AUTO ? &out : NULL,
        .meta = &meta,
        .run = res_run,
        .ctx = r,
        .owner = q,
    };
    int rc = gw_registry_add(q->host->registry, &d, &r->id);
    gw_value_fini(&meta);
    gw_value_fini(&in);
    gw_value_fini(&out);
    if (rc) {
        q->st.register_failed++;
        if (should_log(q->st.register_failed))
            q->host->log(q->host, GW_LOG_WARN,
                         "cannot register resource \"%.100s%s\" (%zu bytes): %s (%llu so far)",
                         name, strlen(name) > 100 ? "..." : "", strlen(name), gw_strerror(rc),
                         (unsigned long long)q->st.register_failed);
        free(r->name);
        free(r->topic);
        free(r);
        return NULL;
    }
    res_insert(q, r);
    return r;
}

/* --- Connection handling --- */

static void on_fd(void *arg, int fd, unsigned events);
static void schedule_retry(struct mq *q);

/* Keeps the watch on mosquitto's socket in step with the client: re-watches a new socket,
 * drops the watch of a closed one, asks for writability while output is queued, and schedules a
 * reconnect when the socket went away. Called after every libmosquitto operation. */
static void sync_io(struct mq *q)
{
    int fd = q->mosq ? mosquitto_socket(q->mosq) : -1;
    if (q->watch && (fd < 0 || fd != q->watch_fd)) {
        gw_loop_unwatch(q->watch);
        q->watch = NULL;
        q->watch_fd = -1;
    }
    if (fd < 0) {
        q->connected = false;
        if (q->started && !q->stopping && !q->resolving)
            schedule_retry(q);
        return;
    }
    unsigned ev = GW_LOOP_IN | (mosquitto_want_write(q->mosq) ? GW_LOOP_OUT : 0);
    if (!q->watch) {
        q->watch = gw_loop_watch(q->host->loop, fd, ev, on_fd, q);
        if (!q->watch) {
            q->host->log(q->host, GW_LOG_ERR, "cannot watch the MQTT socket; reconnecting");
            mosquitto_disconnect(q->mosq);
            if (q->started && !q->stopping)
                schedule_retry(q);
            return;
        }
        q->watch_fd = fd;
        q->watch_events = ev;
    } else if (ev != q->watch_events) {
        gw_loop_watch_set(q->watch, ev);
        q->watch_events = ev;
    }
}

static bool readable_now(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void on_fd(void *arg, int fd, unsigned events)
{
    struct mq *q = arg;
    (void)fd;
    int rc = MOSQ_ERR_SUCCESS;
    if (events & (GW_LOOP_IN | GW_LOOP_ERR)) {
        /* Level-triggered: drain a burst of packets per wake-up rather than one. */
        for (int i = 0; i < MQ_READ_BURST; i++) {
            rc = mosquitto_loop_read(q->mosq, 1);
            int s = mosquitto_socket(q->mosq);
            if (rc != MOSQ_ERR_SUCCESS || s < 0 || !readable_now(s))
                break;
        }
    }
    if (rc == MOSQ_ERR_SUCCESS && (events & GW_LOOP_OUT) && mosquitto_socket(q->mosq) >= 0)
        rc = mosquitto_loop_write(q->mosq, 1);
    if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN)
        set_error(q, rc);
    if ((events & GW_LOOP_ERR) && mosquitto_socket(q->mosq) >= 0 && rc == MOSQ_ERR_SUCCESS) {
        /* lws gave up on our duplicate of the fd: start over on a fresh socket */
        mosquitto_disconnect(q->mosq);
    }
    sync_io(q);
}

/* Starts one connection attempt to addr (the host, or the address its name resolved to). */
static void do_connect(struct mq *q, const char *addr)
{
    q->connect_started = gw_loop_now_ms();
    int rc = mosquitto_connect_async(q->mosq, addr, q->port, q->keepalive);
    if (rc != MOSQ_ERR_SUCCESS) {
        q->st.connect_failures++;
        set_error(q, rc);
        if (should_log(q->st.connect_failures))
            q->host->log(q->host, GW_LOG_WARN,
                         "cannot connect to %s:%d: %s; retrying in %u ms (%llu failures)",
                         q->hostname, q->port, q->last_error,
                         q->backoff ? q->backoff : q->reconnect_min,
                         (unsigned long long)q->st.connect_failures);
    }
    sync_io(q);
}

/*
 * Name lookup off the loop thread: getaddrinfo() can block for seconds (DNS or mDNS timeouts
 * while the network is down), so a thread resolves and posts the result back. The thread only
 * touches its job; stop() joins it and detaches the job from the instance, and the posted task
 * then just frees the job.
 */
struct mq_resolve {
    pthread_t th;
    struct gw_loop *loop;
    struct mq *q; /* NULL once the instance stopped */
    char *host;
    int rc; /* getaddrinfo() result */
    char addr[INET6_ADDRSTRLEN];
    bool joined;
};

static void resolve_done(void *arg)
{
    struct mq_resolve *j = arg;
    if (!j->joined)
        pthread_join(j->th, NULL);
    struct mq *q = j->q;
    if (q) {
        q->resolving = NULL;
        if (j->rc) {
            q->st.connect_failures++;
            snprintf(q->last_error, sizeof q->last_error, "cannot resolve %s: %s", q->hostname,
                     gai_strerror(j->rc));
            if (should_log(q->st.connect_failures))
                q->host->log(q->host, GW_LOG_WARN, "%s; retrying (%llu failures)", q->last_error,
                             (unsigned long long)q->st.connect_failures);
            sync_io(q); /* no socket: schedules the next attempt */
        } else {
            /* TLS checks the certificate against the name, so it connects by name (the lookup
             * just succeeded, so libmosquitto's own one is quick); plain TCP by address */
            do_connect(q, q->tls ? q->hostname : j->addr);
        }
    }
    free(j->host);
    free(j);
}

static void *resolve_main(void *arg)
{
    struct mq_resolve *j = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    j->rc = getaddrinfo(j->host, NULL, &hints, &res);
    if (j->rc == 0) {
        struct addrinfo *pick = res;
        for (struct addrinfo *a = res; a; a = a->ai_next) {
            if (a->ai_family == AF_INET) { /* the usual listener is IPv4 */
                pick = a;
                break;
            }
        }
        const void *src = pick->ai_family == AF_INET
                              ? (const void *)&((struct sockaddr_in *)pick->ai_addr)->sin_addr
                              : (const void *)&((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;
        if (!inet_ntop(pick->ai_family, src, j->addr, sizeof j->addr))
            j->rc = EAI_FAIL;
        freeaddrinfo(res);
    }
    gw_loop_post(j->loop, resolve_done, j);
    return NULL;
}

static void try_connect(struct mq *q)
{
    if (q->resolving)
        return;
    if (q->numeric_host) {
        do_connect(q, q->hostname);
        return;
    }
    struct mq_resolve *j = gw_calloc(1, sizeof *j);
    j->loop = q->host->loop;
    j->q = q;
    j->host = gw_strdup(q->hostname);
    if (pthread_create(&j->th, NULL, resolve_main, j) != 0) {
        free(j->host);
        free(j);
        do_connect(q, q->hostname); /* fall back to libmosquitto's own lookup */
        return;
    }
    q->resolving = j;
}

static void on_retry(void *arg)
{
    struct mq *q = arg;
    if (q->stopping || !q->mosq)
        return;
    q->backoff = q->backoff ? q->backoff * 2 : q->reconnect_min;
    if (q->backoff > q->reconnect_max)
        q->backoff = q->reconnect_max;
    try_connect(q);
}

static void schedule_retry(struct mq *q)
{
    if (gw_timer_armed(q->retry))
        return;
    gw_timer_start(q->retry, q->backoff ? q->backoff : q->reconnect_min);
}

static void fail_pending(struct mq *q, uint64_t now, bool all)
{
    struct mq_pending **pp = &q->pending;
    while (*pp) {
        struct mq_pending *p = *pp;
        if (all || now >= p->deadline) {
            *pp = p->next;
            q->st.write_errors++;
            if (all) {
                gw_call_fail(p->call, GW_ECANCELED, "MQTT adapter %s stopped before %s was sent",
                             q->instance, p->topic);
            } else {
                q->st.write_timeouts++;
                gw_call_fail(p->call, GW_ETIMEDOUT, "publish to %s not %s within %u ms (broker %s)",
                             p->topic, q->connected ? "acknowledged" : "sent", q->write_timeout,
                             q->connected ? "connected" : "not connected");
            }
            free(p->topic);
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

static void on_tick(void *arg)
{
    struct mq *q = arg;
    uint64_t now = gw_loop_now_ms();
    if (q->mosq && !q->connected && q->connect_started && mosquitto_socket(q->mosq) >= 0 &&
        now - q->connect_started >= q->connect_timeout) {
        /* TCP accepted, but no TLS handshake or CONNACK: a hung broker */
        q->st.connect_failures++;
        snprintf(q->last_error, sizeof q->last_error, "no CONNACK within %u ms",
                 q->connect_timeout);
        if (should_log(q->st.connect_failures))
            q->host->log(q->host, GW_LOG_WARN, "broker %s:%d: %s; reconnecting (%llu failures)",
                         q->hostname, q->port, q->last_error,
                         (unsigned long long)q->st.connect_failures);
        q->connect_started = 0;
        mosquitto_disconnect(q->mosq);
    }
    if (q->mosq && mosquitto_socket(q->mosq) >= 0) {
        int rc = mosquitto_loop_misc(q->mosq);
        if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN)
            set_error(q, rc);
    }
    fail_pending(q, now, false);
    sync_io(q);
    gw_timer_start(q->tick, MQ_TICK_MS);
}

static void on_connect(struct mosquitto *m, void *obj, int rc)
{
    struct mq *q = obj;
    if (rc != 0) {
        q->st.connect_failures++;
        snprintf(q->last_error, sizeof q->last_error, "broker refused the connection: %s",
                 mosquitto_connack_string(rc));
        if (should_log(q->st.connect_failures))
            q->host->log(q->host, GW_LOG_ERR, "broker %s:%d refused the connection: %s",
                         q->hostname, q->port, mosquitto_connack_string(rc));
        return;
    }
    q->connected = true;
    q->connect_started = 0;
    q->st.connects++;
    q->backoff = 0;
    q->last_error[0] = '\0';
    q->tls_error[0] = '\0';
    q->host->log(q->host, q->ever_connected ? GW_LOG_NOTICE : GW_LOG_INFO, "%s %s:%d as \"%s\"%s",
                 q->ever_connected ? "reconnected to" : "connected to", q->hostname, q->port,
                 q->client_id, q->tls ? " (TLS)" : "");
    q->ever_connected = true;
    for (size_t i = 0; i < q->n_maps; i++) {
        struct mq_map *map = &q->maps[i];
        if (!map->filter)
            continue;
        int src = mosquitto_subscribe(m, NULL, map->filter, map->sub_qos);
        if (src != MOSQ_ERR_SUCCESS)
            q->host->log(q->host, GW_LOG_ERR, "cannot subscribe to \"%s\" (mappings/%zu): %s",
                         map->filter, i, mosquitto_strerror(src));
    }
}

static void on_disconnect(struct mosquitto *m, void *obj, int rc)
{
    struct mq *q = obj;
    (void)m;
    bool was = q->connected;
    q->connected = false;
    if (rc)
        set_error(q, rc);
    if (was) {
        /* the values stop updating: say so to the registry (reads still answer them); not
         * when stopping, as the resources are about to go */
        for (size_t i = 0; i < q->n_buckets && !q->stopping; i++)
            for (struct mq_res *r = q->buckets[i]; r; r = r->hnext)
                if (r->has_last && !r->stale) {
                    r->stale = true;
                    gw_registry_mark_stale(q->host->registry, r->id);
                }
        q->st.disconnects++;
        if (!q->stopping)
            q->host->log(q->host, GW_LOG_WARN, "connection to %s:%d lost: %s; reconnecting",
                         q->hostname, q->port, q->last_error);
    }
}

static void on_log(struct mosquitto *m, void *obj, int level, const char *str)
{
    struct mq *q = obj;
    (void)m;
    if (level & MOSQ_LOG_ERR) {
        /* TLS failures ("certificate verify failed") only show up here: keep them */
        const char *ssl = strstr(str, "error:");
        if (!strncmp(str, "OpenSSL Error", 13))
            snprintf(q->tls_error, sizeof q->tls_error, "%s", ssl ? ssl : str);
        if (should_log(++q->st.lib_errors))
            q->host->log(q->host, GW_LOG_ERR, "libmosquitto: %s", str);
    } else if (level & MOSQ_LOG_WARNING) {
        q->host->log(q->host, GW_LOG_WARN, "libmosquitto: %s", str);
    }
}

static void on_publish(struct mosquitto *m, void *obj, int mid)
{
    struct mq *q = obj;
    (void)m;
    for (struct mq_pending **pp = &q->pending; *pp; pp = &(*pp)->next) {
        struct mq_pending *p = *pp;
        if (p->mid == mid) {
            *pp = p->next;
            gw_call_reply(p->call, NULL);
            free(p->topic);
            free(p);
            return;
        }
    }
    if (q->in_publish)
        q->publishing_mid = mid; /* QoS 0 sent inside mosquitto_publish() */
}

/* --- Messages --- */

static void count_bad(struct mq *q, int rc, const struct mq_map *map, const char *topic,
                      const char *err)
{
    uint64_t *c = rc == GW_EJSON    ? &q->st.bad_json
                  : rc == GW_ENOENT ? &q->st.no_field
                                    : &q->st.coerce;
    (*c)++;
    if (should_log(*c))
        q->host->log(q->host, GW_LOG_WARN, "topic %s (mappings/%zu): %s; ignored (%s: %llu so far)",
                     topic, map->index, err,
                     rc == GW_EJSON    ? "bad_json"
                     : rc == GW_ENOENT ? "no_field"
                                       : "coerce",
                     (unsigned long long)*c);
}

static void handle(struct mq *q, struct mq_map *map, const struct mosquitto_message *msg)
{
    char err[256];
    struct gw_value v;
    int rc = gw_mqtt_decode(msg->payload, (size_t)msg->payloadlen, map->format, map->pointer,
                            map->as, &v, err, sizeof err);
    if (rc) {
        count_bad(q, rc, map, msg->topic, err);
        return;
    }
    struct mq_res *r = map->fixed;
    if (!r) {
        char *suffix = NULL;
        if (gw_mqtt_template_expand(map->name, msg->topic, &suffix)) {
            q->st.unnamed++;
            if (should_log(q->st.unnamed))
                q->host->log(q->host, GW_LOG_WARN,
                             "topic %s has too few levels for name \"%s\" (mappings/%zu); ignored",
                             msg->topic, map->name, map->index);
            gw_value_fini(&v);
            return;
        }
        size_t n = strlen(q->instance) + strlen(suffix) + 2;
        char *full = gw_malloc(n);
        snprintf(full, n, "%s/%s", q->instance, suffix);
        free(suffix);
        r = res_find(q, full);
        if (!r) {
            if (q->n_dynamic >= q->max_topics) {
                q->st.over_limit++;
                if (should_log(q->st.over_limit))
                    q->host->log(q->host, GW_LOG_WARN,
                                 "topic %s would be resource %u above max_topics %zu; dropped "
                                 "(topics_over_limit: %llu so far)",
                                 msg->topic, (unsigned)q->n_dynamic + 1, q->max_topics,
                                 (unsigned long long)q->st.over_limit);
                free(full);
                gw_value_fini(&v);
                return;
            }
            r = res_add(q, map, full, msg->topic);
            if (r)
                q->n_dynamic++;
        } else if (r->map != map) {
            q->st.name_clash++;
            if (should_log(q->st.name_clash))
                q->host->log(q->host, GW_LOG_WARN,
                             "topic %s: resource \"%s\" already belongs to mappings/%zu; "
                             "mappings/%zu ignores it",
                             msg->topic, full, r->map->index, map->index);
            r = NULL;
        }
        free(full);
        if (!r) {
            gw_value_fini(&v);
            return;
        }
    }
    r->messages++;
    r->last_rx_ms = gw_loop_now_ms();
    r->last_rx_wall = gw_loop_wall_ms();
    /* after an outage the first message refreshes the registry even when unchanged */
    bool changed = !r->has_last || r->stale || !gw_value_equal(&r->last, &v);
    r->stale = false;
    if (changed) {
        gw_value_fini(&r->last);
        r->last = v;
        r->has_last = true;
    } else {
        gw_value_fini(&v);
    }
    if (changed || map->every) {
        struct gw_value copy;
        gw_value_copy(&copy, &r->last);
        gw_registry_publish(q->host->registry, r->id, &copy, r->last_rx_wall);
        q->st.published++;
    }
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
    struct mq *q = obj;
    (void)m;
    q->st.messages++;
    q->st.bytes += (uint64_t)msg->payloadlen;
    if ((size_t)msg->payloadlen > q->max_payload) {
        q->st.oversize++;
        if (should_log(q->st.oversize))
            q->host->log(q->host, GW_LOG_WARN,
                         "topic %s: payload of %d bytes is larger than max_payload %zu; dropped "
                         "(oversize: %llu so far)",
                         msg->topic, msg->payloadlen, q->max_payload,
                         (unsigned long long)q->st.oversize);
        return;
    }
    bool any = false;
    for (size_t i = 0; i < q->n_maps; i++) {
        struct mq_map *map = &q->maps[i];
        if (map->filter && gw_mqtt_topic_match(map->filter, msg->topic)) {
            any = true;
            handle(q, map, msg);
        }
    }
    if (!any)
        q->st.unmatched++;
}

/* --- Calls --- */

static int do_write(struct mq *q, struct mq_res *r, struct gw_call *call, const struct gw_value *in)
{
    struct mq_map *map = r->map;
    char err[256];
    struct gw_value v;
    gw_value_copy(&v, in);
    if (gw_mqtt_coerce(&v, map->as, err, sizeof err)) {
        gw_value_fini(&v);
        q->st.write_errors++;
        gw_call_fail(call, GW_EINVAL, "%s: input refused: %s", r->name, err);
        return 0;
    }
    char *payload = NULL, *topic = NULL;
    size_t len = 0;
    struct gw_mqtt_write_fmt fmt = {map->wtmpl, map->true_text, map->false_text};
    int rc = gw_mqtt_encode(&v, &fmt, &payload, &len, err, sizeof err);
    gw_value_fini(&v);
    if (rc) {
        q->st.write_errors++;
        gw_call_fail(call, GW_EINVAL, "%s: %s", r->name, err);
        return 0;
    }
    if (gw_mqtt_template_expand(map->wtopic, r->topic ? r->topic : "", &topic)) {
        free(payload);
        q->st.write_errors++;
        gw_call_fail(call, GW_EINVAL, "%s: topic has too few levels for write topic \"%s\"",
                     r->name, map->wtopic);
        return 0;
    }
    if (!q->connected) {
        q->st.write_errors++;
        gw_call_fail(call, GW_ENOTCONN, "%s: not connected to MQTT broker %s:%d%s%s", r->name,
                     q->hostname, q->port, q->last_error[0] ? ": " : "", q->last_error);
        free(payload);
        free(topic);
        return 0;
    }
    int mid = -1;
    q->in_publish = true;
    q->publishing_mid = -1;
    rc = mosquitto_publish(q->mosq, &mid, topic, (int)len, payload, map->wqos, map->wretain);
    q->in_publish = false;
    free(payload);
    if (rc != MOSQ_ERR_SUCCESS) {
        q->st.write_errors++;
        gw_call_fail(call, GW_EIO, "%s: publish to %s failed: %s", r->name, topic,
                     rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
        free(topic);
        sync_io(q);
        return 0;
    }
    q->st.writes++;
    if (q->publishing_mid == mid) {
        gw_call_reply(call, NULL);
        free(topic);
    } else {
        struct mq_pending *p = gw_calloc(1, sizeof *p);
        p->mid = mid;
        p->call = call;
        p->topic = topic;
        p->deadline = gw_loop_now_ms() + q->write_timeout;
        p->next = q->pending;
        q->pending = p;
    }
    sync_io(q);
    return 0;
}

static int res_run(void *ctx, struct gw_call *call)
{
    struct mq_res *r = ctx;
    struct mq *q = r->q;
    const struct gw_value *in = gw_call_input(call);
    if (in && in->type != GW_VALUE_NULL) {
        if (!r->map->writable) {
            gw_call_fail(call, GW_EREADONLY, "%s is read-only (no \"write\" in mappings/%zu)",
                         r->name, r->map->index);
            return 0;
        }
        return do_write(q, r, call, in);
    }
    if (!r->map->filter) {
        gw_call_fail(call, GW_EINVAL, "%s is write-only: call it with an input", r->name);
        return 0;
    }
    if (!r->has_last) {
        gw_call_fail(call, GW_ESTALE, "%s: no message on %s yet", r->name,
                     r->topic ? r->topic : r->map->filter);
        return 0;
    }
    struct gw_value out;
    const struct gw_value *params = gw_call_params(call);
    const struct gw_value *age = params ? gw_value_map_get(params, "age") : NULL;
    if (age && age->type == GW_VALUE_BOOL && age->b) {
        /* {"age": true}: the value with its age and arrival time */
        out = gw_value_map();
        gw_value_copy(gw_value_map_set(&out, "value", 5), &r->last);
        *gw_value_map_set(&out, "age_ms", 6) = gw_value_uint(gw_loop_now_ms() - r->last_rx_ms);
        *gw_value_map_set(&out, "ts", 2) = gw_value_uint(r->last_rx_wall);
        *gw_value_map_set(&out, "stale", 5) = gw_value_bool(r->stale);
        *gw_value_map_set(&out, "messages", 8) = gw_value_uint(r->messages);
    } else {
        gw_value_copy(&out, &r->last);
    }
    gw_call_reply(call, &out);
    return 0;
}

static int stats_run(void *ctx, struct gw_call *call)
{
    struct mq *q = ctx;
    struct gw_value m = gw_value_map();
#define PUTU(k, v) (*gw_value_map_set(&m, k, strlen(k)) = gw_value_uint(v))
    *gw_value_map_set(&m, "connected", 9) = gw_value_bool(q->connected);
    PUTU("messages", q->st.messages);
    PUTU("bytes", q->st.bytes);
    PUTU("unmatched", q->st.unmatched);
    PUTU("oversize", q->st.oversize);
    PUTU("bad_json", q->st.bad_json);
    PUTU("no_field", q->st.no_field);
    PUTU("coerce", q->st.coerce);
    PUTU("unnamed", q->st.unnamed);
    PUTU("topics", q->n_dynamic);
    PUTU("topics_over_limit", q->st.over_limit);
    PUTU("name_clash", q->st.name_clash);
    PUTU("register_failed", q->st.register_failed);
    PUTU("published", q->st.published);
    PUTU("connects", q->st.connects);
    PUTU("connect_failures", q->st.connect_failures);
    PUTU("disconnects", q->st.disconnects);
    PUTU("writes", q->st.writes);
    PUTU("write_errors", q->st.write_errors);
    PUTU("write_timeouts", q->st.write_timeouts);
#undef PUTU
    if (q->last_error[0])
        *gw_value_map_set(&m, "last_error", 10) = gw_value_cstr(q->last_error);
    gw_call_reply(call, &m);
    return 0;
}

/* --- Lifecycle --- */

static int read_password(struct mq *q, char *buf, size_t cap)
{
    FILE *f = fopen(q->password_file, "r");
    if (!f) {
        q->host->log(q->host, GW_LOG_ERR, "cannot read password_file %s: %s", q->password_file,
                     strerror(errno));
        return GW_ECONFIG_READ;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        q->host->log(q->host, GW_LOG_WARN,
                     "password_file %s is readable by group or others (mode %03o); chmod 600 it",
                     q->password_file, (unsigned)(st.st_mode & 0777));
    if (!fgets(buf, (int)cap, f))
        buf[0] = '\0';
    fclose(f);
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

static int mq_start(void *state)
{
    struct mq *q = state;
    char pw[512];
    int rc;
    pthread_once(&lib_once, lib_init);
    q->mosq = mosquitto_new(q->client_id, q->clean_session, q);
    if (!q->mosq) {
        q->host->log(q->host, GW_LOG_ERR, "cannot create the MQTT client: %s", strerror(errno));
        return errno == EINVAL ? GW_ECONFIG : GW_ENOMEM;
    }
    mosquitto_int_option(q->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_connect_callback_set(q->mosq, on_connect);
    mosquitto_disconnect_callback_set(q->mosq, on_disconnect);
    mosquitto_message_callback_set(q->mosq, on_message);
    mosquitto_publish_callback_set(q->mosq, on_publish);
    mosquitto_log_callback_set(q->mosq, on_log);
    if (q->username) {
        pw[0] = '\0';
        if (q->password_file && (rc = read_password(q, pw, sizeof pw)))
            return rc;
        rc = mosquitto_username_pw_set(q->mosq, q->username, q->password_file ? pw : NULL);
        memset(pw, 0, sizeof pw);
        if (rc != MOSQ_ERR_SUCCESS)
            return GW_ENOMEM;
    }
    if (q->tls) {
        rc = mosquitto_tls_set(q->mosq, q->ca_file, q->ca_dir, q->cert_file, q->key_file, NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            q->host->log(q->host, GW_LOG_ERR, "TLS setup failed (ca_file %s, cert_file %s): %s",
                         q->ca_file ? q->ca_file : "-", q->cert_file ? q->cert_file : "-",
                         rc == MOSQ_ERR_INVAL ? "a file cannot be read" : mosquitto_strerror(rc));
            return GW_ECONFIG;
        }
        if (q->tls_insecure) {
            q->host->log(q->host, GW_LOG_WARN,
                         "tls.insecure: the broker certificate's host name is not checked");
            mosquitto_tls_insecure_set(q->mosq, true);
        }
    }
    if (q->will_topic) {
        const char *p = q->will_payload ? q->will_payload : "";
        rc = mosquitto_will_set(q->mosq, q->will_topic, (int)strlen(p), p, q->will_qos,
                                q->will_retain);
        if (rc != MOSQ_ERR_SUCCESS) {
            q->host->log(q->host, GW_LOG_ERR, "cannot set the last will: %s",
                         mosquitto_strerror(rc));
            return GW_ECONFIG;
        }
    }
    /* Resources known before any message. */
    for (size_t i = 0; i < q->n_maps; i++) {
        struct mq_map *map = &q->maps[i];
        if (map->dynamic)
            continue;
        bool wild = false;
        if (map->filter)
            gw_mqtt_filter_check(map->filter, NULL, NULL, &wild, &(const char *){NULL});
        const char *topic = map->filter && !wild ? map->filter : NULL;
        char *suffix = NULL;
        if (gw_mqtt_template_expand(map->name, topic ? topic : "", &suffix))
            return GW_ECONFIG; /* checked in create */
        size_t n = strlen(q->instance) + strlen(suffix) + 2;
        char *full = gw_malloc(n);
        snprintf(full, n, "%s/%s", q->instance, suffix);
        free(suffix);
        map->fixed = res_add(q, map, full, topic);
        free(full);
        if (!map->fixed)
            return GW_EINVAL;
    }
    {
        char name[128];
        snprintf(name, sizeof name, "%s/_stats", q->instance);
        struct gw_value meta = gw_value_map();
        *gw_value_map_set(&meta, "source", 6) = gw_value_cstr("mqtt adapter counters");
        struct gw_resource_desc d = {.name = name,
                                     .fn = GW_FN_OUTPUT,
                                     .meta = &meta,
                                     .run = stats_run,
                                     .ctx = q,
                                     .owner = q};
        rc = gw_registry_add(q->host->registry, &d, NULL);
        gw_value_fini(&meta);
        if (rc)
            return rc;
    }
    q->tick = gw_timer_new(q->host->loop, on_tick, q);
    q->retry = gw_timer_new(q->host->loop, on_retry, q);
    q->started = true;
    gw_timer_start(q->tick, MQ_TICK_MS);
    try_connect(q);
    return 0;
}

static void mq_stop(void *state)
{
    struct mq *q = state;
    if (!q->started || q->stopping)
        return;
    q->stopping = true;
    if (q->resolving) { /* wait for the lookup; its posted result then only frees the job */
        pthread_join(q->resolving->th, NULL);
        q->resolving->joined = true;
        q->resolving->q = NULL;
        q->resolving = NULL;
    }
    fail_pending(q, 0, true);
    if (q->mosq && mosquitto_socket(q->mosq) >= 0) {
        mosquitto_disconnect(q->mosq);
        mosquitto_loop_write(q->mosq, 1);
    }
    if (q->watch) {
        gw_loop_unwatch(q->watch);
        q->watch = NULL;
    }
    gw_timer_free(q->tick);
    gw_timer_free(q->retry);
    q->tick = q->retry = NULL;
    q->connected = false;
}

static void mq_free(struct mq *q)
{
    if (!q)
        return;
    for (size_t i = 0; i < q->n_maps; i++) {
        struct mq_map *m = &q->maps[i];
        free(m->name);
        free(m->filter);
        free(m->pointer);
        free(m->unit);
        free(m->wtopic);
        free(m->true_text);
        free(m->false_text);
        if (m->wtmpl)
            json_decref(m->wtmpl);
    }
    free(q->maps);
    res_free_all(q);
    free(q->instance);
    free(q->hostname);
    free(q->client_id);
    free(q->username);
    free(q->password_file);
    free(q->ca_file);
    free(q->ca_dir);
    free(q->cert_file);
    free(q->key_file);
    free(q->will_topic);
    free(q->will_payload);
    free(q);
}

static void mq_destroy(void *state)
{
    struct mq *q = state;
    mq_stop(q);
    if (q->mosq)
        mosquitto_destroy(q->mosq);
    mq_free(q);
}

const struct gw_adapter_ops gw_mqtt_adapter = {
    .name = "mqtt",
    .create = mq_create,
    .start = mq_start,
    .stop = mq_stop,
    .destroy = mq_destroy,
};
