/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark of the Modbus adapter as the daemon runs it (worker thread, planner, decoding, registry
 * publishing on a real gw_loop) against a fast local libmodbus TCP server in a thread of this
 * process: 100 devices (unit ids 1..100) x 125 holding registers, all polled flat out
 * (interval 1 ms; publishing every value, then only changes), then paced at 20 ms (5000
 * requests/s, 625,000 points/s) to show the CPU cost of the target rate. In the same run, the raw
 * rate of a plain libmodbus client doing the same 125-register reads back to back is measured
 * before and after each gateway phase, and the ratio to their mean printed.
 * Gateway CPU is process CPU minus the server thread's own CPU (CLOCK_THREAD_CPUTIME_ID); RSS is
 * VmRSS. Prints figures only; no assertions.
 *     bench_modbus_adapter [seconds per phase (3)]
 */
#include "modbus_adapter.h"

#include "gw/error.h"
#include "gw/loop.h"
#include "gw/registry.h"
#include "gw/value.h"

#include <errno.h>
#include <modbus.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#define NDEV 100
#define NREG 125

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_process(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/* --- Load server: accepts one client after the other --- */

static modbus_t *srv_ctx;
static modbus_mapping_t *srv_map;
static int srv_fd;
static _Atomic double srv_cpu; /* the server thread's CPU seconds, updated per request batch */

static void *serve(void *arg)
{
    (void)arg;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    for (;;) {
        int fd = modbus_tcp_accept(srv_ctx, &srv_fd);
        if (fd < 0)
            return NULL;
        unsigned n = 0;
        for (;;) {
            int len = modbus_receive(srv_ctx, query);
            if (len > 0)
                modbus_reply(srv_ctx, query, len, srv_map);
            else if (len < 0)
                break;
            if ((++n & 255) == 0) {
                struct timespec ts;
                clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
                srv_cpu = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
            }
        }
        modbus_close(srv_ctx);
    }
}

static int server_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        return -1;
    return ntohs(sa.sin_port);
}

/* --- Raw libmodbus --- */

static double raw_rate(int port, double secs)
{
    modbus_t *mb = modbus_new_tcp("127.0.0.1", port);
    if (!mb || modbus_connect(mb) != 0) {
        fprintf(stderr, "raw client: %s\n", modbus_strerror(errno));
        exit(1);
    }
    uint16_t regs[NREG];
    long n = 0, errors = 0;
    double t0 = now();
    while (now() - t0 < secs) {
        for (int u = 1; u <= NDEV; u++) {
            modbus_set_slave(mb, u);
            errors += modbus_read_registers(mb, 0, NREG, regs) != NREG;
            n++;
        }
    }
    double rate = (double)n / (now() - t0);
    modbus_close(mb);
    modbus_free(mb);
    if (errors)
        printf("raw: %ld errors\n", errors);
    return rate;
}

/* --- Gateway --- */

static void host_log(const struct gw_host *h, int level, const char *fmt, ...)
{
    (void)h;
    if (level > 5)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void host_config_error(const struct gw_host *h, const char *ptr, const char *fmt, ...)
{
    (void)h;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "config %s: ", ptr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static struct gw_loop *loop;
static struct gw_registry *reg;
static atomic_long publishes;

static void stop_cb(void *arg)
{
    (void)arg;
    gw_loop_stop(loop);
}

static void on_pub(void *arg, struct gw_res *res, const struct gw_value *v)
{
    (void)arg;
    (void)res;
    if (v)
        publishes++;
}

struct stats_res {
    bool done;
    double requests;
};

static void stats_done(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    struct stats_res *s = arg;
    (void)msg;
    s->done = true;
    double d = 0;
    if (rc == 0 && out)
        gw_value_to_double(gw_value_map_get(out, "requests"), &d);
    s->requests = d;
    gw_loop_stop(loop);
}

static double gw_requests(void)
{
    struct stats_res s = {0};
    struct gw_res *r = gw_registry_find(reg, "bench/_stats/load", 17);
    gw_registry_call(reg, r, NULL, NULL, stats_done, &s);
    while (!s.done)
        gw_loop_run(loop);
    return s.requests;
}

static void run_for(double secs)
{
    struct gw_timer *t = gw_timer_new(loop, stop_cb, NULL);
    gw_timer_start(t, (uint64_t)(secs * 1000));
    gw_loop_run(loop);
    gw_timer_free(t);
}

static struct gw_value config(int port, bool on_change, unsigned interval)
{
    struct gw_value cfg = gw_value_map();
    *gw_value_map_set(&cfg, "type", 4) = gw_value_cstr("modbus");
    *gw_value_map_set(&cfg, "name", 4) = gw_value_cstr("bench");
    *gw_value_map_set(&cfg, "interval_ms", 11) = gw_value_uint(interval);
    struct gw_value *conns = gw_value_map_set(&cfg, "connections", 11);
    *conns = gw_value_array();
    struct gw_value *c = gw_value_array_add(conns);
    *c = gw_value_map();
    *gw_value_map_set(c, "name", 4) = gw_value_cstr("load");
    struct gw_value *tcp = gw_value_map_set(c, "tcp", 3);
    *tcp = gw_value_map();
    *gw_value_map_set(tcp, "host", 4) = gw_value_cstr("127.0.0.1");
    *gw_value_map_set(tcp, "port", 4) = gw_value_uint((uint64_t)port);
    struct gw_value *devs = gw_value_map_set(c, "devices", 7);
    *devs = gw_value_array();
    char name[32];
    for (int u = 1; u <= NDEV; u++) {
        struct gw_value *d = gw_value_array_add(devs);
        *d = gw_value_map();
        snprintf(name, sizeof name, "dev%d", u);
        *gw_value_map_set(d, "name", 4) = gw_value_cstr(name);
        *gw_value_map_set(d, "unit", 4) = gw_value_uint((uint64_t)u);
        struct gw_value *pts = gw_value_map_set(d, "points", 6);
        *pts = gw_value_array();
        for (int i = 0; i < NREG; i++) {
            struct gw_value *p = gw_value_array_add(pts);
            *p = gw_value_map();
            snprintf(name, sizeof name, "d%dr%d", u, i);
            *gw_value_map_set(p, "name", 4) = gw_value_cstr(name);
            *gw_value_map_set(p, "table", 5) = gw_value_cstr("holding");
            *gw_value_map_set(p, "address", 7) = gw_value_uint((uint64_t)i);
            *gw_value_map_set(p, "type", 4) = gw_value_cstr(i % 2 ? "int16" : "uint16");
            if (on_change)
                *gw_value_map_set(p, "deadband", 8) = gw_value_uint(0);
        }
    }
    return cfg;
}

static double gateway_phase(int port, bool on_change, unsigned interval, double secs,
                            double *cpu_share,
                            long *rss, double *pub_rate)
{
    struct gw_host host = {.loop = loop, .registry = reg, .instance = "bench", .log = host_log,
                           .config_error = host_config_error};
    struct gw_value cfg = config(port, on_change, interval);
    void *st = NULL;
    if (gw_modbus_adapter.create(&host, &cfg, &st) != 0) {
        fprintf(stderr, "create failed\n");
        exit(1);
    }
    gw_value_fini(&cfg);
    gw_modbus_adapter.start(st);
    struct gw_sub *sub = gw_res_subscribe(gw_registry_find(reg, "bench/d50r7", 11), on_pub, NULL);
    run_for(0.5); /* connect, warm up */
    double r0 = gw_requests(), c0 = cpu_process(), s0 = srv_cpu, t0 = now();
    long p0 = publishes;
    run_for(secs);
    double r1 = gw_requests(), c1 = cpu_process(), s1 = srv_cpu, t1 = now();
    long p1 = publishes;
    *rss = rss_kb();
    *cpu_share = ((c1 - c0) - (s1 - s0)) / (t1 - t0);
    *pub_rate = (double)(p1 - p0) / (t1 - t0);
    gw_sub_free(sub);
    gw_modbus_adapter.stop(st);
    gw_registry_remove_owner(reg, st);
    gw_modbus_adapter.destroy(st);
    run_for(0.2); /* drain posted publishes */
    return (r1 - r0) / (t1 - t0);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 3;
    srv_ctx = modbus_new_tcp("127.0.0.1", 0);
    srv_map = modbus_mapping_new(0, 0, 65536, 0);
    srv_fd = modbus_tcp_listen(srv_ctx, 1);
    int port = srv_fd < 0 ? -1 : server_port(srv_fd);
    if (port < 0) {
        fprintf(stderr, "load server: %s\n", modbus_strerror(errno));
        return 1;
    }
    for (int i = 0; i < 65536; i++)
        srv_map->tab_registers[i] = (uint16_t)(i * 2654435761u >> 16);
    pthread_t th;
    pthread_create(&th, NULL, serve, NULL);
    if (gw_loop_new(&loop) != 0 || gw_registry_new(loop, &reg) != 0)
        return 1;

    printf("%d devices x %d holding registers (one 125-register request per device and poll), "
           "libmodbus TCP server on 127.0.0.1:%d in-process\n", NDEV, NREG, port);
    long rss0 = rss_kb();
    double raw1 = raw_rate(port, secs);
    printf("raw libmodbus:            %8.0f requests/s (%9.0f registers/s)\n", raw1, raw1 * NREG);
    static const char *const modes[] = {"flat out, publish every poll",
                                        "flat out, publish on change",
                                        "every 20 ms, publish every poll"};
    for (int mode = 0; mode < 3; mode++) {
        double cpu, pubs;
        long rss;
        double gw = gateway_phase(port, mode == 1, mode == 2 ? 20 : 1, secs, &cpu, &rss, &pubs);
        double raw2 = raw_rate(port, secs);
        double raw = (raw1 + raw2) / 2;
        printf("gateway (%s): %6.0f requests/s = %8.0f points/s, %.0f %% of raw "
               "(raw %0.f before, %.0f after), CPU %.2f cores, RSS %ld kB (%ld kB before start), "
               "%.0f publishes/s of one sampled point\n",
               modes[mode], gw, gw * NREG, 100 * gw / raw,
               raw1, raw2, cpu, rss, rss0, pubs);
        raw1 = raw2;
    }
    gw_registry_free(reg);
    gw_loop_free(loop);
    return 0;
}
