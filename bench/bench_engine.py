"""Engine benchmarks (in memory, no syscalls): JSON lines via bench.common.emit.

* engine.established.pps  established TCP packets through Engine.process(),
                          both directions alternating (target >= 400,000/s)
* engine.new_conn.per_s   new TCP connections: a SYN from a new client port
                          scheduled, entry created, forwarded (target >= 100,000/s)
* engine.entry_bytes      memory per connection entry incl. its dict slots
                          (tracemalloc over 100k entries; target <= 300)

also: engine.mhs_stateless.pps (mhs steady state, no entries),
engine.established6.pps (IPv6: the general path), engine.established.dr.pps
and engine.established.tun.pps (client packets of an established flow to a
direct-routing / ipip tunnel real server: the replies bypass the director).

Medians of 5 runs; `value` from CPU time, `wall` from the wall clock.
Run: .venv/bin/python bench/bench_engine.py
"""
import ipaddress
import os
import statistics
import struct
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench.common import emit  # noqa: E402
from userlb.clock import ManualClock  # noqa: E402
from userlb.dataplane.csum import checksum, pseudo_sum4  # noqa: E402
from userlb.dataplane.engine import Engine  # noqa: E402
from userlb.model import Dest, Service  # noqa: E402
from userlb.sched import base  # noqa: E402


def _clock():
    """CPU time of this process: the machine is shared and noisy (see
    docs/measuring.md), so `value` is CPU-time based; the wall-clock figure
    of the same runs is emitted alongside as `wall`."""
    return time.process_time()


VIP = int(ipaddress.IPv4Address("10.0.0.100"))
CIP = int(ipaddress.IPv4Address("192.0.2.10"))
RIPS = [int(ipaddress.IPv4Address(f"10.1.0.{i}")) for i in range(1, 9)]


def tcp_packet(saddr, sport, daddr, dport, flags, payload=b"x" * 32):
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0))
    tcp += payload
    struct.pack_into("!H", tcp, 16, checksum(tcp, initial=pseudo_sum4(saddr, daddr, 6, len(tcp))))
    ip = bytearray(struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0,
                               saddr, daddr))
    struct.pack_into("!H", ip, 10, checksum(ip))
    return ip + tcp


def make_engine(sched="wlc", max_entries=2_000_000):
    svc = Service(6, VIP, 80, sched_name=sched)
    svc.sched = base.create(sched, svc, ManualClock(0))
    for r in RIPS:
        d = Dest(r, 8080, 1)
        d.svc = svc
        svc.dests = [d] + svc.dests
        svc.sched.add_dest(d)
    eng = Engine(max_entries=max_entries)
    eng.set_services([svc])
    return eng, svc


def bench_established(n=200_000):
    """(CPU-based, wall-based) packets/s of an established TCP flow, both
    directions alternating."""
    eng, svc = make_engine()
    syn = tcp_packet(CIP, 40000, VIP, 80, 0x02, b"")
    buf = bytearray(syn) + bytearray(2048)
    assert eng.process(buf, len(syn), 0.0) == 1
    rip = eng.entry_objects()[0].xl.daddr
    pin = tcp_packet(CIP, 40000, VIP, 80, 0x10)
    pout = tcp_packet(rip, 8080, CIP, 40000, 0x10)
    cpu, wall = _alternate(eng, pin, pout, n)
    assert svc.stats.inpkts == 1 + 5 * (n // 2) and svc.stats.outpkts == 5 * (n // 2)
    return n / cpu, n / wall


def _alternate(eng, pin, pout, n):
    """(CPU seconds, wall seconds) for n packets, pin/pout alternating, each
    copied into its buffer first (the copy's cost, measured separately, is
    subtracted); medians of 5 runs."""
    bin_ = bytearray(2048)
    bout = bytearray(2048)
    lin, lout = len(pin), len(pout)
    process = eng.process
    cpu, wall, cpu_r, wall_r = [], [], [], []
    for _ in range(5):
        t0, w0 = _clock(), time.perf_counter()
        for _ in range(n // 2):
            bin_[:lin] = pin
            process(bin_, lin, 1.0)
            bout[:lout] = pout
            process(bout, lout, 1.0)
        cpu.append(_clock() - t0)
        wall.append(time.perf_counter() - w0)
        t0, w0 = _clock(), time.perf_counter()
        for _ in range(n // 2):
            bin_[:lin] = pin
            bout[:lout] = pout
        cpu_r.append(_clock() - t0)
        wall_r.append(time.perf_counter() - w0)
    med = statistics.median
    return med(cpu) - med(cpu_r), med(wall) - med(wall_r)


def bench_established_fwd(fwd, n=200_000):
    """(CPU-based, wall-based) packets/s of an established TCP flow to
    direct-routing (FWD_DROUTE) or tunnel (FWD_TUNNEL, ipip) real servers:
    client packets only (the replies bypass the director)."""
    from userlb.model import FWD_TUNNEL
    eng, svc = make_engine()
    for d in svc.dests:
        d.fwd = fwd
        d.port = 80
        eng.tun_paths[d.addr] = (RIPS[0] - 1, 1500)
    eng.set_services([svc])
    syn = tcp_packet(CIP, 40000, VIP, 80, 0x02, b"")
    buf = bytearray(syn) + bytearray(2048)
    assert eng.process(buf, len(syn), 0.0) == (6 if fwd == FWD_TUNNEL else 4)
    pin = tcp_packet(CIP, 40000, VIP, 80, 0x10)
    cpu, wall = _alternate(eng, pin, pin, n)
    assert svc.stats.inpkts == 1 + 5 * n and svc.stats.outpkts == 0
    return n / cpu, n / wall


def bench_mhs_stateless(n=100_000):
    """mhs in its steady state: no entries, every packet scheduled by the
    stateless tables (client ACKs) or translated from the configuration
    (server replies)."""
    eng, svc = make_engine("mhs")
    pin = tcp_packet(CIP, 40000, VIP, 80, 0x10)
    buf = bytearray(pin) + bytearray(64)
    assert eng.process(buf, len(pin), 1.0) == 1
    rip = struct.unpack_from("!I", buf, 16)[0]
    pout = tcp_packet(rip, 8080, CIP, 40000, 0x10)
    cpu, wall = _alternate(eng, pin, pout, n)
    assert len(eng) == 0
    assert svc.stats.inpkts == 1 + 5 * (n // 2) and svc.stats.outpkts == 5 * (n // 2)
    return n / cpu, n / wall


def bench_established6(n=100_000):
    """IPv6 established flow: the general path (parse + nat.rewrite)."""
    from userlb.dataplane.csum import pseudo_sum6
    vip6 = bytes.fromhex("20010db8000000000000000000000100")
    cip6 = bytes.fromhex("20010db800000000000000000000c010")
    rips6 = [bytes.fromhex("20010db8000000010000000000000001")]
    svc = Service(6, vip6, 80, sched_name="wlc")
    svc.sched = base.create("wlc", svc, ManualClock(0))
    d = Dest(rips6[0], 8080, 1)
    d.svc = svc
    svc.dests = [d]
    svc.sched.add_dest(d)
    eng = Engine()
    eng.set_services([svc])

    def pkt6(src, sport, dst, dport, flags):
        tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0))
        tcp += b"x" * 32
        struct.pack_into("!H", tcp, 16, checksum(tcp, initial=pseudo_sum6(src, dst, 6, len(tcp))))
        return bytearray(struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, 64, src, dst)) + tcp

    syn = pkt6(cip6, 40000, vip6, 80, 0x02)
    buf = bytearray(syn)
    assert eng.process(buf, len(syn), 0.0) == 1
    cpu, wall = _alternate(eng, pkt6(cip6, 40000, vip6, 80, 0x10),
                           pkt6(rips6[0], 8080, cip6, 40000, 0x10), n)
    assert len(eng) == 1
    assert svc.stats.inpkts == 1 + 5 * (n // 2) and svc.stats.outpkts == 5 * (n // 2)
    return n / cpu, n / wall


def bench_new_conn(n=100_000):
    """(CPU-based, wall-based) new TCP connections per second: a SYN from a
    new client port each time, wlc over 8 real servers."""
    rates, wall = [], []
    for _ in range(5):
        eng, svc = make_engine()
        pkts = [tcp_packet(CIP + (i >> 15), 1024 + (i & 0x7FFF), VIP, 80, 0x02, b"")
                for i in range(n)]
        buf = bytearray(2048)
        process = eng.process
        t0, w0 = _clock(), time.perf_counter()
        for p in pkts:
            ln = len(p)
            buf[:ln] = p
            process(buf, ln, 1.0)
        dt, dw = _clock() - t0, time.perf_counter() - w0
        assert len(eng) == n, (len(eng), eng.drops)
        rates.append(n / dt)
        wall.append(n / dw)
    return statistics.median(rates), statistics.median(wall)


def bench_entry_bytes(n=100_000):
    vals = []
    for _ in range(5):
        eng, svc = make_engine()
        pkts = [tcp_packet(CIP + (i >> 15), 1024 + (i & 0x7FFF), VIP, 80, 0x02, b"")
                for i in range(n)]
        buf = bytearray(2048)
        process = eng.process
        # warm the cached objects (Xlate per destination) before measuring
        for p in pkts[:64]:
            buf[:len(p)] = p
            process(buf, len(p), 1.0)
        tracemalloc.start()
        base0 = tracemalloc.get_traced_memory()[0]
        for p in pkts[64:]:
            ln = len(p)
            buf[:ln] = p
            process(buf, ln, 1.0)
        used = tracemalloc.get_traced_memory()[0] - base0
        tracemalloc.stop()
        assert len(eng) == n
        vals.append(used / (n - 64))
    return statistics.median(vals)


def main():
    pps, wall = bench_established()
    emit("engine.established.pps", round(pps), "packets/s", wall=round(wall), target=400_000)
    cps, wall = bench_new_conn()
    emit("engine.new_conn.per_s", round(cps), "conns/s", wall=round(wall), target=100_000)
    emit("engine.entry_bytes", round(bench_entry_bytes(), 1), "bytes", target=300)
    pps, wall = bench_mhs_stateless()
    emit("engine.mhs_stateless.pps", round(pps), "packets/s", wall=round(wall))
    pps, wall = bench_established6()
    emit("engine.established6.pps", round(pps), "packets/s", wall=round(wall))
    from userlb.model import FWD_DROUTE, FWD_TUNNEL
    pps, wall = bench_established_fwd(FWD_DROUTE)
    emit("engine.established.dr.pps", round(pps), "packets/s", wall=round(wall))
    pps, wall = bench_established_fwd(FWD_TUNNEL, 100_000)
    emit("engine.established.tun.pps", round(pps), "packets/s", wall=round(wall))


if __name__ == "__main__":
    main()
