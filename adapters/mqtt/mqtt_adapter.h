/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The MQTT adapter (issue 8): topics on a local broker as resources, writes as publishes.
 * libmosquitto runs on the gateway's loop (its socket is a gw_loop watch, keep-alive and
 * reconnection are gw_loop timers), so every callback runs on the loop thread and nothing locks.
 *
 * Besides the configured mappings, each instance registers "<instance>/_stats": a read answers a
 * map of counters (messages, bytes, oversize, bad_json, no_field, coerce, topics,
 * topics_over_limit, connects, disconnects, writes, write_errors, ...) and the connection state.
 */
#ifndef GW_MQTT_ADAPTER_H
#define GW_MQTT_ADAPTER_H

#include "gw/adapter.h"

extern const struct gw_adapter_ops gw_mqtt_adapter;

#endif
