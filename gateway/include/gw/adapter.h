/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The adapter interface. An adapter (adapters/<name>/) exports one `const struct gw_adapter_ops`;
 * the core creates one instance per file in adapters.d/, after validating that file against
 * schema/adapters/<name>.schema.json, so an adapter checks meaning ("register 40001 is declared
 * twice"), never shape.
 *
 * Contract:
 * - create() parses its config and allocates; it does no I/O that can block. A failed create()
 *   has freed everything and gets no destroy(); a successful one gets exactly one destroy().
 * - start() registers resources (gw_registry_add with owner = the instance state) and arms fds,
 *   timers and worker threads. stop() disarms them and applies safe states (GPIO outputs);
 *   afterwards the core removes the instance's resources. stop() may be NULL.
 * - Hooks run on the loop thread. An adapter whose library blocks (libmodbus) runs worker threads
 *   and reports through the thread-safe calls: gw_call_reply/gw_call_fail, gw_registry_publish,
 *   gw_loop_post.
 * - Adapters use the loop and the registry directly through the handles in gw_host rather than
 *   through a table of function pointers: both are small, real, and cheap to run in a unit test,
 *   and a test that wants a fake replaces those functions at link time.
 * - New capability arrives as a new optional member (NULL by default), never as a hook variant.
 */
#ifndef GW_ADAPTER_H
#define GW_ADAPTER_H

#include "gw/loop.h"
#include "gw/registry.h"
#include "gw/value.h"

struct gw_host {
    struct gw_loop *loop;
    struct gw_registry *registry;
    const char *instance;   /* instance name (the config file's "name"), e.g. "plc1" */
    const char *file;       /* its config file, for messages */
    /* Logs with the adapter kind and instance as prefix: "modbus plc1: ...". */
    void (*log)(const struct gw_host *host, int level, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
    /* Reports a config error at a JSON Pointer into the instance's file ("/points/3/address");
     * the core prints file:line:col. create() then returns GW_ECONFIG. */
    void (*config_error)(const struct gw_host *host, const char *pointer, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
    void *core;             /* opaque, for the callbacks above */
};

struct gw_adapter_ops {
    const char *name;       /* "modbus": folder, config "type", schema file */
    /* config: the instance's whole file as a value tree (borrowed for the call). */
    int (*create)(const struct gw_host *host, const struct gw_value *config, void **state);
    int (*start)(void *state);
    void (*stop)(void *state);
    void (*destroy)(void *state);
};

#endif
