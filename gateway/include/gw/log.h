/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging to stderr. When stderr is not a terminal (systemd, CI) every line starts with a syslog
 * "<N>" prefix so journald keeps the level; on a terminal lines start with the time and the level
 * name instead. The macros test the level before formatting anything. Thread-safe: one line is one
 * write(2). Never log passwords, tokens or key material.
 */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <stddef.h>

enum gw_log_level {
    GW_LOG_ERR = 3,     /* syslog LOG_ERR */
    GW_LOG_WARN = 4,    /* LOG_WARNING */
    GW_LOG_NOTICE = 5,  /* LOG_NOTICE */
    GW_LOG_INFO = 6,    /* LOG_INFO */
    GW_LOG_DEBUG = 7,   /* LOG_DEBUG */
};

extern int gw_log_level_current;

/* Sets the highest level that is printed (default GW_LOG_INFO). */
void gw_log_set_level(int level);

/* Parses "err", "warn", "notice", "info" or "debug"; returns the level or GW_EINVAL. */
int gw_log_level_parse(const char *name);

/* Forces the terminal (1) or journald (0) line format; -1 picks by isatty(2) (the default). */
void gw_log_set_style(int tty);

void gw_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs len bytes of data as hex at debug level, prefixed by what (borrowed). */
void gw_log_hex(const char *what, const void *data, size_t len);

#define gw_log_at(level, ...)                                                                     \
    do {                                                                                          \
        if ((level) <= gw_log_level_current)                                                      \
            gw_log_write((level), __VA_ARGS__);                                                   \
    } while (0)
#define gw_log_err(...) gw_log_at(GW_LOG_ERR, __VA_ARGS__)
#define gw_log_warn(...) gw_log_at(GW_LOG_WARN, __VA_ARGS__)
#define gw_log_notice(...) gw_log_at(GW_LOG_NOTICE, __VA_ARGS__)
#define gw_log_info(...) gw_log_at(GW_LOG_INFO, __VA_ARGS__)
#define gw_log_debug(...) gw_log_at(GW_LOG_DEBUG, __VA_ARGS__)

#endif
