#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# integ.session_<transport>: the uplink session against iotmp-broker over one transport
# (tcp | tls | ws | wss): REST calls reach the test resources (by name and by numeric id), DESCRIBE
# all and one, a slow resource does not hold up other calls, a 100 ms stream, an event stream,
# dead-link detection with a frozen connection and reconnection (streams are not re-armed by the
# gateway), 100 in-flight outbound calls failing when the link is cut (none answered twice), and a
# clean DISCONNECT on stop.
TR=${1:?usage: test_session.sh tcp|tls|ws|wss}
. "$(dirname "$0")/lib.sh"

KA=2
make_certs
start_broker server
start_gw gw --url "$(url_for "$TR")" --ca "$T/ca.pem" --ka "$KA" --layout linux
wait_connected 15 || fail "the gateway did not connect over $TR: $(tail -5 "$GW_LOG")"

api GET /v3/users/u1/devices
check "broker sees the device over $TR" jq_ok ".[0].transport == \"$TR\""
case $TR in
tls | wss) check "TLS peer verified" grep -q -E 'peer verified' "$GW_LOG" ;;
esac

D=/v3/users/u1/devices/d1
# --- RUN ---
api GET "$D/resources/sensors/temp"
check "RUN sensors/temp answers its output" ok_and '.celsius == 23.5'
api POST "$D/resources/echo" '{"a":[1,2,"x"],"b":true}'
check "RUN echo returns its input" ok_and '. == {"a":[1,2,"x"],"b":true}'
api GET "$D/resources/noop"
check "RUN noop answers OK without payload" ok_and '. == null'
api GET "$D/resources/nope"
check "unknown resource gets ERROR naming it" \
    jq_ok '.error.message == "unknown resource \"nope\""'
api GET "$D/resources/fail"
check "a failing resource gets ERROR with its text" \
    jq_ok '.error.message == "sensor unplugged"'

# --- DESCRIBE ---
api GET "$D/api"
check "DESCRIBE all lists every resource with fn and id" \
    ok_and '(keys | sort) == ["counter","echo","fail","level","noop","sensors/temp","slow"] and .counter.fn == 3 and .echo.fn == 4 and .noop.fn == 1 and (.counter.id | type) == "number"'
CID=$(jq '.counter.id' <<<"$BODY")
api GET "$D/resources/sensors/temp/api"
check "DESCRIBE one gives the out sample and meta keys" ok_and '. == {"out":{"celsius":0.5},"unit":"C"}'
api GET "$D/resources/nope/api"
check "DESCRIBE of an unknown resource is an error" jq_ok '.error.message | test("unknown resource")'
api GET "$D/resources/$CID"
check "RUN by numeric id ($CID) reaches counter" ok_and 'type == "number" and . >= 1'

# --- A slow resource does not block other calls ---
curl -s -m 10 -o "$T/slow.json" "$API$D/resources/slow" &
SLOW=$!
sleep 0.2
api GET "$D/resources/noop"
slow_still_running() { kill -0 "$SLOW" 2>/dev/null; }
check "noop answered while slow (1.5 s) is still running" slow_still_running
wait "$SLOW"
check "slow answers in the end" grep -q '"slow answer"' "$T/slow.json"

# --- 100 ms stream ---
api POST "$D/resources/counter/stream?interval=100" ''
SID=$(jq '.stream' <<<"$BODY")
check "START_STREAM counter every 100 ms accepted" status_is 201
sleep 1.6
api GET "$D/streams/$SID?after=0&wait=100"
cp "$T/body" "$T/stream100.json"
# Mean gap between consecutive samples (broker receive times), leaving out the first (sent at once).
MEAN=$(jq '[.samples[].ts] | .[1:] as $t | [range(1; $t|length)] | map($t[.] - $t[.-1]) | add / length' \
    "$T/stream100.json")
N=$(jq '.samples | length' "$T/stream100.json")
echo "     100 ms stream: $N samples, mean gap $MEAN ms"
in_band() { jq -e -n "$MEAN >= 90 and $MEAN <= 110" >/dev/null; }
check "stream samples arrive every 100 ms (+-10 %)" in_band
increasing() { jq -e '[.samples[].data] | . == (sort) and length >= 10' "$T/stream100.json" >/dev/null; }
check "stream samples are increasing counter values" increasing
api DELETE "$D/streams/$SID"
check "STOP_STREAM answered" status_is 200

# --- event stream ---
api POST "$D/resources/level/stream" ''
EID=$(jq '.stream' <<<"$BODY")
gw_cmd "pub 41"
gw_cmd "pub 42"
api POST "$D/resources/level" '43'
sleep 0.3
api GET "$D/streams/$EID?after=0&wait=500"
check "event stream delivers each change (41, 42, 43)" ok_and '[.samples[].data] == [41,42,43]'

STATS=$(gw_stats)
one_open() { jq -e '.streams_open == 1' <<<"$STATS" >/dev/null; }
check "one stream open in the gateway" one_open

# --- dead link ---
T0=$(gw_mark)
api POST "/_control/devices/u1/d1/freeze" ''
LINE=$(wait_line "$GW_OUT" '^STATE backoff .*reason=GW_EDEADLINK' $((3 * KA + 2)) "$GW_PID") \
    || fail "dead link not detected"
T1=$(sed -n 's/.* t=\([0-9]*\).*/\1/p' <<<"$LINE")
echo "     dead link detected $((T1 - T0)) ms after the freeze (keep-alive $KA s)"
# Bound: 2 x ka after the last byte received (<= the freeze), plus one check tick (ka/8).
check "dead link noticed within 2 x keep-alive" test $((T1 - T0)) -le $((2 * KA * 1000 + KA * 125 + 50))
check "reconnected after the dead link" wait_count "$GW_OUT" '^STATE ready' 2 10
STATS=$(gw_stats)
forgotten() { jq -e '.streams_open == 0 and .dead_links == 1 and .sessions == 2' <<<"$STATS" >/dev/null; }
check "streams are forgotten on reconnect (the server re-arms them)" forgotten
api POST "/_control/devices/u1/d1/unfreeze" ''
wait_connected 5
api GET "$D/resources/sensors/temp"
check "calls work on the new connection" ok_and '.celsius == 23.5'

# --- 100 in-flight outbound calls, link cut ---
api POST /_control/delay '{"ms":20000}'
gw_cmd "calls 100 5000"
wait_line "$GW_OUT" '^CALLS-QUEUED' 5 >/dev/null
check "100 calls queued" grep -q '^CALLS-QUEUED n=100 refused=0' "$GW_OUT"
sleep 0.3
api POST "/_control/devices/u1/d1/drop" ''
CL=$(wait_line "$GW_OUT" '^CALLS sent=100 ' 8 "$GW_PID") || fail "the 100 calls did not end"
echo "     $CL"
check "all 100 failed with GW_ELINK" grep -q -E '^CALLS sent=100 ok=0 failed=100 dup=0 .*codes=GW_ELINK:100$' "$GW_OUT"
MAXMS=$(sed -n 's/.* max_ms=\([0-9]*\).*/\1/p' <<<"$CL")
check "they failed within their 5000 ms timeout" test "$MAXMS" -lt 5000
api POST /_control/delay '{"ms":0}'
check "reconnected after the cut" wait_count "$GW_OUT" '^STATE ready' 3 10
wait_connected 10
sleep 0.5
gw_cmd dups
DL=$(wait_line "$GW_OUT" '^DUPS ' 3) || fail "no DUPS line"
check "none answered twice" test "$DL" = "DUPS n=0"
# A fresh batch works with answers (WRITE_BUCKET in the linux layout).
gw_cmd "calls 20 5000"
wait_line "$GW_OUT" '^CALLS sent=20 ' 8 >/dev/null
check "20 calls answered OK after reconnecting" grep -q '^CALLS sent=20 ok=20 failed=0 dup=0' "$GW_OUT"
api GET "/v3/users/u1/buckets/b1/data?device=d1&limit=1000"
check "the bucket holds the 20 rows, linux layout" \
    jq_ok '(map(select(.layout == "linux")) | length) >= 20'

# --- clean stop ---
gw_cmd stop
wait_line "$GW_OUT" '^STATE stopped' 5 "$GW_PID" >/dev/null
sleep 0.3
api GET /v3/users/u1/devices
check "after stop the device is gone from the broker" jq_ok 'map(select(.connected)) | length == 0'
check "DISCONNECT was sent" grep -q 'DISCONNECT sent' "$GW_LOG"
check "the password never appears in the gateway log" bash -c "! grep -q pw1 '$GW_LOG'"
gw_cmd quit
finish
