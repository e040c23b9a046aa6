"""Malformed input of every kind the parser names: dropped with the
parser's reason, also when a live entry exists for the flow (the IPv4 fast
path must not accept what the parser rejects)."""
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop

from helpers.engine import CIP, CIP6, RIP1, RIP6_1, VIP, VIP6, engine_with, make_service
from userlb.dataplane import packet as P
from userlb.dataplane.engine import V_DROP, V_FORWARD
from userlb.model import IPPROTO_TCP, IPPROTO_UDP


def tcp_ok():
    return bytearray(bytes(IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="A") / b"abcd"))


def udp_ok():
    return bytearray(bytes(IP(src=CIP, dst=VIP) / UDP(sport=40000, dport=53) / b"abcd"))


def set_(b, off, val, fmt="!B"):
    struct.pack_into(fmt, b, off, val)
    return b


def icmp_quoting(quoted):
    return bytearray(bytes(IP(src="198.51.100.1", dst=VIP) / ICMP(type=3, code=4) / quoted))


def build_cases():
    ok6 = bytes(IPv6(src=CIP6, dst=VIP6) / TCP(sport=40000, dport=80, flags="A") / b"abcd")
    return [
        ("empty", bytearray(), P.TRUNCATED),
        ("one byte", bytearray(b"\x45"), P.TRUNCATED),
        ("short IPv4", tcp_ok()[:19], P.TRUNCATED),
        ("short IPv6", bytearray(ok6[:39]), P.TRUNCATED),
        ("version 5", set_(tcp_ok(), 0, 0x55), P.BAD_VERSION),
        ("version 0 short", bytearray(b"\x05\x00"), P.BAD_VERSION),
        ("IHL 4", set_(tcp_ok(), 0, 0x44), P.BAD_IHL),
        ("IHL beyond buffer", set_(tcp_ok()[:30], 0, 0x4F), P.TRUNCATED),
        ("total length > buffer", set_(tcp_ok(), 2, 200, "!H"), P.BAD_TOTAL_LENGTH),
        ("total length < IHL", set_(tcp_ok(), 2, 12, "!H"), P.BAD_TOTAL_LENGTH),
        ("IPv6 payload > buffer", set_(bytearray(ok6), 4, 500, "!H"), P.BAD_TOTAL_LENGTH),
        ("IPv6 jumbogram", set_(bytearray(ok6), 4, 0, "!H"), P.BAD_TOTAL_LENGTH),
        ("IPv6 ext header past end",
         set_(bytearray(bytes(IPv6(src=CIP6, dst=VIP6) / IPv6ExtHdrHopByHop() / TCP(dport=80))),
              41, 30), P.BAD_EXT_HEADER),
        ("GRE", bytearray(bytes(IP(src=CIP, dst=VIP, proto=47) / (b"\0" * 20))),
         P.UNSUPPORTED_PROTOCOL),
        ("IPv6 no next header", bytearray(bytes(IPv6(src=CIP6, dst=VIP6, nh=59) / (b"\0" * 8))),
         P.UNSUPPORTED_PROTOCOL),
        ("TCP 10 bytes", bytearray(bytes(IP(src=CIP, dst=VIP, proto=6) / (b"\0" * 10))),
         P.TRUNCATED_L4),
        ("UDP 4 bytes", bytearray(bytes(IP(src=CIP, dst=VIP, proto=17) / (b"\0" * 4))),
         P.TRUNCATED_L4),
        ("ICMP 4 bytes", bytearray(bytes(IP(src=CIP, dst=VIP, proto=1) / (b"\0" * 4))),
         P.TRUNCATED_L4),
        ("TCP data offset 4", set_(tcp_ok(), 32, 0x40), P.BAD_TCP_OFFSET),
        ("TCP data offset past end", set_(tcp_ok(), 32, 0xF0), P.BAD_TCP_OFFSET),
        ("UDP length 4", set_(udp_ok(), 24, 4, "!H"), P.BAD_UDP_LENGTH),
        ("UDP length > payload", set_(udp_ok(), 24, 100, "!H"), P.BAD_UDP_LENGTH),
        ("ICMP error quote truncated", icmp_quoting(bytes(tcp_ok())[:10]),
         P.ICMP_INNER_TRUNCATED),
        ("ICMP error quote without L4", icmp_quoting(bytes(tcp_ok())[:24]),
         P.ICMP_INNER_TRUNCATED),
        ("ICMP error quote bad version", icmp_quoting(bytes(set_(tcp_ok(), 0, 0x75))),
         P.ICMP_INNER_BAD),
        ("ICMP error quote GRE",
         icmp_quoting(bytes(IP(src=VIP, dst=CIP, proto=47) / (b"\0" * 8))),
         P.ICMP_INNER_UNSUPPORTED),
    ]


CASES = build_cases()


def test_every_parser_reason_covered():
    assert {c[2] for c in CASES} == set(P.ALL_REASONS)


@pytest.mark.parametrize("desc,raw,reason", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("with_entry", [False, True])
def test_malformed_dropped_with_reason(desc, raw, reason, with_entry):
    assert P.parse(bytes(raw)) == reason            # the fixture is what it claims
    tsvc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    usvc = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 53, 1)])
    t6 = make_service(IPPROTO_TCP, VIP6, 80, [(RIP6_1, 8080, 1)])
    eng = engine_with(tsvc, usvc, t6)
    if with_entry:
        for p in (IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="S"),
                  IP(src=CIP, dst=VIP) / UDP(sport=40000, dport=53),
                  IPv6(src=CIP6, dst=VIP6) / TCP(sport=40000, dport=80, flags="S")):
            b = bytearray(bytes(p))
            assert eng.process(b, len(b), 0.0) == V_FORWARD
    buf = bytearray(raw) + bytearray(32)      # garbage after n must not matter
    buf[len(raw):] = b"\xff" * 32
    before = bytes(buf)
    v = eng.process(buf, len(raw), 1.0)
    assert v == V_DROP
    assert eng.last_reason == reason and eng.drops[reason] == 1
    assert bytes(buf) == before                     # nothing written
    assert tsvc.stats.inpkts == usvc.stats.inpkts == (1 if with_entry else 0)
