#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The daemon end to end against the test broker (issue 5).

  daemon_test.py reload     SIGHUP with a valid changed configuration swaps adapters without
                            dropping the uplink session (same connection at the broker); SIGHUP
                            with an invalid one is refused, logged, and changes nothing; 10 more
                            reloads leave the fd count unchanged.
  daemon_test.py metrics    the metrics endpoint parses with the Prometheus text parser
                            (python3-prometheus-client), shows the uplink ready and the right
                            resource count, agrees with $gateway/health read through the broker,
                            and answers 404 elsewhere.
  daemon_test.py describe   a sim instance with 10,000 resources: DESCRIBE of all of them through
                            the broker is complete and correct; prints the time and the RSS.
Exit 0 pass, 1 fail, 77 skip (binaries not built).
"""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from gwtest import BROKER, DEVICE, GATEWAYD, Checks, Env, free_port, log  # noqa: E402


def describe(env):
    return env.rest(f"devices/{DEVICE}/api", timeout=60)


def connection(env):
    return [d for d in env.rest("devices") if d["device"] == DEVICE]


def wait_for(pred, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def run_reload():
    env = Env()
    check = Checks()

    try:
        env.write_adapter("a.json", {"type": "sim", "name": "a", "points": [
            {"name": "x", "kind": "memory", "value": 1}, {"name": "old", "kind": "counter"}]})
        env.start_broker()
        env.write_gateway_config()
        env.start_gateway()
        env.wait_connected()
        before = connection(env)
        api = describe(env)
        check("a/x" in api and "a/old" in api, "first configuration: a/x and a/old described")
        id_x = api["a/x"]["id"]

        # A valid change: a second instance, one point removed from the first.
        env.write_adapter("a.json", {"type": "sim", "name": "a", "points": [
            {"name": "x", "kind": "memory", "value": 1}]})
        env.write_adapter("b.json", {"type": "sim", "name": "b", "points": [
            {"name": "y", "kind": "memory", "value": "hello"}]})
        os.kill(env.gateway_pid(), signal.SIGHUP)
        check(wait_for(lambda: "b/y" in describe(env)), "after SIGHUP: b/y appears")
        api = describe(env)
        check("a/old" not in api, "after SIGHUP: a/old is gone")
        check(api.get("a/x", {}).get("id") == id_x, "a/x keeps its numeric id across the reload")
        check(env.rest(f"devices/{DEVICE}/resources/b/y") == "hello", "b/y answers through the broker")
        check(connection(env) == before, "the uplink connection was not dropped (same since/remote)")

        # An invalid change: refused, nothing changes.
        env.write_adapter("c.json", {"type": "sim", "name": "c", "points": [
            {"name": "z", "kind": "sinus"}]})
        os.kill(env.gateway_pid(), signal.SIGHUP)
        time.sleep(1.0)
        with open(os.path.join(env.dir, "gateway.log")) as f:
            logtext = f.read()
        check("reload refused" in logtext and "sinus" in logtext,
              "invalid reload: refused with the reason in the log")
        api2 = describe(env)
        check(api2 == api, "invalid reload: resources unchanged")
        check(connection(env) == before, "invalid reload: uplink untouched")
        check(env.gw.poll() is None, "invalid reload: the daemon keeps running")
        os.remove(os.path.join(env.dir, "adapters.d", "c.json"))

        # Repeated reloads must not leak file descriptors.
        os.kill(env.gateway_pid(), signal.SIGHUP)
        time.sleep(0.5)
        fds0 = fd_count(env.gateway_pid())
        for _ in range(10):
            os.kill(env.gateway_pid(), signal.SIGHUP)
            time.sleep(0.3)
        time.sleep(0.5)
        fds1 = fd_count(env.gateway_pid())
        check(fds1 == fds0, f"10 reloads: fd count {fds0} -> {fds1}")
        check(connection(env) == before, "after 11 more reloads: still the same connection")
        rc = env.stop_gateway()
        check(rc == 0, f"SIGTERM: clean exit (status {rc})")
    finally:
        env.cleanup()
    return check.verdict()


def run_describe(count):
    env = Env()
    try:
        env.write_adapter("many.json", {"type": "sim", "name": "many",
                                        "generate": {"count": count, "prefix": "p",
                                                     "interval_ms": 0}})
        env.start_broker()
        env.write_gateway_config()
        env.start_gateway()
        env.wait_connected(timeout=60)
        times = []
        for _ in range(5):
            t0 = time.time()
            api = describe(env)
            times.append((time.time() - t0) * 1000)
        names = [f"many/p{i}" for i in range(count)]
        ok = all(n in api and api[n].get("fn") == 3 and isinstance(api[n].get("id"), int)
                 for n in names)
        ids = {api[n]["id"] for n in names if n in api}
        own = [n for n in api if n.startswith("$gateway/")]
        ok = ok and len(ids) == count and len(api) == count + len(own)
        rss = env.rss_kib(env.gw)
        log(f"DESCRIBE of {len(api)} resources through the broker: "
            f"{min(times):.1f} ms best of 5 (REST round trip, JSON conversion included); "
            f"gateway RSS {rss / 1024:.1f} MiB; distinct ids {len(ids)}")
        log("PASS" if ok else "FAIL: descriptors missing or wrong")
        return 0 if ok else 1
    finally:
        env.cleanup()



def run_metrics():
    import urllib.error
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    env = Env()
    check = Checks()

    try:
        env.write_adapter("a.json", {"type": "sim", "name": "a", "points": [
            {"name": "x", "kind": "memory", "value": 1}]})
        # A Modbus instance aimed at a closed port: its per-device status must reach the metrics.
        env.write_adapter("m.json", {"type": "modbus", "name": "plc1", "connections": [{
            "name": "line1", "tcp": {"host": "127.0.0.1", "port": free_port()},
            "devices": [{"name": "boiler", "unit": 1, "points": [
                {"name": "t", "address": "40001", "type": "uint16"}]}]}]})
        env.start_broker()
        port = free_port()
        env.write_gateway_config(extra={"metrics": {"listen": f"127.0.0.1:{port}"}})
        env.start_gateway()
        env.wait_connected()
        for _ in range(3):  # some calls so that the latency histogram has data
            env.rest(f"devices/{DEVICE}/resources/a/x")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        log(f"{len(fams)} metric families parsed")

        def value(name, **labels):
            for fam in fams.values():
                for smp in fam.samples:
                    if smp.name == name and all(smp.labels.get(k) == v
                                                for k, v in labels.items()):
                        return smp.value
            return None
        for name in ["iotmp_gateway_info", "iotmp_gateway_uplink_connected",
                     "iotmp_gateway_frames", "iotmp_gateway_run_calls",
                     "iotmp_gateway_run_latency_seconds", "iotmp_gateway_store_depth",
                     "iotmp_gateway_resident_memory_bytes", "iotmp_gateway_resources",
                     "iotmp_gateway_adapter_stat"]:
            check(name in fams, f"family {name} present")
        check(value("iotmp_gateway_uplink_connected") == 1, "uplink_connected is 1")
        health = env.rest(f"devices/{DEVICE}/resources/$gateway/health")
        check(value("iotmp_gateway_resources") == health["resources"] == 6,
              "resources agree with $gateway/health (a/x, plc1/t, plc1/boiler, plc1/_stats/line1, "
              "$gateway/store, $gateway/health)")
        check(value("iotmp_gateway_adapter_stat", resource="plc1/_stats/line1",
                    key="devices.boiler.quarantined") == 0 and
              value("iotmp_gateway_adapter_stat", resource="plc1/_stats/line1",
                    key="connected") == 0,
              "per-device adapter status in the metrics (plc1 boiler: not quarantined, "
              "line not connected)")
        check("plc1/_stats/line1" in health.get("adapters_stats", {}),
              "$gateway/health carries the adapter statistics too")
        check(health["uplink"] == "ready", "$gateway/health says the uplink is ready")
        ok_calls = value("iotmp_gateway_run_latency_seconds_count", outcome="ok")
        check(ok_calls is not None and ok_calls >= 3, f"latency histogram counted {ok_calls} calls")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=5)
            check(False, "404 for other paths")
        except urllib.error.HTTPError as e:
            check(e.code == 404, "404 for other paths")
        rc = env.stop_gateway()
        check(rc == 0, f"SIGTERM: clean exit (status {rc})")
    finally:
        env.cleanup()
    return check.verdict()


def main():
    if not (os.path.exists(GATEWAYD) and os.path.exists(BROKER)):
        print("skip: iotmp-gatewayd or iotmp-broker not built")
        return 77
    mode = sys.argv[1] if len(sys.argv) > 1 else "reload"
    if mode == "reload":
        return run_reload()
    if mode == "metrics":
        return run_metrics()
    return run_describe(int(sys.argv[2]) if len(sys.argv) > 2 else 10000)


if __name__ == "__main__":
    sys.exit(main())
