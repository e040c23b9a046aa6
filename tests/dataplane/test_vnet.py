"""The engine behind the virtio-net header (userlb/dataplane/vnet.py):
NEEDS_CSUM packets (the L4 checksum field holds the non-inverted
pseudo-header sum) and GSO super-packets, both directions, every engine path
(IPv4 fast path, new flows, replies without entry, the general path with
dec_ttl, IPv6), verified by completing the checksum the way the kernel does
(sum from csum_start, fold, invert) -- and for GSO by segmenting the way the
kernel does (the pseudo-header length adjusted per segment) -- against a
full recomputation by scapy.  Headers userlb cannot handle are dropped with
a named reason and never reach the engine."""
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt

from helpers.engine import (
    CIP,
    CIP6,
    RIP1,
    RIP6_1,
    VIP,
    VIP6,
    checksums_ok,
    engine_with,
    expect_rewritten,
    make_service,
    tcp4,
    tcp6,
    udp4,
    udp6,
)
from userlb.dataplane import vnet
from userlb.dataplane.engine import V_DROP, V_FORWARD, V_REPLY
from userlb.model import IPPROTO_TCP, IPPROTO_UDP

VPORT, RPORT, CPORT = 80, 8080, 40000


# ------------------------------------------------------------- kernel model

def _sum16(data):
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def l4_offset(raw):
    return (raw[0] & 15) * 4 if raw[0] >> 4 == 4 else 40


def pseudo_sum(raw, l4len=None):
    """Folded, non-inverted pseudo-header sum (what the kernel stores in the
    checksum field of a CHECKSUM_PARTIAL packet)."""
    off = l4_offset(raw)
    if l4len is None:
        l4len = len(raw) - off
    if raw[0] >> 4 == 4:
        ph = raw[12:20] + struct.pack("!BBH", 0, raw[9], l4len)
    else:
        ph = raw[8:40] + struct.pack("!IxxxB", l4len, raw[6])
    return _sum16(ph)


def csum_field(raw):
    return 16 if (raw[9] if raw[0] >> 4 == 4 else raw[6]) == 6 else 6


def to_partial(pkt, gso_type=0, gso_size=0):
    """(header, buffer, n): scapy packet -> a NEEDS_CSUM packet as the TUN
    hands it over (checksum field = pseudo-header sum)."""
    raw = bytearray(bytes(pkt))
    off = l4_offset(raw)
    co = csum_field(raw)
    struct.pack_into("!H", raw, off + co, pseudo_sum(raw))
    hlen = off + (((raw[off + 12] >> 4) * 4) if co == 16 else 8)
    hdr = vnet.pack_hdr(vnet.F_NEEDS_CSUM, gso_type, hlen, gso_size, off, co)
    n = len(raw)
    return bytearray(hdr), raw + bytearray(64), n


def complete(raw, start, off):
    """What the kernel (or a NIC) does with NEEDS_CSUM: sum from csum_start to
    the end, field included, fold, invert."""
    out = bytearray(raw)
    c = _sum16(out[start:]) ^ 0xFFFF
    if out[0] >> 4 == 4 and out[9] == 17 or out[0] >> 4 == 6 and out[6] == 17:
        c = c or 0xFFFF
    struct.pack_into("!H", out, start + off, c)
    return bytes(out)


def segment(raw, hdr):
    """The kernel's TCP/UDP segmentation of a super-packet with a partial
    checksum: per segment, the pseudo-header length goes from the
    super-packet's L4 length to the segment's, then the checksum is
    completed.  Returns the list of segments (IP packets)."""
    flags, gt, _hl, gsize, start, coff = vnet.HDR.unpack(bytes(hdr))
    v4 = raw[0] >> 4 == 4
    l4 = start
    thl = (raw[l4 + 12] >> 4) * 4 if coff == 16 else 8
    payload = raw[l4 + thl:]
    total_l4 = len(raw) - l4
    out = []
    seq = struct.unpack_from("!I", raw, l4 + 4)[0] if coff == 16 else 0
    for i in range(0, len(payload), gsize):
        chunk = payload[i:i + gsize]
        seg = bytearray(raw[:l4 + thl]) + chunk
        seg_l4 = len(seg) - l4
        if v4:
            struct.pack_into("!H", seg, 2, len(seg))
            struct.pack_into("!H", seg, 10, 0)
            struct.pack_into("!H", seg, 10, _sum16(seg[:l4]) ^ 0xFFFF)
        else:
            struct.pack_into("!H", seg, 4, seg_l4)
        if coff == 16:
            struct.pack_into("!I", seg, l4 + 4, (seq + i) & 0xFFFFFFFF)
        else:
            struct.pack_into("!H", seg, l4 + 4, seg_l4)
        p = struct.unpack_from("!H", seg, l4 + coff)[0]
        # subtract the old length, add the new one (ones' complement)
        x = p + (total_l4 ^ 0xFFFF) + seg_l4
        while x >> 16:
            x = (x & 0xFFFF) + (x >> 16)
        struct.pack_into("!H", seg, l4 + coff, x)
        out.append(complete(seg, l4, coff))
    return out


# ------------------------------------------------------------- fixtures

FAM = {4: (CIP, VIP, RIP1, tcp4, udp4, vnet.GSO_TCPV4),
       6: (CIP6, VIP6, RIP6_1, tcp6, udp6, vnet.GSO_TCPV6)}


def _engine(proto, af, **kw):
    _c, vip, rip = FAM[af][:3]
    return engine_with(make_service(proto, vip, VPORT, [(rip, RPORT, 1)]), **kw)


def _mk(proto, af, inbound, payload=b"hello world", flags="S"):
    cip, vip, rip, mkt, mku, _ = FAM[af]
    if inbound:
        s, sp, d, dp = cip, CPORT, vip, VPORT
    else:
        s, sp, d, dp = rip, RPORT, cip, CPORT
    if proto == IPPROTO_TCP:
        return mkt(s, sp, d, dp, flags=flags, payload=payload)
    return mku(s, sp, d, dp, payload=payload)


def _run_vnet(path, pkt, now, gso_type=0, gso_size=0):
    hdr, buf, n = to_partial(pkt, gso_type, gso_size)
    before = bytes(hdr)
    v = path.process(hdr, buf, n, now)
    assert bytes(hdr) == before          # written back unchanged
    return v, hdr, buf, n


def _expect(af, inbound):
    cip, vip, rip = FAM[af][:3]
    return dict(dst=rip, dport=RPORT) if inbound else dict(src=vip, sport=VPORT)


# ------------------------------------------------------------- NEEDS_CSUM

@pytest.mark.parametrize("dec_ttl", [False, True], ids=["fast", "dec_ttl"])
@pytest.mark.parametrize("af", [4, 6])
@pytest.mark.parametrize("proto", [IPPROTO_TCP, IPPROTO_UDP], ids=["tcp", "udp"])
def test_needs_csum_both_directions_every_path(proto, af, dec_ttl):
    """New flow, established flow (fast path for IPv4), reply: each result,
    completed like the kernel, equals scapy's full recomputation and the
    engine's output for the same packet with a full checksum."""
    eng = _engine(proto, af, dec_ttl=dec_ttl)
    ref = _engine(proto, af, dec_ttl=dec_ttl)
    path = vnet.VnetPath(eng)
    steps = [(True, "S"), (False, "SA"), (True, "A"), (True, "PA"), (False, "PA")]
    for i, (inbound, fl) in enumerate(steps):
        pkt = _mk(proto, af, inbound, payload=b"x" * (13 + 7 * i), flags=fl)
        v, hdr, buf, n = _run_vnet(path, pkt, float(i))
        assert v == V_FORWARD, (i, eng.drops)
        _f, _g, _h, _s, start, off = vnet.HDR.unpack(bytes(hdr))
        out = complete(buf[:eng.out_len], start, off)
        expect_rewritten_ttl(pkt, out, dec_ttl, **_expect(af, inbound))
        # the same packet with a full checksum through a twin engine
        rbuf = bytearray(bytes(pkt)) + bytearray(64)
        assert ref.process(rbuf, len(bytes(pkt)), float(i)) == V_FORWARD
        assert out == bytes(rbuf[:ref.out_len])
    assert path.partial == len(steps) and path.gso == 0 and not path.drops


def expect_rewritten_ttl(pkt, out, dec_ttl, **changes):
    if not dec_ttl:
        expect_rewritten(pkt, out, **changes)
        return
    exp = pkt.copy()
    if exp.haslayer(IP):
        exp[IP].ttl -= 1
    else:
        exp[IPv6].hlim -= 1
    expect_rewritten(exp, out, **changes)


def test_needs_csum_udp_partial_sum_ffff():
    """A pseudo-header sum of 0xFFFF: the temporary inverted field would be 0,
    which the engine reads as 'UDP without checksum'; it must still be
    updated."""
    base = 0xC0000200
    for low in range(1, 0x10000):
        cip = f"{(base >> 24) & 255}.{(base >> 16) & 255}.{low >> 8}.{low & 255}"
        pkt = udp4(cip, CPORT, VIP, VPORT, payload=b"abc")
        if pseudo_sum(bytes(pkt)) == 0xFFFF:
            break
    else:
        pytest.fail("no address with pseudo-header sum 0xFFFF")
    path = vnet.VnetPath(_engine(IPPROTO_UDP, 4))
    v, hdr, buf, n = _run_vnet(path, pkt, 0.0)
    assert v == V_FORWARD
    out = complete(buf[:path.engine.out_len], 20, 6)
    expect_rewritten(pkt, out, dst=RIP1, dport=RPORT)


@pytest.mark.parametrize("gso", [False, True], ids=["partial", "gso"])
@pytest.mark.parametrize("proto", [IPPROTO_TCP, IPPROTO_UDP], ids=["tcp", "udp"])
def test_ipv4_fast_path_keeps_the_partial_sum(proto, gso, monkeypatch):
    """IPv4 packets of an entry take the engine's fast path with the partial
    checksum as it is (fast4.py): no conversion (`offloaded` is not called),
    and the completed result is the full rewrite, both directions."""
    eng = _engine(proto, 4)
    path = vnet.VnetPath(eng)
    v, hdr, buf, n = _run_vnet(path, _mk(proto, 4, True), 0.0)   # new flow: _miss4
    assert v == V_FORWARD
    monkeypatch.setattr(path, "offloaded", lambda *a: pytest.fail("converted"))
    gt = (vnet.GSO_TCPV4 if proto == IPPROTO_TCP else vnet.GSO_UDP_L4) if gso else 0
    for inbound in (True, False, True):
        pkt = _mk(proto, 4, inbound, payload=b"p" * (3000 if gso else 40), flags="A")
        v, hdr, buf, n = _run_vnet(path, pkt, 1.0, gt, 1000 if gso else 0)
        assert v == V_FORWARD
        out = bytes(buf[:eng.out_len])
        if gso:
            segs = segment(out, hdr)
            assert len(segs) == 3 and all(checksums_ok(s) for s in segs)
        else:
            expect_rewritten(pkt, complete(out, 20, csum_field(out)), **_expect(4, inbound))
    assert (path.gso, path.partial) == ((3, 1) if gso else (0, 4))


def test_remembered_header_still_refuses_what_the_packet_makes_unsafe():
    """The last fast-path header is remembered; a later packet with the same
    header bytes that the fast path does not take (a fragment here) still
    goes through every check and is refused."""
    eng = _engine(IPPROTO_UDP, 4)
    path = vnet.VnetPath(eng)
    v, hdr, buf, n = _run_vnet(path, _mk(IPPROTO_UDP, 4, True), 0.0)
    assert v == V_FORWARD and path.fast[:3] == (bytes(hdr), 26, False)
    frag = IP(src=CIP, dst=VIP, flags="MF") / UDP(sport=CPORT, dport=VPORT) / (b"x" * 3)
    hdr2, buf2, n2 = to_partial(frag)
    assert bytes(hdr2) == bytes(hdr)
    assert path.process(hdr2, buf2, n2, 1.0) == V_DROP
    assert path.drops == {vnet.R_FRAG: 1}
    path.engine = eng                           # a new engine (e.g. a pcap tap) forgets it
    assert path.fast[0] == b""


def test_udp_partial_sum_zero_falls_back_to_the_conversion():
    """A partial sum of 0 looks like 'UDP without checksum' to the fast path:
    it declines, and the conversion path forwards the packet correctly."""
    eng = _engine(IPPROTO_UDP, 4)
    path = vnet.VnetPath(eng)
    pkt = _mk(IPPROTO_UDP, 4, True)
    hdr, buf, n = to_partial(pkt)
    struct.pack_into("!H", buf, 26, 0)
    raw = bytearray(buf[:n])
    assert eng.process(bytearray(raw), n, 0.0, 26) is None
    assert len(eng) == 0                       # declined without a trace
    assert path.process(hdr, buf, n, 0.0) == V_FORWARD
    assert path.partial == 1


# ------------------------------------------------------------- GSO

@pytest.mark.parametrize("af", [4, 6])
@pytest.mark.parametrize("proto", [IPPROTO_TCP, IPPROTO_UDP], ids=["tcp", "udp"])
def test_gso_super_packet_both_directions(proto, af):
    """A 60 KB super-packet: the rewritten one, completed whole, matches a full
    recomputation; segmented like the kernel does, every segment carries
    a valid checksum and the rewritten addresses/ports."""
    eng = _engine(proto, af)
    path = vnet.VnetPath(eng)
    gt = FAM[af][5] if proto == IPPROTO_TCP else vnet.GSO_UDP_L4
    mss = 1448 if proto == IPPROTO_TCP else 1400
    payload = bytes(range(256)) * 235 + b"tail"          # 60164 bytes
    if proto == IPPROTO_TCP:
        v, *_ = _run_vnet(path, _mk(proto, af, True, payload=b"", flags="S"), 0.0)
        assert v == V_FORWARD
        v, *_ = _run_vnet(path, _mk(proto, af, False, payload=b"", flags="SA"), 0.1)
        assert v == V_FORWARD
    for i, inbound in enumerate((True, False, True)):
        pkt = _mk(proto, af, inbound, payload=payload, flags="PA")
        v, hdr, buf, n = _run_vnet(path, pkt, 1.0 + i, gt, mss)
        assert v == V_FORWARD, eng.drops
        out = bytes(buf[:eng.out_len])
        l4 = l4_offset(out)
        off = csum_field(out)
        expect_rewritten(pkt, complete(out, l4, off), **_expect(af, inbound))
        segs = segment(out, hdr)
        assert len(segs) == -(-len(payload) // mss)
        data = b""
        for s in segs:
            assert checksums_ok(s), s.hex()
            p = IP(s) if af == 4 else IPv6(s)
            l4p = p[TCP] if proto == IPPROTO_TCP else p[UDP]
            if inbound:
                assert (p.dst, l4p.dport) == (FAM[af][2], RPORT)
            else:
                assert (p.src, l4p.sport) == (FAM[af][1], VPORT)
            data += bytes(l4p.payload)
        assert data == payload
    assert path.gso == 3 and not path.drops


# ------------------------------------------------------------- plain, replies

def test_plain_and_data_valid_headers_take_the_ordinary_path():
    eng = _engine(IPPROTO_TCP, 4)
    path = vnet.VnetPath(eng)
    for i, flags in enumerate((0, vnet.F_DATA_VALID)):
        pkt = tcp4(CIP, CPORT + i, VIP, VPORT, flags="S")
        buf = bytearray(bytes(pkt)) + bytearray(16)
        v = path.process(bytearray(vnet.pack_hdr(flags)), buf, len(bytes(pkt)), 0.0)
        assert v == V_FORWARD
        expect_rewritten(pkt, bytes(buf[:eng.out_len]), dst=RIP1, dport=RPORT)
    assert path.partial == path.gso == 0


@pytest.mark.parametrize("af", [4, 6])
def test_reply_built_by_the_engine_from_a_partial_packet(af):
    """A mid-stream NEEDS_CSUM segment without entry is answered with a RST
    whose checksums are complete (the driver sends it with ZERO_HDR)."""
    eng = _engine(IPPROTO_TCP, af)
    path = vnet.VnetPath(eng)
    pkt = _mk(IPPROTO_TCP, af, True, payload=b"data" * 100, flags="PA")
    v, hdr, buf, n = _run_vnet(path, pkt, 0.0, FAM[af][5], 100)
    assert v == V_REPLY and eng.replies["rst"] == 1
    assert checksums_ok(bytes(eng.out))
    assert vnet.ZERO_HDR == bytes(10)


# ------------------------------------------------------------- refusals

class Recorder:
    def __init__(self):
        self.calls = 0
        self.drops = {}

    def process(self, buf, n, now):
        self.calls += 1
        return V_FORWARD


def _hdr_for(pkt, **over):
    hdr, buf, n = to_partial(pkt)
    f = dict(zip(("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset"),
                 vnet.HDR.unpack(bytes(hdr)), strict=True))
    f.update(over)
    return bytearray(vnet.pack_hdr(**f)), buf, n


REFUSED = [
    ("ecn", lambda: tcp4(CIP, 1, VIP, 80), dict(gso_type=vnet.GSO_TCPV4 | vnet.GSO_ECN,
                                                 gso_size=100), vnet.R_GSO_TYPE),
    ("ufo", lambda: udp4(CIP, 1, VIP, 80), dict(gso_type=vnet.GSO_UDP, gso_size=100),
     vnet.R_GSO_TYPE),
    ("unknown_gso", lambda: tcp4(CIP, 1, VIP, 80), dict(gso_type=9, gso_size=100), vnet.R_GSO_TYPE),
    ("tcpv6_on_v4", lambda: tcp4(CIP, 1, VIP, 80), dict(gso_type=vnet.GSO_TCPV6, gso_size=100),
     vnet.R_GSO_TYPE),
    ("tcp_gso_on_udp", lambda: udp4(CIP, 1, VIP, 80), dict(gso_type=vnet.GSO_TCPV4, gso_size=9),
     vnet.R_GSO_TYPE),
    ("uso_on_tcp", lambda: tcp6(CIP6, 1, VIP6, 80), dict(gso_type=vnet.GSO_UDP_L4, gso_size=9),
     vnet.R_GSO_TYPE),
    ("gso_without_csum", lambda: tcp4(CIP, 1, VIP, 80),
     dict(flags=0, gso_type=vnet.GSO_TCPV4, gso_size=100), vnet.R_GSO_NO_CSUM),
    ("unknown_flag", lambda: tcp4(CIP, 1, VIP, 80), dict(flags=vnet.F_NEEDS_CSUM | 4),
     vnet.R_FLAGS),
    ("csum_start", lambda: tcp4(CIP, 1, VIP, 80), dict(csum_start=24), vnet.R_CSUM_START),
    ("csum_offset", lambda: tcp4(CIP, 1, VIP, 80), dict(csum_offset=6), vnet.R_CSUM_OFFSET),
    ("csum_offset_udp", lambda: udp6(CIP6, 1, VIP6, 80), dict(csum_offset=16), vnet.R_CSUM_OFFSET),
    ("ip_options", lambda: IP(src=CIP, dst=VIP, options=b"\x01\x01\x01\x00") / TCP(),
     dict(csum_start=20), vnet.R_CSUM_START),
    ("fragment", lambda: IP(src=CIP, dst=VIP, flags="MF") / UDP(sport=1, dport=80) / (b"x" * 16),
     {}, vnet.R_FRAG),
    ("v6_ext_header", lambda: IPv6(src=CIP6, dst=VIP6) / IPv6ExtHdrDestOpt() / TCP(),
     dict(csum_start=48, csum_offset=16), vnet.R_CSUM_PROTO),
]


@pytest.mark.parametrize("name,mk,over,reason", REFUSED, ids=[r[0] for r in REFUSED])
def test_unhandled_headers_are_dropped_and_counted(name, mk, over, reason):
    rec = Recorder()
    path = vnet.VnetPath(rec)
    hdr, buf, n = _hdr_for(mk(), **over)
    assert path.process(hdr, buf, n, 0.0) == V_DROP
    assert rec.calls == 0
    assert path.drops == {reason: 1} and path.last_reason == reason


def test_short_packet_dropped():
    path = vnet.VnetPath(Recorder())
    hdr = bytearray(vnet.pack_hdr(vnet.F_NEEDS_CSUM, 0, 0, 0, 20, 16))
    raw = bytearray(bytes(tcp4(CIP, 1, VIP, 80)))
    assert path.process(hdr, raw, 30, 0.0) == V_DROP
    assert path.drops == {vnet.R_SHORT: 1}


# ------------------------------------------------------------- property

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(af=st.sampled_from([4, 6]), proto=st.sampled_from([IPPROTO_TCP, IPPROTO_UDP]),
       cport=st.integers(1, 65535), vport=st.integers(1, 65535), rport=st.integers(1, 65535),
       c=st.integers(1, 2**32 - 2), payload=st.binary(max_size=300), inbound=st.booleans())
def test_partial_equals_full_property(af, proto, cport, vport, rport, c, payload, inbound):
    """For random addresses, ports and payloads: rewrite of the partial
    packet + completion == rewrite of the full-checksum packet."""
    import ipaddress
    if af == 4:
        cip = str(ipaddress.IPv4Address(c))
        if cip in (VIP, RIP1) or ipaddress.IPv4Address(c).is_multicast:
            return
    else:
        cip = str(ipaddress.IPv6Address((0x20010DB8000C << 80) | c))
    vip, rip = FAM[af][1], FAM[af][2]
    svc = make_service(proto, vip, vport, [(rip, rport, 1)])
    eng = engine_with(svc)
    ref = engine_with(make_service(proto, vip, vport, [(rip, rport, 1)]))
    path = vnet.VnetPath(eng)
    mk = FAM[af][3] if proto == IPPROTO_TCP else FAM[af][4]
    kw = {"flags": "S"} if proto == IPPROTO_TCP else {}
    first = mk(cip, cport, vip, vport, payload=payload, **kw)
    pkts = [first]
    if not inbound:
        pkts.append(mk(rip, rport, cip, cport, payload=payload, **({"flags": "SA"} if kw else {})))
    for i, pkt in enumerate(pkts):
        v, hdr, buf, n = _run_vnet(path, pkt, float(i))
        raw = bytes(pkt)
        rbuf = bytearray(raw) + bytearray(64)
        rv = ref.process(rbuf, len(raw), float(i))
        assert v == rv == V_FORWARD
        l4 = l4_offset(raw)
        got = complete(buf[:eng.out_len], l4, csum_field(raw))
        assert got == bytes(rbuf[:ref.out_len])
        assert checksums_ok(got)


# ------------------------------------------------------------- through the driver

def test_driver_sends_a_remembered_header_straight_to_the_fast_path():
    """TunDriver with a virtio-net header (tun.py): after a wake-up in which
    VnetPath gave a header to the engine's fast path (VnetPath.fast), packets
    with the same header bytes go there directly -- forwarded exactly as
    VnetPath.process forwards them, counted under 'partial' -- and one the
    fast path declines (a fragment with the same header bytes) still goes
    through VnetPath's checks and is refused."""
    import socket

    from userlb.dataplane.tun import TunDriver
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setblocking(False)
    b.settimeout(1.0)
    try:
        drv = TunDriver(a.fileno(), _engine(IPPROTO_UDP, 4), vnet=True, clock=lambda: 1.0)
        ref = vnet.VnetPath(_engine(IPPROTO_UDP, 4))
        pkts = [_mk(IPPROTO_UDP, 4, True, payload=b"p%d" % i) for i in range(4)]
        frag = IP(src=CIP, dst=VIP, flags="MF") / UDP(sport=CPORT, dport=VPORT) / (b"x" * 3)

        def wire(pkt):
            hdr, buf, n = to_partial(pkt)
            return bytes(hdr) + bytes(buf[:n])

        def expected(pkt):
            v, hdr, buf, n = _run_vnet(ref, pkt, 1.0)
            assert v == V_FORWARD
            return bytes(hdr) + bytes(buf[:ref.engine.out_len])

        b.send(wire(pkts[0]))                   # first wake-up: VnetPath.process
        drv.on_readable()
        assert b.recv(65536) == expected(pkts[0])
        assert drv.vnet.fast[0] == wire(pkts[0])[:vnet.VNET_HDR_LEN]
        assert wire(frag)[:vnet.VNET_HDR_LEN] == drv.vnet.fast[0]
        for p in (pkts[1], frag, pkts[2], pkts[3]):  # second: the remembered header
            b.send(wire(p))
        drv.on_readable()
        for p in (pkts[1], pkts[2], pkts[3]):
            assert b.recv(65536) == expected(p)
        assert drv.vnet.partial == 4 and drv.vnet.drops == {vnet.R_FRAG: 1}
        assert (drv.rx, drv.tx, drv.drops) == (5, 4, 1)
    finally:
        a.close()
        b.close()
