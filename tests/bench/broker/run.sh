#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Starts iotmp-broker (ports 0, a temp credentials file for N bench devices, a temp db) and runs
# bench_broker_load against it, passing the broker's pid for its RSS. Stops the broker by pid at
# the end, also on failure.
#   tests/bench/broker/run.sh [BUILD_DIR] [extra bench_broker_load args...]
#   N=5000 CALLS=5000 tests/bench/broker/run.sh build
set -u
BUILD=${1:-${GW_BUILD_DIR:-build}}
[ $# -gt 0 ] && shift
N=${N:-1000}
CALLS=${CALLS:-2000}
BROKER="$BUILD/tests/broker/iotmp-broker"
BENCH="$BUILD/tests/bench/broker/bench_broker_load"
for f in "$BROKER" "$BENCH"; do
    [ -x "$f" ] || { echo "run.sh: $f is not built" >&2; exit 1; }
done

T=$(mktemp -d /tmp/gw-bench-broker.XXXXXX)
BROKER_PID=
cleanup() {
    if [ -n "$BROKER_PID" ]; then
        kill -TERM "$BROKER_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

{
    echo "# bench_broker_load devices"
    for i in $(seq 0 $((N - 1))); do echo "bench dev$i pw"; done
} >"$T/credentials"

# The broker needs a descriptor per device too.
ulimit -n $((N + 256)) 2>/dev/null || echo "run.sh: cannot raise the open file limit to $((N + 256))" >&2
"$BROKER" --bind 127.0.0.1 --tcp-port 0 --tls-port -1 --http-port 0 --https-port -1 \
    --credentials "$T/credentials" --db "$T/broker.db" --log-level warn \
    >"$T/broker.out" 2>"$T/broker.log" &
BROKER_PID=$!
line=
for _ in $(seq 150); do
    line=$(grep -m1 '^iotmp-broker ready ' "$T/broker.out" 2>/dev/null) && break
    kill -0 "$BROKER_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$line" ]; then
    echo "run.sh: broker did not start:" >&2
    cat "$T/broker.log" >&2
    exit 1
fi
TCP=$(sed -n 's/.* tcp=\([0-9]*\).*/\1/p' <<<"$line")
HTTP=$(sed -n 's/.* http=\([0-9]*\).*/\1/p' <<<"$line")
echo "broker pid $BROKER_PID: $line"
echo "machine: $(nproc) cores, $(uname -r)"
"$BENCH" --port "$TCP" --http-port "$HTTP" --user bench --prefix dev --password pw -n "$N" \
    --calls "$CALLS" --broker-pid "$BROKER_PID" "$@"
rc=$?
kill -0 "$BROKER_PID" 2>/dev/null || { echo "run.sh: the broker died during the run" >&2; rc=1; }
grep -c '"level":"err"' "$T/broker.log" | sed 's/^/broker error lines: /'
exit $rc
