#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Serial shim that corrupts Modbus RTU replies on demand, for the adapter's bad-CRC test.

    crc_shim.py <sim side tty> <gateway link path> <control file>

Opens <sim side tty> (one end of a socat pty pair whose other end sim_server.py serves), creates a
new pseudo-terminal and links its slave to <gateway link path> (the adapter opens that), and relays
bytes both ways. Replies (sim -> gateway) are cut into frames at 3 ms of silence. When the control
file holds a number N > 0, the last byte (CRC high byte) of each of the next N reply frames is
flipped, and the file is rewritten with 0. Prints "READY" when the link exists.
"""
import os
import select
import sys
import time
import tty


def main():
    sim_tty, link, control = sys.argv[1], sys.argv[2], sys.argv[3]
    sim = os.open(sim_tty, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(sim)
    master, slave = os.openpty()
    tty.setraw(slave)
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(os.ttyname(slave), link)
    with open(control, "w") as f:
        f.write("0\n")
    print("READY", flush=True)
    pending = 0
    reply = b""
    last_byte = 0.0
    while True:
        timeout = 0.003 if reply else 0.1
        ready, _, _ = select.select([master, sim], [], [], timeout)
        if master in ready:
            try:
                data = os.read(master, 4096)
            except OSError:
                data = b""
            if data:
                os.write(sim, data)
        if sim in ready:
            reply += os.read(sim, 4096)
            last_byte = time.monotonic()
        if reply and time.monotonic() - last_byte >= 0.003:
            try:
                with open(control) as f:
                    want = int(f.read().strip() or "0")
                if want > 0:
                    pending += want
                    with open(control, "w") as f:
                        f.write("0\n")
            except (OSError, ValueError):
                pass
            if pending > 0:
                reply = reply[:-1] + bytes([reply[-1] ^ 0xFF])
                pending -= 1
                print("corrupted one reply", flush=True)
            os.write(master, reply)
            reply = b""


if __name__ == "__main__":
    main()
