/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON documents with source positions (gw/config.h). jansson parses; then a small scanner walks
 * the same text (which jansson has accepted, so the scanner can trust its structure) and records
 * every value's JSON Pointer with its line:column in an open-addressing hash table: at once for
 * text in memory, on first use for a file (whose text the document keeps until its value tree
 * is taken, gw_config_take_value(), after the JSON tree has gone: so the file's text, the JSON
 * tree, the index and the value tree never all exist together: at 100,000 Modbus points, 12.9 MB
 * of indented JSON, the text with the JSON tree take ~82 MiB, the index with the value tree
 * ~61 MiB).
 * On a syntax error the scanner looks for a trailing comma, the most common hand-editing mistake,
 * which jansson reports only at the closing bracket on the next line.
 * Used by the daemon's config loader and by gw_schema_load().
 */
#include "gw/config.h"
#include "gw/error.h"
#include "gw/json.h"
#include "gw/mem.h"
#include "text_value.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/*
 * The index is a tree: each value is (parent, token) with its position, so memory grows with the
 * file, not with nesting depth times the number of values (full pointer strings would). A token
 * is not stored as a string: an array element keeps its index, an object member the id of its
 * name in a pool of distinct names (a configuration repeats the same few names: 100,000 Modbus
 * points have 4 distinct ones). So an entry is 24 bytes, allocated at its final size (the values
 * are counted first). A hash table on (parent, token), 5 to 10 bytes per value, built on the
 * first lookup, finds a child; a lookup walks the pointer one token at a time.
 */
#define NO_PARENT UINT32_MAX
#define NO_KEY UINT32_MAX

struct pos_entry {
    uint32_t parent;    /* index of the container, NO_PARENT for the root */
    uint32_t key;       /* object member: id of its name (escaped as in a pointer); array
                           element: its index */
    uint32_t line, col;     /* the value */
    uint32_t kline, kcol;   /* the member name; kline 0 = not an object member */
};

/* Distinct member names, escaped as pointer tokens ("a~1b"), back to back in buf. */
struct key_pool {
    char *buf;
    size_t len, buf_cap;
    uint32_t *off;      /* name i is buf[off[i] .. off[i + 1]) */
    size_t n, off_cap;  /* n names; off has n + 1 entries */
    uint32_t *slots;    /* hash set of name id + 1; 0 = empty */
    size_t cap;         /* power of two */
};

struct gw_config_doc {
    char *name;
    json_t *root;
    char *text_buf;             /* gw_config_load(): the file, kept for gw_config_take_value() */
    size_t text_map_len;        /* bytes mapped at text_buf (array_alloc()); 0 = malloc'd */
    size_t text_released;      /* bytes at text_buf given back while taking the value */
    const char *text;           /* the JSON text in it (after a byte order mark) */
    size_t text_len;
    bool indexed;               /* the position index is built (ensure_index()) */
    struct pos_entry *entries;  /* entries[0] is the root value */
    size_t n, entries_cap;
    uint32_t *slots;            /* hash table of entry index + 1; 0 = empty */
    size_t cap;                 /* power of two */
    struct key_pool keys;
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

static uint32_t hash_str(const char *tok, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)tok[i];
        h *= 16777619u;
    }
    return h;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 64;
    while (c < n)
        c *= 2;
    return c;
}

/*
 * The index's two big arrays (entries, hash slots) are mapped from the kernel directly when
 * large, never carved from the heap: the index is usually built when the JSON tree has just been
 * released (gw_config_take_value()), and in that free heap space it would push the value tree and
 * what is allocated with it further apart, leaving more half-used pages once both are freed
 * (measured: 3 to 4 MiB more resident after start-up at 100,000 Modbus points).
 */
#define BIG_ARRAY (1u << 20)

static void *array_alloc(size_t bytes)
{
    if (bytes < BIG_ARRAY)
        return gw_calloc(1, bytes);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "<2>out of memory mapping %zu bytes, aborting\n", bytes);
        abort();
    }
    return p; /* zero-filled */
}

static void array_free(void *p, size_t bytes)
{
    if (!p)
        return;
    if (bytes < BIG_ARRAY)
        free(p);
    else
        munmap(p, bytes);
}

/* The slot holding name tok, or the empty slot where it would go. */
static uint32_t *key_slot(const struct key_pool *k, const char *tok, size_t len, uint32_t h)
{
    size_t mask = k->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        uint32_t *slot = &k->slots[i];
        if (!*slot)
            return slot;
        uint32_t id = *slot - 1;
        if (k->off[id + 1] - k->off[id] == len && memcmp(k->buf + k->off[id], tok, len) == 0)
            return slot;
    }
}

/* The id of name tok, NO_KEY if no member has it. */
static uint32_t key_find(const struct key_pool *k, const char *tok, size_t len)
{
    if (!k->cap)
        return NO_KEY;
    uint32_t slot = *key_slot(k, tok, len, hash_str(tok, len));
    return slot ? slot - 1 : NO_KEY;
}

/* The id of name tok, added if new. */
static uint32_t key_intern(struct key_pool *k, const char *tok, size_t len)
{
    if ((k->n + 1) * 4 > k->cap * 3) {
        free(k->slots);
        k->cap = k->cap ? k->cap * 2 : 64;
        k->slots = gw_calloc(k->cap, sizeof(*k->slots));
        for (size_t id = 0; id < k->n; id++) {
            const char *t = k->buf + k->off[id];
            size_t l = k->off[id + 1] - k->off[id];
            *key_slot(k, t, l, hash_str(t, l)) = (uint32_t)id + 1;
        }
    }
    uint32_t *slot = key_slot(k, tok, len, hash_str(tok, len));
    if (*slot)
        return *slot - 1;
    if (!k->buf || k->len + len > k->buf_cap) { /* never NULL once a name is in */
        k->buf_cap = pow2_at_least(k->len + len);
        k->buf = gw_realloc(k->buf, k->buf_cap);
    }
    if (k->n + 2 > k->off_cap) {
        k->off_cap = pow2_at_least(k->n + 2);
        k->off = gw_realloc(k->off, k->off_cap * sizeof(*k->off));
    }
    memcpy(k->buf + k->len, tok, len);
    k->off[k->n] = (uint32_t)k->len;
    k->len += len;
    k->off[k->n + 1] = (uint32_t)k->len;
    *slot = (uint32_t)k->n + 1;
    return (uint32_t)k->n++;
}

static uint32_t hash_entry(uint32_t parent, uint32_t key, bool member)
{
    uint64_t x = ((uint64_t)parent << 32 | key) ^ (member ? 0x5bd1e995u : 0);
    x *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(x >> 32);
}

/* The slot holding the child (parent, key, member), or the empty slot where it would go. */
static uint32_t *index_slot(const struct gw_config_doc *doc, uint32_t parent, uint32_t key,
                            bool member)
{
    size_t mask = doc->cap - 1;
    for (size_t i = hash_entry(parent, key, member) & mask;; i = (i + 1) & mask) {
        uint32_t *slot = &doc->slots[i];
        if (!*slot)
            return slot;
        const struct pos_entry *e = &doc->entries[*slot - 1];
        if (e->parent == parent && e->key == key && (e->kline != 0) == member)
            return slot;
    }
}

/* Sizes the hash table for n entries (re-inserting those there are). */
static void index_reserve(struct gw_config_doc *doc, size_t n)
{
    array_free(doc->slots, doc->cap * sizeof(*doc->slots));
    doc->cap = pow2_at_least(n + n / 3 + 1);
    doc->slots = array_alloc(doc->cap * sizeof(*doc->slots));
    for (size_t i = 1; i < doc->n; i++) { /* the root is not in the table */
        const struct pos_entry *e = &doc->entries[i];
        *index_slot(doc, e->parent, e->key, e->kline != 0) = (uint32_t)i + 1;
    }
}

/*
 * Records a value with its position; parent NO_PARENT is the root, kline 0 an array element
 * (key = its index) or the root, else an object member (key = name id). Returns its index.
 */
static uint32_t index_put(struct gw_config_doc *doc, uint32_t parent, uint32_t key, int line,
                          int col, int kline, int kcol)
{
    if (doc->n == doc->entries_cap) { /* only if the count was off: it is exact */
        size_t cap = doc->entries_cap ? doc->entries_cap * 2 : 64;
        struct pos_entry *e = array_alloc(cap * sizeof(*e));
        if (doc->n)
            memcpy(e, doc->entries, doc->n * sizeof(*e));
        array_free(doc->entries, doc->entries_cap * sizeof(*e));
        doc->entries = e;
        doc->entries_cap = cap;
    }
    uint32_t id = (uint32_t)doc->n++;
    doc->entries[id] = (struct pos_entry){.parent = parent, .key = key, .line = (uint32_t)line,
                                          .col = (uint32_t)col, .kline = (uint32_t)kline,
                                          .kcol = (uint32_t)kcol};
    return id; /* the hash table comes with the first lookup (index_find()) */
}

/* The entry of pointer (borrowed), or NULL. */
static const struct pos_entry *index_find(const struct gw_config_doc *doc, const char *pointer)
{
    if (doc->n == 0)
        return NULL;
    /* The hash table is built on the first lookup: a valid file never needs it (its positions
     * serve errors only), and it is 5 to 10 bytes per value. A cache, like the index itself. */
    if (!doc->slots)
        index_reserve((struct gw_config_doc *)doc, doc->n);
    uint32_t cur = 0;
    const char *p = pointer;
    while (*p) {
        if (*p != '/' || !doc->cap)
            return NULL;
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        /* A container is an object or an array, so at most one reading of the token finds a
         * child: a member of that name, or the element of that index. */
        uint32_t slot = 0;
        uint32_t key = key_find(&doc->keys, p, len);
        if (key != NO_KEY)
            slot = *index_slot(doc, cur, key, true);
        size_t idx;
        if (!slot && parse_index(p, len, &idx) == 0 && idx < NO_KEY)
            slot = *index_slot(doc, cur, (uint32_t)idx, false);
        if (!slot)
            return NULL;
        cur = slot - 1;
        p += len;
    }
    return &doc->entries[cur];
}

/* Number of values in a jansson tree. */
static size_t count_values(json_t *v)
{
    size_t n = 1;
    if (json_is_object(v)) {
        for (void *it = json_object_iter(v); it; it = json_object_iter_next(v, it))
            n += count_values(json_object_iter_value(it));
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            n += count_values(json_array_get(v, i));
    }
    return n;
}

/* --- The scanner --- */

struct scanner {
    const char *p, *end;
    int line, col;      /* of *p */
    struct gw_config_doc *doc;
    char *key, *tok;    /* scratch: a decoded member name, and the same escaped as a token */
    size_t key_cap, tok_cap;
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

static unsigned read_u4(struct scanner *s)
{
    unsigned v = 0;
    for (int i = 0; i < 4 && s->p < s->end; i++) {
        int h = gw_config_hexval(*s->p);
        v = v * 16 + (unsigned)(h < 0 ? 0 : h);
        sc_advance(s);
    }
    return v;
}

/*
 * Scans a string starting at its opening quote. If decode, the decoded bytes are written to the
 * scanner's key buffer (decoding never grows the text) and their number returned.
 */
static size_t sc_string(struct scanner *s, bool decode)
{
    char *buf = NULL;
    if (decode) {
        const char *q = s->p + 1;
        while (q < s->end && *q != '"') {
            if (*q == '\\' && ++q == s->end)
                break;
            q++;
        }
        /* Decoding never grows the text; slack for a truncated escape at the end. */
        size_t need = 2 * (size_t)(q - s->p) + 8;
        if (need > s->key_cap) {
            s->key_cap = need * 2;
            free(s->key);
            s->key = gw_malloc(s->key_cap);
        }
        buf = s->key;
    }
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
                    n += gw_config_put_utf8(buf + n, cp);
            } else if (buf) {
                buf[n++] = gw_config_unescape(e);
            }
        } else {
            if (buf)
                buf[n++] = *s->p;
            sc_advance(s);
        }
    }
    if (s->p < s->end)
        sc_advance(s); /* closing quote */
    return n;
}

/* The id of the member name just decoded (klen bytes of s->key), escaped as a pointer token. */
static uint32_t sc_key_id(struct scanner *s, size_t klen)
{
    if (2 * klen + 1 > s->tok_cap) {
        s->tok_cap = 4 * klen + 64;
        free(s->tok);
        s->tok = gw_malloc(s->tok_cap);
    }
    size_t n = 0;
    for (size_t i = 0; i < klen; i++) {
        char c = s->key[i];
        if (c == '~' || c == '/') {
            s->tok[n++] = '~';
            s->tok[n++] = c == '~' ? '0' : '1';
        } else {
            s->tok[n++] = c;
        }
    }
    return key_intern(&s->doc->keys, s->tok, n);
}

/* Records the value at s->p (child key of parent) and everything inside it. */
static void sc_value(struct scanner *s, uint32_t parent, uint32_t key, int kline, int kcol,
                     unsigned depth)
{
    sc_skip_ws(s);
    if (s->p >= s->end)
        return;
    uint32_t id = index_put(s->doc, parent, key, s->line, s->col, kline, kcol);
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
            size_t klen = sc_string(s, true);
            uint32_t kid = sc_key_id(s, klen);
            sc_skip_ws(s);
            if (s->p < s->end && *s->p == ':')
                sc_advance(s);
            sc_value(s, id, kid, kl, kc, depth + 1);
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
        for (uint32_t i = 0;; i++) {
            sc_skip_ws(s);
            if (s->p >= s->end || *s->p == ']')
                break;
            sc_value(s, id, i, 0, 0, depth + 1);
            sc_skip_ws(s);
            if (s->p < s->end && *s->p == ',')
                sc_advance(s);
            else
                break;
        }
        if (s->p < s->end)
            sc_advance(s);
    } else if (c == '"') {
        sc_string(s, false);
    } else {
        while (s->p < s->end && *s->p && strchr("0123456789+-.eEtrufalsn", *s->p))
            sc_advance(s);
    }
}

/*
 * Number of values in text that jansson accepted: every value but the root follows a comma or
 * opens a non-empty container, so it is commas + non-empty containers + 1 (strings skipped).
 */
static size_t count_text_values(const char *p, const char *end)
{
    size_t n = 1;
    while (p < end) {
        char c = *p++;
        if (c == '"') {
            while (p < end && *p != '"')
                p += *p == '\\' && p + 1 < end ? 2 : 1;
            if (p < end)
                p++;
        } else if (c == ',') {
            n++;
        } else if (c == '{' || c == '[') {
            const char *q = p;
            while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
                q++;
            if (q < end && *q != '}' && *q != ']')
                n++;
        }
    }
    return n;
}

/* Scans doc's text into the position index, sized for count values. */
static void build_index(struct gw_config_doc *doc, size_t count)
{
    doc->entries_cap = count;
    doc->entries = array_alloc(count * sizeof(*doc->entries));
    struct scanner s = {.p = doc->text, .end = doc->text + doc->text_len, .line = 1, .col = 1,
                        .doc = doc};
    sc_value(&s, NO_PARENT, 0, 0, 0, 0);
    free(s.key);
    free(s.tok);
    doc->indexed = true;
}

/*
 * A document read by gw_config_load() builds its index on first use: by then the JSON tree is
 * usually gone (gw_config_take_value()), so the two are not in memory together. The index is a
 * cache, so a const document may fill it.
 */
static const struct gw_config_doc *ensure_index(const struct gw_config_doc *cdoc)
{
    if (!cdoc->indexed) {
        struct gw_config_doc *doc = (struct gw_config_doc *)cdoc;
        build_index(doc, count_text_values(doc->text, doc->text + doc->text_len));
    }
    return cdoc;
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

/*
 * gw_config_parse(); own (NULL, or the buffer text is in: from array_alloc() when own_map_len is
 * not 0, else malloc'd) goes to the document on success.
 */
static int parse(const char *text, size_t len, const char *name, char *own, size_t own_map_len,
                 struct gw_config_doc **out, struct gw_diag_list *diags)
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
    doc->text_buf = own;
    doc->text_map_len = own_map_len;
    doc->text = text;
    doc->text_len = len;
    if (!own)
        build_index(doc, count_values(root)); /* the text is the caller's: now or never */
    *out = doc;
    return 0;
}

int gw_config_parse(const char *text, size_t len, const char *name, struct gw_config_doc **out,
                    struct gw_diag_list *diags)
{
    return parse(text, len, name, NULL, 0, out, diags);
}

int gw_config_load(const char *path, struct gw_config_doc **out, struct gw_diag_list *diags)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    const char *why = NULL;
    char *text = NULL;
    size_t len = 0, cap = 0, map_len = 0;
    if (!f) {
        why = strerror(errno);
        goto fail;
    }
    /* A regular file is read into a buffer of its size (one byte more to see the end); others
     * (a pipe, /dev/stdin) grow as needed. The limit is 16 MiB. */
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        (uint64_t)st.st_size <= GW_CONFIG_MAX_FILE) {
        cap = (size_t)st.st_size + 1;
        /* A large file is mapped, so that its pages can go back as they are read
         * (gw_config_take_value()). */
        if (cap + 1 >= BIG_ARRAY)
            map_len = cap + 1;
        text = map_len ? array_alloc(map_len) : gw_malloc(cap + 1);
    }
    for (;;) {
        if (len == cap) {
            if (cap > GW_CONFIG_MAX_FILE) {
                why = "file larger than 16 MiB";
                break;
            }
            cap = cap ? cap * 2 : 64 * 1024;
            if (map_len) { /* the file grew while being read */
                char *t = gw_malloc(cap + 1);
                memcpy(t, text, len);
                array_free(text, map_len);
                text = t;
                map_len = 0;
            } else {
                text = gw_realloc(text, cap + 1);
            }
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
    /* The document keeps the text, for gw_config_take_value(). */
    if (!map_len && cap > len + 4096)
        text = gw_realloc(text, len + 1);
    int rc = parse(text, len, path, text, map_len, out, diags);
    if (rc < 0)
        map_len ? array_free(text, map_len) : free(text);
    return rc;
fail:
    map_len ? array_free(text, map_len) : free(text);
    if (diags) {
        struct gw_diag *d = gw_diag_add(diags, NULL, NULL, "cannot read: %s", why);
        d->file = gw_strdup(path);
    }
    return GW_ECONFIG_READ;
}

static void free_text(struct gw_config_doc *doc)
{
    if (doc->text_map_len)
        array_free(doc->text_buf, doc->text_map_len);
    else
        free(doc->text_buf);
    doc->text_buf = NULL;
    doc->text = NULL;
    doc->text_len = doc->text_map_len = doc->text_released = 0;
}

void gw_config_free(struct gw_config_doc *doc)
{
    if (!doc)
        return;
    free_text(doc);
    array_free(doc->entries, doc->entries_cap * sizeof(*doc->entries));
    array_free(doc->slots, doc->cap * sizeof(*doc->slots));
    free(doc->keys.buf);
    free(doc->keys.off);
    free(doc->keys.slots);
    json_decref(doc->root);
    free(doc->name);
    free(doc);
}

json_t *gw_config_root(const struct gw_config_doc *doc)
{
    return doc->root;
}

/* The value reader is done with the first done bytes of the text: their pages go back. */
static void text_read(void *arg, size_t done)
{
    struct gw_config_doc *doc = arg;
    if (!doc->text_map_len)
        return;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t upto = ((size_t)(doc->text - doc->text_buf) + done) / page * page;
    if (upto > doc->text_released) {
        madvise(doc->text_buf + doc->text_released, upto - doc->text_released, MADV_DONTNEED);
        doc->text_released = upto;
    }
}

/* Below this much text the heap is not worth trimming after the JSON tree goes. */
#define TRIM_AFTER_BYTES (256u << 10)

int gw_config_take_value(struct gw_config_doc *doc, struct gw_value *out)
{
    *out = GW_VALUE_INIT_NULL;
    if (!doc->root)
        return GW_EINVAL;
    if (!doc->text_buf) {
        /* Text borrowed by gw_config_parse(): convert jansson's tree, emptying it on the way. */
        int rc = gw_json_take_value(doc->root, out);
        json_decref(doc->root);
        doc->root = NULL;
        return rc;
    }
    /*
     * From the file's text, after the JSON tree is gone: the two trees never exist together,
     * and the value tree (and what the caller then allocates while it lives, such as an
     * adapter's long-lived state) is laid out compactly in the space the JSON tree left, not
     * scattered through its holes, so that it leaves few half-used pages once it is freed in
     * turn. malloc_trim() first merges the JSON tree's freed chunks (and gives their pages back).
     */
    json_decref(doc->root);
    doc->root = NULL;
#ifdef __GLIBC__
    if (doc->text_len >= TRIM_AFTER_BYTES)
        malloc_trim(0);
#endif
    ensure_index(doc); /* the text goes now */
    int rc = gw_json_text_to_value(doc->text, doc->text_len, out, text_read, doc);
    free_text(doc);
    return rc;
}

const char *gw_config_name(const struct gw_config_doc *doc)
{
    return doc->name;
}

size_t gw_config_count(const struct gw_config_doc *doc)
{
    return ensure_index(doc)->n;
}

int gw_config_pos(const struct gw_config_doc *doc, const char *pointer, int *line, int *col)
{
    const struct pos_entry *e = index_find(ensure_index(doc), pointer);
    if (!e)
        return GW_ENOENT;
    *line = (int)e->line;
    *col = (int)e->col;
    return 0;
}

int gw_config_key_pos(const struct gw_config_doc *doc, const char *pointer, int *line, int *col)
{
    const struct pos_entry *e = index_find(ensure_index(doc), pointer);
    if (!e || !e->kline)
        return GW_ENOENT;
    *line = (int)e->kline;
    *col = (int)e->kcol;
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
