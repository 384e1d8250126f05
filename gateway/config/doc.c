/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON documents with source positions (gw/config.h). jansson parses; then a small scanner walks
 * the same text (which jansson has just accepted, so the scanner can trust its structure) and
 * records every value's JSON Pointer with its line:column in an open-addressing hash table.
 * On a syntax error the scanner looks for a trailing comma, the most common hand-editing mistake,
 * which jansson reports only at the closing bracket on the next line.
 * Used by the daemon's config loader and by gw_schema_load().
 */
#include "gw/config.h"
#include "gw/error.h"
#include "gw/mem.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The index is a tree: each value is (parent, pointer token) with its position, so memory grows
 * with the file, not with nesting depth times the number of values (full pointer strings would).
 * A hash on (parent, token) finds a child; a lookup walks the pointer one token at a time.
 */
#define NO_PARENT UINT32_MAX

struct pos_entry {
    uint32_t parent;    /* index of the container, NO_PARENT for the root */
    uint32_t hash;
    char *tok;          /* owned pointer token, escaped as in a pointer ("a~1b", "3") */
    size_t tok_len;
    int line, col;      /* the value */
    int kline, kcol;    /* the member name, 0 if not an object member */
};

struct gw_config_doc {
    char *name;
    json_t *root;
    struct pos_entry *entries;  /* entries[0] is the root value */
    size_t n, entries_cap;
    uint32_t *slots;            /* hash table of entry index + 1; 0 = empty */
    size_t cap;                 /* power of two */
};

/* --- RFC 6901 pointers --- */

void gw_config_pointer_append(char **ptr, const char *key, size_t len)
{
    size_t old = *ptr ? strlen(*ptr) : 0;
    size_t extra = 1;
    for (size_t i = 0; i < len; i++)
        extra += (key[i] == '~' || key[i] == '/') ? 2 : 1;
    char *p = gw_realloc(*ptr, old + extra + 1);
    char *w = p + old;
    *w++ = '/';
    for (size_t i = 0; i < len; i++) {
        if (key[i] == '~') {
            *w++ = '~';
            *w++ = '0';
        } else if (key[i] == '/') {
            *w++ = '~';
            *w++ = '1';
        } else {
            *w++ = key[i];
        }
    }
    *w = '\0';
    *ptr = p;
}

char *gw_config_pointer_unescape(const char *tok, size_t len, size_t *out_len)
{
    char *out = gw_malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (tok[i] == '~') {
            if (i + 1 < len && tok[i + 1] == '0')
                out[n++] = '~';
            else if (i + 1 < len && tok[i + 1] == '1')
                out[n++] = '/';
            else {
                free(out);
                return NULL;
            }
            i++;
        } else {
            out[n++] = tok[i];
        }
    }
    out[n] = '\0';
    if (out_len)
        *out_len = n;
    return out;
}

/* An array index token: "0" or digits without a leading zero, fitting in size_t. */
static int parse_index(const char *tok, size_t len, size_t *idx)
{
    if (len == 0 || len > 18 || (len > 1 && tok[0] == '0'))
        return -1;
    size_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (tok[i] < '0' || tok[i] > '9')
            return -1;
        v = v * 10 + (size_t)(tok[i] - '0');
    }
    *idx = v;
    return 0;
}

json_t *gw_config_pointer_get(json_t *root, const char *pointer)
{
    json_t *cur = root;
    const char *p = pointer;
    if (!cur || !p)
        return NULL;
    while (*p) {
        if (*p != '/')
            return NULL;
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (json_is_object(cur)) {
            size_t klen;
            char *key = gw_config_pointer_unescape(p, len, &klen);
            if (!key)
                return NULL;
            cur = json_object_getn(cur, key, klen);
            free(key);
        } else if (json_is_array(cur)) {
            size_t idx;
            if (parse_index(p, len, &idx) < 0)
                return NULL;
            cur = json_array_get(cur, idx);
        } else {
            return NULL;
        }
        if (!cur)
            return NULL;
        p += len;
    }
    return cur;
}

/* --- The position index --- */

static uint32_t hash_tok(uint32_t parent, const char *tok, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a over the parent index, then the token */
    for (int i = 0; i < 4; i++) {
        h ^= (parent >> (8 * i)) & 0xFF;
        h *= 16777619u;
    }
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)tok[i];
        h *= 16777619u;
    }
    return h;
}

/* The slot holding (parent, tok), or the empty slot where it would go. */
static uint32_t *index_slot(const struct gw_config_doc *doc, uint32_t parent, const char *tok,
                            size_t len, uint32_t h)
{
    size_t mask = doc->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t *slot = &doc->slots[i];
        if (!*slot)
            return slot;
        const struct pos_entry *e = &doc->entries[*slot - 1];
        if (e->hash == h && e->parent == parent && e->tok_len == len &&
            memcmp(e->tok, tok, len) == 0)
            return slot;
    }
}

static void index_grow(struct gw_config_doc *doc)
{
    free(doc->slots);
    doc->cap = doc->cap ? doc->cap * 2 : 64;
    doc->slots = gw_calloc(doc->cap, sizeof(*doc->slots));
    for (size_t i = 1; i < doc->n; i++) { /* the root is not in the table */
        const struct pos_entry *e = &doc->entries[i];
        *index_slot(doc, e->parent, e->tok, e->tok_len, e->hash) = (uint32_t)i + 1;
    }
}

/* Records a value; parent NO_PARENT is the root. Returns the new entry's index. */
static uint32_t index_put(struct gw_config_doc *doc, uint32_t parent, const char *tok,
                          size_t len)
{
    if (doc->n == doc->entries_cap) {
        doc->entries_cap = doc->entries_cap ? doc->entries_cap * 2 : 64;
        doc->entries = gw_realloc(doc->entries, doc->entries_cap * sizeof(*doc->entries));
    }
    uint32_t id = (uint32_t)doc->n++;
    struct pos_entry *e = &doc->entries[id];
    memset(e, 0, sizeof(*e));
    e->parent = parent;
    if (parent == NO_PARENT)
        return id;
    e->tok = gw_malloc(len + 1);
    memcpy(e->tok, tok, len);
    e->tok[len] = '\0';
    e->tok_len = len;
    e->hash = hash_tok(parent, tok, len);
    if ((doc->n + 1) * 4 > doc->cap * 3)
        index_grow(doc); /* re-inserts everything, e included */
    else
        *index_slot(doc, parent, tok, len, e->hash) = id + 1;
    return id;
}

/* The entry of pointer (borrowed), or NULL. */
static const struct pos_entry *index_find(const struct gw_config_doc *doc, const char *pointer)
{
    if (doc->n == 0)
        return NULL;
    uint32_t cur = 0;
    const char *p = pointer;
    while (*p) {
        if (*p != '/' || !doc->cap)
            return NULL;
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        uint32_t slot = *index_slot(doc, cur, p, len, hash_tok(cur, p, len));
        if (!slot)
            return NULL;
        cur = slot - 1;
        p += len;
    }
    return &doc->entries[cur];
}

/* --- The scanner --- */

struct scanner {
    const char *p, *end;
    int line, col;      /* of *p */
    struct gw_config_doc *doc;
};

static void sc_advance(struct scanner *s)
{
    unsigned char c = (unsigned char)*s->p++;
    if (c == '\n') {
        s->line++;
        s->col = 1;
    } else if ((c & 0xC0) != 0x80) {
        s->col++;   /* count code points: continuation bytes do not move the column */
    }
}

static void sc_skip_ws(struct scanner *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
        sc_advance(s);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static unsigned read_u4(struct scanner *s)
{
    unsigned v = 0;
    for (int i = 0; i < 4 && s->p < s->end; i++) {
        int h = hexval(*s->p);
        v = v * 16 + (unsigned)(h < 0 ? 0 : h);
        sc_advance(s);
    }
    return v;
}

static size_t put_utf8(char *out, unsigned cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Scans a string starting at its opening quote. If out is not NULL, the decoded bytes are
 * written to a new buffer (*out, caller frees; decoding never grows the text) with length *len.
 */
static void sc_string(struct scanner *s, char **out, size_t *len)
{
    const char *start = s->p;
    char *buf = out ? gw_malloc((size_t)(s->end - start) + 1) : NULL;
    size_t n = 0;
    sc_advance(s); /* opening quote */
    while (s->p < s->end && *s->p != '"') {
        if (*s->p == '\\' && s->p + 1 < s->end) {
            sc_advance(s);
            char e = *s->p;
            sc_advance(s);
            if (e == 'u') {
                unsigned cp = read_u4(s);
                if (cp >= 0xD800 && cp < 0xDC00 && s->end - s->p >= 6 && s->p[0] == '\\' &&
                    s->p[1] == 'u') {
                    sc_advance(s);
                    sc_advance(s);
                    unsigned lo = read_u4(s);
                    if (lo >= 0xDC00 && lo < 0xE000)
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (buf)
                    n += put_utf8(buf + n, cp);
            } else if (buf) {
                char c = e;
                switch (e) {
                case 'b': c = '\b'; break;
                case 'f': c = '\f'; break;
                case 'n': c = '\n'; break;
                case 'r': c = '\r'; break;
                case 't': c = '\t'; break;
                default: break; /* '"', '\\', '/' stand for themselves */
                }
                buf[n++] = c;
            }
        } else {
            if (buf)
                buf[n++] = *s->p;
            sc_advance(s);
        }
    }
    if (s->p < s->end)
        sc_advance(s); /* closing quote */
    if (buf) {
        buf[n] = '\0';
        *out = buf;
        *len = n;
    }
}

/* Records the value at s->p (member name tok of parent) and everything inside it. */
static void sc_value(struct scanner *s, uint32_t parent, const char *tok, size_t tok_len,
                     int kline, int kcol, unsigned depth)
{
    sc_skip_ws(s);
    if (s->p >= s->end)
        return;
    uint32_t id = index_put(s->doc, parent, tok, tok_len);
    struct pos_entry *e = &s->doc->entries[id];
    e->line = s->line;
    e->col = s->col;
    e->kline = kline;
    e->kcol = kcol;
    char c = *s->p;
    if (depth > 4096) /* jansson refuses deeper input before we get here; belt and braces */
        return;
    if (c == '{') {
        sc_advance(s);
        for (;;) {
            sc_skip_ws(s);
            if (s->p >= s->end || *s->p == '}')
                break;
            if (*s->p != '"')
                return;
            int kl = s->line, kc = s->col;
            char *key, *ptok = NULL;
            size_t klen;
            sc_string(s, &key, &klen);
            sc_skip_ws(s);
            if (s->p < s->end && *s->p == ':')
                sc_advance(s);
            gw_config_pointer_append(&ptok, key, klen); /* "/" + escaped key */
            free(key);
            sc_value(s, id, ptok + 1, strlen(ptok + 1), kl, kc, depth + 1);
            free(ptok);
            sc_skip_ws(s);
            if (s->p < s->end && *s->p == ',')
                sc_advance(s);
            else
                break;
        }
        if (s->p < s->end)
            sc_advance(s);
    } else if (c == '[') {
        sc_advance(s);
        for (size_t i = 0;; i++) {
            sc_skip_ws(s);
            if (s->p >= s->end || *s->p == ']')
                break;
            char idx[24];
            int n = snprintf(idx, sizeof(idx), "%zu", i);
            sc_value(s, id, idx, (size_t)n, 0, 0, depth + 1);
            sc_skip_ws(s);
            if (s->p < s->end && *s->p == ',')
                sc_advance(s);
            else
                break;
        }
        if (s->p < s->end)
            sc_advance(s);
    } else if (c == '"') {
        sc_string(s, NULL, NULL);
    } else {
        while (s->p < s->end && *s->p && strchr("0123456789+-.eEtrufalsn", *s->p))
            sc_advance(s);
    }
}

/*
 * After a syntax error at byte offset err_pos: if a ',' followed only by whitespace and a closing
 * bracket occurs (outside strings) before that offset, returns its offset, else -1.
 */
static long find_trailing_comma(const char *text, size_t len, size_t err_pos)
{
    int in_str = 0;
    for (size_t i = 0; i < len && i <= err_pos; i++) {
        char c = text[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == ',') {
            size_t j = i + 1;
            while (j < len && (text[j] == ' ' || text[j] == '\t' || text[j] == '\n' ||
                               text[j] == '\r'))
                j++;
            if (j < len && (text[j] == '}' || text[j] == ']'))
                return (long)i;
        }
    }
    return -1;
}

/* Line and column (1-based, code points) of byte offset off. */
static void offset_pos(const char *text, size_t off, int *line, int *col)
{
    struct scanner s = {.p = text, .end = text + off, .line = 1, .col = 1};
    while (s.p < s.end)
        sc_advance(&s);
    *line = s.line;
    *col = s.col;
}

static void syntax_diag(const char *text, size_t len, const char *name, const json_error_t *err,
                        struct gw_diag_list *diags)
{
    if (!diags)
        return;
    size_t pos = err->position > 0 ? (size_t)err->position : 0;
    if (pos > len)
        pos = len;
    long comma = find_trailing_comma(text, len, pos);
    struct gw_diag *d;
    int line = err->line > 0 ? err->line : 1, col = err->column > 0 ? err->column : 1;
    if (comma >= 0) {
        size_t j = (size_t)comma + 1;
        while (text[j] != '}' && text[j] != ']')
            j++;
        offset_pos(text, (size_t)comma, &line, &col);
        d = gw_diag_add(diags, NULL, NULL,
                        "syntax error: trailing comma before '%c' (JSON allows no comma after the "
                        "last %s)",
                        text[j], text[j] == '}' ? "member" : "element");
    } else {
        /* jansson reports the column where the bad token ends; point at its start instead. */
        const char *near = strstr(err->text, "near '");
        if (near)
            near += 6;
        if (near && pos > 0) {
            size_t tl = strlen(near);
            if (tl > 0 && near[tl - 1] == '\'')
                tl--;
            if (tl > 0 && tl <= pos && memcmp(text + pos - tl, near, tl) == 0)
                offset_pos(text, pos - tl, &line, &col);
        }
        /* Hints for the usual hand-editing mistakes jansson words generically. */
        const char *hint = "";
        const char *tok = near ? near : "";
        if (tok[0] == '/')
            hint = " (JSON has no comments)";
        else if (strstr(err->text, "'}' expected") && tok[0] == '"')
            hint = " (missing ',' after the previous member?)";
        else if (strstr(err->text, "']' expected") && tok[0] != '}' && tok[0] != '\0')
            hint = " (missing ',' between elements?)";
        d = gw_diag_add(diags, NULL, NULL, "syntax error: %s%s", err->text, hint);
    }
    d->file = gw_strdup(name);
    d->line = line;
    d->col = col;
}

int gw_config_parse(const char *text, size_t len, const char *name, struct gw_config_doc **out,
                    struct gw_diag_list *diags)
{
    *out = NULL;
    if (!name)
        name = "<string>";
    /* RFC 8259 lets a parser ignore a UTF-8 byte order mark; editors on Windows write one.
     * Columns on line 1 are then counted after it, as editors show them. */
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        text += 3;
        len -= 3;
    }
    /* jansson silently drops a NUL byte that follows a number or literal ("[1\0]" parses);
     * a raw NUL never belongs in JSON text, so refuse it before jansson sees it. */
    const char *nul = memchr(text, '\0', len);
    if (nul) {
        if (diags) {
            struct gw_diag *d = gw_diag_add(diags, NULL, NULL,
                                            "syntax error: NUL byte in the text (not JSON)");
            d->file = gw_strdup(name);
            offset_pos(text, (size_t)(nul - text), &d->line, &d->col);
        }
        return GW_EJSON;
    }
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
    if (!root) {
        syntax_diag(text, len, name, &err, diags);
        return GW_EJSON;
    }
    struct gw_config_doc *doc = gw_calloc(1, sizeof(*doc));
    doc->name = gw_strdup(name);
    doc->root = root;
    struct scanner s = {.p = text, .end = text + len, .line = 1, .col = 1, .doc = doc};
    sc_value(&s, NO_PARENT, NULL, 0, 0, 0, 0);
    *out = doc;
    return 0;
}

int gw_config_load(const char *path, struct gw_config_doc **out, struct gw_diag_list *diags)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    const char *why = NULL;
    char *text = NULL;
    size_t len = 0;
    if (!f) {
        why = strerror(errno);
        goto fail;
    }
    /* Grow as needed: most configs are a few KiB, the limit is 16 MiB. */
    size_t cap = 0;
    for (;;) {
        if (len == cap) {
            if (cap > GW_CONFIG_MAX_FILE) {
                why = "file larger than 16 MiB";
                break;
            }
            cap = cap ? cap * 2 : 64 * 1024;
            text = gw_realloc(text, cap + 1);
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                why = strerror(errno ? errno : EIO);
            break;
        }
    }
    if (!why && len > GW_CONFIG_MAX_FILE)
        why = "file larger than 16 MiB";
    fclose(f);
    if (why)
        goto fail;
    int rc = gw_config_parse(text, len, path, out, diags);
    free(text);
    return rc;
fail:
    free(text);
    if (diags) {
        struct gw_diag *d = gw_diag_add(diags, NULL, NULL, "cannot read: %s", why);
        d->file = gw_strdup(path);
    }
    return GW_ECONFIG_READ;
}

void gw_config_free(struct gw_config_doc *doc)
{
    if (!doc)
        return;
    for (size_t i = 0; i < doc->n; i++)
        free(doc->entries[i].tok);
    free(doc->entries);
    free(doc->slots);
    json_decref(doc->root);
    free(doc->name);
    free(doc);
}

json_t *gw_config_root(const struct gw_config_doc *doc)
{
    return doc->root;
}

const char *gw_config_name(const struct gw_config_doc *doc)
{
    return doc->name;
}

size_t gw_config_count(const struct gw_config_doc *doc)
{
    return doc->n;
}

int gw_config_pos(const struct gw_config_doc *doc, const char *pointer, int *line, int *col)
{
    const struct pos_entry *e = index_find(doc, pointer);
    if (!e)
        return GW_ENOENT;
    *line = e->line;
    *col = e->col;
    return 0;
}

int gw_config_key_pos(const struct gw_config_doc *doc, const char *pointer, int *line, int *col)
{
    const struct pos_entry *e = index_find(doc, pointer);
    if (!e || !e->kline)
        return GW_ENOENT;
    *line = e->kline;
    *col = e->kcol;
    return 0;
}

void gw_config_locate(const struct gw_config_doc *doc, struct gw_diag_list *diags, size_t from)
{
    for (size_t i = from; i < diags->n; i++) {
        struct gw_diag *d = &diags->items[i];
        if (d->line > 0 || !d->pointer)
            continue;
        char *p = gw_strdup(d->pointer);
        int line = 0, col = 0;
        for (;;) {
            if (gw_config_pos(doc, p, &line, &col) == 0)
                break;
            char *slash = strrchr(p, '/');
            if (!slash) {
                line = col = 0;
                break;
            }
            *slash = '\0';
        }
        free(p);
        free(d->file);
        d->file = gw_strdup(doc->name);
        d->line = line;
        d->col = col;
    }
}
