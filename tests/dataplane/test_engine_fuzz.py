"""Fuzz: >= 100,000 random and mutated packets through Engine.process
(seeded).  No exception escapes, every packet gets a verdict with its
outputs, a forwarded TCP/UDP packet whose checksum was valid leaves with a
valid one, and the destinations' connection counters match the table."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, fragment
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6, IPv6ExtHdrFragment

from helpers.engine import CIP, CIP6, RIP1, RIP2, RIP6_1, VIP, VIP6, engine_with, make_service
from userlb.dataplane import packet as P
from userlb.dataplane.csum import ones_sum, pseudo_sum
from userlb.dataplane.engine import V_DROP, V_FORWARD, V_FORWARD_OUT, V_REPLY
from userlb.model import IPPROTO_TCP, IPPROTO_UDP

N_PACKETS = 100_000


def corpus():
    out = []
    for flags in ("S", "SA", "A", "PA", "FA", "R", "RA", ""):
        for cport in (40000, 40001, 40002):
            out.append(IP(src=CIP, dst=VIP) / TCP(sport=cport, dport=80, flags=flags) / b"data")
            out.append(IP(src=RIP1, dst=CIP) / TCP(sport=8080, dport=cport, flags=flags))
            out.append(IP(src=RIP2, dst=CIP) / TCP(sport=8080, dport=cport, flags=flags))
            out.append(IPv6(src=CIP6, dst=VIP6) / TCP(sport=cport, dport=80, flags=flags))
            out.append(IPv6(src=RIP6_1, dst=CIP6) / TCP(sport=8080, dport=cport, flags=flags))
            out.append(IP(src=CIP, dst="10.0.0.101") / TCP(sport=cport, dport=80, flags=flags))
    for cport in (5000, 5001):
        out.append(IP(src=CIP, dst=VIP) / UDP(sport=cport, dport=53) / b"query")
        out.append(IP(src=RIP1, dst=CIP) / UDP(sport=53, dport=cport) / b"answer")
        out.append(IPv6(src=CIP6, dst=VIP6) / UDP(sport=cport, dport=53) / b"q6")
    out.append(IP(src=CIP, dst=VIP, options=[IPOption_NOP()] * 4) / TCP(sport=40000, dport=80))
    q = bytes(IP(src=VIP, dst=CIP) / TCP(sport=80, dport=40000))
    out.append(IP(src="198.51.100.1", dst=VIP) / ICMP(type=3, code=4) / q)
    q = bytes(IP(src=CIP, dst=RIP1) / TCP(sport=40000, dport=8080))
    out.append(IP(src=RIP1, dst=CIP) / ICMP(type=3, code=3) / q)
    q6 = bytes(IPv6(src=VIP6, dst=CIP6) / TCP(sport=80, dport=40000))
    out.append(IPv6(src="2001:db8:ffff::1", dst=VIP6) / ICMPv6PacketTooBig() / q6)
    out.append(IP(src=CIP, dst=VIP) / ICMP(type=8))
    big = IP(src=CIP, dst=VIP, id=5) / UDP(sport=5000, dport=53) / (b"z" * 2000)
    out.extend(fragment(big, fragsize=600))
    out.append(IPv6(src=CIP6, dst=VIP6) / IPv6ExtHdrFragment(id=3, m=1, nh=17) / (b"y" * 64))
    return [bytes(p) for p in out]


def mutate(rng, raw):
    b = bytearray(raw)
    k = rng.randrange(8)
    if k == 0:                                   # flip bytes
        for _ in range(rng.randint(1, 4)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
    elif k == 1:                                 # truncate
        b = b[:rng.randrange(len(b) + 1)]
    elif k == 2:                                 # extend with junk
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
    elif k == 3:                                 # a header byte (first 60)
        if b:
            b[rng.randrange(min(60, len(b)))] = rng.randrange(256)
    elif k == 4:                                 # TCP flags / ports
        off = (20 if b[0] >> 4 == 4 else 40) + rng.choice((0, 1, 2, 3, 13)) if b else 0
        if off < len(b):
            b[off] = rng.randrange(256)
    elif k == 5:                                 # pure random bytes
        b = bytearray(rng.randrange(256) for _ in range(rng.randrange(80)))
    # k 6, 7: unchanged valid packet (keeps flows and entries alive)
    return b


def l4_checksum_ok(buf):
    r = P.parse(bytes(buf))
    if type(r) is str or r[P.P_FRAG] or r[P.P_PROTO] not in (6, 17):
        return None
    l3, l4 = r[P.P_L3OFF], r[P.P_L4OFF]
    end = l3 + r[P.P_LEN]
    if r[P.P_PROTO] == 17 and buf[l4 + 6:l4 + 8] == b"\0\0":
        return None
    s = ones_sum(buf, l4, end, pseudo_sum(r[P.P_AF], r[P.P_SADDR], r[P.P_DADDR],
                                          r[P.P_PROTO], end - l4))
    return s == 0xFFFF


def make_engine(sloppy=False):
    from test_engine_mhs import Lab  # mhs service on 10.0.0.101
    tsvc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1), (RIP2, 8080, 1)], sched="wlc")
    usvc = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 53, 1)])
    t6 = make_service(IPPROTO_TCP, VIP6, 80, [(RIP6_1, 8080, 1)])
    u6 = make_service(IPPROTO_UDP, VIP6, 53, [(RIP6_1, 53, 1)])
    mhs = Lab(backends=("10.0.0.1", "10.0.0.2"), vip="10.0.0.101").svc
    eng = engine_with(tsvc, usvc, t6, u6, mhs, max_entries=500, sloppy_tcp=sloppy)
    return eng, (tsvc, usvc, t6, u6, mhs)


def check_counters(eng, services):
    n = 0
    for s in services:
        for d in s.dests:
            assert d.activeconns >= 0 and d.inactconns >= 0
            n += d.activeconns + d.inactconns
    assert n == len(eng)


@pytest.mark.parametrize("sloppy", [False, True])
def test_fuzz_engine(sloppy):
    rng = random.Random(20261122 + sloppy)
    base = corpus()
    eng, services = make_engine(sloppy)
    now = 0.0
    verdicts = [0, 0, 0, 0]
    buf = bytearray(70000)
    for i in range(N_PACKETS):
        raw = mutate(rng, rng.choice(base))
        n = len(raw)
        buf[:n] = raw
        valid_in = l4_checksum_ok(raw) if i % 7 == 0 else None
        drops_before = sum(eng.drops.values())
        v = eng.process(buf, n, now)
        assert v in (V_DROP, V_FORWARD, V_REPLY, V_FORWARD_OUT)
        verdicts[v] += 1
        if v == V_FORWARD:
            assert 20 <= eng.out_len <= n
            if valid_in:
                assert l4_checksum_ok(buf[:eng.out_len]) is True
        elif v in (V_REPLY, V_FORWARD_OUT):
            assert isinstance(eng.out, bytes) and len(eng.out) >= 20
            assert type(P.parse(eng.out)) is tuple
        else:
            assert isinstance(eng.last_reason, str)
            assert sum(eng.drops.values()) == drops_before + 1
        now += rng.choice((0.0, 0.0, 0.001, 0.5, 3.0))
        if i % 1000 == 0:
            eng.expire(now)
            check_counters(eng, services)
    check_counters(eng, services)
    assert all(verdicts), verdicts
    assert len(eng) <= 500


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.floats(0, 1e6))
def test_random_bytes_never_raise(data, now):
    eng, _ = make_engine()
    buf = bytearray(data) + bytearray(8)
    v = eng.process(buf, len(data), now)
    assert v in (V_DROP, V_FORWARD, V_REPLY, V_FORWARD_OUT)
