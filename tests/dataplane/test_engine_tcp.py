"""Every cell of the IPVS TCP state table through Engine.process, both
directions, IPv4 (fast path) and IPv6 (general path), sloppy on and off;
connection creation rules, reuse, accounting and timeouts (docs/ipvs.md §4)."""
import pytest

from helpers.engine import (
    CIP,
    CIP6,
    RIP1,
    RIP2,
    RIP6_1,
    VIP,
    VIP6,
    add_dest,
    engine_with,
    expect_rewritten,
    make_service,
    run,
    tcp4,
    tcp6,
)
from userlb.dataplane import tcpstate as T
from userlb.dataplane.engine import V_DROP, V_FORWARD, V_REPLY
from userlb.model import IPPROTO_TCP

FLAGS = {"syn": "S", "fin": "FA", "ack": "A", "rst": "R", "none": "P"}
SPEC = {
    ("IN", "syn"): "SR ES ES SR SR SR SR SR SR SR SR",
    ("IN", "fin"): "CL CW SS TW TW TW CL CW LA LI TW",
    ("IN", "ack"): "ES ES SS ES FW TW CL CW CL LI ES",
    ("IN", "rst"): "CL CL CL SR CL CL CL CL LA LI SR",
    ("IN", "none"): "CL CL CL CL CL CL CL CL CL CL CL",
    ("OUT", "syn"): "SS ES SS SR SS SS SS SS SS LI SR",
    ("OUT", "fin"): "TW FW SS TW FW TW CL TW LA LI TW",
    ("OUT", "ack"): "ES ES SS ES FW TW CL CW LA ES ES",
    ("OUT", "rst"): "CL CL SS CL CL TW CL CL CL CL CL",
    ("OUT", "none"): "CL CL CL CL CL CL CL CL CL CL CL",
}
ABBR = {"ES": "ESTABLISHED", "SS": "SYN_SENT", "SR": "SYN_RECV", "FW": "FIN_WAIT",
        "TW": "TIME_WAIT", "CL": "CLOSE", "CW": "CLOSE_WAIT", "LA": "LAST_ACK",
        "LI": "LISTEN", "SA": "SYNACK"}
CASES = [(d, ev, s, ABBR[c]) for (d, ev), row in SPEC.items()
         for s, c in enumerate(row.split())]

FAMILIES = {
    4: dict(cip=CIP, vip=VIP, rip=RIP1, mk=tcp4),
    6: dict(cip=CIP6, vip=VIP6, rip=RIP6_1, mk=tcp6),
}


def force_state(e, s, tmo=T.DEFAULT_TIMEOUTS):
    """Put a linked entry into state s, keeping the dest counters right."""
    d = e.xl.dest
    if T.IS_ACTIVE[e.state]:
        d.activeconns -= 1
    else:
        d.inactconns -= 1
    e.state = s
    e.timeout = tmo[s]
    if T.IS_ACTIVE[s]:
        d.activeconns += 1
    else:
        d.inactconns += 1


@pytest.mark.parametrize("af", [4, 6])
@pytest.mark.parametrize("sloppy", [False, True])
@pytest.mark.parametrize("direction,event,state,want", CASES)
def test_state_table_through_engine(af, sloppy, direction, event, state, want):
    f = FAMILIES[af]
    svc = make_service(IPPROTO_TCP, f["vip"], 80, [(f["rip"], 8080, 1)])
    eng = engine_with(svc, sloppy_tcp=sloppy)
    v, _ = run(eng, f["mk"](f["cip"], 40000, f["vip"], 80, "S"), 0.0)
    assert v == V_FORWARD
    (e,) = eng.entry_objects()
    force_state(e, state)
    if direction == "IN":
        pkt = f["mk"](f["cip"], 40000, f["vip"], 80, FLAGS[event], payload=b"data")
        v, out = run(eng, pkt, 1.5)
        assert v == V_FORWARD, eng.last_reason
        expect_rewritten(pkt, out, dst=f["rip"], dport=8080)
    else:
        pkt = f["mk"](f["rip"], 8080, f["cip"], 40000, FLAGS[event], payload=b"data")
        v, out = run(eng, pkt, 1.5)
        assert v == V_FORWARD, eng.last_reason
        expect_rewritten(pkt, out, src=f["vip"], sport=80)
    (row,) = eng.entries()
    assert row.state == want
    want_st = T.STATE_NAMES.index(want)
    assert row.expires == 1.5 + T.DEFAULT_TIMEOUTS[want_st]
    d = svc.dests[0]
    assert (d.activeconns, d.inactconns) == (T.IS_ACTIVE[want_st], 1 - T.IS_ACTIVE[want_st])
    reused = direction == "IN" and event == "syn" and state in (T.TIME_WAIT, T.CLOSE)
    (e2,) = eng.entry_objects()
    assert (e2 is not e) == reused
    assert svc.stats.conns == (2 if reused else 1)
    if direction == "IN":
        assert svc.stats.inpkts == 2 and svc.stats.outpkts == 0
    else:
        assert svc.stats.inpkts == 1 and svc.stats.outpkts == 1


# ------------------------------------------------------------- creation rules

CREATION = [
    # (description, flags, sloppy, verdict, entry state or None, reason)
    ("SYN creates (normal)", "S", False, V_FORWARD, "SYN_RECV", None),
    ("SYN+ACK creates (no ACK check)", "SA", False, V_FORWARD, "SYN_RECV", None),
    ("SYN+RST never creates", "SR", False, V_DROP, None, "rst_no_entry"),
    ("ACK without entry: RST answer", "A", False, V_REPLY, None, "no_entry"),
    ("FIN without entry: RST answer", "FA", False, V_REPLY, None, "no_entry"),
    ("data without flags: RST answer", "", False, V_REPLY, None, "no_entry"),
    ("RST without entry: dropped", "R", False, V_DROP, None, "rst_no_entry"),
    ("RST+ACK without entry: dropped", "RA", False, V_DROP, None, "rst_no_entry"),
    ("sloppy: SYN creates", "S", True, V_FORWARD, "SYN_RECV", None),
    ("sloppy: ACK creates ESTABLISHED", "A", True, V_FORWARD, "ESTABLISHED", None),
    ("sloppy: FIN creates CLOSE", "FA", True, V_FORWARD, "CLOSE", None),
    ("sloppy: no flags creates CLOSE", "", True, V_FORWARD, "CLOSE", None),
    ("sloppy: RST never creates", "R", True, V_DROP, None, "rst_no_entry"),
]


@pytest.mark.parametrize("af", [4, 6])
@pytest.mark.parametrize("desc,flags,sloppy,verdict,state,reason", CREATION,
                         ids=[c[0] for c in CREATION])
def test_creation(af, desc, flags, sloppy, verdict, state, reason):
    f = FAMILIES[af]
    svc = make_service(IPPROTO_TCP, f["vip"], 80, [(f["rip"], 8080, 1)])
    eng = engine_with(svc, sloppy_tcp=sloppy)
    pkt = f["mk"](f["cip"], 40000, f["vip"], 80, flags, seq=5000, ack=777)
    v, out = run(eng, pkt, 1.0)
    assert v == verdict
    if state is None:
        assert eng.entries() == []
        assert svc.stats.conns == 0
    else:
        (row,) = eng.entries()
        assert row.state == state
        expect_rewritten(pkt, out, dst=f["rip"], dport=8080)
        assert svc.stats.conns == 1 and svc.dests[0].stats.conns == 1
    if reason is not None:
        assert eng.last_reason == reason
    if verdict == V_DROP:
        assert eng.drops[reason] == 1
    if verdict == V_REPLY:
        check_rst(pkt, out)


def check_rst(pkt, out):
    """The RST the director's stack would send (RFC 793 reset generation)."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6

    from helpers.engine import checksums_ok
    got = IP(out) if out[0] >> 4 == 4 else IPv6(out)
    l3 = pkt[IP] if pkt.haslayer(IP) else pkt[IPv6]
    assert got.src == l3.dst and got.dst == l3.src
    t = got[TCP]
    assert (t.sport, t.dport) == (pkt[TCP].dport, pkt[TCP].sport)
    if pkt[TCP].flags & 0x10:
        assert t.flags == "R" and t.seq == pkt[TCP].ack
    else:
        seglen = len(pkt[TCP].payload) + (1 if pkt[TCP].flags & 0x03 else 0)
        assert t.flags == "RA" and t.ack == pkt[TCP].seq + seglen
    assert checksums_ok(out)


def test_rst_on_no_entry_off():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc, rst_on_no_entry=False)
    v, _ = run(eng, tcp4(CIP, 40000, VIP, 80, "A"), 1.0)
    assert v == V_DROP and eng.last_reason == "no_entry" and eng.drops["no_entry"] == 1


def test_sloppy_settable_at_run_time():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    assert run(eng, tcp4(CIP, 40000, VIP, 80, "A"), 1.0)[0] == V_REPLY
    eng.sloppy_tcp = True
    assert run(eng, tcp4(CIP, 40000, VIP, 80, "A"), 1.0)[0] == V_FORWARD
    eng.sloppy_tcp = False
    assert run(eng, tcp4(CIP, 40000, VIP, 80, "A"), 1.0)[0] == V_FORWARD   # entry exists


# ------------------------------------------------------------- reuse

@pytest.mark.parametrize("state,reused", [
    (T.TIME_WAIT, True), (T.CLOSE, True), (T.FIN_WAIT, False), (T.CLOSE_WAIT, False),
    (T.LAST_ACK, False), (T.ESTABLISHED, False), (T.SYN_RECV, False)])
def test_conn_reuse(state, reused):
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1), (RIP2, 8080, 1)])
    eng = engine_with(svc)
    run(eng, tcp4(CIP, 40000, VIP, 80, "S"), 0.0)
    (e,) = eng.entry_objects()
    first = e.xl.daddr
    force_state(e, state)
    pkt = tcp4(CIP, 40000, VIP, 80, "S", seq=99)
    v, out = run(eng, pkt, 1.0)
    assert v == V_FORWARD
    (e2,) = eng.entry_objects()
    assert (e2 is not e) == reused
    assert svc.stats.conns == (2 if reused else 1)
    if reused:
        # rr moved on: the new connection went to the other real server
        assert e2.xl.daddr != first
        assert e2.state == T.SYN_RECV
    d_all = sum(d.activeconns + d.inactconns for d in svc.dests)
    assert d_all == 1


# ------------------------------------------------------------- timeouts

def test_entry_lifetime_exact_boundary():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    run(eng, tcp4(CIP, 40000, VIP, 80, "S"), 10.0)            # SYN_RECV: 60 s
    assert run(eng, tcp4(CIP, 40000, VIP, 80, "A"), 69.999)[0] == V_FORWARD   # -> ES
    assert eng.entries()[0].expires == pytest.approx(69.999 + 900)
    assert run(eng, tcp4(CIP, 40000, VIP, 80, "A"), 69.999 + 899.5)[0] == V_FORWARD
    t = 69.999 + 899.5 + 900
    v, _ = run(eng, tcp4(CIP, 40000, VIP, 80, "A"), t)      # now == expires: gone
    assert v == V_REPLY and eng.entries() == []
    d = svc.dests[0]
    assert d.activeconns == 0 and d.inactconns == 0


@pytest.mark.parametrize("state", range(T.N_STATES))
def test_every_state_timeout(state):
    """An entry in each state lives exactly its state's timeout (lazy lookup)."""
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc, rst_on_no_entry=False)
    run(eng, tcp4(CIP, 40000, VIP, 80, "S"), 0.0)
    (e,) = eng.entry_objects()
    force_state(e, state)
    eng.ct.schedule(e)          # as a real transition would
    tmo = T.DEFAULT_TIMEOUTS[state]
    assert eng.entries(now=tmo - 0.001)
    assert not eng.entries(now=tmo)
    # sweeping just before keeps it, at the boundary removes it
    eng.expire(tmo - 0.001)
    assert len(eng) == 1
    eng.expire(tmo + 1.0)
    assert len(eng) == 0
    assert svc.dests[0].activeconns == 0 and svc.dests[0].inactconns == 0


def test_set_timeouts_applies_at_next_packet():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    run(eng, tcp4(CIP, 40000, VIP, 80, "S"), 0.0)
    run(eng, tcp4(CIP, 40000, VIP, 80, "A"), 1.0)              # ES, expires 901
    eng.set_timeouts(tcp=50, tcpfin=0, udp=0)
    assert eng.timeouts() == (50, 120, 300)
    assert eng.entries()[0].expires == 901.0                       # unchanged until refreshed
    run(eng, tcp4(CIP, 40000, VIP, 80, "A"), 2.0)
    assert eng.entries()[0].expires == 52.0
    eng.set_timeouts(0, 30, 0)
    run(eng, tcp4(RIP1, 8080, CIP, 40000, "FA"), 3.0)           # OUT fin: ES -> FW
    assert eng.entries()[0].state == "FIN_WAIT" and eng.entries()[0].expires == 33.0
    assert eng.timeouts() == (50, 30, 300)


def test_sweep_after_state_shortens_timeout():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    run(eng, tcp4(CIP, 40000, VIP, 80, "S"), 0.0)
    run(eng, tcp4(CIP, 40000, VIP, 80, "A"), 1.0)              # ES: 900 s
    run(eng, tcp4(CIP, 40000, VIP, 80, "R"), 2.0)              # CLOSE: 10 s
    assert eng.entries()[0].state == "CLOSE"
    for t in range(3, 12):
        eng.expire(float(t))
    assert len(eng) == 1
    eng.expire(12.0)
    assert len(eng) == 0
    assert svc.dests[0].inactconns == 0 and svc.dests[0].activeconns == 0


def test_refreshed_entries_survive_sweeps():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    run(eng, tcp4(CIP, 40000, VIP, 80, "S"), 0.0)
    for t in range(1, 400):
        assert run(eng, tcp4(CIP, 40000, VIP, 80, "A"), float(t))[0] == V_FORWARD
        eng.expire(t + 0.5)
    assert len(eng) == 1


def test_ip_options_take_general_path():
    from scapy.layers.inet import IPOption_NOP
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    pkt = tcp4(CIP, 40000, VIP, 80, "S", options=[IPOption_NOP()] * 4)
    v, out = run(eng, pkt, 0.0)
    assert v == V_FORWARD
    expect_rewritten(pkt, out, dst=RIP1, dport=8080)
    pkt = tcp4(RIP1, 8080, CIP, 40000, "SA", options=[IPOption_NOP()] * 4)
    v, out = run(eng, pkt, 0.1)
    assert v == V_FORWARD
    expect_rewritten(pkt, out, src=VIP, sport=80)
    assert eng.entries()[0].state == "SYN_RECV"


def test_new_dest_added_later_gets_connections():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    add_dest(svc, RIP2, 8080, 1)
    eng.set_services([svc])
    seen = set()
    for p in range(10):
        run(eng, tcp4(CIP, 40000 + p, VIP, 80, "S"), 0.0)
    for e in eng.entry_objects():
        seen.add(e.xl.daddr)
    assert len(seen) == 2
