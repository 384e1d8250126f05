/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP and TLS transports on a non-blocking socket of our own, watched by the loop. The connect is
 * asynchronous with a timeout that also covers the TLS handshake. Once connected the socket gets
 * TCP_NODELAY, TCP keepalive (probes after the IOTMP keep-alive interval) and TCP_USER_TIMEOUT of
 * twice the keep-alive, so unacknowledged data on a dead path ends the connection even when the
 * server never echoes keep-alives (PROTOCOL.md 14.4).
 *
 * TLS is OpenSSL on the same socket: a fresh SSL_CTX per connection (the CA file is re-read, so a
 * rotated CA is picked up on reconnect), peer verification on unless `insecure`, the host name
 * (or IP address) checked, SNI sent for names, an optional client certificate. A verification
 * failure closes with GW_ETLS_VERIFY and a reason naming the peer and OpenSSL's verdict.
 *
 * Sending appends to one output buffer and writes at once as far as the kernel takes it; the rest
 * goes out when the socket is writable. Failures found while sending are reported later from a
 * zero-delay timer, so no callback ever runs inside gw_transport_send().
 */
#include "gw/error.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/mem.h"
#include "transport_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum sock_state { S_CONNECTING, S_HANDSHAKE, S_OPEN, S_FAILED };

struct sock {
    struct gw_transport base;
    struct gw_loop *loop;
    struct gw_transport_cb cb;
    struct gw_transport_opts opts;
    char where[300];            /* "host:port" for messages */
    int fd;
    struct gw_watch *watch;
    unsigned watch_events;
    struct gw_timer *timeout;   /* connect + handshake */
    struct gw_timer *defer;     /* reports a failure found inside gw_transport_send() */
    enum sock_state st;
    bool tls;
    SSL_CTX *ctx;
    SSL *ssl;
    bool verified;
    bool ssl_wants_write;       /* the last SSL_read/SSL_write/handshake asked for POLLOUT */
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    int fail_err;
    char fail_why[320];
    bool fail_reported;
    unsigned busy;              /* inside one of our loop callbacks */
    bool dead;                  /* closed by the owner while busy: free at the end */
};

static void sock_free(struct sock *s)
{
    if (s->watch)
        gw_loop_unwatch(s->watch);
    gw_timer_free(s->timeout);
    gw_timer_free(s->defer);
    if (s->ssl)
        SSL_free(s->ssl);
    if (s->ctx)
        SSL_CTX_free(s->ctx);
    if (s->fd >= 0)
        close(s->fd);
    free((void *)s->opts.ca_file);
    free((void *)s->opts.cert_file);
    free((void *)s->opts.key_file);
    free(s->out);
    free(s);
}

static void set_events(struct sock *s)
{
    if (!s->watch)
        return;
    unsigned ev = 0;
    if (s->st == S_CONNECTING)
        ev = GW_LOOP_OUT;
    else if (s->st == S_HANDSHAKE)
        ev = GW_LOOP_IN | (s->ssl_wants_write ? GW_LOOP_OUT : 0);
    else if (s->st == S_OPEN)
        ev = GW_LOOP_IN | ((s->out_len > s->out_off || s->ssl_wants_write) ? GW_LOOP_OUT : 0);
    if (ev != s->watch_events) {
        s->watch_events = ev;
        gw_loop_watch_set(s->watch, ev);
    }
}

/* Records a failure; the owner hears of it through on_close (now if we are in a loop callback,
 * else from the defer timer). */
static void sock_fail(struct sock *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void sock_fail(struct sock *s, int err, const char *fmt, ...)
{
    if (s->st == S_FAILED)
        return;
    s->st = S_FAILED;
    s->fail_err = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail_why, sizeof(s->fail_why), fmt, ap);
    va_end(ap);
    if (s->watch) {
        gw_loop_unwatch(s->watch);
        s->watch = NULL;
    }
    gw_timer_stop(s->timeout);
    gw_timer_start(s->defer, 0);
}

static void report_failure(struct sock *s)
{
    if (s->fail_reported || s->dead)
        return;
    s->fail_reported = true;
    gw_timer_stop(s->defer);
    if (s->cb.on_close)
        s->cb.on_close(s->cb.arg, s->fail_err, s->fail_why);
}

static void on_defer(void *arg)
{
    struct sock *s = arg;
    s->busy++;
    if (s->st == S_FAILED)
        report_failure(s);
    s->busy--;
    if (s->dead && !s->busy)
        sock_free(s);
}

static void on_timeout(void *arg)
{
    struct sock *s = arg;
    s->busy++;
    sock_fail(s, GW_ETIMEDOUT, "%s %s: no connection after %u ms", s->tls ? "TLS" : "TCP",
              s->where, s->opts.connect_timeout_ms);
    report_failure(s);
    s->busy--;
    if (s->dead && !s->busy)
        sock_free(s);
}

/* The last OpenSSL error as text (the queue is cleared). */
static const char *ssl_err_text(char *buf, size_t cap)
{
    unsigned long e = ERR_get_error();
    if (!e) {
        snprintf(buf, cap, "connection closed during the handshake");
        return buf;
    }
    ERR_error_string_n(e, buf, cap);
    ERR_clear_error();
    return buf;
}

static void became_open(struct sock *s)
{
    s->st = S_OPEN;
    gw_timer_stop(s->timeout);
    set_events(s);
    if (s->cb.on_open)
        s->cb.on_open(s->cb.arg);
}

static void do_handshake(struct sock *s)
{
    ERR_clear_error();
    int rc = SSL_connect(s->ssl);
    if (rc == 1) {
        s->ssl_wants_write = false;
        s->verified = !s->opts.insecure && SSL_get_verify_result(s->ssl) == X509_V_OK;
        gw_log_info("TLS %s: connected, %s, %s", s->where, SSL_get_version(s->ssl),
                    s->verified ? "peer verified" : "peer NOT verified (insecure)");
        became_open(s);
        return;
    }
    int e = SSL_get_error(s->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        s->ssl_wants_write = e == SSL_ERROR_WANT_WRITE;
        set_events(s);
        return;
    }
    long vr = SSL_get_verify_result(s->ssl);
    if (!s->opts.insecure && vr != X509_V_OK) {
        sock_fail(s, GW_ETLS_VERIFY, "TLS %s: server certificate refused: %s", s->where,
                  X509_verify_cert_error_string(vr));
        return;
    }
    char buf[256];
    if (e == SSL_ERROR_SYSCALL && errno)
        sock_fail(s, GW_ETLS, "TLS %s: handshake failed: %s", s->where, strerror(errno));
    else
        sock_fail(s, GW_ETLS, "TLS %s: handshake failed: %s", s->where,
                  ssl_err_text(buf, sizeof(buf)));
}

static int tls_setup(struct sock *s)
{
    s->ctx = SSL_CTX_new(TLS_client_method());
    if (!s->ctx)
        return GW_ENOMEM;
    SSL_CTX_set_min_proto_version(s->ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(s->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    char buf[256];
    if (s->opts.insecure) {
        SSL_CTX_set_verify(s->ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(s->ctx, SSL_VERIFY_PEER, NULL);
        if (s->opts.ca_file) {
            if (SSL_CTX_load_verify_locations(s->ctx, s->opts.ca_file, NULL) != 1) {
                sock_fail(s, GW_ETLS, "TLS %s: cannot load CA file %s: %s", s->where,
                          s->opts.ca_file, ssl_err_text(buf, sizeof(buf)));
                return GW_ETLS;
            }
        } else if (SSL_CTX_set_default_verify_paths(s->ctx) != 1) {
            sock_fail(s, GW_ETLS, "TLS %s: cannot load the system CA store: %s", s->where,
                      ssl_err_text(buf, sizeof(buf)));
            return GW_ETLS;
        }
    }
    if (s->opts.cert_file) {
        const char *key = s->opts.key_file ? s->opts.key_file : s->opts.cert_file;
        if (SSL_CTX_use_certificate_chain_file(s->ctx, s->opts.cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(s->ctx, key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(s->ctx) != 1) {
            sock_fail(s, GW_ETLS, "TLS %s: client certificate %s / key %s unusable: %s", s->where,
                      s->opts.cert_file, key, ssl_err_text(buf, sizeof(buf)));
            return GW_ETLS;
        }
    }
    s->ssl = SSL_new(s->ctx);
    if (!s->ssl)
        return GW_ENOMEM;
    SSL_set_fd(s->ssl, s->fd);
    const char *host = s->opts.url.host;
    unsigned char ipbuf[16];
    bool is_ip = inet_pton(AF_INET, host, ipbuf) == 1 || inet_pton(AF_INET6, host, ipbuf) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(s->ssl, host);
    if (!s->opts.insecure) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(s->ssl);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host) : SSL_set1_host(s->ssl, host);
        if (ok != 1) {
            sock_fail(s, GW_ETLS, "TLS %s: cannot set the expected host name", s->where);
            return GW_ETLS;
        }
    }
    return 0;
}

static void set_sockopts(struct sock *s)
{
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    unsigned ka = s->opts.keepalive_s ? s->opts.keepalive_s : 60;
    int idle = (int)ka, intvl = (int)(ka / 3 ? ka / 3 : 1), cnt = 3;
    setsockopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    unsigned uto = 2 * ka * 1000;
    setsockopt(s->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto, sizeof(uto));
}

static void connected(struct sock *s)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        sock_fail(s, -err, "%s %s: connect failed: %s", s->tls ? "TLS" : "TCP", s->where,
                  strerror(err));
        return;
    }
    set_sockopts(s);
    if (!s->tls) {
        became_open(s);
        return;
    }
    if (s->opts.insecure)
        gw_log_warn("TLS %s: certificate verification is OFF (insecure: true)", s->where);
    if (tls_setup(s) < 0) {
        if (s->st != S_FAILED)
            sock_fail(s, GW_ETLS, "TLS %s: setup failed", s->where);
        return;
    }
    s->st = S_HANDSHAKE;
    do_handshake(s);
}

/* Writes as much of the output buffer as the socket takes. */
static void flush_out(struct sock *s)
{
    while (s->st == S_OPEN && s->out_off < s->out_len) {
        size_t n = s->out_len - s->out_off;
        ssize_t w;
        if (s->ssl) {
            ERR_clear_error();
            int rc = SSL_write(s->ssl, s->out + s->out_off, n > INT32_MAX ? INT32_MAX : (int)n);
            if (rc <= 0) {
                int e = SSL_get_error(s->ssl, rc);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    s->ssl_wants_write = e == SSL_ERROR_WANT_WRITE;
                    break;
                }
                char buf[256];
                sock_fail(s, GW_ECONNRESET, "TLS %s: write failed: %s", s->where,
                          e == SSL_ERROR_SYSCALL && errno ? strerror(errno)
                                                          : ssl_err_text(buf, sizeof(buf)));
                return;
            }
            s->ssl_wants_write = false;
            w = rc;
        } else {
            w = send(s->fd, s->out + s->out_off, n, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                if (errno == EINTR)
                    continue;
                sock_fail(s, -errno, "TCP %s: write failed: %s", s->where, strerror(errno));
                return;
            }
        }
        s->out_off += (size_t)w;
    }
    if (s->out_off == s->out_len) {
        s->out_off = s->out_len = 0;
    } else if (s->out_off > s->out_cap / 2) {
        memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
        s->out_len -= s->out_off;
        s->out_off = 0;
    }
}

/* Reads what is available, at most a bounded number of times per event. */
static void read_in(struct sock *s)
{
    uint8_t buf[16384];
    for (int round = 0; round < 64 && s->st == S_OPEN && !s->dead; round++) {
        ssize_t n;
        if (s->ssl) {
            ERR_clear_error();
            int rc = SSL_read(s->ssl, buf, sizeof(buf));
            if (rc <= 0) {
                int e = SSL_get_error(s->ssl, rc);
                if (e == SSL_ERROR_WANT_READ)
                    return;
                if (e == SSL_ERROR_WANT_WRITE) {
                    s->ssl_wants_write = true;
                    return;
                }
                if (e == SSL_ERROR_ZERO_RETURN) {
                    sock_fail(s, GW_ECONNRESET, "TLS %s: closed by the peer", s->where);
                    return;
                }
                char eb[256];
                sock_fail(s, GW_ECONNRESET, "TLS %s: read failed: %s", s->where,
                          e == SSL_ERROR_SYSCALL
                              ? (errno ? strerror(errno) : "connection closed by the peer")
                              : ssl_err_text(eb, sizeof(eb)));
                return;
            }
            n = rc;
        } else {
            n = recv(s->fd, buf, sizeof(buf), 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return;
                if (errno == EINTR)
                    continue;
                sock_fail(s, -errno, "TCP %s: read failed: %s", s->where, strerror(errno));
                return;
            }
            if (n == 0) {
                sock_fail(s, GW_ECONNRESET, "TCP %s: closed by the peer", s->where);
                return;
            }
        }
        if (s->cb.on_bytes)
            s->cb.on_bytes(s->cb.arg, buf, (size_t)n);
        if (!s->ssl && (size_t)n < sizeof(buf))
            return;
    }
}

static void on_fd(void *arg, int fd, unsigned events)
{
    (void)fd;
    struct sock *s = arg;
    s->busy++;
    switch (s->st) {
    case S_CONNECTING:
        connected(s);
        break;
    case S_HANDSHAKE:
        do_handshake(s);
        break;
    case S_OPEN: {
        bool had_out = s->out_len > s->out_off;
        if (events & (GW_LOOP_IN | GW_LOOP_ERR) || s->ssl)
            read_in(s);
        if (s->st == S_OPEN && !s->dead) {
            flush_out(s);
            if (had_out && s->st == S_OPEN && s->out_len == 0 && s->cb.on_drain && !s->dead)
                s->cb.on_drain(s->cb.arg);
        }
        if (s->st == S_OPEN && !s->dead)
            set_events(s);
        break;
    }
    case S_FAILED:
        break;
    }
    if (s->st == S_FAILED)
        report_failure(s);
    s->busy--;
    if (s->dead && !s->busy)
        sock_free(s);
}

static int sock_send(struct gw_transport *t, const void *frame, size_t len)
{
    struct sock *s = (struct sock *)t;
    if (s->st != S_OPEN)
        return GW_ENOTCONN;
    if (s->out_len + len > s->out_cap) {
        if (s->out_off) {
            memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
            s->out_len -= s->out_off;
            s->out_off = 0;
        }
        if (s->out_len + len > s->out_cap) {
            size_t cap = s->out_cap ? s->out_cap : 4096;
            while (cap < s->out_len + len)
                cap *= 2;
            s->out = gw_realloc(s->out, cap);
            s->out_cap = cap;
        }
    }
    memcpy(s->out + s->out_len, frame, len);
    s->out_len += len;
    /* Write now unless older bytes already wait for POLLOUT (then order is kept anyway). */
    if (s->out_len - s->out_off == len && !s->ssl_wants_write)
        flush_out(s);
    if (s->st == S_OPEN)
        set_events(s);
    return 0;
}

static size_t sock_pending(const struct gw_transport *t)
{
    const struct sock *s = (const struct sock *)t;
    return s->out_len - s->out_off;
}

static bool sock_verified(const struct gw_transport *t)
{
    const struct sock *s = (const struct sock *)t;
    return s->verified;
}

static void sock_close(struct gw_transport *t, bool flush)
{
    struct sock *s = (struct sock *)t;
    if (flush && s->st == S_OPEN) {
        flush_out(s);
        if (s->ssl && s->st == S_OPEN)
            SSL_shutdown(s->ssl);
    }
    s->dead = true;
    if (s->watch) {
        gw_loop_unwatch(s->watch);
        s->watch = NULL;
    }
    gw_timer_stop(s->timeout);
    gw_timer_stop(s->defer);
    if (!s->busy)
        sock_free(s);
}

static const struct gw_transport_vt sock_vt = {
    .send = sock_send,
    .pending = sock_pending,
    .verified = sock_verified,
    .close = sock_close,
};

int gw_transport_sock_open(struct gw_loop *loop, const struct gw_transport_opts *opts,
                           const struct gw_transport_cb *cb, struct gw_transport **out)
{
    struct sock *s = gw_calloc(1, sizeof(*s));
    s->base.vt = &sock_vt;
    s->loop = loop;
    s->cb = *cb;
    s->opts = *opts;
    s->opts.ca_file = opts->ca_file ? gw_strdup(opts->ca_file) : NULL;
    s->opts.cert_file = opts->cert_file ? gw_strdup(opts->cert_file) : NULL;
    s->opts.key_file = opts->key_file ? gw_strdup(opts->key_file) : NULL;
    if (!s->opts.connect_timeout_ms)
        s->opts.connect_timeout_ms = 15000;
    s->tls = opts->url.kind == GW_TRANSPORT_TLS;
    s->fd = -1;
    bool v6 = strchr(opts->url.host, ':') != NULL;
    snprintf(s->where, sizeof(s->where), v6 ? "[%s]:%u" : "%s:%u", opts->url.host,
             (unsigned)opts->url.port);

    /* Numeric addresses resolve at once; a name goes through the (blocking) resolver. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", (unsigned)opts->url.port);
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    int grc = getaddrinfo(opts->url.host, port, &hints, &ai);
    if (grc == EAI_NONAME) {
        hints.ai_flags = AI_NUMERICSERV | AI_ADDRCONFIG;
        grc = getaddrinfo(opts->url.host, port, &hints, &ai);
    }
    if (grc != 0) {
        gw_log_err("%s: cannot resolve host: %s", s->where, gai_strerror(grc));
        sock_free(s);
        return GW_ENOENT;
    }
    s->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s->fd < 0) {
        int e = -errno;
        freeaddrinfo(ai);
        gw_log_err("%s: socket: %s", s->where, strerror(-e));
        sock_free(s);
        return e;
    }
    int rc = connect(s->fd, ai->ai_addr, ai->ai_addrlen);
    int cerr = errno;
    freeaddrinfo(ai);
    s->timeout = gw_timer_new(loop, on_timeout, s);
    s->defer = gw_timer_new(loop, on_defer, s);
    s->st = S_CONNECTING;
    s->watch = gw_loop_watch(loop, s->fd, GW_LOOP_OUT, on_fd, s);
    s->watch_events = GW_LOOP_OUT;
    if (!s->watch) {
        gw_log_err("%s: the loop refused to watch the socket", s->where);
        sock_free(s);
        return GW_EIO;
    }
    if (rc < 0 && cerr != EINPROGRESS)
        sock_fail(s, -cerr, "%s %s: connect failed: %s", s->tls ? "TLS" : "TCP", s->where,
                  strerror(cerr));
    else
        gw_timer_start(s->timeout, s->opts.connect_timeout_ms);
    /* A connect that completed at once is still reported from the watch (it is writable). */
    *out = &s->base;
    return 0;
}
