/* SPDX-License-Identifier: Apache-2.0 */
/* Guarded buffers (see guard.h): mmap, then mprotect the page after the data. */
#include "guard.h"

#include <check.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct mapping {
    void *base;
    size_t size;
};
static struct mapping maps[256];
static size_t nmaps;

const uint8_t *guard_copy(const void *data, size_t len)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (len + page - 1) / page + 1;
    uint8_t *base = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                         -1, 0);
    ck_assert_ptr_ne(base, MAP_FAILED);
    ck_assert_int_eq(mprotect(base + (pages - 1) * page, page, PROT_NONE), 0);
    uint8_t *p = base + (pages - 1) * page - len;
    if (len)
        memcpy(p, data, len);
    ck_assert_uint_lt(nmaps, sizeof maps / sizeof maps[0]);
    maps[nmaps++] = (struct mapping){base, pages * page};
    return p;
}

const uint8_t *guard_hex(const char *hex, size_t *len)
{
    uint8_t tmp[8192];
    size_t n = 0;
    for (const char *s = hex; *s;) {
        if (isspace((unsigned char)*s)) {
            s++;
            continue;
        }
        unsigned b;
        ck_assert_int_eq(sscanf(s, "%2x", &b), 1);
        ck_assert_uint_lt(n, sizeof tmp);
        tmp[n++] = (uint8_t)b;
        s += 2;
    }
    *len = n;
    return guard_copy(tmp, n);
}

void guard_free_all(void)
{
    for (size_t i = 0; i < nmaps; i++)
        munmap(maps[i].base, maps[i].size);
    nmaps = 0;
}
