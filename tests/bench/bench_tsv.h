/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Plot data of the C benchmarks: when GW_BENCH_DATA names a folder (scripts/bench sets it),
 * gw_bench_tsv_open() creates <folder>/<name> with the header line "# <header>" and returns it;
 * otherwise, or when the file cannot be made (said on stderr, naming the program), NULL. The
 * benchmark writes tab-separated rows and fcloses it.
 */
#ifndef GW_BENCH_TSV_H
#define GW_BENCH_TSV_H

#include <stdio.h>

FILE *gw_bench_tsv_open(const char *prog, const char *name, const char *header);

#endif
