#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""RSS, CPU, open fds and store queue depth of the release daemon, once a second, over a run with a
broker outage in the middle (issue 11).

The real iotmp-gatewayd polls N Modbus TCP devices x P holding registers at 1 s (each device is its
own TCP connection to the fast local server, tests/bench/modbus/fast_server.c), records R of those
points into a bucket through the store, and is connected to the test broker. The broker is
SIGKILLed at OUTAGE_START and restarted on the same ports at OUTAGE_END: during the outage the
recorded rows queue in the store, afterwards they drain. Every second the script samples, from
/proc/<pid>: VmRSS, CPU (utime+stime, percent of one core over that second), open fds; and from
the daemon's metrics endpoint (which works while the broker is away): the store queue depth and
rows delivered.

  rss_timeline.py [--quick] [--devices N] [--points P]
      full:  600 s, outage from 240 s to 360 s, 100 devices x 100 points
      quick:  60 s, outage from  20 s to  40 s

Prints RSS at start / before the outage / after the drain / at the end, peak RSS (VmHWM), CPU and
fd figures, and how many polls the server saw. With GW_BENCH_DATA set, writes rss_timeline.tsv
(one row per second) and rss_timeline_summary.tsv there. No assertion on any figure; exit status 1
only when the run could not be made (a process did not start).
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../integration"))
from gwtest import BUILD, Env, free_port, log  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")



def proc_sample(pid):
    """(rss_kib, hwm_kib, cpu_ticks, fds, threads) of a live process."""
    rss = hwm = threads = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, hwm, ticks, fds, threads


def metrics(port):
    """The daemon's metrics as {name: value} (first sample of each name; labels ignored)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^iotmp_gateway_([a-z_]+)(?:\{[^}]*\})? ([-0-9.eE+]+)$", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = float(m.group(2))
    return out


def pick(m, *names):
    for n in names:
        if n in m:
            return m[n]
    return -1


def start_modbus_server(env):
    """The fast server if it is built, else a pymodbus server (slow but enough for 1 s polls)."""
    fast = os.path.join(BUILD, "tests/bench/modbus/bench_fast_modbus_server")
    stats = os.path.join(env.dir, "modbus-stats.json")
    if os.access(fast, os.X_OK):
        p = subprocess.Popen([fast, "--port", "0", "--stats-file", stats],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = p.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError("fast Modbus server did not start: " + line)
        return p, int(line.split()[1]), stats, "fast server (tests/bench/modbus/fast_server.c)"
    port = free_port()
    code = ("import logging,sys\n"
            "from pymodbus.server import StartTcpServer\n"
            "from pymodbus.datastore import ModbusSequentialDataBlock as B, "
            "ModbusSlaveContext as S, ModbusServerContext as C\n"
            "ctx=C(slaves=S(hr=B(0,[7]*200),ir=B(0,[7]*200)),single=True)\n"
            f"StartTcpServer(context=ctx,address=('127.0.0.1',{port}))\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return p, port, None, "pymodbus (the fast server is not built)"


def stop(signum, frame):
    raise SystemExit(f"rss_timeline: stopped by signal {signum}")


def main():
    signal.signal(signal.SIGTERM, stop)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--points", type=int, default=100)
    a = ap.parse_args()
    duration, out_start, out_end = (60, 20, 40) if a.quick else (600, 240, 360)
    recorded = min(10, a.points)  # points per recording; one recording per device for 10 devices
    record_every_ms = 100

    env = Env()
    server = None
    samples = []
    try:
        server, mb_port, stats_file, server_name = start_modbus_server(env)
        conns = []
        for i in range(a.devices):
            dev = f"d{i:03d}"
            conns.append({
                "name": f"c{i:03d}",
                "tcp": {"host": "127.0.0.1", "port": mb_port},
                "devices": [{
                    "name": dev, "unit": i % 247 + 1,
                    "points": [{"name": f"{dev}_r{j:03d}", "table": "holding", "address": j,
                                "type": "uint16"} for j in range(a.points)]}]})
        env.write_adapter("modbus.json", {"type": "modbus", "name": "mb", "interval_ms": 1000,
                                          "connections": conns})
        record = [{"bucket": "timeline", "interval_ms": record_every_ms,
                   "resources": [f"mb/d{i:03d}_r{j:03d}" for j in range(recorded)]}
                  for i in range(min(10, a.devices))]
        rows_per_s = len(record) * 1000 / record_every_ms
        metrics_port = free_port()
        env.start_broker()
        env.write_gateway_config(record=record,
                                 extra={"metrics": {"listen": f"127.0.0.1:{metrics_port}"}})
        log(f"{a.devices} Modbus devices x {a.points} holding registers at 1 s from {server_name}; "
            f"{len(record)} recordings of {recorded} points every {record_every_ms} ms "
            f"({rows_per_s:.0f} rows/s into the store); {duration} s, broker killed at {out_start} s "
            f"and restarted at {out_end} s")
        t0 = time.monotonic()
        env.start_gateway()
        pid = env.gateway_pid()
        env.wait_connected()
        log(f"daemon connected {time.monotonic() - t0:.2f} s after exec")

        broker_up, killed = True, False
        prev_ticks, prev_t = 0, t0
        next_t = t0 + 1
        while True:
            now = time.monotonic()
            if now < next_t:
                time.sleep(next_t - now)
            next_t += 1
            t = time.monotonic() - t0
            if t > duration + 0.5:
                break
            if not killed and t >= out_start:
                env.kill_broker()
                broker_up, killed = False, True
                log(f"t={t:.0f} s: broker killed")
            elif not broker_up and t >= out_end:
                env.start_broker()
                broker_up = True
                log(f"t={t:.0f} s: broker restarted")
            if env.gw.poll() is not None:
                raise RuntimeError(f"the daemon exited ({env.gw.returncode}) at t={t:.0f} s")
            rss, hwm, ticks, fds, threads = proc_sample(pid)
            now = time.monotonic()
            cpu = 100.0 * (ticks - prev_ticks) / CLK_TCK / (now - prev_t)
            prev_ticks, prev_t = ticks, now
            try:
                m = metrics(metrics_port)
            except OSError:
                m = {}
            depth = pick(m, "store_depth", "store_queue_depth")
            delivered = pick(m, "store_delivered_total", "store_delivered")
            samples.append((t, rss / 1024, cpu, fds, depth, 1 if broker_up else 0, delivered,
                            hwm / 1024, threads))

        # Modbus polls seen by the server (each poll of a device = one request for 100 registers).
        polls = None
        if stats_file:
            server.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
            try:
                import json
                with open(stats_file) as f:
                    polls = json.load(f)["requests"]
            except (OSError, ValueError, KeyError):
                polls = None
        rows_at_broker = delivered_total = None
        try:
            delivered_total = env.wait_drained(timeout=60).get("delivered")
            rows_at_broker = len(env.bucket_ids("timeline")[0])
        except (RuntimeError, OSError, ValueError, KeyError):
            pass
        rc = env.stop_gateway()
    finally:
        env.cleanup()
        shutil.rmtree(env.dir, ignore_errors=True)
        if server and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    if not samples:
        print("rss_timeline: no samples taken", file=sys.stderr)
        return 1
    # The figures: start = first sample after the daemon connected and polled once (t >= 3 s).
    start = next((s for s in samples if s[0] >= 3), samples[0])
    before = [s for s in samples if s[0] < out_start][-1]
    during = [s for s in samples if out_start <= s[0] < out_end]
    peak_depth = max((s[4] for s in during), default=0)
    after = [s for s in samples if s[0] >= out_end]
    drained = next((s for s in after if 0 <= s[4] <= max(50, 0.02 * peak_depth)), None)
    end = samples[-1]
    cpu_steady = [s[2] for s in samples if 3 <= s[0] < out_start]
    fds = [s[3] for s in samples]
    print(f"daemon: {a.devices} Modbus devices x {a.points} points at 1 s, {len(record)} "
          f"recordings ({rows_per_s:.0f} rows/s), {duration} s with the broker away from "
          f"{out_start} s to {out_end} s; {len(samples)} samples")
    print(f"RSS start (t={start[0]:.0f} s)        : {start[1]:7.1f} MiB")
    print(f"RSS before outage (t={before[0]:.0f} s)  : {before[1]:7.1f} MiB")
    print(f"queue depth at the end of the outage: {peak_depth:7.0f} rows")
    if drained:
        print(f"RSS after drain (t={drained[0]:.0f} s, {drained[0] - out_end:.0f} s after the "
              f"restart): {drained[1]:7.1f} MiB")
    else:
        print("RSS after drain                     : the queue did not drain within the run")
    print(f"RSS end (t={end[0]:.0f} s)           : {end[1]:7.1f} MiB; peak (VmHWM) {end[7]:.1f} MiB; "
          f"growth start -> end {end[1] - start[1]:+.1f} MiB")
    print(f"CPU before the outage: mean {sum(cpu_steady) / max(1, len(cpu_steady)):.1f} % of one "
          f"core, max {max(cpu_steady, default=0):.1f} %; over the run max "
          f"{max(s[2] for s in samples):.1f} %")
    print(f"open fds: min {min(fds)}, max {max(fds)}, start {start[3]}, end {end[3]}; "
          f"threads {end[8]}")
    if polls is not None:
        print(f"Modbus polls seen by the server: {polls} ({polls / duration:.0f}/s; "
              f"{polls * a.points / duration:.0f} points/s; expected {a.devices}/s)")
    if rows_at_broker is not None:
        print(f"rows in the bucket at the broker after the run: {rows_at_broker}; the store "
              f"counts {delivered_total} delivered ({rows_per_s * duration:.0f} at the nominal "
              f"rate over {duration} s)")
    print(f"daemon exit status after SIGTERM: {rc}")
    print("what to look for (no numeric target in the issue): RSS flat once the queue has drained")

    out = os.environ.get("GW_BENCH_DATA")
    if out:
        with open(os.path.join(out, "rss_timeline.tsv"), "w") as f:
            f.write("# t_s\trss_mib\tcpu_pct\tfds\tqueue_depth\tbroker_up\tdelivered\thwm_mib\t"
                    "threads\n")
            for s in samples:
                f.write("%.1f\t%.2f\t%.1f\t%d\t%d\t%d\t%d\t%.2f\t%d\n" % s)
        with open(os.path.join(out, "rss_timeline_summary.tsv"), "w") as f:
            f.write("# figure\tvalue\tunit\n")
            f.write(f"rss_start\t{start[1]:.1f}\tMiB\n")
            f.write(f"rss_before_outage\t{before[1]:.1f}\tMiB\n")
            f.write(f"rss_after_drain\t{drained[1] if drained else -1:.1f}\tMiB\n")
            f.write(f"rss_end\t{end[1]:.1f}\tMiB\n")
            f.write(f"rss_peak\t{end[7]:.1f}\tMiB\n")
            f.write(f"peak_queue_depth\t{peak_depth:.0f}\trows\n")
            f.write(f"drain_seconds\t{drained[0] - out_end if drained else -1:.0f}\ts\n")
            f.write(f"outage_start\t{out_start}\ts\noutage_end\t{out_end}\ts\n")
            f.write(f"devices\t{a.devices}\tdevices\npoints\t{a.points}\tpoints\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
