/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one event loop of the daemon, on libwebsockets' loop (so WebSocket transports share it):
 * fd watchers, one-shot timers on the monotonic clock, signals, and tasks posted from any thread.
 * Everything here runs on the loop thread except gw_loop_post(), which any thread may call; that
 * is how adapter worker threads hand results back.
 */
#ifndef GW_LOOP_H
#define GW_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gw_loop;
struct gw_watch;
struct gw_timer;
struct lws_context;
struct lws_vhost;

enum {
    GW_LOOP_IN = 1,   /* readable */
    GW_LOOP_OUT = 2,  /* writable */
    GW_LOOP_ERR = 4,  /* error or hang-up (reported, never requested) */
};

typedef void (*gw_fd_fn)(void *arg, int fd, unsigned events);
typedef void (*gw_timer_fn)(void *arg);
typedef void (*gw_task_fn)(void *arg);
typedef void (*gw_signal_fn)(void *arg, int signo);

/* Creates a loop (and its lws context). Returns 0 or a GW_E... code. */
int gw_loop_new(struct gw_loop **out);
/* The same without TLS in lws (no OpenSSL set-up: ~2 MiB less RSS), for a process whose loop never
 * carries a wss:// connection; the WebSocket transport refuses wss on such a loop. */
int gw_loop_new_plain(struct gw_loop **out);
/* Whether the loop's lws context can carry TLS (made by gw_loop_new()). */
bool gw_loop_tls(const struct gw_loop *loop);

/* Frees the loop. Every watch and timer must have been released first. */
void gw_loop_free(struct gw_loop *loop);

/* Runs until gw_loop_stop(). Returns 0. */
int gw_loop_run(struct gw_loop *loop);

/* Makes gw_loop_run() return after the current iteration. Loop thread or signal callback. */
void gw_loop_stop(struct gw_loop *loop);

/* Milliseconds on the monotonic clock (unaffected by wall-clock jumps). */
uint64_t gw_loop_now_ms(void);

/* Wall-clock milliseconds since the epoch (for timestamps only, never for scheduling). */
uint64_t gw_loop_wall_ms(void);

/* The lws context and its default vhost, for transports that use lws directly (WebSocket). */
struct lws_context *gw_loop_lws(struct gw_loop *loop);
struct lws_vhost *gw_loop_vhost(struct gw_loop *loop);

/*
 * Watches fd (borrowed: the caller closes it after gw_loop_unwatch) for the given GW_LOOP_IN /
 * GW_LOOP_OUT events; cb runs on the loop thread. Returns NULL if lws refuses the fd.
 */
struct gw_watch *gw_loop_watch(struct gw_loop *loop, int fd, unsigned events, gw_fd_fn cb,
                               void *arg);
/* Changes the events a watch waits for. */
void gw_loop_watch_set(struct gw_watch *w, unsigned events);
/* Stops watching and frees w (safe from inside its own callback). */
void gw_loop_unwatch(struct gw_watch *w);

/* A one-shot timer; re-arm it from its callback for periodic work. */
struct gw_timer *gw_timer_new(struct gw_loop *loop, gw_timer_fn cb, void *arg);
/* (Re)arms t to fire after delay_ms (0 = on the next iteration). */
void gw_timer_start(struct gw_timer *t, uint64_t delay_ms);
void gw_timer_stop(struct gw_timer *t);
bool gw_timer_armed(const struct gw_timer *t);
/* Stops and frees t (safe from inside its own callback). NULL is ignored. */
void gw_timer_free(struct gw_timer *t);

/*
 * Runs fn(arg) on the loop thread, soon, in the order posted. Any thread. Never blocks on the
 * loop; the queue is unbounded but each entry is small (the producers bound their own backlog).
 */
void gw_loop_post(struct gw_loop *loop, gw_task_fn fn, void *arg);

/*
 * For transports that drive lws connections themselves (WebSocket): bind the connection to the
 * vhost protocol GW_LOOP_LWS_PROTOCOL and give lws, as opaque user data, an object whose first
 * member is a struct gw_lws_handler. Every lws callback for that connection is forwarded to cb
 * (reason is an enum lws_callback_reasons); its return value goes back to lws.
 */
#define GW_LOOP_LWS_PROTOCOL "iotmp"
struct lws;
struct gw_lws_handler {
    int (*cb)(struct lws *wsi, int reason, void *user, void *in, size_t len,
              struct gw_lws_handler *self);
};

/*
 * Runs every task posted so far, now, on the calling (loop) thread. For orderly shutdown: after
 * worker threads have stopped, drain their last posts while what they refer to still exists.
 */
void gw_loop_drain(struct gw_loop *loop);

/* Delivers signo on the loop thread (blocked for the process, read through a signalfd). */
int gw_loop_on_signal(struct gw_loop *loop, int signo, gw_signal_fn cb, void *arg);

#endif
