#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""fault.modbus_mix (issue 12 item 4): the Modbus adapter inside iotmp-gatewayd against 50 slaves
behind faultproxy's Modbus mode.

Slaves: units 1..50 (healthy) and 52 (dead: the proxy never answers it) in one pymodbus process
(mb_slaves.py), unit 51 in its own pymodbus process that is SIGKILLed and restarted every 30 s
(down 2 s each time). Every holding register a of unit u holds (u * 100 + a) & 0xFFFF, so every
value the gateway emits can be checked. The proxy, for every request: 10 % the response is dropped
(the client times out), 5 % it answers exception 0x04 itself, 1 % the response is corrupted.
Modbus TCP has no checksum: a flipped bit in register data is undetectable by any client, so
the proxy only corrupts what the protocol lets a client detect (transaction id, function code,
byte count, a truncated PDU with a consistent MBAP length); see tests/faults/proxy/README.md.

The daemon polls 2 registers of each unit every second (5 connections of 10 units through the
proxy, the dead unit on the first, the restarting one on its own). The test subscribes to every
point through the broker (event streams, one sample per poll) and checks every sample.

Pass criteria (printed with the measured numbers):
  - no wrong value emitted (every sample of every point equals its register's value);
  - every healthy unit and the restarting unit (after each restart) emitted values;
  - healthy units keep their schedule: p99 of the lateness of their poll cycles, measured at the
    proxy (cycle start to cycle start minus the interval), is below 1 interval;
  - the faults happened (dropped, exception and corrupted responses counted by the proxy).
About 2 minutes. Exit 0 pass, 1 fail, 77 skip (no daemon, broker or pymodbus).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../integration"))
sys.path.insert(0, os.path.join(HERE, "../proxy"))
from gwtest import BROKER, DEVICE, GATEWAYD, USER, Checks, Env, free_port, log  # noqa: E402
from faultctl import FaultProxy  # noqa: E402

PY = "/usr/bin/python3"  # Debian's interpreter, which sees python3-pymodbus
HEALTHY = list(range(1, 51))
RESTART, DEAD = 51, 52
INTERVAL_MS = 1000
RUN_S = int(os.environ.get("GW_MIX_SECONDS", "75"))
RESTART_EVERY_S = 30


def value(unit, addr):
    return (unit * 100 + addr) & 0xFFFF


def start_slaves(units, port, logf):
    p = subprocess.Popen([PY, os.path.join(HERE, "mb_slaves.py"), "--units", units, "--port",
                          str(port)], stdout=subprocess.PIPE, stderr=logf, text=True)
    line = p.stdout.readline()
    if not line.startswith("READY"):
        p.kill()
        p.wait()
        raise RuntimeError("mb_slaves did not start: " + line)
    return p, int(line.split("=")[1])



def point(u, a):
    return f"u{u:02d}_a{a}"


def percentile(xs, q):
    xs = sorted(xs)
    if not xs:
        return 0.0
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    if not (os.path.exists(GATEWAYD) and os.path.exists(BROKER)):
        print("skip: iotmp-gatewayd or iotmp-broker not built")
        return 77
    if subprocess.run([PY, "-c", "import pymodbus"], capture_output=True).returncode:
        print("skip: python3-pymodbus is not installed")
        return 77
    check = Checks()
    env = Env()
    procs = {}
    proxy = None
    slog = open(os.path.join(env.dir, "slaves.log"), "a")
    try:
        env.start_broker()
        procs["main"], main_port = start_slaves(f"1-50,{DEAD}", 0, slog)
        rport = free_port()
        procs["restart"], _ = start_slaves(str(RESTART), rport, slog)
        proxy = FaultProxy.start([("127.0.0.1", main_port), ("127.0.0.1", rport)],
                                 log=open(os.path.join(env.dir, "proxy.log"), "a"))
        proxy.cmd(f"modbus timeout=0.10 exception=0.05 code=4 corrupt=0.01 dead={DEAD}")

        def device(u):
            return {"name": f"unit{u:02d}", "unit": u, "timeout_ms": 150, "retries": 1,
                    "points": [{"name": point(u, a), "table": "holding", "address": a}
                               for a in (0, 1)]}
        conns = []
        for c in range(10):
            units = HEALTHY[c * 5:(c + 1) * 5] + ([DEAD] if c == 0 else [])
            conns.append({"name": f"c{c}", "tcp": {"host": "127.0.0.1", "port": proxy.ports[0]},
                          "reconnect_ms": 200, "reconnect_max_ms": 2000,
                          "devices": [device(u) for u in units]})
        conns.append({"name": "c10", "tcp": {"host": "127.0.0.1", "port": proxy.ports[1]},
                      "reconnect_ms": 200, "reconnect_max_ms": 2000,
                      "devices": [device(RESTART)]})
        env.write_adapter("mb.json", {"type": "modbus", "name": "mb",
                                      "interval_ms": INTERVAL_MS, "connections": conns})
        env.write_gateway_config()
        env.start_gateway()
        env.wait_connected()
        points = [(u, a) for u in HEALTHY + [RESTART, DEAD] for a in (0, 1)]
        streams = {}
        base = f"http://127.0.0.1:{env.http}/v3/users/{USER}/devices/{DEVICE}"
        for u, a in points:
            req = urllib.request.Request(f"{base}/resources/mb/{point(u, a)}/stream",
                                         data=b"{}", method="POST")
            streams[(u, a)] = json.load(urllib.request.urlopen(req, timeout=10))["stream"]
        log(f"{len(streams)} event streams open; faults on; running {RUN_S} s with unit "
            f"{RESTART} restarted every {RESTART_EVERY_S} s")
        proxy.cmd("reset")
        t0 = time.time()
        restarts = []
        while time.time() < t0 + RUN_S:
            time.sleep(0.5)
            if time.time() >= t0 + RESTART_EVERY_S * (len(restarts) + 1) and \
                    time.time() < t0 + RUN_S - 10:
                procs["restart"].send_signal(signal.SIGKILL)
                procs["restart"].wait()
                time.sleep(2)
                procs["restart"], _ = start_slaves(str(RESTART), rport, slog)
                restarts.append(time.time())
                log(f"unit {RESTART}: slave killed and restarted ({len(restarts)})")
        counters = proxy.counters()
        times = {int(k): v for k, v in json.loads(proxy.cmd("mbtimes")).items()}
        samples = {}
        for key, sid in streams.items():
            got, after = [], 0
            while True:
                page = json.load(urllib.request.urlopen(
                    f"{base}/streams/{sid}?after={after}&wait=0", timeout=30))
                got += page["samples"]
                if not page["samples"]:
                    break
                after = page["next"]
            samples[key] = [s for s in got if s["ts"] >= t0 * 1000]
        stats = env.rest(f"devices/{DEVICE}/resources/mb/_stats/c0")
        log(f"adapter stats of c0: {json.dumps(stats)[:600]}")
        rc = env.stop_gateway()
        check(rc == 0, f"gateway exit status {rc}")

        # 1. every emitted value is right
        total = wrong = nulls = 0
        for (u, a), ss in samples.items():
            for s in ss:
                v = s["data"]
                if v is None:
                    nulls += 1
                    continue
                total += 1
                if v != value(u, a):
                    wrong += 1
                    if wrong <= 10:
                        log(f"WRONG: {point(u, a)} = {v!r} at {s['ts']}, expected {value(u, a)}")
        log(f"samples checked: {total} values, {nulls} null, {wrong} wrong")
        check(wrong == 0 and total > 0, f"no wrong value among {total} emitted ({wrong} wrong)")
        # 2. everyone healthy delivered; the restarting unit after each restart; the dead never
        per_unit = {u: sum(len(samples[(u, a)]) for a in (0, 1)) for u in HEALTHY}
        low = min(per_unit.values())
        check(low > 0, f"every healthy unit emitted values (fewest: {low} samples in {RUN_S} s)")
        rts = sorted(s["ts"] / 1000 for a in (0, 1) for s in samples[(RESTART, a)]
                     if s["data"] is not None)
        after_each = [sum(1 for t in rts if t > r) for r in restarts]
        check(len(restarts) >= 2 and all(n > 0 for n in after_each),
              f"unit {RESTART}: {len(restarts)} restart(s), values after each: {after_each}")
        dead_vals = sum(1 for a in (0, 1) for s in samples[(DEAD, a)] if s["data"] is not None)
        check(dead_vals == 0, f"dead unit {DEAD}: {dead_vals} values; its requests: "
              f"{len(times.get(DEAD, []))} in {RUN_S} s (quarantined, probed with back-off)")
        # 3. schedule of the healthy units, measured at the proxy
        late = []
        cycles = 0
        unit_p99 = {}
        for u in HEALTHY:
            ts = sorted(times.get(u, []))
            starts = [t for i, t in enumerate(ts) if i == 0 or t - ts[i - 1] > INTERVAL_MS / 2000]
            cycles += len(starts)
            mine = [max(0.0, (b - a) * 1000 - INTERVAL_MS) for a, b in zip(starts, starts[1:])]
            unit_p99[u] = percentile(mine, 0.99)
            late += mine
        wu = max(unit_p99, key=unit_p99.get)
        log(f"worst unit: {wu} (p99 lateness {unit_p99[wu]:.0f} ms); units 1-5 share their "
            f"connection with the dead unit: p99 {max(unit_p99[u] for u in range(1, 6)):.0f} ms")
        p50, p99, worst = percentile(late, 0.5), percentile(late, 0.99), max(late or [0])
        log(f"healthy units: {cycles} poll cycles seen at the proxy; lateness p50 {p50:.0f} ms, "
            f"p99 {p99:.0f} ms, max {worst:.0f} ms (interval {INTERVAL_MS} ms)")
        check(cycles >= len(HEALTHY) * RUN_S * 0.5, f"{cycles} cycles (at least half the schedule)")
        check(p99 < INTERVAL_MS, f"p99 lateness {p99:.0f} ms < 1 interval ({INTERVAL_MS} ms)")
        # 4. the faults happened
        log("proxy counters: " + json.dumps(counters, sort_keys=True))
        check(counters.get("mb_dropped_responses", 0) > 0 and counters.get("mb_exceptions", 0) > 0
              and counters.get("mb_corrupted", 0) > 0, "dropped, exception and corrupted "
              "responses were all injected")
        return check.verdict()
    finally:
        if proxy:
            proxy.stop()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        env.cleanup()


if __name__ == "__main__":
    sys.exit(main())
