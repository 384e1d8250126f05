# SPDX-License-Identifier: Apache-2.0
"""Shared harness for the Python integration tests: a temporary folder with credentials, the test
broker (iotmp-broker) on free ports, and the daemon (iotmp-gatewayd) with a generated
configuration. Processes are stopped by pid (cleanup() kills whatever is left)."""
import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

BUILD = os.environ.get("GW_BUILD_DIR", "build")
SRC = os.environ.get("GW_SOURCE_DIR", ".")
GATEWAYD = os.path.join(BUILD, "gateway/daemon/iotmp-gatewayd")
BROKER = os.path.join(BUILD, "tests/broker/iotmp-broker")
USER, DEVICE, PASSWORD = "demo", "gw1", "s3cret"


def free_port():
    """A free TCP port on 127.0.0.1 for a program that must be told its port in advance (a config
    file). It is drawn outside the kernel's ephemeral range, so the port-0 binds of the brokers and
    clients that other tests start in parallel cannot take it between this check and its use."""
    import random
    import socket
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    ranges = [r for r in ((1024, lo - 1), (hi + 1, 65535)) if r[1] - r[0] > 1000]
    for _ in range(200):
        a, b = random.choice(ranges)
        port = random.randint(a, b)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port outside the ephemeral range")


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


class Checks:
    """Named checks: each is logged as ok/FAIL; failed() tells whether any failed."""

    def __init__(self):
        self.failures = []

    def __call__(self, cond, what):
        log(("ok   " if cond else "FAIL ") + what)
        if not cond:
            self.failures.append(what)

    def verdict(self):
        log("PASS" if not self.failures else f"FAIL: {len(self.failures)} check(s)")
        return 1 if self.failures else 0


class Env:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="gwtest-")
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

    def write_adapter(self, filename, config):
        with open(os.path.join(self.dir, "adapters.d", filename), "w") as f:
            json.dump(config, f)

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
    def write_gateway_config(self, replay_rate=0, record=None, extra=None):
        cfg = {
            "uplink": {"url": f"iotmp://127.0.0.1:{self.tcp}", "user": USER, "device": DEVICE,
                       "password_file": os.path.join(self.dir, "secret"), "keepalive": 10,
                       "reconnect_max": 1, "connect_timeout": 5},
            "store": {"path": os.path.join(self.dir, "store.db"), "commit_ms": 100,
                      "replay_rate": replay_rate, "budget_mb": 256},
            "record": record or [],
            "adapters_dir": os.path.join(self.dir, "adapters.d"),
        }
        cfg.update(extra or {})
        with open(os.path.join(self.dir, "gateway.json"), "w") as f:
            json.dump(cfg, f)

    def start_gateway(self, env=None):
        """env: extra environment variables (e.g. LD_PRELOAD for the fault tests)."""
        self.gw = subprocess.Popen([GATEWAYD, "--schema-dir", os.path.join(SRC, "schema"), "-c",
                                    os.path.join(self.dir, "gateway.json")],
                                   stdout=subprocess.DEVNULL,
                                   stderr=open(os.path.join(self.dir, "gateway.log"), "a"),
                                   env=dict(os.environ, **env) if env else None)

    def wait_connected(self, timeout=30):
        end = time.time() + timeout
        while time.time() < end:
            try:
                if any(d["device"] == DEVICE for d in self.rest("devices")):
                    return True
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(0.1)
        tail = ""
        try:
            with open(os.path.join(self.dir, "gateway.log")) as f:
                tail = "".join(f.readlines()[-5:])
        except OSError:
            pass
        raise RuntimeError("gateway did not connect; its log ends with:\n" + tail)

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

    def gateway_pid(self):
        return self.gw.pid

    def rss_kib(self, proc):
        with open(f"/proc/{proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def stop_gateway(self):
        """SIGTERM, as systemd stops it; returns the exit status (0 = clean; under ASan a leak
        or a sanitizer report makes it non-zero)."""
        rc = None
        if self.gw:
            self.gw.send_signal(signal.SIGTERM)
            try:
                rc = self.gw.wait(20)
            except subprocess.TimeoutExpired:
                self.gw.kill()
                self.gw.wait()
                rc = "timeout"
            self.gw = None
        return rc

    def kill_gateway(self):
        self.gw.send_signal(signal.SIGKILL)
        self.gw.wait()
        self.gw = None

    def store_ids(self, path=None):
        """Row ids committed in the store file (default: store.db in the test folder), and the
        integrity check's verdict."""
        db = sqlite3.connect(path or os.path.join(self.dir, "store.db"), timeout=10)
        ok = db.execute("PRAGMA integrity_check").fetchone()[0]
        ids = {r[0] for r in db.execute("SELECT id FROM queue")}
        db.close()
        return ids, ok

    def bucket_ids(self, bucket="samples"):
        rows, after = [], 0
        while True:  # pages of at most 100,000 rows, in order of arrival
            page = self.rest(f"buckets/{bucket}/data?after={after}&limit=100000", timeout=60)
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


