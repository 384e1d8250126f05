#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Broker integration test of the control API (API.md "Control API"), seen from real devices:
# redirect (the device gets CONNECT ERROR 1 with the URI), layout (only the expected server-action
# layout is accepted), keepalive (echo off and on), freeze/unfreeze (a frozen device's REST call
# times out, then it is served again), delay, drop (a --reconnect device comes back), stats and
# reset. Everything it starts is stopped by pid at the end (trap in lib.sh).
. "$(dirname "$0")/lib.sh"

make_certs
cat >"$T/credentials" <<EOF
u1 dev1 pw1
u1 dev2 pw2
u1 dev3 pw3
EOF
start_broker
D=/v3/users/u1/devices

# run_device NAME PASSWORD [args]: a device expected to be refused; sets RC.
run_device() {
    local name=$1 pass=$2
    shift 2
    timeout 20 "$TESTDEV" --url "$(url_for tcp)" --user u1 --device "$name" --password "$pass" \
        "$@" >"$T/dev-$name.out" 2>"$T/dev-$name.log"
    RC=$?
}

# --- Redirect: the next CONNECT of dev2 gets ERROR 1 with the URI, the one after is accepted ---
api POST /_control/redirect '{"user":"u1","device":"dev2","uri":"iotmps://elsewhere.example:25206"}'
check "control redirect answered" eval '[ "$STATUS" -ge 200 ] && [ "$STATUS" -lt 300 ]'
run_device dev2 pw2 --timeout 5000
check "redirected device exits 3" [ "$RC" = 3 ]
check "the device saw ERROR 1 with the target URI" \
    grep -q 'code=1 redirect=iotmps://elsewhere.example:25206' "$T/dev-dev2.out"
start_device dev2 tcp u1 pw2
check "the redirect applied to one CONNECT only" kill -0 "$DEV_PID"

start_device dev1 tcp u1 pw1

# --- Layout: with "linux" expected, an embedded-layout action is refused ---
api POST /_control/layout '{"expect":"linux"}'
api POST "$D/dev1/resources/act" '{"action":"write_bucket","target":"lb","data":1,"layout":"linux"}'
check "layout=linux: a linux-layout WRITE_BUCKET is accepted" ok_and '.ok == true'
api POST "$D/dev1/resources/act" '{"action":"write_bucket","target":"lb","data":2,"layout":"embedded"}'
check "layout=linux: an embedded-layout WRITE_BUCKET gets ERROR" ok_and '.ok == false'
api POST /_control/layout '{"expect":"embedded"}'
api POST "$D/dev1/resources/act" '{"action":"write_bucket","target":"lb","data":3,"layout":"embedded"}'
check "layout=embedded: an embedded-layout WRITE_BUCKET is accepted" ok_and '.ok == true'
api POST "$D/dev1/resources/act" '{"action":"write_bucket","target":"lb","data":4,"layout":"linux"}'
check "layout=embedded: a linux-layout WRITE_BUCKET gets ERROR" ok_and '.ok == false'
api POST /_control/layout '{"expect":"any"}'
api GET "/v3/users/u1/buckets/lb/data"
check "only the accepted rows were stored" ok_and '[.[] | .data] == [1,3]'

# --- Keep-alive echo off / on ---
api POST /_control/keepalive '{"echo":false}'
api GET "$D/dev1/resources/stats"
before=$(jq .keepalive_echoes <<<"$BODY")
api GET "$D/dev1/resources/keepalive"
api GET "$D/dev1/resources/keepalive"
# The RUN answers travel after the KEEP_ALIVEs on the same connection, so by now an echo would
# have arrived; read the counter after one more round trip to be sure.
api GET "$D/dev1/resources/counter"
api GET "$D/dev1/resources/stats"
check "no KEEP_ALIVE echo while echo is off" ok_and ".keepalive_echoes == $before"
api POST /_control/keepalive '{"echo":true}'
api GET "$D/dev1/resources/keepalive"
for _ in $(seq 20); do
    api GET "$D/dev1/resources/stats"
    jq_ok ".keepalive_echoes > $before" && break
    sleep 0.1
done
check "echoes again after echo on" ok_and ".keepalive_echoes > $before"

# --- Freeze / unfreeze ---
api POST /_control/devices/u1/dev1/freeze
check "control freeze answered" eval '[ "$STATUS" -ge 200 ] && [ "$STATUS" -lt 300 ]'
api GET "$D/dev1/resources/counter?timeout=500"
check "a frozen device's call times out (504)" status_is 504
api POST /_control/devices/u1/dev1/unfreeze
api GET "$D/dev1/resources/counter"
check "after unfreeze the device is served again" ok_and 'type == "number"'
check "the frozen device kept its connection" kill -0 "${DEV_PIDS[dev1]}"

# --- Delay: answers to device requests come later, but still come ---
api POST /_control/delay '{"ms":300}'
api POST "$D/dev1/resources/act" '{"action":"call_endpoint","target":"slowep","data":{"d":1}}'
check "with delay 300 ms a confirmed action is still answered OK" ok_and '.ok == true'
api POST /_control/delay '{"ms":0}'

# --- Drop: a device started with --reconnect comes back and keeps its state ---
start_device dev3 tcp u1 pw3 --reconnect
api GET "$D/dev3/resources/counter"
check "dev3 serves before the drop" ok_and '. == 1'
api POST /_control/devices/u1/dev3/drop
check "control drop answered" eval '[ "$STATUS" -ge 200 ] && [ "$STATUS" -lt 300 ]'
for _ in $(seq 150); do
    [ "$(grep -c '^iotmp-testdev ready ' "$T/dev-dev3.out")" -ge 2 ] && break
    sleep 0.1
done
check "the dropped device reconnected (second ready line)" \
    [ "$(grep -c '^iotmp-testdev ready ' "$T/dev-dev3.out")" -ge 2 ]
api GET "$D/dev3/resources/counter"
check "after reconnecting it is served again, with its state" ok_and '. == 2'

# --- Stats and reset ---
api GET /_control/stats
check "stats is a JSON object" ok_and 'type == "object"'
api POST /_control/reset
check "control reset answered" eval '[ "$STATUS" -ge 200 ] && [ "$STATUS" -lt 300 ]'
api GET "/v3/users/u1/buckets/lb/data"
check "reset cleared the buckets" ok_and 'length == 0'
api GET "/v3/users/u1/endpoints/slowep/calls"
check "reset cleared the endpoint calls" ok_and 'length == 0'
api GET "$D"
check "reset kept the connections" ok_and 'length == 3'

check "broker still running at the end" kill -0 "$BROKER_PID"
finish
