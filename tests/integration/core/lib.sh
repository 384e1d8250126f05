# SPDX-License-Identifier: Apache-2.0
# Shared helpers of the uplink session integration tests (sourced by test_*.sh beside it), on top
# of ../harness.sh (temp dir, stop by pid, checks, REST calls): certificates made with the openssl
# CLI, starting iotmp-broker and gw-session-testd (the real session in gw_core with test resources)
# and reading their lines. A missing broker binary skips (exit 77).

set -u

: "${GW_BUILD_DIR:?GW_BUILD_DIR must point at the build directory}"
BROKER="$GW_BUILD_DIR/tests/broker/iotmp-broker"
TESTD="$GW_BUILD_DIR/tests/integration/core/gw-session-testd"

if [ ! -x "$BROKER" ]; then
    echo "SKIP: the test broker $BROKER is not built yet"
    exit 77
fi
[ -x "$TESTD" ] || { echo "FAIL: $TESTD is not built" >&2; exit 1; }
HARNESS_PREFIX=gw-session-test
# shellcheck source=../harness.sh
. "$(dirname "${BASH_SOURCE[0]}")/../harness.sh"
GW_PIDS=()

finish() {
    # Let every gateway exit (stdin closed) and look for sanitizer reports in their logs.
    exec 9>&- 2>/dev/null
    for pid in "${GW_PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    done
    check "no sanitizer report in the gateway logs" \
        bash -c "! grep -l -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' '$T'/gw*.log"
    report_and_exit
}

# sign NAME CA SUBJ_ALT [openssl ca dates...]: a server certificate $T/NAME.pem / NAME.key
# signed by CA ($T/CA.pem, $T/CA.key) with the given subjectAltName, through `openssl ca` so that
# start and end dates can be chosen (an expired certificate).
sign() {
    local name=$1 ca=$2 san=$3
    shift 3
    mkdir -p "$T/ca-$ca"
    : >"$T/ca-$ca/index.txt"
    [ -f "$T/ca-$ca/serial" ] || echo 1000 >"$T/ca-$ca/serial"
    cat >"$T/ca-$ca/ca.cnf" <<EOF
[ca]
default_ca = c
[c]
dir = $T/ca-$ca
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
certificate = $T/$ca.pem
private_key = $T/$ca.key
default_md = sha256
policy = p
copy_extensions = none
unique_subject = no
[p]
commonName = supplied
[ext]
subjectAltName = $san
basicConstraints = CA:FALSE
extendedKeyUsage = serverAuth
EOF
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout "$T/$name.key" \
        -out "$T/$name.csr" >/dev/null 2>&1 || fail "openssl: CSR $name"
    openssl ca -batch -notext -config "$T/ca-$ca/ca.cnf" -extensions ext -in "$T/$name.csr" \
        -out "$T/$name.pem" "$@" >/dev/null 2>"$T/openssl-$name.err" \
        || fail "openssl ca $name: $(cat "$T/openssl-$name.err")"
}

# make_ca NAME: a self-signed CA $T/NAME.pem, $T/NAME.key
make_ca() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" \
        -keyout "$T/$1.key" -out "$T/$1.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
        >/dev/null 2>&1 || fail "openssl: CA $1"
}

# make_certs: ca + server (127.0.0.1 and localhost), and the bad ones for test_tls_verify.sh.
make_certs() {
    make_ca ca
    sign server ca "IP:127.0.0.1,DNS:localhost" -days 2
}

# wait_line FILE PATTERN [SECONDS] [PID]: waits for a line matching PATTERN (extended regex) and
# prints the first one; fails when the time is up or PID exits.
wait_line() {
    local file=$1 pat=$2 secs=${3:-10} pid=${4:-}
    for _ in $(seq $((secs * 20))); do
        if grep -m1 -E "$pat" "$file" 2>/dev/null; then
            return 0
        fi
        [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# wait_count FILE PATTERN N [SECONDS]: until FILE has at least N lines matching PATTERN.
wait_count() {
    local file=$1 pat=$2 n=$3 secs=${4:-10}
    for _ in $(seq $((secs * 20))); do
        [ "$(count_lines "$file" "$pat")" -ge "$n" ] && return 0
        sleep 0.05
    done
    return 1
}

# count_lines FILE PATTERN
count_lines() {
    grep -c -E "$2" "$1" 2>/dev/null || true
}

# start_broker CERT [extra args]: broker with every port 0 and server certificate $T/CERT.pem;
# sets TCP_PORT TLS_PORT HTTP_PORT HTTPS_PORT API BROKER_PID.
start_broker() {
    local cert=$1
    shift
    [ -f "$T/credentials" ] || printf 'u1 d1 pw1\n' >"$T/credentials"
    "$BROKER" --bind 127.0.0.1 --tcp-port 0 --tls-port 0 --http-port 0 --https-port 0 \
        --cert "$T/$cert.pem" --key "$T/$cert.key" --credentials "$T/credentials" \
        --db "$T/broker-$cert.db" "$@" >"$T/broker.out" 2>"$T/broker.log" &
    BROKER_PID=$!
    PIDS+=("$BROKER_PID")
    local line
    line=$(wait_line "$T/broker.out" '^iotmp-broker ready ' 15 "$BROKER_PID") \
        || fail "broker did not print its ready line"
    read_ports "$line"
}

stop_broker() {
    kill -TERM "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
}

# url_for TRANSPORT [HOST]: the uplink URL for the running broker.
url_for() {
    local host=${2:-127.0.0.1}
    case $1 in
    tcp) echo "iotmp://$host:$TCP_PORT" ;;
    tls) echo "iotmps://$host:$TLS_PORT" ;;
    ws) echo "ws://$host:$HTTP_PORT/iotmp" ;;
    wss) echo "wss://$host:$HTTPS_PORT/iotmp" ;;
    *) fail "unknown transport $1" ;;
    esac
}

# start_gw NAME [testd args...]: starts gw-session-testd with stdin from a fifo kept open by the
# script (fd 9 for the first device). Output in $T/NAME.out, log in $T/NAME.log; GW_PID.
start_gw() {
    local name=$1
    shift
    rm -f "$T/$name.in"
    mkfifo "$T/$name.in"
    "$TESTD" --user u1 --device d1 --password pw1 "$@" <"$T/$name.in" >"$T/$name.out" \
        2>"$T/$name.log" &
    GW_PID=$!
    PIDS+=("$GW_PID")
    GW_PIDS+=("$GW_PID")
    exec 9>"$T/$name.in"
    GW_OUT="$T/$name.out"
    GW_LOG="$T/$name.log"
}

# gw_cmd LINE: sends a command to the running testd.
gw_cmd() {
    echo "$1" >&9
}

# gw_stats: prints the STATS json of the testd (a fresh one).
gw_stats() {
    local before
    before=$(count_lines "$GW_OUT" '^STATS ')
    gw_cmd stats
    for _ in $(seq 100); do
        if [ "$(count_lines "$GW_OUT" '^STATS ')" -gt "$before" ]; then
            grep '^STATS ' "$GW_OUT" | tail -1 | sed 's/^STATS //'
            return 0
        fi
        sleep 0.02
    done
    return 1
}

# gw_mark: prints the testd's monotonic clock (ms).
gw_mark() {
    local before
    before=$(count_lines "$GW_OUT" '^MARK ')
    gw_cmd mark
    for _ in $(seq 100); do
        if [ "$(count_lines "$GW_OUT" '^MARK ')" -gt "$before" ]; then
            grep '^MARK ' "$GW_OUT" | tail -1 | sed 's/^MARK t=//'
            return 0
        fi
        sleep 0.02
    done
    return 1
}

# wait_connected [SECONDS]: until the broker lists d1 as connected.
wait_connected() {
    local secs=${1:-10}
    for _ in $(seq $((secs * 20))); do
        api GET /v3/users/u1/devices
        if [ "$STATUS" = 200 ] && jq_ok 'map(select(.device=="d1" and .connected)) | length == 1'
        then
            return 0
        fi
        sleep 0.05
    done
    return 1
}
