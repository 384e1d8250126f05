#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Writes <out>/REPORT.md for scripts/bench from what the run left in <out>:
out/runs.tsv (each benchmark: status, exit, seconds), out/<name>.txt (raw outputs), data/*.tsv
(plot data and figures) and out/plots.tsv (which PNGs were drawn).

The summary table takes each headline figure from the benchmark's TSV where it writes one, else
from its printed output; every figure stands beside the floor measured in the same run and the
ratio, and beside the issue's target with met / not met when there is one. A figure that a run
did not produce is shown as "not measured" (never invented). Besides the known benchmarks, any
data/*.tsv whose header has the columns name (or figure), value and target (other runners' target
tables) is added to the table as it is.

  make_report.py --out DIR --quick 0|1 --commit TEXT --elapsed SECONDS --build DIR
"""
import argparse
import glob
import os
import platform
import re
import time


def read_tsv(path):
    """(header columns, rows as dicts) of a TSV whose first line is '# col<TAB>col...'."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return [], []
    if not lines or not lines[0].startswith("#"):
        return [], []
    cols = lines[0].lstrip("#").strip().split("\t")
    rows = []
    for line in lines[1:]:
        if not line or line.startswith("#"):
            continue
        vals = line.split("\t")
        rows.append({c: (vals[i] if i < len(vals) else "") for i, c in enumerate(cols)})
    return cols, rows


def num(v):
    try:
        return float(str(v).replace(",", ""))
    except (TypeError, ValueError):
        return None


def fmt(v, unit=""):
    if v is None:
        return "not measured"
    if isinstance(v, str):
        return v
    a = abs(v)
    if float(v).is_integer() and a < 100000:
        s = f"{v:.0f}"
    elif a >= 100000:
        s = f"{v:,.0f}"
    elif a >= 100:
        s = f"{v:.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return f"{s} {unit}".strip()


def check(value, op, bound):
    if value is None:
        return "not measured"
    ok = {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound,
          "=": value == bound, "~": abs(value - bound) <= 0.05 * abs(bound)}[op]
    return "met" if ok else "**not met**"


def parse_target(text):
    """'< 8 MB', '>= 100000', '0', '100' -> (op, number); None when it is not a simple bound.
    A bare number is a nominal figure (a scheduled rate, an expected count): 0 must be met
    exactly, any other within 5 % ("~")."""
    m = re.match(r"^\s*(<=|>=|<|>|==|=|≤|≥|~|≈)?\s*([-+]?[0-9][0-9,]*\.?[0-9]*(?:[eE][-+]?\d+)?)",
                 str(text))
    if not m:
        return None
    v = float(m.group(2).replace(",", ""))
    op = {"≤": "<=", "≥": ">=", "==": "=", "≈": "~"}.get(m.group(1), m.group(1))
    if op is None:
        op = "=" if v == 0 else "~"
    return op, v


class Summary:
    def __init__(self):
        self.rows = []

    def add(self, area, figure, value, unit="", floor=None, floor_what="", ratio=None,
            target="", verdict=""):
        if ratio is None and value is not None and floor:
            ratio = value / floor
        self.rows.append((area, figure, fmt(value, unit),
                          (fmt(floor, unit) + (f" ({floor_what})" if floor_what else ""))
                          if floor is not None else ("—" if not floor_what else floor_what),
                          f"{ratio:.2f}x" if ratio is not None else "—",
                          target or "—", verdict or ("—" if not target else "")))

    def markdown(self):
        out = ["| Area | Figure | Value | Floor (same run) | Ratio | Target | Verdict |",
               "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            out.append("| " + " | ".join(str(c).replace("|", "/") for c in r) + " |")
        return "\n".join(out)


def text(out, name):
    try:
        with open(os.path.join(out, "out", name + ".txt")) as f:
            return f.read()
    except OSError:
        return ""


def grab(pattern, s, group=1):
    m = re.search(pattern, s, re.M)
    return num(m.group(group)) if m else None


def summarize(out, data, runs, s):
    known = set()

    # --- codec ---
    _, ns = read_tsv(os.path.join(data, "codec_ns.tsv"))
    known.add("codec_ns.tsv")
    by = {r["operation"]: r for r in ns}
    for key, label in (("pson_encode", "PSON encode, 4-field sample"),
                       ("pson_decode", "PSON decode, 4-field sample")):
        r = by.get(key)
        v = num(r["ns_per_op"]) if r else None
        s.add("codec", label, v, "ns", num(r["floor_ns"]) if r else None, "memcpy", None,
              "< 100 ns", check(v, "<", 100))
    _, cb = read_tsv(os.path.join(data, "codec_bytes.tsv"))
    known.add("codec_bytes.tsv")
    if cb:
        ours = sum(num(r["ours_bytes"]) or 0 for r in cb)
        ref = sum(num(r["reference_bytes"]) or 0 for r in cb)
        same = all(r["identical"] == "yes" for r in cb)
        s.add("codec", f"bytes for {len(cb)} typical samples (numbers, maps, frames)", ours, "B",
              ref, "reference encoders", None, "= reference bytes",
              "met" if same else "**not met**")
    else:
        s.add("codec", "bytes per sample vs the reference encoders", None)

    # --- session: round trip vs calls in flight ---
    _, rtt = read_tsv(os.path.join(data, "session_rtt.tsv"))
    known.add("session_rtt.tsv")
    k = {int(num(r["inflight"])): r for r in rtt if num(r["inflight"]) is not None}
    one = k.get(1)
    s.add("session", "RUN via broker, 1 in flight, p50", num(one["p50_us"]) if one else None, "µs",
          num(one["floor_p50_us"]) if one else None, "loopback TCP echo p50")
    v = num(one["p99_us"]) if one else None
    s.add("session", "RUN via broker, 1 in flight, p99", v, "µs",
          num(one["floor_p99_us"]) if one else None, "echo p99", None, "< 1 ms (issue 4)",
          check(v, "<", 1000))
    v = num(one["gw_us_per_call"]) if one else None
    s.add("session", "gateway-side processing per call, 1 in flight", v, "µs", None, "", None,
          "< 20 µs (issue 4)", check(v, "<", 20))
    for n in (64, 256):
        r = k.get(n)
        s.add("session", f"RUN calls/s, {n} in flight", num(r["calls_per_s"]) if r else None,
              "/s", num(r["floor_rt_per_s"]) if r else None, "echo round trips/s")
        s.add("session", f"RUN p99.9, {n} in flight", num(r["p999_us"]) / 1000 if r else None,
              "ms", num(r["floor_p999_us"]) / 1000 if r else None, "echo p99.9")

    # --- store ---
    _, sr = read_tsv(os.path.join(data, "store_rates.tsv"))
    _, sf = read_tsv(os.path.join(data, "store_figures.tsv"))
    _, sd = read_tsv(os.path.join(data, "store_drain.tsv"))
    known.update(["store_rates.tsv", "store_figures.tsv", "store_drain.tsv", "store_plot.tsv"])
    by = {r["what"]: r for r in sr + sd}
    fig = {r["figure"]: num(r["value"]) for r in sf}
    r = by.get("store ingest FULL")
    v = num(r["rows_per_s"]) if r else None
    s.add("store", "durable ingest (synchronous FULL, group commit)", v, "samples/s",
          num(r["floor_rows_per_s"]) if r else None, "raw SQLite, txn of 500", None,
          "≥ 100,000/s", check(v, ">=", 100000))
    v = fig.get("bytes_written_per_sample")
    s.add("store", "bytes written per sample (WAL + checkpoint)", v, "B", None, "", None, "≤ 400 B",
          check(v, "<=", 400))
    a, b, n = fig.get("rss_10k_queued"), fig.get("rss_big_queued"), fig.get("big_queued_rows")
    v = b - a if a is not None and b is not None else None
    s.add("store", f"RSS growth from 10,000 to {fmt(n)} queued rows", v, "MiB", None, "", None,
          "within 5 MiB", check(v, "<=", 5))
    r = by.get("store drain next+ack (local)")
    s.add("store", "drain from the store alone (next + ack)", num(r["rows_per_s"]) if r else None,
          "rows/s", num(r["floor_rows_per_s"]) if r else None, "raw SQLite insert")
    r = by.get("drain to broker (acknowledged)")
    s.add("store", "drain to the broker, each row acknowledged", num(r["rows_per_s"]) if r else None,
          "rows/s", num(r["floor_rows_per_s"]) if r else None, "raw SQLite insert (python)")

    # --- benchmarks that print their figures (no TSV) ---
    t = text(out, "broker_load")
    s.add("broker", "devices connected and authenticated per second",
          grab(r"authenticated in [0-9.]+ s = ([0-9.]+) devices/s", t), "/s")
    s.add("broker", "REST RUN to one device among all connected, p50",
          grab(r"REST RUN .*p50 ([0-9.]+) us", t), "µs",
          grab(r"baseline: loopback TCP .*p50 ([0-9.]+) us", t), "loopback TCP echo p50")
    t = text(out, "modbus_planner")
    s.add("modbus", "read planner, 10,000 points",
          grab(r"plan_build:\s+10000 points .*\(([0-9.]+) ns/point\)", t), "ns/point")
    t = text(out, "modbus_adapter")
    m = re.search(r"gateway \(flat out, publish every poll\):\s+([0-9]+) requests/s =\s+([0-9]+) "
                  r"points/s,\s+([0-9]+) % of raw.*CPU ([0-9.]+) cores", t)
    raw = grab(r"raw libmodbus:\s+([0-9]+) requests/s", t)
    pts = num(m.group(2)) if m else None
    s.add("modbus", "adapter, 100 devices x 125 registers flat out", pts, "points/s",
          raw * 125 if raw else None, "raw libmodbus x 125", None, "≥ 70 % of raw, ≥ 500k/s (issue 6)",
          ("met" if pts >= 500000 and num(m.group(3)) >= 70 else "**not met**") if m and raw
          else "not measured")
    v = num(m.group(4)) if m else None
    s.add("modbus", "adapter CPU flat out", v, "cores", None, "", None, "≤ 1 core (issue 6)",
          check(v, "<=", 1))
    t = text(out, "mqtt")
    s.add("mqtt", "MQTT messages into IOTMP streams",
          grab(r"adapter: .* = ([0-9.]+) msg/s", t), "msg/s",
          grab(r"floor: bare libmosquitto subscriber .* = ([0-9.]+) msg/s", t),
          "bare libmosquitto subscriber")

    # --- Modbus device sweep (tests/bench/daemon/run_sweep.sh) ---
    sweep = None
    for p in sorted(glob.glob(os.path.join(data, "*.tsv"))):
        cols, rows = read_tsv(p)
        if "devices" in cols and "points_per_s" in cols and os.path.basename(p) != \
                "modbus_devices_plot.tsv":
            sweep = (os.path.basename(p), rows)
            known.add(os.path.basename(p))
            break
    known.add("modbus_devices_plot.tsv")
    if sweep:
        rows = sorted(sweep[1], key=lambda r: num(r["devices"]) or 0)
        for r in (rows[0], rows[-1]) if len(rows) > 1 else rows:
            d = num(r["devices"])
            exp = num(r.get("points_expected")) or (d * 100 if d else None)
            s.add("modbus", f"daemon, {d:.0f} devices x 100 points at 1 s: points polled",
                  num(r["points_per_s"]), "points/s", exp, "expected")
            if "cpu_pct" in r or "rss_mib" in r:
                s.add("modbus", f"daemon, {d:.0f} devices: CPU / RSS",
                      f"{fmt(num(r.get('cpu_pct')), '%')} / {fmt(num(r.get('rss_mib')), 'MiB')}")
        thousand = [r for r in rows if num(r["devices"]) == 1000]
        if thousand:
            v = num(thousand[0].get("missed"))
            s.add("modbus", "missed poll deadlines, 1,000 devices x 100 points at 1 s", v, "",
                  None, "", None, "0", check(v, "=", 0))
        else:
            s.add("modbus", "missed poll deadlines, 1,000 devices x 100 points at 1 s",
                  "1,000 devices not in this run's sweep", "", None, "", None, "0",
                  "not measured in this run")
    elif runs.get("modbus_sweep", {}).get("status") == "absent":
        s.add("modbus", "device sweep 10..1,000 devices", "runner not in the tree")

    # --- RSS timeline ---
    _, rt = read_tsv(os.path.join(data, "rss_timeline_summary.tsv"))
    known.update(["rss_timeline.tsv", "rss_timeline_summary.tsv"])
    f = {r["figure"]: num(r["value"]) for r in rt}
    label = (f"daemon, {fmt(f.get('devices'))} Modbus devices x {fmt(f.get('points'))} points, "
             f"outage {fmt(f.get('outage_start'))}-{fmt(f.get('outage_end'))} s") if f else \
        "RSS timeline"
    if f:
        s.add("daemon", label + ": RSS start / before outage / after drain / end",
              " / ".join(fmt(f.get(k)) for k in ("rss_start", "rss_before_outage",
                                                 "rss_after_drain", "rss_end")) + " MiB")
        v = f["rss_end"] - f["rss_start"] if "rss_end" in f and "rss_start" in f else None
        s.add("daemon", "RSS growth over the run", v, "MiB")
        s.add("daemon", "queue depth at the end of the outage; drained after",
              f"{fmt(f.get('peak_queue_depth'))} rows; {fmt(f.get('drain_seconds'))} s")
    else:
        s.add("daemon", label, None)

    # --- other runners' target tables (name/figure, value, unit, target[, met]) ---
    for p in sorted(glob.glob(os.path.join(data, "*.tsv"))):
        base = os.path.basename(p)
        if base in known:
            continue
        cols, rows = read_tsv(p)
        name_col = next((c for c in ("name", "figure") if c in cols), None)
        if not name_col or "value" not in cols:
            continue
        known.add(base)
        area = re.sub(r"_(figures|targets|summary)$", "", base[:-4])
        for r in rows:
            v = num(r.get("value"))
            unit = r.get("unit", "")
            target = r.get("target", "")
            # Headline rows only: those with a target, and the daemon's own CPU / RSS / start-up;
            # the rest is in the runner's raw output below.
            if not target and not re.search(r"daemon|startup|start_up|rss", r[name_col]):
                continue
            if target.strip() in ("-", "—"):
                target = ""
            verdict = r.get("met", "").strip().lower()
            if verdict in ("yes", "true", "1", "met", "ok"):
                verdict = "met"
                target = f"{target} {unit}".strip()
            elif verdict in ("no", "false", "0", "not met", "missed", "fail", "failed"):
                verdict = "**not met**"
                target = f"{target} {unit}".strip()
            elif target:
                pt = parse_target(target)
                verdict = check(v, *pt) if pt else "see output"
                if pt and pt[0] == "~" and not target.lstrip().startswith(("~", "≈")):
                    target = f"≈ {target} (±5 %)"
            else:
                verdict = ""
            fl = num(r.get("floor")) if "floor" in r else None
            s.add(area, r[name_col], v if v is not None else r.get("value", ""), unit, fl,
                  r.get("floor_what", ""), None, target, verdict)
    return known


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", default="0")
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--elapsed", default="?")
    ap.add_argument("--build", default="build-release")
    a = ap.parse_args()
    out, data = a.out, os.path.join(a.out, "data")
    _, run_rows = read_tsv(os.path.join(out, "out", "runs.tsv"))
    runs = {r["name"]: r for r in run_rows}
    _, plot_rows = read_tsv(os.path.join(out, "out", "plots.tsv"))

    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "?")
        with open("/proc/meminfo") as f:
            mem = int(next(l for l in f if l.startswith("MemTotal")).split()[1]) / 1048576
    except (OSError, StopIteration, ValueError):
        mem = 0
    load = open("/proc/loadavg").read().split()[:3]
    quick = a.quick == "1"
    s = Summary()
    known = summarize(out, data, runs, s)

    md = ["# Benchmark report", ""]
    md.append(f"Generated by `scripts/bench{' --quick' if quick else ''}` on "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {a.elapsed} s, "
              f"commit {a.commit}, release build `{a.build}`.")
    md.append(f"Machine: {os.cpu_count()} CPU(s), {cpu}, {mem:.1f} GiB RAM, "
              f"{platform.system()} {platform.release()}; load average at the end "
              f"{' '.join(load)}.")
    if quick:
        md.append("**Quick run**: every benchmark ran briefly (CI), and the RSS timeline ran in the "
                  "background beside the others; figures are indicative only.")
    md += ["", "Every figure is measured beside its floor in the same run (the floor is what the "
           "same work costs with no gateway in the way); the ratio is value / floor. Targets are "
           "the issues' (issue 11 unless named); the verdict is computed from this run's figure "
           "(a bare number as target is a nominal figure: met within ±5 %, or exactly when 0). "
           "Timings on this machine depend on its load: other jobs may have shared the cores.", "",
           "## Summary", "", s.markdown(), ""]

    md += ["## Plots", ""]
    titles = {
        "rtt_vs_inflight.png": "RUN round trip and calls/s vs calls in flight, beside the "
                               "loopback TCP floor at the same concurrency",
        "modbus_devices.png": "Modbus points/s, daemon CPU and RSS vs number of devices",
        "store_rates.png": "Store ingest and drain rates beside the raw SQLite insert floor",
        "rss_timeline.png": "Daemon RSS, CPU, fds and queue depth over a run with a broker outage",
        "codec_bytes.png": "Bytes per sample: our encoder vs the reference encoders",
    }
    for r in plot_rows:
        name = r["plot"]
        if r["status"] == "ok":
            md += [f"### {titles.get(name, name)}", "", f"![{name}]({name})", ""]
        else:
            md += [f"### {titles.get(name, name)}", "", f"`{name}` was not drawn: {r['status']}.", ""]

    md += ["## Runs", "", "| Benchmark | Status | Exit | Seconds | Command |", "|---|---|---|---|---|"]
    for r in run_rows:
        md.append(f"| {r['name']} | {r['status']} | {r['exit']} | {r['seconds']} | "
                  f"`{r['command']}` |")
    absent = [r["name"] for r in run_rows if r["status"] == "absent"]
    if absent:
        md += ["", "Not run because their runner is not in the tree yet: " + ", ".join(absent) + "."]
    files = sorted(os.path.basename(p) for p in glob.glob(os.path.join(data, "*.tsv")))
    md += ["", "Plot data (TSV, header line first): " + ", ".join(f"`data/{f}`" for f in files)
           + ".", ""]

    md += ["## Raw output", ""]
    for r in run_rows:
        if r["status"] == "absent":
            continue
        md += [f"### {r['name']}", "", "```", text(out, r["name"]).rstrip(), "```", ""]
    with open(os.path.join(out, "REPORT.md"), "w") as f:
        f.write("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
