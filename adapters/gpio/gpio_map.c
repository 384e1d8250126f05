/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GPIO config mapping, debounce and counter (see gpio_map.h). Pure: value trees in, structs out.
 * The schema has already checked shape when the daemon calls us; the checks here are those a
 * schema cannot make (duplicates, settings that only fit one direction, how a line is named),
 * plus defensive type checks so an unvalidated tree gives errors, never a crash.
 */
#include "gpio_map.h"

#include "gw/error.h"
#include "gw/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct parse {
    gw_gpio_report_fn report;
    void *arg;
    int errors;
};

static void perr(struct parse *p, const char *pointer, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void perr(struct parse *p, const char *pointer, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    p->errors++;
    if (p->report)
        p->report(p->arg, pointer, msg);
}

static const struct gw_value *get(const struct gw_value *map, const char *key)
{
    const struct gw_value *v = gw_value_map_get(map, key);
    return v && v->type != GW_VALUE_NULL ? v : NULL;
}

/* String member or NULL; a present non-string is an error. */
static const char *get_str(struct parse *p, const struct gw_value *map, const char *key,
                           const char *at)
{
    const struct gw_value *v = get(map, key);
    if (!v)
        return NULL;
    if (v->type != GW_VALUE_STRING || v->s.len == 0 || strlen(v->s.p) != v->s.len) {
        char ptr[96];
        snprintf(ptr, sizeof ptr, "%s/%s", at, key);
        perr(p, ptr, "must be a non-empty string");
        return NULL;
    }
    return v->s.p;
}

/* Integer member in [lo, hi]; *out unchanged when absent; returns true if present and valid. */
static bool get_int(struct parse *p, const struct gw_value *map, const char *key, const char *at,
                    int64_t lo, int64_t hi, int64_t *out)
{
    const struct gw_value *v = get(map, key);
    if (!v)
        return false;
    char ptr[96];
    snprintf(ptr, sizeof ptr, "%s/%s", at, key);
    int64_t x;
    if (v->type == GW_VALUE_INT)
        x = v->i;
    else if (v->type == GW_VALUE_UINT && v->u <= INT64_MAX)
        x = (int64_t)v->u;
    else if (v->type == GW_VALUE_DOUBLE && v->d == (double)(int64_t)v->d)
        x = (int64_t)v->d;
    else {
        perr(p, ptr, "must be an integer");
        return false;
    }
    if (x < lo || x > hi) {
        perr(p, ptr, "%lld is out of range %lld..%lld", (long long)x, (long long)lo, (long long)hi);
        return false;
    }
    *out = x;
    return true;
}

/* Boolean member (0/1 accepted for levels); returns true if present and valid. */
static bool get_bool(struct parse *p, const struct gw_value *map, const char *key, const char *at,
                     bool *out)
{
    const struct gw_value *v = get(map, key);
    if (!v)
        return false;
    if (v->type == GW_VALUE_BOOL) {
        *out = v->b;
        return true;
    }
    if ((v->type == GW_VALUE_INT || v->type == GW_VALUE_UINT) && (v->u == 0 || v->u == 1)) {
        *out = v->u == 1;
        return true;
    }
    char ptr[96];
    snprintf(ptr, sizeof ptr, "%s/%s", at, key);
    perr(p, ptr, "must be true or false");
    return false;
}

/* Enum member by word; returns the index in words or dflt when absent (-1 on error, reported). */
static int get_enum(struct parse *p, const struct gw_value *map, const char *key, const char *at,
                    const char *const *words, int dflt)
{
    const struct gw_value *v = get(map, key);
    if (!v)
        return dflt;
    if (v->type == GW_VALUE_STRING)
        for (int i = 0; words[i]; i++)
            if (strcmp(v->s.p, words[i]) == 0)
                return i;
    char ptr[96], list[160] = "";
    snprintf(ptr, sizeof ptr, "%s/%s", at, key);
    for (int i = 0; words[i]; i++) {
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", words[i]);
    }
    perr(p, ptr, "must be one of %s", list);
    return -1;
}

static const char *const dir_words[] = {"input", "output", NULL};
static const char *const bias_words[] = {"as-is", "disabled", "pull-up", "pull-down", NULL};
static const char *const drive_words[] = {"push-pull", "open-drain", "open-source", NULL};
static const char *const edge_words[] = {"none", "rising", "falling", "both", NULL};

static bool valid_point_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

static void parse_line(struct parse *p, const struct gw_value *lv, const char *dflt_chip,
                       const char *at, struct gw_gpio_line_cfg *l)
{
    char ptr[96];
    memset(l, 0, sizeof *l);
    l->offset = -1;
    l->safe = -1;
    l->rate_window_s = 60;
    l->pointer = gw_strdup(at);
    if (lv->type != GW_VALUE_MAP) {
        perr(p, at, "must be an object");
        return;
    }
    const char *name = get_str(p, lv, "name", at);
    if (!name) {
        if (!get(lv, "name")) {
            perr(p, at, "\"name\" is required");
        }
    } else if (!valid_point_name(name)) {
        snprintf(ptr, sizeof ptr, "%s/name", at);
        perr(p, ptr, "\"%s\" is not a valid point name (1 to 64 of A-Z a-z 0-9 _ . -)", name);
    } else {
        l->name = gw_strdup(name);
    }

    const char *chip = get_str(p, lv, "chip", at);
    const char *line = get_str(p, lv, "line", at);
    int64_t off = -1;
    bool has_off = get_int(p, lv, "offset", at, 0, 1023, &off);
    if (line && has_off) {
        perr(p, at, "give either \"line\" (a line name) or \"offset\" (with \"chip\"), not both");
    } else if (line) {
        l->line_name = gw_strdup(line);
        if (chip)
            l->chip = gw_strdup(chip); /* restricts the name search to this chip */
    } else if (has_off) {
        l->offset = (int)off;
        if (chip)
            l->chip = gw_strdup(chip);
        else if (dflt_chip)
            l->chip = gw_strdup(dflt_chip);
        else
            perr(p, at, "\"offset\" needs a \"chip\" (here or at the top level)");
    } else if (!get(lv, "offset") && !get(lv, "line")) {
        perr(p, at,
             "name the line with \"line\" (its kernel name) or with \"chip\" and \"offset\"");
    }

    int d = get_enum(p, lv, "direction", at, dir_words, -2);
    if (d == -2) {
        perr(p, at, "\"direction\" is required (input or output)");
        d = 0;
    }
    l->dir = d < 0 ? GW_GPIO_DIR_INPUT : (enum gw_gpio_dir)d;
    bool b = false;
    if (get_bool(p, lv, "active_low", at, &b))
        l->active_low = b;
    int bias = get_enum(p, lv, "bias", at, bias_words, 0);
    l->bias = bias < 0 ? GW_GPIO_BIAS_AS_IS : (enum gw_gpio_bias)bias;
    int drive = get_enum(p, lv, "drive", at, drive_words, 0);
    l->drive = drive < 0 ? GW_GPIO_DRIVE_PUSH_PULL : (enum gw_gpio_drive)drive;
    int edge = get_enum(p, lv, "edge", at, edge_words, d == GW_GPIO_DIR_OUTPUT ? 0 : 3);
    l->edge = edge < 0 ? GW_GPIO_EDGE_NONE : (enum gw_gpio_edge)edge;
    int64_t x;
    if (get_int(p, lv, "debounce_ms", at, 0, GW_GPIO_MAX_DEBOUNCE_MS, &x))
        l->debounce_ms = (unsigned)x;
    if (get_int(p, lv, "rate_window_s", at, 1, GW_GPIO_MAX_RATE_WINDOW_S, &x))
        l->rate_window_s = (unsigned)x;
    if (get_bool(p, lv, "initial", at, &b))
        l->initial = b;
    if (get_bool(p, lv, "safe", at, &b))
        l->safe = b;
    if (get_int(p, lv, "pulse_ms", at, 1, GW_GPIO_MAX_PULSE_MS, &x))
        l->pulse_ms = (unsigned)x;
    const struct gw_value *unit = get(lv, "unit");
    if (unit && unit->type == GW_VALUE_STRING && unit->s.len > 0)
        l->unit = gw_strdup(unit->s.p);
    else if (unit && unit->type != GW_VALUE_STRING) {
        snprintf(ptr, sizeof ptr, "%s/unit", at);
        perr(p, ptr, "must be a string");
    }

    /* Settings that only fit one direction: say so rather than silently ignore them. */
    static const char *const out_only[] = {"drive", "initial", "safe", "pulse_ms", NULL};
    static const char *const in_only[] = {"edge", "debounce_ms", "rate_window_s", NULL};
    const char *const *wrong = l->dir == GW_GPIO_DIR_INPUT ? out_only : in_only;
    for (int i = 0; wrong[i]; i++) {
        if (get(lv, wrong[i])) {
            snprintf(ptr, sizeof ptr, "%s/%s", at, wrong[i]);
            perr(p, ptr, "\"%s\" applies to %s lines only; this line is an %s", wrong[i],
                 l->dir == GW_GPIO_DIR_INPUT ? "output" : "input",
                 l->dir == GW_GPIO_DIR_INPUT ? "input" : "output");
        }
    }
    if (l->dir == GW_GPIO_DIR_INPUT && l->edge == GW_GPIO_EDGE_NONE && get(lv, "debounce_ms") &&
        l->debounce_ms > 0) {
        snprintf(ptr, sizeof ptr, "%s/debounce_ms", at);
        perr(p, ptr, "debounce needs edge events; \"edge\" is \"none\"");
    }
}

static void line_fini(struct gw_gpio_line_cfg *l)
{
    free(l->name);
    free(l->chip);
    free(l->line_name);
    free(l->unit);
    free(l->pointer);
    memset(l, 0, sizeof *l);
}

int gw_gpio_cfg_parse(const struct gw_value *config, struct gw_gpio_cfg *out,
                      gw_gpio_report_fn report, void *arg)
{
    struct parse p = {.report = report, .arg = arg};
    memset(out, 0, sizeof *out);
    if (!config || config->type != GW_VALUE_MAP) {
        perr(&p, "", "the instance config must be an object");
        return GW_ECONFIG;
    }
    const char *consumer = get_str(&p, config, "consumer", "");
    out->consumer = gw_strdup(consumer ? consumer : "iotmp-gateway");
    const char *dflt_chip = get_str(&p, config, "chip", "");
    const struct gw_value *lines = get(config, "lines");
    if (!lines || lines->type != GW_VALUE_ARRAY || lines->c.n == 0) {
        perr(&p, lines ? "/lines" : "", "\"lines\" must be a non-empty array of line objects");
    } else {
        out->n_lines = lines->c.n;
        out->lines = gw_calloc(out->n_lines, sizeof *out->lines);
        for (size_t i = 0; i < lines->c.n; i++) {
            char at[48];
            snprintf(at, sizeof at, "/lines/%zu", i);
            parse_line(&p, &lines->c.items[i], dflt_chip, at, &out->lines[i]);
        }
        /* Duplicates: point names (resource names) and the same physical line twice. */
        for (size_t i = 0; i < out->n_lines; i++) {
            const struct gw_gpio_line_cfg *a = &out->lines[i];
            for (size_t j = 0; j < i; j++) {
                const struct gw_gpio_line_cfg *b = &out->lines[j];
                char ptr[96];
                if (a->name && b->name && strcmp(a->name, b->name) == 0) {
                    snprintf(ptr, sizeof ptr, "%s/name", a->pointer);
                    perr(&p, ptr, "point name \"%s\" is already used at %s", a->name, b->pointer);
                }
                bool same_line =
                    (a->offset >= 0 && b->offset >= 0 && a->chip && b->chip &&
                     a->offset == b->offset && strcmp(a->chip, b->chip) == 0) ||
                    (a->line_name && b->line_name && strcmp(a->line_name, b->line_name) == 0);
                if (same_line) {
                    char where[96];
                    gw_gpio_line_where(a, where, sizeof where);
                    perr(&p, a->pointer, "%s is already declared at %s", where, b->pointer);
                }
            }
        }
    }
    if (p.errors) {
        gw_gpio_cfg_fini(out);
        return GW_ECONFIG;
    }
    return 0;
}

void gw_gpio_cfg_fini(struct gw_gpio_cfg *cfg)
{
    for (size_t i = 0; i < cfg->n_lines; i++)
        line_fini(&cfg->lines[i]);
    free(cfg->lines);
    free(cfg->consumer);
    memset(cfg, 0, sizeof *cfg);
}

void gw_gpio_line_where(const struct gw_gpio_line_cfg *l, char *buf, size_t cap)
{
    if (l->line_name && l->chip)
        snprintf(buf, cap, "line '%s' of %s", l->line_name, l->chip);
    else if (l->line_name)
        snprintf(buf, cap, "line '%s'", l->line_name);
    else
        snprintf(buf, cap, "%s line %d", l->chip ? l->chip : "?", l->offset);
}

/* --- Debounce --- */

void gw_gpio_debounce_init(struct gw_gpio_debounce *d, unsigned window_ms, int level)
{
    memset(d, 0, sizeof *d);
    d->window_ns = (uint64_t)window_ms * 1000000u;
    d->stable = d->pending = level ? 1 : 0;
}

int gw_gpio_debounce_feed(struct gw_gpio_debounce *d, int level, uint64_t ts_ns)
{
    level = level ? 1 : 0;
    if (d->window_ns == 0) {
        d->pending = level;
        d->last_ns = ts_ns;
        if (level == d->stable)
            return 0;
        d->stable = level;
        return 1;
    }
    d->pending = level;
    /* Kernel timestamps never go backwards for one line; keep the later one if they did. */
    if (!d->busy || ts_ns > d->last_ns)
        d->last_ns = ts_ns;
    d->busy = true;
    return 0;
}

uint64_t gw_gpio_debounce_deadline(const struct gw_gpio_debounce *d)
{
    return d->last_ns + d->window_ns;
}

int gw_gpio_debounce_settle(struct gw_gpio_debounce *d, uint64_t now_ns)
{
    if (!d->busy)
        return 0;
    if (now_ns < gw_gpio_debounce_deadline(d))
        return 0;
    d->busy = false;
    if (d->pending == d->stable)
        return 0;
    d->stable = d->pending;
    return 1;
}

bool gw_gpio_edge_counts(enum gw_gpio_edge edge, int new_level)
{
    switch (edge) {
    case GW_GPIO_EDGE_RISING:
        return new_level != 0;
    case GW_GPIO_EDGE_FALLING:
        return new_level == 0;
    case GW_GPIO_EDGE_BOTH:
        return true;
    case GW_GPIO_EDGE_NONE:
    default:
        return false;
    }
}

/* --- Counter --- */

void gw_gpio_counter_init(struct gw_gpio_counter *c, unsigned window_s)
{
    memset(c, 0, sizeof *c);
    c->window_s = window_s ? window_s : 1;
    c->sec = gw_calloc(c->window_s, sizeof *c->sec);
    c->n = gw_calloc(c->window_s, sizeof *c->n);
    for (unsigned i = 0; i < c->window_s; i++)
        c->sec[i] = UINT64_MAX; /* empty */
}

void gw_gpio_counter_fini(struct gw_gpio_counter *c)
{
    free(c->sec);
    free(c->n);
    memset(c, 0, sizeof *c);
}

void gw_gpio_counter_add(struct gw_gpio_counter *c, uint64_t ts_ns)
{
    c->count++;
    uint64_t s = ts_ns / 1000000000u;
    unsigned slot = (unsigned)(s % c->window_s);
    if (c->sec[slot] != s) {
        c->sec[slot] = s;
        c->n[slot] = 0;
    }
    if (c->n[slot] < UINT32_MAX)
        c->n[slot]++;
}

double gw_gpio_counter_rate(const struct gw_gpio_counter *c, uint64_t now_ns)
{
    uint64_t now_s = now_ns / 1000000000u;
    uint64_t sum = 0;
    for (unsigned i = 0; i < c->window_s; i++) {
        uint64_t s = c->sec[i];
        if (s != UINT64_MAX && s <= now_s && now_s - s < c->window_s)
            sum += c->n[i];
    }
    return (double)sum / c->window_s;
}
