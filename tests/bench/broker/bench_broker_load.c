/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_broker_load: load client for iotmp-broker. N simulated IOTMP devices (default 1,000) live
 * in one process on one epoll loop with non-blocking sockets; each connects over TCP, sends
 * CONNECT, then answers RUN (resource "ping" → a counter) and sends one KEEP_ALIVE whose echo is
 * counted. It reports the connect rate (devices/s), errors by kind, the broker's RSS (VmRSS of the
 * pid given on the command line) before and after, and the REST RUN round trip (p50/p99) for one
 * device, measured with a plain HTTP/1.1 client (keep-alive, sequential calls) on a second thread
 * while the epoll loop answers. As a floor measured in the same run it first prints the raw
 * loopback TCP request/response round trip. A benchmark: it prints figures and asserts nothing.
 * tests/bench/broker/run.sh starts a broker and runs it.
 */
#include "gw/error.h"
#include "gw/iotmp.h"
#include "gw/pson.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum dev_state { DEV_IDLE, DEV_CONNECTING, DEV_AUTH, DEV_READY, DEV_DEAD };

struct dev {
    int fd;
    enum dev_state state;
    uint16_t sid;
    struct gw_iotmp_reader reader;
    uint8_t small[512];
    uint8_t *big;
    uint8_t out[1024]; /* bytes not yet written */
    size_t out_len;
    uint64_t runs;
};

struct opts {
    const char *host;
    int port, http_port;
    const char *user, *prefix, *password;
    int n, inflight, calls, broker_pid;
};

static struct opts o = {.host = "127.0.0.1", .port = 25204, .http_port = 25280, .user = "bench",
                        .prefix = "dev", .password = "pw", .n = 1000, .inflight = 200,
                        .calls = 2000, .broker_pid = 0};

static struct {
    int connect_failed, refused, closed, protocol, connected;
    uint64_t ka_echoes, runs;
} stats;

static atomic_bool http_done;
static int http_connects; /* written by the HTTP thread only, read after the join */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static long rss_kb(int pid)
{
    if (pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void percentiles(double *v, int n, double *p50, double *p99)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *p50 = n ? v[n / 2] : 0;
    *p99 = n ? v[(int)((n - 1) * 0.99)] : 0;
}

static struct sockaddr_in addr_of(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, o.host, &a.sin_addr);
    return a;
}

/* --- Baseline: loopback TCP echo --- */

static void *echo_server(void *arg)
{
    int ls = *(int *)arg;
    int c = accept(ls, NULL, NULL);
    if (c < 0)
        return NULL;
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[256];
    for (;;) {
        ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        if (send(c, buf, (size_t)n, MSG_NOSIGNAL) != n)
            break;
    }
    close(c);
    return NULL;
}

static void baseline(int rounds)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 1) < 0 ||
        getsockname(ls, (struct sockaddr *)&a, &al) < 0) {
        perror("baseline: listen");
        return;
    }
    pthread_t th;
    pthread_create(&th, NULL, echo_server, &ls);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c, (struct sockaddr *)&a, sizeof a) < 0) {
        perror("baseline: connect");
        close(c);
        close(ls);
        return;
    }
    double *t = calloc((size_t)rounds, sizeof *t);
    char msg[64] = "GET /v3/users/u/devices/d/resources/ping HTTP/1.1 (64 bytes).";
    int done = 0;
    for (int i = 0; i < rounds; i++) {
        double t0 = now_s();
        if (send(c, msg, sizeof msg, 0) != (ssize_t)sizeof msg)
            break;
        size_t got = 0;
        while (got < sizeof msg) {
            ssize_t n = recv(c, msg + got, sizeof msg - got, 0);
            if (n <= 0)
                goto out;
            got += (size_t)n;
        }
        t[done++] = (now_s() - t0) * 1e6;
    }
out:
    close(c);
    pthread_join(th, NULL);
    close(ls);
    double p50, p99;
    percentiles(t, done, &p50, &p99);
    printf("baseline: loopback TCP 64-byte echo round trip, %d rounds: p50 %.1f us, p99 %.1f us\n",
           done, p50, p99);
    free(t);
}

/* --- Simulated devices --- */

static int dev_flush(struct dev *d, int ep)
{
    while (d->out_len) {
        ssize_t n = send(d->fd, d->out, d->out_len, MSG_NOSIGNAL);
        if (n > 0) {
            memmove(d->out, d->out + n, d->out_len - (size_t)n);
            d->out_len -= (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = d};
            epoll_ctl(ep, EPOLL_CTL_MOD, d->fd, &ev);
            return 0;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return -1;
    }
    return 0;
}

static int dev_queue(struct dev *d, const uint8_t *p, size_t len)
{
    if (d->out_len + len > sizeof d->out)
        return -1;
    memcpy(d->out + d->out_len, p, len);
    d->out_len += len;
    return 0;
}

static void dev_kill(struct dev *d, int ep, int *counter)
{
    if (d->state == DEV_DEAD)
        return;
    if (counter)
        (*counter)++;
    if (d->state == DEV_READY)
        stats.connected--;
    epoll_ctl(ep, EPOLL_CTL_DEL, d->fd, NULL);
    close(d->fd);
    d->fd = -1;
    d->state = DEV_DEAD;
    free(d->big);
    d->big = NULL;
}

static void dev_send_connect(struct dev *d, int idx)
{
    char name[64];
    snprintf(name, sizeof name, "%s%d", o.prefix, idx);
    uint8_t buf[512];
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, buf, sizeof buf, GW_IOTMP_CONNECT);
    d->sid = (uint16_t)(idx + 1);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, d->sid);
    struct gw_pson_writer *pw = gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD);
    gw_pson_put_array(pw, 3);
    gw_pson_put_cstr(pw, o.user);
    gw_pson_put_cstr(pw, name);
    gw_pson_put_cstr(pw, o.password);
    const uint8_t *frame;
    size_t len;
    if (gw_iotmp_finish(&w, &frame, &len) == 0)
        dev_queue(d, frame, len);
}

static void dev_answer_run(struct dev *d, const struct gw_iotmp_frame *f)
{
    uint16_t sid = 0;
    gw_iotmp_get_stream_id(f, &sid);
    stats.runs++;
    d->runs++;
    if (sid == 0)
        return;
    uint8_t buf[128];
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, buf, sizeof buf, GW_IOTMP_OK);
    gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, sid);
    gw_pson_put_uint(gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD), d->runs);
    const uint8_t *frame;
    size_t len;
    if (gw_iotmp_finish(&w, &frame, &len) == 0)
        dev_queue(d, frame, len);
}

static void dev_input(struct dev *d, int ep)
{
    uint8_t buf[4096];
    for (;;) {
        ssize_t n = recv(d->fd, buf, sizeof buf, 0);
        if (n == 0) {
            dev_kill(d, ep, &stats.closed);
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                dev_kill(d, ep, &stats.closed);
            break;
        }
        size_t pos = 0;
        while (pos < (size_t)n) {
            size_t used = 0, blen = 0;
            uint64_t type;
            const uint8_t *body;
            int rc = gw_iotmp_feed(&d->reader, buf + pos, (size_t)n - pos, &used, &type, &body,
                                   &blen);
            pos += used;
            if (rc == GW_ENOBUFS) {
                size_t need = gw_iotmp_reader_need(&d->reader);
                d->big = realloc(d->big, need);
                gw_iotmp_reader_set_buffer(&d->reader, d->big, need);
                continue;
            }
            if (rc < 0) {
                dev_kill(d, ep, &stats.protocol);
                return;
            }
            if (rc == 0)
                break;
            struct gw_iotmp_frame f;
            if (gw_iotmp_parse(&f, type, body, blen) < 0) {
                dev_kill(d, ep, &stats.protocol);
                return;
            }
            if (d->state == DEV_AUTH) {
                if (type == GW_IOTMP_OK) {
                    d->state = DEV_READY;
                    stats.connected++;
                    static const uint8_t ka[2] = {GW_IOTMP_KEEP_ALIVE, 0};
                    dev_queue(d, ka, sizeof ka);
                } else {
                    dev_kill(d, ep, &stats.refused);
                    return;
                }
            } else if (type == GW_IOTMP_RUN) {
                dev_answer_run(d, &f);
            } else if (type == GW_IOTMP_KEEP_ALIVE) {
                stats.ka_echoes++;
            }
        }
    }
    if (d->state != DEV_DEAD && dev_flush(d, ep) < 0)
        dev_kill(d, ep, &stats.closed);
}

static int dev_start(struct dev *d, int idx, int ep)
{
    (void)idx;
    d->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (d->fd < 0) {
        d->state = DEV_DEAD;
        stats.connect_failed++;
        return -1;
    }
    int one = 1;
    setsockopt(d->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    gw_iotmp_reader_init(&d->reader, d->small, sizeof d->small, GW_IOTMP_MAX_FRAME_DEFAULT);
    struct sockaddr_in a = addr_of(o.port);
    if (connect(d->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        close(d->fd);
        d->fd = -1;
        d->state = DEV_DEAD;
        stats.connect_failed++;
        return -1;
    }
    d->state = DEV_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = d};
    epoll_ctl(ep, EPOLL_CTL_ADD, d->fd, &ev);
    return 0;
}

static void dev_event(struct dev *devs, struct dev *d, uint32_t events, int ep)
{
    if (d->state == DEV_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            dev_kill(d, ep, &stats.connect_failed);
            return;
        }
        d->state = DEV_AUTH;
        dev_send_connect(d, (int)(d - devs));
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = d};
        epoll_ctl(ep, EPOLL_CTL_MOD, d->fd, &ev);
        if (dev_flush(d, ep) < 0)
            dev_kill(d, ep, &stats.closed);
        return;
    }
    if (events & EPOLLOUT) {
        if (dev_flush(d, ep) < 0) {
            dev_kill(d, ep, &stats.closed);
            return;
        }
        if (d->out_len == 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = d};
            epoll_ctl(ep, EPOLL_CTL_MOD, d->fd, &ev);
        }
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        dev_input(d, ep);
}

/* --- REST client (second thread) --- */

struct http_result {
    double *t;
    int done, errors;
    int last_status;
};

static int http_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = {.tv_sec = 15};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = addr_of(o.http_port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One GET on a keep-alive connection; returns the status, -1 on error (*fd closed then). */
static int http_get(int *fd, const char *path)
{
    if (*fd < 0) {
        if ((*fd = http_connect()) < 0)
            return -1;
        http_connects++;
    }
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path, o.host,
                     o.http_port);
    if (send(*fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto fail;
    char buf[8192];
    size_t len = 0;
    char *hend = NULL;
    while (!hend) {
        if (len >= sizeof buf - 1)
            goto fail;
        ssize_t r = recv(*fd, buf + len, sizeof buf - 1 - len, 0);
        if (r <= 0)
            goto fail;
        len += (size_t)r;
        buf[len] = '\0';
        hend = strstr(buf, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
        goto fail;
    size_t head = (size_t)(hend - buf) + 4;
    bool close_after = strcasestr(buf, "\r\nConnection: close") != NULL;
    char *cl = strcasestr(buf, "\r\nContent-Length:");
    if (cl && cl < hend) {
        size_t want = strtoul(cl + 17, NULL, 10);
        size_t have = len - head;
        while (have < want) {
            ssize_t r = recv(*fd, buf, sizeof buf, 0);
            if (r <= 0)
                goto fail;
            have += (size_t)r;
        }
    } else if (strcasestr(buf, "\r\nTransfer-Encoding: chunked") != NULL) {
        /* Read until the terminating chunk "0\r\n\r\n" shows up. */
        char tail[8] = "";
        size_t body = len - head;
        memcpy(tail, buf + len - (body < 7 ? body : 7), body < 7 ? body : 7);
        tail[body < 7 ? body : 7] = '\0';
        while (!strstr(tail, "0\r\n\r\n")) {
            ssize_t r = recv(*fd, buf, sizeof buf - 1, 0);
            if (r <= 0)
                goto fail;
            size_t k = (size_t)r < 7 ? (size_t)r : 7;
            size_t keep = strlen(tail);
            if (keep + k > 7) {
                memmove(tail, tail + (keep + k - 7), 7 - k);
                keep = 7 - k;
            }
            memcpy(tail + keep, buf + r - (ssize_t)k, k);
            tail[keep + k] = '\0';
        }
    } else {
        close_after = true; /* body delimited by close */
        while (recv(*fd, buf, sizeof buf, 0) > 0)
            ;
    }
    if (close_after) {
        close(*fd);
        *fd = -1;
    }
    return status;
fail:
    close(*fd);
    *fd = -1;
    return -1;
}

static void *http_thread(void *arg)
{
    struct http_result *r = arg;
    char path[256];
    snprintf(path, sizeof path, "/v3/users/%s/devices/%s0/resources/ping", o.user, o.prefix);
    int fd = -1;
    for (int i = 0; i < o.calls; i++) {
        double t0 = now_s();
        int st = http_get(&fd, path);
        double us = (now_s() - t0) * 1e6;
        r->last_status = st;
        if (st == 200)
            r->t[r->done++] = us;
        else
            r->errors++;
    }
    if (fd >= 0)
        close(fd);
    atomic_store(&http_done, true);
    return NULL;
}

/* --- Main --- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_broker_load [--host H] [--port TCP] [--http-port P] [--user U]\n"
            "         [--prefix dev] [--password pw] [-n 1000] [--inflight 200] [--calls 2000]\n"
            "         [--broker-pid PID]\n"
            "Devices are named PREFIX0..PREFIX(N-1), all with the same password; the broker's\n"
            "credentials file must list them (run.sh writes one).\n");
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", required_argument, NULL, 'H'},     {"port", required_argument, NULL, 'p'},
        {"http-port", required_argument, NULL, 'h'}, {"user", required_argument, NULL, 'u'},
        {"prefix", required_argument, NULL, 'x'},   {"password", required_argument, NULL, 'w'},
        {"inflight", required_argument, NULL, 'i'}, {"calls", required_argument, NULL, 'c'},
        {"broker-pid", required_argument, NULL, 'b'}, {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "n:", lo, NULL)) != -1) {
        switch (opt) {
        case 'H': o.host = optarg; break;
        case 'p': o.port = atoi(optarg); break;
        case 'h': o.http_port = atoi(optarg); break;
        case 'u': o.user = optarg; break;
        case 'x': o.prefix = optarg; break;
        case 'w': o.password = optarg; break;
        case 'n': o.n = atoi(optarg); break;
        case 'i': o.inflight = atoi(optarg); break;
        case 'c': o.calls = atoi(optarg); break;
        case 'b': o.broker_pid = atoi(optarg); break;
        default: usage(); return 1;
        }
    }
    if (o.n <= 0 || o.inflight <= 0 || o.calls < 0 || o.port <= 0 || o.http_port <= 0) {
        usage();
        return 1;
    }

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = (rlim_t)o.n + 64;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        if (rl.rlim_cur < want && rl.rlim_max != RLIM_INFINITY) {
            rl.rlim_max = want; /* root may raise the hard limit */
            rl.rlim_cur = want;
        }
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            fprintf(stderr, "warning: cannot raise RLIMIT_NOFILE to %llu: %s\n",
                    (unsigned long long)want, strerror(errno));
    }

    baseline(5000);

    long rss0 = rss_kb(o.broker_pid);
    struct dev *devs = calloc((size_t)o.n, sizeof *devs);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int started = 0;
    double t0 = now_s();
    struct epoll_event evs[256];
    double deadline = t0 + 60;
    for (;;) {
        int pending = 0;
        for (int i = 0; i < started; i++)
            pending += devs[i].state == DEV_CONNECTING || devs[i].state == DEV_AUTH;
        while (started < o.n && pending < o.inflight) {
            dev_start(&devs[started], started, ep);
            started++;
            pending++;
        }
        if (started == o.n && pending == 0)
            break;
        if (now_s() > deadline) {
            fprintf(stderr, "connect phase: gave up after 60 s with %d pending\n", pending);
            break;
        }
        int n = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < n; i++)
            dev_event(devs, evs[i].data.ptr, evs[i].events, ep);
    }
    double t_connect = now_s() - t0;
    int ok = stats.connected;
    long rss1 = rss_kb(o.broker_pid);
    printf("connect: %d of %d devices authenticated in %.3f s = %.0f devices/s "
           "(%d in flight at most)\n", ok, o.n, t_connect, t_connect > 0 ? ok / t_connect : 0,
           o.inflight);
    printf("errors: connect failed %d, CONNECT refused %d, closed by broker %d, protocol %d\n",
           stats.connect_failed, stats.refused, stats.closed, stats.protocol);

    /* REST RUN round trips on dev0 while this thread keeps every device answering. */
    struct http_result hr = {.t = calloc((size_t)o.calls + 1, sizeof(double))};
    pthread_t th;
    double t1 = now_s();
    atomic_store(&http_done, o.calls == 0 || devs[0].state != DEV_READY);
    bool th_started = !atomic_load(&http_done);
    if (th_started)
        pthread_create(&th, NULL, http_thread, &hr);
    else if (o.calls)
        fprintf(stderr, "REST phase skipped: %s0 is not connected\n", o.prefix);
    while (!atomic_load(&http_done)) {
        int n = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < n; i++)
            dev_event(devs, evs[i].data.ptr, evs[i].events, ep);
    }
    if (th_started)
        pthread_join(th, NULL);
    double t_rest = now_s() - t1;
    /* A short drain so the keep-alive echoes of the last devices are counted. */
    double drain = now_s() + 0.5;
    while (now_s() < drain) {
        int n = epoll_wait(ep, evs, 256, 50);
        for (int i = 0; i < n; i++)
            dev_event(devs, evs[i].data.ptr, evs[i].events, ep);
    }
    long rss2 = rss_kb(o.broker_pid);
    if (hr.done > 0) {
        double p50, p99;
        percentiles(hr.t, hr.done, &p50, &p99);
        printf("REST RUN (HTTP GET .../%s0/resources/ping, keep-alive, sequential): %d ok, "
               "%d failed in %.2f s over %d TCP connection(s): p50 %.1f us, p99 %.1f us\n",
               o.prefix, hr.done, hr.errors, t_rest, http_connects, p50, p99);
    } else if (o.calls) {
        printf("REST RUN: no successful call (%d failed, last status %d)\n", hr.errors,
               hr.last_status);
    }
    printf("keep-alive echoes received: %llu of %d sent\n", (unsigned long long)stats.ka_echoes,
           ok);
    printf("still connected at the end: %d\n", stats.connected);
    if (o.broker_pid > 0)
        printf("broker RSS (pid %d): %ld kB before, %ld kB with %d devices, %ld kB after REST "
               "(%.1f kB per device)\n", o.broker_pid, rss0, rss1, ok, rss2,
               ok > 0 && rss0 >= 0 && rss1 >= 0 ? (double)(rss1 - rss0) / ok : 0.0);
    for (int i = 0; i < o.n; i++)
        if (devs[i].state != DEV_DEAD && devs[i].fd >= 0) {
            close(devs[i].fd);
            free(devs[i].big);
        }
    free(devs);
    free(hr.t);
    close(ep);
    return 0;
}
