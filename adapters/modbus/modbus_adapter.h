/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Modbus adapter (modbus.c): Modbus TCP and RTU devices as IOTMP resources. One worker thread
 * per connection (TCP endpoint or serial bus) owns its libmodbus context and keeps one request in
 * flight; it polls each device's points in poll groups on the monotonic clock, reading each
 * (device, group) with the fewest requests gw_modbus_plan_build allows, publishes every value to
 * the registry, and runs writes and on-demand reads ahead of the schedule. A device that fails
 * `quarantine_after` cycles in a row is quarantined with exponential back-off and probed only when
 * the bus has an idle window long enough for its timeout, so healthy devices keep their schedule.
 * The config reference is adapters/modbus/README.md and schema/adapters/modbus.schema.json.
 */
#ifndef GW_MODBUS_ADAPTER_H
#define GW_MODBUS_ADAPTER_H

#include "gw/adapter.h"

extern const struct gw_adapter_ops gw_modbus_adapter;

#endif
