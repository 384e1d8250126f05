/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The uplink session: the gateway as an IOTMP client of the server (PROTOCOL.md, decisions in
 * section 14). It keeps one connection open over TCP, TLS, WebSocket or secure WebSocket
 * (gw/transport.h), authenticates with CONNECT, sends keep-alives and detects a dead link, and
 * reconnects with exponential back-off. It serves the server's RUN, DESCRIBE, START_STREAM,
 * STOP_STREAM and STREAM_DATA from the resource registry (gw/registry.h), asynchronously, and
 * carries the gateway's own calls to server actions (buckets, properties, endpoints, devices).
 *
 * Everything runs on the loop thread.
 */
#ifndef GW_SESSION_H
#define GW_SESSION_H

#include "gw/iotmp.h"
#include "gw/value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_loop;
struct gw_registry;
struct gw_session;

/* Server-action field layouts (PROTOCOL.md section 8, decision 14.1). */
enum gw_session_layout {
    GW_SESSION_LAYOUT_LINUX = 0,    /* RESOURCE = action code (varint), PARAMETERS = target */
    GW_SESSION_LAYOUT_EMBEDDED = 1, /* PARAMETERS = action code (varint), RESOURCE = target */
};

/*
 * Configuration. Strings are copied by gw_session_new(). A zero numeric member takes the default
 * shown. The URL is iotmp://host[:25204], iotmps://host[:25206], ws://host[:80][/iotmp] or
 * wss://host[:443][/iotmp].
 */
struct gw_session_config {
    const char *url;
    const char *user, *device, *password;
    unsigned keepalive_s;           /* 60; sent as CONNECT {"ka":N} only when not 60; max 1800 */
    const char *ca_file;            /* NULL: the system CA store */
    bool insecure;                  /* TLS/WSS without peer verification (logged at every connect) */
    const char *cert_file, *key_file; /* optional client certificate */
    size_t max_frame;               /* largest accepted frame body: 256 KiB */
    enum gw_session_layout server_action_layout;
    unsigned connect_timeout_ms;    /* transport connect + handshake + CONNECT answer: 15000 */
    unsigned backoff_min_ms;        /* first retry delay: 1000, doubling ... */
    unsigned backoff_max_ms;        /* ... up to 60000, each delay with +-20 % jitter */
    unsigned reconnect_spread_ms;   /* the first retry after a lost session (or a failed first
                                       connect) waits backoff_min_ms + uniform [0, this), this
                                       capped at backoff_max_ms (or the back-off, if longer), so
                                       that gateways losing one server together do not return in
                                       the same second. 0: none (+-20 % jitter only) */
    unsigned backoff_reset_s;       /* a session that lasted this long resets the back-off: 60 */
    unsigned auth_backoff_ms;       /* retry delay after bad credentials (ERROR 2): 300000 */
    size_t send_queue_max;          /* bytes queued towards the server before flow control: 1 MiB */
    unsigned max_calls_in;          /* the server's RUNs and stream inputs running at once: 256;
                                       beyond, a RUN is answered ERROR 429 at once and an input
                                       is dropped (counted in calls_refused) */
};

enum gw_session_state {
    GW_SESSION_IDLE = 0,        /* created, not started */
    GW_SESSION_CONNECTING,      /* transport connecting (TCP, TLS, WebSocket handshake) */
    GW_SESSION_AUTHENTICATING,  /* CONNECT sent, waiting for OK */
    GW_SESSION_READY,           /* authenticated: serving and calling */
    GW_SESSION_BACKOFF,         /* waiting before the next attempt */
    GW_SESSION_STOPPED,         /* gw_session_stop() done */
};

const char *gw_session_state_name(enum gw_session_state st);

struct gw_session_stats {
    uint64_t connects;          /* transport connection attempts */
    uint64_t connect_failures;  /* attempts that never reached READY */
    uint64_t sessions;          /* times READY was reached */
    uint64_t link_losses;       /* READY sessions that ended without gw_session_stop() */
    uint64_t dead_links;        /* of those: detected by keep-alive silence */
    uint64_t auth_failures;     /* ERROR 2 answers */
    uint64_t redirects;         /* redirects followed */
    uint64_t frames_in, frames_out, bytes_in, bytes_out;
    uint64_t keepalives_sent, keepalives_echoed;
    uint64_t calls_in;          /* RUN requests served */
    uint64_t calls_refused;     /* RUNs and stream inputs refused: max_calls_in were running */
    uint64_t calls_out;         /* gw_session_call() accepted */
    uint64_t calls_out_failed;  /* ... that ended with an error (timeout, link, peer ERROR) */
    uint64_t stream_samples;    /* STREAM_DATA sent */
    uint64_t samples_coalesced; /* samples replaced by a newer one while the link was busy */
    uint64_t frames_ignored;    /* unknown types, STREAM_DATA to unknown streams, stale answers */
    uint64_t last_backoff_ms;   /* the last retry delay chosen */
    uint64_t busy_ns;           /* time spent parsing, dispatching and answering (not waiting) */
    unsigned streams_open;      /* server streams currently open */
    unsigned calls_pending;     /* outbound calls waiting for an answer */
};

/*
 * State changes: st is the new state; reason is 0, or the GW_E... code that ended the previous
 * state (GW_EAUTH, GW_ELINK, GW_EDEADLINK, GW_ETLS_VERIFY, GW_ETIMEDOUT, ...). The store's drain
 * hooks on GW_SESSION_READY. May call any gw_session_* function except gw_session_free().
 */
typedef void (*gw_session_state_fn)(void *arg, enum gw_session_state st, int reason);

/*
 * Creates a session on loop, serving reg (both borrowed; they must outlive the session). Checks
 * the configuration (URL, credentials present, keep-alive range, insecure only with TLS/WSS);
 * returns 0 and *out, or GW_EINVAL with a log line naming the bad member.
 */
int gw_session_new(struct gw_loop *loop, struct gw_registry *reg,
                   const struct gw_session_config *cfg, struct gw_session **out);

void gw_session_on_state(struct gw_session *s, gw_session_state_fn fn, void *arg);

/* Starts connecting (at once). Returns 0, or GW_EBUSY if already started. */
int gw_session_start(struct gw_session *s);

/*
 * Stops: a READY session sends DISCONNECT and closes after it is written (best effort, never
 * waiting); every pending outbound call fails with GW_ECANCELED, incoming calls are cancelled,
 * streams end. The session can be started again.
 */
void gw_session_stop(struct gw_session *s);

/* Stops if needed and frees. NULL is ignored. */
void gw_session_free(struct gw_session *s);

enum gw_session_state gw_session_state(const struct gw_session *s);
void gw_session_get_stats(const struct gw_session *s, struct gw_session_stats *out);
/* Number of the connection: it grows on every new transport (the "epoch" of calls and streams). */
uint32_t gw_session_epoch(const struct gw_session *s);

/*
 * The answer to an outbound call: rc 0 with out (borrowed for the callback; NULL when the OK had
 * no payload), or rc < 0 with msg (borrowed): GW_ETIMEDOUT, GW_ELINK (the link dropped first),
 * GW_EPEER (the server answered ERROR; msg carries its text), GW_ECANCELED (session stopped).
 */
typedef void (*gw_session_call_fn)(void *arg, int rc, const struct gw_value *out, const char *msg);

/*
 * Calls a server action (READ/SET_DEVICE_PROPERTY, CALL_DEVICE, CALL_ENDPOINT, WRITE_BUCKET,
 * LOCK/UNLOCK_SYNC) in the configured layout. target is the action's target id: a string, or for
 * CALL_DEVICE the array [device, resource] (borrowed; NULL = none). payload is the input:
 * a value (borrowed; NULL = none).
 *
 * want_answer: the request carries a fresh stream id, and done runs exactly once, never from
 * inside this call: with the answer, or an error when timeout_ms (0 = 10000) passes, the link
 * drops or the session stops. An answer is matched only within the connection it was sent on.
 * Without want_answer the RUN carries no stream id (fire-and-forget) and done is never called.
 *
 * Returns 0 when the request was queued; GW_ENOTCONN when the session is not READY; GW_ENOBUFS
 * when the send queue is over its bound; GW_EBUSY when no stream id is free; GW_ENOSPC when the
 * encoded request exceeds max_frame; GW_EINVAL for a bad action.
 */
int gw_session_call(struct gw_session *s, enum gw_iotmp_action action,
                    const struct gw_value *target, const struct gw_value *payload,
                    bool want_answer, unsigned timeout_ms, gw_session_call_fn done, void *arg);

/* Same, with the payload already encoded as one PSON v2 value (pson, len; copied). */
int gw_session_call_pson(struct gw_session *s, enum gw_iotmp_action action,
                         const struct gw_value *target, const void *pson, size_t len,
                         bool want_answer, unsigned timeout_ms, gw_session_call_fn done,
                         void *arg);

#endif
