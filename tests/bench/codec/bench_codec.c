/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Codec benchmark: ns per encode and decode of the sample payload
 *   {"temperature":23.5,"humidity":60,"pressure":1013,"label":"outdoor"}
 * (direct writer / pull reader, and through the value tree), and of a run of 100 STREAM_DATA
 * frames (encode each, then find and decode all of them in one byte stream). Printed beside the
 * floor measured in the same run (memcpy of the same bytes) and, for scale, jansson's JSON
 * encode/parse of the same payload.
 *
 * Bytes per sample: for typical values taken from the conformance vectors (numbers, maps of a few
 * readings, a STREAM_DATA sample and WRITE_BUCKET frames in both layouts), the bytes our encoder
 * writes beside the reference encoder's bytes for the same value (the vector's hex), their ratio
 * and whether they are identical; the legacy PSON v1 reference encoding and compact JSON are shown
 * for scale.
 *
 * With GW_BENCH_DATA set to a directory, also writes codec_ns.tsv and codec_bytes.tsv there.
 *
 *   bench_codec [--quick] [--vectors FILE]
 */
#include "bench_tsv.h"
#include "gw/iotmp.h"
#include "gw/value.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef GW_BENCH_VECTORS
#define GW_BENCH_VECTORS "tests/data/iotmp/vectors.json"
#endif

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


/* --- Bytes per sample against the reference encodings --- */

/* Writes a JSON value (vector notation: plain JSON, {"$bytes": hex}) with our encoder. */
static int put_json(struct gw_pson_writer *w, json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_NULL:
        gw_pson_put_null(w);
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        gw_pson_put_bool(w, json_is_true(j));
        return 0;
    case JSON_INTEGER: {
        json_int_t v = json_integer_value(j);
        if (v >= 0)
            gw_pson_put_uint(w, (uint64_t)v);
        else
            gw_pson_put_int(w, (int64_t)v);
        return 0;
    }
    case JSON_REAL:
        gw_pson_put_double(w, json_real_value(j));
        return 0;
    case JSON_STRING:
        gw_pson_put_str(w, json_string_value(j), json_string_length(j));
        return 0;
    case JSON_ARRAY: {
        size_t i;
        json_t *e;
        gw_pson_put_array(w, json_array_size(j));
        json_array_foreach(j, i, e) if (put_json(w, e) < 0) return -1;
        return 0;
    }
    case JSON_OBJECT: {
        json_t *hex = json_object_get(j, "$bytes");
        if (json_object_size(j) == 1 && json_is_string(hex)) {
            uint8_t raw[256];
            size_t n = json_string_length(hex) / 2;
            if (n > sizeof raw)
                return -1;
            for (size_t i = 0; i < n; i++) {
                unsigned b;
                if (sscanf(json_string_value(hex) + 2 * i, "%2x", &b) != 1)
                    return -1;
                raw[i] = (uint8_t)b;
            }
            gw_pson_put_bytes(w, raw, n);
            return 0;
        }
        if (json_object_get(j, "$int") || json_object_get(j, "$double") ||
            json_object_get(j, "$unset"))
            return -1; /* special forms are not typical samples */
        const char *k;
        json_t *e;
        gw_pson_put_map(w, json_object_size(j));
        json_object_foreach(j, k, e)
        {
            gw_pson_put_str(w, k, strlen(k));
            if (put_json(w, e) < 0)
                return -1;
        }
        return 0;
    }
    }
    return -1;
}

/* Builds the frame a "frames" vector describes with our frame writer. Returns its length. */
static long put_frame(json_t *value, uint8_t *buf, size_t cap, const uint8_t **frame)
{
    struct gw_iotmp_writer w;
    gw_iotmp_writer_init(&w, buf, cap, (uint64_t)json_integer_value(json_object_get(value,
                                                                                   "type_code")));
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(value, "fields"), i, f)
    {
        unsigned id = (unsigned)json_integer_value(json_object_get(f, "id"));
        const char *wt = json_string_value(json_object_get(f, "wire_type"));
        json_t *v = json_object_get(f, "value");
        if (wt && strcmp(wt, "varint") == 0)
            gw_iotmp_put_varint(&w, id, (uint64_t)json_integer_value(v));
        else if (wt && strcmp(wt, "pson_v2") == 0) {
            if (put_json(gw_iotmp_put_pson(&w, id), v) < 0)
                return -1;
        } else
            return -1;
    }
    size_t len;
    if (gw_iotmp_finish(&w, frame, &len) != 0)
        return -1;
    return (long)len;
}

static json_t *find_vector(json_t *list, const char *name)
{
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e)
    {
        const char *n = json_string_value(json_object_get(e, "name"));
        if (n && strcmp(n, name) == 0)
            return e;
    }
    return NULL;
}

static size_t hex_len(json_t *e)
{
    const char *h = e ? json_string_value(json_object_get(e, "hex")) : NULL;
    return h ? strlen(h) / 2 : 0;
}

static bool same_hex(const uint8_t *p, size_t len, json_t *e)
{
    const char *h = json_string_value(json_object_get(e, "hex"));
    if (!h || strlen(h) != 2 * len)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned b;
        if (sscanf(h + 2 * i, "%2x", &b) != 1 || b != p[i])
            return false;
    }
    return true;
}

/* Returns 0, or -1 when the vectors cannot be read or a sample cannot be encoded. */
static int bytes_per_sample(const char *vectors_path)
{
    static const struct {
        const char *list, *name, *label;
    } samples[] = {
        {"pson_v2", "uint_1000", "number: integer 1000"},
        {"pson_v2", "float_23.5", "number: 23.5 (float32)"},
        {"pson_v2", "double_12345678.9", "number: 12345678.9 (float64)"},
        {"pson_v2", "int_-1000", "number: -1000"},
        {"pson_v2", "map_two", "map: temperature, humidity"},
        {"pson_v2", "map_nested", "map: nested readings + meta"},
        {"pson_v2", "map_all_types", "map: 9 fields of every type"},
        {"frames", "stream_data_sample", "frame: STREAM_DATA sample"},
        {"frames", "server_write_bucket_embedded_layout", "frame: WRITE_BUCKET (embedded)"},
        {"frames", "server_write_bucket_linux_layout", "frame: WRITE_BUCKET (linux)"},
    };
    json_error_t err;
    json_t *root = json_load_file(vectors_path, 0, &err);
    if (!root) {
        fprintf(stderr, "bench_codec: %s:%d:%d: %s\n", vectors_path, err.line, err.column,
                err.text);
        return -1;
    }
    FILE *tsv = gw_bench_tsv_open("bench_codec", "codec_bytes.tsv",
                                  "sample\tours_bytes\treference_bytes\tratio\t"
                                  "identical\tpson_v1_bytes\tjson_bytes");
    printf("\nbytes per sample: our encoder vs the reference encoder's bytes for the same value "
           "(%s)\n", vectors_path);
    printf("%-32s %6s %6s %6s %9s %8s %6s\n", "sample", "ours", "ref", "ratio", "identical",
           "PSON v1", "JSON");
    int rc = 0;
    size_t total_ours = 0, total_ref = 0;
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        json_t *e = find_vector(json_object_get(root, samples[i].list), samples[i].name);
        if (!e) {
            fprintf(stderr, "bench_codec: %s: no vector \"%s\" in \"%s\"\n", vectors_path,
                    samples[i].name, samples[i].list);
            rc = -1;
            continue;
        }
        json_t *value = json_object_get(e, "value");
        uint8_t buf[512];
        const uint8_t *bytes = buf;
        long ours;
        json_t *payload = value; /* what JSON and PSON v1 sizes are given for */
        if (strcmp(samples[i].list, "frames") == 0) {
            ours = put_frame(value, buf, sizeof buf, &bytes);
            payload = NULL;
        } else {
            struct gw_pson_writer w;
            gw_pson_writer_init(&w, buf, sizeof buf);
            ours = put_json(&w, value) == 0 && gw_pson_writer_ok(&w) ? (long)w.len : -1;
        }
        if (ours < 0) {
            fprintf(stderr, "bench_codec: %s: vector \"%s\" could not be encoded\n",
                    vectors_path, samples[i].name);
            rc = -1;
            continue;
        }
        size_t ref = hex_len(e);
        bool same = same_hex(bytes, (size_t)ours, e);
        size_t v1 = payload ? hex_len(find_vector(json_object_get(root, "pson_v1"),
                                                  samples[i].name))
                            : 0;
        size_t js = 0;
        if (payload) {
            char *t = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
            js = t ? strlen(t) : 0;
            free(t);
        }
        double ratio = ref ? (double)ours / (double)ref : 0.0;
        total_ours += (size_t)ours;
        total_ref += ref;
        char v1s[24] = "-", jss[24] = "-";
        if (v1)
            snprintf(v1s, sizeof v1s, "%zu", v1);
        if (js)
            snprintf(jss, sizeof jss, "%zu", js);
        printf("%-32s %6ld %6zu %6.2f %9s %8s %6s\n", samples[i].label, ours, ref, ratio,
               same ? "yes" : "NO", v1s, jss);
        if (tsv)
            fprintf(tsv, "%s\t%ld\t%zu\t%.3f\t%s\t%zu\t%zu\n", samples[i].label, ours, ref, ratio,
                    same ? "yes" : "no", v1, js);
    }
    if (total_ref)
        printf("%-32s %6zu %6zu %6.2f\n", "all samples", total_ours, total_ref,
               (double)total_ours / (double)total_ref);
    if (tsv)
        fclose(tsv);
    json_decref(root);
    return rc;
}

int main(int argc, char **argv)
{
    long iters = 1000000;
    const char *vectors = GW_BENCH_VECTORS;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            iters = 20000;
        else if (strcmp(argv[i], "--vectors") == 0 && i + 1 < argc)
            vectors = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--quick] [--vectors FILE]\n", argv[0]);
            return 2;
        }
    }

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
    printf("%-34s %10s %8s\n", "operation", "ns/op", "x floor");
    FILE *tsv = gw_bench_tsv_open("bench_codec", "codec_ns.tsv",
                                  "operation\tns_per_op\tfloor_ns\tratio");
    double floor = measure(floor_memcpy, iters);
    printf("%-34s %10.1f\n", "floor: memcpy of the PSON bytes", floor);
    static const struct {
        const char *label, *key;
        void (*fn)(void);
        int div;
    } ops[] = {
        {"PSON encode (direct writer)", "pson_encode", encode_direct, 1},
        {"PSON decode (pull reader, 4 fields)", "pson_decode", decode_direct, 1},
        {"PSON encode (value tree)", "pson_encode_tree", encode_tree, 1},
        {"PSON decode (value tree, allocates)", "pson_decode_tree", decode_tree, 1},
        {"JSON encode (jansson, comparison)", "json_encode", json_encode, 4},
        {"JSON parse (jansson, comparison)", "json_parse", json_decode, 4},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        double ns = measure(ops[i].fn, iters / ops[i].div);
        printf("%-34s %10.1f %8.1f\n", ops[i].label, ns, ns / floor);
        if (tsv)
            fprintf(tsv, "%s\t%.1f\t%.1f\t%.2f\n", ops[i].key, ns, floor, ns / floor);
    }

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
    if (tsv) {
        fprintf(tsv, "stream_encode_per_frame\t%.1f\t%.1f\t%.2f\n", er / SAMPLES, fr / SAMPLES,
                er / fr);
        fprintf(tsv, "stream_decode_per_frame\t%.1f\t%.1f\t%.2f\n", dr / SAMPLES, fr / SAMPLES,
                dr / fr);
        fclose(tsv);
    }
    printf("targets: PSON encode and decode of the 4-field sample < 100 ns each\n");

    int vec_rc = bytes_per_sample(vectors);

    gw_value_fini(&tree);
    json_decref(jtree);
    if (vec_rc < 0)
        return 1;
    return sink == 42 ? 1 : 0; /* keeps sink alive */
}
