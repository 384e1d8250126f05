#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Store-and-forward end to end: iotmp-gatewayd (sim adapter, a recording into bucket "samples"
every 4 ms) against iotmp-broker, with real outages and real SIGKILLs. Issue 7's "Must show".

  forward_test.py outage [SECONDS]   broker killed for SECONDS (default 60) while samples are
                                     produced; then a second broker kill in the middle of the
                                     drain. Every accepted sample must reach the bucket, in order,
                                     none missing; duplicates (only possible around a broker
                                     restart) are counted.
  forward_test.py kill [N]           broker refusing connections while the gateway is SIGKILLed N
                                     times (default 20) at random moments, then allowed again while
                                     the gateway is killed during the drain too. After each kill the
                                     store file passes PRAGMA integrity_check; at the end every row
                                     ever committed to the file is in the bucket exactly once after
                                     de-duplication by _id.

"Accepted" is what the store committed: a row id present in the store file after a kill, or one
already delivered. The test reads the file directly (sqlite3) after every kill.
Exit 0 pass, 1 fail, 77 skip (binaries not built).
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BUILD = os.environ.get("GW_BUILD_DIR", "build")
SRC = os.environ.get("GW_SOURCE_DIR", ".")
GATEWAYD = os.path.join(BUILD, "gateway/daemon/iotmp-gatewayd")
BROKER = os.path.join(BUILD, "tests/broker/iotmp-broker")
USER, DEVICE, PASSWORD = "demo", "gw1", "s3cret"


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


class Env:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="gw-forward-")
        self.broker = None
        self.gw = None
        self.http = None
        self.tcp = None
        with open(os.path.join(self.dir, "creds"), "w") as f:
            f.write(f"{USER} {DEVICE} {PASSWORD}\n")
        secret = os.path.join(self.dir, "secret")
        with open(secret, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(secret, 0o600)
        os.makedirs(os.path.join(self.dir, "adapters.d"))
        with open(os.path.join(self.dir, "adapters.d", "sim.json"), "w") as f:
            json.dump({"type": "sim", "name": "s", "points": [
                {"name": "counter", "kind": "counter", "interval_ms": 4}]}, f)

    # --- broker ---
    def start_broker(self):
        args = [BROKER, "--tcp-port", str(self.tcp or 0), "--tls-port", "-1",
                "--http-port", str(self.http or 0), "--credentials",
                os.path.join(self.dir, "creds"), "--db", os.path.join(self.dir, "broker.db"),
                "--log-level", "warn"]
        self.broker = subprocess.Popen(args, stdout=subprocess.PIPE,
                                       stderr=open(os.path.join(self.dir, "broker.log"), "a"),
                                       text=True)
        line = self.broker.stdout.readline()
        if "ready" not in line:
            raise RuntimeError("broker did not start: " + line)
        ports = dict(kv.split("=") for kv in line.split()[2:])
        self.tcp, self.http = int(ports["tcp"]), int(ports["http"])

    def kill_broker(self):
        self.broker.send_signal(signal.SIGKILL)
        self.broker.wait()
        self.broker = None

    def control(self, path, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http}/_control/{path}",
                                     data=json.dumps(body or {}).encode(), method="POST")
        return json.load(urllib.request.urlopen(req, timeout=5))

    def rest(self, path, timeout=10):
        url = f"http://127.0.0.1:{self.http}/v3/users/{USER}/{path}"
        return json.load(urllib.request.urlopen(url, timeout=timeout))

    # --- gateway ---
    def write_gateway_config(self, replay_rate):
        cfg = {
            "uplink": {"url": f"iotmp://127.0.0.1:{self.tcp}", "user": USER, "device": DEVICE,
                       "password_file": os.path.join(self.dir, "secret"), "keepalive": 10,
                       "reconnect_max": 1, "connect_timeout": 5},
            "store": {"path": os.path.join(self.dir, "store.db"), "commit_ms": 100,
                      "replay_rate": replay_rate, "budget_mb": 256},
            "record": [{"bucket": "samples", "resources": ["s/counter"], "interval_ms": 4}],
            "adapters_dir": os.path.join(self.dir, "adapters.d"),
        }
        with open(os.path.join(self.dir, "gateway.json"), "w") as f:
            json.dump(cfg, f)

    def start_gateway(self):
        self.gw = subprocess.Popen([GATEWAYD, "--schema-dir", os.path.join(SRC, "schema"), "-c",
                                    os.path.join(self.dir, "gateway.json")],
                                   stdout=subprocess.DEVNULL,
                                   stderr=open(os.path.join(self.dir, "gateway.log"), "a"))

    def wait_connected(self, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            try:
                if any(d["device"] == DEVICE for d in self.rest("devices")):
                    return True
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError("gateway did not connect")

    def store_state(self):
        return self.rest(f"devices/{DEVICE}/resources/$gateway/store")

    def wait_drained(self, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            try:
                st = self.store_state()
                if st["depth"] <= 50 and st["inflight"] == 0:  # live rows keep coming
                    return st
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.25)
        raise RuntimeError("store did not drain")

    def stop_gateway(self):
        if self.gw:
            self.gw.send_signal(signal.SIGTERM)
            try:
                self.gw.wait(10)
            except subprocess.TimeoutExpired:
                self.gw.kill()
                self.gw.wait()
            self.gw = None

    def kill_gateway(self):
        self.gw.send_signal(signal.SIGKILL)
        self.gw.wait()
        self.gw = None

    def store_ids(self):
        """Row ids committed in the store file, and the integrity check's verdict."""
        db = sqlite3.connect(os.path.join(self.dir, "store.db"), timeout=10)
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        ids = {r[0] for r in db.execute("SELECT id FROM queue")}
        db.close()
        return ids, ok

    def bucket_ids(self):
        rows, after = [], 0
        while True:  # pages of at most 100,000 rows, in order of arrival
            page = self.rest(f"buckets/samples/data?after={after}&limit=100000", timeout=60)
            rows += page
            if len(page) < 100000:
                break
            after = page[-1]["seq"]
        seq = []
        epochs = set()
        for r in rows:
            uid = r["data"]["_id"]
            epoch, num = uid.rsplit("-", 1)
            epochs.add(epoch)
            seq.append((int(num), r["data"]["ts"]))
        return seq, epochs

    def cleanup(self):
        for p in (self.gw, self.broker):
            if p and p.poll() is None:
                p.kill()
                p.wait()


def check_delivery(env, accepted, out_of_order_ok=False):
    seq, epochs = env.bucket_ids()
    ids = [i for i, _ in seq]
    unique = set(ids)
    dups = len(ids) - len(unique)
    missing = sorted(accepted - unique)
    first_seen = []
    seen = set()
    for i in ids:
        if i not in seen:
            seen.add(i)
            first_seen.append(i)
    in_order = all(a < b for a, b in zip(first_seen, first_seen[1:]))
    log(f"bucket: {len(ids)} rows, {len(unique)} distinct ids, {dups} duplicate(s), "
        f"{len(missing)} accepted id(s) missing, order kept: {in_order}, epochs: {len(epochs)}")
    ok = not missing and len(epochs) == 1 and (in_order or out_of_order_ok)
    if missing:
        log("missing ids (first 10):", missing[:10])
    return ok, seq, dups


def run_outage(seconds):
    env = Env()
    try:
        env.start_broker()
        env.write_gateway_config(replay_rate=2500)
        env.start_gateway()
        env.wait_connected()
        time.sleep(2)
        log(f"broker killed: {seconds} s outage")
        t0 = time.time() * 1000
        env.kill_broker()
        time.sleep(seconds)
        t1 = time.time() * 1000
        env.start_broker()
        log("broker back; draining")
        env.wait_connected()
        time.sleep(1.5)
        st = env.store_state()
        log(f"store during the drain: depth {st['depth']}, delivered {st['delivered']}")
        mid_drain = st["depth"] > 500
        log("broker killed again in the middle of the drain, back after 2 s")
        env.kill_broker()
        time.sleep(2)
        env.start_broker()
        env.wait_connected()
        st = env.wait_drained()
        log(f"drained: {st}")
        env.stop_gateway()
        left, ok = env.store_ids()
        seq, _ = env.bucket_ids()
        delivered = {i for i, _ in seq}
        accepted = delivered | left
        produced_in_outage = sum(1 for _, ts in seq if t0 <= ts <= t1)
        log(f"samples produced during the {seconds} s outage and delivered after it: "
            f"{produced_in_outage}; accepted in all: {len(accepted)}, still queued at stop: "
            f"{len(left)}, store integrity: {ok}")
        # Every id from the first to the last accepted must exist: nothing lost in between.
        expected = set(range(min(accepted), max(accepted) + 1))
        good, _, dups = check_delivery(env, expected - left)
        if produced_in_outage < 10000 and seconds >= 60:
            log("FAIL: fewer than 10,000 samples were produced during the outage")
            good = False
        if ok != "ok":
            good = False
        if not mid_drain:
            log("FAIL: the drain had finished before the second broker kill: not exercised")
            good = False
        log("PASS" if good else "FAIL")
        return 0 if good else 1
    finally:
        env.cleanup()


def run_kill(n):
    env = Env()
    rng = random.Random(int(os.environ.get("GW_SEED", time.time())))
    try:
        env.start_broker()
        env.write_gateway_config(replay_rate=0)
        env.start_gateway()
        env.wait_connected()
        accepted = set()
        bad_integrity = 0
        env.control("refuse", {"on": True})
        env.control(f"devices/{USER}/{DEVICE}/drop")
        log(f"broker refusing connections; {n} SIGKILLs of the gateway follow")
        for k in range(n):
            if k == n // 2:
                env.control("refuse", {"on": False})
                log("broker accepting again: the rest of the kills hit the drain")
            time.sleep(rng.uniform(0.2, 1.5))
            env.kill_gateway()
            ids, ok = env.store_ids()
            accepted |= ids
            if ok != "ok":
                bad_integrity += 1
                log(f"kill {k + 1}: integrity_check: {ok}")
            env.start_gateway()
        log(f"{n} kills done, integrity_check failures: {bad_integrity}")
        env.wait_connected()
        st = env.wait_drained()
        log(f"drained: {st}")
        env.stop_gateway()
        left, ok = env.store_ids()
        seq, _ = env.bucket_ids()
        delivered = {i for i, _ in seq}
        # Rows delivered before any kill were accepted too.
        accepted |= delivered
        good, _, dups = check_delivery(env, accepted - left, out_of_order_ok=False)
        log(f"accepted rows: {len(accepted)}, still queued at the final stop: {len(left)}, "
            f"duplicates (allowed around restarts): {dups}")
        good = good and bad_integrity == 0 and ok == "ok"
        log("PASS" if good else "FAIL")
        return 0 if good else 1
    finally:
        env.cleanup()


def main():
    if not (os.path.exists(GATEWAYD) and os.path.exists(BROKER)):
        print("skip: iotmp-gatewayd or iotmp-broker not built")
        return 77
    mode = sys.argv[1] if len(sys.argv) > 1 else "outage"
    arg = int(sys.argv[2]) if len(sys.argv) > 2 else (60 if mode == "outage" else 20)
    return run_outage(arg) if mode == "outage" else run_kill(arg)


if __name__ == "__main__":
    sys.exit(main())
