# SPDX-License-Identifier: Apache-2.0
"""Shared pieces of the daemon benchmarks (sweep.py, targets.py): the fast Modbus server
(bench_fast_modbus_server) and the raw libmodbus client (bench_modbus_floor) built in
tests/bench/modbus, process figures from /proc (CPU as utime+stime, VmRSS, VmHWM, threads), a
Modbus adapter configuration of N TCP devices x M holding registers, REST calls through the test
broker, percentiles and TSV output into $GW_BENCH_DATA. Uses tests/integration/gwtest.py for the
broker and the daemon. Every process started here is stopped by pid."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

SRC = os.environ.get("GW_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", ".."))
os.environ.setdefault("GW_SOURCE_DIR", SRC)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import gwtest  # noqa: E402

BUILD = gwtest.BUILD
FAST_SERVER = os.path.join(BUILD, "tests/bench/modbus/bench_fast_modbus_server")
FLOOR = os.path.join(BUILD, "tests/bench/modbus/bench_modbus_floor")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def need(*paths):
    for p in paths:
        if not os.access(p, os.X_OK):
            print(f"bench: {p} is missing (configure with -DGW_BUILD_BENCH=ON and build)")
            sys.exit(2)


class FastServer:
    """bench_fast_modbus_server on a free port, with its JSON stats file."""

    def __init__(self, workdir, registers=125):
        self.stats_file = os.path.join(workdir, "fast_server_stats.json")
        self.proc = subprocess.Popen([FAST_SERVER, "--port", "0", "--registers", str(registers),
                                      "--stats-file", self.stats_file],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError("fast server did not start: " + line)
        self.port = int(line.split()[1])

    def stats(self, timeout=10):
        """Asks for the stats file (SIGUSR1) and returns it parsed."""
        try:
            os.unlink(self.stats_file)
        except FileNotFoundError:
            pass
        self.proc.send_signal(signal.SIGUSR1)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with open(self.stats_file) as f:
                    return json.load(f)
            except (FileNotFoundError, ValueError):
                time.sleep(0.01)
        raise RuntimeError("fast server wrote no stats")

    def reset_intervals(self):
        """Starts a new window for the interval figures (SIGUSR2); counts are kept."""
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def floor_read(port, secs, nregs=100):
    """Requests/s of one plain libmodbus client reading nregs registers back to back."""
    out = subprocess.run([FLOOR, "read", str(port), str(secs), str(nregs)], capture_output=True,
                         text=True, timeout=secs + 30).stdout
    for line in out.splitlines():
        if line.startswith("requests_per_s"):
            return float(line.split()[1])
    raise RuntimeError("bench_modbus_floor read printed nothing: " + out)


def floor_write(port, count):
    """Raw libmodbus FC 6 round trips and loopback TCP round trips, in us: two dicts of p50/p99/p999."""
    out = subprocess.run([FLOOR, "write", str(port), str(count)], capture_output=True, text=True,
                         timeout=120).stdout
    res = {}
    for line in out.splitlines():
        f = line.split()
        if f and f[0] in ("write_us", "tcp_rtt_us"):
            res[f[0]] = {f[1]: float(f[2]), f[3]: float(f[4]), f[5]: float(f[6])}
    return res


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def status(pid):
    """VmRSS, VmHWM, RssAnon, RssFile (KiB) and Threads of a process. RssFile is mostly the
    code of shared libraries (libcrypto alone is about 4 MiB), shared with other processes."""
    res = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads"):
                res[k] = int(v.split()[0])
    return res


def modbus_config(name, port, ndev, npts, interval_ms=1000, writable=False):
    """One Modbus instance with ndev TCP connections to port (one device each, unit 1..247) and
    npts uint16 holding-register points per device (addresses 0..npts-1: one read per poll).
    Resources: <name>/d<i>p<j>; connection names c<i>."""
    conns = []
    for i in range(ndev):
        pts = [{"name": f"d{i}p{j}", "address": f"4{j + 1:04d}", "type": "uint16"}
               for j in range(npts)]
        if writable:
            pts[0]["access"] = "read-write"
        conns.append({"name": f"c{i}", "tcp": {"host": "127.0.0.1", "port": port},
                      "devices": [{"name": f"d{i}", "unit": i % 247 + 1, "points": pts}]})
    return {"type": "modbus", "name": name, "interval_ms": interval_ms, "connections": conns}


def rest_call(env, resource, body=None, timeout=30):
    """RUN on a gateway resource through the broker: GET without body, POST with one."""
    url = (f"http://127.0.0.1:{env.http}/v3/users/{gwtest.USER}/devices/{gwtest.DEVICE}"
           f"/resources/{resource}")
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def percentile(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def write_tsv(name, columns, rows):
    """Writes $GW_BENCH_DATA/<name>.tsv (header '# col...'), when GW_BENCH_DATA is set."""
    d = os.environ.get("GW_BENCH_DATA")
    if not d:
        return None
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name + ".tsv")
    with open(path, "w") as f:
        f.write("# " + "\t".join(columns) + "\n")
        for r in rows:
            f.write("\t".join(str(x) for x in r) + "\n")
    return path


def verdict(value, target, lower_is_better=True):
    if value != value:  # NaN
        return "not measured"
    ok = value < target if lower_is_better else value > target
    return "met" if ok else "MISSED"
