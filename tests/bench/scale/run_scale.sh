#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The all-at-once scale benchmark: see run_scale.py. Build directory from GW_BUILD_DIR (configured
# with -DGW_BUILD_BENCH=ON, release); TSV into GW_BENCH_DATA when set.
#   GW_BUILD_DIR=build-release tests/bench/scale/run_scale.sh [--quick] [options, see --help]
set -eu
: "${GW_BUILD_DIR:?GW_BUILD_DIR must point at the build directory}"
export GW_BUILD_DIR
exec "${GW_PYTHON:-/usr/bin/python3}" "$(dirname "$0")/run_scale.py" "$@"
