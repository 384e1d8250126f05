# SPDX-License-Identifier: Apache-2.0
# Shared helpers of the broker integration tests (sourced by the test_*.sh scripts beside it), on
# top of ../harness.sh (temp dir, stop by pid, checks, REST calls): test CA and server certificate,
# starting iotmp-broker and iotmp-testdev and reading their ready lines. A missing broker binary
# skips the test (exit 77).

set -u

: "${GW_BUILD_DIR:?GW_BUILD_DIR must point at the build directory}"
BROKER="$GW_BUILD_DIR/tests/broker/iotmp-broker"
TESTDEV="$GW_BUILD_DIR/tests/device/iotmp-testdev"

if [ ! -x "$BROKER" ]; then
    echo "SKIP: $BROKER is not built"
    exit 77
fi
if [ ! -x "$TESTDEV" ]; then
    echo "FAIL: $TESTDEV is not built" >&2
    exit 1
fi
HARNESS_PREFIX=gw-broker-test
# shellcheck source=../harness.sh
. "$(dirname "${BASH_SOURCE[0]}")/../harness.sh"

finish() {
    report_and_exit
}

# make_certs: test CA ($T/ca.pem) and a server certificate for 127.0.0.1 only ($T/server.pem,
# $T/server.key), plus an unrelated CA ($T/other-ca.pem) for the negative check.
make_certs() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=gw test CA" \
        -keyout "$T/ca.key" -out "$T/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
        >/dev/null 2>&1 || fail "openssl: test CA"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$T/server.key" -out "$T/server.csr" >/dev/null 2>&1 || fail "openssl: CSR"
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
        >"$T/server.ext"
    openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
        -days 2 -extfile "$T/server.ext" -out "$T/server.pem" >/dev/null 2>&1 \
        || fail "openssl: server certificate"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other CA" \
        -keyout "$T/other-ca.key" -out "$T/other-ca.pem" >/dev/null 2>&1 || fail "openssl: other CA"
}

# wait_line FILE PATTERN PID [SECONDS]: waits until FILE has a line matching PATTERN; fails if PID
# exits first. Prints the line.
wait_line() {
    local file=$1 pat=$2 pid=$3 secs=${4:-10}
    for _ in $(seq $((secs * 10))); do
        if grep -m1 -E "$pat" "$file" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# start_broker [extra args]: starts the broker with every port 0 and sets TCP_PORT, TLS_PORT,
# HTTP_PORT, HTTPS_PORT, BROKER_PID and API.
start_broker() {
    "$BROKER" --bind 127.0.0.1 --tcp-port 0 --tls-port 0 --http-port 0 --https-port 0 \
        --cert "$T/server.pem" --key "$T/server.key" --credentials "$T/credentials" \
        --db "$T/broker.db" "$@" >"$T/broker.out" 2>"$T/broker.log" &
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    local line
    line=$(wait_line "$T/broker.out" '^iotmp-broker ready ' "$BROKER_PID" 15) \
        || fail "broker did not print its ready line"
    read_ports "$line"
    [ -n "$HTTP_PORT" ] && [ "$HTTP_PORT" != 0 ] || fail "no http port in \"$line\""
    echo "broker pid $BROKER_PID: $line"
}

# url_for TRANSPORT: the device URL for the running broker.
url_for() {
    case $1 in
    tcp) echo "tcp://127.0.0.1:$TCP_PORT" ;;
    tls) echo "tls://127.0.0.1:$TLS_PORT" ;;
    ws) echo "ws://127.0.0.1:$HTTP_PORT/iotmp" ;;
    wss) echo "wss://127.0.0.1:$HTTPS_PORT/iotmp" ;;
    *) fail "unknown transport $1" ;;
    esac
}

# start_device NAME TRANSPORT USER PASSWORD [extra args]: starts iotmp-testdev, waits for its
# ready line, sets DEV_PID (and DEV_PIDS[NAME]).
declare -A DEV_PIDS
start_device() {
    local name=$1 tr=$2 user=$3 pass=$4
    shift 4
    # Empty the output files first: the child truncates them only when it starts, and a ready
    # line left by an earlier device of the same name must not be taken for this one's.
    : >"$T/dev-$name.out"
    : >"$T/dev-$name.log"
    "$TESTDEV" --url "$(url_for "$tr")" --user "$user" --device "$name" --password "$pass" \
        --ca "$T/ca.pem" "$@" >"$T/dev-$name.out" 2>"$T/dev-$name.log" &
    DEV_PID=$!
    PIDS+=("$DEV_PID")
    DEV_PIDS[$name]=$DEV_PID
    wait_line "$T/dev-$name.out" '^iotmp-testdev ready ' "$DEV_PID" 15 >/dev/null \
        || fail "device $name ($tr) did not connect: $(cat "$T/dev-$name.log")"
}
