/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The diagnostics list (gw/config.h): what the config loader and the schema validator report,
 * sorted and printed as "file:line:col: /pointer: message". Pure data handling, no I/O.
 */
#include "gw/config.h"
#include "gw/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_diag_list_init(struct gw_diag_list *l)
{
    l->items = NULL;
    l->n = l->cap = 0;
}

static void diag_fini(struct gw_diag *d)
{
    free(d->file);
    free(d->pointer);
    free(d->keyword);
    free(d->message);
}

void gw_diag_list_fini(struct gw_diag_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        diag_fini(&l->items[i]);
    free(l->items);
    gw_diag_list_init(l);
}

static struct gw_diag *diag_slot(struct gw_diag_list *l)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->items = gw_realloc(l->items, l->cap * sizeof(*l->items));
    }
    struct gw_diag *d = &l->items[l->n];
    memset(d, 0, sizeof(*d));
    d->seq = l->n;
    l->n++;
    return d;
}

struct gw_diag *gw_diag_add(struct gw_diag_list *l, const char *pointer, const char *keyword,
                            const char *fmt, ...)
{
    struct gw_diag *d = diag_slot(l);
    d->pointer = pointer ? gw_strdup(pointer) : NULL;
    d->keyword = gw_strdup(keyword ? keyword : "");
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    d->message = gw_malloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(d->message, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return d;
}

void gw_diag_list_move(struct gw_diag_list *dst, struct gw_diag_list *src)
{
    for (size_t i = 0; i < src->n; i++) {
        struct gw_diag *d = diag_slot(dst);
        size_t seq = d->seq;
        *d = src->items[i];
        d->seq = seq;
    }
    free(src->items);
    gw_diag_list_init(src);
}

static int diag_cmp(const void *pa, const void *pb)
{
    const struct gw_diag *a = pa, *b = pb;
    int c = strcmp(a->file ? a->file : "", b->file ? b->file : "");
    if (c)
        return c;
    if (a->line != b->line)
        return a->line < b->line ? -1 : 1;
    if (a->col != b->col)
        return a->col < b->col ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

void gw_diag_list_sort(struct gw_diag_list *l)
{
    if (l->n > 1)
        qsort(l->items, l->n, sizeof(*l->items), diag_cmp);
}

char *gw_diag_format(const struct gw_diag_list *l)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        fprintf(stderr, "<2>out of memory formatting diagnostics, aborting\n");
        abort();
    }
    for (size_t i = 0; i < l->n; i++) {
        const struct gw_diag *d = &l->items[i];
        if (d->file) {
            fputs(d->file, f);
            if (d->line > 0)
                fprintf(f, ":%d:%d", d->line, d->col);
            fputs(": ", f);
        }
        if (d->pointer)
            fprintf(f, "%s: ", d->pointer[0] ? d->pointer : "(root)");
        fputs(d->message, f);
        fputc('\n', f);
    }
    fclose(f);
    return buf;
}
