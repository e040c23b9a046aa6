#!/usr/bin/env python3
"""The TUN driver's per-packet cost without a TUN device (no root).

    .venv/bin/python bench/bench_driver.py [--packets N] [--callgrind]

`TunDriver.on_readable` drains a unix SOCK_SEQPACKET socket (message
boundaries as on a TUN device; `readv` / `writev` work the same) into which
a peer wrote a burst of established-flow IPv4 UDP packets, 18-byte payload,
like the bench_tun flood; the forwarded packets land back in the peer, which
drains them.  Figures (ns per packet, CPU time, median of 5 runs; they
include the peer's os.write / os.read per packet, the same in every case):

  driver.bare.ns_per_pkt          the bench_tun bare loop (BarePatch, no vnet header)
  driver.bare_vnet.ns_per_pkt     the same behind a virtio-net header passed through
  driver.userlb_plain.ns_per_pkt  the Engine, no vnet header (`--no-offload`)
  driver.userlb_vnet.ns_per_pkt   the Engine behind VnetPath, NEEDS_CSUM packets
                                  (what the kernel hands `userlb run` in bench_tun)

With --callgrind each case runs under `valgrind --tool=callgrind` twice
(N and 2N packets) and the difference gives user-space instructions per
packet (driver.*.ir_per_pkt): repeatable on a loaded machine (to the
instruction: both runs use PYTHONHASHSEED=0), no kernel work.
"""
import argparse
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from common import emit  # noqa: E402

CASES = ("bare", "bare_vnet", "userlb_plain", "userlb_vnet")
VIP, RIP, CIP = "10.21.0.10", "10.20.0.11", "10.0.0.2"
BURST = 64


def _packet(vnet):
    from userlb.dataplane import vnet as vn
    from userlb.dataplane.csum import checksum, pseudo_sum4
    from userlb.model import parse_addr
    s, d = parse_addr(CIP)[1], parse_addr(VIP)[1]
    udp = bytearray(struct.pack("!HHHH", 40000, 5000, 8 + 18, 0) + b"x" * 18)
    ps = pseudo_sum4(s, d, 17, len(udp))
    if vnet:
        struct.pack_into("!H", udp, 6, ps)          # partial: the pseudo-header sum
    else:
        struct.pack_into("!H", udp, 6, checksum(udp, initial=ps) or 0xFFFF)
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0, s, d))
    struct.pack_into("!H", ip, 10, checksum(ip))
    hdr = vn.pack_hdr(vn.F_NEEDS_CSUM, 0, 28, 0, 20, 6) if vnet else b""
    return bytes(hdr + ip + udp)


def setup(case):
    from bench_tun import BarePatch, PassHeader

    from userlb.control.config import Config
    from userlb.control.engine_sync import EngineSync
    from userlb.dataplane.engine import Engine
    from userlb.dataplane.tun import TunDriver
    vnet = case.endswith("vnet")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (a, b):
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    if case.startswith("bare"):
        eng = BarePatch(VIP, RIP)
    else:
        cfg = Config()
        cfg.load_rules(f"-A -u {VIP}:5000 -s sh\n-a -u {VIP}:5000 -r {RIP}:5000 -m -w 1\n")
        eng = Engine()
        EngineSync(cfg, eng).push()
    drv = TunDriver(a.fileno(), eng, batch=BURST, vnet=vnet, clock=lambda: 1.0)
    if case == "bare_vnet":
        drv.vnet = PassHeader(eng)
    return a, b, drv, _packet(vnet)


def pump(b, drv, pkt, n):
    fd = b.fileno()
    write, read = os.write, os.read
    for _ in range(n // BURST):
        for _ in range(BURST):
            write(fd, pkt)
        drv.on_readable()
        for _ in range(BURST):
            read(fd, 2048)


def time_case(case, n):
    a, b, drv, pkt = setup(case)
    pump(b, drv, pkt, BURST * 4)                  # the entry exists, caches warm
    runs = []
    for _ in range(5):
        t0 = time.process_time_ns()
        pump(b, drv, pkt, n)
        runs.append((time.process_time_ns() - t0) / n)
    assert drv.tx >= n, drv.counters()
    return sorted(runs)[2], runs


def child(case, n):
    a, b, drv, pkt = setup(case)
    pump(b, drv, pkt, BURST * 4)
    pump(b, drv, pkt, n)
    assert drv.tx >= n, drv.counters()


def callgrind(case, n):
    irs = []
    for k in (n, 2 * n):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "cg.out")
            # a fixed hash seed: the same dict layouts in both runs, so the
            # difference is the packets' alone (repeatable to the instruction)
            p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                                sys.executable, __file__, "--child", case, "--packets", str(k)],
                               capture_output=True, text=True,
                               env=dict(os.environ, PYTHONHASHSEED="0"))
            m = re.search(r"Collected : (\d+)", p.stderr)
            if p.returncode or not m:
                raise RuntimeError(p.stderr[-2000:])
            irs.append(int(m.group(1)))
    return (irs[1] - irs[0]) / n


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--packets", type=int, default=64 * 400)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--child")
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.packets)
        return 0
    cases = args.cases.split(",")
    for case in cases:
        ns, runs = time_case(case, args.packets)
        emit(f"driver.{case}.ns_per_pkt", round(ns, 1), "ns", runs=[round(x) for x in runs])
    if args.callgrind:
        for case in cases:
            emit(f"driver.{case}.ir_per_pkt", round(callgrind(case, 64 * 50)), "instructions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
