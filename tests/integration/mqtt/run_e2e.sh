#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# integ.mqtt_e2e: the MQTT adapter inside iotmp-gatewayd, reached through iotmp-broker's REST API
# with curl, against a real mosquitto: topics published with mosquitto_pub appear in DESCRIBE,
# REST reads return the latest values (JSON Pointer + coercion), an event stream delivers each new
# value once, REST writes reach mosquitto_sub with the expected topic, payload, QoS and retain
# flag, and a mosquitto restart is survived (REST keeps answering meanwhile; reconnect and
# re-subscribe afterwards). Everything started here is stopped by pid. Skipped (77) when the
# daemon, the broker, mosquitto, curl or jq is missing.
HERE=$(cd "$(dirname "$0")" && pwd)
E2E_NAME=mqtt
. "$HERE/../e2e.sh"
for t in mosquitto mosquitto_pub mosquitto_sub; do
    command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
MQPID=""

mport=$(free_port)
cat >"$DIR/mosquitto.conf" <<EOF
listener $mport 127.0.0.1
allow_anonymous true
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
log_type subscribe
user root
persistence false
EOF
start_mosquitto() {
    mosquitto -c "$DIR/mosquitto.conf" >"$DIR/mosquitto.log" 2>&1 &   # a fresh log per start
    MQPID=$!
    EXTRA_PIDS=$MQPID
    wait_line "$DIR/mosquitto.log" "Opening ipv4 listen socket on port $mport"
}
start_mosquitto

e2e_start_broker
e2e_gateway_config
cat >"$DIR/adapters.d/site.json" <<JSON
{"type": "mqtt", "name": "site",
 "broker": {"host": "127.0.0.1", "port": $mport, "client_id": "gw-e2e", "keepalive": 10,
            "reconnect_min": 100, "reconnect_max": 500},
 "max_topics": 100,
 "mappings": [
   {"name": "{2}/temperature", "subscribe": "zigbee2mqtt/+", "format": "json",
    "pointer": "/temperature", "as": "number", "unit": "°C"},
   {"name": "{2}/power", "subscribe": "stat/+/POWER", "format": "text", "as": "bool",
    "write": {"topic": "cmnd/{2}/POWER", "true_text": "ON", "false_text": "OFF", "qos": 1}},
   {"name": "boiler/setpoint", "subscribe": "plant/boiler/setpoint", "as": "number",
    "write": {"topic": "plant/boiler/setpoint/set", "payload": {"setpoint": "\$value"},
              "qos": 2, "retain": true}},
   {"name": "level", "subscribe": "lvl", "as": "number"}
 ]}
JSON
"$GWD" validate -c "$DIR/gateway.json" >"$DIR/validate.log" 2>&1
check "iotmp-gatewayd validate accepts the MQTT instance" [ $? -eq 0 ]

# a semantic error is reported with file:line:col by the adapter's own checks
cat >"$DIR/bad.json" <<'JSON'
{"type": "mqtt", "name": "bad",
 "broker": {"host": "127.0.0.1"},
 "mappings": [
   {"name": "{4}/t", "subscribe": "a/+"}
 ]}
JSON
"$GWD" validate -c "$DIR/gateway.json" "$DIR/bad.json" >"$DIR/bad.log" 2>&1
rc=$?
echo "validate bad.json (exit $rc): $(head -n 1 "$DIR/bad.log")"
check "validate refuses a bad MQTT file with file:line:col" sh -c \
    "[ $rc -eq 1 ] && grep -q 'bad.json:4:13: /mappings/0/name: placeholder {4}' '$DIR/bad.log'"

"$GWD" -c "$DIR/gateway.json" >"$DIR/gw.out" 2>"$DIR/gw.log" &
GWPID=$!
PIDS="$PIDS $GWPID"
wait_line "$DIR/mosquitto.log" "gw-e2e 0 lvl"   # the adapter has subscribed

API="http://127.0.0.1:$hport/v3/users/alice/devices/gw1"
i=0
until curl -sf "$API/api" >"$DIR/describe.json" && grep -q site/_stats "$DIR/describe.json"; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "FAIL: gateway not connected"; cat "$DIR/gw.log"; exit 1; }
    sleep 0.1
done

# Topics published with mosquitto_pub become resources
mosquitto_pub -h 127.0.0.1 -p "$mport" -t zigbee2mqtt/kitchen -m '{"temperature":"21.5","battery":80}'
mosquitto_pub -h 127.0.0.1 -p "$mport" -t stat/plug1/POWER -m OFF
i=0
until curl -sf "$API/api" >"$DIR/describe.json" && grep -q site/plug1/power "$DIR/describe.json" &&
    grep -q site/kitchen/temperature "$DIR/describe.json"; do
    i=$((i + 1)); [ $i -gt 50 ] && break
    sleep 0.1
done
echo "DESCRIBE: $(cat "$DIR/describe.json")"
check "DESCRIBE lists site/kitchen/temperature" [ "$(jq -r '."site/kitchen/temperature".fn' "$DIR/describe.json")" = 3 ]
check "DESCRIBE lists site/plug1/power as in+out" [ "$(jq -r '."site/plug1/power".fn' "$DIR/describe.json")" = 4 ]
curl -sf "$API/resources/site/kitchen/temperature/api" >"$DIR/d1.json"
echo "DESCRIBE site/kitchen/temperature: $(cat "$DIR/d1.json")"
check "DESCRIBE one has the unit" [ "$(jq -r .unit "$DIR/d1.json")" = "°C" ]

r=$(curl -sf "$API/resources/site/kitchen/temperature")
echo "read site/kitchen/temperature: $r"
check "REST read: JSON Pointer + string coerced to 21.5" [ "$(echo "$r" | jq '. == 21.5')" = true ]
r=$(curl -sf "$API/resources/site/plug1/power")
check "REST read: text OFF coerced to false" [ "$r" = false ]
mosquitto_pub -h 127.0.0.1 -p "$mport" -t zigbee2mqtt/kitchen -m '{"temperature":22.75}'
sleep 0.3
r=$(curl -sf "$API/resources/site/kitchen/temperature")
check "REST read returns the latest value (22.75)" [ "$(echo "$r" | jq '. == 22.75')" = true ]

# An event stream delivers each new value once
sid=$(curl -sf -X POST "$API/resources/site/level/stream" | jq -r .stream)
sleep 0.3
printf '1\n1\n2\n2\n2\n3\n' | mosquitto_pub -h 127.0.0.1 -p "$mport" -t lvl -l
sleep 0.5
s=$(curl -sf "$API/streams/$sid?after=0&wait=2000")
data=$(echo "$s" | jq -c '[.samples[].data]')
echo "event stream of site/level after 1,1,2,2,2,3: $data"
check "stream delivered each new value once" [ "$data" = "[1,2,3]" ]
curl -sf -X DELETE "$API/streams/$sid" >/dev/null

# REST writes reach mosquitto_sub with topic, payload, QoS and retain flag
sub() { # sub FILTER ID: one message, MQTT 5 so the retain flag is shown as published
    mosquitto_sub -h 127.0.0.1 -p "$mport" -V 5 --retain-as-published -q 2 -i "$2" -t "$1" \
        -C 1 -W 10 -F '%t|%p|%q|%r' >"$DIR/$2.out" 2>&1 &
    SUBPID=$!
    wait_line "$DIR/mosquitto.log" "$2 2 $1"
}
sub 'cmnd/#' sub1
w=$(curl -s -X POST -H 'Content-Type: application/json' -d 'true' "$API/resources/site/plug1/power")
wait "$SUBPID"
echo "write true to site/plug1/power: answer $w, mosquitto_sub saw $(cat "$DIR/sub1.out")"
check "REST write QoS 1 reaches the subscriber" [ "$(cat "$DIR/sub1.out")" = "cmnd/plug1/POWER|ON|1|0" ]
sub 'plant/#' sub2
w=$(curl -s -X POST -H 'Content-Type: application/json' -d '57.5' "$API/resources/site/boiler/setpoint")
wait "$SUBPID"
echo "write 57.5 to site/boiler/setpoint: answer $w, mosquitto_sub saw $(cat "$DIR/sub2.out")"
check "REST write QoS 2 retained JSON template" [ "$(cat "$DIR/sub2.out")" = 'plant/boiler/setpoint/set|{"setpoint":57.5}|2|1' ]
bad=$(curl -s -X POST -H 'Content-Type: application/json' -d '"maybe"' "$API/resources/site/plug1/power")
echo "write \"maybe\": $bad"
check "REST write of a non-boolean refused with a reason" sh -c "echo '$bad' | grep -q 'not a boolean'"

# Broker restart: REST keeps answering, writes fail clearly, then reconnect + re-subscribe
kill "$MQPID"; wait "$MQPID" 2>/dev/null; MQPID=""; EXTRA_PIDS=""
sleep 0.5
st=$(curl -sf "$API/resources/site/_stats")
echo "stats during the outage: $st"
check "REST answers during the outage (connected false)" [ "$(echo "$st" | jq .connected)" = false ]
r=$(curl -sf "$API/resources/site/kitchen/temperature")
check "REST read of the cached value during the outage" [ "$(echo "$r" | jq '. == 22.75')" = true ]
w=$(curl -s -X POST -H 'Content-Type: application/json' -d 'true' "$API/resources/site/plug1/power")
echo "write during the outage: $w"
check "REST write during the outage says not connected" sh -c "echo '$w' | grep -q 'not connected to MQTT broker'"
start_mosquitto
wait_line "$DIR/mosquitto.log" "gw-e2e 0 lvl"
sleep 0.2
mosquitto_pub -h 127.0.0.1 -p "$mport" -t lvl -m 42
sleep 0.3
r=$(curl -sf "$API/resources/site/level")
check "after the restart new messages arrive (re-subscribed)" [ "$(echo "$r" | jq '. == 42')" = true ]
st=$(curl -sf "$API/resources/site/_stats")
echo "stats after the restart: $st"
check "two connects, one disconnect" [ "$(echo "$st" | jq -c '[.connects,.disconnects]')" = "[2,1]" ]

# Stop the daemon cleanly; in a -DGW_SANITIZE=ON build it reports errors and leaks on exit.
kill -TERM "$GWPID"
wait "$GWPID"
check "daemon stopped with status 0" [ $? -eq 0 ]
check "no sanitizer report from the daemon" sh -c "! grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' '$DIR/gw.log'"
echo "daemon log lines of the MQTT instance:"
head -c 3000 "$DIR/gw.log"

[ $FAILS -eq 0 ] && echo PASS || echo FAIL
exit $FAILS
