#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# integ.bench_quick: `scripts/bench --quick` (release build in build-release/, every benchmark run
# once, briefly). It asserts only that every benchmark ran and printed figures, never a timing.
# The report it writes goes to a temporary folder, not into the source tree.
set -u
src=${GW_SOURCE_DIR:?}
out=$(mktemp -d /tmp/gw-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
cd "$src" && GW_BENCH_OUT="$out" scripts/bench --quick </dev/null
