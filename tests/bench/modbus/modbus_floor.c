/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_modbus_floor: a plain libmodbus client against bench_fast_modbus_server. Three modes:
 *   check PORT            checks the server's answers (FC 1/2/3/4/5/6/15/16, the value formula, an
 *                         illegal-address exception, pipelined frames in one write, partial frames);
 *                         exit 0 if all are right, 1 otherwise.
 *   read PORT SECS [N]    one client, N-register reads (default 100) back to back for SECS seconds
 *                         (SECS 0: a single read); prints `requests_per_s X`.
 *   write PORT COUNT      COUNT FC 6 writes back to back, each timed; prints
 *                         `write_us p50 X p99 Y p999 Z`; then the same number of loopback TCP
 *                         echo round trips (1-byte, own echo thread): `tcp_rtt_us p50 ...`.
 * These are the floors the daemon benchmarks compare against.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <modbus.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
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

static modbus_t *connect_to(int port)
{
    modbus_t *mb = modbus_new_tcp("127.0.0.1", port);
    if (!mb || modbus_connect(mb) != 0) {
        fprintf(stderr, "modbus_floor: connect 127.0.0.1:%d: %s\n", port, modbus_strerror(errno));
        exit(1);
    }
    modbus_set_response_timeout(mb, 2, 0);
    return mb;
}

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                            \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static int raw_fd(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        exit(1);
    }
    return fd;
}

static int read_full(int fd, uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static int do_check(int port)
{
    modbus_t *mb = connect_to(port);
    uint16_t regs[125];
    uint8_t bits[64];
    /* The value formula: (u*7 + a + T) & 0xffff, T the same for a whole read (within a second). */
    for (int unit = 1; unit <= 3; unit++) {
        modbus_set_slave(mb, unit);
        for (int tries = 0; tries < 3; tries++) {
            int n = modbus_read_registers(mb, 0, 125, regs);
            CHECK(n == 125, "unit %d FC3 read 125: %d (%s)", unit, n, modbus_strerror(errno));
            if (n != 125)
                break;
            unsigned T = (unsigned)(regs[0] - unit * 7) & 0xffffu;
            int ok = 1;
            for (int a = 0; a < 125; a++)
                ok &= regs[a] == ((unit * 7 + a + T) & 0xffffu);
            if (ok)
                break;
            CHECK(tries < 2, "unit %d FC3 values do not follow the formula", unit);
        }
        int n = modbus_read_input_registers(mb, 10, 5, regs);
        CHECK(n == 5, "unit %d FC4: %d", unit, n);
    }
    modbus_set_slave(mb, 9);
    CHECK(modbus_write_register(mb, 4, 4242) == 1, "FC6: %s", modbus_strerror(errno));
    CHECK(modbus_read_registers(mb, 4, 1, regs) == 1 && regs[0] == 4242, "FC6 read back %u", regs[0]);
    uint16_t w[3] = {1, 2, 65535};
    CHECK(modbus_write_registers(mb, 100, 3, w) == 3, "FC16: %s", modbus_strerror(errno));
    CHECK(modbus_read_registers(mb, 100, 3, regs) == 3 && regs[0] == 1 && regs[1] == 2 &&
              regs[2] == 65535, "FC16 read back");
    CHECK(modbus_write_bit(mb, 7, 1) == 1, "FC5: %s", modbus_strerror(errno));
    CHECK(modbus_read_bits(mb, 7, 2, bits) == 2 && bits[0] == 1 && bits[1] == 0, "FC5 read back");
    uint8_t wb[10] = {1, 0, 1, 1, 0, 0, 0, 1, 1, 1};
    CHECK(modbus_write_bits(mb, 20, 10, wb) == 10, "FC15: %s", modbus_strerror(errno));
    CHECK(modbus_read_bits(mb, 20, 10, bits) == 10 && !memcmp(bits, wb, 10), "FC15 read back");
    CHECK(modbus_read_input_bits(mb, 0, 16, bits) == 16, "FC2: %s", modbus_strerror(errno));
    errno = 0;
    CHECK(modbus_read_registers(mb, 120, 10, regs) == -1 && errno == EMBXILADD,
          "read past the end: want exception 2, got %s", modbus_strerror(errno));
    modbus_set_slave(mb, 10);
    CHECK(modbus_read_registers(mb, 4, 1, regs) == 1 && regs[0] != 4242, "writes are per unit");
    modbus_close(mb);
    modbus_free(mb);

    /* Three requests in one write, the third split in two writes with a pause between. */
    int fd = raw_fd(port);
    uint8_t req[12] = {0, 1, 0, 0, 0, 6, 5, 3, 0, 0, 0, 2};
    uint8_t buf[36];
    for (int i = 0; i < 3; i++) {
        memcpy(buf + 12 * i, req, 12);
        buf[12 * i + 1] = (uint8_t)(i + 1);
    }
    CHECK(send(fd, buf, 30, 0) == 30, "send");
    usleep(20000);
    CHECK(send(fd, buf + 30, 6, 0) == 6, "send");
    for (int i = 0; i < 3; i++) {
        uint8_t rsp[13];
        CHECK(read_full(fd, rsp, 13) == 0, "pipelined answer %d missing", i + 1);
        CHECK(rsp[1] == i + 1 && rsp[6] == 5 && rsp[7] == 3 && rsp[8] == 4, "pipelined answer %d",
              i + 1);
    }
    close(fd);
    printf("%s\n", failures ? "check FAILED" : "check ok");
    return failures ? 1 : 0;
}

static int do_read(int port, double secs, int nreg)
{
    modbus_t *mb = connect_to(port);
    modbus_set_slave(mb, 1);
    uint16_t regs[125];
    long n = 0, errors = 0;
    double t0 = now(), t;
    do { /* at least one batch, so that `read PORT 0` is one exec-connect-request */
        for (int i = 0; i < (secs > 0 ? 64 : 1); i++) {
            errors += modbus_read_registers(mb, 0, nreg, regs) != nreg;
            n++;
        }
    } while ((t = now()) - t0 < secs);
    printf("requests_per_s %.0f\nerrors %ld\n", (double)n / (t - t0), errors);
    modbus_close(mb);
    modbus_free(mb);
    return errors ? 1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_pct(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    int i50 = n / 2, i99 = (int)(n * 0.99), i999 = (int)(n * 0.999);
    if (i99 >= n)
        i99 = n - 1;
    if (i999 >= n)
        i999 = n - 1;
    printf("%s p50 %.1f p99 %.1f p999 %.1f\n", what, v[i50] * 1e6, v[i99] * 1e6, v[i999] * 1e6);
}

static int echo_listen;

static void *echo_thread(void *arg)
{
    (void)arg;
    int fd = accept(echo_listen, NULL, NULL);
    char c;
    while (fd >= 0 && recv(fd, &c, 1, 0) == 1)
        if (send(fd, &c, 1, 0) != 1)
            break;
    if (fd >= 0)
        close(fd);
    return NULL;
}

static int do_write(int port, int count)
{
    modbus_t *mb = connect_to(port);
    modbus_set_slave(mb, 1);
    double *v = malloc(sizeof *v * (size_t)count);
    int errors = 0;
    for (int i = 0; i < count; i++) {
        double t0 = now();
        errors += modbus_write_register(mb, 0, (uint16_t)i) != 1;
        v[i] = now() - t0;
    }
    print_pct("write_us", v, count);
    modbus_close(mb);
    modbus_free(mb);

    echo_listen = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (bind(echo_listen, (struct sockaddr *)&sa, sizeof sa) || listen(echo_listen, 1) ||
        getsockname(echo_listen, (struct sockaddr *)&sa, &len)) {
        perror("echo");
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, echo_thread, NULL);
    int fd = raw_fd(ntohs(sa.sin_port));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (int i = 0; i < count; i++) {
        char c = 'x';
        double t0 = now();
        if (send(fd, &c, 1, 0) != 1 || recv(fd, &c, 1, 0) != 1) {
            errors++;
            break;
        }
        v[i] = now() - t0;
    }
    print_pct("tcp_rtt_us", v, count);
    close(fd);
    pthread_join(th, NULL);
    close(echo_listen);
    free(v);
    printf("errors %d\n", errors);
    return errors ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "check"))
        return do_check(atoi(argv[2]));
    if (argc >= 4 && !strcmp(argv[1], "read"))
        return do_read(atoi(argv[2]), atof(argv[3]), argc >= 5 ? atoi(argv[4]) : 100);
    if (argc >= 4 && !strcmp(argv[1], "write"))
        return do_write(atoi(argv[2]), atoi(argv[3]));
    fprintf(stderr, "usage: bench_modbus_floor check PORT | read PORT SECS [N] | write PORT COUNT\n");
    return 2;
}
