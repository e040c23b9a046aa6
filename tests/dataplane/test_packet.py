"""Packet parser: results against the scapy-built packets, every reason from a
table, every prefix and random mutations never raise."""
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    PadN,
)
from scapy.layers.l2 import GRE
from scapy.packet import Raw

from helpers.packets import framed, icmp_error, ip_packet  # noqa: E402
from userlb.dataplane import packet as P  # noqa: E402

# generation is slow on a busy 2-core machine; that is not a bug
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


def raw(p):
    return bytearray(bytes(p))


def A4(s):
    a, b, c, d = map(int, s.split("."))
    return a << 24 | b << 16 | c << 8 | d


def A6(s):
    import ipaddress
    return ipaddress.IPv6Address(s).packed


# ---------------------------------------------------------------- invariants

def check_result(buf, off, end, r, quoted=False):
    """Structural invariants of a parse result (also used for random input)."""
    if type(r) is str:
        assert r in P.ALL_REASONS
        return
    assert type(r) is tuple and len(r) == P.P_FIELDS
    af = r[P.P_AF]
    assert af in (4, 6)
    l3 = r[P.P_L3OFF]
    assert l3 == off
    if af == 4:
        assert type(r[P.P_SADDR]) is int and type(r[P.P_DADDR]) is int
        assert r[P.P_TTLOFF] == l3 + 8
        assert r[P.P_L4OFF] >= l3 + 20
    else:
        assert type(r[P.P_SADDR]) is bytes and len(r[P.P_SADDR]) == 16
        assert type(r[P.P_DADDR]) is bytes and len(r[P.P_DADDR]) == 16
        assert r[P.P_TTLOFF] == l3 + 7
        assert r[P.P_L4OFF] >= l3 + 40
    assert r[P.P_PROTO] in (6, 17, 1, 58, 132)
    assert r[P.P_FRAG] in (0, 1, 2)
    assert r[P.P_FRAG_MF] in (0, 1)
    assert 0 <= r[P.P_SPORT] <= 65535 and 0 <= r[P.P_DPORT] <= 65535
    assert r[FLOW_SLICE] == (r[1], r[2], r[3], r[4], r[5])
    if not quoted:
        pend = l3 + r[P.P_LEN]
        assert pend <= end
        assert r[P.P_L4OFF] <= pend
        if r[P.P_FRAG] != P.FRAG_LATER:
            assert r[P.P_CSUMOFF] + 2 <= pend
    else:
        assert r[P.P_L4OFF] + 8 <= end or r[P.P_FRAG] == P.FRAG_LATER
        assert r[P.P_INNER] is None
    if r[P.P_FRAG] == P.FRAG_LATER:
        assert r[P.P_CSUMOFF] == -1 and r[P.P_SPORT] == 0 and r[P.P_DPORT] == 0
    inner = r[P.P_INNER]
    if inner is not None:
        assert r[P.P_PROTO] in (1, 58)
        assert inner[P.P_AF] == af
        check_result(buf, inner[P.P_L3OFF], l3 + r[P.P_LEN], inner, quoted=True)


FLOW_SLICE = P.FLOW


# ---------------------------------------------------------------- valid packets vs scapy

@settings(max_examples=1000, deadline=None, suppress_health_check=SLOW_OK)
@given(pk=st.sampled_from([4, 6]).flatmap(lambda af: ip_packet(af)), data=st.data())
def test_parse_valid_tcp_udp(pk, data):
    meta, rawb = pk
    buf, off, end = data.draw(framed(rawb))
    r = P.parse(buf, off, end)
    assert type(r) is tuple, r
    check_result(buf, off, end, r)
    proto = meta["proto"]
    assert r[P.P_AF] == meta["af"] and r[P.P_PROTO] == proto
    assert r[P.FLOW] == (proto, meta["src"], meta["sport"], meta["dst"], meta["dport"])
    assert r[P.P_L3OFF] == off
    assert r[P.P_L4OFF] == off + meta["l4off"]
    assert r[P.P_LEN] == len(rawb)
    assert buf[r[P.P_TTLOFF]] == meta["ttl"]
    assert r[P.P_CSUMOFF] == off + meta["l4off"] + (16 if proto == 6 else 6)
    assert struct.unpack_from("!H", buf, r[P.P_CSUMOFF])[0] == meta["csum"]
    assert r[P.P_TCPFLAGS] == meta["flags"]
    assert r[P.P_FRAG] == 0 and r[P.P_FRAG_OFF] == 0 and r[P.P_FRAG_MF] == 0
    assert r[P.P_INNER] is None
    # parse of an immutable bytes object and of a memoryview give the same
    assert P.parse(bytes(buf), off, end) == r
    assert P.parse(memoryview(buf), off, end) == r
    # end defaults to len(buf)
    assert P.parse(buf, off) == r


@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_OK)
@given(e=st.sampled_from([4, 6]).flatmap(lambda af: icmp_error(af)))
def test_parse_icmp_error_inner(e):
    outer, inner_raw, quote = e
    buf = bytearray(outer)
    r = P.parse(buf)
    assert type(r) is tuple, r
    check_result(buf, 0, len(buf), r)
    ri = P.parse(bytearray(inner_raw))
    inner = r[P.P_INNER]
    assert inner is not None
    il3 = len(outer) - quote
    assert inner[P.P_L3OFF] == il3
    assert inner[P.FLOW] == ri[P.FLOW]
    assert inner[P.P_L4OFF] - il3 == ri[P.P_L4OFF]
    assert inner[P.P_CSUMOFF] - il3 == ri[P.P_CSUMOFF]
    assert inner[P.P_LEN] == ri[P.P_LEN]
    if ri[P.P_PROTO] == 6 and ri[P.P_L4OFF] + 14 <= quote:
        assert inner[P.P_TCPFLAGS] == ri[P.P_TCPFLAGS]
    assert r[P.P_ICMP_TYPE] == buf[r[P.P_L4OFF]]
    assert r[P.P_ICMP_CODE] == buf[r[P.P_L4OFF] + 1]
    assert r[P.P_SPORT] == 0 and r[P.P_DPORT] == 0


# ---------------------------------------------------------------- prefixes and mutations

def _all_kinds():
    return st.sampled_from([4, 6]).flatmap(
        lambda af: st.one_of(ip_packet(af).map(lambda pk: pk[1]),
                             icmp_error(af).map(lambda e: e[0])))


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(rawb=_all_kinds(), off=st.sampled_from([0, 10]))
def test_every_prefix_parses_without_exception(rawb, off):
    buf = bytearray(b"\x01" * off + rawb)
    assert type(P.parse(buf, off)) is tuple
    for k in range(off, len(buf)):
        r = P.parse(buf, off, k)
        # a strict prefix of an IP packet is always refused (length vs buffer)
        assert type(r) is str, (k, r)
        assert r in P.ALL_REASONS
        r2 = P.parse(bytes(buf[:k]), off)
        assert r2 == r


@settings(max_examples=1000, deadline=None, suppress_health_check=SLOW_OK)
@given(rawb=_all_kinds(), data=st.data())
def test_random_mutations_never_raise(rawb, data):
    buf = bytearray(rawb)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    for end in (len(buf), cut):
        r = P.parse(buf, 0, end)
        check_result(buf, 0, end, r)


@settings(max_examples=1000, deadline=None, suppress_health_check=SLOW_OK)
@given(st.binary(max_size=120), st.sampled_from([0x45, 0x46, 0x4F, 0x60, 0x40, 0x00, None]))
def test_random_bytes_never_raise(b, first):
    buf = bytearray(b)
    if first is not None and buf:
        buf[0] = first
    r = P.parse(buf)
    check_result(buf, 0, len(buf), r)


# ---------------------------------------------------------------- reasons, table-driven

def _v4(**kw):
    return IP(src="10.0.0.1", dst="10.0.0.2", **kw)


def _v6(**kw):
    return IPv6(src="2001:db8::1", dst="2001:db8::2", **kw)


def _set(b, i, v):
    b = bytearray(b)
    b[i] = v
    return b


def _ipv4_udp_len(n):
    b = raw(_v4() / UDP(sport=1, dport=2) / b"abcdef")
    struct.pack_into("!H", b, 24, n)
    return b


def _tcp_off(n, v6=False):
    b = raw((_v6() if v6 else _v4()) / TCP() / b"xxxxxxxx")
    l4 = 40 if v6 else 20
    b[l4 + 12] = n << 4
    return b


REASON_CASES = [
    ("empty", bytearray(), P.TRUNCATED),
    ("one byte v4", bytearray(b"\x45"), P.TRUNCATED),
    ("19 bytes v4", raw(_v4() / TCP())[:19], P.TRUNCATED),
    ("39 bytes v6", raw(_v6() / TCP())[:39], P.TRUNCATED),
    ("v4 options cut", raw(_v4(options=[]) / TCP())[:20] and
     _set(raw(_v4() / TCP())[:22], 0, 0x46)[:22], P.TRUNCATED),
    ("version 5", _set(raw(_v4() / TCP()), 0, 0x55), P.BAD_VERSION),
    ("version 0 short", bytearray(b"\x00"), P.BAD_VERSION),
    ("version 15", _set(raw(_v6() / TCP()), 0, 0xF0), P.BAD_VERSION),
    ("ihl 4", _set(raw(_v4() / TCP()), 0, 0x44), P.BAD_IHL),
    ("ihl 0", _set(raw(_v4() / TCP()), 0, 0x40), P.BAD_IHL),
    ("total length > buffer", raw(_v4() / TCP() / b"abc")[:-1], P.BAD_TOTAL_LENGTH),
    ("total length < ihl", _set(raw(_v4() / TCP()), 3, 19), P.BAD_TOTAL_LENGTH),
    ("v6 payload length > buffer", raw(_v6() / TCP() / b"abc")[:-1], P.BAD_TOTAL_LENGTH),
    ("v6 jumbogram (payload length 0)", _set(_set(raw(_v6() / TCP()), 4, 0), 5, 0),
     P.BAD_TOTAL_LENGTH),
    ("hop-by-hop not first", raw(_v6() / IPv6ExtHdrDestOpt() / IPv6ExtHdrHopByHop() / TCP()),
     P.BAD_EXT_HEADER),
    ("ext header past the end", _set(raw(_v6() / IPv6ExtHdrDestOpt() / UDP()), 41, 5),
     P.BAD_EXT_HEADER),
    ("two fragment headers", raw(_v6() / IPv6ExtHdrFragment() / IPv6ExtHdrFragment() / UDP()),
     P.BAD_EXT_HEADER),
    ("ext header cut", raw(_v6(plen=4, nh=60) / Raw(b"\x11\x00\x00\x00")), P.BAD_EXT_HEADER),
    ("GRE in IPv4", raw(_v4() / GRE()), P.UNSUPPORTED_PROTOCOL),
    ("ICMPv6 in IPv4", raw(_v4(proto=58) / Raw(bytes(8))), P.UNSUPPORTED_PROTOCOL),
    ("ICMP in IPv6", raw(_v6(nh=1) / Raw(bytes(8))), P.UNSUPPORTED_PROTOCOL),
    ("IPv6 no next header", raw(_v6(nh=59) / Raw(bytes(8))), P.UNSUPPORTED_PROTOCOL),
    ("IPv6 ESP", raw(_v6(nh=50) / Raw(bytes(16))), P.UNSUPPORTED_PROTOCOL),
    ("later fragment of GRE", raw(_v4(proto=47, frag=10) / Raw(bytes(8))),
     P.UNSUPPORTED_PROTOCOL),
    ("TCP header 19 bytes", raw(_v4(proto=6) / Raw(bytes(19))), P.TRUNCATED_L4),
    ("UDP header 7 bytes v6", raw(_v6(nh=17) / Raw(bytes(7))), P.TRUNCATED_L4),
    ("ICMP header 7 bytes", raw(_v4(proto=1) / Raw(bytes(7))), P.TRUNCATED_L4),
    ("ICMPv6 header 4 bytes", raw(_v6(nh=58) / Raw(bytes(4))), P.TRUNCATED_L4),
    ("TCP data offset 4", _tcp_off(4), P.BAD_TCP_OFFSET),
    ("TCP data offset 0 v6", _tcp_off(0, True), P.BAD_TCP_OFFSET),
    ("TCP data offset beyond packet", _tcp_off(15), P.BAD_TCP_OFFSET),
    ("UDP length 7", _ipv4_udp_len(7), P.BAD_UDP_LENGTH),
    ("UDP length > payload", _ipv4_udp_len(15), P.BAD_UDP_LENGTH),
    ("ICMP error quoting 10 bytes",
     raw(_v4() / ICMP(type=3, code=3) / Raw(bytes(_v4() / UDP())[:10])),
     P.ICMP_INNER_TRUNCATED),
    ("ICMP error quoting IP header + 7",
     raw(_v4() / ICMP(type=11) / Raw(bytes(_v4() / UDP())[:27])), P.ICMP_INNER_TRUNCATED),
    ("ICMPv6 error quoting 39 bytes",
     raw(_v6() / ICMPv6DestUnreach() / Raw(bytes(_v6() / UDP())[:39])), P.ICMP_INNER_TRUNCATED),
    ("ICMPv6 error quoting cut ext header",
     raw(_v6() / ICMPv6DestUnreach()
         / Raw(bytes(_v6() / IPv6ExtHdrDestOpt(options=[PadN(optdata=bytes(20))]) / UDP())[:50])),
     P.ICMP_INNER_TRUNCATED),
    ("ICMP error quoting IPv6", raw(_v4() / ICMP(type=3) / Raw(bytes(_v6() / UDP()))),
     P.ICMP_INNER_BAD),
    ("ICMP error quoting ihl 3",
     raw(_v4() / ICMP(type=3) / Raw(_set(bytes(_v4() / UDP()), 0, 0x43))), P.ICMP_INNER_BAD),
    ("ICMPv6 error quoting IPv4", raw(_v6() / ICMPv6DestUnreach() / Raw(bytes(_v4() / UDP())
                                                                        + bytes(20))),
     P.ICMP_INNER_BAD),
    ("ICMPv6 error quoting bad ext chain",
     raw(_v6() / ICMPv6DestUnreach() / Raw(bytes(_v6() / IPv6ExtHdrDestOpt()
                                                  / IPv6ExtHdrHopByHop() / UDP()))),
     P.ICMP_INNER_BAD),
    ("ICMP error quoting GRE", raw(_v4() / ICMP(type=3) / Raw(bytes(_v4() / GRE() / bytes(8)))),
     P.ICMP_INNER_UNSUPPORTED),
    ("ICMPv6 error quoting ESP",
     raw(_v6() / ICMPv6DestUnreach() / Raw(bytes(_v6(nh=50) / Raw(bytes(16))))),
     P.ICMP_INNER_UNSUPPORTED),
]


@pytest.mark.parametrize("name,buf,reason", REASON_CASES, ids=[c[0] for c in REASON_CASES])
def test_reason_table(name, buf, reason):
    assert P.parse(buf) == reason
    assert P.parse(bytearray(b"\xAA" * 10) + buf, 10) == reason


def test_every_reason_is_covered_by_the_table():
    assert {c[2] for c in REASON_CASES} == set(P.ALL_REASONS)
    assert len(set(P.ALL_REASONS)) == len(P.ALL_REASONS)
    for name in P.ALL_REASONS:
        assert getattr(P, name.upper()) == name


# ---------------------------------------------------------------- fragments

def test_ipv4_first_fragment():
    b = raw(_v4(id=0x1234, flags="MF") / UDP(sport=7, dport=9) / bytes(100))
    r = P.parse(b)
    assert r[P.FLOW] == (17, A4("10.0.0.1"), 7, A4("10.0.0.2"), 9)
    assert (r[P.P_FRAG], r[P.P_FRAG_ID], r[P.P_FRAG_OFF], r[P.P_FRAG_MF]) == \
        (P.FRAG_FIRST, 0x1234, 0, 1)
    # a first fragment's UDP length covers the whole datagram: not checked
    struct.pack_into("!H", b, 24, 1000)
    assert type(P.parse(b)) is tuple


@pytest.mark.parametrize("mf", [0, 1])
def test_ipv4_later_fragment(mf):
    b = raw(_v4(id=77, flags=mf, frag=3, proto=6) / Raw(bytes(5)))
    r = P.parse(b)
    assert type(r) is tuple
    assert r[P.FLOW] == (6, A4("10.0.0.1"), 0, A4("10.0.0.2"), 0)
    assert (r[P.P_FRAG], r[P.P_FRAG_ID], r[P.P_FRAG_OFF], r[P.P_FRAG_MF]) == \
        (P.FRAG_LATER, 77, 24, mf)
    assert r[P.P_L4OFF] == 20 and r[P.P_CSUMOFF] == -1


def test_ipv6_fragments():
    first = raw(_v6() / IPv6ExtHdrFragment(id=0xDEADBEEF, m=1, offset=0) / TCP(sport=5, dport=6)
                / bytes(16))
    r = P.parse(first)
    assert r[P.FLOW] == (6, A6("2001:db8::1"), 5, A6("2001:db8::2"), 6)
    assert (r[P.P_FRAG], r[P.P_FRAG_ID], r[P.P_FRAG_OFF], r[P.P_FRAG_MF]) == \
        (P.FRAG_FIRST, 0xDEADBEEF, 0, 1)
    assert r[P.P_L4OFF] == 48
    later = raw(_v6() / IPv6ExtHdrFragment(id=9, m=0, offset=100, nh=17) / Raw(bytes(3)))
    r = P.parse(later)
    assert r[P.FLOW] == (17, A6("2001:db8::1"), 0, A6("2001:db8::2"), 0)
    assert (r[P.P_FRAG], r[P.P_FRAG_ID], r[P.P_FRAG_OFF], r[P.P_FRAG_MF]) == \
        (P.FRAG_LATER, 9, 800, 0)
    atomic = raw(_v6() / IPv6ExtHdrFragment(id=3, m=0, offset=0) / UDP(sport=1, dport=2))
    r = P.parse(atomic)
    assert (r[P.P_FRAG], r[P.P_FRAG_ID], r[P.P_FRAG_OFF], r[P.P_FRAG_MF]) == (0, 3, 0, 0)
    assert r[P.P_DPORT] == 2


def test_ipv6_extension_chain_offsets():
    b = raw(_v6() / IPv6ExtHdrHopByHop(options=[PadN(optdata=bytes(10))])
            / IPv6ExtHdrRouting(addresses=[], segleft=0)
            / IPv6ExtHdrDestOpt() / UDP(sport=1000, dport=53) / b"q")
    r = P.parse(b)
    assert r[P.P_L4OFF] == 40 + 16 + 8 + 8
    assert r[P.P_DPORT] == 53 and r[P.P_CSUMOFF] == r[P.P_L4OFF] + 6


# ---------------------------------------------------------------- ICMP non-errors

def test_icmp_echo_uses_identifier_as_ports():
    r = P.parse(raw(_v4() / ICMP(type=8, id=0x4242, seq=3)))
    assert r[P.FLOW] == (1, A4("10.0.0.1"), 0x4242, A4("10.0.0.2"), 0x4242)
    assert (r[P.P_ICMP_TYPE], r[P.P_ICMP_CODE], r[P.P_INNER]) == (8, 0, None)
    r = P.parse(raw(_v4() / ICMP(type=0, id=7)))
    assert r[P.P_SPORT] == 7 and r[P.P_ICMP_TYPE] == 0
    r = P.parse(raw(_v6() / ICMPv6EchoRequest(id=99)))
    assert r[P.FLOW] == (58, A6("2001:db8::1"), 99, A6("2001:db8::2"), 99)
    r = P.parse(raw(_v6() / ICMPv6EchoReply(id=98)))
    assert r[P.P_SPORT] == 98 and r[P.P_ICMP_TYPE] == 129


def test_other_icmp_has_ports_zero():
    r = P.parse(raw(_v4() / ICMP(type=13, id=5)))      # timestamp
    assert (r[P.P_SPORT], r[P.P_DPORT], r[P.P_INNER]) == (0, 0, None)
    r = P.parse(raw(_v6() / Raw(bytes([135, 0, 0, 0]) + bytes(20)) if False else
                    _v6(nh=58) / Raw(bytes([135, 0, 0, 0]) + bytes(20))))
    assert (r[P.P_ICMP_TYPE], r[P.P_SPORT], r[P.P_INNER]) == (135, 0, None)


def test_icmp_error_quoting_echo():
    inner = bytes(_v4(ttl=1) / ICMP(type=8, id=0x77))
    r = P.parse(raw(_v4() / ICMP(type=11) / Raw(inner)))
    i = r[P.P_INNER]
    assert i[P.FLOW] == (1, A4("10.0.0.1"), 0x77, A4("10.0.0.2"), 0x77)
    assert i[P.P_ICMP_TYPE] == 8


def test_icmp_error_quoting_later_fragment():
    inner = bytes(_v4(proto=17, frag=2) / Raw(bytes(8)))
    r = P.parse(raw(_v4() / ICMP(type=3, code=1) / Raw(inner)))
    i = r[P.P_INNER]
    assert i[P.P_FRAG] == P.FRAG_LATER and i[P.P_SPORT] == 0


def test_icmp_param_problem_and_source_quench_are_errors():
    inner = bytes(_v4() / UDP(sport=1, dport=2))
    for t in (4, 12):
        r = P.parse(raw(_v4() / ICMP(type=t) / Raw(inner)))
        assert r[P.P_INNER][P.P_DPORT] == 2


def test_flow_helpers():
    r = P.parse(raw(_v4() / TCP(sport=1, dport=2)))
    assert P.flow(r) == (6, A4("10.0.0.1"), 1, A4("10.0.0.2"), 2)
    assert P.reverse_flow(r) == (6, A4("10.0.0.2"), 2, A4("10.0.0.1"), 1)
    assert not P.is_icmp_error(r)


def test_end_beyond_buffer_is_clamped():
    b = raw(_v4() / UDP(sport=1, dport=2) / b"abc")
    assert P.parse(b, 0, 1000) == P.parse(b)
    assert P.parse(b[:-1], 0, 1000) == P.BAD_TOTAL_LENGTH


def test_padding_after_total_length():
    b = raw(_v4() / UDP(sport=1, dport=2) / b"abc") + bytearray(b"\0" * 18)
    r = P.parse(b)
    assert r[P.P_LEN] == 31 and r[P.P_DPORT] == 2
