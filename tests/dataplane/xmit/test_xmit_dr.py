"""Direct routing (-g) through the engine: the verdict V_XMIT_L2 with the
packet unchanged, INPUT-ONLY entries (docs/ipvs.md §4.2), counters, the
fast path agreeing with the general path, ICMP errors, mixed methods."""
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror

from tests.helpers.engine import CIP, RIP1, RIP2, VIP, add_dest, engine_with, ip, tcp4, udp4
from userlb.clock import ManualClock
from userlb.dataplane import tcpstate as T
from userlb.dataplane.engine import Engine
from userlb.dataplane.verdict import V_FORWARD, V_XMIT_L2, V_XMIT_L2_OUT
from userlb.model import FWD_DROUTE, FWD_MASQ, Service
from userlb.sched import base


def svc_with(*dests, proto=6, sched="rr"):
    svc = Service(proto, ip(VIP), 80, sched_name=sched)
    svc.sched = base.create(sched, svc, ManualClock(0))
    for addr, fwd in dests:
        add_dest(svc, addr, 80, 1, fwd=fwd)
    return svc


def feed(eng, pkt, now=0.0):
    raw = bytes(pkt)
    buf = bytearray(raw) + bytearray(32)
    v = eng.process(buf, len(raw), now)
    return v, raw, buf


@pytest.mark.parametrize("dec_ttl", [False, True])      # fast path / general path
def test_dr_packet_leaves_unchanged(dec_ttl):
    svc = svc_with((RIP1, FWD_DROUTE))
    eng = engine_with(svc, dec_ttl=dec_ttl)
    v, raw, buf = feed(eng, tcp4(CIP, 40000, VIP, 80, "S"))
    assert v == V_XMIT_L2
    assert eng.out_xl.daddr == ip(RIP1) and eng.out_xl.dest is svc.dests[0]
    out = bytes(buf[:eng.out_len])
    if not dec_ttl:
        assert out == raw                       # destination still the VIP
    else:
        p = IP(out)
        assert p.ttl == IP(raw).ttl - 1 and p.dst == VIP
        fresh = IP(out)
        del fresh.chksum
        assert IP(bytes(fresh)).chksum == p.chksum
    d = svc.dests[0]
    assert d.stats.conns == 1 and d.stats.inpkts == 1 and d.stats.outpkts == 0
    assert d.activeconns == 1 and d.inactconns == 0      # SYN_RECV is active


@pytest.mark.parametrize("dec_ttl", [False, True])
def test_input_only_states(dec_ttl):
    """A DR entry sees only the client's packets: SYN, ACK, data, FIN, ACK
    go through the INPUT-ONLY rows (a client FIN on ESTABLISHED is FIN_WAIT
    there, CLOSE_WAIT in the INPUT rows)."""
    svc = svc_with((RIP1, FWD_DROUTE))
    eng = engine_with(svc, dec_ttl=dec_ttl)
    seen = []
    for flags in ("S", "A", "PA", "FA", "A"):
        v, _, _ = feed(eng, tcp4(CIP, 40000, VIP, 80, flags))
        assert v == V_XMIT_L2
        seen.append(eng.entry_objects()[0].state)
    assert seen == [T.SYN_RECV, T.ESTABLISHED, T.ESTABLISHED, T.FIN_WAIT, T.FIN_WAIT]
    e = eng.entry_objects()[0]
    assert e.timeout == eng._tmo[T.FIN_WAIT]
    assert svc.dests[0].stats.inpkts == 5


def test_fast_and_general_paths_agree():
    """The same flow through the IPv4 fast path and the general path
    (dec_ttl forces it) gives the same verdicts, states and counters."""
    flows = [("S", 0), ("A", 1), ("PA", 2), ("R", 3), ("S", 4)]
    res = []
    for dec in (False, True):
        svc = svc_with((RIP1, FWD_DROUTE), (RIP2, FWD_DROUTE))
        eng = engine_with(svc, dec_ttl=dec)
        out = []
        for flags, t in flows:
            v, _, _ = feed(eng, tcp4(CIP, 40001, VIP, 80, flags), float(t))
            out.append((v, eng.out_xl.daddr, [e.state for e in eng.entry_objects()]))
        out.append(sorted((d.addr, d.stats.as_tuple()) for d in svc.dests))
        res.append(out)
    assert res[0] == res[1]


def test_udp_and_reassembled():
    svc = svc_with((RIP1, FWD_DROUTE), proto=17)
    eng = engine_with(svc)
    v, raw, buf = feed(eng, udp4(CIP, 5353, VIP, 80))
    assert v == V_XMIT_L2 and bytes(buf[:eng.out_len]) == raw
    # a fragmented datagram is reassembled and handed over whole
    frags = IP(src=CIP, dst=VIP, id=7) / UDP(sport=5353, dport=80) / (b"x" * 3000)
    from scapy.layers.inet import fragment
    vs = [feed(eng, f)[0] for f in fragment(frags, 1400)]
    assert vs[-1] == V_XMIT_L2_OUT and IP(eng.out).len == 3028
    assert IP(eng.out)[UDP].dport == 80 and IP(eng.out).dst == VIP


def test_replies_bypass_and_are_not_reply_sources():
    """A DR real server is not a source of replies: a packet from RIP:80
    without an entry is not for us; an OUTPUT packet on an entry (an
    asymmetric route through the director) passes unchanged (IPVS lets it
    pass)."""
    svc = svc_with((RIP1, FWD_DROUTE))
    eng = engine_with(svc)
    v, _, _ = feed(eng, tcp4(RIP1, 80, CIP, 40000, "SA"))
    assert v == 0 and eng.last_reason == "not_for_us"
    feed(eng, tcp4(CIP, 40000, VIP, 80, "S"))
    v, raw, buf = feed(eng, tcp4(RIP1, 80, CIP, 40000, "SA"))
    assert v == V_FORWARD and bytes(buf[:eng.out_len]) == raw


def test_icmp_error_from_client_side_goes_to_the_server():
    svc = svc_with((RIP1, FWD_DROUTE))
    eng = engine_with(svc)
    feed(eng, tcp4(CIP, 40000, VIP, 80, "S"))
    err = (IP(src="192.0.2.1", dst=VIP) / ICMP(type=3, code=4, nexthopmtu=1400)
           / IPerror(src=VIP, dst=CIP) / TCPerror(sport=80, dport=40000))
    v, raw, buf = feed(eng, err)
    assert v == V_XMIT_L2 and bytes(buf[:eng.out_len]) == raw
    assert eng.out_xl.daddr == ip(RIP1)


def test_mixed_methods_in_one_service():
    """-m and -g destinations side by side: each flow goes by its
    destination's method."""
    svc = svc_with((RIP1, FWD_MASQ), (RIP2, FWD_DROUTE))
    eng = engine_with(svc)
    got = {}
    for port in range(40000, 40004):
        v, raw, buf = feed(eng, tcp4(CIP, port, VIP, 80, "S"))
        if v == V_FORWARD:
            assert IP(bytes(buf[:eng.out_len])).dst == RIP1
        else:
            assert v == V_XMIT_L2 and eng.out_xl.daddr == ip(RIP2)
        got[v] = got.get(v, 0) + 1
    assert got == {V_FORWARD: 2, V_XMIT_L2: 2}
    # the NAT server's replies are still translated
    v, _, buf = feed(eng, tcp4(RIP1, 80, CIP, 40001, "SA"))
    assert v == V_FORWARD and IP(bytes(buf[:eng.out_len])).src == VIP


def test_edit_changes_the_method_of_new_connections():
    """-e from -m to -g: existing entries keep their method (as IPVS, the
    connection keeps its transmit function), new ones take the new one."""
    svc = svc_with((RIP1, FWD_MASQ))
    eng = Engine()
    eng.set_services([svc])
    assert feed(eng, tcp4(CIP, 40000, VIP, 80, "S"))[0] == V_FORWARD
    svc.edit_dest(svc.dests[0], 1, FWD_DROUTE)
    eng.set_services([svc])
    assert feed(eng, tcp4(CIP, 40000, VIP, 80, "A"))[0] == V_FORWARD
    assert feed(eng, tcp4(CIP, 40009, VIP, 80, "S"))[0] == V_XMIT_L2


def test_ipv6_dr():
    from scapy.layers.inet6 import IPv6

    from tests.helpers.engine import CIP6, RIP6_1, VIP6
    svc = Service(6, ip(VIP6), 80, sched_name="rr")
    svc.sched = base.create("rr", svc, ManualClock(0))
    add_dest(svc, RIP6_1, 80, 1, fwd=FWD_DROUTE)
    eng = engine_with(svc)
    pkt = IPv6(src=CIP6, dst=VIP6) / TCP(sport=40000, dport=80, flags="S")
    v, raw, buf = feed(eng, pkt)
    assert v == V_XMIT_L2 and bytes(buf[:eng.out_len]) == raw
    assert eng.out_xl.daddr == ip(RIP6_1)


def test_fragment4_completes_a_partial_checksum():
    """l2out.fragment4 (direct routing of an IPv4 packet without DF above the
    link MTU): a partial UDP checksum is completed before the cut; the
    fragments reassemble to a datagram whose checksum scapy accepts."""
    from userlb.dataplane.csum import pseudo_sum4
    from userlb.dataplane.l2out import fragment4
    from userlb.dataplane.vnet import F_NEEDS_CSUM, pack_hdr
    full = IP(src=CIP, dst=VIP, id=5) / UDP(sport=5353, dport=80) / (bytes(range(256)) * 12)
    raw = bytearray(bytes(full))
    raw[26:28] = pseudo_sum4(ip(CIP), ip(VIP), 17, len(raw) - 20).to_bytes(2, "big")
    frags = fragment4(raw, 1500, pack_hdr(F_NEEDS_CSUM, 0, 0, 0, 20, 6))
    assert [len(f) for f in frags] == [1500, 1500, 140]
    whole = bytes(frags[0][:20]) + b"".join(bytes(f[20:]) for f in frags)
    assert whole[20:] == bytes(full)[20:]          # the checksum is the full one
    assert fragment4(raw, 20, None) is None


def test_secure_tcp_switches_the_input_only_rows_too():
    """The secure_tcp defense swaps TCP's tables; direct-routing entries
    follow it through Protocol.next_in_only."""
    from userlb.dataplane.proto.tcp import TCP, set_secure
    from userlb.dataplane.tcpstate import INPUT_ONLY, NEXT, SECURE_NEXT
    svc = svc_with((RIP1, FWD_DROUTE))
    eng = engine_with(svc)
    try:
        set_secure(True)
        assert TCP.next_in_only is SECURE_NEXT[INPUT_ONLY]
        feed(eng, tcp4(CIP, 40000, VIP, 80, "S"))
        assert eng.entry_objects()[0].state == SECURE_NEXT[INPUT_ONLY][0x02 << 4 | T.NONE]
    finally:
        set_secure(False)
    assert TCP.next_in_only is NEXT[INPUT_ONLY]
