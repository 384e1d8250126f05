#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""fault.half_open (issue 12 item 2): a half-open uplink.

iotmp-gatewayd -> faultproxy -> iotmp-broker, keep-alive 5 s, a sim counter recorded into bucket
"samples" every 4 ms (store-and-forward). Once the session is up and the broker has echoed a
keep-alive, the proxy freezes every connection half-open (nothing forwarded either way, both
sockets kept open, nothing read), new ones included. No FIN or RST ever reaches the gateway: only
its keep-alive silence rule (PROTOCOL.md 14.4: 2 x keep-alive without a byte after an echo) can
find the dead link. The proxy resumes 3 s after the gateway logged it, and the gateway must get a
new session through the proxy.

Pass criteria (printed with the measured numbers):
  - the gateway logs the dead link within 2 x keep-alive of the freeze, plus 1 s allowance for the
    test's 100 ms log polling and process scheduling (the gateway's own report of the silence
    is printed too);
  - a new session is established through the proxy after the resume;
  - every sample the store accepted is in the bucket (de-duplicated by _id), per-stream order kept.
Exit 0 pass, 1 fail, 77 skip.
"""
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "../../integration"))
sys.path.insert(0, os.path.join(HERE, "../../integration/store"))
sys.path.insert(0, os.path.join(HERE, "../proxy"))
from gwtest import BROKER, GATEWAYD, Checks, Env, log  # noqa: E402
from forward_test import RECORD, SIM, check_delivery  # noqa: E402
from faultctl import FaultProxy  # noqa: E402

KA = 5


def read_log(env):
    with open(os.path.join(env.dir, "gateway.log"), errors="replace") as f:
        return f.read()


def wait_log(env, pattern, count, timeout):
    """Polls the gateway log every 100 ms until pattern occurs count times; returns the time."""
    end = time.time() + timeout
    while time.time() < end:
        if len(re.findall(pattern, read_log(env))) >= count:
            return time.time()
        time.sleep(0.1)
    return None


def main():
    if not (os.path.exists(GATEWAYD) and os.path.exists(BROKER)):
        print("skip: iotmp-gatewayd or iotmp-broker not built")
        return 77
    check = Checks()
    env = Env()
    proxy = None
    try:
        env.write_adapter("sim.json", SIM)
        env.start_broker()
        proxy = FaultProxy.start([("127.0.0.1", env.tcp)])
        env.write_gateway_config(replay_rate=2500, record=RECORD)
        path = os.path.join(env.dir, "gateway.json")
        with open(path) as f:
            cfg = json.load(f)
        cfg["uplink"].update({"url": f"iotmp://127.0.0.1:{proxy.ports[0]}", "keepalive": KA,
                              "reconnect_max": 2, "reconnect_spread": 1, "connect_timeout": 3})
        with open(path, "w") as f:
            json.dump(cfg, f)
        env.start_gateway()
        env.wait_connected()
        log(f"session up through the proxy; waiting {KA + 3} s for a keep-alive echo")
        time.sleep(KA + 3)
        if "dead link" in read_log(env):
            check(False, "no dead link before the freeze")
        proxy.cmd("freeze")
        t_freeze = time.time()
        log("proxy frozen half-open (all connections, new ones too)")
        t_dead = wait_log(env, r"dead link", 1, 6 * KA)
        check(t_dead is not None, "the gateway logged a dead link")
        if t_dead is None:
            return check.verdict()
        detect = t_dead - t_freeze
        m = re.search(r"nothing received for (\d+) ms", read_log(env))
        silence = int(m.group(1)) if m else -1
        limit = 2 * KA + 1.0
        log(f"dead link detected {detect:.2f} s after the freeze (gateway: nothing received for "
            f"{silence} ms); keep-alive {KA} s, criterion <= 2 x {KA} s + 1 s = {limit:.1f} s")
        check(detect <= limit, f"detected within 2 x keep-alive (+1 s): {detect:.2f} s")
        check(2 * KA * 1000 <= silence <= 2 * KA * 1000 + 1000,
              f"gateway's silence at detection {silence} ms in [{2 * KA * 1000}, "
              f"{2 * KA * 1000 + 1000}]")
        time.sleep(3)  # the gateway's retries meet the frozen proxy: accepted, never answered
        frozen_attempts = sum(1 for h in proxy.history() if h["accepted"] > t_dead)
        proxy.cmd("resume")
        t_resume = time.time()
        log(f"proxy resumed ({frozen_attempts} connection attempt(s) met the frozen proxy)")
        t_ready = wait_log(env, r"session ready", 2, 60)
        check(t_ready is not None, "a new session after the resume")
        if t_ready is not None:
            log(f"new session {t_ready - t_resume:.2f} s after the resume "
                f"({t_ready - t_freeze:.2f} s after the freeze)")
        c = proxy.counters()
        log(f"proxy counters: {c}")
        check(c.get("accepted", 0) >= 2, "the new session came through the proxy")
        time.sleep(3)
        st = env.wait_drained()
        log(f"drained: {st}")
        rc = env.stop_gateway()
        check(rc == 0, f"gateway exit status {rc}")
        left, integrity = env.store_ids()
        seq, _ = env.bucket_ids()
        delivered = {i for i, _ in seq}
        accepted = delivered | left
        expected = set(range(min(accepted), max(accepted) + 1)) - left
        good, _, dups = check_delivery(env, expected)
        check(good, f"every accepted sample in the bucket, in order ({len(accepted)} accepted, "
              f"{len(left)} still queued, {dups} duplicate(s) removed by _id)")
        check(integrity == "ok", f"store integrity {integrity}")
        return check.verdict()
    finally:
        if proxy:
            proxy.stop()
        env.cleanup()


if __name__ == "__main__":
    sys.exit(main())
