# SPDX-License-Identifier: Apache-2.0
"""The all-at-once scale benchmark (issue 11): one release daemon, connected to the test broker,
under every load at the same time on this machine:
  - Modbus TCP: D devices x 100 points (one read of 100 holding registers per device per second),
    each device its own TCP connection to the fast local server (bench_fast_modbus_server);
  - MQTT: T topics on a local mosquitto, each mapped to a resource by the MQTT adapter, fed by
    bench_scale_mqtt_pub (each topic once per period, QoS 0);
  - GPIO: E edge events/s on 16 input lines from the simulated backend linked into
    bench_scale_gatewayd (the daemon's own sources; only the GPIO backend differs).
Full: 1,000 devices, 10,000 topics once per second, 10,000 GPIO events/s, 120 s of steady state.
Quick (--quick): a tenth of everything for 10 s. Before it, the floor: the same daemon with only
the GPIO load (--no-floor skips it). When the default 1,000 devices make the daemon abort on
libmodbus's FD_SETSIZE limit, the run is repeated with --fallback-devices (900) and says so.

Prints each figure with its target (where the issue gives one) and writes, when GW_BENCH_DATA names
a folder, scale_figures.tsv (name, value, unit, target) and scale_timeline.tsv (one row per
second). Never asserts on a figure; exits non-zero only when the benchmark could not run.
Processes it starts are stopped by pid."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
from gwtest import free_port  # noqa: E402  (a port outside the ephemeral range)
USER, DEVICE, PASSWORD = "bench", "scale1", "scale-secret"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def mono():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def proc_cpu_s(pid):
    """utime + stime of a process (all threads) in seconds, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
    except OSError:
        return None
    fields = st[st.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_cpu():
    """(busy, total) jiffies over all cores from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


class DaemonDied(SystemExit):
    """The daemon under test exited; fd_limit: it was libmodbus's select() limit."""

    def __init__(self, msg, fd_limit=False):
        super().__init__(msg)
        self.fd_limit = fd_limit


class Run:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(os.environ.get("GW_BUILD_DIR", os.path.join(SRC, "build-release")))
        self.dir = tempfile.mkdtemp(prefix="gw-scale.")
        self.procs = {}     # name -> Popen
        self.figures = []   # (name, value, unit, target)
        self.timeline = []
        self.notes = []

    # --- processes ---

    def binary(self, env, rel):
        p = os.environ.get(env) or os.path.join(self.build, rel)
        if not os.access(p, os.X_OK):
            raise SystemExit(f"run_scale: {p} is not built (set {env} or GW_BUILD_DIR; configure "
                             f"with -DGW_BUILD_BENCH=ON)")
        return p

    def start(self, name, argv, env=None, stdout=None):
        out = open(os.path.join(self.dir, name + ".out"), "w") if stdout is None else stdout
        err = open(os.path.join(self.dir, name + ".log"), "w")
        p = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=self.dir)
        self.procs[name] = p
        return p

    def wait_for(self, what, cond, timeout):
        end = mono() + timeout
        while mono() < end:
            r = cond()
            if r:
                return r
            time.sleep(0.05)
        raise SystemExit(f"run_scale: timed out waiting for {what} (logs in {self.dir})")

    def read_out(self, name):
        try:
            with open(os.path.join(self.dir, name + ".out")) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, name, sig=signal.SIGTERM, timeout=30):
        p = self.procs.get(name)
        if not p or p.poll() is not None:
            return p.returncode if p else None
        p.send_signal(sig)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def cleanup(self):
        for name in list(self.procs):
            self.stop(name, timeout=10)
        if os.environ.get("GW_SCALE_KEEP"):
            log(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- REST through the broker ---

    def rest(self, path, method="GET", timeout=30):
        url = f"{self.api}{path}"
        req = urllib.request.Request(url, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read() or b"null")

    def resource(self, name, timeout=30):
        return self.rest(f"/devices/{DEVICE}/resources/{name}", timeout=timeout)

    # --- set-up ---

    def configure(self, name, full):
        """Writes <dir>/<name>/gateway.json and its adapters.d: all three loads when full, else
        only the GPIO instance (the floor run)."""
        a = self.args
        base = os.path.join(self.dir, name)
        ad = os.path.join(base, "adapters.d")
        os.makedirs(ad)
        pw = os.path.join(base, "password")
        with open(pw, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(pw, 0o600)
        gw = {"uplink": {"url": f"iotmp://127.0.0.1:{self.broker_tcp}", "user": USER,
                         "device": DEVICE, "password_file": pw},
              "store": {"path": os.path.join(base, "store.db")},
              "adapters_dir": ad, "logging": {"level": "warn"}}
        with open(os.path.join(base, "gateway.json"), "w") as f:
            json.dump(gw, f, indent=1)
        lines = [{"name": f"in{k:02d}", "offset": k, "direction": "input", "edge": "both",
                  "debounce_ms": 0} for k in range(a.gpio_lines)]
        with open(os.path.join(ad, "30-gpio.json"), "w") as f:
            json.dump({"type": "gpio", "name": "io", "consumer": "iotmp-gateway", "chip": "sim",
                       "lines": lines}, f)
        if not full:
            return os.path.join(base, "gateway.json")
        # Modbus: one instance, D connections (one device each) to the fast server.
        conns = []
        for i in range(a.devices):
            points = [{"name": f"d{i:04d}_r{r:02d}", "table": "holding", "address": r}
                      for r in range(a.points)]
            conns.append({"name": f"c{i:04d}", "tcp": {"host": "127.0.0.1", "port": self.mb_port},
                          "devices": [{"name": f"d{i:04d}", "unit": i % 247 + 1,
                                       "timeout_ms": 1000, "points": points}]})
        with open(os.path.join(ad, "10-modbus.json"), "w") as f:
            json.dump({"type": "modbus", "name": "mb", "interval_ms": a.interval_ms,
                       "connections": conns}, f)
        with open(os.path.join(ad, "20-mqtt.json"), "w") as f:
            json.dump({"type": "mqtt", "name": "mq",
                       "broker": {"host": "127.0.0.1", "port": self.mq_port, "client_id": "gw-scale"},
                       "max_topics": a.topics + 100,
                       "mappings": [{"name": "t/{3}", "subscribe": "scale/t/+", "as": "number",
                                     "publish": "every"}]}, f)
        return os.path.join(base, "gateway.json")

    def start_daemon(self, proc, config, stats_path):
        """Starts bench_scale_gatewayd as proc and waits for its broker session; returns the
        seconds from exec to the session."""
        a = self.args
        env = dict(os.environ)
        env["GW_GPIO_SIM_RATE"] = "%g" % (a.gpio_rate / a.gpio_lines)
        env["GW_GPIO_SIM_QUEUE"] = str(a.gpio_queue)
        env["GW_GPIO_SIM_STATS"] = stats_path
        t_exec = mono()
        self.start(proc, [self.gwd, "-c", config], env=env)

        def connected():
            self.check_daemon(proc)
            try:
                return any(d.get("device") == DEVICE for d in self.rest("/devices", timeout=5))
            except (urllib.error.URLError, OSError, ValueError):
                return False
        self.wait_for(f"{proc} to connect to the broker", connected, 120)
        return mono() - t_exec

    def floor_gpio(self):
        """The GPIO load alone, same daemon, same moment: how many edges this machine loses
        without the other loads (the floor of the GPIO figures)."""
        a = self.args
        secs = max(3.0, a.seconds / 4)
        log(f"floor: GPIO load alone for {secs:g} s")
        path = os.path.join(self.dir, "gpio_floor.json")
        self.start_daemon("gatewayd_floor", self.configure("floor", False), path)
        pid = self.procs["gatewayd_floor"].pid
        time.sleep(2.0)
        self.gpio_stats_path = path
        g0, c0, m0 = self.gpio_snapshot(), proc_cpu_s(pid), machine_cpu()
        time.sleep(secs)
        g1, c1, m1 = self.gpio_snapshot(), proc_cpu_s(pid), machine_cpu()
        self.stop("gatewayd_floor")
        del self.procs["gatewayd_floor"]
        self.wait_for("the broker to see the floor daemon leave", lambda: not any(
            d.get("device") == DEVICE for d in self.rest("/devices", timeout=5)), 30)
        if g0 and g1 and c0 is not None and c1 is not None:
            gdt = (g1["t_ms"] - g0["t_ms"]) / 1000.0
            self.floor = {"handled": (g1["delivered"] - g0["delivered"]) / gdt,
                          "lost": g1["dropped"] - g0["dropped"],
                          "generated": g1["generated"] - g0["generated"],
                          "cpu": 100.0 * (c1 - c0) / secs,
                          "machine": 100.0 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1])}

    def setup(self):
        a = self.args
        self.gwd = self.binary("GW_SCALE_GATEWAYD", "tests/bench/scale/bench_scale_gatewayd")
        broker = self.binary("GW_BROKER", "tests/broker/iotmp-broker")
        pub = self.binary("GW_SCALE_MQTT_PUB", "tests/bench/scale/bench_scale_mqtt_pub")
        fms = self.binary("GW_FAST_MODBUS_SERVER", "tests/bench/modbus/bench_fast_modbus_server")
        mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.access(mosq, os.X_OK):
            raise SystemExit("run_scale: mosquitto is not installed (apt-get install mosquitto)")
        self.pub_bin = pub
        b0, t0 = machine_cpu()
        time.sleep(1.0 if a.quick else 2.0)
        b1, t1 = machine_cpu()
        self.machine_before = 100.0 * (b1 - b0) / max(1, t1 - t0)

        self.fms_stats = os.path.join(self.dir, "fms.json")
        self.start("fms", [fms, "--port", "0", "--registers", "125", "--stats-file", self.fms_stats])
        self.mb_port = int(self.wait_for("the fast Modbus server", lambda: (
            lambda o: o.split()[1] if o.startswith("ready ") else None)(self.read_out("fms")), 10))

        self.mq_port = free_port()
        with open(os.path.join(self.dir, "mosquitto.conf"), "w") as f:
            f.write(f"listener {self.mq_port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\n"
                    "log_type error\nlog_type warning\nlog_type subscribe\nuser root\n")
        self.start("mosquitto", [mosq, "-c", os.path.join(self.dir, "mosquitto.conf")])

        with open(os.path.join(self.dir, "creds"), "w") as f:
            f.write(f"{USER} {DEVICE} {PASSWORD}\n")
        self.start("broker", [broker, "--tcp-port", "0", "--tls-port", "-1", "--http-port", "0",
                              "--credentials", os.path.join(self.dir, "creds"),
                              "--db", os.path.join(self.dir, "broker.db"), "--log-level", "warn"])
        ready = self.wait_for("iotmp-broker", lambda: (
            lambda o: o if "ready" in o else None)(self.read_out("broker")), 10)
        ports = dict(kv.split("=") for kv in ready.split() if "=" in kv)
        self.broker_tcp, http = int(ports["tcp"]), int(ports["http"])
        self.api = f"http://127.0.0.1:{http}/v3/users/{USER}"

        self.floor = getattr(self, "floor_given", None)
        if not a.no_floor and self.floor is None:
            self.floor_gpio()
        self.gpio_stats_path = os.path.join(self.dir, "gpio_sim.json")
        t_exec = mono()
        self.t_connected = self.start_daemon("gatewayd", self.configure("main", True),
                                             self.gpio_stats_path)
        self.gw_pid = self.procs["gatewayd"].pid
        mosq_log = os.path.join(self.dir, "mosquitto.log")
        self.wait_for("the MQTT adapter's subscription", lambda: "gw-scale" in open(mosq_log).read()
                      and "scale/t/+" in open(mosq_log).read(), 60)

        def modbus_all_polling():
            st = self.fms_snapshot()
            return st and len(st.get("connections", [])) >= a.devices and \
                sum(1 for c in st["connections"] if c["requests"] > 0) >= a.devices
        try:
            self.wait_for("every Modbus connection's first poll", lambda: self.check_daemon()
                          or modbus_all_polling(), 60)
            self.t_all_polling = mono() - t_exec
            log(f"daemon connected after {self.t_connected:.2f} s; all {a.devices} Modbus devices "
                f"polled once after {self.t_all_polling:.2f} s")
        except SystemExit:
            self.check_daemon()
            st = self.fms_snapshot() or {}
            n = sum(1 for c in st.get("connections", []) if c["requests"] > 0)
            self.t_all_polling = float("nan")
            self.notes.append(f"only {n} of {a.devices} Modbus connections had been polled 60 s "
                              "after the start; measuring anyway")
            log(self.notes[-1])

        self.start("mqttpub", [pub, "--port", str(self.mq_port), "--topics", str(a.topics),
                               "--period-ms", str(a.mqtt_period_ms),
                               "--seconds", str(int(a.warmup + a.seconds + 5)), "--prefix", "scale/t"])
        self.wait_for("the MQTT publisher", lambda: self.read_out("mqttpub").startswith("ready"), 20)

    def check_daemon(self, proc="gatewayd"):
        """Stops the run with the daemon's last words when it has exited."""
        gw = self.procs[proc]
        if gw.poll() is None:
            return None
        with open(os.path.join(self.dir, proc + ".log"), errors="replace") as f:
            tail = f.read()[-3000:]
        why = ""
        if "FD_SETSIZE" in tail:
            why = ("\nrun_scale: a file descriptor >= 1024 (FD_SETSIZE) reached select(): libmodbus "
                   "3.1.6 waits for Modbus TCP answers with select(), so the daemon cannot hold "
                   f"{self.args.devices} Modbus TCP connections next to its other descriptors "
                   "(about 45); glibc's fortify check aborts the process. Fewer devices "
                   "(--devices) or a Modbus TCP client that uses poll() are needed.")
        raise DaemonDied(f"run_scale: the daemon exited with status {gw.returncode}:\n{tail}{why}",
                         fd_limit=bool(why))

    # --- snapshots ---

    def fms_snapshot(self):
        """Asks the fast server for its stats (SIGUSR1) and reads the new file."""
        p = self.procs["fms"]
        before = os.stat(self.fms_stats).st_mtime_ns if os.path.exists(self.fms_stats) else 0
        p.send_signal(signal.SIGUSR1)
        end = mono() + 10
        while mono() < end:
            if os.path.exists(self.fms_stats) and os.stat(self.fms_stats).st_mtime_ns != before:
                try:
                    with open(self.fms_stats) as f:
                        return json.load(f)
                except (OSError, ValueError):
                    pass
            time.sleep(0.02)
        return None

    def gpio_snapshot(self):
        try:
            with open(self.gpio_stats_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def mqtt_stats(self):
        try:
            return self.resource("mq/_stats", timeout=10)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def pub_published(self):
        last = None
        for line in self.read_out("mqttpub").splitlines():
            if line.startswith("pub "):
                last = line.split()
        return (float(last[1]) / 1000.0, int(last[2])) if last else (None, 0)

    def snapshot(self):
        s = {"t": mono(), "cpu": {n: proc_cpu_s(p.pid) for n, p in self.procs.items()},
             "machine": machine_cpu(), "rss_kb": proc_status(self.gw_pid, "VmRSS"),
             "mqtt": self.mqtt_stats(), "gpio": self.gpio_snapshot(), "pub": self.pub_published()}
        s["t_end"] = mono()
        return s

    # --- the run ---

    def measure(self):
        a = self.args
        log(f"warm-up {a.warmup:g} s (every load running)")
        time.sleep(a.warmup)
        fms0 = self.fms_snapshot()
        s0 = self.snapshot()
        prev = s0
        rss_max = s0["rss_kb"] or 0
        log(f"steady state: measuring for {a.seconds:g} s")
        end = s0["t"] + a.seconds
        while mono() < end:
            time.sleep(max(0.0, min(1.0, end - mono())))
            self.check_daemon()
            s = self.snapshot()
            dt = s["t"] - prev["t"]
            row = {"t_s": s["t"] - s0["t"]}
            c0, c1 = prev["cpu"].get("gatewayd"), s["cpu"].get("gatewayd")
            row["daemon_cpu_pct"] = 100.0 * (c1 - c0) / dt if c0 is not None and c1 is not None else float("nan")
            b0, t0 = prev["machine"]
            b1, t1 = s["machine"]
            row["machine_cpu_pct"] = 100.0 * (b1 - b0) / max(1, t1 - t0)
            row["rss_mib"] = (s["rss_kb"] or 0) / 1024.0
            rss_max = max(rss_max, s["rss_kb"] or 0)
            m0, m1 = prev["mqtt"], s["mqtt"]
            row["mqtt_msg_s"] = (m1["messages"] - m0["messages"]) / dt if m0 and m1 else float("nan")
            g0, g1 = prev["gpio"], s["gpio"]
            row["gpio_ev_s"] = ((g1["delivered"] - g0["delivered"]) / max(1e-3, (g1["t_ms"] - g0["t_ms"]) / 1000.0)
                                if g0 and g1 else float("nan"))
            self.timeline.append(row)
            prev = s
        s1 = prev
        fms1 = self.fms_snapshot()
        hwm = proc_status(self.gw_pid, "VmHWM")
        threads = proc_status(self.gw_pid, "Threads")
        return s0, s1, fms0, fms1, rss_max, hwm, threads

    def fig(self, name, value, unit, target=""):
        self.figures.append((name, value, unit, target))

    def analyse(self, s0, s1, fms0, fms1, rss_max, hwm, threads):
        a = self.args
        dt = s1["t"] - s0["t"]
        ncpu = os.cpu_count() or 1
        # CPU
        c = {n: (s1["cpu"].get(n), s0["cpu"].get(n)) for n in self.procs}
        def pct(n):
            x1, x0 = c.get(n, (None, None))
            return 100.0 * (x1 - x0) / dt if x1 is not None and x0 is not None else float("nan")
        b0, t0 = s0["machine"]
        b1, t1 = s1["machine"]
        machine = 100.0 * (b1 - b0) / max(1, t1 - t0)
        self.fig("modbus_devices", a.devices, "devices", "1000" if not a.quick else "100")
        self.fig("window", dt, "s")
        self.fig("daemon_cpu", pct("gatewayd"), "% of one core")
        self.fig("machine_cpu", machine, f"% of {ncpu} cores")
        self.fig("machine_cpu_before_start", self.machine_before, f"% of {ncpu} cores")
        for n, label in (("fms", "fast_modbus_server_cpu"), ("mosquitto", "mosquitto_cpu"),
                         ("mqttpub", "mqtt_publisher_cpu"), ("broker", "iotmp_broker_cpu")):
            self.fig(label, pct(n), "% of one core")
        self.fig("daemon_rss_end", (s1["rss_kb"] or 0) / 1024.0, "MiB")
        self.fig("daemon_rss_max_sampled", rss_max / 1024.0, "MiB")
        self.fig("daemon_rss_peak_hwm", (hwm or 0) / 1024.0, "MiB")
        self.fig("daemon_threads", threads or 0, "threads")
        self.fig("startup_connected", self.t_connected, "s")
        self.fig("startup_all_devices_polled", self.t_all_polling, "s")

        # Modbus: requests per connection in the window (counted by the server), and the
        # server-side intervals between successive polls of each connection (whole run).
        if fms0 and fms1:
            r0 = {x["peer_port"]: x["requests"] for x in fms0.get("connections", [])}
            conns = fms1.get("connections", [])
            polls = sum(x["requests"] - r0.get(x["peer_port"], 0) for x in conns)
            expected = a.devices * dt * 1000.0 / a.interval_ms
            self.fig("modbus_polls_per_s", polls / dt, "requests/s", f"{a.devices * 1000.0 / a.interval_ms:g}")
            self.fig("modbus_points_per_s", polls * a.points / dt, "points/s",
                     f"{a.devices * a.points * 1000.0 / a.interval_ms:g}")
            self.fig("modbus_polls_vs_schedule", 100.0 * polls / max(1.0, expected), "%", "100")
            # A connection polled on schedule gets floor(W/interval) or one more polls in a window
            # of W; two fewer than floor is at least one missed or skipped poll.
            floor_polls = int(dt * 1000.0 / a.interval_ms)
            short = sum(1 for x in conns if x["requests"] - r0.get(x["peer_port"], 0) <= floor_polls - 2)
            self.fig("modbus_connections_short_of_polls_in_window", short, "connections", "0")
            self.fig("modbus_connections_seen", len(conns), "connections", f"{a.devices}")
            # The server's intervals cover the whole run: the first interval of each connection
            # includes the adapter's start-up spread (every connection polls at once at start,
            # then they are spread over one interval),
            # so p99 and max gap here are upper bounds; the adapter's own lateness is below.
            live = [x for x in conns if x["requests"] > 1]
            p99 = [x["interval_p99_ms"] for x in live]
            gaps = [x["max_gap_ms"] for x in live]
            self.fig("modbus_server_interval_p50_median", percentile([x["interval_p50_ms"] for x in live], 50), "ms", f"{a.interval_ms}")
            self.fig("modbus_server_interval_p99_worst_incl_start", max(p99) if p99 else float("nan"), "ms")
            self.fig("modbus_server_interval_max_incl_start", max(gaps) if gaps else float("nan"), "ms")
        self.modbus_adapter_stats()

        # MQTT
        m0, m1 = s0["mqtt"], s1["mqtt"]
        p0, p1 = s0["pub"], s1["pub"]
        offered = a.topics * 1000.0 / a.mqtt_period_ms
        if m0 and m1:
            self.fig("mqtt_handled_per_s", (m1["messages"] - m0["messages"]) / dt, "msg/s", f"{offered:g}")
        if p0[0] is not None and p1[0] is not None and p1[0] > p0[0]:
            self.fig("mqtt_published_per_s", (p1[1] - p0[1]) / (p1[0] - p0[0]), "msg/s", f"{offered:g}")
        # GPIO
        g0, g1 = s0["gpio"], s1["gpio"]
        if g0 and g1:
            gdt = (g1["t_ms"] - g0["t_ms"]) / 1000.0
            self.fig("gpio_generated_per_s", (g1["generated"] - g0["generated"]) / gdt, "events/s", f"{a.gpio_rate:g}")
            self.fig("gpio_handled_per_s", (g1["delivered"] - g0["delivered"]) / gdt, "events/s", f"{a.gpio_rate:g}")
            self.fig("gpio_lost_in_window", g1["dropped"] - g0["dropped"], "events", "0")
            self.fig("gpio_lost_in_window_pct", 100.0 * (g1["dropped"] - g0["dropped"]) /
                     max(1, g1["generated"] - g0["generated"]), "%", "0")
        if self.floor:
            f = self.floor
            self.fig("floor_gpio_alone_handled_per_s", f["handled"], "events/s", f"{a.gpio_rate:g}")
            self.fig("floor_gpio_alone_lost_pct", 100.0 * f["lost"] / max(1, f["generated"]), "%", "0")
            self.fig("floor_gpio_alone_daemon_cpu", f["cpu"], "% of one core")
            self.fig("floor_gpio_alone_machine_cpu", f["machine"], f"% of {ncpu} cores")

    def modbus_adapter_stats(self):
        """Lateness as the adapter sees it, when its _stats has such fields (helper D's work)."""
        a = self.args
        n = min(a.devices, a.stats_sample)
        step = max(1, a.devices // n)
        keys = {}
        got = 0
        for i in range(0, a.devices, step):
            try:
                st = self.resource(f"mb/_stats/c{i:04d}", timeout=10)
            except (urllib.error.URLError, OSError, ValueError):
                continue
            got += 1
            flat = dict(st)
            for d in (st.get("devices") or {}).values():
                if isinstance(d, dict):
                    for k, v in d.items():
                        flat.setdefault("dev_" + k, v)
            for k, v in flat.items():
                if ("late" in k or "missed" in k or "skipped" in k) and isinstance(v, (int, float)) \
                        and not isinstance(v, bool):
                    keys.setdefault(k, []).append(v)
        self.adapter_stats_sampled = got
        if not keys:
            self.notes.append(f"the Modbus adapter's _stats (read for {got} connections) has no "
                              "lateness fields in this build: lateness is taken from the fast "
                              "server's intervals only")
            return
        for k, vals in sorted(keys.items()):
            if "missed" in k or "skipped" in k:
                self.fig(f"modbus_adapter_{k}_sum", sum(vals), "polls", "0")
            elif k.endswith("_us"):
                self.fig(f"modbus_adapter_{k[:-3]}_ms_worst", max(vals) / 1000.0, "ms")
            elif k.endswith("_ms"):
                self.fig(f"modbus_adapter_{k}_worst", max(vals), "ms")
            else:
                self.fig(f"modbus_adapter_{k}_worst", max(vals), "")
        self.notes.append(f"Modbus adapter lateness: _stats of {got} of {a.devices} connections")

    def finish(self):
        """Stops the publisher and the daemon; whole-run loss figures."""
        a = self.args
        self.stop("mqttpub")
        done = [l.split() for l in self.read_out("mqttpub").splitlines() if l.startswith("done ")]
        published = int(done[0][1]) if done else None
        skipped = int(done[0][4]) if done and len(done[0]) > 4 else 0
        # Wait until the adapter has seen everything that is coming (its count stops moving).
        seen, stable_since = None, mono()
        end = mono() + 15
        while mono() < end:
            st = self.mqtt_stats()
            n = st["messages"] if st else None
            if n != seen:
                seen, stable_since = n, mono()
            elif mono() - stable_since >= 1.5:
                break
            time.sleep(0.25)
        st = self.mqtt_stats() or {}
        if published is not None and seen is not None:
            self.fig("mqtt_published_total", published, "messages")
            self.fig("mqtt_seen_by_adapter_total", seen, "messages")
            self.fig("mqtt_lost_total", published - seen, "messages", "0")
            self.fig("mqtt_publisher_skipped", skipped, "messages", "0")
            self.fig("mqtt_topics_as_resources", st.get("topics", 0), "topics", f"{a.topics}")
        # GPIO: counts the adapter made (debounced level changes; every edge with debounce 0).
        counted = 0
        for k in range(a.gpio_lines):
            try:
                counted += int(self.resource(f"io/in{k:02d}/count", timeout=10)["count"])
            except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
                counted = None
                break
        rc = self.stop("gatewayd", timeout=60)
        if rc not in (0, None):
            self.notes.append(f"the daemon exited with status {rc} at the end")
        g = self.gpio_snapshot()
        if g:
            self.fig("gpio_generated_total", g["generated"], "events")
            self.fig("gpio_delivered_total", g["delivered"], "events")
            self.fig("gpio_lost_total", g["dropped"], "events", "0")
            if counted is not None:
                self.fig("gpio_level_changes_counted", counted, "changes")

    def report(self):
        a = self.args
        mode = "quick" if a.quick else "full"
        print()
        print(f"Scale run ({mode}): {a.devices} Modbus TCP devices x {a.points} points every "
              f"{a.interval_ms} ms; {a.topics} MQTT topics, each once per {a.mqtt_period_ms} ms "
              f"({a.topics * 1000.0 / a.mqtt_period_ms:g} msg/s offered, QoS 0); {a.gpio_rate:g} GPIO "
              f"edge events/s on {a.gpio_lines} simulated lines (kernel-like queue of {a.gpio_queue} "
              f"per line); machine: {os.cpu_count()} cores, shared")
        print("GPIO source: simulated backend in bench_scale_gatewayd. The real gpio-sim chip "
              "(tests/integration/gpio, kernel in qemu/TCG) is far too slow for 10,000 events/s, "
              "so it is not used here.")
        w = max(len(f[0]) for f in self.figures)
        for name, value, unit, target in self.figures:
            v = f"{value:.1f}" if isinstance(value, float) else str(value)
            t = f"   (target {target})" if target != "" else ""
            print(f"  {name:<{w}}  {v:>12} {unit}{t}")
        for n in self.notes:
            print("note:", n)
        data = os.environ.get("GW_BENCH_DATA")
        if data:
            os.makedirs(data, exist_ok=True)
            with open(os.path.join(data, "scale_figures.tsv"), "w") as f:
                f.write("# name\tvalue\tunit\ttarget\n")
                for name, value, unit, target in self.figures:
                    v = f"{value:.3f}" if isinstance(value, float) else str(value)
                    f.write(f"{name}\t{v}\t{unit}\t{target}\n")
            with open(os.path.join(data, "scale_timeline.tsv"), "w") as f:
                cols = ["t_s", "daemon_cpu_pct", "machine_cpu_pct", "rss_mib", "mqtt_msg_s", "gpio_ev_s"]
                f.write("# " + "\t".join(cols) + "\n")
                for r in self.timeline:
                    f.write("\t".join(f"{r[c]:.3f}" for c in cols) + "\n")
            print(f"TSV: {data}/scale_figures.tsv, {data}/scale_timeline.tsv")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of everything, 10 s")
    ap.add_argument("--devices", type=int)
    ap.add_argument("--points", type=int, default=100)
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--topics", type=int)
    ap.add_argument("--mqtt-period-ms", type=int, default=1000)
    ap.add_argument("--gpio-rate", type=float, help="events/s over all lines")
    ap.add_argument("--gpio-lines", type=int, default=16)
    ap.add_argument("--gpio-queue", type=int, default=16)
    ap.add_argument("--seconds", type=float, help="steady-state window")
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--no-floor", action="store_true", help="skip the GPIO-alone floor run")
    ap.add_argument("--stats-sample", type=int, default=100,
                    help="Modbus connections whose adapter _stats are read")
    ap.add_argument("--fallback-devices", type=int, default=900,
                    help="when the default 1,000 devices hit libmodbus's FD_SETSIZE limit, run "
                         "again with this many (0: do not)")
    a = ap.parse_args()
    q = a.quick
    devices_given = a.devices is not None
    a.devices = a.devices or (100 if q else 1000)
    a.topics = a.topics or (1000 if q else 10000)
    a.gpio_rate = a.gpio_rate or (1000.0 if q else 10000.0)
    a.seconds = a.seconds or (10.0 if q else 120.0)
    a.warmup = a.warmup if a.warmup is not None else (3.0 if q else 10.0)
    if not (1 <= a.devices <= 9999 and 1 <= a.points <= 100 and 1 <= a.gpio_lines <= 64):
        ap.error("--devices 1..9999, --points 1..100, --gpio-lines 1..64")
    requested, floor, notes = a.devices, None, []
    while True:
        run = Run(a)
        run.floor_given = floor
        run.notes.extend(notes)
        try:
            run.setup()
            res = run.measure()
            run.analyse(*res)
            run.finish()
            run.report()
            return 0
        except DaemonDied as e:
            if not (e.fd_limit and not devices_given and 0 < a.fallback_devices < a.devices):
                raise
            print(e.code, flush=True)
            notes = [f"{requested} Modbus TCP devices could not run (the daemon aborted: a socket "
                     f"number reached FD_SETSIZE in libmodbus's select()); these figures are for "
                     f"{a.fallback_devices} devices"]
            log(notes[0])
            floor = run.floor
            a.devices = a.fallback_devices
        finally:
            run.cleanup()


if __name__ == "__main__":
    sys.exit(main())
