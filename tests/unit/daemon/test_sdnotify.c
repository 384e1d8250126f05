/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gw_sdnotify_*: messages arrive byte for byte on a real datagram socket bound where
 * $NOTIFY_SOCKET points (filesystem path and abstract namespace), bad addresses are refused with
 * a code, and the watchdog variables are read the way systemd writes them.
 */
#include "sdnotify.h"

#include "gw/error.h"

#include <check.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char dir[64];
static int rx = -1;

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/gw-sdnotify-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
}

static void teardown(void)
{
    char path[128];
    if (rx >= 0)
        close(rx);
    rx = -1;
    snprintf(path, sizeof path, "%s/notify", dir);
    unlink(path);
    rmdir(dir);
}

/* Binds the receiving socket: a path, or an abstract name when abstract is set. */
static void bind_receiver(const char *name, int abstract)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    socklen_t len;
    rx = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(rx, 0);
    if (abstract) {
        memcpy(sa.sun_path + 1, name, strlen(name));
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
    } else {
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", name);
        len = sizeof sa;
    }
    ck_assert_int_eq(bind(rx, (struct sockaddr *)&sa, len), 0);
}

/* Receives one datagram (waits at most 2 s) into buf as a string. */
static void receive(char *buf, size_t size)
{
    struct pollfd p = {.fd = rx, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 2000), 1);
    ssize_t n = recv(rx, buf, size - 1, 0);
    ck_assert_int_ge(n, 0);
    buf[n] = '\0';
}

/* Nothing is waiting on the receiver. */
static void assert_nothing_received(void)
{
    struct pollfd p = {.fd = rx, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 0), 0);
}

/* --- sending --- */

START_TEST(test_sdnotify_send_to_path_socket)
{
    char path[128], buf[256];
    snprintf(path, sizeof path, "%s/notify", dir);
    bind_receiver(path, 0);
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(gw_sdnotify_send("READY=1\nSTATUS=2 adapters, uplink connecting"), 1);
    receive(buf, sizeof buf);
    ck_assert_str_eq(buf, "READY=1\nSTATUS=2 adapters, uplink connecting");
    ck_assert_int_eq(gw_sdnotify_send("WATCHDOG=1"), 1);
    receive(buf, sizeof buf);
    ck_assert_str_eq(buf, "WATCHDOG=1");
}
END_TEST

START_TEST(test_sdnotify_send_to_abstract_socket)
{
    char name[64], env[80], buf[256];
    snprintf(name, sizeof name, "gw-sdnotify-test-%d", (int)getpid());
    bind_receiver(name, 1);
    snprintf(env, sizeof env, "@%s", name);
    setenv("NOTIFY_SOCKET", env, 1);
    ck_assert_int_eq(gw_sdnotify_sendf("STATUS=%d resource(s)", 42), 1);
    receive(buf, sizeof buf);
    ck_assert_str_eq(buf, "STATUS=42 resource(s)");
}
END_TEST

START_TEST(test_sdnotify_send_without_socket_is_noop)
{
    ck_assert_int_eq(gw_sdnotify_send("READY=1"), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    ck_assert_int_eq(gw_sdnotify_send("READY=1"), 0);
}
END_TEST

START_TEST(test_sdnotify_send_rejects_bad_addresses)
{
    char path[128];
    setenv("NOTIFY_SOCKET", "relative/notify", 1);
    ck_assert_int_eq(gw_sdnotify_send("READY=1"), GW_EINVAL);
    setenv("NOTIFY_SOCKET", "@", 1);
    ck_assert_int_eq(gw_sdnotify_send("READY=1"), GW_EINVAL);
    setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
    ck_assert_int_eq(gw_sdnotify_send("READY=1"), GW_ENOTSUP);
    char longpath[200];
    memset(longpath, 'a', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    setenv("NOTIFY_SOCKET", longpath, 1);
    ck_assert_int_eq(gw_sdnotify_send("READY=1"), GW_EINVAL);
    /* Absolute but nobody bound there: the kernel's answer comes back as a negated errno. */
    snprintf(path, sizeof path, "%s/nobody", dir);
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(gw_sdnotify_send("READY=1"), -ENOENT);
}
END_TEST

START_TEST(test_sdnotify_send_rejects_empty_and_oversized_messages)
{
    char path[128];
    snprintf(path, sizeof path, "%s/notify", dir);
    bind_receiver(path, 0);
    setenv("NOTIFY_SOCKET", path, 1);
    ck_assert_int_eq(gw_sdnotify_send(""), GW_EINVAL);
    ck_assert_int_eq(gw_sdnotify_send(NULL), GW_EINVAL);
    static char big[GW_SDNOTIFY_MAX_MSG + 2];
    memset(big, 'x', sizeof big - 1);
    ck_assert_int_eq(gw_sdnotify_sendf("STATUS=%s", big), GW_ENOBUFS);
    assert_nothing_received();
}
END_TEST

/* --- watchdog --- */

START_TEST(test_sdnotify_parse_usec)
{
    uint64_t v = 7;
    ck_assert_int_eq(gw_sdnotify_parse_usec("30000000", &v), 0);
    ck_assert_uint_eq(v, 30000000u);
    ck_assert_int_eq(gw_sdnotify_parse_usec("18446744073709551615", &v), 0);
    ck_assert(v == UINT64_MAX);
    v = 7;
    ck_assert_int_eq(gw_sdnotify_parse_usec("18446744073709551616", &v), GW_ERANGE);
    ck_assert_int_eq(gw_sdnotify_parse_usec("", &v), GW_EINVAL);
    ck_assert_int_eq(gw_sdnotify_parse_usec(NULL, &v), GW_EINVAL);
    ck_assert_int_eq(gw_sdnotify_parse_usec("0", &v), GW_EINVAL);
    ck_assert_int_eq(gw_sdnotify_parse_usec("-5", &v), GW_EINVAL);
    ck_assert_int_eq(gw_sdnotify_parse_usec("12s", &v), GW_EINVAL);
    ck_assert_int_eq(gw_sdnotify_parse_usec(" 12", &v), GW_EINVAL);
    ck_assert_uint_eq(v, 7u);
}
END_TEST

START_TEST(test_sdnotify_watchdog_for_this_process)
{
    uint64_t v = 0;
    char pid[32];
    ck_assert_int_eq(gw_sdnotify_watchdog_usec(&v), 0); /* no variables: no watchdog */
    setenv("WATCHDOG_USEC", "20000000", 1);
    ck_assert_int_eq(gw_sdnotify_watchdog_usec(&v), 1); /* no WATCHDOG_PID: ours */
    ck_assert_uint_eq(v, 20000000u);
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    v = 0;
    ck_assert_int_eq(gw_sdnotify_watchdog_usec(&v), 1);
    ck_assert_uint_eq(v, 20000000u);
}
END_TEST

START_TEST(test_sdnotify_watchdog_for_another_process)
{
    uint64_t v = 5;
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid() + 1);
    setenv("WATCHDOG_USEC", "20000000", 1);
    setenv("WATCHDOG_PID", pid, 1);
    ck_assert_int_eq(gw_sdnotify_watchdog_usec(&v), 0);
    ck_assert_uint_eq(v, 5u);
}
END_TEST

START_TEST(test_sdnotify_watchdog_malformed)
{
    uint64_t v = 5;
    setenv("WATCHDOG_USEC", "20s", 1);
    ck_assert_int_eq(gw_sdnotify_watchdog_usec(&v), GW_EINVAL);
    setenv("WATCHDOG_USEC", "0", 1);
    ck_assert_int_eq(gw_sdnotify_watchdog_usec(&v), GW_EINVAL);
    setenv("WATCHDOG_USEC", "20000000", 1);
    setenv("WATCHDOG_PID", "me", 1);
    ck_assert_int_eq(gw_sdnotify_watchdog_usec(&v), GW_EINVAL);
    ck_assert_uint_eq(v, 5u);
}
END_TEST

static Suite *sdnotify_suite(void)
{
    Suite *s = suite_create("sdnotify");
    TCase *tc = tcase_create("send");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_sdnotify_send_to_path_socket);
    tcase_add_test(tc, test_sdnotify_send_to_abstract_socket);
    tcase_add_test(tc, test_sdnotify_send_without_socket_is_noop);
    tcase_add_test(tc, test_sdnotify_send_rejects_bad_addresses);
    tcase_add_test(tc, test_sdnotify_send_rejects_empty_and_oversized_messages);
    suite_add_tcase(s, tc);
    tc = tcase_create("watchdog");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 10);
    tcase_add_test(tc, test_sdnotify_parse_usec);
    tcase_add_test(tc, test_sdnotify_watchdog_for_this_process);
    tcase_add_test(tc, test_sdnotify_watchdog_for_another_process);
    tcase_add_test(tc, test_sdnotify_watchdog_malformed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sdnotify_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
