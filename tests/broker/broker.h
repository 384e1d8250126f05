/* SPDX-License-Identifier: Apache-2.0 */
/*
 * iotmp-broker internals: the state shared by the broker's modules (main, log, json, db, iotmp,
 * rest). The broker is one process, one thread, one libwebsockets context; everything here runs on
 * the lws loop thread. It is test infrastructure (API.md beside this file is its contract) and is
 * not part of the gateway's libraries: only tests/broker/ includes this header.
 */
#ifndef GW_BROKER_H
#define GW_BROKER_H

#include "gw/iotmp.h"
#include "gw/pson.h"

#include <ev.h>
#include <jansson.h>
#include <libwebsockets.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* --- Logging (broker_log.c): one JSON object per line on stderr --- */

/* Levels as syslog (and gw/log.h). */
enum gw_broker_level {
    GW_BROKER_ERR = 3,
    GW_BROKER_WARN = 4,
    GW_BROKER_NOTICE = 5,
    GW_BROKER_INFO = 6,
    GW_BROKER_DEBUG = 7,
};

extern int gw_broker_log_level;

/* Parses err|warn|notice|info|debug; returns the level or -1. */
int gw_broker_log_parse_level(const char *name);

/*
 * Writes {"ts":ms,"level":..,"msg":msg, <fields>} as one line. fields is a jansson json_pack()
 * format for an object ("{s:s,s:i}") followed by its arguments, or NULL for none. msg is borrowed.
 */
void gw_broker_log(int level, const char *msg, const char *fields, ...);

/* Routes libwebsockets' own log lines into the JSON log. */
void gw_broker_log_lws(int level, const char *line);

/* Milliseconds since the epoch (wall clock), for "ts" fields. */
int64_t gw_broker_now_ms(void);

/* --- PSON <-> JSON (broker_json.c) --- */

/*
 * Converts one PSON v2 value (the complete encoding, len bytes, borrowed) to a new JSON value
 * (gw/json.h forms: {"$bytes":"hex"}, {"$int":".."}, {"$double":".."}). Returns NULL (and sets
 * *err to a GW_E code) on a malformed encoding or a string that is not UTF-8.
 */
json_t *gw_broker_pson_to_json(const uint8_t *p, size_t len, int *err);

/*
 * A frame field as new JSON (a varint field becomes an integer). *out is NULL when the field is
 * absent. Returns 0 or a GW_E code.
 */
int gw_broker_field_to_json(const struct gw_iotmp_frame *f, unsigned id, json_t **out);

/* Checks that j (borrowed) can be sent as PSON (tagged objects well formed): 0 or GW_EINVAL. */
int gw_broker_json_check(const json_t *j);

/* Writes j (borrowed) as PSON v2; {"$bytes":"hex"} becomes bytes. */
void gw_broker_json_to_pson(const json_t *j, struct gw_pson_writer *w);

/* Compact JSON text of j (borrowed; any value, NULL = "null") with every real written in the
 * fewest digits that read back to the same double (21.7, not json_dumps' 21.699999999999999).
 * Caller frees. */
char *gw_broker_json_dumps(const json_t *j);

/* A field as text for messages: a string as is, anything else as compact JSON. Caller frees. */
char *gw_broker_json_text(const json_t *j);

/* --- SQLite state (broker_db.c) --- */

enum gw_broker_table {
    GW_BROKER_BUCKETS,
    GW_BROKER_ENDPOINTS,
};

/* Opens (creating) the state file. Returns 0 or GW_ESTORE (logged). */
int gw_broker_db_open(const char *path);
void gw_broker_db_close(void);

/* Appends a bucket row or an endpoint call; data is compact JSON text. Returns the row's seq
 * (> 0) or GW_ESTORE. */
int64_t gw_broker_db_append(enum gw_broker_table t, const char *user, const char *device,
                            const char *name, const char *layout, const char *data);

/* Rows of a bucket / endpoint in arrival order as a new JSON array; device may be NULL. */
json_t *gw_broker_db_list(enum gw_broker_table t, const char *user, const char *name,
                          const char *device, int64_t after, int64_t limit);

/* Sets a property (value: JSON text). Returns 0 or GW_ESTORE. */
int gw_broker_db_set_property(const char *user, const char *device, const char *prop,
                              const char *layout, const char *value);

/* Reads a property as new JSON; NULL when it is not set. */
json_t *gw_broker_db_get_property(const char *user, const char *device, const char *prop);

/* Clears buckets, endpoint calls and properties (the seq counter keeps growing). */
int gw_broker_db_reset(void);

/* --- Timers (broker_main.c) --- */

/*
 * A one-shot timer on the broker's libev loop. (lws_sul timers are not used: lws 4.1.6 on a
 * libev loop re-arms its one timer with ev_timer_set() while it is active, so a deadline shorter
 * than the one already armed would fire late.) Zeroed storage is a valid stopped timer.
 */
struct gw_broker_timer {
    ev_timer w;
    void (*fn)(struct gw_broker_timer *t);
};

/* (Re)starts t to call fn (on the loop thread) once, us microseconds from now. */
void gw_broker_timer_start(struct gw_broker_timer *t, void (*fn)(struct gw_broker_timer *t),
                           uint64_t us);
/* Stops t if it runs; harmless on a stopped or zeroed timer. */
void gw_broker_timer_stop(struct gw_broker_timer *t);

/* --- Shared state --- */

enum gw_broker_transport {
    GW_BROKER_TCP,
    GW_BROKER_TLS,
    GW_BROKER_WS,
    GW_BROKER_WSS,
};

struct gw_broker_out {                  /* one queued frame */
    struct gw_broker_out *next;
    uint8_t *mem;                       /* owns; frame lies inside with LWS_PRE bytes before it */
    const uint8_t *frame;
    size_t len;
};

struct gw_broker_call;
struct gw_broker_stream;

struct gw_broker_conn {
    struct gw_broker_conn *prev, *next; /* in broker.conns */
    uint64_t id;
    struct lws *wsi;
    uint8_t transport;                  /* enum gw_broker_transport */
    uint8_t state;                      /* enum in broker_iotmp.c */
    bool frozen;
    bool close_after_write;
    bool rx_seen;                       /* a byte was read (TLS handshake done) */
    char *user, *device;                /* owned, set on CONNECT OK */
    char remote[56];
    int64_t since_ms;
    uint32_t ka_s;                      /* keep-alive seconds */
    int64_t last_rx_us;                 /* lws_now_usecs() of the last byte read */
    struct gw_broker_timer ka_timer;
    struct gw_iotmp_reader rd;
    uint8_t *rdbuf;                     /* owned, allocated only while a large body arrives */
    struct gw_broker_out *q_head, *q_tail;
    struct gw_broker_delayed *delayed;  /* answers held back by /_control/delay */
    struct gw_broker_call *calls;       /* requests sent to this device, waiting for answers */
    uint16_t next_sid;
};

struct gw_broker_delayed {
    struct gw_broker_delayed *prev, *next;
    struct gw_broker_timer timer;
    struct gw_broker_conn *conn;
    struct gw_broker_out *out;
};

struct gw_broker_req;

enum gw_broker_call_kind {
    GW_BROKER_CALL_RUN,
    GW_BROKER_CALL_DESCRIBE,
    GW_BROKER_CALL_START,
    GW_BROKER_CALL_STOP,
    GW_BROKER_CALL_RELAY, /* CALL_DEVICE from another device */
};

struct gw_broker_call {
    struct gw_broker_call *prev, *next; /* in dev->calls */
    struct gw_broker_conn *dev;
    uint16_t sid;
    uint8_t kind;
    struct gw_broker_req *req;          /* HTTP request waiting, NULL when it went away */
    uint64_t relay_conn;                /* RELAY: the calling device's connection id */
    uint16_t relay_sid;                 /* RELAY: its stream id (0 = no answer wanted) */
    struct gw_broker_stream *stream;    /* START/STOP */
    uint32_t timeout_ms;
    struct gw_broker_timer timer;
};

struct gw_broker_sample {
    int64_t seq;
    int64_t ts;
    char *data;                         /* owned compact JSON */
};

struct gw_broker_stream {
    struct gw_broker_stream *prev, *next; /* in broker.streams */
    char *user, *device, *resource;
    uint16_t sid;
    uint64_t conn_id;                   /* connection it runs on */
    bool open;                          /* device accepted it and it has not stopped */
    bool starting;                      /* START_STREAM sent, no answer yet */
    struct gw_broker_sample *ring;      /* owned, up to GW_BROKER_MAX_SAMPLES */
    size_t ring_cap, ring_start, ring_n;
    int64_t next_seq;
    struct gw_broker_req *waiters;      /* long-polls */
};

#define GW_BROKER_MAX_SAMPLES 10000
#define GW_BROKER_MAX_POLL 1000         /* samples in one long-poll answer */

struct gw_broker_req {                  /* one HTTP request on the REST vhosts */
    struct lws *wsi;
    char method[8];
    char *path;                         /* owned, URL-decoded path */
    char *args;                         /* owned, raw query string ("a=1&b=2") */
    uint8_t *body;                      /* owned request body */
    size_t body_len, body_cap;
    bool body_too_big;
    bool has_body;
    bool dispatched;
    bool loopback;
    int status;
    uint8_t *resp;                      /* owned response body */
    size_t resp_len, resp_off;
    bool resp_ready, hdr_sent;
    struct gw_broker_call *call;        /* waiting for a device */
    struct gw_broker_stream *stream;    /* long-poll */
    struct gw_broker_req *wprev, *wnext;
    int64_t poll_after;
    struct gw_broker_timer timer;       /* long-poll deadline */
};

struct gw_broker_cred {
    char *user, *device, *password;
};

struct gw_broker_redirect {
    struct gw_broker_redirect *next;
    char *user, *device, *uri;
};

struct gw_broker_lock {
    struct gw_broker_lock *next;
    char *user, *sync;
    uint64_t holder_conn;
    char *lock_id;
    unsigned slots;                     /* informational; one holder per lock id */
};

struct gw_broker_stats {
    uint64_t conn_total, conn_refused, conn_authed, auth_failed;
    uint64_t frames_in, frames_out, bytes_in, bytes_out;
    uint64_t http_requests;
    json_t *errors;                     /* reason -> count */
};

struct gw_broker {
    struct ev_loop *loop;
    struct lws_context *ctx;
    struct lws_vhost *vh_tcp, *vh_tls, *vh_http, *vh_https;
    size_t max_frame;
    uint32_t call_timeout_ms;
    bool hex;
    struct gw_broker_cred *creds;
    size_t ncreds;
    struct gw_broker_conn *conns;
    size_t nconns;
    uint64_t next_conn_id;
    struct gw_broker_stream *streams;
    /* control switches */
    bool refuse;
    uint32_t delay_ms;
    bool echo;
    int layout_expect;                  /* 0 any, 1 linux, 2 embedded */
    struct gw_broker_redirect *redirects;
    struct gw_broker_lock *locks;
    struct gw_broker_stats st;
    bool stopping;                      /* lws context being destroyed: write nothing more */
};

extern struct gw_broker gw_broker;

/* Counts an error by reason in /_control/stats. */
void gw_broker_count_error(const char *reason);

/* --- IOTMP side (broker_iotmp.c) --- */

/* The lws protocol callback for raw TCP/TLS IOTMP and for the "iotmp" WebSocket protocol. */
int gw_broker_iotmp_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                             void *in, size_t len);

/* Connected device by user and device name (authenticated only); NULL if none. */
struct gw_broker_conn *gw_broker_find_device(const char *user, const char *device);
struct gw_broker_conn *gw_broker_find_conn(uint64_t id);

/* Closes a connection now (asynchronously), failing what waits on it. reason is borrowed. */
void gw_broker_conn_drop(struct gw_broker_conn *c, const char *reason);

/* Freeze / unfreeze reading. */
void gw_broker_conn_freeze(struct gw_broker_conn *c, bool frozen);

/* Picks a stream id that is not 0 and not in use on c. */
uint16_t gw_broker_conn_new_sid(struct gw_broker_conn *c);

/*
 * Sends a request of the given type to device c and registers a call waiting for its answer;
 * fixed_sid 0 picks a new stream id (never 0, never one in use on c). resource may be NULL
 * (DESCRIBE all); one made only of digits goes out as a varint. params and payload are borrowed
 * JSON (NULL = absent). req and stream (borrowed, may be NULL) are what the answer is for. The
 * call is owned by c until it is answered, times out or c goes away; each ends in
 * gw_broker_rest_call_done(). Returns NULL when no stream id is free.
 */
struct gw_broker_call *gw_broker_call_start(struct gw_broker_conn *c, uint64_t type, uint8_t kind,
                                            uint16_t fixed_sid, const char *resource,
                                            const json_t *params, const json_t *payload,
                                            uint32_t timeout_ms, struct gw_broker_req *req,
                                            struct gw_broker_stream *stream);

/* Forgets a stream's record (when replaced or freed at exit). */
void gw_broker_stream_free(struct gw_broker_stream *s);
struct gw_broker_stream *gw_broker_stream_find(const char *user, const char *device, uint16_t sid);

/* Frees every connection record at shutdown (after lws is gone). */
void gw_broker_iotmp_cleanup(void);

/* --- REST side (broker_rest.c) --- */

/* The lws protocol callback of the HTTP vhosts (REST + control). */
int gw_broker_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
                            void *in, size_t len);

/* Answers req with status and body (taken; NULL means "null"), and asks to write it. */
void gw_broker_req_respond(struct gw_broker_req *req, int status, json_t *body);

/* Answers req with {"error":{"message": msg, extra...}}; extra (taken) may be NULL. */
void gw_broker_req_error(struct gw_broker_req *req, int status, const char *msg, json_t *extra);

/* A call finished: the device answered (f), timed out (f NULL, timed_out), or went away. */
void gw_broker_rest_call_done(struct gw_broker_call *call, const struct gw_iotmp_frame *f,
                              bool timed_out);

/* New sample on s, or s closed: answers waiting long-polls. */
void gw_broker_rest_stream_event(struct gw_broker_stream *s);

#endif
