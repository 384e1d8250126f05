#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# integ.session_auth: the CONNECT answers of PROTOCOL.md 14.2 / 14.13 against iotmp-broker. Bad
# credentials (ERROR 2): a clear log line and the long back-off (no retry storm). Redirect (ERROR
# 1): followed over verified TLS to an iotmps:// target, ignored over plain TCP.
. "$(dirname "$0")/lib.sh"

make_certs
start_broker server

# --- bad credentials ---
start_gw gw-badpw --url "$(url_for tcp)" --password wrong
# (--password given twice: the last one wins)
check "bad credentials end in GW_EAUTH" \
    wait_line "$GW_OUT" '^STATE backoff .*reason=GW_EAUTH' 5 "$GW_PID"
check "clear log line" grep -q 'refused the credentials of device "d1" (user "u1"): bad credentials' "$GW_LOG"
check "the password is not logged" bash -c "! grep -q -e wrong -e pw1 '$GW_LOG'"
sleep 1.5
STATS=$(gw_stats)
echo "     $STATS"
long_backoff() {
    jq -e '.auth_failures == 1 and .connects == 1 and .last_backoff_ms >= 240000' \
        <<<"$STATS" >/dev/null
}
check "long back-off after bad credentials (no retry within 1.5 s, delay >= 240 s)" long_backoff
gw_cmd quit

# --- redirect over verified TLS: followed ---
api POST /_control/redirect "{\"user\":\"u1\",\"device\":\"d1\",\"uri\":\"iotmps://127.0.0.1:$TLS_PORT\"}"
check "redirect armed" status_is 200
start_gw gw-redir --url "$(url_for tls)" --ca "$T/ca.pem"
check "redirect answered with GW_EREDIRECT" \
    wait_line "$GW_OUT" '^STATE backoff .*reason=GW_EREDIRECT' 5 "$GW_PID"
check "redirect followed: session ready" wait_line "$GW_OUT" '^STATE ready' 5 "$GW_PID"
check "redirect logged with its target" \
    grep -q "redirected the session to iotmps://127.0.0.1:$TLS_PORT (1 of at most 3" "$GW_LOG"
redirected_once() { jq -e '.redirects == 1 and .sessions == 1' <<<"$(gw_stats)" >/dev/null; }
check "one redirect counted" redirected_once
gw_cmd quit

# --- redirect over plain TCP: not followed ---
api POST /_control/redirect "{\"user\":\"u1\",\"device\":\"d1\",\"uri\":\"iotmps://127.0.0.1:$TLS_PORT\"}"
start_gw gw-redir-tcp --url "$(url_for tcp)" --backoff-min 300
check "redirect over TCP refused (GW_EREDIRECT)" \
    wait_line "$GW_OUT" '^STATE backoff .*reason=GW_EREDIRECT' 5 "$GW_PID"
check "the log says why it was ignored" \
    grep -q 'ignored, redirects are followed only over verified TLS' "$GW_LOG"
check "the next normal attempt connects to the configured server" \
    wait_line "$GW_OUT" '^STATE ready' 5 "$GW_PID"
not_followed() { jq -e '.redirects == 0' <<<"$(gw_stats)" >/dev/null; }
check "no redirect followed" not_followed
gw_cmd quit
finish
