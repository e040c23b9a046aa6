"""Checksums: full sums against scapy, RFC 1624 incremental updates against
full recomputation."""
import struct

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, in4_chksum
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.utils import checksum as scapy_checksum

from userlb.dataplane import csum

addr4 = st.integers(min_value=0, max_value=2**32 - 1)
addr6 = st.binary(min_size=16, max_size=16)

# generation is slow on a busy 2-core machine; that is not a bug
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


def a4(x):
    return f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}"


def a6(b):
    import ipaddress
    return str(ipaddress.IPv6Address(b))


def naive_sum(data):
    """Reference: RFC 1071 loop with end-around carry."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += data[i] << 8 | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return s


@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_OK)
@given(st.binary(max_size=300))
def test_checksum_matches_scapy_and_naive(data):
    assert csum.checksum(data) == scapy_checksum(data)
    assert csum.ones_sum(data) == naive_sum(data)


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(st.binary(max_size=100), st.integers(0, 50), st.integers(0, 50), st.integers(0, 0xFFFF))
def test_ones_sum_slice_and_initial(data, a, b, init):
    end = max(a, b)
    start = min(a, b)
    end = min(end, len(data))
    sl = data[start:end] if start < end else b""
    want = naive_sum(sl) + init
    want = (want & 0xFFFF) + (want >> 16)
    got = csum.ones_sum(data, start, end, init)
    # 0 and 0xFFFF are the same value in one's complement; ours is 0 only for all-zero input
    assert got % 0xFFFF == want % 0xFFFF
    if got == 0:
        assert want == 0


def test_fold():
    assert csum.fold(0) == 0
    assert csum.fold(0xFFFF) == 0xFFFF
    assert csum.fold(0x10000) == 1
    assert csum.fold(0x1FFFE) == 0xFFFF
    assert csum.fold(0x2FFFD) == 0xFFFF


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(addr4, addr4, st.binary(min_size=8, max_size=60))
def test_pseudo_sum4_matches_scapy(s, d, l4):
    want = in4_chksum(17, IP(src=a4(s), dst=a4(d)), l4)
    assert csum.checksum(l4, initial=csum.pseudo_sum4(s, d, 17, len(l4))) == want


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(addr6, addr6, st.binary(min_size=8, max_size=60), st.sampled_from([6, 17, 58]))
def test_pseudo_sum6_matches_scapy(s, d, l4, nh):
    want = in6_chksum(nh, IPv6(src=a6(s), dst=a6(d)), l4)
    assert csum.checksum(l4, initial=csum.pseudo_sum6(s, d, nh, len(l4))) == want
    assert csum.pseudo_sum(6, s, d, nh, len(l4)) == csum.pseudo_sum6(s, d, nh, len(l4))


@settings(max_examples=1000, deadline=None, suppress_health_check=SLOW_OK)
@given(st.binary(min_size=2, max_size=80).map(lambda b: b[:len(b) // 2 * 2]), st.data())
def test_incremental_equals_full(data, d):
    """Change random 16-bit words; RFC 1624 update == full recomputation."""
    hc = csum.checksum(data)
    new = bytearray(data)
    n = len(data) // 2
    idx = d.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4, unique=True))
    total = 0
    step = hc
    for i in idx:
        old = new[2 * i] << 8 | new[2 * i + 1]
        nv = d.draw(st.integers(0, 0xFFFF))
        new[2 * i:2 * i + 2] = nv.to_bytes(2, "big")
        total += csum.delta16(old, nv)
        step = csum.update16(step, old, nv)
    # one's complement has two zeros: the identity holds whenever the data
    # is not all zero (always true for real headers: protocol / version bytes)
    assume(any(data) and any(new))
    assert step == csum.checksum(new)
    assert csum.apply(hc, csum.fold(total)) == csum.checksum(new)
    assert csum.apply(hc, csum.add_deltas(0, csum.fold(total))) == csum.checksum(new)


@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_OK)
@given(addr4, addr4, st.integers(0, 65535), addr4, st.integers(0, 65535), st.binary(max_size=40))
def test_delta_addr_port_v4(src, old_d, old_p, new_d, new_p, pl):
    """The precomputed pseudo-header + port delta on a real UDP packet."""
    pkt = bytes(IP(src=a4(src), dst=a4(old_d)) / UDP(sport=1, dport=old_p) / pl)
    l4 = bytearray(pkt[20:])
    hc = struct.unpack_from("!H", l4, 6)[0]
    assume(hc != 0)
    d = csum.delta_addr_port(old_d, old_p, new_d, new_p)
    l4[2:4] = new_p.to_bytes(2, "big")
    got = csum.apply(hc, d)
    l4[6:8] = b"\0\0"
    want = in4_chksum(17, IP(src=a4(src), dst=a4(new_d)), bytes(l4))
    assert got == want or (want == 0xFFFF and got == 0) or (got == 0 and want == 0)


@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_OK)
@given(addr6, addr6, st.integers(0, 65535), addr6, st.integers(0, 65535), st.binary(max_size=40))
def test_delta_addr_port_v6(src, old_s, old_p, new_s, new_p, pl):
    pkt = bytes(IPv6(src=a6(old_s), dst=a6(src)) / TCP(sport=old_p, dport=9) / pl)
    l4 = bytearray(pkt[40:])
    hc = struct.unpack_from("!H", l4, 16)[0]
    d = csum.delta_addr_port(old_s, old_p, new_s, new_p)
    l4[0:2] = new_p.to_bytes(2, "big")
    got = csum.apply(hc, d)
    l4[16:18] = b"\0\0"
    assert got == in6_chksum(6, IPv6(src=a6(new_s), dst=a6(src)), bytes(l4))


@settings(max_examples=500, deadline=None, suppress_health_check=SLOW_OK)
@given(addr4, addr4, addr4, st.integers(1, 255), st.integers(0, 255), st.booleans())
def test_delta_ipv4_header_with_ttl(src, old_d, new_d, ttl, proto, dec):
    hdr = bytearray(bytes(IP(src=a4(src), dst=a4(old_d), ttl=ttl, proto=proto)))
    assert csum.ipv4_header_ok(hdr)
    d = csum.delta_ipv4_header(old_d, new_d, dec)
    hc = struct.unpack_from("!H", hdr, 10)[0]
    hdr[16:20] = new_d.to_bytes(4, "big")
    if dec:
        hdr[8] -= 1
    new = csum.apply(hc, d)
    assert new == csum.ipv4_header_checksum(hdr)
    csum.apply_at(hdr, 10, 0)   # a zero delta changes nothing
    assert struct.unpack_from("!H", hdr, 10)[0] == hc
    csum.apply_at(hdr, 10, d)
    assert csum.ipv4_header_ok(hdr)


def test_update_field_and_delta_addr():
    data = bytearray(bytes(IP(src="10.1.2.3", dst="10.4.5.6")))
    hc = struct.unpack_from("!H", data, 10)[0]
    new = bytes([192, 168, 7, 9])
    hc2 = csum.update_field(hc, bytes(data[16:20]), new)
    assert hc2 == csum.apply(hc, csum.delta_addr(0x0A040506, 0xC0A80709))
    data[16:20] = new
    assert hc2 == csum.ipv4_header_checksum(data)
    assert csum.addr_sum(bytes(16)) == 0
    assert csum.addr_sum(0x0001_0002) == 3
