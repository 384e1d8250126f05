# SPDX-License-Identifier: Apache-2.0
# Shared bash harness of the shell integration tests (sourced by tests/integration/<area>/lib.sh):
# a temporary folder $T (prefix from HARNESS_PREFIX), processes stopped by pid on exit (also on
# failure; PIDS), sanitizer reports in any *.log failing the test, the logs' tails printed on
# failure, check/fail/report_and_exit, REST calls with curl (api) and JSON checks with jq.
# GW_KEEP_TMP=1 keeps $T.

set -u

for tool in curl jq openssl; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done

T=$(mktemp -d "/tmp/${HARNESS_PREFIX:-gw-test}.XXXXXX")
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
    # In a -DGW_SANITIZE=ON build the programs report errors and leaks on stderr.
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
    if [ -n "${GW_KEEP_TMP:-}" ]; then echo "kept $T" >&2; else rm -rf "$T"; fi
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

report_and_exit() {
    echo "$CHECKS checks, $FAILS failed"
    [ "$FAILS" -eq 0 ] || exit 1
    exit 0
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

# ok_and FILTER: status 200 and the filter true.
ok_and() {
    status_is 200 && { jq_ok "$1" || { echo "     body: $BODY" >&2; return 1; }; }
}

# read_ports LINE: TCP_PORT TLS_PORT HTTP_PORT HTTPS_PORT from iotmp-broker's ready line.
read_ports() {
    TCP_PORT=$(sed -n 's/.* tcp=\([0-9]*\).*/\1/p' <<<"$1")
    TLS_PORT=$(sed -n 's/.* tls=\([0-9]*\).*/\1/p' <<<"$1")
    HTTP_PORT=$(sed -n 's/.* http=\([0-9]*\).*/\1/p' <<<"$1")
    HTTPS_PORT=$(sed -n 's/.* https=\([0-9]*\).*/\1/p' <<<"$1")
    API="http://127.0.0.1:$HTTP_PORT"
}
