/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON documents with source positions, and the diagnostics list shared by the config loader and
 * the JSON Schema validator (gw/schema.h).
 *
 * jansson parses the text; it keeps no line or column for the values it returns, so after jansson
 * accepts a text a small scanner walks the same bytes and records, for every value, its JSON
 * Pointer (RFC 6901, "/adapters/0/points/3/type"; "" is the root) and its 1-based line:column.
 * Columns count Unicode code points, as jansson's own error columns do; a tab counts as one.
 * The index is a hash table, so gw_config_pos() is O(length of the pointer); it takes about 30
 * bytes per value and does not need the JSON tree, which may be released before the document
 * (gw_config_take_value()) when only positions are still wanted.
 *
 * Diagnostics carry an instance (or schema) location as a JSON Pointer; gw_config_locate() turns
 * the pointers into file:line:col and gw_diag_format() prints them sorted by position:
 *     gateway.json:12:17: /adapters/0/points/3/type: "flaot" is not one of int16, uint16, ...
 */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <jansson.h>
#include <stddef.h>

/* --- Diagnostics --- */

struct gw_diag {
    char *file;     /* owned; NULL until located (or when there is no file) */
    int line, col;  /* 1-based; 0 when unknown */
    char *pointer;  /* owned JSON Pointer of the location, "" = root; NULL = no location (syntax) */
    char *keyword;  /* owned schema keyword path ("/properties/port/maximum"); "" if none */
    char *message;  /* owned, plain words, no trailing period */
    size_t seq;     /* insertion order, keeps the sort stable */
};

struct gw_diag_list {
    struct gw_diag *items;  /* owned array of n entries */
    size_t n, cap;
};

/* Prepares an empty list in caller storage. */
void gw_diag_list_init(struct gw_diag_list *l);

/* Releases every entry and leaves the list empty (reusable). */
void gw_diag_list_fini(struct gw_diag_list *l);

/*
 * Appends a diagnostic. pointer (copied; NULL for "no location"), keyword (copied; NULL means "")
 * and the printf-style message are copied into the list. Returns the new entry (owned by the list,
 * valid until the next add or fini) so the caller may set file/line/col.
 */
struct gw_diag *gw_diag_add(struct gw_diag_list *l, const char *pointer, const char *keyword,
                            const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Moves every entry of src to the end of dst (src is left empty). */
void gw_diag_list_move(struct gw_diag_list *dst, struct gw_diag_list *src);

/* Sorts by file, line, column, then insertion order (entries without a position come first). */
void gw_diag_list_sort(struct gw_diag_list *l);

/*
 * Formats every entry, one per line ("file:line:col: /pointer: message\n"), in the list's current
 * order; the root pointer prints as "(root)", missing parts are left out. Returns a string the
 * caller frees with free(); "" for an empty list. Call gw_diag_list_sort() first for position
 * order.
 */
char *gw_diag_format(const struct gw_diag_list *l);

/* --- Documents --- */

struct gw_config_doc;

/* Largest file gw_config_load() reads (bytes). */
#define GW_CONFIG_MAX_FILE (16u << 20)

/*
 * Reads and parses the JSON file at path (borrowed) into a new document (*out, freed with
 * gw_config_free()). Any JSON value may be the root; duplicate keys and raw NUL bytes are
 * refused; a leading UTF-8 byte order mark is skipped. The document keeps the file's text until
 * gw_config_take_value() or gw_config_free(), and builds its position index from it on first
 * use (a position asked for, gw_config_count(), or gw_config_take_value()), so the index and the
 * JSON tree are in memory together only when positions are wanted while the tree exists (a
 * file with errors). That first use fills a cache inside the const document: do not share one
 * document between threads before it.
 * Returns 0; GW_ECONFIG_READ if the file cannot be opened or read or is larger than
 * GW_CONFIG_MAX_FILE (one diag names the file and the reason); GW_EJSON on a syntax error (one
 * diag with file, line, col and the parser's message; a trailing comma is reported at the comma).
 * On error *out is NULL. diags may be NULL.
 */
int gw_config_load(const char *path, struct gw_config_doc **out, struct gw_diag_list *diags);

/*
 * Same as gw_config_load() for text already in memory: text (borrowed, len bytes, need not be
 * NUL-terminated) is parsed; name (copied; NULL → "<string>") is used as the file name in diags.
 * The position index is built at once (the text is not kept). Returns 0 or GW_EJSON.
 */
int gw_config_parse(const char *text, size_t len, const char *name, struct gw_config_doc **out,
                    struct gw_diag_list *diags);

/* Frees the document and its JSON tree (unless the caller took its own reference). NULL is fine. */
void gw_config_free(struct gw_config_doc *doc);

/*
 * The root value, borrowed: valid while doc lives (json_incref() it to keep it longer); NULL once
 * gw_config_take_value() has taken it.
 */
json_t *gw_config_root(const struct gw_config_doc *doc);

struct gw_value;

/*
 * Turns the document into a value tree (*out, overwritten; the caller releases it with
 * gw_value_fini()), exactly as gw_json_to_value() (gw/json.h) would from its JSON tree, and
 * releases the JSON tree, so that a large file never has both trees in memory at once. A
 * document from gw_config_load() releases the JSON tree first, then builds its position index
 * and reads the value tree from the kept text (each container at its exact size), giving the
 * text's pages back as it goes; one from gw_config_parse() converts the JSON tree, emptying it
 * on the way (gw_json_take_value()). The positions stay: gw_config_pos(), gw_config_key_pos()
 * and gw_config_locate() work as before, while gw_config_root() is NULL from now on. Returns 0,
 * or GW_EINVAL for a malformed tagged object or when the tree was already taken (then *out is
 * null). Either way the JSON tree is gone afterwards.
 */
int gw_config_take_value(struct gw_config_doc *doc, struct gw_value *out);

/* The file name given to load/parse, borrowed. */
const char *gw_config_name(const struct gw_config_doc *doc);

/*
 * Position of the value at pointer (borrowed, RFC 6901, "" = root) in the source text.
 * Returns 0 and sets *line, *col (1-based), or GW_ENOENT if no value has that pointer.
 */
int gw_config_pos(const struct gw_config_doc *doc, const char *pointer, int *line, int *col);

/*
 * Position of the member name (the opening quote of the key) of the object member at pointer.
 * Returns 0, or GW_ENOENT if pointer does not name an object member.
 */
int gw_config_key_pos(const struct gw_config_doc *doc, const char *pointer, int *line, int *col);

/* Number of values recorded in the position index (every value, containers included). */
size_t gw_config_count(const struct gw_config_doc *doc);

/*
 * Gives every diag from index `from` on that has no position yet this document's file name and
 * the line:col of its pointer; a pointer that names no value (a missing member) falls back to its
 * nearest existing ancestor. Diags with a NULL pointer are left as they are.
 */
void gw_config_locate(const struct gw_config_doc *doc, struct gw_diag_list *diags, size_t from);

/*
 * RFC 6901 helpers. gw_config_pointer_get() resolves pointer (borrowed) in root (borrowed) and
 * returns the value (borrowed) or NULL. gw_config_pointer_append() appends "/" and the escaped
 * token (len bytes of key; "~" → "~0", "/" → "~1") to the NUL-terminated heap string *ptr
 * (reallocated). gw_config_pointer_unescape() decodes one token of len bytes into a new string
 * (caller frees) and stores its length in *out_len; NULL if the token has a bad "~" escape.
 */
json_t *gw_config_pointer_get(json_t *root, const char *pointer);
void gw_config_pointer_append(char **ptr, const char *key, size_t len);
char *gw_config_pointer_unescape(const char *tok, size_t len, size_t *out_len);

#endif
