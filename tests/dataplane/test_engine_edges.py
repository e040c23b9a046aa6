"""Engine edge cases: a length larger than the buffer, expiry after a long
sweep gap, ICMP types that IPVS ignores."""
from helpers.engine import CIP, RIP1, VIP, engine_with, make_service, run, tcp4, udp4
from userlb.dataplane.conntrack import MAX_HOP
from userlb.dataplane.engine import V_DROP, V_FORWARD
from userlb.model import IPPROTO_TCP, IPPROTO_UDP


def test_process_n_larger_than_buffer_never_raises():
    # packet.parse clamps `n` to the buffer; the fast path must not read past it
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    for raw in (b"", b"\x45", b"\x45" + bytes(10), bytes(tcp4(CIP, 1, VIP, 80, "S"))[:30]):
        assert eng.process(bytearray(raw), len(raw) + 50, 0.0) == V_DROP
    # a whole packet with a too-large n is still handled
    raw = bytes(tcp4(CIP, 40000, VIP, 80, "S"))
    assert eng.process(bytearray(raw), len(raw) + 50, 0.0) == V_FORWARD
    assert eng.out_len == len(raw)


def test_sweep_after_long_gap_still_expires_long_lived_entry():
    # an entry re-scheduled during a catch-up sweep (gap > MAX_HOP) must not be
    # put into a bucket at or before the sweep's own second: that bucket is
    # never visited again and the entry would never expire
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    d = svc.dests[0]
    assert run(eng, tcp4(CIP, 40000, VIP, 80, "S"), now=0.0)[0] == V_FORWARD
    assert run(eng, tcp4(CIP, 40000, VIP, 80, "A"), now=0.0)[0] == V_FORWARD
    assert d.activeconns == 1
    tcp_timeout = eng.timeouts()[0]
    assert tcp_timeout > 3 * MAX_HOP
    eng.expire(3.0 * MAX_HOP)                       # first sweep, late
    for t in range(3 * MAX_HOP + 1, int(tcp_timeout) + 2 * MAX_HOP):
        eng.expire(float(t))                        # then every second
    assert len(eng) == 0
    assert d.activeconns == 0 and d.inactconns == 0


def test_sweep_gap_udp_entry_expires():
    svc = make_service(IPPROTO_UDP, VIP, 53, [(RIP1, 53, 1)])
    eng = engine_with(svc)
    eng.set_timeouts(udp=1000)
    assert run(eng, udp4(CIP, 5000, VIP, 53), now=0.0)[0] == V_FORWARD
    eng.expire(500.0)
    for t in range(501, 1200):
        eng.expire(float(t))
    assert len(eng) == 0
    assert svc.dests[0].inactconns == 0


def _established_tcp():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    assert run(eng, tcp4(CIP, 40000, VIP, 80, "S"), now=0.0)[0] == V_FORWARD
    return eng


def test_icmp_parameter_problem_is_not_translated():
    # docs/ipvs.md §5.4: for IPv4 only Destination Unreachable, Source Quench and
    # Time Exceeded are handled; other ICMP (Parameter Problem, 12) is ignored
    from scapy.layers.inet import ICMP, IP, TCP
    eng = _established_tcp()
    q = bytes(IP(src=VIP, dst=CIP) / TCP(sport=80, dport=40000))
    err = IP(src="198.51.100.1", dst=VIP) / ICMP(type=12, code=0) / q
    v, _ = run(eng, err, now=1.0)
    assert v == V_DROP and eng.last_reason == "icmp_ignored"
    q = bytes(IP(src=CIP, dst=RIP1) / TCP(sport=40000, dport=8080))
    err = IP(src=RIP1, dst=CIP) / ICMP(type=12, code=0) / q
    v, _ = run(eng, err, now=1.0)
    assert v == V_DROP and eng.last_reason == "icmp_ignored"
    # the handled types still are
    q = bytes(IP(src=VIP, dst=CIP) / TCP(sport=80, dport=40000))
    err = IP(src="198.51.100.1", dst=VIP) / ICMP(type=11, code=0) / q
    assert run(eng, err, now=1.0)[0] == V_FORWARD
