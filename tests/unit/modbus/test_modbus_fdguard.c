/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Modbus adapter with every descriptor below 1100 taken: a TCP connection (our poll()-based
 * client, mbtcp.c) connects on a descriptor above FD_SETSIZE, and an RTU connection (libmodbus,
 * which waits with select() and would abort on such a descriptor) on a pseudo-terminal is
 * refused with "too many open files for libmodbus's select(): fd N >= 1024" instead of crashing
 * the process. Real adapter (create/start/stop/destroy on a real loop and registry), a real
 * listening socket on 127.0.0.1 and a real pty.
 */
#include "modbus_adapter.h"

#include "gw/json.h"
#include "gw/loop.h"
#include "gw/registry.h"

#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char logbuf[16384];

static void t_log(const struct gw_host *h, int level, const char *fmt, ...)
{
    (void)h;
    (void)level;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&log_mu);
    size_t n = strlen(logbuf);
    snprintf(logbuf + n, sizeof logbuf - n, "%s\n", line);
    pthread_mutex_unlock(&log_mu);
}

static void t_config_error(const struct gw_host *h, const char *ptr, const char *fmt, ...)
{
    (void)h;
    va_list ap;
    va_start(ap, fmt);
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ck_abort_msg("config error at %s: %s", ptr, msg);
}

static int log_has(const char *s)
{
    pthread_mutex_lock(&log_mu);
    int r = strstr(logbuf, s) != NULL;
    pthread_mutex_unlock(&log_mu);
    return r;
}

/* Waits up to 10 s for s in the log. */
static int wait_log(const char *s)
{
    for (int i = 0; i < 1000; i++) {
        if (log_has(s))
            return 1;
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

START_TEST(rtu_above_fd_setsize_is_refused_tcp_works)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < 1200) {
        fprintf(stderr, "skipped: hard RLIMIT_NOFILE %llu < 1200\n",
                (unsigned long long)rl.rlim_max);
        return;
    }
    if (rl.rlim_cur < 1200) {
        rl.rlim_cur = 1200;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    /* A pty for the RTU connection, a listening socket for the TCP one (the kernel completes the
     * handshake from the backlog: "connected" is logged without an accept). */
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    ck_assert_int_ge(master, 0);
    ck_assert_int_eq(grantpt(master), 0);
    ck_assert_int_eq(unlockpt(master), 0);
    char pts[64];
    ck_assert_int_eq(ptsname_r(master, pts, sizeof pts), 0);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(lfd, 8), 0);
    socklen_t al = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &al);
    unsigned port = ntohs(a.sin_port);

    int base = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(base, 0);
    for (int fd = 0; fd < 1100; fd++)
        if (fcntl(fd, F_GETFD) < 0)
            ck_assert_int_eq(dup2(base, fd), fd);

    char text[1024];
    snprintf(text, sizeof text,
             "{\"type\": \"modbus\", \"name\": \"plc1\", \"interval_ms\": 200, \"connections\": ["
             "{\"name\": \"serial\", \"rtu\": {\"device\": \"%s\", \"baud\": 19200}, \"devices\": "
             "[{\"name\": \"s\", \"unit\": 1, \"timeout_ms\": 100, \"points\": "
             "[{\"name\": \"sp\", \"address\": 40001}]}]},"
             "{\"name\": \"net\", \"tcp\": {\"host\": \"127.0.0.1\", \"port\": %u}, \"devices\": "
             "[{\"name\": \"t\", \"unit\": 1, \"timeout_ms\": 100, \"points\": "
             "[{\"name\": \"tp\", \"address\": 40001}]}]}]}",
             pts, port);
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    ck_assert_msg(j != NULL, "test JSON: %s", je.text);
    struct gw_value v;
    ck_assert_int_eq(gw_json_to_value(j, &v), 0);
    json_decref(j);
    struct gw_loop *loop;
    struct gw_registry *reg;
    ck_assert_int_eq(gw_loop_new(&loop), 0);
    ck_assert_int_eq(gw_registry_new(loop, &reg), 0);
    struct gw_host host = {.loop = loop, .registry = reg, .instance = "plc1", .log = t_log,
                           .config_error = t_config_error};
    void *st = NULL;
    ck_assert_int_eq(gw_modbus_adapter.create(&host, &v, &st), 0);
    gw_value_fini(&v);
    ck_assert_int_eq(gw_modbus_adapter.start(st), 0);

    char want[128];
    snprintf(want, sizeof want, "connected to 127.0.0.1:%u", port);
    int tcp_ok = wait_log(want);
    int rtu_refused = wait_log("too many open files for libmodbus's select(): fd ");
    gw_modbus_adapter.stop(st);
    gw_loop_drain(loop);
    gw_registry_remove_owner(reg, st);
    gw_modbus_adapter.destroy(st);
    gw_registry_free(reg);
    gw_loop_free(loop);
    ck_assert_msg(tcp_ok, "TCP connection above FD_SETSIZE not connected; log:\n%s", logbuf);
    ck_assert_msg(rtu_refused, "RTU descriptor above FD_SETSIZE not refused; log:\n%s", logbuf);
    ck_assert_msg(strstr(logbuf, ">= 1024") != NULL, "log:\n%s", logbuf);
    close(lfd);
    close(master);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("modbus_fdguard");
    TCase *tc = tcase_create("fdguard");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, rtu_above_fd_setsize_is_refused_tcp_works);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
