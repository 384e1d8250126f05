#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Memory peak and time of loading a large adapter configuration (issue 11).

Writes a gateway.json and one Modbus adapter file of NDEV TCP devices x NPTS points
(tests/bench/daemon/benchlib.py's modbus_config(): 1,000 x 100 = 100,000 points by default)
into a temporary folder, then measures
  - `iotmp-gatewayd validate -c gateway.json`: maximum resident set size (wait4's rusage) and
    elapsed time (schema validation plus the adapters' own checks);
  - the daemon's start: VmHWM (peak RSS) and VmRSS once it logs "started", the time from exec
    to that line, and VmRSS --settle seconds later. No broker and no Modbus server are needed: the uplink and the devices
    point at a port where nothing listens, so the daemon starts and keeps retrying.
Every process started here is stopped by pid. Prints one "name value unit" line per figure.

usage: config_peak.py [--build DIR] [--ndev N] [--npts M] [--runs R] [--settle S] [--compact]
                      [--keep DIR]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "bench", "daemon"))
os.environ.setdefault("GW_SOURCE_DIR", SRC)
import benchlib  # noqa: E402


def write_config(d, ndev, npts, compact=False):
    port = benchlib.gwtest.free_port()
    os.makedirs(os.path.join(d, "adapters.d"), exist_ok=True)
    with open(os.path.join(d, "secret"), "w") as f:
        f.write("secret\n")
    os.chmod(os.path.join(d, "secret"), 0o600)
    cfg = {
        "uplink": {"url": f"iotmp://127.0.0.1:{benchlib.gwtest.free_port()}", "user": "bench",
                   "device": "cfgpeak", "password_file": os.path.join(d, "secret")},
        "store": {"path": os.path.join(d, "store.db")},
        "adapters_dir": os.path.join(d, "adapters.d"),
    }
    with open(os.path.join(d, "gateway.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    path = os.path.join(d, "adapters.d", "plc.json")
    with open(path, "w") as f:
        json.dump(benchlib.modbus_config("plc", port, ndev, npts), f,
                  indent=None if compact else 2)
    return os.path.getsize(path)


def time_v(cmd):
    """(exit code, max RSS KiB, elapsed s, stdout) of cmd, from wait4()'s rusage (no /usr/bin/time
    needed)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, ru.ru_maxrss, secs, out


def start(gatewayd, d, settle, timeout=300):
    """(VmHWM KiB, VmRSS KiB, seconds to "started", VmRSS KiB settle seconds later) of a daemon
    start; the daemon is stopped."""
    log = open(os.path.join(d, "gateway.log"), "w")
    t0 = time.monotonic()
    p = subprocess.Popen([gatewayd, "--schema-dir", os.path.join(SRC, "schema"), "-c",
                          os.path.join(d, "gateway.json"), "-l", "notice"],
                         stdout=subprocess.DEVNULL, stderr=log)
    try:
        end = t0 + timeout
        started = None
        while time.monotonic() < end and p.poll() is None:
            with open(os.path.join(d, "gateway.log")) as f:
                if " started: " in f.read():
                    started = time.monotonic() - t0
                    break
            time.sleep(0.02)
        if started is None:
            with open(os.path.join(d, "gateway.log")) as f:
                raise RuntimeError("daemon did not start:\n" + f.read()[-2000:])
        st = benchlib.status(p.pid)
        time.sleep(settle)
        return st["VmHWM"], st["VmRSS"], started, benchlib.status(p.pid)["VmRSS"]
    finally:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("GW_BUILD_DIR", os.path.join(SRC, "build")))
    ap.add_argument("--ndev", type=int, default=1000)
    ap.add_argument("--npts", type=int, default=100)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--settle", type=float, default=12,
                    help="seconds after start-up for the settled RSS (the daemon trims every 5 s)")
    ap.add_argument("--compact", action="store_true",
                    help="write the adapter file on one line (default: indented by 2)")
    ap.add_argument("--keep", help="write the configuration here and keep it")
    a = ap.parse_args()
    gatewayd = os.path.join(a.build, "gateway", "daemon", "iotmp-gatewayd")
    if not os.access(gatewayd, os.X_OK):
        print(f"config_peak: {gatewayd} is missing (build first)")
        return 2
    d = a.keep or tempfile.mkdtemp(prefix="gw-cfgpeak-")
    try:
        size = write_config(d, a.ndev, a.npts, a.compact)
        pts = a.ndev * a.npts
        print(f"points {pts}")
        print(f"adapter_file_bytes {size} B")
        figs = []
        for run in range(a.runs):
            rc, rss, secs, out = time_v([gatewayd, "validate", "--schema-dir",
                                         os.path.join(SRC, "schema"), "-c",
                                         os.path.join(d, "gateway.json")])
            if rc != 0:
                print(out)
                raise RuntimeError(f"validate exited {rc}")
            print(f"validate_max_rss {rss / 1024:.1f} MiB")
            print(f"validate_elapsed {secs:.2f} s")
            hwm, vmrss, started, settled = start(gatewayd, d, a.settle)
            print(f"start_vmhwm {hwm / 1024:.1f} MiB")
            print(f"start_vmrss_after {vmrss / 1024:.1f} MiB")
            print(f"start_time {started:.2f} s")
            print(f"start_vmrss_settled {settled / 1024:.1f} MiB")
            figs.append((rss / 1024, secs, hwm / 1024, started, settled / 1024))
        # The report's summary (scripts/bench): the median run, the file's size as the floor of
        # the peaks (what holding the text alone costs).
        med = sorted(figs, key=lambda f: f[2])[len(figs) // 2]
        mib = size / 2**20
        what = f"the {mib:.1f} MiB file"
        benchlib.write_tsv("config_load_figures",
                           ["figure", "value", "unit", "target", "floor", "floor_what"], [
            [f"config load peak rss, validate, {pts:,} points", round(med[0], 1), "MiB", "-",
             round(mib, 1), what],
            [f"config load peak rss, daemon start, {pts:,} points", round(med[2], 1), "MiB",
             "-", round(mib, 1), what],
            [f"daemon startup to 'started', {pts:,} points", round(med[3], 2), "s", "-", "", ""],
            [f"daemon rss settled {a.settle:g} s after start, {pts:,} points", round(med[4], 1),
             "MiB", "-", "", ""],
        ])
    finally:
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
