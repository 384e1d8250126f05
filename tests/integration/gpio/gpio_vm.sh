#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# GPIO adapter against a real kernel GPIO chip: boots Debian's own kernel in qemu (TCG) with a
# busybox initramfs, loads gpio-sim (built here as an out-of-tree module from Debian's
# linux-source, because Debian's kernels do not ship it), creates a simulated chip through
# configfs and runs one test inside: the adapter test program (gpio_vm_test.c, linked against
# the real adapter and gw_core) or the end-to-end script (gpio_vm_e2e.sh: broker + daemon + curl).
# Its TAP-style output is copied to stdout; the exit code is the test's.
#
# Usage: gpio_vm.sh <gpio_vm_test binary>              the adapter test program (gpio_vm_test.c)
#        gpio_vm.sh --e2e <iotmp-gatewayd> <iotmp-broker>  the daemon and the test broker, driven
#                                                          through REST with curl (gpio_vm_e2e.sh)
# Works from scratch: installs its Debian packages with apt-get and downloads the kernel image and
# source packages into $GW_GPIO_CACHE (default /var/cache/iotmp-gateway-gpio, never in git).
# Exit 77 (skipped) only when qemu cannot run at all.
set -eu

mode=prog
if [ "${1:-}" = "--e2e" ]; then
    mode=e2e
    daemon=${2:?usage: gpio_vm.sh --e2e <iotmp-gatewayd> <iotmp-broker>}
    broker=${3:?usage: gpio_vm.sh --e2e <iotmp-gatewayd> <iotmp-broker>}
    set -- "$daemon" "$broker"
else
    prog=${1:?usage: gpio_vm.sh <gpio_vm_test binary>}
    set -- "$prog"
fi
here=$(cd "$(dirname "$0")" && pwd)
src=${GW_SOURCE_DIR:-$(cd "$here/../../.." && pwd)}
cache=${GW_GPIO_CACHE:-/var/cache/iotmp-gateway-gpio}
work=${GW_BUILD_DIR:-/tmp}/gpio-vm-$mode
t0=$(date +%s)

say() { echo "gpio_vm: $*"; }
step() { say "$1 (+$(( $(date +%s) - t0 )) s)"; }

for f in "$@"; do
    [ -x "$f" ] || { say "$f not found or not executable"; exit 1; }
done

# --- 1. packages -------------------------------------------------------------------------------
kver=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -n1)
if [ -z "$kver" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    kver=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(.*\)$/\1/p' | head -n1)
fi
need=""
for p in qemu-system-x86 busybox-static cpio kmod gcc make libgpiod-dev curl ${kver:+linux-headers-$kver}; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need="$need $p"
done
if [ -n "$need" ]; then
    step "installing$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 ||
        { apt-get update -qq >/dev/null 2>&1 || true
          apt-get install -y -qq --no-install-recommends $need >/dev/null 2>&1 || true; }
fi
if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! qemu-system-x86_64 -version >/dev/null 2>&1; then
    say "SKIP: qemu-system-x86_64 is not installed and could not be installed with apt-get; the GPIO"
    say "      test needs it to boot a kernel with gpio-sim (apt-get install qemu-system-x86)"
    exit 77
fi
[ -n "$kver" ] || { say "cannot tell the kernel ABI of linux-image-amd64 (apt-cache depends failed)"; exit 1; }
[ -d "/usr/src/linux-headers-$kver" ] || { say "linux-headers-$kver missing after apt-get install"; exit 1; }

# --- 2. kernel image and gpio-sim source (cached) -------------------------------------------------
if ! mkdir -p "$cache/deb" 2>/dev/null || [ ! -w "$cache/deb" ]; then
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/iotmp-gateway-gpio   # not root: a per-user cache
    mkdir -p "$cache/deb"
fi
# Two runs (ctest -j) may fill the cache at once: one prepares it, the other waits.
exec 9>"$cache/.lock"
flock 9
kdir="$cache/kernel-$kver"
if [ ! -f "$kdir/vmlinuz" ] || [ ! -f "$kdir/configfs.ko" ]; then
    step "downloading linux-image-$kver"
    (cd "$cache/deb" && { ls linux-image-"$kver"_*.deb >/dev/null 2>&1 ||
        apt-get download -qq "linux-image-$kver" 2>/dev/null; }) ||
        { say "cannot download linux-image-$kver with apt-get"; exit 1; }
    rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp/x"
    dpkg-deb -x "$(ls "$cache"/deb/linux-image-"$kver"_*.deb | head -n1)" "$kdir.tmp/x"
    cp "$kdir.tmp/x/boot/vmlinuz-$kver" "$kdir.tmp/vmlinuz"
    cfs=$(find "$kdir.tmp/x/lib/modules/$kver" -name 'configfs.ko*' | head -n1)
    case "$cfs" in
        *.xz) xz -dc "$cfs" > "$kdir.tmp/configfs.ko" ;;
        *.zst) zstd -qdc "$cfs" > "$kdir.tmp/configfs.ko" ;;
        *) cp "$cfs" "$kdir.tmp/configfs.ko" ;;
    esac
    rm -rf "$kdir.tmp/x" "$kdir" && mv "$kdir.tmp" "$kdir"
fi

mdir="$cache/gpio-sim-$kver"
if [ ! -f "$mdir/gpio-sim.ko" ]; then
    srcdeb=$(ls "$cache"/deb/linux-source-*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$srcdeb" ]; then
        step "downloading linux-source (about 140 MB, once)"
        srcpkg=linux-source-$(echo "$kver" | cut -d. -f1,2)
        (cd "$cache/deb" && apt-get download -qq "$srcpkg" 2>/dev/null) ||
            { say "cannot download $srcpkg with apt-get"; exit 1; }
        srcdeb=$(ls "$cache"/deb/linux-source-*.deb | head -n1)
    fi
    step "building gpio-sim.ko for $kver"
    rm -rf "$mdir.tmp" && mkdir -p "$mdir.tmp/src"
    dpkg-deb --fsys-tarfile "$srcdeb" | tar -x -C "$mdir.tmp/src" --wildcards './usr/src/linux-source-*.tar.*'
    tarball=$(ls "$mdir.tmp"/src/usr/src/linux-source-*.tar.* | head -n1)
    top=$(basename "$tarball" | sed 's/\.tar\..*//')
    tar -x -f "$tarball" -C "$mdir.tmp/src" "$top/drivers/gpio/gpio-sim.c" "$top/drivers/gpio/gpiolib.h" \
        "$top/kernel/irq/irq_sim.c"
    mkdir -p "$mdir.tmp/mod"
    cp "$mdir.tmp/src/$top/drivers/gpio/gpio-sim.c" "$mdir.tmp/mod/gpio_sim_main.c"
    cp "$mdir.tmp/src/$top/drivers/gpio/gpiolib.h" "$mdir.tmp/mod/gpiolib.h"
    # irq_sim is built into Debian's kernel only when something selects it; build our own copy.
    # Out of tree, handle_simple_irq(irq_to_desc()) is not reachable (irq_to_desc is not
    # exported); generic_handle_irq() does the same.
    sed 's/handle_simple_irq(irq_to_desc(\([a-z_]*\)))/generic_handle_irq(\1)/' \
        "$mdir.tmp/src/$top/kernel/irq/irq_sim.c" > "$mdir.tmp/mod/irq_sim.c"
    grep -q 'generic_handle_irq' "$mdir.tmp/mod/irq_sim.c" || { say "irq_sim.c patch did not apply"; exit 1; }
    printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio_sim_main.o irq_sim.o\n' > "$mdir.tmp/mod/Kbuild"
    if ! make -s -C "/usr/src/linux-headers-$kver" M="$mdir.tmp/mod" modules > "$mdir.tmp/build.log" 2>&1; then
        cat "$mdir.tmp/build.log"; say "gpio-sim module build failed"; exit 1
    fi
    rm -rf "$mdir" && mkdir -p "$mdir" && cp "$mdir.tmp/mod/gpio-sim.ko" "$mdir/" && rm -rf "$mdir.tmp"
fi

flock -u 9

# --- 3. initramfs: busybox, modules, the test program and every library it needs ------------------
step "building the initramfs"
rm -rf "$work" && mkdir -p "$work/root"
r="$work/root"
mkdir -p "$r/bin" "$r/sbin" "$r/proc" "$r/sys" "$r/dev" "$r/tmp" "$r/lib/modules" "$r/test"
cp /bin/busybox "$r/bin/busybox"
ln -s busybox "$r/bin/sh"
cp "$kdir/configfs.ko" "$mdir/gpio-sim.ko" "$r/lib/modules/"
if [ "$mode" = prog ]; then
    cp "$prog" "$r/test/gpio_vm_test"
    printf '#!/bin/sh\ncd /test && exec ./gpio_vm_test\n' > "$r/test/run"
    bins="$prog"
else
    cp "$daemon" "$r/test/iotmp-gatewayd"
    cp "$broker" "$r/test/iotmp-broker"
    cp "$(command -v curl)" "$r/bin/curl"
    mkdir -p "$r/schema" && cp -r "$src/schema/." "$r/schema/"
    cp "$here/gpio_vm_e2e.sh" "$r/test/run"
    bins="$daemon $broker $(command -v curl)"
fi
chmod +x "$r/test/run"
# libwebsockets loads its event-library plugins (the test broker runs on libev) with dlopen from
# its libdir: bring them along when a program links libwebsockets.
if for b in $bins; do ldd "$b"; done | grep -q libwebsockets; then
    for plugin in /usr/lib/x86_64-linux-gnu/libwebsockets-evlib_*.so; do
        [ -e "$plugin" ] || continue
        mkdir -p "$r$(dirname "$plugin")"
        cp -L "$plugin" "$r$plugin"
        bins="$bins $plugin"
    done
fi
# Dynamic libraries as ldd lists them (and the loader), at the same paths.
for b in $bins; do ldd "$b"; done | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) .*/\1/p' | sort -u | while read -r lib; do
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib"
done
mkdir -p "$r/lib64"
[ -e "$r/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$r/lib64/"

cat > "$r/init" <<'EOF'
#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
insmod /lib/modules/configfs.ko 2>/dev/null
insmod /lib/modules/gpio-sim.ko || echo "GPIOVM: insmod gpio-sim failed"
mount -t configfs configfs /sys/kernel/config
G=/sys/kernel/config/gpio-sim/gw
mkdir $G $G/bank0
echo 8 > $G/bank0/num_lines
echo gw-sim > $G/bank0/label
mkdir $G/bank0/line0 && echo relay1 > $G/bank0/line0/name
mkdir $G/bank0/line6 && echo door > $G/bank0/line6/name
echo 1 > $G/live
echo "GPIOVM: chip $(cat $G/bank0/chip_name) device $(cat $G/dev_name)"
GW_GPIO_SIM_CHIP=$(cat $G/bank0/chip_name) GW_GPIO_SIM_DEV=$(cat $G/dev_name) /test/run
echo "GPIOVM: exit=$?"
poweroff -f
EOF
chmod +x "$r/init"
(cd "$r" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initrd.gz")

# --- 4. boot ---------------------------------------------------------------------------------
step "booting $kver in qemu (TCG)"
set +e
timeout 300 qemu-system-x86_64 -machine q35,accel=tcg -cpu max -m 512 -smp 1 -nic none -nographic \
    -no-reboot -kernel "$kdir/vmlinuz" -initrd "$work/initrd.gz" \
    -append 'console=ttyS0 panic=-1 quiet loglevel=3' > "$work/console.log" 2>&1
qrc=$?
set -e
tr -d '\r' < "$work/console.log" | grep -a -E '^(GPIOVM|ok |not ok |#|1\.\.)' | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g'
step "qemu exited ($qrc)"
code=$(tr -d '\r' < "$work/console.log" | grep -a -o 'GPIOVM: exit=[0-9]*' | tail -n1 | sed 's/.*=//')
if [ -z "$code" ]; then
    say "no result from the VM (qemu exit $qrc); the console log follows"
    tail -n 60 "$work/console.log"
    exit 1
fi
exit "$code"
