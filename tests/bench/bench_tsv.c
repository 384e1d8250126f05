/* SPDX-License-Identifier: Apache-2.0 */
/* The benchmarks' TSV plot data files (bench_tsv.h). */
#include "bench_tsv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

FILE *gw_bench_tsv_open(const char *prog, const char *name, const char *header)
{
    const char *dir = getenv("GW_BENCH_DATA");
    if (!dir || !*dir)
        return NULL;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "%s: %s: %s\n", prog, path, strerror(errno));
        return NULL;
    }
    fprintf(f, "# %s\n", header);
    return f;
}
