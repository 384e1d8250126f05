/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Uplink transports behind one small interface: a byte pipe to the IOTMP server that carries whole
 * frames out and delivers received bytes as a stream. Four kinds:
 *   TCP  a non-blocking socket of our own, watched by gw_loop_watch(); connect timeout, TCP
 *        keepalive and TCP_USER_TIMEOUT of about twice the IOTMP keep-alive.
 *   TLS  the same socket with OpenSSL (lws 4.1.6 cannot open a raw TLS client): a non-blocking
 *        handshake driven by the watch; peer verification on by default (system CA store or
 *        ca_file, host name or IP checked), an optional client certificate.
 *   WS / WSS  a libwebsockets client on the loop's lws context, subprotocol "iotmp"; one frame per
 *        binary message out, received messages are treated as a byte stream (PROTOCOL.md 14.11).
 *
 * Every callback runs on the loop thread and never from inside a gw_transport_* call, so the owner
 * may close the transport from any callback. After on_close (or gw_transport_close) no callback
 * runs again.
 */
#ifndef GW_TRANSPORT_H
#define GW_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_loop;
struct gw_transport;

enum gw_transport_kind {
    GW_TRANSPORT_TCP,
    GW_TRANSPORT_TLS,
    GW_TRANSPORT_WS,
    GW_TRANSPORT_WSS,
};

/* A parsed uplink URL: iotmp://host[:port], iotmps://..., ws://host[:port][/path], wss://... */
struct gw_transport_url {
    enum gw_transport_kind kind;
    char host[256];
    uint16_t port;
    char path[256];             /* "/iotmp" by default for ws/wss; "" for iotmp/iotmps */
};

/*
 * Parses url into *out, with the default ports 25204 (iotmp), 25206 (iotmps), 80 (ws), 443 (wss)
 * and the default path /iotmp. An IPv6 literal is written in brackets ("iotmp://[::1]:25204").
 * Returns 0 or GW_EINVAL; *why then names what is wrong (a static string).
 */
int gw_transport_url_parse(const char *url, struct gw_transport_url *out, const char **why);

/* True for TLS and WSS. */
bool gw_transport_kind_secure(enum gw_transport_kind kind);

struct gw_transport_opts {
    struct gw_transport_url url;
    const char *ca_file;        /* NULL: the system CA store */
    const char *cert_file;      /* optional client certificate (PEM) and its key */
    const char *key_file;
    bool insecure;              /* no peer verification (logged as a warning at every connect) */
    unsigned connect_timeout_ms;/* TCP connect + TLS / WebSocket handshake */
    unsigned keepalive_s;       /* the IOTMP keep-alive: sets TCP keepalive / TCP_USER_TIMEOUT */
};

struct gw_transport_cb {
    void (*on_open)(void *arg);                                 /* ready to carry frames */
    void (*on_bytes)(void *arg, const uint8_t *p, size_t len);  /* received bytes */
    void (*on_drain)(void *arg);                                /* the send queue became empty */
    /* The link is gone (err: GW_E... code, why: a human-readable reason, borrowed). The owner
     * must still call gw_transport_close() to free the transport. */
    void (*on_close)(void *arg, int err, const char *why);
    void *arg;
};

/*
 * Starts connecting. Returns 0 and the transport in *out (its on_open or on_close follows), or a
 * GW_E... code for what fails at once (bad options, socket(), a name that does not resolve).
 */
int gw_transport_open(struct gw_loop *loop, const struct gw_transport_opts *opts,
                      const struct gw_transport_cb *cb, struct gw_transport **out);

/*
 * Queues one whole IOTMP frame (copied). Never blocks and never calls back. Returns 0, or
 * GW_ENOTCONN before on_open or after the link failed.
 */
int gw_transport_send(struct gw_transport *t, const void *frame, size_t len);

/* Bytes queued and not yet handed to the kernel (or to lws). */
size_t gw_transport_pending(const struct gw_transport *t);

/* True when the peer was authenticated: TLS or WSS with verification on and passed. */
bool gw_transport_verified(const struct gw_transport *t);

/* Closes at once (queued bytes are dropped) and frees t. No callback runs afterwards. NULL is
 * ignored. Safe from inside any callback of t. */
void gw_transport_close(struct gw_transport *t);

/* Best effort: writes what is queued (for a clean DISCONNECT) without waiting, then closes. */
void gw_transport_flush_close(struct gw_transport *t);

#endif
