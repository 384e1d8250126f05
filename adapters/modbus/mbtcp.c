/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mbtcp: blocking Modbus TCP client for one connection that waits with poll() (see mbtcp.h).
 * Called by the Modbus adapter's worker threads (modbus.c) for TCP connections; relies only on
 * POSIX sockets and on <modbus.h> for libmodbus's error numbers (no libmodbus function is called).
 *
 * The socket is non-blocking; every wait is a poll() on it with the time left to the request's
 * deadline. Received bytes go to a buffer that holds at most a couple of frames: a frame is
 * taken out only once whole (MBAP length), so a reply split over many segments, or the tail of
 * a reply that timed out, keeps the stream in step. Replies to earlier requests (transaction id
 * among the last STALE_WINDOW sent) are dropped while waiting for the current one.
 */
#include "mbtcp.h"

#include "gw/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <modbus.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    MBAP_HDR = 7,          /* tid(2) pid(2) len(2) unit(1) */
    MAX_ADU = 260,         /* 7 + 253 */
    MAX_LEN = MAX_ADU - 6, /* MBAP length field: unit + PDU */
    RX_CAP = 2 * MAX_ADU,
    STALE_WINDOW = 64,
    MAX_READ_BITS = 2000,
    MAX_READ_REGS = 125,
    MAX_WRITE_BITS = 1968,
    MAX_WRITE_REGS = 123,
};

struct gw_mbtcp {
    char *host, *port;
    int fd;
    uint8_t unit;
    unsigned timeout_ms;
    uint16_t tid; /* id of the last request sent */
    size_t have;  /* bytes in rx */
    uint8_t rx[RX_CAP];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* Waits for events on fd until deadline (ms, monotonic): 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = now_ms();
        int left = now >= deadline ? 0 : (int)(deadline - now > 60000000 ? 60000000
                                                                        : deadline - now);
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left);
        if (n > 0)
            return 0; /* readable/writable, or an error the next call will report */
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

struct gw_mbtcp *gw_mbtcp_new(const char *host, const char *port)
{
    struct gw_mbtcp *c = gw_calloc(1, sizeof *c);
    c->host = gw_strdup(host);
    c->port = gw_strdup(port);
    c->fd = -1;
    c->unit = 1;
    c->timeout_ms = 500;
    return c;
}

void gw_mbtcp_close(struct gw_mbtcp *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->have = 0;
}

void gw_mbtcp_free(struct gw_mbtcp *c)
{
    if (!c)
        return;
    gw_mbtcp_close(c);
    free(c->host);
    free(c->port);
    free(c);
}

int gw_mbtcp_fd(const struct gw_mbtcp *c)
{
    return c->fd;
}

void gw_mbtcp_set_unit(struct gw_mbtcp *c, uint8_t unit)
{
    c->unit = unit;
}

void gw_mbtcp_set_timeout(struct gw_mbtcp *c, unsigned timeout_ms)
{
    c->timeout_ms = timeout_ms;
}

/* One address: a connected non-blocking socket or -errno. */
static int connect_one(const struct addrinfo *ai, unsigned timeout_ms)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            rc = -errno;
            goto fail_close;
        }
        rc = wait_fd(fd, POLLOUT, now_ms() + timeout_ms);
        if (rc != 0)
            goto fail_close;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
            err = errno;
        if (err != 0) {
            rc = -err;
            goto fail_close;
        }
    }
    return fd;
fail_close:
    close(fd);
    return rc;
}

int gw_mbtcp_connect(struct gw_mbtcp *c, unsigned timeout_ms)
{
    gw_mbtcp_close(c);
    /* No AI_ADDRCONFIG: with only the loopback interface up (early boot, a bench), it would make
     * "localhost" unresolvable. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(c->host, c->port, &hints, &res);
    if (g != 0) {
        int e = g == EAI_SYSTEM ? errno : EHOSTUNREACH;
        return -(e ? e : EHOSTUNREACH);
    }
    int rc = -ECONNREFUSED;
    for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        rc = connect_one(ai, timeout_ms);
        if (rc >= 0) {
            c->fd = rc;
            rc = 0;
            break;
        }
    }
    freeaddrinfo(res);
    return rc;
}

/* Sends len bytes before deadline: 0 or -errno. */
static int send_all(struct gw_mbtcp *c, const uint8_t *p, size_t len, uint64_t deadline)
{
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(c->fd, POLLOUT, deadline);
            if (rc != 0)
                return rc;
            continue;
        }
        return n < 0 ? -errno : -EIO;
    }
    return 0;
}

/*
 * Reads until rx starts with one whole frame (returns its size) or deadline. A header that
 * cannot be MBAP (protocol id not 0, length out of 2..254) gives -EMBBADDATA and drops the buffer.
 */
static int recv_frame(struct gw_mbtcp *c, uint64_t deadline)
{
    for (;;) {
        if (c->have >= 6) {
            uint16_t len = be16(c->rx + 4);
            if (be16(c->rx + 2) != 0 || len < 2 || len > MAX_LEN) {
                c->have = 0;
                return -EMBBADDATA;
            }
            if (c->have >= 6u + len)
                return 6 + len;
        }
        int rc = wait_fd(c->fd, POLLIN, deadline);
        if (rc != 0)
            return rc;
        ssize_t n = recv(c->fd, c->rx + c->have, sizeof c->rx - c->have, 0);
        if (n > 0)
            c->have += (size_t)n;
        else if (n == 0)
            return -ECONNRESET;
        else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
    }
}

static void consume(struct gw_mbtcp *c, size_t n)
{
    memmove(c->rx, c->rx + n, c->have - n);
    c->have -= n;
}

/*
 * Sends the PDU req (plen bytes) and waits for its reply; copies the reply PDU (function code
 * onwards) into rsp (MAX_ADU bytes) and returns its length, or a negative code. An exception
 * reply is turned into its code here; the caller checks the normal reply's contents.
 */
static int transact(struct gw_mbtcp *c, const uint8_t *req, size_t plen, uint8_t *rsp)
{
    if (c->fd < 0)
        return -EBADF;
    uint8_t adu[MAX_ADU];
    c->tid++;
    put16(adu, c->tid);
    put16(adu + 2, 0);
    put16(adu + 4, (uint16_t)(plen + 1));
    adu[6] = c->unit;
    memcpy(adu + MBAP_HDR, req, plen);
    uint64_t deadline = now_ms() + c->timeout_ms;
    int rc = send_all(c, adu, MBAP_HDR + plen, deadline);
    if (rc != 0)
        return rc;
    for (;;) {
        int fl = recv_frame(c, deadline);
        if (fl < 0)
            return fl;
        uint16_t tid = be16(c->rx);
        uint8_t unit = c->rx[6];
        int n = fl - MBAP_HDR; /* PDU length, >= 1 */
        memcpy(rsp, c->rx + MBAP_HDR, (size_t)n);
        consume(c, (size_t)fl);
        if (tid != c->tid) {
            uint16_t behind = (uint16_t)(c->tid - tid);
            if (behind >= 1 && behind <= STALE_WINDOW)
                continue; /* the late answer to a request that timed out */
            return -EMBBADDATA;
        }
        if (unit != c->unit)
            return -EMBBADSLAVE;
        if (rsp[0] == (req[0] | 0x80)) {
            if (n != 2)
                return -EMBBADDATA;
            int code = rsp[1];
            if (code >= 1 && code <= MODBUS_EXCEPTION_GATEWAY_TARGET)
                return -(MODBUS_ENOBASE + code);
            return -EMBBADEXC;
        }
        if (rsp[0] != req[0])
            return -EMBBADDATA;
        return n;
    }
}

int gw_mbtcp_read_bits(struct gw_mbtcp *c, int fc, uint16_t addr, uint16_t n, uint8_t *dest)
{
    if (fc != 1 && fc != 2)
        return -EINVAL;
    if (n < 1 || n > MAX_READ_BITS)
        return -EMBMDATA;
    uint8_t req[5] = {(uint8_t)fc};
    put16(req + 1, addr);
    put16(req + 3, n);
    uint8_t rsp[MAX_ADU];
    int len = transact(c, req, sizeof req, rsp);
    if (len < 0)
        return len;
    int bc = (n + 7) / 8;
    if (len != 2 + bc || rsp[1] != bc)
        return -EMBBADDATA;
    for (unsigned i = 0; i < n; i++)
        dest[i] = (uint8_t)((rsp[2 + i / 8] >> (i % 8)) & 1);
    return n;
}

int gw_mbtcp_read_registers(struct gw_mbtcp *c, int fc, uint16_t addr, uint16_t n,
                            uint16_t *dest)
{
    if (fc != 3 && fc != 4)
        return -EINVAL;
    if (n < 1 || n > MAX_READ_REGS)
        return -EMBMDATA;
    uint8_t req[5] = {(uint8_t)fc};
    put16(req + 1, addr);
    put16(req + 3, n);
    uint8_t rsp[MAX_ADU];
    int len = transact(c, req, sizeof req, rsp);
    if (len < 0)
        return len;
    if (len != 2 + 2 * n || rsp[1] != 2 * n)
        return -EMBBADDATA;
    for (unsigned i = 0; i < n; i++)
        dest[i] = be16(rsp + 2 + 2 * i);
    return n;
}

/* FC 5/6/15/16: the reply must echo the request's first 5 bytes (fc, address, value/count). */
static int write_echo(struct gw_mbtcp *c, const uint8_t *req, size_t plen)
{
    uint8_t rsp[MAX_ADU];
    int len = transact(c, req, plen, rsp);
    if (len < 0)
        return len;
    if (len != 5 || memcmp(rsp, req, 5) != 0)
        return -EMBBADDATA;
    return 0;
}

int gw_mbtcp_write_bit(struct gw_mbtcp *c, uint16_t addr, int on)
{
    uint8_t req[5] = {5};
    put16(req + 1, addr);
    put16(req + 3, on ? 0xFF00 : 0x0000);
    int rc = write_echo(c, req, sizeof req);
    return rc < 0 ? rc : 1;
}

int gw_mbtcp_write_register(struct gw_mbtcp *c, uint16_t addr, uint16_t value)
{
    uint8_t req[5] = {6};
    put16(req + 1, addr);
    put16(req + 3, value);
    int rc = write_echo(c, req, sizeof req);
    return rc < 0 ? rc : 1;
}

int gw_mbtcp_write_bits(struct gw_mbtcp *c, uint16_t addr, uint16_t n, const uint8_t *src)
{
    if (n < 1 || n > MAX_WRITE_BITS)
        return -EMBMDATA;
    uint8_t req[6 + MAX_WRITE_BITS / 8] = {15};
    put16(req + 1, addr);
    put16(req + 3, n);
    unsigned bc = (n + 7u) / 8u;
    req[5] = (uint8_t)bc;
    memset(req + 6, 0, bc);
    for (unsigned i = 0; i < n; i++)
        if (src[i])
            req[6 + i / 8] |= (uint8_t)(1u << (i % 8));
    int rc = write_echo(c, req, 6 + bc);
    return rc < 0 ? rc : n;
}

int gw_mbtcp_write_registers(struct gw_mbtcp *c, uint16_t addr, uint16_t n, const uint16_t *src)
{
    if (n < 1 || n > MAX_WRITE_REGS)
        return -EMBMDATA;
    uint8_t req[6 + 2 * MAX_WRITE_REGS] = {16};
    put16(req + 1, addr);
    put16(req + 3, n);
    req[5] = (uint8_t)(2 * n);
    for (unsigned i = 0; i < n; i++)
        put16(req + 6 + 2 * i, src[i]);
    int rc = write_echo(c, req, 6 + 2u * n);
    return rc < 0 ? rc : n;
}

int gw_mbtcp_flush(struct gw_mbtcp *c)
{
    if (c->fd < 0)
        return -EBADF;
    int dropped = (int)c->have;
    c->have = 0;
    for (;;) {
        ssize_t n = recv(c->fd, c->rx, sizeof c->rx, MSG_DONTWAIT);
        if (n > 0) {
            dropped += (int)n;
            if (dropped > (1 << 20))
                return dropped; /* a peer that keeps sending: leave the rest to the framing */
            continue;
        }
        if (n == 0)
            return -ECONNRESET;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return dropped;
        return -errno;
    }
}
