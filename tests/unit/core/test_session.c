/* SPDX-License-Identifier: Apache-2.0 */
/*
 * unit.session: the uplink session (gw/session.h) and the transport URL parser (gw/transport.h)
 * against a scripted IOTMP server on a real loopback TCP socket. The server runs in a thread with
 * blocking sockets and checks the exact frames the session sends (CONNECT fields, answers,
 * server-action layouts); the session runs on the real loop and registry in the test's thread.
 */
#include "gw/error.h"
#include "gw/iotmp.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/registry.h"
#include "gw/session.h"
#include "gw/transport.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- Scripted server (its own thread, blocking sockets) --- */

struct srv_frame {
    uint64_t type;
    uint8_t body[4096];
    size_t len;
    struct gw_iotmp_frame f;
    int parse_rc;
};

static int srv_listen(uint16_t *port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(s, 4), 0);
    socklen_t l = sizeof(a);
    getsockname(s, (struct sockaddr *)&a, &l);
    *port = ntohs(a.sin_port);
    return s;
}

static bool wait_fd(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

static int srv_accept(int ls)
{
    if (!wait_fd(ls, 5000))
        return -1;
    return accept(ls, NULL, NULL);
}

static bool read_exact(int fd, void *buf, size_t n, int ms)
{
    uint8_t *p = buf;
    while (n) {
        if (!wait_fd(fd, ms))
            return false;
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

static bool read_varint(int fd, uint64_t *v, int ms)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        uint8_t b;
        if (!read_exact(fd, &b, 1, ms))
            return false;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* Reads one frame; skips KEEP_ALIVE. False on timeout or close. */
static bool srv_read(int fd, struct srv_frame *fr, int ms)
{
    for (;;) {
        uint64_t len;
        if (!read_varint(fd, &fr->type, ms) || !read_varint(fd, &len, ms) ||
            len > sizeof(fr->body) || !read_exact(fd, fr->body, (size_t)len, ms))
            return false;
        fr->len = (size_t)len;
        if (fr->type == GW_IOTMP_KEEP_ALIVE)
            continue;
        fr->parse_rc = gw_iotmp_parse(&fr->f, fr->type, fr->body, fr->len);
        return true;
    }
}

/* Failures seen by the server thread (Check's asserts belong to the test's thread). */
static char srv_err[512];
#define SRV_CHECK(cond, ...)                                                                      \
    do {                                                                                          \
        if (!(cond) && !srv_err[0])                                                               \
            snprintf(srv_err, sizeof(srv_err), __VA_ARGS__);                                      \
    } while (0)

static void srv_send(int fd, const void *p, size_t n)
{
    SRV_CHECK(send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n, "server send failed");
}

static uint8_t wbuf[8192];

/* Finishes and sends a frame built in wbuf. */
static void srv_finish(int fd, struct gw_iotmp_writer *w)
{
    const uint8_t *frame;
    size_t len;
    int rc = gw_iotmp_finish(w, &frame, &len);
    SRV_CHECK(rc == 0, "server frame encoding failed");
    if (rc == 0)
        srv_send(fd, frame, len);
}

static void srv_answer(int fd, uint64_t type, uint16_t sid, int code, const char *error)
{
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, wbuf, sizeof(wbuf), type);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    if (code)
        gw_iotmp_put_varint(&w, GW_IOTMP_PARAMETERS, (uint64_t)code);
    if (error) {
        struct gw_pson_writer *p = gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD);
        gw_pson_put_map(p, 1);
        gw_pson_put_cstr(p, "error");
        gw_pson_put_cstr(p, error);
    }
    srv_finish(fd, &w);
}

/* A request with a string resource (NULL = none) and optional sid. */
static void srv_request(int fd, uint64_t type, uint16_t sid, const char *res)
{
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, wbuf, sizeof(wbuf), type);
    if (sid)
        gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    if (res)
        gw_pson_put_cstr(gw_iotmp_put_pson(&w, GW_IOTMP_RESOURCE), res);
    srv_finish(fd, &w);
}

static uint16_t frame_sid(const struct srv_frame *fr)
{
    uint16_t sid = 0;
    gw_iotmp_get_stream_id(&fr->f, &sid);
    return sid;
}

/* PAYLOAD decoded as a value (null if absent). */
static struct gw_value frame_payload(const struct srv_frame *fr)
{
    struct gw_value v = GW_VALUE_INIT_NULL;
    if (gw_iotmp_has(&fr->f, GW_IOTMP_PAYLOAD))
        gw_value_decode(fr->f.field[GW_IOTMP_PAYLOAD].p, fr->f.field[GW_IOTMP_PAYLOAD].len, &v);
    return v;
}

static bool payload_error_is(const struct srv_frame *fr, const char *text)
{
    struct gw_value v = frame_payload(fr);
    const struct gw_value *e = gw_value_map_get(&v, "error");
    bool ok = e && e->type == GW_VALUE_STRING && strcmp(e->s.p, text) == 0;
    if (!ok)
        fprintf(stderr, "payload error is \"%s\", expected \"%s\"\n",
                e && e->type == GW_VALUE_STRING ? e->s.p : "(none)", text);
    gw_value_fini(&v);
    return ok;
}

/* --- The session side --- */

static struct gw_loop *loop;
static struct gw_registry *reg;
static struct gw_session *sess;
static atomic_int srv_done;     /* the server script finished */
static atomic_int noop_runs;
static int last_state, last_reason, ready_count;
static uint16_t port;

static int run_noop(void *ctx, struct gw_call *call)
{
    (void)ctx;
    atomic_fetch_add(&noop_runs, 1);
    gw_call_reply(call, NULL);
    return 0;
}

static int run_temp(void *ctx, struct gw_call *call)
{
    (void)ctx;
    struct gw_value v = gw_value_map();
    *gw_value_map_set(&v, "celsius", 7) = gw_value_double(23.5);
    gw_call_reply(call, &v);
    return 0;
}

static atomic_int inbox_value;

static int run_inbox(void *ctx, struct gw_call *call)
{
    (void)ctx;
    const struct gw_value *in = gw_call_input(call);
    if (in->type == GW_VALUE_UINT)
        atomic_store(&inbox_value, (int)in->u);
    gw_call_reply(call, NULL);
    return 0;
}

static int run_big(void *ctx, struct gw_call *call)
{
    (void)ctx;
    static char blob[16384];
    memset(blob, 'x', sizeof(blob));
    struct gw_value v = gw_value_str(blob, sizeof(blob));
    gw_call_reply(call, &v);
    return 0;
}

static unsigned max_calls; /* start_session's max_calls_in (0: the default) */

/* Holds its calls (answered when the server script sets hold_release; see tick()). */
static struct gw_call *held[16];
static int n_held;
static atomic_int hold_release;

static int run_hold(void *ctx, struct gw_call *call)
{
    (void)ctx;
    ck_assert_int_lt(n_held, 16);
    held[n_held++] = call;
    return 0;
}

static void on_state(void *arg, enum gw_session_state st, int reason)
{
    (void)arg;
    last_state = (int)st;
    if (reason)
        last_reason = reason;
    if (st == GW_SESSION_READY)
        ready_count++;
}

static struct gw_timer *watch_timer;
static uint64_t deadline;

static void tick(void *arg)
{
    (void)arg;
    if (atomic_load(&hold_release) && n_held) {
        for (int i = 0; i < n_held; i++)
            gw_call_reply(held[i], NULL);
        n_held = 0;
    }
    if (atomic_load(&srv_done) || gw_loop_now_ms() > deadline) {
        gw_loop_stop(loop);
        return;
    }
    gw_timer_start(watch_timer, 5);
}

/* Runs the loop until the server thread sets srv_done (or 8 s pass). */
static void run_until_done(void)
{
    deadline = gw_loop_now_ms() + 8000;
    watch_timer = gw_timer_new(loop, tick, NULL);
    gw_timer_start(watch_timer, 5);
    gw_loop_run(loop);
    gw_timer_free(watch_timer);
    watch_timer = NULL;
    ck_assert_msg(atomic_load(&srv_done), "the server script did not finish in time");
}

/* Runs the loop for ms more (to let the session react). */
static void run_for(unsigned ms)
{
    atomic_store(&srv_done, 0);
    deadline = gw_loop_now_ms() + ms;
    watch_timer = gw_timer_new(loop, tick, NULL);
    gw_timer_start(watch_timer, 5);
    gw_loop_run(loop);
    gw_timer_free(watch_timer);
    watch_timer = NULL;
}

static void setup(void)
{
    gw_log_set_level(GW_LOG_WARN);
    atomic_store(&srv_done, 0);
    atomic_store(&noop_runs, 0);
    last_state = last_reason = ready_count = 0;
    ck_assert_int_eq(gw_loop_new(&loop), 0);
    ck_assert_int_eq(gw_registry_new(loop, &reg), 0);
    struct gw_resource_desc d1 = {.name = "noop", .fn = GW_FN_RUN, .run = run_noop};
    struct gw_resource_desc d2 = {.name = "sensors/temp", .fn = GW_FN_OUTPUT, .run = run_temp};
    ck_assert_int_eq(gw_registry_add(reg, &d1, NULL), 0);
    ck_assert_int_eq(gw_registry_add(reg, &d2, NULL), 0);
    struct gw_resource_desc d3 = {.name = "big", .fn = GW_FN_OUTPUT, .run = run_big};
    ck_assert_int_eq(gw_registry_add(reg, &d3, NULL), 0);
    struct gw_resource_desc d4 = {.name = "inbox", .fn = GW_FN_INPUT, .run = run_inbox};
    ck_assert_int_eq(gw_registry_add(reg, &d4, NULL), 0);
    atomic_store(&inbox_value, 0);
    struct gw_resource_desc d5 = {.name = "hold", .fn = GW_FN_RUN, .run = run_hold};
    ck_assert_int_eq(gw_registry_add(reg, &d5, NULL), 0);
    n_held = 0;
    atomic_store(&hold_release, 0);
    max_calls = 0;
}

static void teardown(void)
{
    gw_session_free(sess);
    sess = NULL;
    gw_registry_free(reg);
    gw_loop_free(loop);
}

static size_t queue_max;
static unsigned reset_s, bmin = 50, bmax = 100;

static void start_session(unsigned ka, enum gw_session_layout layout)
{
    char url[64];
    snprintf(url, sizeof(url), "iotmp://127.0.0.1:%u", (unsigned)port);
    struct gw_session_config cfg = {
        .url = url, .user = "u", .device = "d", .password = "p", .keepalive_s = ka,
        .server_action_layout = layout, .backoff_min_ms = bmin, .backoff_max_ms = bmax,
        .send_queue_max = queue_max, .backoff_reset_s = reset_s, .max_calls_in = max_calls,
    };
    ck_assert_int_eq(gw_session_new(loop, reg, &cfg, &sess), 0);
    gw_session_on_state(sess, on_state, NULL);
    ck_assert_int_eq(gw_session_start(sess), 0);
}

/* The server thread: accepts and runs a script. */
static int listen_fd;
static void (*script)(void);
static pthread_t srv_thread;

static void *srv_main(void *arg)
{
    (void)arg;
    script();
    atomic_store(&srv_done, 1);
    return NULL;
}

static void srv_start(void (*fn)(void))
{
    srv_err[0] = '\0';
    listen_fd = srv_listen(&port);
    script = fn;
    ck_assert_int_eq(pthread_create(&srv_thread, NULL, srv_main, NULL), 0);
}

static void srv_join(void)
{
    pthread_join(srv_thread, NULL);
    close(listen_fd);
    ck_assert_msg(srv_err[0] == '\0', "server: %s", srv_err);
}

/* Accepts and checks a CONNECT; returns the connection (or -1) and its stream id. */
static int accept_connect(bool expect_ka, unsigned ka, uint16_t *sid)
{
    int c = srv_accept(listen_fd);
    SRV_CHECK(c >= 0, "no connection");
    if (c < 0)
        return -1;
    struct srv_frame fr;
    bool got = srv_read(c, &fr, 3000);
    SRV_CHECK(got && fr.type == GW_IOTMP_CONNECT, "first frame is not CONNECT");
    if (!got)
        return c;
    *sid = frame_sid(&fr);
    SRV_CHECK(*sid != 0, "CONNECT stream id is 0");
    SRV_CHECK(gw_iotmp_has(&fr.f, GW_IOTMP_PARAMETERS) == expect_ka,
              "CONNECT PARAMETERS present=%d, expected %d",
              gw_iotmp_has(&fr.f, GW_IOTMP_PARAMETERS), expect_ka);
    if (expect_ka && gw_iotmp_has(&fr.f, GW_IOTMP_PARAMETERS)) {
        struct gw_value v = GW_VALUE_INIT_NULL;
        gw_value_decode(fr.f.field[2].p, fr.f.field[2].len, &v);
        const struct gw_value *k = gw_value_map_get(&v, "ka");
        SRV_CHECK(k && k->type == GW_VALUE_UINT && k->u == ka, "CONNECT ka is not %u", ka);
        SRV_CHECK(gw_value_count(&v) == 1, "CONNECT PARAMETERS has more than ka");
        gw_value_fini(&v);
    }
    struct gw_value p = frame_payload(&fr);
    SRV_CHECK(p.type == GW_VALUE_ARRAY && p.c.n == 3 && p.c.items[0].type == GW_VALUE_STRING &&
                  strcmp(p.c.items[0].s.p, "u") == 0 && strcmp(p.c.items[1].s.p, "d") == 0 &&
                  strcmp(p.c.items[2].s.p, "p") == 0,
              "CONNECT PAYLOAD is not [\"u\",\"d\",\"p\"]");
    gw_value_fini(&p);
    return c;
}

/* Reads frames until one is an answer (OK/ERROR) or STREAM_DATA; false on timeout. */
/* accept_connect() and the OK to the CONNECT: a ready session (or -1). */
static int accept_ready(bool expect_ka, unsigned ka)
{
    uint16_t sid;
    int c = accept_connect(expect_ka, ka, &sid);
    if (c >= 0)
        srv_answer(c, GW_IOTMP_OK, sid, 0, NULL);
    return c;
}

static bool read_answer(int c, struct srv_frame *fr)
{
    for (;;) {
        if (!srv_read(c, fr, 3000))
            return false;
        if (fr->type == GW_IOTMP_OK || fr->type == GW_IOTMP_ERROR)
            return true;
    }
}

/* --- Tests --- */

START_TEST(url_parse)
{
    struct gw_transport_url u;
    const char *why;
    ck_assert_int_eq(gw_transport_url_parse("iotmp://h.example", &u, &why), 0);
    ck_assert_int_eq(u.kind, GW_TRANSPORT_TCP);
    ck_assert_int_eq(u.port, 25204);
    ck_assert_str_eq(u.host, "h.example");
    ck_assert_int_eq(gw_transport_url_parse("iotmps://h:1234", &u, &why), 0);
    ck_assert_int_eq(u.kind, GW_TRANSPORT_TLS);
    ck_assert_int_eq(u.port, 1234);
    ck_assert_int_eq(gw_transport_url_parse("iotmps://h", &u, &why), 0);
    ck_assert_int_eq(u.port, 25206);
    ck_assert_int_eq(gw_transport_url_parse("ws://h", &u, &why), 0);
    ck_assert_int_eq(u.port, 80);
    ck_assert_str_eq(u.path, "/iotmp");
    ck_assert_int_eq(gw_transport_url_parse("wss://[::1]:8443/x/y", &u, &why), 0);
    ck_assert_int_eq(u.kind, GW_TRANSPORT_WSS);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_int_eq(u.port, 8443);
    ck_assert_str_eq(u.path, "/x/y");
    ck_assert_int_eq(gw_transport_url_parse("http://h", &u, &why), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(why, "scheme"));
    ck_assert_int_eq(gw_transport_url_parse("iotmp://h:0", &u, &why), GW_EINVAL);
    ck_assert_int_eq(gw_transport_url_parse("iotmp://h:70000", &u, &why), GW_EINVAL);
    ck_assert_int_eq(gw_transport_url_parse("iotmp://h:x", &u, &why), GW_EINVAL);
    ck_assert_int_eq(gw_transport_url_parse("iotmp://:25204", &u, &why), GW_EINVAL);
    ck_assert_int_eq(gw_transport_url_parse("iotmp://h/path", &u, &why), GW_EINVAL);
    ck_assert_int_eq(gw_transport_url_parse("iotmp://[::1", &u, &why), GW_EINVAL);
    ck_assert_int_eq(gw_transport_url_parse("", &u, &why), GW_EINVAL);
}
END_TEST

START_TEST(config_refused)
{
    struct gw_session_config cfg = {.url = "iotmp://h", .user = "u", .device = "d",
                                    .password = "p"};
    struct gw_session *s = NULL;
    cfg.insecure = true;
    ck_assert_int_eq(gw_session_new(loop, reg, &cfg, &s), GW_EINVAL); /* insecure on TCP */
    cfg.insecure = false;
    cfg.keepalive_s = 1801;
    ck_assert_int_eq(gw_session_new(loop, reg, &cfg, &s), GW_EINVAL);
    cfg.keepalive_s = 0;
    cfg.device = NULL;
    ck_assert_int_eq(gw_session_new(loop, reg, &cfg, &s), GW_EINVAL);
    cfg.device = "d";
    cfg.url = "mqtt://h";
    ck_assert_int_eq(gw_session_new(loop, reg, &cfg, &s), GW_EINVAL);
    ck_assert_ptr_null(s);
}
END_TEST

static void script_requests(void)
{
    int c = accept_ready(false, 60);
    if (c < 0)
        return;
    struct srv_frame fr;

    /* RUN without stream id: runs, no answer. */
    srv_request(c, GW_IOTMP_RUN, 0, "noop");

    /* RUN with the resource as an array of segments. */
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, wbuf, sizeof(wbuf), GW_IOTMP_RUN);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 7);
    struct gw_pson_writer *p = gw_iotmp_put_pson(&w, GW_IOTMP_RESOURCE);
    gw_pson_put_array(p, 2);
    gw_pson_put_cstr(p, "sensors");
    gw_pson_put_cstr(p, "temp");
    srv_finish(c, &w);
    SRV_CHECK(read_answer(c, &fr), "no answer to RUN 7");
    SRV_CHECK(fr.type == GW_IOTMP_OK && frame_sid(&fr) == 7,
              "RUN [sensors,temp]: the first answer is not OK 7 (type %llu sid %u): the RUN "
              "without stream id was answered?",
              (unsigned long long)fr.type, frame_sid(&fr));
    struct gw_value v = frame_payload(&fr);
    const struct gw_value *cel = gw_value_map_get(&v, "celsius");
    SRV_CHECK(cel && cel->type == GW_VALUE_DOUBLE && cel->d == 23.5, "wrong RUN output");
    gw_value_fini(&v);

    /* Unknown resource. */
    srv_request(c, GW_IOTMP_RUN, 8, "x");
    SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_ERROR && frame_sid(&fr) == 8,
              "unknown resource: no ERROR 8");
    SRV_CHECK(payload_error_is(&fr, "unknown resource \"x\""), "unknown resource text");

    /* STOP_STREAM of an unknown stream. */
    srv_request(c, GW_IOTMP_STOP_STREAM, 9, NULL);
    SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_ERROR && frame_sid(&fr) == 9,
              "STOP_STREAM unknown: no ERROR 9");

    /* START_STREAM with a bare-number interval: OK, then a sample at once. */
    gw_iotmp_writer_init(&w, wbuf, sizeof(wbuf), GW_IOTMP_START_STREAM);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 10);
    gw_iotmp_put_varint(&w, GW_IOTMP_PARAMETERS, 50);
    gw_pson_put_cstr(gw_iotmp_put_pson(&w, GW_IOTMP_RESOURCE), "sensors/temp");
    srv_finish(c, &w);
    SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_OK && frame_sid(&fr) == 10,
              "START_STREAM: no OK 10");
    SRV_CHECK(srv_read(c, &fr, 3000) && fr.type == GW_IOTMP_STREAM_DATA && frame_sid(&fr) == 10,
              "START_STREAM: no STREAM_DATA 10");
    srv_request(c, GW_IOTMP_STOP_STREAM, 10, NULL);
    SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_OK && frame_sid(&fr) == 10,
              "STOP_STREAM 10: no OK");

    /* An unknown message type is ignored: the next answer is the DESCRIBE's. */
    srv_request(c, 0x1f, 11, "noop");
    srv_request(c, GW_IOTMP_DESCRIBE, 12, NULL);
    SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_OK && frame_sid(&fr) == 12,
              "DESCRIBE 12: no OK (unknown type answered?)");
    v = frame_payload(&fr);
    const struct gw_value *noop = gw_value_map_get(&v, "noop");
    SRV_CHECK(noop && gw_value_map_get(noop, "fn") && gw_value_map_get(noop, "id"),
              "DESCRIBE all lacks noop fn/id");
    gw_value_fini(&v);

    /* A request with an unknown wire type after its stream id: ERROR, stream stays aligned. */
    static const uint8_t bad[] = {GW_IOTMP_RUN, 5, 0x08, 13, 0x23, 0x01, 0x02};
    srv_send(c, bad, sizeof(bad));
    SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_ERROR && frame_sid(&fr) == 13,
              "unknown wire type: no ERROR 13");
    srv_request(c, GW_IOTMP_RUN, 14, "noop");
    SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_OK && frame_sid(&fr) == 14,
              "after the bad frame: no OK 14");

    /* STREAM_DATA on an open stream is input for its resource; on an unknown one, ignored. */
    srv_request(c, GW_IOTMP_START_STREAM, 15, "inbox");
    SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_OK && frame_sid(&fr) == 15,
              "START_STREAM inbox: no OK 15");
    gw_iotmp_writer_init(&w, wbuf, sizeof(wbuf), GW_IOTMP_STREAM_DATA);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 15);
    gw_pson_put_uint(gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD), 42);
    srv_finish(c, &w);
    gw_iotmp_writer_init(&w, wbuf, sizeof(wbuf), GW_IOTMP_STREAM_DATA);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 99);
    gw_pson_put_uint(gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD), 7);
    srv_finish(c, &w);
    srv_request(c, GW_IOTMP_RUN, 16, "noop");
    SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_OK && frame_sid(&fr) == 16,
              "after STREAM_DATA: no OK 16 (was STREAM_DATA answered?)");
    close(c);
}

START_TEST(requests)
{
    srv_start(script_requests);
    start_session(60, GW_SESSION_LAYOUT_LINUX);
    run_until_done();
    srv_join();
    ck_assert_int_eq(atomic_load(&noop_runs), 3); /* the RUN without stream id ran too */
    ck_assert_int_eq(atomic_load(&inbox_value), 42);
    ck_assert_int_eq(ready_count, 1);
}
END_TEST

static void script_ka_refused(void)
{
    uint16_t sid;
    int c = accept_connect(true, 30, &sid);
    if (c < 0)
        return;
    srv_answer(c, GW_IOTMP_ERROR, sid, 3, NULL);
    struct srv_frame fr;
    SRV_CHECK(!srv_read(c, &fr, 2000), "the session kept the link after ERROR 3");
    close(c);
    int c2 = accept_ready(false, 0); /* at once, without "ka" */
    if (c2 < 0)
        return;
    usleep(100 * 1000);
    close(c2);
}

START_TEST(keepalive_refused)
{
    srv_start(script_ka_refused);
    start_session(30, GW_SESSION_LAYOUT_LINUX);
    run_until_done();
    srv_join();
    ck_assert_int_eq(ready_count, 1);
}
END_TEST

/* --- Outbound calls --- */

static int done_count, done_rc;
static char done_msg[128];
static bool ready_seen;

static void on_done(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    (void)arg;
    (void)out;
    done_count++;
    done_rc = rc;
    snprintf(done_msg, sizeof(done_msg), "%s", msg ? msg : "");
}

static void wait_ready(void)
{
    for (int i = 0; i < 100 && gw_session_state(sess) != GW_SESSION_READY; i++)
        run_for(20);
    ck_assert_int_eq(gw_session_state(sess), GW_SESSION_READY);
    ready_seen = true;
}

static enum gw_session_layout layout_expected;

static void script_layout(void)
{
    int c = accept_ready(false, 0);
    if (c < 0)
        return;
    struct srv_frame fr;
    for (int i = 0; i < 2; i++) {
        SRV_CHECK(srv_read(c, &fr, 3000) && fr.type == GW_IOTMP_RUN, "no RUN %d", i);
        uint16_t rsid = frame_sid(&fr);
        SRV_CHECK((i == 0) == (rsid != 0), "call %d: stream id %u (fire-and-forget has none)", i,
                  rsid);
        const struct gw_iotmp_field *act, *tgt;
        if (layout_expected == GW_SESSION_LAYOUT_LINUX) {
            act = &fr.f.field[GW_IOTMP_RESOURCE];
            tgt = &fr.f.field[GW_IOTMP_PARAMETERS];
        } else {
            act = &fr.f.field[GW_IOTMP_PARAMETERS];
            tgt = &fr.f.field[GW_IOTMP_RESOURCE];
        }
        SRV_CHECK(act->wire == GW_IOTMP_WIRE_VARINT && act->u == GW_IOTMP_WRITE_BUCKET,
                  "action code not in the expected field");
        struct gw_value t = GW_VALUE_INIT_NULL;
        gw_value_decode(tgt->p, tgt->len, &t);
        SRV_CHECK(tgt->wire == GW_IOTMP_WIRE_PSON && t.type == GW_VALUE_STRING &&
                      strcmp(t.s.p, "b1") == 0,
                  "target not in the expected field");
        gw_value_fini(&t);
        struct gw_value pl = frame_payload(&fr);
        const struct gw_value *x = gw_value_map_get(&pl, "v");
        SRV_CHECK(x && x->type == GW_VALUE_UINT && x->u == 1, "payload lost");
        gw_value_fini(&pl);
        if (rsid)
            srv_answer(c, GW_IOTMP_ERROR, rsid, 0, "nope");
    }
    usleep(200 * 1000);
    close(c);
}

static void layout_test(enum gw_session_layout layout)
{
    layout_expected = layout;
    done_count = 0;
    srv_start(script_layout);
    start_session(60, layout);
    wait_ready();
    struct gw_value target = gw_value_cstr("b1");
    struct gw_value payload = gw_value_map();
    *gw_value_map_set(&payload, "v", 1) = gw_value_uint(1);
    ck_assert_int_eq(gw_session_call(sess, GW_IOTMP_WRITE_BUCKET, &target, &payload, true, 2000,
                                     on_done, NULL),
                     0);
    ck_assert_int_eq(done_count, 0); /* never from inside the call */
    ck_assert_int_eq(gw_session_call(sess, GW_IOTMP_WRITE_BUCKET, &target, &payload, false, 0,
                                     on_done, NULL),
                     0);
    gw_value_fini(&target);
    gw_value_fini(&payload);
    run_until_done();
    srv_join();
    ck_assert_int_eq(done_count, 1);
    ck_assert_int_eq(done_rc, GW_EPEER);
    ck_assert_str_eq(done_msg, "nope");
}

START_TEST(layout_linux)
{
    layout_test(GW_SESSION_LAYOUT_LINUX);
}
END_TEST

START_TEST(layout_embedded)
{
    layout_test(GW_SESSION_LAYOUT_EMBEDDED);
}
END_TEST

static void script_late(void)
{
    int c = accept_ready(false, 0);
    if (c < 0)
        return;
    struct srv_frame fr;
    SRV_CHECK(srv_read(c, &fr, 3000) && fr.type == GW_IOTMP_RUN, "no RUN");
    usleep(400 * 1000); /* past the call's 150 ms timeout */
    srv_answer(c, GW_IOTMP_OK, frame_sid(&fr), 0, NULL);
    usleep(200 * 1000);
    close(c);
}

START_TEST(timeout_then_late_answer)
{
    done_count = 0;
    srv_start(script_late);
    start_session(60, GW_SESSION_LAYOUT_LINUX);
    wait_ready();
    struct gw_value target = gw_value_cstr("p1");
    ck_assert_int_eq(gw_session_call(sess, GW_IOTMP_READ_DEVICE_PROPERTY, &target, NULL, true,
                                     150, on_done, NULL),
                     0);
    gw_value_fini(&target);
    run_until_done();
    srv_join();
    ck_assert_int_eq(done_count, 1);
    ck_assert_int_eq(done_rc, GW_ETIMEDOUT);
    struct gw_session_stats st;
    gw_session_get_stats(sess, &st);
    ck_assert_uint_ge(st.frames_ignored, 1); /* the late OK */
    ck_assert_uint_eq(st.calls_pending, 0);
}
END_TEST

static void script_drop(void)
{
    int c = accept_ready(false, 0);
    if (c < 0)
        return;
    struct srv_frame fr;
    for (int i = 0; i < 10; i++)
        SRV_CHECK(srv_read(c, &fr, 3000) && fr.type == GW_IOTMP_RUN, "no RUN %d", i);
    close(c); /* cut the link with 10 calls in flight */
    int c2 = srv_accept(listen_fd); /* the reconnect */
    SRV_CHECK(c2 >= 0, "no reconnect");
    if (c2 >= 0) {
        usleep(100 * 1000);
        close(c2);
    }
}

START_TEST(link_drop_fails_calls)
{
    done_count = 0;
    srv_start(script_drop);
    start_session(60, GW_SESSION_LAYOUT_LINUX);
    wait_ready();
    struct gw_value target = gw_value_cstr("b1");
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(gw_session_call(sess, GW_IOTMP_WRITE_BUCKET, &target, NULL, true, 5000,
                                         on_done, NULL),
                         0);
    gw_value_fini(&target);
    run_until_done();
    srv_join();
    ck_assert_int_eq(done_count, 10);
    ck_assert_int_eq(done_rc, GW_ELINK);
    /* Not ready: new calls are refused at once. */
    if (gw_session_state(sess) != GW_SESSION_READY)
        ck_assert_int_eq(gw_session_call(sess, GW_IOTMP_WRITE_BUCKET, NULL, NULL, true, 100,
                                         on_done, NULL),
                         GW_ENOTCONN);
}
END_TEST

static void script_big(void)
{
    int c = accept_ready(false, 0);
    if (c < 0)
        return;
    /* RUN with a body of 300000 bytes announced: over the 256 KiB limit. */
    static const uint8_t hdr[] = {GW_IOTMP_RUN, 0xe0, 0xa7, 0x12};
    srv_send(c, hdr, sizeof(hdr));
    struct srv_frame fr;
    SRV_CHECK(!srv_read(c, &fr, 3000), "the session did not close on an oversized frame");
    close(c);
}

START_TEST(oversized_frame_closes)
{
    srv_start(script_big);
    start_session(60, GW_SESSION_LAYOUT_LINUX);
    run_until_done();
    srv_join();
    ck_assert_int_eq(last_reason, GW_EFRAME_SIZE);
}
END_TEST

static atomic_int srv_samples;

static void script_flood(void)
{
    uint16_t sid;
    int c = accept_connect(false, 0, &sid);
    if (c < 0)
        return;
    int small = 4096;
    setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    srv_answer(c, GW_IOTMP_OK, sid, 0, NULL);
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, wbuf, sizeof(wbuf), GW_IOTMP_START_STREAM);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 21);
    struct gw_pson_writer *p = gw_iotmp_put_pson(&w, GW_IOTMP_PARAMETERS);
    gw_pson_put_map(p, 1);
    gw_pson_put_cstr(p, "interval");
    gw_pson_put_uint(p, 1);
    gw_pson_put_cstr(gw_iotmp_put_pson(&w, GW_IOTMP_RESOURCE), "big");
    srv_finish(c, &w);
    /* Do not read for 1.5 s: 16 KiB samples every ms pile up against a 64 KiB queue. */
    usleep(1500 * 1000);
    /* Then read what arrives for 500 ms (bodies over the helper's buffer: skip them). */
    uint64_t end = gw_loop_now_ms() + 500;
    int n = 0;
    while (gw_loop_now_ms() < end) {
        uint64_t type, len;
        if (!read_varint(c, &type, 1000) || !read_varint(c, &len, 1000))
            break;
        static uint8_t sink[65536];
        if (len > sizeof(sink) || !read_exact(c, sink, (size_t)len, 1000))
            break;
        if (type == GW_IOTMP_STREAM_DATA)
            n++;
    }
    atomic_store(&srv_samples, n);
    close(c);
}

START_TEST(flow_control_coalesces)
{
    queue_max = 64 * 1024;
    srv_start(script_flood);
    start_session(60, GW_SESSION_LAYOUT_LINUX);
    run_until_done();
    srv_join();
    queue_max = 0;
    struct gw_session_stats st;
    gw_session_get_stats(sess, &st);
    ck_assert_uint_gt(st.samples_coalesced, 0);
    ck_assert_uint_eq(st.sessions, 1);
    ck_assert_int_gt(atomic_load(&srv_samples), 0); /* samples flow again once it reads */
    /* Fewer samples than ticks reached the wire: the rest were replaced or skipped. */
    ck_assert_uint_lt(st.stream_samples, 2000);
}
END_TEST

static atomic_uint backoffs[8];

static void script_backoff(void)
{
    for (int i = 0; i < 5; i++) {
        int c = accept_ready(false, 0);
        if (c < 0)
            return;
        /* sessions 0-2 end at once; session 3 lasts 1.2 s (over backoff_reset_s = 1) */
        usleep(i == 3 ? 1200 * 1000 : 50 * 1000);
        close(c);
    }
}

static void on_state_backoff(void *arg, enum gw_session_state st, int reason)
{
    (void)arg;
    (void)reason;
    if (st == GW_SESSION_BACKOFF) {
        struct gw_session_stats s;
        gw_session_get_stats(sess, &s);
        unsigned i = (unsigned)(s.link_losses - 1);
        if (i < 8)
            atomic_store(&backoffs[i], (unsigned)s.last_backoff_ms);
    }
}

START_TEST(backoff_doubles_and_resets)
{
    reset_s = 1;
    bmin = 50;
    bmax = 1000;
    srv_start(script_backoff);
    start_session(60, GW_SESSION_LAYOUT_LINUX);
    gw_session_on_state(sess, on_state_backoff, NULL);
    run_until_done();
    run_for(100);
    srv_join();
    reset_s = 0;
    bmax = 100;
    unsigned expect[] = {50, 100, 200, 50}; /* the 4th follows the session that lasted */
    for (int i = 0; i < 4; i++) {
        unsigned b = atomic_load(&backoffs[i]);
        ck_assert_msg(b >= expect[i] * 8 / 10 && b <= expect[i] * 12 / 10,
                      "back-off %d: %u ms, expected %u +-20 %%", i, b, expect[i]);
    }
}
END_TEST

/* uplink.max_calls: 4 calls held, the 5th and 6th RUN refused at once with ERROR 429, a RUN
 * without stream id dropped; once the held calls are answered, RUNs run again. */
static void script_busy(void)
{
    int c = accept_ready(false, 60);
    if (c < 0)
        return;
    struct srv_frame fr;
    for (uint16_t i = 0; i < 6; i++)
        srv_request(c, GW_IOTMP_RUN, (uint16_t)(20 + i), "hold");
    srv_request(c, GW_IOTMP_RUN, 0, "noop"); /* no answer wanted: dropped */
    for (uint16_t sid = 24; sid < 26; sid++) {
        uint64_t code = 0;
        SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_ERROR && frame_sid(&fr) == sid,
                  "RUN %u beyond max_calls: no ERROR %u (type %llu sid %u)", sid, sid,
                  (unsigned long long)fr.type, frame_sid(&fr));
        SRV_CHECK(gw_iotmp_get_uint(&fr.f, GW_IOTMP_PARAMETERS, &code) == 0 && code == 429,
                  "ERROR %u: code %llu, expected 429", sid, (unsigned long long)code);
        SRV_CHECK(payload_error_is(&fr, "busy: 4 calls are running (uplink.max_calls); \"hold\" "
                                        "not run"),
                  "ERROR %u text", sid);
    }
    atomic_store(&hold_release, 1);
    for (uint16_t sid = 20; sid < 24; sid++)
        SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_OK && frame_sid(&fr) == sid,
                  "held RUN %u: no OK after the release (type %llu sid %u)", sid,
                  (unsigned long long)fr.type, frame_sid(&fr));
    srv_request(c, GW_IOTMP_RUN, 30, "noop");
    SRV_CHECK(read_answer(c, &fr) && fr.type == GW_IOTMP_OK && frame_sid(&fr) == 30,
              "after the release: no OK 30");
    close(c);
}

START_TEST(max_calls_refuses_beyond)
{
    max_calls = 4;
    srv_start(script_busy);
    start_session(60, GW_SESSION_LAYOUT_LINUX);
    run_until_done();
    srv_join();
    struct gw_session_stats st;
    gw_session_get_stats(sess, &st);
    ck_assert_uint_eq(st.calls_refused, 3);
    ck_assert_uint_eq(st.calls_in, 5);
    ck_assert_int_eq(atomic_load(&noop_runs), 1); /* only RUN 30: the dropped one never ran */
}
END_TEST

static Suite *session_suite(void)
{
    Suite *s = suite_create("session");
    TCase *tc = tcase_create("session");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, url_parse);
    tcase_add_test(tc, config_refused);
    tcase_add_test(tc, requests);
    tcase_add_test(tc, keepalive_refused);
    tcase_add_test(tc, layout_linux);
    tcase_add_test(tc, layout_embedded);
    tcase_add_test(tc, timeout_then_late_answer);
    tcase_add_test(tc, link_drop_fails_calls);
    tcase_add_test(tc, oversized_frame_closes);
    tcase_add_test(tc, flow_control_coalesces);
    tcase_add_test(tc, backoff_doubles_and_resets);
    tcase_add_test(tc, max_calls_refuses_beyond);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(session_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
