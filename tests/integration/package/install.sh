#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# integ.package: the amd64 .deb on this machine, the whole life cycle an operator sees.
#   build (scripts/package, with lintian) or reuse $GW_DEB → dpkg -i → files, conffile, user,
#   state folder, unit file + `systemd-analyze verify` → `iotmp-gatewayd validate` of the installed
#   configuration and examples (as the service user) → an edited conffile survives an upgrade →
#   dpkg --purge removes the package's files and conffiles and keeps what the operator made.
# Installs and purges a package as root, so it is skipped (77) when not root, and also when
# iotmp-gateway is already installed or /etc/iotmp-gateway exists (a real installation is never
# touched). Whatever it adds (package, files, the system user and gpio group when it created
# them) is removed again, also on failure.
set -uo pipefail

src=${GW_SOURCE_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)}
bld=${GW_BUILD_DIR:-$src/build}
PKG=iotmp-gateway
ETC=/etc/iotmp-gateway
STATE=/var/lib/iotmp-gateway
UNIT=/lib/systemd/system/iotmp-gateway.service

skip() { echo "SKIP: $*"; exit 77; }
fails=0
ok() { echo "ok:   $*"; }
bad() { echo "FAIL: $*"; fails=$((fails + 1)); }
check() { # check "what" command...
    local what=$1; shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}

[ "$(id -u)" -eq 0 ] || skip "installs a package: needs root"
command -v dpkg >/dev/null || skip "not a Debian system"
if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q installed; then
    skip "$PKG is installed on this machine; this test never touches a real installation"
fi
[ -e "$ETC" ] && skip "$ETC exists; this test never touches a real installation"
[ -e "$STATE" ] && skip "$STATE exists; this test never touches a real installation"

t0=$(date +%s)
had_user=0; getent passwd iotmp-gateway >/dev/null && had_user=1
had_group=0; getent group iotmp-gateway >/dev/null && had_group=1
had_gpio=0; getent group gpio >/dev/null && had_gpio=1
work=$(mktemp -d)

cleanup() {
    dpkg --purge "$PKG" >/dev/null 2>&1 || true
    rm -rf "$ETC" "$STATE" "$work"
    ((had_user)) || userdel iotmp-gateway >/dev/null 2>&1 || true
    ((had_group)) || groupdel iotmp-gateway >/dev/null 2>&1 || true
    ((had_gpio)) || groupdel gpio >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- the package ------------------------------------------------------------------------------
if [ -n "${GW_DEB:-}" ]; then
    deb=$GW_DEB
    echo "reusing $deb"
else
    out=$bld/package-test
    if ! GW_PKG_DIR=$out "$src/scripts/package" >"$work/package.log" 2>&1; then
        cat "$work/package.log"
        echo "FAIL: scripts/package"
        exit 1
    fi
    grep -E '^(package:|[EWI]:)' "$work/package.log"
    deb=$(ls "$out"/${PKG}_*_"$(dpkg --print-architecture)".deb)
fi
t_built=$(date +%s)

# --- install ----------------------------------------------------------------------------------
if ! dpkg -i "$deb" >"$work/dpkg-i.log" 2>&1; then
    cat "$work/dpkg-i.log"
    echo "FAIL: dpkg -i $deb"
    exit 1
fi
ok "dpkg -i $(basename "$deb")"
check "daemon installed and runs" /usr/sbin/iotmp-gatewayd --version
check "unit file installed" test -f "$UNIT"
check "default config installed" test -f "$ETC/gateway.json"
check "gateway.json is a conffile" sh -c "dpkg-query -W -f='\${Conffiles}' $PKG | grep -q ' $ETC/gateway.json '"
check "empty adapters.d" sh -c "test -d $ETC/adapters.d && test -z \"\$(ls -A $ETC/adapters.d)\""
check "schemas installed" test -f /usr/share/iotmp-gateway/schema/gateway.schema.json
# Minimal images (Debian's docker ones) tell dpkg to drop docs and man pages: then say so and
# take the examples from the source tree instead.
examples=/usr/share/doc/$PKG/examples
if cat /etc/dpkg/dpkg.cfg /etc/dpkg/dpkg.cfg.d/* 2>/dev/null | grep -q '^path-exclude.*/usr/share/\(doc\|man\)'; then
    echo "info: dpkg excludes docs or man pages here (path-exclude): their checks are skipped"
    examples=$src/schema/examples
    verify_opts=(--man=no)
else
    check "examples installed" test -f $examples/gateway.json
    check "man page iotmp-gatewayd(8)" test -f /usr/share/man/man8/iotmp-gatewayd.8.gz
    check "man page iotmp-gateway.json(5)" test -f /usr/share/man/man5/iotmp-gateway.json.5.gz
    # Documentation= lines are checked by verify with man(1) when it is there.
    verify_opts=()
    command -v man >/dev/null || verify_opts=(--man=no)
fi
check "system user iotmp-gateway" sh -c "getent passwd iotmp-gateway | grep -q ':/usr/sbin/nologin$'"
check "user is a system account (uid < 1000)" sh -c "test \$(id -u iotmp-gateway) -lt 1000"
check "group gpio exists (SupplementaryGroups=dialout gpio resolves)" getent group gpio
check "state folder owned by the service user, mode 750" \
    sh -c "test \"\$(stat -c '%U:%G %a' $STATE)\" = 'iotmp-gateway:iotmp-gateway 750'"
check "service not enabled by the installation" sh -c "! ls /etc/systemd/system/*/iotmp-gateway.service"

# systemd-analyze verify: exit 0 and nothing said about our unit (warnings do not change the
# exit code, so the output is checked too).
if systemd-analyze verify "${verify_opts[@]}" "$UNIT" >"$work/verify.log" 2>&1 && ! grep -q . "$work/verify.log"; then
    ok "systemd-analyze verify $UNIT"
else
    cat "$work/verify.log"
    bad "systemd-analyze verify $UNIT"
fi
systemd-analyze security --offline=true "$UNIT" 2>/dev/null | tail -1 | sed 's/^/info: /'

# --- validate ---------------------------------------------------------------------------------
# As the service user, as the unit runs it: it must be able to read everything it needs.
asuser() { runuser -u iotmp-gateway -- "$@"; }
if asuser /usr/sbin/iotmp-gatewayd validate >"$work/v1.log" 2>&1; then
    ok "validate the installed $ETC/gateway.json as iotmp-gateway ($(tail -1 "$work/v1.log"))"
else
    cat "$work/v1.log"; bad "validate the installed configuration"
fi
if asuser /usr/sbin/iotmp-gatewayd validate -c $examples/gateway.json >"$work/v2.log" 2>&1; then
    ok "validate the installed example gateway.json ($(tail -1 "$work/v2.log"))"
else
    cat "$work/v2.log"; bad "validate the installed example gateway.json"
fi
for f in $examples/*.json; do
    if asuser /usr/sbin/iotmp-gatewayd validate "$f" >"$work/v3.log" 2>&1; then
        ok "validate example $(basename "$f")"
    else
        cat "$work/v3.log"; bad "validate example $(basename "$f")"
    fi
done
# An adapter file the operator drops in is found through adapters_dir; a broken one is named.
cp $examples/sim.json "$ETC/adapters.d/10-sim.json"
check "validate sees the adapter in adapters.d" \
    sh -c "/usr/sbin/iotmp-gatewayd validate | grep -q 'valid: 2 file(s) checked'"
printf '{"type": "sim", "name": 5}\n' >"$ETC/adapters.d/20-broken.json"
/usr/sbin/iotmp-gatewayd validate >"$work/v4.log" 2>&1
rc=$?
if [ "$rc" -eq 1 ] && grep -q '20-broken.json' "$work/v4.log"; then
    ok "a broken adapter file gives exit 1 and is named"
else
    cat "$work/v4.log"; bad "broken adapter file: exit $rc, expected 1 naming 20-broken.json"
fi
rm -f "$ETC/adapters.d/20-broken.json"

# --- upgrade keeps the edited conffile --------------------------------------------------------
sed -i 's/"your-device-id"/"edited-by-operator"/' "$ETC/gateway.json"
check "conffile edited" grep -q edited-by-operator "$ETC/gateway.json"
# A newer version of the same package, built by repacking (same contents, version +1).
mkdir -p "$work/repack"
dpkg-deb -R "$deb" "$work/repack/root"
ver=$(dpkg-deb -f "$deb" Version)
sed -i "s/^Version: .*/Version: ${ver}+upgradetest1/" "$work/repack/root/DEBIAN/control"
dpkg-deb -b "$work/repack/root" "$work/repack/upgrade.deb" >/dev/null
if dpkg -i "$work/repack/upgrade.deb" >"$work/dpkg-up.log" 2>&1; then
    ok "upgrade to ${ver}+upgradetest1"
else
    cat "$work/dpkg-up.log"; bad "upgrade"
fi
check "edited conffile kept by the upgrade" grep -q edited-by-operator "$ETC/gateway.json"
check "no .dpkg-dist or .dpkg-new beside it" sh -c "! ls $ETC/gateway.json.dpkg-*"

# --- what the operator and the daemon made ----------------------------------------------------
umask 077
echo "device-password-for-test" >"$ETC/device.secret"
asuser sh -c "echo queued >$STATE/store.db"
check "state written by the service user" test -s "$STATE/store.db"

# --- remove, then purge ------------------------------------------------------------------------
if dpkg --remove "$PKG" >"$work/remove.log" 2>&1; then
    ok "dpkg --remove"
else
    cat "$work/remove.log"; bad "dpkg --remove"
fi
check "remove: daemon gone" test ! -e /usr/sbin/iotmp-gatewayd
check "remove: edited conffile kept (removed only on purge)" grep -q edited-by-operator "$ETC/gateway.json"
check "remove: package left in config-files state" \
    sh -c "dpkg-query -W -f='\${Status}' $PKG | grep -q config-files"
if dpkg --purge "$PKG" >"$work/purge.log" 2>&1; then
    ok "dpkg --purge"
else
    cat "$work/purge.log"; bad "dpkg --purge"
fi
sed 's/^/info: purge said: /' "$work/purge.log" | grep -v '^info: purge said: (Reading' || true
check "package gone" sh -c "! dpkg-query -W -f='\${Status}' $PKG 2>/dev/null | grep -q installed"
for f in /usr/sbin/iotmp-gatewayd "$UNIT" /usr/share/iotmp-gateway /usr/share/doc/$PKG \
         /usr/share/man/man8/iotmp-gatewayd.8.gz /usr/lib/sysusers.d/iotmp-gateway.conf \
         /usr/lib/tmpfiles.d/iotmp-gateway.conf /lib/udev/rules.d/60-iotmp-gateway.rules; do
    check "removed: $f" test ! -e "$f"
done
# Debian policy 10.7.3: conffiles belong to the package and go on purge, edited or not (dpkg
# removes them itself, with any .dpkg-old/.dpkg-dist copies).
check "purge removed the conffile gateway.json (edited or not, as dpkg does)" test ! -e "$ETC/gateway.json"
# Files dpkg never owned stay: the operator's secret, adapter files and the gateway's state.
check "kept: operator's $ETC/device.secret" test -s "$ETC/device.secret"
check "kept: operator's $ETC/adapters.d/10-sim.json" test -s "$ETC/adapters.d/10-sim.json"
check "kept: state $STATE/store.db" test -s "$STATE/store.db"
check "kept: system user (never deleted on purge)" getent passwd iotmp-gateway
t_end=$(date +%s)

echo "info: package build $((t_built - t0)) s, install/verify/validate/upgrade/purge $((t_end - t_built)) s"
if ((fails)); then
    echo "$fails check(s) failed"
    exit 1
fi
echo "all checks passed"
exit 0
