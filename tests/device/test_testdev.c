/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of gw_testdev against small scripted peers on 127.0.0.1 (a thread per test plays the
 * server with plain sockets): URL parsing, CONNECT outcomes (OK, ERROR 2, ERROR 1 with a redirect,
 * no answer), and the WebSocket client's handling of what the broker's lws server may never send:
 * a fragmented message with a ping in the middle, several IOTMP frames in one message, a close
 * handshake, a masked server frame, a wrong Sec-WebSocket-Accept and a missing subprotocol.
 */
#include "testdev.h"
#include "testdev_link.h"

#include "gw/error.h"
#include "gw/iotmp.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* --- A scripted peer --- */

enum script {
    S_TCP_OK,          /* answer CONNECT with OK, then DESCRIBE, then close */
    S_TCP_REFUSE,      /* ERROR 2 */
    S_TCP_REDIRECT,    /* ERROR 1 + "iotmps://other:25206" */
    S_TCP_SILENT,      /* never answer */
    S_WS_FULL,         /* fragmented OK + ping, two frames in one message, close */
    S_WS_BAD_ACCEPT,
    S_WS_NO_PROTOCOL,
    S_WS_MASKED,       /* OK, then a masked frame */
};

struct peer {
    enum script script;
    int listen_fd;
    uint16_t port;
    pthread_t th;
    /* results, read after the join */
    bool connect_seen, client_masked, pong_seen, close_seen;
    int answers;               /* OK frames received from the device */
    char describe_payload[512];
};

static int read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = recv(fd, p, len, 0);
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads one client WebSocket frame (must be masked); returns opcode, payload in buf. */
static int ws_read(struct peer *pe, int fd, uint8_t *buf, size_t cap, size_t *len)
{
    uint8_t h[2];
    if (read_full(fd, h, 2) < 0)
        return -1;
    uint64_t n = h[1] & 0x7F;
    if (n == 126) {
        uint8_t e[2];
        if (read_full(fd, e, 2) < 0)
            return -1;
        n = (uint64_t)e[0] << 8 | e[1];
    } else if (n == 127) {
        return -1;
    }
    pe->client_masked = (h[1] & 0x80) != 0;
    uint8_t mask[4] = {0};
    if (pe->client_masked && read_full(fd, mask, 4) < 0)
        return -1;
    if (n > cap || read_full(fd, buf, (size_t)n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        buf[i] ^= mask[i & 3];
    *len = (size_t)n;
    return h[0] & 0x0F;
}

static void ws_write(int fd, unsigned first_byte, const void *p, size_t len, bool masked)
{
    uint8_t h[8] = {(uint8_t)first_byte, (uint8_t)(len | (masked ? 0x80 : 0))};
    send(fd, h, 2, MSG_NOSIGNAL);
    if (masked) {
        uint8_t mask[4] = {1, 2, 3, 4}, tmp[128];
        send(fd, mask, 4, MSG_NOSIGNAL);
        for (size_t i = 0; i < len; i++)
            tmp[i] = ((const uint8_t *)p)[i] ^ mask[i & 3];
        send(fd, tmp, len, MSG_NOSIGNAL);
    } else {
        send(fd, p, len, MSG_NOSIGNAL);
    }
}

static size_t frame(uint8_t *out, size_t cap, uint64_t type, uint16_t sid, int code,
                    const char *payload_str)
{
    uint8_t buf[256];
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, buf, sizeof buf, type);
    if (sid)
        gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    if (code >= 0)
        gw_iotmp_put_varint(&w, GW_IOTMP_PARAMETERS, (uint64_t)code);
    if (payload_str)
        gw_pson_put_cstr(gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD), payload_str);
    const uint8_t *f;
    size_t len;
    ck_assert_int_eq(gw_iotmp_finish(&w, &f, &len), 0);
    ck_assert_uint_le(len, cap);
    memcpy(out, f, len);
    return len;
}

/* Parses the device's CONNECT from bytes; returns its stream id. */
static uint16_t connect_sid(struct peer *pe, const uint8_t *p, size_t len)
{
    struct gw_iotmp_reader r;
    uint8_t rb[256];
    gw_iotmp_reader_init(&r, rb, sizeof rb, 4096);
    size_t used, blen;
    uint64_t type;
    const uint8_t *body;
    if (gw_iotmp_feed(&r, p, len, &used, &type, &body, &blen) != 1 || type != GW_IOTMP_CONNECT)
        return 0;
    struct gw_iotmp_frame f;
    uint16_t sid = 0;
    if (gw_iotmp_parse(&f, type, body, blen) == 0 && gw_iotmp_get_stream_id(&f, &sid) == 0)
        pe->connect_seen = true;
    return sid;
}

static void ws_accept_handshake(struct peer *pe, int c)
{
    char head[4096];
    size_t hl = 0;
    while (hl < sizeof head - 1) {
        ssize_t n = recv(c, head + hl, sizeof head - 1 - hl, 0);
        if (n <= 0)
            return;
        hl += (size_t)n;
        head[hl] = '\0';
        if (strstr(head, "\r\n\r\n"))
            break;
    }
    char key[64] = "";
    const char *k = strcasestr(head, "Sec-WebSocket-Key: ");
    if (k)
        sscanf(k + 19, "%63[^\r]", key);
    char concat[128];
    snprintf(concat, sizeof concat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t sha[SHA_DIGEST_LENGTH];
    EVP_Digest(concat, strlen(concat), sha, NULL, EVP_sha1(), NULL);
    char acc[64];
    EVP_EncodeBlock((unsigned char *)acc, sha, SHA_DIGEST_LENGTH);
    if (pe->script == S_WS_BAD_ACCEPT)
        acc[0] = acc[0] == 'A' ? 'B' : 'A';
    char resp[512];
    int n = snprintf(resp, sizeof resp,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
                     acc,
                     pe->script == S_WS_NO_PROTOCOL ? "" : "Sec-WebSocket-Protocol: iotmp\r\n");
    send(c, resp, (size_t)n, MSG_NOSIGNAL);
}

static void *peer_main(void *arg)
{
    struct peer *pe = arg;
    int c = accept(pe->listen_fd, NULL, NULL);
    if (c < 0)
        return NULL;
    uint8_t buf[1024], out[512];
    size_t len = 0;
    bool ws = pe->script >= S_WS_FULL;
    if (ws) {
        ws_accept_handshake(pe, c);
        if (pe->script == S_WS_BAD_ACCEPT || pe->script == S_WS_NO_PROTOCOL)
            goto done;
        if (ws_read(pe, c, buf, sizeof buf, &len) != 2)
            goto done;
    } else {
        ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n <= 0)
            goto done;
        len = (size_t)n;
    }
    uint16_t sid = connect_sid(pe, buf, len);
    switch (pe->script) {
    case S_TCP_OK: {
        size_t n = frame(out, sizeof out, GW_IOTMP_OK, sid, -1, NULL);
        n += frame(out + n, sizeof out - n, GW_IOTMP_DESCRIBE, 77, -1, NULL);
        send(c, out, n, MSG_NOSIGNAL);
        ssize_t r = recv(c, buf, sizeof buf, 0);
        if (r > 4 && buf[0] == GW_IOTMP_OK) {
            pe->answers++;
            memcpy(pe->describe_payload, buf, (size_t)r < sizeof pe->describe_payload
                                                   ? (size_t)r : sizeof pe->describe_payload);
        }
        break;
    }
    case S_TCP_REFUSE:
        send(c, out, frame(out, sizeof out, GW_IOTMP_ERROR, sid, 2, NULL), MSG_NOSIGNAL);
        break;
    case S_TCP_REDIRECT:
        send(c, out, frame(out, sizeof out, GW_IOTMP_ERROR, sid, 1, "iotmps://other:25206"),
             MSG_NOSIGNAL);
        break;
    case S_TCP_SILENT:
        recv(c, buf, sizeof buf, 0); /* until the device gives up and closes */
        break;
    case S_WS_FULL: {
        /* OK split over three fragments with a ping between them. */
        size_t n = frame(out, sizeof out, GW_IOTMP_OK, sid, -1, NULL);
        ws_write(c, 0x02, out, 1, false);
        ws_write(c, 0x89, "p1", 2, false);
        ws_write(c, 0x00, out + 1, 1, false);
        ws_write(c, 0x80, out + 2, n - 2, false);
        /* DESCRIBE and RUN echo in one message. */
        uint8_t two[256];
        size_t m = frame(two, sizeof two, GW_IOTMP_DESCRIBE, 5, -1, NULL);
        uint8_t run[128];
        struct gw_iotmp_writer w;
        gw_iotmp_writer_init(&w, run, sizeof run, GW_IOTMP_RUN);
        gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 6);
        gw_pson_put_cstr(gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD), "hi");
        gw_pson_put_cstr(gw_iotmp_put_pson(&w, GW_IOTMP_RESOURCE), "echo");
        const uint8_t *rf;
        size_t rl;
        gw_iotmp_finish(&w, &rf, &rl);
        memcpy(two + m, rf, rl);
        ws_write(c, 0x82, two, m + rl, false);
        for (int i = 0; i < 6 && (pe->answers < 2 || !pe->pong_seen); i++) {
            int op = ws_read(pe, c, buf, sizeof buf, &len);
            if (op == 0xA && len == 2 && memcmp(buf, "p1", 2) == 0)
                pe->pong_seen = true;
            else if (op == 0x2 && len > 0 && buf[0] == GW_IOTMP_OK)
                pe->answers++;
            else if (op < 0)
                break;
        }
        uint8_t code[2] = {0x03, 0xE8};
        ws_write(c, 0x88, code, 2, false);
        if (ws_read(pe, c, buf, sizeof buf, &len) == 0x8)
            pe->close_seen = true;
        break;
    }
    case S_WS_MASKED: {
        size_t n = frame(out, sizeof out, GW_IOTMP_OK, sid, -1, NULL);
        ws_write(c, 0x82, out, n, false);
        /* Only after the device's KEEP_ALIVE, so the bad frame is not part of the OK read. */
        if (ws_read(pe, c, buf, sizeof buf, &len) != 2)
            break;
        n = frame(out, sizeof out, GW_IOTMP_KEEP_ALIVE, 0, -1, NULL);
        ws_write(c, 0x82, out, n, true);
        recv(c, buf, sizeof buf, 0);
        break;
    }
    default:
        break;
    }
done:
    close(c);
    return NULL;
}

static void peer_start(struct peer *pe, enum script s)
{
    memset(pe, 0, sizeof *pe);
    pe->script = s;
    pe->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    ck_assert_int_eq(bind(pe->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(pe->listen_fd, 4), 0);
    getsockname(pe->listen_fd, (struct sockaddr *)&a, &al);
    pe->port = ntohs(a.sin_port);
    pthread_create(&pe->th, NULL, peer_main, pe);
}

static void peer_join(struct peer *pe)
{
    pthread_join(pe->th, NULL);
    close(pe->listen_fd);
}

static int h_echo(struct gw_testdev *d, const struct gw_testdev_resource *r,
                  const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)d;
    (void)r;
    (void)describe;
    if (in)
        gw_value_copy(out, in);
    return 0;
}

static struct gw_testdev *device_for(const struct peer *pe, const char *scheme, int timeout_ms)
{
    char url[128];
    snprintf(url, sizeof url, "%s://127.0.0.1:%u%s", scheme, pe->port,
             strcmp(scheme, "ws") == 0 ? "/iotmp" : "");
    struct gw_testdev_config cfg = {.url = url, .user = "u", .device = "d", .password = "p",
                                    .timeout_ms = timeout_ms};
    struct gw_testdev *d = gw_testdev_new(&cfg);
    struct gw_testdev_resource r = {.name = "echo", .fn = GW_TESTDEV_FN_INOUT, .handler = h_echo};
    ck_assert_int_eq(gw_testdev_add_resource(d, &r), 0);
    ck_assert_int_eq(gw_testdev_add_resource(d, &r), GW_EEXIST);
    return d;
}

/* Polls until the link goes away (at most ~5 s). */
static int poll_until_lost(struct gw_testdev *d)
{
    for (int i = 0; i < 50; i++) {
        int rc = gw_testdev_poll(d, 100);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* --- Tests --- */

START_TEST(test_testdev_url_parse)
{
    struct gw_testdev_url u;
    char err[256];
    ck_assert_int_eq(gw_testdev_url_parse("tcp://127.0.0.1:25204", &u, err, sizeof err), 0);
    ck_assert_int_eq(u.scheme, GW_TESTDEV_TCP);
    ck_assert_uint_eq(u.port, 25204);
    ck_assert_int_eq(gw_testdev_url_parse("wss://example.org/x/iotmp", &u, err, sizeof err), 0);
    ck_assert_int_eq(u.scheme, GW_TESTDEV_WSS);
    ck_assert_uint_eq(u.port, 443);
    ck_assert_str_eq(u.path, "/x/iotmp");
    ck_assert_int_eq(gw_testdev_url_parse("ws://[::1]:8080", &u, err, sizeof err), 0);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_str_eq(u.path, "/iotmp");
    ck_assert_int_eq(gw_testdev_url_parse("iotmps://h", &u, err, sizeof err), 0);
    ck_assert_uint_eq(u.port, 25206);
    ck_assert_int_eq(gw_testdev_url_parse("http://h:1", &u, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "scheme"));
    ck_assert_int_eq(gw_testdev_url_parse("tcp://h:99999", &u, err, sizeof err), GW_EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "bad port"));
    ck_assert_int_eq(gw_testdev_url_parse("tcp://:1", &u, err, sizeof err), GW_EINVAL);
    ck_assert_int_eq(gw_testdev_url_parse("tcp://h:1/path", &u, err, sizeof err), GW_EINVAL);
}
END_TEST

START_TEST(test_testdev_json_round_trip)
{
    struct gw_value v;
    char err[200];
    const char *text = "{\"a\":[1,-2,2.5,\"x\",true,null],\"b\":{\"$bytes\":\"00ff\"}}";
    ck_assert_int_eq(gw_testdev_json_parse(text, &v, err, sizeof err), 0);
    ck_assert_int_eq(gw_value_map_get(&v, "b")->type, GW_VALUE_BYTES);
    char *back = gw_testdev_json_dump(&v);
    ck_assert_str_eq(back, text);
    free(back);
    gw_value_fini(&v);
    ck_assert_int_eq(gw_testdev_json_parse("{\"a\": [1,", &v, err, sizeof err), GW_EJSON);
    ck_assert_ptr_nonnull(strstr(err, "line 1"));
    ck_assert_int_eq(gw_testdev_json_parse("{\"$bytes\":\"zz\"}", &v, err, sizeof err),
                     GW_EJSON);
}
END_TEST

START_TEST(test_testdev_connect_ok_and_describe)
{
    struct peer pe;
    peer_start(&pe, S_TCP_OK);
    struct gw_testdev *d = device_for(&pe, "tcp", 5000);
    ck_assert_int_eq(gw_testdev_connect(d), 0);
    ck_assert(gw_testdev_connected(d));
    ck_assert_str_eq(gw_testdev_transport(d), "tcp");
    ck_assert_int_eq(poll_until_lost(d), GW_ELINK);
    peer_join(&pe);
    ck_assert(pe.connect_seen);
    ck_assert_int_eq(pe.answers, 1);
    /* The DESCRIBE answer names the resource: OK, stream 77, PAYLOAD {"echo": {"fn": 4, ...}} */
    ck_assert_ptr_nonnull(memmem(pe.describe_payload, sizeof pe.describe_payload, "echo", 4));
    gw_testdev_free(d);
}
END_TEST

START_TEST(test_testdev_connect_refused_code_2)
{
    struct peer pe;
    peer_start(&pe, S_TCP_REFUSE);
    struct gw_testdev *d = device_for(&pe, "tcp", 5000);
    ck_assert_int_eq(gw_testdev_connect(d), GW_EAUTH);
    ck_assert_int_eq(gw_testdev_connect_code(d), 2);
    ck_assert_ptr_nonnull(strstr(gw_testdev_error(d), "bad credentials"));
    ck_assert(!gw_testdev_connected(d));
    peer_join(&pe);
    gw_testdev_free(d);
}
END_TEST

START_TEST(test_testdev_connect_redirect)
{
    struct peer pe;
    peer_start(&pe, S_TCP_REDIRECT);
    struct gw_testdev *d = device_for(&pe, "tcp", 5000);
    ck_assert_int_eq(gw_testdev_connect(d), GW_EREDIRECT);
    ck_assert_int_eq(gw_testdev_connect_code(d), 1);
    ck_assert_str_eq(gw_testdev_redirect(d), "iotmps://other:25206");
    peer_join(&pe);
    gw_testdev_free(d);
}
END_TEST

START_TEST(test_testdev_connect_times_out)
{
    struct peer pe;
    peer_start(&pe, S_TCP_SILENT);
    struct gw_testdev *d = device_for(&pe, "tcp", 300);
    ck_assert_int_eq(gw_testdev_connect(d), GW_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(gw_testdev_error(d), "no answer to CONNECT"));
    peer_join(&pe);
    gw_testdev_free(d);
}
END_TEST

START_TEST(test_testdev_ws_fragments_ping_close)
{
    struct peer pe;
    peer_start(&pe, S_WS_FULL);
    struct gw_testdev *d = device_for(&pe, "ws", 5000);
    ck_assert_int_eq(gw_testdev_connect(d), 0);
    ck_assert_int_eq(poll_until_lost(d), GW_ELINK);
    ck_assert_ptr_nonnull(strstr(gw_testdev_error(d), "code 1000"));
    struct gw_testdev_stats st;
    gw_testdev_get_stats(d, &st);
    peer_join(&pe);
    ck_assert(pe.client_masked);
    ck_assert(pe.connect_seen);
    ck_assert(pe.pong_seen);
    ck_assert_int_eq(pe.answers, 2); /* DESCRIBE and RUN from one message */
    ck_assert(pe.close_seen);
    ck_assert_uint_eq(st.describes, 1);
    ck_assert_uint_eq(st.runs, 1);
    gw_testdev_free(d);
}
END_TEST

START_TEST(test_testdev_ws_rejects_bad_accept)
{
    struct peer pe;
    peer_start(&pe, S_WS_BAD_ACCEPT);
    struct gw_testdev *d = device_for(&pe, "ws", 5000);
    ck_assert_int_eq(gw_testdev_connect(d), GW_EPEER);
    ck_assert_ptr_nonnull(strstr(gw_testdev_error(d), "Sec-WebSocket-Accept"));
    peer_join(&pe);
    gw_testdev_free(d);
}
END_TEST

START_TEST(test_testdev_ws_requires_subprotocol)
{
    struct peer pe;
    peer_start(&pe, S_WS_NO_PROTOCOL);
    struct gw_testdev *d = device_for(&pe, "ws", 5000);
    ck_assert_int_eq(gw_testdev_connect(d), GW_EPEER);
    ck_assert_ptr_nonnull(strstr(gw_testdev_error(d), "subprotocol"));
    peer_join(&pe);
    gw_testdev_free(d);
}
END_TEST

START_TEST(test_testdev_ws_rejects_masked_server_frame)
{
    struct peer pe;
    peer_start(&pe, S_WS_MASKED);
    struct gw_testdev *d = device_for(&pe, "ws", 5000);
    ck_assert_int_eq(gw_testdev_connect(d), 0);
    ck_assert_int_eq(gw_testdev_keepalive(d), 0);
    ck_assert_int_eq(poll_until_lost(d), GW_ELINK);
    ck_assert_ptr_nonnull(strstr(gw_testdev_error(d), "masked"));
    peer_join(&pe);
    gw_testdev_free(d);
}
END_TEST

static Suite *testdev_suite(void)
{
    Suite *s = suite_create("testdev");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_testdev_url_parse);
    tcase_add_test(tc, test_testdev_json_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("connect");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_testdev_connect_ok_and_describe);
    tcase_add_test(tc, test_testdev_connect_refused_code_2);
    tcase_add_test(tc, test_testdev_connect_redirect);
    tcase_add_test(tc, test_testdev_connect_times_out);
    suite_add_tcase(s, tc);
    tc = tcase_create("websocket");
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_testdev_ws_fragments_ping_close);
    tcase_add_test(tc, test_testdev_ws_rejects_bad_accept);
    tcase_add_test(tc, test_testdev_ws_requires_subprotocol);
    tcase_add_test(tc, test_testdev_ws_rejects_masked_server_frame);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(testdev_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
