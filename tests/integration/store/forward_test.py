#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Store-and-forward end to end: iotmp-gatewayd (sim adapter, a recording into bucket "samples"
every 4 ms) against iotmp-broker, with real outages and real SIGKILLs. Issue 7's "Must show".

  forward_test.py outage [SECONDS]   broker killed for SECONDS (default 60) while samples are
                                     produced; then a second broker kill in the middle of the
                                     drain. Every accepted sample must reach the bucket, in order,
                                     none missing; duplicates (only possible around a broker
                                     restart) are counted.
  forward_test.py kill [N]           broker refusing connections while the gateway is SIGKILLed N
                                     times (default 20) at random moments, then allowed again while
                                     the gateway is killed during the drain too. After each kill the
                                     store file passes PRAGMA integrity_check; at the end every row
                                     ever committed to the file is in the bucket exactly once after
                                     de-duplication by _id.

"Accepted" is what the store committed: a row id present in the store file after a kill, or one
already delivered. The test reads the file directly (sqlite3) after every kill.
Exit 0 pass, 1 fail, 77 skip (binaries not built).
"""
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from gwtest import BROKER, DEVICE, GATEWAYD, USER, Env, log  # noqa: E402

RECORD = [{"bucket": "samples", "resources": ["s/counter"], "interval_ms": 4}]
SIM = {"type": "sim", "name": "s", "points": [{"name": "counter", "kind": "counter",
                                                "interval_ms": 4}]}

def check_delivery(env, accepted, out_of_order_ok=False):
    seq, epochs = env.bucket_ids()
    ids = [i for i, _ in seq]
    unique = set(ids)
    dups = len(ids) - len(unique)
    missing = sorted(accepted - unique)
    first_seen = []
    seen = set()
    for i in ids:
        if i not in seen:
            seen.add(i)
            first_seen.append(i)
    in_order = all(a < b for a, b in zip(first_seen, first_seen[1:]))
    log(f"bucket: {len(ids)} rows, {len(unique)} distinct ids, {dups} duplicate(s), "
        f"{len(missing)} accepted id(s) missing, order kept: {in_order}, epochs: {len(epochs)}")
    ok = not missing and len(epochs) == 1 and (in_order or out_of_order_ok)
    if missing:
        log("missing ids (first 10):", missing[:10])
    return ok, seq, dups


def run_outage(seconds):
    env = Env()
    try:
        env.write_adapter("sim.json", SIM)
        env.start_broker()
        env.write_gateway_config(replay_rate=2500, record=RECORD)
        env.start_gateway()
        env.wait_connected()
        time.sleep(2)
        log(f"broker killed: {seconds} s outage")
        t0 = time.time() * 1000
        env.kill_broker()
        time.sleep(seconds)
        t1 = time.time() * 1000
        env.start_broker()
        log("broker back; draining")
        env.wait_connected()
        time.sleep(1.5)
        st = env.store_state()
        log(f"store during the drain: depth {st['depth']}, delivered {st['delivered']}")
        mid_drain = st["depth"] > 500
        log("broker killed again in the middle of the drain, back after 2 s")
        env.kill_broker()
        time.sleep(2)
        env.start_broker()
        env.wait_connected()
        st = env.wait_drained()
        log(f"drained: {st}")
        env.stop_gateway()
        left, ok = env.store_ids()
        seq, _ = env.bucket_ids()
        delivered = {i for i, _ in seq}
        accepted = delivered | left
        produced_in_outage = sum(1 for _, ts in seq if t0 <= ts <= t1)
        log(f"samples produced during the {seconds} s outage and delivered after it: "
            f"{produced_in_outage}; accepted in all: {len(accepted)}, still queued at stop: "
            f"{len(left)}, store integrity: {ok}")
        # Every id from the first to the last accepted must exist: nothing lost in between.
        expected = set(range(min(accepted), max(accepted) + 1))
        good, _, dups = check_delivery(env, expected - left)
        if produced_in_outage < 10000 and seconds >= 60:
            log("FAIL: fewer than 10,000 samples were produced during the outage")
            good = False
        if ok != "ok":
            good = False
        if not mid_drain:
            log("FAIL: the drain had finished before the second broker kill: not exercised")
            good = False
        log("PASS" if good else "FAIL")
        return 0 if good else 1
    finally:
        env.cleanup()


def run_kill(n):
    env = Env()
    rng = random.Random(int(os.environ.get("GW_SEED", time.time())))
    try:
        env.write_adapter("sim.json", SIM)
        env.start_broker()
        env.write_gateway_config(replay_rate=0, record=RECORD)
        env.start_gateway()
        env.wait_connected()
        accepted = set()
        bad_integrity = 0
        env.control("refuse", {"on": True})
        env.control(f"devices/{USER}/{DEVICE}/drop")
        log(f"broker refusing connections; {n} SIGKILLs of the gateway follow")
        for k in range(n):
            if k == n // 2:
                env.control("refuse", {"on": False})
                log("broker accepting again: the rest of the kills hit the drain")
            time.sleep(rng.uniform(0.2, 1.5))
            env.kill_gateway()
            ids, ok = env.store_ids()
            accepted |= ids
            if ok != "ok":
                bad_integrity += 1
                log(f"kill {k + 1}: integrity_check: {ok}")
            env.start_gateway()
        log(f"{n} kills done, integrity_check failures: {bad_integrity}")
        env.wait_connected()
        st = env.wait_drained()
        log(f"drained: {st}")
        env.stop_gateway()
        left, ok = env.store_ids()
        seq, _ = env.bucket_ids()
        delivered = {i for i, _ in seq}
        # Rows delivered before any kill were accepted too.
        accepted |= delivered
        good, _, dups = check_delivery(env, accepted - left, out_of_order_ok=False)
        log(f"accepted rows: {len(accepted)}, still queued at the final stop: {len(left)}, "
            f"duplicates (allowed around restarts): {dups}")
        good = good and bad_integrity == 0 and ok == "ok"
        log("PASS" if good else "FAIL")
        return 0 if good else 1
    finally:
        env.cleanup()


def main():
    if not (os.path.exists(GATEWAYD) and os.path.exists(BROKER)):
        print("skip: iotmp-gatewayd or iotmp-broker not built")
        return 77
    mode = sys.argv[1] if len(sys.argv) > 1 else "outage"
    arg = int(sys.argv[2]) if len(sys.argv) > 2 else (60 if mode == "outage" else 20)
    return run_outage(arg) if mode == "outage" else run_kill(arg)


if __name__ == "__main__":
    sys.exit(main())
