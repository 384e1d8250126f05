#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Memory and start-up targets of iotmp-gatewayd (release build), each figure printed beside its
target and whether it is met (never asserted), and beside a floor measured in the same run:
  (a) RSS idle: connected to iotmp-broker, no adapter / one sim point.            target < 8 MB
  (b) RSS with N Modbus TCP devices x 100 points polled every second (bench_fast_modbus_server)
      AND M samples queued in the store (broker down, so they stay queued; the store file is
      filled beforehand with bench_store_fill, the depth checked on the daemon's /metrics).
      Full run: N = 1,000, M = 1,000,000.                                          target < 40 MB
  (c) start-up time: exec of the daemon -> its first Modbus request at the fast server
      (CLOCK_MONOTONIC on both sides), one device x 100 points, median of several runs, with an
      empty store and with M queued samples.                 target < 100 ms with the empty store
      Floor: exec of a plain libmodbus client -> its first request, same server, same clock.
  (d) remote write: REST POST to the broker -> RUN with input to the gateway -> FC 6 (and the
      FC 3 read-back) at the fast server -> answer; p50/p99/p99.9 over K writes, one at a time on
      a kept-alive HTTP connection.                                               target p99 < 5 ms
      Floors: loopback TCP round trip; raw libmodbus FC 6 round trip to the same server; a REST
      read of a sim point (broker and HTTP path without Modbus).
    targets.py [--quick]      (quick: N = 1,000, M = 200,000, 3 start-ups, K = 300)
TSV into $GW_BENCH_DATA: daemon_targets.tsv (figure, value, unit, target, met),
daemon_write_latency.tsv (percentile, gateway_ms, raw_modbus_ms, tcp_rtt_ms, rest_floor_ms),
daemon_startup.tsv (store_rows, run, startup_ms).
Exit 2 when it could not run."""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

FILL = os.path.join(bl.BUILD, "tests/bench/daemon/bench_store_fill")
SIM = {"type": "sim", "name": "sim", "points": [{"name": "t", "kind": "counter",
                                                 "interval_ms": 1000}]}
figures = []  # (figure, value, unit, target, met)


def report(name, value, unit, target, note=""):
    met = bl.verdict(value, target)
    figures.append((name, round(value, 3), unit, target, met))
    print(f"  {name:<44} {value:>10.2f} {unit:<4} target < {target:<6} {met:<8} {note}",
          flush=True)


def metrics(port):
    txt = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    res = {}
    for line in txt.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            k, _, v = line.partition(" ")
            try:
                res[k] = float(v)
            except ValueError:
                pass
    return res


def wait_first_request(srv, t_exec_ms, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = srv.stats()
        firsts = [c["first_ms"] for c in st["connections"]
                  if c["requests"] > 0 and c["first_ms"] >= t_exec_ms]
        if firsts:
            return min(firsts)
        time.sleep(0.02)
    raise RuntimeError("no Modbus request within %d s of the exec" % timeout)


def wait_polling(srv, n, since_ms, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = srv.stats()
        if sum(1 for c in st["connections"] if c["first_ms"] >= since_ms and c["requests"] > 1) >= n:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the gateway did not poll {n} devices within {timeout} s")


def idle_rss(srv, secs):
    """(a): RSS connected, with no adapter and with one sim point."""
    out = []
    for label, adapters in (("no adapter", []), ("one sim point", [("sim.json", SIM)])):
        env = bl.gwtest.Env()
        try:
            env.start_broker()
            env.write_gateway_config()
            for name, cfg in adapters:
                env.write_adapter(name, cfg)
            env.start_gateway()
            env.wait_connected(30)
            time.sleep(secs)
            st = bl.status(env.gateway_pid())
            out.append((label, st["VmRSS"] / 1024.0, st["VmHWM"] / 1024.0,
                        st["RssAnon"] / 1024.0, st["RssFile"] / 1024.0))
            env.stop_gateway()
        finally:
            env.cleanup()
            shutil.rmtree(env.dir, ignore_errors=True)
    return out


def loaded_rss(srv, ndev, fixture, rows, secs):
    """(b): broker down, ndev devices polled, the store holding `rows` samples."""
    env = bl.gwtest.Env()
    try:
        env.tcp = bl.gwtest.free_port()  # nothing listens there: the uplink keeps retrying
        mport = bl.gwtest.free_port()
        env.write_gateway_config(extra={"metrics": {"listen": f"127.0.0.1:{mport}"}})
        env.write_adapter("mb.json", bl.modbus_config("mb", srv.port, ndev, 100))
        if fixture:
            shutil.copy(fixture, os.path.join(env.dir, "store.db"))
        since = time.monotonic() * 1000.0
        env.start_gateway()
        wait_polling(srv, ndev, since, 120)
        time.sleep(secs)
        st = bl.status(env.gateway_pid())
        m = metrics(mport)
        depth = m.get("iotmp_gateway_store_depth", float("nan"))
        env.stop_gateway()
        return st["VmRSS"] / 1024.0, st["VmHWM"] / 1024.0, depth, st["Threads"], st["RssAnon"] / 1024.0
    finally:
        env.cleanup()
        shutil.rmtree(env.dir, ignore_errors=True)


def startup_runs(srv, fixture, runs):
    """(c): ms from exec to the first Modbus request; one device x 100 points, broker up."""
    env = bl.gwtest.Env()
    times = []
    try:
        env.start_broker()
        env.write_gateway_config()
        env.write_adapter("mb.json", bl.modbus_config("mb", srv.port, 1, 100))
        db = os.path.join(env.dir, "store.db")
        for _ in range(runs):
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(db + suffix):
                    os.unlink(db + suffix)
            if fixture:
                shutil.copy(fixture, db)
            t_exec = time.monotonic() * 1000.0
            env.start_gateway()
            first = wait_first_request(srv, t_exec)
            times.append(first - t_exec)
            env.stop_gateway()
    finally:
        env.cleanup()
        shutil.rmtree(env.dir, ignore_errors=True)
    return times


def startup_floor(srv, runs):
    times = []
    for _ in range(runs):
        t_exec = time.monotonic() * 1000.0
        subprocess.run([bl.FLOOR, "read", str(srv.port), "0"], capture_output=True, timeout=30)
        times.append(wait_first_request(srv, t_exec) - t_exec)
    return times


class Rest:
    """One kept-alive HTTP connection to the broker (reopened if the broker closes it)."""

    def __init__(self, env):
        self.env = env
        self.conn = None

    def call(self, resource, body=None):
        path = f"/v3/users/{bl.gwtest.USER}/devices/{bl.gwtest.DEVICE}/resources/{resource}"
        data = None if body is None else json.dumps(body)
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.env.http, timeout=30)
            try:
                self.conn.request("GET" if body is None else "POST", path, body=data,
                                  headers={"Content-Type": "application/json"})
                r = self.conn.getresponse()
                out = r.read()
                if r.status != 200:
                    raise RuntimeError(f"{path}: HTTP {r.status} {out[:200]!r}")
                return json.loads(out)
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise


def write_latency(srv, count):
    """(d): remote writes through the broker; the REST read of a sim point as the path floor."""
    env = bl.gwtest.Env()
    try:
        env.start_broker()
        env.write_gateway_config()
        env.write_adapter("mb.json", bl.modbus_config("mb", srv.port, 1, 100, writable=True))
        env.write_adapter("sim.json", SIM)
        env.start_gateway()
        env.wait_connected(30)
        rest = Rest(env)
        for i in range(20):  # warm-up
            rest.call("mb/d0p0", i)
            rest.call("sim/t")
        lat, bad = [], 0
        for i in range(count):
            v = (i * 37 + 1) % 65536
            t0 = time.perf_counter()
            got = rest.call("mb/d0p0", v)
            lat.append((time.perf_counter() - t0) * 1000.0)
            bad += got != v
        floor = []
        for i in range(count):
            t0 = time.perf_counter()
            rest.call("sim/t")
            floor.append((time.perf_counter() - t0) * 1000.0)
        env.stop_gateway()
        return lat, floor, bad
    finally:
        env.cleanup()
        shutil.rmtree(env.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    bl.need(bl.FAST_SERVER, bl.FLOOR, FILL, bl.gwtest.GATEWAYD, bl.gwtest.BROKER)
    ndev, rows = 1000, (200000 if a.quick else 1000000)
    runs, writes = (3, 300) if a.quick else (7, 2000)
    secs = 3 if a.quick else 10
    work = bl.gwtest.Env()  # a scratch folder for the server and the store fixture
    srv = bl.FastServer(work.dir)
    try:
        fixture = os.path.join(work.dir, "fixture.db")
        out = subprocess.run([FILL, fixture, str(rows), "1024"], capture_output=True, text=True)
        if out.returncode != 0:
            print("bench_store_fill failed: " + out.stderr)
            return 2
        print(f"store fixture: {out.stdout.strip()} "
              f"({os.path.getsize(fixture) / 2**20:.0f} MiB file)")
        print("Targets (release build; figures only, never asserted):")

        for label, rss, hwm, anon, fil in idle_rss(srv, 2 if a.quick else 5):
            report(f"(a) RSS idle, connected, {label}", rss, "MiB", 8,
                   f"(peak {hwm:.1f}; anonymous {anon:.1f} + file-backed {fil:.1f} MiB)")

        rss, hwm, depth, thr, anon = loaded_rss(srv, ndev, fixture, rows, secs)
        report(f"(b) RSS {ndev} devices x 100 pts + {rows:,} queued", rss, "MiB", 40,
               f"(peak {hwm:.1f}, anonymous {anon:.1f} MiB, {thr} threads, store depth "
               f"{depth:,.0f})")
        if not a.quick:
            rss0, hwm0, _, _, _ = loaded_rss(srv, ndev, None, 0, secs)
            print(f"      same without queued samples: {rss0:.1f} MiB (peak {hwm0:.1f} MiB); "
                  f"the queue adds {rss - rss0:+.1f} MiB")

        fl = startup_floor(srv, runs)
        empty = startup_runs(srv, None, runs)
        full = startup_runs(srv, fixture, runs)
        med = bl.percentile(empty, 0.5)
        report("(c) start-up to first poll, empty store", med, "ms", 100,
               f"(median of {runs}: {', '.join(f'{t:.0f}' for t in empty)}; floor: exec of a "
               f"libmodbus client to its first request {bl.percentile(fl, 0.5):.1f} ms)")
        medf = bl.percentile(full, 0.5)
        figures.append((f"(c) start-up to first poll, {rows} queued", round(medf, 3), "ms", "-",
                        "-"))
        print(f"  {'(c) start-up to first poll, ' + format(rows, ',') + ' queued':<44} {medf:>10.2f}"
              f" ms   (no target; median of {runs}: {', '.join(f'{t:.0f}' for t in full)})")

        lat, rfloor, bad = write_latency(srv, writes)
        raw = bl.floor_write(srv.port, writes)
        p = {q: bl.percentile(lat, q) for q in (0.5, 0.99, 0.999)}
        report(f"(d) remote write p99 ({writes} writes)", p[0.99], "ms", 5,
               f"(p50 {p[0.5]:.2f}, p99.9 {p[0.999]:.2f} ms; {bad} wrong read-backs)")
        rw, rt = raw.get("write_us", {}), raw.get("tcp_rtt_us", {})
        print(f"      floors: loopback TCP round trip p50/p99/p99.9 "
              f"{rt.get('p50', 0) / 1000:.3f}/{rt.get('p99', 0) / 1000:.3f}/"
              f"{rt.get('p999', 0) / 1000:.3f} ms; raw libmodbus FC 6 "
              f"{rw.get('p50', 0) / 1000:.3f}/{rw.get('p99', 0) / 1000:.3f}/"
              f"{rw.get('p999', 0) / 1000:.3f} ms; REST read of a sim point "
              f"{bl.percentile(rfloor, 0.5):.2f}/{bl.percentile(rfloor, 0.99):.2f}/"
              f"{bl.percentile(rfloor, 0.999):.2f} ms")
        print(f"      ratio gateway write / REST floor at p50: "
              f"{p[0.5] / bl.percentile(rfloor, 0.5):.2f}")

        bl.write_tsv("daemon_targets", ["figure", "value", "unit", "target", "met"], figures)
        keys = (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))
        bl.write_tsv("daemon_write_latency",
                     ["percentile", "gateway_ms", "raw_modbus_ms", "tcp_rtt_ms", "rest_floor_ms"],
                     [[k, round(bl.percentile(lat, q), 4), round(rw.get(k, 0) / 1000.0, 4),
                       round(rt.get(k, 0) / 1000.0, 4), round(bl.percentile(rfloor, q), 4)]
                      for k, q in keys])
        bl.write_tsv("daemon_startup", ["store_rows", "run", "startup_ms"],
                     [[0, i, round(t, 3)] for i, t in enumerate(empty)] +
                     [[rows, i, round(t, 3)] for i, t in enumerate(full)])
        return 0
    except Exception as e:
        print(f"targets: could not run: {e}")
        return 2
    finally:
        srv.stop()
        work.cleanup()
        if not os.environ.get("GW_BENCH_KEEP"):
            shutil.rmtree(work.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
