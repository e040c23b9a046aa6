"""Connection table: keys, both directions, unlink accounting, the timing
wheel (property: the sweep removes exactly the expired entries)."""
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.engine import RIP1, VIP, ip, make_service
from userlb.dataplane import conntrack as CT
from userlb.dataplane import tcpstate as T
from userlb.model import IPPROTO_TCP


def xl():
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 8080, 1)])
    return CT.Xlate(svc, svc.dests[0])


def new_entry(table, x, cport, state, last, timeout):
    ik = CT.make_key(6, ip("192.0.2.1"), cport, x.vaddr, x.vport)
    ok = CT.make_key(6, x.daddr, x.dport, ip("192.0.2.1"), cport)
    e = CT.Entry(ik, ok, x, state, last, timeout)
    if T.IS_ACTIVE[state]:
        x.dest.activeconns += 1
    else:
        x.dest.inactconns += 1
    table.add(e)
    return e


def test_keys_round_trip_and_families_do_not_mix():
    k4 = CT.make_key(6, 0xC0000201, 40000, 0x0A000064, 80)
    assert k4 == CT.key4(6, 0xC0000201, 40000, 0x0A000064, 80)
    assert CT.split_key(k4) == (6, 0xC0000201, 40000, 0x0A000064, 80)
    a6, b6 = bytes(range(16)), bytes(range(16, 32))
    k6 = CT.make_key(17, a6, 1, b6, 2)
    assert CT.split_key(k6) == (17, a6, 1, b6, 2)
    assert k4 != k6
    # reply key of a flow is the packet key of the reply
    assert CT.make_key(6, 1, 2, 3, 4) != CT.make_key(6, 3, 4, 1, 2)


def test_xlate_fast_path_constants():
    x = xl()
    _, sd_in, pp_in, _, _ = x.fast_in           # the words of xmit/masq.py
    _, sd_out, pp_out, _, _ = x.fast_out
    va, da = ip(VIP), ip(RIP1)
    sd = 0xC0000201 << 32 | va
    assert sd + sd_in == 0xC0000201 << 32 | da
    pp = 40000 << 16 | 80
    assert pp + pp_in == 40000 << 16 | 8080
    sd = da << 32 | 0xC0000201
    assert sd + sd_out == va << 32 | 0xC0000201
    pp = 8080 << 16 | 40000
    assert pp + pp_out == 80 << 16 | 40000


def test_add_unlink_both_keys_and_counters():
    x = xl()
    t = CT.ConnTable(10)
    e = new_entry(t, x, 40000, T.ESTABLISHED, 0.0, 900)
    assert t.map[e.ikey] is e and t.map[e.okey] is e and len(t) == 1
    assert x.dest.activeconns == 1
    t.unlink(e)
    assert t.map == {} and len(t) == 0 and x.dest.activeconns == 0
    t.unlink(e)                      # idempotent
    assert len(t) == 0 and x.dest.activeconns == 0


def test_full():
    x = xl()
    t = CT.ConnTable(2)
    new_entry(t, x, 1, T.SYN_RECV, 0.0, 60)
    assert not t.full()
    new_entry(t, x, 2, T.SYN_RECV, 0.0, 60)
    assert t.full()


def test_reply_key_taken_over_by_newer_entry():
    """Two services sharing a real server and a client port: the newest entry
    owns the reply key; unlinking the older one does not remove it."""
    x = xl()
    t = CT.ConnTable(10)
    e1 = new_entry(t, x, 5, T.ESTABLISHED, 0.0, 900)
    e2 = CT.Entry(CT.make_key(6, ip("192.0.2.1"), 5, ip("10.0.0.101"), 80), e1.okey, x,
                  T.ESTABLISHED, 0.0, 900)
    x.dest.activeconns += 1
    t.add(e2)
    t.unlink(e1)
    assert t.map[e2.okey] is e2 and t.map[e2.ikey] is e2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 500), st.sampled_from([2, 10, 60, 120, 900, 300])),
                min_size=1, max_size=40),
       st.lists(st.floats(0, 3000), min_size=1, max_size=10))
def test_sweep_removes_exactly_expired(specs, sweeps):
    x = xl()
    t = CT.ConnTable(1000)
    entries = [new_entry(t, x, i + 1, T.CLOSE, last, tmo) for i, (last, tmo) in enumerate(specs)]
    for now in sorted(sweeps):
        t.sweep(now)
        for e in entries:
            linked = e.state != CT.DEAD
            if math.ceil(e.last + e.timeout) <= int(now):
                assert not linked          # due bucket swept: gone
            if not linked:
                assert now >= e.last + e.timeout         # never swept early
    assert len(t) == sum(1 for e in entries if e.state != CT.DEAD)
    assert x.dest.inactconns == len(t)


def test_sweep_handles_big_time_jumps():
    x = xl()
    t = CT.ConnTable(10)
    e = new_entry(t, x, 1, T.ESTABLISHED, 0.0, 900)
    t.sweep(5.0)
    assert len(t) == 1
    t.sweep(1e9)
    assert len(t) == 0 and e.state == CT.DEAD


def test_long_lived_entry_revisited_then_swept():
    x = xl()
    t = CT.ConnTable(10)
    e = new_entry(t, x, 1, T.ESTABLISHED, 0.0, 900)
    for now in range(1, 900):        # the driver sweeps every second
        t.sweep(float(now))
        assert e.state != CT.DEAD
    t.sweep(900.0)
    assert e.state == CT.DEAD and len(t) == 0


def test_entry_older_than_last_sweep_still_swept():
    """A packet time slightly behind the last sweep (clock read per batch)
    must not put an entry into an already swept bucket."""
    x = xl()
    t = CT.ConnTable(10)
    t.sweep(100.0)
    e = new_entry(t, x, 1, T.NONE, 97.5, 2)
    t.sweep(101.0)
    assert e.state == CT.DEAD
