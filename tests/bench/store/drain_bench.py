#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Drain rate of the store to the test broker, end to end (issue 7's "drain rate" figure).

The broker refuses the gateway while a recording fills the store (sim counter, one row per ms),
then lets it in; the time from reconnection to an empty store gives rows/s delivered, each row
acknowledged by the broker (WRITE_BUCKET with an answer, SQLite insert at the broker included).
Printed beside it, measured in the same run: the raw SQLite floor (this process inserting the
same number of ~60-byte rows in WAL mode, synchronous FULL, transactions of 500: what the broker's
own insert of each delivered row costs at best) and the broker's REST read of the same rows.
With GW_BENCH_DATA set, also writes store_drain.tsv there.

  drain_bench.py [SECONDS_OF_BACKLOG]     default 20
"""
import os
import shutil
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../integration"))
from gwtest import DEVICE, USER, Env, log  # noqa: E402


def raw_sqlite_floor(rows):
    """rows/s of plain batched INSERTs (500 per transaction, WAL, synchronous FULL) on /var/tmp."""
    d = tempfile.mkdtemp(prefix="drain-floor-", dir="/var/tmp")
    path = os.path.join(d, "floor.db")
    try:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, ts INTEGER, data BLOB)")
        blob = bytes(60)
        t0 = time.time()
        for start in range(0, rows, 500):
            db.execute("BEGIN")
            db.executemany("INSERT INTO t (ts, data) VALUES (?, ?)",
                           ((start + i, blob) for i in range(min(500, rows - start))))
            db.execute("COMMIT")
        dt = time.time() - t0
        db.close()
        return rows / dt
    finally:
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        os.rmdir(d)


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
        floor = raw_sqlite_floor(max(n, 5000))
        log(f"floor: raw SQLite INSERT of {max(n, 5000)} rows, txn of 500, WAL, sync FULL "
            f"(python sqlite3): {floor:.0f} rows/s; drain = {n / dt / floor:.2f} x floor")
        out = os.environ.get("GW_BENCH_DATA")
        if out:
            with open(os.path.join(out, "store_drain.tsv"), "w") as f:
                f.write("# what\trows_per_s\tfloor_rows_per_s\tratio\tfloor\n")
                f.write(f"drain to broker (acknowledged)\t{n / dt:.0f}\t{floor:.0f}\t"
                        f"{n / dt / floor:.3f}\traw SQLite txn 500 FULL (python)\n")
                f.write(f"broker REST read\t{len(rows) / dt_read:.0f}\t{floor:.0f}\t"
                        f"{len(rows) / dt_read / floor:.3f}\traw SQLite txn 500 FULL (python)\n")
    finally:
        env.stop_gateway()
        env.cleanup()
        shutil.rmtree(env.dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
