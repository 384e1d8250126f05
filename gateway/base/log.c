/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Line-oriented logging to stderr (see gw/log.h). Each line is formatted into one buffer and
 * written with a single write(2), so lines from worker threads never interleave.
 */
#include "gw/log.h"
#include "gw/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int gw_log_level_current = GW_LOG_INFO;
static int log_style = -1; /* -1 unknown, 0 journald, 1 terminal */

static const char *const level_names[8] = {"emerg", "alert", "crit",  "error",
                                           "warn",  "notice", "info", "debug"};

void gw_log_set_level(int level)
{
    if (level < GW_LOG_ERR)
        level = GW_LOG_ERR;
    if (level > GW_LOG_DEBUG)
        level = GW_LOG_DEBUG;
    gw_log_level_current = level;
}

int gw_log_level_parse(const char *name)
{
    static const struct {
        const char *name;
        int level;
    } names[] = {{"err", GW_LOG_ERR},       {"error", GW_LOG_ERR}, {"warn", GW_LOG_WARN},
                 {"warning", GW_LOG_WARN},  {"notice", GW_LOG_NOTICE},
                 {"info", GW_LOG_INFO},     {"debug", GW_LOG_DEBUG}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0)
            return names[i].level;
    return GW_EINVAL;
}

void gw_log_set_style(int tty)
{
    log_style = tty < 0 ? -1 : !!tty;
}

void gw_log_write(int level, const char *fmt, ...)
{
    char line[2048];
    size_t n = 0;
    int style = log_style;
    if (style < 0)
        style = log_style = isatty(STDERR_FILENO);
    if (level < 0 || level > 7)
        level = GW_LOG_ERR;
    if (style) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        n = strftime(line, sizeof line, "%H:%M:%S", &tm);
        n += (size_t)snprintf(line + n, sizeof line - n, ".%03ld %-6s ", ts.tv_nsec / 1000000,
                              level_names[level]);
    } else {
        n = (size_t)snprintf(line, sizeof line, "<%d>", level);
    }
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    if (w < 0)
        w = 0;
    n += (size_t)w;
    if (n >= sizeof line - 1) { /* truncated: mark it, keep the newline */
        n = sizeof line - 1;
        memcpy(line + n - 3, "...", 3);
    }
    line[n++] = '\n';
    ssize_t unused = write(STDERR_FILENO, line, n);
    (void)unused;
}

void gw_log_hex(const char *what, const void *data, size_t len)
{
    if (gw_log_level_current < GW_LOG_DEBUG)
        return;
    static const char digits[] = "0123456789abcdef";
    char hex[1024];
    const unsigned char *p = data;
    size_t max = (sizeof hex - 4) / 2, n = 0;
    size_t shown = len < max ? len : max;
    for (size_t i = 0; i < shown; i++) {
        hex[n++] = digits[p[i] >> 4];
        hex[n++] = digits[p[i] & 15];
    }
    if (shown < len) {
        memcpy(hex + n, "...", 3);
        n += 3;
    }
    hex[n] = '\0';
    gw_log_write(GW_LOG_DEBUG, "%s (%zu bytes): %s", what, len, hex);
}
