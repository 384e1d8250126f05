/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The byte link under gw_testdev (internal to tests/device): URL parsing, a TCP connection with a
 * timeout, TLS through OpenSSL (CA file, host name or IP check) and a minimal RFC 6455 WebSocket
 * client (HTTP upgrade with subprotocol "iotmp", masked binary frames out, fragmented binary
 * frames, ping/pong and close in). The socket is non-blocking; writes wait with poll() up to a
 * timeout, reads take what is there. Upper layers see a plain byte stream either way.
 */
#ifndef GW_TESTDEV_LINK_H
#define GW_TESTDEV_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gw_testdev_scheme {
    GW_TESTDEV_TCP,
    GW_TESTDEV_TLS,
    GW_TESTDEV_WS,
    GW_TESTDEV_WSS,
};

struct gw_testdev_url {
    enum gw_testdev_scheme scheme;
    char host[256];
    uint16_t port;
    char path[256]; /* WebSocket only; default "/iotmp" */
};

struct gw_testdev_buf {
    uint8_t *p;
    size_t len, cap;
};

struct gw_testdev_link {
    int fd;                  /* -1 when closed */
    enum gw_testdev_scheme scheme;
    void *ssl_ctx;           /* SSL_CTX * */
    void *ssl;               /* SSL * */
    struct gw_testdev_buf ws_in; /* raw WebSocket bytes not yet parsed */
    bool ws_in_message;      /* a fragmented data message is in progress */
    bool ws_close_sent;
    int ws_close_code;       /* the peer's close code, 0 if none */
    uint64_t ws_pings, ws_pongs;
    char err[1024];          /* last failure in words */
};

/* Parses url. 0 or GW_EINVAL (err names what is wrong). */
int gw_testdev_url_parse(const char *url, struct gw_testdev_url *u, char *err, size_t err_len);

/* Prepares l (closed). */
void gw_testdev_link_init(struct gw_testdev_link *l);

/*
 * Connects, does the TLS and WebSocket handshakes. ca_file borrowed (NULL: system CA store);
 * insecure skips verification. Returns 0, GW_ETIMEDOUT, GW_ETLS, GW_EPEER (bad upgrade answer),
 * GW_ECONNRESET, or a negated errno; l->err says what happened.
 */
int gw_testdev_link_open(struct gw_testdev_link *l, const struct gw_testdev_url *u,
                         const char *ca_file, bool insecure, int timeout_ms);

/* Writes all of data (one binary WebSocket message on ws/wss), waiting up to timeout_ms. */
int gw_testdev_link_send(struct gw_testdev_link *l, const void *data, size_t len, int timeout_ms);

/*
 * Reads what is available without waiting and appends the application bytes to out (WebSocket
 * control frames are handled here: ping → pong, close → close). Returns the number of bytes
 * appended (0: nothing yet), or GW_ECONNRESET when the peer closed, GW_EFRAME for a WebSocket
 * protocol violation, GW_ETLS, or a negated errno (l->err says what).
 */
int gw_testdev_link_recv(struct gw_testdev_link *l, struct gw_testdev_buf *out);

/* True when the TLS layer holds decrypted bytes that poll() would not report. */
bool gw_testdev_link_pending(const struct gw_testdev_link *l);

/* Sends a WebSocket ping (GW_ENOTSUP on tcp/tls). */
int gw_testdev_link_ping(struct gw_testdev_link *l, const void *data, size_t len);

/* Closes (WebSocket close frame and TLS close_notify best effort). Safe to call twice. */
void gw_testdev_link_close(struct gw_testdev_link *l);

/* Appends len bytes to b, growing it. */
void gw_testdev_buf_append(struct gw_testdev_buf *b, const void *data, size_t len);
/* Drops the first n bytes of b. */
void gw_testdev_buf_consume(struct gw_testdev_buf *b, size_t n);
void gw_testdev_buf_free(struct gw_testdev_buf *b);

#endif
