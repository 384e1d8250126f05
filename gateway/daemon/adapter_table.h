/* SPDX-License-Identifier: Apache-2.0 */
/* The adapters compiled into this daemon (generated table, see CMakeLists.txt). */
#ifndef GW_ADAPTER_TABLE_H
#define GW_ADAPTER_TABLE_H

#include "gw/adapter.h"

#include <stddef.h>
#include <string.h>

/* The ops of adapter kind ("modbus"), or NULL when it is not compiled in. */
const struct gw_adapter_ops *gw_adapter_find(const char *kind);
/* NULL-terminated list of every compiled-in adapter. */
const struct gw_adapter_ops *const *gw_adapter_all(void);

#endif
