/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The uplink session (gw/session.h): one IOTMP client connection kept alive for months.
 *
 * Life of a connection ("epoch"): transport connect → CONNECT (random non-zero stream id, PAYLOAD
 * [user, device, password], PARAMETERS {"ka":N} only when N != 60) → OK → READY. The answer codes
 * of an ERROR follow PROTOCOL.md 14.2/14.13: 1 redirect (followed only from verified TLS to
 * iotmps://, at most 3 in a row), 2 bad credentials (long back-off), 3 invalid keep-alive (retry
 * at once without "ka", once), 4 bad encoding. One timer covers connect + handshake + CONNECT
 * answer. When the link ends for any reason the epoch ends: outbound calls fail with GW_ELINK,
 * incoming calls are cancelled (their late answers are dropped), streams are forgotten (the
 * server re-arms them), and a retry is scheduled: 1 s doubling to 60 s, each delay with ±20 %
 * jitter, back to 1 s after a session that lasted 60 s. The first retry after a lost session (and
 * after a failed first connect) waits at least 1 s plus a uniformly random part of
 * reconnect_spread_ms (or the back-off, if longer): when a server restarts, all its gateways lose
 * the link in the same instant, and ±20 % of 1 s would bring them all back in the same second
 * (issue 12, the reconnect storm). Later retries of the series double as before.
 *
 * Keep-alive (14.4): KEEP_ALIVE every ka; any received byte proves liveness; once the server has
 * echoed a keep-alive in this epoch, 2 × ka without a byte means the link is dead. One tick timer
 * does both.
 *
 * Incoming requests go to the registry asynchronously (gw_registry_call), so a slow resource
 * never holds up keep-alives or other calls. Stream ids: the server's are taken as given; ours
 * come from a counter with a random start, never 0, never one in use in either direction (14.5),
 * and wrap only after 65,535 allocations, so a late answer to a timed-out call cannot meet a new
 * call on the same id in practice; answers from an older epoch cannot arrive at all, since the
 * table is emptied when the link drops.
 *
 * Flow control: the transport's queue is bounded by send_queue_max. Stream samples are held back
 * (only the newest per stream is kept, counted and logged once per stream) while more than half
 * of the bound is queued, and flushed when the queue drains; outbound calls are refused with
 * GW_ENOBUFS over the bound; a queue at twice the bound (a peer that stopped reading) ends the
 * link.
 */
#include "gw/session.h"

#include "gw/error.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/mem.h"
#include "gw/registry.h"
#include "gw/transport.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define CALL_BUCKETS 256

enum in_kind { IN_RUN, IN_SAMPLE, IN_INPUT };

struct stream;

/* A request of the server running in a resource (or a stream sample being read). */
struct in_call {
    struct in_call *prev, *next;
    struct gw_session *s;
    struct gw_call *handle;     /* NULL until gw_registry_call() returned */
    enum in_kind kind;
    uint16_t sid;               /* IN_RUN: 0 = no answer wanted */
    bool linked;                /* in the session's list */
    bool done_ran;              /* done ran before gw_registry_call() returned */
    bool cancel_asked;          /* cancelled before gw_registry_call() returned */
    struct stream *st;          /* IN_SAMPLE */
};

/* A stream the server opened on one of our resources. */
struct stream {
    struct stream *next;
    struct gw_session *s;
    uint16_t sid;
    struct gw_res *res;
    uint64_t interval_ms;       /* 0 = event stream */
    uint64_t next_due;
    struct gw_timer *timer;
    struct gw_sub *sub;         /* held for every stream: keeps res allocated, tells removal */
    struct in_call *inflight;   /* interval sample being read */
    struct gw_value pending;    /* newest sample held back by flow control */
    bool has_pending;
    bool slow_logged;
};

/* One of our calls to a server action, waiting for its answer. */
struct out_call {
    struct out_call *next;
    struct gw_session *s;
    uint16_t sid;
    struct gw_timer *timer;
    unsigned timeout_ms;
    gw_session_call_fn done;
    void *arg;
};

struct gw_session {
    struct gw_loop *loop;
    struct gw_registry *reg;
    struct gw_session_config cfg;       /* strings owned */
    struct gw_transport_url url;        /* configured */
    struct gw_transport_url redirect;   /* next attempt goes here when use_redirect */
    bool use_redirect;
    unsigned redirects_in_row;
    bool started;
    bool first_attempt;                 /* no attempt has failed since gw_session_start() */
    enum gw_session_state st;
    gw_session_state_fn state_fn;
    void *state_arg;

    struct gw_transport *t;
    enum gw_transport_kind kind;        /* of t */
    uint32_t epoch;
    struct gw_timer *retry_timer, *connect_timer, *tick_timer, *kill_timer;
    int kill_err;
    char kill_why[160];
    unsigned backoff_next;
    uint64_t ready_at;
    uint64_t last_rx, last_ka_tx;
    bool echo_seen;
    bool ka_param_refused;              /* the server answered ERROR 3 once: never send "ka" */
    bool ka_sent;                       /* this CONNECT carried "ka" */
    unsigned ka_ms;                     /* keep-alive in force for this epoch */
    uint16_t connect_sid;

    struct gw_iotmp_reader rd;
    uint8_t *rbuf;
    size_t rcap;
    uint8_t *wbuf;
    size_t wcap;

    uint8_t ids[65536 / 8];             /* stream ids in use, both directions */
    uint16_t next_sid;
    struct out_call *calls[CALL_BUCKETS];
    struct in_call *in_head;
    unsigned calls_running;             /* in_head entries other than IN_SAMPLE (max_calls_in) */
    struct stream *streams;
    uint64_t rng;

    struct gw_session_stats stats;
};

/* --- Small helpers --- */

const char *gw_session_state_name(enum gw_session_state st)
{
    switch (st) {
    case GW_SESSION_IDLE: return "idle";
    case GW_SESSION_CONNECTING: return "connecting";
    case GW_SESSION_AUTHENTICATING: return "authenticating";
    case GW_SESSION_READY: return "ready";
    case GW_SESSION_BACKOFF: return "backoff";
    case GW_SESSION_STOPPED: return "stopped";
    }
    return "?";
}

static const char *kind_name(enum gw_transport_kind k)
{
    switch (k) {
    case GW_TRANSPORT_TCP: return "tcp";
    case GW_TRANSPORT_TLS: return "tls";
    case GW_TRANSPORT_WS: return "ws";
    case GW_TRANSPORT_WSS: return "wss";
    }
    return "?";
}

static uint64_t rnd(struct gw_session *s)
{
    /* xorshift64*, seeded from getrandom(): ids and jitter, nothing secret. */
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static bool id_used(const struct gw_session *s, uint16_t id)
{
    return s->ids[id >> 3] & (1u << (id & 7));
}

static void id_set(struct gw_session *s, uint16_t id, bool on)
{
    if (on)
        s->ids[id >> 3] |= (uint8_t)(1u << (id & 7));
    else
        s->ids[id >> 3] &= (uint8_t)~(1u << (id & 7));
}

/* A fresh id of ours: never 0, never in use. 0 when all are taken. */
static uint16_t id_alloc(struct gw_session *s)
{
    for (unsigned n = 0; n < 65535; n++) {
        uint16_t id = s->next_sid++;
        if (s->next_sid == 0)
            s->next_sid = 1;
        if (id && !id_used(s, id)) {
            id_set(s, id, true);
            return id;
        }
    }
    return 0;
}

static void set_state(struct gw_session *s, enum gw_session_state st, int reason)
{
    if (s->st == st)
        return;
    s->st = st;
    gw_log_debug("uplink: state %s%s%s", gw_session_state_name(st), reason ? ": " : "",
                 reason ? gw_strerror(reason) : "");
    if (s->state_fn)
        s->state_fn(s->state_arg, st, reason);
}

/* --- Incoming call bookkeeping --- */

static void in_link(struct gw_session *s, struct in_call *c)
{
    if (c->kind != IN_SAMPLE)
        s->calls_running++;
    c->prev = NULL;
    c->next = s->in_head;
    if (s->in_head)
        s->in_head->prev = c;
    s->in_head = c;
    c->linked = true;
}

static void in_unlink(struct gw_session *s, struct in_call *c)
{
    if (!c->linked)
        return;
    if (c->kind != IN_SAMPLE)
        s->calls_running--;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->in_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    c->linked = false;
}

/* The answer is no longer wanted (link gone, stream stopped): done will not run. */
static void in_cancel(struct gw_session *s, struct in_call *c)
{
    in_unlink(s, c);
    if (c->st) {
        c->st->inflight = NULL;
        c->st = NULL;
    }
    if (c->handle) {
        gw_call_cancel(c->handle);
        free(c);
    } else {
        c->cancel_asked = true; /* still inside gw_registry_call(): its caller finishes */
    }
}

/* Starts c (linked already) and settles who owns it afterwards. */
static void in_start(struct gw_session *s, struct in_call *c, struct gw_res *res,
                     struct gw_value *input, struct gw_value *params,
                     gw_call_done_fn done)
{
    struct gw_call *h = gw_registry_call(s->reg, res, input, params, done, c);
    if (c->done_ran) {
        free(c);
    } else if (c->cancel_asked) {
        gw_call_cancel(h);
        free(c);
    } else {
        c->handle = h;
    }
}

/* --- Sending --- */

static void on_kill(void *arg);

/* Hands a finished frame to the transport. */
static int send_frame(struct gw_session *s, const uint8_t *frame, size_t len)
{
    if (!s->t)
        return GW_ENOTCONN;
    int rc = gw_transport_send(s->t, frame, len);
    if (rc < 0)
        return rc;
    s->stats.frames_out++;
    s->stats.bytes_out += len;
    if (gw_transport_pending(s->t) > 2 * s->cfg.send_queue_max && !gw_timer_armed(s->kill_timer)) {
        s->kill_err = GW_ELINK;
        snprintf(s->kill_why, sizeof(s->kill_why),
                 "send queue over %zu bytes: the server stopped reading",
                 2 * s->cfg.send_queue_max);
        gw_timer_start(s->kill_timer, 0);
    }
    return 0;
}

static void writer_start(struct gw_session *s, struct gw_iotmp_writer *w, uint64_t type)
{
    gw_iotmp_writer_init(w, s->wbuf, s->wcap, type);
}

static int writer_send(struct gw_session *s, struct gw_iotmp_writer *w)
{
    const uint8_t *frame;
    size_t len;
    int rc = gw_iotmp_finish(w, &frame, &len);
    if (rc < 0)
        return rc == GW_ENOBUFS ? GW_ENOSPC : rc;
    return send_frame(s, frame, len);
}

/* OK / ERROR / STREAM_DATA / STOP_STREAM with a stream id and an optional value payload. */
static int send_simple(struct gw_session *s, uint64_t type, uint16_t sid, const struct gw_value *v)
{
    struct gw_iotmp_writer w;
    writer_start(s, &w, type);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    if (v)
        gw_value_encode(v, gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD));
    return writer_send(s, &w);
}

/* ERROR with {"error": msg}; code (e.g. 404) goes into PARAMETERS when not 0 (PROTOCOL.md:
 * a return code is a varint in PARAMETERS), so the server can tell "not found" from a failure. */
static void send_error_va(struct gw_session *s, uint16_t sid, unsigned code, const char *fmt,
                          va_list ap) __attribute__((format(printf, 4, 0)));
static void send_error_va(struct gw_session *s, uint16_t sid, unsigned code, const char *fmt,
                          va_list ap)
{
    char msg[600];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    struct gw_iotmp_writer w;
    writer_start(s, &w, GW_IOTMP_ERROR);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    if (code)
        gw_iotmp_put_varint(&w, GW_IOTMP_PARAMETERS, code);
    struct gw_pson_writer *p = gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD);
    gw_pson_put_map(p, 1);
    gw_pson_put_cstr(p, "error");
    gw_pson_put_cstr(p, msg);
    writer_send(s, &w);
}

static void send_error_code(struct gw_session *s, uint16_t sid, unsigned code, const char *fmt,
                            ...) __attribute__((format(printf, 4, 5)));
static void send_error_code(struct gw_session *s, uint16_t sid, unsigned code, const char *fmt,
                            ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_error_va(s, sid, code, fmt, ap);
    va_end(ap);
}

static void send_error(struct gw_session *s, uint16_t sid, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_error(struct gw_session *s, uint16_t sid, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_error_va(s, sid, 0, fmt, ap);
    va_end(ap);
}

/* An answer to the server: OK with out, or (if it does not fit) ERROR. */
static void send_answer(struct gw_session *s, uint16_t sid, const struct gw_value *out)
{
    int rc = send_simple(s, GW_IOTMP_OK, sid, out);
    if (rc == GW_ENOSPC)
        send_error(s, sid, "answer larger than max_frame (%zu bytes)", s->cfg.max_frame);
}

/* --- Streams --- */

static void stream_free(struct stream *st)
{
    struct gw_session *s = st->s;
    for (struct stream **pp = &s->streams; *pp; pp = &(*pp)->next)
        if (*pp == st) {
            *pp = st->next;
            break;
        }
    if (st->inflight)
        in_cancel(s, st->inflight);
    gw_timer_free(st->timer);
    gw_sub_free(st->sub);
    gw_value_fini(&st->pending);
    id_set(s, st->sid, false);
    s->stats.streams_open--;
    free(st);
}

static struct stream *stream_find(struct gw_session *s, uint16_t sid)
{
    for (struct stream *st = s->streams; st; st = st->next)
        if (st->sid == sid)
            return st;
    return NULL;
}

/* Sends a sample now, or holds it back (newest only) while the link is busy. */
static void stream_emit(struct stream *st, const struct gw_value *v)
{
    struct gw_session *s = st->s;
    if (s->st != GW_SESSION_READY || !s->t)
        return;
    if (gw_transport_pending(s->t) > s->cfg.send_queue_max / 2) {
        if (st->has_pending) {
            s->stats.samples_coalesced++;
            gw_value_fini(&st->pending);
        }
        if (v)
            gw_value_copy(&st->pending, v);
        else
            st->pending = GW_VALUE_INIT_NULL;
        st->has_pending = true;
        if (!st->slow_logged) {
            st->slow_logged = true;
            gw_log_warn("uplink: stream %u (%s) produces faster than the link drains; "
                        "keeping only its newest sample",
                        (unsigned)st->sid, gw_res_name(st->res));
        }
        return;
    }
    static const struct gw_value null_value = {.type = GW_VALUE_NULL};
    if (send_simple(s, GW_IOTMP_STREAM_DATA, st->sid, v ? v : &null_value) == 0)
        s->stats.stream_samples++;
}

static void flush_pending_samples(struct gw_session *s)
{
    for (struct stream *st = s->streams; st; st = st->next) {
        if (!st->has_pending)
            continue;
        if (!s->t || gw_transport_pending(s->t) > s->cfg.send_queue_max / 2)
            return;
        struct gw_value v = st->pending;
        st->pending = GW_VALUE_INIT_NULL;
        st->has_pending = false;
        stream_emit(st, &v);
        gw_value_fini(&v);
    }
}

static void in_done(void *arg, int rc, const struct gw_value *out, const char *msg);
static void in_done_work(struct in_call *c, int rc, const struct gw_value *out, const char *msg);
static uint64_t now_ns(void);

/* Starts one read of an interval stream's resource. */
static void stream_sample(struct stream *st)
{
    struct gw_session *s = st->s;
    if (st->inflight) {
        s->stats.samples_coalesced++;
        if (!st->slow_logged) {
            st->slow_logged = true;
            gw_log_warn("uplink: stream %u (%s): the resource answers slower than every %llu ms; "
                        "samples are skipped",
                        (unsigned)st->sid, gw_res_name(st->res),
                        (unsigned long long)st->interval_ms);
        }
        return;
    }
    struct in_call *c = gw_calloc(1, sizeof(*c));
    c->s = s;
    c->kind = IN_SAMPLE;
    c->st = st;
    in_link(s, c);
    st->inflight = c;
    in_start(s, c, st->res, NULL, NULL, in_done);
}

static void on_stream_timer(void *arg)
{
    struct stream *st = arg;
    uint64_t now = gw_loop_now_ms();
    st->next_due += st->interval_ms;
    if (st->next_due <= now)
        st->next_due = now + st->interval_ms;
    gw_timer_start(st->timer, st->next_due - now);
    stream_sample(st);
}

static void send_stop_stream(struct gw_session *s, uint16_t sid)
{
    struct gw_iotmp_writer w;
    writer_start(s, &w, GW_IOTMP_STOP_STREAM);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    writer_send(s, &w);
}

static void on_stream_sub(void *arg, struct gw_res *res, const struct gw_value *v)
{
    struct stream *st = arg;
    (void)res;
    if (!v) {
        /* The resource was removed (adapter stopped or reloaded): end the stream. */
        gw_log_info("uplink: stream %u ends: resource %s was removed", (unsigned)st->sid,
                    gw_res_name(st->res));
        send_stop_stream(st->s, st->sid);
        stream_free(st);
        return;
    }
    if (st->interval_ms == 0)
        stream_emit(st, v);
}

/* --- Incoming calls --- */

static void in_done(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    struct in_call *c = arg;
    struct gw_session *s = c->s;
    uint64_t t0 = now_ns();
    in_done_work(c, rc, out, msg);
    s->stats.busy_ns += now_ns() - t0;
    if (c->handle)
        free(c);
    else
        c->done_ran = true; /* inside gw_registry_call(): in_start() frees it */
}

static void in_done_work(struct in_call *c, int rc, const struct gw_value *out, const char *msg)
{
    struct gw_session *s = c->s;
    in_unlink(s, c);
    switch (c->kind) {
    case IN_RUN:
        if (c->sid) {
            if (rc == 0)
                send_answer(s, c->sid, out);
            else
                send_error(s, c->sid, "%s", msg && *msg ? msg : gw_strerror(rc));
        } else if (rc < 0) {
            gw_log_info("uplink: call without answer failed: %s", msg ? msg : gw_strerror(rc));
        }
        break;
    case IN_SAMPLE:
        if (c->st) {
            c->st->inflight = NULL;
            if (rc == 0)
                stream_emit(c->st, out);
            else
                gw_log_debug("uplink: stream %u: sample failed: %s", (unsigned)c->st->sid,
                             msg ? msg : gw_strerror(rc));
        }
        break;
    case IN_INPUT:
        if (rc < 0)
            gw_log_info("uplink: stream input failed: %s", msg ? msg : gw_strerror(rc));
        break;
    }
}

/* Cancels every running incoming call (the link is gone). */
static void cancel_in_calls(struct gw_session *s)
{
    while (s->in_head)
        in_cancel(s, s->in_head);
}

static void start_in_call(struct gw_session *s, struct gw_res *res, enum in_kind kind,
                          uint16_t sid, struct gw_value *input, struct gw_value *params)
{
    struct in_call *c = gw_calloc(1, sizeof(*c));
    c->s = s;
    c->kind = kind;
    c->sid = sid;
    in_link(s, c);
    in_start(s, c, res, input, params, in_done);
}

/* --- Outbound calls --- */

static void call_unlink(struct gw_session *s, struct out_call *c)
{
    for (struct out_call **pp = &s->calls[c->sid % CALL_BUCKETS]; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    id_set(s, c->sid, false);
    s->stats.calls_pending--;
    gw_timer_free(c->timer);
    c->timer = NULL;
}

static struct out_call *call_find(struct gw_session *s, uint16_t sid)
{
    for (struct out_call *c = s->calls[sid % CALL_BUCKETS]; c; c = c->next)
        if (c->sid == sid)
            return c;
    return NULL;
}

static void call_end(struct out_call *c, int rc, const struct gw_value *out, const char *msg)
{
    struct gw_session *s = c->s;
    call_unlink(s, c);
    if (rc < 0)
        s->stats.calls_out_failed++;
    if (c->done)
        c->done(c->arg, rc, out, msg);
    free(c);
}

static void on_call_timeout(void *arg)
{
    struct out_call *c = arg;
    char msg[96];
    snprintf(msg, sizeof(msg), "no answer from the server within %u ms", c->timeout_ms);
    call_end(c, GW_ETIMEDOUT, NULL, msg);
}

/* Fails every pending outbound call with rc (link lost or session stopped). */
static void fail_all_calls(struct gw_session *s, int rc, const char *msg)
{
    struct out_call *list = NULL;
    for (size_t i = 0; i < CALL_BUCKETS; i++) {
        while (s->calls[i]) {
            struct out_call *c = s->calls[i];
            s->calls[i] = c->next;
            id_set(s, c->sid, false);
            s->stats.calls_pending--;
            gw_timer_free(c->timer);
            c->timer = NULL;
            c->next = list;
            list = c;
        }
    }
    while (list) {
        struct out_call *c = list;
        list = c->next;
        s->stats.calls_out_failed++;
        if (c->done)
            c->done(c->arg, rc, NULL, msg);
        free(c);
    }
}

static int call_common(struct gw_session *s, enum gw_iotmp_action action,
                       const struct gw_value *target, const struct gw_value *payload,
                       const void *pson, size_t pson_len, bool want_answer, unsigned timeout_ms,
                       gw_session_call_fn done, void *arg)
{
    if (action < GW_IOTMP_READ_DEVICE_PROPERTY || action > GW_IOTMP_UNLOCK_SYNC)
        return GW_EINVAL;
    if (pson && pson_len) {
        size_t vl;
        if (gw_pson_value_len(pson, pson_len, &vl) < 0 || vl != pson_len)
            return GW_EINVAL;
    }
    if (s->st != GW_SESSION_READY || !s->t)
        return GW_ENOTCONN;
    if (gw_transport_pending(s->t) > s->cfg.send_queue_max)
        return GW_ENOBUFS;
    uint16_t sid = 0;
    if (want_answer) {
        sid = id_alloc(s);
        if (!sid)
            return GW_EBUSY;
    }
    struct gw_iotmp_writer w;
    writer_start(s, &w, GW_IOTMP_RUN);
    if (sid)
        gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    bool linux_layout = s->cfg.server_action_layout == GW_SESSION_LAYOUT_LINUX;
    if (linux_layout) {
        if (target)
            gw_value_encode(target, gw_iotmp_put_pson(&w, GW_IOTMP_PARAMETERS));
    } else {
        gw_iotmp_put_varint(&w, GW_IOTMP_PARAMETERS, (uint64_t)action);
    }
    if (payload)
        gw_value_encode(payload, gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD));
    else if (pson && pson_len)
        gw_pson_put_raw(gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD), pson, pson_len);
    if (linux_layout) {
        gw_iotmp_put_varint(&w, GW_IOTMP_RESOURCE, (uint64_t)action);
    } else {
        static const struct gw_value empty = {.type = GW_VALUE_NULL};
        gw_value_encode(target ? target : &empty, gw_iotmp_put_pson(&w, GW_IOTMP_RESOURCE));
    }
    int rc = writer_send(s, &w);
    if (rc < 0) {
        if (sid)
            id_set(s, sid, false);
        return rc;
    }
    s->stats.calls_out++;
    if (!sid)
        return 0;
    struct out_call *c = gw_calloc(1, sizeof(*c));
    c->s = s;
    c->sid = sid;
    c->done = done;
    c->arg = arg;
    c->timeout_ms = timeout_ms ? timeout_ms : 10000;
    c->timer = gw_timer_new(s->loop, on_call_timeout, c);
    gw_timer_start(c->timer, c->timeout_ms);
    c->next = s->calls[sid % CALL_BUCKETS];
    s->calls[sid % CALL_BUCKETS] = c;
    s->stats.calls_pending++;
    return 0;
}

int gw_session_call(struct gw_session *s, enum gw_iotmp_action action,
                    const struct gw_value *target, const struct gw_value *payload,
                    bool want_answer, unsigned timeout_ms, gw_session_call_fn done, void *arg)
{
    return call_common(s, action, target, payload, NULL, 0, want_answer, timeout_ms, done, arg);
}

int gw_session_call_pson(struct gw_session *s, enum gw_iotmp_action action,
                         const struct gw_value *target, const void *pson, size_t len,
                         bool want_answer, unsigned timeout_ms, gw_session_call_fn done,
                         void *arg)
{
    return call_common(s, action, target, NULL, pson, len, want_answer, timeout_ms, done, arg);
}

/* --- Link lifecycle --- */

static void connect_now(struct gw_session *s);

static void on_retry(void *arg)
{
    connect_now(arg);
}

/* Ends the epoch: closes the transport and forgets everything tied to it. */
static void end_epoch(struct gw_session *s, bool graceful)
{
    if (s->t) {
        if (graceful)
            gw_transport_flush_close(s->t);
        else
            gw_transport_close(s->t);
        s->t = NULL;
    }
    gw_timer_stop(s->connect_timer);
    gw_timer_stop(s->tick_timer);
    gw_timer_stop(s->kill_timer);
    cancel_in_calls(s);
    while (s->streams)
        stream_free(s->streams);
    memset(s->ids, 0, sizeof(s->ids));
    /* Outbound calls keep their ids until failed below; re-mark them. */
    for (size_t i = 0; i < CALL_BUCKETS; i++)
        for (struct out_call *c = s->calls[i]; c; c = c->next)
            id_set(s, c->sid, true);
}

static double uniform01(struct gw_session *s)
{
    return (double)(rnd(s) >> 11) / 9007199254740992.0; /* 53 bits: [0, 1) */
}

static unsigned jitter(struct gw_session *s, unsigned ms)
{
    /* ±20 %: ms * (0.8 + 0.4 * u), u uniform in [0, 1) */
    return (unsigned)((double)ms * (0.8 + 0.4 * uniform01(s)));
}

/*
 * The delay before the next attempt of the normal back-off; advances the back-off. spread_now:
 * the first attempt after a lost session or after a failed first connect, which waits at least
 * backoff_min plus a uniformly random part of the spread window (or the back-off, if longer:
 * a link that flaps is still slowed down by the doubling).
 */
static unsigned next_backoff(struct gw_session *s, bool spread_now)
{
    unsigned delay = jitter(s, s->backoff_next);
    unsigned spread = s->cfg.reconnect_spread_ms < s->cfg.backoff_max_ms
                          ? s->cfg.reconnect_spread_ms
                          : s->cfg.backoff_max_ms;
    if (spread_now && spread) {
        unsigned spread_delay = s->cfg.backoff_min_ms + (unsigned)(uniform01(s) * (double)spread);
        if (spread_delay > delay)
            delay = spread_delay;
    }
    unsigned next = s->backoff_next * 2;
    s->backoff_next = next > s->cfg.backoff_max_ms ? s->cfg.backoff_max_ms : next;
    return delay;
}

/*
 * The link is gone (or never came up). delay_ms < 0: the normal back-off; otherwise that delay
 * (0 for an immediate retry after a redirect or a refused "ka").
 */
static void link_down(struct gw_session *s, int err, const char *why_in, long delay_ms)
{
    char why[1024]; /* why_in may live in the transport, which is freed below */
    snprintf(why, sizeof(why), "%s", why_in ? why_in : "");
    bool was_ready = s->st == GW_SESSION_READY;
    bool spread_now = was_ready || s->first_attempt;
    s->first_attempt = false;
    uint64_t now = gw_loop_now_ms();
    end_epoch(s, false);
    if (was_ready) {
        s->stats.link_losses++;
        if (err == GW_EDEADLINK)
            s->stats.dead_links++;
        uint64_t lasted = now - s->ready_at;
        if (lasted >= (uint64_t)s->cfg.backoff_reset_s * 1000)
            s->backoff_next = s->cfg.backoff_min_ms;
        gw_log_warn("uplink: link lost after %llu s: %s", (unsigned long long)(lasted / 1000),
                    why);
    } else {
        s->stats.connect_failures++;
        gw_log_warn("uplink: connection failed: %s", why);
        if (s->use_redirect && delay_ms < 0) {
            /* The redirect target did not work out: back to the configured server. */
            s->use_redirect = false;
            gw_log_notice("uplink: giving up the redirect target; next attempt goes to %s",
                          s->cfg.url);
        }
    }
    unsigned delay = delay_ms >= 0 ? (unsigned)delay_ms : next_backoff(s, spread_now);
    s->stats.last_backoff_ms = delay;
    if (delay)
        gw_log_info("uplink: next attempt in %u ms", delay);
    gw_timer_start(s->retry_timer, delay);
    set_state(s, GW_SESSION_BACKOFF, err);
    /* Last: callers may start new calls from here; they get GW_ENOTCONN. */
    fail_all_calls(s, GW_ELINK, "the link to the server was lost before the answer");
}

static void on_kill(void *arg)
{
    struct gw_session *s = arg;
    if (s->t)
        link_down(s, s->kill_err, s->kill_why, -1);
}

static void on_connect_timeout(void *arg)
{
    struct gw_session *s = arg;
    char why[128];
    snprintf(why, sizeof(why), "no session within %u ms (%s)", s->cfg.connect_timeout_ms,
             s->st == GW_SESSION_AUTHENTICATING ? "no answer to CONNECT" : "connect");
    link_down(s, GW_ETIMEDOUT, why, -1);
}

static void send_keepalive(struct gw_session *s)
{
    static const uint8_t ka[2] = {GW_IOTMP_KEEP_ALIVE, 0};
    if (send_frame(s, ka, sizeof(ka)) == 0)
        s->stats.keepalives_sent++;
    s->last_ka_tx = gw_loop_now_ms();
}

static void on_tick(void *arg)
{
    struct gw_session *s = arg;
    if (s->st != GW_SESSION_READY)
        return;
    uint64_t now = gw_loop_now_ms();
    if (s->echo_seen && now - s->last_rx >= 2ull * s->ka_ms) {
        char why[128];
        snprintf(why, sizeof(why), "nothing received for %llu ms (keep-alive %u ms): dead link",
                 (unsigned long long)(now - s->last_rx), s->ka_ms);
        link_down(s, GW_EDEADLINK, why, -1);
        return;
    }
    if (now - s->last_ka_tx >= s->ka_ms)
        send_keepalive(s);
    unsigned tick = s->ka_ms / 8;
    tick = tick < 50 ? 50 : tick > 1000 ? 1000 : tick;
    /* Wake at the dead-link deadline itself, not up to a tick after it. */
    uint64_t due = s->last_rx + 2ull * s->ka_ms;
    if (s->echo_seen && due > now && due - now < tick)
        tick = (unsigned)(due - now);
    gw_timer_start(s->tick_timer, tick);
}

static void send_connect(struct gw_session *s)
{
    struct gw_iotmp_writer w;
    writer_start(s, &w, GW_IOTMP_CONNECT);
    s->connect_sid = (uint16_t)(rnd(s) % 65535 + 1);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, s->connect_sid);
    s->ka_sent = s->cfg.keepalive_s != 60 && !s->ka_param_refused;
    if (s->ka_sent) {
        struct gw_pson_writer *p = gw_iotmp_put_pson(&w, GW_IOTMP_PARAMETERS);
        gw_pson_put_map(p, 1);
        gw_pson_put_cstr(p, "ka");
        gw_pson_put_uint(p, s->cfg.keepalive_s);
    }
    struct gw_pson_writer *p = gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD);
    gw_pson_put_array(p, 3);
    gw_pson_put_cstr(p, s->cfg.user);
    gw_pson_put_cstr(p, s->cfg.device);
    gw_pson_put_cstr(p, s->cfg.password);
    /* The CONNECT frame holds credentials: never logged. */
    if (writer_send(s, &w) < 0 && s->t) {
        s->kill_err = GW_ENOSPC;
        snprintf(s->kill_why, sizeof(s->kill_why), "CONNECT does not fit in max_frame");
        gw_timer_start(s->kill_timer, 0);
    }
}

static void t_on_open(void *arg)
{
    struct gw_session *s = arg;
    gw_iotmp_reader_init(&s->rd, s->rbuf, s->rcap, s->cfg.max_frame);
    s->last_rx = gw_loop_now_ms();
    s->echo_seen = false;
    set_state(s, GW_SESSION_AUTHENTICATING, 0);
    if (s->st == GW_SESSION_AUTHENTICATING)
        send_connect(s);
}

static void t_on_close(void *arg, int err, const char *why)
{
    struct gw_session *s = arg;
    link_down(s, err, why, -1);
}

static void t_on_drain(void *arg)
{
    flush_pending_samples(arg);
}

static void handle_frame(struct gw_session *s, uint64_t type, const uint8_t *body, size_t len);
static void t_on_bytes_work(struct gw_session *s, const uint8_t *p, size_t len);
static uint64_t now_ns(void);

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void t_on_bytes(void *arg, const uint8_t *p, size_t len)
{
    struct gw_session *s = arg;
    uint64_t t0 = now_ns();
    t_on_bytes_work(s, p, len);
    s->stats.busy_ns += now_ns() - t0;
}

static void t_on_bytes_work(struct gw_session *s, const uint8_t *p, size_t len)
{
    uint32_t epoch = s->epoch;
    s->last_rx = gw_loop_now_ms();
    s->stats.bytes_in += len;
    while (len && s->t && s->epoch == epoch) {
        size_t used = 0;
        uint64_t type;
        const uint8_t *body;
        size_t body_len;
        int rc = gw_iotmp_feed(&s->rd, p, len, &used, &type, &body, &body_len);
        p += used;
        len -= used;
        if (rc == 1) {
            s->stats.frames_in++;
            handle_frame(s, type, body, body_len);
        } else if (rc == GW_ENOBUFS) {
            size_t need = gw_iotmp_reader_need(&s->rd);
            s->rbuf = gw_realloc(s->rbuf, need);
            s->rcap = need;
            gw_iotmp_reader_set_buffer(&s->rd, s->rbuf, s->rcap);
        } else if (rc < 0) {
            char why[160];
            if (rc == GW_EFRAME_SIZE) {
                /* the announced size, decoded again from the header bytes the reader kept */
                uint64_t ftype = 0, fsize = 0;
                int n = gw_varint_decode(s->rd.hdr, s->rd.hdr_len, &ftype);
                if (n < 0 || gw_varint_decode(s->rd.hdr + n, s->rd.hdr_len - (size_t)n, &fsize) < 0)
                    fsize = 0;
                snprintf(why, sizeof(why),
                         "server sent a %s frame of %llu bytes, over max_frame %zu",
                         gw_iotmp_type_name(ftype), (unsigned long long)fsize, s->cfg.max_frame);
            }
            else
                snprintf(why, sizeof(why), "malformed frame header from the server: %s",
                         gw_strerror(rc));
            link_down(s, rc == GW_EFRAME_SIZE ? GW_EFRAME_SIZE : GW_EPROTO, why, -1);
            return;
        } else {
            break;
        }
    }
}

static void connect_now(struct gw_session *s)
{
    const struct gw_transport_url *url = s->use_redirect ? &s->redirect : &s->url;
    struct gw_transport_opts o = {
        .url = *url,
        .ca_file = s->cfg.ca_file,
        .cert_file = s->cfg.cert_file,
        .key_file = s->cfg.key_file,
        .insecure = s->cfg.insecure,
        .connect_timeout_ms = s->cfg.connect_timeout_ms,
        .keepalive_s = s->ka_param_refused ? 60 : s->cfg.keepalive_s,
    };
    struct gw_transport_cb cb = {
        .on_open = t_on_open,
        .on_bytes = t_on_bytes,
        .on_drain = t_on_drain,
        .on_close = t_on_close,
        .arg = s,
    };
    s->epoch++;
    s->stats.connects++;
    s->kind = url->kind;
    s->ka_ms = (s->ka_param_refused ? 60 : s->cfg.keepalive_s) * 1000;
    /* With the attempt's own wall-clock time (epoch seconds): lines on stderr carry no time of
     * their own, and fault.reconnect_storm measures the spread of retries from these. */
    uint64_t wall = gw_loop_wall_ms();
    gw_log_info("uplink: connecting to %s://%s:%u%s as device %s "
                "(attempt %llu, wall clock %llu.%03u)",
                kind_name(url->kind), url->host, (unsigned)url->port, url->path, s->cfg.device,
                (unsigned long long)s->stats.connects, (unsigned long long)(wall / 1000),
                (unsigned)(wall % 1000));
    set_state(s, GW_SESSION_CONNECTING, 0);
    if (s->st != GW_SESSION_CONNECTING)
        return;
    gw_timer_start(s->connect_timer, s->cfg.connect_timeout_ms);
    int rc = gw_transport_open(s->loop, &o, &cb, &s->t);
    if (rc < 0) {
        s->t = NULL;
        link_down(s, rc, gw_strerror(rc), -1);
    }
}

/* --- Authentication answer --- */

static void became_ready(struct gw_session *s)
{
    gw_timer_stop(s->connect_timer);
    s->ready_at = gw_loop_now_ms();
    s->last_ka_tx = s->ready_at;
    s->stats.sessions++;
    s->redirects_in_row = 0;
    s->use_redirect = false; /* later reconnects ask the configured server again */
    gw_log_notice("uplink: session ready over %s (%s), keep-alive %u s", kind_name(s->kind),
                  s->t && gw_transport_verified(s->t) ? "verified" : "not verified",
                  s->ka_ms / 1000);
    unsigned tick = s->ka_ms / 8;
    gw_timer_start(s->tick_timer, tick < 50 ? 50 : tick > 1000 ? 1000 : tick);
    set_state(s, GW_SESSION_READY, 0);
    if (s->st == GW_SESSION_READY && s->t)
        flush_pending_samples(s);
}

/* A PSON/varint field as a string (copied into buf); false if absent or not a string. */
static bool field_str(const struct gw_iotmp_frame *f, unsigned id, char *buf, size_t cap)
{
    if (!gw_iotmp_has(f, id) || f->field[id].wire != GW_IOTMP_WIRE_PSON)
        return false;
    struct gw_pson_reader r;
    struct gw_pson_item it;
    gw_pson_reader_init(&r, f->field[id].p, f->field[id].len);
    if (gw_pson_next(&r, &it) < 0 || it.kind != GW_PSON_STRING)
        return false;
    snprintf(buf, cap, "%.*s", (int)(it.len < cap ? it.len : cap - 1), (const char *)it.s);
    return true;
}

/* The text of an ERROR: PAYLOAD.error, PAYLOAD.message, or PAYLOAD as a string. */
static void error_text(const struct gw_iotmp_frame *f, char *buf, size_t cap)
{
    buf[0] = '\0';
    if (field_str(f, GW_IOTMP_PAYLOAD, buf, cap))
        return;
    if (gw_iotmp_has(f, GW_IOTMP_PAYLOAD) && f->field[GW_IOTMP_PAYLOAD].wire == GW_IOTMP_WIRE_PSON) {
        struct gw_value v;
        if (gw_value_decode(f->field[GW_IOTMP_PAYLOAD].p, f->field[GW_IOTMP_PAYLOAD].len, &v) >=
            0) {
            const struct gw_value *m = gw_value_map_get(&v, "error");
            if (!m || m->type != GW_VALUE_STRING)
                m = gw_value_map_get(&v, "message");
            if (m && m->type == GW_VALUE_STRING)
                snprintf(buf, cap, "%s", m->s.p);
            gw_value_fini(&v);
        }
    }
    uint64_t code;
    if (gw_iotmp_get_uint(f, GW_IOTMP_PARAMETERS, &code) == 0) {
        size_t n = strlen(buf);
        snprintf(buf + n, cap - n, "%s(code %llu)", n ? " " : "", (unsigned long long)code);
    }
    if (!buf[0])
        snprintf(buf, cap, "the server answered ERROR");
}

static void handle_auth_answer(struct gw_session *s, const struct gw_iotmp_frame *f)
{
    if (f->type == GW_IOTMP_OK) {
        became_ready(s);
        return;
    }
    uint64_t code = 0;
    bool has_code = gw_iotmp_get_uint(f, GW_IOTMP_PARAMETERS, &code) == 0;
    char why[400];
    if (has_code && code == 1) {
        char target[300] = "";
        struct gw_transport_url u;
        const char *bad = NULL;
        if (!field_str(f, GW_IOTMP_PAYLOAD, target, sizeof(target)))
            bad = "no target URI in the answer";
        else if (s->kind != GW_TRANSPORT_TLS || !s->t || !gw_transport_verified(s->t))
            bad = "redirects are followed only over verified TLS (iotmps://)";
        else if (gw_transport_url_parse(target, &u, NULL) < 0 || u.kind != GW_TRANSPORT_TLS)
            bad = "the target is not an iotmps:// URL";
        else if (s->redirects_in_row >= 3)
            bad = "more than 3 redirects in a row";
        if (bad) {
            snprintf(why, sizeof(why), "server redirected to \"%s\": ignored, %s", target, bad);
            gw_log_warn("uplink: %s", why);
            link_down(s, GW_EREDIRECT, why, -1);
            return;
        }
        s->redirects_in_row++;
        s->stats.redirects++;
        s->redirect = u;
        s->use_redirect = true;
        snprintf(why, sizeof(why), "server redirected the session to %s (%u of at most 3 in a row)",
                 target, s->redirects_in_row);
        gw_log_notice("uplink: %s", why);
        link_down(s, GW_EREDIRECT, why, 0);
        return;
    }
    if (has_code && code == 2) {
        s->stats.auth_failures++;
        snprintf(why, sizeof(why),
                 "the server refused the credentials of device \"%s\" (user \"%s\"): bad "
                 "credentials; next attempt in %u s",
                 s->cfg.device, s->cfg.user, s->cfg.auth_backoff_ms / 1000);
        gw_log_err("uplink: %s", why);
        link_down(s, GW_EAUTH, why, (long)jitter(s, s->cfg.auth_backoff_ms));
        return;
    }
    if (has_code && code == 3 && s->ka_sent && !s->ka_param_refused) {
        s->ka_param_refused = true;
        snprintf(why, sizeof(why),
                 "the server refused keep-alive %u s; retrying with its default (60 s)",
                 s->cfg.keepalive_s);
        gw_log_warn("uplink: %s", why);
        link_down(s, GW_EPEER, why, 0);
        return;
    }
    char text[256];
    error_text(f, text, sizeof(text));
    snprintf(why, sizeof(why), "CONNECT refused: %s%s", text,
             has_code && code == 4 ? " (bad encoding)" : "");
    link_down(s, GW_EPEER, why, -1);
}

/* --- Dispatch of the server's requests --- */

/*
 * Finds the resource named by field RESOURCE: a string, an array of segments joined with '/', or
 * a numeric id (varint or PSON). name receives a printable form for messages.
 */
static struct gw_res *find_resource(struct gw_session *s, const struct gw_iotmp_frame *f,
                                    char *name, size_t cap)
{
    snprintf(name, cap, "(none)");
    if (!gw_iotmp_has(f, GW_IOTMP_RESOURCE))
        return NULL;
    const struct gw_iotmp_field *fl = &f->field[GW_IOTMP_RESOURCE];
    if (fl->wire == GW_IOTMP_WIRE_VARINT) {
        snprintf(name, cap, "%llu", (unsigned long long)fl->u);
        return fl->u <= UINT32_MAX ? gw_registry_find_id(s->reg, (uint32_t)fl->u) : NULL;
    }
    if (fl->wire != GW_IOTMP_WIRE_PSON)
        return NULL;
    struct gw_pson_reader r;
    struct gw_pson_item it;
    gw_pson_reader_init(&r, fl->p, fl->len);
    if (gw_pson_next(&r, &it) < 0)
        return NULL;
    if (it.kind == GW_PSON_STRING) {
        snprintf(name, cap, "%.*s", (int)(it.len < cap ? it.len : cap - 1), (const char *)it.s);
        return gw_registry_find(s->reg, (const char *)it.s, it.len);
    }
    if (it.kind == GW_PSON_UINT) {
        snprintf(name, cap, "%llu", (unsigned long long)it.u);
        return it.u <= UINT32_MAX ? gw_registry_find_id(s->reg, (uint32_t)it.u) : NULL;
    }
    if (it.kind == GW_PSON_ARRAY) {
        char path[1100];
        size_t n = 0;
        uint64_t count = it.count;
        for (uint64_t i = 0; i < count; i++) {
            if (gw_pson_next(&r, &it) < 0 || it.kind != GW_PSON_STRING) {
                snprintf(name, cap, "(array with a non-string segment)");
                return NULL;
            }
            if (n + it.len + 1 >= sizeof(path)) {
                snprintf(name, cap, "(path too long)");
                return NULL;
            }
            if (i)
                path[n++] = '/';
            memcpy(path + n, it.s, it.len);
            n += it.len;
        }
        path[n] = '\0';
        snprintf(name, cap, "%.*s", (int)(cap - 1), path);
        return gw_registry_find(s->reg, path, n);
    }
    snprintf(name, cap, "(not a name or id)");
    return NULL;
}

/* A field as a value (PSON decoded, varint as an unsigned); null when absent. */
static void field_value(const struct gw_iotmp_frame *f, unsigned id, struct gw_value *out)
{
    *out = GW_VALUE_INIT_NULL;
    if (!gw_iotmp_has(f, id))
        return;
    if (f->field[id].wire == GW_IOTMP_WIRE_VARINT)
        *out = gw_value_uint(f->field[id].u);
    else if (gw_value_decode(f->field[id].p, f->field[id].len, out) < 0)
        *out = GW_VALUE_INIT_NULL; /* cannot happen: the parser validated it */
}

static void handle_run(struct gw_session *s, const struct gw_iotmp_frame *f, uint16_t sid)
{
    char name[300];
    struct gw_res *res = find_resource(s, f, name, sizeof(name));
    if (!res) {
        if (sid)
            send_error_code(s, sid, 404, "unknown resource \"%s\"", name);
        else
            gw_log_info("uplink: RUN without answer for unknown resource \"%s\"", name);
        return;
    }
    if (s->calls_running >= s->cfg.max_calls_in) {
        s->stats.calls_refused++;
        if (sid)
            send_error_code(s, sid, 429, "busy: %u calls are running (uplink.max_calls); \"%s\" "
                            "not run", s->calls_running, name);
        else
            gw_log_debug("uplink: RUN of \"%s\" dropped: %u calls are running", name,
                         s->calls_running);
        return;
    }
    s->stats.calls_in++;
    struct gw_value input, params;
    field_value(f, GW_IOTMP_PAYLOAD, &input);
    field_value(f, GW_IOTMP_PARAMETERS, &params);
    start_in_call(s, res, IN_RUN, sid, gw_iotmp_has(f, GW_IOTMP_PAYLOAD) ? &input : NULL,
                  gw_iotmp_has(f, GW_IOTMP_PARAMETERS) ? &params : NULL);
    gw_value_fini(&input);
    gw_value_fini(&params);
}

static void handle_describe(struct gw_session *s, const struct gw_iotmp_frame *f, uint16_t sid)
{
    struct gw_res *res = NULL;
    if (gw_iotmp_has(f, GW_IOTMP_RESOURCE)) {
        char name[300];
        res = find_resource(s, f, name, sizeof(name));
        if (!res) {
            send_error_code(s, sid, 404, "unknown resource \"%s\"", name);
            return;
        }
    }
    struct gw_iotmp_writer w;
    writer_start(s, &w, GW_IOTMP_OK);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    struct gw_pson_writer *p = gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD);
    if (res)
        gw_registry_describe_one(s->reg, res, p);
    else
        gw_registry_describe_all(s->reg, p);
    if (writer_send(s, &w) == GW_ENOSPC)
        send_error(s, sid, "description larger than max_frame (%zu bytes)", s->cfg.max_frame);
}

/* The stream interval in ms from PARAMETERS: {"interval": ms}, or a bare number. */
static int stream_interval(const struct gw_iotmp_frame *f, uint64_t *ms)
{
    *ms = 0;
    if (!gw_iotmp_has(f, GW_IOTMP_PARAMETERS))
        return 0;
    if (gw_iotmp_get_uint(f, GW_IOTMP_PARAMETERS, ms) == 0)
        return 0;
    if (f->field[GW_IOTMP_PARAMETERS].wire != GW_IOTMP_WIRE_PSON)
        return GW_EINVAL;
    struct gw_pson_reader r;
    struct gw_pson_item it;
    gw_pson_reader_init(&r, f->field[GW_IOTMP_PARAMETERS].p, f->field[GW_IOTMP_PARAMETERS].len);
    if (gw_pson_next(&r, &it) < 0)
        return GW_EINVAL;
    if (it.kind == GW_PSON_NULL)
        return 0;
    if (it.kind != GW_PSON_MAP)
        return GW_EINVAL;
    for (;;) {
        if (gw_pson_next(&r, &it) < 0)
            return GW_EINVAL;
        if (it.kind == GW_PSON_END)
            return 0;
        if (gw_pson_item_key_is(&it, "interval")) {
            if (it.kind == GW_PSON_NULL)
                continue;
            if (gw_pson_item_to_uint64(&it, ms) < 0)
                return GW_EINVAL;
            continue;
        }
        if (gw_pson_skip(&r, &it) < 0)
            return GW_EINVAL;
    }
}

static void handle_start_stream(struct gw_session *s, const struct gw_iotmp_frame *f, uint16_t sid)
{
    if (!sid) {
        gw_log_debug("uplink: START_STREAM without stream id ignored");
        s->stats.frames_ignored++;
        return;
    }
    char name[300];
    struct gw_res *res = find_resource(s, f, name, sizeof(name));
    if (!res) {
        send_error_code(s, sid, 404, "unknown resource \"%s\"", name);
        return;
    }
    if (!gw_res_streamable(res)) {
        send_error(s, sid, "resource \"%s\" cannot be streamed", gw_res_name(res));
        return;
    }
    uint64_t interval;
    if (stream_interval(f, &interval) < 0 || interval > 86400000ull) {
        send_error(s, sid, "invalid stream parameters: expected {\"interval\": ms} (0..86400000)");
        return;
    }
    struct stream *old = stream_find(s, sid);
    if (old)
        stream_free(old); /* a second START_STREAM on an id replaces the stream */
    if (id_used(s, sid)) {
        send_error(s, sid, "stream id %u is in use", (unsigned)sid);
        return;
    }
    struct stream *st = gw_calloc(1, sizeof(*st));
    st->s = s;
    st->sid = sid;
    st->res = res;
    st->interval_ms = interval;
    st->next = s->streams;
    s->streams = st;
    s->stats.streams_open++;
    id_set(s, sid, true);
    st->sub = gw_res_subscribe(res, on_stream_sub, st);
    send_simple(s, GW_IOTMP_OK, sid, NULL);
    gw_log_debug("uplink: stream %u on %s, %s %llu ms", (unsigned)sid, gw_res_name(res),
                 interval ? "interval" : "events", (unsigned long long)interval);
    if (interval) {
        st->timer = gw_timer_new(s->loop, on_stream_timer, st);
        st->next_due = gw_loop_now_ms() + interval;
        gw_timer_start(st->timer, interval);
        stream_sample(st); /* the first sample at once */
    } else {
        struct gw_value last;
        if (gw_res_last(res, &last, NULL, NULL))
            stream_emit(st, &last); /* the current value as the first event */
    }
}

static void handle_stop_stream(struct gw_session *s, uint16_t sid)
{
    struct stream *st = stream_find(s, sid);
    if (!st) {
        send_error(s, sid, "unknown stream %u", (unsigned)sid);
        return;
    }
    stream_free(st);
    send_simple(s, GW_IOTMP_OK, sid, NULL);
}

static void handle_stream_data(struct gw_session *s, const struct gw_iotmp_frame *f, uint16_t sid)
{
    struct stream *st = sid ? stream_find(s, sid) : NULL;
    if (!st) {
        gw_log_debug("uplink: STREAM_DATA for unknown stream %u ignored", (unsigned)sid);
        s->stats.frames_ignored++;
        return;
    }
    enum gw_fn fn = gw_res_fn(st->res);
    if (fn != GW_FN_INPUT && fn != GW_FN_INOUT) {
        gw_log_debug("uplink: STREAM_DATA to stream %u: %s takes no input", (unsigned)sid,
                     gw_res_name(st->res));
        s->stats.frames_ignored++;
        return;
    }
    if (s->calls_running >= s->cfg.max_calls_in) {
        s->stats.calls_refused++;
        gw_log_debug("uplink: STREAM_DATA to %s dropped: %u calls are running",
                     gw_res_name(st->res), s->calls_running);
        return;
    }
    struct gw_value input;
    field_value(f, GW_IOTMP_PAYLOAD, &input);
    start_in_call(s, st->res, IN_INPUT, 0, &input, NULL);
    gw_value_fini(&input);
}

static void handle_answer(struct gw_session *s, const struct gw_iotmp_frame *f, uint16_t sid)
{
    struct out_call *c = sid ? call_find(s, sid) : NULL;
    if (!c) {
        gw_log_debug("uplink: %s for stream %u matches no call: ignored",
                     gw_iotmp_type_name(f->type), (unsigned)sid);
        s->stats.frames_ignored++;
        return;
    }
    if (f->type == GW_IOTMP_OK) {
        struct gw_value out;
        field_value(f, GW_IOTMP_PAYLOAD, &out);
        call_end(c, 0, gw_iotmp_has(f, GW_IOTMP_PAYLOAD) ? &out : NULL, "");
        gw_value_fini(&out);
    } else {
        char text[300];
        error_text(f, text, sizeof(text));
        call_end(c, GW_EPEER, NULL, text);
    }
}

static bool is_request(uint64_t type)
{
    return type == GW_IOTMP_RUN || type == GW_IOTMP_DESCRIBE || type == GW_IOTMP_START_STREAM ||
           type == GW_IOTMP_STOP_STREAM;
}

static void handle_frame(struct gw_session *s, uint64_t type, const uint8_t *body, size_t len)
{
    struct gw_iotmp_frame f;
    int prc = gw_iotmp_parse(&f, type, body, len);
    uint16_t sid = 0;
    int src = gw_iotmp_get_stream_id(&f, &sid);
    if (src < 0 && src != GW_ENOENT)
        sid = 0;
    if (prc < 0) {
        /* Decision 14.8: stop reading the body; answer a request whose stream id was read. */
        gw_log_info("uplink: %s frame from the server unreadable (%s)%s",
                    gw_iotmp_type_name(type), gw_strerror(prc),
                    sid && is_request(type) ? ": answered ERROR" : ": ignored");
        s->stats.frames_ignored++;
        if (sid && is_request(type) && s->st == GW_SESSION_READY)
            send_error(s, sid, "unreadable request: %s", gw_strerror(prc));
        return;
    }
    if (type == GW_IOTMP_KEEP_ALIVE) {
        s->echo_seen = true;
        s->stats.keepalives_echoed++;
        return;
    }
    if (s->st == GW_SESSION_AUTHENTICATING) {
        if (type == GW_IOTMP_OK || type == GW_IOTMP_ERROR)
            handle_auth_answer(s, &f);
        else if (type == GW_IOTMP_DISCONNECT)
            link_down(s, GW_EPEER, "the server sent DISCONNECT instead of answering CONNECT", -1);
        else
            s->stats.frames_ignored++;
        return;
    }
    if (s->st != GW_SESSION_READY)
        return;
    switch (type) {
    case GW_IOTMP_OK:
    case GW_IOTMP_ERROR:
        handle_answer(s, &f, sid);
        break;
    case GW_IOTMP_DISCONNECT:
        link_down(s, GW_ELINK, "the server sent DISCONNECT", -1);
        break;
    case GW_IOTMP_RUN:
        handle_run(s, &f, sid);
        break;
    case GW_IOTMP_DESCRIBE:
        if (sid)
            handle_describe(s, &f, sid);
        else
            s->stats.frames_ignored++;
        break;
    case GW_IOTMP_START_STREAM:
        handle_start_stream(s, &f, sid);
        break;
    case GW_IOTMP_STOP_STREAM:
        if (sid)
            handle_stop_stream(s, sid);
        else
            s->stats.frames_ignored++;
        break;
    case GW_IOTMP_STREAM_DATA:
        handle_stream_data(s, &f, sid);
        break;
    default:
        gw_log_debug("uplink: message type %llu ignored", (unsigned long long)type);
        s->stats.frames_ignored++;
        break;
    }
}

/* --- Public lifecycle --- */

static char *dup_or_null(const char *p)
{
    return p ? gw_strdup(p) : NULL;
}

int gw_session_new(struct gw_loop *loop, struct gw_registry *reg,
                   const struct gw_session_config *cfg, struct gw_session **out)
{
    *out = NULL;
    struct gw_transport_url url;
    const char *why = NULL;
    if (gw_transport_url_parse(cfg->url, &url, &why) < 0) {
        gw_log_err("uplink: url \"%s\": %s", cfg->url ? cfg->url : "", why);
        return GW_EINVAL;
    }
    if (!cfg->user || !*cfg->user || !cfg->device || !*cfg->device || !cfg->password) {
        gw_log_err("uplink: user, device and password are required");
        return GW_EINVAL;
    }
    if (cfg->keepalive_s > 1800) {
        gw_log_err("uplink: keepalive %u s out of range 1..1800", cfg->keepalive_s);
        return GW_EINVAL;
    }
    if (cfg->insecure && !gw_transport_kind_secure(url.kind)) {
        gw_log_err("uplink: insecure: true only applies to iotmps:// and wss:// URLs");
        return GW_EINVAL;
    }
    if (cfg->max_frame && cfg->max_frame < 1024) {
        gw_log_err("uplink: max_frame %zu is below the minimum of 1024 bytes", cfg->max_frame);
        return GW_EINVAL;
    }
    struct gw_session *s = gw_calloc(1, sizeof(*s));
    s->loop = loop;
    s->reg = reg;
    s->cfg = *cfg;
    s->cfg.url = gw_strdup(cfg->url);
    s->cfg.user = gw_strdup(cfg->user);
    s->cfg.device = gw_strdup(cfg->device);
    s->cfg.password = gw_strdup(cfg->password);
    s->cfg.ca_file = dup_or_null(cfg->ca_file);
    s->cfg.cert_file = dup_or_null(cfg->cert_file);
    s->cfg.key_file = dup_or_null(cfg->key_file);
    if (!s->cfg.keepalive_s)
        s->cfg.keepalive_s = 60;
    if (!s->cfg.max_frame)
        s->cfg.max_frame = GW_IOTMP_MAX_FRAME_DEFAULT;
    if (!s->cfg.connect_timeout_ms)
        s->cfg.connect_timeout_ms = 15000;
    if (!s->cfg.backoff_min_ms)
        s->cfg.backoff_min_ms = 1000;
    if (!s->cfg.backoff_max_ms)
        s->cfg.backoff_max_ms = 60000;
    if (s->cfg.backoff_max_ms < s->cfg.backoff_min_ms)
        s->cfg.backoff_max_ms = s->cfg.backoff_min_ms;
    if (!s->cfg.backoff_reset_s)
        s->cfg.backoff_reset_s = 60;
    if (!s->cfg.auth_backoff_ms)
        s->cfg.auth_backoff_ms = 300000;
    if (!s->cfg.send_queue_max)
        s->cfg.send_queue_max = 1024 * 1024;
    if (!s->cfg.max_calls_in)
        s->cfg.max_calls_in = 256;
    s->url = url;
    s->backoff_next = s->cfg.backoff_min_ms;
    s->wcap = s->cfg.max_frame + GW_IOTMP_HEADROOM;
    s->wbuf = gw_malloc(s->wcap);
    s->rcap = 4096;
    s->rbuf = gw_malloc(s->rcap);
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = gw_loop_wall_ms() ^ (uint64_t)(uintptr_t)s;
    s->rng = seed | 1;
    s->next_sid = (uint16_t)(rnd(s) % 65535 + 1);
    s->retry_timer = gw_timer_new(loop, on_retry, s);
    s->connect_timer = gw_timer_new(loop, on_connect_timeout, s);
    s->tick_timer = gw_timer_new(loop, on_tick, s);
    s->kill_timer = gw_timer_new(loop, on_kill, s);
    s->st = GW_SESSION_IDLE;
    *out = s;
    return 0;
}

void gw_session_on_state(struct gw_session *s, gw_session_state_fn fn, void *arg)
{
    s->state_fn = fn;
    s->state_arg = arg;
}

int gw_session_start(struct gw_session *s)
{
    if (s->started)
        return GW_EBUSY;
    s->started = true;
    s->first_attempt = true;
    s->backoff_next = s->cfg.backoff_min_ms;
    connect_now(s);
    return 0;
}

void gw_session_stop(struct gw_session *s)
{
    if (!s->started)
        return;
    s->started = false;
    gw_timer_stop(s->retry_timer);
    bool graceful = s->st == GW_SESSION_READY && s->t;
    if (graceful) {
        static const uint8_t disc[2] = {GW_IOTMP_DISCONNECT, 0};
        send_frame(s, disc, sizeof(disc));
        gw_log_info("uplink: DISCONNECT sent, closing");
    }
    end_epoch(s, graceful);
    s->use_redirect = false;
    s->redirects_in_row = 0;
    set_state(s, GW_SESSION_STOPPED, 0);
    fail_all_calls(s, GW_ECANCELED, "the session was stopped");
}

void gw_session_free(struct gw_session *s)
{
    if (!s)
        return;
    s->state_fn = NULL;
    gw_session_stop(s);
    gw_timer_free(s->retry_timer);
    gw_timer_free(s->connect_timer);
    gw_timer_free(s->tick_timer);
    gw_timer_free(s->kill_timer);
    free(s->wbuf);
    free(s->rbuf);
    free((void *)s->cfg.url);
    free((void *)s->cfg.user);
    free((void *)s->cfg.device);
    /* Wipe the password before releasing it. */
    if (s->cfg.password) {
        size_t n = strlen(s->cfg.password);
        memset((void *)s->cfg.password, 0, n);
        __asm__ __volatile__("" ::"r"(s->cfg.password) : "memory");
        free((void *)s->cfg.password);
    }
    free((void *)s->cfg.ca_file);
    free((void *)s->cfg.cert_file);
    free((void *)s->cfg.key_file);
    free(s);
}

enum gw_session_state gw_session_state(const struct gw_session *s)
{
    return s->st;
}

void gw_session_get_stats(const struct gw_session *s, struct gw_session_stats *out)
{
    *out = s->stats;
}

uint32_t gw_session_epoch(const struct gw_session *s)
{
    return s->epoch;
}
