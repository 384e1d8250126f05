/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to gw_config: JSON text straight to a gw_value tree, for gw_config_take_value() (doc.c),
 * implemented in json_value.c beside the jansson conversion it must match.
 */
#ifndef GW_CONFIG_TEXT_VALUE_H
#define GW_CONFIG_TEXT_VALUE_H

#include "gw/value.h"

#include <stddef.h>

/*
 * Converts len bytes of JSON text that jansson has accepted (json_loadb with JSON_DECODE_ANY and
 * JSON_REJECT_DUPLICATES: one value, no duplicate keys) into *out, with exactly the result
 * gw_json_to_value() gives for jansson's tree of the same text: the same types, strings, numbers
 * (integers as int64, reals by strtod), map order and tagged forms, and GW_EINVAL for a malformed
 * tagged form (then *out is null). Other text gives GW_EINVAL or some value, never a crash.
 * If read is not NULL it is called now and then (every MiB or so) with the number of bytes from
 * the start of text that will not be read again, so the caller may release them.
 */
int gw_json_text_to_value(const char *text, size_t len, struct gw_value *out,
                          void (*read)(void *arg, size_t done), void *arg);

/* Shared by doc.c's scanner and the readers of json_value.c: a hex digit's value (-1 if c is
 * none); the character a one-letter escape (\n ...) stands for; code point cp as UTF-8 into out
 * (room for 4 bytes), returning its length. */
int gw_config_hexval(char c);
char gw_config_unescape(char e);
size_t gw_config_put_utf8(char *out, unsigned cp);

#endif
