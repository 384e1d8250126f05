/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_store_fill: puts N queued samples into a gateway store file with the gw_store API, the
 * way the daemon's recorder does (WRITE_BUCKET rows of stream "bucket:samples", target "samples",
 * payload the PSON map {"ts": ms, "mb/d<k>p0": value}), so that the daemon benchmarks can start
 * iotmp-gatewayd on a store holding a million samples without waiting for it to record them.
 * Group commits of 5,000 rows, synchronous NORMAL (the file is a benchmark fixture).
 *     bench_store_fill PATH N [BUDGET_MB (1024)]
 * Prints `filled N rows, depth D, B bytes, S s`. Exit 1 on any store error.
 */
#include "gw/error.h"
#include "gw/pson.h"
#include "gw/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_store_fill PATH N [BUDGET_MB]\n");
        return 2;
    }
    char *end;
    unsigned long long n = strtoull(argv[2], &end, 10);
    unsigned long long budget_mb = argc > 3 ? strtoull(argv[3], NULL, 10) : 1024;
    if (*end || n == 0 || budget_mb == 0) {
        fprintf(stderr, "bench_store_fill: N and BUDGET_MB must be positive integers\n");
        return 2;
    }
    struct gw_store_config cfg;
    gw_store_config_init(&cfg);
    cfg.path = argv[1];
    cfg.budget_bytes = budget_mb << 20;
    cfg.max_age_ms = 0;
    cfg.commit_rows = 5000;
    cfg.commit_ms = 1000;
    cfg.sync = GW_STORE_SYNC_NORMAL;
    cfg.check = GW_STORE_CHECK_NONE;
    struct gw_store *st;
    int rc = gw_store_open(&cfg, &st);
    if (rc < 0) {
        fprintf(stderr, "bench_store_fill: %s: %s\n", argv[1], gw_strerror(rc));
        return 1;
    }
    double t0 = now();
    for (unsigned long long i = 0; i < n; i++) {
        uint8_t buf[128];
        char key[32];
        struct gw_pson_writer w;
        gw_pson_writer_init(&w, buf, sizeof buf);
        gw_pson_put_map(&w, 2);
        gw_pson_put_cstr(&w, "ts");
        gw_pson_put_uint(&w, 1700000000000ull + i);
        snprintf(key, sizeof key, "mb/d%llup0", i % 1000);
        gw_pson_put_cstr(&w, key);
        gw_pson_put_uint(&w, (i * 7) & 0xffff);
        struct gw_store_msg msg = {.stream = "bucket:samples", .action = GW_STORE_WRITE_BUCKET,
                                   .target = "samples", .payload = buf, .payload_len = w.len};
        rc = gw_store_put(st, &msg, NULL);
        if (rc < 0) {
            fprintf(stderr, "bench_store_fill: put %llu: %s\n", i, gw_strerror(rc));
            gw_store_close(st);
            return 1;
        }
    }
    rc = gw_store_flush(st, NULL);
    struct gw_store_stats s;
    gw_store_read_stats(st, &s);
    gw_store_close(st);
    if (rc < 0) {
        fprintf(stderr, "bench_store_fill: flush: %s\n", gw_strerror(rc));
        return 1;
    }
    printf("filled %llu rows, depth %llu, %llu bytes, %.1f s\n", n, (unsigned long long)s.depth,
           (unsigned long long)s.bytes, now() - t0);
    return 0;
}
