#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""faultproxy: a loopback TCP proxy that injects network faults for the fault suite (issue 12).

One process forwards one or more listening ports to targets (--map LISTEN=HOST:PORT, LISTEN 0 =
a free port) and takes commands on a line-based control port on 127.0.0.1. Faults apply to all
connections, to one listener (scope L<n>, n = the listener's index in --map order) or to one
connection (scope C<id>), in one direction or both: delay, throttle, drop (RST or FIN), freeze
half-open, corrupt a byte, split into 1-byte writes, refuse new connections; and a Modbus TCP
mode (MBAP framing) that drops responses, answers exceptions itself, corrupts responses in ways a
client can detect, and keeps given unit ids dead. The protocol and commands are in README.md;
faultctl.py is the client for tests.

On start it prints one line and flushes it:
    READY control=<port> listen=<port>,<port>,...
"""
import argparse
import asyncio
import json
import random
import socket
import struct
import sys
import time

FIELDS = ("delay_ms", "throttle_bps", "frozen", "corrupt", "split")


class Faults:
    """Fault settings of one level (global, listener or connection); None = not set here."""

    def __init__(self):
        self.up = dict.fromkeys(FIELDS)
        self.down = dict.fromkeys(FIELDS)
        self.corrupt_next = {"up": 0, "down": 0}  # one-shot corruptions still owed

    def clear(self):
        self.__init__()


class Listener:
    def __init__(self, index, host, port, target):
        self.index = index
        self.host, self.port = host, port
        self.target = target
        self.server = None
        self.faults = Faults()
        self.refuse = None  # None | "close" | "unlisten"
        self.modbus = None  # dict of probabilities when in Modbus mode


class Conn:
    def __init__(self, cid, listener, peer):
        self.id = cid
        self.listener = listener
        self.peer = peer
        self.accepted = time.time()
        self.faults = Faults()
        self.writers = []
        self.tasks = []
        self.bytes = {"up": 0, "down": 0}
        self.head = b""  # first bytes from the client (to tell who connected)
        self.closed = False
        self.wake = asyncio.Event()
        self.pending = {}  # Modbus: transaction id -> action for the response
        self.sending = {"up": False, "down": False}  # the sender holds a chunk


class Proxy:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.listeners = []
        self.conns = {}
        self.next_id = 1
        self.glob = Faults()
        self.counters = {}
        self.accept_log = []  # (time, listener index, connection id) of every accepted connection
        self.history = {}  # connection id -> {id, listener, accepted, head}
        self.mb_times = {}  # Modbus unit id -> arrival times of its requests

    def count(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n

    # --- settings lookup: connection, then listener, then global ---
    def get(self, conn, direction, field):
        for f in (conn.faults, conn.listener.faults, self.glob):
            v = getattr(f, direction)[field]
            if v is not None:
                return v
        return None

    def take_corrupt_next(self, conn, direction):
        for f in (conn.faults, conn.listener.faults, self.glob):
            if f.corrupt_next[direction] > 0:
                f.corrupt_next[direction] -= 1
                return True
        return False

    # --- connections ---
    async def start_listener(self, lst):
        lst.server = await asyncio.start_server(
            lambda r, w: self.on_accept(lst, r, w), lst.host, lst.port,
            reuse_address=True, backlog=1024)
        lst.port = lst.server.sockets[0].getsockname()[1]

    async def on_accept(self, lst, reader, writer):
        self.count("accepted")
        cid = self.next_id
        self.next_id += 1
        peer = writer.get_extra_info("peername")
        self.accept_log.append((time.time(), lst.index, cid))
        rec = {"id": cid, "listener": lst.index, "accepted": time.time(), "head": ""}
        if len(self.history) < 100000:
            self.history[cid] = rec
        if lst.refuse == "close":
            self.count("refused")
            abort(writer)
            return
        try:
            treader, twriter = await asyncio.open_connection(*lst.target)
        except OSError:
            self.count("target_connect_failed")
            abort(writer)
            return
        for w in (writer, twriter):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(cid, lst, f"{peer[0]}:{peer[1]}")
        conn.writers = [writer, twriter]
        self.conns[cid] = conn
        self.sync_reading(conn)
        pumps = [asyncio.ensure_future(self.pump(conn, reader, twriter, "up")),
                 asyncio.ensure_future(self.pump(conn, treader, writer, "down"))]
        conn.tasks += pumps
        await asyncio.gather(*pumps, return_exceptions=True)
        self.close_conn(conn, rst=False)

    def close_conn(self, conn, rst):
        if conn.closed:
            return
        conn.closed = True
        for w in conn.writers:
            if rst:
                abort(w)
            else:
                try:
                    w.close()
                except Exception:
                    pass
        for t in conn.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        self.conns.pop(conn.id, None)

    async def wait_unfrozen(self, conn, direction):
        while self.get(conn, direction, "frozen"):
            conn.wake.clear()
            await conn.wake.wait()

    async def pump(self, conn, reader, writer, direction):
        """One direction: read a chunk, apply the faults, write it."""
        queue = asyncio.Queue()
        sender = asyncio.ensure_future(self.sender(conn, writer, direction, queue))
        conn.tasks.append(sender)  # cancelled with the connection
        mbuf = b""
        try:
            while True:
                await self.wait_unfrozen(conn, direction)
                data = await reader.read(65536)
                # a read already waiting when the freeze came: hold what it got, EOF included
                await self.wait_unfrozen(conn, direction)
                if not data:
                    break
                conn.bytes[direction] += len(data)
                if direction == "up" and len(conn.head) < 256:
                    conn.head += data[:256 - len(conn.head)]
                    if conn.id in self.history:
                        self.history[conn.id]["head"] = conn.head.hex()
                if conn.listener.modbus is not None:
                    mbuf += data
                    frames, mbuf = split_mbap(mbuf)
                    out = b""
                    for fr in frames:
                        out += self.modbus_frame(conn, direction, fr)
                    if not out:
                        continue
                    data = out
                data = self.maybe_corrupt(conn, direction, data)
                delay = self.get(conn, direction, "delay_ms") or 0
                if (queue.empty() and not conn.sending[direction] and not delay
                        and not self.get(conn, direction, "throttle_bps")
                        and not self.get(conn, direction, "split")):
                    writer.write(data)  # fast path: nothing held, nothing to shape
                    await writer.drain()
                    continue
                await queue.put((time.monotonic() + delay / 1000.0, data))
        except (ConnectionError, OSError):
            pass
        finally:
            await queue.put(None)
            try:
                await sender
            except (ConnectionError, OSError, asyncio.CancelledError):
                pass
            if not conn.closed:
                try:
                    if writer.can_write_eof():
                        writer.write_eof()
                except OSError:
                    pass

    async def sender(self, conn, writer, direction, queue):
        while True:
            item = await queue.get()
            if item is None:
                return
            due, data = item
            conn.sending[direction] = True
            try:
                await self.send_one(conn, writer, direction, due, data)
            finally:
                conn.sending[direction] = not queue.empty()

    async def send_one(self, conn, writer, direction, due, data):
        await self.wait_unfrozen(conn, direction)
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        rate = self.get(conn, direction, "throttle_bps")
        if self.get(conn, direction, "split"):
            for i in range(len(data)):
                await self.wait_unfrozen(conn, direction)
                if rate:
                    await asyncio.sleep(1.0 / rate)
                writer.write(data[i:i + 1])
                await writer.drain()
            self.count("split_writes", len(data))
            return
        if rate:
            # pieces of a tenth of a second's worth, each after its time
            step = max(1, rate // 10)
            for i in range(0, len(data), step):
                await self.wait_unfrozen(conn, direction)
                part = data[i:i + step]
                await asyncio.sleep(len(part) / rate)
                writer.write(part)
                await writer.drain()
            self.count("throttled_bytes", len(data))
            return
        writer.write(data)
        await writer.drain()

    def maybe_corrupt(self, conn, direction, data):
        hit = self.take_corrupt_next(conn, direction)
        if not hit:
            p = self.get(conn, direction, "corrupt")
            hit = bool(p) and self.rng.random() < p
        if not hit or not data:
            return data
        i = self.rng.randrange(len(data))
        b = bytearray(data)
        b[i] ^= 1 << self.rng.randrange(8)
        self.count("corrupted_bytes")
        return bytes(b)

    # --- Modbus TCP mode ---
    def modbus_frame(self, conn, direction, fr):
        mb = conn.listener.modbus
        if len(fr) < 8 or struct.unpack(">H", fr[4:6])[0] != len(fr) - 6:
            self.count("mb_not_modbus")
            return fr
        tid, _pid, _length, unit = struct.unpack(">HHHB", fr[:7])
        if direction == "up":
            self.count("mb_requests")
            times = self.mb_times.setdefault(unit, [])
            if len(times) < 100000:
                times.append(time.time())
            if unit in mb["dead"]:
                self.count("mb_dead_unit")
                return b""
            r = self.rng.random()
            if r < mb["timeout"]:
                conn.pending[tid] = "drop"
                return fr
            r -= mb["timeout"]
            if r < mb["exception"]:
                self.count("mb_exceptions")
                fc = fr[7] if len(fr) > 7 else 0
                reply = struct.pack(">HHHBBB", tid, 0, 3, unit, (fc | 0x80) & 0xFF,
                                    mb["exception_code"])
                self.answer_client(conn, reply)
                return b""
            r -= mb["exception"]
            if r < mb["corrupt"]:
                conn.pending[tid] = "corrupt"
            return fr
        action = conn.pending.pop(tid, None)
        self.count("mb_responses")
        if action == "drop":
            self.count("mb_dropped_responses")
            return b""
        if action == "corrupt":
            return self.modbus_corrupt(fr)
        return fr

    def answer_client(self, conn, reply):
        w = conn.writers[0]
        try:
            w.write(reply)
        except (ConnectionError, OSError):
            pass

    def modbus_corrupt(self, fr):
        """Damage a response in a way the protocol lets a client detect (Modbus TCP has no checksum:
        a flipped bit in register data cannot be detected by anyone, so it is never done)."""
        b = bytearray(fr)
        kinds = ["tid", "fc"]
        if len(b) > 9 and not b[7] & 0x80:
            kinds += ["count", "truncate"]
        kind = self.rng.choice(kinds)
        self.count("mb_corrupt_" + kind)
        self.count("mb_corrupted")
        if kind == "tid":
            b[0:2] = struct.pack(">H", (struct.unpack(">H", bytes(b[0:2]))[0] + 1) & 0xFFFF)
        elif kind == "fc":
            b[7] = (b[7] + 1) & 0x7F or 1
        elif kind == "count":
            b[8] = (b[8] + 2) & 0xFF
        else:  # shorter PDU, MBAP length and byte count kept consistent with it
            cut = min(2, len(b) - 9)
            del b[len(b) - cut:]
            b[4:6] = struct.pack(">H", len(b) - 6)
            b[8] = max(0, b[8] - cut)
        return bytes(b)

    # --- control ---
    def scope(self, word):
        """'all' -> None; 'L<n>' -> Listener; 'C<id>' -> Conn."""
        if word in (None, "all"):
            return None
        if word[0] in "Ll" and word[1:].isdigit() and int(word[1:]) < len(self.listeners):
            return self.listeners[int(word[1:])]
        if word[0] in "Cc" and word[1:].isdigit() and int(word[1:]) in self.conns:
            return self.conns[int(word[1:])]
        raise ValueError(f"unknown scope {word!r} (all, L<listener index>, C<connection id>)")

    def targets(self, sc):
        """Connections a command applies to now."""
        if sc is None:
            return list(self.conns.values())
        if isinstance(sc, Listener):
            return [c for c in self.conns.values() if c.listener is sc]
        return [sc]

    def level(self, sc):
        return self.glob if sc is None else sc.faults

    def wake_all(self):
        for c in self.conns.values():
            self.sync_reading(c)
            c.wake.set()

    def sync_reading(self, conn):
        """A frozen direction reads nothing: its socket is not read at all (no data, no FIN), so
        the kernel buffers fill up as with a peer that hangs."""
        for direction, w in (("up", conn.writers[0]), ("down", conn.writers[1])):
            try:
                if self.get(conn, direction, "frozen"):
                    w.transport.pause_reading()
                else:
                    w.transport.resume_reading()
            except (AttributeError, RuntimeError, OSError):
                pass

    async def command(self, line):
        words = line.split()
        if not words:
            raise ValueError("empty command")
        cmd, args = words[0].lower(), words[1:]
        opts = {}
        pos = []
        for a in args:
            if "=" in a:
                k, v = a.split("=", 1)
                opts[k] = v
            else:
                pos.append(a)
        sc = self.scope(opts.pop("scope", "all"))
        dirs = {"both": ("up", "down"), "up": ("up",), "down": ("down",)}.get(
            opts.pop("dir", "both"))
        if dirs is None:
            raise ValueError("dir must be up, down or both")

        def setf(field, value):
            lv = self.level(sc)
            for d in dirs:
                getattr(lv, d)[field] = value

        if cmd == "ping":
            return "pong"
        if cmd == "delay":
            setf("delay_ms", int(need(pos, 0, "delay <ms>")))
        elif cmd == "throttle":
            v = int(need(pos, 0, "throttle <bytes per second>"))
            setf("throttle_bps", v or None)
        elif cmd == "split":
            setf("split", need(pos, 0, "split on|off") == "on" or None)
        elif cmd == "corrupt":
            if pos:
                setf("corrupt", float(pos[0]) or None)
            else:
                lv = self.level(sc)
                for d in dirs:
                    lv.corrupt_next[d] += 1
        elif cmd == "freeze":
            setf("frozen", True)
            self.count("freezes")
        elif cmd == "drop":
            how = pos[0] if pos else "rst"
            if how not in ("rst", "fin"):
                raise ValueError("drop rst|fin")
            victims = self.targets(sc)
            for c in victims:
                self.close_conn(c, rst=how == "rst")
            self.count("dropped_" + how, len(victims))
            return f"dropped {len(victims)}"
        elif cmd == "refuse":
            how = need(pos, 0, "refuse close|unlisten|off")
            lsts = self.listeners if sc is None else [sc] if isinstance(sc, Listener) else None
            if lsts is None:
                raise ValueError("refuse applies to all or to a listener")
            for lst in lsts:
                await self.set_refuse(lst, None if how == "off" else how)
        elif cmd == "resume":
            if sc is None:
                self.glob.clear()
                for lst in self.listeners:
                    lst.faults.clear()
                    await self.set_refuse(lst, None)
                for c in self.conns.values():
                    c.faults.clear()
            else:
                sc.faults.clear()
                if isinstance(sc, Listener):
                    await self.set_refuse(sc, None)
                    for c in self.targets(sc):
                        c.faults.clear()
            self.wake_all()
        elif cmd == "modbus":
            lsts = self.listeners if sc is None else [sc] if isinstance(sc, Listener) else None
            if lsts is None:
                raise ValueError("modbus applies to all or to a listener")
            if pos and pos[0] == "off":
                for lst in lsts:
                    lst.modbus = None
            else:
                mb = {"timeout": float(opts.get("timeout", 0)),
                      "exception": float(opts.get("exception", 0)),
                      "exception_code": int(opts.get("code", 4)),
                      "corrupt": float(opts.get("corrupt", 0)),
                      "dead": {int(u) for u in opts.get("dead", "").split(",") if u}}
                if mb["timeout"] + mb["exception"] + mb["corrupt"] > 1:
                    raise ValueError("probabilities add up to more than 1")
                for lst in lsts:
                    lst.modbus = mb
        elif cmd == "counters":
            return json.dumps(self.counters, sort_keys=True)
        elif cmd == "reset":
            self.counters = {}
            self.accept_log = []
            self.history = {}
            self.mb_times = {}
        elif cmd == "conns":
            return json.dumps([{"id": c.id, "listener": c.listener.index, "peer": c.peer,
                                "accepted": c.accepted, "up": c.bytes["up"],
                                "down": c.bytes["down"], "head": c.head.hex()}
                               for c in self.conns.values()])
        elif cmd == "accepts":
            return json.dumps(self.accept_log)
        elif cmd == "mbtimes":
            # Modbus mode: arrival time of every request, per unit id, since the last reset
            return json.dumps(self.mb_times)
        elif cmd == "history":
            # every connection since the last reset: id, listener, accept time, first bytes (hex)
            return json.dumps(list(self.history.values()))
        else:
            raise ValueError(f"unknown command {cmd!r}")
        self.wake_all()
        return ""

    async def set_refuse(self, lst, how):
        if how not in (None, "close", "unlisten"):
            raise ValueError("refuse close|unlisten|off")
        if how == "unlisten" and lst.server is not None:
            lst.server.close()
            await lst.server.wait_closed()
            lst.server = None
        if how != "unlisten" and lst.server is None:
            await self.start_listener(lst)
        lst.refuse = how

    async def on_control(self, reader, writer):
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                try:
                    text = line.decode("utf-8", "replace").strip()
                    res = await self.command(text)
                    writer.write(("OK " + res).rstrip().encode() + b"\n")
                except (ValueError, IndexError, OSError) as exc:
                    writer.write(f"ERR {exc}\n".encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


def need(pos, i, usage):
    if len(pos) <= i:
        raise ValueError("usage: " + usage)
    return pos[i]


def abort(writer):
    """Close with RST (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    except OSError:
        pass


def split_mbap(buf):
    """Complete MBAP frames at the start of buf, and the rest."""
    frames = []
    while len(buf) >= 7:
        length = struct.unpack(">H", buf[4:6])[0]
        end = 6 + length
        if length < 2 or length > 254:
            # not Modbus TCP: pass the rest through untouched so nothing stalls
            frames.append(buf)
            return frames, b""
        if len(buf) < end:
            break
        frames.append(buf[:end])
        buf = buf[end:]
    return frames, buf


def parse_map(text):
    try:
        listen, target = text.split("=", 1)
        host, port = target.rsplit(":", 1)
        return int(listen), (host, int(port))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--map {text!r}: expected LISTEN=HOST:PORT")


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--map", type=parse_map, action="append", required=True,
                    help="LISTEN=HOST:PORT (LISTEN 0 = a free port); repeatable")
    ap.add_argument("--control", type=int, default=0, help="control port (0 = a free port)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    a = ap.parse_args()
    proxy = Proxy(a.seed if a.seed is not None else time.time_ns())
    for i, (port, target) in enumerate(a.map):
        lst = Listener(i, "127.0.0.1", port, target)
        proxy.listeners.append(lst)
        await proxy.start_listener(lst)
    ctl = await asyncio.start_server(proxy.on_control, "127.0.0.1", a.control)
    print(f"READY control={ctl.sockets[0].getsockname()[1]} listen="
          + ",".join(str(lst.port) for lst in proxy.listeners), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
