"""mhs scheduler: the scenarios S1-S8 of docs/mhs-spec.md and the rules behind them,
through the Python API.  Packets go through the TEST-ONLY entry model
ToyDirector (test_sched_mhs_helpers.py) where the "entry?" column matters.

Keys are searched programmatically: expected old/cand tables are computed
with maglev.build over the canonical order, and client addresses are
searched until one hashes (kernel mh hash, no mhs code) to a wanted slot.
"""
import json
import pathlib

import pytest

from helpers.mhs import (
    ACK,
    FIN,
    RST,
    SYN,
    A,
    B,
    C,
    D,
    Director,
    ToyDirector,
    canonical,
    ep,
    eps,
    expected_table,
    ip,
    key_where,
    slot_of,
)
from userlb.errors import ConfigError
from userlb.model import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    SVC_F_SCHED3,
)
from userlb.sched import base, maglev
from userlb.sched.mhs import MHSScheduler, canonical_order

UDP = IPPROTO_UDP
T = 900          # docs/mhs-spec.md scenarios: default timeouts

ABC = expected_table({A: 1, B: 1, C: 1})
AC = expected_table({A: 1, C: 1})
ACD = expected_table({A: 1, C: 1, D: 1})


def forwarding(dests=(A, B, C)):
    """A director configured at t=0 that has forwarded one packet at t=10."""
    d = ToyDirector(dests)
    k, _ = key_where(lambda s: True, start=ip("172.16.0.1"))
    dest, entry = d.packet(k, 1, SYN, now=10)
    assert dest is not None and not entry
    assert d.svc.forwarded
    return d


# ---------------------------------------------------------------- registry, config

def test_registered_and_stateless():
    assert base.get("mhs") is MHSScheduler
    assert MHSScheduler.stateless is True
    d = Director([A])
    assert base.create("mhs", d.svc, d.clock).name == "mhs"


def test_persistence_rejected():
    d = Director()
    d.svc.flags |= SVC_F_PERSISTENT
    with pytest.raises(ConfigError, match="persistence"):
        MHSScheduler(d.svc, d.clock)


@pytest.mark.parametrize("m", maglev.PRIMES[:6])
def test_table_size_option(m):
    d = Director([A, B, C], options={"mh_table_size": m})
    assert d.m == m
    assert eps(d.sched.table_endpoints()) == expected_table({A: 1, B: 1, C: 1}, m)
    for a in range(ip("192.168.1.1"), ip("192.168.1.1") + 200):
        assert ep(d.sched.schedule(a, 0)) == expected_table({A: 1, B: 1, C: 1}, m)[slot_of(a, 0, m)]


@pytest.mark.parametrize("bad", [250, 4096, "x", 0])
def test_table_size_invalid(bad):
    with pytest.raises(ConfigError, match="mh_table_size"):
        Director(options={"mh_table_size": bad})


def test_default_size_and_T():
    d = Director([A])
    assert d.m == 4093
    assert d.sched.T == T


# ---------------------------------------------------------------- rule 3: table

def test_table_is_mh_build_in_canonical_order_any_add_order():
    for order in ([A, B, C], [C, B, A], [B, C, A]):
        d = Director(order)
        assert eps(d.sched.table_endpoints()) == ABC
        assert eps(d.sched.old_endpoints()) == ABC


def test_canonical_order_v4_before_v6_then_port():
    v6a = (ip("2001:db8::1"), 80)
    v6b = (ip("::1"), 443)
    eps = [v6a, (ip("10.0.0.2"), 80), v6b, (ip("10.0.0.1"), 81), (ip("10.0.0.1"), 80),
           (ip("255.255.255.255"), 1)]
    assert canonical_order(eps) == [(ip("10.0.0.1"), 80), (ip("10.0.0.1"), 81),
                                    (ip("10.0.0.2"), 80), (ip("255.255.255.255"), 1),
                                    v6b, v6a]
    assert canonical_order(eps) == canonical(eps)


def test_current_weight_used():
    d = Director([(A[0], A[1], 3), B, (C[0], C[1], 2)])
    assert eps(d.sched.table_endpoints()) == expected_table({A: 3, B: 1, C: 2})


def _vectors():
    p = pathlib.Path(__file__).parents[1] / "vectors" / "mh_vectors.json"
    return json.loads(p.read_text())["scenarios"]


@pytest.mark.parametrize("sc", _vectors(), ids=lambda s: s["name"])
def test_kernel_vectors_lookup_slot(sc):
    """The mhs slot of a packet is the kernel mh lookup slot (rule 3)."""
    d = Director(options={"mh_table_size": int(sc["table_size"])}, flags=0)
    for lk in sc["lookups"]:
        c = ip(lk["client"])
        d.svc.flags = 0
        assert d.sched.slot(c, lk["cport"]) == lk["bucket_nport"]
        d.svc.flags = SVC_F_SCHED2
        assert d.sched.slot(c, lk["cport"]) == lk["bucket_port"]


def test_kernel_vectors_table_when_kernel_order_is_canonical():
    """Where the kernel walked its destinations in canonical order with
    weight == last_weight, the mhs table equals the kernel's table."""
    checked = 0
    for sc in _vectors():
        dests = sc["dests"]
        order = [dests[i] for i in sc["kernel_list_order"] if dests[i]["last_weight"] > 0]
        walk = [(ip(x["addr"]), x["port"]) for x in order]
        if (walk != canonical(walk) or any(x["weight"] != x["last_weight"] or x["overloaded"]
                                         for x in dests)):
            continue
        d = Director([(ip(x["addr"]), x["port"], x["weight"]) for x in dests],
                     options={"mh_table_size": int(sc["table_size"])})
        kernel = [(ip(dests[j]["addr"]), dests[j]["port"]) if j >= 0 else None
                  for j in sc["table"]]
        assert eps(d.sched.table_endpoints()) == kernel
        for lk in sc["lookups"]:
            for flags, col in ((0, "none"), (SVC_F_SCHED2, "mh-port")):
                d.svc.flags = flags
                want = lk[col]
                want = None if want is None else (ip(dests[want]["addr"]), dests[want]["port"])
                assert ep(d.sched.schedule(ip(lk["client"]), lk["cport"])) == want
        checked += 1
    assert checked >= 1


# ---------------------------------------------------------------- rule 2: flags

def test_port_flag_adds_source_port():
    d = Director([A, B, C], flags=SVC_F_SCHED2)
    c = ip("192.168.7.7")
    slots = {d.sched.slot(c, p) for p in range(1000, 1100)}
    assert len(slots) > 50
    for p in range(1000, 1100):
        assert d.sched.slot(c, p) == slot_of(c, p)
        assert ep(d.sched.schedule(c, p)) == ABC[slot_of(c, p)]
        assert ep(d.sched.schedule_sl(c, p, True, True, 0)[0]) == ABC[slot_of(c, p)]


@pytest.mark.parametrize("flags", [0, SVC_F_SCHED1, SVC_F_SCHED3, SVC_F_SCHED1 | SVC_F_SCHED3])
def test_other_flags_no_effect(flags):
    d = Director([A, B, C], flags=flags)
    c = ip("192.168.7.7")
    for p in range(1000, 1050):
        assert d.sched.slot(c, p) == slot_of(c, 0)
        assert ep(d.sched.schedule(c, p)) == ABC[slot_of(c, 0)]


def test_ipv6_service():
    v6 = [(ip("2001:db8::1"), 80), (ip("2001:db8::2"), 80), (ip("2001:db8::3"), 443)]
    d = Director(v6[::-1], vip=ip("2001:db8::100"))
    exp = expected_table({e: 1 for e in v6})
    assert eps(d.sched.table_endpoints()) == exp
    c = ip("2001:db8:1::42")
    assert ep(d.sched.schedule(c, 0)) == exp[slot_of(c, 0)]


# ---------------------------------------------------------------- rule 5: start

def test_changes_before_forwarding_apply_to_both_tables():
    d = Director([A, B, C], t=5)
    d.at(100).remove(B)
    d.at(200).add(D)
    d.at(300).edit(A, 0)
    assert d.sched.unstable_slots() == 0
    exp = expected_table({C: 1, D: 1})
    assert eps(d.sched.table_endpoints()) == exp
    assert eps(d.sched.old_endpoints()) == exp


def test_no_destination_does_not_count_as_forwarded():
    d = ToyDirector([])
    assert d.packet(ip("192.168.0.9"), 5, SYN, now=1) == (None, False)
    assert not d.svc.forwarded
    d.at(2).add(A)
    assert d.sched.unstable_slots() == 0


# ---------------------------------------------------------------- S1

def test_S1_steady_no_state():
    d = forwarding()
    k, s = key_where(lambda s: ABC[s] == B)
    for i, (flags, proto) in enumerate([(SYN, IPPROTO_TCP), (ACK, IPPROTO_TCP),
                                        (FIN | ACK, IPPROTO_TCP), (RST, IPPROTO_TCP),
                                        (0, UDP), (ACK | 0x08, IPPROTO_TCP)]):
        assert d.packet(k, 40000 + i, flags, proto, now=20 + i) == (B, False)
    assert d.entries == {}
    assert d.sched.unstable_slots() == 0


# ---------------------------------------------------------------- S2

def s2():
    d = forwarding()
    d.at(1000).remove(B)
    return d


def keys_BC(n, exclude=()):
    """n keys on distinct slots with old=B, cand=C (after removing B)."""
    out, used = [], set(exclude)
    for _ in range(n):
        k, s = key_where(lambda s: ABC[s] == B and AC[s] == C, exclude_slots=used)
        used.add(s)
        out.append(k)
    return out


def test_S2_remove_backend():
    d = s2()
    n_unstable = sum(1 for i in range(d.m) if ABC[i] != AC[i])
    assert n_unstable > 0 and d.sched.unstable_slots(1000) == n_unstable
    k1, k2, k3, k5 = keys_BC(4)
    kA, _ = key_where(lambda s: ABC[s] == A and AC[s] == A)
    assert d.packet(k1, 1111, ACK, now=1001) == (B, True)
    assert d.packet(k2, 2222, SYN, now=1002) == (C, True)
    assert d.packet(k3, 3333, 0, UDP, now=1003) == (C, False)
    assert d.packet(kA, 4444, SYN, now=1004) == (A, False)
    # rule 8: later packets of the same flows follow their entries
    assert d.packet(k2, 2222, ACK, now=1005) == (C, True)     # table alone says B for an ACK
    assert d.packet(k1, 1111, ACK | FIN, now=1006) == (B, True)
    # a fresh key of a B->C slot, after T: merged lazily at lookup
    assert d.sched.unstable_slots(1899.9) == n_unstable
    assert d.packet(k5, 5555, SYN, now=1901) == (C, False)
    assert d.packet(k5, 5556, ACK, now=1901) == (C, False)
    assert d.sched.unstable_slots(1901) == 0


def test_S2_removed_backend_dest_object_kept():
    d = forwarding()
    b = d.svc.find_dest(*B)
    d.at(1000).remove(B)
    (k,) = keys_BC(1)
    dest, need = d.sched.schedule_sl(k, 1, True, False, 1001)
    assert dest is b and need
    assert not dest.available


# ---------------------------------------------------------------- S3

def test_S3_flap_returns_all_stable():
    d = s2()
    k1, k2 = keys_BC(2)
    assert d.packet(k1, 1111, ACK, now=1001) == (B, True)
    assert d.packet(k2, 2222, SYN, now=1002) == (C, True)
    d.at(1010).add(B)
    assert d.sched.unstable_slots(1010) == 0
    assert eps(d.sched.table_endpoints()) == ABC and eps(d.sched.old_endpoints()) == ABC
    kB, _ = key_where(lambda s: ABC[s] == B, start=ip("192.168.100.1"))
    assert d.packet(kB, 7, SYN, now=1011) == (B, False)
    assert d.packet(kB, 8, ACK, now=1011) == (B, False)
    # earlier entries keep their backends
    assert d.packet(k1, 1111, ACK, now=1012) == (B, True)
    assert d.packet(k2, 2222, ACK, now=1012) == (C, True)
    assert d.packet(k2, 2223, ACK, now=1012) == (B, False)   # same key, other flow


def test_S3_readded_backend_uses_new_dest_object():
    d = s2()
    (k,) = keys_BC(1)
    b2 = d.at(1010).add(B)
    assert d.sched.schedule_sl(k, 1, True, False, 1011) == (b2, False)
    assert d.sched.schedule(k, 1) is b2


# ---------------------------------------------------------------- S4

S4_START = ip("192.168.0.1")


def s4_slot_key(start=S4_START):
    return key_where(lambda s: ABC[s] == B and AC[s] == C and ACD[s] == D, start=start)


def test_S4_no_timer_reset():
    d = s2()
    d.at(1500).add(D)
    k, s = s4_slot_key()
    assert d.packet(k, 1, SYN, now=1899) == (D, True)
    assert d.packet(k, 2, ACK, now=1899) == (B, True)
    assert d.packet(k, 3, SYN, now=1900) == (D, False)     # merged: timer from t=1000
    assert d.packet(k, 4, ACK, now=1900) == (D, False)
    # entries survive the merge
    assert d.packet(k, 2, ACK, now=1901) == (B, True)
    assert d.packet(k, 1, ACK, now=1901) == (D, True)


def test_S4_slot_made_unstable_by_second_change_has_own_timer():
    d = s2()
    d.at(1500).add(D)
    k, s = key_where(lambda s: ABC[s] == A and AC[s] == A and ACD[s] == D)
    assert d.packet(k, 1, SYN, now=2399) == (D, True)
    assert d.packet(k, 2, ACK, now=2399) == (A, True)
    assert d.packet(k, 3, ACK, now=2400) == (D, False)
    d.sched.sweep(2400)
    assert d.sched.unstable_slots(2400) == 0


# ---------------------------------------------------------------- S5

def test_S5_expired_merged_at_change_new_grace_period():
    d = s2()
    d.at(2000).add(D)
    k, s = s4_slot_key()
    assert d.packet(k, 1, SYN, now=2000.5) == (D, True)
    assert d.packet(k, 2, ACK, now=2000.5) == (C, True)
    assert d.sched.unstable(2000.5)[0][3] == 2000      # timer set at the change
    assert d.packet(k, 3, ACK, now=2899.9) == (C, True)
    assert d.packet(k, 4, ACK, now=2900) == (D, False)


# ---------------------------------------------------------------- S6

def test_S6_all_weight_zero():
    d = forwarding([A, B])
    AB = expected_table({A: 1, B: 1})
    d.at(1000).edit(A, 0)
    d.at(1000).edit(B, 0)
    assert eps(d.sched.table_endpoints()) == [None] * d.m
    assert d.sched.unstable_slots(1000) == d.m
    k, _ = key_where(lambda s: AB[s] == A)
    assert d.packet(k, 1, SYN, now=1001) == (None, False)
    assert d.packet(k, 2, ACK, now=1001) == (A, True)
    assert d.packet(k, 3, 0, UDP, now=1001) == (A, True)      # "any other packet"
    assert d.sched.schedule(k, 4) is None
    # after T the slots merge to empty: nothing for anybody
    assert d.packet(k, 5, ACK, now=1900) == (None, False)
    assert d.packet(k, 2, ACK, now=1900) == (A, True)         # entries still live


def test_all_removed_then_added_o_empty_c_set():
    d = forwarding([A, B])
    d.at(1000).remove(A)
    d.at(1000).remove(B)
    assert d.sched.sweep(1900) == d.m
    assert eps(d.sched.old_endpoints(1900)) == [None] * d.m
    d.at(2000).add(C)
    assert d.sched.unstable_slots(2000) == d.m
    k = ip("192.168.3.3")
    assert d.packet(k, 1, SYN, now=2001) == (C, True)
    assert d.packet(k, 2, ACK, now=2001) == (C, True)
    assert d.packet(k, 3, 0, UDP, now=2001) == (C, True)
    assert d.packet(k, 4, ACK, now=2900) == (C, False)


def test_both_empty():
    d = Director([])
    for syn in (True, False):
        for tcp in (True, False):
            assert d.sched.schedule_sl(ip("1.2.3.4"), 5, tcp, syn, 0) == (None, False)
    assert d.sched.schedule(ip("1.2.3.4"), 5) is None


# ---------------------------------------------------------------- S7

def test_S7_weight_zero_equals_removal():
    d0 = forwarding()
    dr = forwarding()
    d0.at(1000).edit(B, 0)
    dr.at(1000).remove(B)
    assert eps(d0.sched.table_endpoints()) == AC == eps(dr.sched.table_endpoints())
    assert eps(d0.sched.old_endpoints(1000)) == ABC == eps(dr.sched.old_endpoints(1000))
    assert d0.sched.unstable_slots(1000) == dr.sched.unstable_slots(1000)
    for a in range(ip("192.168.5.1"), ip("192.168.5.1") + 300):
        for tcp, syn in ((True, True), (True, False), (False, False)):
            r0 = d0.sched.schedule_sl(a, 1, tcp, syn, 1001)
            rr = dr.sched.schedule_sl(a, 1, tcp, syn, 1001)
            assert (ep(r0[0]), r0[1]) == (ep(rr[0]), rr[1])
    # weight back to 1: stable at once, like a flap that returns
    d0.at(1010).edit(B, 1)
    assert d0.sched.unstable_slots(1010) == 0


def test_weight_change_only_moves_needed_slots():
    d = forwarding()
    d.at(1000).edit(C, 2)
    exp = expected_table({A: 1, B: 1, C: 2})
    assert eps(d.sched.table_endpoints()) == exp
    assert d.sched.unstable_slots(1000) == sum(1 for i in range(d.m) if exp[i] != ABC[i])


# ---------------------------------------------------------------- S8

def test_S8_three_directors_agree():
    d1 = ToyDirector([A, B, C, D])
    d2 = ToyDirector([D, C, B, A])
    d3 = ToyDirector([B, D, A, C], flags=0)
    for d in (d1, d2, d3):
        d.svc.flags = SVC_F_SCHED2
    # d3 forwards, then flaps B (remove and re-add) and C's weight
    d3.packet(ip("172.16.0.1"), 1, SYN, now=10)
    d3.at(100).remove(B)
    assert d3.sched.unstable_slots(100) > 0
    d3.at(150).edit(C, 0)
    d3.at(200).add(B)
    d3.at(250).edit(C, 1)
    assert d3.sched.unstable_slots(250) == 0
    exp = expected_table({A: 1, B: 1, C: 1, D: 1})
    for d in (d1, d2, d3):
        assert eps(d.sched.table_endpoints()) == exp
    base_addr = ip("198.18.0.1")
    for n in range(10000):
        caddr, cport = base_addr + n * 7919, 1024 + (n * 31) % 64000
        syn = n % 2 == 0
        got = {ep(d.sched.schedule_sl(caddr, cport, True, syn, 300)[0]) for d in (d1, d2, d3)}
        assert len(got) == 1
        assert got == {exp[slot_of(caddr, cport)]}
    assert d1.entries == d2.entries == {}


# ---------------------------------------------------------------- timers, T, sweep

def test_T_from_timeouts_provider_reread_on_change():
    tos = [(60, 120, 300)]
    d = ToyDirector([A, B, C], timeouts=lambda: tos[0])
    assert d.sched.T == 120
    d.packet(ip("172.16.0.1"), 1, SYN, now=10)
    tos[0] = (1000, 120, 300)
    assert d.sched.T == 120              # not re-read until a change
    d.at(1000).remove(B)
    assert d.sched.T == 1000
    (k,) = keys_BC(1)
    assert d.packet(k, 1, ACK, now=1999) == (B, True)
    assert d.packet(k, 2, ACK, now=2000) == (C, False)


def test_T_change_applies_to_earlier_unstable_slots():
    tos = [(900, 120, 300)]
    d = forwarding()
    d.sched.timeouts = lambda: tos[0]
    d.at(1000).remove(B)
    tos[0] = (100, 200, 300)             # T = 200 from the next change on
    d.at(1100).add(D)                    # B->C slots keep since=1000
    k, s = s4_slot_key()
    assert d.sched.T == 200
    assert d.packet(k, 1, ACK, now=1199) == (B, True)
    assert d.packet(k, 2, ACK, now=1200) == (D, False)


def test_sweep_merges_like_lookup():
    d1, d2 = s2(), s2()
    assert d1.sched.sweep(1899) == 0
    assert d1.sched.sweep(1900) == sum(1 for i in range(d1.m) if ABC[i] != AC[i])
    assert d1.sched.unstable_slots(1900) == 0
    assert eps(d1.sched.old_endpoints(1900)) == AC == eps(d2.sched.old_endpoints(1900))
    for a in range(ip("192.168.9.1"), ip("192.168.9.1") + 300):
        r1 = d1.sched.schedule_sl(a, 1, True, False, 1950)
        r2 = d2.sched.schedule_sl(a, 1, True, False, 1950)
        assert (ep(r1[0]), r1[1]) == (ep(r2[0]), r2[1])


def test_unstable_listing():
    d = s2()
    lst = d.sched.unstable(1001)
    assert len(lst) == d.sched.unstable_slots(1001)
    for slot, o, c, since, until in lst:
        assert (ep(o), ep(c)) == (ABC[slot], AC[slot])
        assert since == 1000 and until == 1900
    assert d.sched.unstable(1900) == []


def test_change_at_time_zero_is_unstable():
    """Timers use a sentinel for 'stable', so a change at t=0 still counts."""
    d = Director([A, B, C], t=0)
    d.svc.forwarded = True
    d.remove(B)
    assert d.sched.unstable_slots(0) == sum(1 for i in range(d.m) if ABC[i] != AC[i])


def test_removed_backend_forgotten_after_merge():
    d = s2()
    d.sched.sweep(1900)
    d.at(1901).edit(A, 1)                # any change
    assert B not in d.sched._ids


def test_tools_api_like_mh():
    d = Director([A, B, C], flags=SVC_F_SCHED2, options={"mh_table_size": 509})
    assert d.sched.table_size == 509
    c = ip("192.168.44.1")
    assert d.sched.slot_of(c, 999) == slot_of(c, 999, 509)
    assert d.sched.slot_of(c, 999, port=False) == slot_of(c, 0, 509)
    d.svc.flags = 0
    assert d.sched.slot_of(c, 999, port=True) == slot_of(c, 999, 509)
    tab = d.sched.table_endpoints()
    assert all(x is d.svc.find_dest(x.addr, x.port) for x in tab)


def test_entry_expiry_falls_back_to_tables():
    """Conventions: an entry is gone at now == expires; the flow is then
    scheduled again (rule 9), here as a non-SYN on an unstable slot."""
    d = s2()
    (k,) = keys_BC(1)
    assert d.packet(k, 1, SYN, now=1002) == (C, True)        # SYN_RECV, 60 s
    assert d.packet(k, 2, SYN, now=1010) == (C, True)        # another flow, SYN_RECV
    assert d.packet(k, 1, ACK, now=1061.9) == (C, True)      # -> ESTABLISHED, 900 s
    assert d.live_entry((IPPROTO_TCP, k, 2), 1070) is None   # expired at 1070
    assert d.packet(k, 2, ACK, now=1070) == (B, True)        # rescheduled: old owner
    assert d.packet(k, 1, ACK, now=1961) == (C, True)        # kept by its entry after the merge
    assert d.packet(k, 3, ACK, now=1961) == (C, False)
