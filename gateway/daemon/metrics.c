/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The metrics endpoint: GET /metrics on an HTTP listener (a second lws vhost on the daemon's own
 * loop, so no thread and no lock), answering the Prometheus text format from health.c. Off unless
 * configured; meant for 127.0.0.1. Anything but GET /metrics gets 404.
 */
#include "metrics.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/mem.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct gw_metrics {
    struct lws_vhost *vh;
    const struct gw_health_src *src;
};

struct conn {
    char *body;
    size_t len, sent;
};

static int metrics_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    struct conn *c = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP: {
        struct gw_metrics *m = lws_get_vhost_user(lws_get_vhost(wsi));
        if (!in || strcmp(in, "/metrics") != 0) {
            if (lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, "only /metrics is served"))
                return -1;
            return lws_http_transaction_completed(wsi) ? -1 : 0;
        }
        c->body = NULL;
        c->len = c->sent = 0;
        gw_health_prometheus(m->src, &c->body, &c->len);
        uint8_t hdr[LWS_PRE + 512];
        uint8_t *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof hdr - 1;
        if (lws_add_http_common_headers(wsi, HTTP_STATUS_OK,
                                        "text/plain; version=0.0.4; charset=utf-8", c->len, &p,
                                        end) ||
            lws_finalize_write_http_header(wsi, start, &p, end))
            return 1;
        lws_callback_on_writable(wsi);
        return 0;
    }
    case LWS_CALLBACK_HTTP_WRITEABLE: {
        if (!c->body)
            break;
        uint8_t buf[LWS_PRE + 16384];
        size_t chunk = c->len - c->sent < 16384 ? c->len - c->sent : 16384;
        memcpy(buf + LWS_PRE, c->body + c->sent, chunk);
        bool last = c->sent + chunk == c->len;
        if (lws_write(wsi, buf + LWS_PRE, chunk, last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) !=
            (int)chunk)
            return -1;
        c->sent += chunk;
        if (!last) {
            lws_callback_on_writable(wsi);
            return 0;
        }
        free(c->body);
        c->body = NULL;
        return lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    case LWS_CALLBACK_CLOSED_HTTP:
        free(c ? c->body : NULL);
        if (c)
            c->body = NULL;
        break;
    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}

static const struct lws_protocols metrics_protocols[] = {
    {"http", metrics_cb, sizeof(struct conn), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

int gw_metrics_start(struct gw_loop *loop, const char *listen, const struct gw_health_src *src,
                     struct gw_metrics **out)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    char *endp;
    long port = colon ? strtol(colon + 1, &endp, 10) : -1;
    if (!colon || (size_t)(colon - listen) >= sizeof host || *endp || port < 1 || port > 65535) {
        gw_log_err("metrics: listen address \"%s\" is not host:port", listen);
        return GW_EINVAL;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';

    struct gw_metrics *m = gw_calloc(1, sizeof *m);
    m->src = src;
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.vhost_name = "metrics";
    info.port = (int)port;
    info.iface = host;
    info.protocols = metrics_protocols;
    info.user = m;
    m->vh = lws_create_vhost(gw_loop_lws(loop), &info);
    if (!m->vh) {
        gw_log_err("metrics: cannot listen on %s (address in use or not local?)", listen);
        free(m);
        return GW_EIO;
    }
    gw_log_info("metrics: serving http://%s/metrics", listen);
    *out = m;
    return 0;
}

void gw_metrics_stop(struct gw_metrics *m)
{
    if (!m)
        return;
    lws_vhost_destroy(m->vh);
    free(m);
}
