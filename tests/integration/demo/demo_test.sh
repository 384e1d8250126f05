#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# scripts/demo --once, as a user would run it: it must show the values it claims (the pymodbus
# register as 23.5, the coil written and read back, a stream, recorded rows, health, metrics) and
# stop everything it started.
set -u
src=${GW_SOURCE_DIR:?}
export GW_DEMO_NO_SETUP=1
out=$(cd "$src" && timeout 120 scripts/demo --once 2>&1)
rc=$?
fail=0
expect() {
    if grep -qF -- "$1" <<<"$out"; then echo "ok   $2"; else echo "FAIL $2 (no \"$1\")"; fail=1; fi
}
[ $rc = 0 ] && echo "ok   demo exit 0" || { echo "FAIL demo exit $rc"; fail=1; }
expect '"connected":true' "the gateway is connected"
expect '"plc1/temperature":{"fn":3' "DESCRIBE lists the Modbus point"
expect '"unit":"°C"' "DESCRIBE one shows the point's unit"
expect '{"temperature":23.5,"pressure":1013,"pump":true}' "Modbus read, coil write read back"
expect '"samples":[{"seq":1' "a stream delivers samples"
# The broker's answer alone on its line, in the fewest digits that keep the value (not 21.69999...).
if grep -qx -- '21.7' <<<"$out"; then echo "ok   an MQTT sensor value read through the broker: 21.7"
else echo "FAIL an MQTT sensor value read through the broker (no line \"21.7\")"; fail=1; fi
expect '"demo/temperature":' "rows recorded into the bucket"
expect '"uplink":"ready"' "health through the broker"
expect 'iotmp_gateway_uplink_connected 1' "metrics endpoint"
expect 'stopped; logs kept in' "everything stopped"
work=$(sed -n 's/.*logs kept in \(.*\)$/\1/p' <<<"$out")
# The gateway and the broker have the work folder on their command line (the Modbus simulator
# does not; the demo stops it by pid like the others).
if [ -n "$work" ] && pgrep -f "$work" >/dev/null 2>&1; then
    echo "FAIL a process of the demo is still running:"
    pgrep -af "$work"
    fail=1
fi
[ $fail = 0 ] || { echo "$out" | tail -40; }
exit $fail
