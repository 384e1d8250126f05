#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# integ.fast_modbus_server: starts bench_fast_modbus_server on a free port, runs
# `bench_modbus_floor check` against it (libmodbus client: FC 1/2/3/4/5/6/15/16, the value formula,
# exception 2, three pipelined requests with the last one split), asks for the stats file with
# SIGUSR1 and checks that it parses and counted the requests; stops the server by pid.
B="$GW_BUILD_DIR/tests/bench/modbus"
[ -x "$B/bench_fast_modbus_server" ] && [ -x "$B/bench_modbus_floor" ] || { echo "SKIP: not built"; exit 77; }
DIR=$(mktemp -d)
"$B/bench_fast_modbus_server" --port 0 --stats-file "$DIR/stats.json" >"$DIR/out" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
i=0
until grep -q '^ready ' "$DIR/out"; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "FAIL: server did not start"; exit 1; }
    sleep 0.05
done
port=$(sed -n 's/^ready //p' "$DIR/out")
"$B/bench_modbus_floor" check "$port" || exit 1
kill -USR1 $PID
i=0
until [ -s "$DIR/stats.json" ]; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "FAIL: no stats file"; exit 1; }
    sleep 0.05
done
/usr/bin/python3 - "$DIR/stats.json" <<'PY' || exit 1
import json, sys
s = json.load(open(sys.argv[1]))
assert s["requests"] >= 20, s["requests"]
assert s["units"]["9"]["requests"] >= 8, s["units"]["9"]
assert len(s["connections"]) == 2, s["connections"]
print("stats ok:", s["requests"], "requests,", len(s["units"]), "units")
PY
echo PASS
