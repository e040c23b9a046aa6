"""Masquerade rewrite: property tests against scapy's checksum computations.

For random IPv4/IPv6 TCP/UDP packets (IPv4 options, IPv6 extension headers,
random payloads, optional virtio-style prefix and trailing padding) the
rewrite in both directions must: set exactly the rewritten fields, decrement
the TTL / hop limit, leave every other byte untouched, and leave every
checksum equal to a full recomputation (done by scapy).  The same for ICMP /
ICMPv6 errors in both directions, including truncated quotes.
"""
import os
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, in4_chksum
from scapy.layers.inet6 import IPv6, in6_chksum
from scapy.utils import checksum as scapy_checksum

from helpers.packets import a4, a6, addr4, addr6, framed, icmp_error, ip_packet, port  # noqa: E402
from userlb.dataplane import nat  # noqa: E402
from userlb.dataplane import packet as P  # noqa: E402

N = int(os.environ.get('USERLB_NAT_EXAMPLES', 2000))

# generation is slow on a busy 2-core machine; that is not a bug
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


# ---------------------------------------------------------------- scapy-based checks

def _u(af, src, dst):
    return IP(src=a4(src), dst=a4(dst)) if af == 4 else IPv6(src=a6(src), dst=a6(dst))


# DEEP: build scapy layer objects for the pseudo-header (in4_chksum /
# in6_chksum) and dissect the packet with scapy.  The cheap mode (used by the
# 2,000-example tests) lays out the pseudo-header with struct and lets
# scapy's checksum() do the full recomputation; test_csum checks that both
# pseudo-header layouts agree, and the deep mode runs in the smaller tests.
DEEP = False


def pseudo_header(af, proto, src, dst, length):
    if af == 4:
        return struct.pack("!IIBBH", src, dst, 0, proto, length)
    return bytes(src) + bytes(dst) + struct.pack("!IxxxB", length, proto)


def scapy_l4_checksum(af, proto, src, dst, l4bytes, csum_rel, deep=None):
    """Full recomputation (scapy) of a TCP/UDP/ICMPv6 checksum over l4bytes
    with the checksum field zeroed, pseudo-header from src/dst."""
    z = bytearray(l4bytes)
    z[csum_rel:csum_rel + 2] = b"\0\0"
    if deep if deep is not None else DEEP:
        if af == 4:
            return in4_chksum(proto, _u(af, src, dst), bytes(z))
        return in6_chksum(proto, _u(af, src, dst), bytes(z))
    return scapy_checksum(pseudo_header(af, proto, src, dst, len(z)) + bytes(z))


def scapy_ip4_header_checksum(hdr):
    z = bytearray(hdr)
    z[10:12] = b"\0\0"
    return scapy_checksum(bytes(z))


def get16(b, o):
    return b[o] << 8 | b[o + 1]


def raw_addrs(af, pkt):
    """Source and destination read straight from the header bytes."""
    if af == 4:
        return struct.unpack_from("!II", pkt, 12)
    return bytes(pkt[8:24]), bytes(pkt[24:40])


def check_l4_packet_checksums(buf, r, deep=None):
    """Every checksum of a TCP/UDP packet equals scapy's full recomputation."""
    af, proto = r[P.P_AF], r[P.P_PROTO]
    l3, l4, end = r[P.P_L3OFF], r[P.P_L4OFF], r[P.P_L3OFF] + r[P.P_LEN]
    pkt = bytes(buf[l3:end])
    src, dst = raw_addrs(af, pkt)
    assert (src, dst) == (r[P.P_SADDR], r[P.P_DADDR])
    if deep if deep is not None else DEEP:
        ip = (IP if af == 4 else IPv6)(pkt)
        assert (ip.src, ip.dst) == ((a4(src), a4(dst)) if af == 4 else (a6(src), a6(dst)))
    if af == 4:
        hl = (pkt[0] & 15) * 4
        assert get16(pkt, 10) == scapy_ip4_header_checksum(pkt[:hl])
    rel = r[P.P_CSUMOFF] - l4
    stored = get16(buf, r[P.P_CSUMOFF])
    if proto == 17 and stored == 0:
        assert af == 4      # "no checksum" is only generated for IPv4
        return
    want = scapy_l4_checksum(af, proto, src, dst, buf[l4:end], rel, deep)
    if proto == 17 and want == 0:
        want = 0xFFFF
    assert stored == want


def field_ranges(r, which):
    """Byte positions of the address and port of one endpoint."""
    l3, l4 = r[P.P_L3OFF], r[P.P_L4OFF]
    if r[P.P_AF] == 4:
        a = l3 + (12 if which == "src" else 16)
        alen = 4
    else:
        a = l3 + (8 if which == "src" else 24)
        alen = 16
    p = l4 + (0 if which == "src" else 2)
    return set(range(a, a + alen)), set(range(p, p + 2))


# ---------------------------------------------------------------- TCP/UDP rewrite

def _new_endpoint(af):
    return st.tuples(addr4 if af == 4 else addr6, port)


def _rewrite_case(af):
    return st.tuples(ip_packet(af).flatmap(lambda pk: framed(pk[1])), _new_endpoint(af),
                     st.booleans())


def do_rewrite_check(af, direction, case, deep=False):
    (buf, off, end), (naddr, nport), use_plan = case
    r = P.parse(buf, off, end)
    assert type(r) is tuple, r
    orig = bytes(buf)
    old_ttl = buf[r[P.P_TTLOFF]]
    old_l4c = get16(buf, r[P.P_CSUMOFF])
    if direction == "in":
        if use_plan:
            nat.rewrite(buf, r, nat.plan_in(r[P.P_DADDR], r[P.P_DPORT], naddr, nport))
        else:
            nat.masq_in(buf, r, naddr, nport)
        which = "dst"
    else:
        if use_plan:
            nat.rewrite(buf, r, nat.plan_out(r[P.P_SADDR], r[P.P_SPORT], naddr, nport))
        else:
            nat.masq_out(buf, r, naddr, nport)
        which = "src"
    r2 = P.parse(buf, off, end)
    assert type(r2) is tuple, r2
    # the rewritten fields and nothing else in the parse result
    expect = list(r)
    if which == "dst":
        expect[P.P_DADDR], expect[P.P_DPORT] = naddr, nport
    else:
        expect[P.P_SADDR], expect[P.P_SPORT] = naddr, nport
    assert list(r2) == expect
    assert buf[r[P.P_TTLOFF]] == old_ttl - 1
    # every other byte untouched
    arange, prange = field_ranges(r, which)
    c = r[P.P_CSUMOFF]
    allowed = arange | prange | {c, c + 1, r[P.P_TTLOFF]}
    if af == 4:
        allowed |= {r[P.P_L3OFF] + 10, r[P.P_L3OFF] + 11}
    changed = {i for i in range(len(buf)) if buf[i] != orig[i]}
    assert changed <= allowed
    # checksums equal a full recomputation
    if r[P.P_PROTO] == 17 and old_l4c == 0:
        assert get16(buf, c) == 0          # IPv4 UDP without checksum stays without
    check_l4_packet_checksums(buf, r2, deep)


def _both_directions(check, af, case):
    """One generated packet, rewritten in each direction (on copies)."""
    (buf, off, end), ep, flag = case
    check(af, "in", ((bytearray(buf), off, end), ep, flag))
    check(af, "out", ((buf, off, end), ep, flag))


@settings(max_examples=N, deadline=None, suppress_health_check=SLOW_OK)
@given(case=_rewrite_case(4))
def test_rewrite_ipv4_both_directions(case):
    _both_directions(do_rewrite_check, 4, case)


@settings(max_examples=N, deadline=None, suppress_health_check=SLOW_OK)
@given(case=_rewrite_case(6))
def test_rewrite_ipv6_both_directions(case):
    _both_directions(do_rewrite_check, 6, case)


@settings(max_examples=200, deadline=None, suppress_health_check=SLOW_OK)
@given(pk=st.sampled_from([4, 6]).flatmap(lambda af: ip_packet(af)), data=st.data())
def test_rewrite_round_trip(pk, data):
    """in then out (with the reverse plan, no TTL change) restores the packet."""
    buf = bytearray(pk[1])
    r = P.parse(buf)
    af = r[P.P_AF]
    naddr, nport = data.draw(_new_endpoint(af))
    orig = bytes(buf)
    nat.rewrite(buf, r, nat.plan_in(r[P.P_DADDR], r[P.P_DPORT], naddr, nport, dec_ttl=False))
    r2 = P.parse(buf)
    # pretend the packet is a reply: undo with the outbound plan on the dst side
    back = nat.plan_in(naddr, nport, r[P.P_DADDR], r[P.P_DPORT], dec_ttl=False)
    nat.rewrite(buf, r2, back)
    assert bytes(buf) == orig or (
        # a UDP checksum that was 0xFFFF-for-0 may legitimately come back as 0xFFFF
        r[P.P_PROTO] == 17 and get16(orig, r[P.P_CSUMOFF]) in (0, 0xFFFF))


def test_udp_zero_checksum_stays_zero():
    from scapy.layers.inet import UDP
    buf = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5, dport=53, chksum=0)
                          / b"abc"))
    r = P.parse(buf)
    nat.masq_in(buf, r, 0x0A000009, 5353)
    assert get16(buf, r[P.P_CSUMOFF]) == 0
    assert P.parse(buf)[P.P_DPORT] == 5353


def test_udp_computed_zero_becomes_ffff():
    """Find a rewrite whose result checksum is 0 and check it is sent as 0xFFFF."""
    from scapy.layers.inet import UDP
    base = bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=5, dport=53) / b"abcd")
    found = 0
    for nport in range(65536):
        buf = bytearray(base)
        r = P.parse(buf)
        nat.masq_in(buf, r, 0x0A000003, nport)
        if get16(buf, r[P.P_CSUMOFF]) == 0xFFFF:
            check_l4_packet_checksums(buf, P.parse(buf))
            found += 1
        assert get16(buf, r[P.P_CSUMOFF]) != 0
    assert found >= 1


@pytest.mark.parametrize("af", [4, 6])
def test_ttl_expired(af):
    from scapy.layers.inet import TCP
    if af == 4:
        mk = lambda ttl: IP(src="1.1.1.1", dst="2.2.2.2", ttl=ttl) / TCP()  # noqa: E731
    else:
        mk = lambda ttl: IPv6(src="::1", dst="::2", hlim=ttl) / TCP()  # noqa: E731
    for ttl, exp in [(0, True), (1, True), (2, False), (255, False)]:
        buf = bytearray(bytes(mk(ttl)))
        assert nat.ttl_expired(buf, P.parse(buf)) is exp


def test_plan_rejects_mixed_families():
    with pytest.raises(ValueError):
        nat.plan_in(0x0A000001, 80, b"\x20" + bytes(15), 80)


# ---------------------------------------------------------------- ICMP errors

def _icmp_case(af):
    return st.tuples(icmp_error(af), _new_endpoint(af), st.sampled_from([0, 10]))


def expected_inner_l4_checksum(af, inner_raw, which, naddr, nport, deep=False):
    """Full recomputation (scapy) of the quoted packet's L4 checksum after
    the rewrite, over the *complete* original inner packet."""
    r = P.parse(bytearray(inner_raw))
    assert type(r) is tuple
    buf = bytearray(inner_raw)
    src, dst = r[P.P_SADDR], r[P.P_DADDR]
    if which == "src":
        src = naddr
        buf[r[P.P_L4OFF]:r[P.P_L4OFF] + 2] = nport.to_bytes(2, "big")
    else:
        dst = naddr
        buf[r[P.P_L4OFF] + 2:r[P.P_L4OFF] + 4] = nport.to_bytes(2, "big")
    old = get16(inner_raw, r[P.P_CSUMOFF])
    if r[P.P_PROTO] == 17 and old == 0:
        return r, 0
    want = scapy_l4_checksum(af, r[P.P_PROTO], src, dst, buf[r[P.P_L4OFF]:],
                             r[P.P_CSUMOFF] - r[P.P_L4OFF], deep)
    if r[P.P_PROTO] == 17 and want == 0:
        want = 0xFFFF
    return r, want


def do_icmp_check(af, direction, case, deep=False):
    (outer_raw, inner_raw, quote), (naddr, nport), off = case
    buf = bytearray(b"\x5a" * off + outer_raw)
    r = P.parse(buf, off)
    assert type(r) is tuple, r
    inner = r[P.P_INNER]
    assert inner is not None
    orig = bytes(buf)
    l3, l4 = r[P.P_L3OFF], r[P.P_L4OFF]
    end = l3 + r[P.P_LEN]
    il3 = inner[P.P_L3OFF]
    if direction == "in":
        nat.icmp_in(buf, r, naddr, nport)
        outer_which, inner_which = "dst", "src"
    else:
        nat.icmp_out(buf, r, naddr, nport)
        outer_which, inner_which = "src", "dst"
    r2 = P.parse(buf, off)
    assert type(r2) is tuple, r2
    # parsed fields changed as intended, nothing else
    exp = list(r)
    exp[P.P_DADDR if outer_which == "dst" else P.P_SADDR] = naddr
    exp_in = list(inner)
    if inner_which == "src":
        exp_in[P.P_SADDR], exp_in[P.P_SPORT] = naddr, nport
    else:
        exp_in[P.P_DADDR], exp_in[P.P_DPORT] = naddr, nport
    exp[P.P_INNER] = tuple(exp_in)
    assert r2 == tuple(exp)
    assert buf[r[P.P_TTLOFF]] == orig[r[P.P_TTLOFF]] - 1
    # untouched bytes
    oa = field_ranges(r, outer_which)[0]
    ia, ip = field_ranges(inner, inner_which)
    allowed = oa | ia | ip | {r[P.P_TTLOFF], l4 + 2, l4 + 3}
    ic = inner[P.P_CSUMOFF]
    allowed |= {ic, ic + 1}
    if af == 4:
        allowed |= {l3 + 10, l3 + 11, il3 + 10, il3 + 11}
    changed = {i for i in range(len(buf)) if buf[i] != orig[i]}
    assert changed <= allowed
    # outer IPv4 header checksum
    if af == 4:
        hl = (buf[l3] & 15) * 4
        assert get16(buf, l3 + 10) == scapy_ip4_header_checksum(buf[l3:l3 + hl])
        ihl = (buf[il3] & 15) * 4
        assert get16(buf, il3 + 10) == scapy_ip4_header_checksum(buf[il3:il3 + ihl])
        assert get16(buf, l4 + 2) == scapy_checksum(
            bytes(buf[l4:l4 + 2]) + b"\0\0" + bytes(buf[l4 + 4:end]))
    else:
        assert get16(buf, l4 + 2) == scapy_l4_checksum(6, 58, r2[P.P_SADDR], r2[P.P_DADDR],
                                                       buf[l4:end], 2, deep)
    # quoted L4 checksum (where present) equals the full recomputation of the
    # whole original quoted packet with the new endpoint
    _, want = expected_inner_l4_checksum(af, inner_raw, inner_which, naddr, nport, deep)
    if ic - il3 + 2 <= quote:
        assert get16(buf, ic) == want
    else:
        assert buf[ic:ic + 2] == orig[ic:ic + 2] if ic < len(buf) else True
    # sanity: the quote really was truncated where the generator said
    assert end - il3 == quote


def _icmp_both(af, case):
    do_icmp_check(af, "in", case)
    do_icmp_check(af, "out", case)


@settings(max_examples=N, deadline=None, suppress_health_check=SLOW_OK)
@given(case=_icmp_case(4))
def test_icmp_error_ipv4_both_directions(case):
    _icmp_both(4, case)


@settings(max_examples=N, deadline=None, suppress_health_check=SLOW_OK)
@given(case=_icmp_case(6))
def test_icmp_error_ipv6_both_directions(case):
    _icmp_both(6, case)


# ---------------------------------------------------------------- reply builders

def check_full_checksums(pkt):
    """All checksums of a built reply packet, recomputed by scapy."""
    buf = bytearray(pkt)
    r = P.parse(buf)
    assert type(r) is tuple, r
    af, proto, l4 = r[P.P_AF], r[P.P_PROTO], r[P.P_L4OFF]
    end = r[P.P_LEN]
    assert end == len(buf)
    if af == 4:
        assert get16(buf, 10) == scapy_ip4_header_checksum(buf[:l4])
    if proto == 1:
        assert get16(buf, l4 + 2) == scapy_checksum(bytes(buf[l4:l4 + 2]) + b"\0\0"
                                                    + bytes(buf[l4 + 4:end]))
    else:
        assert get16(buf, r[P.P_CSUMOFF]) == scapy_l4_checksum(
            af, proto, r[P.P_SADDR], r[P.P_DADDR], buf[l4:end], r[P.P_CSUMOFF] - l4, True)
    return r


def _tcp(af, flags, seq=1000, ack=5000, pl=b""):
    from scapy.layers.inet import TCP
    ip = (IP(src="198.51.100.7", dst="10.0.0.100", ttl=9) if af == 4 else
          IPv6(src="2001:db8::7", dst="2001:db8::100", hlim=9))
    return bytearray(bytes(ip / TCP(sport=40000, dport=80, flags=flags, seq=seq, ack=ack) / pl))


@pytest.mark.parametrize("af", [4, 6])
@pytest.mark.parametrize("flags,pl,exp_seq,exp_ack,exp_flags", [
    ("S", b"", 0, 1001, "RA"),            # SYN: ack = seq + 1
    ("SF", b"abc", 0, 1005, "RA"),        # SYN + FIN + 3 bytes
    ("", b"abcd", 0, 1004, "RA"),         # no flags: ack = seq + len
    ("A", b"", 5000, 0, "R"),             # ACK: seq = SEG.ACK, no ACK flag
    ("PA", b"data", 5000, 0, "R"),
    ("FA", b"", 5000, 0, "R"),
])
def test_build_tcp_rst(af, flags, pl, exp_seq, exp_ack, exp_flags):
    from scapy.layers.inet import TCP
    buf = _tcp(af, flags, pl=pl)
    r = P.parse(buf)
    rst = nat.build_tcp_rst(buf, r)
    rr = check_full_checksums(rst)
    assert rr[P.FLOW] == (6, r[P.P_DADDR], 80, r[P.P_SADDR], 40000)
    p = (IP if af == 4 else IPv6)(bytes(rst))
    t = p[TCP]
    assert (t.seq, t.ack, str(t.flags)) == (exp_seq, exp_ack, exp_flags)
    assert t.window == 0 and len(t.payload) == 0
    assert rst[rr[P.P_TTLOFF]] == 64


@pytest.mark.parametrize("af", [4, 6])
def test_no_rst_for_rst(af):
    for flags in ("R", "RA"):
        buf = _tcp(af, flags)
        assert nat.build_tcp_rst(buf, P.parse(buf)) is None
    from scapy.layers.inet import UDP
    u = bytearray(bytes(IP(src="1.1.1.1", dst="2.2.2.2") / UDP()))
    assert nat.build_tcp_rst(u, P.parse(u)) is None


def test_rst_sequence_wraps():
    buf = _tcp(4, "S", seq=0xFFFFFFFF)
    from scapy.layers.inet import TCP
    assert IP(bytes(nat.build_tcp_rst(buf, P.parse(buf))))[TCP].ack == 0


@pytest.mark.parametrize("af", [4, 6])
@pytest.mark.parametrize("size", [0, 100, 600, 1400])
def test_build_port_unreachable(af, size):
    from scapy.layers.inet import UDP
    if af == 4:
        orig = bytearray(bytes(IP(src="198.51.100.7", dst="10.0.0.100", ttl=3)
                               / UDP(sport=5353, dport=53) / (b"q" * size)))
    else:
        orig = bytearray(bytes(IPv6(src="2001:db8::7", dst="2001:db8::100", hlim=3)
                               / UDP(sport=5353, dport=53) / (b"q" * size)))
    r = P.parse(orig)
    reply = nat.build_port_unreachable(orig, r)
    rr = check_full_checksums(reply)
    assert rr[P.P_SADDR] == r[P.P_DADDR] and rr[P.P_DADDR] == r[P.P_SADDR]
    limit = 576 if af == 4 else 1280
    hdr = 28 if af == 4 else 48
    assert len(reply) == min(limit, hdr + len(orig))
    assert bytes(reply[hdr:]) == bytes(orig[:len(reply) - hdr])
    assert (rr[P.P_ICMP_TYPE], rr[P.P_ICMP_CODE]) == ((3, 3) if af == 4 else (1, 4))
    assert rr[P.P_INNER][P.FLOW] == r[P.FLOW]
    # time exceeded from the director's own address
    me = 0x0A0000FE if af == 4 else bytes.fromhex("20010db80000000000000000000000fe")
    te = nat.build_time_exceeded(orig, r, me)
    rt = check_full_checksums(te)
    assert rt[P.P_SADDR] == me
    assert (rt[P.P_ICMP_TYPE], rt[P.P_ICMP_CODE]) == ((11, 0) if af == 4 else (3, 0))


def test_no_icmp_error_about_errors_multicast_or_fragments():
    from scapy.layers.inet import ICMP, UDP
    from scapy.layers.inet6 import ICMPv6DestUnreach
    cases = [
        IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(type=3, code=3) / bytes(IP() / UDP()),
        IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(type=5) / bytes(IP() / UDP()),
        IP(src="1.1.1.1", dst="224.0.0.5") / UDP(),
        IP(src="1.1.1.1", dst="255.255.255.255") / UDP(),
        IP(src="0.0.0.0", dst="2.2.2.2") / UDP(),
        IP(src="1.1.1.1", dst="2.2.2.2", frag=5, proto=17) / bytes(8),
        IPv6(src="2001:db8::1", dst="ff02::1") / UDP(),
        IPv6(src="::", dst="2001:db8::1") / UDP(),
        IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6DestUnreach()
        / bytes(IPv6() / UDP()),
    ]
    for c in cases:
        buf = bytearray(bytes(c))
        r = P.parse(buf)
        assert type(r) is tuple, (c, r)
        assert nat.build_port_unreachable(buf, r) is None, c.summary()
    # but an echo request may be answered with an error
    buf = bytearray(bytes(IP(src="1.1.1.1", dst="2.2.2.2") / ICMP(type=8)))
    assert nat.build_port_unreachable(buf, P.parse(buf)) is not None


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(pk=st.sampled_from([4, 6]).flatmap(lambda af: ip_packet(af)), off=st.sampled_from([0, 10]))
def test_builders_on_random_packets(pk, off):
    meta, rawb = pk
    buf = bytearray(b"\x77" * off + rawb)
    r = P.parse(buf, off)
    reply = nat.build_port_unreachable(buf, r)
    if meta["af"] == 4 and meta["src"] >> 24 == 127:
        assert reply is None            # never answer a (martian) loopback source
    else:
        rr = check_full_checksums(reply)
        assert rr[P.P_INNER][P.FLOW] == r[P.FLOW]
    rst = nat.build_tcp_rst(buf, r)
    if meta["proto"] == 6 and not meta["flags"] & 0x04:
        rr = check_full_checksums(rst)
        assert rr[P.FLOW] == P.reverse_flow(r)
    else:
        assert rst is None


@settings(max_examples=200, deadline=None, suppress_health_check=SLOW_OK)
@given(pk=st.sampled_from([4, 6]).flatmap(lambda af: ip_packet(af)), data=st.data())
def test_rewrite_through_memoryview_of_reused_buffer(pk, data):
    """The TUN driver's shape: one big preallocated bytearray, a 10-byte
    header before the packet, stale bytes after it, a memoryview."""
    meta, rawb = pk
    big = bytearray(b"\xEE" * 4096)
    big[10:10 + len(rawb)] = rawb
    n = 10 + len(rawb)
    mv = memoryview(big)
    r = P.parse(mv, 10, n)
    assert type(r) is tuple
    naddr, nport = data.draw(_new_endpoint(meta["af"]))
    ref = bytearray(rawb)
    nat.rewrite(ref, P.parse(ref), nat.plan_in(meta["dst"], meta["dport"], naddr, nport))
    nat.rewrite(mv, r, nat.plan_in(meta["dst"], meta["dport"], naddr, nport))
    assert big[10:n] == ref
    assert big[:10] == b"\xEE" * 10 and big[n:] == b"\xEE" * (4096 - n)
    check_l4_packet_checksums(big, P.parse(big, 10, n), deep=True)


# ---------------------------------------------------------------- deep scapy checks

@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(case=st.sampled_from([4, 6]).flatmap(lambda af: st.tuples(st.just(af), _rewrite_case(af))))
def test_rewrite_deep_scapy_check(case):
    """Fewer examples, but the pseudo-header comes from scapy's own
    in4_chksum / in6_chksum and the packet is dissected by scapy."""
    af, c = case
    (buf, off, end), ep, flag = c
    do_rewrite_check(af, "in", ((bytearray(buf), off, end), ep, flag), deep=True)
    do_rewrite_check(af, "out", ((buf, off, end), ep, flag), deep=True)


@settings(max_examples=200, deadline=None, suppress_health_check=SLOW_OK)
@given(case=st.sampled_from([4, 6]).flatmap(lambda af: st.tuples(st.just(af), _icmp_case(af))))
def test_icmp_error_deep_scapy_check(case):
    af, c = case
    do_icmp_check(af, "in", c, deep=True)
    do_icmp_check(af, "out", c, deep=True)


@settings(max_examples=100, deadline=None, suppress_health_check=SLOW_OK)
@given(pk=ip_packet(4, proto=None, allow_zero_udp=False), data=st.data())
def test_first_fragment_rewrite_keeps_datagram_checksum(pk, data):
    """The nat docstring's claim: rewriting the first fragment adjusts the L4
    checksum of the whole datagram (checked after reassembly)."""
    from scapy.layers.inet import fragment
    meta, rawb = pk
    l4off = meta["l4off"]
    hdr = (rawb[l4off + 12] >> 4) * 4 if meta["proto"] == 6 else 8
    size = (hdr + 7) // 8 * 8          # the first fragment holds the whole L4 header
    frags = [bytearray(bytes(f)) for f in fragment(IP(rawb), fragsize=size)]
    assume(len(frags) >= 2)
    first = frags[0]
    r = P.parse(first)
    assert type(r) is tuple and r[P.P_FRAG] == P.FRAG_FIRST
    naddr, nport = data.draw(_new_endpoint(4))
    nat.masq_in(first, r, naddr, nport)
    # reassemble: L4 bytes of all fragments in offset order
    pieces = []
    for f in frags:
        rf = P.parse(f)
        pieces.append((rf[P.P_FRAG_OFF], bytes(f[rf[P.P_L4OFF]:rf[P.P_LEN]])))
    l4 = b"".join(p for _, p in sorted(pieces))
    proto = meta["proto"]
    rel = 16 if proto == 6 else 6
    assert get16(l4, rel) == scapy_l4_checksum(4, proto, meta["src"], naddr, l4, rel)
    assert struct.unpack_from("!H", l4, 2)[0] == nport
