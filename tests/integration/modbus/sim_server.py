#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Modbus simulator for the Modbus adapter's real-peer tests, built on Debian's pymodbus 3.0.

Serves Modbus TCP on 127.0.0.1 (--tcp PORT, 0 = any free port) or Modbus RTU on a serial device
(--rtu PATH, e.g. one end of a socat pty pair) for the unit ids given by --units, each with all
four tables of 65536 zeroed entries, 0-based (zero_mode); --limit UNIT:N shrinks one unit's tables
to N entries so that higher addresses answer exception 2; --hole UNIT:START:COUNT leaves a run of
that unit's holding registers unimplemented (exception 2 for any read that covers it). Unit ids not in --units get no answer. A second, plain-text control port on
127.0.0.1 lets a test look at the datastore without going through Modbus, and tells how many
requests arrived per unit and function code. One command per line, one answer line each:

    GET <unit> <c|d|i|h> <address> <count>    -> OK v1 v2 ...   (coils/inputs as 0/1)
    SET <unit> <c|d|i|h> <address> v1 v2 ...  -> OK
    COUNTS                                    -> OK <unit>:<fc>=<n> ...   (sorted)
    RESET                                     -> OK   (zero the request counters)
    QUIT                                      -> OK, then the simulator exits
Errors answer "ERR <reason>". On start it prints one line to stdout and flushes it:
    READY modbus=<port or device> control=<port>
"""
import argparse
import asyncio
import collections
import sys

try:
    from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                    ModbusSlaveContext, ModbusSparseDataBlock)
    from pymodbus.server.async_io import ModbusSerialServer, ModbusTcpServer
    from pymodbus.transaction import ModbusRtuFramer, ModbusSocketFramer
except ImportError as exc:  # the test script turns this exit code into "skipped"
    print(f"pymodbus not importable: {exc}", file=sys.stderr)
    sys.exit(77)

TABLES = {"c": "c", "d": "d", "i": "i", "h": "h"}  # pymodbus store keys
COUNTS = collections.Counter()


class CountingContext(ModbusSlaveContext):
    """A slave context that counts requests: pymodbus validates every request exactly once."""

    def __init__(self, unit, **kwargs):
        super().__init__(**kwargs)
        self.unit = unit

    def validate(self, fc_as_hex, address, count=1):
        COUNTS[(self.unit, fc_as_hex)] += 1
        return super().validate(fc_as_hex, address, count)


def make_context(units, limits, holes):
    slaves = {}
    for unit in units:
        size = limits.get(unit, 65536)
        if unit in holes:
            start, count = holes[unit]
            hr = ModbusSparseDataBlock({a: 0 for a in range(size)
                                        if not start <= a < start + count})
        else:
            hr = ModbusSequentialDataBlock(0, [0] * size)
        slaves[unit] = CountingContext(
            unit,
            di=ModbusSequentialDataBlock(0, [0] * size),
            co=ModbusSequentialDataBlock(0, [0] * size),
            ir=ModbusSequentialDataBlock(0, [0] * size),
            hr=hr,
            zero_mode=True,
        )
    return ModbusServerContext(slaves=slaves, single=False)


def control_command(context, line, stop):
    words = line.split()
    if not words:
        return "ERR empty command"
    cmd = words[0].upper()
    try:
        if cmd in ("GET", "SET"):
            unit, table, address = int(words[1]), words[2], int(words[3])
            if table not in TABLES:
                return f"ERR unknown table {table}"
            if unit not in context.slaves():
                return f"ERR unknown unit {unit}"
            store = context[unit].store[TABLES[table]]
            if cmd == "GET":
                count = int(words[4])
                if address < 0 or count < 1 or address + count > 65536:
                    return "ERR range"
                values = store.getValues(address, count)
                return "OK " + " ".join(str(int(v)) for v in values)
            values = [int(w) for w in words[4:]]
            if address < 0 or not values or address + len(values) > 65536:
                return "ERR range"
            if table in "cd":
                values = [bool(v) for v in values]
            store.setValues(address, values)
            return "OK"
        if cmd == "COUNTS":
            return "OK " + " ".join(f"{u}:{fc}={n}" for (u, fc), n in sorted(COUNTS.items()))
        if cmd == "RESET":
            COUNTS.clear()
            return "OK"
        if cmd == "QUIT":
            stop.set()
            return "OK"
    except (IndexError, ValueError, KeyError) as exc:
        return f"ERR {exc}"
    return f"ERR unknown command {cmd}"


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tcp", type=int, help="Modbus TCP port on 127.0.0.1 (0 = any)")
    ap.add_argument("--rtu", help="serial device for Modbus RTU")
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--control", type=int, default=0, help="control port (0 = any)")
    ap.add_argument("--units", default="1", help="comma-separated unit ids")
    ap.add_argument("--limit", action="append", default=[],
                    help="UNIT:N gives that unit tables of N entries only (addresses >= N "
                         "answer exception 2)")
    ap.add_argument("--hole", action="append", default=[],
                    help="UNIT:START:COUNT leaves holding registers START..START+COUNT-1 of that "
                         "unit unimplemented (exception 2), for the gap fallback test")
    args = ap.parse_args()
    if (args.tcp is None) == (args.rtu is None):
        ap.error("give exactly one of --tcp and --rtu")

    limits = {int(u): int(n) for u, n in (spec.split(":") for spec in args.limit)}
    holes = {}
    for spec in args.hole:
        u, start, count = (int(x) for x in spec.split(":"))
        holes[u] = (start, count)
    context = make_context([int(u) for u in args.units.split(",")], limits, holes)
    stop = asyncio.Event()

    async def on_control(reader, writer):
        while not stop.is_set():
            line = await reader.readline()
            if not line:
                break
            writer.write((control_command(context, line.decode(), stop) + "\n").encode())
            await writer.drain()
        writer.close()

    control = await asyncio.start_server(on_control, "127.0.0.1", args.control)
    control_port = control.sockets[0].getsockname()[1]

    if args.tcp is not None:
        server = ModbusTcpServer(context, framer=ModbusSocketFramer,
                                 address=("127.0.0.1", args.tcp), allow_reuse_address=True,
                                 ignore_missing_slaves=True)
        task = asyncio.create_task(server.serve_forever())
        await server.serving
        where = str(server.server.sockets[0].getsockname()[1])
    else:
        server = ModbusSerialServer(context, framer=ModbusRtuFramer, port=args.rtu,
                                    baudrate=args.baud, auto_reconnect=False,
                                    ignore_missing_slaves=True)
        await server.start()
        task = asyncio.create_task(server.serve_forever())
        where = args.rtu

    print(f"READY modbus={where} control={control_port}", flush=True)
    await stop.wait()
    await server.shutdown()
    task.cancel()
    control.close()


if __name__ == "__main__":
    asyncio.run(main())
