/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Benchmark of the Modbus read planner against a load server: a libmodbus TCP server on 127.0.0.1
 * in a thread of this process (a C server, so the server is not the bottleneck the way pymodbus
 * is). It polls one map of scattered points two ways, one request per point and the planned
 * coalesced requests, decoding every point each cycle, beside a floor measured in the same run
 * (back-to-back 1-register reads). It also times gw_modbus_plan_build on large maps.
 * Prints figures only; no assertions on time (tests/bench/CMakeLists.txt: built, not registered).
 *     bench_modbus_poll [points (300)] [cycles (200)]
 */
#include "modbus_map.h"
#include "modbus_plan.h"

#include <errno.h>
#include <modbus.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* --- Load server --- */

struct server {
    modbus_t *ctx;
    modbus_mapping_t *map;
    int listen_fd;
};

static void *serve(void *arg)
{
    struct server *s = arg;
    int fd = modbus_tcp_accept(s->ctx, &s->listen_fd);
    if (fd < 0)
        return NULL;
    uint8_t query[MODBUS_TCP_MAX_ADU_LENGTH];
    for (;;) {
        int n = modbus_receive(s->ctx, query);
        if (n > 0)
            modbus_reply(s->ctx, query, n, s->map);
        else if (n < 0)
            break; /* client closed; modbus_close() in main closes fd */
    }
    return NULL;
}

static int server_port(int fd)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        return -1;
    return ntohs(sa.sin_port);
}

/* --- Map --- */

static uint32_t rng = 88172645u;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng % n;
}

/*
 * Scattered holding-register points of 1, 2 or 4 registers with gaps 0 .. 2 * gap + 1, on unit 1
 * and, once addresses pass 60000, on units 2, 3, ... (large maps for the planner timing).
 */
static void make_map(struct gw_modbus_point *points, struct gw_modbus_plan_point *pts, size_t n,
                     unsigned gap)
{
    static const enum gw_modbus_type types[] = {GW_MODBUS_TYPE_UINT16, GW_MODBUS_TYPE_FLOAT32,
                                                GW_MODBUS_TYPE_INT64, GW_MODBUS_TYPE_INT16};
    unsigned a = 0, unit = 1;
    for (size_t i = 0; i < n; i++) {
        if (a > 60000) {
            a = 0;
            unit++;
        }
        gw_modbus_point_init(&points[i]);
        points[i].type = types[rnd(4)];
        points[i].address = (uint16_t)a;
        pts[i] = (struct gw_modbus_plan_point){
            .unit = (uint8_t)unit, .table = GW_MODBUS_TABLE_HOLDING,
            .address = points[i].address, .count = (uint16_t)gw_modbus_point_width(&points[i])};
        a += pts[i].count + rnd(2 * gap + 2);
    }
}

int main(int argc, char **argv)
{
    size_t npoints = argc > 1 ? (size_t)atol(argv[1]) : 300;
    int cycles = argc > 2 ? atoi(argv[2]) : 200;
    const unsigned gap = 8;
    if (npoints == 0 || cycles <= 0)
        return 2;

    /* Planner alone. */
    for (size_t big = 1000; big <= 100000; big *= 10) {
        struct gw_modbus_point *pp = calloc(big, sizeof *pp);
        struct gw_modbus_plan_point *pts = calloc(big, sizeof *pts);
        make_map(pp, pts, big, gap);
        struct gw_modbus_plan plan;
        struct gw_modbus_plan_limits lim = {.gap_regs = gap};
        double t0 = now();
        int reps = (int)(200000 / big) + 1, nreq = 0;
        for (int r = 0; r < reps; r++) {
            nreq = gw_modbus_plan_build(pts, big, &lim, &plan, NULL, 0);
            gw_modbus_plan_fini(&plan);
        }
        double dt = (now() - t0) / reps;
        printf("plan_build: %6zu points -> %5d requests in %8.1f us (%.0f ns/point)\n", big, nreq,
               dt * 1e6, dt * 1e9 / (double)big);
        free(pp);
        free(pts);
    }

    /* Load server. */
    struct server srv = {0};
    srv.ctx = modbus_new_tcp("127.0.0.1", 0);
    srv.map = modbus_mapping_new(0, 0, 65536, 0);
    if (srv.ctx == NULL || srv.map == NULL)
        return 1;
    srv.listen_fd = modbus_tcp_listen(srv.ctx, 1);
    int port = srv.listen_fd < 0 ? -1 : server_port(srv.listen_fd);
    if (port < 0) {
        fprintf(stderr, "load server: %s\n", modbus_strerror(errno));
        return 1;
    }
    for (int i = 0; i < 65536; i++)
        srv.map->tab_registers[i] = (uint16_t)(i * 2654435761u >> 16);
    pthread_t th;
    pthread_create(&th, NULL, serve, &srv);

    modbus_t *mb = modbus_new_tcp("127.0.0.1", port);
    if (mb == NULL || modbus_connect(mb) != 0) {
        fprintf(stderr, "client: %s\n", modbus_strerror(errno));
        return 1;
    }
    modbus_set_slave(mb, 1);

    struct gw_modbus_point *points = calloc(npoints, sizeof *points);
    struct gw_modbus_plan_point *pts = calloc(npoints, sizeof *pts);
    make_map(points, pts, npoints, gap);
    struct gw_modbus_plan plan;
    struct gw_modbus_plan_limits lim = {.gap_regs = gap};
    int nreq = gw_modbus_plan_build(pts, npoints, &lim, &plan, NULL, 0);
    if (nreq <= 0)
        return 1;
    uint16_t (*buf)[125] = calloc((size_t)nreq, sizeof *buf);
    uint16_t one[4];
    struct gw_value v;
    long errors = 0;
    double sink = 0;

    /* Floor: back-to-back 1-register reads. */
    int floor_n = cycles * 100;
    double t0 = now();
    for (int i = 0; i < floor_n; i++)
        errors += modbus_read_registers(mb, i % 60000, 1, one) != 1;
    double t_floor = now() - t0;

    /* One request per point. */
    t0 = now();
    for (int c = 0; c < cycles; c++) {
        for (size_t i = 0; i < npoints; i++) {
            errors += modbus_read_registers(mb, pts[i].address, pts[i].count, one) != pts[i].count;
            gw_modbus_decode(&points[i], one, pts[i].count, &v, NULL, 0);
            sink += v.type == GW_VALUE_DOUBLE ? v.d : (double)v.u;
        }
    }
    double t_naive = now() - t0;

    /* Planned. */
    t0 = now();
    for (int c = 0; c < cycles; c++) {
        for (size_t k = 0; k < plan.nreqs; k++)
            errors += modbus_read_registers(mb, plan.reqs[k].start, plan.reqs[k].count, buf[k]) !=
                      plan.reqs[k].count;
        for (size_t i = 0; i < npoints; i++) {
            gw_modbus_decode(&points[i], &buf[plan.point_req[i]][plan.point_offset[i]],
                             pts[i].count, &v, NULL, 0);
            sink += v.type == GW_VALUE_DOUBLE ? v.d : (double)v.u;
        }
    }
    double t_plan = now() - t0;

    printf("floor: %d one-register reads: %.0f requests/s (%.1f us each)\n", floor_n,
           floor_n / t_floor, t_floor / floor_n * 1e6);
    printf("per-point: %zu points, %zu requests/cycle: %.1f cycles/s, %.0f points/s, "
           "%.0f requests/s\n",
           npoints, npoints, cycles / t_naive, cycles * (double)npoints / t_naive,
           cycles * (double)npoints / t_naive);
    printf("planned:   %zu points, %d requests/cycle (gap %u): %.1f cycles/s, %.0f points/s, "
           "%.0f requests/s, %.1fx per-point\n",
           npoints, nreq, gap, cycles / t_plan, cycles * (double)npoints / t_plan,
           cycles * (double)nreq / t_plan, t_naive / t_plan);
    printf("errors: %ld (checksum %g)\n", errors, sink);

    modbus_close(mb);
    modbus_free(mb);
    pthread_join(th, NULL);
    modbus_close(srv.ctx);
    modbus_free(srv.ctx);
    modbus_mapping_free(srv.map);
    if (srv.listen_fd >= 0)
        close(srv.listen_fd);
    free(buf);
    gw_modbus_plan_fini(&plan);
    free(points);
    free(pts);
    return errors == 0 ? 0 : 1;
}
