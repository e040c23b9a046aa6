"""A spoofed SYN flood for the lab (docs/flood-experiment.md): TCP SYNs from
random addresses of a prefix, prebuilt, sent through a raw socket with
sendmmsg(2) in batches, at a bounded rate for a bounded time.

    python -m userlb.lab.synflood --dst 10.99.0.1 --port 7 --prefix 10.64.0.0/17 \
        --seconds 20 [--rate 0] [--batch 512] [--packets 65536]

Prints one JSON line: {"sent", "seconds", "pps", "errors"}.  ``--rate 0`` is
"as fast as it goes"; any rate is capped at MAX_RATE.  ``--seconds`` is
capped at MAX_SECONDS.  It refuses to run outside a lab network namespace
(a /run/netns/ulb-* one, as `ip netns identify` tells).  IPv4 only.
"""
import argparse
import ctypes
import ctypes.util
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time

from .flood import iovec, mmsghdr

MAX_RATE = 5_000_000
MAX_SECONDS = 300.0
LAB_PREFIX = "ulb-"


class FloodRefused(Exception):
    pass


class sockaddr_in(ctypes.Structure):
    _fields_ = [("sin_family", ctypes.c_ushort), ("sin_port", ctypes.c_uint16),
                ("sin_addr", ctypes.c_uint8 * 4), ("sin_zero", ctypes.c_uint8 * 8)]


def lab_namespace():
    """The name of the lab namespace (`ip netns`, /run/netns/ulb-*) this
    process runs in, or None."""
    try:
        me = os.stat("/proc/self/ns/net")
        names = os.listdir("/run/netns")
    except OSError:
        return None
    for nm in names:
        if not nm.startswith(LAB_PREFIX):
            continue
        try:
            st = os.stat(os.path.join("/run/netns", nm))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
            return nm
    return None


def _csum(data):
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_packet(src, sport, dst, dport, seq, ipid=0):
    """One IPv4 TCP SYN (20 + 20 bytes) with a correct TCP checksum; the
    kernel fills the IP checksum (IP_HDRINCL)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 0x50, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    c = _csum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, ipid, 0, 64, socket.IPPROTO_TCP, 0,
                     src, dst)
    return ip + tcp


def build(prefix, dst, dport, n, seed=1):
    """n distinct spoofed SYNs from addresses in `prefix` (network and
    broadcast addresses excluded when the prefix has room)."""
    net = ipaddress.IPv4Network(prefix, strict=False)
    rng = random.Random(seed)
    d = socket.inet_aton(dst)
    first = int(net.network_address)
    size = net.num_addresses
    out = []
    for i in range(n):
        off = rng.randrange(1, size - 1) if size > 2 else rng.randrange(size)
        src = (first + off).to_bytes(4, "big")
        out.append(syn_packet(src, 1024 + rng.randrange(64000), d, dport,
                              rng.getrandbits(32), i & 0xFFFF))
    return out


def flood(dst, port, prefix, seconds, rate=0, batch=512, packets=65536, allow_host=False):
    if lab_namespace() is None and not allow_host:
        raise FloodRefused(f"refusing to run outside a lab network namespace "
                           f"(/run/netns/{LAB_PREFIX}*)")
    seconds = min(float(seconds), MAX_SECONDS)
    rate = min(int(rate), MAX_RATE) if rate else 0
    batch = max(1, min(batch, 1024))
    pkts = build(prefix, dst, port, max(packets, batch))
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    sendmmsg = libc.sendmmsg
    sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(mmsghdr), ctypes.c_uint, ctypes.c_int]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sa = sockaddr_in(socket.AF_INET, socket.htons(port))
    sa.sin_addr[:] = list(socket.inet_aton(dst))
    blob = ctypes.create_string_buffer(b"".join(pkts))
    base = ctypes.addressof(blob)
    iovs = (iovec * len(pkts))()
    for i in range(len(pkts)):
        iovs[i].iov_base = base + 40 * i
        iovs[i].iov_len = 40
    # one mmsghdr array per batch offset: windows over the packets
    nb = len(pkts) // batch
    arrays = []
    for b in range(nb):
        msgs = (mmsghdr * batch)()
        for j in range(batch):
            m = msgs[j].msg_hdr
            m.msg_name = ctypes.cast(ctypes.pointer(sa), ctypes.c_void_p)
            m.msg_namelen = ctypes.sizeof(sa)
            m.msg_iov = ctypes.pointer(iovs[b * batch + j])
            m.msg_iovlen = 1
        arrays.append(msgs)
    fd = s.fileno()
    sent = errors = 0
    t0 = time.monotonic()
    end = t0 + seconds
    i = 0
    try:
        while True:
            r = sendmmsg(fd, arrays[i % nb], batch, 0)
            if r > 0:
                sent += r
            else:
                errors += 1
            i += 1
            now = time.monotonic()
            if now >= end:
                break
            if rate:
                ahead = sent / rate - (now - t0)
                if ahead > 0.0005:
                    time.sleep(ahead)
    finally:
        s.close()
    dt = time.monotonic() - t0
    return {"sent": sent, "seconds": dt, "pps": sent / dt if dt else 0, "errors": errors}


def main(argv=None):
    p = argparse.ArgumentParser(prog="userlb.lab.synflood", description=__doc__.split("\n\n")[0])
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefix", default="10.64.0.0/17")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rate", type=int, default=0, help="packets/s (0: as fast as possible)")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--packets", type=int, default=65536, help="distinct prebuilt SYNs")
    a = p.parse_args(argv)
    try:
        res = flood(a.dst, a.port, a.prefix, a.seconds, a.rate, a.batch, a.packets)
    except (FloodRefused, OSError, ValueError) as e:
        print(f"synflood: {e}", file=sys.stderr)
        return 1
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
