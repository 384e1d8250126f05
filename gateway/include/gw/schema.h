/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A JSON Schema validator (draft 2020-12 semantics, draft-07 on request) working on jansson
 * values. A schema is compiled once (gw_schema_load/gw_schema_new) and may then validate any
 * number of instances; a compiled schema is read-only, so several threads may validate at once.
 *
 * Supported keywords:
 *   type enum const; properties required additionalProperties patternProperties propertyNames
 *   minProperties maxProperties dependentRequired dependentSchemas; items prefixItems contains
 *   minContains maxContains minItems maxItems uniqueItems; minimum maximum exclusiveMinimum
 *   exclusiveMaximum multipleOf; minLength maxLength (Unicode code points) pattern;
 *   allOf anyOf oneOf not if then else; $ref (to "#" + JSON Pointer), $defs, definitions;
 *   boolean schemas; annotations title description default examples $schema $id $comment
 *   readOnly writeOnly deprecated (accepted, not checked).
 *   Draft-07 only: items as an array, additionalItems, dependencies.
 * Any other keyword is refused when the schema is compiled, with the keyword named: known but
 * unsupported ones ("format", "unevaluatedProperties", "$anchor", ...) as "unsupported keyword",
 * others as "unknown keyword" (which also catches typos such as "requried"). The one exception is
 * a non-keyword member that is only used as a $ref target container ({"$ref": "#/my~1defs/a"}).
 *
 * Limits, by design: $ref must be "#" followed by a JSON Pointer (percent-encoding allowed);
 * remote references, "$id"-relative references and anchors ("#name") are refused at load. $id is
 * ignored, so every "#..." resolves against the root of the document. A $ref cycle that never
 * descends into the instance ({"$ref": "#"} at the root) is refused at load.
 *
 * pattern and patternProperties use POSIX extended regular expressions (glibc regcomp with
 * REG_EXTENDED), compiled once per distinct pattern at load, after this translation from ECMA-262:
 * \d \w \s \D \W \S become bracket expressions (\d \w \s also inside [...]); "(?:" becomes "(";
 * lazy quantifiers (*? +? ?? {n,m}?) become greedy ones, which match the same strings; \uXXXX
 * and \xXX become the UTF-8 bytes (inside [...] only ASCII); \t \n \r \f \v the characters;
 * \b \B stay word boundaries (GNU). Refused at load, naming the pattern: lookahead and
 * lookbehind "(?=" "(?!" "(?<", named groups, \D \W \S inside [...], "[]", \0 and other
 * letter escapes outside [...] (\p{..}, \cX, ...), and whatever regcomp refuses. Remaining
 * differences: \s is ASCII whitespace only; "." and [...] match single bytes (so one non-ASCII
 * character is several) unless the process runs with a UTF-8 LC_CTYPE; "." also matches a
 * newline; matching is POSIX leftmost-longest, which only matters for captures (unused here).
 *
 * Numbers: jansson integers (64-bit) and doubles compare exactly (long double); 1.0 counts as an
 * integer for "type"; "multipleOf" on non-integers allows a relative error of 1e-9 in the quotient.
 * Equality (enum, const, uniqueItems) is JSON equality: 1 == 1.0, objects regardless of order.
 */
#ifndef GW_SCHEMA_H
#define GW_SCHEMA_H

#include "gw/config.h"

#include <jansson.h>

struct gw_schema;

enum gw_schema_dialect {
    GW_SCHEMA_AUTO = 0,     /* from the root "$schema"; draft 2020-12 when there is none */
    GW_SCHEMA_DRAFT7,       /* draft-07: items arrays, additionalItems, $ref hides siblings */
    GW_SCHEMA_DRAFT2020,    /* draft 2020-12 */
};

/*
 * Reads the schema file at path (borrowed) and compiles it (dialect from "$schema").
 * On success *out is a new schema (free with gw_schema_free()) and 0 is returned.
 * Errors: GW_ECONFIG_READ (unreadable), GW_EJSON (syntax), GW_ESCHEMA (every problem found is
 * added to diags with the schema location as pointer and file:line:col filled in); *out is NULL.
 * diags may be NULL.
 */
int gw_schema_load(const char *path, struct gw_schema **out, struct gw_diag_list *diags);

/*
 * Compiles the schema root (borrowed; the schema keeps its own reference) as dialect.
 * Returns 0 or GW_ESCHEMA (problems added to diags with schema pointers, no file positions).
 */
int gw_schema_new(json_t *root, enum gw_schema_dialect dialect, struct gw_schema **out,
                  struct gw_diag_list *diags);

/* Frees a schema; NULL is fine. */
void gw_schema_free(struct gw_schema *schema);

/* The dialect the schema was compiled as (never GW_SCHEMA_AUTO). */
enum gw_schema_dialect gw_schema_dialect_get(const struct gw_schema *schema);

/*
 * Validates instance (borrowed) and appends EVERY error found to out (may be NULL to only get
 * the verdict): pointer = JSON Pointer of the instance location, keyword = schema location of
 * the failing keyword, message in plain words. For anyOf/oneOf, only the alternative selected
 * by a const/enum discriminator, or else the closest alternative, is reported (with one summary
 * line), not every alternative's errors. Work is bounded: after 10 million subschema visits
 * (possible only with anyOf/oneOf alternatives that recurse into themselves) validation stops
 * with GW_ECONFIG and a diag saying so. Reentrant; does not call back.
 * Returns 0 if valid, GW_ECONFIG if not.
 */
int gw_schema_validate(const struct gw_schema *schema, json_t *instance, struct gw_diag_list *out);

/*
 * gw_schema_validate() on the root of doc (borrowed), then gw_config_locate() on the new diags
 * (file:line:col from doc) and gw_diag_list_sort() on the whole list. Returns 0 or GW_ECONFIG.
 */
int gw_schema_validate_doc(const struct gw_schema *schema, const struct gw_config_doc *doc,
                           struct gw_diag_list *out);

#endif
