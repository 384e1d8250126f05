/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests of iotmp-broker on its own (CTest unit.broker). Each test starts a real broker process
 * with port 0 everywhere, a temporary credentials file and a temporary SQLite file, reads the
 * ready line, and drives it over real sockets: raw TCP "devices" built with gw_codec, a minimal
 * HTTP/1.1 client for REST and control, OpenSSL for raw TLS, and a small RFC 6455 client for ws
 * and wss (certificate made by the openssl command line). Payload JSON is encoded with the
 * project's value tree (gw/value.h + gw/json.h), not with the broker's own code.
 */
#include "gw/error.h"
#include "gw/iotmp.h"
#include "gw/json.h"
#include "gw/pson.h"
#include "gw/value.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* --- The broker process --- */

static struct {
    pid_t pid;
    int tcp, tls, http, https;
    char dir[64];
    char cert[128], key[128];
} B;

/* Starts the broker with the common arguments plus extra ones (NULL-terminated). */
static void broker_start(const char *first, ...)
{
    if (!B.dir[0]) {
        snprintf(B.dir, sizeof B.dir, "/tmp/gw_broker_test.XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(B.dir));
    }
    char creds[128], db[128], log[128];
    snprintf(creds, sizeof creds, "%s/credentials", B.dir);
    snprintf(db, sizeof db, "%s/state.db", B.dir);
    snprintf(log, sizeof log, "%s/broker.log", B.dir);
    FILE *f = fopen(creds, "w");
    ck_assert_ptr_nonnull(f);
    fputs("# user device password\nu1 dev1 pw1\nu1 dev2 pw2\nu1 dev3 pw3\nu2 dev1 pw4\n", f);
    for (int i = 0; i < 1000; i++)
        fprintf(f, "load d%04d p%04d\n", i, i);
    fclose(f);

    const char *argv[40];
    int n = 0;
    argv[n++] = GW_BROKER_BIN;
    argv[n++] = "--tcp-port";
    argv[n++] = "0";
    argv[n++] = "--http-port";
    argv[n++] = "0";
    argv[n++] = "--credentials";
    argv[n++] = creds;
    argv[n++] = "--db";
    argv[n++] = db;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && n < 38; a = va_arg(ap, const char *))
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;

    int out[2];
    ck_assert_int_eq(pipe(out), 0);
    B.pid = fork();
    ck_assert_int_ge(B.pid, 0);
    if (B.pid == 0) {
        dup2(out[1], 1);
        int lf = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (lf >= 0)
            dup2(lf, 2);
        close(out[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    char line[256];
    size_t len = 0;
    struct pollfd p = {.fd = out[0], .events = POLLIN};
    while (len < sizeof line - 1 && poll(&p, 1, 10000) == 1) {
        ssize_t r = read(out[0], line + len, 1);
        if (r <= 0)
            break;
        if (line[len++] == '\n')
            break;
    }
    line[len] = 0;
    close(out[0]);
    ck_assert_msg(sscanf(line, "iotmp-broker ready tcp=%d tls=%d http=%d https=%d", &B.tcp,
                         &B.tls, &B.http, &B.https) == 4,
                  "no ready line from the broker (got \"%s\"), see %s", line, log);
    ck_assert_int_gt(B.tcp, 0);
    ck_assert_int_gt(B.http, 0);
}

static void broker_stop(void)
{
    if (B.pid <= 0)
        return;
    kill(B.pid, SIGTERM);
    int st = 0;
    ck_assert_int_eq(waitpid(B.pid, &st, 0), B.pid);
    B.pid = 0;
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "broker did not stop cleanly (status 0x%x), see %s/broker.log", st, B.dir);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", B.dir);
    if (getenv("GW_BROKER_TEST_KEEP")) /* keep the broker's log and state for a post-mortem */
        fprintf(stderr, "kept %s\n", B.dir);
    else if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", B.dir);
    B.dir[0] = 0;
}

static void setup_plain(void)
{
    broker_start(NULL);
}

static void make_cert(void)
{
    snprintf(B.cert, sizeof B.cert, "%s/cert.pem", B.dir);
    snprintf(B.key, sizeof B.key, "%s/key.pem", B.dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 "
             "-addext subjectAltName=IP:127.0.0.1 -keyout %s -out %s 2>/dev/null",
             B.key, B.cert);
    ck_assert_int_eq(system(cmd), 0);
}

static SSL_CTX *ssl_ctx; /* the test client's, made on first use (tls_start) */

static void setup_tls(void)
{
    snprintf(B.dir, sizeof B.dir, "/tmp/gw_broker_test.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(B.dir));
    make_cert();
    /* A new certificate: a client context left by an earlier test in this process (CK_FORK=no,
     * as under valgrind) trusts the old one. */
    SSL_CTX_free(ssl_ctx);
    ssl_ctx = NULL;
    broker_start("--tls-port", "0", "--https-port", "0", "--cert", B.cert, "--key", B.key, NULL);
    ck_assert_int_gt(B.tls, 0);
    ck_assert_int_gt(B.https, 0);
}

static void setup_small_frames(void)
{
    broker_start("--max-frame", "1024", NULL);
}

/* --- Test connections: raw TCP, TLS, ws, wss --- */

struct tc {
    int fd;
    SSL *ssl;
    bool ws;
    uint8_t *wsbuf; /* payload of the WebSocket message being read */
    size_t ws_len, ws_off;
    bool timed_out; /* the last read failed because nothing came within the socket timeout */
};

static SSL_CTX *ssl_ctx;

static int tcp_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static ssize_t raw_read(struct tc *c, void *buf, size_t n)
{
    ssize_t r;
    errno = 0;
    if (c->ssl) {
        r = SSL_read(c->ssl, buf, (int)n);
    } else {
        do
            r = read(c->fd, buf, n);
        while (r < 0 && errno == EINTR);
    }
    c->timed_out = r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    return r > 0 ? r : -1;
}

static int raw_write(struct tc *c, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = c->ssl ? SSL_write(c->ssl, p, (int)n) : send(c->fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int raw_read_exact(struct tc *c, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = raw_read(c, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Sends one masked WebSocket message (opcode 2 = binary). */
static int ws_send(struct tc *c, const void *data, size_t len, int opcode)
{
    uint8_t *m = malloc(len + 14);
    size_t h = 0;
    m[h++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        m[h++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        m[h++] = 0x80 | 126;
        m[h++] = (uint8_t)(len >> 8);
        m[h++] = (uint8_t)len;
    } else {
        m[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            m[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(m + h, mask, 4);
    h += 4;
    for (size_t i = 0; i < len; i++)
        m[h + i] = ((const uint8_t *)data)[i] ^ mask[i % 4];
    int rc = raw_write(c, m, h + len);
    free(m);
    return rc;
}

/* Reads the next data message into c->wsbuf; -1 on close or error. */
static int ws_next(struct tc *c)
{
    for (;;) {
        uint8_t h[2];
        if (raw_read_exact(c, h, 2) < 0)
            return -1;
        uint64_t len = h[1] & 0x7f;
        if (len == 126) {
            uint8_t e[2];
            if (raw_read_exact(c, e, 2) < 0)
                return -1;
            len = (uint64_t)e[0] << 8 | e[1];
        } else if (len == 127) {
            uint8_t e[8];
            if (raw_read_exact(c, e, 8) < 0)
                return -1;
            len = 0;
            for (int i = 0; i < 8; i++)
                len = len << 8 | e[i];
        }
        ck_assert_msg(!(h[1] & 0x80), "server frames must not be masked");
        ck_assert_uint_lt(len, 1u << 20);
        free(c->wsbuf);
        c->wsbuf = malloc(len ? len : 1);
        if (raw_read_exact(c, c->wsbuf, len) < 0)
            return -1;
        int op = h[0] & 0x0f;
        if (op == 8)
            return -1;
        if (op == 9 || op == 10)
            continue;
        ck_assert_int_eq(op, 2); /* IOTMP goes in binary messages */
        c->ws_len = len;
        c->ws_off = 0;
        return 0;
    }
}

static int t_read(struct tc *c, void *buf, size_t n)
{
    if (!c->ws)
        return raw_read_exact(c, buf, n);
    uint8_t *p = buf;
    while (n) {
        if (c->ws_off == c->ws_len && ws_next(c) < 0)
            return -1;
        size_t k = c->ws_len - c->ws_off;
        if (k > n)
            k = n;
        memcpy(p, c->wsbuf + c->ws_off, k);
        c->ws_off += k;
        p += k;
        n -= k;
    }
    return 0;
}

static int t_write(struct tc *c, const void *buf, size_t n)
{
    return c->ws ? ws_send(c, buf, n, 2) : raw_write(c, buf, n);
}

static void tls_start(struct tc *c)
{
    if (!ssl_ctx) {
        ssl_ctx = SSL_CTX_new(TLS_client_method());
        ck_assert_int_eq(SSL_CTX_load_verify_locations(ssl_ctx, B.cert, NULL), 1);
        SSL_CTX_set_verify(ssl_ctx, SSL_VERIFY_PEER, NULL);
    }
    c->ssl = SSL_new(ssl_ctx);
    SSL_set_fd(c->ssl, c->fd);
    SSL_set1_host(c->ssl, "127.0.0.1");
    int r = SSL_connect(c->ssl);
    ck_assert_msg(r == 1, "TLS handshake failed: %s",
                  ERR_error_string(ERR_get_error(), NULL));
}

static void ws_upgrade_proto(struct tc *c, const char *path, const char *proto, bool expect_ok)
{
    char req[512];
    snprintf(req, sizeof req,
             "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             "%s%s%s\r\n",
             path, proto ? "Sec-WebSocket-Protocol: " : "", proto ? proto : "",
             proto ? "\r\n" : "");
    ck_assert_int_eq(raw_write(c, req, strlen(req)), 0);
    char resp[2048];
    size_t n = 0;
    while (n < sizeof resp - 1) {
        if (raw_read(c, resp + n, 1) <= 0)
            break;
        n++;
        if (n >= 4 && memcmp(resp + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    resp[n] = 0;
    if (expect_ok) {
        ck_assert_msg(strncmp(resp, "HTTP/1.1 101", 12) == 0, "upgrade refused: %s", resp);
        ck_assert_msg(strcasestr(resp, "Sec-WebSocket-Protocol: iotmp") != NULL,
                      "no iotmp subprotocol in %s", resp);
        c->ws = true;
    } else {
        ck_assert_msg(strncmp(resp, "HTTP/1.1 101", 12) != 0, "upgrade on %s accepted", path);
    }
}

static void ws_upgrade(struct tc *c, const char *path, bool expect_ok)
{
    ws_upgrade_proto(c, path, "iotmp", expect_ok);
}

enum { T_TCP, T_TLS, T_WS, T_WSS };

static struct tc *t_open(int kind)
{
    struct tc *c = calloc(1, sizeof *c);
    int port = kind == T_TCP ? B.tcp : kind == T_TLS ? B.tls : kind == T_WS ? B.http : B.https;
    c->fd = tcp_open(port);
    if (kind == T_TLS || kind == T_WSS)
        tls_start(c);
    if (kind == T_WS || kind == T_WSS)
        ws_upgrade(c, "/iotmp", true);
    return c;
}

static void t_close(struct tc *c)
{
    if (!c)
        return;
    if (c->ssl)
        SSL_free(c->ssl);
    close(c->fd);
    free(c->wsbuf);
    free(c);
}

/* True when the broker closed the connection (EOF or reset) before sending anything more; a
 * read that only timed out (10 s) is not a close. */
static bool t_closed(struct tc *c)
{
    uint8_t b;
    return t_read(c, &b, 1) < 0 && !c->timed_out;
}

/* --- Frames --- */

struct tframe {
    uint64_t type;
    uint8_t body[300000];
    size_t len;
    struct gw_iotmp_frame f;
    uint16_t sid;
};
static struct tframe RX;

static int read_varint(struct tc *c, uint64_t *v)
{
    uint8_t b[GW_VARINT_MAX];
    for (size_t i = 0; i < GW_VARINT_MAX; i++) {
        if (t_read(c, &b[i], 1) < 0)
            return -1;
        if (!(b[i] & 0x80))
            return gw_varint_decode(b, i + 1, v) > 0 ? 0 : -1;
    }
    return -1;
}

/* Reads the next frame into RX; -1 when the connection closed. */
static int read_frame(struct tc *c)
{
    uint64_t len;
    if (read_varint(c, &RX.type) < 0 || read_varint(c, &len) < 0)
        return -1;
    ck_assert_uint_le(len, sizeof RX.body);
    RX.len = (size_t)len;
    if (t_read(c, RX.body, RX.len) < 0)
        return -1;
    ck_assert_int_eq(gw_iotmp_parse(&RX.f, RX.type, RX.body, RX.len), 0);
    RX.sid = 0;
    ck_assert_int_eq(gw_iotmp_get_stream_id(&RX.f, &RX.sid), 0);
    return 0;
}

static void expect_frame(struct tc *c, uint64_t type)
{
    ck_assert_msg(read_frame(c) == 0, "connection closed while waiting for %s",
                  gw_iotmp_type_name(type));
    ck_assert_msg(RX.type == type, "got %s, expected %s", gw_iotmp_type_name(RX.type),
                  gw_iotmp_type_name(type));
}

static uint8_t TXBUF[300000];

static void w_init(struct gw_iotmp_writer *w, uint64_t type)
{
    gw_iotmp_writer_init(w, TXBUF, sizeof TXBUF, type);
}

/* Adds field id as PSON from JSON text (encoded with gw/json.h + gw/value.h). */
static void w_json(struct gw_iotmp_writer *w, unsigned id, const char *text)
{
    json_error_t err;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &err);
    ck_assert_msg(j != NULL, "bad JSON in the test: %s", text);
    struct gw_value v;
    ck_assert_int_eq(gw_json_to_value(j, &v), 0);
    gw_value_encode(&v, gw_iotmp_put_pson(w, id));
    gw_value_fini(&v);
    json_decref(j);
}

static void w_send(struct tc *c, struct gw_iotmp_writer *w)
{
    const uint8_t *fr;
    size_t len;
    ck_assert_int_eq(gw_iotmp_finish(w, &fr, &len), 0);
    ck_assert_int_eq(t_write(c, fr, len), 0);
}

/* A field of RX as JSON (varint as integer); NULL when absent. */
static json_t *rx_json(unsigned id)
{
    if (!gw_iotmp_has(&RX.f, id))
        return NULL;
    const struct gw_iotmp_field *fl = &RX.f.field[id];
    if (fl->wire == GW_IOTMP_WIRE_VARINT)
        return json_integer((json_int_t)fl->u);
    struct gw_value v;
    ck_assert_int_gt(gw_value_decode(fl->p, fl->len, &v), 0);
    json_t *j = gw_value_to_json(&v);
    gw_value_fini(&v);
    return j;
}

static void ck_json(json_t *j, const char *expected)
{
    json_t *e = json_loads(expected, JSON_DECODE_ANY, NULL);
    ck_assert_ptr_nonnull(e);
    char *got = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : strdup("(absent)");
    ck_assert_msg(j && json_equal(j, e), "JSON %s, expected %s", got, expected);
    free(got);
    json_decref(e);
}

static void ck_rx(unsigned id, const char *expected)
{
    json_t *j = rx_json(id);
    ck_json(j, expected);
    json_decref(j);
}

static void send_connect(struct tc *c, uint16_t sid, const char *user, const char *dev,
                         const char *pw)
{
    struct gw_iotmp_writer w;
    char creds[256];
    snprintf(creds, sizeof creds, "[\"%s\",\"%s\",\"%s\"]", user, dev, pw);
    w_init(&w, GW_IOTMP_CONNECT);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    w_json(&w, GW_IOTMP_PAYLOAD, creds);
    w_send(c, &w);
}

static struct tc *dev_open(int kind, const char *user, const char *dev, const char *pw)
{
    struct tc *c = t_open(kind);
    send_connect(c, 77, user, dev, pw);
    expect_frame(c, GW_IOTMP_OK);
    ck_assert_int_eq(RX.sid, 77);
    return c;
}

static void send_keepalive(struct tc *c)
{
    ck_assert_int_eq(t_write(c, "\x05\x00", 2), 0);
}

/* A server action RUN. layout 1 = linux, 2 = embedded; sid 0 = none. */
static void send_action(struct tc *c, int layout, uint16_t sid, unsigned action,
                        const char *target_json, const char *payload_json)
{
    struct gw_iotmp_writer w;
    w_init(&w, GW_IOTMP_RUN);
    if (sid)
        gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    if (layout == 1) {
        if (target_json)
            w_json(&w, GW_IOTMP_PARAMETERS, target_json);
        if (payload_json)
            w_json(&w, GW_IOTMP_PAYLOAD, payload_json);
        gw_iotmp_put_varint(&w, GW_IOTMP_RESOURCE, action);
    } else {
        gw_iotmp_put_varint(&w, GW_IOTMP_PARAMETERS, action);
        if (payload_json)
            w_json(&w, GW_IOTMP_PAYLOAD, payload_json);
        if (target_json)
            w_json(&w, GW_IOTMP_RESOURCE, target_json);
    }
    w_send(c, &w);
}

/* Answers the request in RX with OK (payload may be NULL) or ERROR (code > 0). */
static void answer(struct tc *c, uint64_t type, int code, const char *payload_json)
{
    struct gw_iotmp_writer w;
    w_init(&w, type);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, RX.sid);
    if (code > 0)
        gw_iotmp_put_varint(&w, GW_IOTMP_PARAMETERS, (uint64_t)code);
    if (payload_json)
        w_json(&w, GW_IOTMP_PAYLOAD, payload_json);
    w_send(c, &w);
}

/* --- HTTP --- */

static int http_send(int port, const char *method, const char *path, const char *body)
{
    int fd = tcp_open(port);
    char req[4096];
    size_t blen = body ? strlen(body) : 0;
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, blen);
    ck_assert_int_lt(n, (int)sizeof req);
    ck_assert_int_eq(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    if (blen)
        ck_assert_int_eq(send(fd, body, blen, MSG_NOSIGNAL), (ssize_t)blen);
    return fd;
}

/* Reads the answer; returns the body as JSON (NULL if empty), *status the HTTP status. */
static json_t *http_recv(int fd, int *status)
{
    size_t cap = 1 << 16, len = 0, body_at = 0;
    char *buf = malloc(cap);
    long clen = -1;
    for (;;) {
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + len, cap - len - 1);
        if (r <= 0)
            break;
        len += (size_t)r;
        buf[len] = 0;
        char *hend;
        if (!body_at && (hend = strstr(buf, "\r\n\r\n"))) {
            body_at = (size_t)(hend + 4 - buf);
            char *cl = strcasestr(buf, "content-length:");
            if (cl && cl < hend)
                clen = strtol(cl + 15, NULL, 10);
        }
        if (body_at && clen >= 0 && (long)(len - body_at) >= clen)
            break;
    }
    buf[len] = 0;
    close(fd);
    *status = 0;
    ck_assert_msg(sscanf(buf, "HTTP/1.1 %d", status) == 1, "no HTTP answer: \"%.300s\" (%zu bytes)",
                  buf, len);
    ck_assert_msg(body_at > 0, "no end of the HTTP header");
    json_t *j = NULL;
    if (buf[body_at]) {
        json_error_t err;
        j = json_loads(buf + body_at, JSON_DECODE_ANY, &err);
        ck_assert_msg(j != NULL, "answer is not JSON: %.300s", buf + body_at);
    }
    free(buf);
    return j;
}

static json_t *http(const char *method, const char *path, const char *body, int *status)
{
    return http_recv(http_send(B.http, method, path, body), status);
}

/* GET over https (the REST API on the https vhost). */
static json_t *https_get(const char *path, int *status)
{
    struct tc c = {.fd = tcp_open(B.https)};
    tls_start(&c);
    char req[512];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
             path);
    ck_assert_int_eq(raw_write(&c, req, strlen(req)), 0);
    static char buf[1 << 16];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof buf - 1 && (r = raw_read(&c, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = 0;
    SSL_free(c.ssl);
    close(c.fd);
    ck_assert_msg(sscanf(buf, "HTTP/1.1 %d", status) == 1, "no HTTPS answer: %.200s", buf);
    char *body = strstr(buf, "\r\n\r\n");
    ck_assert_ptr_nonnull(body);
    return json_loads(body + 4, JSON_DECODE_ANY, NULL);
}

/* Checks an error answer: status and the message. */
static void ck_http_error(json_t *j, int status, int expected_status, const char *message)
{
    ck_assert_int_eq(status, expected_status);
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    ck_assert_msg(m != NULL, "no error.message in the answer");
    if (message)
        ck_assert_str_eq(m, message);
}

static void control(const char *path, const char *body)
{
    int st;
    json_t *j = http("POST", path, body, &st);
    ck_assert_msg(st == 200, "control %s answered %d", path, st);
    json_decref(j);
}

/* --- Tests: CONNECT and the session --- */

START_TEST(test_broker_connect_good_and_bad_credentials)
{
    struct tc *c = t_open(T_TCP);
    send_connect(c, 4242, "u1", "dev1", "pw1");
    expect_frame(c, GW_IOTMP_OK);
    ck_assert_int_eq(RX.sid, 4242);
    ck_assert(!gw_iotmp_has(&RX.f, GW_IOTMP_PAYLOAD));

    struct tc *bad = t_open(T_TCP);
    send_connect(bad, 9, "u1", "dev1", "wrong");
    expect_frame(bad, GW_IOTMP_ERROR);
    ck_assert_int_eq(RX.sid, 9);
    ck_rx(GW_IOTMP_PARAMETERS, "2");
    ck_assert(t_closed(bad));
    t_close(bad);

    struct tc *unknown = t_open(T_TCP);
    send_connect(unknown, 10, "u1", "nosuchdevice", "pw1");
    expect_frame(unknown, GW_IOTMP_ERROR);
    ck_rx(GW_IOTMP_PARAMETERS, "2");
    t_close(unknown);

    /* the good one is still there */
    int st;
    json_t *j = http("GET", "/v3/users/u1/devices", NULL, &st);
    ck_assert_int_eq(st, 200);
    ck_assert_int_eq(json_array_size(j), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 0), "device")), "dev1");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 0), "transport")),
                     "tcp");
    json_decref(j);
    t_close(c);
}
END_TEST

START_TEST(test_broker_connect_parameters_and_redirect)
{
    /* ka not a number, 0, above 1800: ERROR 3 */
    const char *bad_ka[] = {"{\"ka\":\"x\"}", "{\"ka\":0}", "{\"ka\":1801}"};
    for (int i = 0; i < 3; i++) {
        struct tc *c = t_open(T_TCP);
        struct gw_iotmp_writer w;
        w_init(&w, GW_IOTMP_CONNECT);
        gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 5);
        w_json(&w, GW_IOTMP_PARAMETERS, bad_ka[i]);
        w_json(&w, GW_IOTMP_PAYLOAD, "[\"u1\",\"dev1\",\"pw1\"]");
        w_send(c, &w);
        expect_frame(c, GW_IOTMP_ERROR);
        ck_rx(GW_IOTMP_PARAMETERS, "3");
        t_close(c);
    }
    /* a valid ka is accepted */
    struct tc *k = t_open(T_TCP);
    struct gw_iotmp_writer w;
    w_init(&w, GW_IOTMP_CONNECT);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 5);
    w_json(&w, GW_IOTMP_PARAMETERS, "{\"pv\":1,\"ka\":120}");
    w_json(&w, GW_IOTMP_PAYLOAD, "[\"u1\",\"dev1\",\"pw1\"]");
    w_send(k, &w);
    expect_frame(k, GW_IOTMP_OK);
    t_close(k);

    /* legacy CONNECT with PSON v1 fields (vector legacy_connect): ERROR 4 */
    static const uint8_t legacy[] = {0x03, 0x1e, 0x10, 0x01, 0x19, 0x72, 0x16, 0x4a, 0x04, 'u',
                                     's',  'e',  'r',  0x4a, 0x06, 'd',  'e',  'v',  'i',  'c',
                                     'e',  0x4a, 0x06, 's',  'e',  'c',  'r',  'e',  't',  0x08,
                                     0xdc, 0x74};
    struct tc *l = t_open(T_TCP);
    ck_assert_int_eq(t_write(l, legacy, sizeof legacy), 0);
    expect_frame(l, GW_IOTMP_ERROR);
    ck_rx(GW_IOTMP_PARAMETERS, "4");
    t_close(l);

    /* redirect: the next CONNECT of that device only */
    control("/_control/redirect", "{\"user\":\"u1\",\"device\":\"dev2\",\"uri\":\"iotmps://"
                                  "other.example:25206\"}");
    struct tc *r = t_open(T_TCP);
    send_connect(r, 6, "u1", "dev2", "pw2");
    expect_frame(r, GW_IOTMP_ERROR);
    ck_rx(GW_IOTMP_PARAMETERS, "1");
    ck_rx(GW_IOTMP_PAYLOAD, "\"iotmps://other.example:25206\"");
    t_close(r);
    t_close(dev_open(T_TCP, "u1", "dev2", "pw2"));
}
END_TEST

START_TEST(test_broker_first_message_not_connect_is_closed)
{
    struct tc *c = t_open(T_TCP);
    send_keepalive(c);
    ck_assert(t_closed(c));
    t_close(c);
    struct tc *r = t_open(T_TCP);
    struct gw_iotmp_writer w;
    w_init(&w, GW_IOTMP_RUN);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 1);
    w_json(&w, GW_IOTMP_RESOURCE, "\"led\"");
    w_send(r, &w);
    ck_assert(t_closed(r));
    t_close(r);
}
END_TEST

START_TEST(test_broker_keepalive_echo_and_switch)
{
    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    send_keepalive(c);
    expect_frame(c, GW_IOTMP_KEEP_ALIVE);
    ck_assert_uint_eq(RX.len, 0);
    control("/_control/keepalive", "{\"echo\":false}");
    send_keepalive(c);
    send_action(c, 1, 33, GW_IOTMP_WRITE_BUCKET, "\"b\"", "1");
    expect_frame(c, GW_IOTMP_OK); /* the next frame is the OK: no echo came first */
    ck_assert_int_eq(RX.sid, 33);
    control("/_control/keepalive", "{\"echo\":true}");
    send_keepalive(c);
    expect_frame(c, GW_IOTMP_KEEP_ALIVE);
    t_close(c);
}
END_TEST

START_TEST(test_broker_keepalive_timeout_drops_silent_device)
{
    struct tc *c = t_open(T_TCP);
    struct gw_iotmp_writer w;
    w_init(&w, GW_IOTMP_CONNECT);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 5);
    w_json(&w, GW_IOTMP_PARAMETERS, "{\"ka\":1}");
    w_json(&w, GW_IOTMP_PAYLOAD, "[\"u1\",\"dev1\",\"pw1\"]");
    w_send(c, &w);
    expect_frame(c, GW_IOTMP_OK);
    ck_assert(t_closed(c)); /* silent for 1.15 s: dropped (the read gives up after 10 s) */
    t_close(c);
    int st;
    json_t *j = http("GET", "/_control/stats", NULL, &st);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "errors"),
                                                        "keepalive_timeout")),
                     1);
    json_decref(j);
    j = http("GET", "/v3/users/u1/devices", NULL, &st);
    ck_assert_int_eq(json_array_size(j), 0);
    json_decref(j);
}
END_TEST

START_TEST(test_broker_second_connect_replaces_the_first)
{
    struct tc *a = dev_open(T_TCP, "u1", "dev1", "pw1");
    struct tc *b = dev_open(T_TCP, "u1", "dev1", "pw1");
    ck_assert(t_closed(a));
    send_keepalive(b);
    expect_frame(b, GW_IOTMP_KEEP_ALIVE);
    t_close(a);
    t_close(b);
}
END_TEST

/* --- Tests: bad input --- */

START_TEST(test_broker_oversize_frame_closes_only_that_connection)
{
    struct tc *good = dev_open(T_TCP, "u1", "dev2", "pw2");
    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    /* a RUN whose header announces 5000 bytes of body (limit 1024): closed at the header */
    uint8_t hdr[3] = {0x06, 0x88, 0x27};
    ck_assert_int_eq(t_write(c, hdr, sizeof hdr), 0);
    ck_assert(t_closed(c));
    t_close(c);
    /* exactly at the limit is fine: a WRITE_BUCKET with a 1000-byte string payload */
    char big[1100];
    memset(big, 'x', sizeof big);
    big[0] = '"';
    big[990] = '"';
    big[991] = 0;
    send_action(good, 1, 3, GW_IOTMP_WRITE_BUCKET, "\"big\"", big);
    expect_frame(good, GW_IOTMP_OK);
    send_keepalive(good);
    expect_frame(good, GW_IOTMP_KEEP_ALIVE);
    int st;
    json_t *j = http("GET", "/_control/stats", NULL, &st);
    ck_assert_int_eq(st, 200);
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "errors"),
                                                        "frame_too_large")),
                     1);
    json_decref(j);
    t_close(good);
}
END_TEST

START_TEST(test_broker_malformed_frames_and_garbage)
{
    struct tc *good = dev_open(T_TCP, "u1", "dev2", "pw2");
    /* RUN with an invalid PSON tag in PAYLOAD */
    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    static const uint8_t bad_pson[] = {0x06, 0x04, 0x08, 0x01, 0x1a, 0x5f};
    ck_assert_int_eq(t_write(c, bad_pson, sizeof bad_pson), 0);
    ck_assert(t_closed(c));
    t_close(c);
    /* a map count larger than the body */
    c = dev_open(T_TCP, "u1", "dev1", "pw1");
    static const uint8_t bad_count[] = {0x06, 0x03, 0x1a, 0xdf, 0x7f};
    ck_assert_int_eq(t_write(c, bad_count, sizeof bad_count), 0);
    ck_assert(t_closed(c));
    t_close(c);
    /* an 11-byte varint in the header */
    c = dev_open(T_TCP, "u1", "dev1", "pw1");
    static const uint8_t bad_varint[] = {0x06, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    ck_assert_int_eq(t_write(c, bad_varint, sizeof bad_varint), 0);
    ck_assert(t_closed(c));
    t_close(c);
    /* an unknown message type is ignored */
    c = dev_open(T_TCP, "u1", "dev1", "pw1");
    ck_assert_int_eq(t_write(c, "\x0b\x02\x08\x01", 4), 0);
    send_keepalive(c);
    expect_frame(c, GW_IOTMP_KEEP_ALIVE);
    t_close(c);
    /* garbage on the raw and the HTTP listener (including a truncated request) */
    static const char junk[] = "\xff\xfe\x00garbage\r\n\r\nGET / HTTP/9.9\r\n\x01\x02\x03";
    for (int i = 0; i < 2; i++) {
        struct tc g = {.fd = tcp_open(i ? B.http : B.tcp)};
        ck_assert_int_eq(raw_write(&g, junk, sizeof junk), 0);
        shutdown(g.fd, SHUT_WR);
        uint8_t b[512];
        while (raw_read(&g, b, sizeof b) > 0)
            ;
        close(g.fd);
    }
    /* WebSocket upgrade on another path is refused */
    struct tc *p = calloc(1, sizeof *p);
    p->fd = tcp_open(B.http);
    ws_upgrade(p, "/other", false);
    t_close(p);
    /* and one without the iotmp subprotocol */
    p = calloc(1, sizeof *p);
    p->fd = tcp_open(B.http);
    ws_upgrade_proto(p, "/iotmp", NULL, false);
    t_close(p);
    /* the broker still serves */
    send_keepalive(good);
    expect_frame(good, GW_IOTMP_KEEP_ALIVE);
    int st;
    json_t *j = http("GET", "/_control/stats", NULL, &st);
    ck_assert_int_eq(st, 200);
    ck_assert_int_ge(json_integer_value(json_object_get(json_object_get(j, "errors"),
                                                        "malformed")),
                     3);
    json_decref(j);
    j = http("GET", "/no/such/path", NULL, &st);
    ck_http_error(j, st, 404, NULL);
    json_decref(j);
    t_close(good);
}
END_TEST

/* --- Tests: REST into devices --- */

START_TEST(test_broker_rest_run_unknown_device_is_404)
{
    int st;
    json_t *j = http("GET", "/v3/users/u1/devices/ghost/resources/temp", NULL, &st);
    ck_http_error(j, st, 404, "device \"ghost\" is not connected");
    json_decref(j);
    j = http("POST", "/v3/users/u1/devices/ghost/resources/led", "true", &st);
    ck_http_error(j, st, 404, "device \"ghost\" is not connected");
    json_decref(j);
}
END_TEST

START_TEST(test_broker_rest_run_answered_by_device)
{
    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    int st;

    /* GET: RUN without input; the device answers with a map */
    int fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/modbus/plc1/temp",
                       NULL);
    expect_frame(c, GW_IOTMP_RUN);
    ck_assert_int_ne(RX.sid, 0);
    ck_rx(GW_IOTMP_RESOURCE, "\"modbus/plc1/temp\"");
    ck_assert(!gw_iotmp_has(&RX.f, GW_IOTMP_PAYLOAD));
    answer(c, GW_IOTMP_OK, 0, "{\"celsius\":23.5,\"raw\":{\"$bytes\":\"00ff\"}}");
    json_t *j = http_recv(fd, &st);
    ck_assert_int_eq(st, 200);
    ck_json(j, "{\"celsius\":23.5,\"raw\":{\"$bytes\":\"00ff\"}}");
    json_decref(j);

    /* POST: the body is the input; OK without payload is null */
    fd = http_send(B.http, "POST", "/v3/users/u1/devices/dev1/resources/led", "{\"on\":true}");
    expect_frame(c, GW_IOTMP_RUN);
    uint16_t first = RX.sid;
    ck_rx(GW_IOTMP_RESOURCE, "\"led\"");
    ck_rx(GW_IOTMP_PAYLOAD, "{\"on\":true}");
    answer(c, GW_IOTMP_OK, 0, NULL);
    j = http_recv(fd, &st);
    ck_assert_int_eq(st, 200);
    ck_assert(json_is_null(j));
    json_decref(j);

    /* a numeric resource goes out as a varint */
    fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/17", NULL);
    expect_frame(c, GW_IOTMP_RUN);
    ck_assert_int_eq(RX.f.field[GW_IOTMP_RESOURCE].wire, GW_IOTMP_WIRE_VARINT);
    ck_rx(GW_IOTMP_RESOURCE, "17");
    ck_assert_int_ne(RX.sid, 0);
    answer(c, GW_IOTMP_OK, 0, "5");
    j = http_recv(fd, &st);
    ck_assert_int_eq(st, 200);
    ck_json(j, "5");
    json_decref(j);

    /* device ERROR with a code in 400..599 → that status, with its text */
    fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/nope", NULL);
    expect_frame(c, GW_IOTMP_RUN);
    answer(c, GW_IOTMP_ERROR, 404, "{\"error\":\"resource not found\"}");
    j = http_recv(fd, &st);
    ck_http_error(j, st, 404, "resource not found");
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "error"),
                                                        "device_code")),
                     404);
    json_decref(j);

    /* ERROR without a usable code → 502 */
    fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/broken", NULL);
    expect_frame(c, GW_IOTMP_RUN);
    answer(c, GW_IOTMP_ERROR, 0, "{\"message\":\"sensor failed\"}");
    j = http_recv(fd, &st);
    ck_http_error(j, st, 502, "sensor failed");
    json_decref(j);

    /* two calls in flight get different stream ids, answered out of order */
    int fa = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/a", NULL);
    expect_frame(c, GW_IOTMP_RUN);
    uint16_t sa = RX.sid;
    int fb = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/b", NULL);
    expect_frame(c, GW_IOTMP_RUN);
    uint16_t sb = RX.sid;
    ck_assert_int_ne(sa, sb);
    ck_assert_int_ne(sa, 0);
    ck_assert_int_ne(sb, 0);
    RX.sid = sb;
    answer(c, GW_IOTMP_OK, 0, "\"b\"");
    RX.sid = sa;
    answer(c, GW_IOTMP_OK, 0, "\"a\"");
    j = http_recv(fa, &st);
    ck_assert_int_eq(st, 200);
    ck_json(j, "\"a\"");
    json_decref(j);
    j = http_recv(fb, &st);
    ck_json(j, "\"b\"");
    json_decref(j);
    ck_assert_int_ne(first, 0);

    /* not JSON → 400 before anything reaches the device */
    j = http("POST", "/v3/users/u1/devices/dev1/resources/led", "{oops", &st);
    ck_http_error(j, st, 400, NULL);
    json_decref(j);
    t_close(c);
}
END_TEST

START_TEST(test_broker_rest_describe)
{
    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    int st;
    int fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/api", NULL);
    expect_frame(c, GW_IOTMP_DESCRIBE);
    ck_assert(!gw_iotmp_has(&RX.f, GW_IOTMP_RESOURCE));
    answer(c, GW_IOTMP_OK, 0, "{\"temp\":{\"fn\":3},\"led\":{\"fn\":2}}");
    json_t *j = http_recv(fd, &st);
    ck_assert_int_eq(st, 200);
    ck_json(j, "{\"temp\":{\"fn\":3},\"led\":{\"fn\":2}}");
    json_decref(j);
    fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/temp/api", NULL);
    expect_frame(c, GW_IOTMP_DESCRIBE);
    ck_rx(GW_IOTMP_RESOURCE, "\"temp\"");
    answer(c, GW_IOTMP_OK, 0, "{\"out\":{\"celsius\":0}}");
    j = http_recv(fd, &st);
    ck_json(j, "{\"out\":{\"celsius\":0}}");
    json_decref(j);
    t_close(c);
}
END_TEST

START_TEST(test_broker_device_disconnects_mid_call)
{
    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    int fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/slow?timeout=20000",
                       NULL);
    expect_frame(c, GW_IOTMP_RUN);
    t_close(c);
    int st;
    json_t *j = http_recv(fd, &st);
    ck_http_error(j, st, 502, "device disconnected before answering");
    json_decref(j);

    /* and an HTTP client that vanishes mid-call: the late answer is dropped quietly */
    c = dev_open(T_TCP, "u1", "dev1", "pw1");
    fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/slow", NULL);
    expect_frame(c, GW_IOTMP_RUN);
    close(fd);
    j = http("GET", "/_control/stats", NULL, &st); /* let the broker see the close first */
    json_decref(j);
    answer(c, GW_IOTMP_OK, 0, "1");
    send_keepalive(c);
    expect_frame(c, GW_IOTMP_KEEP_ALIVE);
    t_close(c);
}
END_TEST

START_TEST(test_broker_call_timeout_is_504)
{
    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    int fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/x?timeout=200", NULL);
    expect_frame(c, GW_IOTMP_RUN);
    int st;
    json_t *j = http_recv(fd, &st); /* never answered */
    ck_http_error(j, st, 504, NULL);
    json_decref(j);
    /* the late answer is ignored and the session goes on */
    answer(c, GW_IOTMP_OK, 0, "1");
    send_keepalive(c);
    expect_frame(c, GW_IOTMP_KEEP_ALIVE);
    t_close(c);
}
END_TEST

/* --- Tests: server actions --- */

START_TEST(test_broker_write_bucket_both_layouts)
{
    struct tc *a = dev_open(T_TCP, "u1", "dev1", "pw1");
    struct tc *b = dev_open(T_TCP, "u1", "dev2", "pw2");
    send_action(a, 1, 0x1234, GW_IOTMP_WRITE_BUCKET, "\"sensor_data\"",
                "{\"temperature\":23.5,\"humidity\":60}");
    expect_frame(a, GW_IOTMP_OK);
    ck_assert_int_eq(RX.sid, 0x1234);
    send_action(b, 2, 0x1235, GW_IOTMP_WRITE_BUCKET, "\"sensor_data\"", "{\"n\":2}");
    expect_frame(b, GW_IOTMP_OK);
    ck_assert_int_eq(RX.sid, 0x1235);
    /* without a stream id: recorded, not answered (the keep-alive echo is the next frame) */
    send_action(a, 2, 0, GW_IOTMP_WRITE_BUCKET, "\"sensor_data\"", "[1,2,3]");
    send_keepalive(a);
    expect_frame(a, GW_IOTMP_KEEP_ALIVE);
    /* another bucket and an endpoint call */
    send_action(a, 1, 7, GW_IOTMP_WRITE_BUCKET, "\"other\"", "1");
    expect_frame(a, GW_IOTMP_OK);
    send_action(b, 2, 8, GW_IOTMP_CALL_ENDPOINT, "\"notify\"", "{\"msg\":\"hi\"}");
    expect_frame(b, GW_IOTMP_OK);

    int st;
    json_t *j = http("GET", "/v3/users/u1/buckets/sensor_data/data", NULL, &st);
    ck_assert_int_eq(st, 200);
    ck_assert_int_eq(json_array_size(j), 3);
    const char *dev[] = {"dev1", "dev2", "dev1"}, *lay[] = {"linux", "embedded", "embedded"};
    const char *data[] = {"{\"temperature\":23.5,\"humidity\":60}", "{\"n\":2}", "[1,2,3]"};
    json_int_t prev = 0;
    for (size_t i = 0; i < 3; i++) {
        json_t *row = json_array_get(j, i);
        json_int_t seq = json_integer_value(json_object_get(row, "seq"));
        ck_assert_int_gt(seq, prev);
        prev = seq;
        ck_assert_str_eq(json_string_value(json_object_get(row, "device")), dev[i]);
        ck_assert_str_eq(json_string_value(json_object_get(row, "layout")), lay[i]);
        ck_json(json_object_get(row, "data"), data[i]);
        ck_assert_int_gt(json_integer_value(json_object_get(row, "ts")), 0);
    }
    json_int_t first_seq = json_integer_value(json_object_get(json_array_get(j, 0), "seq"));
    json_decref(j);
    char path[200];
    snprintf(path, sizeof path, "/v3/users/u1/buckets/sensor_data/data?device=dev1&after=%lld",
             (long long)first_seq);
    j = http("GET", path, NULL, &st);
    ck_assert_int_eq(json_array_size(j), 1);
    ck_json(json_object_get(json_array_get(j, 0), "data"), "[1,2,3]");
    json_decref(j);
    j = http("GET", "/v3/users/u1/buckets/sensor_data/data?limit=1", NULL, &st);
    ck_assert_int_eq(json_array_size(j), 1);
    json_decref(j);
    j = http("GET", "/v3/users/u2/buckets/sensor_data/data", NULL, &st);
    ck_assert_int_eq(json_array_size(j), 0); /* other user */
    json_decref(j);
    j = http("GET", "/v3/users/u1/endpoints/notify/calls", NULL, &st);
    ck_assert_int_eq(st, 200);
    ck_assert_int_eq(json_array_size(j), 1);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(j, 0), "layout")),
                     "embedded");
    ck_json(json_object_get(json_array_get(j, 0), "data"), "{\"msg\":\"hi\"}");
    json_decref(j);

    /* layout switch: only linux accepted now */
    control("/_control/layout", "{\"expect\":\"linux\"}");
    send_action(b, 2, 9, GW_IOTMP_WRITE_BUCKET, "\"sensor_data\"", "{\"n\":3}");
    expect_frame(b, GW_IOTMP_ERROR);
    ck_assert_int_eq(RX.sid, 9);
    send_action(a, 1, 10, GW_IOTMP_WRITE_BUCKET, "\"sensor_data\"", "{\"n\":4}");
    expect_frame(a, GW_IOTMP_OK);
    j = http("GET", "/v3/users/u1/buckets/sensor_data/data", NULL, &st);
    ck_assert_int_eq(json_array_size(j), 4);
    ck_json(json_object_get(json_array_get(j, 3), "data"), "{\"n\":4}");
    json_decref(j);

    /* reset clears rows and switches */
    control("/_control/reset", NULL);
    j = http("GET", "/v3/users/u1/buckets/sensor_data/data", NULL, &st);
    ck_assert_int_eq(json_array_size(j), 0);
    json_decref(j);
    send_action(b, 2, 11, GW_IOTMP_WRITE_BUCKET, "\"sensor_data\"", "{\"n\":5}");
    expect_frame(b, GW_IOTMP_OK);
    t_close(a);
    t_close(b);
}
END_TEST

START_TEST(test_broker_properties)
{
    int st;
    json_t *j = http("GET", "/v3/users/u1/devices/dev1/properties/cfg", NULL, &st);
    ck_http_error(j, st, 404, NULL);
    json_decref(j);
    j = http("PUT", "/v3/users/u1/devices/dev1/properties/cfg", "{\"rate\":5,\"on\":true}", &st);
    ck_assert_int_eq(st, 200);
    json_decref(j);
    j = http("GET", "/v3/users/u1/devices/dev1/properties/cfg", NULL, &st);
    ck_assert_int_eq(st, 200);
    ck_json(j, "{\"rate\":5,\"on\":true}");
    json_decref(j);

    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    send_action(c, 1, 21, GW_IOTMP_READ_DEVICE_PROPERTY, "\"cfg\"", NULL);
    expect_frame(c, GW_IOTMP_OK);
    ck_assert_int_eq(RX.sid, 21);
    ck_rx(GW_IOTMP_PAYLOAD, "{\"rate\":5,\"on\":true}");
    send_action(c, 2, 22, GW_IOTMP_SET_DEVICE_PROPERTY, "\"state\"", "[1,\"x\"]");
    expect_frame(c, GW_IOTMP_OK);
    send_action(c, 2, 23, GW_IOTMP_READ_DEVICE_PROPERTY, "\"missing\"", NULL);
    expect_frame(c, GW_IOTMP_ERROR);
    ck_assert_int_eq(RX.sid, 23);
    j = http("GET", "/v3/users/u1/devices/dev1/properties/state", NULL, &st);
    ck_assert_int_eq(st, 200);
    ck_json(j, "[1,\"x\"]");
    json_decref(j);
    t_close(c);
}
END_TEST

START_TEST(test_broker_call_device_relay_and_locks)
{
    struct tc *a = dev_open(T_TCP, "u1", "dev1", "pw1");
    struct tc *b = dev_open(T_TCP, "u1", "dev2", "pw2");
    send_action(a, 1, 31, GW_IOTMP_CALL_DEVICE, "[\"dev2\",\"relay\"]", "{\"x\":1}");
    expect_frame(b, GW_IOTMP_RUN);
    ck_rx(GW_IOTMP_RESOURCE, "\"relay\"");
    ck_rx(GW_IOTMP_PAYLOAD, "{\"x\":1}");
    answer(b, GW_IOTMP_OK, 0, "{\"y\":2}");
    expect_frame(a, GW_IOTMP_OK);
    ck_assert_int_eq(RX.sid, 31);
    ck_rx(GW_IOTMP_PAYLOAD, "{\"y\":2}");
    /* target not connected */
    send_action(a, 1, 32, GW_IOTMP_CALL_DEVICE, "[\"dev3\",\"relay\"]", NULL);
    expect_frame(a, GW_IOTMP_ERROR);
    ck_rx(GW_IOTMP_PARAMETERS, "404");
    /* locks: one holder at a time */
    send_action(a, 1, 40, GW_IOTMP_LOCK_SYNC, "\"s1\"", "{}");
    expect_frame(a, GW_IOTMP_OK);
    send_action(b, 1, 41, GW_IOTMP_LOCK_SYNC, "\"s1\"", "{}");
    expect_frame(b, GW_IOTMP_ERROR);
    send_action(a, 1, 42, GW_IOTMP_UNLOCK_SYNC, "\"s1\"", "{}");
    expect_frame(a, GW_IOTMP_OK);
    send_action(b, 1, 43, GW_IOTMP_LOCK_SYNC, "\"s1\"", "{}");
    expect_frame(b, GW_IOTMP_OK);
    t_close(a);
    t_close(b);
}
END_TEST

START_TEST(test_broker_streams)
{
    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    int st;
    int fd = http_send(B.http, "POST",
                       "/v3/users/u1/devices/dev1/resources/temp/stream?interval=1000", NULL);
    expect_frame(c, GW_IOTMP_START_STREAM);
    ck_rx(GW_IOTMP_RESOURCE, "\"temp\"");
    ck_rx(GW_IOTMP_PARAMETERS, "{\"interval\":1000}");
    uint16_t sid = RX.sid;
    ck_assert_int_ne(sid, 0);
    answer(c, GW_IOTMP_OK, 0, NULL);
    json_t *j = http_recv(fd, &st);
    ck_assert_int_eq(st, 201);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "stream")), sid);
    json_decref(j);

    for (int i = 1; i <= 2; i++) {
        struct gw_iotmp_writer w;
        char v[32];
        snprintf(v, sizeof v, "{\"t\":%d}", i);
        w_init(&w, GW_IOTMP_STREAM_DATA);
        gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
        w_json(&w, GW_IOTMP_PAYLOAD, v);
        w_send(c, &w);
    }
    char path[200];
    snprintf(path, sizeof path, "/v3/users/u1/devices/dev1/streams/%u?after=0&wait=5000", sid);
    j = http("GET", path, NULL, &st);
    ck_assert_int_eq(st, 200);
    ck_assert(json_is_true(json_object_get(j, "open")));
    json_t *samples = json_object_get(j, "samples");
    ck_assert_int_eq(json_array_size(samples), 2);
    ck_json(json_object_get(json_array_get(samples, 1), "data"), "{\"t\":2}");
    json_int_t next = json_integer_value(json_object_get(j, "next"));
    ck_assert_int_eq(next, json_integer_value(json_object_get(json_array_get(samples, 1), "seq")));
    json_decref(j);

    /* a long-poll that waits for the next sample */
    snprintf(path, sizeof path, "/v3/users/u1/devices/dev1/streams/%u?after=%lld&wait=20000", sid,
             (long long)next);
    fd = http_send(B.http, "GET", path, NULL);
    j = http("GET", "/_control/stats", NULL, &st); /* the poll is parked by now */
    json_decref(j);
    struct gw_iotmp_writer w;
    w_init(&w, GW_IOTMP_STREAM_DATA);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    w_json(&w, GW_IOTMP_PAYLOAD, "{\"t\":3}");
    w_send(c, &w);
    j = http_recv(fd, &st);
    ck_assert_int_eq(st, 200);
    samples = json_object_get(j, "samples");
    ck_assert_int_eq(json_array_size(samples), 1);
    ck_json(json_object_get(json_array_get(samples, 0), "data"), "{\"t\":3}");
    json_decref(j);

    /* DELETE sends STOP_STREAM on the same id */
    snprintf(path, sizeof path, "/v3/users/u1/devices/dev1/streams/%u", sid);
    fd = http_send(B.http, "DELETE", path, NULL);
    expect_frame(c, GW_IOTMP_STOP_STREAM);
    ck_assert_int_eq(RX.sid, sid);
    answer(c, GW_IOTMP_OK, 0, NULL);
    j = http_recv(fd, &st);
    ck_assert_int_eq(st, 200);
    json_decref(j);
    j = http("GET", path, NULL, &st);
    ck_assert(json_is_false(json_object_get(j, "open")));
    ck_assert_int_eq(json_array_size(json_object_get(j, "samples")), 3);
    json_decref(j);

    /* an event stream (no interval) refused by the device */
    fd = http_send(B.http, "POST", "/v3/users/u1/devices/dev1/resources/nope/stream", NULL);
    expect_frame(c, GW_IOTMP_START_STREAM);
    ck_assert(!gw_iotmp_has(&RX.f, GW_IOTMP_PARAMETERS));
    answer(c, GW_IOTMP_ERROR, 404, "{\"error\":\"no such resource\"}");
    j = http_recv(fd, &st);
    ck_http_error(j, st, 404, "no such resource");
    json_decref(j);
    t_close(c);
}
END_TEST

START_TEST(test_broker_peers_vanishing_mid_way)
{
    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    int st;
    json_t *j;
    /* open a stream */
    int fd = http_send(B.http, "POST", "/v3/users/u1/devices/dev1/resources/t/stream", NULL);
    expect_frame(c, GW_IOTMP_START_STREAM);
    uint16_t sid = RX.sid;
    answer(c, GW_IOTMP_OK, 0, NULL);
    json_decref(http_recv(fd, &st));
    ck_assert_int_eq(st, 201);
    char path[160];
    snprintf(path, sizeof path, "/v3/users/u1/devices/dev1/streams/%u?after=0&wait=20000", sid);
    /* a long-poll whose client goes away, then a sample arrives */
    fd = http_send(B.http, "GET", path, NULL);
    json_decref(http("GET", "/_control/stats", NULL, &st));
    close(fd);
    json_decref(http("GET", "/_control/stats", NULL, &st));
    struct gw_iotmp_writer w;
    w_init(&w, GW_IOTMP_STREAM_DATA);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    w_json(&w, GW_IOTMP_PAYLOAD, "1");
    w_send(c, &w);
    /* a long-poll waiting when the device disconnects: answered with open=false */
    snprintf(path, sizeof path, "/v3/users/u1/devices/dev1/streams/%u?after=1&wait=20000", sid);
    fd = http_send(B.http, "GET", path, NULL);
    json_decref(http("GET", "/_control/stats", NULL, &st));
    /* and a REST call in flight */
    int fr = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/x", NULL);
    expect_frame(c, GW_IOTMP_RUN);
    t_close(c);
    j = http_recv(fd, &st);
    ck_assert_int_eq(st, 200);
    ck_assert(json_is_false(json_object_get(j, "open")));
    json_decref(j);
    j = http_recv(fr, &st);
    ck_http_error(j, st, 502, "device disconnected before answering");
    json_decref(j);

    /* CALL_DEVICE whose target disconnects before answering */
    struct tc *a = dev_open(T_TCP, "u1", "dev1", "pw1");
    struct tc *b = dev_open(T_TCP, "u1", "dev2", "pw2");
    send_action(a, 1, 50, GW_IOTMP_CALL_DEVICE, "[\"dev2\",\"r\"]", "1");
    expect_frame(b, GW_IOTMP_RUN);
    t_close(b);
    expect_frame(a, GW_IOTMP_ERROR);
    ck_assert_int_eq(RX.sid, 50);
    ck_rx(GW_IOTMP_PARAMETERS, "502");
    /* a caller that disconnects before its relayed answer comes back */
    b = dev_open(T_TCP, "u1", "dev2", "pw2");
    send_action(a, 1, 51, GW_IOTMP_CALL_DEVICE, "[\"dev2\",\"r\"]", "1");
    expect_frame(b, GW_IOTMP_RUN);
    t_close(a);
    json_decref(http("GET", "/_control/stats", NULL, &st));
    answer(b, GW_IOTMP_OK, 0, "2");
    /* delayed answers to a device that is gone when they are due */
    control("/_control/delay", "{\"ms\":200}");
    send_keepalive(b);
    t_close(b);
    /* a drop while a REST call waits */
    c = dev_open(T_TCP, "u1", "dev3", "pw3");
    fr = http_send(B.http, "GET", "/v3/users/u1/devices/dev3/resources/x", NULL);
    expect_frame(c, GW_IOTMP_RUN);
    control("/_control/devices/u1/dev3/drop", NULL);
    j = http_recv(fr, &st);
    ck_http_error(j, st, 502, "device disconnected before answering");
    json_decref(j);
    t_close(c);
    /* leave a call and a long-poll pending: the broker must still stop cleanly (teardown) */
    control("/_control/delay", "{\"ms\":0}");
    c = dev_open(T_TCP, "u1", "dev1", "pw1");
    fd = http_send(B.http, "POST", "/v3/users/u1/devices/dev1/resources/t/stream", NULL);
    expect_frame(c, GW_IOTMP_START_STREAM);
    sid = RX.sid;
    answer(c, GW_IOTMP_OK, 0, NULL);
    json_decref(http_recv(fd, &st));
    snprintf(path, sizeof path, "/v3/users/u1/devices/dev1/streams/%u?after=0&wait=60000", sid);
    fd = http_send(B.http, "GET", path, NULL);
    fr = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/x", NULL);
    expect_frame(c, GW_IOTMP_RUN);
    broker_stop();
    close(fd);
    close(fr);
    t_close(c);
}
END_TEST

/* --- Tests: control --- */

START_TEST(test_broker_control_freeze_and_drop)
{
    struct tc *c = dev_open(T_TCP, "u1", "dev1", "pw1");
    control("/_control/devices/u1/dev1/freeze", NULL);
    send_keepalive(c); /* not read while frozen */
    int fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev1/resources/x?timeout=300", NULL);
    expect_frame(c, GW_IOTMP_RUN); /* writing still works */
    answer(c, GW_IOTMP_OK, 0, "1");
    int st;
    json_t *j = http_recv(fd, &st);
    ck_http_error(j, st, 504, NULL); /* the answer was never read */
    json_decref(j);
    control("/_control/devices/u1/dev1/unfreeze", NULL);
    expect_frame(c, GW_IOTMP_KEEP_ALIVE); /* the buffered keep-alive is read and echoed now */
    control("/_control/devices/u1/dev1/drop", NULL);
    ck_assert(t_closed(c));
    t_close(c);
    j = http("GET", "/v3/users/u1/devices", NULL, &st);
    ck_assert_int_eq(json_array_size(j), 0);
    json_decref(j);
    j = http("POST", "/_control/devices/u1/dev1/drop", NULL, &st);
    ck_http_error(j, st, 404, NULL);
    json_decref(j);

    /* refuse new connections while on */
    control("/_control/refuse", "{\"on\":true}");
    struct tc *r = t_open(T_TCP);
    ck_assert(t_closed(r));
    t_close(r);
    control("/_control/refuse", "{\"on\":false}");
    t_close(dev_open(T_TCP, "u1", "dev1", "pw1"));

    /* delay answers */
    control("/_control/delay", "{\"ms\":100}");
    c = dev_open(T_TCP, "u1", "dev1", "pw1");
    send_keepalive(c);
    expect_frame(c, GW_IOTMP_KEEP_ALIVE);
    t_close(c);
}
END_TEST

/* --- Tests: TLS, WebSocket --- */

START_TEST(test_broker_tls_and_wss)
{
    struct tc *t = dev_open(T_TLS, "u1", "dev1", "pw1");
    send_keepalive(t);
    expect_frame(t, GW_IOTMP_KEEP_ALIVE);
    struct tc *s = dev_open(T_WSS, "u1", "dev2", "pw2");
    send_keepalive(s);
    expect_frame(s, GW_IOTMP_KEEP_ALIVE);
    int st;
    json_t *j = http("GET", "/v3/users/u1/devices", NULL, &st);
    ck_assert_int_eq(json_array_size(j), 2);
    size_t i;
    json_t *d;
    int seen = 0;
    json_array_foreach(j, i, d)
    {
        const char *dev = json_string_value(json_object_get(d, "device"));
        const char *tr = json_string_value(json_object_get(d, "transport"));
        if (strcmp(dev, "dev1") == 0 && strcmp(tr, "tls") == 0)
            seen |= 1;
        if (strcmp(dev, "dev2") == 0 && strcmp(tr, "wss") == 0)
            seen |= 2;
    }
    ck_assert_int_eq(seen, 3);
    json_decref(j);
    j = https_get("/v3/users/u1/devices", &st);
    ck_assert_int_eq(st, 200);
    ck_assert_int_eq(json_array_size(j), 2);
    json_decref(j);
    /* a REST call answered over wss */
    int fd = http_send(B.http, "GET", "/v3/users/u1/devices/dev2/resources/temp", NULL);
    expect_frame(s, GW_IOTMP_RUN);
    answer(s, GW_IOTMP_OK, 0, "21");
    j = http_recv(fd, &st);
    ck_assert_int_eq(st, 200);
    ck_json(j, "21");
    json_decref(j);
    /* bad credentials over TLS */
    struct tc *b = t_open(T_TLS);
    send_connect(b, 3, "u1", "dev3", "nope");
    expect_frame(b, GW_IOTMP_ERROR);
    ck_rx(GW_IOTMP_PARAMETERS, "2");
    t_close(b);
    /* plain bytes on the TLS port: the broker survives */
    struct tc g = {.fd = tcp_open(B.tls)};
    raw_write(&g, "\x03\x17garbage not TLS", 17);
    uint8_t x[64];
    while (raw_read(&g, x, sizeof x) > 0)
        ;
    close(g.fd);
    send_keepalive(t);
    expect_frame(t, GW_IOTMP_KEEP_ALIVE);
    t_close(t);
    t_close(s);
}
END_TEST

START_TEST(test_broker_tls_connection_outlives_the_handshake_timeout)
{
    /* lws 4.1.6 kept its 5 s TLS-accept timeout armed on raw TLS connections (regression) */
    struct tc *t = dev_open(T_TLS, "u1", "dev1", "pw1");
    sleep(6);
    send_keepalive(t);
    expect_frame(t, GW_IOTMP_KEEP_ALIVE);
    t_close(t);
}
END_TEST

START_TEST(test_broker_ws_frames_span_messages)
{
    struct tc *c = t_open(T_WS);
    /* CONNECT split over two WebSocket messages, then two frames in one message */
    struct gw_iotmp_writer w;
    w_init(&w, GW_IOTMP_CONNECT);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 8);
    w_json(&w, GW_IOTMP_PAYLOAD, "[\"u1\",\"dev1\",\"pw1\"]");
    const uint8_t *fr;
    size_t len;
    ck_assert_int_eq(gw_iotmp_finish(&w, &fr, &len), 0);
    ck_assert_int_eq(ws_send(c, fr, 5, 2), 0);
    ck_assert_int_eq(ws_send(c, fr + 5, len - 5, 2), 0);
    expect_frame(c, GW_IOTMP_OK);
    ck_assert_int_eq(RX.sid, 8);
    ck_assert_int_eq(ws_send(c, "\x05\x00\x05\x00", 4, 2), 0);
    /* one IOTMP frame per binary message on the way out */
    ck_assert_int_eq(ws_next(c), 0);
    ck_assert_uint_eq(c->ws_len, 2);
    ck_assert_int_eq(memcmp(c->wsbuf, "\x05\x00", 2), 0);
    ck_assert_int_eq(ws_next(c), 0);
    ck_assert_uint_eq(c->ws_len, 2);
    c->ws_off = c->ws_len;
    t_close(c);
}
END_TEST

/* --- Memory per idle device --- */

START_TEST(test_broker_thousand_idle_devices)
{
    int st;
    json_t *j = http("GET", "/_control/stats", NULL, &st);
    long before = (long)json_integer_value(json_object_get(j, "rss_kb"));
    json_decref(j);
    enum { N = 1000 };
    static struct tc *devs[N];
    for (int i = 0; i < N; i++) {
        char d[16], p[16];
        snprintf(d, sizeof d, "d%04d", i);
        snprintf(p, sizeof p, "p%04d", i);
        devs[i] = t_open(T_TCP);
        send_connect(devs[i], (uint16_t)(i + 1), "load", d, p);
    }
    for (int i = 0; i < N; i++) {
        expect_frame(devs[i], GW_IOTMP_OK);
        ck_assert_int_eq(RX.sid, i + 1);
    }
    j = http("GET", "/v3/users/load/devices", NULL, &st);
    ck_assert_int_eq(json_array_size(j), N);
    json_decref(j);
    j = http("GET", "/_control/stats", NULL, &st);
    long after = (long)json_integer_value(json_object_get(j, "rss_kb"));
    ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(j, "connections"),
                                                       "devices")),
                     N);
    json_decref(j);
    printf("broker RSS: %ld kB before, %ld kB with %d idle devices: %.2f kB per device\n", before,
           after, N, (double)(after - before) / N);
    /* every device is still served */
    send_keepalive(devs[N - 1]);
    expect_frame(devs[N - 1], GW_IOTMP_KEEP_ALIVE);
    for (int i = 0; i < N; i++)
        t_close(devs[i]);
}
END_TEST

static Suite *broker_suite(void)
{
    Suite *s = suite_create("broker");
    TCase *tc = tcase_create("session");
    tcase_add_checked_fixture(tc, setup_plain, broker_stop);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_broker_connect_good_and_bad_credentials);
    tcase_add_test(tc, test_broker_connect_parameters_and_redirect);
    tcase_add_test(tc, test_broker_first_message_not_connect_is_closed);
    tcase_add_test(tc, test_broker_keepalive_echo_and_switch);
    tcase_add_test(tc, test_broker_second_connect_replaces_the_first);
    tcase_add_test(tc, test_broker_keepalive_timeout_drops_silent_device);
    suite_add_tcase(s, tc);

    tc = tcase_create("bad_input");
    tcase_add_checked_fixture(tc, setup_small_frames, broker_stop);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_broker_oversize_frame_closes_only_that_connection);
    tcase_add_test(tc, test_broker_malformed_frames_and_garbage);
    suite_add_tcase(s, tc);

    tc = tcase_create("rest");
    tcase_add_checked_fixture(tc, setup_plain, broker_stop);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_broker_rest_run_unknown_device_is_404);
    tcase_add_test(tc, test_broker_rest_run_answered_by_device);
    tcase_add_test(tc, test_broker_rest_describe);
    tcase_add_test(tc, test_broker_device_disconnects_mid_call);
    tcase_add_test(tc, test_broker_call_timeout_is_504);
    tcase_add_test(tc, test_broker_streams);
    tcase_add_test(tc, test_broker_peers_vanishing_mid_way);
    suite_add_tcase(s, tc);

    tc = tcase_create("actions");
    tcase_add_checked_fixture(tc, setup_plain, broker_stop);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_broker_write_bucket_both_layouts);
    tcase_add_test(tc, test_broker_properties);
    tcase_add_test(tc, test_broker_call_device_relay_and_locks);
    tcase_add_test(tc, test_broker_control_freeze_and_drop);
    suite_add_tcase(s, tc);

    tc = tcase_create("transports");
    tcase_add_checked_fixture(tc, setup_tls, broker_stop);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_broker_tls_and_wss);
    tcase_add_test(tc, test_broker_ws_frames_span_messages);
    tcase_add_test(tc, test_broker_tls_connection_outlives_the_handshake_timeout);
    suite_add_tcase(s, tc);

    tc = tcase_create("load");
    tcase_add_checked_fixture(tc, setup_plain, broker_stop);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_broker_thousand_idle_devices);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    /* 1,000 devices need about 2,100 descriptors here and as many in the broker (inherited) */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
        rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    SRunner *sr = srunner_create(broker_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
