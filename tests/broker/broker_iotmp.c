/* SPDX-License-Identifier: Apache-2.0 */
/*
 * iotmp-broker, device side: one record per IOTMP connection (raw TCP, raw TLS, WebSocket, secure
 * WebSocket; all arrive through gw_broker_iotmp_callback), CONNECT checking against the
 * credentials file, keep-alive echo and idle timeout, server actions (properties, buckets,
 * endpoints, CALL_DEVICE relay, sync locks), and the calls the REST side sends to devices
 * (RUN, DESCRIBE, START/STOP_STREAM) with their broker-chosen stream ids and deadlines.
 * Frames are found with the gw_codec incremental reader (its body buffer is allocated only while a
 * large body arrives, so idle devices stay small), parsed with gw_iotmp_parse and built with
 * gw_iotmp_writer. Everything runs on the lws loop thread.
 */
#include "broker.h"

#include "gw/error.h"
#include "gw/mem.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

enum { ST_WAIT_CONNECT, ST_AUTHED, ST_CLOSING };

static const char *const transport_names[] = {"tcp", "tls", "ws", "wss"};
static const char *const layout_names[] = {"any", "linux", "embedded"};

struct pss {
    struct gw_broker_conn *c;
};

/* --- Frame building --- */

enum { F_NONE, F_VARINT, F_JSON, F_RAW, F_STR };

struct fpart {
    uint8_t kind;
    uint64_t u;
    const json_t *j;
    const uint8_t *p;   /* F_RAW: PSON; F_STR: string bytes */
    size_t len;
};

struct fspec {
    uint64_t type;
    bool has_sid;
    uint16_t sid;
    struct fpart params, payload, resource;
};

static void put_part(struct gw_iotmp_writer *w, unsigned id, const struct fpart *p)
{
    switch (p->kind) {
    case F_VARINT:
        gw_iotmp_put_varint(w, id, p->u);
        break;
    case F_JSON:
        gw_broker_json_to_pson(p->j, gw_iotmp_put_pson(w, id));
        break;
    case F_RAW:
        gw_pson_put_raw(gw_iotmp_put_pson(w, id), p->p, p->len);
        break;
    case F_STR:
        gw_pson_put_str(gw_iotmp_put_pson(w, id), p->p, p->len);
        break;
    default:
        break;
    }
}

static void put_fields(struct gw_iotmp_writer *w, const struct fspec *s)
{
    if (s->has_sid)
        gw_iotmp_put_varint(w, GW_IOTMP_STREAM_ID, s->sid);
    put_part(w, GW_IOTMP_PARAMETERS, &s->params);
    put_part(w, GW_IOTMP_PAYLOAD, &s->payload);
    put_part(w, GW_IOTMP_RESOURCE, &s->resource);
}

static struct gw_broker_out *encode(const struct fspec *s)
{
    uint8_t tmp[1024];
    struct gw_iotmp_writer w;
    const uint8_t *fr;
    size_t len;
    struct gw_broker_out *o = gw_calloc(1, sizeof *o);
    gw_iotmp_writer_init(&w, tmp, sizeof tmp, s->type);
    put_fields(&w, s);
    int rc = gw_iotmp_finish(&w, &fr, &len);
    if (rc == 0) {
        o->mem = gw_malloc(LWS_PRE + len);
        memcpy(o->mem + LWS_PRE, fr, len);
        o->frame = o->mem + LWS_PRE;
        o->len = len;
        return o;
    }
    if (rc == GW_ENOBUFS) {
        size_t cap = len + 2 * GW_IOTMP_HEADROOM + 16;
        o->mem = gw_malloc(LWS_PRE + cap);
        gw_iotmp_writer_init(&w, o->mem + LWS_PRE, cap, s->type);
        put_fields(&w, s);
        rc = gw_iotmp_finish(&w, &fr, &len);
        if (rc == 0) {
            o->frame = fr;
            o->len = len;
            return o;
        }
    }
    gw_broker_log(GW_BROKER_ERR, "cannot encode frame", "{s:s,s:s}", "type",
                  gw_iotmp_type_name(s->type), "error", gw_strerror(rc));
    free(o->mem);
    free(o);
    return NULL;
}

static void log_frame(const struct gw_broker_conn *c, const char *dir, uint64_t type, int sid,
                      const uint8_t *frame, size_t len)
{
    if (gw_broker_log_level < GW_BROKER_DEBUG)
        return;
    char *hex = NULL;
    /* never dump a CONNECT: it carries the credentials */
    if (gw_broker.hex && type != GW_IOTMP_CONNECT && frame) {
        hex = gw_malloc(2 * len + 1);
        for (size_t i = 0; i < len; i++)
            sprintf(hex + 2 * i, "%02x", frame[i]);
        hex[2 * len] = 0;
    }
    gw_broker_log(GW_BROKER_DEBUG, "frame", "{s:s,s:s,s:i,s:s?,s:I,s:I,s:s?}", "dir", dir, "type",
                  gw_iotmp_type_name(type), "stream", sid, "device", c->device, "conn",
                  (json_int_t)c->id, "size", (json_int_t)len, "hex", hex);
    free(hex);
}

/* --- Output queue --- */

static void queue_out(struct gw_broker_conn *c, struct gw_broker_out *o)
{
    if (!o)
        return;
    o->next = NULL;
    if (c->q_tail)
        c->q_tail->next = o;
    else
        c->q_head = o;
    c->q_tail = o;
    if (!gw_broker.stopping)
        lws_callback_on_writable(c->wsi);
}

static void delayed_fire(struct gw_broker_timer *t)
{
    struct gw_broker_delayed *d = lws_container_of(t, struct gw_broker_delayed, timer);
    struct gw_broker_conn *c = d->conn;
    if (d->prev)
        d->prev->next = d->next;
    else
        c->delayed = d->next;
    if (d->next)
        d->next->prev = d->prev;
    queue_out(c, d->out);
    free(d);
}

/* Sends a frame; answers to device requests go through the /_control/delay switch. */
static void send_spec(struct gw_broker_conn *c, const struct fspec *s, bool is_answer)
{
    if (c->state == ST_CLOSING && !c->close_after_write)
        return;
    struct gw_broker_out *o = encode(s);
    if (!o)
        return;
    log_frame(c, "out", s->type, s->has_sid ? s->sid : -1, o->frame, o->len);
    if (is_answer && gw_broker.delay_ms) {
        struct gw_broker_delayed *d = gw_calloc(1, sizeof *d);
        d->conn = c;
        d->out = o;
        d->next = c->delayed;
        if (d->next)
            d->next->prev = d;
        c->delayed = d;
        gw_broker_timer_start(&d->timer, delayed_fire, (uint64_t)gw_broker.delay_ms * 1000);
        return;
    }
    queue_out(c, o);
}

/* OK/ERROR answer with an optional numeric code and a JSON payload (borrowed). */
static void answer(struct gw_broker_conn *c, uint64_t type, uint16_t sid, int code,
                   const json_t *payload)
{
    struct fspec s = {.type = type, .has_sid = true, .sid = sid};
    if (code > 0)
        s.params = (struct fpart){.kind = F_VARINT, .u = (uint64_t)code};
    if (payload)
        s.payload = (struct fpart){.kind = F_JSON, .j = payload};
    send_spec(c, &s, true);
}

static void answer_error(struct gw_broker_conn *c, uint16_t sid, int code, const char *text)
{
    if (!sid)
        return;
    json_t *p = json_pack("{s:s}", "error", text);
    answer(c, GW_IOTMP_ERROR, sid, code, p);
    json_decref(p);
}

/* --- Connection registry --- */

struct gw_broker_conn *gw_broker_find_device(const char *user, const char *device)
{
    for (struct gw_broker_conn *c = gw_broker.conns; c; c = c->next)
        if (c->state == ST_AUTHED && strcmp(c->user, user) == 0 && strcmp(c->device, device) == 0)
            return c;
    return NULL;
}

struct gw_broker_conn *gw_broker_find_conn(uint64_t id)
{
    for (struct gw_broker_conn *c = gw_broker.conns; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

struct gw_broker_stream *gw_broker_stream_find(const char *user, const char *device, uint16_t sid)
{
    for (struct gw_broker_stream *s = gw_broker.streams; s; s = s->next)
        if (s->sid == sid && strcmp(s->user, user) == 0 && strcmp(s->device, device) == 0)
            return s;
    return NULL;
}

void gw_broker_stream_free(struct gw_broker_stream *s)
{
    s->open = s->starting = false;
    gw_broker_rest_stream_event(s); /* answers every long-poll still waiting on it */
    if (s->prev)
        s->prev->next = s->next;
    else
        gw_broker.streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    for (size_t i = 0; i < s->ring_n; i++)
        free(s->ring[(s->ring_start + i) % s->ring_cap].data);
    free(s->ring);
    free(s->user);
    free(s->device);
    free(s->resource);
    free(s);
}

static bool sid_in_use(const struct gw_broker_conn *c, uint16_t sid)
{
    for (const struct gw_broker_call *k = c->calls; k; k = k->next)
        if (k->sid == sid)
            return true;
    for (const struct gw_broker_stream *s = gw_broker.streams; s; s = s->next)
        if (s->conn_id == c->id && s->sid == sid && (s->open || s->starting))
            return true;
    return false;
}

uint16_t gw_broker_conn_new_sid(struct gw_broker_conn *c)
{
    for (unsigned tries = 0; tries < 65536; tries++) {
        uint16_t sid = c->next_sid++;
        if (sid && !sid_in_use(c, sid))
            return sid;
    }
    return 0; /* 65535 requests in flight on one connection: refused by the caller */
}

/* --- Calls into devices --- */

static void call_complete(struct gw_broker_call *call, const struct gw_iotmp_frame *f,
                          bool timed_out);

static void call_timeout_cb(struct gw_broker_timer *t)
{
    struct gw_broker_call *call = lws_container_of(t, struct gw_broker_call, timer);
    gw_broker_log(GW_BROKER_NOTICE, "device did not answer in time", "{s:s,s:s,s:i,s:i}", "user",
                  call->dev->user, "device", call->dev->device, "stream", call->sid, "timeout_ms",
                  (int)call->timeout_ms);
    gw_broker_count_error("call_timeout");
    call_complete(call, NULL, true);
}

static bool all_digits(const char *s)
{
    if (!*s || strlen(s) > 19)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

/* Registers a call on c; fixed_sid 0 picks a new stream id. NULL when none is free. */
static struct gw_broker_call *call_alloc(struct gw_broker_conn *c, uint8_t kind, uint16_t fixed_sid,
                                         uint32_t timeout_ms)
{
    uint16_t sid = fixed_sid ? fixed_sid : gw_broker_conn_new_sid(c);
    if (!sid)
        return NULL;
    struct gw_broker_call *call = gw_calloc(1, sizeof *call);
    call->dev = c;
    call->sid = sid;
    call->kind = kind;
    call->timeout_ms = timeout_ms;
    call->next = c->calls;
    if (call->next)
        call->next->prev = call;
    c->calls = call;
    return call;
}

/* Encodes and sends the request of a call made by call_alloc and arms its deadline. */
static void call_fire(struct gw_broker_call *call, uint64_t type, const char *resource,
                      const json_t *params, const json_t *payload, const uint8_t *payload_pson,
                      size_t payload_pson_len)
{
    struct gw_broker_conn *c = call->dev;
    struct fspec s = {.type = type, .has_sid = true, .sid = call->sid};
    if (params)
        s.params = (struct fpart){.kind = F_JSON, .j = params};
    if (payload_pson)
        s.payload = (struct fpart){.kind = F_RAW, .p = payload_pson, .len = payload_pson_len};
    else if (payload)
        s.payload = (struct fpart){.kind = F_JSON, .j = payload};
    if (resource) {
        if (all_digits(resource))
            s.resource = (struct fpart){.kind = F_VARINT, .u = strtoull(resource, NULL, 10)};
        else
            s.resource = (struct fpart){
                .kind = F_STR, .p = (const uint8_t *)resource, .len = strlen(resource)};
    }
    send_spec(c, &s, false);
    gw_broker_timer_start(&call->timer, call_timeout_cb, (uint64_t)call->timeout_ms * 1000);
}

struct gw_broker_call *gw_broker_call_start(struct gw_broker_conn *c, uint64_t type, uint8_t kind,
                                            uint16_t fixed_sid, const char *resource,
                                            const json_t *params, const json_t *payload,
                                            uint32_t timeout_ms, struct gw_broker_req *req,
                                            struct gw_broker_stream *stream)
{
    struct gw_broker_call *call = call_alloc(c, kind, fixed_sid, timeout_ms);
    if (!call)
        return NULL;
    call->req = req;
    call->stream = stream;
    call_fire(call, type, resource, params, payload, NULL, 0);
    return call;
}

static void relay_answer(struct gw_broker_call *call, const struct gw_iotmp_frame *f,
                         bool timed_out)
{
    struct gw_broker_conn *origin = gw_broker_find_conn(call->relay_conn);
    if (!origin || origin->state != ST_AUTHED || !call->relay_sid)
        return;
    if (!f) {
        answer_error(origin, call->relay_sid, timed_out ? 504 : 502,
                     timed_out ? "target device did not answer in time"
                               : "target device disconnected before answering");
        return;
    }
    struct fspec s = {.type = f->type == GW_IOTMP_OK ? GW_IOTMP_OK : GW_IOTMP_ERROR,
                      .has_sid = true,
                      .sid = call->relay_sid};
    const struct gw_iotmp_field *pa = &f->field[GW_IOTMP_PARAMETERS];
    const struct gw_iotmp_field *pl = &f->field[GW_IOTMP_PAYLOAD];
    if (gw_iotmp_has(f, GW_IOTMP_PARAMETERS))
        s.params = pa->wire == GW_IOTMP_WIRE_VARINT
                       ? (struct fpart){.kind = F_VARINT, .u = pa->u}
                       : (struct fpart){.kind = F_RAW, .p = pa->p, .len = pa->len};
    if (gw_iotmp_has(f, GW_IOTMP_PAYLOAD))
        s.payload = pl->wire == GW_IOTMP_WIRE_VARINT
                        ? (struct fpart){.kind = F_VARINT, .u = pl->u}
                        : (struct fpart){.kind = F_RAW, .p = pl->p, .len = pl->len};
    send_spec(origin, &s, true);
}

static void call_complete(struct gw_broker_call *call, const struct gw_iotmp_frame *f,
                          bool timed_out)
{
    struct gw_broker_conn *c = call->dev;
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    gw_broker_timer_stop(&call->timer);

    struct gw_broker_stream *s = call->stream;
    bool ok = f && f->type == GW_IOTMP_OK;
    if (call->kind == GW_BROKER_CALL_RELAY) {
        relay_answer(call, f, timed_out);
    } else {
        if (s && call->kind == GW_BROKER_CALL_START) {
            s->starting = false;
            s->open = ok;
        }
        if (s && call->kind == GW_BROKER_CALL_STOP)
            s->open = false;
        gw_broker_rest_call_done(call, f, timed_out);
        if (s && call->kind == GW_BROKER_CALL_START && !ok)
            gw_broker_stream_free(s);
        else if (s)
            gw_broker_rest_stream_event(s);
    }
    free(call);
}

/* --- Connection lifecycle --- */

static void release_locks(uint64_t conn_id)
{
    struct gw_broker_lock **pp = &gw_broker.locks;
    while (*pp) {
        struct gw_broker_lock *l = *pp;
        if (l->holder_conn == conn_id) {
            *pp = l->next;
            free(l->user);
            free(l->sync);
            free(l->lock_id);
            free(l);
        } else {
            pp = &l->next;
        }
    }
}

/* Marks c closing and fails everything that waits on it; the record is freed on the lws close. */
static void conn_shutdown(struct gw_broker_conn *c, const char *reason)
{
    if (c->state == ST_CLOSING)
        return;
    bool authed = c->state == ST_AUTHED;
    c->state = ST_CLOSING;
    gw_broker_log(GW_BROKER_INFO, "connection closed", "{s:I,s:s?,s:s?,s:s,s:s,s:s}", "conn",
                  (json_int_t)c->id, "user", c->user, "device", c->device, "transport",
                  transport_names[c->transport], "remote", c->remote, "reason", reason);
    while (c->calls)
        call_complete(c->calls, NULL, false);
    if (authed) {
        for (struct gw_broker_stream *s = gw_broker.streams; s; s = s->next) {
            if (s->conn_id == c->id && (s->open || s->starting)) {
                s->open = s->starting = false;
                gw_broker_rest_stream_event(s);
            }
        }
        release_locks(c->id);
    }
}

void gw_broker_conn_drop(struct gw_broker_conn *c, const char *reason)
{
    conn_shutdown(c, reason);
    c->close_after_write = false;
    /* closed from its own writable callback (returns -1 when closing); lws_set_timeout's
     * LWS_TO_KILL_ASYNC rides on the lws timer that a libev loop may fire late */
    lws_callback_on_writable(c->wsi);
}

void gw_broker_conn_freeze(struct gw_broker_conn *c, bool frozen)
{
    c->frozen = frozen;
    lws_rx_flow_control(c->wsi, frozen ? 0 : 1);
    gw_broker_log(GW_BROKER_INFO, frozen ? "connection frozen" : "connection unfrozen",
                  "{s:s?,s:s?}", "user", c->user, "device", c->device);
}

static void ka_check(struct gw_broker_timer *t)
{
    struct gw_broker_conn *c = lws_container_of(t, struct gw_broker_conn, ka_timer);
    lws_usec_t limit = (lws_usec_t)c->ka_s * 1150000;
    lws_usec_t idle = lws_now_usecs() - c->last_rx_us;
    if (c->state == ST_CLOSING)
        return;
    if (c->frozen || idle < limit) {
        lws_usec_t next = c->frozen ? limit : limit - idle;
        gw_broker_timer_start(&c->ka_timer, ka_check, (uint64_t)(next < 1000 ? 1000 : next));
        return;
    }
    gw_broker_log(GW_BROKER_NOTICE, "keep-alive timeout, dropping the connection",
                  "{s:s?,s:s?,s:i,s:I}", "user", c->user, "device", c->device, "ka", (int)c->ka_s,
                  "idle_ms", (json_int_t)(idle / 1000));
    gw_broker_count_error("keepalive_timeout");
    gw_broker_conn_drop(c, "keep-alive timeout");
}

static struct gw_broker_conn *conn_new(struct lws *wsi, enum gw_broker_transport t)
{
    struct gw_broker_conn *c = gw_calloc(1, sizeof *c);
    c->id = ++gw_broker.next_conn_id;
    c->wsi = wsi;
    c->transport = (uint8_t)t;
    c->ka_s = 60;
    c->last_rx_us = lws_now_usecs();
    c->since_ms = gw_broker_now_ms();
    c->next_sid = (uint16_t)random(); /* seeded in main: ids differ across runs (decision 14.5) */
    gw_iotmp_reader_init(&c->rd, NULL, 0, gw_broker.max_frame);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getpeername(lws_get_socket_fd(wsi), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
            port = ntohs(a->sin6_port);
        }
    }
    /* the listeners are dual-stack sockets: show v4-mapped peers as plain IPv4 */
    const char *shown = strncmp(ip, "::ffff:", 7) == 0 && strchr(ip, '.') ? ip + 7 : ip;
    snprintf(c->remote, sizeof c->remote, "%s:%d", shown, port);
    c->next = gw_broker.conns;
    if (c->next)
        c->next->prev = c;
    gw_broker.conns = c;
    gw_broker.nconns++;
    gw_broker.st.conn_total++;
    gw_broker_timer_start(&c->ka_timer, ka_check, (uint64_t)c->ka_s * 1150000);
    gw_broker_log(GW_BROKER_DEBUG, "connection opened", "{s:I,s:s,s:s}", "conn",
                  (json_int_t)c->id, "transport", transport_names[t], "remote", c->remote);
    return c;
}

static void conn_free(struct gw_broker_conn *c)
{
    gw_broker_timer_stop(&c->ka_timer);
    while (c->delayed) {
        struct gw_broker_delayed *d = c->delayed;
        c->delayed = d->next;
        gw_broker_timer_stop(&d->timer);
        free(d->out->mem);
        free(d->out);
        free(d);
    }
    while (c->q_head) {
        struct gw_broker_out *o = c->q_head;
        c->q_head = o->next;
        free(o->mem);
        free(o);
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        gw_broker.conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    gw_broker.nconns--;
    free(c->rdbuf);
    free(c->user);
    free(c->device);
    free(c);
}

void gw_broker_iotmp_cleanup(void)
{
    /* lws closed every connection while it was destroyed; free whatever is left */
    while (gw_broker.conns) {
        struct gw_broker_conn *c = gw_broker.conns;
        c->state = ST_CLOSING;
        while (c->calls) {
            struct gw_broker_call *k = c->calls;
            c->calls = k->next;
            gw_broker_timer_stop(&k->timer);
            free(k);
        }
        conn_free(c);
    }
    while (gw_broker.streams)
        gw_broker_stream_free(gw_broker.streams);
    release_locks(0);
    while (gw_broker.locks) {
        struct gw_broker_lock *l = gw_broker.locks;
        gw_broker.locks = l->next;
        free(l->user);
        free(l->sync);
        free(l->lock_id);
        free(l);
    }
}

/* --- CONNECT --- */

static const struct gw_broker_cred *find_cred(const char *user, const char *device)
{
    for (size_t i = 0; i < gw_broker.ncreds; i++)
        if (strcmp(gw_broker.creds[i].user, user) == 0 &&
            strcmp(gw_broker.creds[i].device, device) == 0)
            return &gw_broker.creds[i];
    return NULL;
}

static void connect_refuse(struct gw_broker_conn *c, uint16_t sid, int code, const char *why,
                           const char *uri)
{
    gw_broker_log(GW_BROKER_NOTICE, "CONNECT refused", "{s:I,s:i,s:s,s:s,s:s?}", "conn",
                  (json_int_t)c->id, "code", code, "reason", why, "remote", c->remote, "uri", uri);
    gw_broker.st.auth_failed++;
    gw_broker_count_error(code == 1 ? "connect_redirect" : code == 2 ? "bad_credentials"
                          : code == 3                      ? "bad_keepalive"
                                                           : "bad_encoding");
    struct fspec s = {.type = GW_IOTMP_ERROR, .has_sid = true, .sid = sid};
    s.params = (struct fpart){.kind = F_VARINT, .u = (uint64_t)code};
    if (uri)
        s.payload = (struct fpart){.kind = F_STR, .p = (const uint8_t *)uri, .len = strlen(uri)};
    c->close_after_write = true;
    c->state = ST_CLOSING;
    send_spec(c, &s, true);
}

/* Reads the three credential strings; false when PAYLOAD is not an array of 3 strings. */
static bool read_creds(const struct gw_iotmp_frame *f, char out[3][128])
{
    struct gw_pson_reader r;
    struct gw_pson_item it;
    uint8_t scratch[GW_VARINT_MAX + 1];
    if (gw_iotmp_field_reader(f, GW_IOTMP_PAYLOAD, &r, scratch) < 0)
        return false;
    if (gw_pson_next(&r, &it) < 0 || it.kind != GW_PSON_ARRAY || it.count != 3)
        return false;
    for (int i = 0; i < 3; i++) {
        if (gw_pson_next(&r, &it) < 0 || it.kind != GW_PSON_STRING || it.len >= 128 ||
            memchr(it.s, 0, it.len))
            return false;
        memcpy(out[i], it.s, it.len);
        out[i][it.len] = 0;
    }
    return true;
}

/* ka from CONNECT PARAMETERS: 0 = none given, -1 = invalid, else seconds. */
static int read_ka(const struct gw_iotmp_frame *f)
{
    struct gw_pson_reader r;
    struct gw_pson_item it;
    uint8_t scratch[GW_VARINT_MAX + 1];
    if (gw_iotmp_field_reader(f, GW_IOTMP_PARAMETERS, &r, scratch) < 0)
        return 0;
    if (gw_pson_next(&r, &it) < 0 || it.kind != GW_PSON_MAP)
        return 0;
    for (;;) {
        if (gw_pson_next(&r, &it) < 0 || it.kind == GW_PSON_END)
            return 0;
        if (gw_pson_item_key_is(&it, "ka")) {
            double d;
            if (gw_pson_item_to_double(&it, &d) < 0 || !(d > 0) || d > 1800)
                return -1;
            return d < 1 ? 1 : (int)d;
        }
        if (gw_pson_skip(&r, &it) < 0)
            return 0;
    }
}

static int handle_connect(struct gw_broker_conn *c, uint64_t type, const uint8_t *body,
                          size_t blen)
{
    if (type != GW_IOTMP_CONNECT) {
        gw_broker_log(GW_BROKER_NOTICE, "first message is not CONNECT, closing",
                      "{s:I,s:s,s:s}", "conn", (json_int_t)c->id, "type",
                      gw_iotmp_type_name(type), "remote", c->remote);
        gw_broker_count_error("not_connect");
        conn_shutdown(c, "first message is not CONNECT");
        return -1;
    }
    struct gw_iotmp_frame f;
    int rc = gw_iotmp_parse(&f, type, body, blen);
    uint16_t sid = 0;
    if (gw_iotmp_get_stream_id(&f, &sid) < 0)
        sid = 0;
    log_frame(c, "in", type, sid, NULL, 0);
    if (rc == GW_EWIRE) {
        connect_refuse(c, sid, 4, "field with an unsupported wire type (PSON v1?)", NULL);
        return 0;
    }
    if (rc < 0) {
        gw_broker_log(GW_BROKER_NOTICE, "malformed CONNECT, closing", "{s:I,s:s,s:s}", "conn",
                      (json_int_t)c->id, "reason", gw_strerror(rc), "remote", c->remote);
        gw_broker_count_error("malformed");
        conn_shutdown(c, "malformed CONNECT");
        return -1;
    }
    int ka = read_ka(&f);
    if (ka < 0) {
        connect_refuse(c, sid, 3, "invalid ka parameter", NULL);
        return 0;
    }
    char cr[3][128];
    const struct gw_broker_cred *cred = NULL;
    if (read_creds(&f, cr))
        cred = find_cred(cr[0], cr[1]);
    if (!cred || strcmp(cred->password, cr[2]) != 0) {
        connect_refuse(c, sid, 2, "bad credentials", NULL);
        return 0;
    }
    for (struct gw_broker_redirect **pp = &gw_broker.redirects; *pp; pp = &(*pp)->next) {
        struct gw_broker_redirect *rd = *pp;
        if (strcmp(rd->user, cr[0]) == 0 && strcmp(rd->device, cr[1]) == 0) {
            *pp = rd->next;
            connect_refuse(c, sid, 1, "redirect", rd->uri);
            free(rd->user);
            free(rd->device);
            free(rd->uri);
            free(rd);
            return 0;
        }
    }
    struct gw_broker_conn *old = gw_broker_find_device(cr[0], cr[1]);
    if (old)
        gw_broker_conn_drop(old, "replaced by a new connection of the same device");
    c->user = gw_strdup(cr[0]);
    c->device = gw_strdup(cr[1]);
    c->state = ST_AUTHED;
    c->since_ms = gw_broker_now_ms();
    if (ka > 0) {
        c->ka_s = (uint32_t)ka;
        gw_broker_timer_start(&c->ka_timer, ka_check, (uint64_t)c->ka_s * 1150000);
    }
    gw_broker.st.conn_authed++;
    gw_broker_log(GW_BROKER_INFO, "device connected", "{s:I,s:s,s:s,s:s,s:s,s:i}", "conn",
                  (json_int_t)c->id, "user", c->user, "device", c->device, "transport",
                  transport_names[c->transport], "remote", c->remote, "ka", (int)c->ka_s);
    answer(c, GW_IOTMP_OK, sid, 0, NULL);
    return 0;
}

/* --- Server actions (device -> broker RUN) --- */

static char *field_string(const struct gw_iotmp_frame *f, unsigned id)
{
    json_t *j = NULL;
    if (gw_broker_field_to_json(f, id, &j) < 0 || !j)
        return NULL;
    char *s = NULL;
    if (json_is_string(j))
        s = gw_strdup(json_string_value(j));
    else if (json_is_integer(j))
        s = gw_broker_json_text(j);
    json_decref(j);
    return s;
}

static void do_lock(struct gw_broker_conn *c, uint16_t sid, const char *sync, const json_t *pl,
                    bool lock)
{
    const char *want = json_string_value(json_object_get(pl, "lock"));
    if (!lock) {
        for (struct gw_broker_lock **pp = &gw_broker.locks; *pp; pp = &(*pp)->next) {
            struct gw_broker_lock *l = *pp;
            if (strcmp(l->user, c->user) == 0 && strcmp(l->sync, sync) == 0 &&
                (want ? strcmp(l->lock_id, want) == 0 : l->holder_conn == c->id)) {
                *pp = l->next;
                free(l->user);
                free(l->sync);
                free(l->lock_id);
                free(l);
                if (sid)
                    answer(c, GW_IOTMP_OK, sid, 0, NULL);
                return;
            }
        }
        answer_error(c, sid, 404, "lock not held");
        return;
    }
    json_int_t slots = json_integer_value(json_object_get(pl, "slots"));
    if (slots < 1)
        slots = 1;
    json_int_t held = 0;
    for (struct gw_broker_lock *l = gw_broker.locks; l; l = l->next)
        if (strcmp(l->user, c->user) == 0 && strcmp(l->sync, sync) == 0)
            held++;
    if (held >= slots) {
        answer_error(c, sid, 409, "sync is locked");
        return;
    }
    static unsigned lock_counter;
    char gen[32];
    snprintf(gen, sizeof gen, "lock-%u", ++lock_counter);
    struct gw_broker_lock *l = gw_calloc(1, sizeof *l);
    l->user = gw_strdup(c->user);
    l->sync = gw_strdup(sync);
    l->lock_id = gw_strdup(want ? want : gen);
    l->holder_conn = c->id;
    l->slots = (unsigned)slots;
    l->next = gw_broker.locks;
    gw_broker.locks = l;
    if (sid) {
        json_t *p = json_pack("{s:s}", "lock", l->lock_id);
        answer(c, GW_IOTMP_OK, sid, 0, p);
        json_decref(p);
    }
}

static void call_device(struct gw_broker_conn *c, uint16_t sid, const struct gw_iotmp_frame *f,
                        unsigned target_id)
{
    json_t *t = NULL;
    char dev[128], res[512];
    bool ok = false;
    if (gw_broker_field_to_json(f, target_id, &t) == 0 && t) {
        if (json_is_array(t) && json_array_size(t) == 2 &&
            json_is_string(json_array_get(t, 0)) && json_is_string(json_array_get(t, 1))) {
            ok = snprintf(dev, sizeof dev, "%s", json_string_value(json_array_get(t, 0))) <
                     (int)sizeof dev &&
                 snprintf(res, sizeof res, "%s", json_string_value(json_array_get(t, 1))) <
                     (int)sizeof res;
        } else if (json_is_string(t)) {
            const char *s = json_string_value(t), *slash = strchr(s, '/');
            if (slash && (size_t)(slash - s) < sizeof dev && strlen(slash + 1) < sizeof res) {
                memcpy(dev, s, (size_t)(slash - s));
                dev[slash - s] = 0;
                snprintf(res, sizeof res, "%s", slash + 1);
                ok = true;
            }
        }
    }
    json_decref(t);
    if (!ok || !*dev || !*res) {
        answer_error(c, sid, 400, "CALL_DEVICE target must be [device, resource]");
        return;
    }
    struct gw_broker_conn *target = gw_broker_find_device(c->user, dev);
    if (!target) {
        char msg[200];
        snprintf(msg, sizeof msg, "device \"%s\" is not connected", dev);
        answer_error(c, sid, 404, msg);
        return;
    }
    const struct gw_iotmp_field *pl = &f->field[GW_IOTMP_PAYLOAD];
    bool has_pl = gw_iotmp_has(f, GW_IOTMP_PAYLOAD) && pl->wire == GW_IOTMP_WIRE_PSON;
    json_t *plj = NULL;
    if (gw_iotmp_has(f, GW_IOTMP_PAYLOAD) && !has_pl)
        gw_broker_field_to_json(f, GW_IOTMP_PAYLOAD, &plj);
    struct gw_broker_call *call =
        call_alloc(target, GW_BROKER_CALL_RELAY, 0, gw_broker.call_timeout_ms);
    if (!call) {
        json_decref(plj);
        answer_error(c, sid, 503, "no free stream id on the target device");
        return;
    }
    call->relay_conn = c->id;
    call->relay_sid = sid;
    call_fire(call, GW_IOTMP_RUN, res, NULL, plj, has_pl ? pl->p : NULL, has_pl ? pl->len : 0);
    json_decref(plj);
}

static void server_action(struct gw_broker_conn *c, const struct gw_iotmp_frame *f, uint16_t sid)
{
    uint64_t code;
    int layout;
    unsigned target_id;
    if (gw_iotmp_get_uint(f, GW_IOTMP_RESOURCE, &code) == 0) {
        layout = 1;
        target_id = GW_IOTMP_PARAMETERS;
    } else if (gw_iotmp_get_uint(f, GW_IOTMP_PARAMETERS, &code) == 0) {
        layout = 2;
        target_id = GW_IOTMP_RESOURCE;
    } else {
        gw_broker_log(GW_BROKER_INFO, "RUN for a server resource that does not exist",
                      "{s:s,s:s}", "user", c->user, "device", c->device);
        answer_error(c, sid, 404, "the broker has no resources to run; server actions need a "
                                  "numeric action code");
        return;
    }
    const char *lname = layout_names[layout];
    if (gw_broker.layout_expect && gw_broker.layout_expect != layout) {
        gw_broker_log(GW_BROKER_NOTICE, "server action in a refused layout", "{s:s,s:s,s:s,s:i}",
                      "user", c->user, "device", c->device, "layout", lname, "action", (int)code);
        gw_broker_count_error("layout");
        char msg[96];
        snprintf(msg, sizeof msg, "server action layout \"%s\" is not accepted (expecting \"%s\")",
                 lname, layout_names[gw_broker.layout_expect]);
        answer_error(c, sid, 400, msg);
        return;
    }
    if (code == GW_IOTMP_CALL_DEVICE) {
        call_device(c, sid, f, target_id);
        return;
    }
    if (code == GW_IOTMP_SUBSCRIBE_EVENT) {
        if (sid)
            answer(c, GW_IOTMP_OK, sid, 0, NULL);
        return;
    }
    if (code < 1 || code > 7) {
        answer_error(c, sid, 400, "unknown server action");
        gw_broker_count_error("unknown_action");
        return;
    }
    char *target = field_string(f, target_id);
    if (!target || !*target) {
        free(target);
        answer_error(c, sid, 400, "server action without a target id");
        gw_broker_count_error("no_target");
        return;
    }
    json_t *pl = NULL;
    int rc = gw_broker_field_to_json(f, GW_IOTMP_PAYLOAD, &pl);
    if (rc < 0) {
        answer_error(c, sid, 400, "PAYLOAD cannot be converted");
        free(target);
        return;
    }
    char *text = gw_broker_json_dumps(pl);
    gw_broker_log(GW_BROKER_DEBUG, "server action", "{s:s,s:s,s:i,s:s,s:s}", "user", c->user,
                  "device", c->device, "action", (int)code, "target", target, "layout", lname);
    switch (code) {
    case GW_IOTMP_READ_DEVICE_PROPERTY: {
        json_t *v = gw_broker_db_get_property(c->user, c->device, target);
        if (v && sid)
            answer(c, GW_IOTMP_OK, sid, 0, v);
        else if (!v)
            answer_error(c, sid, 404, "property not found");
        json_decref(v);
        break;
    }
    case GW_IOTMP_SET_DEVICE_PROPERTY:
        if (gw_broker_db_set_property(c->user, c->device, target, lname, text) < 0)
            answer_error(c, sid, 500, "cannot store the property");
        else if (sid)
            answer(c, GW_IOTMP_OK, sid, 0, NULL);
        break;
    case GW_IOTMP_CALL_ENDPOINT:
    case GW_IOTMP_WRITE_BUCKET:
        if (gw_broker_db_append(code == GW_IOTMP_WRITE_BUCKET ? GW_BROKER_BUCKETS
                                                              : GW_BROKER_ENDPOINTS,
                                c->user, c->device, target, lname, text) < 0)
            answer_error(c, sid, 500, "cannot store the row");
        else if (sid)
            answer(c, GW_IOTMP_OK, sid, 0, NULL);
        break;
    case GW_IOTMP_LOCK_SYNC:
    case GW_IOTMP_UNLOCK_SYNC:
        do_lock(c, sid, target, pl, code == GW_IOTMP_LOCK_SYNC);
        break;
    default:
        break;
    }
    free(text);
    json_decref(pl);
    free(target);
}

/* --- Frames after CONNECT --- */

static int handle_frame(struct gw_broker_conn *c, uint64_t type, const uint8_t *body, size_t blen)
{
    gw_broker.st.frames_in++;
    if (c->state == ST_WAIT_CONNECT)
        return handle_connect(c, type, body, blen);
    if (type == 0 || type > GW_IOTMP_STREAM_DATA) {
        gw_broker_log(GW_BROKER_DEBUG, "unknown message type ignored", "{s:s?,s:I}", "device",
                      c->device, "type", (json_int_t)type);
        return 0;
    }
    if (type == GW_IOTMP_KEEP_ALIVE) {
        log_frame(c, "in", type, -1, NULL, 0);
        if (gw_broker.echo) {
            struct fspec s = {.type = GW_IOTMP_KEEP_ALIVE};
            send_spec(c, &s, true);
        }
        return 0;
    }
    struct gw_iotmp_frame f;
    int rc = gw_iotmp_parse(&f, type, body, blen);
    uint16_t sid = 0;
    int src = rc < 0 && rc != GW_EWIRE ? 0 : gw_iotmp_get_stream_id(&f, &sid);
    if (rc < 0 || src < 0) {
        gw_broker_log(GW_BROKER_NOTICE, "malformed frame, closing", "{s:s,s:s,s:s,s:s}", "user",
                      c->user, "device", c->device, "type", gw_iotmp_type_name(type), "reason",
                      gw_strerror(rc < 0 ? rc : src));
        gw_broker_count_error("malformed");
        conn_shutdown(c, "malformed frame");
        return -1;
    }
    if (gw_broker_log_level >= GW_BROKER_DEBUG) {
        /* the raw frame bytes are not kept; re-create the header for the dump */
        uint8_t *fr = gw_malloc(blen + 2 * GW_VARINT_MAX);
        size_t n = gw_varint_encode(type, fr);
        n += gw_varint_encode(blen, fr + n);
        memcpy(fr + n, body, blen);
        log_frame(c, "in", type, sid, fr, n + blen);
        free(fr);
    }
    switch (type) {
    case GW_IOTMP_OK:
    case GW_IOTMP_ERROR: {
        for (struct gw_broker_call *k = c->calls; k; k = k->next) {
            if (k->sid == sid) {
                call_complete(k, &f, false);
                return 0;
            }
        }
        gw_broker_log(GW_BROKER_DEBUG, "answer for no pending request ignored", "{s:s,s:i}",
                      "device", c->device, "stream", sid);
        return 0;
    }
    case GW_IOTMP_RUN:
        server_action(c, &f, sid);
        return 0;
    case GW_IOTMP_STREAM_DATA: {
        struct gw_broker_stream *s = gw_broker_stream_find(c->user, c->device, sid);
        if (!s || s->conn_id != c->id || !(s->open || s->starting)) {
            gw_broker_log(GW_BROKER_DEBUG, "STREAM_DATA for no open stream ignored", "{s:s,s:i}",
                          "device", c->device, "stream", sid);
            return 0;
        }
        json_t *d = NULL;
        if (gw_broker_field_to_json(&f, GW_IOTMP_PAYLOAD, &d) < 0)
            d = NULL;
        if (s->ring_n == s->ring_cap && s->ring_cap < GW_BROKER_MAX_SAMPLES) {
            /* grow the ring, unrolling it */
            size_t ncap = s->ring_cap ? s->ring_cap * 2 : 16;
            if (ncap > GW_BROKER_MAX_SAMPLES)
                ncap = GW_BROKER_MAX_SAMPLES;
            struct gw_broker_sample *nr = gw_calloc(ncap, sizeof *nr);
            for (size_t i = 0; i < s->ring_n; i++)
                nr[i] = s->ring[(s->ring_start + i) % s->ring_cap];
            free(s->ring);
            s->ring = nr;
            s->ring_cap = ncap;
            s->ring_start = 0;
        }
        struct gw_broker_sample *slot;
        if (s->ring_n == s->ring_cap) { /* full: drop the oldest */
            slot = &s->ring[s->ring_start];
            free(slot->data);
            s->ring_start = (s->ring_start + 1) % s->ring_cap;
        } else {
            slot = &s->ring[(s->ring_start + s->ring_n) % s->ring_cap];
            s->ring_n++;
        }
        slot->seq = ++s->next_seq;
        slot->ts = gw_broker_now_ms();
        slot->data = gw_broker_json_dumps(d);
        json_decref(d);
        gw_broker_rest_stream_event(s);
        return 0;
    }
    case GW_IOTMP_STOP_STREAM: {
        struct gw_broker_stream *s = gw_broker_stream_find(c->user, c->device, sid);
        if (s && s->conn_id == c->id && (s->open || s->starting)) {
            s->open = s->starting = false;
            gw_broker_rest_stream_event(s);
            if (sid)
                answer(c, GW_IOTMP_OK, sid, 0, NULL);
        } else {
            answer_error(c, sid, 404, "no such stream");
        }
        return 0;
    }
    case GW_IOTMP_START_STREAM: {
        uint64_t code;
        if (gw_iotmp_get_uint(&f, GW_IOTMP_RESOURCE, &code) == 0 &&
            code == GW_IOTMP_SUBSCRIBE_EVENT) {
            if (sid)
                answer(c, GW_IOTMP_OK, sid, 0, NULL);
        } else {
            answer_error(c, sid, 404, "the broker has no resources to stream");
        }
        return 0;
    }
    case GW_IOTMP_DESCRIBE: {
        if (sid) {
            json_t *empty = json_object();
            answer(c, GW_IOTMP_OK, sid, 0, empty);
            json_decref(empty);
        }
        return 0;
    }
    case GW_IOTMP_DISCONNECT:
        gw_broker_log(GW_BROKER_INFO, "device sent DISCONNECT", "{s:s,s:s}", "user", c->user,
                      "device", c->device);
        conn_shutdown(c, "DISCONNECT from the device");
        return -1;
    case GW_IOTMP_CONNECT:
        gw_broker_log(GW_BROKER_NOTICE, "second CONNECT on an authenticated connection ignored",
                      "{s:s,s:s}", "user", c->user, "device", c->device);
        return 0;
    default:
        return 0;
    }
}

static int on_rx(struct gw_broker_conn *c, const uint8_t *data, size_t len)
{
    gw_broker.st.bytes_in += len;
    c->last_rx_us = lws_now_usecs();
    if (c->state == ST_CLOSING)
        return 0;
    while (len) {
        size_t used = 0, blen = 0;
        uint64_t type = 0;
        const uint8_t *body = NULL;
        int rc = gw_iotmp_feed(&c->rd, data, len, &used, &type, &body, &blen);
        if (rc == 0)
            break;
        if (used > len)
            used = len;
        data += used;
        len -= used;
        if (rc == GW_ENOBUFS) {
            size_t need = gw_iotmp_reader_need(&c->rd);
            free(c->rdbuf);
            c->rdbuf = gw_malloc(need ? need : 1);
            gw_iotmp_reader_set_buffer(&c->rd, c->rdbuf, need);
            continue;
        }
        if (rc < 0) {
            const char *reason = rc == GW_EFRAME_SIZE ? "frame larger than --max-frame"
                                                      : "malformed frame header";
            /* the size the header announced, decoded again from the header bytes kept */
            uint64_t ftype = 0, fsize = 0;
            int n = gw_varint_decode(c->rd.hdr, c->rd.hdr_len, &ftype);
            if (n < 0 || gw_varint_decode(c->rd.hdr + n, c->rd.hdr_len - (size_t)n, &fsize) < 0)
                fsize = 0;
            gw_broker_log(GW_BROKER_NOTICE, reason, "{s:I,s:s?,s:s?,s:s,s:s,s:I,s:I}", "conn",
                          (json_int_t)c->id, "user", c->user, "device", c->device, "error",
                          gw_strerror(rc), "type", gw_iotmp_type_name(ftype), "size",
                          (json_int_t)fsize, "max", (json_int_t)gw_broker.max_frame);
            gw_broker_count_error(rc == GW_EFRAME_SIZE ? "frame_too_large" : "malformed");
            conn_shutdown(c, reason);
            return -1;
        }
        int hr = handle_frame(c, type, body, blen);
        if (c->rdbuf) { /* at a frame boundary: give the body buffer back */
            free(c->rdbuf);
            c->rdbuf = NULL;
            gw_iotmp_reader_init(&c->rd, NULL, 0, gw_broker.max_frame);
        }
        if (hr < 0)
            return -1;
        if (c->state == ST_CLOSING)
            break;
    }
    return 0;
}

static int on_writable(struct gw_broker_conn *c)
{
    if (c->state == ST_CLOSING && !c->close_after_write)
        return -1;
    struct gw_broker_out *o = c->q_head;
    bool ws = c->transport == GW_BROKER_WS || c->transport == GW_BROKER_WSS;
    if (o && !ws && o->next) {
        /* raw byte stream: send what is queued (up to 64 KiB) in one write, one wake-up */
        size_t total = 0, count = 0;
        for (struct gw_broker_out *k = o; k && (count == 0 || total + k->len <= 65536);
             k = k->next, count++)
            total += k->len;
        uint8_t *buf = gw_malloc(LWS_PRE + total);
        size_t off = LWS_PRE;
        for (size_t i = 0; i < count; i++) {
            struct gw_broker_out *k = c->q_head;
            c->q_head = k->next;
            memcpy(buf + off, k->frame, k->len);
            off += k->len;
            free(k->mem);
            free(k);
        }
        if (!c->q_head)
            c->q_tail = NULL;
        int n = lws_write(c->wsi, buf + LWS_PRE, total, LWS_WRITE_RAW);
        free(buf);
        if (n < 0 || (size_t)n < total) {
            gw_broker_log(GW_BROKER_NOTICE, "write failed, closing", "{s:s?,s:s?}", "user",
                          c->user, "device", c->device);
            gw_broker_count_error("write_failed");
            conn_shutdown(c, "write failed");
            return -1;
        }
        gw_broker.st.frames_out += count;
        gw_broker.st.bytes_out += total;
    } else if (o) {
        c->q_head = o->next;
        if (!c->q_head)
            c->q_tail = NULL;
        int n = lws_write(c->wsi, (unsigned char *)o->frame, o->len,
                          ws ? LWS_WRITE_BINARY : LWS_WRITE_RAW);
        size_t len = o->len;
        free(o->mem);
        free(o);
        if (n < 0 || (size_t)n < len) {
            gw_broker_log(GW_BROKER_NOTICE, "write failed, closing", "{s:s?,s:s?}", "user",
                          c->user, "device", c->device);
            gw_broker_count_error("write_failed");
            conn_shutdown(c, "write failed");
            return -1;
        }
        gw_broker.st.frames_out++;
        gw_broker.st.bytes_out += len;
    }
    if (c->q_head)
        lws_callback_on_writable(c->wsi);
    else if (c->close_after_write && !c->delayed)
        return -1;
    return 0;
}

static enum gw_broker_transport transport_of(struct lws *wsi, bool ws)
{
    struct lws_vhost *vh = lws_get_vhost(wsi);
    if (ws)
        return vh == gw_broker.vh_https ? GW_BROKER_WSS : GW_BROKER_WS;
    return vh == gw_broker.vh_tls ? GW_BROKER_TLS : GW_BROKER_TCP;
}

int gw_broker_iotmp_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                             void *in, size_t len)
{
    struct pss *pss = user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
        char uri[64] = "";
        if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 ||
            strcmp(uri, "/iotmp") != 0) {
            gw_broker_log(GW_BROKER_NOTICE, "WebSocket upgrade on a path other than /iotmp",
                          "{s:s}", "path", uri);
            gw_broker_count_error("ws_path");
            return -1;
        }
        if (gw_broker.refuse) {
            gw_broker.st.conn_refused++;
            return -1;
        }
        return 0;
    }
    case LWS_CALLBACK_RAW_ADOPT:
    case LWS_CALLBACK_ESTABLISHED:
        if (gw_broker.refuse) {
            gw_broker.st.conn_refused++;
            gw_broker_log(GW_BROKER_INFO, "connection refused (control switch)", NULL);
            return -1;
        }
        pss->c = conn_new(wsi, transport_of(wsi, reason == LWS_CALLBACK_ESTABLISHED));
        return 0;
    case LWS_CALLBACK_RAW_RX:
    case LWS_CALLBACK_RECEIVE:
        if (!pss || !pss->c)
            return -1;
        if (!pss->c->rx_seen) {
            /* lws 4.1.6 leaves its TLS-accept timeout (5 s) armed on raw TLS connections after
             * the handshake; the first decrypted byte proves the handshake is over, and from
             * here the keep-alive timer decides */
            pss->c->rx_seen = true;
            lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
        }
        return on_rx(pss->c, in, len);
    case LWS_CALLBACK_RAW_WRITEABLE:
    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (!pss || !pss->c)
            return 0;
        return on_writable(pss->c);
    case LWS_CALLBACK_RAW_CLOSE:
    case LWS_CALLBACK_CLOSED:
        if (pss && pss->c) {
            conn_shutdown(pss->c, "connection closed by the peer");
            conn_free(pss->c);
            pss->c = NULL;
        }
        return 0;
    default:
        return 0;
    }
}
