"""SCTP engine benchmark (in memory): JSON lines via bench.common.emit.

* engine.established.sctp.pps  an established IPv4 SCTP association's DATA
  packets (32 bytes of user data) through Engine.process(), both directions
  alternating, VIP port 3868 -> real server port 13868: every packet takes
  the general path (parse + state table + rewrite) and has its CRC32c
  recomputed (the port changes).  Compare with engine.established6.pps (the
  general path of TCP).

Medians of 5 runs; `value` from CPU time, `wall` from the wall clock.
Run: .venv/bin/python bench/bench_sctp.py
"""
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from bench.bench_engine import CIP, RIPS, VIP, _alternate  # noqa: E402
from bench.common import emit  # noqa: E402
from userlb.clock import ManualClock  # noqa: E402
from userlb.dataplane import sctpcrc, sctpstate  # noqa: E402
from userlb.dataplane.csum import checksum  # noqa: E402
from userlb.dataplane.engine import Engine  # noqa: E402
from userlb.model import IPPROTO_SCTP, Dest, Service  # noqa: E402
from userlb.sched import base  # noqa: E402

VPORT, RPORT, CPORT = 3868, 13868, 40000


def sctp_packet(saddr, sport, daddr, dport, chunk):
    s = bytearray(struct.pack("!HHII", sport, dport, 0x11223344, 0)) + chunk
    sctpcrc.fill(s, 0, len(s))
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(s), 1, 0x4000, 64,
                               IPPROTO_SCTP, 0, saddr, daddr))
    struct.pack_into("!H", ip, 10, checksum(ip))
    return ip + s


def chunk(ctype, body=b""):
    return struct.pack("!BBH", ctype, 0, 4 + len(body)) + body + b"\0" * (-len(body) % 4)


def bench_established_sctp(n=200_000):
    svc = Service(IPPROTO_SCTP, VIP, VPORT, sched_name="wlc")
    svc.sched = base.create("wlc", svc, ManualClock(0))
    d = Dest(RIPS[0], RPORT, 1)
    d.svc = svc
    svc.dests = [d]
    svc.sched.add_dest(d)
    eng = Engine()
    eng.set_services([svc])
    init = sctp_packet(CIP, CPORT, VIP, VPORT, chunk(1, struct.pack("!IIHHI", 7, 65535, 1, 1, 1)))
    assert eng.process(bytearray(init), len(init), 0.0) == 1
    (e,) = eng.entry_objects()
    e.state = sctpstate.S_ESTABLISHED
    data = chunk(0, struct.pack("!IHHI", 1, 0, 0, 0) + b"x" * 32)
    pin = sctp_packet(CIP, CPORT, VIP, VPORT, data)
    pout = sctp_packet(RIPS[0], RPORT, CIP, CPORT, data)
    cpu, wall = _alternate(eng, pin, pout, n)
    assert len(eng) == 1 and e.state == sctpstate.S_ESTABLISHED
    assert svc.stats.outpkts == 5 * (n // 2)
    return n / cpu, n / wall


def main():
    pps, wall = bench_established_sctp()
    emit("engine.established.sctp.pps", round(pps), "packets/s", wall=round(wall))


if __name__ == "__main__":
    main()
