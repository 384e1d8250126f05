/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The systemd notification protocol without libsystemd: one datagram per message to the AF_UNIX
 * socket named by $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace), and the parsing
 * of $WATCHDOG_USEC / $WATCHDOG_PID. Used by the daemon (gateway/daemon/main.c) to say READY=1,
 * RELOADING=1, STOPPING=1, STATUS=... and to ping WATCHDOG=1 while its loop is healthy. Outside
 * systemd (no $NOTIFY_SOCKET) every call is a harmless no-op. Any thread; no allocation.
 */
#ifndef GW_SDNOTIFY_H
#define GW_SDNOTIFY_H

#include <stdint.h>

/* Longest message gw_sdnotify_sendf() formats (bytes, without the terminating NUL). */
#define GW_SDNOTIFY_MAX_MSG 1024

/*
 * Sends state (borrowed; newline-separated VAR=VALUE assignments such as "READY=1\nSTATUS=up")
 * to the service manager. Returns 1 if sent, 0 if $NOTIFY_SOCKET is unset or empty (not started
 * by systemd as Type=notify), GW_EINVAL if state is empty or $NOTIFY_SOCKET is not an absolute
 * path or "@name" or is too long for a socket address, GW_ENOTSUP for other address families
 * (vsock), or the negated errno of socket()/sendto() (e.g. -ENOENT, -ECONNREFUSED).
 */
int gw_sdnotify_send(const char *state);

/* Like gw_sdnotify_send() with a printf format; GW_ENOBUFS if the text exceeds GW_SDNOTIFY_MAX_MSG. */
int gw_sdnotify_sendf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Parses text (borrowed) as a positive decimal number of microseconds, as systemd writes
 * $WATCHDOG_USEC. Returns 0 and sets *usec, or GW_EINVAL (empty, not all digits, zero) or
 * GW_ERANGE (above UINT64_MAX); *usec is untouched on failure.
 */
int gw_sdnotify_parse_usec(const char *text, uint64_t *usec);

/*
 * Whether the service manager expects WATCHDOG=1 pings from this process: $WATCHDOG_USEC is set
 * and $WATCHDOG_PID, if set, is getpid(). Returns 1 and sets *usec (ping at least every *usec/2),
 * 0 if no watchdog applies to this process, or GW_EINVAL / GW_ERANGE if either variable is
 * malformed (the caller logs it and runs without pings; systemd will then restart the service).
 */
int gw_sdnotify_watchdog_usec(uint64_t *usec);

#endif
