#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# integ.modbus_e2e: the Modbus adapter inside iotmp-gatewayd, reached through iotmp-broker's REST API
# with curl: DESCRIBE with types and units, a REST read of a point, a REST write then read-back
# (including 0), and a 200 ms stream. The device is sim_server.py (pymodbus) over TCP. Everything
# started here is stopped by pid. Skipped (77) when the daemon, the broker, pymodbus, curl or jq
# is missing.
HERE=$(cd "$(dirname "$0")" && pwd)
E2E_NAME=modbus
. "$HERE/../e2e.sh"
"$PY" -c 'import pymodbus.server.async_io' 2>/dev/null || { echo "SKIP: no pymodbus"; exit 77; }

"$PY" "$HERE/sim_server.py" --tcp 0 --units 1 >"$DIR/sim.out" 2>"$DIR/sim.log" &
PIDS="$PIDS $!"
wait_line "$DIR/sim.out" '^READY'
mport=$(sed -n 's/.*modbus=\([0-9]*\).*/\1/p' "$DIR/sim.out")

e2e_start_broker
e2e_gateway_config
cat >"$DIR/adapters.d/plc1.json" <<JSON
{"type": "modbus", "name": "plc1", "interval_ms": 100,
 "connections": [{"name": "line1", "tcp": {"host": "127.0.0.1", "port": $mport},
   "devices": [{"name": "boiler", "unit": 1, "points": [
     {"name": "temperature", "address": "40001", "type": "float32", "unit": "degC"},
     {"name": "setpoint", "address": "40003", "type": "int16", "unit": "degC",
      "access": "read-write", "min": -20, "max": 90}]}]}]}
JSON
"$PY" - "$DIR/sim.out" <<'PYEOF'
import socket, sys, re
ctl = int(re.search(r"control=(\d+)", open(sys.argv[1]).read()).group(1))
s = socket.create_connection(("127.0.0.1", ctl))
s.sendall(b"SET 1 h 0 16936 0\n")   # 42.0f
s.recv(100)
PYEOF
"$GWD" -c "$DIR/gateway.json" >"$DIR/gw.out" 2>"$DIR/gw.log" &
GWPID=$!
PIDS="$PIDS $GWPID"

API="http://127.0.0.1:$hport/v3/users/alice/devices/gw1"
i=0
until curl -sf "$API/api" >"$DIR/describe.json" && grep -q temperature "$DIR/describe.json"; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "FAIL: gateway not connected"; cat "$DIR/gw.log"; exit 1; }
    sleep 0.1
done
echo "DESCRIBE: $(cat "$DIR/describe.json")"
curl -sf "$API/resources/plc1%2Ftemperature/api" >"$DIR/d1.json" ||
    curl -sf "$API/resources/plc1/temperature/api" >"$DIR/d1.json"
echo "DESCRIBE plc1/temperature: $(cat "$DIR/d1.json")"
check "DESCRIBE one has the unit" [ "$(jq -r .unit "$DIR/d1.json")" = "degC" ]
check "DESCRIBE one has a number sample" [ "$(jq -r '.out | type' "$DIR/d1.json")" = number ]

r=$(curl -sf "$API/resources/plc1/temperature")
echo "read temperature: $r"
check "REST read 42.0" [ "$(echo "$r" | jq -r '. == 42')" = "true" ]
w=$(curl -sf -X POST -H 'Content-Type: application/json' -d '-7' "$API/resources/plc1/setpoint")
echo "write setpoint -7: $w"
check "REST write -7 read back" [ "$w" = "-7" ]
w=$(curl -sf -X POST -H 'Content-Type: application/json' -d '0' "$API/resources/plc1/setpoint")
check "REST write 0 read back" [ "$w" = "0" ]
r=$(curl -sf "$API/resources/plc1/setpoint")
check "REST read after write 0" [ "$r" = "0" ]
bad=$(curl -s -X POST -H 'Content-Type: application/json' -d '500' "$API/resources/plc1/setpoint")
echo "write 500 (max 90): $bad"
check "REST write beyond max refused" sh -c "echo '$bad' | grep -q 'out of range'"

sid=$(curl -sf -X POST "$API/resources/plc1/temperature/stream?interval=200" | jq -r .stream)
sleep 1.5
s=$(curl -sf "$API/streams/$sid?after=0&wait=2000")
n=$(echo "$s" | jq '.samples | length')
echo "200 ms stream: $n samples in 1.5 s: $(echo "$s" | jq -c '[.samples[].data]')"
check "stream delivered samples" [ "${n:-0}" -ge 4 ]

# Stop the daemon cleanly; in a -DGW_SANITIZE=ON build it reports errors and leaks on exit.
kill -TERM "$GWPID"
wait "$GWPID"
check "daemon stopped with status 0" [ $? -eq 0 ]
check "no sanitizer report from the daemon" sh -c "! grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' '$DIR/gw.log'"

[ $FAILS -eq 0 ] && echo PASS || echo FAIL
exit $FAILS
