"""SCTP through Engine.process (docs/ipvs.md §4.1, §4.4, §5.3; docs/sctp.md):
every cell of the kernel's SCTP state table in both directions a NAT entry
sees (IPv4 and IPv6), which first chunk creates an entry (normal and sloppy),
timeouts, ActiveConn accounting, the CRC32c after the rewrite (checked by
scapy), ICMP errors quoting SCTP, `-L -c` names, INIT on a CLOSED entry, and
stateless mhs."""
import struct

import pytest
from scapy.layers.inet import ICMP, IP, IPerror
from scapy.layers.inet6 import IPv6
from scapy.layers.sctp import (
    SCTP,
    SCTPChunkAbort,
    SCTPChunkCookieAck,
    SCTPChunkCookieEcho,
    SCTPChunkData,
    SCTPChunkError,
    SCTPChunkHeartbeatReq,
    SCTPChunkInit,
    SCTPChunkInitAck,
    SCTPChunkSACK,
    SCTPChunkShutdown,
    SCTPChunkShutdownAck,
    SCTPChunkShutdownComplete,
    crc32c,
)

from helpers.engine import CIP, CIP6, RIP1, RIP2, RIP6_1, VIP, VIP6, engine_with, make_service, run
from userlb.dataplane import sctpstate as S
from userlb.dataplane.engine import V_DROP, V_FORWARD, V_REPLY
from userlb.model import IPPROTO_SCTP

VPORT, RPORT, CPORT = 3868, 13868, 40000

CHUNKS = {
    "d": lambda: SCTPChunkData(data=b"payload"),
    "i": lambda: SCTPChunkInit(init_tag=7, a_rwnd=65535, n_out_streams=1, n_in_streams=1,
                               init_tsn=1),
    "i_a": lambda: SCTPChunkInitAck(init_tag=9, a_rwnd=65535, n_out_streams=1,
                                    n_in_streams=1, init_tsn=1),
    "c_e": lambda: SCTPChunkCookieEcho(cookie=b"cookie!!"),
    "c_a": lambda: SCTPChunkCookieAck(),
    "s": lambda: SCTPChunkShutdown(),
    "s_a": lambda: SCTPChunkShutdownAck(),
    "s_c": lambda: SCTPChunkShutdownComplete(),
    "err": lambda: SCTPChunkError(),
    "ab": lambda: SCTPChunkAbort(),
}
# the kernel's table (ip_vs_proto_sctp.c), written out again for the test:
# columns NONE INIT1 INIT C-SENT C-REPLIED C-WAIT COOKIE C-ECHOED ESTABLISHED
# S-SENT S-RECEIVED S-ACK-SENT REJECTED CLOSED
SPEC = {
    ("IN", "d"): "ES I1 IN CS CR CW CO CE ES SS SR SA RJ CL",
    ("IN", "i"): "I1 IN IN CS CR CW CO CE ES SS SR SA IN IN",
    ("IN", "i_a"): "CW CW CW CS CR CO CO CE ES SS SR SA RJ CL",
    ("IN", "c_e"): "CR IN IN CR CR CW CO CE ES SS SR SA RJ CL",
    ("IN", "c_a"): "ES I1 IN CS CR CW CO ES ES SS SR SA RJ CL",
    ("IN", "s"): "SR I1 IN CS CR CW CO CE SR SS SR SA RJ CL",
    ("IN", "s_a"): "CL IN IN CS CR CW CO CE ES CL SR CL RJ CL",
    ("IN", "s_c"): "CL CL CL CS CR CW CO CE ES SS SR CL RJ CL",
    ("IN", "err"): "CL I1 IN CS CR CW CO CL ES SS SR SA RJ CL",
    ("IN", "ab"): "CL CL CL CL CL RJ CL CL CL CL CL CL CL CL",
    ("OUT", "d"): "ES I1 IN CS CR CW CO CE ES SS SR SA RJ CL",
    ("OUT", "i"): "CW CW CW CW CW CW CW CW ES CW CW CW CW CW",
    ("OUT", "i_a"): "CS CS CS CS CR CW CO CE ES SS SR SA RJ CL",
    ("OUT", "c_e"): "CE CE CE CE CE CE CE CE ES SS SR SA RJ CL",
    ("OUT", "c_a"): "ES ES ES ES ES ES ES ES ES SS SR SA RJ CL",
    ("OUT", "s"): "SS SS SS SS SS SS SS SS SS SS SR SA RJ CL",
    ("OUT", "s_a"): "SA SA SA SA SA CW CO CE ES SA SA SA RJ CL",
    ("OUT", "s_c"): "CL I1 IN CS CR CW CO CE ES SS SR SA RJ CL",
    ("OUT", "err"): "CL CL CL CL CL CW CO CE ES SS SR SA RJ CL",
    ("OUT", "ab"): "CL RJ CL CL CL CL CL CL CL CL CL CL CL CL",
}
ORDER = "NO I1 IN CS CR CW CO CE ES SS SR SA RJ CL".split()
PROC = dict(zip(ORDER, ("NONE", "INIT1", "INIT", "C-SENT", "C-REPLIED", "C-WAIT", "COOKIE",
                        "C-ECHOED", "ESTABLISHED", "S-SENT", "S-RECEIVED", "S-ACK-SENT",
                        "REJECTED", "CLOSED"), strict=True))
TMO = dict(zip(ORDER, (2, 4, 61, 61, 61, 61, 61, 61, 900, 61, 61, 61, 4, 61), strict=True))
CASES = [(d, ev, ORDER[i], c) for (d, ev), row in SPEC.items()
         for i, c in enumerate(row.split())]

FAM = {4: dict(cip=CIP, vip=VIP, rip=RIP1, ip=IP), 6: dict(cip=CIP6, vip=VIP6, rip=RIP6_1, ip=IPv6)}


def pkt(f, src, sport, dst, dport, *chunks, vtag=0x11223344):
    p = f["ip"](src=src, dst=dst) / SCTP(sport=sport, dport=dport, tag=vtag)
    for c in chunks:
        p = p / c
    return p


def crc_ok(raw, af=4):
    """scapy's CRC32c of the SCTP part equals the one on the wire."""
    p = IP(raw) if af == 4 else IPv6(raw)
    s = bytearray(bytes(p[SCTP]))
    field = bytes(s[8:12])
    s[8:12] = b"\0\0\0\0"
    return struct.pack(">I", crc32c(bytes(s))) == field


def state_no(abbr):
    return S.BASE + ORDER.index(abbr)


def force(e, st):
    d = e.xl.dest
    if e.state == S.S_ESTABLISHED:
        d.activeconns -= 1
    else:
        d.inactconns -= 1
    e.state = st
    if st == S.S_ESTABLISHED:
        d.activeconns += 1
    else:
        d.inactconns += 1


def setup(af, **kw):
    f = FAM[af]
    svc = make_service(IPPROTO_SCTP, f["vip"], VPORT, [(f["rip"], RPORT, 1)])
    eng = engine_with(svc, **kw)
    v, out = run(eng, pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS["i"]()), 0.0)
    assert v == V_FORWARD, eng.last_reason
    (e,) = eng.entry_objects()
    return f, svc, eng, e, out


@pytest.mark.parametrize("af", [4, 6])
@pytest.mark.parametrize("direction,event,state,want", CASES)
def test_state_table_through_engine(af, direction, event, state, want):
    f, svc, eng, e, _ = setup(af)
    force(e, state_no(state))
    if direction == "IN":
        p = pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS[event]())
    else:
        p = pkt(f, f["rip"], RPORT, f["cip"], CPORT, CHUNKS[event]())
    v, out = run(eng, p, 1.0)
    assert v == V_FORWARD, eng.last_reason
    assert crc_ok(out, af)
    if (direction, event, state) == ("IN", "i", "CL"):
        # conn_reuse_mode: an INIT on a CLOSED entry expires it and is
        # scheduled afresh (the table's IN cell is not reached)
        assert e.state == -1
        (e,) = eng.entry_objects()
        want = "I1"
    assert e.state == state_no(want), (S.STATE_NAMES[e.state], want)
    assert e.timeout == TMO[want]
    (row,) = eng.entries(1.0)
    assert PROC[want] in row        # the -L -c name
    d = svc.dests[0]
    assert (d.activeconns, d.inactconns) == ((1, 0) if want == "ES" else (0, 1))


IN_ONLY = {
    "d": "ES I1 IN CS CR ES CO CE ES SS SR SA RJ CL",
    "i": "I1 IN IN IN IN IN CO CE ES SS SR SA IN IN",
    "i_a": "CE CE CE CE CE CE CO CE ES SS SR SA RJ CL",
    "c_e": "ES ES ES ES ES ES CO CE ES SS SR SA RJ CL",
    "c_a": "ES I1 IN ES ES CW ES ES ES SS SR SA RJ CL",
    "s": "SR I1 IN CS CR CW CO CE SR SS SR SA RJ CL",
    "s_a": "CL IN IN CS CR CW CO CE CL CL SR CL RJ CL",
    "s_c": "CL CL CL CL CL CW CO CE ES SS CL CL RJ CL",
    "err": "CL I1 IN CS CR CW CO CE ES SS SR SA RJ CL",
    "ab": "CL CL CL CL CL RJ CL CL CL CL CL CL CL CL",
}
IN_ONLY_CASES = [(ev, ORDER[i], c) for ev, row in IN_ONLY.items()
                 for i, c in enumerate(row.split())]


@pytest.mark.parametrize("event,state,want", IN_ONLY_CASES)
def test_input_only_rows_through_engine(event, state, want):
    """A direct-routing entry sees only the client's packets: the INPUT-ONLY
    rows; the packet leaves unchanged (its CRC32c too)."""
    from userlb.dataplane.verdict import V_XMIT_L2
    from userlb.model import FWD_DROUTE
    f = FAM[4]
    svc = make_service(IPPROTO_SCTP, f["vip"], VPORT, [])
    from helpers.engine import add_dest
    add_dest(svc, f["rip"], VPORT, 1, fwd=FWD_DROUTE)
    eng = engine_with(svc)
    v, _ = run(eng, pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS["i"]()), 0.0)
    assert v == V_XMIT_L2, eng.last_reason
    (e,) = eng.entry_objects()
    assert e.state == S.S_INIT1
    force(e, state_no(state))
    raw = bytes(pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS[event]()))
    buf = bytearray(raw) + bytearray(32)
    assert eng.process(buf, len(raw), 1.0) == V_XMIT_L2
    assert bytes(buf[:eng.out_len]) == raw and crc_ok(raw)      # unchanged
    if (event, state) == ("i", "CL"):
        assert e.state == -1              # conn_reuse_mode, as through the INPUT rows
        (e,) = eng.entry_objects()
        want = "I1"
    assert e.state == state_no(want), (S.STATE_NAMES[e.state], want)
    assert e.timeout == TMO[want]


@pytest.mark.parametrize("sloppy", [False, True])
@pytest.mark.parametrize("event", list(CHUNKS) + ["sack", "hb"])
def test_which_first_chunk_creates_an_entry(sloppy, event):
    f = FAM[4]
    svc = make_service(IPPROTO_SCTP, f["vip"], VPORT, [(f["rip"], RPORT, 1)])
    eng = engine_with(svc, sloppy_sctp=sloppy)
    chunk = {"sack": lambda: SCTPChunkSACK(), "hb": lambda: SCTPChunkHeartbeatReq()}.get(
        event, CHUNKS.get(event))()
    v, out = run(eng, pkt(f, f["cip"], CPORT, f["vip"], VPORT, chunk), 0.0)
    creates = event == "i" or (sloppy and event != "ab")
    if creates:
        assert v == V_FORWARD
        (e,) = eng.entry_objects()
        first = SPEC[("IN", event if event in CHUNKS else "d")].split()[0]
        assert e.state == state_no(first)
        assert crc_ok(out)
        o = IP(out)
        assert (o.dst, o[SCTP].dport) == (RIP1, RPORT)
    else:
        assert v == V_DROP and eng.last_reason == "no_entry"
        assert len(eng) == 0


def test_cookie_echo_with_abort_counts_as_abort():
    f, svc, eng, e, _ = setup(4)
    force(e, S.S_COOKIE_SENT)
    p = pkt(f, f["cip"], CPORT, f["vip"], VPORT, SCTPChunkCookieEcho(cookie=b"abc"),
            SCTPChunkAbort())
    v, out = run(eng, p, 1.0)
    assert v == V_FORWARD and crc_ok(out)
    assert e.state == S.S_CLOSED
    # a cookie echo alone moves C-SENT to C-REPLIED
    f, svc, eng, e, _ = setup(4)
    force(e, S.S_COOKIE_SENT)
    run(eng, pkt(f, f["cip"], CPORT, f["vip"], VPORT, SCTPChunkCookieEcho(cookie=b"abc")), 1.0)
    assert e.state == S.S_COOKIE_REPLIED


@pytest.mark.parametrize("af", [4, 6])
def test_association_both_ways_crc_and_addresses(af):
    f, svc, eng, e, out = setup(af)
    o = (IP if af == 4 else IPv6)(out)
    assert (o.dst, o[SCTP].dport, o.src, o[SCTP].sport) == (f["rip"], RPORT, f["cip"], CPORT)
    assert crc_ok(out, af) and e.state == S.S_INIT1
    steps = [("OUT", "i_a", "CS"), ("IN", "c_e", "CR"), ("OUT", "c_a", "ES"),
             ("IN", "d", "ES"), ("OUT", "d", "ES"), ("IN", "s", "SR"), ("OUT", "s_a", "SA"),
             ("IN", "s_c", "CL")]
    for t, (d, ev, want) in enumerate(steps, 1):
        if d == "IN":
            p = pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS[ev]())
        else:
            p = pkt(f, f["rip"], RPORT, f["cip"], CPORT, CHUNKS[ev]())
        v, out = run(eng, p, float(t))
        assert v == V_FORWARD and crc_ok(out, af)
        o = (IP if af == 4 else IPv6)(out)
        if d == "OUT":
            assert (o.src, o[SCTP].sport) == (f["vip"], VPORT)
        assert e.state == state_no(want), (ev, S.STATE_NAMES[e.state])
    d = svc.dests[0]
    assert (d.activeconns, d.inactconns) == (0, 1)
    assert d.stats.inpkts == 5 and d.stats.outpkts == 4 and d.stats.conns == 1


def test_bad_crc_stays_bad_after_rewrite():
    f = FAM[4]
    svc = make_service(IPPROTO_SCTP, f["vip"], VPORT, [(f["rip"], RPORT, 1)])
    eng = engine_with(svc)
    raw = bytearray(bytes(pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS["i"]())))
    raw[-1] ^= 0x5A          # damage the payload after the CRC was computed
    v, out = run(eng, IP(bytes(raw)), 0.0)
    assert v == V_FORWARD and not crc_ok(out)


def test_same_port_keeps_crc_untouched():
    f = FAM[4]
    svc = make_service(IPPROTO_SCTP, f["vip"], VPORT, [(f["rip"], VPORT, 1)])
    eng = engine_with(svc)
    p = pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS["i"]())
    v, out = run(eng, p, 0.0)
    assert v == V_FORWARD and crc_ok(out)
    assert bytes(p)[28:32] == out[28:32]


def test_init_on_closed_entry_is_scheduled_afresh():
    f = FAM[4]
    svc = make_service(IPPROTO_SCTP, f["vip"], VPORT, [(RIP1, RPORT, 1), (RIP2, RPORT, 1)])
    eng = engine_with(svc)
    v, out = run(eng, pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS["i"]()), 0.0)
    first = IP(out).dst
    (e,) = eng.entry_objects()
    force(e, S.S_CLOSED)
    v, out = run(eng, pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS["i"]()), 1.0)
    assert v == V_FORWARD and IP(out).dst != first      # rr picked the other one
    (e2,) = eng.entry_objects()
    assert e2 is not e and e2.state == S.S_INIT1
    # DATA on a CLOSED entry stays on it
    force(e2, S.S_CLOSED)
    v, out = run(eng, pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS["d"]()), 2.0)
    assert eng.entry_objects() == [e2] and e2.state == S.S_CLOSED


def test_entry_expires_by_state_timeout():
    f, svc, eng, e, _ = setup(4)           # INIT1: 4 s
    assert len(eng.entries(3.9)) == 1 and eng.entries(4.0) == []
    v, _ = run(eng, pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS["d"]()), 4.5)
    assert v == V_DROP and eng.last_reason == "no_entry"


@pytest.mark.parametrize("af", [4, 6])
def test_icmp_error_quoting_sctp(af):
    """Both ways (docs/ipvs.md §5.4): the quoted ports are rewritten, the
    ICMP checksum is right; the quoted CRC32c is left as it was (IPVS)."""
    from scapy.layers.inet6 import ICMPv6DestUnreach, IPerror6
    f, svc, eng, e, _ = setup(af)
    ipl, icmp, qerr = (IP, ICMP(type=3, code=1), IPerror) if af == 4 else \
        (IPv6, ICMPv6DestUnreach(code=1), IPerror6)
    # from outside, about a packet the director sent to the client
    quoted = bytes(pkt(f, f["vip"], VPORT, f["cip"], CPORT, CHUNKS["i_a"]()))
    router = "198.51.100.1" if af == 4 else "2001:db8:ff::1"
    err = ipl(src=router, dst=f["vip"]) / icmp / quoted
    v, out = run(eng, err, 1.0)
    assert v == V_FORWARD, eng.last_reason
    o = ipl(out)
    q = o[qerr]
    assert o.dst == f["rip"] and q.src == f["rip"]
    assert struct.unpack("!H", bytes(q.payload)[:2])[0] == RPORT
    assert bytes(q.payload)[8:12] == quoted[-len(bytes(q.payload)):][8:12]
    o2 = ipl(out)
    layer = o2[ICMP] if af == 4 else o2[ICMPv6DestUnreach]
    c = layer.cksum if af == 6 else layer.chksum
    if af == 4:
        layer.chksum = None
        assert IP(bytes(o2))[ICMP].chksum == c
    else:
        layer.cksum = None
        assert IPv6(bytes(o2))[ICMPv6DestUnreach].cksum == c
    # from the server side, about a packet the client sent (as rewritten)
    quoted = bytes(pkt(f, f["cip"], CPORT, f["rip"], RPORT, CHUNKS["d"]()))
    err = ipl(src=f["rip"], dst=f["cip"]) / icmp / quoted
    v, out = run(eng, err, 1.0)
    assert v == V_FORWARD, eng.last_reason
    o = ipl(out)
    q = o[qerr]
    assert o.src == f["vip"] and q.dst == f["vip"]
    assert struct.unpack("!H", bytes(q.payload)[2:4])[0] == VPORT


def test_sctp_to_vip_port_without_service_dropped():
    f, svc, eng, e, _ = setup(4)
    v, _ = run(eng, pkt(f, f["cip"], CPORT, f["vip"], 9, CHUNKS["i"]()), 0.0)
    assert v == V_DROP and eng.last_reason == "no_service"


def test_no_destination_answers_port_unreachable():
    f = FAM[4]
    svc = make_service(IPPROTO_SCTP, f["vip"], VPORT, [])
    eng = engine_with(svc)
    v, out = run(eng, pkt(f, f["cip"], CPORT, f["vip"], VPORT, CHUNKS["i"]()), 0.0)
    assert v == V_REPLY
    assert IP(out)[ICMP].type == 3 and IP(out)[ICMP].code == 3


def test_truncated_sctp_dropped():
    f = FAM[4]
    svc = make_service(IPPROTO_SCTP, f["vip"], VPORT, [(f["rip"], RPORT, 1)])
    eng = engine_with(svc)
    raw = bytes(IP(src=f["cip"], dst=f["vip"], proto=132) / struct.pack("!HHII", CPORT, VPORT,
                                                                        0, 0))
    v, _ = run(eng, IP(raw), 0.0)
    assert v == V_DROP and eng.last_reason == "truncated_l4"


def test_mhs_stateless_sctp():
    """docs/mhs-spec.md rules 9-11 with SCTP as a connection protocol (INIT
    plays SYN): a stable slot forwards without an entry; on an unstable slot
    a new association (INIT) goes to the candidate, a packet of an existing
    one (DATA) to the old destination, each with an entry."""
    from helpers.engine import ip
    from userlb.clock import ManualClock
    from userlb.model import Dest, Service
    from userlb.sched import base
    clock = ManualClock(0.0)
    svc = Service(IPPROTO_SCTP, ip(VIP), VPORT, sched_name="mhs")
    svc.sched = base.create("mhs", svc, clock)

    def add(addr):
        d = Dest(ip(addr), RPORT, 1)
        d.svc = svc
        svc.dests = [d] + svc.dests
        svc.sched.add_dest(d)
    add(RIP1)
    eng = engine_with(svc)
    f = FAM[4]
    v, out = run(eng, pkt(f, CIP, CPORT, VIP, VPORT, CHUNKS["d"]()), 0.0)
    assert v == V_FORWARD and crc_ok(out) and len(eng) == 0 and IP(out).dst == RIP1
    add(RIP2)
    eng.set_services([svc])
    s_ = svc.sched
    cand = s_.table_endpoints()
    old = s_.old_endpoints(clock.now())

    def addr_of(x):
        return x.addr if hasattr(x, "addr") else x[0]
    for a in range(ip("192.168.0.1"), ip("192.168.0.1") + 5000):
        i = s_.slot(a, 0)
        if addr_of(old[i]) == ip(RIP1) and addr_of(cand[i]) == ip(RIP2):
            break
    else:
        raise AssertionError("no unstable slot")
    c = ".".join(str(a >> k & 255) for k in (24, 16, 8, 0))
    v, out = run(eng, pkt(f, c, 1000, VIP, VPORT, CHUNKS["d"]()), 1.0)
    assert v == V_FORWARD and IP(out).dst == RIP1 and crc_ok(out)
    v, out = run(eng, pkt(f, c, 1001, VIP, VPORT, CHUNKS["i"]()), 1.0)
    assert v == V_FORWARD and IP(out).dst == RIP2 and crc_ok(out)
    states = sorted(e.state for e in eng.entry_objects())
    assert states == [S.S_INIT1, S.S_ESTABLISHED]


def test_drop_entry_drops_sctp_init_states_only():
    """docs/ipvs.md §11: drop_entry drops SCTP's half-open INIT1/INIT
    entries; an entry in another SCTP state (here C-SENT) is never dropped,
    an ESTABLISHED one only when idle."""
    f = FAM[4]
    svc = make_service(IPPROTO_SCTP, f["vip"], VPORT, [(f["rip"], RPORT, 1)])
    eng = engine_with(svc, max_entries=2000)
    for i in range(2000):
        v, _ = run(eng, pkt(f, f["cip"], 1000 + i, f["vip"], VPORT, CHUNKS["i"]()), 0.0)
        assert v == V_FORWARD
    kept = eng.entry_objects()[::10]     # spread: drop_entry samples in order
    for e in kept[::2]:
        force(e, S.S_COOKIE_SENT)
    for e in kept[1::2]:
        force(e, S.S_ESTABLISHED)
        e.last = 1.5                     # recently used
    eng.defense.set_mode("drop_entry", 1)
    for t in (2.0, 2.5, 3.0, 3.5):      # before INIT1's 4 s timeout
        eng.expire(t)
    assert eng.defense.modes["drop_entry"] == 2
    left = eng.entry_objects()
    assert len(left) < 2000 - 200
    assert all(e in left for e in kept)  # C-SENT and busy ESTABLISHED survive
