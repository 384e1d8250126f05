#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Broker integration test of failures: wrong credentials (the device sees ERROR 2), an invalid
# keep-alive (ERROR 3), TLS against the wrong CA and a host name the certificate does not name,
# REST calls for unknown devices (404 JSON error), a device killed in the middle of a call (the REST
# call fails well within its timeout, the broker keeps running and serves the next device), a second
# CONNECT of the same device replacing the first, the control API dropping a device and refusing
# connections. Everything it starts is stopped by pid at the end (trap in lib.sh).
. "$(dirname "$0")/lib.sh"

make_certs
cat >"$T/credentials" <<EOF
u1 dev1 pw1
u1 dev2 pw2
u1 dev3 pw3
u1 dev4 pw4
EOF
start_broker
D=/v3/users/u1/devices

# run_device NAME TRANSPORT PASSWORD [args]: runs a device that is expected to fail; sets RC and
# leaves its output in $T/dev-NAME.out / .log.
run_device() {
    local name=$1 tr=$2 pass=$3
    shift 3
    timeout 20 "$TESTDEV" --url "$(url_for "$tr")" --user u1 --device "$name" --password "$pass" \
        --ca "$T/ca.pem" "$@" >"$T/dev-$name.out" 2>"$T/dev-$name.log"
    RC=$?
}

# --- CONNECT refused ---
run_device dev1 tcp wrong-password
check "wrong password: device exits 3 (refused)" [ "$RC" = 3 ]
check "wrong password: the device saw ERROR code 2" grep -q 'code=2' "$T/dev-dev1.out"
check "wrong password: the device explains it" grep -q 'ERROR code 2 (bad credentials)' "$T/dev-dev1.log"
run_device nobody tcp pw1
check "unknown device: ERROR code 2" grep -q 'code=2' "$T/dev-nobody.out"
run_device dev1 tcp pw1 --ka 5000
check "ka 5000 (> 1800): ERROR code 3" grep -q 'code=3' "$T/dev-dev1.out"
run_device dev1 tcp pw1 --ka-raw abc
check "ka \"abc\" (not a number): ERROR code 3" grep -q 'code=3' "$T/dev-dev1.out"
api GET "$D"
check "refused devices are not listed" ok_and 'length == 0'

# --- TLS verification on the device side ---
run_device dev1 tls pw1 --ca "$T/other-ca.pem" --timeout 5000
check "TLS with the wrong CA: device fails to connect (exit 2)" [ "$RC" = 2 ]
check "TLS with the wrong CA: certificate verification failure reported" \
    grep -q 'certificate verification failed' "$T/dev-dev1.log"
"$TESTDEV" --url "tls://localhost:$TLS_PORT" --user u1 --device dev1 --password pw1 \
    --ca "$T/ca.pem" --timeout 5000 >"$T/dev-host.out" 2>"$T/dev-host.log"
RC=$?
check "TLS to a host name the certificate does not name: refused (exit 2)" [ "$RC" = 2 ]
check "... because of the host name check" grep -q 'hostname mismatch' "$T/dev-host.log"

# --- REST for unknown devices and users ---
api GET "$D/ghost/resources/counter"
check "RUN on an unknown device → 404" status_is 404
check "... with a JSON error naming the device" jq_ok '.error.message | test("ghost")'
api POST "$D/ghost/resources/echo" '{"a":1}'
check "POST RUN on an unknown device → 404 JSON error" eval \
    'status_is 404 && jq_ok ".error.message|type==\"string\""'
api GET "$D/ghost/api"
check "DESCRIBE of an unknown device → 404" status_is 404
api POST "$D/ghost/resources/counter/stream?interval=100"
check "START_STREAM on an unknown device → 404" status_is 404

# --- Bad HTTP requests ---
start_device dev4 tcp u1 pw4
api POST "$D/dev4/resources/echo" '{"a": [1, 2'
check "a body that is not JSON → 400" status_is 400
check "... naming line and column" jq_ok '.error.message | test("line|column")'
api GET /v3/nothing/here
check "an unknown path → 404 JSON error" eval 'status_is 404 && jq_ok ".error.message|type==\"string\""'
api DELETE "$D/dev4/resources/counter"
check "a known path with another method → 405" status_is 405
head -c 300000 /dev/zero | tr '\0' 'a' | sed 's/^/"/; s/$/"/' >"$T/big.json"
STATUS=$(curl -s -m 30 -o "$T/body" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary @"$T/big.json" "$API$D/dev4/resources/echo")
BODY=$(cat "$T/body")
check "a body larger than --max-frame → 413" status_is 413
api GET "$D/dev4/resources/counter"
check "the device is still served after the bad requests" ok_and 'type == "number"'

# --- WebSocket upgrade refusals, seen by our own WebSocket client ---
"$TESTDEV" --url "ws://127.0.0.1:$HTTP_PORT/not-iotmp" --user u1 --device dev1 --password pw1 \
    --timeout 5000 >"$T/dev-wspath.out" 2>"$T/dev-wspath.log"
RC=$?
check "WebSocket upgrade on a path other than /iotmp is refused (exit 2)" [ "$RC" = 2 ]
check "... and the device reports the failed upgrade" grep -q 'WebSocket upgrade' "$T/dev-wspath.log"

# --- A device that disappears in the middle of a call ---
start_device dev3 tcp u1 pw3 --slow-ms 20000
curl -s -m 30 -o "$T/slow.body" -w '%{http_code}' \
    "$API$D/dev3/resources/slow?timeout=15000" >"$T/slow.status" 2>/dev/null &
CURL_PID=$!
PIDS+=("$CURL_PID")
# Wait until the RUN has reached the device (its run counter moves), then kill it hard.
for _ in $(seq 50); do
    api GET "$D/dev3/resources/stats"
    jq_ok '.runs >= 2' && break
    sleep 0.1
done
kill -KILL "${DEV_PIDS[dev3]}"
start=$(date +%s%N)
wait "$CURL_PID"
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
BODY=$(cat "$T/slow.body")
STATUS=$(cat "$T/slow.status")
check "call into a killed device → 502 (not the 15 s timeout)" status_is 502
check "... with a JSON error" jq_ok '.error.message | type == "string"'
echo "     (REST call ended $elapsed_ms ms after the device was killed)"
check "broker still running" kill -0 "$BROKER_PID"
start_device dev4 tcp u1 pw4
api GET "$D/dev4/resources/counter"
check "the next device is served" ok_and 'type == "number"'
api GET "$D/dev3/resources/counter"
check "the killed device is reported as not connected (404)" status_is 404

# --- A second CONNECT of the same device replaces the first ---
start_device dev2 tcp u1 pw2
first_pid=$DEV_PID
start_device dev2 ws u1 pw2
second_pid=$DEV_PID
for _ in $(seq 50); do kill -0 "$first_pid" 2>/dev/null || break; sleep 0.1; done
check "the first dev2 lost its link when the second connected" eval '! kill -0 '"$first_pid"' 2>/dev/null'
wait "$first_pid"
check "... and exited 4 (link lost)" [ "$?" = 4 ]
api GET "$D"
check "dev2 is listed once, over ws" ok_and '[.[] | select(.device=="dev2")] | (length == 1 and .[0].transport == "ws")'
api GET "$D/dev2/resources/info"
check "calls go to the second dev2" ok_and ".pid == $second_pid"

# --- Control API: drop and refuse ---
api POST "/_control/devices/u1/dev4/drop"
check "control drop answered" eval '[ "$STATUS" -ge 200 ] && [ "$STATUS" -lt 300 ]'
for _ in $(seq 50); do kill -0 "${DEV_PIDS[dev4]}" 2>/dev/null || break; sleep 0.1; done
check "dropped device saw its link close" eval '! kill -0 '"${DEV_PIDS[dev4]}"' 2>/dev/null'
api POST /_control/refuse '{"on":true}'
run_device dev4 tcp pw4 --timeout 3000
check "connections refused while refuse is on (device fails: exit 2 or 3)" \
    eval '[ "$RC" = 2 ] || [ "$RC" = 3 ] || [ "$RC" = 4 ]'
api POST /_control/refuse '{"on":false}'
start_device dev4 tcp u1 pw4
api GET "$D/dev4/resources/counter"
check "connections accepted again after refuse off" ok_and 'type == "number"'

# --- Keep-alive: a silent device is dropped after ka x 1.15, a live one is not ---
start_device dev1 tcp u1 pw1 --ka 1 --no-keepalive
silent_pid=$DEV_PID
start_device dev3 tcp u1 pw3 --ka 1
live_pid=$DEV_PID
for _ in $(seq 100); do kill -0 "$silent_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$silent_pid" 2>/dev/null; then
    check "a device silent for longer than ka x 1.15 (1 s) is dropped within 10 s" false
    kill -TERM "$silent_pid"
    wait "$silent_pid"
else
    check "a device silent for longer than ka x 1.15 (1 s) is dropped within 10 s" true
    wait "$silent_pid"
    check "... and sees its link close (exit 4)" [ "$?" = 4 ]
fi
check "a device sending KEEP_ALIVE (every 0.75 s for ka 1) is still connected" kill -0 "$live_pid"
api GET "$D/dev3/resources/stats"
check "... and its keep-alives were echoed" ok_and '.keepalive_echoes >= 1'

# --- Malformed input from a device: the broker closes that connection and keeps running ---
# RUN whose header announces a 2 MiB body (above --max-frame 262144).
api POST "$D/dev3/resources/raw" '{"$bytes":"0680808001"}'
for _ in $(seq 50); do kill -0 "$live_pid" 2>/dev/null || break; sleep 0.1; done
check "oversized frame: the broker closed the device's connection" eval '! kill -0 '"$live_pid"' 2>/dev/null'
check "... and logged the size" grep -q '2097152' "$T/broker.log"
start_device dev3 tcp u1 pw3
# RUN whose RESOURCE string claims 31+ bytes that are not there (PSON length past the end).
api POST "$D/dev3/resources/raw" '{"$bytes":"0603229f40"}'
for _ in $(seq 50); do kill -0 "$DEV_PID" 2>/dev/null || break; sleep 0.1; done
check "malformed frame: the broker closed the device's connection" eval '! kill -0 '"$DEV_PID"' 2>/dev/null'
start_device dev3 tcp u1 pw3
api GET "$D/dev3/resources/counter"
check "the broker serves the device after it reconnects" ok_and 'type == "number"'

check "broker still running at the end" kill -0 "$BROKER_PID"
finish
