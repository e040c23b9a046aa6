"""Engine behaviour beyond the TCP table: UDP, replies with and without
entries, no destination, not-for-us, IPv6, the entry limit, destination
removal and overload, set_services, statistics, entries() listing."""
import pytest
from scapy.layers.inet import ICMP, IP, IPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, ICMPv6EchoRequest, IPerror6, IPv6

from helpers.engine import (
    CIP,
    CIP6,
    RIP1,
    RIP2,
    RIP6_1,
    RIP6_2,
    VIP,
    VIP6,
    add_dest,
    checksums_ok,
    del_dest,
    engine_with,
    expect_rewritten,
    ip,
    make_service,
    run,
    tcp4,
    tcp6,
    udp4,
    udp6,
)
from userlb.dataplane.engine import V_DROP, V_FORWARD, V_REPLY, Engine
from userlb.model import IPPROTO_TCP, IPPROTO_UDP

# ------------------------------------------------------------------ UDP

FAM = {4: (CIP, VIP, RIP1, RIP2, udp4, tcp4), 6: (CIP6, VIP6, RIP6_1, RIP6_2, udp6, tcp6)}


@pytest.mark.parametrize("af", [4, 6])
def test_udp_flow_both_directions(af):
    cip, vip, r1, _, mku, _ = FAM[af]
    svc = make_service(IPPROTO_UDP, vip, 53, [(r1, 5353, 1)])
    eng = engine_with(svc)
    for i in range(3):
        p = mku(cip, 4000, vip, 53, payload=b"q%d" % i)
        v, out = run(eng, p, float(i))
        assert v == V_FORWARD
        expect_rewritten(p, out, dst=r1, dport=5353)
        rp = mku(r1, 5353, cip, 4000, payload=b"answer")
        v, out = run(eng, rp, i + 0.5)
        assert v == V_FORWARD
        expect_rewritten(rp, out, src=vip, sport=53)
    (row,) = eng.entries()
    assert row.state == "UDP" and row.expires == 2.5 + 300
    assert svc.stats.conns == 1 and svc.stats.inpkts == 3 and svc.stats.outpkts == 3
    d = svc.dests[0]
    assert d.inactconns == 1 and d.activeconns == 0
    assert eng.stats.as_tuple() == svc.stats.as_tuple() == d.stats.as_tuple()


@pytest.mark.parametrize("af", [4, 6])
def test_udp_timeout_and_set(af):
    cip, vip, r1, _, mku, _ = FAM[af]
    svc = make_service(IPPROTO_UDP, vip, 53, [(r1, 53, 1)])
    eng = engine_with(svc)
    run(eng, mku(cip, 4000, vip, 53), 0.0)
    assert eng.entries(now=299.9) and not eng.entries(now=300.0)
    eng.set_timeouts(udp=10)
    run(eng, mku(cip, 4000, vip, 53), 1.0)
    assert eng.entries()[0].expires == 11.0
    assert not eng.entries(now=11.0)
    eng.expire(11.0 + 64)       # a shortened timeout is swept within MAX_HOP
    assert len(eng) == 0 and svc.dests[0].inactconns == 0
    # every datagram creates an entry: the next one is a new connection
    run(eng, mku(cip, 4000, vip, 53), 80.0)
    assert svc.stats.conns == 2


def test_udp_zero_checksum_kept():
    """IPv4 UDP without checksum: stays 0 (nat.py's rule), header checksum right."""
    from userlb.dataplane.csum import ipv4_header_ok
    svc = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 53, 1)])
    eng = engine_with(svc)
    raw = bytearray(bytes(udp4(CIP, 4000, VIP, 53)))
    raw[26:28] = b"\0\0"
    for t in (0.0, 1.0):          # new entry, then existing entry
        buf = bytearray(raw) + bytearray(8)
        assert eng.process(buf, len(raw), t) == V_FORWARD
        out = bytes(buf[:eng.out_len])
        assert IP(out).dst == RIP1 and out[26:28] == b"\0\0"
        assert ipv4_header_ok(out)
        assert out[:16] == bytes(raw[:10]) + out[10:12] + bytes(raw[12:16])
        assert out[28:] == bytes(raw[28:])


# ------------------------------------------------------------------ replies

@pytest.mark.parametrize("af", [4, 6])
def test_reply_without_entry_translated_when_unique(af):
    cip, vip, r1, _, mku, mkt = FAM[af]
    svc = make_service(IPPROTO_TCP, vip, 80, [(r1, 8080, 1)])
    eng = engine_with(svc)
    p = mkt(r1, 8080, cip, 40000, "A", payload=b"late reply")
    v, out = run(eng, p, 1.0)
    assert v == V_FORWARD
    expect_rewritten(p, out, src=vip, sport=80)
    assert eng.entries() == [] and svc.stats.outpkts == 1 and svc.stats.conns == 0


def test_reply_without_entry_ambiguous_dropped():
    s1 = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    s2 = make_service(IPPROTO_TCP, "10.0.0.101", 80, [(RIP1, 8080, 1)])
    eng = engine_with(s1, s2)
    v, _ = run(eng, tcp4(RIP1, 8080, CIP, 40000, "A"), 1.0)
    assert v == V_DROP and eng.last_reason == "reply_ambiguous"
    # with an entry the reply is matched to it
    run(eng, tcp4(CIP, 40000, "10.0.0.101", 80, "S"), 1.0)
    p = tcp4(RIP1, 8080, CIP, 40000, "SA")
    v, out = run(eng, p, 1.1)
    assert v == V_FORWARD
    expect_rewritten(p, out, src="10.0.0.101", sport=80)


def test_reply_from_unknown_port_not_for_us():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    v, _ = run(eng, tcp4(RIP1, 9999, CIP, 40000, "A"), 1.0)
    assert v == V_DROP and eng.last_reason == "not_for_us"
    v, _ = run(eng, udp4(RIP1, 8080, CIP, 40000), 1.0)       # UDP: no UDP service
    assert v == V_DROP and eng.last_reason == "not_for_us"


@pytest.mark.parametrize("pkt,reason", [
    (tcp4("192.0.2.1", 1, "192.0.2.2", 80, "S"), "not_for_us"),
    (udp4("192.0.2.1", 1, "192.0.2.2", 53), "not_for_us"),
    (tcp6("2001:db8::5", 1, "2001:db8::6", 80, "S"), "not_for_us"),
    (udp4(CIP, 1, VIP, 54), "no_service"),
    (IP(src=CIP, dst=VIP) / ICMP(type=8), "icmp_ignored"),
    (IPv6(src=CIP6, dst=VIP6) / ICMPv6EchoRequest(), "icmp_ignored"),
])
def test_drops_with_reason(pkt, reason):
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    svc6 = make_service(IPPROTO_TCP, VIP6, 80, [(RIP6_1, 8080, 1)])
    eng = engine_with(svc, svc6)
    v, out = run(eng, pkt, 1.0)
    assert v == V_DROP and eng.last_reason == reason and eng.drops[reason] == 1


def test_tcp_to_vip_port_without_service_gets_rst():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    v, out = run(eng, tcp4(CIP, 40000, VIP, 443, "S"), 1.0)
    assert v == V_REPLY and IP(out)[1].flags == "RA"


# ------------------------------------------------------------------ no destination

@pytest.mark.parametrize("af", [4, 6])
@pytest.mark.parametrize("proto", [IPPROTO_TCP, IPPROTO_UDP])
def test_no_destination_icmp_unreachable(af, proto):
    cip, vip, r1, _, mku, mkt = FAM[af]
    svc = make_service(proto, vip, 80, [(r1, 8080, 0)])      # weight 0: unavailable
    eng = engine_with(svc)
    p = mkt(cip, 40000, vip, 80, "S") if proto == IPPROTO_TCP else mku(cip, 40000, vip, 80)
    v, out = run(eng, p, 1.0)
    assert v == V_REPLY and eng.last_reason == "no_dest"
    assert eng.entries() == []
    if af == 4:
        q = IP(out)
        assert (q.src, q.dst) == (vip, cip)
        assert q[ICMP].type == 3 and q[ICMP].code == 3
        assert q[IPerror].dst == vip and q[IPerror].src == cip
        assert bytes(q[IPerror])[:20] == bytes(p)[:20]
    else:
        q = IPv6(out)
        assert (q.src, q.dst) == (vip, cip)
        assert q[ICMPv6DestUnreach].code == 4
        assert bytes(q[IPerror6])[:40] == bytes(p)[:40]
    assert checksums_ok(out)


# ------------------------------------------------------------------ entry limit

def test_entry_limit():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc, max_entries=3)
    for p in range(3):
        assert run(eng, tcp4(CIP, 40000 + p, VIP, 80, "S"), 1.0)[0] == V_FORWARD
    v, _ = run(eng, tcp4(CIP, 40003, VIP, 80, "S"), 1.0)
    assert v == V_DROP and eng.last_reason == "conn_limit" and eng.drops["conn_limit"] == 1
    v, _ = run(eng, tcp6(CIP6, 1, VIP6, 80, "S"), 1.0)
    assert v == V_DROP
    # established flows keep working, in both directions
    for p in range(3):
        assert run(eng, tcp4(CIP, 40000 + p, VIP, 80, "A"), 2.0)[0] == V_FORWARD
        assert run(eng, tcp4(RIP1, 8080, CIP, 40000 + p, "A"), 2.0)[0] == V_FORWARD
    # once one expires, a new one fits
    run(eng, tcp4(CIP, 40000, VIP, 80, "R"), 3.0)               # CLOSE, 10 s
    eng.expire(13.0)
    assert len(eng) == 2
    assert run(eng, tcp4(CIP, 40003, VIP, 80, "S"), 13.0)[0] == V_FORWARD
    assert svc.stats.conns == 4


def test_entry_limit_udp():
    svc = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 53, 1)])
    eng = engine_with(svc, max_entries=1)
    assert run(eng, udp4(CIP, 1, VIP, 53), 0.0)[0] == V_FORWARD
    assert run(eng, udp4(CIP, 2, VIP, 53), 0.0)[0] == V_DROP
    assert eng.last_reason == "conn_limit"
    assert run(eng, udp4(CIP, 1, VIP, 53), 0.0)[0] == V_FORWARD


# ------------------------------------------------------------------ destinations

def test_removed_destination_drops_packets_of_its_entries():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1), (RIP2, 8080, 1)])
    eng = engine_with(svc)
    run(eng, tcp4(CIP, 40000, VIP, 80, "S"), 0.0)
    (e,) = eng.entry_objects()
    d = e.xl.dest
    del_dest(svc, d)
    eng.set_services([svc])
    v, _ = run(eng, tcp4(CIP, 40000, VIP, 80, "A"), 1.0)
    assert v == V_DROP and eng.last_reason == "dest_unavailable"
    rip = RIP1 if d.addr == ip(RIP1) else RIP2
    v, _ = run(eng, tcp4(rip, 8080, CIP, 40000, "A"), 1.0)
    assert v == V_DROP
    # the entry is still listed until it expires (the kernel's trash behaviour)
    assert len(eng) == 1
    eng.expire(100.0)
    assert len(eng) == 0 and d.activeconns == 0 and d.inactconns == 0


def test_overload_threshold():
    svc = make_service(IPPROTO_TCP, VIP, 80, [])
    d1 = add_dest(svc, RIP1, 8080, 1, u_threshold=2)
    eng = engine_with(svc)
    assert run(eng, tcp4(CIP, 1, VIP, 80, "S"), 0.0)[0] == V_FORWARD
    assert run(eng, tcp4(CIP, 2, VIP, 80, "S"), 0.0)[0] == V_FORWARD
    assert d1.overloaded
    v, out = run(eng, tcp4(CIP, 3, VIP, 80, "S"), 0.0)
    assert v == V_REPLY and IP(out)[ICMP].type == 3           # no destination
    run(eng, tcp4(CIP, 1, VIP, 80, "A"), 1.0)                  # ESTABLISHED
    run(eng, tcp4(CIP, 1, VIP, 80, "R"), 1.0)                  # CLOSE, 10 s
    eng.expire(11.0)
    assert d1.activeconns + d1.inactconns == 1
    assert not d1.overloaded                                   # 1*4 < 2*3
    assert run(eng, tcp4(CIP, 3, VIP, 80, "S"), 12.0)[0] == V_FORWARD


def test_set_services_never_flushes_entries():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    run(eng, tcp4(CIP, 40000, VIP, 80, "S"), 0.0)
    eng.set_services([])
    assert len(eng) == 1
    p = tcp4(CIP, 40000, VIP, 80, "A")
    v, out = run(eng, p, 1.0)
    assert v == V_FORWARD                      # its entry still exists
    expect_rewritten(p, out, dst=RIP1, dport=8080)
    v, _ = run(eng, tcp4(CIP, 40001, VIP, 80, "S"), 1.0)
    assert v == V_DROP and eng.last_reason == "not_for_us"


def test_dest_port_zero_uses_vport():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 0, 1)])
    eng = engine_with(svc)
    p = tcp4(CIP, 40000, VIP, 80, "S")
    v, out = run(eng, p, 0.0)
    expect_rewritten(p, out, dst=RIP1, dport=80)
    assert eng.entries()[0].dport == 80


# ------------------------------------------------------------------ stats, listing

def test_stats_per_service_dest_global():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1), (RIP2, 8080, 1)])
    eng = engine_with(svc)
    sizes_in = 0
    for p in range(4):
        pkt = tcp4(CIP, 40000 + p, VIP, 80, "S", payload=b"x" * p)
        sizes_in += len(bytes(pkt))
        run(eng, pkt, 0.0)
    out_sz = 0
    for e in eng.entry_objects():
        _, ca, cp, _, _ = e.flow()
        pkt = tcp4(RIP1 if e.xl.daddr == ip(RIP1) else RIP2, 8080, CIP, cp, "SA")
        out_sz += len(bytes(pkt))
        assert run(eng, pkt, 0.1)[0] == V_FORWARD
    assert svc.stats.as_tuple() == (4, 4, 4, sizes_in, out_sz)
    assert eng.stats.as_tuple() == svc.stats.as_tuple()
    per_dest = [d.stats.as_tuple() for d in svc.dests]
    assert [x[0] for x in per_dest] == [2, 2]
    assert tuple(map(sum, zip(*per_dest, strict=True))) == svc.stats.as_tuple()
    assert sum(d.activeconns for d in svc.dests) == 4


def test_entries_listing_fields():
    svc = make_service(IPPROTO_TCP, VIP6, 443, [(RIP6_1, 8443, 1)])
    eng = engine_with(svc)
    run(eng, tcp6(CIP6, 50000, VIP6, 443, "S"), 7.0)
    (row,) = eng.entries()
    assert row == (IPPROTO_TCP, ip(CIP6), 50000, ip(VIP6), 443, ip(RIP6_1), 8443,
                   "SYN_RECV", 67.0)


def test_engine_contract_names():
    eng = Engine()
    assert eng.sloppy_tcp is False and eng.rst_on_no_entry is True
    assert eng.max_entries == 1_000_000
    eng.set_timeouts(tcp=900, tcpfin=120, udp=300)
    assert eng.timeouts() == (900, 120, 300)
    assert list(eng.entries()) == []
    assert eng.expire(0.0) == 0


# ------------------------------------------------------------------ TTL option

def test_dec_ttl_option():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc, dec_ttl=True)
    p = tcp4(CIP, 40000, VIP, 80, "S", ttl=10)
    v, out = run(eng, p, 0.0)
    assert v == V_FORWARD
    q = p.copy()
    q[IP].ttl = 9
    expect_rewritten(q, out, dst=RIP1, dport=8080)
    r = tcp4(RIP1, 8080, CIP, 40000, "SA", ttl=5)
    v, out = run(eng, r, 0.1)
    q = r.copy()
    q[IP].ttl = 4
    expect_rewritten(q, out, src=VIP, sport=80)
    v, _ = run(eng, tcp4(CIP, 40000, VIP, 80, "A", ttl=1), 0.2)
    assert v == V_DROP and eng.last_reason == "ttl_expired"
    # default: the TTL is left to the kernel's forwarding
    eng2 = engine_with(make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)]))
    v, out = run(eng2, tcp4(CIP, 40000, VIP, 80, "S", ttl=10), 0.0)
    assert IP(out).ttl == 10


def test_entry_counts_per_service():
    s1 = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    s2 = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 53, 1)])
    eng = engine_with(s1, s2)
    for p in range(3):
        run(eng, tcp4(CIP, 1000 + p, VIP, 80, "S"), 0.0)
    run(eng, udp4(CIP, 5, VIP, 53), 0.0)
    assert eng.entry_counts() == {s1.key: 3, s2.key: 1}
