/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Codec benchmark: ns per encode and decode of the sample payload
 *   {"temperature":23.5,"humidity":60,"pressure":1013,"label":"outdoor"}
 * (direct writer / pull reader, and through the value tree), and of a run of 100 STREAM_DATA
 * frames (encode each, then find and decode all of them in one byte stream). Printed beside the
 * floor measured in the same run (memcpy of the same bytes) and, for scale, jansson's JSON
 * encode/parse of the same payload.
 *
 *   bench_codec [--quick]
 */
#include "gw/iotmp.h"
#include "gw/value.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile uint64_t sink;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Runs fn iters times, 7 rounds; returns the median ns per call. */
static double measure(void (*fn)(void), long iters)
{
    double r[7];
    for (int k = 0; k < 7; k++) {
        double t0 = now_ns();
        for (long i = 0; i < iters; i++)
            fn();
        r[k] = (now_ns() - t0) / (double)iters;
    }
    for (int i = 0; i < 7; i++)
        for (int j = i + 1; j < 7; j++)
            if (r[j] < r[i]) {
                double t = r[i];
                r[i] = r[j];
                r[j] = t;
            }
    return r[3];
}

static uint8_t out[256];
static size_t out_len;
static double temperature = 23.5;

static void encode_direct(void)
{
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, out, sizeof out);
    gw_pson_put_map(&w, 4);
    gw_pson_put_str(&w, "temperature", 11);
    gw_pson_put_double(&w, temperature);
    gw_pson_put_str(&w, "humidity", 8);
    gw_pson_put_uint(&w, 60);
    gw_pson_put_str(&w, "pressure", 8);
    gw_pson_put_uint(&w, 1013);
    gw_pson_put_str(&w, "label", 5);
    gw_pson_put_str(&w, "outdoor", 7);
    out_len = w.len;
    sink += w.len;
}

static void decode_direct(void)
{
    struct gw_pson_reader r;
    struct gw_pson_item it;
    double t = 0, h = 0, p = 0;
    size_t label = 0;
    gw_pson_reader_init(&r, out, out_len);
    while (gw_pson_next(&r, &it) == 0 && it.kind != GW_PSON_END) {
        if (!it.key)
            continue;
        if (gw_pson_item_key_is(&it, "temperature"))
            gw_pson_item_to_double(&it, &t);
        else if (gw_pson_item_key_is(&it, "humidity"))
            gw_pson_item_to_double(&it, &h);
        else if (gw_pson_item_key_is(&it, "pressure"))
            gw_pson_item_to_double(&it, &p);
        else if (gw_pson_item_key_is(&it, "label"))
            label = it.len;
    }
    sink += (uint64_t)(t + h + p) + label;
}

static struct gw_value tree;

static void encode_tree(void)
{
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, out, sizeof out);
    gw_value_encode(&tree, &w);
    sink += w.len;
}

static void decode_tree(void)
{
    struct gw_value v;
    sink += (uint64_t)gw_value_decode(out, out_len, &v);
    gw_value_fini(&v);
}

static uint8_t copy_dst[256];

static void floor_memcpy(void)
{
    memcpy(copy_dst, out, out_len);
    __asm__ volatile("" ::: "memory");
    sink += copy_dst[out_len - 1];
}

static json_t *jtree;
static char jtext[256];

static void json_encode(void)
{
    char *s = json_dumps(jtree, JSON_COMPACT);
    sink += strlen(s);
    free(s);
}

static void json_decode(void)
{
    json_t *j = json_loads(jtext, 0, NULL);
    sink += json_object_size(j);
    json_decref(j);
}

/* --- 100-sample STREAM_DATA run --- */

#define SAMPLES 100
static uint8_t stream[SAMPLES * 96];
static size_t stream_len;

static void encode_run(void)
{
    uint8_t buf[128];
    stream_len = 0;
    for (int i = 0; i < SAMPLES; i++) {
        struct gw_iotmp_writer w;
        gw_iotmp_writer_init(&w, buf, sizeof buf, GW_IOTMP_STREAM_DATA);
        gw_iotmp_put_varint(&w, GW_IOTMP_STREAM_ID, 161);
        struct gw_pson_writer *p = gw_iotmp_put_pson(&w, GW_IOTMP_PAYLOAD);
        gw_pson_put_map(p, 4);
        gw_pson_put_str(p, "temperature", 11);
        gw_pson_put_double(p, 20.0 + i * 0.25);
        gw_pson_put_str(p, "humidity", 8);
        gw_pson_put_uint(p, 40 + (unsigned)i % 30);
        gw_pson_put_str(p, "pressure", 8);
        gw_pson_put_uint(p, 1000 + (unsigned)i);
        gw_pson_put_str(p, "label", 5);
        gw_pson_put_str(p, "outdoor", 7);
        const uint8_t *f;
        size_t len;
        if (gw_iotmp_finish(&w, &f, &len) == 0) {
            memcpy(stream + stream_len, f, len);
            stream_len += len;
        }
    }
    sink += stream_len;
}

static void decode_run(void)
{
    struct gw_iotmp_reader r;
    gw_iotmp_reader_init(&r, NULL, 0, GW_IOTMP_MAX_FRAME_DEFAULT);
    size_t pos = 0;
    double sum = 0;
    while (pos < stream_len) {
        uint64_t type;
        const uint8_t *body;
        size_t body_len, used;
        int rc = gw_iotmp_feed(&r, stream + pos, stream_len - pos, &used, &type, &body, &body_len);
        pos += used;
        if (rc != 1)
            break;
        struct gw_iotmp_frame f;
        if (gw_iotmp_parse(&f, type, body, body_len) != 0)
            break;
        struct gw_pson_reader pr;
        struct gw_pson_item it;
        uint8_t scratch[GW_VARINT_MAX + 1];
        gw_iotmp_field_reader(&f, GW_IOTMP_PAYLOAD, &pr, scratch);
        while (gw_pson_next(&pr, &it) == 0 && it.kind != GW_PSON_END) {
            double d;
            if (gw_pson_item_to_double(&it, &d) == 0)
                sum += d;
        }
    }
    sink += (uint64_t)sum;
}

static void floor_run(void)
{
    static uint8_t dst[sizeof stream];
    memcpy(dst, stream, stream_len);
    __asm__ volatile("" ::: "memory");
    sink += dst[stream_len - 1];
}

int main(int argc, char **argv)
{
    long iters = argc > 1 && strcmp(argv[1], "--quick") == 0 ? 20000 : 1000000;

    encode_direct();
    tree = gw_value_map();
    *gw_value_map_set(&tree, "temperature", 11) = gw_value_double(23.5);
    *gw_value_map_set(&tree, "humidity", 8) = gw_value_uint(60);
    *gw_value_map_set(&tree, "pressure", 8) = gw_value_uint(1013);
    *gw_value_map_set(&tree, "label", 5) = gw_value_cstr("outdoor");
    jtree = json_pack("{s:f,s:i,s:i,s:s}", "temperature", 23.5, "humidity", 60, "pressure", 1013,
                      "label", "outdoor");
    char *jt = json_dumps(jtree, JSON_COMPACT | JSON_PRESERVE_ORDER);
    snprintf(jtext, sizeof jtext, "%s", jt);
    free(jt);

    printf("payload {\"temperature\":23.5,\"humidity\":60,\"pressure\":1013,\"label\":\"outdoor\"}: "
           "PSON %zu bytes, JSON %zu bytes\n", out_len, strlen(jtext));
    printf("%-34s %10s\n", "operation", "ns/op");
    double floor = measure(floor_memcpy, iters);
    printf("%-34s %10.1f\n", "floor: memcpy of the PSON bytes", floor);
    printf("%-34s %10.1f\n", "PSON encode (direct writer)", measure(encode_direct, iters));
    printf("%-34s %10.1f\n", "PSON decode (pull reader, 4 fields)", measure(decode_direct, iters));
    printf("%-34s %10.1f\n", "PSON encode (value tree)", measure(encode_tree, iters));
    printf("%-34s %10.1f\n", "PSON decode (value tree, allocates)", measure(decode_tree, iters));
    printf("%-34s %10.1f\n", "JSON encode (jansson, comparison)", measure(json_encode, iters / 4));
    printf("%-34s %10.1f\n", "JSON parse (jansson, comparison)", measure(json_decode, iters / 4));

    encode_run();
    long run_iters = iters / 100;
    double fr = measure(floor_run, run_iters);
    double er = measure(encode_run, run_iters);
    double dr = measure(decode_run, run_iters);
    printf("\n100-sample STREAM_DATA run: %zu bytes (%.1f bytes/frame)\n", stream_len,
           (double)stream_len / SAMPLES);
    printf("%-34s %10.1f ns/run %8.1f ns/frame\n", "floor: memcpy of the run", fr, fr / SAMPLES);
    printf("%-34s %10.1f ns/run %8.1f ns/frame\n", "encode 100 frames", er, er / SAMPLES);
    printf("%-34s %10.1f ns/run %8.1f ns/frame\n", "read+parse+decode 100 frames", dr, dr / SAMPLES);

    gw_value_fini(&tree);
    json_decref(jtree);
    return sink == 42 ? 1 : 0; /* keeps sink alive */
}
