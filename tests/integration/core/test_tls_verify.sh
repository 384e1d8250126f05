#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# integ.session_tls_verify: peer verification of the TLS (iotmps://) and WSS transports. A server
# certificate for another host name, one from an unknown CA and an expired one each refuse the
# session by default, with a log line naming the reason; the right CA connects; insecure: true
# connects to the unknown CA but logs a warning.
. "$(dirname "$0")/lib.sh"

make_ca ca
make_ca other
sign server ca "IP:127.0.0.1,DNS:localhost" -days 2
sign wronghost ca "DNS:wrong.example,IP:10.9.9.9" -days 2
sign unknownca other "IP:127.0.0.1,DNS:localhost" -days 2
sign expired ca "IP:127.0.0.1,DNS:localhost" -startdate 20200101000000Z -enddate 20200201000000Z

# refused CERT TRANSPORT "log pattern" "what"
refused() {
    local cert=$1 tr=$2 pat=$3 what=$4
    start_broker "$cert"
    start_gw "gw-$cert-$tr" --url "$(url_for "$tr")" --ca "$T/ca.pem" --connect-timeout 4000
    if wait_line "$GW_OUT" '^STATE (backoff|ready)' 8 "$GW_PID" >/dev/null; then
        check "$what ($tr): session refused with GW_ETLS_VERIFY" \
            grep -q -E '^STATE backoff .*reason=GW_ETLS_VERIFY' "$GW_OUT"
        check "$what ($tr): log names the reason" grep -q -i -E "certificate refused: .*$pat" "$GW_LOG"
        grep -m1 'certificate refused' "$GW_LOG" | sed 's/^/     /'
    else
        check "$what ($tr): the session ended in time" false
    fi
    api GET /v3/users/u1/devices
    check "$what ($tr): the broker never saw the device" jq_ok 'length == 0'
    gw_cmd quit
    stop_broker
}

refused wronghost tls "mismatch" "wrong host name"
refused unknownca tls "local issuer|self.signed" "unknown CA"
refused expired tls "expired" "expired certificate"
refused wronghost wss "." "wrong host name"
refused unknownca wss "." "unknown CA"
refused expired wss "expired" "expired certificate"

# The right CA connects (TLS and WSS), verified.
start_broker server
for tr in tls wss; do
    start_gw "gw-ok-$tr" --url "$(url_for "$tr")" --ca "$T/ca.pem"
    check "right CA ($tr): session ready" wait_line "$GW_OUT" '^STATE ready' 8 "$GW_PID"
    check "right CA ($tr): peer verified" grep -q 'peer verified' "$GW_LOG"
    gw_cmd quit
    wait "$GW_PID" 2>/dev/null
done
stop_broker

# insecure: true connects to an unknown CA, with a warning at every connect.
start_broker unknownca
start_gw gw-insecure --url "$(url_for tls)" --insecure
check "insecure: session ready with an unknown CA" wait_line "$GW_OUT" '^STATE ready' 8 "$GW_PID"
check "insecure: warning logged" grep -q 'certificate verification is OFF' "$GW_LOG"
gw_cmd quit
stop_broker
finish
