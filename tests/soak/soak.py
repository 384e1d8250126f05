#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Soak run (issue 12): the daemon under steady load for a long time with a broker outage every
few minutes, watching memory, file descriptors and delivery.

Load: the sim adapter records a counter every 4 ms into bucket "samples" (250 rows/s through the
store), a Modbus instance polls 20 holding registers of Debian's pymodbus every 200 ms, and a REST
client reads resources through the broker (about 20 calls/s, with a DESCRIBE every 10 s).
Every OUTAGE_EVERY minutes the broker is killed for OUTAGE_SECS seconds; samples queue in the
store and drain when it returns.

Every 10 s it samples the daemon's RSS (VmRSS), fd count, store depth and the broker link; the
samples go to a TSV file. At the end the gateway is stopped and every accepted row is checked.

Pass criteria (printed with the figures):
  - RSS drift after the warm-up (the first 5 minutes, or 1/6 of a short run) under 1 MiB: RSS at
    the end of the run minus RSS at the end of the warm-up, both taken while connected and drained;
  - fd count constant: the same at every connected sample after the warm-up;
  - zero loss: every row id the store accepted, from the first to the last, is in the bucket
    (de-duplicated by _id), in order; store integrity_check ok;
  - every REST read answered with its own resource's value (no wrong answers), and the daemon
    never restarted or crashed.

  tests/soak/soak.py [--minutes 60] [--outage-every 10] [--outage-secs 60] [--tsv FILE]
Exit 0 pass, 1 fail, 77 skip (binaries missing).
"""
import argparse
import os
import subprocess
import sys
import threading
import time
import urllib.error

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from gwtest import BROKER, DEVICE, GATEWAYD, SRC, Checks, Env, log  # noqa: E402

RECORD = [{"bucket": "samples", "resources": ["s/counter"], "interval_ms": 4}]
SIM = {"type": "sim", "name": "s", "points": [
    {"name": "counter", "kind": "counter", "interval_ms": 4},
    {"name": "answer", "kind": "memory", "value": 42}]}


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Reader(threading.Thread):
    """Reads resources through the broker while the run lasts; counts wrong answers."""

    def __init__(self, env, modbus):
        super().__init__(daemon=True)
        self.env, self.modbus = env, modbus
        self.stop = threading.Event()
        self.ok = self.failed = self.wrong = 0
        self.wrong_examples = []

    def run(self):
        k = 0
        while not self.stop.is_set():
            k += 1
            try:
                if k % 200 == 0:
                    api = self.env.rest(f"devices/{DEVICE}/api", timeout=10)
                    if "s/answer" not in str(api):
                        self.wrong += 1
                        self.wrong_examples.append("DESCRIBE without s/answer")
                elif k % 2 == 0:
                    v = self.env.rest(f"devices/{DEVICE}/resources/s/answer", timeout=10)
                    if v.get("out") != 42 if isinstance(v, dict) else v != 42:
                        self.wrong += 1
                        self.wrong_examples.append(f"s/answer -> {v}")
                elif self.modbus:
                    v = self.env.rest(f"devices/{DEVICE}/resources/plc/r7", timeout=10)
                    got = v.get("out") if isinstance(v, dict) else v
                    if got != 1007:
                        self.wrong += 1
                        self.wrong_examples.append(f"plc/r7 -> {v}")
                self.ok += 1
            except (urllib.error.URLError, OSError, ValueError):
                self.failed += 1  # the broker is down or the gateway offline: expected in outages
                time.sleep(0.2)
            time.sleep(0.05)


def start_modbus(env):
    """pymodbus on a free port with holding registers 0..19 = 1000 + address; None if missing."""
    sim = os.path.join(SRC, "tests/integration/modbus/sim_server.py")
    p = subprocess.Popen(["/usr/bin/python3", sim, "--tcp", "0", "--units", "1"],
                         stdout=subprocess.PIPE, stderr=open(os.path.join(env.dir, "modbus.log"), "a"),
                         text=True)
    line = p.stdout.readline()
    if "READY" not in line:
        p.kill()
        p.wait()
        log("pymodbus not available: running without the Modbus load")
        return None, None
    kv = dict(x.split("=") for x in line.split()[1:])
    import socket
    with socket.create_connection(("127.0.0.1", int(kv["control"]))) as c:
        c.sendall(("SET 1 h 0 " + " ".join(str(1000 + a) for a in range(20)) + "\n").encode())
        c.recv(100)
    return p, int(kv["modbus"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--outage-every", type=float, default=10)
    ap.add_argument("--outage-secs", type=float, default=60)
    ap.add_argument("--tsv", default="")
    a = ap.parse_args()
    if not (os.path.exists(GATEWAYD) and os.path.exists(BROKER)):
        print("skip: iotmp-gatewayd or iotmp-broker not built")
        return 77
    total = a.minutes * 60
    warmup = min(300.0, total / 6)
    check = Checks()
    env = Env()
    mb = None
    reader = None
    try:
        mb, mb_port = start_modbus(env)
        env.write_adapter("sim.json", SIM)
        if mb:
            env.write_adapter("plc.json", {"type": "modbus", "name": "plc", "interval_ms": 200,
                                           "connections": [{
                "name": "line1", "tcp": {"host": "127.0.0.1", "port": mb_port},
                "devices": [{"name": "d1", "unit": 1, "points": [
                    {"name": f"r{i}", "table": "holding", "address": i, "type": "uint16"}
                    for i in range(20)]}]}]})
        env.start_broker()
        env.write_gateway_config(replay_rate=2000, record=RECORD)
        env.start_gateway()
        env.wait_connected()
        pid = env.gateway_pid()
        reader = Reader(env, mb is not None)
        reader.start()
        tsv = open(a.tsv or os.path.join(env.dir, "soak.tsv"), "w")
        tsv.write("# t_s\trss_kib\tfds\tdepth\tdelivered\tconnected\n")
        log(f"soak: {a.minutes:g} min, outage of {a.outage_secs:g} s every {a.outage_every:g} min, "
            f"warm-up {warmup:.0f} s; pid {pid}; samples in {tsv.name}")
        t0 = time.time()
        next_outage = a.outage_every * 60 / 2  # first outage mid-way through the first period
        samples = []  # (t, rss, fds, connected_and_drained)
        while True:
            t = time.time() - t0
            if t >= total:
                break
            if env.gw.poll() is not None:
                check(False, f"the daemon exited during the run (status {env.gw.returncode})")
                return check.verdict()
            if t >= next_outage and t + a.outage_secs + 60 < total:
                log(f"outage: broker killed at {t:.0f} s for {a.outage_secs:g} s")
                env.kill_broker()
                time.sleep(a.outage_secs)
                env.start_broker()
                env.wait_connected(timeout=120)
                st = env.wait_drained(timeout=600)
                log(f"outage over; drained after {time.time() - t0 - t - a.outage_secs:.0f} s: "
                    f"depth {st['depth']}, delivered {st['delivered']}")
                next_outage += a.outage_every * 60
                continue
            try:
                st = env.store_state()
                depth, delivered, up = st["depth"], st["delivered"], 1
            except (urllib.error.URLError, OSError, ValueError):
                depth, delivered, up = -1, -1, 0
            rss, nfd = status(pid, "VmRSS"), fds(pid)
            steady = up and 0 <= depth <= 50
            samples.append((t, rss, nfd, steady))
            tsv.write(f"{t:.0f}\t{rss}\t{nfd}\t{depth}\t{delivered}\t{up}\n")
            tsv.flush()
            if len(samples) % 30 == 1:
                log(f"t={t:5.0f} s  RSS {rss} KiB  fds {nfd}  depth {depth}  reads ok "
                    f"{reader.ok} wrong {reader.wrong} failed {reader.failed}")
            time.sleep(10)
        reader.stop.set()
        reader.join(15)
        hwm = status(pid, "VmHWM")
        after = [s for s in samples if s[0] >= warmup and s[3]]
        if len(after) < 2:
            check(False, "enough connected samples after the warm-up to judge drift")
        else:
            first, last = after[0], after[-1]
            drift = last[1] - first[1]
            rng = max(s[1] for s in after) - min(s[1] for s in after)
            log(f"RSS after warm-up: {first[1]} KiB at {first[0]:.0f} s, {last[1]} KiB at "
                f"{last[0]:.0f} s; drift {drift:+d} KiB, range {rng} KiB, peak (VmHWM) {hwm} KiB")
            check(drift < 1024, f"RSS drift after the warm-up {drift:+d} KiB < 1024 KiB")
            fdset = sorted({s[2] for s in after})
            check(len(fdset) == 1, f"fd count constant while connected after the warm-up: {fdset}")
        log(f"REST reads: {reader.ok} answered, {reader.failed} failed (outages), "
            f"{reader.wrong} wrong {reader.wrong_examples[:3]}")
        check(reader.wrong == 0, "no wrong answer to a resource read")
        check(reader.ok > total * 5, f"the reader kept calling ({reader.ok} answers)")
        rc = env.stop_gateway()
        check(rc == 0, f"clean stop (exit status {rc})")
        left, ok = env.store_ids()
        seq, epochs = env.bucket_ids()
        ids = [i for i, _ in seq]
        delivered = set(ids)
        accepted = delivered | left
        expected = set(range(min(accepted), max(accepted) + 1)) - left
        missing = sorted(expected - delivered)
        first_seen, seen = [], set()
        for i in ids:
            if i not in seen:
                seen.add(i)
                first_seen.append(i)
        in_order = all(x < y for x, y in zip(first_seen, first_seen[1:]))
        log(f"delivery: {len(accepted)} rows accepted, {len(delivered)} delivered "
            f"({len(ids) - len(delivered)} duplicates), {len(left)} still queued at stop, "
            f"{len(missing)} missing, order kept: {in_order}, store integrity: {ok}")
        check(not missing and len(epochs) == 1, f"zero loss ({len(missing)} missing)")
        check(in_order, "order kept")
        check(ok == "ok", "store integrity_check")
        return check.verdict()
    finally:
        if reader:
            reader.stop.set()
        if mb:
            mb.kill()
            mb.wait()
        env.cleanup()


if __name__ == "__main__":
    sys.exit(main())
