/* SPDX-License-Identifier: Apache-2.0 */
/*
 * WebSocket and secure WebSocket transports: a libwebsockets client on the loop's lws context,
 * subprotocol "iotmp" (PROTOCOL.md 14.11). Each frame goes out as one binary message (every
 * buffer carries LWS_PRE bytes of headroom, lws masks in place); received message fragments are
 * handed on as a byte stream.
 *
 * The client needs a protocol entry of its own, so this file creates one extra vhost per
 * (lws context, CA file, client certificate, key) on first use, with no listener; vhosts live as
 * long as the context. The loop's own vhost is left alone. For wss, lws verifies the peer and its
 * host name unless `insecure` is set.
 *
 * The wsi points at our state through its user pointer. Closing detaches it (the pointer is
 * cleared, so later lws callbacks for that wsi find nothing) and asks lws to kill the wsi
 * asynchronously, so our state can be freed at once.
 */
#include "gw/error.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/mem.h"
#include "transport_internal.h"

#include <libwebsockets.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ws_msg {
    struct ws_msg *next;
    size_t len;
    uint8_t buf[]; /* LWS_PRE headroom, then len bytes */
};

struct ws {
    struct gw_transport base;
    struct gw_lws_handler h;    /* opaque user data of the wsi (see verify_hook) */
    struct gw_loop *loop;
    struct gw_transport_cb cb;
    struct gw_transport_opts opts;
    char where[300];
    struct lws *wsi;
    struct gw_timer *timeout;
    struct gw_timer *defer;
    bool open, failed, fail_reported, opening, verified;
    bool zombie;                /* owner gone, flushing the last messages before closing */
    int fail_err;
    char fail_why[1024];
    char verify_err[128];       /* OpenSSL's verdict on the server certificate, if it failed */
    struct ws_msg *head, *tail;
    size_t pending;
};

static void ws_free(struct ws *w)
{
    gw_timer_free(w->timeout);
    gw_timer_free(w->defer);
    while (w->head) {
        struct ws_msg *m = w->head;
        w->head = m->next;
        free(m);
    }
    free(w);
}

static void detach_wsi(struct ws *w)
{
    if (w->wsi) {
        lws_set_opaque_user_data(w->wsi, NULL);
        lws_set_wsi_user(w->wsi, NULL);
        lws_set_timeout(w->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        w->wsi = NULL;
    }
}

static void ws_fail(struct ws *w, int err, const char *why)
{
    if (w->failed)
        return;
    w->failed = true;
    w->open = false;
    w->fail_err = err;
    snprintf(w->fail_why, sizeof(w->fail_why), "%s", why);
    gw_timer_stop(w->timeout);
    gw_timer_start(w->defer, 0);
}

static void report(struct ws *w)
{
    if (w->fail_reported || !w->failed)
        return;
    w->fail_reported = true;
    gw_timer_stop(w->defer);
    if (w->cb.on_close)
        w->cb.on_close(w->cb.arg, w->fail_err, w->fail_why);
}

static void on_defer(void *arg)
{
    struct ws *w = arg;
    if (w->zombie) {
        detach_wsi(w);
        ws_free(w);
        return;
    }
    report(w);
}

static void on_timeout(void *arg)
{
    struct ws *w = arg;
    if (w->zombie) {
        detach_wsi(w);
        ws_free(w);
        return;
    }
    char why[360];
    snprintf(why, sizeof(why), "%s %s: no connection after %u ms",
             w->opts.url.kind == GW_TRANSPORT_WSS ? "WSS" : "WS", w->where,
             w->opts.connect_timeout_ms);
    detach_wsi(w);
    ws_fail(w, GW_ETIMEDOUT, why);
    report(w);
}

/* Writes queued messages while lws can take them. Returns -1 to make lws close the wsi. */
static int write_some(struct ws *w, struct lws *wsi)
{
    while (w->head && !lws_send_pipe_choked(wsi)) {
        struct ws_msg *m = w->head;
        int n = lws_write(wsi, m->buf + LWS_PRE, m->len, LWS_WRITE_BINARY);
        if (n < (int)m->len) {
            if (!w->zombie)
                ws_fail(w, GW_ECONNRESET, "WebSocket write failed");
            return -1;
        }
        w->head = m->next;
        if (!w->head)
            w->tail = NULL;
        w->pending -= m->len;
        free(m);
    }
    if (w->head) {
        lws_callback_on_writable(wsi);
        return 0;
    }
    if (w->zombie)
        return -1;
    if (w->cb.on_drain)
        w->cb.on_drain(w->cb.arg);
    return 0;
}

static int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                       size_t len)
{
    struct ws *w = user;
    if (!w)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR: {
        char why[800];
        const char *msg = in ? (const char *)in : "unknown";
        bool tls = w->opts.url.kind == GW_TRANSPORT_WSS;
        int err = GW_ECONNRESET;
        if (tls && w->verify_err[0]) {
            err = GW_ETLS_VERIFY;
            msg = w->verify_err;
        } else if (tls && (strstr(msg, "cert") || strstr(msg, "X509") || strstr(msg, "verif"))) {
            err = GW_ETLS_VERIFY;
        }
        snprintf(why, sizeof(why), "%s %s: connection failed: %s%s", tls ? "WSS" : "WS",
                 w->where, err == GW_ETLS_VERIFY ? "server certificate refused: " : "", msg);
        lws_set_opaque_user_data(wsi, NULL);
        lws_set_wsi_user(wsi, NULL);
        w->wsi = NULL;
        if (w->zombie) {
            ws_free(w);
            return 0;
        }
        ws_fail(w, err, why);
        if (!w->opening)
            report(w);
        return 0;
    }
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        if (w->zombie)
            return -1;
        w->open = true;
        w->verified = w->opts.url.kind == GW_TRANSPORT_WSS && !w->opts.insecure;
        gw_timer_stop(w->timeout);
        gw_log_info("%s %s: connected%s", w->opts.url.kind == GW_TRANSPORT_WSS ? "WSS" : "WS",
                    w->where,
                    w->opts.url.kind == GW_TRANSPORT_WSS
                        ? (w->verified ? ", peer verified" : ", peer NOT verified (insecure)")
                        : "");
        if (w->cb.on_open)
            w->cb.on_open(w->cb.arg);
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (w->open && !w->zombie && w->cb.on_bytes && len)
            w->cb.on_bytes(w->cb.arg, in, len);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (!w->open && !w->zombie)
            return 0;
        return write_some(w, wsi);
    case LWS_CALLBACK_CLIENT_CLOSED:
    case LWS_CALLBACK_CLOSED_CLIENT_HTTP:
    case LWS_CALLBACK_WSI_DESTROY:
        lws_set_opaque_user_data(wsi, NULL);
        lws_set_wsi_user(wsi, NULL);
        w->wsi = NULL;
        if (w->zombie) {
            ws_free(w);
            return 0;
        }
        ws_fail(w, GW_ECONNRESET, "WebSocket closed by the peer");
        report(w);
        return 0;
    default:
        return 0;
    }
}

/*
 * lws 4.1 reports the server certificate check to protocol 0 of the context's first vhost (the
 * loop's), which forwards it here through the wsi's opaque user data (gw/loop.h). user is
 * OpenSSL's X509_STORE_CTX, len the verdict so far: the reason is kept so the failure names it.
 */
static int verify_hook(struct lws *wsi, int reason, void *user, void *in, size_t len,
                       struct gw_lws_handler *self)
{
    (void)wsi;
    (void)in;
    struct ws *w = (struct ws *)((char *)self - offsetof(struct ws, h));
    if (reason == LWS_CALLBACK_OPENSSL_PERFORM_SERVER_CERT_VERIFICATION && !len && user &&
        !w->verify_err[0]) {
        int e = X509_STORE_CTX_get_error((X509_STORE_CTX *)user);
        snprintf(w->verify_err, sizeof(w->verify_err), "%s", X509_verify_cert_error_string(e));
    }
    return 0;
}

static const struct lws_protocols ws_protocols[] = {
    {.name = "gw-iotmp-client", .callback = ws_callback, .rx_buffer_size = 65536},
    {.name = NULL, .callback = NULL},
};

/* One client vhost per (context, CA, cert, key), created on first use. Loop thread only. */
struct vh_entry {
    struct vh_entry *next;
    struct lws_context *ctx;
    char *ca, *cert, *key;
    struct lws_vhost *vh;
};
static struct vh_entry *vhosts;
static unsigned vh_count;

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static struct lws_vhost *client_vhost(struct lws_context *ctx, const struct gw_transport_opts *o)
{
    for (struct vh_entry *e = vhosts; e; e = e->next)
        if (e->ctx == ctx && same(e->ca, o->ca_file) && same(e->cert, o->cert_file) &&
            same(e->key, o->key_file))
            return e->vh;
    char name[32];
    snprintf(name, sizeof(name), "gw-uplink-%u", vh_count++);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = ws_protocols;
    info.vhost_name = name;
    info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.client_ssl_ca_filepath = o->ca_file;
    info.client_ssl_cert_filepath = o->cert_file;
    info.client_ssl_private_key_filepath = o->key_file ? o->key_file : o->cert_file;
    struct lws_vhost *vh = lws_create_vhost(ctx, &info);
    if (!vh)
        return NULL;
    struct vh_entry *e = gw_calloc(1, sizeof(*e));
    e->ctx = ctx;
    e->ca = o->ca_file ? gw_strdup(o->ca_file) : NULL;
    e->cert = o->cert_file ? gw_strdup(o->cert_file) : NULL;
    e->key = o->key_file ? gw_strdup(o->key_file) : NULL;
    e->vh = vh;
    e->next = vhosts;
    vhosts = e;
    return vh;
}

static int ws_send(struct gw_transport *t, const void *frame, size_t len)
{
    struct ws *w = (struct ws *)t;
    if (!w->open || !w->wsi)
        return GW_ENOTCONN;
    struct ws_msg *m = gw_malloc(sizeof(*m) + LWS_PRE + len);
    m->next = NULL;
    m->len = len;
    memcpy(m->buf + LWS_PRE, frame, len);
    if (w->tail)
        w->tail->next = m;
    else
        w->head = m;
    w->tail = m;
    w->pending += len;
    lws_callback_on_writable(w->wsi);
    return 0;
}

static size_t ws_pending(const struct gw_transport *t)
{
    return ((const struct ws *)t)->pending;
}

static bool ws_verified(const struct gw_transport *t)
{
    return ((const struct ws *)t)->verified;
}

static void ws_close(struct gw_transport *t, bool flush)
{
    struct ws *w = (struct ws *)t;
    if (flush && w->open && w->wsi && w->head) {
        /* Keep the state until lws has written the queue (at most 2 s), then close. */
        w->zombie = true;
        memset(&w->cb, 0, sizeof(w->cb));
        gw_timer_stop(w->defer);
        gw_timer_start(w->timeout, 2000);
        lws_callback_on_writable(w->wsi);
        return;
    }
    detach_wsi(w);
    ws_free(w);
}

static const struct gw_transport_vt ws_vt = {
    .send = ws_send,
    .pending = ws_pending,
    .verified = ws_verified,
    .close = ws_close,
};

int gw_transport_ws_open(struct gw_loop *loop, const struct gw_transport_opts *opts,
                         const struct gw_transport_cb *cb, struct gw_transport **out)
{
    bool tls = opts->url.kind == GW_TRANSPORT_WSS;
    struct lws_context *ctx = gw_loop_lws(loop);
    if (!ctx)
        return GW_ENOTSUP;
    if (tls && !gw_loop_tls(loop)) {
        gw_log_err("WebSocket: wss on an event loop made without TLS (gw_loop_new_plain)");
        return GW_ENOTSUP;
    }
    struct lws_vhost *vh = client_vhost(ctx, opts);
    if (!vh) {
        gw_log_err("WebSocket: cannot create the client vhost (CA file %s)",
                   opts->ca_file ? opts->ca_file : "(system)");
        return GW_ETLS;
    }
    struct ws *w = gw_calloc(1, sizeof(*w));
    w->base.vt = &ws_vt;
    w->loop = loop;
    w->cb = *cb;
    w->opts = *opts;
    w->opts.ca_file = w->opts.cert_file = w->opts.key_file = NULL; /* only the vhost keeps them */
    if (!w->opts.connect_timeout_ms)
        w->opts.connect_timeout_ms = 15000;
    snprintf(w->where, sizeof(w->where), strchr(opts->url.host, ':') ? "[%s]:%u%s" : "%s:%u%s",
             opts->url.host, (unsigned)opts->url.port, opts->url.path);
    w->timeout = gw_timer_new(loop, on_timeout, w);
    w->defer = gw_timer_new(loop, on_defer, w);
    if (tls && opts->insecure)
        gw_log_warn("WSS %s: certificate verification is OFF (insecure: true)", w->where);

    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = ctx;
    ci.vhost = vh;
    ci.address = opts->url.host;
    ci.port = opts->url.port;
    ci.path = opts->url.path;
    ci.host = opts->url.host;
    ci.origin = opts->url.host;
    ci.protocol = "iotmp";
    ci.local_protocol_name = "gw-iotmp-client";
    ci.userdata = w;
    w->h.cb = verify_hook;
    ci.opaque_user_data = &w->h;
    ci.pwsi = &w->wsi;
    if (tls) {
        ci.ssl_connection = LCCSCF_USE_SSL;
        if (opts->insecure)
            ci.ssl_connection |= LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK |
                                 LCCSCF_ALLOW_EXPIRED | LCCSCF_ALLOW_INSECURE;
    }
    w->opening = true;
    struct lws *wsi = lws_client_connect_via_info(&ci);
    w->opening = false;
    if (!wsi && !w->failed) {
        w->wsi = NULL;
        ws_fail(w, GW_ECONNRESET, "WebSocket: lws refused to start the connection");
    }
    if (!w->failed)
        gw_timer_start(w->timeout, w->opts.connect_timeout_ms);
    *out = &w->base;
    return 0;
}
