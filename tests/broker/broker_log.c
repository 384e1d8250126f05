/* SPDX-License-Identifier: Apache-2.0 */
/*
 * iotmp-broker logging: one JSON object per line on stderr ({"ts":ms,"level":..,"msg":.., ...}),
 * built with jansson and written with a single write(2). Every broker module logs through
 * gw_broker_log(); libwebsockets' own lines are routed here too (gw_broker_log_lws). Callers never
 * pass credentials or CONNECT payloads.
 */
#include "broker.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int gw_broker_log_level = GW_BROKER_INFO;

static const char *level_name(int level)
{
    switch (level) {
    case GW_BROKER_ERR:
        return "err";
    case GW_BROKER_WARN:
        return "warn";
    case GW_BROKER_NOTICE:
        return "notice";
    case GW_BROKER_INFO:
        return "info";
    default:
        return "debug";
    }
}

int gw_broker_log_parse_level(const char *name)
{
    static const char *const names[] = {"err", "warn", "notice", "info", "debug"};
    for (int i = 0; i < 5; i++)
        if (strcmp(name, names[i]) == 0)
            return GW_BROKER_ERR + i;
    return -1;
}

int64_t gw_broker_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void emit(json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);
    if (!s)
        return;
    size_t n = strlen(s);
    char *line = malloc(n + 2);
    if (line) {
        memcpy(line, s, n);
        line[n] = '\n';
        ssize_t w = write(STDERR_FILENO, line, n + 1);
        (void)w;
        free(line);
    }
    free(s);
}

void gw_broker_log(int level, const char *msg, const char *fields, ...)
{
    if (level > gw_broker_log_level)
        return;
    json_t *o = json_object();
    json_object_set_new(o, "ts", json_integer(gw_broker_now_ms()));
    json_object_set_new(o, "level", json_string(level_name(level)));
    json_object_set_new(o, "msg", json_string(msg ? msg : ""));
    if (fields) {
        va_list ap;
        va_start(ap, fields);
        json_error_t jerr;
        json_t *extra = json_vpack_ex(&jerr, 0, fields, ap);
        va_end(ap);
        if (extra && json_is_object(extra))
            json_object_update(o, extra);
        else
            json_object_set_new(o, "log_error", json_string(jerr.text));
        json_decref(extra);
    }
    emit(o);
    json_decref(o);
}

void gw_broker_log_lws(int level, const char *line)
{
    int our = (level & LLL_ERR) ? GW_BROKER_WARN : (level & LLL_WARN) ? GW_BROKER_NOTICE
                                                                        : GW_BROKER_DEBUG;
    if (our > gw_broker_log_level)
        return;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    json_t *o = json_object();
    json_object_set_new(o, "ts", json_integer(gw_broker_now_ms()));
    json_object_set_new(o, "level", json_string(level_name(our)));
    json_object_set_new(o, "msg", json_string("libwebsockets"));
    json_t *l = json_stringn(line, n);
    json_object_set_new(o, "lws", l ? l : json_string("(not UTF-8)"));
    emit(o);
    json_decref(o);
}
