/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Allocation that never returns NULL: on failure it logs and aborts. systemd restarts the daemon
 * and data that was accepted is already in the store, so callers need no NULL checks. Sizes that
 * come from outside (wire, config, devices) must be bounded before they reach these functions.
 */
#ifndef GW_MEM_H
#define GW_MEM_H

#include <stddef.h>

void *gw_malloc(size_t size);
void *gw_calloc(size_t n, size_t size);
void *gw_realloc(void *ptr, size_t size);
char *gw_strdup(const char *s);
char *gw_strndup(const char *s, size_t n);

#endif
