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
#include <pthread.h>
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
    gw_registry_describe_one(r, &w);
    ck_assert_int_gt(gw_value_decode(buf, w.len, &one), 0);
    ck_assert_double_eq(gw_value_map_get(&one, "out")->u, 0);
    ck_assert_str_eq(gw_value_map_get(&one, "unit")->s.p, "°C");
    ck_assert_ptr_null(gw_value_map_get(&one, "in"));
    gw_value_fini(&one);
    struct gw_value v = gw_value_double(21.5);
    gw_registry_publish(reg, tid, &v, 1000);
    spin();
    gw_pson_writer_init(&w, buf, sizeof buf);
    gw_registry_describe_one(r, &w);
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
    gw_registry_describe_one(r, &w);
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
    gw_registry_describe_one(r, &w);
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
    ck_assert_ptr_nonnull(gw_res_last(r, &ts, &stale));
    ck_assert_uint_eq(ts, 5);
    gw_registry_mark_stale(reg, id);
    spin();
    gw_res_last(r, &ts, &stale);
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
    const struct gw_value *even = gw_res_last(gw_registry_find(reg, "b/even", 6), &ts, &stale);
    ck_assert_uint_eq(even->u, 1000);
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
