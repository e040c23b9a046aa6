"""IPVS's defense strategies through the engine (docs/ipvs.md §11):
drop_entry, drop_packet, secure_tcp, modes 0-3, driven by the entry budget."""
import pytest

from helpers.engine import CIP, RIP1, VIP, engine_with, make_service, run, tcp4
from userlb.dataplane import defense as D
from userlb.dataplane import tcpstate as T
from userlb.dataplane.engine import V_DROP, V_FORWARD
from userlb.dataplane.proto.tcp import TCP
from userlb.model import IPPROTO_TCP


@pytest.fixture(autouse=True)
def normal_tables():
    yield
    from userlb.dataplane.proto.tcp import set_secure
    set_secure(False)


def eng_small(max_entries=100, sched="rr"):
    svc = make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1)], sched=sched)
    eng = engine_with(svc)
    eng.max_entries = max_entries
    return eng


def syn_flood(eng, n, now=0.0, start=1000):
    out = []
    for i in range(n):
        v, _ = run(eng, tcp4(f"198.51.{(start + i) >> 8 & 255}.{(start + i) & 255}", 1024 + i,
                             VIP, 80, "S"), now)
        out.append(v)
    return out


def test_modes_and_levels():
    eng = eng_small(100)
    d = eng.defense
    d.set_amemthresh(10)
    for name in D.STRATEGIES:
        d.set_mode(name, 1)
    syn_flood(eng, 50)
    eng.expire(1.0)
    assert not d.short() and d.modes == {s: 1 for s in D.STRATEGIES}
    assert not d.dropentry and d.drop_rate == 0 and not d.secure
    syn_flood(eng, 45, start=5000)       # 95 entries: 5 free < 10
    d.update()
    assert d.short()
    assert d.modes == {s: 2 for s in D.STRATEGIES}
    assert d.dropentry and d.secure
    assert d.drop_rate == 10 // (10 - 5)
    assert TCP.next_in is T.SECURE_NEXT[T.INPUT]
    eng.ct.clear()
    d.update()
    assert d.modes == {s: 1 for s in D.STRATEGIES}
    assert TCP.next_in is T.NEXT[T.INPUT]
    with pytest.raises(ValueError):
        d.set_mode("drop_entry", 4)
    with pytest.raises(ValueError):
        d.set_mode("nope", 1)


def test_drop_entry_recovers_a_full_table_of_half_open_entries():
    eng = eng_small(2000)
    syn_flood(eng, 2000)
    assert len(eng) == 2000
    v, _ = run(eng, tcp4(CIP, 4000, VIP, 80, "S"), 1.0)
    assert v == V_DROP and eng.last_reason == "conn_limit"
    # without drop_entry the SYN_RECV entries stay until their 60 s timeout
    eng.expire(2.0)
    assert len(eng) == 2000
    eng.defense.set_mode("drop_entry", 1)
    eng.expire(3.0)                      # short -> mode 2, entries dropped
    assert eng.defense.modes["drop_entry"] == 2
    assert len(eng) < 2000 - 200
    v, _ = run(eng, tcp4(CIP, 4001, VIP, 80, "S"), 3.1)
    assert v == V_FORWARD
    for t in range(4, 12):
        eng.expire(float(t))
    assert len(eng) < 1000
    assert eng.defense.modes["drop_entry"] == 1     # budget fine again


def test_drop_entry_keeps_busy_established_entries():
    eng = eng_small(100)
    eng.defense.set_amemthresh(1000)    # always short
    eng.defense.set_mode("drop_entry", 3)
    for i in range(20):
        run(eng, tcp4(CIP, 2000 + i, VIP, 80, "S"), 0.0)
        run(eng, tcp4(CIP, 2000 + i, VIP, 80, "A"), 0.1)
    assert all(e.state == T.ESTABLISHED for e in eng.entry_objects())
    eng.expire(1.0)
    assert len(eng) == 20                # recent ESTABLISHED entries survive
    # idle > 60 s: one in two goes
    eng.defense.drop_entries(100.0)
    assert len(eng) == 10


def test_drop_packet_mode3_drops_one_in_am_droprate():
    eng = eng_small(10_000)
    eng.defense.set_mode("drop_packet", 3)
    vs = syn_flood(eng, 100)
    assert vs.count(V_DROP) == 10
    assert eng.drops["defense_drop"] == 10
    assert eng.defense.dropped_packets == 10
    eng.defense.set_mode("drop_packet", 0)
    assert syn_flood(eng, 50, start=3000).count(V_DROP) == 0


def test_drop_packet_spares_stateless_forwarding():
    eng = eng_small(10_000, sched="mhs")
    eng.defense.set_mode("drop_packet", 3)
    vs = syn_flood(eng, 50)
    assert vs.count(V_DROP) == 0 and len(eng) == 0


def test_secure_tcp_client_ack_does_not_establish():
    eng = eng_small(100)
    eng.defense.set_mode("secure_tcp", 3)
    run(eng, tcp4(CIP, 3000, VIP, 80, "S"), 0.0)
    run(eng, tcp4(CIP, 3000, VIP, 80, "A"), 0.1)
    (e,) = eng.entry_objects()
    assert e.state == T.SYN_RECV
    run(eng, tcp4(RIP1, 80, CIP, 3000, "SA"), 0.2)     # the real server's SYN-ACK
    assert e.state == T.SYNACK
    run(eng, tcp4(RIP1, 80, CIP, 3000, "A"), 0.3)
    assert e.state == T.ESTABLISHED
    eng.defense.set_mode("secure_tcp", 0)
    run(eng, tcp4(CIP, 3001, VIP, 80, "S"), 1.0)
    run(eng, tcp4(CIP, 3001, VIP, 80, "A"), 1.1)
    assert {x.state for x in eng.entry_objects()} == {T.ESTABLISHED}


def test_secure_table_differs_only_where_the_kernel_differs():
    diff = set()
    for d in range(2):
        for ev in range(4):
            for st in range(T.N_STATES):
                if T.TABLE[d][ev][st] != T.SECURE_TABLE[d][ev][st]:
                    diff.add((d, ev, st))
    assert (T.INPUT, T.EV_ACK, T.SYN_RECV) in diff
    assert (T.OUTPUT, T.EV_SYN, T.SYN_RECV) in diff
    assert len(diff) < 12


def test_adm_defense_options_through_the_control_socket():
    from helpers.control_server import ServedDirector
    from userlb.cli.adm import split_args
    assert split_args(["--defense", "drop_entry=1", "--amemthresh=50"]) == (
        None, {"settings": {"drop_entry": 1, "amemthresh": 50}}, [])
    for bad in (["--defense", "drop_entry=4"], ["--defense", "x=1"], ["--defense"],
                ["--amemthresh", "0"], ["--defense", "drop_entry=1", "-L"]):
        with pytest.raises(ValueError):
            split_args(bad)
    d = ServedDirector()
    try:
        out = d.ok("--show-settings").splitlines()
        assert "amemthresh = 1024" in out and "drop_entry = 0" in out
        out = d.ok("--defense", "drop_packet=3", "--defense", "secure_tcp=1",
                   "--amemthresh", "5").splitlines()
        assert {"drop_packet = 3", "secure_tcp = 1", "amemthresh = 5"} <= set(out)
        assert d.engine.defense.drop_rate == D.AM_DROPRATE
        rc, _, err = d.adm("--defense", "secure_tcp=9")
        assert rc == 2 and "secure_tcp" in err
    finally:
        d.close()
