"""Long-lived flows in the client namespace, driven over stdin/stdout:

    python -m userlb.lab.client session|stream 'JSON-KWARGS'

  session   long-lived TCP echo connections and UDP echo flows with steady
            traffic in a thread; commands on stdin: `report` (one JSON line),
            `pause` / `resume` (each answers one JSON line), `quit`
  stream    long-lived TCP echo connections streaming checked data (every
            byte compared on the way back, sha256 of everything); commands on
            stdin: `report`, `finish` (half-close, wait for the echo's EOF,
            final report), `quit`

Both first print one line {"flows": [flow record, ...]} (client.py).  The
other end is userlb.lab.sessions.ClientSession.
"""
import hashlib
import json
import os
import socket
import sys
import threading
import time

from .client import connect, family, readline, recv_exact


class _Flow:
    def __init__(self, proto, src, vip, port, timeout):
        self.proto = proto
        self.ok = 0
        self.errors = []
        self.lock = threading.Lock()
        if proto == "tcp":
            self.s = connect(src, vip, port, timeout)
            self.server = readline(self.s).decode().split()[0]
        else:
            self.s = socket.socket(family(vip), socket.SOCK_DGRAM)
            self.s.settimeout(timeout)
            self.s.bind((src, 0))
            self.s.connect((vip, port))
            self.server = self._udp_round(b"hello").decode().split()[0]
        self.rec = {"proto": proto, "client": src, "cport": self.s.getsockname()[1],
                    "vip": vip, "vport": port, "server": self.server}

    def _udp_round(self, msg):
        for _ in range(3):
            self.s.send(msg)
            try:
                reply = self.s.recv(65536)
            except TimeoutError:
                continue
            head, body = reply.split(b"\n", 1)
            if body != msg:
                raise ValueError("UDP echo payload differs")
            return head
        raise TimeoutError("no UDP echo after 3 tries")

    def round(self, i):
        msg = b"msg %d %s\n" % (i, os.urandom(8).hex().encode())
        try:
            if self.proto == "tcp":
                self.s.sendall(msg)
                if recv_exact(self.s, len(msg)) != msg:
                    raise ValueError("echo differs")
            else:
                head = self._udp_round(msg)
                if head.split()[0].decode() != self.server:
                    raise ValueError(f"UDP flow moved to {head.split()[0].decode()}")
            self.ok += 1
        except (OSError, ValueError) as e:
            self.errors.append(f"{type(e).__name__}: {e}")


def _drive(threads, flows, answers):
    """The command loop of `session` and `stream`: start the threads, print
    {"flows": flows}, then answer each command read from stdin with one JSON
    line (answers: {command: function}; others are ignored) until `quit` or
    the end of stdin."""
    for t in threads:
        t.start()
    print(json.dumps({"flows": flows}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd in answers:
            print(json.dumps(answers[cmd]()), flush=True)


def session(vip_ports=(), sources=(), per_source=2, interval=0.01, timeout=3.0):
    """vip_ports: [[proto, vip, port], ...]; per_source flows per (source, vip_port)."""
    flows = []
    for proto, vip, port in vip_ports:
        fam_srcs = [a for a in sources if (":" in a) == (":" in vip)]
        for src in fam_srcs:
            for _ in range(per_source):
                flows.append(_Flow(proto, src, vip, port, timeout))
    stop = threading.Event()
    go = threading.Event()
    go.set()

    def pump(f):
        i = 0
        while not stop.is_set() and not f.errors:
            go.wait()
            if stop.is_set():
                break
            f.round(i)
            i += 1
            time.sleep(interval)

    def pause():
        go.clear()
        time.sleep(interval + 0.3)     # let rounds in flight finish (and delayed ACKs leave)
        return "paused"

    def resume():
        go.set()
        return "resumed"

    threads = [threading.Thread(target=pump, args=(f,), daemon=True) for f in flows]
    _drive(threads, [f.rec for f in flows], {
        "report": lambda: [{"ok": f.ok, "errors": f.errors[:3], **f.rec} for f in flows],
        "pause": pause, "resume": resume})
    stop.set()
    go.set()
    for t in threads:
        t.join(timeout=5)
    return None


class _Stream:
    """One long-lived TCP echo connection streaming checked data."""

    def __init__(self, src, vip, port, chunk, interval, timeout):
        self.vip, self.port = vip, port
        self.chunk, self.interval = chunk, interval
        self.s = connect(src, vip, port, timeout)
        self.cport = self.s.getsockname()[1]
        self.server, self.seen_client, self.seen_port = readline(self.s).decode().split()
        self.rec = {"client": src, "cport": self.cport, "vip": vip, "vport": port,
                    "server": self.server, "seen_client": self.seen_client,
                    "seen_port": int(self.seen_port)}
        self.sent = hashlib.sha256()
        self.got = hashlib.sha256()
        self.nbytes = 0
        self.rounds = 0
        self.error = None
        self.done = False
        self.last_ok = time.monotonic()
        self.max_gap = 0.0

    def run(self, stop):
        try:
            while not stop.is_set():
                data = os.urandom(self.chunk)
                self.s.sendall(data)
                self.sent.update(data)
                got = recv_exact(self.s, len(data))
                self.got.update(got)
                if got != data:
                    raise ValueError("echoed data differs")
                self.nbytes += len(data)
                self.rounds += 1
                now = time.monotonic()
                self.max_gap = max(self.max_gap, now - self.last_ok)
                self.last_ok = now
                time.sleep(self.interval)
            # the end: half-close, the echo server answers with EOF
            self.s.shutdown(socket.SHUT_WR)
            rest = self.s.recv(65536)
            if rest:
                raise ValueError(f"{len(rest)} unexpected bytes at the end")
            self.done = True
        except TimeoutError:
            self.error = "timeout"
        except ConnectionResetError:
            self.error = "reset"
        except (OSError, ValueError) as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.s.close()

    def report(self):
        return {**self.rec, "rounds": self.rounds, "bytes": self.nbytes,
                "error": self.error, "done": self.done,
                "intact": self.sent.hexdigest() == self.got.hexdigest() and self.error is None,
                "max_gap": round(self.max_gap, 3)}


def stream(vip_ports=(), sources=(), count=50, chunk=1024, interval=0.05, timeout=20.0):
    """count connections, round robin over vip_ports [[vip, port], ...] and
    the sources of the right family; a thread each."""
    conns = []
    for i in range(count):
        vip, port = vip_ports[i % len(vip_ports)]
        srcs = [a for a in sources if (":" in a) == (":" in vip)]
        conns.append(_Stream(srcs[(i // len(vip_ports)) % len(srcs)], vip, port,
                             chunk, interval, timeout))
    stop = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in conns]

    def finish():
        stop.set()
        for t in threads:
            t.join(timeout + 5)
        return [c.report() for c in conns]

    _drive(threads, [c.rec for c in conns],
           {"report": lambda: [c.report() for c in conns], "finish": finish})
    stop.set()
    return None
