/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test harness for the MQTT adapter: a real mosquitto broker on a free 127.0.0.1 port (started in
 * the foreground, stopped by pid), a real gw_loop + gw_registry, a fake gw_host that records log
 * lines, adapter instances created from JSON text, synchronous registry calls, a libmosquitto
 * publisher thread for bulk traffic, and RSS. Shared by the adapter test and the benchmark.
 */
#ifndef GW_MQTT_HARNESS_H
#define GW_MQTT_HARNESS_H

#include "gw/adapter.h"
#include "gw/loop.h"
#include "gw/registry.h"
#include "gw/value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct mh_broker {
    pid_t pid;
    int port;
    char dir[256]; /* scratch folder: config, log, certificates */
    char log[300]; /* broker log file */
};

/* Makes a scratch folder (mkdtemp under /tmp). */
void mh_tmpdir(char *out, size_t cap);
/* A TCP port on 127.0.0.1 that was free a moment ago. */
int mh_free_port(void);
/* Starts mosquitto with extra config lines (may be NULL) on b->port (0 = pick one) in b->dir
 * (made if empty). Waits until it accepts connections. Returns 0 or -1. */
int mh_broker_start(struct mh_broker *b, const char *extra_conf);
/* SIGTERM + wait. */
void mh_broker_stop(struct mh_broker *b);
/* True if the broker log contains s. */
bool mh_broker_log_has(const struct mh_broker *b, const char *s);
/* Runs a shell command; returns its exit status (or -1). */
int mh_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Loop, registry and host. */
struct mh_env {
    struct gw_loop *loop;
    struct gw_registry *reg;
    struct gw_timer *stop;
    struct gw_host host;
    int config_errors;
    char last_config_error[512];
};
void mh_env_init(struct mh_env *e, const char *instance);
void mh_env_fini(struct mh_env *e);
/* Runs the loop for about ms milliseconds. */
void mh_pump(struct mh_env *e, unsigned ms);
/* Pumps until *flag or the deadline; returns *flag. */
#define MH_WAIT(e, cond, ms)                                                                       \
    ({                                                                                             \
        uint64_t _end = gw_loop_now_ms() + (ms);                                                   \
        while (!(cond) && gw_loop_now_ms() < _end)                                                 \
            mh_pump((e), 10);                                                                      \
        (cond);                                                                                    \
    })
/* Log lines recorded from the host (last 4096 kept). True if any contains s. */
bool mh_log_has(const char *s);
size_t mh_log_count(const char *s);
void mh_log_clear(void);

/* Creates (and starts if start) an adapter instance from JSON text. Returns create's rc. */
int mh_adapter_new(struct mh_env *e, const struct gw_adapter_ops *ops, const char *json, bool start,
                   void **state);
void mh_adapter_free(struct mh_env *e, const struct gw_adapter_ops *ops, void *state);

/* Calls resource name with input (taken, NULL = none), pumping until it answers. Returns the
 * call's rc; *out gets the output (caller finalises) and msg the error text. */
int mh_call(struct mh_env *e, const char *name, struct gw_value *input, struct gw_value *out,
            char *msg, size_t msgcap);
/* The same with call parameters (taken, NULL = none). */
int mh_call_params(struct mh_env *e, const char *name, struct gw_value *input,
                   struct gw_value *params, struct gw_value *out, char *msg, size_t msgcap);
/* Reads counter key of "<instance>/_stats" (UINT64_MAX if absent). */
uint64_t mh_stat(struct mh_env *e, const char *instance, const char *key);

/* Publishes n messages from a libmosquitto client in a thread: topic = prefix + (i % ntopics)
 * (just prefix when ntopics is 1),
 * payload "%zu" = i (or payload text when not NULL). */
struct mh_pub;
struct mh_pub *mh_pub_start(int port, const char *topic_prefix, size_t ntopics, size_t n, int qos,
                            const char *payload);
/* Waits for the thread; returns the number published. */
size_t mh_pub_join(struct mh_pub *p);
/* The same, pumping the loop meanwhile (the adapter keeps reading). */
size_t mh_pub_join_wait(struct mh_env *e, struct mh_pub *p);

long mh_rss_kb(void);

#endif
