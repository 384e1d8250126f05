# SPDX-License-Identifier: Apache-2.0
"""Client helper for faultproxy.py (tests import this): start the proxy as a child process, send
control commands, read counters, stop it by pid.

    from faultctl import FaultProxy
    p = FaultProxy.start([("127.0.0.1", broker_port)])   # listener 0 -> broker
    p.ports[0]                                          # where the gateway connects
    p.cmd("freeze")                                     # raises FaultError on "ERR ..."
    p.counters()                                        # dict
    p.stop()
"""
import json
import os
import signal
import socket
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROXY = os.path.join(HERE, "faultproxy.py")


class FaultError(RuntimeError):
    pass


class FaultProxy:
    def __init__(self, proc, control, ports):
        self.proc = proc
        self.control = control
        self.ports = ports
        self.sock = socket.create_connection(("127.0.0.1", control), timeout=10)
        self.rfile = self.sock.makefile("r")

    @classmethod
    def start(cls, targets, listen=None, seed=None, log=None):
        """targets: [(host, port), ...], one listener each (listen ports default to free ones)."""
        args = [sys.executable, PROXY]
        for i, (host, port) in enumerate(targets):
            lp = listen[i] if listen else 0
            args += ["--map", f"{lp}={host}:{port}"]
        if seed is not None:
            args += ["--seed", str(seed)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True,
                                stderr=log if log is not None else None)
        line = proc.stdout.readline()
        if not line.startswith("READY"):
            proc.kill()
            proc.wait()
            raise FaultError("faultproxy did not start: " + line)
        kv = dict(w.split("=", 1) for w in line.split()[1:])
        return cls(proc, int(kv["control"]), [int(p) for p in kv["listen"].split(",")])

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\n")
        ans = self.rfile.readline().rstrip("\n")
        if ans.startswith("OK"):
            return ans[3:]
        raise FaultError(f"faultproxy: {line!r}: {ans or 'no answer'}")

    def counters(self):
        return json.loads(self.cmd("counters"))

    def conns(self):
        return json.loads(self.cmd("conns"))

    def history(self):
        return json.loads(self.cmd("history"))

    def stop(self):
        try:
            self.sock.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
