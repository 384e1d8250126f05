/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The transport interface (gw/transport.h): URL parsing and dispatch to the kind that implements
 * a connection (transport_tcp.c for TCP and TLS, transport_ws.c for WS and WSS).
 */
#include "gw/transport.h"

#include "gw/error.h"
#include "transport_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *scheme;
    enum gw_transport_kind kind;
    uint16_t port;
} schemes[] = {
    {"iotmp://", GW_TRANSPORT_TCP, 25204},
    {"iotmps://", GW_TRANSPORT_TLS, 25206},
    {"ws://", GW_TRANSPORT_WS, 80},
    {"wss://", GW_TRANSPORT_WSS, 443},
};

int gw_transport_url_parse(const char *url, struct gw_transport_url *out, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    memset(out, 0, sizeof(*out));
    if (!url || !*url) {
        *why = "empty URL";
        return GW_EINVAL;
    }
    const char *p = NULL;
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t n = strlen(schemes[i].scheme);
        if (strncasecmp(url, schemes[i].scheme, n) == 0) {
            p = url + n;
            out->kind = schemes[i].kind;
            out->port = schemes[i].port;
            break;
        }
    }
    if (!p) {
        *why = "scheme must be iotmp://, iotmps://, ws:// or wss://";
        return GW_EINVAL;
    }
    const char *host = p, *host_end;
    if (*p == '[') {
        host = p + 1;
        host_end = strchr(host, ']');
        if (!host_end) {
            *why = "IPv6 address without closing ']'";
            return GW_EINVAL;
        }
        p = host_end + 1;
    } else {
        host_end = p + strcspn(p, ":/?#");
        p = host_end;
    }
    size_t hlen = (size_t)(host_end - host);
    if (hlen == 0) {
        *why = "no host";
        return GW_EINVAL;
    }
    if (hlen >= sizeof(out->host)) {
        *why = "host name too long";
        return GW_EINVAL;
    }
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    if (*p == ':') {
        p++;
        char *end;
        if (*p < '0' || *p > '9') {
            *why = "port is not a number";
            return GW_EINVAL;
        }
        unsigned long port = strtoul(p, &end, 10);
        if (port == 0 || port > 65535) {
            *why = "port out of range 1..65535";
            return GW_EINVAL;
        }
        out->port = (uint16_t)port;
        p = end;
    }
    bool ws = out->kind == GW_TRANSPORT_WS || out->kind == GW_TRANSPORT_WSS;
    if (*p == '/') {
        if (!ws && strcmp(p, "/") != 0) {
            *why = "a path is only allowed for ws:// and wss://";
            return GW_EINVAL;
        }
        if (strlen(p) >= sizeof(out->path)) {
            *why = "path too long";
            return GW_EINVAL;
        }
        if (ws)
            strcpy(out->path, p);
    } else if (*p != '\0') {
        *why = "unexpected characters after the host and port";
        return GW_EINVAL;
    }
    if (ws && (out->path[0] == '\0' || strcmp(out->path, "/") == 0))
        strcpy(out->path, "/iotmp");
    return 0;
}

bool gw_transport_kind_secure(enum gw_transport_kind kind)
{
    return kind == GW_TRANSPORT_TLS || kind == GW_TRANSPORT_WSS;
}

int gw_transport_open(struct gw_loop *loop, const struct gw_transport_opts *opts,
                      const struct gw_transport_cb *cb, struct gw_transport **out)
{
    *out = NULL;
    switch (opts->url.kind) {
    case GW_TRANSPORT_TCP:
    case GW_TRANSPORT_TLS:
        return gw_transport_sock_open(loop, opts, cb, out);
    case GW_TRANSPORT_WS:
    case GW_TRANSPORT_WSS:
        return gw_transport_ws_open(loop, opts, cb, out);
    }
    return GW_EINVAL;
}

int gw_transport_send(struct gw_transport *t, const void *frame, size_t len)
{
    return t->vt->send(t, frame, len);
}

size_t gw_transport_pending(const struct gw_transport *t)
{
    return t->vt->pending(t);
}

bool gw_transport_verified(const struct gw_transport *t)
{
    return t->vt->verified(t);
}

void gw_transport_close(struct gw_transport *t)
{
    if (t)
        t->vt->close(t, false);
}

void gw_transport_flush_close(struct gw_transport *t)
{
    if (t)
        t->vt->close(t, true);
}
