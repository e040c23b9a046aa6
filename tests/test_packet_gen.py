"""Packet generators (hypothesis strategies built on scapy) shared by the
packet / nat tests, plus sanity tests of the generators themselves.

Imported by tests/test_packet.py and tests/test_nat.py via
``from test_packet_gen import ...`` (the tests directory is put on sys.path).
"""
import os
import sys

from hypothesis import given, settings, strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoRequest, ICMPv6PacketTooBig,
                                ICMPv6ParamProblem, ICMPv6TimeExceeded, IPv6,
                                IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop,
                                IPv6ExtHdrRouting, PadN)
from scapy.packet import Raw

sys.path.insert(0, os.path.dirname(__file__))

# ---------------------------------------------------------------- building blocks

addr4 = st.integers(min_value=1, max_value=0xDFFFFFFF)            # unicast-ish
addr6 = st.binary(min_size=16, max_size=16).map(lambda b: bytes([b[0] & 0xFE or 0x20]) + b[1:])
port = st.integers(min_value=0, max_value=65535)
payload = st.binary(min_size=0, max_size=120)


def a4(x):
    return "%d.%d.%d.%d" % (x >> 24, (x >> 16) & 255, (x >> 8) & 255, x & 255)


def a6(b):
    import ipaddress
    return str(ipaddress.IPv6Address(bytes(b)))


@st.composite
def ip4_options(draw):
    opts = []
    total = 0
    for kind in draw(st.lists(st.sampled_from(["nop", "rr"]), max_size=4)):
        if kind == "nop":
            total += 1
            opt = IPOption_NOP()
        else:
            n = draw(st.integers(min_value=0, max_value=3))
            total += 3 + 4 * n
            opt = IPOption_RR(routers=[a4(draw(addr4)) for _ in range(n)])
        if total > 40:           # IPv4 options are at most 40 bytes
            break
        opts.append(opt)
    return opts


@st.composite
def tcp_options(draw):
    opts = []
    size = {"mss": 4, "nop": 1, "ws": 3, "sack": 2, "ts": 10}
    total = 0
    for kind in draw(st.lists(st.sampled_from(["mss", "nop", "ws", "sack", "ts"]), max_size=5)):
        total += size[kind]
        if total > 40:           # TCP options are at most 40 bytes
            break
        if kind == "mss":
            opts.append(("MSS", draw(st.integers(0, 65535))))
        elif kind == "nop":
            opts.append(("NOP", None))
        elif kind == "ws":
            opts.append(("WScale", draw(st.integers(0, 14))))
        elif kind == "sack":
            opts.append(("SAckOK", b""))
        else:
            opts.append(("Timestamp", (draw(st.integers(0, 2**32 - 1)),
                                       draw(st.integers(0, 2**32 - 1)))))
    return opts


@st.composite
def ip6_ext_headers(draw):
    """A chain of extension headers (hop-by-hop first if present); routing
    headers have segments-left 0 (the pseudo-header then uses the IPv6
    destination); an optional atomic fragment header."""
    hdrs = []
    if draw(st.booleans()):
        hdrs.append(IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0" * draw(st.integers(0, 12)))]))
    for kind in draw(st.lists(st.sampled_from(["dst", "rt", "frag"]), max_size=3, unique=True)):
        if kind == "dst":
            hdrs.append(IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0" * draw(st.integers(0, 12)))]))
        elif kind == "rt":
            hdrs.append(IPv6ExtHdrRouting(addresses=[], segleft=0))
        else:
            hdrs.append(IPv6ExtHdrFragment(offset=0, m=0, id=draw(st.integers(0, 2**32 - 1))))
    return hdrs


def stack(layers):
    p = layers[0]
    for layer in layers[1:]:
        p = p / layer
    return p


@st.composite
def l4_layer(draw, proto, zero_udp_csum=False):
    sport, dport = draw(port), draw(port)
    if proto == "tcp":
        return TCP(sport=sport, dport=dport, seq=draw(st.integers(0, 2**32 - 1)),
                   ack=draw(st.integers(0, 2**32 - 1)), flags=draw(st.integers(0, 255)),
                   window=draw(st.integers(0, 65535)), options=draw(tcp_options()))
    if zero_udp_csum:
        return UDP(sport=sport, dport=dport, chksum=0)
    return UDP(sport=sport, dport=dport)


@st.composite
def ip_packet(draw, af, proto=None, src=None, dst=None, allow_zero_udp=True):
    """(scapy packet, raw bytes) of an unfragmented TCP/UDP packet with random
    options / extension headers and payload."""
    if proto is None:
        proto = draw(st.sampled_from(["tcp", "udp"]))
    zero = proto == "udp" and af == 4 and allow_zero_udp and draw(st.integers(0, 7)) == 0
    l4 = draw(l4_layer(proto, zero))
    pl = draw(payload)
    if af == 4:
        ip = IP(src=a4(draw(addr4) if src is None else src),
                dst=a4(draw(addr4) if dst is None else dst),
                ttl=draw(st.integers(2, 255)), id=draw(st.integers(0, 65535)),
                tos=draw(st.integers(0, 255)), flags=draw(st.sampled_from([0, 2])),
                options=draw(ip4_options()))
        pkt = ip / l4 / Raw(pl)
    else:
        ip = IPv6(src=a6(draw(addr6) if src is None else src),
                  dst=a6(draw(addr6) if dst is None else dst),
                  hlim=draw(st.integers(2, 255)), tc=draw(st.integers(0, 255)),
                  fl=draw(st.integers(0, 0xFFFFF)))
        pkt = stack([ip] + draw(ip6_ext_headers()) + [l4, Raw(pl)])
    return pkt, bytes(pkt)


@st.composite
def framed(draw, raw):
    """(buffer, off, end): the packet behind an optional 10-byte junk prefix
    (virtio-net header) and followed by optional padding."""
    off = draw(st.sampled_from([0, 0, 10]))
    pre = draw(st.binary(min_size=off, max_size=off))
    pad = draw(st.binary(max_size=6))
    buf = bytearray(pre + raw + pad)
    return buf, off, len(buf)


ICMP4_ERRORS = [(3, c) for c in range(16)] + [(4, 0), (11, 0), (11, 1), (12, 0)]
ICMP6_ERRORS = [(1, c) for c in range(7)] + [(2, 0), (3, 0), (3, 1), (4, 0), (4, 1), (4, 2)]


@st.composite
def icmp_error(draw, af, inner_src=None, inner_dst=None, outer_src=None, outer_dst=None):
    """(outer raw bytes, inner full raw bytes, quoted length) of an ICMP error
    quoting a TCP/UDP packet, possibly truncated (at least IP header + 8)."""
    inner, inner_raw = draw(ip_packet(af, src=inner_src, dst=inner_dst))
    # minimal quote: IP header incl. options / ext headers + 8 bytes of L4
    l4layer = inner[TCP] if TCP in inner else inner[UDP]
    hdr_len = len(inner_raw) - len(bytes(l4layer))
    qmax = len(inner_raw)
    quote = draw(st.one_of(st.just(qmax), st.integers(min_value=hdr_len + 8, max_value=qmax)))
    q = inner_raw[:quote]
    if af == 4:
        t, c = draw(st.sampled_from(ICMP4_ERRORS))
        outer = IP(src=a4(draw(addr4) if outer_src is None else outer_src),
                   dst=a4(draw(addr4) if outer_dst is None else outer_dst),
                   ttl=draw(st.integers(2, 255)), id=draw(st.integers(0, 65535)),
                   options=draw(ip4_options())) / ICMP(type=t, code=c) / Raw(q)
    else:
        t, c = draw(st.sampled_from(ICMP6_ERRORS))
        cls = {1: ICMPv6DestUnreach, 2: ICMPv6PacketTooBig, 3: ICMPv6TimeExceeded,
               4: ICMPv6ParamProblem}[t]
        icmp = cls(code=c)
        layers = [IPv6(src=a6(draw(addr6) if outer_src is None else outer_src),
                       dst=a6(draw(addr6) if outer_dst is None else outer_dst),
                       hlim=draw(st.integers(2, 255)))]
        if draw(st.booleans()):
            layers.append(IPv6ExtHdrHopByHop(options=[PadN(optdata=b"\0" * 4)]))
        outer = stack(layers + [icmp, Raw(q)])
    return bytes(outer), inner_raw, quote


# ---------------------------------------------------------------- generator sanity

@settings(max_examples=50, deadline=None)
@given(st.sampled_from([4, 6]).flatmap(lambda af: ip_packet(af)))
def test_generated_packet_is_self_consistent(pk):
    pkt, raw = pk
    cls = IP if IP in pkt else IPv6
    again = cls(raw)
    assert bytes(again) == raw


@settings(max_examples=50, deadline=None)
@given(st.sampled_from([4, 6]).flatmap(lambda af: icmp_error(af)))
def test_generated_icmp_error_quotes_prefix(e):
    outer, inner, q = e
    assert inner[:q] in outer
    assert q >= 28


# re-exported names
__all__ = ["ip_packet", "icmp_error", "framed", "addr4", "addr6", "port", "payload",
           "a4", "a6", "ICMPv6EchoRequest", "ICMP"]
