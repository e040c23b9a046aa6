"""Traffic for the lab, run inside the client namespace.

    python -m userlb.lab.client FUNC 'JSON-KWARGS'     -> JSON on stdout

FUNC:
  http      count requests to vip:port, round robin over `sources` (client
            addresses), kernel-chosen source ports; one record per flow
  get       HTTP GETs of any HTTP server: status, headers, body
  udp       the same with UDP echo datagrams (a new socket per flow)
  transfer  `size` random bytes through the TCP echo service and back: sha256
            of both directions compared
  upload    `size` random bytes to the TCP hash service: the server's sha256
            compared with ours
  pinned    TCP echo connections from given (source, port) pairs with a given
            TOS / traffic class (the ECMP lab pins DSCP K to director K): read
            the server's greeting, close with RST (no TIME_WAIT, so the same
            pair can be used again at once); many in flight
  rate      new short HTTP connections at a steady rate for a while (the mhs
            experiment's load); counts of good and failed ones
  session, stream   long-lived flows driven over stdin/stdout (longlived.py)

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


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def connect(src, vip, port, timeout):
    s = socket.socket(family(vip), socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect((vip, port))
    return s


def recv_exact(s, n):
    """Exactly n bytes from s (ConnectionError when the peer closes first)."""
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise ConnectionError("closed by peer")
        got += chunk
    return got


def readline(s):
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
            s = connect(src, vip, port, timeout)
            rec["cport"] = s.getsockname()[1]
            data = _exchange(s, b"GET / HTTP/1.0\r\nHost: lab\r\n\r\n")
            body = json.loads(data.split(b"\r\n\r\n", 1)[1])
            rec.update(server=body["server"], seen_client=body["client"], seen_port=body["port"])
        except (OSError, ValueError, IndexError) as e:
            rec["error"] = f"{type(e).__name__}: {e}"
        out.append(rec)
    return out


def _exchange(s, request):
    """Send an HTTP/1.0 request on connected socket s, read until the server
    closes, close s; the whole response."""
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data


def get(vip, port=80, path="/", count=1, sources=(None,), timeout=5.0, tries=1,
        retry_delay=0.2):
    """count HTTP/1.0 GETs of any HTTP server (userlb.testing's http_get),
    round robin over `sources` (None: the kernel's choice), kernel-chosen
    source ports: one record each, {"status", "headers", "body", "client",
    "cport", "tries"}, or with "error" when it failed `tries` times in a row."""
    return [_get_one(vip, port, path, sources[i % len(sources)], timeout, tries, retry_delay)
            for i in range(count)]


def _get_one(vip, port, path, src, timeout, tries, retry_delay):
    rec = {"client": src, "vip": vip, "vport": port}
    for attempt in range(1, tries + 1):
        rec["tries"] = attempt
        try:
            s = connect(src or ("::" if ":" in vip else "0.0.0.0"), vip, port, timeout)
            rec["client"], rec["cport"] = s.getsockname()[:2]
            host = f"[{vip}]" if ":" in vip else vip
            data = _exchange(s, f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            rec["status"] = int(lines[0].split()[1])
            rec["headers"] = dict(tuple(x.strip() for x in line.split(":", 1))
                                  for line in lines[1:] if ":" in line)
            rec["body"] = body.decode("utf-8", errors="replace")
            rec.pop("error", None)
            return rec
        except (OSError, ValueError, IndexError) as e:
            rec["error"] = f"{type(e).__name__}: {e}"
            if attempt < tries:
                time.sleep(retry_delay)
    return rec


def udp(vip, port=7, count=10, sources=(), timeout=2.0, payload="ping", tries=3, size=0):
    """size > 0: random payloads of that many bytes instead of `payload`."""
    out = []
    for i in range(count):
        src = sources[i % len(sources)]
        s = socket.socket(family(vip), socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.bind((src, 0))
        rec = {"proto": "udp", "client": src, "cport": s.getsockname()[1], "vip": vip,
               "vport": port}
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
    s = connect(src or ("::" if ":" in vip else "0.0.0.0"), vip, port, timeout)
    cport = s.getsockname()[1]
    name, host, sport = readline(s).decode().split()
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
    s = connect(src or ("::" if ":" in vip else "0.0.0.0"), vip, port, timeout)
    cport = s.getsockname()[1]
    t0 = time.monotonic()
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        line = readline(s).decode().split()
    except OSError as e:
        return {"error": f"{type(e).__name__}: {e}", "cport": cport}
    finally:
        s.close()
    name, host, sport, digest, n = line
    return {"server": name, "seen_client": host, "seen_port": int(sport), "cport": cport,
            "sent_sha256": hashlib.sha256(data).hexdigest(), "recv_sha256": digest,
            "sent": size, "received": int(n), "seconds": time.monotonic() - t0}


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
    fam = family(vip)
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


def rate(vip, port=80, sources=(), rate=100.0, seconds=10.0, timeout=3.0, inflight=256):
    """New HTTP/1.0 connections at `rate` per second for `seconds`
    (round robin over the sources; kernel-chosen ports), non-blocking, so a
    slow one does not hold the others back.  -> counts."""
    import selectors
    sel = selectors.DefaultSelector()
    fam = family(vip)
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
        for key, _ev in sel.select(timeout=0.01):
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


FUNCS = {"http": http, "get": get, "udp": udp, "transfer": transfer, "upload": upload,
         "pinned": pinned, "rate": rate}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[0] in ("session", "stream"):
        from . import longlived
        func = getattr(longlived, argv[0])
    else:
        func = FUNCS[argv[0]]
    kw = json.loads(argv[1]) if len(argv) > 1 else {}
    res = func(**kw)
    if res is not None:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
