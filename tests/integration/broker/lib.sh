# SPDX-License-Identifier: Apache-2.0
# Shared helpers of the broker integration tests (sourced by the test_*.sh scripts beside it):
# temp dir, test CA and server certificate, starting iotmp-broker and iotmp-testdev and reading
# their ready lines, stopping everything by pid on exit (also on failure), REST calls with curl and
# JSON checks with jq. A missing broker binary skips the test (exit 77).

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
for tool in curl jq openssl; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done

T=$(mktemp -d /tmp/gw-broker-test.XXXXXX)
PIDS=()
FAILS=0
CHECKS=0

cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        # Give each process 5 s to stop cleanly, then kill it.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    # In a -DGW_SANITIZE=ON build the broker and the devices report errors and leaks on stderr.
    if grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$T"/*.log 2>/dev/null; then
        echo "FAIL: sanitizer report in the file(s) above" >&2
        [ "$rc" -eq 0 ] && rc=1
    fi
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then
        for f in "$T"/*.log "$T"/*.out; do
            [ -f "$f" ] || continue
            echo "----- $(basename "$f") (last 40 lines) -----" >&2
            tail -n 40 "$f" >&2
        done
    fi
    rm -rf "$T"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# check "description" command...: runs the command, counts a failure (and goes on) if it fails.
check() {
    local what=$1
    shift
    CHECKS=$((CHECKS + 1))
    if "$@"; then
        echo "ok   $what"
    else
        echo "FAIL $what" >&2
        FAILS=$((FAILS + 1))
    fi
}

finish() {
    echo "$CHECKS checks, $FAILS failed"
    [ "$FAILS" -eq 0 ] || exit 1
    exit 0
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
    TCP_PORT=$(sed -n 's/.* tcp=\([0-9]*\).*/\1/p' <<<"$line")
    TLS_PORT=$(sed -n 's/.* tls=\([0-9]*\).*/\1/p' <<<"$line")
    HTTP_PORT=$(sed -n 's/.* http=\([0-9]*\).*/\1/p' <<<"$line")
    HTTPS_PORT=$(sed -n 's/.* https=\([0-9]*\).*/\1/p' <<<"$line")
    [ -n "$HTTP_PORT" ] && [ "$HTTP_PORT" != 0 ] || fail "no http port in \"$line\""
    API="http://127.0.0.1:$HTTP_PORT"
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

# api METHOD PATH [JSON BODY]: sets STATUS and BODY (curl gives up after 30 s).
api() {
    local method=$1 path=$2
    local args=(-s -S -m 30 -o "$T/body" -w '%{http_code}' -X "$method")
    if [ $# -ge 3 ]; then
        args+=(-H 'Content-Type: application/json' --data-binary "$3")
    fi
    STATUS=$(curl "${args[@]}" "$API$path" 2>"$T/curl.err") || STATUS="curl-failed"
    BODY=$(cat "$T/body" 2>/dev/null)
}

# jq_ok FILTER: true when FILTER applied to BODY yields true.
jq_ok() {
    [ "$(jq -c "$1" <<<"$BODY" 2>/dev/null)" = "true" ]
}

# status_is CODE
status_is() {
    [ "$STATUS" = "$1" ] || { echo "     status $STATUS, body: $BODY" >&2; return 1; }
}

# body_is FILTER: status 200 and the filter true.
ok_and() {
    status_is 200 && { jq_ok "$1" || { echo "     body: $BODY" >&2; return 1; }; }
}
