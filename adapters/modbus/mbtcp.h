/* SPDX-License-Identifier: Apache-2.0 */
/*
 * mbtcp: a small blocking Modbus TCP client for one connection, used by the Modbus adapter's
 * worker threads (modbus.c) instead of libmodbus for TCP. It waits with poll(), never select(),
 * so its socket may have any descriptor number (libmodbus 3.1.6 aborts in FD_SET on a descriptor
 * >= FD_SETSIZE = 1024, which a daemon with ~1,000 connections reaches).
 *
 * One request at a time: send, then wait for the reply until the response timeout (one deadline
 * for the whole reply). MBAP framing is checked: transaction id (incremented per request),
 * protocol id 0, length 2..254 (ADU <= 260), unit id echoed, function code echoed or fc|0x80
 * with an exception code, byte count consistent with the request, write echoes. A reply whose
 * transaction id is one of the last 64 sent (an answer that came after its request timed out)
 * is discarded and the wait goes on; partial frames are kept across calls.
 *
 * Errors are reported as negative errno values, using the SAME codes libmodbus uses (so callers
 * classify them like libmodbus errors): -(MODBUS_ENOBASE + code) for an exception 1..11,
 * -EMBBADEXC for another exception code, -EMBBADDATA for a malformed or mismatched reply,
 * -EMBBADSLAVE for a reply from another unit, -EMBMDATA for a request count out of range,
 * -ETIMEDOUT when no whole reply came in time, -ECONNRESET when the peer closed, other -errno
 * from the socket (-EBADF when not connected). Not thread-safe: one thread owns a client.
 */
#ifndef GW_MBTCP_H
#define GW_MBTCP_H

#include <stdint.h>

struct gw_mbtcp;

/* Creates an unconnected client for host:port (both copied). Never fails (aborting allocator). */
struct gw_mbtcp *gw_mbtcp_new(const char *host, const char *port);

/* Closes the connection if open and frees c (NULL is fine). */
void gw_mbtcp_free(struct gw_mbtcp *c);

/*
 * Resolves host:port and connects (non-blocking connect + poll, TCP_NODELAY), trying each
 * address in turn within timeout_ms each. Closes a previous connection first. 0 or -errno
 * (-ETIMEDOUT, -ECONNREFUSED, -EHOSTUNREACH for a name that does not resolve, ...).
 */
int gw_mbtcp_connect(struct gw_mbtcp *c, unsigned timeout_ms);

/* Closes the connection (no-op when closed) and forgets any partly received reply. */
void gw_mbtcp_close(struct gw_mbtcp *c);

/* The socket, or -1 when closed. */
int gw_mbtcp_fd(const struct gw_mbtcp *c);

/* Unit id put in following requests (default 1). */
void gw_mbtcp_set_unit(struct gw_mbtcp *c, uint8_t unit);

/* Response timeout of following requests in milliseconds (default 500). */
void gw_mbtcp_set_timeout(struct gw_mbtcp *c, unsigned timeout_ms);

/*
 * FC 1 (coils, fc = 1) or FC 2 (discrete inputs, fc = 2): reads n (1..2000) bits from addr into
 * dest (borrowed, n bytes, each 0 or 1). Returns n or a negative code (see above).
 */
int gw_mbtcp_read_bits(struct gw_mbtcp *c, int fc, uint16_t addr, uint16_t n, uint8_t *dest);

/*
 * FC 3 (holding, fc = 3) or FC 4 (input registers, fc = 4): reads n (1..125) registers from addr
 * into dest (borrowed, n entries). Returns n or a negative code.
 */
int gw_mbtcp_read_registers(struct gw_mbtcp *c, int fc, uint16_t addr, uint16_t n,
                            uint16_t *dest);

/* FC 5: writes one coil (on != 0 -> 0xFF00). Returns 1 or a negative code. */
int gw_mbtcp_write_bit(struct gw_mbtcp *c, uint16_t addr, int on);

/* FC 6: writes one holding register. Returns 1 or a negative code. */
int gw_mbtcp_write_register(struct gw_mbtcp *c, uint16_t addr, uint16_t value);

/* FC 15: writes n (1..1968) coils from src (borrowed, n bytes, non-zero = on). n or negative. */
int gw_mbtcp_write_bits(struct gw_mbtcp *c, uint16_t addr, uint16_t n, const uint8_t *src);

/* FC 16: writes n (1..123) holding registers from src (borrowed). n or a negative code. */
int gw_mbtcp_write_registers(struct gw_mbtcp *c, uint16_t addr, uint16_t n, const uint16_t *src);

/*
 * Drops what has arrived and not been taken: any partial reply and all bytes readable now (does
 * not wait). Returns the number of bytes dropped or a negative code (-ECONNRESET if the peer has
 * closed).
 */
int gw_mbtcp_flush(struct gw_mbtcp *c);

#endif
