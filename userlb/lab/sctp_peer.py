"""SCTP endpoints over raw sockets, for labs whose kernel has no SCTP module
(docs/sctp.md).  IPv4.

    python -m userlb.lab.sctp_peer serve --port P
    python -m userlb.lab.sctp_peer client --src A --dst VIP --dport P --sport S
                                          [--count N] [--interval SECONDS]

`serve` answers, on every local address, the SCTP packets to port P:
INIT -> INIT-ACK (with a state cookie), COOKIE-ECHO -> COOKIE-ACK, DATA ->
SACK + the same user data back, SHUTDOWN -> SHUTDOWN-ACK, HEARTBEAT ->
HEARTBEAT-ACK.  It keeps no state: its verification tag is the peer's xor a
constant, so an association survives whatever happens between the two ends
(a director failover) as long as packets arrive.  It prints one JSON line
per association event to stdout (`{"event": "init", ...}`).

`client` runs one association: INIT, COOKIE-ECHO, N DATA chunks one after
the other (each retransmitted until its echo comes back, at most 30 s), then
SHUTDOWN / SHUTDOWN-COMPLETE, and prints one JSON summary line.

Both ends check the CRC32c of every packet they receive with scapy's own
implementation (independent of the director's) and count the bad ones
(`bad_crc`); a bad packet is otherwise ignored, as an SCTP stack drops it.
"""
import argparse
import json
import os
import select
import socket
import struct
import sys
import time

from scapy.layers.sctp import crc32c as _scapy_crc32c

IPPROTO_SCTP = 132
TAG_XOR = 0x5A5A5A5A
(DATA, INIT, INIT_ACK, SACK, HEARTBEAT, HEARTBEAT_ACK, ABORT, SHUTDOWN, SHUTDOWN_ACK, ERROR,
 COOKIE_ECHO, COOKIE_ACK) = range(12)
SHUTDOWN_COMPLETE = 14


def chunk(ctype, body=b"", flags=0):
    return struct.pack("!BBH", ctype, flags, 4 + len(body)) + body + b"\0" * (-len(body) % 4)


def packet(sport, dport, vtag, *chunks):
    """An SCTP packet (common header + chunks) with its CRC32c."""
    p = bytearray(struct.pack("!HHII", sport, dport, vtag, 0) + b"".join(chunks))
    p[8:12] = struct.pack(">I", _scapy_crc32c(bytes(p)))
    return bytes(p)


def crc_ok(sctp):
    p = bytearray(sctp)
    field = bytes(p[8:12])
    p[8:12] = b"\0\0\0\0"
    return struct.pack(">I", _scapy_crc32c(bytes(p))) == field


def chunks_of(sctp):
    """[(type, flags, body)] of an SCTP packet."""
    out = []
    i = 12
    while i + 4 <= len(sctp):
        t, f, ln = struct.unpack_from("!BBH", sctp, i)
        if ln < 4 or i + ln > len(sctp):
            break
        out.append((t, f, sctp[i + 4:i + ln]))
        i += (ln + 3) & ~3
    return out


def recv_sctp(sock, timeout):
    """(src address, SCTP bytes) of the next SCTP packet, or None."""
    r, _, _ = select.select([sock], [], [], max(timeout, 0))
    if not r:
        return None
    data, addr = sock.recvfrom(65535)
    hl = (data[0] & 15) * 4
    return addr[0], socket.inet_ntoa(data[16:20]), data[hl:]


def init_body(tag, tsn):
    return struct.pack("!IIHHI", tag, 65535, 1, 1, tsn)


def data_body(tsn, ssn, payload):
    return struct.pack("!IHHI", tsn, 0, ssn, 0) + payload


# ---------------------------------------------------------------- server

def serve(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
    bad = 0
    out = sys.stdout

    def say(**kw):
        out.write(json.dumps(kw) + "\n")
        out.flush()
    say(event="ready", port=port, pid=os.getpid())
    while True:
        got = recv_sctp(sock, 3600)
        if got is None:
            continue
        src, dst, s = got
        if len(s) < 16:
            continue
        sport, dport, vtag = struct.unpack_from("!HHI", s)
        if dport != port:
            continue
        if not crc_ok(s):
            bad += 1
            say(event="bad_crc", src=src, sport=sport, count=bad)
            continue
        peer = vtag ^ TAG_XOR
        replies = []
        for t, _f, body in chunks_of(s):
            if t == INIT and len(body) >= 16:
                ptag, _rwnd, _os, _is, ptsn = struct.unpack_from("!IIHHI", body)
                mine = ptag ^ TAG_XOR
                cookie = struct.pack("!II", ptag, mine)
                state_cookie = struct.pack("!HH", 7, 4 + len(cookie)) + cookie
                replies.append((ptag, chunk(INIT_ACK, init_body(mine, 1) + state_cookie)))
                say(event="init", src=src, sport=sport, dst=dst)
            elif t == COOKIE_ECHO and len(body) >= 8:
                ptag, _mine = struct.unpack_from("!II", body)
                replies.append((ptag, chunk(COOKIE_ACK)))
                say(event="established", src=src, sport=sport)
            elif t == DATA and len(body) >= 12:
                tsn, _sid, ssn, _ppid = struct.unpack_from("!IHHI", body)
                sack = chunk(SACK, struct.pack("!IIHH", tsn, 65535, 0, 0))
                echo = chunk(DATA, data_body(tsn, ssn, body[12:]), flags=3)
                replies.append((peer, sack + echo))
            elif t == HEARTBEAT:
                replies.append((peer, chunk(HEARTBEAT_ACK, body)))
            elif t == SHUTDOWN:
                replies.append((peer, chunk(SHUTDOWN_ACK)))
                say(event="shutdown", src=src, sport=sport)
            elif t == SHUTDOWN_COMPLETE:
                say(event="closed", src=src, sport=sport)
        for tag, c in replies:
            sock.sendto(packet(port, sport, tag, c), (src, 0))


# ---------------------------------------------------------------- client

class Assoc:
    def __init__(self, src, dst, dport, sport):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
        self.sock.bind((src, 0))
        self.dst, self.dport, self.sport = dst, dport, sport
        self.tag = (os.getpid() * 2654435761 + sport) & 0xFFFFFFFF or 1
        self.peer = 0
        self.bad_crc = 0
        self.retrans = 0

    def send(self, vtag, *chunks):
        self.sock.sendto(packet(self.sport, self.dport, vtag, *chunks), (self.dst, 0))

    def exchange(self, vtag, chunks, want, deadline, rto=0.3):
        """Send until a packet with a chunk of type `want` comes back from the
        peer (-> that packet's chunks), or None at the deadline."""
        while time.monotonic() < deadline:
            self.send(vtag, *chunks)
            until = min(time.monotonic() + rto, deadline)
            while True:
                got = recv_sctp(self.sock, until - time.monotonic())
                if got is None:
                    break
                src, _dst, s = got
                if src != self.dst or len(s) < 16:
                    continue
                sport, dport, vt = struct.unpack_from("!HHI", s)
                if (sport, dport) != (self.dport, self.sport):
                    continue
                if not crc_ok(s):
                    self.bad_crc += 1
                    continue
                if vt != self.tag:
                    continue
                cs = chunks_of(s)
                if any(t == want for t, _, _ in cs):
                    return cs
            self.retrans += 1
        return None


def client(src, dst, dport, sport, count, interval, limit=30.0):
    a = Assoc(src, dst, dport, sport)
    res = {"src": src, "sport": sport, "established": False, "sent": 0, "echoed": 0,
           "intact": True, "closed": False, "error": None}
    t_end = time.monotonic() + limit
    cs = a.exchange(0, [chunk(INIT, init_body(a.tag, 1))], INIT_ACK, t_end)
    if cs is None:
        res["error"] = "no INIT-ACK"
        return _done(res, a)
    body = next(b for t, _, b in cs if t == INIT_ACK)
    a.peer = struct.unpack_from("!I", body)[0]
    cookie = body[20:28]
    if a.exchange(a.peer, [chunk(COOKIE_ECHO, cookie)], COOKIE_ACK, t_end) is None:
        res["error"] = "no COOKIE-ACK"
        return _done(res, a)
    res["established"] = True
    for i in range(count):
        payload = f"chunk {i} of {sport}".encode() * 3
        res["sent"] += 1
        cs = a.exchange(a.peer, [chunk(DATA, data_body(100 + i, i, payload), flags=3)], DATA,
                        t_end)
        if cs is None:
            res["error"] = f"no echo of DATA {i}"
            return _done(res, a)
        echo = next(b for t, _, b in cs if t == DATA)
        if echo[12:12 + len(payload)] != payload:
            res["intact"] = False
        res["echoed"] += 1
        time.sleep(interval)
    if a.exchange(a.peer, [chunk(SHUTDOWN, struct.pack("!I", 100 + count))], SHUTDOWN_ACK,
                  t_end) is None:
        res["error"] = "no SHUTDOWN-ACK"
        return _done(res, a)
    a.send(a.peer, chunk(SHUTDOWN_COMPLETE))
    res["closed"] = True
    return _done(res, a)


def _done(res, a):
    res["bad_crc"] = a.bad_crc
    res["retransmits"] = a.retrans
    return res


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m userlb.lab.sctp_peer")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--src", required=True)
    c.add_argument("--dst", required=True)
    c.add_argument("--dport", type=int, required=True)
    c.add_argument("--sport", type=int, required=True)
    c.add_argument("--count", type=int, default=5)
    c.add_argument("--interval", type=float, default=0.05)
    c.add_argument("--limit", type=float, default=30.0)
    args = p.parse_args(argv)
    if args.cmd == "serve":
        try:
            serve(args.port)
        except KeyboardInterrupt:
            return 0
    print(json.dumps(client(args.src, args.dst, args.dport, args.sport, args.count,
                            args.interval, args.limit)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
