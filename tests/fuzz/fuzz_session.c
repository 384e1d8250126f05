/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: IOTMP bytes from the server through the real uplink session (gateway/core/session.c)
 * with the real event loop and resource registry. Only the transport kinds are replaced at link
 * time: this file defines gw_transport_sock_open() and gw_transport_ws_open() (transport.c, the URL
 * parser and dispatcher, is the real one), so the session opens a fake transport that
 *   - delivers on_open from a zero-delay timer (never from inside a gw_transport_* call),
 *   - checks every frame the session sends (one whole, well-formed frame per send) and remembers
 *     the stream ids of the session's own RUN requests, so answers to them can be fed back,
 *   - keeps a byte count as its send queue, which the input can fill (flow control) or drain.
 * Time is virtual while an input runs: clock_gettime(CLOCK_MONOTONIC) is defined here and returns a
 * clock frozen for the input and moved only by the input's time steps, so keep-alive ticks, call
 * timeouts, stream intervals, connect timeouts and back-off timers fire deterministically and
 * without waiting. getrandom() is deterministic during an input too (the session's stream ids).
 *
 * Resources: "noop" (answers at once), "led" (input and output: echoes its input and parameters,
 * fails on "fail", refuses a call with neither), "sensors/temperature" (input), "config" (not
 * streamable), and, owned by a second owner that can be removed, "temperature" (a reading, for
 * streams) and "slow" (holds its calls until the input answers them).
 *
 * Input: 2 header bytes, then operations. Header byte 0: bit 0 answers every CONNECT with OK
 * automatically; bit 1 embedded server-action layout; bits 2-3 keep-alive 60/5/1/1800 s; bit 4
 * iotmps:// with a verified peer (redirects) instead of iotmp://; bit 5 max_frame 1024; bit 6 a
 * 4 KiB send queue bound; bit 7 a call from the READY state callback. Byte 1: bits 0-1 how the
 * first connect goes (open, refused at once, closed before open, open but unverified); bit 2 the
 * streamed resource has a value before the session starts.
 * Operations, one byte o each, kind o >> 6:
 *   0  feed the next (o & 63) + 1 input bytes to on_bytes
 *   1  feed the next ((o & 63) + 1) * 32 input bytes to on_bytes (large frames)
 *   2  advance the clock by steps[o & 15] ms and run one loop iteration; bit 4 first drains the
 *      send queue (on_drain), bit 5 first publishes a new value of the streamed resource
 *   3  an action a = o & 15 with argument g = (o >> 4) & 3:
 *        0 a call to a server action with an answer (timeout 1, 20, 1000 ms or the default by g),
 *        1 the same without an answer, 2 the same with a raw PSON payload (valid or not by g),
 *        3 publish a value of "temperature" (g == 3: mark it stale), 4 / 5 answer the first / all
 *        calls held by "slow" (no value, a value, 2 KiB, an error by g), 6 remove or re-add the
 *        resources of one owner, 7 the link fails (on_close), 8 gw_session_stop, 9 gw_session_start,
 *        10 how the next connect goes (g as in header byte 1), 11 fill the send queue to 0.25,
 *        0.6, 1.1 or 2.1 times its bound, 12 the server answers the session's latest RUN (OK, OK
 *        with a value, ERROR with "error", ERROR with a code and "message"), 13 drain the queue
 * After the last operation the loop runs once more, then the session, the resources' held calls
 * and the registry are freed and a day of virtual time passes (a timer left armed in freed memory
 * would fire). Checks: the session sends only whole frames that parse; every outbound call with an
 * answer is answered exactly once, never from inside gw_session_call(); nothing leaks (ASan).
 */
#include "gw/error.h"
#include "gw/iotmp.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/mem.h"
#include "gw/registry.h"
#include "gw/session.h"
#include "gw/transport.h"
#include "gw/value.h"
#include "transport_internal.h"

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* --- Virtual clock and deterministic randomness --- */

static bool frozen;          /* an input is running */
static uint64_t vnow_ns;     /* the virtual CLOCK_MONOTONIC while frozen */
static uint64_t vlast_ns;    /* the last virtual value: the clock never goes back */
static uint64_t rand_state;

static uint64_t real_mono_ns(clockid_t clk)
{
    struct timespec ts;
    syscall(SYS_clock_gettime, clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int clock_gettime(clockid_t clk, struct timespec *ts)
{
    if (clk != CLOCK_MONOTONIC)
        return (int)syscall(SYS_clock_gettime, clk, ts);
    uint64_t ns;
    if (frozen) {
        ns = vnow_ns;
    } else {
        ns = real_mono_ns(clk);
        if (ns < vlast_ns)
            ns = vlast_ns;
    }
    ts->tv_sec = (time_t)(ns / 1000000000u);
    ts->tv_nsec = (long)(ns % 1000000000u);
    return 0;
}

ssize_t getrandom(void *buf, size_t len, unsigned int flags)
{
    if (!frozen)
        return syscall(SYS_getrandom, buf, len, flags);
    uint8_t *p = buf;
    for (size_t i = 0; i < len; i++) {
        rand_state = rand_state * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (uint8_t)(rand_state >> 56);
    }
    return (ssize_t)len;
}

static void clock_freeze(void)
{
    uint64_t now = real_mono_ns(CLOCK_MONOTONIC);
    vnow_ns = now > vlast_ns ? now : vlast_ns;
    rand_state = 0x5eed;
    frozen = true;
}

static void clock_thaw(void)
{
    vlast_ns = vnow_ns;
    frozen = false;
}

/* --- The fake transport --- */

enum open_mode { OPEN_OK, OPEN_REFUSED, OPEN_CLOSED, OPEN_UNVERIFIED };

struct fake {
    struct gw_transport base;
    struct gw_transport_cb cb;
    struct gw_timer *timer; /* delivers on_open or on_close */
    bool open, closing_async, verified;
    size_t pending;
    struct gw_iotmp_reader rd; /* checks what the session sends */
};

static struct gw_loop *loop;
static struct fake *cur;           /* the session's transport, NULL when none */
static enum open_mode next_open;
static bool auto_auth;
static size_t max_frame;
static size_t send_queue_max;
static uint8_t sent_buf[GW_IOTMP_MAX_FRAME_DEFAULT];
static uint16_t out_sids[8];       /* stream ids of the session's last RUN requests */
static unsigned out_sid_n;

static void feed(const uint8_t *p, size_t len);

static int fake_send(struct gw_transport *t, const void *frame, size_t len)
{
    struct fake *f = (struct fake *)t;
    if (!f->open)
        return GW_ENOTCONN;
    /* One whole frame, well formed, within max_frame. */
    size_t used;
    uint64_t type;
    const uint8_t *body;
    size_t body_len;
    gw_iotmp_reader_init(&f->rd, sent_buf, sizeof sent_buf, max_frame);
    if (gw_iotmp_feed(&f->rd, frame, len, &used, &type, &body, &body_len) != 1 || used != len)
        abort();
    struct gw_iotmp_frame fr;
    if (gw_iotmp_parse(&fr, type, body, body_len) != 0)
        abort();
    uint16_t sid;
    if (type == GW_IOTMP_RUN && gw_iotmp_get_stream_id(&fr, &sid) == 0 && sid)
        out_sids[out_sid_n++ % 8] = sid;
    f->pending += len;
    return 0;
}

static size_t fake_pending(const struct gw_transport *t)
{
    return ((const struct fake *)t)->pending;
}

static bool fake_verified(const struct gw_transport *t)
{
    return ((const struct fake *)t)->verified;
}

static void fake_close(struct gw_transport *t, bool flush)
{
    struct fake *f = (struct fake *)t;
    (void)flush;
    if (cur == f)
        cur = NULL;
    gw_timer_free(f->timer);
    free(f);
}

static const struct gw_transport_vt fake_vt = {fake_send, fake_pending, fake_verified, fake_close};

/* A CONNECT answer the server would give: OK with the stream id of the CONNECT. */
static void feed_ok(void)
{
    static const uint8_t ok[] = {GW_IOTMP_OK, 0};
    feed(ok, sizeof ok);
}

static void on_fake_timer(void *arg)
{
    struct fake *f = arg;
    if (f->closing_async) {
        f->cb.on_close(f->cb.arg, GW_ECONNRESET, "fake transport: connection refused");
        return; /* the session closed (freed) f */
    }
    f->open = true;
    f->cb.on_open(f->cb.arg);
    if (auto_auth && cur == f && f->open)
        feed_ok();
}

static int fake_open(struct gw_loop *l, const struct gw_transport_opts *opts,
                     const struct gw_transport_cb *cb, struct gw_transport **out)
{
    (void)opts;
    if (cur)
        abort(); /* the session opens a new transport only after closing the old one */
    enum open_mode mode = next_open;
    next_open = OPEN_OK;
    if (mode == OPEN_REFUSED)
        return GW_ECONNRESET;
    struct fake *f = gw_calloc(1, sizeof *f);
    f->base.vt = &fake_vt;
    f->cb = *cb;
    f->verified = mode != OPEN_UNVERIFIED && gw_transport_kind_secure(opts->url.kind);
    f->closing_async = mode == OPEN_CLOSED;
    f->timer = gw_timer_new(l, on_fake_timer, f);
    gw_timer_start(f->timer, 0);
    cur = f;
    *out = &f->base;
    return 0;
}

int gw_transport_sock_open(struct gw_loop *l, const struct gw_transport_opts *opts,
                           const struct gw_transport_cb *cb, struct gw_transport **out)
{
    return fake_open(l, opts, cb, out);
}

int gw_transport_ws_open(struct gw_loop *l, const struct gw_transport_opts *opts,
                         const struct gw_transport_cb *cb, struct gw_transport **out)
{
    return fake_open(l, opts, cb, out);
}

/* Received bytes, when a transport is open (otherwise they are lost, as on a real link). */
static void feed(const uint8_t *p, size_t len)
{
    if (cur && cur->open && len)
        cur->cb.on_bytes(cur->cb.arg, p, len);
}

/* --- Resources --- */

#define MAX_HELD 16
static struct gw_call *held[MAX_HELD];  /* calls of the "slow" resource, answered later */
static unsigned held_n;
static uint64_t counter;
static struct gw_registry *reg;
static uint32_t temperature_id;
static int group_a, group_b; /* owners */
static bool group_b_present;

static int run_noop(void *ctx, struct gw_call *call)
{
    (void)ctx;
    gw_call_reply(call, NULL);
    return 0;
}

/* Input and output: echoes {"in": input, "params": params}; a string input "fail" fails, a null
 * input with no parameters is refused at once (GW_EINVAL, the call is not started). */
static int run_led(void *ctx, struct gw_call *call)
{
    (void)ctx;
    const struct gw_value *in = gw_call_input(call);
    const struct gw_value *pr = gw_call_params(call);
    if (in->type == GW_VALUE_NULL && pr->type == GW_VALUE_NULL)
        return GW_EINVAL;
    if (in->type == GW_VALUE_STRING && in->s.len == 4 && memcmp(in->s.p, "fail", 4) == 0) {
        gw_call_fail(call, GW_EDEVICE, "led: %s", "refused");
        return 0;
    }
    struct gw_value out = gw_value_map();
    gw_value_copy(gw_value_map_set(&out, "in", 2), in);
    gw_value_copy(gw_value_map_set(&out, "params", 6), pr);
    gw_call_reply(call, &out);
    return 0;
}

static int run_temperature(void *ctx, struct gw_call *call)
{
    (void)ctx;
    struct gw_value v = gw_value_double(20.0 + (double)(counter++ % 100) / 10.0);
    gw_call_reply(call, &v);
    return 0;
}

static int run_slow(void *ctx, struct gw_call *call)
{
    (void)ctx;
    if (held_n == MAX_HELD)
        return GW_EBUSY;
    held[held_n++] = call;
    return 0;
}

static void answer_held(unsigned how, bool all)
{
    while (held_n) {
        struct gw_call *c = held[0];
        memmove(held, held + 1, (held_n - 1) * sizeof held[0]);
        held_n--;
        if (how == 0) {
            gw_call_reply(c, NULL);
        } else if (how == 1) {
            struct gw_value v = gw_value_cstr("done");
            gw_call_reply(c, &v);
        } else if (how == 2) {
            /* an answer too large for a small max_frame */
            struct gw_value v = gw_value_bytes(sent_buf, 2048);
            gw_call_reply(c, &v);
        } else {
            gw_call_fail(c, GW_ETIMEDOUT, "slow: device did not answer");
        }
        if (!all)
            break;
    }
}

static void add_group_b(void)
{
    struct gw_value out = gw_value_double(21.5);
    struct gw_value meta = gw_value_map();
    *gw_value_map_set(&meta, "unit", 4) = gw_value_cstr("C");
    struct gw_resource_desc d = {.name = "temperature", .fn = GW_FN_OUTPUT, .out = &out,
                                 .meta = &meta, .run = run_temperature, .owner = &group_b};
    if (gw_registry_add(reg, &d, &temperature_id) < 0)
        abort();
    struct gw_resource_desc slow = {.name = "slow", .fn = GW_FN_INOUT, .params = true,
                                    .run = run_slow, .owner = &group_b};
    if (gw_registry_add(reg, &slow, NULL) < 0)
        abort();
    gw_value_fini(&out);
    gw_value_fini(&meta);
    group_b_present = true;
}

static void add_resources(void)
{
    struct gw_value in = gw_value_bool(true);
    struct gw_resource_desc d[] = {
        {.name = "noop", .fn = GW_FN_RUN, .run = run_noop, .owner = &group_a},
        {.name = "led", .fn = GW_FN_INOUT, .in = &in, .run = run_led, .owner = &group_a},
        {.name = "sensors/temperature", .fn = GW_FN_INPUT, .run = run_led, .owner = &group_a},
        {.name = "config", .fn = GW_FN_OUTPUT, .not_streamable = true, .run = run_temperature,
         .owner = &group_a},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (gw_registry_add(reg, &d[i], NULL) < 0)
            abort();
    add_group_b();
}

static void publish_temperature(bool stale)
{
    if (stale) {
        gw_registry_mark_stale(reg, temperature_id);
        return;
    }
    struct gw_value v = gw_value_double((double)(counter++ % 1000) / 4.0);
    gw_registry_publish(reg, temperature_id, &v, 1000);
}

/* --- Outbound calls and their checks --- */

static struct gw_session *sess;
static bool in_call;               /* inside gw_session_call(): no answer may arrive */
static unsigned calls_waiting;     /* accepted with an answer, not yet answered */
static unsigned reentry_budget;

static void issue_call(unsigned arg, bool want, bool pson);

static void on_call_done(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    (void)out;
    if (in_call || !calls_waiting || (rc < 0 && !msg))
        abort();
    calls_waiting--;
    /* Sometimes call again from the answer (e.g. while the link goes down: GW_ENOTCONN). */
    if ((uintptr_t)arg & 1 && reentry_budget) {
        reentry_budget--;
        issue_call(0, true, false);
    }
}

static void issue_call(unsigned arg, bool want, bool pson)
{
    static const unsigned timeouts[4] = {1, 20, 1000, 0};
    enum gw_iotmp_action action = (enum gw_iotmp_action)(GW_IOTMP_READ_DEVICE_PROPERTY +
                                                         (counter++ % 8)); /* 8 is refused */
    struct gw_value target, payload;
    if (action == GW_IOTMP_CALL_DEVICE) {
        target = gw_value_array();
        *gw_value_array_add(&target) = gw_value_cstr("device2");
        *gw_value_array_add(&target) = gw_value_cstr("led");
    } else {
        target = gw_value_cstr("sensor_data");
    }
    payload = gw_value_map();
    *gw_value_map_set(&payload, "temperature", 11) = gw_value_double(21.5);
    int rc;
    in_call = true;
    if (pson) {
        /* A valid value, a value with trailing bytes (refused), or a truncated one (refused). */
        static const uint8_t good[] = {0x81, 'x'};
        static const uint8_t trailing[] = {0x81, 'x', 0};
        static const uint8_t truncated[] = {0x85, 'x'};
        const uint8_t *p = arg == 1 ? trailing : arg == 2 ? truncated : good;
        size_t n = arg == 1 ? sizeof trailing : arg == 2 ? sizeof truncated : sizeof good;
        rc = gw_session_call_pson(sess, action, &target, p, n, want, timeouts[arg],
                                  on_call_done, (void *)(uintptr_t)arg);
    } else {
        rc = gw_session_call(sess, action, arg == 3 ? NULL : &target, arg == 2 ? NULL : &payload,
                             want, timeouts[arg], on_call_done, (void *)(uintptr_t)arg);
    }
    in_call = false;
    if (rc == 0 && want)
        calls_waiting++;
    else if (rc != 0 && rc != GW_ENOTCONN && rc != GW_ENOBUFS && rc != GW_EBUSY &&
             rc != GW_ENOSPC && rc != GW_EINVAL)
        abort();
    gw_value_fini(&target);
    gw_value_fini(&payload);
}

static bool call_on_ready;

static void on_state(void *arg, enum gw_session_state st, int reason)
{
    (void)arg;
    (void)reason;
    if (st == GW_SESSION_READY && call_on_ready)
        issue_call(3, true, false);
}

/* --- Operations --- */

static void step(uint64_t ms)
{
    vnow_ns += ms * 1000000u;
    gw_loop_drain(loop);
    lws_service(gw_loop_lws(loop), -1); /* ripe timers; no waiting */
    gw_loop_drain(loop);
}

/* Feeds an answer of the server to one of the session's own RUN requests. */
static void feed_answer(unsigned how)
{
    uint16_t sid = out_sid_n ? out_sids[(out_sid_n - 1) % 8] : 1;
    static uint8_t buf[256];
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, buf, sizeof buf, how < 2 ? GW_IOTMP_OK : GW_IOTMP_ERROR);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    if (how == 3)
        gw_iotmp_put_varint(&w, GW_IOTMP_PARAMETERS, 7);
    if (how == 1) {
        struct gw_pson_writer *p = gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD);
        gw_pson_put_map(p, 1);
        gw_pson_put_cstr(p, "value");
        gw_pson_put_uint(p, 42);
    } else if (how >= 2) {
        struct gw_pson_writer *p = gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD);
        gw_pson_put_map(p, 1);
        gw_pson_put_cstr(p, how == 2 ? "error" : "message");
        gw_pson_put_cstr(p, "bucket not found");
    }
    const uint8_t *frame;
    size_t len;
    if (gw_iotmp_finish(&w, &frame, &len) != 0)
        abort();
    feed(frame, len);
}

static void act(unsigned a, unsigned arg)
{
    switch (a) {
    case 0: issue_call(arg, true, false); break;
    case 1: issue_call(arg, false, false); break;
    case 2: issue_call(arg, true, true); break;
    case 3: publish_temperature(arg == 3); break;
    case 4: answer_held(arg, false); break;
    case 5: answer_held(arg, true); break;
    case 6:
        if (group_b_present) {
            gw_registry_remove_owner(reg, &group_b);
            group_b_present = false;
        } else {
            add_group_b();
        }
        break;
    case 7:
        if (cur && !cur->closing_async) {
            struct fake *f = cur;
            f->cb.on_close(f->cb.arg, arg & 1 ? GW_ETLS : GW_ECONNRESET, "fake transport: reset");
        }
        break;
    case 8: gw_session_stop(sess); break;
    case 9: (void)gw_session_start(sess); break;
    case 10: next_open = (enum open_mode)arg; break;
    case 11:
        if (cur) {
            static const double f[4] = {0.25, 0.6, 1.1, 2.1};
            cur->pending = (size_t)(f[arg] * (double)send_queue_max);
        }
        break;
    case 12: feed_answer(arg); break;
    case 13:
        if (cur && cur->pending) {
            cur->pending = 0;
            cur->cb.on_drain(cur->cb.arg);
        }
        break;
    default: break;
    }
}

static void drain_transport(void)
{
    if (cur && cur->open && cur->pending) {
        cur->pending = 0;
        cur->cb.on_drain(cur->cb.arg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint64_t steps[16] = {0,    1,    2,    5,     10,    20,    50,     100,
                                       200,  500,  1000, 2000,  5000,  20000, 120000, 400000};
    if (size < 2)
        return 0;
    if (!loop) {
        /* Quiet by default; GW_FUZZ_LOG=1 formats every log line at debug level too (scripts/fuzz
         * sets it and closes the target's stderr), so log arguments are exercised as well. */
        const char *lg = getenv("GW_FUZZ_LOG");
        if (lg && *lg == '1')
            gw_log_set_level(GW_LOG_DEBUG);
        else
            gw_log_level_current = 0;
        if (gw_loop_new(&loop) < 0)
            abort();
    }
    clock_freeze();
    uint8_t h0 = data[0], h1 = data[1];
    data += 2;
    size -= 2;

    static const unsigned kas[4] = {60, 5, 1, 1800};
    auto_auth = h0 & 1;
    max_frame = h0 & 32 ? 1024 : GW_IOTMP_MAX_FRAME_DEFAULT;
    call_on_ready = h0 & 128;
    send_queue_max = h0 & 64 ? 4096 : 1024 * 1024;
    next_open = (enum open_mode)(h1 & 3);
    out_sid_n = 0;
    calls_waiting = 0;
    reentry_budget = 4;
    held_n = 0;
    counter = 0;
    struct gw_session_config cfg = {
        .url = h0 & 16 ? "iotmps://broker.example:25206" : "iotmp://127.0.0.1:25204",
        .user = "alice",
        .device = "pi-gw-1",
        .password = "secret",
        .keepalive_s = kas[(h0 >> 2) & 3],
        .max_frame = max_frame,
        .server_action_layout = h0 & 2 ? GW_SESSION_LAYOUT_EMBEDDED : GW_SESSION_LAYOUT_LINUX,
        .connect_timeout_ms = 3000,
        .backoff_min_ms = 100,
        .backoff_max_ms = 2000,
        .auth_backoff_ms = 10000,
        .send_queue_max = send_queue_max,
    };
    if (gw_registry_new(loop, &reg) < 0)
        abort();
    add_resources();
    if (h1 & 4)
        publish_temperature(false);
    if (gw_session_new(loop, reg, &cfg, &sess) < 0)
        abort();
    gw_session_on_state(sess, on_state, NULL);
    if (gw_session_start(sess) < 0)
        abort();
    step(0); /* on_open (or the refusal) */

    size_t pos = 0;
    while (pos < size) {
        uint8_t o = data[pos++];
        unsigned kind = o >> 6, n = o & 63;
        if (kind <= 1) {
            size_t len = kind == 0 ? n + 1u : (n + 1u) * 32u;
            if (len > size - pos)
                len = size - pos;
            feed(data + pos, len);
            pos += len;
        } else if (kind == 2) {
            if (n & 16)
                drain_transport();
            if (n & 32)
                publish_temperature(false);
            step(steps[n & 15]);
        } else {
            act(n & 15, (n >> 4) & 3);
        }
    }
    step(0);

    /* Teardown: every answer owed must have been given once the session is gone. */
    gw_session_free(sess);
    sess = NULL;
    if (calls_waiting != 0 || cur)
        abort();
    answer_held(3, true);
    gw_loop_drain(loop);
    gw_registry_free(reg);
    reg = NULL;
    group_b_present = false;
    gw_loop_drain(loop);
    step(86400000ull); /* a timer left armed in freed memory fires now (ASan) */
    clock_thaw();
    return 0;
}
