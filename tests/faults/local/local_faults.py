#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Local fault scenarios (issue 12, items 1, 5, 6, 7): the real iotmp-gatewayd against the real
iotmp-broker, with real SQLite files, a real tmpfs, and an LD_PRELOAD shim (faultshim.so) for I/O
errors and wall-clock jumps. Each scenario prints its figures and its pass criteria.

  local_faults.py outage-kills  broker down for 60 s while the gateway is SIGKILLed 20 times
  local_faults.py disk          the store's file system fills up (a 2 MiB tmpfs; without root or
                                with GW_FAULT_NO_MOUNT=1, ENOSPC from the shim), for each
                                when_full policy; then I/O errors (EIO) injected by the shim
  local_faults.py clock         CLOCK_REALTIME stepped +1 h and -1 h while running
  local_faults.py sighup        50 SIGHUP reloads while REST clients call resources

Exit 0 pass, 1 fail, 77 skip (binaries not built). GW_SEED fixes the random kill moments.
"""
import glob
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../integration"))
sys.path.insert(0, os.path.join(HERE, "../../integration/store"))
from gwtest import BROKER, BUILD, DEVICE, GATEWAYD, USER, Checks, Env, free_port, log  # noqa: E402
from forward_test import RECORD, SIM, check_delivery  # noqa: E402

SHIM = os.path.join(BUILD, "tests/faults/local/faultshim.so")


def preload_env(extra):
    """LD_PRELOAD for the shim; an ASan daemon needs its runtime first in the list."""
    libs = [SHIM]
    out = subprocess.run(["ldd", GATEWAYD], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "libasan" in line and "=>" in line:
            libs.insert(0, line.split("=>")[1].split()[0])
    env = {"LD_PRELOAD": " ".join(libs)}
    env.update(extra)
    return env


def is_asan():
    out = subprocess.run(["ldd", GATEWAYD], capture_output=True, text=True).stdout
    return "libasan" in out


def gw_log(env):
    with open(os.path.join(env.dir, "gateway.log"), errors="replace") as f:
        return f.read()


def resource(env, name, timeout=10):
    """RUN of a resource through the broker: (HTTP status, JSON answer)."""
    url = f"http://127.0.0.1:{env.http}/v3/users/{USER}/devices/{DEVICE}/resources/{name}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, body.decode(errors="replace")


def metrics(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out



# --- 1. Broker outage with SIGKILLs ------------------------------------------------------------

def run_outage_kills(seconds=60, kills=20):
    """forward_test's outage and kill scenarios at once: the broker is down (killed) for the whole
    outage, and the gateway is SIGKILLed `kills` times at random moments inside it (restarted at
    once each time) while it keeps recording. The store file is read after every kill: what it
    holds was accepted. Then the broker returns and everything must arrive exactly once after
    de-duplication by _id, in order."""
    env = Env()
    check = Checks()
    seed = int(os.environ.get("GW_SEED", time.time()))
    rng = random.Random(seed)
    try:
        env.write_adapter("sim.json", SIM)
        env.start_broker()
        env.write_gateway_config(replay_rate=0, record=RECORD)
        env.start_gateway()
        env.wait_connected()
        time.sleep(2)
        accepted, bad_integrity = set(), 0
        moments = sorted(rng.uniform(1, seconds - 2) for _ in range(kills))
        log(f"seed {seed}: broker killed for {seconds} s; {kills} SIGKILLs of the gateway at "
            f"{', '.join(f'{m:.1f}' for m in moments)} s")
        t0 = time.time()
        env.kill_broker()
        for k, m in enumerate(moments):
            time.sleep(max(0.0, t0 + m - time.time()))
            env.kill_gateway()
            ids, ok = env.store_ids()
            accepted |= ids
            if ok != "ok":
                bad_integrity += 1
                log(f"kill {k + 1}: integrity_check: {ok}")
            env.start_gateway()
        time.sleep(max(0.0, t0 + seconds - time.time()))
        t1 = time.time()
        env.start_broker()
        log("broker back; draining, with 2 more SIGKILLs in the drain")
        env.wait_connected()
        for _ in range(2):
            time.sleep(rng.uniform(0.2, 0.6))
            env.kill_gateway()
            ids, ok = env.store_ids()
            accepted |= ids
            bad_integrity += ok != "ok"
            env.start_gateway()
            env.wait_connected()
        st = env.wait_drained()
        log(f"drained: {st}")
        rc = env.stop_gateway()
        left, ok = env.store_ids()
        seq, _ = env.bucket_ids()
        delivered = {i for i, _ in seq}
        accepted |= delivered  # rows delivered before the outage were accepted too
        in_outage = len({i for i, ts in seq if t0 * 1000 <= ts <= t1 * 1000})
        log(f"figures: {len(accepted)} rows accepted, {in_outage} recorded during the outage "
            f"(between restarts) and delivered after it, {len(left)} still queued at the stop")
        good, _, dups = check_delivery(env, accepted - left)
        check(bad_integrity == 0,
              f"store file passes integrity_check after each of {kills + 2} kills")
        check(good, "every accepted row delivered (after de-duplication by _id), order kept, "
              "one store epoch")
        floor = 250 * seconds // 4
        check(in_outage >= floor,
              f"samples kept being recorded during the outage ({in_outage} >= {floor})")
        check(ok == "ok", "store file intact at the end")
        check(rc == 0, f"clean stop at the end (exit status {rc})")
        log(f"duplicates delivered (allowed around kills, removed by _id): {dups}")
        return check.verdict()
    finally:
        env.cleanup()


# --- 2. Disk full and I/O errors -----------------------------------------------------------------

def lost_ranges(text):
    """Ticket ranges the store logged as never stored ("tickets A..B")."""
    out = set()
    for a, b in re.findall(r"tickets (\d+)\.\.(\d+)", text):
        out |= set(range(int(a), int(b) + 1))
    return out


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True, text=True)
    return r.returncode == 0


def disk_full_case(policy, use_mount):
    """The store on a 2 MiB file system that fills up during a broker outage."""
    env = Env()
    check = Checks()
    mnt = os.path.join(env.dir, "fs")
    mounted = use_mount and mount_tmpfs(mnt, "2m")
    ctl = os.path.join(env.dir, "io.ctl")
    mport = free_port()
    npts = 40
    sim = {"type": "sim", "name": "s",
           "generate": {"count": npts, "prefix": "p", "interval_ms": 50},
           "points": [{"name": "counter", "kind": "counter", "interval_ms": 4}]}
    record = [{"bucket": "samples", "interval_ms": 4,
               "resources": ["s/counter"] + [f"s/p{i}" for i in range(npts)]}]
    try:
        if not mounted:
            os.makedirs(mnt, exist_ok=True)
            log("mount is not available: the disk fills by the shim (ENOSPC on command)")
        env.write_adapter("sim.json", sim)
        env.start_broker()
        env.write_gateway_config(replay_rate=0, record=record,
                                 extra={"metrics": {"listen": f"127.0.0.1:{mport}"}})
        cfg = json.load(open(os.path.join(env.dir, "gateway.json")))
        cfg["store"].update({"path": os.path.join(mnt, "store.db"), "when_full": policy})
        json.dump(cfg, open(os.path.join(env.dir, "gateway.json"), "w"))
        env.start_gateway(preload_env({"GW_FAULT_IO_CTL": ctl, "GW_FAULT_IO_PREFIX": mnt}))
        env.wait_connected()
        time.sleep(1)
        env.control("refuse", {"on": True})
        env.control(f"devices/{USER}/{DEVICE}/drop")
        log(f"[{policy}] broker refusing connections: the store fills its file system")
        if not mounted:
            time.sleep(3)
            open(ctl, "w").write("ENOSPC")
        m = {}
        end = time.time() + 60
        while time.time() < end:
            m = metrics(mport)  # served by the gateway itself: it is running
            if m.get("iotmp_gateway_store_disk_full") == 1:
                break
            time.sleep(0.25)
        check(m.get("iotmp_gateway_store_disk_full") == 1,
              "metrics: store_disk_full = 1 once the file system is full")
        time.sleep(3)  # the policy at work, recordings go on
        m = metrics(mport)
        counter = ("iotmp_gateway_store_dropped_total" if policy == "drop_oldest"
                   else "iotmp_gateway_store_refused_total")
        log(f"[{policy}] full: depth {m['iotmp_gateway_store_depth']:.0f}, bytes "
            f"{m['iotmp_gateway_store_bytes']:.0f}, dropped "
            f"{m['iotmp_gateway_store_dropped_total']:.0f}, refused "
            f"{m['iotmp_gateway_store_refused_total']:.0f}, write errors "
            f"{m['iotmp_gateway_store_write_errors_total']:.0f}, lost "
            f"{m['iotmp_gateway_store_lost_total']:.0f}")
        check(m[counter] > 0, f"policy {policy} applied: {counter} > 0")
        text = gw_log(env)
        check("file system full" in text and "no space left" in text.lower(),
              "log names the cause (file system full, no space left)")
        env.control("refuse", {"on": False})
        env.wait_connected()
        log(f"[{policy}] broker back, the file system still full")
        code, ans = resource(env, "s/counter")
        check(code == 200 and isinstance(ans, (int, float)),
              f"resource s/counter served while the disk is full ({code} {ans})")
        code, st = resource(env, "$gateway/store")
        # (with the shim, statvfs sees room: the store retries every second and fails again)
        check(code == 200 and (st.get("disk_full") is True or not mounted and st.get("fault")),
              f"$gateway/store reports disk_full ({code}: disk_full={st.get('disk_full')}, "
              f"fault={st.get('fault')!r})")
        time.sleep(2)
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", mnt], check=True)
        else:
            os.unlink(ctl)
        log(f"[{policy}] space returned")
        t_back = time.time() * 1000
        end = time.time() + 30
        while time.time() < end:
            code, st = resource(env, "$gateway/store")
            if code == 200 and not st.get("disk_full") and not st.get("fault"):
                break
            time.sleep(0.25)
        check(not st.get("disk_full") and not st.get("fault"),
              f"recovered by itself: disk_full={st.get('disk_full')}, fault={st.get('fault')!r}")
        time.sleep(2)
        env.wait_drained()
        t_end = time.time() * 1000
        rc = env.stop_gateway()
        left, ok = env.store_ids(cfg["store"]["path"])
        seq, epochs = env.bucket_ids()
        ids = [i for i, _ in seq]
        delivered = set(ids)
        lost = lost_ranges(gw_log(env))
        every = set(range(min(delivered | left), max(delivered | left) + 1))
        missing = every - delivered - left
        unexplained = missing - lost
        after = sum(1 for _, ts in seq if t_back <= ts <= t_end)
        log(f"[{policy}] figures: {len(delivered)} rows delivered, {len(lost)} tickets logged as "
            f"lost (failed commits), {len(missing)} ids missing in all, {len(unexplained)} of "
            f"them not logged as lost; dropped {st['dropped']}, refused {st['refused']}, "
            f"{after} rows recorded after space returned")
        if policy == "refuse_new":
            check(not unexplained, "refuse_new: no accepted row lost (every missing id was a "
                  "ticket of a failed commit, never accepted)")
        else:
            check(len(unexplained) <= st["dropped"],
                  f"drop_oldest: rows missing beyond failed commits ({len(unexplained)}) <= "
                  f"rows dropped by the policy ({st['dropped']})")
            newest = max(delivered)
            check(not unexplained or max(unexplained) < newest,
                  "drop_oldest: what was dropped is older than what was kept")
        first_seen = list(dict.fromkeys(ids))
        check(all(a < b for a, b in zip(first_seen, first_seen[1:])) and len(epochs) == 1,
              "order kept, one store epoch")
        check(after > 0, "new samples stored and delivered after space returned")
        check(ok == "ok", "store file intact")
        check(rc == 0, f"clean stop (exit status {rc})")
        return check.failures
    finally:
        env.cleanup()
        if mounted:
            subprocess.run(["umount", "-l", mnt])


def io_error_case():
    """EIO on every write and sync of the store's files for 3 s, broker connected."""
    env = Env()
    check = Checks()
    sdir = os.path.join(env.dir, "st")
    os.makedirs(sdir)
    ctl = os.path.join(env.dir, "io.ctl")
    stop = threading.Event()
    calls = {"ok": 0, "bad": 0}

    def caller():
        while not stop.is_set():
            code, ans = resource(env, "s/counter")
            calls["ok" if code == 200 and isinstance(ans, (int, float)) else "bad"] += 1
            time.sleep(0.02)
    try:
        env.write_adapter("sim.json", SIM)
        env.start_broker()
        env.write_gateway_config(replay_rate=0, record=RECORD)
        cfg = json.load(open(os.path.join(env.dir, "gateway.json")))
        cfg["store"]["path"] = os.path.join(sdir, "store.db")
        json.dump(cfg, open(os.path.join(env.dir, "gateway.json"), "w"))
        env.start_gateway(preload_env({"GW_FAULT_IO_CTL": ctl, "GW_FAULT_IO_PREFIX": sdir}))
        env.wait_connected()
        th = threading.Thread(target=caller)
        th.start()
        time.sleep(2)
        open(ctl, "w").write("EIO")
        log("[eio] every write and fsync of the store's files fails with EIO for 3 s")
        time.sleep(1.5)
        code, st = resource(env, "$gateway/store")
        check(code == 200 and st.get("fault"), f"$gateway/store reports the fault while it lasts "
              f"(fault={st.get('fault')!r}, write_errors={st.get('write_errors')})")
        time.sleep(1.5)
        os.unlink(ctl)
        log("[eio] writes work again")
        t_back = time.time() * 1000
        time.sleep(2)
        env.wait_drained()
        code, st = resource(env, "$gateway/store")
        check(code == 200 and not st.get("fault"),
              f"recovered by itself (fault={st.get('fault')!r})")
        stop.set()
        th.join()
        t_end = time.time() * 1000
        rc = env.stop_gateway()
        left, ok = env.store_ids(cfg["store"]["path"])
        seq, epochs = env.bucket_ids()
        delivered = {i for i, _ in seq}
        text = gw_log(env)
        lost = lost_ranges(text)
        every = set(range(min(delivered | left), max(delivered | left) + 1))
        unexplained = every - delivered - left - lost
        after = sum(1 for _, ts in seq if t_back <= ts <= t_end)
        log(f"[eio] figures: {st['write_errors']} failed commits, {st['lost']} rows lost with "
            f"them (never accepted), {len(delivered)} delivered, {len(unexplained)} missing "
            f"otherwise; resource calls during the run: {calls['ok']} ok, {calls['bad']} bad; "
            f"{after} rows recorded after recovery")
        check("input/output error" in text and "writing again" in text,
              "log names the cause (input/output error) and the recovery")
        check(st["write_errors"] > 0, "metrics count the failed commits")
        check(not unexplained, "no accepted row lost")
        check(calls["bad"] == 0 and calls["ok"] > 0, "resources served throughout")
        first_seen = list(dict.fromkeys(i for i, _ in seq))
        check(all(a < b for a, b in zip(first_seen, first_seen[1:])) and len(epochs) == 1,
              "order kept, one store epoch")
        check(after > 0, "new samples stored and delivered after recovery")
        check(ok == "ok" and rc == 0, f"store file intact ({ok}), clean stop ({rc})")
        return check.failures
    finally:
        stop.set()
        env.cleanup()


def run_disk():
    use_mount = os.geteuid() == 0 and not os.environ.get("GW_FAULT_NO_MOUNT")
    fails = disk_full_case("drop_oldest", use_mount)
    fails += disk_full_case("refuse_new", use_mount)
    fails += io_error_case()
    log("PASS" if not fails else f"FAIL: {fails}")
    return 1 if fails else 0


# --- 3. Wall-clock jumps -------------------------------------------------------------------------

class ModbusPeer:
    """tests/integration/modbus/sim_server.py (Debian's pymodbus), for counting the gateway's
    Modbus polls on the peer's side; None when pymodbus is not there."""

    def __init__(self):
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", os.path.join(HERE, "../../integration/modbus/sim_server.py"),
             "--tcp", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.proc.wait()
            raise OSError("modbus simulator did not start")
        kv = dict(x.split("=") for x in line[1:])
        self.port, self.ctl = int(kv["modbus"]), int(kv["control"])

    def command(self, cmd):
        with socket.create_connection(("127.0.0.1", self.ctl), timeout=5) as c:
            c.sendall((cmd + "\n").encode())
            return c.makefile().readline().strip()

    def reads(self):
        """Read-holding-registers requests of unit 1 since the last RESET."""
        ans = self.command("COUNTS").split()[1:]
        return sum(int(x.split("=")[1]) for x in ans if x.startswith("1:3="))

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def run_clock():
    """CLOCK_REALTIME of the gateway (only) is stepped +1 h, then -1 h, then back, 5 s each, while
    a 10 ms counter is recorded every 20 ms and a Modbus register is polled every 50 ms. The
    broker's arrival time (its own, untouched clock) gives the real time of each row; the Modbus
    peer counts the polls."""
    env = Env()
    check = Checks()
    off = os.path.join(env.dir, "clock.offset")
    open(off, "w").write("0")
    H = 3600 * 1000
    phases = [("0", 0), ("+1h", H), ("-1h", -H), ("0 again", 0)]
    peer = None
    try:
        try:
            peer = ModbusPeer()
            env.write_adapter("plc.json", {
                "type": "modbus", "name": "plc", "interval_ms": 50, "connections": [{
                    "name": "line1", "tcp": {"host": "127.0.0.1", "port": peer.port},
                    "devices": [{"name": "d", "unit": 1, "points": [
                        {"name": "t", "address": "40001", "type": "uint16"}]}]}]})
        except OSError as e:
            log(f"no Modbus peer ({e}): polls are not counted")
        env.write_adapter("sim.json", {"type": "sim", "name": "s", "points": [
            {"name": "counter", "kind": "counter", "interval_ms": 10}]})
        env.start_broker()
        env.write_gateway_config(record=[{"bucket": "samples", "resources": ["s/counter"],
                                          "interval_ms": 20}])
        env.start_gateway(preload_env({"GW_FAULT_CLOCK_FILE": off}))
        env.wait_connected()
        since = [d["since"] for d in env.rest("devices") if d["device"] == DEVICE][0]
        time.sleep(1)
        bounds, polls = [], []
        for name, ms in phases:
            open(off + ".tmp", "w").write(str(ms))
            os.rename(off + ".tmp", off)
            t = time.time() * 1000
            log(f"gateway wall clock offset {name}")
            time.sleep(0.5)
            if peer:
                peer.command("RESET")
            t_poll = time.monotonic()
            time.sleep(4)
            if peer:
                polls.append(peer.reads() / (time.monotonic() - t_poll))
            time.sleep(0.5)
            bounds.append((name, ms, t, time.time() * 1000))
        env.wait_drained()
        code, health = resource(env, "$gateway/health")
        since2 = [d["since"] for d in env.rest("devices") if d["device"] == DEVICE][0]
        rc = env.stop_gateway()
        rows = env.rest("buckets/samples/data?limit=100000")
        ok_all = True
        base_rate = None
        for name, ms, a, b in bounds:
            # leave 0.5 s at each edge: the shim re-reads its file every 20 ms, rows travel
            inner = [r for r in rows if a + 500 <= r["ts"] <= b - 500]
            dur = (b - a - 1000) / 1000
            offs = [r["data"]["ts"] - r["ts"] for r in inner]
            follow = sum(1 for o in offs if abs(o - ms) < 2000)
            cnt = [r["data"]["s/counter"] for r in inner if r["data"].get("s/counter") is not None]
            rate = len(inner) / dur
            crate = (max(cnt) - min(cnt)) / dur if cnt else 0
            if base_rate is None:
                base_rate, base_crate = rate, crate
            log(f"phase {name:8}: {len(inner)} rows in {dur:.1f} s ({rate:.1f}/s, expected 50), "
                f"counter +{crate:.1f}/s (expected 100), {follow}/{len(inner)} timestamps at "
                f"broker time {'+' if ms >= 0 else ''}{ms / 1000:.0f} s")
            good = (len(inner) > 0 and follow == len(inner) and 0.33 < rate / base_rate < 3 and
                    base_crate > 0 and 0.33 < crate / base_crate < 3)
            ok_all &= good
            check(good, f"phase {name}: timestamps follow the gateway's wall clock; row and "
                  f"counter rates within 3x of the first phase (no catch-up burst, no stall)")
        if peer:
            log("Modbus polls per second at the peer, by phase: " +
                ", ".join(f"{n} {p:.1f}" for (n, _), p in zip(phases, polls)) + " (expected 20)")
            check(polls[0] > 0 and all(0.33 < p / polls[0] < 3 for p in polls),
                  "Modbus poll rate within 3x of the first phase in every phase")
        ids = sorted(int(r["data"]["_id"].rsplit("-", 1)[1]) for r in rows)
        check(ids == list(range(ids[0], ids[0] + len(ids))), f"{len(ids)} rows, no id missing")
        check(since == since2 and code == 200 and health.get("uplink_link_losses_total") == 0,
              "the session never dropped (keep-alive on the monotonic clock)")
        check(rc == 0, f"clean stop ({rc})")
        return check.verdict()
    finally:
        env.cleanup()
        if peer:
            peer.stop()


# --- 4. SIGHUP reloads under load ----------------------------------------------------------------

CONF_A = {  # file name -> adapter instance
    "a.json": {"type": "sim", "name": "a", "points": [
        {"name": "m1", "kind": "memory", "value": 1001},
        {"name": "m2", "kind": "memory", "value": 1002},
        {"name": "z", "kind": "memory", "value": 5},
        {"name": "counter", "kind": "counter", "interval_ms": 5}]},
    "b.json": {"type": "sim", "name": "b", "points": [
        {"name": "y", "kind": "memory", "value": 2001}]},
}
CONF_B = {
    "a.json": {"type": "sim", "name": "a", "points": [
        {"name": "m1", "kind": "memory", "value": 1001},
        {"name": "m2", "kind": "memory", "value": 1002},
        {"name": "z", "kind": "memory", "value": 6},
        {"name": "counter", "kind": "counter", "interval_ms": 5}]},
    "c.json": {"type": "sim", "name": "c", "points": [
        {"name": "w", "kind": "memory", "value": 3001}]},
}
# resource -> the answers it may give: a value, or None for a clean "not found"
EXPECT = {"a/m1": {1001}, "a/m2": {1002}, "a/z": {5, 6}, "b/y": {2001, None},
          "c/w": {3001, None}}


def apply_conf(env, conf):
    d = os.path.join(env.dir, "adapters.d")
    for f in glob.glob(os.path.join(d, "*.json")):
        if os.path.basename(f) not in conf:
            os.unlink(f)
    for name, body in conf.items():
        tmp = os.path.join(d, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(body, f)
        os.rename(tmp, os.path.join(d, name))


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def run_sighup(n=50):
    env = Env()
    check = Checks()
    stop = threading.Event()
    stats = {"calls": 0, "wrong": [], "notfound": 0, "errors": []}
    lock = threading.Lock()

    def client(k):
        names = sorted(EXPECT)
        i = k
        while not stop.is_set():
            name = names[i % len(names)]
            i += 1
            code, ans = resource(env, name)
            with lock:
                stats["calls"] += 1
                if code == 200 and isinstance(ans, (int, float)) and ans in EXPECT[name]:
                    continue
                # A removed resource: the gateway's ERROR "unknown resource" naming it, with
                # return code 404 in PARAMETERS (the broker answers HTTP 404).
                if (code == 404 and None in EXPECT[name] and
                        f'unknown resource "{name}"' in json.dumps(ans).replace('\\"', '"')):
                    stats["notfound"] += 1
                    continue
                stats["wrong"].append((name, code, ans))
    try:
        apply_conf(env, CONF_A)
        env.start_broker()
        env.write_gateway_config(record=[{"bucket": "samples", "interval_ms": 10,
                                          "resources": ["a/counter", "a/z"]}])
        # ASan keeps up to 256 MiB of freed memory in quarantine: cap it, so RSS means something
        opts = os.environ.get("ASAN_OPTIONS", "")
        env.start_gateway({"ASAN_OPTIONS": (opts + ":" if opts else "") +
                           "quarantine_size_mb=16"} if is_asan() else None)
        env.wait_connected()
        pid = env.gateway_pid()
        time.sleep(1)
        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        # one A -> B -> A round first, so that what a reload allocates once is in the baseline
        for conf in (CONF_B, CONF_A):
            apply_conf(env, conf)
            os.kill(pid, signal.SIGHUP)
            time.sleep(0.5)
        time.sleep(1.5)
        fd0, rss0 = proc_fds(pid), env.rss_kib(env.gw)
        calls0 = stats["calls"]
        t0 = time.time()
        log(f"baseline: {fd0} fds, RSS {rss0} KiB; {n} SIGHUPs follow (configs B and A in turn)")
        for k in range(n):
            apply_conf(env, CONF_B if k % 2 == 0 else CONF_A)
            os.kill(pid, signal.SIGHUP)
            time.sleep(0.25)
            if env.gw.poll() is not None:
                break
        elapsed = time.time() - t0
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
        alive = env.gw.poll() is None
        time.sleep(1)
        fd1 = proc_fds(pid) if alive else -1
        rss1 = env.rss_kib(env.gw) if alive else -1
        text = gw_log(env)
        reloads = text.count("reload done")
        log(f"figures: {reloads} reloads done, {stats['calls'] - calls0} resource calls during "
            f"the reloads ({(stats['calls'] - calls0) / elapsed:.0f}/s), {stats['notfound']} "
            f"clean 'not found' for a removed instance, {len(stats['wrong'])} wrong answers; "
            f"fds {fd0} -> {fd1}, RSS {rss0} -> {rss1} KiB ({rss1 - rss0:+d} KiB)")
        for w in stats["wrong"][:10]:
            log("wrong answer:", w)
        final = {name: resource(env, name) for name in ("a/z", "b/y", "c/w")} if alive else {}
        log(f"after the last reload (config A): {final}")
        code, st = resource(env, "$gateway/store") if alive else (0, {})
        env.wait_drained() if alive else None
        rc = env.stop_gateway()
        left, ok = env.store_ids()
        seq, epochs = env.bucket_ids()
        delivered = {i for i, _ in seq}
        every = set(range(min(delivered | left), max(delivered | left) + 1))
        missing = every - delivered - left
        rss_bound = 65536 if is_asan() else 8192
        check(alive, "the gateway survived every reload")
        check(reloads == n + 2, f"every SIGHUP reloaded ({reloads} of {n + 2})")
        check(not stats["wrong"], "no wrong answer: each resource answered its own value, a "
              "removed one a clean 404")
        check(stats["notfound"] > 0, "calls to a removed instance were made (and got that error)")
        check(final and final["a/z"] == (200, 5) and final["b/y"] == (200, 2001) and
              final["c/w"][0] == 404, "the last configuration is the one in force")
        check(fd1 == fd0, f"fd count back to its level ({fd0} -> {fd1})")
        check(rss1 - rss0 < rss_bound, f"RSS growth bounded ({rss1 - rss0:+d} KiB < {rss_bound})")
        check(not missing and len(epochs) == 1 and len(delivered) > 0,
              f"samples recorded throughout: {len(delivered)} rows, none missing")
        check(rc == 0, f"clean stop ({rc})")
        return check.verdict()
    finally:
        stop.set()
        env.cleanup()


def main():
    if not (os.path.exists(GATEWAYD) and os.path.exists(BROKER)):
        print("skip: iotmp-gatewayd or iotmp-broker not built")
        return 77
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode in ("disk", "clock") and not os.path.exists(SHIM):
        print("skip: faultshim.so not built")
        return 77
    runs = {"outage-kills": run_outage_kills, "disk": run_disk, "clock": run_clock,
            "sighup": run_sighup}
    if mode not in runs:
        print(__doc__)
        return 2
    return runs[mode]()


if __name__ == "__main__":
    sys.exit(main())
