#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# End to end inside the gpio-sim VM (copied to /test/run by gpio_vm.sh --e2e; busybox sh): the
# test broker and iotmp-gatewayd with a GPIO adapter file, driven only through the broker's REST
# API with curl, checked against gpio-sim's sysfs. Output writes and read-back, input levels
# following sysfs pulls, an event stream of edges, DESCRIBE, errors (write to an input, a missing
# chip) and a clean stop that applies the safe value. TAP output; exit code = failures.
# Needs $GW_GPIO_SIM_CHIP (the chip made by /init: label gw-sim, line 0 "relay1", line 6 "door").
T=/tmp/e2e
mkdir -p $T/adapters.d
SYS=/sys/bus/gpio/devices/$GW_GPIO_SIM_CHIP
n=0
fails=0
check() {
    desc=$1
    shift
    n=$((n + 1))
    if "$@"; then echo "ok $n - $desc"; else echo "not ok $n - $desc"; fails=$((fails + 1)); fi
}
has() { case "$1" in *"$2"*) return 0 ;; *) return 1 ;; esac; }
is() { [ "$1" = "$2" ]; }

ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up

echo "u gw secret" > $T/creds
echo secret > $T/pw
chmod 600 $T/pw
/test/iotmp-broker --bind 127.0.0.1 --tcp-port 0 --tls-port -1 --http-port 0 \
    --credentials $T/creds --db $T/broker.db > $T/broker.out 2> $T/broker.log &
BP=$!
i=0
while ! grep -q ready $T/broker.out 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
TCP=$(sed -n 's/.*tcp=\([0-9]*\).*/\1/p' $T/broker.out)
HTTP=$(sed -n 's/.*http=\([0-9]*\).*/\1/p' $T/broker.out)
check "broker ready (tcp $TCP, http $HTTP)" [ -n "$TCP" ]

cat > $T/gateway.json <<EOF
{"uplink": {"url": "iotmp://127.0.0.1:$TCP", "user": "u", "device": "gw", "password_file": "$T/pw"},
 "store": {"path": "$T/store.db"}, "adapters_dir": "$T/adapters.d", "logging": {"level": "info"}}
EOF
cat > $T/adapters.d/e2e.json <<'EOF'
{"type": "gpio", "name": "e2e", "chip": "gw-sim", "lines": [
  {"name": "relay", "line": "relay1", "direction": "output", "initial": false, "safe": false},
  {"name": "door", "offset": 6, "direction": "input", "bias": "pull-up", "active_low": true,
   "debounce_ms": 10},
  {"name": "ghost", "chip": "no-such-chip", "offset": 1, "direction": "input"}]}
EOF
/test/iotmp-gatewayd -c $T/gateway.json --schema-dir /schema > $T/daemon.log 2>&1 &
DP=$!

U=http://127.0.0.1:$HTTP/v3/users/u/devices
i=0
while ! curl -s $U 2>/dev/null | grep -q '"connected":true' && [ $i -lt 100 ]; do
    sleep 0.1; i=$((i + 1))
done
check "daemon connected to the broker" has "$(curl -s $U)" '"device":"gw"'
R=$U/gw/resources

# Outputs: REST write, answer read back, simulator sysfs value.
out=$(curl -s -X POST -H 'Content-Type: application/json' -d true $R/e2e/relay)
check "POST true to e2e/relay answers true ($out)" is "$out" "true"
check "relay: simulator value 1" is "$(cat $SYS/sim_gpio0/value)" "1"
out=$(curl -s -X POST -H 'Content-Type: application/json' -d false $R/e2e/relay)
check "POST false answers false ($out)" is "$out" "false"
check "relay: simulator value 0" is "$(cat $SYS/sim_gpio0/value)" "0"
out=$(curl -s $R/e2e/relay)
check "GET e2e/relay reads false ($out)" is "$out" "false"

# Inputs following the simulator's pull.
out=$(curl -s $R/e2e/door)
check "GET e2e/door (pull-up, active-low) reads false ($out)" is "$out" "false"
out=$(curl -s -X POST "$R/e2e/door/stream")
stream=$(echo "$out" | sed -n 's/.*"stream": *\([0-9]*\).*/\1/p')
check "event stream on e2e/door opened ($out)" [ -n "$stream" ]
echo pull-down > $SYS/sim_gpio6/pull
sleep 0.3
out=$(curl -s $R/e2e/door)
check "after sysfs pull-down e2e/door reads true ($out)" is "$out" "true"
echo pull-up > $SYS/sim_gpio6/pull
samples=$(curl -s "$U/gw/streams/$stream?after=0&wait=3000")
i=0
while ! has "$samples" '"data":false' && [ $i -lt 30 ]; do
    sleep 0.1; i=$((i + 1)); samples=$(curl -s "$U/gw/streams/$stream?after=0&wait=3000")
done
echo "# stream samples: $samples"
check "the stream carried the edges (true, then false)" \
    has "$(echo "$samples" | tr -d ' ')" '"data":true}'
check "... and the falling edge" has "$(echo "$samples" | tr -d ' ')" '"data":false}'

# DESCRIBE and errors.
api=$(curl -s $U/gw/api)
check "DESCRIBE lists e2e/relay, e2e/door/count" has "$api" '"e2e/door/count"'
one=$(curl -s $R/e2e/relay/api)
check "DESCRIBE one: source names the line ($one)" has "$one" "line 'relay1' output"
out=$(curl -s -w ' %{http_code}' -X POST -H 'Content-Type: application/json' -d true $R/e2e/door)
check "write to an input refused: $out" has "$out" "is an input line; it cannot be written"
out=$(curl -s -w ' %{http_code}' $R/e2e/ghost)
check "missing chip: $out" has "$out" "GPIO chip 'no-such-chip' not found"
out=$(curl -s $R/e2e/relay)
check "the other lines still answer ($out)" is "$out" "false"

# Stop: safe value applied (logged by the adapter), clean exit.
curl -s -X POST -H 'Content-Type: application/json' -d true $R/e2e/relay > /dev/null
check "relay on before stop" is "$(cat $SYS/sim_gpio0/value)" "1"
kill -TERM $DP
wait $DP
rc=$?
check "daemon stopped cleanly on SIGTERM (exit $rc)" [ $rc -eq 0 ]
check "the adapter applied the relay's safe value on stop" grep -q "relay: safe value 0 applied" $T/daemon.log
kill -TERM $BP
wait $BP
if [ $fails -ne 0 ]; then
    echo "# daemon log:"; sed 's/^/#   /' $T/daemon.log | tail -n 30
    echo "# broker stdout and log:"; sed 's/^/#   /' $T/broker.out $T/broker.log | tail -n 30
fi
echo "1..$n"
exit $fails
