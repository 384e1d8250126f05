#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# MQTT end-to-end benchmark: messages/s from mosquitto_pub through the adapter inside
# iotmp-gatewayd to an IOTMP event stream on iotmp-broker (counted with the REST long-poll), and
# the daemon's RSS before and after 10,000 new topics became resources. Prints figures only.
# Usage: GW_BUILD_DIR=build bench_e2e.sh [messages] (default 50000). Stops what it started by pid.
set -u
: "${GW_BUILD_DIR:?GW_BUILD_DIR must point at the build directory}"
N=${1:-50000}
PY=${GW_PYTHON:-/usr/bin/python3}
GWD="$GW_BUILD_DIR/gateway/daemon/iotmp-gatewayd"
BROKER="$GW_BUILD_DIR/tests/broker/iotmp-broker"
for f in "$GWD" "$BROKER"; do [ -x "$f" ] || { echo "SKIP: $f not built"; exit 77; }; done
DIR=$(mktemp -d /tmp/gw-mqtt-bench.XXXXXX)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
wait_line() {
    i=0
    while [ $i -lt 100 ]; do grep -q -- "$2" "$1" 2>/dev/null && return 0; i=$((i + 1)); sleep 0.1; done
    echo "no '$2' in $1"; exit 1
}
now_ms() { date +%s%3N; }
rss_kb() { sed -n 's/^VmRSS:[^0-9]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }

mport=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nlog_dest stderr\nlog_type error\nlog_type subscribe\nuser root\n' \
    "$mport" >"$DIR/mosquitto.conf"
mosquitto -c "$DIR/mosquitto.conf" >"$DIR/mosquitto.log" 2>&1 &
PIDS="$PIDS $!"
echo "alice gw1 secret1" >"$DIR/creds"
"$BROKER" --tcp-port 0 --tls-port -1 --http-port 0 --credentials "$DIR/creds" --db "$DIR/b.db" \
    --log-level warn >"$DIR/broker.out" 2>"$DIR/broker.log" &
PIDS="$PIDS $!"
wait_line "$DIR/broker.out" 'ready'
tport=$(sed -n 's/.*tcp=\([0-9]*\).*/\1/p' "$DIR/broker.out")
hport=$(sed -n 's/.*http=\([0-9]*\).*/\1/p' "$DIR/broker.out")
mkdir -p "$DIR/adapters.d"
printf 'secret1\n' >"$DIR/secret"
chmod 600 "$DIR/secret"
cat >"$DIR/gateway.json" <<JSON
{"uplink": {"url": "iotmp://127.0.0.1:$tport", "user": "alice", "device": "gw1",
            "password_file": "$DIR/secret"},
 "store": {"path": "$DIR/store.db"}, "adapters_dir": "$DIR/adapters.d", "logging": {"level": "warn"}}
JSON
cat >"$DIR/adapters.d/bench.json" <<JSON
{"type": "mqtt", "name": "bench", "broker": {"host": "127.0.0.1", "port": $mport, "client_id": "gw-bench"},
 "max_topics": 20000,
 "mappings": [{"name": "counter", "subscribe": "bench/counter", "as": "integer", "publish": "every"},
              {"name": "t/{2}", "subscribe": "topics/+", "as": "number"}]}
JSON
"$GWD" -c "$DIR/gateway.json" >"$DIR/gw.out" 2>"$DIR/gw.log" &
GWPID=$!
PIDS="$PIDS $GWPID"
wait_line "$DIR/mosquitto.log" "gw-bench 0 topics/+"
API="http://127.0.0.1:$hport/v3/users/alice/devices/gw1"
i=0
until curl -sf "$API/api" | grep -q bench/counter; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "gateway not connected"; cat "$DIR/gw.log"; exit 1; }
    sleep 0.1
done

sid=$(curl -sf -X POST "$API/resources/bench/counter/stream" | jq -r .stream)
seq 1 "$N" >"$DIR/values"
t0=$(now_ms)
mosquitto_pub -h 127.0.0.1 -p "$mport" -t bench/counter -l <"$DIR/values"
tpub=$(now_ms)
after=0
last=0
while [ "$last" != "$N" ] && [ $(( $(now_ms) - t0 )) -lt 60000 ]; do
    s=$(curl -sf "$API/streams/$sid?after=$after&wait=1000") || break
    n=$(echo "$s" | jq -r '.next')
    [ "$n" != null ] && after=$n
    l=$(echo "$s" | jq -r '.samples[-1].data // empty')
    [ -n "$l" ] && last=$l
done
t1=$(now_ms)
echo "mosquitto_pub sent $N messages in $((tpub - t0)) ms"
echo "e2e: last value $last reached the broker stream after $((t1 - t0)) ms: $((N * 1000 / (t1 - t0 + 1))) msg/s; stream samples delivered: $after of $N (the session coalesces samples beyond its send queue)"

r0=$(rss_kb $GWPID)
"$PY" - "$mport" <<'PYEOF'
# A minimal MQTT 3.1.1 publisher (QoS 0): 10,000 distinct topics
import socket, sys
def rl(n):
    out = b""
    while True:
        d = n % 128; n //= 128
        out += bytes([d | (0x80 if n else 0)])
        if not n: return out
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
cid = b"bench-topics"
vh = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
s.sendall(b"\x10" + rl(len(vh)) + vh)
s.recv(4)
buf = b""
for i in range(10000):
    t = b"topics/d%d" % i
    body = len(t).to_bytes(2, "big") + t + b"1.5"
    buf += b"\x30" + rl(len(body)) + body
s.sendall(buf + b"\xe0\x00")
s.close()
PYEOF
i=0
until [ "$(curl -sf "$API/resources/bench/_stats" | jq .topics)" = 10000 ] || [ $i -gt 300 ]; do
    i=$((i + 1)); sleep 0.1
done
r1=$(rss_kb $GWPID)
echo "daemon RSS: $r0 kB before, $r1 kB with 10,000 topic resources (+$((r1 - r0)) kB); stats: $(curl -sf "$API/resources/bench/_stats" | jq -c '{topics,messages,topics_over_limit}')"
