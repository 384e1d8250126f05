/* SPDX-License-Identifier: Apache-2.0 */
/*
 * iotmp-broker, HTTP side: the REST API (/v3/users/...) and the control API (/_control/...) of
 * API.md on the http and https vhosts. Requests into devices are asynchronous: the request record
 * waits (its wsi has no lws timeout; the call's own deadline answers 504) while the loop serves
 * other connections, and the answer is written when the device answers, times out or goes away.
 * Stream long-polls wait the same way on a per-request timer. Responses are JSON, written
 * in chunks from HTTP_WRITEABLE; keep-alive is handled by lws_http_transaction_completed.
 */
#include "broker.h"

#include "gw/error.h"
#include "gw/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct hpss {
    struct gw_broker_req *r;
};

#define MAX_SEGS 64

/* --- Responses --- */

static void req_detach(struct gw_broker_req *r)
{
    if (r->call) {
        r->call->req = NULL;
        r->call = NULL;
    }
    if (r->stream) {
        struct gw_broker_stream *s = r->stream;
        if (r->wprev)
            r->wprev->wnext = r->wnext;
        else
            s->waiters = r->wnext;
        if (r->wnext)
            r->wnext->wprev = r->wprev;
        r->wprev = r->wnext = NULL;
        r->stream = NULL;
    }
    gw_broker_timer_stop(&r->timer);
}

static void req_free(struct gw_broker_req *r)
{
    if (!r)
        return;
    req_detach(r);
    free(r->path);
    free(r->args);
    free(r->body);
    free(r->resp);
    free(r);
}

void gw_broker_req_respond(struct gw_broker_req *req, int status, json_t *body)
{
    if (req->resp_ready) {
        json_decref(body);
        return;
    }
    req_detach(req);
    char *txt = body ? gw_broker_json_dumps(body) : NULL;
    json_decref(body);
    if (!txt)
        txt = gw_strdup("null");
    req->status = status;
    req->resp = (uint8_t *)txt;
    req->resp_len = strlen(txt);
    req->resp_ready = true;
    if (status >= 500 || gw_broker_log_level >= GW_BROKER_DEBUG)
        gw_broker_log(status >= 500 ? GW_BROKER_INFO : GW_BROKER_DEBUG, "http answer",
                      "{s:s,s:s,s:i}", "method", req->method, "path", req->path, "status", status);
    if (!gw_broker.stopping)
        lws_callback_on_writable(req->wsi);
}

void gw_broker_req_error(struct gw_broker_req *req, int status, const char *msg, json_t *extra)
{
    json_t *e = json_pack("{s:s}", "message", msg);
    if (!e) /* msg carries bytes from the path that are not UTF-8 */
        e = json_pack("{s:s}", "message", "(error message is not valid UTF-8)");
    if (extra) {
        json_object_update(e, extra);
        json_decref(extra);
    }
    gw_broker_req_respond(req, status, json_pack("{s:o}", "error", e));
}

static void errorf(struct gw_broker_req *r, int status, const char *fmt, const char *a)
{
    char msg[512];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(msg, sizeof msg, fmt, a);
#pragma GCC diagnostic pop
    gw_broker_req_error(r, status, msg, NULL);
}

static void not_connected(struct gw_broker_req *r, const char *device)
{
    errorf(r, 404, "device \"%s\" is not connected", device);
}

/* --- Request helpers --- */

/* Query argument name as a string (decoded by lws), or NULL. */
static const char *arg(const struct gw_broker_req *r, const char *name)
{
    if (!r->args)
        return NULL;
    size_t n = strlen(name);
    for (const char *p = r->args; *p; p += strlen(p) + 1)
        if (strncmp(p, name, n) == 0 && p[n] == '=')
            return p + n + 1;
    return NULL;
}

/* Integer query argument; def when absent; false (after answering 400) when not a number. */
static bool arg_int(struct gw_broker_req *r, const char *name, int64_t def, int64_t min,
                    int64_t max, int64_t *out)
{
    const char *v = arg(r, name);
    *out = def;
    if (!v || !*v)
        return true;
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*end || x < min || x > max) {
        char msg[160];
        snprintf(msg, sizeof msg, "query parameter \"%s\" must be an integer in [%lld, %lld]",
                 name, (long long)min, (long long)max);
        gw_broker_req_error(r, 400, msg, NULL);
        return false;
    }
    *out = x;
    return true;
}

/* The request body as JSON; *j NULL when there is no body. False (after answering 400) when the
 * body is not JSON. */
static bool body_json(struct gw_broker_req *r, json_t **j)
{
    *j = NULL;
    if (!r->body_len)
        return true;
    json_error_t err;
    *j = json_loadb((const char *)r->body, r->body_len, JSON_DECODE_ANY, &err);
    if (!*j) {
        char msg[300];
        snprintf(msg, sizeof msg, "request body is not JSON: %s (line %d, column %d)", err.text,
                 err.line, err.column);
        gw_broker_req_error(r, 400, msg, NULL);
        return false;
    }
    if (gw_broker_json_check(*j) < 0) {
        json_decref(*j);
        *j = NULL;
        gw_broker_req_error(r, 400,
                            "request body has a malformed {\"$bytes\"|\"$int\"|\"$double\": ..} "
                            "object",
                            NULL);
        return false;
    }
    return true;
}

static bool method_is(const struct gw_broker_req *r, const char *m)
{
    return strcmp(r->method, m) == 0;
}

static void bad_method(struct gw_broker_req *r)
{
    errorf(r, 405, "method %s is not allowed on this path", r->method);
}

static uint32_t call_timeout(struct gw_broker_req *r, bool *ok)
{
    int64_t t;
    *ok = arg_int(r, "timeout", gw_broker.call_timeout_ms, 1, 3600000, &t);
    return (uint32_t)t;
}

static void go_pending(struct gw_broker_req *r)
{
    lws_set_timeout(r->wsi, NO_PENDING_TIMEOUT, 0);
}

/* --- Calls into devices --- */

static void device_call(struct gw_broker_req *r, const char *u, const char *d, uint64_t type,
                        uint8_t kind, const char *res, const json_t *params, const json_t *payload)
{
    bool ok;
    uint32_t timeout = call_timeout(r, &ok);
    if (!ok)
        return;
    struct gw_broker_conn *c = gw_broker_find_device(u, d);
    if (!c) {
        not_connected(r, d);
        return;
    }
    struct gw_broker_call *call =
        gw_broker_call_start(c, type, kind, 0, res, params, payload, timeout, r, NULL);
    if (!call) {
        gw_broker_req_error(r, 503, "no free stream id on this device connection", NULL);
        return;
    }
    r->call = call;
    go_pending(r);
}

static void error_from_device(struct gw_broker_req *r, const struct gw_iotmp_frame *f)
{
    uint64_t code = 0;
    bool has_code = gw_iotmp_get_uint(f, GW_IOTMP_PARAMETERS, &code) == 0;
    int status = has_code && code >= 400 && code <= 599 ? (int)code : 502;
    json_t *pl = NULL;
    gw_broker_field_to_json(f, GW_IOTMP_PAYLOAD, &pl);
    char *text = NULL;
    const json_t *m = NULL;
    if (json_is_object(pl)) {
        m = json_object_get(pl, "error");
        if (!m)
            m = json_object_get(pl, "message");
    }
    if (m)
        text = gw_broker_json_text(m);
    else if (pl)
        text = gw_broker_json_text(pl);
    else
        text = gw_strdup("the device answered ERROR");
    json_t *extra = json_pack("{s:o}", "device_code",
                              has_code ? json_integer((json_int_t)code) : json_null());
    gw_broker_req_error(r, status, text, extra);
    free(text);
    json_decref(pl);
}

void gw_broker_rest_call_done(struct gw_broker_call *call, const struct gw_iotmp_frame *f,
                              bool timed_out)
{
    struct gw_broker_req *r = call->req;
    if (!r)
        return;
    r->call = NULL;
    call->req = NULL;
    if (!f) {
        char msg[200];
        if (timed_out)
            snprintf(msg, sizeof msg, "device \"%s\" did not answer within %u ms",
                     call->dev->device, call->timeout_ms);
        else
            snprintf(msg, sizeof msg, "device disconnected before answering");
        gw_broker_req_error(r, timed_out ? 504 : 502, msg, NULL);
        return;
    }
    if (f->type != GW_IOTMP_OK) {
        error_from_device(r, f);
        return;
    }
    json_t *pl = NULL;
    if (gw_broker_field_to_json(f, GW_IOTMP_PAYLOAD, &pl) < 0) {
        gw_broker_req_error(r, 502, "the device's PAYLOAD cannot be converted to JSON", NULL);
        return;
    }
    switch (call->kind) {
    case GW_BROKER_CALL_START:
        json_decref(pl);
        gw_broker_req_respond(r, 201, json_pack("{s:i}", "stream", call->sid));
        break;
    case GW_BROKER_CALL_STOP:
        json_decref(pl);
        gw_broker_req_respond(r, 200, json_pack("{s:i,s:b}", "stream", call->sid, "open", 0));
        break;
    case GW_BROKER_CALL_DESCRIBE:
        /* no PAYLOAD: no resources / a run-only resource (no "in", no "out") */
        gw_broker_req_respond(r, 200, pl ? pl : json_object());
        break;
    default:
        gw_broker_req_respond(r, 200, pl ? pl : json_null());
        break;
    }
}

/* --- Streams --- */

static bool stream_has_after(const struct gw_broker_stream *s, int64_t after)
{
    return s->ring_n && s->ring[(s->ring_start + s->ring_n - 1) % s->ring_cap].seq > after;
}

static void respond_samples(struct gw_broker_req *r, struct gw_broker_stream *s, int64_t after)
{
    json_t *arr = json_array();
    int64_t next = after;
    size_t count = 0;
    for (size_t i = 0; i < s->ring_n && count < GW_BROKER_MAX_POLL; i++) {
        const struct gw_broker_sample *sm = &s->ring[(s->ring_start + i) % s->ring_cap];
        if (sm->seq <= after)
            continue;
        json_t *d = json_loads(sm->data, JSON_DECODE_ANY, NULL);
        json_array_append_new(arr, json_pack("{s:I,s:I,s:o}", "seq", (json_int_t)sm->seq, "ts",
                                             (json_int_t)sm->ts, "data", d ? d : json_null()));
        next = sm->seq;
        count++;
    }
    gw_broker_req_respond(r, 200,
                          json_pack("{s:b,s:o,s:I}", "open", s->open || s->starting, "samples",
                                    arr, "next", (json_int_t)next));
}

static void poll_timeout(struct gw_broker_timer *t)
{
    struct gw_broker_req *r = lws_container_of(t, struct gw_broker_req, timer);
    struct gw_broker_stream *s = r->stream;
    if (s)
        respond_samples(r, s, r->poll_after);
}

void gw_broker_rest_stream_event(struct gw_broker_stream *s)
{
    struct gw_broker_req *r = s->waiters;
    while (r) {
        struct gw_broker_req *next = r->wnext;
        if (!(s->open || s->starting) || stream_has_after(s, r->poll_after))
            respond_samples(r, s, r->poll_after);
        r = next;
    }
}

static void stream_poll(struct gw_broker_req *r, struct gw_broker_stream *s)
{
    int64_t after, wait;
    if (!arg_int(r, "after", 0, 0, INT64_MAX, &after) ||
        !arg_int(r, "wait", 0, 0, 600000, &wait))
        return;
    if (wait == 0 || !(s->open || s->starting) || stream_has_after(s, after)) {
        respond_samples(r, s, after);
        return;
    }
    r->poll_after = after;
    r->stream = s;
    r->wnext = s->waiters;
    if (r->wnext)
        r->wnext->wprev = r;
    s->waiters = r;
    gw_broker_timer_start(&r->timer, poll_timeout, (uint64_t)wait * 1000);
    go_pending(r);
}

static void stream_start(struct gw_broker_req *r, const char *u, const char *d, const char *res)
{
    int64_t interval;
    bool ok;
    if (!arg_int(r, "interval", 0, 0, INT32_MAX, &interval))
        return;
    uint32_t timeout = call_timeout(r, &ok);
    if (!ok)
        return;
    struct gw_broker_conn *c = gw_broker_find_device(u, d);
    if (!c) {
        not_connected(r, d);
        return;
    }
    json_t *params = interval > 0 ? json_pack("{s:I}", "interval", (json_int_t)interval) : NULL;
    struct gw_broker_call *call = gw_broker_call_start(c, GW_IOTMP_START_STREAM,
                                                       GW_BROKER_CALL_START, 0, res, params, NULL,
                                                       timeout, r, NULL);
    json_decref(params);
    if (!call) {
        gw_broker_req_error(r, 503, "no free stream id on this device connection", NULL);
        return;
    }
    struct gw_broker_stream *old = gw_broker_stream_find(u, d, call->sid);
    if (old)
        gw_broker_stream_free(old);
    struct gw_broker_stream *s = gw_calloc(1, sizeof *s);
    s->user = gw_strdup(u);
    s->device = gw_strdup(d);
    s->resource = gw_strdup(res);
    s->sid = call->sid;
    s->conn_id = c->id;
    s->starting = true;
    s->next = gw_broker.streams;
    if (s->next)
        s->next->prev = s;
    gw_broker.streams = s;
    call->stream = s;
    r->call = call;
    go_pending(r);
}

static void stream_stop(struct gw_broker_req *r, struct gw_broker_stream *s)
{
    bool ok;
    uint32_t timeout = call_timeout(r, &ok);
    if (!ok)
        return;
    struct gw_broker_conn *c = gw_broker_find_conn(s->conn_id);
    if (!s->open || !c || !c->user) {
        s->open = s->starting = false;
        gw_broker_rest_stream_event(s);
        gw_broker_req_respond(r, 200, json_pack("{s:i,s:b}", "stream", s->sid, "open", 0));
        return;
    }
    struct gw_broker_call *call = gw_broker_call_start(c, GW_IOTMP_STOP_STREAM, GW_BROKER_CALL_STOP,
                                                       s->sid, NULL, NULL, NULL, timeout, r, s);
    if (!call) {
        gw_broker_req_error(r, 503, "cannot send STOP_STREAM", NULL);
        return;
    }
    r->call = call;
    go_pending(r);
}

/* --- Routes --- */

static void list_devices(struct gw_broker_req *r, const char *u)
{
    static const char *const tn[] = {"tcp", "tls", "ws", "wss"};
    json_t *arr = json_array();
    for (struct gw_broker_conn *c = gw_broker.conns; c; c = c->next) {
        if (!c->user || !c->device || strcmp(c->user, u) != 0)
            continue;
        if (gw_broker_find_device(c->user, c->device) != c)
            continue; /* closing */
        json_array_append_new(arr, json_pack("{s:s,s:b,s:s,s:I,s:s}", "device", c->device,
                                             "connected", 1, "transport", tn[c->transport],
                                             "since", (json_int_t)c->since_ms, "remote",
                                             c->remote));
    }
    gw_broker_req_respond(r, 200, arr);
}

static void rows(struct gw_broker_req *r, enum gw_broker_table t, const char *u, const char *name)
{
    int64_t after, limit;
    if (!arg_int(r, "after", 0, 0, INT64_MAX, &after) ||
        !arg_int(r, "limit", 1000, 1, 100000, &limit))
        return;
    const char *dev = arg(r, "device");
    if (dev && !*dev)
        dev = NULL;
    gw_broker_req_respond(r, 200, gw_broker_db_list(t, u, name, dev, after, limit));
}

static void property(struct gw_broker_req *r, const char *u, const char *d, const char *p)
{
    if (method_is(r, "GET")) {
        json_t *v = gw_broker_db_get_property(u, d, p);
        if (!v)
            errorf(r, 404, "property \"%s\" is not set", p);
        else
            gw_broker_req_respond(r, 200, v);
        return;
    }
    if (!method_is(r, "PUT") && !method_is(r, "POST")) {
        bad_method(r);
        return;
    }
    json_t *v;
    if (!body_json(r, &v))
        return;
    if (!v) {
        gw_broker_req_error(r, 400, "PUT of a property needs a JSON body", NULL);
        return;
    }
    char *text = gw_broker_json_dumps(v);
    int rc = gw_broker_db_set_property(u, d, p, "rest", text);
    free(text);
    if (rc < 0) {
        json_decref(v);
        gw_broker_req_error(r, 500, "cannot store the property", NULL);
        return;
    }
    gw_broker_req_respond(r, 200, v);
}

static void resources(struct gw_broker_req *r, const char *u, const char *d, char *rest)
{
    size_t n = strlen(rest);
    while (n && rest[n - 1] == '/')
        rest[--n] = 0;
    if (!n) {
        gw_broker_req_error(r, 400, "empty resource name", NULL);
        return;
    }
    if (n > 4 && strcmp(rest + n - 4, "/api") == 0) {
        if (!method_is(r, "GET")) {
            bad_method(r);
            return;
        }
        rest[n - 4] = 0;
        device_call(r, u, d, GW_IOTMP_DESCRIBE, GW_BROKER_CALL_DESCRIBE, rest, NULL, NULL);
        return;
    }
    if (n > 7 && strcmp(rest + n - 7, "/stream") == 0 && method_is(r, "POST")) {
        rest[n - 7] = 0;
        stream_start(r, u, d, rest);
        return;
    }
    if (method_is(r, "GET")) {
        device_call(r, u, d, GW_IOTMP_RUN, GW_BROKER_CALL_RUN, rest, NULL, NULL);
        return;
    }
    if (method_is(r, "POST")) {
        json_t *in;
        if (!body_json(r, &in))
            return;
        device_call(r, u, d, GW_IOTMP_RUN, GW_BROKER_CALL_RUN, rest, NULL, in);
        json_decref(in);
        return;
    }
    bad_method(r);
}

static long rss_kb(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static json_t *stats(void)
{
    size_t devices = 0, streams = 0;
    for (struct gw_broker_conn *c = gw_broker.conns; c; c = c->next)
        if (c->user && gw_broker_find_device(c->user, c->device) == c)
            devices++;
    for (struct gw_broker_stream *s = gw_broker.streams; s; s = s->next)
        streams++;
    const struct gw_broker_stats *st = &gw_broker.st;
    return json_pack("{s:{s:I,s:I,s:I,s:I,s:I,s:I},s:I,s:I,s:I,s:I,s:I,s:I,s:O,s:I}",
                     "connections", "current", (json_int_t)gw_broker.nconns, "devices",
                     (json_int_t)devices, "total", (json_int_t)st->conn_total, "refused",
                     (json_int_t)st->conn_refused, "authenticated", (json_int_t)st->conn_authed,
                     "auth_failed", (json_int_t)st->auth_failed, "frames_in",
                     (json_int_t)st->frames_in, "frames_out", (json_int_t)st->frames_out,
                     "bytes_in", (json_int_t)st->bytes_in, "bytes_out", (json_int_t)st->bytes_out,
                     "http_requests", (json_int_t)st->http_requests, "streams",
                     (json_int_t)streams, "errors", st->errors, "rss_kb", (json_int_t)rss_kb());
}

static void control(struct gw_broker_req *r, char **seg, int n)
{
    if (!r->loopback) {
        gw_broker_req_error(r, 403, "the control API answers loopback clients only", NULL);
        return;
    }
    if (n == 2 && strcmp(seg[1], "stats") == 0) {
        gw_broker_req_respond(r, 200, stats());
        return;
    }
    if (!method_is(r, "POST")) {
        bad_method(r);
        return;
    }
    json_t *b;
    if (!body_json(r, &b))
        return;
    if (b && !json_is_object(b)) {
        json_decref(b);
        gw_broker_req_error(r, 400, "control body must be a JSON object", NULL);
        return;
    }
    const char *what = n >= 2 ? seg[1] : "";
    gw_broker_log(GW_BROKER_INFO, "control", "{s:s}", "path", r->path);
    if (n == 5 && strcmp(what, "devices") == 0) {
        struct gw_broker_conn *c = gw_broker_find_device(seg[2], seg[3]);
        if (!c) {
            not_connected(r, seg[3]);
        } else if (strcmp(seg[4], "freeze") == 0 || strcmp(seg[4], "unfreeze") == 0) {
            gw_broker_conn_freeze(c, seg[4][0] == 'f');
            gw_broker_req_respond(r, 200, json_pack("{s:b,s:b}", "ok", 1, "frozen", c->frozen));
        } else if (strcmp(seg[4], "drop") == 0) {
            gw_broker_conn_drop(c, "dropped by /_control");
            gw_broker_req_respond(r, 200, json_pack("{s:b}", "ok", 1));
        } else {
            errorf(r, 404, "unknown device control \"%s\"", seg[4]);
        }
    } else if (n == 2 && strcmp(what, "refuse") == 0) {
        gw_broker.refuse = json_is_true(json_object_get(b, "on"));
        gw_broker_req_respond(r, 200, json_pack("{s:b,s:b}", "ok", 1, "on", gw_broker.refuse));
    } else if (n == 2 && strcmp(what, "delay") == 0) {
        json_t *ms = json_object_get(b, "ms");
        if (ms && (!json_is_integer(ms) || json_integer_value(ms) < 0 ||
                   json_integer_value(ms) > 3600000)) {
            gw_broker_req_error(r, 400, "\"ms\" must be an integer in [0, 3600000]", NULL);
        } else {
            gw_broker.delay_ms = ms ? (uint32_t)json_integer_value(ms) : 0;
            gw_broker_req_respond(r, 200,
                                  json_pack("{s:b,s:i}", "ok", 1, "ms", (int)gw_broker.delay_ms));
        }
    } else if (n == 2 && strcmp(what, "keepalive") == 0) {
        json_t *e = json_object_get(b, "echo");
        gw_broker.echo = e ? json_is_true(e) : true;
        gw_broker_req_respond(r, 200, json_pack("{s:b,s:b}", "ok", 1, "echo", gw_broker.echo));
    } else if (n == 2 && strcmp(what, "redirect") == 0) {
        const char *u = json_string_value(json_object_get(b, "user"));
        const char *d = json_string_value(json_object_get(b, "device"));
        const char *uri = json_string_value(json_object_get(b, "uri"));
        if (!u || !d || !uri) {
            gw_broker_req_error(r, 400, "redirect needs \"user\", \"device\" and \"uri\" strings",
                                NULL);
        } else {
            struct gw_broker_redirect *rd = gw_calloc(1, sizeof *rd);
            rd->user = gw_strdup(u);
            rd->device = gw_strdup(d);
            rd->uri = gw_strdup(uri);
            rd->next = gw_broker.redirects;
            gw_broker.redirects = rd;
            gw_broker_req_respond(r, 200, json_pack("{s:b}", "ok", 1));
        }
    } else if (n == 2 && strcmp(what, "layout") == 0) {
        const char *e = json_string_value(json_object_get(b, "expect"));
        int v = !e ? -1 : strcmp(e, "any") == 0 ? 0 : strcmp(e, "linux") == 0 ? 1
                       : strcmp(e, "embedded") == 0 ? 2 : -1;
        if (v < 0) {
            gw_broker_req_error(r, 400, "\"expect\" must be \"any\", \"linux\" or \"embedded\"",
                                NULL);
        } else {
            gw_broker.layout_expect = v;
            gw_broker_req_respond(r, 200, json_pack("{s:b,s:s}", "ok", 1, "expect", e));
        }
    } else if (n == 2 && strcmp(what, "reset") == 0) {
        gw_broker.refuse = false;
        gw_broker.delay_ms = 0;
        gw_broker.echo = true;
        gw_broker.layout_expect = 0;
        while (gw_broker.redirects) {
            struct gw_broker_redirect *rd = gw_broker.redirects;
            gw_broker.redirects = rd->next;
            free(rd->user);
            free(rd->device);
            free(rd->uri);
            free(rd);
        }
        for (struct gw_broker_conn *c = gw_broker.conns; c; c = c->next)
            if (c->frozen)
                gw_broker_conn_freeze(c, false);
        if (gw_broker_db_reset() < 0)
            gw_broker_req_error(r, 500, "cannot clear the state file", NULL);
        else
            gw_broker_req_respond(r, 200, json_pack("{s:b}", "ok", 1));
    } else {
        errorf(r, 404, "no control \"%s\"", r->path);
    }
    json_decref(b);
}

static void dispatch(struct gw_broker_req *r)
{
    r->dispatched = true;
    gw_broker.st.http_requests++;
    gw_broker_log(GW_BROKER_DEBUG, "http request", "{s:s,s:s}", "method", r->method, "path",
                  r->path);
    if (r->body_too_big) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body larger than %zu bytes", gw_broker.max_frame);
        gw_broker_req_error(r, 413, msg, NULL);
        return;
    }
    /* split a copy of the path into segments, remembering where each starts in the path */
    char *copy = gw_strdup(r->path);
    char *seg[MAX_SEGS];
    size_t off[MAX_SEGS];
    int n = 0;
    for (char *p = copy; *p && n < MAX_SEGS;) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        seg[n] = p;
        off[n] = (size_t)(p - copy);
        n++;
        char *slash = strchr(p, '/');
        if (!slash)
            break;
        *slash = 0;
        p = slash + 1;
    }
    if (n >= 1 && strcmp(seg[0], "_control") == 0) {
        control(r, seg, n);
    } else if (n >= 4 && strcmp(seg[0], "v3") == 0 && strcmp(seg[1], "users") == 0) {
        const char *u = seg[2];
        if (strcmp(seg[3], "devices") == 0 && n == 4) {
            if (method_is(r, "GET"))
                list_devices(r, u);
            else
                bad_method(r);
        } else if (strcmp(seg[3], "devices") == 0 && n >= 6) {
            const char *d = seg[4];
            if (strcmp(seg[5], "api") == 0 && n == 6) {
                if (method_is(r, "GET"))
                    device_call(r, u, d, GW_IOTMP_DESCRIBE, GW_BROKER_CALL_DESCRIBE, NULL, NULL,
                                NULL);
                else
                    bad_method(r);
            } else if (strcmp(seg[5], "resources") == 0 && n >= 7) {
                char *rest = gw_strdup(r->path + off[6]);
                resources(r, u, d, rest);
                free(rest);
            } else if (strcmp(seg[5], "streams") == 0 && n == 7) {
                char *end;
                unsigned long id = strtoul(seg[6], &end, 10);
                struct gw_broker_stream *s =
                    *end || id == 0 || id > 65535 ? NULL
                                                  : gw_broker_stream_find(u, d, (uint16_t)id);
                if (!s)
                    errorf(r, 404, "no stream \"%s\" on this device", seg[6]);
                else if (method_is(r, "GET"))
                    stream_poll(r, s);
                else if (method_is(r, "DELETE"))
                    stream_stop(r, s);
                else
                    bad_method(r);
            } else if (strcmp(seg[5], "properties") == 0 && n == 7) {
                property(r, u, d, seg[6]);
            } else {
                errorf(r, 404, "no such path: %s", r->path);
            }
        } else if (strcmp(seg[3], "buckets") == 0 && n == 6 && strcmp(seg[5], "data") == 0) {
            if (method_is(r, "GET"))
                rows(r, GW_BROKER_BUCKETS, u, seg[4]);
            else
                bad_method(r);
        } else if (strcmp(seg[3], "endpoints") == 0 && n == 6 && strcmp(seg[5], "calls") == 0) {
            if (method_is(r, "GET"))
                rows(r, GW_BROKER_ENDPOINTS, u, seg[4]);
            else
                bad_method(r);
        } else {
            errorf(r, 404, "no such path: %s", r->path);
        }
    } else {
        errorf(r, 404, "no such path: %s", r->path);
    }
    free(copy);
}

/* --- lws glue --- */

static const struct {
    enum lws_token_indexes tok;
    const char *name;
} methods[] = {
    {WSI_TOKEN_GET_URI, "GET"},
    {WSI_TOKEN_POST_URI, "POST"},
    {WSI_TOKEN_PUT_URI, "PUT"},
    {WSI_TOKEN_DELETE_URI, "DELETE"},
};

static int write_response(struct lws *wsi, struct hpss *pss)
{
    struct gw_broker_req *r = pss->r;
    if (!r || !r->resp_ready)
        return 0;
    static uint8_t buf[LWS_PRE + 16384];
    if (!r->hdr_sent) {
        uint8_t *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf - 1;
        if (lws_add_http_common_headers(wsi, (unsigned)r->status, "application/json",
                                        r->resp_len, &p, end) ||
            lws_finalize_write_http_header(wsi, start, &p, end))
            return -1;
        r->hdr_sent = true;
        if (r->resp_len > 16384) {
            lws_callback_on_writable(wsi);
            return 0;
        }
        /* a small body follows the headers in the same callback: one poll round less per
         * request (lws keeps the order if the header write was partial) */
    }
    size_t left = r->resp_len - r->resp_off;
    size_t chunk = left > 16384 ? 16384 : left;
    memcpy(buf + LWS_PRE, r->resp + r->resp_off, chunk);
    bool last = chunk == left;
    if (lws_write(wsi, buf + LWS_PRE, chunk, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
        (int)chunk)
        return -1;
    r->resp_off += chunk;
    if (!last) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    req_free(r);
    pss->r = NULL;
    if (lws_http_transaction_completed(wsi))
        return -1;
    return 0;
}

int gw_broker_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                            void *in, size_t len)
{
    struct hpss *pss = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        req_free(pss->r);
        struct gw_broker_req *r = gw_calloc(1, sizeof *r);
        pss->r = r;
        r->wsi = wsi;
        snprintf(r->method, sizeof r->method, "OTHER");
        for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
            if (lws_hdr_total_length(wsi, methods[i].tok) > 0) {
                snprintf(r->method, sizeof r->method, "%s", methods[i].name);
                break;
            }
        r->path = gw_strdup(in ? (const char *)in : "/");
        /* query fragments, each "name=value" (decoded), stored NUL-separated */
        char frag[1024];
        size_t used = 0;
        for (int idx = 0; idx < 32; idx++) {
            int fl = lws_hdr_copy_fragment(wsi, frag, sizeof frag, WSI_TOKEN_HTTP_URI_ARGS, idx);
            if (fl <= 0)
                break;
            r->args = gw_realloc(r->args, used + (size_t)fl + 2);
            memcpy(r->args + used, frag, (size_t)fl + 1);
            used += (size_t)fl + 1;
            r->args[used] = 0;
        }
        char peer[64] = "";
        lws_get_peer_simple(wsi, peer, sizeof peer);
        r->loopback = strncmp(peer, "127.", 4) == 0 || strcmp(peer, "::1") == 0 ||
                      strncmp(peer, "::ffff:127.", 11) == 0;
        if (strcmp(r->method, "OTHER") == 0) {
            r->path = r->path ? r->path : gw_strdup("/");
            bad_method(r);
            return 0;
        }
        char clen[24] = "";
        if ((method_is(r, "POST") || method_is(r, "PUT")) &&
            lws_hdr_copy(wsi, clen, sizeof clen, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 &&
            strtoull(clen, NULL, 10) > 0) {
            r->has_body = true;
            return 0; /* wait for the body */
        }
        dispatch(r);
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY: {
        struct gw_broker_req *r = pss->r;
        if (!r)
            return -1;
        if (!len || !in)
            return 0;
        if (r->body_too_big || r->body_len + len > gw_broker.max_frame) {
            r->body_too_big = true;
            return 0;
        }
        if (r->body_len + len > r->body_cap) {
            r->body_cap = (r->body_len + len) * 2;
            r->body = gw_realloc(r->body, r->body_cap);
        }
        memcpy(r->body + r->body_len, in, len);
        r->body_len += len;
        return 0;
    }
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        /* lws reports completion for bodiless POSTs too: those were dispatched already */
        if (pss->r && pss->r->has_body && !pss->r->dispatched)
            dispatch(pss->r);
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return write_response(wsi, pss);
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        /* a WebSocket upgrade that did not ask for the "iotmp" subprotocol lands here */
        gw_broker_log(GW_BROKER_NOTICE, "WebSocket upgrade without the iotmp subprotocol refused",
                      NULL);
        gw_broker_count_error("ws_subprotocol");
        return -1;
    case LWS_CALLBACK_CLOSED_HTTP:
        if (pss) {
            if (pss->r && !pss->r->resp_ready && (pss->r->call || pss->r->stream))
                gw_broker_log(GW_BROKER_INFO, "http client went away before its answer",
                              "{s:s}", "path", pss->r->path);
            req_free(pss->r);
            pss->r = NULL;
        }
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
