# SPDX-License-Identifier: Apache-2.0
# Shared preamble of the end-to-end shell tests (sourced, POSIX sh): binaries, a temporary
# folder, processes stopped by pid on exit, check/wait_line helpers, the test broker on free ports
# and a gateway configuration pointing at it.
#
#   E2E_NAME=modbus; . "$HERE/../e2e.sh"   then: e2e_start_broker; e2e_gateway_config; ...
# (A variable, not an argument: POSIX sh's "." passes no arguments to the sourced file.)
# Variables it sets: PY GWD BROKER DIR PIDS FAILS, and after e2e_start_broker: tport hport.
# Processes appended to PIDS (and to EXTRA_PIDS, for ones a test restarts) are stopped at exit.
set -u
: "${GW_BUILD_DIR:?GW_BUILD_DIR must point at the build directory}"
PY=${GW_PYTHON:-/usr/bin/python3}
GWD="$GW_BUILD_DIR/gateway/daemon/iotmp-gatewayd"
BROKER="$GW_BUILD_DIR/tests/broker/iotmp-broker"
for f in "$GWD" "$BROKER"; do [ -x "$f" ] || { echo "SKIP: $f not built"; exit 77; }; done
for t in curl jq; do command -v $t >/dev/null || { echo "SKIP: $t missing"; exit 77; }; done

DIR=$(mktemp -d "/tmp/gw-${E2E_NAME:?set E2E_NAME before sourcing e2e.sh}-e2e.XXXXXX")
case $DIR in /tmp/gw-*) ;; *) echo "FAIL: no temporary folder"; exit 1 ;; esac
PIDS=""
EXTRA_PIDS=""
cleanup() {
    for p in $PIDS $EXTRA_PIDS; do kill "$p" 2>/dev/null; done
    for p in $PIDS $EXTRA_PIDS; do wait "$p" 2>/dev/null; done
    rm -rf "$DIR"
}
trap cleanup EXIT INT TERM
FAILS=0
check() { # check "what" test-command...
    what=$1; shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; FAILS=$((FAILS + 1)); fi
}
wait_line() { # wait_line FILE PATTERN: up to 10 s
    i=0
    while [ $i -lt 100 ]; do grep -q -- "$2" "$1" 2>/dev/null && return 0; i=$((i + 1)); sleep 0.1; done
    echo "FAIL: no '$2' in $1"; tail -n 30 "$DIR"/*.log; exit 1
}
free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The test broker on free ports, user alice / device gw1 / password secret1.
e2e_start_broker() {
    echo "alice gw1 secret1" >"$DIR/creds"
    "$BROKER" --tcp-port 0 --tls-port -1 --http-port 0 --credentials "$DIR/creds" \
        --db "$DIR/b.db" >"$DIR/broker.out" 2>"$DIR/broker.log" &
    PIDS="$PIDS $!"
    wait_line "$DIR/broker.out" 'ready'
    tport=$(sed -n 's/.*tcp=\([0-9]*\).*/\1/p' "$DIR/broker.out")
    hport=$(sed -n 's/.*http=\([0-9]*\).*/\1/p' "$DIR/broker.out")
}

# gateway.json for that broker, with $DIR/adapters.d for the test's adapter files.
e2e_gateway_config() {
    mkdir -p "$DIR/adapters.d"
    printf 'secret1\n' >"$DIR/secret"
    chmod 600 "$DIR/secret"
    cat >"$DIR/gateway.json" <<JSON
{"uplink": {"url": "iotmp://127.0.0.1:$tport", "user": "alice", "device": "gw1",
            "password_file": "$DIR/secret"},
 "store": {"path": "$DIR/store.db"},
 "adapters_dir": "$DIR/adapters.d"}
JSON
}
