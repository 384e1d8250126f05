#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Drain rate of the store to the test broker, end to end (issue 7's "drain rate" figure).

The broker refuses the gateway while a recording fills the store (sim counter, one row per ms),
then lets it in; the time from reconnection to an empty store gives rows/s delivered, each row
acknowledged by the broker (WRITE_BUCKET with an answer, SQLite insert at the broker included).
The floor printed beside it is the broker's own REST read of the same rows (its SQLite).

  drain_bench.py [SECONDS_OF_BACKLOG]     default 20
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../integration"))
from gwtest import DEVICE, USER, Env, log  # noqa: E402


def main():
    secs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    env = Env()
    try:
        env.write_adapter("sim.json", {"type": "sim", "name": "s", "points": [
            {"name": "counter", "kind": "counter", "interval_ms": 1}]})
        env.start_broker()
        env.write_gateway_config(record=[{"bucket": "b", "resources": ["s/counter"],
                                          "interval_ms": 1}])
        env.start_gateway()
        env.wait_connected()
        env.control("refuse", {"on": True})
        env.control(f"devices/{USER}/{DEVICE}/drop")
        log(f"filling the store for {secs} s")
        time.sleep(secs)
        env.control("refuse", {"on": False})
        env.wait_connected()
        # The rate is measured between two reads of $gateway/store, both during the drain, so the
        # reconnection delay is not counted.
        st0 = env.store_state()
        t0 = time.time()
        while True:
            st = env.store_state()
            if st["depth"] < 100:
                break
            time.sleep(0.05)
        dt = time.time() - t0
        n = st["delivered"] - st0["delivered"]
        rss = env.rss_kib(env.gw)
        t1 = time.time()
        rows = env.bucket_ids("b")[0]
        dt_read = time.time() - t1
        log(f"backlog at the first read after reconnection: {st0['depth']} rows")
        log(f"drain: {n} rows delivered in {dt:.2f} s = {n / dt:.0f} rows/s "
            f"(each acknowledged by the broker); gateway RSS {rss / 1024:.1f} MiB")
        log(f"floor: broker REST read of {len(rows)} rows: {len(rows) / dt_read:.0f} rows/s")
    finally:
        env.stop_gateway()
        env.cleanup()


if __name__ == "__main__":
    sys.exit(main())
