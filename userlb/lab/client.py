"""Traffic for the lab, run inside the client namespace.

    python -m userlb.lab.client FUNC 'JSON-KWARGS'     -> JSON on stdout

FUNC:
  http      count requests to vip:port, round robin over `sources` (client
            addresses), kernel-chosen source ports; one record per flow
  udp       the same with UDP echo datagrams (a new socket per flow)
  transfer  `size` random bytes through the TCP echo service and back: sha256
            of both directions compared
  upload    `size` random bytes to the TCP hash service: the server's sha256
            compared with ours
  session   long-lived TCP echo connections and UDP echo flows with steady
            traffic in a thread; commands on stdin: `report` (one JSON line),
            `pause` / `resume` (each answers one JSON line), `quit`
  pinned    TCP echo connections from given (source, port) pairs with a given
            TOS / traffic class (the ECMP lab pins DSCP K to director K): read
            the server's greeting, close with RST (no TIME_WAIT, so the same
            pair can be used again at once); many in flight
  stream    long-lived TCP echo connections streaming checked data (every
            byte compared on the way back, sha256 of everything); commands on
            stdin: `report`, `finish` (half-close, wait for the echo's EOF,
            final report), `quit`
  rate      new short HTTP connections at a steady rate for a while (the mhs
            experiment's load); counts of good and failed ones

A flow record: {"proto", "client", "cport", "vip", "vport", "server",
"seen_client", "seen_port"} -- `server` is who answered, `seen_*` what that
server saw as the client's address and port.
"""
import hashlib
import json
import os
import socket
import sys
import threading
import time


def _family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _connect(src, vip, port, timeout):
    s = socket.socket(_family(vip), socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect((vip, port))
    return s


def _readline(s):
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1)
        if not chunk:
            raise ConnectionError("closed before end of line")
        buf += chunk
    return buf


def http(vip, port=80, count=10, sources=(), timeout=5.0):
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        rec = {"proto": "tcp", "client": src, "vip": vip, "vport": port}
        try:
            s = _connect(src, vip, port, timeout)
            rec["cport"] = s.getsockname()[1]
            s.sendall(b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            s.close()
            body = json.loads(data.split(b"\r\n\r\n", 1)[1])
            rec.update(server=body["server"], seen_client=body["client"], seen_port=body["port"])
        except (OSError, ValueError, IndexError) as e:
            rec["error"] = f"{type(e).__name__}: {e}"
        out.append(rec)
    return out


def udp(vip, port=7, count=10, sources=(), timeout=2.0, payload="ping", tries=3, size=0):
    """size > 0: random payloads of that many bytes instead of `payload`."""
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        s = socket.socket(_family(vip), socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.bind((src, 0))
        rec = {"proto": "udp", "client": src, "cport": s.getsockname()[1], "vip": vip, "vport": port}
        data = os.urandom(size) if size else payload.encode() + b" %d" % i
        for _ in range(tries):
            try:
                s.sendto(data, (vip, port))
                reply, frm = s.recvfrom(65536)
                head, body = reply.split(b"\n", 1)
                name, host, sport = head.decode().split()
                rec.update(server=name, seen_client=host, seen_port=int(sport),
                           intact=(body == data), reply_from=frm[0], reply_port=frm[1])
                rec.pop("error", None)
                break
            except (OSError, ValueError) as e:
                rec["error"] = f"{type(e).__name__}: {e}"
        s.close()
        out.append(rec)
    return out


def transfer(vip, port=7, size=4 << 20, src=None, timeout=30.0):
    """Send `size` random bytes through the echo service and read them back."""
    data = os.urandom(size)
    s = _connect(src or ("::" if ":" in vip else "0.0.0.0"), vip, port, timeout)
    cport = s.getsockname()[1]
    name, host, sport = _readline(s).decode().split()
    err = []

    def sender():
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            err.append(str(e))

    t = threading.Thread(target=sender)
    t0 = time.monotonic()
    t.start()
    h = hashlib.sha256()
    n = 0
    try:
        while True:
            chunk = s.recv(262144)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    except OSError as e:
        err.append(str(e))
    t.join()
    s.close()
    return {"server": name, "seen_client": host, "seen_port": int(sport), "cport": cport,
            "sent_sha256": hashlib.sha256(data).hexdigest(), "recv_sha256": h.hexdigest(),
            "sent": size, "received": n, "errors": err, "seconds": time.monotonic() - t0}


def upload(vip, port=9, size=4 << 20, src=None, timeout=30.0):
    data = os.urandom(size)
    s = _connect(src or ("::" if ":" in vip else "0.0.0.0"), vip, port, timeout)
    cport = s.getsockname()[1]
    t0 = time.monotonic()
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        line = _readline(s).decode().split()
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}", "cport": cport}
    finally:
        s.close()
    name, host, sport, digest, n = line
    return {"server": name, "seen_client": host, "seen_port": int(sport), "cport": cport,
            "sent_sha256": hashlib.sha256(data).hexdigest(), "recv_sha256": digest,
            "sent": size, "received": int(n), "seconds": time.monotonic() - t0}


class _Flow:
    def __init__(self, proto, src, vip, port, timeout):
        self.proto = proto
        self.ok = 0
        self.errors = []
        self.lock = threading.Lock()
        if proto == "tcp":
            self.s = _connect(src, vip, port, timeout)
            self.server = _readline(self.s).decode().split()[0]
        else:
            self.s = socket.socket(_family(vip), socket.SOCK_DGRAM)
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
            except socket.timeout:
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
                got = b""
                while len(got) < len(msg):
                    chunk = self.s.recv(len(msg) - len(got))
                    if not chunk:
                        raise ConnectionError("closed by peer")
                    got += chunk
                if got != msg:
                    raise ValueError("echo differs")
            else:
                head = self._udp_round(msg)
                if head.split()[0].decode() != self.server:
                    raise ValueError(f"UDP flow moved to {head.split()[0].decode()}")
            self.ok += 1
        except (OSError, ValueError) as e:
            self.errors.append(f"{type(e).__name__}: {e}")


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

    threads = [threading.Thread(target=pump, args=(f,), daemon=True) for f in flows]
    for t in threads:
        t.start()
    print(json.dumps({"flows": [f.rec for f in flows]}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "report":
            print(json.dumps([{"ok": f.ok, "errors": f.errors[:3], **f.rec} for f in flows]), flush=True)
        elif cmd == "pause":
            go.clear()
            time.sleep(interval + 0.3)     # let rounds in flight finish (and delayed ACKs leave)
            print(json.dumps("paused"), flush=True)
        elif cmd == "resume":
            go.set()
            print(json.dumps("resumed"), flush=True)
        elif cmd == "quit":
            break
    stop.set()
    go.set()
    for t in threads:
        t.join(timeout=5)
    return None


def _tos_opt(vip, tos, s):
    if ":" in vip:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
    else:
        s.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


def pinned(vip, port, flows=(), tos=0, inflight=64, timeout=5.0, tries=3):
    """flows: [[source, sport], ...] -> one record per flow, in order:
    [server, seen_client, seen_port] or {"error": ...}.  Each connection
    reads the server's greeting line and is closed with RST (SO_LINGER 0)."""
    import selectors
    import struct
    linger = struct.pack("ii", 1, 0)
    fam = _family(vip)
    out = [None] * len(flows)
    attempts = [0] * len(flows)
    todo = list(range(len(flows)))[::-1]
    sel = selectors.DefaultSelector()
    live = {}                      # fd -> (index, socket, buffer, deadline)

    def start(i):
        src, sport = flows[i]
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        if tos:
            _tos_opt(vip, tos, s)
        s.setblocking(False)
        attempts[i] += 1
        try:
            s.bind((src, sport))
            s.connect_ex((vip, port))
        except OSError as e:
            s.close()
            out[i] = {"error": f"{type(e).__name__}: {e}"}
            return
        live[s.fileno()] = [i, s, b"", time.monotonic() + timeout]
        sel.register(s, selectors.EVENT_READ)

    def finish(fd, result):
        i, s = live.pop(fd)[:2]
        sel.unregister(s)
        s.close()                   # RST
        if isinstance(result, dict) and attempts[i] < tries:
            todo.append(i)
            return
        out[i] = result

    while todo or live:
        while todo and len(live) < inflight:
            start(todo.pop())
        for key, _ev in sel.select(timeout=0.2):
            fd = key.fd
            rec = live[fd]
            try:
                chunk = rec[1].recv(256)
            except OSError as e:
                finish(fd, {"error": f"{type(e).__name__}: {e}"})
                continue
            if not chunk:
                finish(fd, {"error": "closed before the greeting"})
                continue
            rec[2] += chunk
            if rec[2].endswith(b"\n"):
                name, host, sport = rec[2].decode().split()
                finish(fd, [name, host, int(sport)])
        now = time.monotonic()
        for fd in [fd for fd, r in live.items() if r[3] < now]:
            finish(fd, {"error": "timeout"})
    sel.close()
    return out


class _Stream:
    """One long-lived TCP echo connection streaming checked data."""

    def __init__(self, src, vip, port, chunk, interval, timeout):
        self.vip, self.port = vip, port
        self.chunk, self.interval = chunk, interval
        self.s = _connect(src, vip, port, timeout)
        self.cport = self.s.getsockname()[1]
        self.server, self.seen_client, self.seen_port = _readline(self.s).decode().split()
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
                got = b""
                while len(got) < len(data):
                    c = self.s.recv(len(data) - len(got))
                    if not c:
                        raise ConnectionError("closed by peer")
                    got += c
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
        except socket.timeout:
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
    for t in threads:
        t.start()
    print(json.dumps({"flows": [c.rec for c in conns]}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "report":
            print(json.dumps([c.report() for c in conns]), flush=True)
        elif cmd == "finish":
            stop.set()
            for t in threads:
                t.join(timeout + 5)
            print(json.dumps([c.report() for c in conns]), flush=True)
        elif cmd == "quit":
            break
    stop.set()
    return None


def rate(vip, port=80, sources=(), rate=100.0, seconds=10.0, timeout=3.0, inflight=256):
    """New HTTP/1.0 connections at `rate` per second for `seconds`
    (round robin over the sources; kernel-chosen ports), non-blocking, so a
    slow one does not hold the others back.  -> counts."""
    import selectors
    sel = selectors.DefaultSelector()
    fam = _family(vip)
    live = {}
    ok = failed = started = 0
    errors = {}
    t0 = time.monotonic()
    end = t0 + seconds
    req = b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n"

    def fail(fd, why):
        nonlocal failed
        s = live.pop(fd)[0]
        sel.unregister(s)
        s.close()
        failed += 1
        errors[why] = errors.get(why, 0) + 1

    while True:
        now = time.monotonic()
        due = min(int((now - t0) * rate) + 1, int(seconds * rate))
        while started < due and len(live) < inflight:
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setblocking(False)
            s.bind((sources[started % len(sources)], 0))
            s.connect_ex((vip, port))
            live[s.fileno()] = [s, b"", now + timeout, False]
            sel.register(s, selectors.EVENT_WRITE)
            started += 1
        if now >= end and not live:
            break
        for key, ev in sel.select(timeout=0.01):
            fd = key.fd
            rec = live.get(fd)
            if rec is None:
                continue
            s = rec[0]
            if not rec[3]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(fd, os.strerror(err))
                    continue
                try:
                    s.send(req)
                except OSError as e:
                    fail(fd, type(e).__name__)
                    continue
                rec[3] = True
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                chunk = s.recv(4096)
            except OSError as e:
                fail(fd, type(e).__name__)
                continue
            if chunk:
                rec[1] += chunk
                continue
            live.pop(fd)
            sel.unregister(s)
            s.close()
            if b'"server"' in rec[1]:
                ok += 1
            else:
                failed += 1
                errors["bad answer"] = errors.get("bad answer", 0) + 1
        now = time.monotonic()
        for fd in [fd for fd, r in live.items() if r[2] < now]:
            fail(fd, "timeout")
        if now > end + timeout + 1:
            for fd in list(live):
                fail(fd, "timeout")
    sel.close()
    return {"started": started, "ok": ok, "failed": failed, "errors": errors,
            "seconds": time.monotonic() - t0}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    func = globals()[argv[0]]
    kw = json.loads(argv[1]) if len(argv) > 1 else {}
    res = func(**kw)
    if res is not None:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
