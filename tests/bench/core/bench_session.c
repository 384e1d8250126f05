/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_session: RUN round trips through the test broker to a no-op resource of the real uplink
 * session (gw_core), beside a raw loopback TCP round trip measured in the same run.
 *
 *   client (this program, K keep-alive HTTP connections) --REST GET--> iotmp-broker --RUN-->
 *   gateway session (this program, loop thread) --OK--> broker --HTTP 200--> client
 *
 * Sweeps the number of calls in flight (1, 2, 4, ... 256: one keep-alive HTTP connection per call
 * in flight, each sending its next request when its answer is in). At each level it prints
 * p50/p99/p99.9 round trip and calls/s, the gateway-side processing time per call (the session's
 * own busy time: parsing, dispatch, answer encoding and writing, excluding loop waits), and beside
 * it the floor at the same concurrency: 64-byte echo round trips over as many loopback TCP
 * connections to one echo thread (the same shape: one client thread, one server thread, no
 * protocol work). No assertions: figures only.
 * With GW_BENCH_DATA set to a directory, also writes session_rtt.tsv there.
 *
 *   bench_session [SECONDS_PER_PHASE (default 3)] [--quick] [--max-inflight N (default 256)]
 * --quick is 0.4 s per phase.
 */
#include "bench_tsv.h"
#include "gw/error.h"
#include "gw/log.h"
#include "gw/loop.h"
#include "gw/registry.h"
#include "gw/session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef GW_BROKER_BIN
#error "GW_BROKER_BIN must name the iotmp-broker binary"
#endif

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t pct(uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

/* --- The gateway (loop thread) --- */

static struct gw_loop *loop;
static struct gw_registry *reg;
static struct gw_session *sess;
static atomic_int ready;

static int run_noop(void *ctx, struct gw_call *call)
{
    (void)ctx;
    gw_call_reply(call, NULL);
    return 0;
}

static void on_state(void *arg, enum gw_session_state st, int reason)
{
    (void)arg;
    (void)reason;
    atomic_store(&ready, st == GW_SESSION_READY);
}

static void *gw_thread(void *arg)
{
    (void)arg;
    gw_loop_run(loop);
    return NULL;
}

static void stop_task(void *arg)
{
    (void)arg;
    gw_session_stop(sess);
    gw_loop_stop(loop);
}

static struct gw_session_stats stats_copy;
static atomic_int stats_done;

static void stats_task(void *arg)
{
    (void)arg;
    gw_session_get_stats(sess, &stats_copy);
    atomic_store(&stats_done, 1);
}

static void get_stats(struct gw_session_stats *out)
{
    atomic_store(&stats_done, 0);
    gw_loop_post(loop, stats_task, NULL);
    while (!atomic_load(&stats_done))
        usleep(1000);
    *out = stats_copy;
}

/* --- Broker process --- */

static pid_t broker_pid;
static unsigned tcp_port, http_port;
static char tmpdir[64];

static int start_broker(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/bench-session.XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    char cred[128], db[128];
    snprintf(cred, sizeof(cred), "%s/credentials", tmpdir);
    snprintf(db, sizeof(db), "%s/broker.db", tmpdir);
    FILE *f = fopen(cred, "w");
    if (!f)
        return -1;
    fprintf(f, "u1 d1 pw1\n");
    fclose(f);
    int pfd[2];
    if (pipe(pfd) < 0)
        return -1;
    broker_pid = fork();
    if (broker_pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        int devnull = open("/dev/null", 1);
        if (devnull >= 0)
            dup2(devnull, 2);
        execl(GW_BROKER_BIN, GW_BROKER_BIN, "--bind", "127.0.0.1", "--tcp-port", "0",
              "--tls-port", "-1", "--http-port", "0", "--credentials", cred, "--db", db,
              "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    char line[256];
    size_t n = 0;
    while (n < sizeof(line) - 1) {
        if (read(pfd[0], line + n, 1) != 1)
            break;
        if (line[n++] == '\n')
            break;
    }
    line[n] = '\0';
    close(pfd[0]);
    if (sscanf(line, "iotmp-broker ready tcp=%u tls=%*u http=%u", &tcp_port, &http_port) != 2) {
        fprintf(stderr, "broker did not start: \"%s\"\n", line);
        return -1;
    }
    return 0;
}

/* --- HTTP clients (main thread, poll) --- */

struct client {
    int fd;
    uint64_t sent_at;
    char buf[4096];
    size_t have;
};

static int tcp_connect(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static const char req[] = "GET /v3/users/u1/devices/d1/resources/noop HTTP/1.1\r\n"
                          "Host: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n";

static int send_req(struct client *c)
{
    if (c->fd < 0)
        c->fd = tcp_connect(http_port);
    if (c->fd < 0)
        return -1;
    c->sent_at = now_ns();
    c->have = 0;
    return send(c->fd, req, sizeof(req) - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof(req) - 1) ? 0 : -1;
}

/* 1 when a whole response is in; 0 for more; -1 on close/error; *status set. */
static int parse_resp(struct client *c, int *status)
{
    c->buf[c->have] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end)
        return 0;
    *status = atoi(c->buf + 9);
    const char *cl = strcasestr(c->buf, "content-length:");
    size_t body = cl && cl < end ? (size_t)atol(cl + 15) : 0;
    size_t need = (size_t)(end + 4 - c->buf) + body;
    return c->have >= need ? 1 : 0;
}

struct phase {
    uint64_t *lat;
    size_t n, cap;
    unsigned errors;
    double secs;
};

static void run_phase(unsigned inflight, double secs, struct phase *ph)
{
    struct client *cl = calloc(inflight, sizeof(*cl));
    struct pollfd *pf = calloc(inflight, sizeof(*pf));
    ph->cap = 1 << 20;
    ph->lat = malloc(ph->cap * sizeof(uint64_t));
    ph->n = 0;
    ph->errors = 0;
    for (unsigned i = 0; i < inflight; i++) {
        cl[i].fd = -1;
        send_req(&cl[i]);
    }
    uint64_t start = now_ns(), stop = start + (uint64_t)(secs * 1e9);
    while (now_ns() < stop) {
        for (unsigned i = 0; i < inflight; i++)
            pf[i] = (struct pollfd){.fd = cl[i].fd, .events = POLLIN};
        if (poll(pf, inflight, 100) <= 0)
            continue;
        for (unsigned i = 0; i < inflight; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            struct client *c = &cl[i];
            ssize_t r = recv(c->fd, c->buf + c->have, sizeof(c->buf) - 1 - c->have, 0);
            int status = 0, done = r > 0 ? (c->have += (size_t)r, parse_resp(c, &status)) : -1;
            if (done == 0)
                continue;
            if (done == 1 && status == 200 && ph->n < ph->cap)
                ph->lat[ph->n++] = now_ns() - c->sent_at;
            else
                ph->errors++;
            if (done < 0) {
                close(c->fd);
                c->fd = -1;
            }
            send_req(c);
        }
    }
    ph->secs = (double)(now_ns() - start) / 1e9;
    for (unsigned i = 0; i < inflight; i++)
        if (cl[i].fd >= 0)
            close(cl[i].fd);
    free(cl);
    free(pf);
    qsort(ph->lat, ph->n, sizeof(uint64_t), cmp_u64);
}

/* --- Floor: raw loopback TCP echo with K round trips in flight --- */

#define ECHO_LEN 64

static int echo_listen_fd;
static atomic_int echo_stop;

/* One thread, epoll: accepts any number of connections and echoes what each sends. */
static void *echo_thread(void *arg)
{
    (void)arg;
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = echo_listen_fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, echo_listen_fd, &ev);
    struct epoll_event evs[64];
    char b[4096];
    while (!atomic_load(&echo_stop)) {
        int n = epoll_wait(ep, evs, 64, 100);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == echo_listen_fd) {
                int c = accept(echo_listen_fd, NULL, NULL);
                if (c < 0)
                    continue;
                int one = 1;
                setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                continue;
            }
            ssize_t r = recv(fd, b, sizeof(b), 0);
            if (r <= 0 || send(fd, b, (size_t)r, MSG_NOSIGNAL) != r) {
                epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                close(fd);
            }
        }
    }
    close(ep);
    return NULL;
}

struct echo_client {
    int fd;
    uint64_t sent_at;
    size_t got;
};

static void run_floor(unsigned port, unsigned inflight, double secs, struct phase *ph)
{
    struct echo_client *cl = calloc(inflight, sizeof(*cl));
    struct pollfd *pf = calloc(inflight, sizeof(*pf));
    ph->cap = 1 << 22;
    ph->lat = malloc(ph->cap * sizeof(uint64_t));
    ph->n = 0;
    ph->errors = 0;
    char b[ECHO_LEN] = {0};
    for (unsigned i = 0; i < inflight; i++) {
        cl[i].fd = tcp_connect(port);
        if (cl[i].fd < 0) {
            ph->errors++;
            continue;
        }
        cl[i].sent_at = now_ns();
        if (send(cl[i].fd, b, sizeof(b), MSG_NOSIGNAL) != (ssize_t)sizeof(b))
            ph->errors++;
    }
    uint64_t start = now_ns(), stop = start + (uint64_t)(secs * 1e9);
    while (now_ns() < stop) {
        for (unsigned i = 0; i < inflight; i++)
            pf[i] = (struct pollfd){.fd = cl[i].fd, .events = POLLIN};
        if (poll(pf, inflight, 100) <= 0)
            continue;
        for (unsigned i = 0; i < inflight; i++) {
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            struct echo_client *c = &cl[i];
            char in[ECHO_LEN];
            ssize_t r = recv(c->fd, in, sizeof(in) - c->got, 0);
            if (r <= 0) {
                ph->errors++;
                close(c->fd);
                c->fd = -1;
                continue;
            }
            c->got += (size_t)r;
            if (c->got < ECHO_LEN)
                continue;
            uint64_t t = now_ns();
            if (ph->n < ph->cap)
                ph->lat[ph->n++] = t - c->sent_at;
            c->got = 0;
            c->sent_at = now_ns();
            if (send(c->fd, b, sizeof(b), MSG_NOSIGNAL) != (ssize_t)sizeof(b))
                ph->errors++;
        }
    }
    ph->secs = (double)(now_ns() - start) / 1e9;
    for (unsigned i = 0; i < inflight; i++)
        if (cl[i].fd >= 0)
            close(cl[i].fd);
    free(cl);
    free(pf);
    qsort(ph->lat, ph->n, sizeof(uint64_t), cmp_u64);
}

int main(int argc, char **argv)
{
    double secs = 3.0;
    unsigned max_inflight = 256;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            secs = 0.4;
        else if (strcmp(argv[i], "--max-inflight") == 0 && i + 1 < argc)
            max_inflight = (unsigned)atoi(argv[++i]);
        else if (atof(argv[i]) > 0)
            secs = atof(argv[i]);
        else {
            fprintf(stderr, "usage: %s [SECONDS_PER_PHASE] [--quick] [--max-inflight N]\n",
                    argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    gw_log_set_level(GW_LOG_WARN);
    if (start_broker() < 0)
        return 1;
    if (gw_loop_new(&loop) < 0 || gw_registry_new(loop, &reg) < 0)
        return 1;
    struct gw_resource_desc d = {.name = "noop", .fn = GW_FN_RUN, .run = run_noop};
    gw_registry_add(reg, &d, NULL);
    char url[64];
    snprintf(url, sizeof(url), "iotmp://127.0.0.1:%u", tcp_port);
    struct gw_session_config cfg = {.url = url, .user = "u1", .device = "d1", .password = "pw1"};
    if (gw_session_new(loop, reg, &cfg, &sess) < 0)
        return 1;
    gw_session_on_state(sess, on_state, NULL);
    gw_session_start(sess);
    pthread_t th;
    pthread_create(&th, NULL, gw_thread, NULL);
    for (int i = 0; i < 500 && !atomic_load(&ready); i++)
        usleep(10000);
    if (!atomic_load(&ready)) {
        fprintf(stderr, "the session did not become ready\n");
        return 1;
    }
    usleep(200000);

    /* The floor's echo thread lives for the whole sweep. */
    echo_listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in ea = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t el = sizeof(ea);
    if (bind(echo_listen_fd, (struct sockaddr *)&ea, sizeof(ea)) < 0 ||
        listen(echo_listen_fd, 512) < 0 ||
        getsockname(echo_listen_fd, (struct sockaddr *)&ea, &el) < 0) {
        perror("bench_session: echo floor socket");
        return 1;
    }
    pthread_t eth;
    pthread_create(&eth, NULL, echo_thread, NULL);
    unsigned echo_port = ntohs(ea.sin_port);

    FILE *tsv = gw_bench_tsv_open("bench_session", "session_rtt.tsv",
                         "inflight\tcalls_per_s\tp50_us\tp99_us\tp999_us\terrors\t"
                         "gw_us_per_call\tfloor_rt_per_s\tfloor_p50_us\tfloor_p99_us\t"
                         "floor_p999_us");
    printf("RUN via the broker's REST API to a no-op resource vs the floor (64-byte loopback TCP "
           "echo, same number in flight), %.1f s per phase\n", secs);
    printf("%8s | %9s %9s %9s %9s %6s %8s | %9s %9s %9s %9s | %6s\n", "inflight", "calls/s",
           "p50 us", "p99 us", "p99.9 us", "errors", "gw us", "floor rt/s", "p50 us", "p99 us",
           "p99.9 us", "x p50");
    unsigned total_calls = 0;
    for (unsigned k = 1; k <= max_inflight; k *= 2) {
        struct phase fl;
        run_floor(echo_port, k, secs, &fl);
        struct gw_session_stats a, b;
        get_stats(&a);
        struct phase ph;
        run_phase(k, secs, &ph);
        get_stats(&b);
        uint64_t calls = b.calls_in - a.calls_in;
        double gw_us = calls ? (double)(b.busy_ns - a.busy_ns) / (double)calls / 1e3 : 0.0;
        double p50 = (double)pct(ph.lat, ph.n, 0.5) / 1e3, p99 = (double)pct(ph.lat, ph.n, 0.99) / 1e3,
               p999 = (double)pct(ph.lat, ph.n, 0.999) / 1e3;
        double f50 = (double)pct(fl.lat, fl.n, 0.5) / 1e3, f99 = (double)pct(fl.lat, fl.n, 0.99) / 1e3,
               f999 = (double)pct(fl.lat, fl.n, 0.999) / 1e3;
        printf("%8u | %9.0f %9.1f %9.1f %9.1f %6u %8.2f | %9.0f %9.1f %9.1f %9.1f | %6.1f\n", k,
               (double)ph.n / ph.secs, p50, p99, p999, ph.errors, gw_us, (double)fl.n / fl.secs, f50,
               f99, f999, f50 > 0 ? p50 / f50 : 0.0);
        fflush(stdout);
        if (tsv)
            fprintf(tsv, "%u\t%.0f\t%.1f\t%.1f\t%.1f\t%u\t%.2f\t%.0f\t%.1f\t%.1f\t%.1f\n", k,
                    (double)ph.n / ph.secs, p50, p99, p999, ph.errors, gw_us,
                    (double)fl.n / fl.secs, f50, f99, f999);
        total_calls += (unsigned)ph.n;
        free(ph.lat);
        free(fl.lat);
    }
    if (tsv)
        fclose(tsv);
    printf("targets: gateway-side processing < 20 us per call; p99 < 1 ms with 1 in flight\n");
    atomic_store(&echo_stop, 1);
    pthread_join(eth, NULL);
    close(echo_listen_fd);

    gw_loop_post(loop, stop_task, NULL);
    pthread_join(th, NULL);
    gw_session_free(sess);
    gw_registry_free(reg);
    gw_loop_free(loop);
    kill(broker_pid, SIGTERM);
    waitpid(broker_pid, NULL, 0);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return total_calls ? 0 : 1;
}
