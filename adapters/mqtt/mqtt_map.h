/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MQTT adapter's pure core, without libmosquitto and without I/O: topic filter matching,
 * resource-name and topic templates ("{N}" = segment N of a topic), RFC 6901 JSON Pointers,
 * payload decoding with type coercion, and write payload rendering. Everything here is
 * deterministic and unit-tested on its own (tests/unit/mqtt/test_mqtt_map.c).
 */
#ifndef GW_MQTT_MAP_H
#define GW_MQTT_MAP_H

#include "gw/value.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum gw_mqtt_format {
    GW_MQTT_FMT_AUTO = 0, /* JSON if the payload parses as JSON, else text */
    GW_MQTT_FMT_JSON,     /* must be JSON */
    GW_MQTT_FMT_TEXT,     /* the payload as a string */
};

enum gw_mqtt_as {
    GW_MQTT_AS_AUTO = 0,
    GW_MQTT_AS_NUMBER,
    GW_MQTT_AS_INTEGER,
    GW_MQTT_AS_BOOL,
    GW_MQTT_AS_STRING,
};

/* Parses the config words ("auto", "json", ...). Returns 0 or GW_EINVAL. */
int gw_mqtt_format_parse(const char *s, enum gw_mqtt_format *out);
int gw_mqtt_as_parse(const char *s, enum gw_mqtt_as *out);
const char *gw_mqtt_as_name(enum gw_mqtt_as as);

/*
 * Checks a subscription filter (MQTT 3.1.1 section 4.7): '#' only as the whole last level, '+'
 * only as a whole level, not empty. Returns 0, or GW_EINVAL with *why set to a static reason.
 * *levels gets the number of levels; *multi whether it ends in '#'; *wild whether it has any
 * wildcard.
 */
int gw_mqtt_filter_check(const char *filter, size_t *levels, bool *multi, bool *wild,
                         const char **why);
/* Checks a topic name to publish to: not empty, no wildcard. Returns 0 or GW_EINVAL (*why). */
int gw_mqtt_topic_check(const char *topic, const char **why);
/* True if topic matches filter (topics starting with '$' never match a leading wildcard). */
bool gw_mqtt_topic_match(const char *filter, const char *topic);

/*
 * Checks a template: "{N}" with N in 1..999 selects a topic segment, "{{" and "}}" are literal
 * braces, any other brace is an error. *max_index gets the largest N used (0 = none).
 * Returns 0 or GW_EINVAL with *why.
 */
int gw_mqtt_template_check(const char *tmpl, unsigned *max_index, const char **why);
/*
 * Expands tmpl with the segments of topic into a new string (*out, free()). Returns 0, or
 * GW_ERANGE when the topic has no segment N (*out NULL), GW_EINVAL for a malformed template.
 */
int gw_mqtt_template_expand(const char *tmpl, const char *topic, char **out);

/*
 * Resolves an RFC 6901 JSON Pointer ("" = the whole document) in root (borrowed). Returns the
 * value (borrowed) or NULL when a step is missing or the pointer is malformed ("~2", an array
 * index that is not a number).
 */
json_t *gw_mqtt_json_pointer(json_t *root, const char *pointer);

/*
 * Coerces *v in place to as. Returns 0, or GW_EINVAL with a reason in err (v unchanged).
 * number: from integers, doubles, numeric strings, bools (1/0); integer: the same, rounded to
 * the nearest, range-checked; bool: from numbers (non-zero), strings true/false, on/off, yes/no,
 * 1/0 (any case); string: numbers printed, bools as true/false, maps and arrays as JSON text.
 */
int gw_mqtt_coerce(struct gw_value *v, enum gw_mqtt_as as, char *err, size_t errcap);

/*
 * Decodes a message payload into *out (overwritten): parse by format, pick pointer (NULL or ""
 * = whole payload), coerce. Returns 0 or, with a reason in err:
 *   GW_EJSON   format json and the payload is not JSON (err says where jansson stopped)
 *   GW_ENOENT  pointer given and the field is absent (also: auto format and not JSON)
 *   GW_EINVAL  the value cannot be coerced
 * *out is null on error.
 */
int gw_mqtt_decode(const void *payload, size_t len, enum gw_mqtt_format format, const char *pointer,
                   enum gw_mqtt_as as, struct gw_value *out, char *err, size_t errcap);

/* How a write input becomes a payload. */
struct gw_mqtt_write_fmt {
    json_t *tmpl;           /* JSON template with "$value" placeholders, or NULL = raw */
    const char *true_text;  /* raw payload of true (NULL = "true") */
    const char *false_text; /* raw payload of false (NULL = "false") */
};

/*
 * Renders in (borrowed) as a payload into *out (malloc'd, *len bytes, NUL-terminated for
 * convenience). Returns 0 or GW_EINVAL (err) when in cannot be put in JSON (invalid UTF-8).
 */
int gw_mqtt_encode(const struct gw_value *in, const struct gw_mqtt_write_fmt *fmt, char **out,
                   size_t *len, char *err, size_t errcap);

#endif
