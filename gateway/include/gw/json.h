/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Conversion between jansson values and gw_value trees (gw/value.h), for the test broker, the
 * MQTT adapter and REST bodies. The JSON form of the values JSON has no type for follows the
 * conformance vectors (PROTOCOL.md section 17):
 *   bytes                          ↔ {"$bytes": "00ff…"}   (lower-case hex on output)
 *   UINT above INT64_MAX           ↔ {"$int": "18446744073709551615"}
 *   non-finite double              ↔ {"$double": "inf" | "-inf" | "nan"}  (also "-0.0" on input)
 * An object with exactly one member named "$bytes", "$int" or "$double" whose value is a string
 * is always read as that tagged form; a malformed one is an error, never a plain map. So a MAP
 * value whose only key is one of those names, with a string value, does not survive a round trip
 * (it comes back as the tagged type); no other value changes in a round trip.
 *
 * Numbers: a JSON integer becomes GW_VALUE_INT (jansson integers are int64); a JSON real becomes
 * GW_VALUE_DOUBLE. On output INT and UINT become JSON integers, DOUBLE a JSON real: jansson
 * always prints a real with a "." or an exponent ("3.0"), so an integral double stays a double
 * through JSON text. Map order is kept both ways (jansson 2.14 objects keep insertion order).
 * Maps and arrays made from JSON are allocated at their exact size (no spare capacity).
 */
#ifndef GW_JSON_H
#define GW_JSON_H

#include "gw/value.h"

#include <jansson.h>

/*
 * Converts json (borrowed) into *out (overwritten, not finalised; the caller owns the result and
 * releases it with gw_value_fini()). Returns 0, or GW_EINVAL for a malformed tagged object
 * (bad hex, bad integer text, unknown $double word); then *out is null and nothing leaks.
 */
int gw_json_to_value(json_t *json, struct gw_value *out);

/*
 * gw_json_to_value(), emptying json on the way: each member or element, once converted, is
 * replaced by null in its container (and released unless someone else holds a reference), so
 * the memory in use stays close to the larger of the two trees instead of their sum. json itself
 * stays a valid value the caller still releases; only its containers' shape (sizes, member
 * names) is left. Same results and errors as gw_json_to_value(); after an error json is partly
 * emptied.
 */
int gw_json_take_value(json_t *json, struct gw_value *out);

/*
 * Converts v (borrowed) into a new JSON value (the caller owns the reference, json_decref()).
 * Returns NULL only if a string or map key is not valid UTF-8 (JSON text cannot carry it;
 * convert such data as bytes instead).
 */
json_t *gw_value_to_json(const struct gw_value *v);

#endif
