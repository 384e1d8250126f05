/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gw-session-testd: the real uplink session (gw_core: loop, registry, session, transports) with a
 * few test resources, driven by the integration scripts beside it. Its stdout is a line protocol
 * the scripts read; its stdin takes commands.
 *
 * Resources: noop (run), echo (in/out), counter (out), sensors/temp (out, {"celsius":23.5}),
 * slow (out, answers after 1500 ms from a timer: never blocks the loop), fail (out, always fails),
 * level (in/out: input sets it and publishes it, so event streams see it).
 *
 * Output lines (one event each, flushed):
 *   STATE <state> t=<monotonic ms> reason=<GW_E name or GW_OK>
 *   CALLS sent=N ok=N failed=N dup=N max_ms=N codes=<name>:<count>,...   (after "calls")
 *   STATS {json}                                                         (after "stats")
 * Commands (stdin, one per line):
 *   calls N TIMEOUT_MS   N WRITE_BUCKET calls with answer to bucket "b1", payload {"i": k}
 *   fire N               N WRITE_BUCKET calls without answer
 *   pub V                publishes V (an integer) as the value of "level"
 *   stats                prints the counters
 *   mark                 prints "MARK t=<monotonic ms>" (a time reference for the scripts)
 *   dups                 prints "DUPS n=N": answers that arrived for an already finished call
 *   stop                 gw_session_stop (clean DISCONNECT); "start" starts again
 *   quit                 stops and exits 0
 */
#include "gw/error.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/mem.h"
#include "gw/registry.h"
#include "gw/session.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct gw_loop *loop;
static struct gw_registry *reg;
static struct gw_session *sess;
static uint64_t counter;
static uint32_t level_id;

/* --- Resources --- */

static int run_noop(void *ctx, struct gw_call *call)
{
    (void)ctx;
    gw_call_reply(call, NULL);
    return 0;
}

static int run_echo(void *ctx, struct gw_call *call)
{
    (void)ctx;
    struct gw_value v;
    gw_value_copy(&v, gw_call_input(call));
    gw_call_reply(call, &v);
    return 0;
}

static int run_counter(void *ctx, struct gw_call *call)
{
    (void)ctx;
    struct gw_value v = gw_value_uint(++counter);
    gw_call_reply(call, &v);
    return 0;
}

static int run_temp(void *ctx, struct gw_call *call)
{
    (void)ctx;
    struct gw_value v = gw_value_map();
    *gw_value_map_set(&v, "celsius", 7) = gw_value_double(23.5);
    gw_call_reply(call, &v);
    return 0;
}

struct slow_call {
    struct gw_call *call;
    struct gw_timer *timer;
};

static void slow_fire(void *arg)
{
    struct slow_call *sc = arg;
    struct gw_value v = gw_value_cstr("slow answer");
    gw_call_reply(sc->call, &v);
    gw_timer_free(sc->timer);
    free(sc);
}

static int run_slow(void *ctx, struct gw_call *call)
{
    (void)ctx;
    struct slow_call *sc = gw_calloc(1, sizeof(*sc));
    sc->call = call;
    sc->timer = gw_timer_new(loop, slow_fire, sc);
    gw_timer_start(sc->timer, 1500);
    return 0;
}

static int run_fail(void *ctx, struct gw_call *call)
{
    (void)ctx;
    gw_call_fail(call, GW_EDEVICE, "sensor unplugged");
    return 0;
}

static int run_level(void *ctx, struct gw_call *call)
{
    (void)ctx;
    const struct gw_value *in = gw_call_input(call);
    if (in->type != GW_VALUE_NULL) {
        struct gw_value v;
        gw_value_copy(&v, in);
        gw_registry_publish(reg, level_id, &v, gw_loop_wall_ms());
        gw_value_copy(&v, in);
        gw_call_reply(call, &v);
        return 0;
    }
    struct gw_value last, v = GW_VALUE_INIT_NULL;
    if (gw_res_last(gw_call_res(call), &last, NULL, NULL))
        gw_value_copy(&v, &last);
    gw_call_reply(call, &v);
    return 0;
}

static void add(const char *name, enum gw_fn fn, gw_run_fn run, const struct gw_value *in,
                const struct gw_value *out, const struct gw_value *meta, uint32_t *id)
{
    struct gw_resource_desc d = {
        .name = name, .fn = fn, .in = in, .out = out, .meta = meta, .run = run,
    };
    int rc = gw_registry_add(reg, &d, id);
    if (rc < 0) {
        fprintf(stderr, "registry add %s: %s\n", name, gw_strerror(rc));
        exit(1);
    }
}

/* --- Output --- */

static void on_state(void *arg, enum gw_session_state st, int reason)
{
    (void)arg;
    printf("STATE %s t=%llu reason=%s\n", gw_session_state_name(st),
           (unsigned long long)gw_loop_now_ms(), gw_strerror_name(reason));
    fflush(stdout);
}

/* Outbound call bookkeeping: each call has a slot; an answer to a finished slot is a duplicate. */
struct batch {
    unsigned n, finished, ok, failed, dup;
    uint64_t start, max_ms;
    unsigned *answers;
    int codes[8];
    unsigned code_counts[8];
};
static struct batch *cur;
struct slot;
static struct {
    struct batch *b;
    struct slot *slots;
} kept[256];
static unsigned nkept;

struct slot {
    struct batch *b;
    unsigned i;
};

static void batch_report(struct batch *b)
{
    printf("CALLS sent=%u ok=%u failed=%u dup=%u max_ms=%llu codes=", b->n, b->ok, b->failed,
           b->dup, (unsigned long long)b->max_ms);
    for (int i = 0; i < 8 && b->code_counts[i]; i++)
        printf("%s%s:%u", i ? "," : "", gw_strerror_name(b->codes[i]), b->code_counts[i]);
    printf("\n");
    fflush(stdout);
}

static void on_call(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    (void)out;
    (void)msg;
    struct slot *sl = arg;
    struct batch *b = sl->b;
    if (b->answers[sl->i]++) {
        b->dup++;
        return;
    }
    b->finished++;
    uint64_t ms = gw_loop_now_ms() - b->start;
    if (ms > b->max_ms)
        b->max_ms = ms;
    if (rc == 0) {
        b->ok++;
    } else {
        b->failed++;
        for (int i = 0; i < 8; i++) {
            if (!b->code_counts[i] || b->codes[i] == rc) {
                b->codes[i] = rc;
                b->code_counts[i]++;
                break;
            }
        }
    }
    if (b->finished == b->n)
        batch_report(b);
}

static void start_calls(unsigned n, unsigned timeout_ms, bool answer)
{
    struct batch *b = gw_calloc(1, sizeof(*b)); /* kept: late duplicates must find it */
    b->n = n;
    b->start = gw_loop_now_ms();
    b->answers = gw_calloc(n ? n : 1, sizeof(*b->answers));
    struct slot *slots = gw_calloc(n ? n : 1, sizeof(*slots));
    cur = b;
    if (nkept < 256) {
        kept[nkept].b = b;
        kept[nkept++].slots = slots;
    }
    struct gw_value target = gw_value_cstr("b1");
    unsigned refused = 0;
    int first_rc = 0;
    for (unsigned i = 0; i < n; i++) {
        slots[i].b = b;
        slots[i].i = i;
        struct gw_value payload = gw_value_map();
        *gw_value_map_set(&payload, "i", 1) = gw_value_uint(i);
        int rc = gw_session_call(sess, GW_IOTMP_WRITE_BUCKET, &target, &payload, answer,
                                 timeout_ms, on_call, &slots[i]);
        gw_value_fini(&payload);
        if (rc < 0) {
            refused++;
            if (!first_rc)
                first_rc = rc;
        }
    }
    gw_value_fini(&target);
    printf("CALLS-QUEUED n=%u refused=%u rc=%s\n", n - refused, refused,
           gw_strerror_name(first_rc));
    fflush(stdout);
    if (answer)
        b->n -= refused;
}

static void print_stats(void)
{
    struct gw_session_stats st;
    gw_session_get_stats(sess, &st);
    printf("STATS {\"connects\":%llu,\"connect_failures\":%llu,\"sessions\":%llu,"
           "\"link_losses\":%llu,\"dead_links\":%llu,\"auth_failures\":%llu,\"redirects\":%llu,"
           "\"keepalives_sent\":%llu,\"keepalives_echoed\":%llu,\"calls_in\":%llu,"
           "\"calls_out\":%llu,\"calls_out_failed\":%llu,\"stream_samples\":%llu,"
           "\"samples_coalesced\":%llu,\"frames_ignored\":%llu,\"streams_open\":%u,"
           "\"calls_pending\":%u,\"last_backoff_ms\":%llu,\"epoch\":%u}\n",
           (unsigned long long)st.connects, (unsigned long long)st.connect_failures,
           (unsigned long long)st.sessions, (unsigned long long)st.link_losses,
           (unsigned long long)st.dead_links, (unsigned long long)st.auth_failures,
           (unsigned long long)st.redirects, (unsigned long long)st.keepalives_sent,
           (unsigned long long)st.keepalives_echoed, (unsigned long long)st.calls_in,
           (unsigned long long)st.calls_out, (unsigned long long)st.calls_out_failed,
           (unsigned long long)st.stream_samples, (unsigned long long)st.samples_coalesced,
           (unsigned long long)st.frames_ignored, st.streams_open, st.calls_pending,
           (unsigned long long)st.last_backoff_ms, gw_session_epoch(sess));
    fflush(stdout);
}

/* --- Commands --- */

static char cmdbuf[4096];
static size_t cmdlen;

static void command(char *line)
{
    unsigned a = 0, b = 0;
    long long v = 0;
    if (sscanf(line, "calls %u %u", &a, &b) == 2) {
        start_calls(a, b, true);
    } else if (sscanf(line, "fire %u", &a) == 1) {
        start_calls(a, 0, false);
    } else if (sscanf(line, "pub %lld", &v) == 1) {
        struct gw_value val = gw_value_int(v);
        gw_registry_publish(reg, level_id, &val, gw_loop_wall_ms());
    } else if (strcmp(line, "stats") == 0) {
        print_stats();
    } else if (strcmp(line, "mark") == 0) {
        printf("MARK t=%llu\n", (unsigned long long)gw_loop_now_ms());
        fflush(stdout);
    } else if (strcmp(line, "dups") == 0) {
        printf("DUPS n=%u\n", cur ? cur->dup : 0);
        fflush(stdout);
    } else if (strcmp(line, "stop") == 0) {
        gw_session_stop(sess);
    } else if (strcmp(line, "start") == 0) {
        gw_session_start(sess);
    } else if (strcmp(line, "quit") == 0) {
        gw_session_stop(sess);
        gw_loop_stop(loop);
    } else if (*line) {
        fprintf(stderr, "unknown command: %s\n", line);
    }
}

static struct gw_watch *stdin_watch;

static void on_stdin(void *arg, int fd, unsigned events)
{
    (void)arg;
    (void)events;
    ssize_t n = read(fd, cmdbuf + cmdlen, sizeof(cmdbuf) - 1 - cmdlen);
    if (n <= 0) {
        /* stdin closed: the test is gone; stop. */
        gw_loop_unwatch(stdin_watch);
        stdin_watch = NULL;
        gw_session_stop(sess);
        gw_loop_stop(loop);
        return;
    }
    cmdlen += (size_t)n;
    cmdbuf[cmdlen] = '\0';
    char *nl;
    while ((nl = strchr(cmdbuf, '\n'))) {
        *nl = '\0';
        command(cmdbuf);
        size_t used = (size_t)(nl - cmdbuf) + 1;
        memmove(cmdbuf, cmdbuf + used, cmdlen - used + 1);
        cmdlen -= used;
    }
    if (cmdlen == sizeof(cmdbuf) - 1)
        cmdlen = 0;
}

static void on_signal(void *arg, int signo)
{
    (void)arg;
    (void)signo;
    gw_session_stop(sess);
    gw_loop_stop(loop);
}

int main(int argc, char **argv)
{
    struct gw_session_config cfg = {0};
    static const struct option opts[] = {
        {"url", 1, 0, 'u'},          {"user", 1, 0, 'U'},        {"device", 1, 0, 'd'},
        {"password", 1, 0, 'p'},     {"ka", 1, 0, 'k'},          {"ca", 1, 0, 'c'},
        {"insecure", 0, 0, 'i'},     {"cert", 1, 0, 'C'},        {"key", 1, 0, 'K'},
        {"layout", 1, 0, 'l'},       {"max-frame", 1, 0, 'm'},   {"connect-timeout", 1, 0, 't'},
        {"backoff-min", 1, 0, 'b'},  {"backoff-max", 1, 0, 'B'}, {"auth-backoff", 1, 0, 'A'},
        {"log-level", 1, 0, 'L'},    {"queue-max", 1, 0, 'q'},   {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'u': cfg.url = optarg; break;
        case 'U': cfg.user = optarg; break;
        case 'd': cfg.device = optarg; break;
        case 'p': cfg.password = optarg; break;
        case 'k': cfg.keepalive_s = (unsigned)atoi(optarg); break;
        case 'c': cfg.ca_file = optarg; break;
        case 'i': cfg.insecure = true; break;
        case 'C': cfg.cert_file = optarg; break;
        case 'K': cfg.key_file = optarg; break;
        case 'l':
            cfg.server_action_layout = strcmp(optarg, "embedded") == 0
                                           ? GW_SESSION_LAYOUT_EMBEDDED
                                           : GW_SESSION_LAYOUT_LINUX;
            break;
        case 'm': cfg.max_frame = (size_t)atol(optarg); break;
        case 't': cfg.connect_timeout_ms = (unsigned)atoi(optarg); break;
        case 'b': cfg.backoff_min_ms = (unsigned)atoi(optarg); break;
        case 'B': cfg.backoff_max_ms = (unsigned)atoi(optarg); break;
        case 'A': cfg.auth_backoff_ms = (unsigned)atoi(optarg); break;
        case 'L': gw_log_set_level(gw_log_level_parse(optarg)); break;
        case 'q': cfg.send_queue_max = (size_t)atol(optarg); break;
        default:
            fprintf(stderr, "usage: gw-session-testd --url U --user U --device D --password P "
                            "[--ka S] [--ca F] [--insecure] [--layout linux|embedded] ...\n");
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    if (gw_loop_new(&loop) < 0 || gw_registry_new(loop, &reg) < 0)
        return 1;

    struct gw_value temp_out = gw_value_map();
    *gw_value_map_set(&temp_out, "celsius", 7) = gw_value_double(0.5);
    struct gw_value temp_meta = gw_value_map();
    *gw_value_map_set(&temp_meta, "unit", 4) = gw_value_cstr("C");
    struct gw_value zero = gw_value_uint(0);
    add("noop", GW_FN_RUN, run_noop, NULL, NULL, NULL, NULL);
    add("echo", GW_FN_INOUT, run_echo, &zero, &zero, NULL, NULL);
    add("counter", GW_FN_OUTPUT, run_counter, NULL, &zero, NULL, NULL);
    add("sensors/temp", GW_FN_OUTPUT, run_temp, NULL, &temp_out, &temp_meta, NULL);
    add("slow", GW_FN_OUTPUT, run_slow, NULL, NULL, NULL, NULL);
    add("fail", GW_FN_OUTPUT, run_fail, NULL, NULL, NULL, NULL);
    add("level", GW_FN_INOUT, run_level, &zero, &zero, NULL, &level_id);
    gw_value_fini(&temp_out);
    gw_value_fini(&temp_meta);

    if (gw_session_new(loop, reg, &cfg, &sess) < 0)
        return 2;
    gw_session_on_state(sess, on_state, NULL);
    stdin_watch = gw_loop_watch(loop, 0, GW_LOOP_IN, on_stdin, NULL);
    gw_loop_on_signal(loop, SIGTERM, on_signal, NULL);
    gw_loop_on_signal(loop, SIGINT, on_signal, NULL);
    gw_session_start(sess);
    gw_loop_run(loop);
    /* Let the DISCONNECT go out: a few more iterations. */
    if (stdin_watch)
        gw_loop_unwatch(stdin_watch);
    gw_session_free(sess);
    gw_registry_free(reg);
    gw_loop_free(loop);
    for (unsigned i = 0; i < nkept; i++) {
        free(kept[i].b->answers);
        free(kept[i].b);
        free(kept[i].slots);
    }
    return 0;
}
