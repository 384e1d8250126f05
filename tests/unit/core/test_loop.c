/* SPDX-License-Identifier: Apache-2.0 */
/* The event loop on a real lws context: timers, posted tasks from threads, fd watches, signals. */
#include "gw/loop.h"

#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static struct gw_loop *loop;
static struct gw_timer *guard;

static void guard_fired(void *arg)
{
    (void)arg;
    ck_abort_msg("loop test did not finish within 5 s");
}

static void setup(void)
{
    ck_assert_int_eq(gw_loop_new(&loop), 0);
    guard = gw_timer_new(loop, guard_fired, NULL);
    gw_timer_start(guard, 5000);
}

static void teardown(void)
{
    gw_timer_free(guard);
    gw_loop_free(loop);
}

/* --- timers --- */

static int order[8], norder;
static uint64_t fired_at[8];

static void timer_cb(void *arg)
{
    int k = (int)(intptr_t)arg;
    fired_at[norder] = gw_loop_now_ms();
    order[norder++] = k;
    if (norder == 3)
        gw_loop_stop(loop);
}

START_TEST(test_loop_timers_fire_in_order)
{
    norder = 0;
    struct gw_timer *t[3];
    uint64_t start = gw_loop_now_ms();
    for (int i = 0; i < 3; i++)
        t[i] = gw_timer_new(loop, timer_cb, (void *)(intptr_t)i);
    gw_timer_start(t[2], 60);
    gw_timer_start(t[0], 20);
    gw_timer_start(t[1], 40);
    gw_loop_run(loop);
    ck_assert_int_eq(order[0], 0);
    ck_assert_int_eq(order[1], 1);
    ck_assert_int_eq(order[2], 2);
    ck_assert_uint_ge(fired_at[0] - start, 20); /* never early */
    for (int i = 0; i < 3; i++)
        gw_timer_free(t[i]);
}
END_TEST

static struct gw_timer *self_timer;
static int self_count;

static void self_free_cb(void *arg)
{
    (void)arg;
    if (++self_count < 3) {
        gw_timer_start(self_timer, 1); /* periodic by re-arming */
        return;
    }
    gw_timer_free(self_timer); /* freeing itself from its own callback */
    gw_loop_stop(loop);
}

START_TEST(test_loop_timer_rearm_and_free_in_callback)
{
    self_count = 0;
    self_timer = gw_timer_new(loop, self_free_cb, NULL);
    gw_timer_start(self_timer, 1);
    gw_loop_run(loop);
    ck_assert_int_eq(self_count, 3);
}
END_TEST

START_TEST(test_loop_timer_stop_prevents_firing)
{
    norder = 0;
    struct gw_timer *t = gw_timer_new(loop, timer_cb, (void *)(intptr_t)7);
    gw_timer_start(t, 10);
    ck_assert(gw_timer_armed(t));
    gw_timer_stop(t);
    ck_assert(!gw_timer_armed(t));
    struct gw_timer *s = gw_timer_new(loop, (gw_timer_fn)gw_loop_stop, loop);
    gw_timer_start(s, 50);
    gw_loop_run(loop);
    ck_assert_int_eq(norder, 0);
    gw_timer_free(t);
    gw_timer_free(s);
}
END_TEST

/* --- posted tasks --- */

#define THREADS 4
#define PER_THREAD 2000
static pthread_t loop_thread;
static int seen[THREADS], total_seen;
static bool wrong_thread, out_of_order;

struct item {
    int thread, seq;
};

static void task(void *arg)
{
    struct item *it = arg;
    if (!pthread_equal(pthread_self(), loop_thread))
        wrong_thread = true;
    if (it->seq != seen[it->thread])
        out_of_order = true;
    seen[it->thread]++;
    if (++total_seen == THREADS * PER_THREAD)
        gw_loop_stop(loop);
    free(it);
}

static void *producer(void *arg)
{
    int k = (int)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        struct item *it = malloc(sizeof *it);
        it->thread = k;
        it->seq = i;
        gw_loop_post(loop, task, it);
        if (i % 256 == 0)
            usleep(100);
    }
    return NULL;
}

START_TEST(test_loop_post_from_threads_runs_on_loop_in_order)
{
    loop_thread = pthread_self();
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, producer, (void *)(intptr_t)i);
    gw_loop_run(loop);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(total_seen, THREADS * PER_THREAD);
    ck_assert(!wrong_thread);
    ck_assert(!out_of_order);
}
END_TEST

/* --- fd watches --- */

static struct gw_watch *wr, *ww;
static struct gw_timer *stopper;
static int reads, writes;

static void on_readable(void *arg, int fd, unsigned ev)
{
    (void)arg;
    ck_assert(ev & GW_LOOP_IN);
    char buf[16];
    ck_assert_int_eq(read(fd, buf, sizeof buf), 3);
    reads++;
    gw_loop_unwatch(wr); /* from inside its own callback */
    gw_loop_stop(loop);
}

START_TEST(test_loop_watch_readable_and_unwatch_in_callback)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    wr = gw_loop_watch(loop, p[0], GW_LOOP_IN, on_readable, NULL);
    ck_assert_ptr_nonnull(wr);
    ck_assert_int_eq(write(p[1], "abc", 3), 3);
    gw_loop_run(loop);
    ck_assert_int_eq(reads, 1);
    close(p[0]); /* ours to close at once: lws had its own duplicate */
    close(p[1]);
}
END_TEST

static void on_writable(void *arg, int fd, unsigned ev)
{
    (void)arg;
    (void)fd;
    ck_assert(ev & GW_LOOP_OUT);
    if (++writes == 3) { /* level-triggered: keeps coming while requested */
        gw_loop_watch_set(ww, GW_LOOP_IN);
        stopper = gw_timer_new(loop, (gw_timer_fn)gw_loop_stop, loop);
        gw_timer_start(stopper, 50);
    }
}

START_TEST(test_loop_watch_writable_is_level_triggered_until_cleared)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ww = gw_loop_watch(loop, sv[0], GW_LOOP_OUT, on_writable, NULL);
    gw_loop_run(loop);
    ck_assert_int_eq(writes, 3); /* no more after clearing OUT */
    gw_timer_free(stopper);
    gw_loop_unwatch(ww);
    close(sv[0]);
    close(sv[1]);
}
END_TEST

/* --- signals --- */

static int got_signal;

static void on_sig(void *arg, int signo)
{
    (void)arg;
    got_signal = signo;
    gw_loop_stop(loop);
}

START_TEST(test_loop_signal_delivered_on_loop)
{
    ck_assert_int_eq(gw_loop_on_signal(loop, SIGUSR1, on_sig, NULL), 0);
    raise(SIGUSR1);
    gw_loop_run(loop);
    ck_assert_int_eq(got_signal, SIGUSR1);
}
END_TEST

static Suite *loop_suite(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = tcase_create("loop");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 20);
    tcase_add_test(tc, test_loop_timers_fire_in_order);
    tcase_add_test(tc, test_loop_timer_rearm_and_free_in_callback);
    tcase_add_test(tc, test_loop_timer_stop_prevents_firing);
    tcase_add_test(tc, test_loop_post_from_threads_runs_on_loop_in_order);
    tcase_add_test(tc, test_loop_watch_readable_and_unwatch_in_callback);
    tcase_add_test(tc, test_loop_watch_writable_is_level_triggered_until_cleared);
    tcase_add_test(tc, test_loop_signal_delivered_on_loop);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(loop_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
