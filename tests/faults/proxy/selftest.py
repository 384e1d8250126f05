#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""fault.proxy_selftest: every fault of faultproxy.py against a trivial echo server and a trivial
Modbus TCP responder (both threads of this process, on 127.0.0.1 free ports). Each check asserts
what the fault must do to the bytes or the socket (delays and throttles only as lower bounds).
Exit 0 pass, 1 fail."""
import os
import socket
import socketserver
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faultctl import FaultError, FaultProxy  # noqa: E402

FAILS = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILS.append(what)


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            try:
                d = self.request.recv(65536)
            except OSError:
                return
            if not d:
                return
            self.request.sendall(d)


class Modbus(socketserver.BaseRequestHandler):
    """Function 3 only: register a of unit u holds (u * 1000 + a) & 0xFFFF."""

    def handle(self):
        buf = b""
        while True:
            try:
                d = self.request.recv(4096)
            except OSError:
                return
            if not d:
                return
            buf += d
            while len(buf) >= 12:
                tid, _, length, unit = struct.unpack(">HHHB", buf[:7])
                pdu, buf = buf[7:6 + length], buf[6 + length:]
                _fc, addr, n = struct.unpack(">BHH", pdu[:5])
                regs = [(unit * 1000 + addr + i) & 0xFFFF for i in range(n)]
                body = struct.pack(">BB", 3, 2 * n) + struct.pack(f">{n}H", *regs)
                self.request.sendall(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(handler):
    srv = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_n(s, n, timeout=5.0):
    s.settimeout(timeout)
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            break
        out += d
    return out


def roundtrip(s, data, timeout=5.0):
    s.sendall(data)
    return recv_n(s, len(data), timeout)


def mb_read(s, tid, unit, addr, n, timeout=2.0):
    s.sendall(struct.pack(">HHHBBHH", tid, 0, 6, unit, 3, addr, n))
    s.settimeout(timeout)
    try:
        head = recv_n(s, 7, timeout)
        if len(head) < 7:
            return None
        length = struct.unpack(">H", head[4:6])[0]
        return head + recv_n(s, length - 1, timeout)
    except socket.timeout:
        return None


def main():
    echo = serve(Echo)
    mbsrv = serve(Modbus)
    p = FaultProxy.start([echo.server_address, mbsrv.server_address], seed=1)
    port, mport = p.ports
    try:
        payload = os.urandom(1 << 20)
        s = connect(port)
        check(roundtrip(s, payload) == payload, "1 MiB echoed intact through the proxy")

        p.cmd("delay 200")
        t = time.monotonic()
        check(roundtrip(s, b"x" * 100) == b"x" * 100, "delay: data intact")
        el = time.monotonic() - t
        check(el >= 0.4, f"delay 200 ms both ways: round trip {el * 1000:.0f} ms >= 400 ms")
        p.cmd("resume")

        p.cmd("throttle 20000 dir=up")
        t = time.monotonic()
        data = os.urandom(10000)
        check(roundtrip(s, data) == data, "throttle: data intact")
        el = time.monotonic() - t
        check(el >= 0.45, f"throttle 20000 B/s: 10000 bytes took {el:.2f} s >= 0.45 s")
        p.cmd("resume")

        before = p.counters().get("split_writes", 0)
        p.cmd("split on")
        check(roundtrip(s, b"split-me") == b"split-me", "split: data intact")
        n = p.counters().get("split_writes", 0) - before
        check(n == 16, f"split: {n} one-byte writes for 8 bytes each way (16)")
        p.cmd("resume")

        p.cmd("corrupt dir=down")
        data = bytes(200)
        got = roundtrip(s, data)
        diff = sum(bin(a ^ b).count("1") for a, b in zip(data, got))
        check(len(got) == 200 and diff == 1, f"corrupt next chunk: {diff} bit flipped (1)")
        check(roundtrip(s, data) == data, "corrupt is one-shot: the next chunk is intact")

        # freeze half-open: nothing forwarded, nothing closed; resume delivers
        s.sendall(b"before")
        recv_n(s, 6)
        p.cmd("freeze")
        s.sendall(b"frozen")
        s.settimeout(1.5)
        try:
            d = s.recv(100)
            check(False, f"freeze: got {d!r} while frozen")
        except socket.timeout:
            check(True, "freeze: nothing came back for 1.5 s, socket still open")
        p.cmd("resume")
        check(recv_n(s, 6) == b"frozen", "resume after freeze: the held bytes arrive")

        # per-connection scope
        s2 = connect(port)
        roundtrip(s2, b"hi")
        conns = p.conns()
        cid = max(c["id"] for c in conns)
        p.cmd(f"freeze scope=C{cid}")
        check(roundtrip(s, b"other") == b"other", "freeze of one connection: another flows")
        s2.sendall(b"held")
        s2.settimeout(1.0)
        try:
            s2.recv(10)
            check(False, "scoped freeze: frozen connection got data")
        except socket.timeout:
            check(True, "scoped freeze: the frozen connection got nothing")
        p.cmd(f"resume scope=C{cid}")
        check(recv_n(s2, 4) == b"held", "scoped resume delivers")

        p.cmd(f"drop rst scope=C{cid}")
        try:
            s2.settimeout(5)
            d = s2.recv(10)
            check(False, f"drop rst: recv returned {d!r}")
        except ConnectionResetError:
            check(True, "drop rst: the client sees a reset")
        ans = p.cmd("drop fin")
        s.settimeout(5)
        check(s.recv(10) == b"", f"drop fin ({ans}): the client sees an orderly close")

        p.cmd("refuse close")
        try:
            s3 = connect(port)
            s3.settimeout(5)
            d = s3.recv(10)
            check(d == b"", "refuse close: accepted and closed")
        except ConnectionResetError:  # the reset may come before connect() returns
            check(True, "refuse close: accepted and reset")
        p.cmd("refuse unlisten")
        try:
            connect(port)
            check(False, "refuse unlisten: connect succeeded")
        except ConnectionRefusedError:
            check(True, "refuse unlisten: connection refused")
        p.cmd("resume")
        s4 = connect(port)
        check(roundtrip(s4, b"back") == b"back", "resume: listening and forwarding again")
        c = p.counters()
        check(c.get("refused") == 1 and c.get("dropped_rst") == 1 and c.get("dropped_fin") == 1,
              f"counters: {c}")

        try:
            p.cmd("frobnicate")
            check(False, "unknown command accepted")
        except FaultError as e:
            check("unknown command" in str(e), f"bad command answered: {e}")

        # Modbus mode
        m = connect(mport)
        r = mb_read(m, 1, 7, 100, 2)
        check(r is not None and r[9:13] == struct.pack(">HH", 7100, 7101),
              "modbus: plain read through the proxy")
        p.cmd("modbus dead=9 scope=L1")
        check(mb_read(m, 2, 9, 0, 1, timeout=1) is None, "modbus: dead unit 9 never answers")
        r = mb_read(m, 3, 7, 0, 1)
        check(r is not None and r[:2] == b"\x00\x03", "modbus: unit 7 still answers")
        p.cmd("modbus exception=1 code=4 scope=L1")
        r = mb_read(m, 4, 7, 0, 1)
        check(r == struct.pack(">HHHBBB", 4, 0, 3, 7, 0x83, 4), f"modbus: exception 0x04: {r!r}")
        p.cmd("modbus timeout=1 scope=L1")
        check(mb_read(m, 5, 7, 0, 1, timeout=1) is None, "modbus: response dropped")
        p.cmd("modbus corrupt=1 scope=L1")
        bad = 0
        for tid in range(10, 40):
            r = mb_read(m, tid, 7, 0, 4, timeout=1)
            ok = (r is not None and r[:2] == struct.pack(">H", tid) and r[7] == 3 and r[8] == 8
                  and len(r) == 17 and struct.unpack(">H", r[4:6])[0] == 11)
            bad += not ok
            if r is not None and r[:2] != struct.pack(">H", tid):
                m.close()  # a wrong transaction id: start clean
                m = connect(mport)
        check(bad == 30, f"modbus corrupt: {bad}/30 responses detectably wrong")
        c = p.counters()
        check(c.get("mb_corrupted") == 30 and c.get("mb_dead_unit") == 1
              and c.get("mb_exceptions") == 1 and c.get("mb_dropped_responses") == 1,
              "modbus counters: " + str({k: v for k, v in c.items() if k.startswith("mb_")}))
        p.cmd("modbus off scope=L1")
        r = mb_read(m, 99, 7, 5, 1)
        check(r is not None and r[9:11] == struct.pack(">H", 7005), "modbus off: clean again")
    finally:
        p.stop()
        echo.shutdown()
        mbsrv.shutdown()
    print("PASS" if not FAILS else f"FAIL: {len(FAILS)} check(s)", flush=True)
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
