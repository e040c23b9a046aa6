"""Shared helpers of tests/dataplane/test_engine*.py and friends (no tests here):
building services the way the configuration layer does, scapy packet
builders, and field-by-field comparison of output packets with checksums
verified by scapy."""
import ipaddress

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror, UDPerror  # noqa: F401
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6PacketTooBig, IPv6

from userlb.clock import ManualClock
from userlb.dataplane.engine import Engine
from userlb.model import Service
from userlb.sched import base

CIP = "192.0.2.10"
VIP = "10.0.0.100"
RIP1 = "10.1.0.1"
RIP2 = "10.1.0.2"
CIP6 = "2001:db8:c::10"
VIP6 = "2001:db8::100"
RIP6_1 = "2001:db8:1::1"
RIP6_2 = "2001:db8:1::2"


def ip(text):
    a = ipaddress.ip_address(text)
    return int(a) if a.version == 4 else a.packed


def make_service(proto, vip, vport, dests, sched="rr", clock=None, flags=0, options=None):
    """A Service with scheduler `sched`; dests = [(addr_text, port, weight)]
    added in that order (each at the head of svc.dests, as -a does)."""
    svc = Service(proto, ip(vip), vport, sched_name=sched, flags=flags, options=options)
    svc.sched = base.create(sched, svc, clock or ManualClock(0))
    for a, p, w in dests:
        add_dest(svc, a, p, w)
    return svc


def add_dest(svc, addr, port, weight=1, **kw):
    """ipvsadm -a (model.Service.add_dest: at the head of svc.dests)."""
    return svc.add_dest(ip(addr), port, weight, **kw)


def del_dest(svc, d):
    """ipvsadm -d (model.Service.del_dest)."""
    svc.del_dest(d)


def engine_with(*services, **kw):
    eng = Engine(**kw)
    eng.set_services(services)
    return eng


def run(eng, pkt, now=0.0, extra=64):
    """Feed a scapy packet (in a larger reused-style buffer); returns
    (verdict, output bytes or None)."""
    raw = bytes(pkt)
    buf = bytearray(raw) + bytearray(extra)
    v = eng.process(buf, len(raw), now)
    if v == 1:
        return v, bytes(buf[:eng.out_len])
    if v in (2, 3):
        return v, bytes(eng.out)
    return v, None


def tcp4(src, sport, dst, dport, flags="S", payload=b"", seq=1000, ack=0, **ip_kw):
    return IP(src=src, dst=dst, **ip_kw) / TCP(sport=sport, dport=dport, flags=flags,
                                               seq=seq, ack=ack) / payload


def udp4(src, sport, dst, dport, payload=b"hello", **ip_kw):
    return IP(src=src, dst=dst, **ip_kw) / UDP(sport=sport, dport=dport) / payload


def tcp6(src, sport, dst, dport, flags="S", payload=b"", seq=1000, ack=0):
    return IPv6(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags,
                                        seq=seq, ack=ack) / payload


def udp6(src, sport, dst, dport, payload=b"hello"):
    return IPv6(src=src, dst=dst) / UDP(sport=sport, dport=dport) / payload


def recompute(raw):
    """The packet with every checksum recomputed by scapy (IPv4 or IPv6)."""
    pkt = IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)
    for layer in (IP, TCP, UDP, ICMP, IPerror, TCPerror, UDPerror):
        cur = pkt
        while cur is not None and cur.haslayer(layer):
            lay = cur.getlayer(layer)
            if hasattr(lay, "chksum") and layer not in (IPerror, TCPerror, UDPerror):
                del lay.chksum
            break
    if pkt.haslayer(ICMPv6DestUnreach):
        del pkt[ICMPv6DestUnreach].cksum
    if pkt.haslayer(ICMPv6PacketTooBig):
        del pkt[ICMPv6PacketTooBig].cksum
    return bytes(pkt.__class__(bytes(pkt)))


def checksums_ok(raw):
    """True if scapy recomputes the same checksums: outer IPv4 header, TCP /
    UDP / ICMP / ICMPv6 error, and (scapy treats a quoted TCP header as TCP)
    the quoted TCP checksum -- use it on packets that quote a whole packet;
    compare partial quotes byte by byte instead."""
    return recompute(raw) == raw


def expect_rewritten(orig, out, **changes):
    """`out` equals scapy packet `orig` with fields changed (src, dst, sport,
    dport), every checksum valid; compared field by field."""
    exp = orig.copy()
    l3 = exp[IP] if exp.haslayer(IP) else exp[IPv6]
    l4 = exp[TCP] if exp.haslayer(TCP) else exp[UDP]
    for k, v in changes.items():
        if k in ("src", "dst"):
            setattr(l3, k, v)
        else:
            setattr(l4, k, v)
    if exp.haslayer(IP):
        del exp[IP].chksum
    del l4.chksum
    exp_raw = bytes(exp)
    got = IP(out) if out[0] >> 4 == 4 else IPv6(out)
    want = IP(exp_raw) if exp_raw[0] >> 4 == 4 else IPv6(exp_raw)
    for lay in (IP, IPv6, TCP, UDP):
        if want.haslayer(lay):
            assert got.haslayer(lay), lay
            for f in want[lay].fields_desc:
                if f.name == "options":
                    continue
                assert getattr(got[lay], f.name) == getattr(want[lay], f.name), \
                    (lay.__name__, f.name, getattr(got[lay], f.name), getattr(want[lay], f.name))
    assert out == exp_raw
    assert checksums_ok(out)
