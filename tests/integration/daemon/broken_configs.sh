#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Broken configurations (tests/data/daemon/broken/<case>/): for each case,
#  1. `iotmp-gatewayd validate` prints exactly expected.out (file:line:col: /pointer: message; a line
#     ending in "..." matches by prefix) and exits with expected.exit (1 invalid, 2 unreadable);
#  2. the daemon itself refuses to start with the same exit status, within 10 s, and nothing was
#     half-started: no "started" line and no adapter start line in its output.
set -u
build=${GW_BUILD_DIR:?}
src=${GW_SOURCE_DIR:?}
D=$build/gateway/daemon/iotmp-gatewayd
schema=$src/schema
pass=0
fail=0
for dir in "$src"/tests/data/daemon/broken/*/; do
    case_name=$(basename "$dir")
    want_exit=$(cat "$dir/expected.exit")
    out=$(cd "$dir" && "$D" validate --schema-dir "$schema" -c gateway.json 2>&1)
    got_exit=$?
    ok=1
    if [ "$got_exit" != "$want_exit" ]; then
        echo "FAIL $case_name: validate exit $got_exit, want $want_exit"
        ok=0
    fi
    # Compare line by line ("..." at the end of an expected line = prefix match).
    mapfile -t want_lines <"$dir/expected.out"
    mapfile -t got_lines <<<"$out"
    if [ "${#want_lines[@]}" != "${#got_lines[@]}" ]; then
        echo "FAIL $case_name: ${#got_lines[@]} output lines, want ${#want_lines[@]}"
        ok=0
    else
        for i in "${!want_lines[@]}"; do
            w=${want_lines[$i]}
            g=${got_lines[$i]}
            if [[ "$w" == *... ]]; then
                [[ "$g" == "${w%...}"* ]] || { echo "FAIL $case_name: line $((i+1)): got: $g"; echo "   want prefix: ${w%...}"; ok=0; }
            elif [ "$g" != "$w" ]; then
                echo "FAIL $case_name: line $((i+1)):"
                echo "   got:  $g"
                echo "   want: $w"
                ok=0
            fi
        done
    fi
    # The daemon must refuse to start on the same problems.
    run_out=$(cd "$dir" && timeout 10 "$D" --schema-dir "$schema" -c gateway.json 2>&1)
    run_exit=$?
    if [ "$run_exit" != "$want_exit" ]; then
        echo "FAIL $case_name: daemon exit $run_exit, want $want_exit"
        echo "$run_out" | head -5
        ok=0
    fi
    if grep -qE 'iotmp-gatewayd [0-9.]+ started|simulated point' <<<"$run_out"; then
        echo "FAIL $case_name: something started:"
        grep -E 'iotmp-gatewayd [0-9.]+ started|simulated point' <<<"$run_out"
        ok=0
    fi
    if ((ok)); then pass=$((pass + 1)); else fail=$((fail + 1)); fi
done
# A single adapter file gets the adapter's own checks too, not only its schema.
single=$src/tests/data/daemon/broken/13-duplicate-point-names/adapters.d/x.json
out=$("$D" validate --schema-dir "$schema" "$single" 2>&1)
if [ $? = 1 ] && grep -q 'point name "relay" is used twice' <<<"$out"; then
    pass=$((pass + 1))
else
    echo "FAIL validate FILE: the adapter's own checks did not run: $out"
    fail=$((fail + 1))
fi
echo "broken configs: $pass passed, $fail failed"
((fail == 0 && pass >= 20))
