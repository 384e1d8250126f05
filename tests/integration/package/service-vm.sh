#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The packaged service under a real systemd: boots a minimal Debian 12 (mmdebstrap) in qemu
# (TCG; this machine has no usable KVM), installs the .deb there and checks what no static check
# can: the sandbox lets the daemon start, Type=notify READY=1 arrives, the watchdog is fed while
# the loop runs and kills a stopped daemon, LoadCredential passes the password, StateDirectory
# is writable, reload and stop work. Manual command (downloads about 150 MB and takes minutes),
# not part of scripts/test:
#
#   tests/integration/package/service-vm.sh [path.deb]     (root; default: scripts/package's .deb)
#
# The daemon in the .deb must send sd_notify messages (gateway/daemon/sdnotify.c wired in main.c);
# without READY=1 `systemctl start` times out and the first check fails, which is the point.
# With the project's test broker built (GW_BROKER_BIN, default build/tests/broker/iotmp-broker),
# it also runs there and the gateway must log in with the password it got only as a credential.
# Work folder: build-pkg-vm/ (kept, so a second run reuses the root file system).
set -uo pipefail
src=$(cd "$(dirname "$0")/../../.." && pwd)
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (mmdebstrap, loop images)"; exit 77; }
deb=${1:-$(ls "$src"/build-pkg-amd64/iotmp-gateway_*_amd64.deb 2>/dev/null | head -1)}
[ -f "$deb" ] || { echo "no .deb: run scripts/package first or pass one"; exit 2; }
work=$src/build-pkg-vm
mkdir -p "$work"
export DEBIAN_FRONTEND=noninteractive
for p in mmdebstrap qemu-system-x86 e2fsprogs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        apt-get install -y -qq --no-install-recommends "$p" </dev/null >/dev/null
done

if [ ! -x "$work/rootfs/usr/lib/systemd/systemd" ]; then
    rm -rf "$work/rootfs"
    echo "building a Debian 12 root file system in $work/rootfs"
    mmdebstrap --variant=minbase \
        --include=systemd,systemd-sysv,udev,linux-image-amd64,initramfs-tools,libwebsockets17,libmodbus5,libmosquitto1,libgpiod2,libjansson4,libsqlite3-0,libssl3,man-db,procps \
        bookworm "$work/rootfs" "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian-security bookworm-security main" >"$work/mmdebstrap.log" 2>&1 ||
        { tail -20 "$work/mmdebstrap.log"; exit 1; }
fi
broker=${GW_BROKER_BIN:-$src/build/tests/broker/iotmp-broker}
if [ -x "$broker" ] && ! chroot "$work/rootfs" dpkg -s libwebsockets-evlib-ev >/dev/null 2>&1; then
    cp /etc/resolv.conf "$work/rootfs/etc/resolv.conf" 2>/dev/null || true
    chroot "$work/rootfs" sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends libev4 libwebsockets-evlib-ev" </dev/null >/dev/null
fi

# The test, run by a oneshot unit at boot; results go to the serial console.
img=$work/stage
rm -rf "$img"; mkdir -p "$img"
cp "$deb" "$img/iotmp-gateway.deb"
cat >"$img/vmtest.sh" <<'VM'
#!/bin/bash
exec > >(tee /root/vmtest.log >/dev/ttyS0) 2>&1
fails=0
say() { echo "VMTEST: $*"; }
ok() { say "ok   $*"; }
bad() { say "FAIL $*"; fails=$((fails + 1)); }
check() { local w=$1; shift; if "$@"; then ok "$w"; else bad "$w"; fi; }
prop() { systemctl show -P "$1" iotmp-gateway; }

dpkg -i /root/iotmp-gateway.deb >/root/dpkg.log 2>&1 || { cat /root/dpkg.log; bad "dpkg -i"; }
check "systemd-analyze verify" systemd-analyze verify /lib/systemd/system/iotmp-gateway.service
say "$(systemd-analyze security iotmp-gateway.service | tail -1)"
# A configuration the daemon can run: the sim adapter, a broker address nobody listens on (the
# uplink retries; the service must stay up), the password only as a systemd credential.
sed -i 's|"url": "[^"]*"|"url": "iotmp://127.0.0.1:25204"|' /etc/iotmp-gateway/gateway.json
cp /usr/share/doc/iotmp-gateway/examples/sim.json /etc/iotmp-gateway/adapters.d/
# A short watchdog so the kill test below takes seconds.
mkdir -p /etc/systemd/system/iotmp-gateway.service.d
printf '[Service]\nWatchdogSec=6s\nRestartSec=1s\n' >/etc/systemd/system/iotmp-gateway.service.d/test.conf
systemctl daemon-reload
# Without device.secret the start fails before the daemon runs (README troubleshooting table).
timeout 60 systemctl start iotmp-gateway 2>/dev/null
check "no device.secret: start refused with 243/CREDENTIALS" test "$(prop ExecMainStatus)" = 243
systemctl stop iotmp-gateway 2>/dev/null; systemctl reset-failed iotmp-gateway 2>/dev/null
install -m 0600 /dev/null /etc/iotmp-gateway/device.secret
echo vm-test-password >/etc/iotmp-gateway/device.secret

if [ -x /root/iotmp-broker ]; then
    printf 'your-thinger-user your-device-id vm-test-password\n' >/root/creds
    /root/iotmp-broker --credentials /root/creds --db /root/broker.db --tcp-port 25204 \
        --http-port 25280 >/root/broker.log 2>&1 &
    sleep 2
    check "test broker ready" grep -q 'iotmp-broker ready' /root/broker.log
fi
t0=$(date +%s%N)
check "systemctl start (returns after READY=1)" timeout 90 systemctl start iotmp-gateway
say "start took $(( ($(date +%s%N) - t0) / 1000000 )) ms (emulated CPU)"
check "active" systemctl is-active --quiet iotmp-gateway
say "status text: $(prop StatusText)"
pid=$(prop MainPID)
check "runs as iotmp-gateway" test "$(ps -o user= -p "$pid")" = iotmp-gateway
check "groups include dialout and gpio" sh -c "id -nG iotmp-gateway >/dev/null; grep -q . /proc/$pid/status && ps -o supgrp= -p $pid | grep -q dialout && ps -o supgrp= -p $pid | grep -q gpio"
check "no password_file in gateway.json: the password comes as a credential" sh -c "! grep -q password_file /etc/iotmp-gateway/gateway.json"
if [ -x /root/iotmp-broker ]; then
    for i in $(seq 20); do journalctl -u iotmp-gateway -o cat | grep -q 'session ready' && break; sleep 0.5; done
    check "logged in to the test broker with the credential's password" sh -c "journalctl -u iotmp-gateway -o cat | grep -q 'uplink: session ready'"
fi
check "no capabilities" sh -c "grep -q '^CapEff:\s*0000000000000000' /proc/$pid/status"
check "seccomp filter on" sh -c "grep -q '^Seccomp:\s*2' /proc/$pid/status"
sleep 15   # more than two watchdog periods
check "still active after 15 s with WatchdogSec=6s (pings arrive)" systemctl is-active --quiet iotmp-gateway
check "no restart so far" test "$(prop NRestarts)" = 0
check "store created in the StateDirectory" test -f /var/lib/iotmp-gateway/store.db
check "store owned by the service user" test "$(stat -c %U /var/lib/iotmp-gateway/store.db)" = iotmp-gateway
check "systemctl reload" timeout 30 systemctl reload iotmp-gateway
sleep 1
check "reload done in the journal" sh -c "journalctl -u iotmp-gateway -o cat | grep -q 'reload done'"
check "same process after reload" test "$(prop MainPID)" = "$pid"
# A daemon that stops answering is killed by the watchdog and restarted.
pid=$(prop MainPID)
if [ "${pid:-0}" -gt 0 ]; then   # never kill -STOP 0: that would stop this script
    kill -STOP "$pid"
    sleep 12
fi
check "watchdog killed the stopped daemon and systemd restarted it" sh -c "test \"\$(systemctl show -P NRestarts iotmp-gateway)\" -ge 1 && systemctl is-active --quiet iotmp-gateway"
check "journal says watchdog timeout" sh -c "journalctl -u iotmp-gateway | grep -qi watchdog"
check "systemctl stop" timeout 40 systemctl stop iotmp-gateway
say "stop result: $(prop Result), exit status $(prop ExecMainStatus)"
check "clean stop (Result=success)" test "$(prop Result)" = success
say "--- journal ---"
journalctl -u iotmp-gateway -o short-monotonic --no-pager | tail -40
say "RESULT $fails failure(s)"
systemctl poweroff --no-block
VM
chmod +x "$img/vmtest.sh"
cat >"$img/vmtest.service" <<'UNIT'
[Unit]
Description=iotmp-gateway package test
After=multi-user.target
[Service]
Type=oneshot
TimeoutStartSec=600
ExecStart=/root/vmtest.sh
ExecStopPost=/bin/systemctl poweroff --no-block
[Install]
WantedBy=multi-user.target
UNIT

# Root image: the prepared tree plus the test, as an ext4 file (no loop mount needed).
rm -f "$work/root.img"
cp "$img/iotmp-gateway.deb" "$img/vmtest.sh" "$work/rootfs/root/"
rm -f "$work/rootfs/root/iotmp-broker"
if [ -x "$broker" ]; then cp "$broker" "$work/rootfs/root/"; fi
cp "$img/vmtest.service" "$work/rootfs/etc/systemd/system/"
ln -sf /etc/systemd/system/vmtest.service "$work/rootfs/etc/systemd/system/multi-user.target.wants/vmtest.service"
echo gw-vm >"$work/rootfs/etc/hostname"
# No login prompt on the console: agetty's vhangup() would cut the test's output.
ln -sf /dev/null "$work/rootfs/etc/systemd/system/serial-getty@ttyS0.service"
mkfs.ext4 -q -F -L root -d "$work/rootfs" "$work/root.img" 3G || exit 1
kernel=$(ls "$work"/rootfs/boot/vmlinuz-* | head -1)
initrd=$(ls "$work"/rootfs/boot/initrd.img-* | grep -v -e '\.new$' -e '\.bak$' | head -1)
echo "booting (TCG) ..."
start=$(date +%s)
timeout 900 qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 2 -m 1024 -nographic -no-reboot \
    -nic none -kernel "$kernel" -initrd "$initrd" \
    -drive file="$work/root.img",format=raw,if=virtio \
    -append 'root=/dev/vda rw console=ttyS0 panic=-1 quiet loglevel=3 systemd.show_status=0' \
    </dev/null >"$work/console.log" 2>&1
echo "VM ran $(( $(date +%s) - start )) s"
debugfs -R 'cat /root/vmtest.log' "$work/root.img" 2>/dev/null >"$work/vmtest.log"
grep -a 'VMTEST' "$work/vmtest.log" | tr -d '\r'
grep -a -q 'VMTEST: RESULT 0 failure' "$work/vmtest.log"
