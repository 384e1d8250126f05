/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Byte link of the test device (see testdev_link.h): TCP connect with a timeout, TLS with OpenSSL
 * and an independent, minimal RFC 6455 WebSocket client. Used only by testdev.c.
 */
#include "testdev_link.h"

#include "gw/error.h"
#include "gw/mem.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WS_MAX_MESSAGE (64u * 1024u * 1024u) /* bound on one WebSocket frame payload */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* --- Buffers --- */

void gw_testdev_buf_append(struct gw_testdev_buf *b, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        b->p = gw_realloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, len);
    b->len += len;
}

void gw_testdev_buf_consume(struct gw_testdev_buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->p, b->p + n, b->len - n);
    b->len -= n;
}

void gw_testdev_buf_free(struct gw_testdev_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* --- URL --- */

int gw_testdev_url_parse(const char *url, struct gw_testdev_url *u, char *err, size_t err_len)
{
    static const struct {
        const char *prefix;
        enum gw_testdev_scheme scheme;
    } schemes[] = {{"tcp://", GW_TESTDEV_TCP},   {"iotmp://", GW_TESTDEV_TCP},
                   {"tls://", GW_TESTDEV_TLS},   {"iotmps://", GW_TESTDEV_TLS},
                   {"ws://", GW_TESTDEV_WS},     {"wss://", GW_TESTDEV_WSS}};
    memset(u, 0, sizeof *u);
    const char *rest = NULL;
    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
        size_t n = strlen(schemes[i].prefix);
        if (strncmp(url, schemes[i].prefix, n) == 0) {
            u->scheme = schemes[i].scheme;
            rest = url + n;
            break;
        }
    }
    if (!rest) {
        snprintf(err, err_len, "url \"%s\": scheme must be tcp://, tls://, iotmp://, iotmps://, "
                 "ws:// or wss://", url);
        return GW_EINVAL;
    }
    const char *slash = strchr(rest, '/');
    size_t hostport_len = slash ? (size_t)(slash - rest) : strlen(rest);
    char hostport[300];
    if (hostport_len == 0 || hostport_len >= sizeof hostport) {
        snprintf(err, err_len, "url \"%s\": missing or too long host", url);
        return GW_EINVAL;
    }
    memcpy(hostport, rest, hostport_len);
    hostport[hostport_len] = '\0';
    char *colon = strrchr(hostport, ':');
    unsigned long port = 0;
    if (colon) {
        *colon = '\0';
        char *end;
        errno = 0;
        port = strtoul(colon + 1, &end, 10);
        if (errno || *end || colon[1] == '\0' || port == 0 || port > 65535) {
            snprintf(err, err_len, "url \"%s\": bad port \"%s\"", url, colon + 1);
            return GW_EINVAL;
        }
    } else {
        port = u->scheme == GW_TESTDEV_TCP ? 25204 : u->scheme == GW_TESTDEV_TLS ? 25206
               : u->scheme == GW_TESTDEV_WS ? 80 : 443;
    }
    char *host = hostport;
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') { /* [::1] */
        host[hl - 1] = '\0';
        host++;
    }
    if (*host == '\0' || strlen(host) >= sizeof u->host) {
        snprintf(err, err_len, "url \"%s\": missing or too long host", url);
        return GW_EINVAL;
    }
    strcpy(u->host, host);
    u->port = (uint16_t)port;
    const char *path = slash ? slash : "/iotmp";
    if (strlen(path) >= sizeof u->path) {
        snprintf(err, err_len, "url \"%s\": path too long", url);
        return GW_EINVAL;
    }
    if (slash && u->scheme != GW_TESTDEV_WS && u->scheme != GW_TESTDEV_WSS && strcmp(slash, "/")) {
        snprintf(err, err_len, "url \"%s\": a path is only allowed for ws:// and wss://", url);
        return GW_EINVAL;
    }
    strcpy(u->path, path);
    return 0;
}

/* --- Socket helpers --- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining(int64_t deadline)
{
    int64_t left = deadline - mono_ms();
    return left < 0 ? 0 : (int)left;
}

/* Waits for events on fd until deadline. 1 ready, 0 timeout, negative errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, remaining(deadline));
        if (rc > 0)
            return 1;
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

static int tcp_connect(struct gw_testdev_link *l, const struct gw_testdev_url *u, int64_t deadline)
{
    char port[8];
    snprintf(port, sizeof port, "%u", u->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(u->host, port, &hints, &res);
    if (rc != 0) {
        snprintf(l->err, sizeof l->err, "resolve %s: %s", u->host, gai_strerror(rc));
        return GW_ENOENT;
    }
    int result = GW_ECONNRESET;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            result = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            result = -errno;
            snprintf(l->err, sizeof l->err, "connect to %s:%u: %s", u->host, u->port,
                     strerror(errno));
            close(fd);
            continue;
        }
        rc = wait_fd(fd, POLLOUT, deadline);
        if (rc == 0) {
            snprintf(l->err, sizeof l->err, "connect to %s:%u: timed out", u->host, u->port);
            close(fd);
            result = GW_ETIMEDOUT;
            break;
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
            int e = rc < 0 ? -rc : soerr ? soerr : errno;
            snprintf(l->err, sizeof l->err, "connect to %s:%u: %s", u->host, u->port,
                     strerror(e));
            close(fd);
            result = -e;
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        l->fd = fd;
        result = 0;
        break;
    }
    freeaddrinfo(res);
    return result;
}

/* --- TLS --- */

static void tls_error(struct gw_testdev_link *l, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[200] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    long vr = l->ssl ? SSL_get_verify_result(l->ssl) : X509_V_OK;
    if (vr != X509_V_OK)
        snprintf(l->err, sizeof l->err, "%s: certificate verification failed: %s", what,
                 X509_verify_cert_error_string(vr));
    else
        snprintf(l->err, sizeof l->err, "%s: %s", what, e ? buf : "TLS failure");
    ERR_clear_error();
}

static int tls_start(struct gw_testdev_link *l, const struct gw_testdev_url *u, const char *ca_file,
                     bool insecure, int64_t deadline)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        tls_error(l, "SSL_CTX_new");
        return GW_ETLS;
    }
    l->ssl_ctx = ctx;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (!insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                         : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            tls_error(l, ca_file ? "load CA file" : "load system CA store");
            if (ca_file) {
                char tmp[sizeof l->err];
                memcpy(tmp, l->err, sizeof tmp);
                snprintf(l->err, sizeof l->err, "%.500s (%.400s)", tmp, ca_file);
            }
            return GW_ETLS;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    SSL *ssl = SSL_new(ctx);
    if (!ssl) {
        tls_error(l, "SSL_new");
        return GW_ETLS;
    }
    l->ssl = ssl;
    struct in6_addr a6;
    struct in_addr a4;
    bool is_ip = inet_pton(AF_INET, u->host, &a4) == 1 || inet_pton(AF_INET6, u->host, &a6) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(ssl, u->host); /* SNI is for names only (RFC 6066) */
    if (!insecure) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        int ok = is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, u->host)
                       : X509_VERIFY_PARAM_set1_host(vp, u->host, 0);
        if (ok != 1) {
            tls_error(l, "set expected host");
            return GW_ETLS;
        }
    }
    SSL_set_fd(ssl, l->fd);
    for (;;) {
        int rc = SSL_connect(ssl);
        if (rc == 1)
            return 0;
        int e = SSL_get_error(ssl, rc);
        short ev;
        if (e == SSL_ERROR_WANT_READ)
            ev = POLLIN;
        else if (e == SSL_ERROR_WANT_WRITE)
            ev = POLLOUT;
        else {
            char what[300];
            snprintf(what, sizeof what, "TLS handshake with %s:%u", u->host, u->port);
            tls_error(l, what);
            return GW_ETLS;
        }
        int w = wait_fd(l->fd, ev, deadline);
        if (w == 0) {
            snprintf(l->err, sizeof l->err, "TLS handshake with %s:%u: timed out", u->host,
                     u->port);
            return GW_ETIMEDOUT;
        }
        if (w < 0)
            return w;
    }
}

/* --- Raw reads and writes (plain or TLS) --- */

/* Reads into buf. >0 bytes, 0 would block, GW_ECONNRESET on EOF, other negative on error. */
static int raw_read(struct gw_testdev_link *l, void *buf, size_t cap)
{
    if (l->ssl) {
        int n = SSL_read(l->ssl, buf, cap > INT32_MAX ? INT32_MAX : (int)cap);
        if (n > 0)
            return n;
        int e = SSL_get_error(l->ssl, n);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return 0;
        if (e == SSL_ERROR_ZERO_RETURN) {
            snprintf(l->err, sizeof l->err, "peer closed the TLS session");
            return GW_ECONNRESET;
        }
        if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
            snprintf(l->err, sizeof l->err, "connection closed by peer (no TLS close_notify)");
            ERR_clear_error();
            return GW_ECONNRESET;
        }
        tls_error(l, "TLS read");
        return GW_ETLS;
    }
    for (;;) {
        ssize_t n = recv(l->fd, buf, cap, 0);
        if (n > 0)
            return (int)n;
        if (n == 0) {
            snprintf(l->err, sizeof l->err, "connection closed by peer");
            return GW_ECONNRESET;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        snprintf(l->err, sizeof l->err, "recv: %s", strerror(errno));
        return errno == ECONNRESET ? GW_ECONNRESET : -errno;
    }
}

static int raw_write_all(struct gw_testdev_link *l, const void *data, size_t len, int64_t deadline)
{
    const uint8_t *p = data;
    while (len > 0) {
        short ev = POLLOUT;
        if (l->ssl) {
            int n = SSL_write(l->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
            if (n > 0) {
                p += n;
                len -= (size_t)n;
                continue;
            }
            int e = SSL_get_error(l->ssl, n);
            if (e == SSL_ERROR_WANT_READ)
                ev = POLLIN;
            else if (e != SSL_ERROR_WANT_WRITE) {
                tls_error(l, "TLS write");
                return GW_ETLS;
            }
        } else {
            ssize_t n = send(l->fd, p, len, MSG_NOSIGNAL);
            if (n > 0) {
                p += n;
                len -= (size_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
                snprintf(l->err, sizeof l->err, "send: %s", strerror(errno));
                return errno == EPIPE || errno == ECONNRESET ? GW_ECONNRESET : -errno;
            }
        }
        int w = wait_fd(l->fd, ev, deadline);
        if (w == 0) {
            snprintf(l->err, sizeof l->err, "send: timed out (peer not reading)");
            return GW_ETIMEDOUT;
        }
        if (w < 0)
            return w;
    }
    return 0;
}

/* --- WebSocket --- */

static void b64(const uint8_t *in, size_t len, char *out /* 4 * ceil(len / 3) + 1 */)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/* Finds header name (case-insensitive) in an HTTP head; copies its trimmed value. */
static bool http_header(const char *head, const char *name, char *val, size_t val_len)
{
    size_t nl = strlen(name);
    const char *line = strstr(head, "\r\n");
    while (line) {
        line += 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            const char *e = strstr(v, "\r\n");
            if (!e)
                e = v + strlen(v);
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            size_t n = (size_t)(e - v);
            if (n >= val_len)
                n = val_len - 1;
            memcpy(val, v, n);
            val[n] = '\0';
            return true;
        }
        line = strstr(line, "\r\n");
    }
    return false;
}

static bool has_token(const char *list, const char *token)
{
    size_t tl = strlen(token);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - p) == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p = e;
    }
    return false;
}

static int ws_handshake(struct gw_testdev_link *l, const struct gw_testdev_url *u, int64_t deadline)
{
    uint8_t nonce[16];
    if (getrandom(nonce, sizeof nonce, 0) != (ssize_t)sizeof nonce) {
        for (size_t i = 0; i < sizeof nonce; i++)
            nonce[i] = (uint8_t)rand();
    }
    char key[32];
    b64(nonce, sizeof nonce, key);
    bool default_port = (u->scheme == GW_TESTDEV_WS && u->port == 80) ||
                        (u->scheme == GW_TESTDEV_WSS && u->port == 443);
    bool v6 = strchr(u->host, ':') != NULL;
    char hosthdr[300];
    if (default_port)
        snprintf(hosthdr, sizeof hosthdr, v6 ? "[%s]" : "%s", u->host);
    else
        snprintf(hosthdr, sizeof hosthdr, v6 ? "[%s]:%u" : "%s:%u", u->host, u->port);
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "Upgrade: websocket\r\n"
                     "Connection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: iotmp\r\n"
                     "User-Agent: iotmp-testdev\r\n"
                     "\r\n",
                     u->path, hosthdr, key);
    int rc = raw_write_all(l, req, (size_t)n, deadline);
    if (rc < 0)
        return rc;

    char head[8192];
    size_t hl = 0;
    char *end = NULL;
    while (!end) {
        if (hl >= sizeof head - 1) {
            snprintf(l->err, sizeof l->err, "WebSocket upgrade: answer head longer than %zu bytes",
                     sizeof head);
            return GW_EPEER;
        }
        int r = raw_read(l, head + hl, sizeof head - 1 - hl);
        if (r < 0) {
            char tmp[sizeof l->err];
            memcpy(tmp, l->err, sizeof tmp);
            snprintf(l->err, sizeof l->err, "WebSocket upgrade: %.900s", tmp);
            return r;
        }
        if (r == 0) {
            if (l->ssl && SSL_pending(l->ssl) > 0)
                continue;
            int w = wait_fd(l->fd, POLLIN, deadline);
            if (w == 0) {
                snprintf(l->err, sizeof l->err, "WebSocket upgrade: no answer in time");
                return GW_ETIMEDOUT;
            }
            if (w < 0)
                return w;
            continue;
        }
        hl += (size_t)r;
        head[hl] = '\0';
        end = strstr(head, "\r\n\r\n");
    }
    size_t head_len = (size_t)(end - head) + 4;
    /* Bytes after the head already belong to the WebSocket stream. */
    gw_testdev_buf_append(&l->ws_in, head + head_len, hl - head_len);
    end[2] = '\0';

    int status = 0;
    if (sscanf(head, "HTTP/1.1 %d", &status) != 1 || status != 101) {
        char *eol = strstr(head, "\r\n");
        if (eol)
            *eol = '\0';
        snprintf(l->err, sizeof l->err, "WebSocket upgrade of %s refused: \"%.150s\"", u->path,
                 head);
        return GW_EPEER;
    }
    char val[256];
    if (!http_header(head, "Upgrade", val, sizeof val) || strcasecmp(val, "websocket") != 0) {
        snprintf(l->err, sizeof l->err, "WebSocket upgrade: missing \"Upgrade: websocket\"");
        return GW_EPEER;
    }
    if (!http_header(head, "Connection", val, sizeof val) || !has_token(val, "upgrade")) {
        snprintf(l->err, sizeof l->err, "WebSocket upgrade: missing \"Connection: Upgrade\"");
        return GW_EPEER;
    }
    char concat[128];
    snprintf(concat, sizeof concat, "%s%s", key, WS_GUID);
    uint8_t sha[SHA_DIGEST_LENGTH];
    unsigned sha_len = 0;
    EVP_Digest(concat, strlen(concat), sha, &sha_len, EVP_sha1(), NULL);
    char expect[64];
    b64(sha, SHA_DIGEST_LENGTH, expect);
    if (!http_header(head, "Sec-WebSocket-Accept", val, sizeof val) || strcmp(val, expect) != 0) {
        snprintf(l->err, sizeof l->err,
                 "WebSocket upgrade: Sec-WebSocket-Accept is \"%s\", expected \"%s\"",
                 http_header(head, "Sec-WebSocket-Accept", val, sizeof val) ? val : "(absent)",
                 expect);
        return GW_EPEER;
    }
    if (!http_header(head, "Sec-WebSocket-Protocol", val, sizeof val) ||
        strcmp(val, "iotmp") != 0) {
        snprintf(l->err, sizeof l->err,
                 "WebSocket upgrade: server did not select subprotocol \"iotmp\"");
        return GW_EPEER;
    }
    if (http_header(head, "Sec-WebSocket-Extensions", val, sizeof val) && val[0]) {
        snprintf(l->err, sizeof l->err,
                 "WebSocket upgrade: server chose extension \"%s\" that was not offered", val);
        return GW_EPEER;
    }
    return 0;
}

static int ws_send_frame(struct gw_testdev_link *l, unsigned opcode, const void *data, size_t len,
                         int64_t deadline)
{
    uint8_t hdr[14];
    size_t hl = 0;
    hdr[hl++] = (uint8_t)(0x80 | opcode); /* FIN: we never fragment our own messages */
    if (len < 126) {
        hdr[hl++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xFFFF) {
        hdr[hl++] = 0x80 | 126;
        hdr[hl++] = (uint8_t)(len >> 8);
        hdr[hl++] = (uint8_t)len;
    } else {
        hdr[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[hl++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint8_t mask[4];
    if (getrandom(mask, sizeof mask, 0) != (ssize_t)sizeof mask) {
        for (size_t i = 0; i < 4; i++)
            mask[i] = (uint8_t)rand();
    }
    memcpy(hdr + hl, mask, 4);
    hl += 4;
    uint8_t *frame = gw_malloc(hl + len);
    memcpy(frame, hdr, hl);
    const uint8_t *src = data;
    for (size_t i = 0; i < len; i++)
        frame[hl + i] = src[i] ^ mask[i & 3];
    int rc = raw_write_all(l, frame, hl + len, deadline);
    free(frame);
    return rc;
}

/*
 * Parses every complete frame in l->ws_in: data bytes to out, control frames answered.
 * Returns bytes appended, or GW_EFRAME / GW_ECONNRESET (close received) / a write error.
 */
static int ws_parse(struct gw_testdev_link *l, struct gw_testdev_buf *out)
{
    int appended = 0;
    for (;;) {
        const uint8_t *p = l->ws_in.p;
        size_t have = l->ws_in.len;
        if (have < 2)
            return appended;
        bool fin = p[0] & 0x80;
        unsigned rsv = p[0] & 0x70, opcode = p[0] & 0x0F;
        bool masked = p[1] & 0x80;
        uint64_t plen = p[1] & 0x7F;
        size_t hl = 2;
        if (plen == 126) {
            if (have < 4)
                return appended;
            plen = (uint64_t)p[2] << 8 | p[3];
            hl = 4;
        } else if (plen == 127) {
            if (have < 10)
                return appended;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | p[2 + i];
            hl = 10;
        }
        if (rsv) {
            snprintf(l->err, sizeof l->err, "WebSocket: RSV bits 0x%x set without an extension",
                     rsv);
            return GW_EFRAME;
        }
        if (masked) {
            snprintf(l->err, sizeof l->err, "WebSocket: server sent a masked frame (RFC 6455 5.1)");
            return GW_EFRAME;
        }
        if (plen > WS_MAX_MESSAGE) {
            snprintf(l->err, sizeof l->err, "WebSocket: frame payload of %llu bytes is too large",
                     (unsigned long long)plen);
            return GW_EFRAME;
        }
        if (opcode >= 8 && (!fin || plen > 125)) {
            snprintf(l->err, sizeof l->err,
                     "WebSocket: control frame 0x%x fragmented or longer than 125 bytes", opcode);
            return GW_EFRAME;
        }
        if (have < hl + plen)
            return appended;
        const uint8_t *payload = p + hl;
        size_t n = (size_t)plen;
        switch (opcode) {
        case 0x0: /* continuation */
            if (!l->ws_in_message) {
                snprintf(l->err, sizeof l->err, "WebSocket: continuation frame without a message");
                return GW_EFRAME;
            }
            gw_testdev_buf_append(out, payload, n);
            appended += (int)n;
            if (fin)
                l->ws_in_message = false;
            break;
        case 0x2: /* binary */
            if (l->ws_in_message) {
                snprintf(l->err, sizeof l->err,
                         "WebSocket: new data frame inside a fragmented message");
                return GW_EFRAME;
            }
            gw_testdev_buf_append(out, payload, n);
            appended += (int)n;
            l->ws_in_message = !fin;
            break;
        case 0x1:
            snprintf(l->err, sizeof l->err, "WebSocket: text frame received (IOTMP is binary)");
            return GW_EFRAME;
        case 0x8: { /* close */
            int code = n >= 2 ? (payload[0] << 8 | payload[1]) : 1005;
            l->ws_close_code = code;
            if (!l->ws_close_sent) {
                uint8_t echo[2] = {(uint8_t)(code >> 8), (uint8_t)code};
                l->ws_close_sent = true;
                ws_send_frame(l, 0x8, echo, n >= 2 ? 2 : 0, mono_ms() + 1000);
            }
            snprintf(l->err, sizeof l->err, "WebSocket closed by the server (code %d)", code);
            return GW_ECONNRESET;
        }
        case 0x9: { /* ping → pong with the same payload */
            l->ws_pings++;
            uint8_t copy[125];
            memcpy(copy, payload, n);
            gw_testdev_buf_consume(&l->ws_in, hl + n);
            int rc = ws_send_frame(l, 0xA, copy, n, mono_ms() + 5000);
            if (rc < 0)
                return rc;
            continue; /* already consumed */
        }
        case 0xA:
            l->ws_pongs++;
            break;
        default:
            snprintf(l->err, sizeof l->err, "WebSocket: unknown opcode 0x%x", opcode);
            return GW_EFRAME;
        }
        gw_testdev_buf_consume(&l->ws_in, hl + n);
    }
}

/* --- Public --- */

void gw_testdev_link_init(struct gw_testdev_link *l)
{
    memset(l, 0, sizeof *l);
    l->fd = -1;
}

int gw_testdev_link_open(struct gw_testdev_link *l, const struct gw_testdev_url *u,
                         const char *ca_file, bool insecure, int timeout_ms)
{
    gw_testdev_link_close(l);
    l->scheme = u->scheme;
    l->err[0] = '\0';
    int64_t deadline = mono_ms() + timeout_ms;
    int rc = tcp_connect(l, u, deadline);
    if (rc < 0)
        goto fail;
    if (u->scheme == GW_TESTDEV_TLS || u->scheme == GW_TESTDEV_WSS) {
        rc = tls_start(l, u, ca_file, insecure, deadline);
        if (rc < 0)
            goto fail;
    }
    if (u->scheme == GW_TESTDEV_WS || u->scheme == GW_TESTDEV_WSS) {
        rc = ws_handshake(l, u, deadline);
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:;
    char keep[sizeof l->err];
    memcpy(keep, l->err, sizeof keep);
    l->ws_close_sent = true; /* no close frame on a failed handshake */
    gw_testdev_link_close(l);
    memcpy(l->err, keep, sizeof keep);
    return rc;
}

int gw_testdev_link_send(struct gw_testdev_link *l, const void *data, size_t len, int timeout_ms)
{
    if (l->fd < 0)
        return GW_ENOTCONN;
    int64_t deadline = mono_ms() + timeout_ms;
    if (l->scheme == GW_TESTDEV_WS || l->scheme == GW_TESTDEV_WSS)
        return ws_send_frame(l, 0x2, data, len, deadline);
    return raw_write_all(l, data, len, deadline);
}

int gw_testdev_link_recv(struct gw_testdev_link *l, struct gw_testdev_buf *out)
{
    if (l->fd < 0)
        return GW_ENOTCONN;
    bool ws = l->scheme == GW_TESTDEV_WS || l->scheme == GW_TESTDEV_WSS;
    int total = 0;
    uint8_t tmp[16384];
    for (;;) {
        int n = raw_read(l, tmp, sizeof tmp);
        if (n < 0) {
            /* Deliver what came before the close; report the close on the next call. */
            if (total > 0 && n == GW_ECONNRESET)
                return total;
            return n;
        }
        if (n == 0)
            break;
        if (ws) {
            gw_testdev_buf_append(&l->ws_in, tmp, (size_t)n);
            int rc = ws_parse(l, out);
            if (rc < 0)
                return rc;
            total += rc;
        } else {
            gw_testdev_buf_append(out, tmp, (size_t)n);
            total += n;
        }
        if (total > (1 << 20)) /* let the caller process; TLS may still hold bytes */
            break;
    }
    if (ws && l->ws_in.len > 0) { /* bytes left over from the upgrade answer */
        int rc = ws_parse(l, out);
        if (rc < 0)
            return rc;
        total += rc;
    }
    return total;
}

bool gw_testdev_link_pending(const struct gw_testdev_link *l)
{
    return l->ssl && SSL_pending(l->ssl) > 0;
}

int gw_testdev_link_ping(struct gw_testdev_link *l, const void *data, size_t len)
{
    if (l->fd < 0)
        return GW_ENOTCONN;
    if (l->scheme != GW_TESTDEV_WS && l->scheme != GW_TESTDEV_WSS)
        return GW_ENOTSUP;
    if (len > 125)
        return GW_EINVAL;
    return ws_send_frame(l, 0x9, data, len, mono_ms() + 5000);
}

void gw_testdev_link_close(struct gw_testdev_link *l)
{
    if (l->fd >= 0) {
        if ((l->scheme == GW_TESTDEV_WS || l->scheme == GW_TESTDEV_WSS) && !l->ws_close_sent) {
            uint8_t code[2] = {0x03, 0xE8}; /* 1000 normal closure */
            l->ws_close_sent = true;
            ws_send_frame(l, 0x8, code, 2, mono_ms() + 500);
        }
        if (l->ssl)
            SSL_shutdown(l->ssl); /* close_notify; not waiting for the peer's */
        close(l->fd);
        l->fd = -1;
    }
    if (l->ssl)
        SSL_free(l->ssl);
    if (l->ssl_ctx)
        SSL_CTX_free(l->ssl_ctx);
    l->ssl = NULL;
    l->ssl_ctx = NULL;
    gw_testdev_buf_free(&l->ws_in);
    l->ws_in_message = false;
    l->ws_close_sent = false;
}
