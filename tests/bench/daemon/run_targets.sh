#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Runner of the memory, start-up and remote-write targets (targets.py) for scripts/bench:
#     GW_BUILD_DIR=build-release [GW_BENCH_DATA=dir] tests/bench/daemon/run_targets.sh [--quick]
# The build needs -DGW_BUILD_BENCH=ON (bench_fast_modbus_server, bench_modbus_floor,
# bench_store_fill), the daemon and iotmp-broker. Writes daemon_targets.tsv,
# daemon_write_latency.tsv and daemon_startup.tsv into $GW_BENCH_DATA when set.
# Exit 2 = could not run.
HERE=$(cd "$(dirname "$0")" && pwd)
: "${GW_BUILD_DIR:=build-release}"
GW_BUILD_DIR=$(cd "$GW_BUILD_DIR" 2>/dev/null && pwd) || { echo "run_targets: no build dir"; exit 2; }
GW_SOURCE_DIR=$(cd "$HERE/../../.." && pwd)
export GW_BUILD_DIR GW_SOURCE_DIR
exec /usr/bin/python3 "$HERE/targets.py" "$@"
