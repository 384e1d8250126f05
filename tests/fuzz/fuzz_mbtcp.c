/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: what a Modbus TCP device (or anything listening on its port) sends back, through
 * the adapter's own client (adapters/modbus/mbtcp.c) over a real loopback connection. The input's
 * first byte gives the number of requests (1..4), then 3 bytes per request (function code
 * selector, count); the rest is the byte stream the "device" sends before closing its side. Every
 * call must end with the count asked for or one of the documented error codes, never a crash, a
 * read past a buffer, or a wait (the peer's close ends every wait at once).
 */
#include "mbtcp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <modbus.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int listener = -1;
static char port[8];

static void listen_once(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    listener = socket(AF_INET, SOCK_STREAM, 0);
    if (listener < 0 || bind(listener, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(listener, 16) != 0 || getsockname(listener, (struct sockaddr *)&a, &len) != 0) {
        perror("fuzz_mbtcp: listener");
        abort();
    }
    snprintf(port, sizeof port, "%u", ntohs(a.sin_port));
}

/* The codes a call may return besides its count (mbtcp.h, libmodbus's numbering). */
static int documented(int rc)
{
    int e = -rc;
    return e == EMBBADDATA || e == EMBBADSLAVE || e == EMBBADEXC || e == ETIMEDOUT ||
           e == ECONNRESET || e == EPIPE || e == EMBMDATA ||
           (e > MODBUS_ENOBASE && e <= MODBUS_ENOBASE + MODBUS_EXCEPTION_GATEWAY_TARGET);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    if (listener < 0)
        listen_once();
    unsigned nreq = 1 + data[0] % 4;
    if (size < 1 + 3 * nreq)
        return 0;
    const uint8_t *ops = data + 1;
    const uint8_t *stream = ops + 3 * nreq;
    size_t slen = size - 1 - 3 * nreq;

    struct gw_mbtcp *c = gw_mbtcp_new("127.0.0.1", port);
    gw_mbtcp_set_unit(c, 1);
    gw_mbtcp_set_timeout(c, 2000); /* never reached: the peer closes after its bytes */
    if (gw_mbtcp_connect(c, 2000) != 0)
        abort();
    int srv = accept(listener, NULL, NULL);
    if (srv < 0)
        abort();
    /* Everything the device will say, then its FIN (the socket buffer holds a fuzz input). */
    size_t off = 0;
    while (off < slen) {
        ssize_t n = send(srv, stream + off, slen - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    shutdown(srv, SHUT_WR);

    static uint16_t regs[130];
    static uint8_t bits[2010];
    for (unsigned k = 0; k < nreq; k++) {
        static const int fcs[] = {1, 2, 3, 4, 5, 6, 15, 16};
        int fc = fcs[ops[3 * k] % 8];
        uint16_t n = (uint16_t)(ops[3 * k + 1] | ops[3 * k + 2] << 8);
        int rc;
        switch (fc) {
        case 1:
        case 2: rc = gw_mbtcp_read_bits(c, fc, 0, n, bits); break;
        case 3:
        case 4: rc = gw_mbtcp_read_registers(c, fc, 0, n, regs); break;
        case 5: rc = gw_mbtcp_write_bit(c, 0, n & 1); n = 1; break;
        case 6: rc = gw_mbtcp_write_register(c, 0, n); n = 1; break;
        case 15: rc = gw_mbtcp_write_bits(c, 0, n, bits); break;
        default: rc = gw_mbtcp_write_registers(c, 0, n, regs); break;
        }
        if (rc >= 0 && rc != (int)n)
            abort(); /* a success must report the count asked for */
        if (rc < 0 && !documented(rc)) {
            fprintf(stderr, "fuzz_mbtcp: fc %d n %u: undocumented result %d\n", fc, n, rc);
            abort();
        }
        if (rc == -ECONNRESET || rc == -EPIPE)
            break;
        if (rc < 0 && rc != -EMBMDATA)
            gw_mbtcp_flush(c);
    }
    gw_mbtcp_free(c);
    close(srv);
    return 0;
}
