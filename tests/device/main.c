/* SPDX-License-Identifier: Apache-2.0 */
/*
 * iotmp-testdev: command-line IOTMP test device on top of gw_testdev. It connects to a broker,
 * serves demo resources (counter, echo, state, info, slow, fail, act, emit, stats, keepalive,
 * sensors/temp, raw) plus
 * any given with --resource, prints one ready line on stdout and runs until SIGTERM/SIGINT. The
 * integration tests (tests/integration/broker) and the demo drive it through the broker's REST
 * API; "act" lets a REST call make the device call a server action (bucket, endpoint, property,
 * CALL_DEVICE) in either layout.
 *
 * Exit codes: 0 stopped by a signal, 1 usage, 2 could not connect (network/TLS/WebSocket),
 * 3 CONNECT refused by the server (ERROR; the code is printed), 4 link lost after connecting.
 */
#include "testdev.h"

#include "gw/error.h"
#include "gw/log.h"
#include "gw/mem.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* --- Demo resources --- */

struct demo {
    uint64_t counter;
    struct gw_value state;
    unsigned slow_ms;
};

static int h_counter(struct gw_testdev *d, const struct gw_testdev_resource *r,
                     const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)d;
    (void)in;
    struct demo *dm = r->arg;
    if (!describe)
        dm->counter++;
    *out = gw_value_uint(dm->counter);
    return 0;
}

static int h_echo(struct gw_testdev *d, const struct gw_testdev_resource *r,
                  const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)d;
    (void)r;
    (void)describe;
    if (in)
        gw_value_copy(out, in);
    return 0;
}

static int h_state(struct gw_testdev *d, const struct gw_testdev_resource *r,
                   const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)d;
    (void)describe;
    struct demo *dm = r->arg;
    if (in) {
        gw_value_fini(&dm->state);
        gw_value_copy(&dm->state, in);
    }
    gw_value_copy(out, &dm->state);
    return 0;
}

static int h_info(struct gw_testdev *d, const struct gw_testdev_resource *r,
                  const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)r;
    (void)in;
    (void)describe;
    *out = gw_value_map();
    *gw_value_map_set(out, "device", 6) = gw_value_cstr(gw_testdev_name(d));
    *gw_value_map_set(out, "transport", 9) = gw_value_cstr(gw_testdev_transport(d));
    *gw_value_map_set(out, "pid", 3) = gw_value_uint((uint64_t)getpid());
    return 0;
}

static int h_slow(struct gw_testdev *d, const struct gw_testdev_resource *r,
                  const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)d;
    (void)describe;
    *out = gw_value_map();
    *gw_value_map_set(out, "slow_ms", 7) = gw_value_uint(r->delay_ms);
    if (in)
        gw_value_copy(gw_value_map_set(out, "in", 2), in);
    return 0;
}

static int h_fail(struct gw_testdev *d, const struct gw_testdev_resource *r,
                  const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)d;
    (void)r;
    if (describe) {
        *out = gw_value_map();
        *gw_value_map_set(out, "code", 4) = gw_value_uint(503);
        *gw_value_map_set(out, "message", 7) = gw_value_cstr("");
        return 0;
    }
    double code = 503;
    const struct gw_value *c = in ? gw_value_map_get(in, "code") : NULL;
    if (c)
        gw_value_to_double(c, &code);
    const struct gw_value *m = in ? gw_value_map_get(in, "message") : NULL;
    *out = gw_value_cstr(m && m->type == GW_VALUE_STRING ? m->s.p : "failed on purpose");
    if (c && code == 0)
        return GW_EIO; /* ERROR without PARAMETERS */
    return code >= 1 && code <= 65535 ? (int)code : 503;
}

static int h_stats(struct gw_testdev *d, const struct gw_testdev_resource *r,
                   const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)r;
    (void)in;
    (void)describe;
    struct gw_testdev_stats st;
    gw_testdev_get_stats(d, &st);
    *out = gw_value_map();
    *gw_value_map_set(out, "frames_in", 9) = gw_value_uint(st.frames_in);
    *gw_value_map_set(out, "frames_out", 10) = gw_value_uint(st.frames_out);
    *gw_value_map_set(out, "runs", 4) = gw_value_uint(st.runs);
    *gw_value_map_set(out, "describes", 9) = gw_value_uint(st.describes);
    *gw_value_map_set(out, "stream_samples", 14) = gw_value_uint(st.stream_samples);
    *gw_value_map_set(out, "streams_open", 12) = gw_value_uint(st.streams_open);
    *gw_value_map_set(out, "keepalive_sent", 14) = gw_value_uint(st.keepalive_sent);
    *gw_value_map_set(out, "keepalive_echoes", 16) = gw_value_uint(st.keepalive_echoes);
    *gw_value_map_set(out, "ws_pings", 8) = gw_value_uint(st.ws_pings);
    *gw_value_map_set(out, "ws_pongs", 8) = gw_value_uint(st.ws_pongs);
    return 0;
}

static int h_keepalive(struct gw_testdev *d, const struct gw_testdev_resource *r,
                       const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)r;
    (void)in;
    (void)out;
    if (describe)
        return 0;
    int rc = gw_testdev_keepalive(d);
    if (rc == 0)
        rc = gw_testdev_ws_ping(d) == GW_ELINK ? GW_ELINK : 0;
    return rc;
}

/* raw: sends the input bytes ({"$bytes":"hex"}) to the server as they are (bad-input tests). */
static int h_raw(struct gw_testdev *d, const struct gw_testdev_resource *r,
                 const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)r;
    if (describe) {
        *out = gw_value_bytes("", 0);
        return 0;
    }
    if (!in || in->type != GW_VALUE_BYTES) {
        *out = gw_value_cstr("input must be {\"$bytes\": \"hex\"}");
        return 400;
    }
    gw_log_notice("testdev %s: sending %zu raw bytes on request", gw_testdev_name(d), in->s.len);
    int rc = gw_testdev_send_raw(d, in->s.p, in->s.len);
    return rc < 0 ? rc : 0;
}

static int h_emit(struct gw_testdev *d, const struct gw_testdev_resource *r,
                  const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)r;
    if (describe) {
        *out = gw_value_map();
        *gw_value_map_set(out, "resource", 8) = gw_value_cstr("");
        return 0;
    }
    const struct gw_value *name = in ? gw_value_map_get(in, "resource") : NULL;
    if (!name || name->type != GW_VALUE_STRING) {
        *out = gw_value_cstr("input must be {\"resource\": NAME}");
        return 400;
    }
    int n = gw_testdev_stream_event(d, name->s.p);
    if (n < 0) {
        *out = gw_value_cstr(n == GW_ERESOURCE ? "unknown resource" : gw_strerror(n));
        return n == GW_ERESOURCE ? 404 : 500;
    }
    *out = gw_value_map();
    *gw_value_map_set(out, "sent", 4) = gw_value_uint((uint64_t)n);
    return 0;
}

/*
 * act: {"action": "write_bucket", "target": "b1" | ["dev2","echo"], "data": ..., "layout":
 * "linux"|"embedded", "confirm": true, "timeout": ms} → {"ok":bool, "code":n, "answer":v}.
 */
static int h_act(struct gw_testdev *d, const struct gw_testdev_resource *r,
                 const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)r;
    if (describe) {
        *out = gw_value_map();
        *gw_value_map_set(out, "action", 6) = gw_value_cstr("");
        *gw_value_map_set(out, "target", 6) = gw_value_cstr("");
        *gw_value_map_set(out, "data", 4) = GW_VALUE_INIT_NULL;
        *gw_value_map_set(out, "layout", 6) = gw_value_cstr("linux");
        *gw_value_map_set(out, "confirm", 7) = gw_value_bool(true);
        return 0;
    }
    const struct gw_value *action = in ? gw_value_map_get(in, "action") : NULL;
    int code = action && action->type == GW_VALUE_STRING ? gw_testdev_action_parse(action->s.p)
                                                         : GW_EINVAL;
    if (code < 0) {
        *out = gw_value_cstr("\"action\" must be one of write_bucket, call_endpoint, "
                             "read_property, set_property, call_device, lock_sync, unlock_sync");
        return 400;
    }
    const struct gw_value *layout = gw_value_map_get(in, "layout");
    const struct gw_value *confirm = gw_value_map_get(in, "confirm");
    const struct gw_value *timeout = gw_value_map_get(in, "timeout");
    double tmo = 0;
    if (timeout)
        gw_value_to_double(timeout, &tmo);
    struct gw_testdev_action a = {
        .code = (enum gw_iotmp_action)code,
        .layout = layout && layout->type == GW_VALUE_STRING && strcmp(layout->s.p, "embedded") == 0
                      ? GW_TESTDEV_LAYOUT_EMBEDDED
                      : GW_TESTDEV_LAYOUT_LINUX,
        .target = gw_value_map_get(in, "target"),
        .payload = gw_value_map_get(in, "data"),
        .confirm = !(confirm && confirm->type == GW_VALUE_BOOL && !confirm->b),
        .timeout_ms = tmo > 0 && tmo < 600000 ? (int)tmo : 0,
    };
    struct gw_value ans;
    int peer = -1;
    int rc = gw_testdev_call(d, &a, &ans, &peer);
    *out = gw_value_map();
    if (!a.confirm) {
        *gw_value_map_set(out, "sent", 4) = gw_value_bool(rc == 0);
        return rc == 0 ? 0 : 500;
    }
    *gw_value_map_set(out, "ok", 2) = gw_value_bool(rc == 0);
    if (rc == 0 || rc == GW_EPEER) {
        if (peer >= 0)
            *gw_value_map_set(out, "code", 4) = gw_value_uint((uint64_t)peer);
        *gw_value_map_set(out, "answer", 6) = ans;
    } else {
        gw_value_fini(&ans);
        *gw_value_map_set(out, "error", 5) = gw_value_cstr(gw_strerror(rc));
    }
    return 0;
}

/* --resource name=kind:JSON: run (nothing), in (stores, starts at JSON), out (answers JSON),
 * inout (answers the input, or JSON without input). */
struct custom {
    struct gw_value value;
};

static int h_custom(struct gw_testdev *d, const struct gw_testdev_resource *r,
                    const struct gw_value *in, struct gw_value *out, bool describe)
{
    (void)d;
    (void)describe;
    struct custom *c = r->arg;
    if (r->fn == GW_TESTDEV_FN_IN && in) {
        gw_value_fini(&c->value);
        gw_value_copy(&c->value, in);
    }
    if (r->fn == GW_TESTDEV_FN_INOUT && in)
        gw_value_copy(out, in);
    else
        gw_value_copy(out, &c->value);
    return 0;
}

/* --- Command line --- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: iotmp-testdev --url URL --user U --device D --password P [options]\n"
            "  --url URL            tcp://h:p, tls://h:p, ws://h:p/iotmp, wss://h:p/iotmp\n"
            "  --ca FILE            CA file for tls/wss (default: system store)\n"
            "  --insecure           do not verify the server certificate\n"
            "  --ka S               send CONNECT PARAMETERS {\"ka\": S}; KEEP_ALIVE every 3/4 S\n"
            "  --ka-raw TEXT        send {\"ka\": \"TEXT\"} (a string; for bad-input tests)\n"
            "  --no-keepalive       never send KEEP_ALIVE (to test the broker's ka timeout)\n"
            "  --reconnect          after a lost link, connect again (1..10 s back-off) instead\n"
            "                       of exiting 4; the ready line is printed again\n"
            "  --timeout MS         connect / handshake / CONNECT answer timeout (10000)\n"
            "  --slow-ms MS         delay of the \"slow\" resource's answer (1500)\n"
            "  --resource NAME=KIND:JSON   add a resource; KIND run|in|out|inout\n"
            "  --no-demo            serve only the --resource resources\n"
            "  --log-level LEVEL    err|warn|notice|info|debug (notice)\n"
            "Prints \"iotmp-testdev ready device=D transport=T resources=N\" when connected;\n"
            "runs until SIGTERM. Exit: 0 signal, 1 usage, 2 connect failed, 3 CONNECT refused,\n"
            "4 link lost.\n");
}

static int parse_kind(const char *s, size_t n)
{
    static const char *const kinds[] = {"run", "in", "out", "inout"};
    for (int i = 0; i < 4; i++)
        if (strlen(kinds[i]) == n && strncmp(s, kinds[i], n) == 0)
            return i + 1;
    return GW_EINVAL;
}

int main(int argc, char **argv)
{
    struct gw_testdev_config cfg = {0};
    unsigned slow_ms = 1500;
    bool demo = true, reconnect = false;
    const char *specs[64];
    size_t n_specs = 0;
    gw_log_set_level(GW_LOG_NOTICE);

    enum { O_URL = 256, O_USER, O_DEVICE, O_PASSWORD, O_CA, O_INSECURE, O_KA, O_KA_RAW,
           O_TIMEOUT, O_SLOW, O_RESOURCE, O_NO_DEMO, O_LOG, O_HELP, O_NO_KA, O_RECONNECT };
    static const struct option opts[] = {
        {"url", required_argument, NULL, O_URL},
        {"user", required_argument, NULL, O_USER},
        {"device", required_argument, NULL, O_DEVICE},
        {"password", required_argument, NULL, O_PASSWORD},
        {"ca", required_argument, NULL, O_CA},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"ka", required_argument, NULL, O_KA},
        {"ka-raw", required_argument, NULL, O_KA_RAW},
        {"no-keepalive", no_argument, NULL, O_NO_KA},
        {"reconnect", no_argument, NULL, O_RECONNECT},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"slow-ms", required_argument, NULL, O_SLOW},
        {"resource", required_argument, NULL, O_RESOURCE},
        {"no-demo", no_argument, NULL, O_NO_DEMO},
        {"log-level", required_argument, NULL, O_LOG},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        char *end = NULL;
        switch (opt) {
        case O_URL: cfg.url = optarg; break;
        case O_USER: cfg.user = optarg; break;
        case O_DEVICE: cfg.device = optarg; break;
        case O_PASSWORD: cfg.password = optarg; break;
        case O_CA: cfg.ca_file = optarg; break;
        case O_INSECURE: cfg.insecure = true; break;
        case O_KA_RAW: cfg.ka_raw = optarg; break;
        case O_NO_DEMO: demo = false; break;
        case O_NO_KA: cfg.no_keepalive = true; break;
        case O_RECONNECT: reconnect = true; break;
        case O_KA:
        case O_TIMEOUT:
        case O_SLOW: {
            errno = 0;
            unsigned long v = strtoul(optarg, &end, 10);
            if (errno || !*optarg || *end || v > 10000000) {
                fprintf(stderr, "iotmp-testdev: bad number \"%s\" for --%s\n", optarg,
                        opt == O_KA ? "ka" : opt == O_TIMEOUT ? "timeout" : "slow-ms");
                return 1;
            }
            if (opt == O_KA)
                cfg.ka = (unsigned)v;
            else if (opt == O_TIMEOUT)
                cfg.timeout_ms = (int)v;
            else
                slow_ms = (unsigned)v;
            break;
        }
        case O_RESOURCE:
            if (n_specs == sizeof specs / sizeof specs[0]) {
                fprintf(stderr, "iotmp-testdev: too many --resource options\n");
                return 1;
            }
            specs[n_specs++] = optarg;
            break;
        case O_LOG: {
            int lvl = gw_log_level_parse(optarg);
            if (lvl < 0) {
                fprintf(stderr, "iotmp-testdev: bad --log-level \"%s\"\n", optarg);
                return 1;
            }
            gw_log_set_level(lvl);
            break;
        }
        case O_HELP: usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (optind < argc || !cfg.url || !cfg.user || !cfg.device || !cfg.password) {
        fprintf(stderr, "iotmp-testdev: --url, --user, --device and --password are required\n");
        usage(stderr);
        return 1;
    }

    struct gw_testdev *d = gw_testdev_new(&cfg);
    struct demo dm = {.counter = 0, .state = GW_VALUE_INIT_NULL, .slow_ms = slow_ms};
    struct custom customs[64];
    size_t n_customs = 0, n_added = 0;
    int exit_code = 1;
    if (demo) {
        struct gw_testdev_resource rs[] = {
            {.name = "counter", .fn = GW_TESTDEV_FN_OUT, .handler = h_counter, .arg = &dm},
            {.name = "echo", .fn = GW_TESTDEV_FN_INOUT, .handler = h_echo},
            {.name = "state", .fn = GW_TESTDEV_FN_IN, .handler = h_state, .arg = &dm},
            {.name = "info", .fn = GW_TESTDEV_FN_OUT, .handler = h_info},
            {.name = "slow", .fn = GW_TESTDEV_FN_INOUT, .handler = h_slow, .delay_ms = slow_ms},
            {.name = "fail", .fn = GW_TESTDEV_FN_INOUT, .handler = h_fail},
            {.name = "act", .fn = GW_TESTDEV_FN_INOUT, .handler = h_act},
            {.name = "emit", .fn = GW_TESTDEV_FN_INOUT, .handler = h_emit},
            {.name = "stats", .fn = GW_TESTDEV_FN_OUT, .handler = h_stats},
            {.name = "keepalive", .fn = GW_TESTDEV_FN_RUN, .handler = h_keepalive},
            {.name = "sensors/temp", .fn = GW_TESTDEV_FN_OUT, .handler = h_counter, .arg = &dm},
            {.name = "raw", .fn = GW_TESTDEV_FN_IN, .handler = h_raw},
        };
        for (size_t i = 0; i < sizeof rs / sizeof rs[0]; i++)
            if (gw_testdev_add_resource(d, &rs[i]) == 0)
                n_added++;
    }
    for (size_t i = 0; i < n_specs; i++) {
        const char *s = specs[i];
        const char *eq = strchr(s, '=');
        const char *colon = eq ? strchr(eq + 1, ':') : NULL;
        int kind = colon ? parse_kind(eq + 1, (size_t)(colon - eq - 1)) : GW_EINVAL;
        if (!eq || eq == s || kind < 0) {
            fprintf(stderr, "iotmp-testdev: --resource \"%s\": expected NAME=KIND:JSON with KIND "
                    "run, in, out or inout\n", s);
            goto out;
        }
        char err[200];
        struct custom *c = &customs[n_customs];
        const char *json = colon[1] ? colon + 1 : "null";
        if (gw_testdev_json_parse(json, &c->value, err, sizeof err) < 0) {
            fprintf(stderr, "iotmp-testdev: --resource \"%s\": %s\n", s, err);
            goto out;
        }
        n_customs++;
        char *name = gw_strndup(s, (size_t)(eq - s));
        struct gw_testdev_resource r = {.name = name, .fn = (enum gw_testdev_fn)kind,
                                        .handler = h_custom, .arg = c};
        int rc = gw_testdev_add_resource(d, &r);
        free(name);
        if (rc == 0)
            n_added++;
        if (rc < 0) {
            fprintf(stderr, "iotmp-testdev: --resource \"%s\": %s\n", s,
                    rc == GW_EEXIST ? "duplicate name" : gw_strerror(rc));
            goto out;
        }
    }

    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: poll returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = gw_testdev_connect(d);
    if (rc < 0) {
        fprintf(stderr, "iotmp-testdev: %s: connect to %s failed: %s\n", cfg.device, cfg.url,
                gw_testdev_error(d));
        if (rc == GW_EAUTH || rc == GW_EREDIRECT || rc == GW_EPEER) {
            const char *to = gw_testdev_redirect(d);
            printf("iotmp-testdev refused device=%s code=%d%s%s\n", cfg.device,
                   gw_testdev_connect_code(d), to ? " redirect=" : "", to ? to : "");
            fflush(stdout);
            exit_code = 3;
        } else {
            exit_code = 2;
        }
        goto out;
    }
    printf("iotmp-testdev ready device=%s transport=%s resources=%zu\n", cfg.device,
           gw_testdev_transport(d), n_added);
    fflush(stdout);
    while (!stop_flag) {
        rc = gw_testdev_poll(d, 1000);
        if (rc == -EINTR)
            continue;
        if (rc < 0) {
            fprintf(stderr, "iotmp-testdev: %s: link lost: %s\n", cfg.device, gw_testdev_error(d));
            if (!reconnect) {
                exit_code = 4;
                goto out;
            }
            /* Back off 1, 2, 4, 8, 10, 10 ... s; a signal ends the wait. */
            for (unsigned wait_s = 1; !stop_flag; wait_s = wait_s * 2 > 10 ? 10 : wait_s * 2) {
                fprintf(stderr, "iotmp-testdev: %s: reconnecting in %u s\n", cfg.device, wait_s);
                struct timespec ts = {.tv_sec = wait_s};
                nanosleep(&ts, NULL);
                if (stop_flag)
                    break;
                rc = gw_testdev_connect(d);
                if (rc == 0) {
                    printf("iotmp-testdev ready device=%s transport=%s resources=%zu\n",
                           cfg.device, gw_testdev_transport(d), n_added);
                    fflush(stdout);
                    break;
                }
                fprintf(stderr, "iotmp-testdev: %s: reconnect failed: %s\n", cfg.device,
                        gw_testdev_error(d));
            }
        }
    }
    exit_code = 0;
out:
    gw_testdev_free(d);
    gw_value_fini(&dm.state);
    for (size_t i = 0; i < n_customs; i++)
        gw_value_fini(&customs[i].value);
    return exit_code;
}
