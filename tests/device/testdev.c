/* SPDX-License-Identifier: Apache-2.0 */
/*
 * IOTMP session of the test device (see testdev.h): CONNECT, the resource table, streams, server
 * actions and keep-alive, over the byte link of testdev_link.c. Frames are encoded and parsed with
 * gw_codec; whole values go through gw_value. Incoming frames are copied before they are
 * dispatched, so a handler may call gw_testdev_call(), which polls (and dispatches) re-entrantly.
 */
#include "testdev.h"
#include "testdev_link.h"

#include "gw/error.h"
#include "gw/log.h"
#include "gw/mem.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_KA_S 60

struct stream {
    uint16_t sid;
    size_t res;            /* index into d->res */
    unsigned interval_ms;  /* 0: event stream */
    int64_t next_ms;       /* next sample due (interval streams) */
};

struct delayed {
    struct delayed *next;
    int64_t due_ms;
    uint8_t *frame;
    size_t len;
};

struct waiter {
    struct waiter *next;
    uint16_t sid;
    bool done;
    uint64_t type;
    int code;
    struct gw_value answer;
};

struct gw_testdev {
    /* configuration (owned copies) */
    char *url, *user, *device, *password, *ca_file, *ka_raw;
    bool insecure, no_keepalive;
    unsigned ka;
    int timeout_ms;
    size_t max_frame;
    struct gw_testdev_url u;

    struct gw_testdev_resource *res;
    size_t n_res, cap_res;

    struct gw_testdev_link link;
    bool authed;
    struct gw_testdev_buf in;      /* application bytes read, not yet fed */
    size_t in_pos;
    struct gw_iotmp_reader reader;
    uint8_t *reader_buf;
    size_t reader_cap;

    struct stream *streams;
    size_t n_streams, cap_streams;
    struct delayed *delayed;
    struct waiter *waiters;
    uint16_t next_sid;
    int64_t next_ka_ms;

    int connect_code;
    char *redirect;
    char err[1200];
    struct gw_testdev_stats st;
};

int64_t gw_testdev_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dup_or_null(const char *s)
{
    return s ? gw_strdup(s) : NULL;
}

/* KEEP_ALIVE period: 3/4 of ka, so a busy machine does not push us past the server's ka x 1.15. */
static int64_t ka_period_ms(const struct gw_testdev *d)
{
    return 750 * (int64_t)(d->ka ? d->ka : DEFAULT_KA_S);
}

/* --- Setup --- */

struct gw_testdev *gw_testdev_new(const struct gw_testdev_config *cfg)
{
    struct gw_testdev *d = gw_calloc(1, sizeof *d);
    d->url = dup_or_null(cfg->url);
    d->user = dup_or_null(cfg->user ? cfg->user : "");
    d->device = dup_or_null(cfg->device ? cfg->device : "");
    d->password = dup_or_null(cfg->password ? cfg->password : "");
    d->ca_file = dup_or_null(cfg->ca_file);
    d->ka_raw = dup_or_null(cfg->ka_raw);
    d->insecure = cfg->insecure;
    d->ka = cfg->ka;
    d->no_keepalive = cfg->no_keepalive;
    d->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
    d->max_frame = cfg->max_frame ? cfg->max_frame : GW_IOTMP_MAX_FRAME_DEFAULT;
    d->connect_code = -1;
    gw_testdev_link_init(&d->link);
    uint16_t seed = 0;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        seed = (uint16_t)(gw_testdev_now_ms() * 2654435761u);
    d->next_sid = seed;
    return d;
}

void gw_testdev_free(struct gw_testdev *d)
{
    if (!d)
        return;
    gw_testdev_close(d);
    for (size_t i = 0; i < d->n_res; i++)
        free((char *)d->res[i].name);
    free(d->res);
    free(d->streams);
    free(d->url);
    free(d->user);
    free(d->device);
    free(d->password);
    free(d->ca_file);
    free(d->ka_raw);
    free(d->redirect);
    free(d);
}

int gw_testdev_add_resource(struct gw_testdev *d, const struct gw_testdev_resource *r)
{
    if (!r->name || !r->name[0] || r->fn < GW_TESTDEV_FN_RUN || r->fn > GW_TESTDEV_FN_INOUT)
        return GW_EINVAL;
    for (size_t i = 0; i < d->n_res; i++)
        if (strcmp(d->res[i].name, r->name) == 0)
            return GW_EEXIST;
    if (d->n_res == d->cap_res) {
        d->cap_res = d->cap_res ? 2 * d->cap_res : 8;
        d->res = gw_realloc(d->res, d->cap_res * sizeof *d->res);
    }
    struct gw_testdev_resource *c = &d->res[d->n_res];
    *c = *r;
    c->name = gw_strdup(r->name);
    c->id = (unsigned)(d->n_res + 1);
    d->n_res++;
    return 0;
}

const char *gw_testdev_error(const struct gw_testdev *d)
{
    return d->err;
}

int gw_testdev_connect_code(const struct gw_testdev *d)
{
    return d->connect_code;
}

const char *gw_testdev_redirect(const struct gw_testdev *d)
{
    return d->redirect;
}

const char *gw_testdev_transport(const struct gw_testdev *d)
{
    static const char *const names[] = {"tcp", "tls", "ws", "wss"};
    return names[d->u.scheme];
}

const char *gw_testdev_name(const struct gw_testdev *d)
{
    return d->device;
}

bool gw_testdev_connected(const struct gw_testdev *d)
{
    return d->authed && d->link.fd >= 0;
}

void gw_testdev_get_stats(const struct gw_testdev *d, struct gw_testdev_stats *st)
{
    *st = d->st;
    st->ws_pings = d->link.ws_pings;
    st->ws_pongs = d->link.ws_pongs;
    st->streams_open = (unsigned)d->n_streams;
}

int gw_testdev_action_parse(const char *name)
{
    static const struct {
        const char *name;
        int code;
    } names[] = {{"read_property", GW_IOTMP_READ_DEVICE_PROPERTY},
                 {"set_property", GW_IOTMP_SET_DEVICE_PROPERTY},
                 {"call_device", GW_IOTMP_CALL_DEVICE},
                 {"call_endpoint", GW_IOTMP_CALL_ENDPOINT},
                 {"write_bucket", GW_IOTMP_WRITE_BUCKET},
                 {"lock_sync", GW_IOTMP_LOCK_SYNC},
                 {"unlock_sync", GW_IOTMP_UNLOCK_SYNC}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0)
            return names[i].code;
    return GW_EINVAL;
}

/* --- Sending --- */

/* One field of an outgoing message: absent, a varint, or a value (encoded as the references do:
 * an integer ≥ 0 as a varint, anything else as PSON v2). */
struct out_field {
    int kind; /* 0 absent, 1 varint, 2 value */
    uint64_t u;
    const struct gw_value *v;
};

static void link_lost(struct gw_testdev *d, int rc)
{
    if (d->link.fd >= 0) {
        snprintf(d->err, sizeof d->err, "%s", d->link.err[0] ? d->link.err : gw_strerror(rc));
        gw_testdev_link_close(&d->link);
    }
    d->authed = false;
}

static int send_bytes(struct gw_testdev *d, const void *p, size_t len)
{
    if (d->link.fd < 0)
        return GW_ENOTCONN;
    int rc = gw_testdev_link_send(&d->link, p, len, d->timeout_ms);
    if (rc < 0) {
        link_lost(d, rc);
        return GW_ELINK;
    }
    d->st.frames_out++;
    return 0;
}

static int encode_msg(uint64_t type, const struct out_field f[GW_IOTMP_FIELD_MAX + 1],
                      uint8_t **out, const uint8_t **frame, size_t *len)
{
    size_t cap = 512;
    for (int attempt = 0; attempt < 3; attempt++) {
        uint8_t *buf = gw_malloc(cap);
        struct gw_iotmp_writer w;
        gw_iotmp_writer_init(&w, buf, cap, type);
        for (unsigned id = 1; id <= GW_IOTMP_FIELD_MAX; id++) {
            if (f[id].kind == 1) {
                gw_iotmp_put_varint(&w, id, f[id].u);
            } else if (f[id].kind == 2) {
                const struct gw_value *v = f[id].v;
                if (v->type == GW_VALUE_UINT)
                    gw_iotmp_put_varint(&w, id, v->u);
                else if (v->type == GW_VALUE_INT && v->i >= 0)
                    gw_iotmp_put_varint(&w, id, (uint64_t)v->i);
                else
                    gw_value_encode(v, gw_iotmp_put_pson(&w, id));
            }
        }
        int rc = gw_iotmp_finish(&w, frame, len);
        if (rc == 0) {
            *out = buf;
            return 0;
        }
        free(buf);
        if (rc != GW_ENOBUFS)
            return rc;
        cap = *len + GW_IOTMP_HEADROOM + 64;
    }
    return GW_ENOBUFS;
}

static int send_msg(struct gw_testdev *d, uint64_t type,
                    const struct out_field f[GW_IOTMP_FIELD_MAX + 1])
{
    uint8_t *buf;
    const uint8_t *frame;
    size_t len;
    int rc = encode_msg(type, f, &buf, &frame, &len);
    if (rc < 0) {
        gw_log_err("testdev %s: cannot encode %s: %s", d->device, gw_iotmp_type_name(type),
                   gw_strerror(rc));
        return rc;
    }
    rc = send_bytes(d, frame, len);
    free(buf);
    return rc;
}

/* OK or ERROR answer to a request with stream id sid (nothing is sent for sid 0). */
static int answer(struct gw_testdev *d, uint16_t sid, bool ok, int code,
                  const struct gw_value *payload, unsigned delay_ms)
{
    if (sid == 0)
        return 0;
    struct out_field f[GW_IOTMP_FIELD_MAX + 1] = {0};
    f[GW_IOTMP_STREAM_ID] = (struct out_field){.kind = 1, .u = sid};
    if (code > 0)
        f[GW_IOTMP_PARAMETERS] = (struct out_field){.kind = 1, .u = (uint64_t)code};
    if (payload)
        f[GW_IOTMP_PAYLOAD] = (struct out_field){.kind = 2, .v = payload};
    uint64_t type = ok ? GW_IOTMP_OK : GW_IOTMP_ERROR;
    if (delay_ms == 0)
        return send_msg(d, type, f);
    uint8_t *buf;
    const uint8_t *frame;
    size_t len;
    int rc = encode_msg(type, f, &buf, &frame, &len);
    if (rc < 0)
        return rc;
    struct delayed *dl = gw_calloc(1, sizeof *dl);
    dl->frame = gw_malloc(len);
    memcpy(dl->frame, frame, len);
    dl->len = len;
    dl->due_ms = gw_testdev_now_ms() + delay_ms;
    free(buf);
    struct delayed **pp = &d->delayed; /* keep due order */
    while (*pp && (*pp)->due_ms <= dl->due_ms)
        pp = &(*pp)->next;
    dl->next = *pp;
    *pp = dl;
    return 0;
}

static int answer_error_text(struct gw_testdev *d, uint16_t sid, int code, const char *text)
{
    struct gw_value p = gw_value_map();
    *gw_value_map_set(&p, "error", 5) = gw_value_cstr(text);
    int rc = answer(d, sid, false, code, &p, 0);
    gw_value_fini(&p);
    return rc;
}

int gw_testdev_send_raw(struct gw_testdev *d, const void *bytes, size_t len)
{
    return send_bytes(d, bytes, len);
}

int gw_testdev_ws_ping(struct gw_testdev *d)
{
    static const char data[] = "testdev-ping";
    int rc = gw_testdev_link_ping(&d->link, data, sizeof data - 1);
    if (rc < 0 && rc != GW_ENOTSUP && rc != GW_EINVAL) {
        link_lost(d, rc);
        return GW_ELINK;
    }
    return rc;
}

int gw_testdev_keepalive(struct gw_testdev *d)
{
    static const uint8_t ka[2] = {GW_IOTMP_KEEP_ALIVE, 0};
    int rc = send_bytes(d, ka, sizeof ka);
    if (rc == 0)
        d->st.keepalive_sent++;
    d->next_ka_ms = gw_testdev_now_ms() + ka_period_ms(d);
    return rc;
}

static uint16_t new_sid(struct gw_testdev *d)
{
    for (;;) {
        uint16_t sid = ++d->next_sid;
        if (sid == 0)
            continue;
        bool used = false;
        for (struct waiter *w = d->waiters; w; w = w->next)
            used |= w->sid == sid;
        for (size_t i = 0; i < d->n_streams; i++)
            used |= d->streams[i].sid == sid;
        if (!used)
            return sid;
    }
}

/* --- Reading fields --- */

/* A field as a value (varint → unsigned). GW_ENOENT if absent. */
static int field_value(const struct gw_iotmp_frame *f, unsigned id, struct gw_value *out)
{
    *out = GW_VALUE_INIT_NULL;
    if (!gw_iotmp_has(f, id))
        return GW_ENOENT;
    const struct gw_iotmp_field *fl = &f->field[id];
    if (fl->wire == GW_IOTMP_WIRE_VARINT) {
        *out = gw_value_uint(fl->u);
        return 0;
    }
    int rc = gw_value_decode(fl->p, fl->len, out);
    return rc < 0 ? rc : 0;
}

/* Finds the resource named by RESOURCE: a string, an array of segments joined with '/', or a
 * numeric id. Returns the index, or GW_ERESOURCE / GW_ENOENT (absent); name gets a printable
 * form. */
static int find_resource(struct gw_testdev *d, const struct gw_iotmp_frame *f, char *name,
                         size_t name_len)
{
    struct gw_value v;
    int rc = field_value(f, GW_IOTMP_RESOURCE, &v);
    if (rc < 0) {
        snprintf(name, name_len, "(none)");
        return rc;
    }
    int found = GW_ERESOURCE;
    name[0] = '\0';
    if (v.type == GW_VALUE_UINT) {
        snprintf(name, name_len, "#%llu", (unsigned long long)v.u);
        if (v.u >= 1 && v.u <= d->n_res)
            found = (int)(v.u - 1);
    } else if (v.type == GW_VALUE_STRING || v.type == GW_VALUE_ARRAY) {
        if (v.type == GW_VALUE_STRING) {
            snprintf(name, name_len, "%s", v.s.p);
        } else {
            size_t n = 0;
            for (size_t i = 0; i < v.c.n; i++) {
                const struct gw_value *seg = &v.c.items[i];
                if (seg->type != GW_VALUE_STRING)
                    break;
                n += (size_t)snprintf(name + n, n < name_len ? name_len - n : 0, "%s%s",
                                      i ? "/" : "", seg->s.p);
                if (n >= name_len)
                    break;
            }
        }
        for (size_t i = 0; i < d->n_res; i++)
            if (strcmp(d->res[i].name, name) == 0)
                found = (int)i;
    } else {
        snprintf(name, name_len, "(not a string)");
    }
    gw_value_fini(&v);
    return found;
}

/* Runs a handler; returns its code (0 OK, >0 code, <0 GW_E...). */
static int run_handler(struct gw_testdev *d, const struct gw_testdev_resource *r,
                       const struct gw_value *in, struct gw_value *out, bool describe)
{
    *out = GW_VALUE_INIT_NULL;
    if (!r->handler)
        return 0;
    return r->handler(d, r, in, out, describe);
}

static int send_sample(struct gw_testdev *d, struct stream *s)
{
    const struct gw_testdev_resource *r = &d->res[s->res];
    struct gw_value out;
    int rc = run_handler(d, r, NULL, &out, false);
    struct out_field f[GW_IOTMP_FIELD_MAX + 1] = {0};
    f[GW_IOTMP_STREAM_ID] = (struct out_field){.kind = 1, .u = s->sid};
    if (rc == 0)
        f[GW_IOTMP_PAYLOAD] = (struct out_field){.kind = 2, .v = &out};
    else
        gw_log_warn("testdev %s: stream %u: %s failed (%d), sending an empty sample", d->device,
                    s->sid, r->name, rc);
    rc = send_msg(d, GW_IOTMP_STREAM_DATA, f);
    gw_value_fini(&out);
    if (rc == 0)
        d->st.stream_samples++;
    return rc;
}

/* --- Dispatch of incoming requests --- */

static int on_run(struct gw_testdev *d, const struct gw_iotmp_frame *f, uint16_t sid)
{
    char name[256];
    int idx = find_resource(d, f, name, sizeof name);
    d->st.runs++;
    if (idx < 0) {
        gw_log_info("testdev %s: RUN of unknown resource %s", d->device, name);
        return answer_error_text(d, sid, 404, "resource not found");
    }
    const struct gw_testdev_resource *r = &d->res[idx];
    struct gw_value in;
    bool has_in = field_value(f, GW_IOTMP_PAYLOAD, &in) == 0;
    struct gw_value out;
    int rc = run_handler(d, r, has_in ? &in : NULL, &out, false);
    int result;
    if (rc == 0) {
        bool with_out = r->fn == GW_TESTDEV_FN_OUT || r->fn == GW_TESTDEV_FN_INOUT;
        result = answer(d, sid, true, 0, with_out ? &out : NULL, r->delay_ms);
    } else {
        const char *text = out.type == GW_VALUE_STRING ? out.s.p : rc < 0 ? gw_strerror(rc)
                                                                           : "resource failed";
        struct gw_value p = gw_value_map();
        *gw_value_map_set(&p, "error", 5) = gw_value_cstr(text);
        result = answer(d, sid, false, rc > 0 ? rc : 0, &p, r->delay_ms);
        gw_value_fini(&p);
    }
    gw_value_fini(&out);
    /* Stream echo (PROTOCOL.md 7.4): new input is pushed on the resource's event streams. */
    if (rc == 0 && result == 0 && has_in &&
        (r->fn == GW_TESTDEV_FN_IN || r->fn == GW_TESTDEV_FN_INOUT))
        for (size_t i = 0; i < d->n_streams && result == 0; i++)
            if (d->streams[i].res == (size_t)idx && d->streams[i].interval_ms == 0)
                result = send_sample(d, &d->streams[i]);
    gw_value_fini(&in);
    return result;
}

static int on_describe(struct gw_testdev *d, const struct gw_iotmp_frame *f, uint16_t sid)
{
    d->st.describes++;
    if (!gw_iotmp_has(f, GW_IOTMP_RESOURCE)) {
        struct gw_value all = gw_value_map();
        for (size_t i = 0; i < d->n_res; i++) {
            struct gw_value *desc = gw_value_map_set(&all, d->res[i].name, strlen(d->res[i].name));
            *desc = gw_value_map();
            *gw_value_map_set(desc, "fn", 2) = gw_value_uint(d->res[i].fn);
            *gw_value_map_set(desc, "id", 2) = gw_value_uint(d->res[i].id);
        }
        int rc = answer(d, sid, true, 0, &all, 0);
        gw_value_fini(&all);
        return rc;
    }
    char name[256];
    int idx = find_resource(d, f, name, sizeof name);
    if (idx < 0)
        return answer_error_text(d, sid, 404, "resource not found");
    const struct gw_testdev_resource *r = &d->res[idx];
    if (r->fn == GW_TESTDEV_FN_RUN)
        return answer(d, sid, true, 0, NULL, 0);
    struct gw_value sample;
    int rc = run_handler(d, r, NULL, &sample, true);
    if (rc != 0) {
        gw_value_fini(&sample);
        return answer_error_text(d, sid, rc > 0 ? rc : 0, "describe failed");
    }
    struct gw_value desc = gw_value_map();
    if (r->fn == GW_TESTDEV_FN_IN || r->fn == GW_TESTDEV_FN_INOUT)
        gw_value_copy(gw_value_map_set(&desc, "in", 2), &sample);
    if (r->fn == GW_TESTDEV_FN_OUT || r->fn == GW_TESTDEV_FN_INOUT)
        gw_value_copy(gw_value_map_set(&desc, "out", 3), &sample);
    rc = answer(d, sid, true, 0, &desc, 0);
    gw_value_fini(&desc);
    gw_value_fini(&sample);
    return rc;
}

static struct stream *find_stream(struct gw_testdev *d, uint16_t sid)
{
    for (size_t i = 0; i < d->n_streams; i++)
        if (d->streams[i].sid == sid)
            return &d->streams[i];
    return NULL;
}

static int on_start_stream(struct gw_testdev *d, const struct gw_iotmp_frame *f, uint16_t sid)
{
    char name[256];
    int idx = find_resource(d, f, name, sizeof name);
    if (idx < 0)
        return answer_error_text(d, sid, 404, "resource not found");
    if (sid == 0)
        return 0; /* a stream needs an id */
    if (d->res[idx].fn == GW_TESTDEV_FN_RUN)
        return answer_error_text(d, sid, 400, "run resources cannot be streamed");
    unsigned interval = 0;
    struct gw_value params;
    if (field_value(f, GW_IOTMP_PARAMETERS, &params) == 0) {
        const struct gw_value *iv = params.type == GW_VALUE_MAP
                                        ? gw_value_map_get(&params, "interval")
                                        : &params; /* bare number, as [emb] accepts */
        double ms = 0;
        if (iv && gw_value_to_double(iv, &ms) == 0 && ms > 0 && ms < 86400000.0)
            interval = (unsigned)ms;
        gw_value_fini(&params);
    }
    struct stream *s = find_stream(d, sid); /* same id again: replaces the configuration */
    if (!s) {
        if (d->n_streams == d->cap_streams) {
            d->cap_streams = d->cap_streams ? 2 * d->cap_streams : 8;
            d->streams = gw_realloc(d->streams, d->cap_streams * sizeof *d->streams);
        }
        s = &d->streams[d->n_streams++];
    }
    s->sid = sid;
    s->res = (size_t)idx;
    s->interval_ms = interval;
    s->next_ms = gw_testdev_now_ms() + interval;
    gw_log_info("testdev %s: stream %u on %s, interval %u ms", d->device, sid, d->res[idx].name,
                interval);
    int rc = answer(d, sid, true, 0, NULL, 0);
    if (rc == 0)
        rc = send_sample(d, s); /* first sample right away ([emb] behaviour) */
    return rc;
}

static int on_stop_stream(struct gw_testdev *d, uint16_t sid)
{
    for (size_t i = 0; i < d->n_streams; i++) {
        if (d->streams[i].sid == sid) {
            d->streams[i] = d->streams[--d->n_streams];
            gw_log_info("testdev %s: stream %u stopped", d->device, sid);
            return answer(d, sid, true, 0, NULL, 0);
        }
    }
    return answer_error_text(d, sid, 404, "stream not active");
}

static void on_answer(struct gw_testdev *d, uint64_t type, const struct gw_iotmp_frame *f,
                      uint16_t sid)
{
    for (struct waiter *w = d->waiters; w; w = w->next) {
        if (w->sid != sid || w->done)
            continue;
        w->done = true;
        w->type = type;
        uint64_t code;
        w->code = gw_iotmp_get_uint(f, GW_IOTMP_PARAMETERS, &code) == 0 && code <= 0x7fffffff
                      ? (int)code : -1;
        if (field_value(f, GW_IOTMP_PAYLOAD, &w->answer) < 0)
            w->answer = GW_VALUE_INIT_NULL;
        return;
    }
    gw_log_debug("testdev %s: %s for stream %u that nobody waits for", d->device,
                 gw_iotmp_type_name(type), sid);
}

static int dispatch(struct gw_testdev *d, uint64_t type, const uint8_t *body, size_t len)
{
    d->st.frames_in++;
    struct gw_iotmp_frame f;
    int prc = gw_iotmp_parse(&f, type, body, len);
    uint16_t sid = 0;
    int src = gw_iotmp_get_stream_id(&f, &sid);
    if (prc < 0 && prc != GW_EWIRE) {
        snprintf(d->err, sizeof d->err, "malformed %s frame (%zu bytes): %s",
                 gw_iotmp_type_name(type), len, gw_strerror(prc));
        gw_log_warn("testdev %s: %s, closing", d->device, d->err);
        return GW_EFRAME;
    }
    if (src < 0 && src != GW_ENOENT) {
        gw_log_warn("testdev %s: %s with a bad stream id: %s", d->device,
                    gw_iotmp_type_name(type), gw_strerror(src));
        sid = 0;
    }
    gw_log_debug("testdev %s: in %s stream %u (%zu bytes)", d->device, gw_iotmp_type_name(type),
                 sid, len);
    if (prc == GW_EWIRE) { /* decision 14.8 */
        bool request = type == GW_IOTMP_RUN || type == GW_IOTMP_DESCRIBE ||
                       type == GW_IOTMP_START_STREAM || type == GW_IOTMP_STOP_STREAM;
        gw_log_warn("testdev %s: %s with an unknown wire type", d->device,
                    gw_iotmp_type_name(type));
        return request ? answer_error_text(d, sid, 400, "unknown wire type") : 0;
    }
    switch (type) {
    case GW_IOTMP_OK:
    case GW_IOTMP_ERROR:
        on_answer(d, type, &f, sid);
        return 0;
    case GW_IOTMP_KEEP_ALIVE:
        d->st.keepalive_echoes++;
        return 0;
    case GW_IOTMP_DISCONNECT:
        snprintf(d->err, sizeof d->err, "server sent DISCONNECT");
        gw_log_notice("testdev %s: server sent DISCONNECT, closing", d->device);
        return GW_ELINK;
    case GW_IOTMP_RUN:
        return on_run(d, &f, sid);
    case GW_IOTMP_DESCRIBE:
        return on_describe(d, &f, sid);
    case GW_IOTMP_START_STREAM:
        return on_start_stream(d, &f, sid);
    case GW_IOTMP_STOP_STREAM:
        return on_stop_stream(d, sid);
    case GW_IOTMP_STREAM_DATA: {
        struct stream *s = find_stream(d, sid);
        if (s) { /* input over a stream feeds the resource */
            struct gw_value in, out;
            if (field_value(&f, GW_IOTMP_PAYLOAD, &in) == 0) {
                run_handler(d, &d->res[s->res], &in, &out, false);
                gw_value_fini(&out);
            }
            gw_value_fini(&in);
        }
        return 0;
    }
    default:
        gw_log_debug("testdev %s: ignoring message type %llu", d->device,
                     (unsigned long long)type);
        return 0;
    }
}

/* Feeds buffered bytes to the frame reader and dispatches complete frames. */
static int process_input(struct gw_testdev *d)
{
    while (d->in_pos < d->in.len) {
        size_t used = 0, blen = 0;
        uint64_t type = 0;
        const uint8_t *body = NULL;
        int rc = gw_iotmp_feed(&d->reader, d->in.p + d->in_pos, d->in.len - d->in_pos, &used,
                               &type, &body, &blen);
        if (rc == GW_ENOBUFS) {
            size_t need = gw_iotmp_reader_need(&d->reader);
            d->reader_buf = gw_realloc(d->reader_buf, need);
            d->reader_cap = need;
            gw_iotmp_reader_set_buffer(&d->reader, d->reader_buf, need);
            d->in_pos += used;
            continue;
        }
        if (rc < 0) {
            snprintf(d->err, sizeof d->err, "bad frame header from server: %s", gw_strerror(rc));
            gw_log_warn("testdev %s: %s, closing", d->device, d->err);
            return GW_EFRAME;
        }
        if (rc == 0) {
            d->in_pos = d->in.len;
            break;
        }
        d->in_pos += used;
        uint8_t *copy = gw_malloc(blen ? blen : 1);
        memcpy(copy, body, blen);
        rc = dispatch(d, type, copy, blen);
        free(copy);
        if (rc < 0 && rc != GW_EINVAL && rc != GW_ENOBUFS)
            return rc;
        if (d->link.fd < 0)
            return GW_ELINK;
    }
    if (d->in_pos >= d->in.len) {
        d->in.len = 0;
        d->in_pos = 0;
    }
    return 0;
}

/* Reads what is there and processes it. */
static int read_and_process(struct gw_testdev *d)
{
    int n = gw_testdev_link_recv(&d->link, &d->in);
    if (n < 0) {
        /* Frames that arrived before the close still count. */
        process_input(d);
        link_lost(d, n);
        return GW_ELINK;
    }
    int rc = process_input(d);
    if (rc < 0) {
        link_lost(d, rc);
        return GW_ELINK;
    }
    return 0;
}

/* Runs timers that are due; returns ms until the next one (-1: none). */
static int run_timers(struct gw_testdev *d, int *rc_out)
{
    int64_t now = gw_testdev_now_ms();
    int64_t next = -1;
    *rc_out = 0;
    while (d->delayed && d->delayed->due_ms <= now) {
        struct delayed *dl = d->delayed;
        d->delayed = dl->next;
        int rc = send_bytes(d, dl->frame, dl->len);
        free(dl->frame);
        free(dl);
        if (rc < 0) {
            *rc_out = rc;
            return 0;
        }
    }
    if (d->delayed)
        next = d->delayed->due_ms;
    for (size_t i = 0; i < d->n_streams; i++) {
        struct stream *s = &d->streams[i];
        if (s->interval_ms == 0)
            continue;
        if (s->next_ms <= now) {
            /* Keep the schedule; if we fell far behind, restart it from now. */
            s->next_ms += s->interval_ms;
            if (s->next_ms <= now)
                s->next_ms = now + s->interval_ms;
            int rc = send_sample(d, s);
            if (rc < 0) {
                *rc_out = rc;
                return 0;
            }
        }
        if (next < 0 || s->next_ms < next)
            next = s->next_ms;
    }
    if (d->authed && !d->no_keepalive) {
        if (d->next_ka_ms <= now) {
            int rc = gw_testdev_keepalive(d);
            if (rc < 0) {
                *rc_out = rc;
                return 0;
            }
        }
        if (next < 0 || d->next_ka_ms < next)
            next = d->next_ka_ms;
    }
    if (next < 0)
        return -1;
    return next <= now ? 0 : (int)(next - now);
}

int gw_testdev_poll(struct gw_testdev *d, int timeout_ms)
{
    if (d->link.fd < 0)
        return d->authed ? GW_ELINK : GW_ENOTCONN;
    int rc;
    int until_timer = run_timers(d, &rc);
    if (rc < 0)
        return GW_ELINK;
    int wait = timeout_ms;
    if (until_timer >= 0 && (wait < 0 || until_timer < wait))
        wait = until_timer;
    if (d->in_pos < d->in.len || gw_testdev_link_pending(&d->link))
        wait = 0;
    struct pollfd pfd = {.fd = d->link.fd, .events = POLLIN};
    int n = poll(&pfd, 1, wait);
    if (n < 0) {
        if (errno == EINTR)
            return -EINTR;
        return -errno;
    }
    if (n > 0 || gw_testdev_link_pending(&d->link) || d->in_pos < d->in.len) {
        rc = read_and_process(d);
        if (rc < 0)
            return rc;
    }
    run_timers(d, &rc);
    return rc < 0 ? GW_ELINK : 0;
}

int gw_testdev_stream_event(struct gw_testdev *d, const char *name)
{
    size_t idx = d->n_res;
    for (size_t i = 0; i < d->n_res; i++)
        if (strcmp(d->res[i].name, name) == 0)
            idx = i;
    if (idx == d->n_res)
        return GW_ERESOURCE;
    int count = 0;
    for (size_t i = 0; i < d->n_streams; i++) {
        if (d->streams[i].res != idx || d->streams[i].interval_ms != 0)
            continue;
        int rc = send_sample(d, &d->streams[i]);
        if (rc < 0)
            return rc;
        count++;
    }
    return count;
}

/* --- Waiting for answers --- */

/* Waits until w is done or the deadline passes. */
static int wait_for(struct gw_testdev *d, struct waiter *w, int64_t deadline)
{
    while (!w->done) {
        int64_t left = deadline - gw_testdev_now_ms();
        if (left <= 0)
            return GW_ETIMEDOUT;
        int rc = gw_testdev_poll(d, (int)left);
        if (rc == -EINTR)
            continue;
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void waiter_push(struct gw_testdev *d, struct waiter *w, uint16_t sid)
{
    memset(w, 0, sizeof *w);
    w->sid = sid;
    w->code = -1;
    w->next = d->waiters;
    d->waiters = w;
}

static void waiter_pop(struct gw_testdev *d, struct waiter *w)
{
    for (struct waiter **pp = &d->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            return;
        }
    }
}

int gw_testdev_call(struct gw_testdev *d, const struct gw_testdev_action *a,
                    struct gw_value *answer_out, int *code)
{
    if (answer_out)
        *answer_out = GW_VALUE_INIT_NULL;
    if (code)
        *code = -1;
    if (!gw_testdev_connected(d))
        return GW_ENOTCONN;
    struct out_field f[GW_IOTMP_FIELD_MAX + 1] = {0};
    uint16_t sid = a->confirm ? new_sid(d) : 0;
    if (sid)
        f[GW_IOTMP_STREAM_ID] = (struct out_field){.kind = 1, .u = sid};
    unsigned code_field = a->layout == GW_TESTDEV_LAYOUT_LINUX ? GW_IOTMP_RESOURCE
                                                               : GW_IOTMP_PARAMETERS;
    unsigned target_field = a->layout == GW_TESTDEV_LAYOUT_LINUX ? GW_IOTMP_PARAMETERS
                                                                 : GW_IOTMP_RESOURCE;
    f[code_field] = (struct out_field){.kind = 1, .u = (uint64_t)a->code};
    if (a->target)
        f[target_field] = (struct out_field){.kind = 2, .v = a->target};
    if (a->payload)
        f[GW_IOTMP_PAYLOAD] = (struct out_field){.kind = 2, .v = a->payload};
    struct waiter w;
    if (sid)
        waiter_push(d, &w, sid);
    int rc = send_msg(d, GW_IOTMP_RUN, f);
    if (rc < 0 || !sid) {
        if (sid)
            waiter_pop(d, &w);
        return rc;
    }
    int64_t deadline = gw_testdev_now_ms() + (a->timeout_ms > 0 ? a->timeout_ms
                                                                : DEFAULT_TIMEOUT_MS);
    rc = wait_for(d, &w, deadline);
    waiter_pop(d, &w);
    if (rc < 0) {
        gw_value_fini(&w.answer);
        return rc;
    }
    if (code)
        *code = w.code;
    if (answer_out)
        *answer_out = w.answer;
    else
        gw_value_fini(&w.answer);
    return w.type == GW_IOTMP_OK ? 0 : GW_EPEER;
}

/* --- Connect --- */

int gw_testdev_connect(struct gw_testdev *d)
{
    gw_testdev_close(d);
    d->err[0] = '\0';
    d->connect_code = -1;
    free(d->redirect);
    d->redirect = NULL;
    int rc = gw_testdev_url_parse(d->url ? d->url : "", &d->u, d->err, sizeof d->err);
    if (rc < 0)
        return rc;
    rc = gw_testdev_link_open(&d->link, &d->u, d->ca_file, d->insecure, d->timeout_ms);
    if (rc < 0) {
        snprintf(d->err, sizeof d->err, "%s", d->link.err);
        return rc;
    }
    gw_iotmp_reader_init(&d->reader, d->reader_buf, d->reader_cap, d->max_frame);

    struct gw_value creds = gw_value_array();
    *gw_value_array_add(&creds) = gw_value_cstr(d->user);
    *gw_value_array_add(&creds) = gw_value_cstr(d->device);
    *gw_value_array_add(&creds) = gw_value_cstr(d->password);
    struct gw_value params = gw_value_map();
    if (d->ka_raw)
        *gw_value_map_set(&params, "ka", 2) = gw_value_cstr(d->ka_raw);
    else if (d->ka)
        *gw_value_map_set(&params, "ka", 2) = gw_value_uint(d->ka);
    uint16_t sid = new_sid(d);
    struct out_field f[GW_IOTMP_FIELD_MAX + 1] = {0};
    f[GW_IOTMP_STREAM_ID] = (struct out_field){.kind = 1, .u = sid};
    if (gw_value_count(&params) > 0)
        f[GW_IOTMP_PARAMETERS] = (struct out_field){.kind = 2, .v = &params};
    f[GW_IOTMP_PAYLOAD] = (struct out_field){.kind = 2, .v = &creds};
    rc = send_msg(d, GW_IOTMP_CONNECT, f);
    gw_value_fini(&creds);
    gw_value_fini(&params);
    if (rc < 0)
        return rc == GW_ELINK ? GW_ELINK : rc;

    /* The first message answers CONNECT (clients check only its type, PROTOCOL.md 2.2). */
    int64_t deadline = gw_testdev_now_ms() + d->timeout_ms;
    for (;;) {
        size_t used = 0, blen = 0;
        uint64_t type = 0;
        const uint8_t *body = NULL;
        if (d->in_pos < d->in.len) {
            rc = gw_iotmp_feed(&d->reader, d->in.p + d->in_pos, d->in.len - d->in_pos, &used,
                               &type, &body, &blen);
            if (rc == GW_ENOBUFS) {
                size_t need = gw_iotmp_reader_need(&d->reader);
                d->reader_buf = gw_realloc(d->reader_buf, need);
                d->reader_cap = need;
                gw_iotmp_reader_set_buffer(&d->reader, d->reader_buf, need);
                d->in_pos += used;
                continue;
            }
            if (rc < 0) {
                snprintf(d->err, sizeof d->err, "bad frame header in the CONNECT answer: %s",
                         gw_strerror(rc));
                gw_testdev_link_close(&d->link);
                return GW_EFRAME;
            }
            if (rc == 1) {
                d->in_pos += used;
                d->st.frames_in++;
                struct gw_iotmp_frame fr;
                int prc = gw_iotmp_parse(&fr, type, body, blen);
                if (type == GW_IOTMP_OK && prc == 0) {
                    d->authed = true;
                    d->next_ka_ms = gw_testdev_now_ms() + ka_period_ms(d);
                    return process_input(d) < 0 ? GW_ELINK : 0;
                }
                if (type == GW_IOTMP_ERROR && prc == 0) {
                    uint64_t code;
                    if (gw_iotmp_get_uint(&fr, GW_IOTMP_PARAMETERS, &code) == 0 &&
                        code <= 0x7fffffff)
                        d->connect_code = (int)code;
                    struct gw_value p;
                    field_value(&fr, GW_IOTMP_PAYLOAD, &p);
                    if (d->connect_code == 1 && p.type == GW_VALUE_STRING)
                        d->redirect = gw_strdup(p.s.p);
                    gw_value_fini(&p);
                    gw_testdev_link_close(&d->link);
                    static const char *const reasons[] = {"unknown reason", "redirect",
                                                          "bad credentials",
                                                          "invalid keep-alive", "bad encoding"};
                    int c = d->connect_code;
                    snprintf(d->err, sizeof d->err, "CONNECT refused: ERROR code %d (%s)%s%s", c,
                             c >= 1 && c <= 4 ? reasons[c] : reasons[0],
                             d->redirect ? " to " : "", d->redirect ? d->redirect : "");
                    return c == 2 ? GW_EAUTH : c == 1 ? GW_EREDIRECT : GW_EPEER;
                }
                snprintf(d->err, sizeof d->err, "CONNECT answered with %s (%s)",
                         gw_iotmp_type_name(type), prc ? gw_strerror(prc) : "not OK/ERROR");
                gw_testdev_link_close(&d->link);
                return GW_EFRAME;
            }
            d->in_pos = d->in.len; /* rc == 0: all consumed */
        }
        d->in.len = d->in_pos = 0;
        int left = (int)(deadline - gw_testdev_now_ms());
        if (left <= 0) {
            snprintf(d->err, sizeof d->err, "no answer to CONNECT within %d ms", d->timeout_ms);
            gw_testdev_link_close(&d->link);
            return GW_ETIMEDOUT;
        }
        if (!gw_testdev_link_pending(&d->link)) {
            struct pollfd pfd = {.fd = d->link.fd, .events = POLLIN};
            int n = poll(&pfd, 1, left);
            if (n < 0 && errno != EINTR) {
                rc = -errno;
                gw_testdev_link_close(&d->link);
                return rc;
            }
            if (n <= 0)
                continue;
        }
        int got = gw_testdev_link_recv(&d->link, &d->in);
        if (got < 0) {
            snprintf(d->err, sizeof d->err, "connection lost before the CONNECT answer: %s",
                     d->link.err);
            gw_testdev_link_close(&d->link);
            return GW_ELINK;
        }
    }
}

void gw_testdev_close(struct gw_testdev *d)
{
    gw_testdev_link_close(&d->link);
    d->authed = false;
    d->in.len = d->in_pos = 0;
    gw_testdev_buf_free(&d->in);
    d->n_streams = 0;
    while (d->delayed) {
        struct delayed *dl = d->delayed;
        d->delayed = dl->next;
        free(dl->frame);
        free(dl);
    }
    free(d->reader_buf);
    d->reader_buf = NULL;
    d->reader_cap = 0;
}
