# SPDX-License-Identifier: Apache-2.0
# CMake toolchain for the arm64 (Raspberry Pi OS 64-bit) cross build on a Debian amd64 host with
# multiarch arm64 libraries (scripts/package arm64 installs them). Test programs run under
# qemu-aarch64 with a time limit; never with -L: once libc6:arm64 is installed, -L makes fork and
# threads hang (../shared/RECIPES.md).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(PKG_CONFIG_EXECUTABLE /usr/bin/aarch64-linux-gnu-pkg-config CACHE FILEPATH "")
set(CMAKE_CROSSCOMPILING_EMULATOR timeout;--kill-after=10;240;qemu-aarch64)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
