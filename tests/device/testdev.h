/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gw_testdev: a small IOTMP device for tests, the demo and the broker benchmarks. It connects to an
 * IOTMP server (tests/broker's iotmp-broker) over TCP, TLS (OpenSSL, CA file + host name check) or
 * WebSocket / secure WebSocket (its own RFC 6455 client, so the broker's lws server is tested by an
 * independent implementation), authenticates with CONNECT, serves a table of resources (RUN,
 * DESCRIBE all/one, START_STREAM with an interval or as an event stream, STOP_STREAM, KEEP_ALIVE)
 * and calls server actions (WRITE_BUCKET, CALL_ENDPOINT, properties, CALL_DEVICE, locks) in either
 * the "linux" or the "embedded" field layout (PROTOCOL.md section 8), with or without stream id.
 *
 * Single-threaded and poll-based: the caller drives it with gw_testdev_poll(). Handlers run on the
 * caller's thread, inside gw_testdev_poll() (or inside gw_testdev_call() while that waits for its
 * answer; a handler may itself call gw_testdev_call()). Built on gw_codec (gw/iotmp.h, gw/pson.h,
 * gw/value.h) and OpenSSL. Simplicity over speed: this is test code, not the gateway's uplink.
 */
#ifndef GW_TESTDEV_H
#define GW_TESTDEV_H

#include "gw/iotmp.h"
#include "gw/value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_testdev;

/* Resource kinds, as the DESCRIBE "fn" key numbers them (PROTOCOL.md 5.6). */
enum gw_testdev_fn {
    GW_TESTDEV_FN_RUN = 1,   /* no input, no output */
    GW_TESTDEV_FN_IN = 2,    /* input only */
    GW_TESTDEV_FN_OUT = 3,   /* output only */
    GW_TESTDEV_FN_INOUT = 4, /* input and output */
};

/* Server-action field layouts (PROTOCOL.md section 8). */
enum gw_testdev_layout {
    GW_TESTDEV_LAYOUT_LINUX = 0,    /* RESOURCE = action code (varint), PARAMETERS = target */
    GW_TESTDEV_LAYOUT_EMBEDDED = 1, /* PARAMETERS = action code (varint), RESOURCE = target */
};

/*
 * A resource. Its handler: in is the request's input (borrowed; NULL when the request had none,
 * and in DESCRIBE and stream mode). The handler writes its output (or, for an input resource in
 * DESCRIBE / stream mode, its current state) into *out, which starts as null. Returns 0 for OK; a
 * positive code (e.g. 404, 503) for ERROR with that code in PARAMETERS; a negative GW_E... code
 * for ERROR without PARAMETERS. On ERROR, a string left in *out becomes the error text
 * ({"error": text}). describe is true when the handler is run to produce a DESCRIBE sample.
 */
struct gw_testdev_resource {
    const char *name;               /* copied by gw_testdev_add_resource() */
    enum gw_testdev_fn fn;
    int (*handler)(struct gw_testdev *d, const struct gw_testdev_resource *r,
                   const struct gw_value *in, struct gw_value *out, bool describe); /* NULL: OK */
    void *arg;                      /* borrowed; for the handler */
    unsigned delay_ms;              /* answer RUN this many ms later (the device keeps serving) */
    unsigned id;                    /* numeric resource id; set by gw_testdev_add_resource() */
};

struct gw_testdev_config {
    const char *url;       /* tcp://h:p, tls://h:p, iotmp://, iotmps://, ws://h:p[/path], wss:// */
    const char *user;      /* CONNECT credentials (all three copied) */
    const char *device;
    const char *password;
    const char *ca_file;   /* TLS and WSS: CA file to verify against (NULL: system store) */
    bool insecure;         /* TLS: skip certificate and host name verification */
    unsigned ka;           /* CONNECT PARAMETERS {"ka": ka} when not 0 (seconds); KEEP_ALIVE is
                              sent every 3/4 ka (default ka 60), comfortably inside the server's
                              ka x 1.15 limit */
    bool no_keepalive;     /* never send KEEP_ALIVE on its own (to test the server's timeout) */
    const char *ka_raw;    /* if set, sent instead as {"ka": <this string>} (bad-input tests) */
    int timeout_ms;        /* connect, handshakes, CONNECT answer (0: 10000) */
    size_t max_frame;      /* largest body accepted (0: GW_IOTMP_MAX_FRAME_DEFAULT) */
};

struct gw_testdev_stats {
    uint64_t frames_in, frames_out;
    uint64_t runs, describes, stream_samples;
    uint64_t keepalive_sent, keepalive_echoes;
    uint64_t ws_pings, ws_pongs;
    unsigned streams_open;
};

/* Creates a device (nothing is opened yet). cfg and its strings are copied. */
struct gw_testdev *gw_testdev_new(const struct gw_testdev_config *cfg);

/* Closes and frees d (NULL is fine). */
void gw_testdev_free(struct gw_testdev *d);

/* Adds a resource (r is copied, the name too); its id becomes the table position + 1.
 * GW_EEXIST for a duplicate name, GW_EINVAL for an empty name or a bad fn. */
int gw_testdev_add_resource(struct gw_testdev *d, const struct gw_testdev_resource *r);

/*
 * Opens the link and authenticates. Returns 0 when the server answered OK; GW_EAUTH when it
 * answered ERROR 2; GW_EREDIRECT for ERROR 1 (gw_testdev_redirect() gives the target); GW_EPEER
 * for any other ERROR (gw_testdev_connect_code() gives the code, -1 if absent); GW_ETLS for a TLS
 * failure (handshake or verification); GW_ETIMEDOUT; GW_ELINK when the server closed the
 * connection; GW_EFRAME for an answer that is not OK/ERROR; negated errno for socket errors.
 * gw_testdev_error() describes the last failure in words.
 */
int gw_testdev_connect(struct gw_testdev *d);

/* The PARAMETERS code of the last CONNECT ERROR, -1 if it had none or there was none. */
int gw_testdev_connect_code(const struct gw_testdev *d);

/* The redirect target of the last CONNECT ERROR 1, or NULL. Borrowed from d. */
const char *gw_testdev_redirect(const struct gw_testdev *d);

/* A human-readable description of the last failure (never NULL; borrowed from d). */
const char *gw_testdev_error(const struct gw_testdev *d);

/* "tcp", "tls", "ws" or "wss". */
const char *gw_testdev_transport(const struct gw_testdev *d);

/* The configured device name (borrowed). */
const char *gw_testdev_name(const struct gw_testdev *d);

/* True while the link is open and authenticated. */
bool gw_testdev_connected(const struct gw_testdev *d);

/*
 * Waits up to timeout_ms (-1: until something happens) for input or the next timer (stream
 * interval, keep-alive, delayed answer), then handles what is due. Returns 0; GW_ELINK when the
 * link is gone (closed by the server, DISCONNECT, WebSocket close, malformed input); GW_ENOTCONN
 * if not connected; GW_EINTR-like -EINTR when a signal interrupted the wait.
 */
int gw_testdev_poll(struct gw_testdev *d, int timeout_ms);

/* Sends a KEEP_ALIVE now. 0 or a link error. */
int gw_testdev_keepalive(struct gw_testdev *d);

/* Sends the current value of resource name on each event stream open on it. Returns the number
 * of samples sent, GW_ERESOURCE for an unknown name, or a link error. */
int gw_testdev_stream_event(struct gw_testdev *d, const char *name);

/* A server action (device → server RUN, PROTOCOL.md section 8). */
struct gw_testdev_action {
    enum gw_iotmp_action code;
    enum gw_testdev_layout layout;
    const struct gw_value *target;  /* borrowed: a string (id), or [device, resource] */
    const struct gw_value *payload; /* borrowed; NULL = no PAYLOAD */
    bool confirm;                   /* send a stream id and wait for the answer */
    int timeout_ms;                 /* for the answer (0: 10000) */
};

/*
 * Sends a server action. Without confirm it returns 0 once sent. With confirm it waits for the
 * answer (handling other traffic meanwhile): 0 on OK (*answer = its PAYLOAD, or null), GW_EPEER on
 * ERROR (*answer = its PAYLOAD or null, *code = its PARAMETERS code or -1), GW_ETIMEDOUT, or a link
 * error. answer and code may be NULL; *answer is overwritten (not finalised) when given.
 */
int gw_testdev_call(struct gw_testdev *d, const struct gw_testdev_action *a,
                    struct gw_value *answer, int *code);

/* Sends len raw bytes as they are (one WebSocket message on ws/wss): for bad-input tests. */
int gw_testdev_send_raw(struct gw_testdev *d, const void *bytes, size_t len);

/* Sends a WebSocket ping with a small payload (ws/wss only; GW_ENOTSUP otherwise). */
int gw_testdev_ws_ping(struct gw_testdev *d);

/* Closes the link (WebSocket close handshake attempted, TLS close_notify sent); d can connect
 * again. */
void gw_testdev_close(struct gw_testdev *d);

void gw_testdev_get_stats(const struct gw_testdev *d, struct gw_testdev_stats *st);

/* Parses a server action name ("write_bucket", "call_endpoint", "read_property", "set_property",
 * "call_device", "lock_sync", "unlock_sync") into its code; GW_EINVAL if unknown. */
int gw_testdev_action_parse(const char *name);

/* --- JSON helpers (jansson + gw/json.h), for the CLI and the tests --- */

/* Parses JSON text into *out ({"$bytes":"hex"} becomes bytes, as gw/json.h says). 0 or GW_EJSON
 * (with a message naming line and column in err, err_len bytes). */
int gw_testdev_json_parse(const char *text, struct gw_value *out, char *err, size_t err_len);

/* Serialises v as compact JSON (bytes as {"$bytes":"hex"}); the caller frees the string. */
char *gw_testdev_json_dump(const struct gw_value *v);

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t gw_testdev_now_ms(void);

#endif
