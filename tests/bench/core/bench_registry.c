/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Memory and speed of the resource registry with many resources (issue 11): adds N resources
 * shaped like the Modbus adapter's points ("mb/d<i>p<j>", fn OUTPUT, a uint "out" sample, a
 * describe callback, one context per point, one owner), and reports the heap bytes per resource
 * (glibc mallinfo2() in-use bytes before and after, so malloc's own chunk overhead is included)
 * after adding, after a uint value was published to each, and after a DESCRIBE of all (which
 * builds the name order); then applied publishes and lookups by name and by id in ns each (best
 * of 5 rounds), beside a floor measured in the same run: reading each resource's id through an
 * array of the entry pointers in the same shuffled order (the entry's cache miss, no table, no
 * hashing). Not a CTest test (no timing assertions); run by hand: bench_registry [N] [rw]
 * (default 100000 read-only points; rw: writable points, with an "in" sample too).
 */
#include "gw/loop.h"
#include "gw/pson.h"
#include "gw/registry.h"

#include <malloc.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct gw_loop *loop;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static int run_noop(void *ctx, struct gw_call *call)
{
    (void)ctx;
    gw_call_reply(call, NULL);
    return 0;
}

static void describe_cb(void *ctx, struct gw_value *meta)
{
    (void)ctx;
    (void)meta;
}

/* Runs the loop until everything posted so far has run. */
static void spin(void)
{
    gw_loop_post(loop, (gw_task_fn)gw_loop_stop, loop);
    gw_loop_run(loop);
}

/* xorshift, for a lookup order that defeats the prefetcher. */
static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    bool rw = argc > 2 && strcmp(argv[2], "rw") == 0;
    if (n < 1 || n > 10000000 || (argc > 2 && !rw) || argc > 3) {
        fprintf(stderr, "usage: %s [N (1..10000000)] [rw]\n", argv[0]);
        return 2;
    }
    if (gw_loop_new_plain(&loop) < 0) {
        fprintf(stderr, "bench_registry: no loop\n");
        return 1;
    }
    /* Everything the measurement must not count is allocated first. */
    char (*names)[32] = calloc(n, sizeof *names);
    uint32_t *ids = calloc(n, sizeof *ids);
    size_t *order = calloc(n, sizeof *order);
    int *ctx = calloc(n, sizeof *ctx);
    struct gw_res **floor_ptrs = calloc(n, sizeof *floor_ptrs);
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i], "mb/d%zup%zu", i / 100, i % 100);
        order[i] = i;
    }
    for (size_t i = n - 1; i > 0; i--) {
        size_t j = (size_t)(next_rand() % (i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    struct gw_registry *reg;
    gw_registry_new(loop, &reg);
    int owner;
    struct gw_value sample = gw_value_uint(0);
    size_t name_bytes = 0;

    size_t h0 = heap_in_use();
    uint64_t t0 = now_ns();
    for (size_t i = 0; i < n; i++) {
        struct gw_resource_desc d = {.name = names[i], .fn = rw ? GW_FN_INOUT : GW_FN_OUTPUT,
                                     .in = rw ? &sample : NULL, .out = &sample,
                                     .describe = describe_cb, .run = run_noop, .ctx = &ctx[i],
                                     .owner = &owner};
        if (gw_registry_add(reg, &d, &ids[i]) < 0) {
            fprintf(stderr, "bench_registry: add %s failed\n", names[i]);
            return 1;
        }
        name_bytes += strlen(names[i]);
    }
    uint64_t t_add = now_ns() - t0;
    size_t h_add = heap_in_use();

    /* Each timed phase runs ROUNDS times; the best round counts (the machine is shared). */
    enum { ROUNDS = 5 };
    struct gw_publish_batch *b = gw_publish_batch_new();
    uint64_t t_pub = UINT64_MAX, t_name = UINT64_MAX, t_id = UINT64_MAX, t_floor = UINT64_MAX;
    size_t h_pub = 0;
    for (int k = 0; k < ROUNDS; k++) {
        for (size_t i = 0; i < n; i++) {
            struct gw_value v = gw_value_uint(i + (size_t)k);
            gw_publish_batch_add(b, ids[order[i]], &v, 1000 + i);
        }
        gw_registry_publish_batch(reg, b);
        t0 = now_ns();
        spin();
        uint64_t t = now_ns() - t0;
        t_pub = t < t_pub ? t : t_pub;
        if (!k)
            h_pub = heap_in_use();
    }

    struct gw_pson_writer w;
    gw_pson_writer_init(&w, NULL, 0);
    gw_registry_describe_all(reg, &w);
    size_t h_desc = heap_in_use();

    /* Lookups in shuffled order, then the floor: the same number of random pointer reads. */
    size_t found = 0;
    for (size_t i = 0; i < n; i++)
        floor_ptrs[i] = gw_registry_find_id(reg, ids[i]);
    uint64_t sum = 0;
    for (int k = 0; k < ROUNDS; k++) {
        found = 0;
        t0 = now_ns();
        for (size_t i = 0; i < n; i++) {
            const char *nm = names[order[i]];
            found += gw_registry_find(reg, nm, strlen(nm)) != NULL;
        }
        uint64_t t = now_ns() - t0;
        t_name = t < t_name ? t : t_name;
        t0 = now_ns();
        for (size_t i = 0; i < n; i++)
            found += gw_registry_find_id(reg, ids[order[i]]) != NULL;
        t = now_ns() - t0;
        t_id = t < t_id ? t : t_id;
        t0 = now_ns();
        for (size_t i = 0; i < n; i++)
            sum += gw_res_id(floor_ptrs[order[i]]);
        t = now_ns() - t0;
        t_floor = t < t_floor ? t : t_floor;
    }
    if (found != 2 * n) {
        fprintf(stderr, "bench_registry: %zu of %zu lookups failed\n", 2 * n - found, 2 * n);
        return 1;
    }

    printf("registry with %zu %s resources (names \"mb/d<i>p<j>\", %.1f bytes on average)\n",
           n, rw ? "read-write (in and out samples)" : "read-only (out sample)",
           (double)name_bytes / (double)n);
    printf("  heap per resource after add:          %7.1f bytes\n",
           (double)(h_add - h0) / (double)n);
    printf("  ... after a uint published to each:   %7.1f bytes\n",
           (double)(h_pub - h0) / (double)n);
    printf("  ... after DESCRIBE all (name order):  %7.1f bytes   (DESCRIBE all %zu bytes)\n",
           (double)(h_desc - h0) / (double)n, w.len);
    printf("  add:                               %7.1f ns each\n", (double)t_add / (double)n);
    printf("  publish (applied, from one batch): %7.1f ns each (best of %d rounds)\n",
           (double)t_pub / (double)n, ROUNDS);
    printf("  find by name (shuffled order):     %7.1f ns each\n", (double)t_name / (double)n);
    printf("  find by id (shuffled order):       %7.1f ns each\n", (double)t_id / (double)n);
    printf("  floor: a pointer read in the same order: %.1f ns each (checksum %llu)\n",
           (double)t_floor / (double)n, (unsigned long long)(sum & 0xff));

    gw_publish_batch_free(b);
    gw_registry_free(reg);
    gw_loop_free(loop);
    free(names);
    free(ids);
    free(order);
    free(ctx);
    free(floor_ptrs);
    return 0;
}
