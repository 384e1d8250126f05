/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sd_notify(3) and sd_watchdog_enabled(3) re-done in a few lines so the daemon does not link
 * libsystemd: a SOCK_DGRAM AF_UNIX socket per message (no state kept, so it is safe from any
 * thread and across fork), the kernel adds the sender's credentials that systemd checks against
 * NotifyAccess=. See sdnotify.h for the contract; main.c decides what to send and when.
 */
#include "sdnotify.h"

#include "gw/error.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Fills *sa from $NOTIFY_SOCKET's text; returns the address length or a GW_E... code. */
static int notify_address(const char *name, struct sockaddr_un *sa)
{
    size_t len = strlen(name);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (name[0] == '/') {
        if (len >= sizeof sa->sun_path) /* a path needs its NUL */
            return GW_EINVAL;
        memcpy(sa->sun_path, name, len);
        return (int)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
    if (name[0] == '@') {
        if (len < 2 || len > sizeof sa->sun_path) /* '@' becomes the leading NUL */
            return GW_EINVAL;
        memcpy(sa->sun_path + 1, name + 1, len - 1);
        return (int)(offsetof(struct sockaddr_un, sun_path) + len);
    }
    if (strncmp(name, "vsock:", 6) == 0)
        return GW_ENOTSUP; /* systemd >= 254 in VMs; Debian 12 and Pi OS run 252 */
    return GW_EINVAL;
}

int gw_sdnotify_send(const char *state)
{
    const char *name = getenv("NOTIFY_SOCKET");
    if (!name || !*name)
        return 0;
    if (!state || !*state)
        return GW_EINVAL;
    struct sockaddr_un sa;
    int salen = notify_address(name, &sa);
    if (salen < 0)
        return salen;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&sa,
                       (socklen_t)salen);
    int rc = n < 0 ? -errno : 1;
    close(fd);
    return rc;
}

int gw_sdnotify_sendf(const char *fmt, ...)
{
    char msg[GW_SDNOTIFY_MAX_MSG + 1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return GW_EINVAL;
    if ((size_t)n >= sizeof msg)
        return GW_ENOBUFS;
    return gw_sdnotify_send(msg);
}

int gw_sdnotify_parse_usec(const char *text, uint64_t *usec)
{
    if (!text || !*text)
        return GW_EINVAL;
    uint64_t v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9')
            return GW_EINVAL;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return GW_ERANGE;
        v = v * 10 + d;
    }
    if (v == 0)
        return GW_EINVAL;
    *usec = v;
    return 0;
}

int gw_sdnotify_watchdog_usec(uint64_t *usec)
{
    const char *us = getenv("WATCHDOG_USEC");
    if (!us)
        return 0;
    const char *pid = getenv("WATCHDOG_PID");
    if (pid) {
        uint64_t p;
        int rc = gw_sdnotify_parse_usec(pid, &p); /* same grammar: positive decimal */
        if (rc < 0)
            return rc;
        if (p != (uint64_t)getpid())
            return 0; /* meant for another process (we were forked or exec'd by it) */
    }
    uint64_t v;
    int rc = gw_sdnotify_parse_usec(us, &v);
    if (rc < 0)
        return rc;
    *usec = v;
    return 1;
}
