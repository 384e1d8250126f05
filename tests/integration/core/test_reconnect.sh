#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# integ.session_reconnect: reconnection with exponential back-off. With the broker refusing every
# connection, the gaps between attempts follow 1 s, 2 s, 4 s, 8 s, each within +-20 % (plus the
# few ms an attempt takes); once the broker accepts again the session comes back. Also: a broker
# that is not there at all (connection refused) and the connect timeout against a peer that
# accepts TCP but never answers CONNECT.
. "$(dirname "$0")/lib.sh"

make_certs
start_broker server
api POST /_control/refuse '{"on":true}'
start_gw gw --url "$(url_for tcp)" --ka 60
wait_count "$GW_OUT" '^STATE connecting' 5 20 || fail "fewer than 5 attempts in 20 s"
mapfile -t TS < <(grep '^STATE connecting' "$GW_OUT" | sed -n 's/.* t=\([0-9]*\).*/\1/p')
expect=1000
for i in 1 2 3 4; do
    gap=$((TS[i] - TS[i - 1]))
    lo=$((expect * 8 / 10))
    hi=$((expect * 12 / 10 + 150))
    echo "     gap $i: $gap ms (band $lo..$hi)"
    check "retry gap $i within the back-off band (${expect} ms +-20 %)" \
        test "$gap" -ge "$lo" -a "$gap" -le "$hi"
    expect=$((expect * 2))
done
api POST /_control/refuse '{"on":false}'
check "session ready once the broker accepts again" wait_line "$GW_OUT" '^STATE ready' 20 "$GW_PID"
check "calls work" wait_connected 5
STATS=$(gw_stats)
echo "     $STATS"
counted() { jq -e '.connect_failures >= 5 and .sessions == 1' <<<"$STATS" >/dev/null; }
check "attempts counted as connect failures" counted
gw_cmd quit
stop_broker

# Nothing listening: connection refused, retried with back-off (short band for speed).
PORT=$TCP_PORT
start_gw gw-none --url "iotmp://127.0.0.1:$PORT" --backoff-min 200 --backoff-max 400
check "refused connects are retried" wait_count "$GW_OUT" '^STATE connecting' 4 5
check "the log names the refusal" grep -q 'Connection refused' "$GW_LOG"
capped() { jq -e '.last_backoff_ms <= 480' <<<"$(gw_stats)" >/dev/null; }
check "back-off capped at backoff_max (+20 %)" capped
gw_cmd quit

# A peer that accepts TCP but never answers: the connect timeout ends the attempt.
exec 8< <(python3 -c '
import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
conns = []
while True:
    c, _ = s.accept(); conns.append(c)
' 2>/dev/null)
PIDS+=("$!")
read -r -u 8 MUTE_PORT
start_gw gw-mute --url "iotmp://127.0.0.1:$MUTE_PORT" --connect-timeout 700
check "a silent peer ends in GW_ETIMEDOUT" wait_line "$GW_OUT" '^STATE backoff .*reason=GW_ETIMEDOUT' 5 "$GW_PID"
check "the log says no answer to CONNECT" grep -q 'no answer to CONNECT' "$GW_LOG"
gw_cmd quit
finish
