/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to the transports (transport.c, transport_tcp.c, transport_ws.c): the small virtual
 * table behind struct gw_transport, and the constructors of each kind.
 */
#ifndef GW_TRANSPORT_INTERNAL_H
#define GW_TRANSPORT_INTERNAL_H

#include "gw/transport.h"

struct gw_transport_vt {
    int (*send)(struct gw_transport *t, const void *frame, size_t len);
    size_t (*pending)(const struct gw_transport *t);
    bool (*verified)(const struct gw_transport *t);
    void (*close)(struct gw_transport *t, bool flush);
};

struct gw_transport {
    const struct gw_transport_vt *vt;
};

/* TCP and TLS (OpenSSL on our own socket). */
int gw_transport_sock_open(struct gw_loop *loop, const struct gw_transport_opts *opts,
                           const struct gw_transport_cb *cb, struct gw_transport **out);
/* WS and WSS (libwebsockets client). */
int gw_transport_ws_open(struct gw_loop *loop, const struct gw_transport_opts *opts,
                         const struct gw_transport_cb *cb, struct gw_transport **out);

#endif
