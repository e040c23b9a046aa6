"""Persistence (-p timeout, -M netmask) in the engine (docs/ipvs.md §1.8, §4.1-§4.3,
§7): templates keyed by (protocol, masked client, VIP, vport), controlled
connections, the 60 s retry, PersistConn / ActiveConn / InActConn / conns,
entries() and the -L -c listing, invalid templates, the entry limit.  Manual
`now`, never sleeping; `tick` runs the periodic sweep every second as the
driver does."""
import pytest

import helpers.engine as test_engine_helpers
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
    del_dest,
    expect_rewritten,
    ip,
    make_service,
    run,
    tcp4,
    tcp6,
    udp4,
)
from userlb.control import listing
from userlb.dataplane.conntrack import Template
from userlb.dataplane.engine import V_DROP, V_FORWARD
from userlb.model import IPPROTO_TCP, IPPROTO_UDP, SVC_F_PERSISTENT

RIP3 = "10.1.0.3"
_KW = {}


@pytest.fixture(autouse=True, params=["fast", "general"])
def path(request):
    """Every test twice: IPv4 new flows through the fast path (fast4), and
    (dec_ttl=True: no fast path) through the general path."""
    _KW.clear()
    if request.param == "general":
        _KW["dec_ttl"] = True
    yield request.param
    _KW.clear()


def engine_with(*services, **kw):
    return test_engine_helpers.engine_with(*services, **dict(_KW, **kw))


def persistent(proto, vip, vport, dests, sched="rr", timeout=360, netmask=None, **kw):
    svc = make_service(proto, vip, vport, dests, sched=sched, flags=SVC_F_PERSISTENT, **kw)
    svc.timeout = timeout
    if netmask is not None:
        svc.netmask = netmask
    return svc


def tick(eng, t0, t1):
    """The driver's once-a-second expire() for every whole second in (t0, t1]."""
    for s in range(int(t0) + 1, int(t1) + 1):
        eng.expire(float(s))


def dst_of(out):
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    p = IP(out) if out[0] >> 4 == 4 else IPv6(out)
    return p.dst


def syn(eng, cip, sport, now, vip=VIP, vport=80, mk=tcp4):
    v, out = run(eng, mk(cip, sport, vip, vport, "S"), now)
    assert v == V_FORWARD, eng.last_reason
    return dst_of(out)


def establish(eng, cip, sport, now, vport=80):
    """SYN, SYN+ACK, ACK: an ESTABLISHED connection; returns its server."""
    d = syn(eng, cip, sport, now, vport=vport)
    run(eng, tcp4(d, vport, cip, sport, "SA"), now + 0.1)
    run(eng, tcp4(cip, sport, VIP, vport, "A"), now + 0.2)
    return d


def templates(eng, now=None):
    return [r for r in eng.entries(now) if r.state in ("NONE", "ASSURED")]


def conns(eng, now=None):
    return [r for r in eng.entries(now) if r.state not in ("NONE", "ASSURED")]


# ------------------------------------------------------------------ following

def test_later_connections_follow_the_template_even_after_the_table_changed():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)], sched="mh",
                     timeout=100)
    eng = engine_with(svc)
    first = syn(eng, CIP, 40000, 0.0)
    assert syn(eng, CIP, 40001, 10.0) == first          # template restarted: expires 110
    # add real servers until the mh table gives the client's slot to a new one
    for i in range(3, 60):
        add_dest(svc, f"10.1.0.{i}", 80)
        eng.set_services([svc])
        now_says = svc.sched.schedule(ip(CIP), 0)
        if now_says.addr != ip(first):
            break
    else:
        pytest.fail("no destination took the client's slot")
    tick(eng, 0, 20)
    assert syn(eng, CIP, 40002, 20.0) == first          # the table changed, the template holds
    (t,) = templates(eng)
    assert t.expires == 120.0
    # the SYN_RECV entries (60 s) are gone by 80; the template lasts to 120
    tick(eng, 20, 119)
    assert conns(eng, 119.0) == [] and len(templates(eng, 119.0)) == 1
    tick(eng, 119, 120)
    assert len(eng) == 0
    assert syn(eng, CIP, 40003, 121.0) != first          # scheduled afresh: the new owner
    assert conns(eng)[0].daddr == now_says.addr


def test_template_restarted_by_every_new_connection():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)], timeout=100)
    eng = engine_with(svc)
    syn(eng, CIP, 1, 0.0)
    assert templates(eng)[0].expires == 100.0
    syn(eng, CIP, 2, 50.0)
    assert templates(eng)[0].expires == 150.0
    # established packets of a controlled connection do not restart it
    run(eng, tcp4(CIP, 2, VIP, 80, "A"), 60.0)
    assert templates(eng)[0].expires == 150.0


def test_established_packets_of_a_persistent_connection_are_rewritten(path):
    """Both directions of a controlled connection are rewritten (fast path:
    TTL untouched; general path, dec_ttl=True: TTL decremented)."""
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)

    def check(p, out, **changes):
        if path == "general":
            p = p.copy()
            p.ttl -= 1
        expect_rewritten(p, out, **changes)

    p = tcp4(CIP, 40000, VIP, 80, "S")
    v, out = run(eng, p, 0.0)
    check(p, out, dst=RIP1, dport=8080)
    rp = tcp4(RIP1, 8080, CIP, 40000, "SA")
    v, out = run(eng, rp, 0.1)
    check(rp, out, src=VIP, sport=80)
    p = tcp4(CIP, 40000, VIP, 80, "A", payload=b"GET /")
    v, out = run(eng, p, 0.2)
    check(p, out, dst=RIP1, dport=8080)
    (c,) = conns(eng)
    assert c.state == "ESTABLISHED"
    (t,) = templates(eng)
    assert t.state == "ASSURED"          # a controlled connection reached ESTABLISHED


def test_udp_datagrams_from_new_ports_follow_the_template():
    svc = persistent(IPPROTO_UDP, VIP, 53, [(RIP1, 53, 1), (RIP2, 53, 1), (RIP3, 53, 1)],
                     timeout=30)
    eng = engine_with(svc)
    dests = set()
    for i in range(6):
        v, out = run(eng, udp4(CIP, 5000 + i, VIP, 53), float(i))
        assert v == V_FORWARD
        dests.add(dst_of(out))
    assert len(dests) == 1
    other = run(eng, udp4("198.51.100.7", 5000, VIP, 53), 6.0)[1]
    assert dst_of(other) not in dests                  # rr moved on for a new client
    (t,) = [r for r in templates(eng) if r.caddr == ip(CIP)]
    assert t[:7] == (IPPROTO_UDP, ip(CIP), 0, ip(VIP), 53, ip(dests.pop()), 53)
    assert t.state == "NONE" and t.expires == 35.0


# ------------------------------------------------------------------ netmask

def test_clients_of_one_slash24_share_a_template():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1), (RIP3, 80, 1)],
                     netmask=0xFFFFFF00)
    eng = engine_with(svc)
    a = syn(eng, "192.0.2.10", 1000, 0.0)
    assert syn(eng, "192.0.2.77", 1000, 1.0) == a
    assert syn(eng, "192.0.2.250", 2000, 2.0) == a
    b = syn(eng, "192.0.3.10", 1000, 3.0)              # another /24: rr's next server
    assert b != a
    ts = sorted(templates(eng), key=lambda r: r.caddr)
    assert [(r.caddr, r.cport, r.daddr) for r in ts] == [(ip("192.0.2.0"), 0, ip(a)),
                                                (ip("192.0.3.0"), 0, ip(b))]
    assert svc.find_dest(ip(a), 80).persistconns == 1
    assert svc.find_dest(ip(b), 80).persistconns == 1
    assert sum(d.persistconns for d in svc.dests) == 2


def test_ipv6_prefix_length():
    svc = persistent(IPPROTO_TCP, VIP6, 443, [(RIP6_1, 443, 1), (RIP6_2, 443, 1)],
                     netmask=64)
    eng = engine_with(svc)
    a = syn(eng, CIP6, 1000, 0.0, vip=VIP6, vport=443, mk=tcp6)          # 2001:db8:c::10
    assert syn(eng, "2001:db8:c::ffff:1", 1001, 1.0, vip=VIP6, vport=443, mk=tcp6) == a
    assert syn(eng, "2001:db8:c:0:1::2", 1002, 2.0, vip=VIP6, vport=443, mk=tcp6) == a
    b = syn(eng, "2001:db8:d::10", 1000, 3.0, vip=VIP6, vport=443, mk=tcp6)
    assert b != a
    keys = sorted(r.caddr for r in templates(eng))
    assert keys == [ip("2001:db8:c::"), ip("2001:db8:d::")]
    # a /128 service keys each client on its own
    svc.netmask = 128
    c = syn(eng, "2001:db8:c::77", 1, 4.0, vip=VIP6, vport=443, mk=tcp6)
    assert ip("2001:db8:c::77") in {r.caddr for r in templates(eng)}
    assert c in (RIP6_1, RIP6_2)


def test_full_address_is_still_what_the_scheduler_hashes():
    """-M only keys the template; sh still hashes the client's own address."""
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1), (RIP3, 80, 1)],
                     sched="sh", netmask=0xFFFFFF00)
    eng = engine_with(svc)
    got = syn(eng, "192.0.2.77", 1, 0.0)
    assert ip(got) == svc.sched.schedule(ip("192.0.2.77"), 1).addr


# ------------------------------------------------------------------ lifetime

def test_template_expires_after_its_timeout_when_nothing_is_live():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1)], timeout=360)
    eng = engine_with(svc)
    establish(eng, CIP, 40000, 0.0)
    run(eng, tcp4(CIP, 40000, VIP, 80, "R"), 1.0)      # CLOSE: 10 s
    d = svc.dests[0]
    tick(eng, 0, 11)
    assert conns(eng) == [] and d.persistconns == 1 and len(eng) == 1
    assert templates(eng, 359.9)
    tick(eng, 11, 359)
    assert len(eng) == 1
    tick(eng, 359, 360)
    assert len(eng) == 0 and d.persistconns == 0
    assert templates(eng) == []


def test_template_retried_every_60s_while_it_controls_a_connection():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)], timeout=100)
    eng = engine_with(svc)
    a = establish(eng, CIP, 40000, 0.0)                 # ESTABLISHED: 900 s
    tick(eng, 0, 99)
    assert templates(eng)[0].expires == 100.0
    tick(eng, 99, 100)                                  # due, but it controls a connection
    (t,) = templates(eng)
    assert t.expires == 160.0 and t.state == "ASSURED"
    tick(eng, 100, 160)
    assert templates(eng)[0].expires == 220.0
    # a new connection through the template restarts it -- to 60 s now, as
    # the kernel's "expire later" left the template's timeout at 60 s
    assert establish(eng, CIP, 40001, 200.0) == a
    assert templates(eng)[0].expires == 260.0
    tick(eng, 160, 239)
    run(eng, tcp4(CIP, 40000, VIP, 80, "R"), 240.0)     # both close (10 s)
    run(eng, tcp4(CIP, 40001, VIP, 80, "R"), 240.0)
    tick(eng, 239, 250)
    assert conns(eng) == []
    (t,) = templates(eng)
    assert t.expires == 260.0
    tick(eng, 250, 259)
    assert len(eng) == 1
    tick(eng, 259, 260)                                 # nothing to control: it expires
    assert len(eng) == 0 and all(d.persistconns == 0 for d in svc.dests)


def test_lazy_lookup_retries_a_due_template_that_controls_connections():
    """Between sweeps the lookup itself does what the timer would."""
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)], timeout=100)
    eng = engine_with(svc)
    a = syn(eng, CIP, 1, 0.0)
    run(eng, tcp4(a, 80, CIP, 1, "SA"), 0.1)
    run(eng, tcp4(CIP, 1, VIP, 80, "A"), 0.2)
    # no sweep at all: at 130 the template (due at 100) is live through its
    # connection; the listing shows the next retry, 160
    assert templates(eng, 130.0)[0].expires == 160.0
    assert syn(eng, CIP, 2, 130.0) == a
    assert templates(eng)[0].expires == 190.0                # restarted to 60 s at 130


def test_the_new_persistence_timeout_applies_to_new_templates_only():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1)], timeout=100)
    eng = engine_with(svc)
    syn(eng, CIP, 1, 0.0)
    svc.timeout = 500                                   # -E ... -p 500
    eng.set_services([svc])
    syn(eng, CIP, 2, 10.0)
    assert templates(eng)[0].expires == 110.0
    syn(eng, "198.51.100.1", 1, 10.0)
    assert sorted(r.expires for r in templates(eng)) == [110.0, 510.0]


# ------------------------------------------------------------------ counters

def test_counters_persistconns_active_inactive_conns():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)])
    eng = engine_with(svc)
    a = establish(eng, CIP, 1, 0.0)
    syn(eng, CIP, 2, 1.0)                               # SYN_RECV
    establish(eng, CIP, 3, 2.0)
    run(eng, tcp4(CIP, 3, VIP, 80, "R"), 2.5)           # CLOSE: inactive
    da = svc.find_dest(ip(a), 80)
    db = [d for d in svc.dests if d is not da][0]
    assert (da.persistconns, da.activeconns, da.inactconns) == (1, 2, 1)
    assert (db.persistconns, db.activeconns, db.inactconns) == (0, 0, 0)
    assert da.stats.conns == svc.stats.conns == eng.stats.conns == 3   # not the template
    assert len(eng) == 4                                                # 3 entries + 1 template
    tick(eng, 0, 13)                                                    # CLOSE gone (12.5)
    assert (da.persistconns, da.activeconns, da.inactconns) == (1, 2, 0)
    assert len(eng.entry_objects()) == 3
    (t,) = [e for e in eng.entry_objects() if isinstance(e, Template)]
    assert t.n_control == 2


def test_a_template_does_not_count_toward_the_overload_threshold():
    svc = persistent(IPPROTO_TCP, VIP, 80, [])
    d1 = add_dest(svc, RIP1, 80, 1, u_threshold=2)
    eng = engine_with(svc)
    syn(eng, CIP, 1, 0.0)
    assert d1.persistconns == 1 and d1.inactconns + d1.activeconns == 1
    assert not d1.overloaded
    syn(eng, CIP, 2, 0.0)
    assert d1.overloaded                                # 2 connections, the template aside


# ------------------------------------------------------------------ listing

def test_entries_and_the_connection_listing_show_templates():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)], timeout=360,
                     netmask=0xFFFFFF00)
    eng = engine_with(svc)
    syn(eng, CIP, 40000, 1.0)
    rows = eng.entries()
    assert (IPPROTO_TCP, ip("192.0.2.0"), 0, ip(VIP), 80, ip(RIP1), 8080, "NONE", 361.0) in rows
    text = listing.list_connections(rows, now=1.0)
    assert text.splitlines()[2:] == [
        "TCP 01:00  SYN_RECV    192.0.2.10:40000   10.0.0.100:80      10.1.0.1:8080",
        "TCP 06:00  NONE        192.0.2.0:0        10.0.0.100:80      10.1.0.1:8080",
    ]


def test_port_21_templates_have_vport_and_dport_0():
    svc = persistent(IPPROTO_TCP, VIP, 21, [(RIP1, 2121, 1), (RIP2, 2121, 1)])
    eng = engine_with(svc)
    a = syn(eng, CIP, 1, 0.0, vport=21)
    assert syn(eng, CIP, 2, 1.0, vport=21) == a
    (t,) = templates(eng)
    assert t[:7] == (IPPROTO_TCP, ip(CIP), 0, ip(VIP), 0, ip(a), 0)
    assert [c.dport for c in conns(eng)] == [2121, 2121]


# ------------------------------------------------------------------ invalid templates

def test_deleted_destination_template_is_not_used():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)], timeout=100)
    eng = engine_with(svc)
    a = syn(eng, CIP, 1, 0.0)
    da = svc.find_dest(ip(a), 80)
    del_dest(svc, da)
    eng.set_services([svc])
    b = syn(eng, CIP, 2, 5.0)
    assert b != a
    db = svc.find_dest(ip(b), 80)
    ts = sorted(templates(eng), key=lambda r: r.vport)
    # the invalid template lives on, detached as the kernel shows it (vport/dport 65535)
    assert [(r.vport, r.daddr, r.dport, r.expires) for r in ts] == [(80, ip(b), 80, 105.0),
                                                      (65535, ip(a), 65535, 100.0)]
    assert da.persistconns == 1 and db.persistconns == 1
    assert syn(eng, CIP, 3, 6.0) == b                  # the new template rules
    # the deleted server comes back (-a revives it from the trash): the
    # detached template stays detached
    da.available = True
    svc.dests = [da] + svc.dests
    svc.sched.add_dest(da)
    eng.set_services([svc])
    assert syn(eng, CIP, 4, 7.0) == b
    tick(eng, 0, 100)
    assert da.persistconns == 0 and db.persistconns == 1
    assert [r.daddr for r in templates(eng)] == [ip(b)]


def test_deleted_service_then_recreated_does_not_use_old_templates():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1)], timeout=100)
    eng = engine_with(svc)
    syn(eng, CIP, 1, 0.0)
    old = svc.dests[0]
    old.available = False                               # -D: its destinations are trashed
    svc2 = persistent(IPPROTO_TCP, VIP, 80, [(RIP2, 80, 1)], timeout=100)
    eng.set_services([svc2])
    assert syn(eng, CIP, 2, 1.0) == RIP2


def test_weight_zero_keeps_its_templates_by_default():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)])
    eng = engine_with(svc)
    a = syn(eng, CIP, 1, 0.0)
    d = svc.find_dest(ip(a), 80)
    d.weight = 0
    svc.sched.upd_dest(d)
    eng.set_services([svc])
    assert syn(eng, CIP, 2, 1.0) == a                   # quiesced, still persistent
    assert syn(eng, "198.51.100.1", 1, 1.0) != a        # new clients avoid it


def test_expire_quiescent_template_reschedules_weight_zero():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)])
    eng = engine_with(svc, expire_quiescent_template=True)
    a = syn(eng, CIP, 1, 0.0)
    d = svc.find_dest(ip(a), 80)
    d.weight = 0
    svc.sched.upd_dest(d)
    eng.set_services([svc])
    b = syn(eng, CIP, 2, 1.0)
    assert b != a
    assert {(r.vport, r.daddr) for r in templates(eng)} == {(80, ip(b)), (65535, ip(a))}
    # the first connection still runs to its (weight-0) server
    v, out = run(eng, tcp4(CIP, 1, VIP, 80, "A"), 2.0)
    assert v == V_FORWARD and dst_of(out) == a


# ------------------------------------------------------------------ reuse, -E, limit

def test_syn_on_a_controlled_time_wait_entry_is_not_a_new_connection():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)])
    eng = engine_with(svc)
    a = syn(eng, CIP, 1, 0.0)
    run(eng, tcp4(a, 80, CIP, 1, "SA"), 0.1)
    run(eng, tcp4(CIP, 1, VIP, 80, "A"), 0.2)
    run(eng, tcp4(CIP, 1, VIP, 80, "FA"), 1.0)          # ES -> CLOSE_WAIT
    run(eng, tcp4(a, 80, CIP, 1, "FA"), 1.1)            # CLOSE_WAIT -> TIME_WAIT
    (e,) = [x for x in eng.entry_objects() if not isinstance(x, Template)]
    assert conns(eng)[0].state == "TIME_WAIT"
    assert syn(eng, CIP, 1, 2.0) == a
    (e2,) = [x for x in eng.entry_objects() if not isinstance(x, Template)]
    assert e2 is e and conns(eng)[0].state == "SYN_RECV"   # the same entry, moved by the table
    assert svc.stats.conns == 1
    # without persistence the same SYN is a new connection (conn_reuse_mode)
    svc2 = make_service(IPPROTO_TCP, VIP, 81, [(RIP1, 80, 1)])
    eng.set_services([svc, svc2])
    syn(eng, CIP, 9, 3.0, vport=81)
    run(eng, tcp4(RIP1, 80, CIP, 9, "SA"), 3.1)
    run(eng, tcp4(CIP, 9, VIP, 81, "A"), 3.2)
    run(eng, tcp4(CIP, 9, VIP, 81, "FA"), 3.3)
    run(eng, tcp4(RIP1, 80, CIP, 9, "FA"), 3.4)
    syn(eng, CIP, 9, 4.0, vport=81)
    assert svc2.stats.conns == 2


def test_switching_persistence_off_leaves_templates_to_expire():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)], timeout=100)
    eng = engine_with(svc)
    a = syn(eng, CIP, 1, 0.0)
    svc.flags &= ~SVC_F_PERSISTENT                      # -E without -p
    eng.set_services([svc])
    assert syn(eng, CIP, 2, 1.0) != a                   # rr, no template consulted
    assert len(templates(eng)) == 1
    tick(eng, 0, 100)
    assert templates(eng) == [] and all(d.persistconns == 0 for d in svc.dests)


def test_templates_count_toward_max_entries():
    svc = persistent(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1), (RIP2, 80, 1)])
    eng = engine_with(svc, max_entries=3)
    syn(eng, CIP, 1, 0.0)                               # entry + template
    assert len(eng) == 2
    syn(eng, CIP, 2, 0.0)                               # through the template: one more
    assert len(eng) == 3
    v, _ = run(eng, tcp4("198.51.100.1", 1, VIP, 80, "S"), 0.0)
    assert v == V_DROP and eng.last_reason == "conn_limit"
    eng.max_entries = 4
    v, _ = run(eng, tcp4("198.51.100.1", 1, VIP, 80, "S"), 0.0)
    assert v == V_DROP and eng.last_reason == "conn_limit"   # needs room for two
    eng.max_entries = 5
    assert syn(eng, "198.51.100.1", 1, 0.0) in (RIP1, RIP2)
    assert len(eng) == 5


# ------------------------------------------------------------------ helpers

def test_mask6_and_retry_expiry():
    from userlb.dataplane.conntrack import RETRY, mask6, retry_expiry
    a = ip("2001:db8:c:d:e:f:1:2")
    assert mask6(a, 128) == a
    assert mask6(a, 64) == ip("2001:db8:c:d::")
    assert mask6(a, 52) == ip("2001:db8:c::")
    assert mask6(a, 1) == ip("::")
    t = Template(0, None, 10.0, 100)                    # due at 110
    assert retry_expiry(t, 110.0) == 110.0 + RETRY
    assert retry_expiry(t, 169.9) == 170.0
    assert retry_expiry(t, 170.0) == 230.0
