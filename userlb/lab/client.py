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
