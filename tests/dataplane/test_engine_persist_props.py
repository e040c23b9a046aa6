"""Persistence under random operations (hypothesis): new connections from a
few clients in two /24s, time passing with the once-a-second sweep, real
servers added, deleted, set to weight 0, persistence switched off and on,
the netmask changed.  Checked after every step:

* a new connection goes to the server of the client's live, valid template
  as `entries(now)` listed it just before (the listing is the oracle), and
  otherwise where the scheduler (sh: a pure function of the full client
  address) says; afterwards the client has a live template to that server,
  restarted to its timeout;
* PersistConn of every server = its linked templates; ActiveConn+InActConn =
  its linked connections; a template's n_control = the linked connections
  pointing at it; len(engine) = connections + templates.
"""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IPOption_EOL, IPOption_NOP

from helpers.engine import VIP, add_dest, del_dest, engine_with, ip, make_service, run, tcp4, udp4
from userlb.dataplane.conntrack import DEAD, Template
from userlb.dataplane.engine import V_FORWARD
from userlb.model import IPPROTO_TCP, IPPROTO_UDP, SVC_F_PERSISTENT

CLIENTS = ["192.0.2.1", "192.0.2.200", "198.51.100.1", "198.51.100.9"]
SERVERS = [f"10.1.0.{i}" for i in range(1, 4)]

# (.., with_ip_options): an IPv4 header with options takes the general path
_conn = st.tuples(st.just("conn"), st.sampled_from(CLIENTS), st.integers(1024, 1100),
                  st.sampled_from([IPPROTO_TCP, IPPROTO_UDP]), st.booleans())
_OPTS = [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_EOL()]
ops = st.lists(st.one_of(
    _conn, _conn, _conn, _conn,          # mostly connections
    st.tuples(st.just("wait"), st.integers(1, 40)),
    st.tuples(st.just("add"), st.sampled_from(SERVERS)),
    st.tuples(st.just("del"), st.sampled_from(SERVERS)),
    st.tuples(st.just("weight0"), st.sampled_from(SERVERS)),
    st.tuples(st.just("persist"), st.booleans()),
    st.tuples(st.just("mask"), st.sampled_from([0xFFFFFFFF, 0xFFFFFF00])),
), min_size=15, max_size=80)


def masked_key(svc, caddr):
    return caddr & svc.netmask


def check_invariants(eng, services):
    objs = eng.entry_objects()
    tpls = [e for e in objs if isinstance(e, Template)]
    cons = [e for e in objs if not isinstance(e, Template)]
    assert len(eng) == len(objs)
    dests = {id(e.xl.dest): e.xl.dest for e in objs}
    for s in services:
        for d in s.dests:
            dests[id(d)] = d
    for d in dests.values():
        assert d.persistconns == sum(1 for t in tpls if t.xl.dest is d)
        assert d.activeconns + d.inactconns == sum(1 for e in cons if e.xl.dest is d)
    for t in tpls:
        assert t.state != DEAD
        assert t.n_control == sum(1 for e in cons if e.control is t)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_random_operations_keep_persistence_and_counters(seq):
    svcs = {}
    for proto, port in ((IPPROTO_TCP, 80), (IPPROTO_UDP, 53)):
        s = make_service(proto, VIP, port, [(SERVERS[0], port, 1), (SERVERS[1], port, 1)],
                         sched="sh", flags=SVC_F_PERSISTENT)
        s.timeout = 45
        svcs[proto] = s
    eng = engine_with(*svcs.values())
    eng.set_timeouts(udp=20)
    trash = {}              # deleted servers come back as the same object (-a revives them)
    now = 0.0
    for op in seq:
        kind = op[0]
        if kind == "wait":
            for sec in range(int(now) + 1, int(now + op[1]) + 1):
                eng.expire(float(sec))
            now += op[1]
        elif kind == "conn":
            _, client, sport, proto, with_opts = op
            svc = svcs[proto]
            port = svc.port
            ca = ip(client)
            key = masked_key(svc, ca)
            before = [r for r in eng.entries(now)
                      if r.state in ("NONE", "ASSURED") and r.proto == proto and r.caddr == key
                      and r.vport == port]
            # an existing connection of that flow would be continued, not scheduled
            flows = {r[:5] for r in eng.entries(now) if r.state not in ("NONE", "ASSURED")}
            if (proto, ca, sport, ip(VIP), port) in flows:
                continue
            live = [r for r in before
                    if any(d.addr == r.daddr and d.available for d in svc.dests)]
            persistent = bool(svc.flags & SVC_F_PERSISTENT)
            if persistent and live:
                want = live[0].daddr
            else:
                d = svc.sched.schedule(ca, sport)
                want = d.addr if d is not None else None
            kw = {"options": _OPTS} if with_opts else {}
            if proto == IPPROTO_TCP:
                pkt = tcp4(client, sport, VIP, port, "S", **kw)
            else:
                pkt = udp4(client, sport, VIP, port, **kw)
            v, out = run(eng, pkt, now)
            if want is None:
                assert v != V_FORWARD
            else:
                assert v == V_FORWARD, eng.last_reason
                assert int.from_bytes(out[16:20], "big") == want
                assert (out[0] == 0x46) == with_opts
                if persistent:
                    after = [r for r in eng.entries(now)
                             if r.state in ("NONE", "ASSURED") and r.proto == proto
                             and r.caddr == key and r.vport == port]
                    assert [r.daddr for r in after] == [want]
                    # created or restarted now: to -p (45 s), or to 60 s after a retry
                    assert after[0].expires - now in (45.0, 60.0)
            now += 0.25
        else:
            for svc in svcs.values():
                port = svc.port
                if kind == "add":
                    if svc.find_dest(ip(op[1]), port) is None:
                        d = trash.pop((port, op[1]), None)
                        if d is None:
                            add_dest(svc, op[1], port)
                        else:
                            d.available = True
                            d.weight = 1
                            svc.dests = [d] + svc.dests
                            svc.sched.add_dest(d)
                elif kind == "del":
                    d = svc.find_dest(ip(op[1]), port)
                    if d is not None:
                        del_dest(svc, d)
                        trash[(port, op[1])] = d
                elif kind == "weight0":
                    d = svc.find_dest(ip(op[1]), port)
                    if d is not None:
                        d.weight = 0
                        svc.sched.upd_dest(d)
                elif kind == "persist":
                    if op[1]:
                        svc.flags |= SVC_F_PERSISTENT
                    else:
                        svc.flags &= ~SVC_F_PERSISTENT
                elif kind == "mask":
                    svc.netmask = op[1]
            eng.set_services(svcs.values())
        check_invariants(eng, svcs.values())
    # in the end everything expires and every counter returns to 0
    for sec in range(int(now) + 1, int(now) + 2000):
        eng.expire(float(sec))
    assert len(eng) == 0
    check_invariants(eng, svcs.values())
