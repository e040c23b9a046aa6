"""ICMP / ICMPv6 errors about translated flows, both ways (docs/ipvs.md §5.4):
expected output packets are built independently with scapy (the quoted
packet is the one the other side really sent, with valid checksums)."""
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, ICMPv6TimeExceeded, IPv6

from helpers.engine import CIP, CIP6, RIP1, RIP6_1, VIP, VIP6, engine_with, make_service, run
from userlb.dataplane.engine import V_DROP, V_FORWARD
from userlb.model import IPPROTO_TCP, IPPROTO_UDP

ROUTER = "198.51.100.1"
ROUTER6 = "2001:db8:ffff::1"


def l4(proto, sport, dport):
    if proto == IPPROTO_TCP:
        return TCP(sport=sport, dport=dport, flags="A", seq=123456, ack=654321)
    return UDP(sport=sport, dport=dport)


def pkt(af, src, dst, proto, sport, dport, payload=b"P" * 40):
    if af == 4:
        return IP(src=src, dst=dst, ttl=60, id=4242) / l4(proto, sport, dport) / payload
    return IPv6(src=src, dst=dst, hlim=60) / l4(proto, sport, dport) / payload


def icmp_err(af, src, dst, kind, quote):
    if af == 4:
        t = {"frag": ICMP(type=3, code=4, nexthopmtu=1400), "unreach": ICMP(type=3, code=3),
             "ttl": ICMP(type=11, code=0)}[kind]
        return IP(src=src, dst=dst) / t / quote
    t = {"frag": ICMPv6PacketTooBig(mtu=1280), "unreach": ICMPv6DestUnreach(code=4),
         "ttl": ICMPv6TimeExceeded(code=0)}[kind]
    return IPv6(src=src, dst=dst) / t / quote


FAM = {4: (CIP, VIP, RIP1, ROUTER), 6: (CIP6, VIP6, RIP6_1, ROUTER6)}
CASES = [(af, proto, kind, qlen)
         for af in (4, 6)
         for proto in (IPPROTO_TCP, IPPROTO_UDP)
         for kind in ("frag", "unreach", "ttl")
         for qlen in ("min", "full")]


def setup(af, proto):
    cip, vip, rip, router = FAM[af]
    svc = make_service(proto, vip, 80, [(rip, 8080, 1)])
    eng = engine_with(svc)
    first = pkt(af, cip, vip, proto, 40000, 80)
    if proto == IPPROTO_TCP:
        first[TCP].flags = "S"
    assert run(eng, first, 0.0)[0] == V_FORWARD
    return svc, eng


def quote(raw, af, qlen):
    if qlen == "full":
        return raw
    return raw[:(20 if af == 4 else 40) + 8]


@pytest.mark.parametrize("af,proto,kind,qlen", CASES)
def test_error_from_client_side_goes_to_real_server(af, proto, kind, qlen):
    cip, vip, rip, router = FAM[af]
    svc, eng = setup(af, proto)
    # what the real server sent, and what the director made of it
    srv = bytes(pkt(af, rip, cip, proto, 8080, 40000))
    seen = bytes(pkt(af, vip, cip, proto, 80, 40000))
    err = icmp_err(af, router, vip, kind, quote(seen, af, qlen))
    v, out = run(eng, err, 1.0)
    assert v == V_FORWARD, eng.last_reason
    want = bytes(icmp_err(af, router, rip, kind, quote(srv, af, qlen)))
    assert out == want
    assert svc.stats.inpkts == 2 and svc.stats.outpkts == 0


@pytest.mark.parametrize("af,proto,kind,qlen", CASES)
def test_error_from_server_side_goes_to_client(af, proto, kind, qlen):
    cip, vip, rip, router = FAM[af]
    svc, eng = setup(af, proto)
    client = bytes(pkt(af, cip, vip, proto, 40000, 80))
    fwd = bytes(pkt(af, cip, rip, proto, 40000, 8080))
    origin = rip if kind == "unreach" else router
    err = icmp_err(af, origin, cip, kind, quote(fwd, af, qlen))
    v, out = run(eng, err, 1.0)
    assert v == V_FORWARD, eng.last_reason
    want = bytes(icmp_err(af, vip, cip, kind, quote(client, af, qlen)))
    assert out == want
    assert svc.stats.outpkts == 1


@pytest.mark.parametrize("af", [4, 6])
def test_error_without_entry_dropped(af):
    cip, vip, rip, router = FAM[af]
    svc = make_service(IPPROTO_TCP, vip, 80, [(rip, 8080, 1), (rip, 8081, 1)])
    eng = engine_with(svc)
    seen = bytes(pkt(af, vip, cip, IPPROTO_TCP, 80, 40000))
    v, _ = run(eng, icmp_err(af, router, vip, "frag", quote(seen, af, "min")), 1.0)
    assert v == V_DROP and eng.last_reason == "icmp_no_entry"


def test_error_about_icmp_echo_ignored():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    echo = bytes(IP(src=VIP, dst=CIP) / ICMP(type=8, id=7) / b"abcdefgh")
    v, _ = run(eng, IP(src=ROUTER, dst=VIP) / ICMP(type=11) / echo, 1.0)
    assert v == V_DROP and eng.last_reason == "icmp_no_entry"


def test_error_server_side_without_entry_translated_by_config():
    """A real server owned by one service: its errors are translated even
    without an entry (stateless / taken-over flows)."""
    svc = make_service(IPPROTO_UDP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    client = bytes(pkt(4, CIP, VIP, IPPROTO_UDP, 40000, 80))
    fwd = bytes(pkt(4, CIP, RIP1, IPPROTO_UDP, 40000, 8080))
    v, out = run(eng, icmp_err(4, RIP1, CIP, "unreach", fwd), 1.0)
    assert v == V_FORWARD
    assert out == bytes(icmp_err(4, VIP, CIP, "unreach", client))
