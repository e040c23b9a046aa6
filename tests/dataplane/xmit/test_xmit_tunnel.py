"""Tunnelling (-i) through the engine: the outer packet of each --tun-type
decoded by scapy (addresses, protocol, DF, TTL, GUE/GRE headers, every
checksum), PMTU answers (docs/forwarding.md), the missing-path drop,
partial checksums completed behind the TUN offloads, IPv6 on either side."""
import pytest
from scapy.layers.inet import GRE, ICMP, IP, TCP, UDP
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6

from tests.helpers.engine import CIP, CIP6, RIP1, RIP6_1, VIP, VIP6, add_dest, ip
from userlb.clock import ManualClock
from userlb.dataplane import tcpstate as T
from userlb.dataplane.csum import checksum
from userlb.dataplane.engine import Engine
from userlb.dataplane.verdict import V_DROP, V_REPLY, V_XMIT_IP
from userlb.dataplane.vnet import F_NEEDS_CSUM, GSO_TCPV4, VnetPath, pack_hdr
from userlb.model import FWD_TUNNEL, Service
from userlb.sched import base

DSRC = "10.9.0.1"        # the director's address towards the real server
DSRC6 = "2001:db8:9::1"


def tun_engine(tun=(0, 0, 0), vip=VIP, rip=RIP1, mtu=1500, dec_ttl=False, proto=6):
    svc = Service(proto, ip(vip), 80, sched_name="rr")
    svc.sched = base.create("rr", svc, ManualClock(0))
    d = add_dest(svc, rip, 80, 1, fwd=FWD_TUNNEL)
    d.tun = tun
    eng = Engine(dec_ttl=dec_ttl)
    eng.set_services([svc])
    src = DSRC if ":" not in rip else DSRC6
    eng.tun_paths[ip(rip)] = (ip(src), mtu)
    return eng, svc


def feed(eng, pkt, now=0.0):
    raw = bytes(pkt)
    buf = bytearray(raw) + bytearray(32)
    return eng.process(buf, len(raw), now), raw


def assert_l4_ok(inner):
    fresh = inner.__class__(bytes(inner))
    if IP in fresh:
        del fresh[IP].chksum
    del fresh[TCP].chksum
    fresh = fresh.__class__(bytes(fresh))
    assert fresh[TCP].chksum == inner[TCP].chksum
    if IP in inner:
        assert fresh[IP].chksum == inner[IP].chksum


@pytest.mark.parametrize("dec_ttl", [False, True])
def test_ipip(dec_ttl):
    eng, svc = tun_engine(dec_ttl=dec_ttl)
    pkt = IP(src=CIP, dst=VIP, flags="DF", ttl=50, tos=0x28) / TCP(sport=40000, dport=80,
                                                                  flags="S")
    v, raw = feed(eng, pkt)
    assert v == V_XMIT_IP
    o = IP(eng.out)
    assert (o.src, o.dst, o.proto, o.ttl, o.tos) == (DSRC, RIP1, 4, 49 if dec_ttl else 50, 0x28)
    assert o.flags.DF and o.len == len(eng.out) == 20 + len(raw)
    c = IP(bytes(o))
    del c.chksum
    assert IP(bytes(c)).chksum == o.chksum
    inner = IP(bytes(o.payload))
    if not dec_ttl:
        assert bytes(o.payload) == raw                  # the client's packet, unchanged
    assert inner.dst == VIP and inner[TCP].dport == 80
    assert_l4_ok(inner)
    d = svc.dests[0]
    assert d.stats.inpkts == 1 and d.stats.conns == 1
    assert eng.entry_objects()[0].state == T.SYN_RECV
    # INPUT-ONLY: the client's FIN on ESTABLISHED gives FIN_WAIT
    feed(eng, IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="A"))
    feed(eng, IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="FA"))
    assert eng.entry_objects()[0].state == T.FIN_WAIT


@pytest.mark.parametrize("csum", [0, 1, 2])
def test_gue(csum):
    eng, _ = tun_engine((1, 6080, csum))
    v, raw = feed(eng, IP(src=CIP, dst=VIP, flags="DF") / TCP(sport=40000, dport=80) / b"hi")
    assert v == V_XMIT_IP
    o = IP(eng.out)
    assert o.proto == 17 and o.src == DSRC and o.dst == RIP1
    u = o[UDP]
    assert u.dport == 6080 and 32768 <= u.sport < 61000 and u.len == 8 + 4 + len(raw)
    body = bytes(u.payload)
    assert body[:4] == b"\x00\x04\x00\x00" and body[4:] == raw
    if csum == 1:
        c = IP(bytes(o))
        del c[UDP].chksum
        assert IP(bytes(c))[UDP].chksum == u.chksum != 0
    else:                  # nocsum; remcsum only differs for partial checksums
        assert u.chksum == 0
    # one flow, one source port
    feed(eng, IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="A"))
    assert IP(eng.out)[UDP].sport == u.sport


@pytest.mark.parametrize("csum", [0, 1])
def test_gre(csum):
    eng, _ = tun_engine((2, 0, csum))
    v, raw = feed(eng, IP(src=CIP, dst=VIP, flags="DF") / TCP(sport=40000, dport=80))
    assert v == V_XMIT_IP
    o = IP(eng.out)
    assert o.proto == 47
    g = bytes(o.payload)
    assert GRE(g).proto == 0x0800
    if csum:
        assert g[:2] == b"\x80\x00" and checksum(g) == 0 and g[8:] == raw
    else:
        assert g[:2] == b"\x00\x00" and g[4:] == raw


def test_ipv6_inside_ipv6_and_ipv4_inside_ipv6():
    eng, _ = tun_engine(vip=VIP6, rip=RIP6_1)
    pkt = IPv6(src=CIP6, dst=VIP6, hlim=33, tc=0x28) / TCP(sport=40000, dport=80)
    v, raw = feed(eng, pkt)
    assert v == V_XMIT_IP
    o = IPv6(eng.out)
    assert (o.src, o.dst, o.nh, o.hlim, o.tc) == (DSRC6, RIP6_1, 41, 33, 0x28)
    assert bytes(o.payload) == raw
    # an IPv4 service with an IPv6 real server (-i allows the other family)
    eng, _ = tun_engine(rip=RIP6_1, tun=(1, 6080, 0))
    v, raw = feed(eng, IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80))
    o = IPv6(eng.out)
    assert v == V_XMIT_IP and o.nh == 17 and bytes(o[UDP].payload)[4:] == raw
    c = IPv6(bytes(o))
    del c[UDP].chksum
    assert IPv6(bytes(c))[UDP].chksum == o[UDP].chksum != 0    # IPv6 needs it


def test_pmtu_ipv4_df_and_not_df():
    eng, svc = tun_engine((1, 6080, 0), mtu=1000)    # overhead 20 + 8 + 4 = 32
    big = IP(src=CIP, dst=VIP, flags="DF") / TCP(sport=40000, dport=80) / (b"x" * 960)
    v, raw = feed(eng, big)
    assert v == V_REPLY and eng.replies["icmp_frag_needed"] == 1
    r = IP(eng.out)
    assert r.src == VIP and r.dst == CIP and r[ICMP].type == 3 and r[ICMP].code == 4
    assert r[ICMP].nexthopmtu == 1000 - 32
    # fits exactly
    ok = IP(src=CIP, dst=VIP, flags="DF") / TCP(sport=40001, dport=80) / (b"x" * (968 - 40))
    assert feed(eng, ok)[0] == V_XMIT_IP and len(eng.out) == 1000
    # without DF: out without DF, the kernel fragments the outer packet
    nodf = IP(src=CIP, dst=VIP) / TCP(sport=40002, dport=80) / (b"x" * 1200)
    assert feed(eng, nodf)[0] == V_XMIT_IP and not IP(eng.out).flags.DF


def test_pmtu_ipv6():
    eng, _ = tun_engine(vip=VIP6, rip=RIP6_1, mtu=1400)
    big = IPv6(src=CIP6, dst=VIP6) / TCP(sport=40000, dport=80) / (b"x" * 1340)
    v, _ = feed(eng, big)
    assert v == V_REPLY
    r = IPv6(eng.out)
    assert r.src == VIP6 and r[ICMPv6PacketTooBig].mtu == 1400 - 40


def test_no_path_yet():
    eng, _ = tun_engine()
    eng.tun_paths.clear()
    asked = []
    eng.path_miss = asked.append
    v, _ = feed(eng, IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80))
    assert v == V_DROP and eng.last_reason == "tunnel_no_path" and asked == [ip(RIP1)]


def test_partial_checksum_completed_behind_offloads():
    """With the TUN offloads a packet may carry only the pseudo-header sum
    (NEEDS_CSUM): the tunnel completes the checksum before wrapping it (the
    real server gets no offload hint)."""
    eng, _ = tun_engine((1, 6080, 1))
    vp = VnetPath(eng)
    full = IP(src=CIP, dst=VIP, flags="DF") / TCP(sport=40000, dport=80, flags="S") / b"data!"
    raw = bytearray(bytes(full))
    # the partial form: the field holds the folded pseudo-header sum
    from userlb.dataplane.csum import pseudo_sum4
    p = pseudo_sum4(ip(CIP), ip(VIP), 6, len(raw) - 20)
    raw[36:38] = p.to_bytes(2, "big")
    hdr = pack_hdr(F_NEEDS_CSUM, 0, 0, 0, 20, 16)
    buf = raw + bytearray(16)
    v = vp.process(hdr, buf, len(raw), 0.0)
    assert v == V_XMIT_IP and eng.partial_csum == 0
    inner = IP(bytes(IP(eng.out)[UDP].payload)[4:])
    assert inner[TCP].chksum == full.__class__(bytes(full))[TCP].chksum
    c = IP(eng.out)
    del c[UDP].chksum
    assert IP(bytes(c))[UDP].chksum == IP(eng.out)[UDP].chksum


@pytest.mark.parametrize("gso,proto", [(GSO_TCPV4, 6), (5, 17)])
def test_gso_super_packet_is_cut_then_wrapped(gso, proto):
    """A GSO super-packet (TSO / USO behind the TUN offloads) becomes the
    segments the kernel would have sent, each wrapped: sequence numbers,
    lengths, IP ids, flags (PSH/FIN on the last only) and every checksum."""
    from userlb.dataplane.csum import pseudo_sum4
    eng, svc = tun_engine((1, 6080, 1), proto=proto)
    vp = VnetPath(eng)
    if proto == 6:
        feed(eng, IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="S", seq=4999))
    data = bytes(range(256)) * 10                 # 2560 bytes: 1000 + 1000 + 560
    if proto == 6:
        l4h = TCP(sport=40000, dport=80, flags="FPA", seq=5000)
    else:
        l4h = UDP(sport=40000, dport=80)
    full = IP(src=CIP, dst=VIP, flags="DF", id=7) / l4h / data
    raw = bytearray(bytes(full))
    pos = 36 if proto == 6 else 26
    p = pseudo_sum4(ip(CIP), ip(VIP), proto, len(raw) - 20)
    raw[pos:pos + 2] = p.to_bytes(2, "big")
    hl = 40 if proto == 6 else 28
    hdr = pack_hdr(F_NEEDS_CSUM, gso, hl, 1000, 20, pos - 20)
    buf = raw + bytearray(16)
    assert vp.process(hdr, buf, len(raw), 0.0) == V_XMIT_IP and eng.partial_csum == 0
    assert type(eng.out) is list and len(eng.out) == 3
    got = b""
    for i, o in enumerate(eng.out):
        outer = IP(o)
        assert outer.flags.DF and outer[UDP].dport == 6080
        inner = IP(bytes(outer[UDP].payload)[4:])
        assert inner.id == 7 + i and inner.len == len(bytes(outer[UDP].payload)) - 4
        c = IP(bytes(inner))
        del c.chksum
        del c.payload.chksum
        c = IP(bytes(c))
        assert c.chksum == inner.chksum and c.payload.chksum == inner.payload.chksum
        if proto == 6:
            assert inner[TCP].seq == 5000 + 1000 * i
            assert int(inner[TCP].flags) == (0x19 if i == 2 else 0x10)
        got += bytes(inner.payload.payload)
    assert got == data
    # one packet as the engine counts it
    assert svc.dests[0].stats.inpkts == (2 if proto == 6 else 1)


def test_icmp_error_from_client_side_is_tunnelled():
    from scapy.layers.inet import IPerror, TCPerror
    eng, _ = tun_engine()
    feed(eng, IP(src=CIP, dst=VIP) / TCP(sport=40000, dport=80, flags="S"))
    err = (IP(src="192.0.2.1", dst=VIP) / ICMP(type=3, code=4, nexthopmtu=1400)
           / IPerror(src=VIP, dst=CIP) / TCPerror(sport=80, dport=40000))
    v, raw = feed(eng, err)
    assert v == V_XMIT_IP and bytes(IP(eng.out).payload) == raw
