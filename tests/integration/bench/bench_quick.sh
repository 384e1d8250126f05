#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# integ.bench_quick: `scripts/bench --quick` (release build in build-release/, every benchmark run
# once, briefly), then checks what it left, never a timing:
#   - every benchmark ran and succeeded (out/runs.tsv), the daemon-level runners too when they are
#     in the tree, and each printed figures;
#   - the plot data each plot needs is there with numeric rows (TSV, header first);
#   - every plot was drawn: a PNG file, not empty;
#   - REPORT.md has the summary table, links every PNG and holds every benchmark's raw output.
# The report goes to a temporary folder, not into the source tree; it is removed when every check
# passes and kept (its path printed) when one fails.
set -u
src=${GW_SOURCE_DIR:?}
out=$(mktemp -d /tmp/gw-bench.XXXXXX)
cd "$src" || exit 1
GW_BENCH_OUT="$out" scripts/bench --quick </dev/null
status=$?

fails=0
check() { # check CONDITION-STATUS WHAT
    if [ "$1" -eq 0 ]; then
        echo "ok   $2"
    else
        echo "FAIL $2"
        fails=$((fails + 1))
    fi
}
check $status "scripts/bench --quick exited 0"

benches="codec store store_drain session broker_load modbus_planner modbus_adapter mqtt rss_timeline"
[ -x tests/bench/daemon/run_sweep.sh ] && benches="$benches modbus_sweep"
[ -x tests/bench/daemon/run_targets.sh ] && benches="$benches daemon_targets"
[ -x tests/bench/scale/run_scale.sh ] && benches="$benches scale"
for b in $benches; do
    grep -q "^$b	ok	0	" "$out/out/runs.tsv" 2>/dev/null
    check $? "benchmark $b ran and succeeded"
    grep -qE '[0-9]' "$out/out/$b.txt" 2>/dev/null
    check $? "benchmark $b printed figures"
    grep -q "^### $b\$" "$out/REPORT.md" 2>/dev/null
    check $? "REPORT.md holds the raw output of $b"
done

# rows FILE: number of data rows whose second column is a number.
rows() { awk -F'\t' 'NR > 1 && $0 !~ /^#/ && $2 ~ /^-?[0-9.]+$/ { n++ } END { print n + 0 }' "$1" 2>/dev/null || echo 0; }
n=$(rows "$out/data/session_rtt.tsv")
[ "$n" -eq 9 ]
check $? "session_rtt.tsv: one row per level of calls in flight, 1..256 ($n rows)"
awk -F'\t' 'NR > 1 && ($2 <= 0 || $8 <= 0) { bad = 1 } END { exit bad }' "$out/data/session_rtt.tsv"
check $? "session_rtt.tsv: calls/s and floor round trips/s are positive at every level"
n=$(rows "$out/data/codec_bytes.tsv")
[ "$n" -ge 5 ]
check $? "codec_bytes.tsv: bytes per sample beside the reference ($n samples)"
n=$(rows "$out/data/store_rates.tsv")
[ "$n" -ge 3 ]
check $? "store_rates.tsv: store rates beside the raw SQLite floor ($n rows)"
n=$(rows "$out/data/store_drain.tsv")
[ "$n" -ge 1 ]
check $? "store_drain.tsv: drain to the broker beside the floor ($n rows)"
n=$(rows "$out/data/rss_timeline.tsv")
[ "$n" -ge 30 ]
check $? "rss_timeline.tsv: one sample a second over the quick run ($n rows)"
awk -F'\t' 'NR > 1 && $6 == 0 { down++ } NR > 1 && $5 > 0 { q++ } END { exit !(down > 0 && q > 0) }' \
    "$out/data/rss_timeline.tsv"
check $? "rss_timeline.tsv: the outage is in the data (broker down, rows queued)"

plots="rtt_vs_inflight store_rates codec_bytes rss_timeline"
[ -x tests/bench/daemon/run_sweep.sh ] && plots="$plots modbus_devices"
for p in $plots; do
    f=$out/$p.png
    [ -s "$f" ] && [ "$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')" = "89504e47" ]
    check $? "plot $p.png drawn (PNG, $(stat -c %s "$f" 2>/dev/null || echo 0) bytes)"
    grep -q "($p.png)" "$out/REPORT.md" 2>/dev/null
    check $? "REPORT.md links $p.png"
done
grep -q '^## Summary' "$out/REPORT.md" && grep -q '^| Area | Figure | Value | Floor' "$out/REPORT.md"
check $? "REPORT.md has the summary table"
n=$(grep -c '| not measured |' "$out/REPORT.md")
[ "$n" -eq 0 ]
check $? "every headline figure of the summary was measured ($n not measured)"

echo "bench_quick: $fails check(s) failed"
if [ $fails -eq 0 ]; then
    rm -rf "$out"
    exit 0
fi
echo "bench_quick: the run's report and data are kept in $out"
exit 1
