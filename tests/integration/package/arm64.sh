#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# integ.package_arm64: `scripts/package arm64` — the Raspberry Pi OS 64-bit package, cross-built on
# this machine and checked with lintian, and the unit tests of an arm64 build run under
# qemu-aarch64. Root only (it installs the cross toolchain and :arm64 libraries with apt-get);
# skipped otherwise. Runs alone (RUN_SERIAL): emulation is CPU-heavy, and other tests have timing.
set -u
src=${GW_SOURCE_DIR:?}
if [ "$(id -u)" -ne 0 ]; then
    echo "skip: scripts/package arm64 installs packages; run as root"
    exit 77
fi
cd "$src" && scripts/package arm64 </dev/null
