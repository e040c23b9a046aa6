"""Fragment reassembly (frag.py) on its own and through the engine: IPv4 and
IPv6, in order, out of order, duplicates, overlaps, timeout, memory limit."""
import random

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6

from helpers.engine import (
    CIP,
    CIP6,
    RIP1,
    RIP6_1,
    VIP,
    VIP6,
    engine_with,
    expect_rewritten,
    make_service,
    run,
)
from userlb.dataplane import frag as F
from userlb.dataplane.engine import V_DROP, V_FORWARD, V_FORWARD_OUT
from userlb.dataplane.packet import parse
from userlb.model import IPPROTO_TCP, IPPROTO_UDP

PAYLOAD = bytes(random.Random(5).randrange(256) for _ in range(3000))


def v4_datagram(src=CIP, dst=VIP, sport=4000, dport=53, ident=777, payload=PAYLOAD):
    return IP(src=src, dst=dst, id=ident, ttl=50) / UDP(sport=sport, dport=dport) / payload


def v4_frags(p, size=1000):
    return fragment(p, fragsize=size)


def v6_datagram(src=CIP6, dst=VIP6, sport=4000, dport=53, payload=PAYLOAD):
    return IPv6(src=src, dst=dst, hlim=50) / UDP(sport=sport, dport=dport) / payload


def v6_frags(p, ident=99, size=1280):
    q = IPv6(bytes(p))
    return fragment6(IPv6(src=q.src, dst=q.dst, hlim=q.hlim)
                     / IPv6ExtHdrFragment(id=ident, nh=q.nh) / bytes(p)[40:], size)


def unfragmented6(p):
    return IPv6(bytes(p))


ORDERS = {
    "in order": lambda fs: fs,
    "reversed": lambda fs: fs[::-1],
    "shuffled": lambda fs: random.Random(3).sample(fs, len(fs)),
    "last first": lambda fs: fs[-1:] + fs[:-1],
}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("af", [4, 6])
def test_engine_reassembles_udp_to_vip(af, order):
    if af == 4:
        svc = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 5353, 1)])
        orig = v4_datagram()
        frags = v4_frags(orig)
        rip = RIP1
    else:
        svc = make_service(IPPROTO_UDP, VIP6, 53, [(RIP6_1, 5353, 1)])
        orig = v6_datagram()
        frags = v6_frags(orig)
        rip = RIP6_1
    eng = engine_with(svc)
    frags = ORDERS[order](list(frags))
    for i, f in enumerate(frags[:-1]):
        v, _ = run(eng, f, 0.1 * i)
        assert v == V_DROP and eng.last_reason == "frag_queued"
    v, out = run(eng, frags[-1], 1.0)
    assert v == V_FORWARD_OUT, eng.last_reason
    expect_rewritten(orig, out, dst=rip, dport=5353)
    assert len(eng.frags) == 0 and eng.frags.mem == 0
    assert svc.stats.conns == 1 and svc.stats.inpkts == 1
    assert svc.stats.inbytes == len(bytes(orig))
    # the same datagram again (new id): goes to the same entry
    if af == 4:
        again = v4_frags(v4_datagram(ident=778))
    else:
        again = v6_frags(orig, ident=100)
    for f in again[:-1]:
        run(eng, f, 2.0)
    v, out = run(eng, again[-1], 2.0)
    assert v == V_FORWARD_OUT and svc.stats.conns == 1


def test_fragmented_tcp_segment_of_existing_flow():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    assert run(eng, IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="S"), 0.0)[0] \
        == V_FORWARD
    seg = IP(src=CIP, dst=VIP, id=9) / TCP(sport=40000, dport=80, flags="PA") / PAYLOAD
    fs = fragment(seg, fragsize=800)
    for f in fs[:-1]:
        assert run(eng, f, 0.5)[0] == V_DROP
    v, out = run(eng, fs[-1], 0.5)
    assert v == V_FORWARD_OUT
    expect_rewritten(seg, out, dst=RIP1, dport=8080)
    assert eng.entries()[0].state == "ESTABLISHED"


def test_fragmented_reply_from_real_server():
    svc = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 5353, 1)])
    eng = engine_with(svc)
    run(eng, IP(src=CIP, dst=VIP) / UDP(sport=4000, dport=53) / b"q", 0.0)
    reply = IP(src=RIP1, dst=CIP, id=5) / UDP(sport=5353, dport=4000) / PAYLOAD
    fs = v4_frags(reply)
    for f in fs[:-1]:
        run(eng, f, 0.1)
    v, out = run(eng, fs[-1], 0.1)
    assert v == V_FORWARD_OUT
    expect_rewritten(reply, out, src=VIP, sport=53)
    assert svc.stats.outpkts == 1


def test_fragments_not_for_us():
    svc = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 5353, 1)])
    eng = engine_with(svc)
    fs = v4_frags(v4_datagram(dst="192.0.2.99"))
    v, _ = run(eng, fs[0], 0.0)
    assert v == V_DROP and eng.last_reason == "not_for_us" and len(eng.frags) == 0


@pytest.mark.parametrize("af", [4, 6])
def test_overlap_discards_datagram(af):
    svc = make_service(IPPROTO_UDP, VIP if af == 4 else VIP6, 53,
                       [(RIP1 if af == 4 else RIP6_1, 53, 1)])
    eng = engine_with(svc)
    if af == 4:
        fs = v4_frags(v4_datagram(), 1000)
        # a fragment covering bytes 504..1504 overlaps the first two
        raw = bytes(v4_datagram())
        mid = IP(src=CIP, dst=VIP, id=777, flags="MF", frag=63, proto=17) / raw[20 + 504:20 + 1504]
    else:
        orig = v6_datagram()
        fs = v6_frags(orig)
        raw = bytes(orig)
        mid = IPv6(src=CIP6, dst=VIP6) / IPv6ExtHdrFragment(id=99, offset=63, m=1, nh=17) \
            / raw[40 + 504:40 + 1504]
    assert run(eng, fs[0], 0.0)[1] is None
    v, _ = run(eng, mid, 0.1)
    assert v == V_DROP and eng.last_reason == "frag_overlap"
    assert len(eng.frags) == 0 and eng.frags.mem == 0
    # the remaining fragments never complete the (discarded) datagram
    for f in fs[1:]:
        v, _ = run(eng, f, 0.2)
        assert v == V_DROP
    assert eng.drops["frag_overlap"] == 1
    assert len(eng) == 0


def test_exact_duplicate_dropped_alone():
    svc = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 53, 1)])
    eng = engine_with(svc)
    fs = v4_frags(v4_datagram())
    run(eng, fs[0], 0.0)
    v, _ = run(eng, fs[0], 0.0)
    assert v == V_DROP and eng.last_reason == "frag_duplicate"
    for f in fs[1:-1]:
        run(eng, f, 0.0)
    assert run(eng, fs[-1], 0.0)[0] == V_FORWARD_OUT


@pytest.mark.parametrize("af", [4, 6])
def test_timeout(af):
    svc = make_service(IPPROTO_UDP, VIP if af == 4 else VIP6, 53,
                       [(RIP1 if af == 4 else RIP6_1, 53, 1)])
    eng = engine_with(svc)
    fs = v4_frags(v4_datagram()) if af == 4 else v6_frags(v6_datagram())
    run(eng, fs[0], 0.0)
    assert len(eng.frags) == 1
    # the rest 30 s later: the old queue is gone, nothing completes
    for f in fs[1:]:
        v, _ = run(eng, f, 30.0)
        assert v == V_DROP and eng.last_reason == "frag_queued"
    assert eng.frags.timeouts == 1
    eng.expire(60.0)
    assert len(eng.frags) == 0 and eng.frags.mem == 0
    # just inside the timeout it completes
    run(eng, fs[0], 100.0)
    for f in fs[1:-1]:
        run(eng, f, 129.0)
    assert run(eng, fs[-1], 129.999)[0] == V_FORWARD_OUT


def test_memory_limit():
    svc = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 53, 1)])
    eng = engine_with(svc, frag_high_thresh=10_000)
    reasons = []
    for ident in range(20):
        fs = v4_frags(v4_datagram(ident=1000 + ident))
        run(eng, fs[0], 0.0)
        reasons.append(eng.last_reason)
    assert "frag_mem_limit" in reasons
    assert eng.frags.mem <= 10_000
    assert eng.drops["frag_mem_limit"] == reasons.count("frag_mem_limit")
    eng.expire(31.0)
    assert eng.frags.mem == 0
    fs = v4_frags(v4_datagram(ident=5000))
    for f in fs[:-1]:
        run(eng, f, 31.0)
    assert run(eng, fs[-1], 31.0)[0] == V_FORWARD_OUT


def test_default_limits_like_kernel():
    r = F.Reassembler()
    assert r.high_thresh == 4 * 1024 * 1024 and r.timeout == 30.0


# ------------------------------------------------------------------ unit

def add(r, p, now=0.0):
    raw = bytearray(bytes(p))
    return r.add(raw, parse(raw), now)


def test_non_multiple_of_8_rejected():
    r = F.Reassembler()
    p = IP(src=CIP, dst=VIP, id=1, flags="MF", proto=17) / (b"z" * 13)
    assert add(r, p) == F.BAD


def test_too_big_rejected():
    r = F.Reassembler()
    p = IP(src=CIP, dst=VIP, id=1, frag=8180, proto=17) / (b"z" * 200)
    assert add(r, p) == F.TOO_BIG


def test_inconsistent_last_fragment():
    r = F.Reassembler()
    assert add(r, IP(src=CIP, dst=VIP, id=1, frag=100, proto=17) / (b"z" * 8)) == F.QUEUED
    # a second "last" fragment ending elsewhere
    assert add(r, IP(src=CIP, dst=VIP, id=1, frag=50, proto=17) / (b"z" * 8)) == F.BAD
    assert len(r) == 0


def test_reassembled_v4_header():
    r = F.Reassembler()
    orig = v4_datagram()
    out = None
    for f in v4_frags(orig):
        out = add(r, f)
    assert isinstance(out, bytearray)
    q = IP(bytes(out))
    assert q.flags == 0 and q.frag == 0 and q.len == len(bytes(orig))
    del q.chksum
    assert IP(bytes(q)).chksum == IP(bytes(out)).chksum
    assert bytes(out)[20:] == bytes(orig)[20:]


def test_reassembled_v6_drops_fragment_header():
    r = F.Reassembler()
    orig = v6_datagram()
    out = None
    for f in v6_frags(orig):
        out = add(r, f)
    assert bytes(out) == bytes(unfragmented6(orig))
