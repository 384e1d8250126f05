/* SPDX-License-Identifier: Apache-2.0 */
/*
 * iotmp-broker: the project's IOTMP test server (contract: API.md beside this file). This file
 * parses the command line, loads the credentials file, opens the SQLite state, creates the one
 * libwebsockets context with up to four vhosts (raw TCP, raw TLS, HTTP+WS, HTTPS+WSS), prints the
 * ready line with the real ports and runs the loop until SIGTERM/SIGINT. The IOTMP side lives in
 * broker_iotmp.c, REST and control in broker_rest.c.
 */
#include "broker.h"

#include "gw/mem.h"

#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct gw_broker gw_broker;

static void timer_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    struct gw_broker_timer *t = lws_container_of(w, struct gw_broker_timer, w);
    t->fn(t);
}

void gw_broker_timer_start(struct gw_broker_timer *t, void (*fn)(struct gw_broker_timer *t),
                           uint64_t us)
{
    ev_timer_stop(gw_broker.loop, &t->w);
    t->fn = fn;
    ev_timer_init(&t->w, timer_cb, (double)us / 1e6, 0.);
    ev_timer_start(gw_broker.loop, &t->w);
}

void gw_broker_timer_stop(struct gw_broker_timer *t)
{
    if (gw_broker.loop)
        ev_timer_stop(gw_broker.loop, &t->w);
}

void gw_broker_count_error(const char *reason)
{
    json_t *n = json_object_get(gw_broker.st.errors, reason);
    json_object_set_new(gw_broker.st.errors, reason,
                        json_integer(n ? json_integer_value(n) + 1 : 1));
}

/* SIGTERM / SIGINT: libev delivers them on the loop, so stopping here is safe */
static void on_signal(struct ev_loop *l, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(l, EVBREAK_ALL);
}

static void usage(FILE *out)
{
    fputs("usage: iotmp-broker [options]\n"
          "  --bind ADDR            listen address for everything (default 127.0.0.1)\n"
          "  --tcp-port N           raw IOTMP over TCP (default 25204; 0 = any free; -1 = off)\n"
          "  --tls-port N           raw IOTMP over TLS (default 25206; needs --cert/--key)\n"
          "  --http-port N          REST API + ws://host:N/iotmp (default 25280; -1 = off)\n"
          "  --https-port N         REST API + wss://host:N/iotmp (default off)\n"
          "  --cert FILE --key FILE server certificate chain and key (PEM)\n"
          "  --credentials FILE     lines \"user device password\" ('#' comments); required\n"
          "  --db FILE              SQLite state file (default ./iotmp-broker.db)\n"
          "  --max-frame N          largest accepted frame body in bytes (default 262144)\n"
          "  --call-timeout MS      default timeout of a REST call into a device (default 10000)\n"
          "  --log-level LEVEL      err|warn|notice|info|debug (default info)\n"
          "  --hex                  add frame hex dumps to the debug log\n",
          out);
}

static bool parse_int(const char *s, long min, long max, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* Loads "user device password" lines. Returns 0, or -1 after printing where the problem is. */
static int load_credentials(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        gw_broker_log(GW_BROKER_ERR, "cannot open the credentials file", "{s:s,s:s}", "file",
                      path, "error", strerror(errno));
        return -1;
    }
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *save, *w[4];
        int n = 0;
        for (char *t = strtok_r(line, " \t\r\n", &save); t && n < 4;
             t = strtok_r(NULL, " \t\r\n", &save))
            w[n++] = t;
        if (n == 0)
            continue;
        if (n != 3) {
            gw_broker_log(GW_BROKER_ERR, "credentials line must be \"user device password\"",
                          "{s:s,s:i,s:i}", "file", path, "line", lineno, "words", n);
            fclose(f);
            return -1;
        }
        gw_broker.creds =
            gw_realloc(gw_broker.creds, (gw_broker.ncreds + 1) * sizeof *gw_broker.creds);
        struct gw_broker_cred *c = &gw_broker.creds[gw_broker.ncreds++];
        c->user = gw_strdup(w[0]);
        c->device = gw_strdup(w[1]);
        c->password = gw_strdup(w[2]);
    }
    fclose(f);
    return 0;
}

static const struct lws_protocols raw_protocols[] = {
    {"iotmp-raw", gw_broker_iotmp_callback, sizeof(void *), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static const struct lws_protocols http_protocols[] = {
    {"http", gw_broker_http_callback, sizeof(void *), 0, 0, NULL, 0},
    {"iotmp", gw_broker_iotmp_callback, sizeof(void *), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static struct lws_vhost *make_vhost(const char *name, const char *bind, long port, bool raw,
                                    const char *cert, const char *key)
{
    struct lws_context_creation_info vi;
    memset(&vi, 0, sizeof vi);
    vi.vhost_name = name;
    vi.iface = bind;
    vi.port = (int)port;
    if (raw) {
        vi.protocols = raw_protocols;
        vi.options |= LWS_SERVER_OPTION_ADOPT_APPLY_LISTEN_ACCEPT_CONFIG;
        vi.listen_accept_role = "raw-skt";
        vi.listen_accept_protocol = "iotmp-raw";
    } else {
        vi.protocols = http_protocols;
    }
    if (cert) {
        /* lws reads this option from the vhost's info too: without it the vhost has no TLS */
        vi.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        vi.ssl_cert_filepath = cert;
        vi.ssl_private_key_filepath = key;
        vi.alpn = "http/1.1";
    }
    vi.timeout_secs = 30;
    struct lws_vhost *vh = lws_create_vhost(gw_broker.ctx, &vi);
    if (!vh)
        gw_broker_log(GW_BROKER_ERR, "cannot create listener", "{s:s,s:s,s:i}", "listener", name,
                      "bind", bind, "port", (int)port);
    return vh;
}

int main(int argc, char **argv)
{
    const char *bind = "127.0.0.1", *cert = NULL, *key = NULL, *creds = NULL;
    const char *db = "./iotmp-broker.db";
    long tcp_port = 25204, tls_port = 25206, http_port = 25280, https_port = -1;
    bool tls_explicit = false;
    long max_frame = GW_IOTMP_MAX_FRAME_DEFAULT, call_timeout = 10000;
    enum {
        O_BIND = 256, O_TCP, O_TLS, O_HTTP, O_HTTPS, O_CERT, O_KEY, O_CREDS, O_DB, O_MAXF,
        O_CALLTO, O_LOG, O_HEX, O_HELP
    };
    static const struct option opts[] = {
        {"bind", required_argument, NULL, O_BIND},
        {"tcp-port", required_argument, NULL, O_TCP},
        {"tls-port", required_argument, NULL, O_TLS},
        {"http-port", required_argument, NULL, O_HTTP},
        {"https-port", required_argument, NULL, O_HTTPS},
        {"cert", required_argument, NULL, O_CERT},
        {"key", required_argument, NULL, O_KEY},
        {"credentials", required_argument, NULL, O_CREDS},
        {"db", required_argument, NULL, O_DB},
        {"max-frame", required_argument, NULL, O_MAXF},
        {"call-timeout", required_argument, NULL, O_CALLTO},
        {"log-level", required_argument, NULL, O_LOG},
        {"hex", no_argument, NULL, O_HEX},
        {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0},
    };
    gw_broker.st.errors = json_object();
    srandom((unsigned)time(NULL) ^ (unsigned)getpid());
    gw_broker.echo = true;
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        long v;
        bool ok = true;
        switch (o) {
        case O_BIND:
            bind = optarg;
            break;
        case O_TCP:
            ok = parse_int(optarg, -1, 65535, &tcp_port);
            break;
        case O_TLS:
            ok = parse_int(optarg, -1, 65535, &tls_port);
            tls_explicit = true;
            break;
        case O_HTTP:
            ok = parse_int(optarg, -1, 65535, &http_port);
            break;
        case O_HTTPS:
            ok = parse_int(optarg, -1, 65535, &https_port);
            break;
        case O_CERT:
            cert = optarg;
            break;
        case O_KEY:
            key = optarg;
            break;
        case O_CREDS:
            creds = optarg;
            break;
        case O_DB:
            db = optarg;
            break;
        case O_MAXF:
            ok = parse_int(optarg, 16, 64L * 1024 * 1024, &max_frame);
            break;
        case O_CALLTO:
            ok = parse_int(optarg, 1, 3600000, &call_timeout);
            break;
        case O_LOG:
            ok = (v = gw_broker_log_parse_level(optarg)) > 0;
            if (ok)
                gw_broker_log_level = (int)v;
            break;
        case O_HEX:
            gw_broker.hex = true;
            break;
        case O_HELP:
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "iotmp-broker: invalid value \"%s\" for --%s\n", optarg,
                    opts[o - O_BIND].name);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "iotmp-broker: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (!creds) {
        fprintf(stderr, "iotmp-broker: --credentials FILE is required\n");
        usage(stderr);
        return 2;
    }
    if ((cert == NULL) != (key == NULL)) {
        fprintf(stderr, "iotmp-broker: --cert and --key go together\n");
        return 2;
    }
    if (!cert && ((tls_explicit && tls_port >= 0) || https_port >= 0)) {
        fprintf(stderr, "iotmp-broker: --tls-port/--https-port need --cert and --key\n");
        return 2;
    }
    if (!cert)
        tls_port = -1;
    gw_broker.max_frame = (size_t)max_frame;
    gw_broker.call_timeout_ms = (uint32_t)call_timeout;

    int rc = 1;
    if (load_credentials(creds) < 0)
        return 2;
    if (gw_broker_db_open(db) < 0)
        goto fail_creds;

    int lll = LLL_ERR | LLL_WARN;
    if (gw_broker_log_level >= GW_BROKER_DEBUG)
        lll |= LLL_NOTICE;
    lws_set_log_level(lll, gw_broker_log_lws);

    /*
     * The loop is libev's (epoll), given to lws as a foreign loop: lws 4.1.6's own loop is
     * poll(2), which costs O(connections) per wake-up, so with 1,000 idle devices every REST
     * call took about 1 ms instead of tens of microseconds.
     */
    struct ev_loop *loop = gw_broker.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!loop) {
        gw_broker_log(GW_BROKER_ERR, "cannot create the event loop (libev)", NULL);
        goto fail_db;
    }
    void *foreign[1] = {loop};
    struct lws_context_creation_info ci;
    memset(&ci, 0, sizeof ci);
    ci.options = LWS_SERVER_OPTION_EXPLICIT_VHOSTS | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT |
                 LWS_SERVER_OPTION_LIBEV;
    ci.foreign_loops = foreign;
    ci.port = CONTEXT_PORT_NO_LISTEN;
    gw_broker.ctx = lws_create_context(&ci);
    if (!gw_broker.ctx) {
        gw_broker_log(GW_BROKER_ERR, "cannot create the libwebsockets context", NULL);
        goto fail_loop;
    }
    if ((tcp_port >= 0 && !(gw_broker.vh_tcp = make_vhost("tcp", bind, tcp_port, true, NULL,
                                                          NULL))) ||
        (tls_port >= 0 &&
         !(gw_broker.vh_tls = make_vhost("tls", bind, tls_port, true, cert, key))) ||
        (http_port >= 0 &&
         !(gw_broker.vh_http = make_vhost("http", bind, http_port, false, NULL, NULL))) ||
        (https_port >= 0 &&
         !(gw_broker.vh_https = make_vhost("https", bind, https_port, false, cert, key))))
        goto fail_ctx;

    ev_signal sig_term, sig_int;
    ev_signal_init(&sig_term, on_signal, SIGTERM);
    ev_signal_init(&sig_int, on_signal, SIGINT);
    ev_signal_start(loop, &sig_term);
    ev_signal_start(loop, &sig_int);
    signal(SIGPIPE, SIG_IGN);

    printf("iotmp-broker ready tcp=%d tls=%d http=%d https=%d\n",
           gw_broker.vh_tcp ? lws_get_vhost_listen_port(gw_broker.vh_tcp) : 0,
           gw_broker.vh_tls ? lws_get_vhost_listen_port(gw_broker.vh_tls) : 0,
           gw_broker.vh_http ? lws_get_vhost_listen_port(gw_broker.vh_http) : 0,
           gw_broker.vh_https ? lws_get_vhost_listen_port(gw_broker.vh_https) : 0);
    fflush(stdout);
    gw_broker_log(GW_BROKER_INFO, "ready", "{s:s,s:i,s:s,s:I}", "bind", bind, "devices",
                  (int)gw_broker.ncreds, "db", db, "max_frame", (json_int_t)gw_broker.max_frame);

    ev_run(loop, 0);
    ev_signal_stop(loop, &sig_term);
    ev_signal_stop(loop, &sig_int);
    gw_broker_log(GW_BROKER_INFO, "stopping", NULL);
    rc = 0;

fail_ctx:
    gw_broker.stopping = true;
    lws_context_destroy(gw_broker.ctx);
    gw_broker.ctx = NULL;
    gw_broker_iotmp_cleanup();
fail_loop:
    ev_loop_destroy(gw_broker.loop);
    gw_broker.loop = NULL;
fail_db:
    gw_broker_db_close();
fail_creds:
    for (size_t i = 0; i < gw_broker.ncreds; i++) {
        free(gw_broker.creds[i].user);
        free(gw_broker.creds[i].device);
        free(gw_broker.creds[i].password);
    }
    free(gw_broker.creds);
    while (gw_broker.redirects) {
        struct gw_broker_redirect *rd = gw_broker.redirects;
        gw_broker.redirects = rd->next;
        free(rd->user);
        free(rd->device);
        free(rd->uri);
        free(rd);
    }
    json_decref(gw_broker.st.errors);
    return rc;
}
