/* SPDX-License-Identifier: Apache-2.0 */
/*
 * iotmp-gatewayd: the table of contents of the daemon.
 *   settings (gateway.json + adapters.d, validated) → loop → registry → adapters → uplink → run
 * SIGTERM/SIGINT stop cleanly; SIGHUP reloads: a new configuration that fails validation, or whose
 * adapters fail to build, is refused and the running one goes on unchanged.
 * `iotmp-gatewayd validate [FILE...]` checks configuration files without starting anything.
 *
 * Exit codes: 0 clean stop or valid config; 1 invalid configuration; 2 a file could not be read;
 * 3 a runtime failure at start-up (event loop, uplink).
 */
#include "adapter_table.h"
#include "forward.h"
#include "health.h"
#include "metrics.h"
#include "sdnotify.h"
#include "gw/config.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/mem.h"
#include "gw/registry.h"
#include "gw/session.h"
#include "gw/settings.h"
#include "gw/store.h"
#include "gw/transport.h"

#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

enum { EXIT_INVALID = 1, EXIT_UNREADABLE = 2, EXIT_RUNTIME = 3 };

struct options {
    const char *config;
    const char *adapters_dir;
    const char *schema_dir;
    const char *log_level;
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: iotmp-gatewayd [OPTIONS]             run the gateway\n"
            "       iotmp-gatewayd validate [OPTIONS] [FILE...]\n"
            "                                            check configuration files and exit\n"
            "\n"
            "Bridges Modbus, GPIO and MQTT points to IOTMP resources on a Thinger.io broker.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE      gateway file (default " GW_SETTINGS_DEFAULT_FILE ")\n"
            "  -a, --adapters DIR     adapter instance folder (default: adapters_dir of the file)\n"
            "      --schema-dir DIR   JSON Schemas (default: the installed ones)\n"
            "  -l, --log-level LEVEL  err, warn, notice, info or debug (overrides the file)\n"
            "  -h, --help             this text\n"
            "  -V, --version          version\n"
            "\n"
            "validate without FILE checks the gateway file and every file in its adapters folder;\n"
            "with FILEs it checks those (a file with a \"type\" member is an adapter instance).\n"
            "Exit status: 0 valid / clean stop, 1 invalid configuration, 2 unreadable file,\n"
            "3 start-up failure.\n");
}

/* Prints every diagnostic, sorted, to f. */
static void print_diags(FILE *f, struct gw_diag_list *diags)
{
    gw_diag_list_sort(diags);
    char *text = gw_diag_format(diags);
    fputs(text, f);
    free(text);
}

/* Logs every diagnostic as an error line (for SIGHUP, where stderr is the journal). */
static void log_diags(struct gw_diag_list *diags)
{
    gw_diag_list_sort(diags);
    char *text = gw_diag_format(diags);
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
        gw_log_err("config: %s", line);
    free(text);
}

/* --- Adapter instances --- */

struct instance {
    struct gw_host host; /* first: the host callbacks get it back */
    const struct gw_adapter_ops *ops;
    struct gw_adapter_instance *conf;
    struct gw_diag_list *diags; /* where config_error goes (create only) */
    void *state;
    bool started;
    char prefix[160];
};

struct daemon {
    struct options opt;
    struct gw_loop *loop;
    struct gw_registry *reg;
    struct gw_store *store;
    struct gw_session *session;
    struct gw_forward *forward;
    struct gw_health_src health;
    struct gw_metrics *metrics;
    struct gw_timer *exit_timer;
    bool stopping;
    struct gw_settings *settings;
    struct instance *inst;
    size_t n_inst;
    struct gw_timer *watchdog; /* systemd WATCHDOG=1 pings, NULL without WatchdogSec= */
    uint64_t watchdog_ms;      /* ping period: half of WATCHDOG_USEC */
    struct gw_timer *trim;     /* gives freed heap pages back (on_trim) */
};

static void host_log(const struct gw_host *host, int level, const char *fmt, ...)
{
    const struct instance *in = (const struct instance *)host;
    if (level > gw_log_level_current)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    gw_log_write(level, "%s: %s", in->prefix, msg);
}

static void host_config_error(const struct gw_host *host, const char *pointer, const char *fmt,
                              ...)
{
    const struct instance *in = (const struct instance *)host;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!in->diags) { /* after create(): just log */
        gw_log_err("%s: config %s: %s", in->prefix, pointer, msg);
        return;
    }
    size_t from = in->diags->n;
    gw_diag_add(in->diags, pointer, "", "%s", msg);
    gw_config_locate(in->conf->doc, in->diags, from);
}

/*
 * Creates (but does not start) one instance per adapter file. All or nothing: on any failure,
 * every instance created so far is destroyed and the problems are in diags.
 */
static int create_instances(struct daemon *d, struct gw_settings *s, struct instance **out,
                            struct gw_diag_list *diags)
{
    struct instance *in = gw_calloc(s->n_adapters + 1, sizeof *in);
    int rc = 0;
    size_t i;
    for (i = 0; i < s->n_adapters; i++) {
        struct instance *x = &in[i];
        x->conf = &s->adapters[i];
        x->ops = gw_adapter_find(x->conf->type);
        snprintf(x->prefix, sizeof x->prefix, "%s %s", x->conf->type, x->conf->name);
        if (!x->ops) {
            size_t from = diags->n;
            gw_diag_add(diags, "/type", "", "adapter kind \"%s\" is not compiled into this build",
                        x->conf->type);
            gw_config_locate(x->conf->doc, diags, from);
            rc = GW_ECONFIG;
            continue; /* report every file's problems */
        }
        x->host = (struct gw_host){.loop = d->loop,
                                   .registry = d->reg,
                                   .instance = x->conf->name,
                                   .file = x->conf->file,
                                   .log = host_log,
                                   .config_error = host_config_error,
                                   .core = d};
        x->diags = diags;
        size_t before = diags->n;
        int r = x->ops->create(&x->host, &x->conf->config, &x->state);
        x->diags = NULL;
        if (r < 0) {
            x->state = NULL;
            if (diags->n == before) {
                struct gw_diag *g = gw_diag_add(diags, NULL, NULL, "%s: %s", x->prefix,
                                                gw_strerror(r));
                g->file = gw_strdup(x->conf->file);
            }
            rc = r == GW_ECONFIG_READ ? r : (rc ? rc : GW_ECONFIG);
        }
    }
    if (rc < 0) {
        for (i = 0; i < s->n_adapters; i++)
            if (in[i].state)
                in[i].ops->destroy(in[i].state);
        free(in);
        return rc;
    }
    /* The config is borrowed by create() only (adapter.h) and config_error() after create() no
     * longer reads the document: the value trees and the files' position indexes (~0.65 KiB per
     * configured point; the JSON trees went at load, gw_config_take_value()) go now, and the
     * freed heap goes back to the system. */
    for (i = 0; i < s->n_adapters; i++) {
        gw_value_fini(&s->adapters[i].config);
        gw_config_free(s->adapters[i].doc);
        s->adapters[i].doc = NULL;
    }
    malloc_trim(0);
    *out = in;
    return 0;
}

static void stop_instances(struct daemon *d, struct instance *in, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        if (in[i].started && in[i].ops->stop)
            in[i].ops->stop(in[i].state);
        gw_registry_remove_owner(d->reg, in[i].state);
        if (in[i].state)
            in[i].ops->destroy(in[i].state);
    }
    free(in);
}

static int start_instances(struct instance *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int rc = in[i].ops->start(in[i].state);
        if (rc < 0) {
            gw_log_err("%s: start failed: %s", in[i].prefix, gw_strerror(rc));
            return rc;
        }
        in[i].started = true;
    }
    return 0;
}

/* --- validate --- */

/* Semantic checks only an adapter can make: create() (parses, allocates, no I/O), destroy(). */
static int check_adapters(const struct options *o, struct gw_settings *s,
                          struct gw_diag_list *diags)
{
    struct daemon d = {.opt = *o, .settings = s};
    struct instance *in = NULL;
    int rc = GW_EIO;
    if (gw_loop_new(&d.loop) == 0 && gw_registry_new(d.loop, &d.reg) == 0) {
        rc = create_instances(&d, s, &in, diags);
        if (rc == 0)
            stop_instances(&d, in, s->n_adapters);
    }
    if (d.loop)
        gw_loop_drain(d.loop); /* posts of the adapters, while the registry still exists */
    gw_registry_free(d.reg);
    gw_loop_free(d.loop);
    return rc;
}

static bool looks_like_adapter(const char *file)
{
    struct gw_config_doc *doc = NULL;
    if (gw_config_load(file, &doc, NULL) < 0)
        return false;
    json_t *root = gw_config_root(doc);
    bool adapter = json_is_object(root) && json_object_get(root, "type") &&
                   !json_object_get(root, "uplink");
    gw_config_free(doc);
    return adapter;
}

static int cmd_validate(const struct options *o, int nfiles, char **files)
{
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    int worst = 0, checked = 0;
    if (nfiles == 0) {
        struct gw_settings *s = NULL;
        const char *cfg = o->config ? o->config : GW_SETTINGS_DEFAULT_FILE;
        worst = gw_settings_load(cfg, o->adapters_dir, o->schema_dir, &s, &diags);
        if (s)
            checked = 1 + (int)s->n_adapters;
        if (worst == 0 && s)
            worst = check_adapters(o, s, &diags);
        gw_settings_free(s);
    } else {
        for (int i = 0; i < nfiles; i++) {
            int rc;
            if (looks_like_adapter(files[i])) {
                /* Schema, then the adapter's own checks, as for a whole configuration. */
                struct gw_adapter_instance inst = {0};
                rc = gw_settings_load_adapter(files[i], o->schema_dir, &inst, &diags);
                if (rc == 0) {
                    struct gw_settings one = {.adapters = &inst, .n_adapters = 1};
                    rc = check_adapters(o, &one, &diags);
                    gw_adapter_instance_fini(&inst);
                }
            } else {
                rc = gw_settings_check_gateway(files[i], o->schema_dir, &diags);
            }
            if (rc == GW_ECONFIG_READ || (rc < 0 && worst == 0))
                worst = rc;
            checked++;
        }
    }
    print_diags(stdout, &diags);
    size_t problems = diags.n;
    gw_diag_list_fini(&diags);
    if (worst == 0) {
        printf("valid: %d file(s) checked\n", checked);
        return 0;
    }
    printf("invalid: %zu problem(s)\n", problems);
    if (worst == GW_EIO)
        return EXIT_RUNTIME;
    return worst == GW_ECONFIG_READ ? EXIT_UNREADABLE : EXIT_INVALID;
}

/* --- Signals --- */

static void on_session_state(void *arg, enum gw_session_state st, int reason)
{
    struct daemon *d = arg;
    (void)reason;
    if (d->forward)
        gw_forward_on_session_state(d->forward, st);
    if (d->stopping && st == GW_SESSION_STOPPED)
        gw_loop_stop(d->loop);
}

/* Pings systemd's watchdog; runs only while the loop turns, so a stuck loop stops the pings. */
/*
 * Every TRIM_MS the heap's free pages go back to the system (malloc_trim). Start-up leaves a heap
 * as large as its peak (the configuration being loaded: ~190 MiB at 100,000 Modbus points when
 * this was measured, ~87 MiB since gw_config_take_value()), freed but with live objects between
 * its pages; values in flight (a publish batch of a few KiB per poll) are then allocated from free
 * chunks anywhere in it and keep touching pages: measured at 1,000 Modbus devices x 100 points,
 * RSS went from 36.7 to 38.5 MiB within 8 s after a trim. A trim of that heap took 0.4 to 1 ms on
 * the loop thread (logged at debug level). With it, RSS at that load measured 35.3 to 36.3 MiB
 * (38.6 to 39.1 without).
 */
#define TRIM_MS 5000

static void on_trim(void *arg)
{
    struct daemon *d = arg;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    malloc_trim(0);
    clock_gettime(CLOCK_MONOTONIC, &b);
    gw_log_debug("malloc_trim took %ld us",
                 (long)((b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000));
    gw_timer_start(d->trim, TRIM_MS);
}

static void on_watchdog(void *arg)
{
    struct daemon *d = arg;
    gw_sdnotify_send("WATCHDOG=1");
    gw_timer_start(d->watchdog, d->watchdog_ms);
}

/* Tells systemd the daemon is (again) ready, with a one-line status for systemctl status. */
static void notify_ready(struct daemon *d)
{
    int rc = gw_sdnotify_sendf("READY=1\nSTATUS=%zu adapter instance(s), %zu resource(s)",
                               d->n_inst, gw_registry_count(d->reg));
    if (rc < 0)
        gw_log_warn("systemd notification failed (%s): $NOTIFY_SOCKET=%s", gw_strerror(rc),
                    getenv("NOTIFY_SOCKET"));
}

static void on_stop_signal(void *arg, int signo)
{
    struct daemon *d = arg;
    gw_sdnotify_send("STOPPING=1");
    if (d->stopping) {
        gw_log_notice("second %s: stopping now", signo == SIGTERM ? "SIGTERM" : "SIGINT");
        gw_loop_stop(d->loop);
        return;
    }
    gw_log_notice("received %s, stopping", signo == SIGTERM ? "SIGTERM" : "SIGINT");
    d->stopping = true;
    /* A clean DISCONNECT first: stopping the session fails the calls still in flight, so the
     * forwarder hears about the queued rows it sent (they stay queued) while it still exists.
     * Then recordings stop and what the store took is committed. The loop ends when the
     * DISCONNECT is written, or after 2 s anyway. */
    d->exit_timer = gw_timer_new(d->loop, (gw_timer_fn)gw_loop_stop, d->loop);
    gw_timer_start(d->exit_timer, 2000);
    bool wait_disconnect = d->session && gw_session_state(d->session) != GW_SESSION_STOPPED;
    if (wait_disconnect)
        gw_session_stop(d->session);
    gw_forward_free(d->forward);
    d->forward = NULL;
    if (!wait_disconnect)
        gw_loop_stop(d->loop);
}

static void on_reload(void *arg, int signo)
{
    struct daemon *d = arg;
    (void)signo;
    const char *cfg = d->opt.config ? d->opt.config : GW_SETTINGS_DEFAULT_FILE;
    gw_log_notice("received SIGHUP, reloading %s", cfg);
    gw_sdnotify_send("RELOADING=1");
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    struct gw_settings *s = NULL;
    int rc = gw_settings_load(cfg, d->opt.adapters_dir, d->opt.schema_dir, &s, &diags);
    struct instance *in = NULL;
    if (rc == 0)
        rc = create_instances(d, s, &in, &diags);
    if (rc < 0) {
        log_diags(&diags);
        gw_log_err("reload refused (%zu problem(s)); the running configuration stays in force",
                   diags.n);
        gw_diag_list_fini(&diags);
        gw_settings_free(s);
        notify_ready(d);
        return;
    }
    gw_diag_list_fini(&diags);
    /* Swap: the old adapters stop (safe states applied, resources removed), the new ones start.
     * The uplink session is not touched, so the broker sees the resources change, not a drop. */
    stop_instances(d, d->inst, d->n_inst);
    gw_settings_free(d->settings);
    d->settings = s;
    d->inst = in;
    d->n_inst = s->n_adapters;
    d->health.adapters = d->n_inst;
    if (start_instances(d->inst, d->n_inst) < 0)
        gw_log_err("reload: some adapters did not start; see the lines above");
    if (!d->opt.log_level && s->log_level > 0)
        gw_log_set_level(s->log_level);
    gw_log_notice("reload done: %zu adapter instance(s), %zu resource(s)", d->n_inst,
                  gw_registry_count(d->reg));
    notify_ready(d);
}

/* Store, session and forwarder. Returns 0 or an exit code (the reason is logged). */
static int start_uplink(struct daemon *d)
{
    const struct gw_settings *s = d->settings;
    /* Recorded resources must exist: a typo here would silently record nulls forever. */
    for (size_t i = 0; i < s->n_recordings; i++)
        for (size_t k = 0; k < s->recordings[i].n_resources; k++) {
            const char *name = s->recordings[i].resources[k];
            if (gw_registry_find(d->reg, name, strlen(name)))
                continue;
            char ptr[64];
            int line = 0, col = 0;
            snprintf(ptr, sizeof ptr, "/record/%zu/resources/%zu", i, k);
            gw_config_pos(s->doc, ptr, &line, &col);
            fprintf(stderr, "%s:%d:%d: %s: no resource named \"%s\"\n", s->file, line, col, ptr,
                    name);
            fprintf(stderr, "iotmp-gatewayd: not started: a recording names an unknown resource\n");
            return EXIT_INVALID;
        }

    struct gw_store_config sc;
    gw_store_config_init(&sc);
    sc.path = s->store_path;
    sc.budget_bytes = s->store_budget_bytes;
    sc.max_age_ms = (int64_t)s->store_max_age_s * 1000;
    sc.policy = s->store_refuse_new ? GW_STORE_REFUSE_NEW : GW_STORE_DROP_OLDEST;
    sc.commit_ms = s->store_commit_ms;
    sc.commit_rows = s->store_commit_rows;
    sc.sync = s->store_sync_full ? GW_STORE_SYNC_FULL : GW_STORE_SYNC_NORMAL;
    int rc = gw_store_open(&sc, &d->store);
    if (rc < 0) {
        gw_log_err("cannot open the store %s: %s", s->store_path, gw_strerror(rc));
        return EXIT_RUNTIME;
    }

    char password[512];
    if (gw_settings_read_password(s, password, sizeof password) < 0)
        return EXIT_INVALID;
    struct gw_session_config cfg = {
        .url = s->url,
        .user = s->user,
        .device = s->device,
        .password = password,
        .keepalive_s = s->keepalive_s,
        .ca_file = s->ca_file,
        .insecure = s->insecure,
        .cert_file = s->cert_file,
        .key_file = s->key_file,
        .max_frame = s->max_frame,
        .server_action_layout = s->layout_embedded ? GW_SESSION_LAYOUT_EMBEDDED
                                                   : GW_SESSION_LAYOUT_LINUX,
        .connect_timeout_ms = s->connect_timeout_s * 1000,
        .backoff_max_ms = s->reconnect_max_s * 1000,
        .reconnect_spread_ms = s->reconnect_spread_s * 1000,
        .send_queue_max = s->send_queue,
        .max_calls_in = s->max_calls,
    };
    rc = gw_session_new(d->loop, d->reg, &cfg, &d->session);
    explicit_bzero(password, sizeof password); /* the session keeps its own copy */
    if (rc < 0) {
        gw_log_err("uplink: %s", gw_strerror(rc));
        return rc == GW_EINVAL ? EXIT_INVALID : EXIT_RUNTIME;
    }
    gw_session_on_state(d->session, on_session_state, d);

    struct gw_recording *recs = gw_calloc(s->n_recordings + 1, sizeof *recs);
    for (size_t i = 0; i < s->n_recordings; i++)
        recs[i] = (struct gw_recording){.bucket = s->recordings[i].bucket,
                                        .resources = (const char **)s->recordings[i].resources,
                                        .n_resources = s->recordings[i].n_resources,
                                        .interval_ms = s->recordings[i].interval_ms};
    struct gw_forward_config fc = {.max_rate = s->store_replay_rate,
                                   .window = s->store_replay_window};
    rc = gw_forward_new(d->loop, d->reg, d->store, d->session, &fc, recs, s->n_recordings,
                        &d->forward);
    free(recs);
    if (rc < 0)
        return EXIT_RUNTIME;
    d->health = (struct gw_health_src){.reg = d->reg, .session = d->session, .store = d->store,
                                       .adapters = d->n_inst};
    if (gw_health_register(&d->health, d->loop) < 0)
        gw_log_warn("cannot register $gateway/health");
    if (s->metrics_listen && gw_metrics_start(d->loop, s->metrics_listen, &d->health,
                                              &d->metrics) < 0)
        return EXIT_RUNTIME;
    rc = gw_session_start(d->session);
    if (rc < 0) {
        gw_log_err("uplink: cannot start: %s", gw_strerror(rc));
        return EXIT_RUNTIME;
    }
    return 0;
}

/* --- run --- */

/*
 * Raises the soft RLIMIT_NOFILE towards the hard one (at most NOFILE_WANT) before the loop exists:
 * a thousand Modbus TCP connections need more than the usual soft limit of 1024, and
 * libwebsockets sizes its descriptor tables from the limit it sees when the context is created
 * (a descriptor above it could not be watched later). The systemd unit sets LimitNOFILE=65536;
 * this covers a daemon started from a shell.
 */
enum { NOFILE_WANT = 65536 };

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= NOFILE_WANT)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > NOFILE_WANT ? NOFILE_WANT
                                                                            : rl.rlim_max;
    if (want <= rl.rlim_cur)
        return;
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        gw_log_warn("cannot raise the open-file limit from %llu to %llu: %m",
                    (unsigned long long)old, (unsigned long long)want);
    else
        gw_log_info("open-file limit raised from %llu to %llu", (unsigned long long)old,
                    (unsigned long long)want);
}

static int cmd_run(const struct options *o)
{
    struct daemon d = {.opt = *o};
    struct gw_diag_list diags;
    gw_diag_list_init(&diags);
    const char *cfg = o->config ? o->config : GW_SETTINGS_DEFAULT_FILE;

    int rc = gw_settings_load(cfg, o->adapters_dir, o->schema_dir, &d.settings, &diags);
    if (rc < 0) {
        print_diags(stderr, &diags);
        fprintf(stderr, "iotmp-gatewayd: not started: %zu problem(s) in the configuration (%s)\n",
                diags.n, cfg);
        gw_diag_list_fini(&diags);
        return rc == GW_ECONFIG_READ ? EXIT_UNREADABLE : EXIT_INVALID;
    }
    if (!o->log_level && d.settings->log_level > 0)
        gw_log_set_level(d.settings->log_level);

    raise_nofile();
    /* lws needs its OpenSSL set-up only for a wss:// uplink (MQTT over TLS uses OpenSSL directly,
     * redirects are followed only from iotmps://): a plain iotmp:// or ws:// uplink saves ~2 MiB.
     * A secure or unparsable URL keeps it (the session says what is wrong with the URL). */
    struct gw_transport_url url;
    bool tls = gw_transport_url_parse(d.settings->url, &url, NULL) != 0 ||
               gw_transport_kind_secure(url.kind);
    if ((tls ? gw_loop_new(&d.loop) : gw_loop_new_plain(&d.loop)) < 0 ||
        gw_registry_new(d.loop, &d.reg) < 0) {
        gw_settings_free(d.settings);
        return EXIT_RUNTIME;
    }
    rc = create_instances(&d, d.settings, &d.inst, &diags);
    if (rc < 0) {
        print_diags(stderr, &diags);
        fprintf(stderr, "iotmp-gatewayd: not started: %zu problem(s) in adapter files\n", diags.n);
        gw_diag_list_fini(&diags);
        gw_registry_free(d.reg);
        gw_loop_free(d.loop);
        gw_settings_free(d.settings);
        return rc == GW_ECONFIG_READ ? EXIT_UNREADABLE : EXIT_INVALID;
    }
    gw_diag_list_fini(&diags);
    d.n_inst = d.settings->n_adapters;

    int exit_code = 0;
    gw_loop_on_signal(d.loop, SIGTERM, on_stop_signal, &d);
    gw_loop_on_signal(d.loop, SIGINT, on_stop_signal, &d);
    gw_loop_on_signal(d.loop, SIGHUP, on_reload, &d);
    signal(SIGPIPE, SIG_IGN);

    if (start_instances(d.inst, d.n_inst) < 0)
        exit_code = EXIT_RUNTIME;
    else
        exit_code = start_uplink(&d);
    if (exit_code == 0) {
        gw_log_notice("iotmp-gatewayd %s started: %zu adapter instance(s), %zu resource(s), "
                      "uplink %s", GW_VERSION, d.n_inst, gw_registry_count(d.reg),
                      d.settings->url);
        uint64_t wd_usec = 0;
        int wd = gw_sdnotify_watchdog_usec(&wd_usec);
        if (wd < 0)
            gw_log_warn("systemd watchdog variables malformed (%s): not pinging, systemd will "
                        "restart the service", gw_strerror(wd));
        if (wd > 0) {
            d.watchdog_ms = wd_usec / 2000 ? wd_usec / 2000 : 1;
            d.watchdog = gw_timer_new(d.loop, on_watchdog, &d);
            gw_timer_start(d.watchdog, 0);
        }
        /* Start-up's temporary memory (the store's integrity check of a full queue, the
         * registry's tables while they grew) goes back to the system before the steady state. */
        malloc_trim(0);
        d.trim = gw_timer_new(d.loop, on_trim, &d);
        gw_timer_start(d.trim, TRIM_MS);
        notify_ready(&d);
        gw_loop_run(d.loop);
        gw_timer_free(d.watchdog);
        gw_timer_free(d.trim);
    }
    gw_metrics_stop(d.metrics);
    if (d.health.reg)
        gw_health_stop(&d.health);
    gw_forward_free(d.forward);
    gw_session_free(d.session);
    gw_timer_free(d.exit_timer);
    gw_store_close(d.store);
    stop_instances(&d, d.inst, d.n_inst);
    /* Adapter threads are joined now: run what they posted last while the registry exists. */
    gw_loop_drain(d.loop);
    gw_registry_free(d.reg);
    gw_loop_free(d.loop);
    gw_settings_free(d.settings);
    gw_log_notice("stopped");
    return exit_code;
}

/*
 * One malloc arena for the whole process (unless MALLOC_ARENA_MAX says otherwise). glibc gives
 * threads arenas of their own (up to 8 per core); values are allocated on the Modbus pool's threads
 * and freed on the loop thread, and pool threads come and go, so memory spread over several
 * arenas that each keep their free space: with 1,000 Modbus devices x 100 points RSS kept
 * growing (45 -> 56 MiB in a minute with the default, +2.7 MiB with two arenas, flat with one).
 * The threads that allocate are few and mostly wait on devices, so one arena's lock costs little.
 */
static void malloc_setup(void)
{
    if (!getenv("MALLOC_ARENA_MAX"))
        mallopt(M_ARENA_MAX, 1);
}

int main(int argc, char **argv)
{
    malloc_setup();
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},   {"adapters", required_argument, NULL, 'a'},
        {"schema-dir", required_argument, NULL, 's'}, {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},           {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    struct options o = {0};
    bool validate = argc > 1 && strcmp(argv[1], "validate") == 0;
    if (validate) {
        argv++;
        argc--;
    }
    int c;
    while ((c = getopt_long(argc, argv, "c:a:l:hV", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o.config = optarg;
            break;
        case 'a':
            o.adapters_dir = optarg;
            break;
        case 's':
            o.schema_dir = optarg;
            break;
        case 'l':
            o.log_level = optarg;
            if (gw_log_level_parse(optarg) < 0) {
                fprintf(stderr, "iotmp-gatewayd: unknown log level \"%s\" (err, warn, notice, "
                                "info, debug)\n", optarg);
                return EXIT_INVALID;
            }
            gw_log_set_level(gw_log_level_parse(optarg));
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("iotmp-gatewayd %s\n", GW_VERSION);
            return 0;
        default:
            usage(stderr);
            return EXIT_INVALID;
        }
    }
    if (validate)
        return cmd_validate(&o, argc - optind, argv + optind);
    if (optind < argc) {
        fprintf(stderr, "iotmp-gatewayd: unexpected argument \"%s\" (see --help)\n", argv[optind]);
        return EXIT_INVALID;
    }
    return cmd_run(&o);
}
