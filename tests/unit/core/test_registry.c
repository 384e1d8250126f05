/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The resource registry on a real loop: lookup by name and stable id, DESCRIBE output, calls that
 * answer at once, later, from a worker thread, fail or are cancelled, published values and their
 * subscribers, removal while calls run, and DESCRIBE of 10,000 resources (time and size printed).
 */
#include "gw/error.h"
#include "gw/loop.h"
#include "gw/registry.h"

#include <check.h>
#include <valgrind/valgrind.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct gw_loop *loop;
static struct gw_registry *reg;

static void setup(void)
{
    ck_assert_int_eq(gw_loop_new(&loop), 0);
    ck_assert_int_eq(gw_registry_new(loop, &reg), 0);
}

static void teardown(void)
{
    gw_registry_free(reg);
    gw_loop_free(loop);
}

/* Runs the loop until the posted queue is quiet (a stop task posted last). */
static void spin(void)
{
    gw_loop_post(loop, (gw_task_fn)gw_loop_stop, loop);
    gw_loop_run(loop);
}

/* A resource that answers with its input + 1, at once. */
static int run_inc(void *ctx, struct gw_call *call)
{
    (void)ctx;
    double d = 0;
    gw_value_to_double(gw_call_input(call), &d);
    struct gw_value out = gw_value_double(d + 1);
    gw_call_reply(call, &out);
    return 0;
}

static int run_refuse(void *ctx, struct gw_call *call)
{
    (void)ctx;
    (void)call;
    return GW_EREADONLY;
}

static struct gw_resource_desc desc(const char *name, enum gw_fn fn, gw_run_fn run)
{
    return (struct gw_resource_desc){.name = name, .fn = fn, .run = run};
}

START_TEST(test_registry_add_find_and_stable_ids)
{
    struct gw_resource_desc d = desc("modbus/plc1/temp", GW_FN_OUTPUT, run_inc);
    uint32_t id1, id2;
    ck_assert_int_eq(gw_registry_add(reg, &d, &id1), 0);
    ck_assert_int_eq(gw_registry_add(reg, &d, NULL), GW_EEXIST);
    d.name = "";
    ck_assert_int_eq(gw_registry_add(reg, &d, NULL), GW_EINVAL);
    struct gw_res *r = gw_registry_find(reg, "modbus/plc1/temp", 16);
    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_eq(gw_registry_find_id(reg, id1), r);
    ck_assert_ptr_null(gw_registry_find(reg, "modbus/plc1/tem", 15));

    /* The id depends on the name only: another registry with other resources agrees. */
    struct gw_registry *other;
    gw_registry_new(loop, &other);
    char name[32];
    for (int i = 0; i < 500; i++) {
        snprintf(name, sizeof name, "x/%d", i);
        struct gw_resource_desc o = desc(name, GW_FN_OUTPUT, run_inc);
        ck_assert_int_eq(gw_registry_add(other, &o, NULL), 0);
    }
    d.name = "modbus/plc1/temp";
    ck_assert_int_eq(gw_registry_add(other, &d, &id2), 0);
    ck_assert_uint_eq(id1, id2);
    ck_assert_uint_eq(gw_registry_count(other), 501);
    for (int i = 0; i < 500; i++) { /* every one still found after the table grew */
        snprintf(name, sizeof name, "x/%d", i);
        ck_assert_ptr_nonnull(gw_registry_find(other, name, strlen(name)));
    }
    gw_registry_free(other);
}
END_TEST

START_TEST(test_registry_describe_all_and_one)
{
    struct gw_resource_desc d = desc("b/led", GW_FN_INOUT, run_inc);
    d.params = true;
    struct gw_value in = gw_value_bool(false), unit = gw_value_map();
    *gw_value_map_set(&unit, "unit", 4) = gw_value_cstr("°C");
    d.in = &in;
    ck_assert_int_eq(gw_registry_add(reg, &d, NULL), 0);
    struct gw_resource_desc t = desc("a/temp", GW_FN_OUTPUT, run_inc);
    struct gw_value out = gw_value_double(0.0);
    t.out = &out;
    t.meta = &unit;
    t.not_streamable = true;
    uint32_t tid;
    ck_assert_int_eq(gw_registry_add(reg, &t, &tid), 0);
    gw_value_fini(&unit);

    uint8_t buf[512];
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_all(reg, &w);
    struct gw_value all;
    ck_assert_int_gt(gw_value_decode(buf, w.len, &all), 0);
    ck_assert_uint_eq(gw_value_count(&all), 2);
    ck_assert_str_eq(all.c.keys[0], "a/temp"); /* name order */
    const struct gw_value *a = gw_value_map_get(&all, "a/temp");
    ck_assert_uint_eq(gw_value_map_get(a, "fn")->u, GW_FN_OUTPUT);
    ck_assert_uint_eq(gw_value_map_get(a, "id")->u, tid);
    ck_assert(gw_value_map_get(a, "st")->b == false);
    ck_assert_ptr_null(gw_value_map_get(a, "pr"));
    const struct gw_value *b = gw_value_map_get(&all, "b/led");
    ck_assert(gw_value_map_get(b, "pr")->b == true);
    ck_assert_ptr_null(gw_value_map_get(b, "st"));
    gw_value_fini(&all);

    /* DESCRIBE one: configured sample, then the last published value, plus meta keys */
    struct gw_res *r = gw_registry_find(reg, "a/temp", 6);
    struct gw_value one;
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_one(reg, r, &w);
    ck_assert_int_gt(gw_value_decode(buf, w.len, &one), 0);
    ck_assert_double_eq(gw_value_map_get(&one, "out")->u, 0);
    ck_assert_str_eq(gw_value_map_get(&one, "unit")->s.p, "°C");
    ck_assert_ptr_null(gw_value_map_get(&one, "in"));
    gw_value_fini(&one);
    struct gw_value v = gw_value_double(21.5);
    gw_registry_publish(reg, tid, &v, 1000);
    spin();
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_one(reg, r, &w);
    ck_assert_int_gt(gw_value_decode(buf, w.len, &one), 0);
    ck_assert_double_eq(gw_value_map_get(&one, "out")->d, 21.5);
    gw_value_fini(&one);
}
END_TEST

static void on_sub_ignore(void *arg, struct gw_res *res, const struct gw_value *v)
{
    (void)arg;
    (void)res;
    (void)v;
}

/* A describe callback: its keys come after the stored meta ones; it counts its calls. */
static int describe_calls;

static void describe_point(void *ctx, struct gw_value *meta)
{
    describe_calls++;
    *gw_value_map_set(meta, "source", 6) = gw_value_cstr((const char *)ctx);
    *gw_value_map_set(meta, "interval_ms", 11) = gw_value_uint(250);
}

START_TEST(test_registry_describe_callback_and_compact_samples)
{
    static char src[] = "holding 40001 uint16";
    struct gw_resource_desc d = desc("m/p1", GW_FN_INOUT, run_inc);
    struct gw_value in = gw_value_cstr("sample in"), out = gw_value_map(),
                    meta = gw_value_map();
    *gw_value_map_set(&out, "x", 1) = gw_value_int(-7);
    *gw_value_map_set(&meta, "unit", 4) = gw_value_cstr("V");
    d.in = &in;
    d.out = &out;
    d.meta = &meta;
    d.describe = describe_point;
    d.ctx = src;
    describe_calls = 0;
    ck_assert_int_eq(gw_registry_add(reg, &d, NULL), 0);
    gw_value_fini(&in);
    gw_value_fini(&out);
    gw_value_fini(&meta);
    ck_assert_int_eq(describe_calls, 0); /* only when asked */

    struct gw_res *r = gw_registry_find(reg, "m/p1", 4);
    ck_assert_ptr_nonnull(r);
    uint8_t buf[512];
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_one(reg, r, &w);
    ck_assert_int_eq(describe_calls, 1);
    struct gw_value one;
    ck_assert_int_eq(gw_value_decode(buf, w.len, &one), (int)w.len);
    ck_assert_uint_eq(gw_value_count(&one), 5);
    ck_assert_str_eq(one.c.keys[0], "in");
    ck_assert_str_eq(one.c.keys[1], "out");
    ck_assert_str_eq(one.c.keys[2], "unit");
    ck_assert_str_eq(one.c.keys[3], "source");
    ck_assert_str_eq(one.c.keys[4], "interval_ms");
    ck_assert_str_eq(gw_value_map_get(&one, "in")->s.p, "sample in");
    ck_assert_int_eq(gw_value_map_get(gw_value_map_get(&one, "out"), "x")->i, -7);
    ck_assert_str_eq(gw_value_map_get(&one, "unit")->s.p, "V");
    ck_assert_str_eq(gw_value_map_get(&one, "source")->s.p, src);
    ck_assert_uint_eq(gw_value_map_get(&one, "interval_ms")->u, 250);
    gw_value_fini(&one);

    /* A resource kept by a subscription after removal: no callback into the gone owner. */
    struct gw_sub *sub = gw_res_subscribe(r, on_sub_ignore, NULL);
    gw_registry_remove_owner(reg, NULL);
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_one(reg, r, &w);
    ck_assert_int_eq(describe_calls, 1);
    ck_assert_int_eq(gw_value_decode(buf, w.len, &one), (int)w.len);
    ck_assert_uint_eq(gw_value_count(&one), 3); /* in, out, unit */
    ck_assert_ptr_null(gw_value_map_get(&one, "source"));
    gw_value_fini(&one);
    gw_sub_free(sub);
}
END_TEST

static int done_count, done_rc;
static double done_value;
static char done_msg[256];

static void on_done(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    (void)arg;
    done_count++;
    done_rc = rc;
    done_value = -1;
    if (out)
        gw_value_to_double(out, &done_value);
    snprintf(done_msg, sizeof done_msg, "%s", msg);
}

START_TEST(test_registry_call_answers_later_never_inline)
{
    struct gw_resource_desc d = desc("inc", GW_FN_INOUT, run_inc);
    gw_registry_add(reg, &d, NULL);
    done_count = 0;
    struct gw_value in = gw_value_uint(41);
    gw_registry_call(reg, gw_registry_find(reg, "inc", 3), &in, NULL, on_done, NULL);
    ck_assert_int_eq(done_count, 0); /* answered at once, delivered later */
    spin();
    ck_assert_int_eq(done_count, 1);
    ck_assert_int_eq(done_rc, 0);
    ck_assert_double_eq(done_value, 42);
}
END_TEST

START_TEST(test_registry_call_refused_and_cancelled)
{
    struct gw_resource_desc d = desc("ro", GW_FN_OUTPUT, run_refuse);
    gw_registry_add(reg, &d, NULL);
    done_count = 0;
    gw_registry_call(reg, gw_registry_find(reg, "ro", 2), NULL, NULL, on_done, NULL);
    spin();
    ck_assert_int_eq(done_count, 1);
    ck_assert_int_eq(done_rc, GW_EREADONLY);
    ck_assert_str_eq(done_msg, gw_strerror(GW_EREADONLY));

    struct gw_resource_desc i = desc("inc", GW_FN_INOUT, run_inc);
    gw_registry_add(reg, &i, NULL);
    struct gw_call *c = gw_registry_call(reg, gw_registry_find(reg, "inc", 3), NULL, NULL,
                                         on_done, NULL);
    gw_call_cancel(c);
    spin();
    ck_assert_int_eq(done_count, 1); /* the cancelled call reported nothing */
    struct gw_registry_stats st;
    gw_registry_get_stats(reg, &st);
    ck_assert_uint_eq(st.failed.count, 1);  /* the refused call */
    ck_assert_uint_eq(st.ok.count, 1);      /* the cancelled one still ended, and is counted */
    ck_assert_uint_eq(st.cancelled, 1);
    ck_assert_uint_eq(st.ok.buckets[GW_REGISTRY_LAT_BUCKETS - 1], 1); /* +Inf holds every call */
    ck_assert_uint_eq(st.resources, 2);
}
END_TEST

/* A slow device: answers from a worker thread after 20 ms. */
static struct gw_call *pending;
static void *worker(void *arg)
{
    (void)arg;
    usleep(20000);
    gw_call_fail(pending, GW_ETIMEDOUT, "device %s did not answer", "plc1");
    return NULL;
}

static int run_slow(void *ctx, struct gw_call *call)
{
    pthread_t *th = ctx;
    pending = call;
    pthread_create(th, NULL, worker, NULL);
    return 0;
}

static void stop_when_done(void *arg, int rc, const struct gw_value *out, const char *msg)
{
    on_done(arg, rc, out, msg);
    gw_loop_stop(loop);
}

START_TEST(test_registry_call_answered_from_worker_thread)
{
    pthread_t th;
    struct gw_resource_desc d = desc("slow", GW_FN_OUTPUT, run_slow);
    d.ctx = &th;
    gw_registry_add(reg, &d, NULL);
    done_count = 0;
    gw_registry_call(reg, gw_registry_find(reg, "slow", 4), NULL, NULL, stop_when_done, NULL);
    gw_loop_run(loop);
    pthread_join(th, NULL);
    ck_assert_int_eq(done_count, 1);
    ck_assert_int_eq(done_rc, GW_ETIMEDOUT);
    ck_assert_str_eq(done_msg, "device plc1 did not answer");
}
END_TEST

static int notified, removed_notices;
static struct gw_sub *sub;

static void on_change(void *arg, struct gw_res *res, const struct gw_value *v)
{
    (void)arg;
    (void)res;
    if (!v) {
        removed_notices++;
        gw_sub_free(sub);
        return;
    }
    notified++;
}

START_TEST(test_registry_publish_notifies_and_removal_is_safe)
{
    pthread_t th;
    int owner;
    struct gw_resource_desc d = desc("dev/x", GW_FN_OUTPUT, run_slow);
    d.ctx = &th;
    d.owner = &owner;
    uint32_t id;
    gw_registry_add(reg, &d, &id);
    struct gw_res *r = gw_registry_find(reg, "dev/x", 5);
    sub = gw_res_subscribe(r, on_change, NULL);
    struct gw_value v = gw_value_uint(1);
    gw_registry_publish(reg, id, &v, 5);
    spin();
    ck_assert_int_eq(notified, 1);
    uint64_t ts;
    bool stale;
    ck_assert(gw_res_last(r, NULL, &ts, &stale));
    ck_assert_uint_eq(ts, 5);
    gw_registry_mark_stale(reg, id);
    spin();
    gw_res_last(r, NULL, &ts, &stale);
    ck_assert(stale);

    /* a call is running in the worker when the owner is removed: its late answer is harmless */
    done_count = 0;
    gw_registry_call(reg, r, NULL, NULL, on_done, NULL);
    gw_registry_remove_owner(reg, &owner);
    ck_assert_int_eq(removed_notices, 1);
    ck_assert_ptr_null(gw_registry_find(reg, "dev/x", 5));
    ck_assert_uint_eq(gw_registry_count(reg), 0);
    pthread_join(th, NULL);
    spin();
    ck_assert_int_eq(done_count, 1); /* still reported to the caller, who may drop it */
    /* publishing to a removed id is ignored */
    v = gw_value_uint(2);
    gw_registry_publish(reg, id, &v, 6);
    spin();
    ck_assert_int_eq(notified, 1);
}
END_TEST

static int batch_notified;
static double batch_last;

static void on_batch_value(void *arg, struct gw_res *res, const struct gw_value *v)
{
    (void)arg;
    (void)res;
    if (v) {
        batch_notified++;
        gw_value_to_double(v, &batch_last);
    }
}

struct batch_job {
    struct gw_publish_batch *b;
    uint32_t ids[2];
};

/* A worker thread fills a batch and hands it over once: every value arrives, in order. */
static void *batch_worker(void *arg)
{
    struct batch_job *j = arg;
    for (int i = 1; i <= 1000; i++) {
        struct gw_value v = gw_value_uint((uint64_t)i);
        gw_publish_batch_add(j->b, j->ids[i % 2], &v, (uint64_t)i);
    }
    gw_publish_batch_add_stale(j->b, j->ids[0]);
    ck_assert_uint_eq(gw_publish_batch_count(j->b), 1001);
    gw_registry_publish_batch(reg, j->b);
    ck_assert_uint_eq(gw_publish_batch_count(j->b), 0); /* emptied, reusable */
    return NULL;
}

START_TEST(test_registry_publish_batch_from_worker)
{
    struct batch_job j = {.b = gw_publish_batch_new()};
    struct gw_resource_desc d0 = desc("b/even", GW_FN_OUTPUT, run_inc);
    struct gw_resource_desc d1 = desc("b/odd", GW_FN_OUTPUT, run_inc);
    gw_registry_add(reg, &d0, &j.ids[0]);
    gw_registry_add(reg, &d1, &j.ids[1]);
    struct gw_sub *s1 = gw_res_subscribe(gw_registry_find(reg, "b/odd", 5), on_batch_value, NULL);
    pthread_t th;
    pthread_create(&th, NULL, batch_worker, &j);
    pthread_join(th, NULL);
    spin();
    ck_assert_int_eq(batch_notified, 500);
    ck_assert_double_eq(batch_last, 999); /* the last odd value, so order was kept */
    uint64_t ts;
    bool stale;
    struct gw_value even;
    ck_assert(gw_res_last(gw_registry_find(reg, "b/even", 6), &even, &ts, &stale));
    ck_assert_uint_eq(even.u, 1000);
    ck_assert(stale); /* the stale mark came after the last even value */
    struct gw_registry_stats st;
    gw_registry_get_stats(reg, &st);
    ck_assert_uint_eq(st.publishes, 1001);
    gw_sub_free(s1);
    gw_publish_batch_free(j.b);
}
END_TEST

START_TEST(test_registry_describe_10000)
{
    char name[64];
    for (int i = 0; i < 10000; i++) {
        snprintf(name, sizeof name, "modbus/dev%03d/reg%02d", i / 100, i % 100);
        struct gw_resource_desc d = desc(name, GW_FN_OUTPUT, run_inc);
        ck_assert_int_eq(gw_registry_add(reg, &d, NULL), 0);
    }
    static uint8_t buf[1 << 20];
    struct gw_pson_writer w;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_all(reg, &w);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ck_assert(gw_pson_writer_ok(&w));
    struct gw_value all;
    ck_assert_int_eq(gw_value_decode(buf, w.len, &all), (int)w.len);
    ck_assert_uint_eq(gw_value_count(&all), 10000);
    for (size_t i = 1; i < all.c.n; i++)
        ck_assert_int_lt(strcmp(all.c.keys[i - 1], all.c.keys[i]), 0);
    gw_value_fini(&all);
    printf("DESCRIBE of 10000 resources: %zu bytes in %.2f ms (first, includes sorting)\n", w.len,
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6);
}
END_TEST

/* --- 100,000 resources (issue 11: the compact entries and the 32-bit table) --- */

#define BIG_MAX 100000

/* 100,000 natively and with sanitizers; 10,000 under valgrind (valgrind.unit), where the same
 * paths are checked for memory errors and 100,000 took two minutes on a loaded machine. */
static size_t big_n = BIG_MAX;

static int big_owner[3];

/* Answers with its context (the resource's number + 1). */
static int run_ctx(void *ctx, struct gw_call *call)
{
    struct gw_value out = gw_value_uint((uint64_t)(uintptr_t)ctx);
    gw_call_reply(call, &out);
    return 0;
}

static int run_ctx_other(void *ctx, struct gw_call *call)
{
    struct gw_value out = gw_value_int(-(int64_t)(uintptr_t)ctx);
    gw_call_reply(call, &out);
    return 0;
}

static void big_name(char *buf, size_t cap, size_t i)
{
    snprintf(buf, cap, "big/d%zup%zu", i / 100, i % 100);
}

/* The value published to resource i in round k (0 or 1): every kind of value in turn, so the
 * second round turns scalars into heap values, heap values into other heap values or into
 * scalars, and so on. */
static struct gw_value big_value(size_t i, int k)
{
    char s[48];
    switch ((i + (size_t)k) % 8) {
    case 0:
        return gw_value_bool(i % 16 < 8);
    case 1:
        return gw_value_uint(i * 1000003u);
    case 2:
        return gw_value_int(-(int64_t)i - 5);
    case 3:
        return gw_value_double((double)i + 0.25);
    case 4:
        snprintf(s, sizeof s, "text %zu/%d", i, k);
        return gw_value_cstr(s);
    case 5: {
        struct gw_value m = gw_value_map();
        *gw_value_map_set(&m, "i", 1) = gw_value_uint(i);
        *gw_value_map_set(&m, "k", 1) = gw_value_int(k);
        return m;
    }
    case 6:
        return gw_value_bytes(&i, sizeof i);
    default:
        return GW_VALUE_INIT_NULL;
    }
}

static void check_big_last(struct gw_res *r, size_t i, int k)
{
    struct gw_value want = big_value(i, k), got;
    uint64_t ts = 0;
    bool stale = true;
    ck_assert(gw_res_last(r, &got, &ts, &stale));
    ck_assert_int_eq(got.type, want.type);
    if (!gw_value_equal(&got, &want))
        ck_abort_msg("resource %zu: last value differs in round %d", i, k);
    ck_assert_uint_eq(ts, 1700000000000ull + i + (uint64_t)k);
    ck_assert(!stale);
    gw_value_fini(&want);
}

static size_t big_sub_calls;
static void on_big_sub(void *arg, struct gw_res *res, const struct gw_value *v)
{
    (void)res;
    if (v) {
        big_sub_calls++;
        gw_value_copy((struct gw_value *)arg, v);
    }
}

START_TEST(test_registry_100000_resources)
{
    static uint32_t ids[BIG_MAX];
    big_n = RUNNING_ON_VALGRIND ? 10000 : BIG_MAX;
    char name[48];
    struct gw_value sample = gw_value_uint(0), in = gw_value_bool(false);
    for (size_t i = 0; i < big_n; i++) {
        big_name(name, sizeof name, i);
        /* owners interleaved, two run functions, samples on some */
        struct gw_resource_desc d = desc(name, i % 5 ? GW_FN_OUTPUT : GW_FN_INOUT,
                                         i % 2 ? run_ctx : run_ctx_other);
        d.ctx = (void *)(uintptr_t)(i + 1);
        d.owner = &big_owner[i % 3];
        d.out = i % 4 ? &sample : NULL;
        d.in = i % 5 ? NULL : (i % 10 ? &in : &sample);
        d.not_streamable = i % 7 == 0;
        ck_assert_int_eq(gw_registry_add(reg, &d, &ids[i]), 0);
    }
    ck_assert_uint_eq(gw_registry_count(reg), big_n);
    big_name(name, sizeof name, big_n / 2 + 345); /* an existing name */
    struct gw_resource_desc dup = desc(name, GW_FN_OUTPUT, run_ctx);
    ck_assert_int_eq(gw_registry_add(reg, &dup, NULL), GW_EEXIST);

    /* Lookups by name and id agree for every resource; unknown names and ids are not found. */
    for (size_t i = 0; i < big_n; i++) {
        big_name(name, sizeof name, i);
        struct gw_res *r = gw_registry_find(reg, name, strlen(name));
        ck_assert_ptr_nonnull(r);
        ck_assert_ptr_eq(gw_registry_find_id(reg, ids[i]), r);
        ck_assert_uint_eq(gw_res_id(r), ids[i]);
        ck_assert_str_eq(gw_res_name(r), name);
        ck_assert_int_eq(gw_res_fn(r), i % 5 ? GW_FN_OUTPUT : GW_FN_INOUT);
        ck_assert(gw_res_streamable(r) == (i % 7 != 0));
        ck_assert(!gw_res_last(r, NULL, NULL, NULL));
    }
    ck_assert_ptr_null(gw_registry_find(reg, "big/d1p100", 10));
    ck_assert_ptr_null(gw_registry_find(reg, "big/d1p1\0x", 10)); /* a NUL inside */
    ck_assert_ptr_null(gw_registry_find(reg, "big/d1p", 7));
    ck_assert_ptr_null(gw_registry_find_id(reg, 0));
    ck_assert_ptr_null(gw_registry_find_id(reg, 0x80000000u | ids[7]));

    /* Calls reach each resource's own run function and context (interned per kind). */
    for (size_t i = 0; i < 10; i++) {
        size_t k = i * 9973 % big_n;
        struct gw_registry_stats st0;
        gw_registry_get_stats(reg, &st0);
        done_count = 0;
        gw_registry_call(reg, gw_registry_find_id(reg, ids[k]), NULL, NULL, on_done, NULL);
        spin();
        ck_assert_int_eq(done_count, 1);
        ck_assert_int_eq(done_rc, 0);
        ck_assert_double_eq(done_value, k % 2 ? (double)(k + 1) : -(double)(k + 1));
    }

    /* Two rounds of values of every type, in one batch each. */
    struct gw_value seen = GW_VALUE_INIT_NULL;
    struct gw_sub *s = gw_res_subscribe(gw_registry_find_id(reg, ids[4]), on_big_sub, &seen);
    for (int k = 0; k < 2; k++) {
        struct gw_publish_batch *b = gw_publish_batch_new();
        for (size_t i = 0; i < big_n; i++) {
            struct gw_value v = big_value(i, k);
            gw_publish_batch_add(b, ids[i], &v, 1700000000000ull + i + (uint64_t)k);
        }
        gw_registry_publish_batch(reg, b);
        gw_publish_batch_free(b);
        spin();
        for (size_t i = 0; i < big_n; i++)
            check_big_last(gw_registry_find_id(reg, ids[i]), i, k);
        struct gw_value want = big_value(4, k);
        ck_assert(gw_value_equal(&seen, &want)); /* the subscriber saw the same value */
        gw_value_fini(&want);
        gw_value_fini(&seen);
    }
    ck_assert_uint_eq(big_sub_calls, 2);
    gw_sub_free(s);

    /* Stale marks: kept with the value, cleared by the next value. */
    for (size_t i = 0; i < big_n; i += 10)
        gw_registry_mark_stale(reg, ids[i]);
    spin();
    for (size_t i = 0; i < big_n; i++) {
        bool stale = false;
        struct gw_value v;
        ck_assert(gw_res_last(gw_registry_find_id(reg, ids[i]), &v, NULL, &stale));
        ck_assert(stale == (i % 10 == 0));
    }
    struct gw_value v = gw_value_double(-1.5);
    gw_registry_publish(reg, ids[20], &v, 5);
    spin();
    bool stale = true;
    uint64_t ts = 0;
    struct gw_value last;
    ck_assert(gw_res_last(gw_registry_find_id(reg, ids[20]), &last, &ts, &stale));
    ck_assert(!stale);
    ck_assert_uint_eq(ts, 5);
    ck_assert_double_eq(last.d, -1.5);

    /* DESCRIBE all: every resource in name order with its id; DESCRIBE one: the last value as
     * "out", the configured sample as "in". */
    static uint8_t buf[4 << 20];
    struct gw_pson_writer w;
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_all(reg, &w);
    ck_assert(gw_pson_writer_ok(&w));
    struct gw_value all;
    ck_assert_int_eq(gw_value_decode(buf, w.len, &all), (int)w.len);
    ck_assert_uint_eq(gw_value_count(&all), big_n);
    for (size_t i = 1; i < all.c.n; i++)
        ck_assert_int_lt(strcmp(all.c.keys[i - 1], all.c.keys[i]), 0);
    for (size_t i = 0; i < big_n; i += 997) {
        big_name(name, sizeof name, i);
        const struct gw_value *e = gw_value_map_get(&all, name);
        ck_assert_ptr_nonnull(e);
        ck_assert_uint_eq(gw_value_map_get(e, "id")->u, ids[i]);
        ck_assert_uint_eq(gw_value_map_get(e, "fn")->u, i % 5 ? GW_FN_OUTPUT : GW_FN_INOUT);
        ck_assert(gw_value_map_get(e, "st") ? i % 7 == 0 : i % 7 != 0);
    }
    gw_value_fini(&all);
    /* still found after the array was sorted (the slots were renumbered) */
    for (size_t i = 0; i < big_n; i++)
        ck_assert_uint_eq(gw_res_id(gw_registry_find_id(reg, ids[i])), ids[i]);
    for (size_t i = 0; i < 20; i++) { /* INOUT ones: "in" is false or 0, "out" the last value */
        struct gw_res *r = gw_registry_find_id(reg, ids[i * 5]);
        gw_pson_writer_init(&w, buf, sizeof buf);
        gw_registry_describe_one(reg, r, &w);
        struct gw_value one, lv;
        ck_assert_int_eq(gw_value_decode(buf, w.len, &one), (int)w.len);
        const struct gw_value *inv = gw_value_map_get(&one, "in");
        ck_assert_int_eq(inv->type, i % 2 ? GW_VALUE_BOOL : GW_VALUE_UINT);
        ck_assert(gw_res_last(r, &lv, NULL, NULL));
        ck_assert(gw_value_equal(gw_value_map_get(&one, "out"), &lv));
        gw_value_fini(&one);
    }

    /* remove_owner: only that owner's resources go; the rest are still found both ways. */
    gw_registry_remove_owner(reg, &big_owner[1]);
    ck_assert_uint_eq(gw_registry_count(reg), big_n - big_n / 3);
    for (size_t i = 0; i < big_n; i++) {
        big_name(name, sizeof name, i);
        struct gw_res *r = gw_registry_find(reg, name, strlen(name));
        if (i % 3 == 1) {
            ck_assert_ptr_null(r);
            ck_assert_ptr_null(gw_registry_find_id(reg, ids[i]));
        } else {
            ck_assert_ptr_nonnull(r);
            ck_assert_ptr_eq(gw_registry_find_id(reg, ids[i]), r);
        }
    }
    v = gw_value_uint(1); /* a value for a removed id is dropped */
    gw_registry_publish(reg, ids[1], &v, 1);
    spin();
    /* the owner comes back with the same names: the same ids (decision 14.12) */
    for (size_t i = 1; i < big_n; i += 3) {
        big_name(name, sizeof name, i);
        struct gw_resource_desc d = desc(name, GW_FN_OUTPUT, run_ctx);
        d.owner = &big_owner[1];
        uint32_t id;
        ck_assert_int_eq(gw_registry_add(reg, &d, &id), 0);
        ck_assert_uint_eq(id, ids[i]);
    }
    ck_assert_uint_eq(gw_registry_count(reg), big_n);
    gw_registry_remove_owner(reg, &big_owner[0]);
    gw_registry_remove_owner(reg, &big_owner[2]);
    ck_assert_uint_eq(gw_registry_count(reg), big_n / 3);
}
END_TEST

/* FNV-1a 32 masked to 31 bits (decision 14.12), to find two names with the same id. */
static uint32_t fnv31(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    h &= 0x7fffffff;
    return h ? h : 1;
}

START_TEST(test_registry_id_collision_probes_and_lookups)
{
    /* Two names with the same 31-bit FNV-1a (found by a search over "c/<n>": the first pair
     * among n < 1,000,000; checked here). */
    const char *a = "c/73522", *b = "c/551080";
    uint32_t h = fnv31(a);
    ck_assert_uint_eq(fnv31(b), h);
    int oa, ob;
    struct gw_resource_desc da = desc(a, GW_FN_OUTPUT, run_inc);
    struct gw_resource_desc db = desc(b, GW_FN_OUTPUT, run_inc);
    da.owner = &oa;
    db.owner = &ob;
    uint32_t ida, idb;
    ck_assert_int_eq(gw_registry_add(reg, &da, &ida), 0);
    ck_assert_int_eq(gw_registry_add(reg, &db, &idb), 0);
    ck_assert_uint_eq(ida, h);
    ck_assert_uint_eq(idb, h + 1 <= 0x7fffffff ? h + 1 : 1); /* probed past the first */
    struct gw_res *ra = gw_registry_find(reg, a, strlen(a));
    struct gw_res *rb = gw_registry_find(reg, b, strlen(b));
    ck_assert_ptr_nonnull(ra);
    ck_assert_ptr_nonnull(rb);
    ck_assert_ptr_ne(ra, rb);
    ck_assert_ptr_eq(gw_registry_find_id(reg, ida), ra);
    ck_assert_ptr_eq(gw_registry_find_id(reg, idb), rb);
    /* the first goes: the second keeps its id and is still found by name */
    gw_registry_remove_owner(reg, &oa);
    ck_assert_ptr_null(gw_registry_find(reg, a, strlen(a)));
    ck_assert_ptr_eq(gw_registry_find(reg, b, strlen(b)), rb);
    ck_assert_ptr_eq(gw_registry_find_id(reg, idb), rb);
    ck_assert_ptr_null(gw_registry_find_id(reg, ida));
    /* back again: it takes its own id, free now */
    ck_assert_int_eq(gw_registry_add(reg, &da, &ida), 0);
    ck_assert_uint_eq(ida, h);
    ck_assert_ptr_eq(gw_registry_find_id(reg, ida), gw_registry_find(reg, a, strlen(a)));
    ck_assert_ptr_eq(gw_registry_find(reg, b, strlen(b)), rb);
    /* the moved one goes; the other stays */
    gw_registry_remove_owner(reg, &ob);
    ck_assert_ptr_null(gw_registry_find(reg, b, strlen(b)));
    ck_assert_ptr_null(gw_registry_find_id(reg, idb));
    ck_assert_ptr_nonnull(gw_registry_find(reg, a, strlen(a)));
    ck_assert_uint_eq(gw_registry_count(reg), 1);
}
END_TEST

/* A run function per owner would be unusual; distinct owners are what fill the kinds table. */
START_TEST(test_registry_kinds_limit_and_reuse)
{
    enum { KINDS = 65536 };
    static char owners[KINDS + 200];
    char name[32];
    for (size_t i = 0; i < KINDS; i++) {
        snprintf(name, sizeof name, "o/%zu", i);
        struct gw_resource_desc d = desc(name, GW_FN_OUTPUT, run_ctx);
        d.owner = &owners[i];
        d.ctx = (void *)(uintptr_t)(i + 1);
        ck_assert_int_eq(gw_registry_add(reg, &d, NULL), 0);
    }
    struct gw_resource_desc d = desc("o/more", GW_FN_OUTPUT, run_ctx);
    d.owner = &owners[KINDS];
    ck_assert_int_eq(gw_registry_add(reg, &d, NULL), GW_ENOSPC);
    d.owner = &owners[7]; /* an existing owner: its kind is shared */
    ck_assert_int_eq(gw_registry_add(reg, &d, NULL), 0);
    /* 100 owners go; 100 new ones take their places, then the table is full again */
    for (size_t i = 1000; i < 1100; i++)
        gw_registry_remove_owner(reg, &owners[i]);
    for (size_t i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "n/%zu", i);
        struct gw_resource_desc n = desc(name, GW_FN_OUTPUT, run_ctx_other);
        n.owner = &owners[KINDS + i];
        n.ctx = (void *)(uintptr_t)(i + 1);
        ck_assert_int_eq(gw_registry_add(reg, &n, NULL), 0);
    }
    d.name = "o/more2";
    d.owner = &owners[KINDS + 150];
    ck_assert_int_eq(gw_registry_add(reg, &d, NULL), GW_ENOSPC);
    /* existing kinds are still found after the deletions (no duplicate made: it would not fit) */
    for (size_t i = 0; i < KINDS; i++) {
        if (i >= 1000 && i < 1100)
            continue;
        snprintf(name, sizeof name, "x/%zu", i);
        d.name = name;
        d.owner = &owners[i];
        ck_assert_int_eq(gw_registry_add(reg, &d, NULL), 0);
    }
    /* every resource still calls its own function with its own context */
    struct {
        const char *name;
        double want;
    } calls[] = {{"o/0", 1}, {"o/999", 1000}, {"o/1100", 1101}, {"o/65535", 65536},
                 {"n/0", -1}, {"n/99", -100}};
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        done_count = 0;
        gw_registry_call(reg, gw_registry_find(reg, calls[i].name, strlen(calls[i].name)), NULL,
                         NULL, on_done, NULL);
        spin();
        ck_assert_int_eq(done_count, 1);
        ck_assert_double_eq(done_value, calls[i].want);
    }
    ck_assert_ptr_null(gw_registry_find(reg, "o/1050", 6));
    gw_registry_remove_owner(reg, &owners[KINDS + 5]);
    ck_assert_ptr_null(gw_registry_find(reg, "n/5", 3));
    ck_assert_ptr_nonnull(gw_registry_find(reg, "n/6", 3));
}
END_TEST

static Suite *registry_suite(void)
{
    Suite *s = suite_create("registry");
    TCase *tc = tcase_create("registry");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_registry_add_find_and_stable_ids);
    tcase_add_test(tc, test_registry_describe_all_and_one);
    tcase_add_test(tc, test_registry_describe_callback_and_compact_samples);
    tcase_add_test(tc, test_registry_call_answers_later_never_inline);
    tcase_add_test(tc, test_registry_call_refused_and_cancelled);
    tcase_add_test(tc, test_registry_call_answered_from_worker_thread);
    tcase_add_test(tc, test_registry_publish_notifies_and_removal_is_safe);
    tcase_add_test(tc, test_registry_publish_batch_from_worker);
    tcase_add_test(tc, test_registry_describe_10000);
    tcase_add_test(tc, test_registry_100000_resources);
    tcase_add_test(tc, test_registry_id_collision_probes_and_lookups);
    tcase_add_test(tc, test_registry_kinds_limit_and_reuse);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(registry_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
