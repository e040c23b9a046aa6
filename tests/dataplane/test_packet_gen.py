"""The packet generators of tests/helpers/packets.py checked against scapy's
dissector: what they claim to build is what scapy reads."""
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, in4_chksum
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.utils import checksum as scapy_checksum

from helpers.packets import SLOW_OK, a4, a6, icmp_error, ip_packet

# ---------------------------------------------------------------- generators vs scapy

@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(st.sampled_from([4, 6]).flatmap(lambda af: ip_packet(af)))
def test_generated_packet_matches_scapy(pk):
    meta, rawb = pk
    af = meta["af"]
    p = (IP if af == 4 else IPv6)(rawb)
    layer = p[TCP] if meta["proto"] == 6 else p[UDP]
    assert (layer.sport, layer.dport) == (meta["sport"], meta["dport"])
    if af == 4:
        assert p.src == a4(meta["src"]) and p.dst == a4(meta["dst"]) and p.ttl == meta["ttl"]
        assert p.len == len(rawb)
        hl = p.ihl * 4
        z = bytearray(rawb[:hl])
        z[10:12] = b"\0\0"
        assert scapy_checksum(bytes(z)) == p.chksum
    else:
        assert p.src == a6(meta["src"]) and p.dst == a6(meta["dst"]) and p.hlim == meta["ttl"]
        assert p.plen + 40 == len(rawb)
    l4 = bytearray(rawb[meta["l4off"]:])
    assert layer.chksum == meta["csum"]
    coff = 16 if meta["proto"] == 6 else 6
    l4[coff:coff + 2] = b"\0\0"
    u = IP(src=p.src, dst=p.dst) if af == 4 else IPv6(src=p.src, dst=p.dst)
    want = (in4_chksum if af == 4 else in6_chksum)(meta["proto"], u, bytes(l4))
    if meta["proto"] == 17:
        assert meta["csum"] in ((want or 0xFFFF), 0)
    else:
        assert meta["csum"] == want
    if meta["proto"] == 6:
        assert int(layer.flags) == meta["flags"]
        assert layer.dataofs * 4 + meta["l4off"] <= len(rawb)


@settings(max_examples=200, deadline=None, suppress_health_check=SLOW_OK)
@given(st.sampled_from([4, 6]).flatmap(lambda af: icmp_error(af)))
def test_generated_icmp_error_matches_scapy(e):
    outer, inner, q = e
    assert outer.endswith(inner[:q])
    if outer[0] >> 4 == 4:
        p = IP(outer)
        assert p.proto == 1 and p.len == len(outer)
        icmp = outer[p.ihl * 4:]
        assert scapy_checksum(icmp) == 0
    else:
        p = IPv6(outer)
        assert p.plen + 40 == len(outer)
        icmp = outer[len(outer) - q - 8:]
        u = IPv6(src=p.src, dst=p.dst)
        z = bytearray(icmp)
        z[2:4] = b"\0\0"
        assert in6_chksum(58, u, bytes(z)) == struct.unpack_from("!H", icmp, 2)[0]
