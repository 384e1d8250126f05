#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# integ.modbus_adapter: runs modbus_adapter_test (path in $1), the Modbus adapter driven through the
# registry, against sim_server.py (pymodbus): first Modbus TCP (the test starts, kills and restarts
# the simulator itself), then Modbus RTU through a socat pty pair and crc_shim.py, which corrupts
# replies on request. Everything started here is stopped by pid on exit. Exit 77 (skipped) only
# when pymodbus cannot be imported.
set -u
TEST=${1:?usage: run_adapter.sh path/to/modbus_adapter_test}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${GW_PYTHON:-/usr/bin/python3}
SIM="$HERE/sim_server.py"

if ! "$PY" -c 'import pymodbus.server.async_io, pymodbus.datastore' 2>/dev/null; then
    echo "SKIP: pymodbus cannot be imported by $PY"
    exit 77
fi
command -v socat >/dev/null || { echo "FAIL: socat not installed"; exit 1; }

DIR=$(mktemp -d /tmp/gw-modbus-adapter.XXXXXX)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

wait_for() { # wait_for FILE PATTERN: up to 10 s
    i=0
    while [ $i -lt 100 ]; do
        grep -q "$2" "$1" 2>/dev/null && return 0
        i=$((i + 1)); sleep 0.1
    done
    echo "FAIL: no '$2' in $1"; cat "$DIR"/*.err >&2
    return 1
}

rc=0
echo "--- Modbus TCP"
"$TEST" tcp "$PY" "$SIM" || rc=1

echo "--- Modbus RTU (socat pty pair + CRC shim)"
socat pty,raw,echo=0,link="$DIR/ttyS_sim" pty,raw,echo=0,link="$DIR/ttyS_shim" 2>"$DIR/socat.err" &
PIDS="$PIDS $!"
i=0
while [ $i -lt 50 ] && ! { [ -e "$DIR/ttyS_sim" ] && [ -e "$DIR/ttyS_shim" ]; }; do
    i=$((i + 1)); sleep 0.1
done
"$PY" "$SIM" --rtu "$DIR/ttyS_sim" --units 1 >"$DIR/rtu.out" 2>"$DIR/rtu.err" &
PIDS="$PIDS $!"
wait_for "$DIR/rtu.out" '^READY' || exit 1
ctl=$(sed -n 's/.*control=\([0-9]*\).*/\1/p' "$DIR/rtu.out")
"$PY" "$HERE/crc_shim.py" "$DIR/ttyS_shim" "$DIR/ttyS_gw" "$DIR/shim.ctl" >"$DIR/shim.out" 2>"$DIR/shim.err" &
PIDS="$PIDS $!"
wait_for "$DIR/shim.out" '^READY' || exit 1
"$TEST" rtu "$DIR/ttyS_gw" "$ctl" "$DIR/shim.ctl" || rc=1
echo "shim: $(grep -c corrupted "$DIR/shim.out") replies corrupted"

[ $rc -eq 0 ] && echo "PASS" || echo "FAIL"
exit $rc
