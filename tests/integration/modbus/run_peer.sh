#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# integ.modbus_peer: runs modbus_peer (the C test, path in $1) against sim_server.py (pymodbus),
# first over Modbus TCP on 127.0.0.1, then over Modbus RTU through a socat pseudo-terminal pair.
# Everything started here is stopped by pid on exit. Exit 77 (skipped) only when pymodbus cannot
# be imported; a missing socat is a failure (it is in scripts/packages.txt).
set -u
PEER=${1:?usage: run_peer.sh path/to/modbus_peer}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${GW_PYTHON:-/usr/bin/python3}   # Debian's interpreter: it sees python3-pymodbus
SIM="$HERE/sim_server.py"

if ! "$PY" -c 'import pymodbus.server.async_io, pymodbus.datastore' 2>/dev/null; then
    echo "SKIP: pymodbus cannot be imported by $PY"
    exit 77
fi
command -v socat >/dev/null || { echo "FAIL: socat not installed"; exit 1; }

DIR=$(mktemp -d /tmp/gw-modbus-peer.XXXXXX)
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS; do wait "$p" 2>/dev/null; done
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

# wait_ready FILE: waits up to 10 s for the simulator's READY line, prints it.
wait_ready() {
    i=0
    while [ $i -lt 100 ]; do
        if grep -q '^READY' "$1" 2>/dev/null; then
            grep '^READY' "$1"
            return 0
        fi
        i=$((i + 1))
        sleep 0.1
    done
    echo "FAIL: simulator did not start; its stderr:" >&2
    cat "$DIR"/*.err >&2
    return 1
}

rc=0

# --- Modbus TCP ---
"$PY" "$SIM" --tcp 0 --units 1,2 >"$DIR/tcp.out" 2>"$DIR/tcp.err" &
PIDS="$PIDS $!"
ready=$(wait_ready "$DIR/tcp.out") || exit 1
port=$(echo "$ready" | sed -n 's/.*modbus=\([0-9]*\).*/\1/p')
ctl=$(echo "$ready" | sed -n 's/.*control=\([0-9]*\).*/\1/p')
echo "simulator (TCP): $ready"
"$PEER" tcp "$port" "$ctl" || rc=1

# --- Modbus RTU over a pty pair ---
socat pty,raw,echo=0,link="$DIR/ttyS_sim" pty,raw,echo=0,link="$DIR/ttyS_gw" 2>"$DIR/socat.err" &
PIDS="$PIDS $!"
i=0
while [ $i -lt 50 ] && ! { [ -e "$DIR/ttyS_sim" ] && [ -e "$DIR/ttyS_gw" ]; }; do
    i=$((i + 1)); sleep 0.1
done
[ -e "$DIR/ttyS_gw" ] || { echo "FAIL: socat made no pty pair"; cat "$DIR/socat.err"; exit 1; }
"$PY" "$SIM" --rtu "$DIR/ttyS_sim" --units 1,2 >"$DIR/rtu.out" 2>"$DIR/rtu.err" &
PIDS="$PIDS $!"
ready=$(wait_ready "$DIR/rtu.out") || exit 1
ctl=$(echo "$ready" | sed -n 's/.*control=\([0-9]*\).*/\1/p')
echo "simulator (RTU): $ready"
"$PEER" rtu "$DIR/ttyS_gw" "$ctl" || rc=1

[ $rc -eq 0 ] && echo "PASS" || echo "FAIL"
exit $rc
