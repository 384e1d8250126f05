/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of adapters/modbus/mbtcp.c, the poll()-based Modbus TCP client, against a small
 * Modbus TCP server thread in this file (real sockets on 127.0.0.1, a free port picked by the
 * kernel). The server answers FC 1/2/3/4/5/6/15/16 from its own tables and can be told to
 * misbehave on the next request: stay silent, answer late (the stale reply arrives just before
 * the next one, in pieces), answer byte by byte, corrupt the MBAP header, answer for another
 * unit, transaction id or function, with a wrong byte count or write echo, an unknown exception
 * code, or close the connection. Also: a socket above FD_SETSIZE (1024), where select() would
 * abort, works like any other.
 */
#include "mbtcp.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <modbus.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum fault {
    F_NONE,
    F_SILENT,      /* no answer now: the first 4 bytes are sent, the rest is held */
    F_LATE,        /* first the held rest of the last reply, then this one, split */
    F_SPLIT,       /* this reply one byte at a time */
    F_CORRUPT_PID, /* protocol id 1 */
    F_CORRUPT_LEN, /* MBAP length 0x1000 */
    F_UNIT,        /* unit id + 1 */
    F_TID,         /* transaction id + 100 */
    F_FC,          /* another function code */
    F_COUNT,       /* byte count one too small (reads) */
    F_ECHO,        /* write echo with another address */
    F_EXC_CODE,    /* exception with code 0x20 */
    F_CLOSE,       /* close the connection instead of answering */
    F_RANDOM,      /* a whole MBAP frame (right tid, protocol 0) with random unit and PDU */
};

enum { NREG = 1000 };

struct srv {
    int lfd;
    char port[16];
    pthread_t th;
    atomic_int stop;
    atomic_int fault;
    atomic_int requests;
    uint16_t regs[NREG];
    uint8_t coils[NREG];
    uint8_t held[300];
    size_t nheld;
};

static struct srv S;

static void put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static unsigned get16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static int read_full(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r <= 0)
            return;
        p += r;
        n -= (size_t)r;
    }
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The reply PDU to pdu (n bytes) into out; returns its length. */
static size_t answer(const uint8_t *pdu, size_t n, uint8_t *out)
{
    unsigned fc = pdu[0], addr = n >= 3 ? get16(pdu + 1) : 0, cnt = n >= 5 ? get16(pdu + 3) : 0;
    out[0] = (uint8_t)fc;
    switch (fc) {
    case 1:
    case 2:
        if (addr + cnt > NREG)
            goto exc2;
        out[1] = (uint8_t)((cnt + 7) / 8);
        memset(out + 2, 0, out[1]);
        for (unsigned i = 0; i < cnt; i++) {
            int b = fc == 1 ? S.coils[addr + i] : (int)((addr + i) % 2);
            if (b)
                out[2 + i / 8] |= (uint8_t)(1u << (i % 8));
        }
        return 2u + out[1];
    case 3:
    case 4:
        if (addr + cnt > NREG)
            goto exc2;
        out[1] = (uint8_t)(2 * cnt);
        for (unsigned i = 0; i < cnt; i++)
            put16(out + 2 + 2 * i, fc == 3 ? S.regs[addr + i] : 5000 + addr + i);
        return 2u + out[1];
    case 5:
        if (addr >= NREG)
            goto exc2;
        S.coils[addr] = cnt == 0xFF00;
        memcpy(out, pdu, 5);
        return 5;
    case 6:
        if (addr >= NREG)
            goto exc2;
        S.regs[addr] = (uint16_t)cnt;
        memcpy(out, pdu, 5);
        return 5;
    case 15:
        if (addr + cnt > NREG)
            goto exc2;
        for (unsigned i = 0; i < cnt; i++)
            S.coils[addr + i] = (pdu[6 + i / 8] >> (i % 8)) & 1;
        memcpy(out, pdu, 5);
        return 5;
    case 16:
        if (addr + cnt > NREG)
            goto exc2;
        for (unsigned i = 0; i < cnt; i++)
            S.regs[addr + i] = (uint16_t)get16(pdu + 6 + 2 * i);
        memcpy(out, pdu, 5);
        return 5;
    default:
        out[0] = (uint8_t)(fc | 0x80);
        out[1] = 1;
        return 2;
    }
exc2:
    out[0] = (uint8_t)(fc | 0x80);
    out[1] = 2;
    return 2;
}

static void serve(int fd)
{
    uint8_t hdr[7], pdu[260], rsp[300];
    for (;;) {
        if (read_full(fd, hdr, 7) != 0)
            return;
        size_t len = get16(hdr + 4);
        if (len < 2 || len > 254 || read_full(fd, pdu, len - 1) != 0)
            return;
        atomic_fetch_add(&S.requests, 1);
        int f = atomic_exchange(&S.fault, F_NONE);
        if (f == F_CLOSE)
            return;
        size_t n = answer(pdu, len - 1, rsp + 7);
        memcpy(rsp, hdr, 7);
        put16(rsp + 4, (unsigned)n + 1);
        switch (f) {
        case F_CORRUPT_PID: put16(rsp + 2, 1); break;
        case F_CORRUPT_LEN: put16(rsp + 4, 0x1000); break;
        case F_UNIT: rsp[6]++; break;
        case F_TID: put16(rsp, get16(rsp) + 100); break;
        case F_FC: rsp[7] = rsp[7] == 3 ? 4 : 3; break;
        case F_COUNT:
            rsp[8]--;
            break;
        case F_ECHO: put16(rsp + 8, get16(rsp + 8) + 1); break;
        case F_EXC_CODE:
            rsp[7] |= 0x80;
            rsp[8] = 0x20;
            put16(rsp + 4, 3);
            n = 2;
            break;
        default: break;
        }
        if (f == F_RANDOM) {
            size_t plen = 1 + (size_t)(rand() % 253);
            rsp[6] = rand() % 4 ? hdr[6] : (uint8_t)rand();
            for (size_t i = 0; i < plen; i++)
                rsp[7 + i] = (uint8_t)rand();
            int k = rand() % 4; /* mostly the right function, or its exception */
            rsp[7] = k == 0 ? pdu[0] : k == 1 ? (uint8_t)(pdu[0] | 0x80) : rsp[7];
            if (rand() % 2 && plen > 1)
                rsp[8] = (uint8_t)(plen - 2); /* a byte count that fits the length */
            put16(rsp + 4, (unsigned)plen + 1);
            n = plen;
        }
        size_t total = 7 + n;
        if (f == F_SILENT) {
            send_all(fd, rsp, 4);
            memcpy(S.held, rsp + 4, total - 4);
            S.nheld = total - 4;
            continue;
        }
        if (f == F_LATE) {
            /* The rest of the stale reply and the current one, cut at odd places. */
            uint8_t both[600];
            memcpy(both, S.held, S.nheld);
            memcpy(both + S.nheld, rsp, total);
            size_t all = S.nheld + total, cut1 = S.nheld / 2, cut2 = S.nheld + 3;
            send_all(fd, both, cut1);
            sleep_ms(20);
            send_all(fd, both + cut1, cut2 - cut1);
            sleep_ms(20);
            send_all(fd, both + cut2, all - cut2);
            S.nheld = 0;
            continue;
        }
        if (f == F_SPLIT) {
            for (size_t i = 0; i < total; i++) {
                send_all(fd, rsp + i, 1);
                sleep_ms(2);
            }
            continue;
        }
        send_all(fd, rsp, total);
    }
}

static void *srv_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&S.stop)) {
        struct pollfd p = {.fd = S.lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(S.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        serve(fd);
        close(fd);
    }
    return NULL;
}

static void srv_start(void)
{
    memset(&S, 0, sizeof S);
    for (unsigned i = 0; i < NREG; i++) {
        S.regs[i] = (uint16_t)(1000 + i);
        S.coils[i] = i % 3 == 0;
    }
    S.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(S.lfd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(S.lfd, (struct sockaddr *)&a, sizeof a), 0);
    ck_assert_int_eq(listen(S.lfd, 8), 0);
    socklen_t al = sizeof a;
    getsockname(S.lfd, (struct sockaddr *)&a, &al);
    snprintf(S.port, sizeof S.port, "%u", ntohs(a.sin_port));
    ck_assert_int_eq(pthread_create(&S.th, NULL, srv_main, NULL), 0);
}

static void srv_stop(void)
{
    atomic_store(&S.stop, 1);
    pthread_join(S.th, NULL);
    close(S.lfd);
}

static struct gw_mbtcp *client(void)
{
    struct gw_mbtcp *c = gw_mbtcp_new("127.0.0.1", S.port);
    ck_assert_int_eq(gw_mbtcp_connect(c, 2000), 0);
    ck_assert_int_ge(gw_mbtcp_fd(c), 0);
    gw_mbtcp_set_unit(c, 7);
    gw_mbtcp_set_timeout(c, 2000);
    return c;
}

static void check_read_ok(struct gw_mbtcp *c, uint16_t addr)
{
    uint16_t r[2];
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, addr, 2, r), 2);
    ck_assert_uint_eq(r[0], 1000u + addr);
    ck_assert_uint_eq(r[1], 1001u + addr);
}

START_TEST(every_function_code)
{
    srv_start();
    struct gw_mbtcp *c = client();
    uint8_t bits[2000];
    uint16_t regs[125];

    ck_assert_int_eq(gw_mbtcp_read_bits(c, 1, 1, 20, bits), 20);
    for (unsigned i = 0; i < 20; i++)
        ck_assert_uint_eq(bits[i], (1 + i) % 3 == 0);
    ck_assert_int_eq(gw_mbtcp_read_bits(c, 2, 0, 2000 > NREG ? NREG : 2000, bits), NREG);
    for (unsigned i = 0; i < NREG; i++)
        ck_assert_uint_eq(bits[i], i % 2);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 10, 125, regs), 125);
    for (unsigned i = 0; i < 125; i++)
        ck_assert_uint_eq(regs[i], 1010 + i);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 4, 7, 3, regs), 3);
    ck_assert_uint_eq(regs[0], 5007);
    ck_assert_uint_eq(regs[2], 5009);

    ck_assert_int_eq(gw_mbtcp_write_bit(c, 4, 1), 1);
    ck_assert_int_eq(gw_mbtcp_write_bit(c, 3, 0), 1);
    ck_assert_int_eq(gw_mbtcp_read_bits(c, 1, 3, 2, bits), 2);
    ck_assert_uint_eq(bits[0], 0);
    ck_assert_uint_eq(bits[1], 1);

    ck_assert_int_eq(gw_mbtcp_write_register(c, 5, 0xBEEF), 1);
    ck_assert_int_eq(gw_mbtcp_write_register(c, 6, 0), 1);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 5, 2, regs), 2);
    ck_assert_uint_eq(regs[0], 0xBEEF);
    ck_assert_uint_eq(regs[1], 0);

    uint8_t w[19];
    for (unsigned i = 0; i < 19; i++)
        w[i] = (uint8_t)(i % 5 == 1 ? 7 : 0); /* non-zero = on */
    ck_assert_int_eq(gw_mbtcp_write_bits(c, 100, 19, w), 19);
    ck_assert_int_eq(gw_mbtcp_read_bits(c, 1, 100, 19, bits), 19);
    for (unsigned i = 0; i < 19; i++)
        ck_assert_uint_eq(bits[i], i % 5 == 1);

    uint16_t wr[123];
    for (unsigned i = 0; i < 123; i++)
        wr[i] = (uint16_t)(0xA000 + i * 3);
    ck_assert_int_eq(gw_mbtcp_write_registers(c, 200, 123, wr), 123);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 200, 123, regs), 123);
    ck_assert_mem_eq(regs, wr, sizeof wr);

    /* Counts out of the protocol's range are refused before anything is sent. */
    int before = atomic_load(&S.requests);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 126, regs), -EMBMDATA);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 4, 0, 0, regs), -EMBMDATA);
    ck_assert_int_eq(gw_mbtcp_read_bits(c, 1, 0, 2001, bits), -EMBMDATA);
    ck_assert_int_eq(gw_mbtcp_write_bits(c, 0, 1969, bits), -EMBMDATA);
    ck_assert_int_eq(gw_mbtcp_write_registers(c, 0, 124, wr), -EMBMDATA);
    ck_assert_int_eq(atomic_load(&S.requests), before);
    gw_mbtcp_free(c);
    srv_stop();
}
END_TEST

START_TEST(exceptions)
{
    srv_start();
    struct gw_mbtcp *c = client();
    uint16_t r[2];
    uint8_t b[2];
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 999, 2, r), -(MODBUS_ENOBASE + 2));
    ck_assert_int_eq(gw_mbtcp_read_bits(c, 2, 999, 2, b), -(MODBUS_ENOBASE + 2));
    ck_assert_int_eq(gw_mbtcp_write_register(c, 1000, 1), -(MODBUS_ENOBASE + 2));
    atomic_store(&S.fault, F_EXC_CODE);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 2, r), -EMBBADEXC);
    check_read_ok(c, 0); /* an exception is an answer: the stream is in step */
    gw_mbtcp_free(c);
    srv_stop();
}
END_TEST

START_TEST(timeout_then_stale_reply)
{
    srv_start();
    struct gw_mbtcp *c = client();
    uint16_t r[2];
    gw_mbtcp_set_timeout(c, 150);
    atomic_store(&S.fault, F_SILENT);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 10, 2, r), -ETIMEDOUT);
    /* The late reply to address 10 arrives (in pieces) just before the one to address 20: it
     * must be dropped, not taken for the current request. */
    gw_mbtcp_set_timeout(c, 2000);
    atomic_store(&S.fault, F_LATE);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 20, 2, r), 2);
    ck_assert_uint_eq(r[0], 1020);
    ck_assert_uint_eq(r[1], 1021);
    check_read_ok(c, 30);
    gw_mbtcp_free(c);
    srv_stop();
}
END_TEST

START_TEST(split_reply)
{
    srv_start();
    struct gw_mbtcp *c = client();
    uint16_t r[125];
    atomic_store(&S.fault, F_SPLIT);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 4, 0, 40, r), 40);
    for (unsigned i = 0; i < 40; i++)
        ck_assert_uint_eq(r[i], 5000 + i);
    gw_mbtcp_free(c);
    srv_stop();
}
END_TEST

START_TEST(corrupt_header)
{
    srv_start();
    struct gw_mbtcp *c = client();
    uint16_t r[2];
    atomic_store(&S.fault, F_CORRUPT_PID);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 2, r), -EMBBADDATA);
    ck_assert_int_ge(gw_mbtcp_flush(c), 0);
    check_read_ok(c, 1);
    atomic_store(&S.fault, F_CORRUPT_LEN);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 2, r), -EMBBADDATA);
    sleep_ms(50); /* let the rest of the bad frame arrive, as a retry after a delay would */
    ck_assert_int_ge(gw_mbtcp_flush(c), 0);
    check_read_ok(c, 2);
    gw_mbtcp_free(c);
    srv_stop();
}
END_TEST

START_TEST(mismatched_replies)
{
    srv_start();
    struct gw_mbtcp *c = client();
    uint16_t r[2];
    uint8_t b[4];
    atomic_store(&S.fault, F_UNIT);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 2, r), -EMBBADSLAVE);
    atomic_store(&S.fault, F_TID);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 2, r), -EMBBADDATA);
    atomic_store(&S.fault, F_FC);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 2, r), -EMBBADDATA);
    atomic_store(&S.fault, F_COUNT);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 2, r), -EMBBADDATA);
    atomic_store(&S.fault, F_COUNT);
    ck_assert_int_eq(gw_mbtcp_read_bits(c, 1, 0, 4, b), -EMBBADDATA);
    atomic_store(&S.fault, F_ECHO);
    ck_assert_int_eq(gw_mbtcp_write_register(c, 3, 9), -EMBBADDATA);
    atomic_store(&S.fault, F_ECHO);
    ck_assert_int_eq(gw_mbtcp_write_bit(c, 3, 1), -EMBBADDATA);
    /* Each of those was a whole frame: the next request needs no flush. */
    check_read_ok(c, 40);
    gw_mbtcp_free(c);
    srv_stop();
}
END_TEST

START_TEST(closed_connection)
{
    srv_start();
    struct gw_mbtcp *c = client();
    uint16_t r[2];
    atomic_store(&S.fault, F_CLOSE);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 2, r), -ECONNRESET);
    gw_mbtcp_close(c);
    ck_assert_int_eq(gw_mbtcp_fd(c), -1);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 2, r), -EBADF);
    ck_assert_int_eq(gw_mbtcp_flush(c), -EBADF);
    ck_assert_int_eq(gw_mbtcp_connect(c, 2000), 0);
    check_read_ok(c, 3);
    gw_mbtcp_free(c);
    srv_stop();

    /* Nobody listens on that port any more. */
    c = gw_mbtcp_new("127.0.0.1", S.port);
    ck_assert_int_eq(gw_mbtcp_connect(c, 2000), -ECONNREFUSED);
    ck_assert_int_eq(gw_mbtcp_fd(c), -1);
    gw_mbtcp_free(c);
    c = gw_mbtcp_new("no-such-host.invalid", "502");
    ck_assert_int_lt(gw_mbtcp_connect(c, 500), 0);
    gw_mbtcp_free(c);
}
END_TEST

/* Random replies: never a crash or a read outside the buffers (ASan, valgrind); every result is
 * the count asked for or one of the documented codes, and the stream stays in step. */
START_TEST(random_replies)
{
    srv_start();
    srand(12345);
    struct gw_mbtcp *c = client();
    uint16_t r[125] = {0};
    uint8_t b[2000] = {0};
    int ok = 0, bad = 0;
    for (int i = 0; i < 2000; i++) {
        atomic_store(&S.fault, F_RANDOM);
        int fc = 1 + i % 4;
        uint16_t n = (uint16_t)(1 + (unsigned)i % (fc <= 2 ? 2000 : 125));
        int rc = fc <= 2 ? gw_mbtcp_read_bits(c, fc, 0, n, b)
                         : gw_mbtcp_read_registers(c, fc, 0, n, r);
        if (i % 8 == 5) {
            atomic_store(&S.fault, F_RANDOM);
            rc = gw_mbtcp_write_registers(c, 0, 3, r);
            n = 3;
        }
        if (rc == n) {
            ok++;
            continue;
        }
        bad++;
        int e = -rc;
        ck_assert_msg(e == EMBBADDATA || e == EMBBADSLAVE || e == EMBBADEXC ||
                          (e > MODBUS_ENOBASE && e <= MODBUS_ENOBASE + 11),
                      "request %d: unexpected result %d", i, rc);
    }
    ck_assert_int_gt(bad, 0);
    check_read_ok(c, 70);
    gw_mbtcp_free(c);
    srv_stop();
}
END_TEST

START_TEST(descriptor_above_fd_setsize)
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
    /* Fill the descriptors below 1100 so the client's socket lands above FD_SETSIZE. */
    int base = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(base, 0);
    for (int fd = 0; fd < 1100; fd++)
        if (fcntl(fd, F_GETFD) < 0)
            ck_assert_int_eq(dup2(base, fd), fd);
    srv_start();
    struct gw_mbtcp *c = client();
    ck_assert_int_ge(gw_mbtcp_fd(c), FD_SETSIZE);
    check_read_ok(c, 50);
    uint16_t r[2];
    gw_mbtcp_set_timeout(c, 100);
    atomic_store(&S.fault, F_SILENT);
    ck_assert_int_eq(gw_mbtcp_read_registers(c, 3, 0, 2, r), -ETIMEDOUT);
    gw_mbtcp_set_timeout(c, 2000);
    atomic_store(&S.fault, F_LATE);
    check_read_ok(c, 60);
    ck_assert_int_eq(gw_mbtcp_flush(c), 0);
    gw_mbtcp_free(c);
    srv_stop();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("mbtcp");
    TCase *tc = tcase_create("client");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, every_function_code);
    tcase_add_test(tc, exceptions);
    tcase_add_test(tc, timeout_then_stale_reply);
    tcase_add_test(tc, split_reply);
    tcase_add_test(tc, corrupt_header);
    tcase_add_test(tc, mismatched_replies);
    tcase_add_test(tc, closed_connection);
    tcase_add_test(tc, random_replies);
    tcase_add_test(tc, descriptor_above_fd_setsize);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
