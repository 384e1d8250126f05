#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Broker integration test over one transport (tcp, tls, ws or wss; the first argument): starts
# iotmp-broker (all ports 0, temp credentials and db) and two iotmp-testdev devices over that
# transport, then drives them through the broker's REST API with curl: device list, DESCRIBE all
# and one, RUN with and without input (names with '/', numeric ids, bytes), device errors, a 100 ms
# stream read by long-polling, an event stream, WRITE_BUCKET in both layouts and fire-and-forget,
# CALL_ENDPOINT, properties, CALL_DEVICE between the two devices, keep-alive echo, a call timeout.
# Everything it starts is stopped by pid at the end (trap in lib.sh).
TRANSPORT=${1:?usage: test_transport.sh tcp|tls|ws|wss}
. "$(dirname "$0")/lib.sh"

make_certs
cat >"$T/credentials" <<EOF
# user device password
u1 dev1 pw1
u1 dev2 pw2
u2 other pw3
EOF
start_broker
start_device dev1 "$TRANSPORT" u1 pw1
start_device dev2 "$TRANSPORT" u1 pw2
D=/v3/users/u1/devices

# --- Device list ---
api GET "$D"
check "device list has dev1 and dev2 over $TRANSPORT" ok_and \
    "([.[] | select(.device==\"dev1\" or .device==\"dev2\") | select(.connected==true and .transport==\"$TRANSPORT\")] | length) == 2"
check "device list entries have since and remote" ok_and \
    '[.[] | (.since|type)=="number" and (.remote|test("^(::ffff:)?127\\.0\\.0\\.1:[0-9]+$"))] | all'
api GET /v3/users/u2/devices
check "another user's list does not show u1's devices" ok_and \
    '[.[] | select(.device=="dev1")] | length == 0'

# --- DESCRIBE ---
api GET "$D/dev1/api"
check "DESCRIBE all: kinds (fn) of the demo resources" ok_and \
    '.counter.fn==3 and .echo.fn==4 and .state.fn==2 and .keepalive.fn==1 and .["sensors/temp"].fn==3'
check "DESCRIBE all: numeric ids" ok_and '.counter.id==1 and .echo.id==2'
api GET "$D/dev1/resources/echo/api"
check "DESCRIBE one (inout) has in and out" ok_and 'has("in") and has("out")'
api GET "$D/dev1/resources/state/api"
check "DESCRIBE one (input) has only in" ok_and 'has("in") and (has("out")|not)'
api GET "$D/dev1/resources/nope/api"
check "DESCRIBE of an unknown resource is a JSON error" \
    eval '[ "$STATUS" -ge 400 ] && jq_ok ".error.message|type==\"string\""'

# --- RUN ---
api GET "$D/dev1/resources/counter"
first=$BODY
check "RUN without input returns a number" ok_and 'type=="number"'
api GET "$D/dev1/resources/counter"
check "RUN again: the counter went up" ok_and ". > $first"
api POST "$D/dev1/resources/echo" '{"a":[1,-2,2.5,"x",true,null],"m":{"k":"v"},"big":1099511627776}'
check "RUN with input echoes the JSON value" ok_and \
    '. == {"a":[1,-2,2.5,"x",true,null],"m":{"k":"v"},"big":1099511627776}'
api POST "$D/dev1/resources/echo" '{"$bytes":"deadbeef00ff"}'
check "RUN with bytes input round-trips them" ok_and '. == {"$bytes":"deadbeef00ff"}'
api POST "$D/dev1/resources/echo" '"héllo wörld"'
check "RUN with a UTF-8 string" ok_and '. == "héllo wörld"'
head -c 100000 /dev/zero | tr '\0' 'x' | sed 's/^/"/; s/$/"/' >"$T/100k.json"
api POST "$D/dev1/resources/echo" "$(cat "$T/100k.json")"
check "RUN with a 100 kB input echoes it (large frames both ways)" ok_and 'type == "string" and length == 100000'
api GET "$D/dev1/resources/sensors/temp"
check "RUN of a resource name containing /" ok_and 'type=="number"'
api GET "$D/dev1/resources/2"
check "RUN by numeric id (2 = echo, no input → null)" ok_and '. == null'
api GET "$D/dev1/resources/info"
check "RUN info reports the device and transport" ok_and \
    ".device==\"dev1\" and .transport==\"$TRANSPORT\""
api POST "$D/dev1/resources/state" '{"level":7}'
check "RUN of an input resource answers null" ok_and '. == null'
api GET "$D/dev1/resources/state/api"
check "the input resource kept its new state" ok_and '.in == {"level":7}'
api POST "$D/dev1/resources/fail" '{"code":503,"message":"boom"}'
check "device ERROR 503 → HTTP 503 with the device's text and code" eval \
    'status_is 503 && jq_ok ".error.message==\"boom\" and .error.device_code==503"'
api POST "$D/dev1/resources/fail" '{"code":7,"message":"odd"}'
check "device ERROR with a code outside 400..599 → 502" eval \
    'status_is 502 && jq_ok ".error.message==\"odd\" and .error.device_code==7"'
api POST "$D/dev1/resources/fail" '{"code":0,"message":"no code"}'
check "device ERROR without PARAMETERS → 502, device_code null" eval \
    'status_is 502 && jq_ok ".error.message==\"no code\" and .error.device_code==null"'
api GET "$D/dev1/resources/does-not-exist"
check "RUN of an unknown device resource → 404 JSON error" eval \
    'status_is 404 && jq_ok ".error.message|type==\"string\""'

# --- Interval stream at 100 ms ---
api POST "$D/dev1/resources/counter/stream?interval=100"
check "START_STREAM answers 201 with a stream id" eval \
    'status_is 201 && jq_ok ".stream|type==\"number\""'
sid=$(jq -r .stream <<<"$BODY")
after=0
samples='[]'
for _ in $(seq 40); do
    api GET "$D/dev1/streams/$sid?after=$after&wait=2000"
    [ "$STATUS" = 200 ] || break
    samples=$(jq -c --argjson old "$samples" '$old + .samples' <<<"$BODY")
    after=$(jq -r .next <<<"$BODY")
    [ "$(jq length <<<"$samples")" -ge 15 ] && break
done
BODY=$samples
STATUS=200
check "long-poll collected at least 15 samples" ok_and 'length >= 15'
check "sample seq strictly increasing" ok_and '[.[1:][] .seq] as $s | [.[:-1][] .seq] as $p | [range($s|length) | $s[.] > $p[.]] | all'
check "sample data (the counter) increasing" ok_and '[.[1:][] .data] as $s | [.[:-1][] .data] as $p | [range($s|length) | $s[.] > $p[.]] | all'
# Spacing, roughly: the median gap between samples lies between 30 and 1000 ms for 100 ms.
check "median sample spacing roughly 100 ms (30..1000)" ok_and \
    '[.[1:][] .ts] as $s | [.[:-1][] .ts] as $p | [range($s|length) | $s[.] - $p[.]] | sort | .[length/2|floor] | (. >= 30 and . <= 1000)'
api DELETE "$D/dev1/streams/$sid"
check "STOP_STREAM answers 200 {stream, open:false}" ok_and ".stream == $sid and .open == false"
api GET "$D/dev1/streams/$sid?after=0&wait=0"
last_seq=$(jq -r '.next' <<<"$BODY")
check "the stopped stream reads open=false" ok_and '.open == false'
# The device stops sampling before it answers STOP_STREAM, so nothing may follow.
api GET "$D/dev1/streams/$sid?after=$last_seq&wait=300"
check "no sample after STOP_STREAM" ok_and '.samples == []'
api GET "$D/dev1/resources/stats"
check "device reports no open stream after STOP_STREAM" ok_and '.streams_open == 0'

# --- Event stream: the input resource pushes its new state ---
api POST "$D/dev1/resources/state/stream"
esid=$(jq -r .stream <<<"$BODY")
check "event stream started (no interval)" status_is 201
api POST "$D/dev1/resources/state" '{"level":42}'
found=false
for _ in $(seq 10); do
    api GET "$D/dev1/streams/$esid?after=0&wait=2000"
    if jq_ok '[.samples[] | select(.data=={"level":42})] | length >= 1'; then found=true; break; fi
done
check "event stream carried the new input state" $found
api POST "$D/dev1/resources/emit" '{"resource":"state"}'
check "emit sent one event sample" ok_and '.sent == 1'
api DELETE "$D/dev1/streams/$esid"

# --- Server actions: WRITE_BUCKET in both layouts and without stream id ---
api POST "$D/dev1/resources/act" '{"action":"write_bucket","target":"b1","data":{"i":1},"layout":"linux"}'
check "WRITE_BUCKET (linux layout, confirmed) answered OK" ok_and '.ok == true'
api POST "$D/dev1/resources/act" '{"action":"write_bucket","target":"b1","data":{"i":2},"layout":"embedded"}'
check "WRITE_BUCKET (embedded layout, confirmed) answered OK" ok_and '.ok == true'
api POST "$D/dev1/resources/act" '{"action":"write_bucket","target":"b1","data":{"i":3},"confirm":false}'
check "WRITE_BUCKET without stream id sent" ok_and '.sent == true'
api POST "$D/dev2/resources/act" '{"action":"write_bucket","target":"b1","data":{"i":4}}'
for _ in $(seq 20); do
    api GET "/v3/users/u1/buckets/b1/data"
    jq_ok 'length >= 4' && break
    sleep 0.1
done
check "bucket rows appear in order with device and layout" ok_and \
    '[.[] | .data.i] == [1,2,3,4] and [.[] | .layout] == ["linux","embedded","linux","linux"] and [.[] | .device] == ["dev1","dev1","dev1","dev2"]'
check "bucket seq increasing" ok_and '[.[] | .seq] as $s | $s == ($s | sort) and ($s | unique | length) == 4'
last=$(jq -r '.[1].seq' <<<"$BODY")
api GET "/v3/users/u1/buckets/b1/data?after=$last"
check "bucket ?after=SEQ returns only later rows" ok_and '[.[] | .data.i] == [3,4]'
api GET "/v3/users/u1/buckets/b1/data?device=dev2"
check "bucket ?device= filters" ok_and '[.[] | .data.i] == [4]'
api GET "/v3/users/u1/buckets/b1/data?limit=2"
check "bucket ?limit=2" ok_and 'length == 2 and .[0].data.i == 1'

# --- CALL_ENDPOINT ---
api POST "$D/dev1/resources/act" '{"action":"call_endpoint","target":"ep1","data":{"x":"y"},"layout":"embedded"}'
check "CALL_ENDPOINT answered OK" ok_and '.ok == true'
api GET "/v3/users/u1/endpoints/ep1/calls"
check "endpoint call recorded" ok_and \
    'length == 1 and .[0].data == {"x":"y"} and .[0].device == "dev1" and .[0].layout == "embedded"'

# --- Properties ---
api POST "$D/dev1/resources/act" '{"action":"set_property","target":"p1","data":{"on":true,"n":3}}'
check "SET_DEVICE_PROPERTY answered OK" ok_and '.ok == true'
api GET "$D/dev1/properties/p1"
check "REST reads the property the device set" ok_and '. == {"on":true,"n":3}'
api PUT "$D/dev1/properties/p2" '{"mode":"auto"}'
check "REST PUT property answers 200 with the value" ok_and '. == {"mode":"auto"}'
api POST "$D/dev1/resources/act" '{"action":"read_property","target":"p2"}'
check "READ_DEVICE_PROPERTY (linux) returns the REST value" ok_and '.ok == true and .answer == {"mode":"auto"}'
api POST "$D/dev1/resources/act" '{"action":"read_property","target":"p2","layout":"embedded"}'
check "READ_DEVICE_PROPERTY (embedded) returns it too" ok_and '.ok == true and .answer == {"mode":"auto"}'
api POST "$D/dev1/resources/act" '{"action":"read_property","target":"never-set"}'
check "READ_DEVICE_PROPERTY of an unset property → ERROR 404" ok_and '.ok == false and .code == 404'
api GET "$D/dev1/properties/never-set"
check "REST GET of an unset property → 404" status_is 404

# --- CALL_DEVICE between the two devices ---
api POST "$D/dev1/resources/act" '{"action":"call_device","target":["dev2","echo"],"data":{"hello":"dev2"}}'
check "CALL_DEVICE dev1 → dev2 echo relays the answer" ok_and '.ok == true and .answer == {"hello":"dev2"}'
api POST "$D/dev1/resources/act" '{"action":"call_device","target":["dev2","info"]}'
check "CALL_DEVICE reached dev2 (info says dev2)" ok_and '.ok == true and .answer.device == "dev2"'
api POST "$D/dev1/resources/act" '{"action":"call_device","target":["dev2","echo"],"data":[7],"layout":"embedded"}'
check "CALL_DEVICE in the embedded layout" ok_and '.ok == true and .answer == [7]'
api POST "$D/dev1/resources/act" '{"action":"call_device","target":"dev2/echo","data":"s"}'
check "CALL_DEVICE with the target as \"device/resource\"" ok_and '.ok == true and .answer == "s"'
api POST "$D/dev1/resources/act" '{"action":"call_device","target":["dev2","fail"],"data":{"code":418,"message":"teapot"}}'
check "CALL_DEVICE relays the target's ERROR code and text" ok_and \
    '.ok == false and .code == 418 and .answer.error == "teapot"'
api POST "$D/dev1/resources/act" '{"action":"call_device","target":["nobody","echo"]}'
check "CALL_DEVICE to a device that is not connected → ERROR 404" ok_and '.ok == false and .code == 404'

# --- Locks (in memory) ---
api POST "$D/dev1/resources/act" '{"action":"lock_sync","target":"l1","data":{"lock":"a"}}'
check "LOCK_SYNC answered OK with the lock id" ok_and '.ok == true and .answer.lock == "a"'
api POST "$D/dev2/resources/act" '{"action":"lock_sync","target":"l1","data":{"lock":"b"}}'
check "a second holder of a 1-slot lock → ERROR 409" ok_and '.ok == false and .code == 409'
api POST "$D/dev1/resources/act" '{"action":"unlock_sync","target":"l1","data":{"lock":"a"}}'
check "UNLOCK_SYNC answered OK" ok_and '.ok == true'
api POST "$D/dev2/resources/act" '{"action":"lock_sync","target":"l1","data":{"lock":"b"}}'
check "after the unlock the other device gets the lock" ok_and '.ok == true and .answer.lock == "b"'
api POST "$D/dev2/resources/act" '{"action":"unlock_sync","target":"l1","data":{"lock":"b"}}'

# --- Keep-alive echo (and WebSocket pong) ---
api GET "$D/dev1/resources/keepalive"
check "keepalive resource ran" status_is 200
for _ in $(seq 20); do
    api GET "$D/dev1/resources/stats"
    jq_ok '.keepalive_echoes >= 1' && break
    sleep 0.1
done
check "broker echoed KEEP_ALIVE" ok_and '.keepalive_echoes >= 1'
if [ "$TRANSPORT" = ws ] || [ "$TRANSPORT" = wss ]; then
    check "broker answered the WebSocket ping" ok_and '.ws_pongs >= 1'
fi

# --- Call timeout and a slow answer ---
api GET "$D/dev1/resources/slow?timeout=300"
check "a call slower than ?timeout=300 → 504 JSON error" eval \
    'status_is 504 && jq_ok ".error.message|type==\"string\""'
api POST "$D/dev1/resources/slow" '{"n":1}'
check "the slow resource answers later (default timeout)" ok_and '.slow_ms == 1500 and .in == {"n":1}'
api GET "$D/dev1/resources/counter"
check "device still serves after the late answer" ok_and 'type=="number"'

# --- The broker is alive and both devices are still connected ---
api GET "$D"
check "both devices still connected at the end" ok_and '[.[] | select(.connected)] | length == 2'
check "no device lost its link during the test" eval \
    '! grep -h "link lost" "$T/dev-dev1.log" "$T/dev-dev2.log" >&2'
finish
