/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_fast_modbus_server: a fast local Modbus TCP server for benchmarks. One epoll thread serves
 * any number of connections on one port, any unit id, function codes 1/2/3/4/5/6/15/16. MBAP frames
 * are parsed here (partial reads, several requests in one read, pipelined answers buffered when the
 * socket is full). Holding/input register a of unit u reads (u * 7 + a + T) & 0xffff, T = whole
 * seconds since start, until a write stores a value (holding registers and coils are stored per
 * unit). Discrete input a of unit u reads (u + a + T) & 1; coils read 0 until written.
 * Counts requests per unit and per connection, with the monotonic time of the first request and a
 * histogram of the intervals between successive requests; on SIGUSR1 and at exit (SIGINT/SIGTERM)
 * writes them as JSON to --stats-file (written to a temporary file and renamed, so readers never see
 * half a file):
 *   {"requests": n, "started_ms": t0, "now_ms": t, "units": {"<u>": {"requests": n, "first_ms": t,
 *    "interval_p50_ms": x, "interval_p99_ms": y, "max_gap_ms": z}, ...},
 *    "connections": [{"peer_port": p, "requests": n, "first_ms": t, "interval_p50_ms": x,
 *    "interval_p99_ms": y, "max_gap_ms": z}, ...]}
 * (times in milliseconds on CLOCK_MONOTONIC; connections lists every connection ever accepted).
 * SIGUSR2 clears the interval histograms and gaps (not the request counts), so that the interval
 * figures describe a measuring window that starts then.
 * Prints `ready <port>` on stdout once listening (--port 0 picks a free port).
 *     bench_fast_modbus_server --port P [--registers N (125)] [--stats-file F] [--bind ADDR]
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MBAP_LEN 7
#define MAX_ADU 260
#define IN_CAP 8192
#define HIST_SUB 32    /* sub-buckets per power of two: ~3 % resolution */
#define HIST_OCT 34    /* intervals up to 2^34 us (~4.7 hours) */
#define HIST_N (HIST_SUB * HIST_OCT)

/* Intervals between successive requests, in microseconds, log-linear buckets. */
struct fms_hist {
    uint32_t bucket[HIST_N];
    uint64_t count;
    uint64_t max_us;
};

struct fms_series {
    uint64_t requests;
    uint64_t first_us; /* monotonic, 0 = none yet */
    uint64_t last_us;
    struct fms_hist *hist; /* allocated on the second request */
};

struct fms_unit {
    uint16_t *holding;  /* stored values */
    uint8_t *written;   /* 1 if holding[a] was written */
    uint8_t *coils;
    struct fms_series s;
};

struct fms_conn {
    int fd;
    int peer_port;
    size_t in_len;
    uint8_t in[IN_CAP];
    uint8_t *out;
    size_t out_len, out_cap, out_off;
    int want_out;
    struct fms_series s;
};

static unsigned nregs = 125;
static uint64_t start_us;
static struct fms_unit units[256];
static struct fms_conn **conns; /* every connection ever accepted (closed ones keep their stats) */
static size_t nconns, capconns;
static uint64_t total_requests;
static const char *stats_file;
static int epfd;

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    if (!p) {
        fprintf(stderr, "fast_server: out of memory\n");
        exit(1);
    }
    return p;
}

static unsigned hist_index(uint64_t us)
{
    if (us < HIST_SUB)
        return (unsigned)us;
    unsigned msb = 63u - (unsigned)__builtin_clzll(us); /* >= 5 */
    unsigned oct = msb - 4u;                             /* 1.. */
    unsigned sub = (unsigned)(us >> (msb - 5u)) & (HIST_SUB - 1u);
    unsigned idx = oct * HIST_SUB + sub;
    return idx < HIST_N ? idx : HIST_N - 1u;
}

/* Lower edge of bucket idx, and its width, in microseconds. */
static double hist_value(unsigned idx)
{
    if (idx < HIST_SUB)
        return (double)idx + 0.5;
    unsigned oct = idx / HIST_SUB, sub = idx % HIST_SUB;
    double base = ldexp(1.0, (int)oct + 4);
    double width = base / HIST_SUB;
    return base + (double)sub * width + width / 2.0;
}

static double hist_quantile(const struct fms_hist *h, double q)
{
    if (!h || h->count == 0)
        return 0.0;
    uint64_t rank = (uint64_t)ceil(q * (double)h->count);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_N; i++) {
        seen += h->bucket[i];
        if (seen >= rank) {
            double v = hist_value(i);
            return v > (double)h->max_us ? (double)h->max_us : v;
        }
    }
    return (double)h->max_us;
}

static void series_hit(struct fms_series *s, uint64_t now)
{
    if (s->requests == 0) {
        s->first_us = now;
    } else {
        if (!s->hist)
            s->hist = xcalloc(1, sizeof *s->hist);
        uint64_t d = now > s->last_us ? now - s->last_us : 0;
        s->hist->bucket[hist_index(d)]++;
        s->hist->count++;
        if (d > s->hist->max_us)
            s->hist->max_us = d;
    }
    s->last_us = now;
    s->requests++;
}

static void series_reset(struct fms_series *s)
{
    if (s->hist)
        memset(s->hist, 0, sizeof *s->hist);
}

static void reset_intervals(void)
{
    for (unsigned u = 0; u < 256; u++)
        series_reset(&units[u].s);
    for (size_t i = 0; i < nconns; i++)
        series_reset(&conns[i]->s);
}

static void series_json(FILE *f, const struct fms_series *s)
{
    fprintf(f, "\"requests\": %llu, \"first_ms\": %.3f, \"interval_p50_ms\": %.3f, "
               "\"interval_p99_ms\": %.3f, \"max_gap_ms\": %.3f",
            (unsigned long long)s->requests, (double)s->first_us / 1000.0,
            hist_quantile(s->hist, 0.50) / 1000.0, hist_quantile(s->hist, 0.99) / 1000.0,
            s->hist ? (double)s->hist->max_us / 1000.0 : 0.0);
}

static void write_stats(void)
{
    if (!stats_file)
        return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", stats_file);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "fast_server: %s: %s\n", tmp, strerror(errno));
        return;
    }
    fprintf(f, "{\"requests\": %llu, \"started_ms\": %.3f, \"now_ms\": %.3f, \"units\": {",
            (unsigned long long)total_requests, (double)start_us / 1000.0,
            (double)mono_us() / 1000.0);
    int first = 1;
    for (unsigned u = 0; u < 256; u++) {
        if (units[u].s.requests == 0)
            continue;
        fprintf(f, "%s\n  \"%u\": {", first ? "" : ",", u);
        series_json(f, &units[u].s);
        fputc('}', f);
        first = 0;
    }
    fprintf(f, "\n}, \"connections\": [");
    for (size_t i = 0; i < nconns; i++) {
        fprintf(f, "%s\n  {\"peer_port\": %d, ", i ? "," : "", conns[i]->peer_port);
        series_json(f, &conns[i]->s);
        fputc('}', f);
    }
    fprintf(f, "\n]}\n");
    if (fclose(f) != 0 || rename(tmp, stats_file) != 0)
        fprintf(stderr, "fast_server: writing %s: %s\n", stats_file, strerror(errno));
}

static struct fms_unit *unit_get(unsigned u)
{
    struct fms_unit *un = &units[u];
    if (!un->holding) {
        un->holding = xcalloc(nregs, sizeof *un->holding);
        un->written = xcalloc(nregs, 1);
        un->coils = xcalloc(nregs, 1);
    }
    return un;
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void out_reserve(struct fms_conn *c, size_t more)
{
    if (c->out_len + more <= c->out_cap)
        return;
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + more <= c->out_cap)
            return;
    }
    size_t cap = c->out_cap ? c->out_cap * 2 : 1024;
    while (cap < c->out_len + more)
        cap *= 2;
    uint8_t *p = realloc(c->out, cap);
    if (!p) {
        fprintf(stderr, "fast_server: out of memory\n");
        exit(1);
    }
    c->out = p;
    c->out_cap = cap;
}

/* Builds the answer PDU for one request PDU; returns its length. */
static size_t handle_pdu(unsigned unit, const uint8_t *req, size_t len, uint8_t *rsp, uint64_t now)
{
    unsigned fc = req[0];
    unsigned T = (unsigned)((now - start_us) / 1000000u);
    unsigned exc = 0;
    struct fms_unit *un = unit_get(unit);
    rsp[0] = (uint8_t)fc;
    switch (fc) {
    case 1: case 2: case 3: case 4: {
        if (len != 5) {
            exc = 3;
            break;
        }
        unsigned addr = get16(req + 1), qty = get16(req + 3);
        unsigned maxq = fc <= 2 ? 2000 : 125;
        if (qty < 1 || qty > maxq) {
            exc = 3;
            break;
        }
        if (addr + qty > nregs) {
            exc = 2;
            break;
        }
        if (fc <= 2) {
            unsigned nb = (qty + 7) / 8;
            rsp[1] = (uint8_t)nb;
            memset(rsp + 2, 0, nb);
            for (unsigned i = 0; i < qty; i++) {
                unsigned a = addr + i;
                unsigned bit = fc == 1 ? un->coils[a] : ((unit + a + T) & 1u);
                if (bit)
                    rsp[2 + i / 8] |= (uint8_t)(1u << (i % 8));
            }
            return 2 + nb;
        }
        rsp[1] = (uint8_t)(qty * 2);
        for (unsigned i = 0; i < qty; i++) {
            unsigned a = addr + i;
            unsigned v = (fc == 3 && un->written[a]) ? un->holding[a] : ((unit * 7u + a + T) & 0xffffu);
            put16(rsp + 2 + 2 * i, v);
        }
        return 2 + qty * 2;
    }
    case 5: case 6: {
        if (len != 5) {
            exc = 3;
            break;
        }
        unsigned addr = get16(req + 1), val = get16(req + 3);
        if (fc == 5 && val != 0xff00 && val != 0x0000) {
            exc = 3;
            break;
        }
        if (addr >= nregs) {
            exc = 2;
            break;
        }
        if (fc == 5) {
            un->coils[addr] = val == 0xff00;
        } else {
            un->holding[addr] = (uint16_t)val;
            un->written[addr] = 1;
        }
        memcpy(rsp, req, 5);
        return 5;
    }
    case 15: case 16: {
        if (len < 6) {
            exc = 3;
            break;
        }
        unsigned addr = get16(req + 1), qty = get16(req + 3), nb = req[5];
        unsigned maxq = fc == 15 ? 1968 : 123;
        unsigned need = fc == 15 ? (qty + 7) / 8 : qty * 2;
        if (qty < 1 || qty > maxq || nb != need || len != 6 + nb) {
            exc = 3;
            break;
        }
        if (addr + qty > nregs) {
            exc = 2;
            break;
        }
        for (unsigned i = 0; i < qty; i++) {
            if (fc == 15) {
                un->coils[addr + i] = (req[6 + i / 8] >> (i % 8)) & 1u;
            } else {
                un->holding[addr + i] = get16(req + 6 + 2 * i);
                un->written[addr + i] = 1;
            }
        }
        memcpy(rsp, req, 5);
        return 5;
    }
    default:
        exc = 1;
        break;
    }
    rsp[0] = (uint8_t)(fc | 0x80);
    rsp[1] = (uint8_t)exc;
    return 2;
}

static void conn_close(struct fms_conn *c)
{
    if (c->fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_cap = c->out_off = 0;
}

static void conn_set_out(struct fms_conn *c, int want)
{
    if (c->want_out == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want;
}

/* Writes what is buffered; returns -1 if the connection failed. */
static int conn_flush(struct fms_conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                conn_set_out(c, 1);
                return 0;
            }
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    conn_set_out(c, 0);
    return 0;
}

/* Parses every complete frame in the input buffer; returns -1 on a framing error. */
static int conn_process(struct fms_conn *c)
{
    size_t off = 0;
    uint64_t now = mono_us();
    while (c->in_len - off >= MBAP_LEN) {
        const uint8_t *h = c->in + off;
        unsigned len = get16(h + 4); /* unit id + PDU */
        if (get16(h + 2) != 0 || len < 2 || len > 254)
            return -1;
        if (c->in_len - off < 6u + len)
            break;
        unsigned unit = h[6];
        uint8_t rsp[MAX_ADU];
        size_t plen = handle_pdu(unit, h + 7, len - 1u, rsp + 7, now);
        memcpy(rsp, h, 4);
        put16(rsp + 4, (unsigned)plen + 1u);
        rsp[6] = (uint8_t)unit;
        out_reserve(c, 7 + plen);
        memcpy(c->out + c->out_len, rsp, 7 + plen);
        c->out_len += 7 + plen;
        series_hit(&units[unit].s, now);
        series_hit(&c->s, now);
        total_requests++;
        off += 6u + len;
    }
    if (off > 0) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    return 0;
}

static void conn_readable(struct fms_conn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
        if (n == 0) {
            conn_close(c);
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_close(c);
            break;
        }
        c->in_len += (size_t)n;
        if (conn_process(c) < 0) {
            conn_close(c);
            return;
        }
        if ((size_t)n < IN_CAP) /* drained what was there (level-triggered: more wakes us again) */
            break;
    }
    if (c->fd >= 0 && c->out_len > c->out_off && conn_flush(c) < 0)
        conn_close(c);
}

static void accept_all(int lfd)
{
    for (;;) {
        struct sockaddr_in peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(lfd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fprintf(stderr, "fast_server: accept: %s\n", strerror(errno));
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct fms_conn *c = xcalloc(1, sizeof *c);
        c->fd = fd;
        c->peer_port = ntohs(peer.sin_port);
        if (nconns == capconns) {
            capconns = capconns ? capconns * 2 : 64;
            struct fms_conn **p = realloc(conns, capconns * sizeof *p);
            if (!p) {
                fprintf(stderr, "fast_server: out of memory\n");
                exit(1);
            }
            conns = p;
        }
        conns[nconns++] = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            fprintf(stderr, "fast_server: epoll_ctl: %s\n", strerror(errno));
            close(fd);
            c->fd = -1;
        }
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_fast_modbus_server --port P [--registers N] [--stats-file F] "
                    "[--bind ADDR]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    long port = -1;
    const char *bind_addr = "127.0.0.1";
    for (int i = 1; i < argc; i++) {
        char *end;
        if (!strcmp(argv[i], "--port") && i + 1 < argc) {
            port = strtol(argv[++i], &end, 10);
            if (*end || port < 0 || port > 65535)
                usage();
        } else if (!strcmp(argv[i], "--registers") && i + 1 < argc) {
            long n = strtol(argv[++i], &end, 10);
            if (*end || n < 1 || n > 65536)
                usage();
            nregs = (unsigned)n;
        } else if (!strcmp(argv[i], "--stats-file") && i + 1 < argc) {
            stats_file = argv[++i];
        } else if (!strcmp(argv[i], "--bind") && i + 1 < argc) {
            bind_addr = argv[++i];
        } else {
            usage();
        }
    }
    if (port < 0)
        usage();

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGUSR2);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "fast_server: --bind %s: not an IPv4 address\n", bind_addr);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
        fprintf(stderr, "fast_server: %s:%ld: %s\n", bind_addr, port, strerror(errno));
        return 1;
    }
    socklen_t salen = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &salen);

    epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &lfd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = &sfd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);

    start_us = mono_us();
    printf("ready %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(epfd, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "fast_server: epoll_wait: %s\n", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &lfd) {
                accept_all(lfd);
            } else if (p == &sfd) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                    if (si.ssi_signo == SIGUSR2) {
                        reset_intervals();
                        continue;
                    }
                    write_stats();
                    if (si.ssi_signo != SIGUSR1)
                        return 0;
                }
            } else {
                struct fms_conn *c = p;
                if (c->fd < 0)
                    continue;
                if (evs[i].events & (EPOLLERR | EPOLLHUP) && !(evs[i].events & EPOLLIN)) {
                    conn_close(c);
                    continue;
                }
                if (evs[i].events & EPOLLOUT) {
                    if (conn_flush(c) < 0) {
                        conn_close(c);
                        continue;
                    }
                }
                if (evs[i].events & EPOLLIN)
                    conn_readable(c);
            }
        }
    }
    write_stats();
    return 1;
}
