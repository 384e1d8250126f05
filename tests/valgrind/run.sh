#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# valgrind.unit: runs every unit test program exactly as CTest runs it (command, working directory
# and environment from `ctest --show-only=json-v1 -R '^unit\.'`) under valgrind memcheck, two at a
# time, and fails on any memory error or any definitely/indirectly lost block, naming the program.
#
#   run.sh CTEST BUILD_DIR SANITIZE CANARY   (registered by tests/unit/CMakeLists.txt)
#
# Before anything else it runs CANARY (tests/valgrind/canary.c) with a definite leak, a heap
# over-read and a leak in a forked child, and fails unless valgrind reports each: a clean result is
# only trusted once the same options have been seen to catch them.
# Check runs in the valgrind'ed process (CK_FORK=no; Check timeouts need fork and do not apply,
# so each program gets `timeout` instead), except for the programs in the `forked` table below.
# Skipped (77) in a sanitizer build (ASan and valgrind do not mix) and when valgrind is not
# installed. "Possibly lost" and "still reachable" blocks (libraries' global state) are not errors.
# Suppressions: tests/valgrind/gw.supp, one comment per entry. Per-program exceptions, each with its
# reason, are in the tables below (Debian's Check 0.15.2 has no CK_EXCLUDE_CASE, so single cases
# cannot be left out). A program whose Check assertions fail under valgrind (its slowness breaks a
# timing assumption) is run once more and fails if they fail again; valgrind errors in a run whose
# checks pass fail at once.
#   GW_VALGRIND_JOBS=N   programs at a time (default 2)
#   GW_VALGRIND_ONLY=re  only unit tests whose CTest name matches the regex
set -uo pipefail
ctest_cmd=${1:?ctest command}
build=${2:?build dir}
sanitize=${3:-0}
canary=${4:?canary program}
here=$(cd "$(dirname "$0")" && pwd)

case "$sanitize" in
    1|ON|on|TRUE|true|YES|yes)
        echo "valgrind.unit: skipped in a sanitizer build (ASan and valgrind do not mix)"
        exit 77 ;;
esac
if ! command -v valgrind >/dev/null; then
    echo "valgrind.unit: skipped: valgrind is not installed (apt-get install valgrind)"
    exit 77
fi

# Programs that fork helper processes which end with _exit() while the parent's objects are still
# allocated: valgrind would report those objects as lost in the child and turn the child's exit
# status into 1, so the test would fail. For these, valgrind's own exit code is not used and leaks
# count in the test process only; memory errors still count in every process.
declare -A helpers=(
    # a second process opening the same store (must get GW_EBUSY), and the torture writers that are
    # SIGKILLed (these never reach exit)
    [unit.store]=1
)

# Programs whose test cases share process-wide state and so only work with Check's fork mode; they
# run with CK_FORK=yes. Valgrind follows fork(), so each test case's child is checked as well (its
# report lands in its own log file, which is counted like the others).
declare -A forked=(
    # the simulated GPIO backend (tests/bench/scale) reads GW_GPIO_SIM_* once per process
    # (sim_init), while each test case sets its own rate, queue and stats file
    [unit.gpio_backend_sim]=1
)

work=$build/valgrind-unit
rm -rf "$work"
mkdir -p "$work"

# One job script per unit test: cd, environment, command.
"$ctest_cmd" --test-dir "$build" -N -R '^unit\.' --show-only=json-v1 >"$work/tests.json" || {
    echo "valgrind.unit: ctest --show-only failed"
    exit 1
}
/usr/bin/python3 - "$work" "${GW_VALGRIND_ONLY:-}" <<'PY' || exit 1
import json, os, re, shlex, sys
work, only = sys.argv[1], sys.argv[2]
tests = json.load(open(os.path.join(work, 'tests.json')))['tests']
n = 0
for t in tests:
    name = t['name']
    if only and not re.search(only, name):
        continue
    props = {p['name']: p['value'] for p in t.get('properties', [])}
    if props.get('DISABLED'):
        continue
    if not t.get('command'):
        # CTest lists no command when the program is not built: fail like the unit test would
        open(os.path.join(work, name + '.job'), 'w').write(
            'echo "%s: its program is not built (CTest has no command for it)"\nexit 2\n' % name)
        n += 1
        continue
    lines = ['cd %s || exit 2' % shlex.quote(props.get('WORKING_DIRECTORY', work))]
    for e in props.get('ENVIRONMENT', []):
        k, _, v = e.partition('=')
        lines.append('export %s=%s' % (k, shlex.quote(v)))
    lines.append('exec "$@" ' + ' '.join(shlex.quote(c) for c in t['command']))
    open(os.path.join(work, name + '.job'), 'w').write('\n'.join(lines) + '\n')
    n += 1
if n == 0:
    sys.exit('valgrind.unit: no unit tests found')
PY

# Longest first (durations of the previous run in this build dir; in a new build dir, those of
# tests/valgrind/durations, seconds measured on the 2-core build machine), so two workers end
# together: in a fresh clone (CI) the two slowest would otherwise start last and end alone.
durations=$build/valgrind-unit.durations
[ -s "$durations" ] || cp "$here/durations" "$durations" 2>/dev/null || touch "$durations"
mapfile -t jobs < <(for j in "$work"/*.job; do
    n=$(basename "$j" .job)
    d=$(awk -v n="$n" '$1 == n {print $2}' "$durations")
    echo "${d:-9999} $n"
done | sort -rn | awk '{print $2}')

# The memcheck options, shared by the canary and the unit tests.
export VG_OPTS="-q --leak-check=full --errors-for-leak-kinds=definite,indirect
 --show-leak-kinds=definite,indirect --num-callers=24 --gen-suppressions=all"
export VG_SUPP=$here/gw.supp
# The lines of a valgrind log that are errors or definite/indirect leaks.
export VG_ERR_RE='^==[0-9]+== (Invalid |Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap|Argument .* of function|.* (definitely|indirectly) lost in loss record)'

for c in leak overread forkleak clean; do
    # shellcheck disable=SC2086
    valgrind $VG_OPTS --error-exitcode=1 --suppressions="$VG_SUPP" --log-file="$work/canary-$c.vg.%p" \
        "$canary" "$c" \
        >/dev/null 2>&1
    rc=$?
    n=$(cat "$work/canary-$c.vg".* | grep -cE "$VG_ERR_RE")
    # exit 1 from valgrind itself, except with forkleak, where only the child's log tells
    want_rc=1
    case $c in clean|forkleak) want_rc=0 ;; esac
    if [ "$rc" != "$want_rc" ] || { [ "$c" = clean ] && [ "$n" != 0 ]; } ||
       { [ "$c" != clean ] && [ "$n" = 0 ]; }; then
        echo "valgrind.unit: the canary ($canary $c) gave exit $rc and $n reported error(s):"
        echo "valgrind.unit: valgrind does not work as this test expects; its log:"
        cat "$work/canary-$c.vg".* | sed 's/^/    | /'
        exit 1
    fi
done
echo "valgrind.unit: canary ok (a definite leak, a heap over-read and a leak in a forked child are" \
     "reported, a clean run is not)"

# Runs one unit test program under valgrind (try = 1 or 2) and sets rc, verrs and failed_checks.
vg_try() {
    local work=$1 name=$2 try=$3 fork=$4 helper=$5
    local vlog=$work/$name.vg$try
    local exitcode=1
    [ "$helper" = yes ] && exitcode=0
    # sh writes its pid, which exec keeps for valgrind: the test process's log is $vlog.<that pid>
    # shellcheck disable=SC2086
    env CK_FORK=$fork bash "$work/$name.job" timeout --kill-after=10 900 \
        sh -c 'echo $$ >"$0"; exec "$@"' "$vlog.main" \
        valgrind $VG_OPTS --error-exitcode=$exitcode --suppressions="$VG_SUPP" \
            --log-file="$vlog.%p" \
        >"$work/$name.out$try" 2>&1
    rc=$?
    local main
    main=$(cat "$vlog.main" 2>/dev/null)
    rm -f "$vlog.main"
    # Errors of any process of the test (forked children log to their own file); leaks of the
    # test process, and of every process unless the program is in the helpers table.
    verrs=0
    local f n
    for f in "$vlog".*; do
        [ -e "$f" ] || continue
        if [ "$helper" = yes ] && [ "$f" != "$vlog.$main" ]; then
            n=$(grep -E "$VG_ERR_RE" "$f" | grep -vcE 'lost in loss record')
        else
            n=$(grep -cE "$VG_ERR_RE" "$f")
        fi
        verrs=$((verrs + n))
    done
    failed_checks=$(grep -cE '^[^ ]+:[0-9]+:[EF]:' "$work/$name.out$try")
}

run_one() {
    local work=$1 name=$2 fork=$3 helper=$4
    local start=$SECONDS rc verrs failed_checks try=1 note=""
    vg_try "$work" "$name" 1 "$fork" "$helper"
    if [ "$failed_checks" -gt 0 ]; then
        # A failed check under valgrind's slowness (timing-dependent tests). With CK_FORK=no it
        # also skips that test's cleanup, so its leaks are not the code's. Tried once more;
        # valgrind errors in a run whose checks pass are never retried.
        note=" (passed on a second try; first try: $failed_checks failed check(s), log $work/$name.out1)"
        try=2
        vg_try "$work" "$name" 2 "$fork" "$helper"
    fi
    echo "$name $((SECONDS - start))" >>"$work/durations"
    if [ "$verrs" = 0 ] && { [ "$rc" = 0 ] || [ "$rc" = 77 ]; }; then
        echo "valgrind.unit: $name ok$( [ "$rc" = 77 ] && echo ', skipped by the test itself')$note ($((SECONDS - start)) s)"
        return 0
    fi
    if [ "$failed_checks" -gt 0 ]; then
        echo "valgrind.unit: $name FAILED: $failed_checks check(s) fail under valgrind, twice (exit $rc;" \
             "$verrs valgrind report(s), which with CK_FORK=no may come from the failed test's skipped cleanup):"
    elif [ "$verrs" -gt 0 ]; then
        echo "valgrind.unit: $name FAILED: valgrind reports $verrs error(s) or leak(s) (exit $rc):"
    elif [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        echo "valgrind.unit: $name FAILED: timed out after 900 s under valgrind"
    else
        echo "valgrind.unit: $name FAILED: the test program failed under valgrind (exit $rc):"
    fi
    sed 's/^/    | /' "$work/$name.out$try" | tail -30
    for f in "$work/$name.vg$try".*; do
        [ -s "$f" ] && { echo "    valgrind log $f:"; sed 's/^/    | /' "$f" | head -150; }
    done
    return 1
}
export -f vg_try
export -f run_one

echo "valgrind.unit: ${#jobs[@]} unit test programs, ${GW_VALGRIND_JOBS:-2} at a time"
for n in "${jobs[@]}"; do
    printf '%s\0%s\0%s\0' "$n" "$([ -n "${forked[$n]:-}" ] && echo yes || echo no)" \
        "$([ -n "${helpers[$n]:-}" ] && echo yes || echo no)"
done | xargs -0 -n3 -P"${GW_VALGRIND_JOBS:-2}" bash -c 'run_one "$1" "$2" "$3" "$4"' run_one "$work" |
    tee "$work/results"
fails=$(grep -c 'FAILED' "$work/results")
[ -s "$work/durations" ] && cp "$work/durations" "$durations"
for n in "${!helpers[@]}"; do
    [ -e "$work/$n.job" ] &&
    echo "valgrind.unit: $n: leaks of its helper child processes not counted (see tests/valgrind/run.sh)"
done
for n in "${!forked[@]}"; do
    [ -e "$work/$n.job" ] &&
    echo "valgrind.unit: $n: run with CK_FORK=yes, valgrind following each test's child (see tests/valgrind/run.sh)"
done
if [ "$fails" -gt 0 ]; then
    echo "valgrind.unit: $fails program(s) failed:"
    grep 'FAILED' "$work/results" | sed 's/:.*//; s/^valgrind.unit: /    /'
    exit 1
fi
echo "valgrind.unit: all ${#jobs[@]} programs clean (no errors, no definite or indirect leaks)"
exit 0
