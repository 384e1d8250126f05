#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Modbus TCP slaves for fault.modbus_mix, on Debian's pymodbus 3.0 (run with /usr/bin/python3).

  mb_slaves.py --units 1-50[,52] --port PORT     (PORT 0 = a free one)

Every unit's holding register a (0 <= a < 16) holds value(unit, a) = (unit * 100 + a) & 0xFFFF
from the start, so a restarted process serves the same values at once and a test can check every
value a client ever reports. Prints "READY modbus=<port>" and serves until killed.
"""
import argparse
import asyncio
import sys

try:
    from pymodbus.datastore import (ModbusSequentialDataBlock, ModbusServerContext,
                                    ModbusSlaveContext)
    from pymodbus.server.async_io import ModbusTcpServer
    from pymodbus.transaction import ModbusSocketFramer
except ImportError as exc:
    print(f"pymodbus not importable: {exc}", file=sys.stderr)
    sys.exit(77)

REGS = 16


def value(unit, addr):
    return (unit * 100 + addr) & 0xFFFF


def parse_units(text):
    units = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        units += range(int(lo), int(hi or lo) + 1)
    return units


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--units", required=True)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args()
    slaves = {}
    for u in parse_units(a.units):
        slaves[u] = ModbusSlaveContext(
            hr=ModbusSequentialDataBlock(0, [value(u, i) for i in range(REGS)]),
            ir=ModbusSequentialDataBlock(0, [0] * REGS), co=ModbusSequentialDataBlock(0, [0] * REGS),
            di=ModbusSequentialDataBlock(0, [0] * REGS), zero_mode=True)
    ctx = ModbusServerContext(slaves=slaves, single=False)
    server = ModbusTcpServer(ctx, framer=ModbusSocketFramer, address=("127.0.0.1", a.port),
                             allow_reuse_address=True, ignore_missing_slaves=True)
    task = asyncio.create_task(server.serve_forever())
    await server.serving
    print(f"READY modbus={server.server.sockets[0].getsockname()[1]}", flush=True)
    await task


if __name__ == "__main__":
    asyncio.run(main())
