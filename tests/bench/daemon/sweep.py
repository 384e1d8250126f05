#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Device sweep: the real iotmp-gatewayd, connected to the test broker, polling N Modbus TCP
devices x 100 holding registers once a second (one 100-register read per device per second; the
fast server's values change every second, so every value is published) against
bench_fast_modbus_server, for N in 10, 50, 100, 200, 500, 1000 (--quick: 10 and 100).
Per N, over a measuring window after a warm-up: points/s polled (requests counted at the server
x 100), the daemon's CPU (% of one core, /proc utime+stime), RSS and peak RSS, threads, poll
lateness from the adapter's _stats resources read through the broker's REST API (lateness reset
after the warm-up; p99 = the worst connection's p99, max = the worst poll, missed = sum of missed
deadlines), and the server's view (the worst connection's p99 interval between two of its requests).
Floor, same run: one plain libmodbus client reading 100 registers back to back against the same
server; the ratio is the gateway's request rate to that raw rate (how much of the server's
capacity the paced polling uses).
Prints figures only; never asserts. Exit 2 when it could not run.
    sweep.py [--quick] [--devices 10,100,...] [--secs S]
TSV: $GW_BENCH_DATA/daemon_sweep.tsv:
    devices points_per_s cpu_pct rss_mib late_p99_ms missed late_max_ms floor_req_per_s ratio
"""
import argparse
import concurrent.futures
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as bl  # noqa: E402

NPTS = 100


def wait_polling(srv, n, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = srv.stats()
        if sum(1 for c in st["connections"] if c["requests"] > 1) >= n:
            return st
        time.sleep(0.5)
    raise RuntimeError(f"the gateway did not open {n} polling connections within {timeout} s")


def all_stats(env, n, body=None):
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        return list(ex.map(lambda i: bl.rest_call(env, f"mb/_stats/c{i}", body), range(n)))


def run_one(n, secs, warm):
    env = bl.gwtest.Env()
    srv = bl.FastServer(env.dir)
    try:
        floor = bl.floor_read(srv.port, min(2.0, secs))
        env.start_broker()
        env.write_gateway_config()
        env.write_adapter("mb.json", bl.modbus_config("mb", srv.port, n, NPTS))
        t_exec = time.monotonic()
        env.start_gateway()
        env.wait_connected(120)
        wait_polling(srv, n, 120)
        t_ready = time.monotonic() - t_exec
        time.sleep(warm)
        all_stats(env, n, {"reset_lateness": True})
        srv.reset_intervals()
        pid = env.gateway_pid()
        s0, c0 = srv.stats(), bl.cpu_seconds(pid)
        time.sleep(secs)
        s1, c1 = srv.stats(), bl.cpu_seconds(pid)
        ps = bl.status(pid)
        stats = all_stats(env, n)
        dt = (s1["now_ms"] - s0["now_ms"]) / 1000.0
        req_s = (s1["requests"] - s0["requests"]) / dt
        ivs = [c["interval_p99_ms"] for c in s1["connections"] if c["requests"] > 2]
        res = {
            "devices": n,
            "req_s": req_s,
            "points_per_s": req_s * NPTS,
            "cpu_pct": 100.0 * (c1 - c0) / dt,
            "rss_mib": ps["VmRSS"] / 1024.0,
            "hwm_mib": ps["VmHWM"] / 1024.0,
            "threads": ps["Threads"],
            "polls": sum(s["polls"] for s in stats),
            "late_p50_ms": max(s["late_p50_us"] for s in stats) / 1000.0,
            "late_p99_ms": max(s["late_p99_us"] for s in stats) / 1000.0,
            "late_max_ms": max(s["late_max_us"] for s in stats) / 1000.0,
            "missed": sum(s["missed_deadlines"] for s in stats),
            "server_iv_p99_ms": max(ivs) if ivs else float("nan"),
            "floor": floor,
            "ratio": req_s / floor if floor else float("nan"),
            "ready_s": t_ready,
        }
        rc = env.stop_gateway()
        if rc != 0:
            print(f"  (daemon exit status {rc}; log in {env.dir})")
        return res
    finally:
        env.cleanup()
        srv.stop()
        if not os.environ.get("GW_BENCH_KEEP"):
            shutil.rmtree(env.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--devices", default=None)
    ap.add_argument("--secs", type=float, default=None)
    a = ap.parse_args()
    bl.need(bl.FAST_SERVER, bl.FLOOR, bl.gwtest.GATEWAYD, bl.gwtest.BROKER)
    devices = [int(x) for x in a.devices.split(",")] if a.devices else (
        [10, 100] if a.quick else [10, 50, 100, 200, 500, 1000])
    secs = a.secs or (5.0 if a.quick else 15.0)
    warm = 2.0 if a.quick else 3.0
    print(f"Device sweep: iotmp-gatewayd (release) + iotmp-broker, N Modbus TCP devices x {NPTS} "
          f"holding registers polled every 1 s against bench_fast_modbus_server; {secs:.0f} s "
          f"window after {warm:.0f} s warm-up. Target: no missed deadline at 1,000 x 100 per second.")
    print(f"{'devices':>7} {'points/s':>9} {'CPU %':>6} {'RSS MiB':>8} {'peak':>6} {'thr':>5} "
          f"{'late p50':>9} {'p99 ms':>7} {'max ms':>7} {'missed':>6} {'srv iv99':>8} "
          f"{'raw req/s':>9} {'ratio':>6} {'start s':>7}")
    rows = []
    for n in devices:
        try:
            r = run_one(n, secs, warm)
        except Exception as e:  # a benchmark that could not run is reported, not hidden
            print(f"{n:>7} could not run: {e}")
            return 2
        rows.append(r)
        print(f"{r['devices']:>7} {r['points_per_s']:>9.0f} {r['cpu_pct']:>6.1f} "
              f"{r['rss_mib']:>8.1f} {r['hwm_mib']:>6.1f} {r['threads']:>5} "
              f"{r['late_p50_ms']:>9.2f} {r['late_p99_ms']:>7.2f} {r['late_max_ms']:>7.2f} "
              f"{r['missed']:>6} {r['server_iv_p99_ms']:>8.1f} {r['floor']:>9.0f} "
              f"{r['ratio']:>6.3f} {r['ready_s']:>7.2f}", flush=True)
    print("points/s = requests counted at the server x 100 (expected: devices x 100); ratio = the "
          "gateway's request rate / one raw libmodbus client's back-to-back rate on the same "
          "server; late = how late polls started (adapter _stats, worst connection's p50/p99, worst "
          "poll); srv iv99 = the server's view: the worst connection's p99 interval between two of "
          "its requests in the window (1000 ms when on time); start s = exec to every device polled.")
    big = [r for r in rows if r["devices"] == 1000]
    if big:
        r = big[0]
        print(f"target: no missed deadline at 1,000 devices x 100 points/s: missed {r['missed']} "
              f"-> {'met' if r['missed'] == 0 else 'MISSED'}")
    path = bl.write_tsv("daemon_sweep", ["devices", "points_per_s", "cpu_pct", "rss_mib",
                                          "late_p99_ms", "missed", "late_max_ms",
                                          "floor_req_per_s", "ratio"],
                        [[r["devices"], round(r["points_per_s"]), round(r["cpu_pct"], 2),
                          round(r["rss_mib"], 2), round(r["late_p99_ms"], 3), r["missed"],
                          round(r["late_max_ms"], 3), round(r["floor"]), round(r["ratio"], 4)]
                         for r in rows])
    if path:
        print(f"TSV: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
