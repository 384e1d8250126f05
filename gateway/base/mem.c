/* SPDX-License-Identifier: Apache-2.0 */
/* Aborting allocator (see gw/mem.h for why there are no NULL checks after these). */
#include "gw/mem.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out_of_memory(size_t size)
{
    /* No gw_log here: formatting may itself need memory. */
    fprintf(stderr, "<2>out of memory allocating %zu bytes, aborting\n", size);
    abort();
}

void *gw_malloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (!p)
        out_of_memory(size);
    return p;
}

void *gw_calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        out_of_memory(n * size);
    return p;
}

void *gw_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (!p)
        out_of_memory(size);
    return p;
}

char *gw_strdup(const char *s)
{
    return gw_strndup(s, strlen(s));
}

char *gw_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = gw_malloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}
