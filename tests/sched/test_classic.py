"""The classic schedulers (rr, wrr, lc, wlc, sed, nq, fo, ovf) against
hand-computed expectations of the kernel's behaviour (ip_vs_<name>.c)."""
import pytest

from userlb.model import IPPROTO_TCP, Dest, Service
from userlb.sched import base


def make(name, weights, bind_after=False):
    """Service with destinations A, B, C, ... in *list* order (so they are
    added in reverse: the kernel inserts at the head).  bind_after: bind the
    scheduler once the list is complete (like ipvsadm -E), instead of
    binding first and calling add_dest for each destination."""
    svc = Service(IPPROTO_TCP, 0x0A000064, 80, name)
    ds = [Dest(0x0A000001 + i, 80, weight=w) for i, w in enumerate(weights)]
    if not bind_after:
        svc.sched = base.create(name, svc)
    for d in reversed(ds):
        d.svc = svc
        svc.dests.insert(0, d)
        if not bind_after:
            svc.sched.add_dest(d)
    if bind_after:
        svc.sched = base.create(name, svc)
    return svc, ds


def names(svc, ds, n):
    label = {id(d): "ABCDEFGH"[i] for i, d in enumerate(ds)}
    return "".join(label.get(id(svc.sched.schedule(0, 0)), "-") for _ in range(n))


def add_head(svc, d):
    d.svc = svc
    svc.dests.insert(0, d)
    svc.sched.add_dest(d)


def delete(svc, d):
    svc.dests.remove(d)
    svc.sched.del_dest(d)


def test_all_registered():
    for n in ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "sh", "mh", "mh-backport"):
        assert base.get(n) is not None and base.get(n).name == n


@pytest.mark.parametrize("name", ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf"])
def test_empty_and_all_unavailable(name):
    svc, ds = make(name, [])
    assert svc.sched.schedule(1, 2) is None
    svc, ds = make(name, [0, 0])
    assert svc.sched.schedule(1, 2) is None
    svc, ds = make(name, [1, 2])
    for d in ds:
        d.overloaded = True
    assert svc.sched.schedule(1, 2) is None
    ds[1].overloaded = False
    assert svc.sched.schedule(1, 2) is ds[1]


# ------------------------------------------------------------------ rr

def test_rr_cycles_in_list_order():
    svc, ds = make("rr", [1, 1, 1])
    assert names(svc, ds, 7) == "ABCABCA"


def test_rr_skips_weight0_and_overloaded():
    svc, ds = make("rr", [1, 0, 1, 1])
    ds[2].overloaded = True
    assert names(svc, ds, 5) == "ADADA"


def test_rr_delete_cursor_moves_to_predecessor():
    svc, ds = make("rr", [1, 1, 1])
    assert names(svc, ds, 2) == "AB"          # cursor on B
    delete(svc, ds[1])                        # cursor -> A
    assert names(svc, ds, 3) == "CAC"


def test_rr_delete_first_cursor_moves_to_head():
    svc, ds = make("rr", [1, 1, 1])
    assert names(svc, ds, 1) == "A"
    delete(svc, ds[0])                        # predecessor is the head
    assert names(svc, ds, 3) == "BCB"


def test_rr_delete_other_keeps_cursor():
    svc, ds = make("rr", [1, 1, 1, 1])
    assert names(svc, ds, 2) == "AB"
    delete(svc, ds[0])
    assert names(svc, ds, 3) == "CDB"


def test_rr_add_at_head_reached_on_wrap():
    svc, ds = make("rr", [1, 1, 1])
    assert names(svc, ds, 2) == "AB"
    d = Dest(0x0A000009, 80)
    add_head(svc, d)                          # list: D A B C, cursor on B
    ds.append(d)
    assert names(svc, ds, 5) == "CDABC"


def test_rr_unavailable_keeps_cursor():
    svc, ds = make("rr", [1, 1])
    assert names(svc, ds, 1) == "A"
    ds[0].weight = ds[1].weight = 0
    assert svc.sched.schedule(0, 0) is None
    ds[0].weight = ds[1].weight = 1
    assert names(svc, ds, 2) == "BA"


# ------------------------------------------------------------------ wrr

def test_wrr_classic_sequence():
    # weights 4,3,2 bound at once: cw 4: A; 3: A B; 2: A B C; 1: A B C
    svc, ds = make("wrr", [4, 3, 2], bind_after=True)
    assert names(svc, ds, 18) == "AABABCABC" * 2


def test_wrr_cw_survives_incremental_adds():
    # bound to an empty service: cw = mw = 0; after the first add (C, w2):
    # di 2, mw 1, cw 0 -> 1; later adds keep cw = 1 (cw <= mw, di = 1).
    # So the first round is the weight >= 1 pass: A B C, then 4: A, ...
    svc, ds = make("wrr", [4, 3, 2])
    assert svc.sched.cw == 1 and svc.sched.mw == 4 and svc.sched.di == 1
    assert names(svc, ds, 12) == "ABC" + "AABABCABC"


def test_wrr_gcd_step():
    # weights 4, 2: di 2, mw = 4 - 1 = 3: cw 3: A; cw 1: A B
    svc, ds = make("wrr", [4, 2], bind_after=True)
    assert (svc.sched.di, svc.sched.mw) == (2, 3)
    assert names(svc, ds, 9) == "AAB" * 3


def test_wrr_overloaded_skipped_and_stop_rule():
    svc, ds = make("wrr", [2, 1], bind_after=True)
    ds[0].overloaded = True
    assert names(svc, ds, 4) == "BBBB"
    ds[1].overloaded = True
    assert svc.sched.schedule(0, 0) is None   # terminates: all overloaded
    ds[0].overloaded = False
    assert names(svc, ds, 2) == "AA"


def test_wrr_change_resets_cursor_and_rounds_cw():
    svc, ds = make("wrr", [4, 3, 2], bind_after=True)
    assert names(svc, ds, 2) == "AA"          # cw now 3, cursor on A
    assert svc.sched.cw == 3
    ds[0].weight = 6
    ds[1].weight = 4
    ds[2].weight = 2
    svc.sched.upd_dest(ds[0])                 # di 2, mw 5; cw 3 -> (3//2)*2+1 = 3
    assert (svc.sched.di, svc.sched.mw, svc.sched.cw) == (2, 5, 3)
    assert svc.sched._cur is None             # cursor back at the head
    # cw 3: A B; cw 1: A B C; cw 5 (wrap): A; cw 3: A B
    assert names(svc, ds, 8) == "ABABCAAB"


def test_wrr_cw_reset_when_above_new_max():
    svc, ds = make("wrr", [5, 1], bind_after=True)
    assert svc.sched.cw == 5
    ds[0].weight = 2
    svc.sched.upd_dest(ds[0])
    assert svc.sched.cw == svc.sched.mw == 2


def test_wrr_weight0_never_chosen():
    svc, ds = make("wrr", [0, 2, 0, 1], bind_after=True)
    assert names(svc, ds, 6) == "BBDBBD"


# ------------------------------------------------------------------ lc / wlc / sed / nq

def conns(ds, *pairs):
    for d, (a, i) in zip(ds, pairs, strict=False):
        d.activeconns, d.inactconns = a, i


def test_lc_overhead_active_times_256():
    svc, ds = make("lc", [1, 1, 1])
    conns(ds, (1, 0), (0, 255), (0, 256))     # 256, 255, 256
    assert svc.sched.schedule(0, 0) is ds[1]
    conns(ds, (1, 0), (0, 256), (0, 300))     # tie 256/256 -> first
    assert svc.sched.schedule(0, 0) is ds[0]


def test_lc_ignores_weight_but_skips_zero_and_overloaded():
    svc, ds = make("lc", [100, 1, 0])
    conns(ds, (5, 0), (4, 0), (0, 0))
    assert svc.sched.schedule(0, 0) is ds[1]  # weight 0 (C) skipped, B least
    ds[1].overloaded = True
    assert svc.sched.schedule(0, 0) is ds[0]


def test_wlc_cross_multiplication():
    svc, ds = make("wlc", [1, 3])
    conns(ds, (1, 0), (2, 0))                 # 256/1 vs 512/3: B
    assert svc.sched.schedule(0, 0) is ds[1]
    conns(ds, (1, 0), (2, 0))
    ds[1].weight = 2                          # 256/1 vs 512/2: tie -> first (A)
    assert svc.sched.schedule(0, 0) is ds[0]
    conns(ds, (0, 3), (0, 5))                 # 3/1 vs 5/2: B
    assert svc.sched.schedule(0, 0) is ds[1]


def test_wlc_zero_weight_never_wins_and_first_stage():
    svc, ds = make("wlc", [0, 1, 0])
    conns(ds, (0, 0), (9, 9), (0, 0))
    assert svc.sched.schedule(0, 0) is ds[1]
    ds[1].overloaded = True
    assert svc.sched.schedule(0, 0) is None


def test_wlc_is_the_default_scheduler_name():
    assert Service(IPPROTO_TCP, 1, 80).sched_name == "wlc"


def test_sed_counts_active_plus_one():
    svc, ds = make("sed", [1, 3])
    conns(ds, (0, 100), (1, 0))               # (0+1)/1 vs (1+1)/3: B; inactive ignored
    assert svc.sched.schedule(0, 0) is ds[1]
    svc2, ds2 = make("wlc", [1, 3])
    conns(ds2, (0, 0), (1, 0))                # wlc: 0/1 vs 256/3: A
    assert svc2.sched.schedule(0, 0) is ds2[0]
    conns(ds, (2, 0), (8, 0))                 # 3/1 vs 9/3: tie -> A
    assert svc.sched.schedule(0, 0) is ds[0]


def test_nq_idle_first_then_sed():
    svc, ds = make("nq", [1, 10, 1])
    conns(ds, (3, 0), (50, 0), (0, 7))        # C idle (no active) -> C at once
    assert svc.sched.schedule(0, 0) is ds[2]
    conns(ds, (3, 0), (50, 0), (1, 0))        # sed: 4/1, 51/10, 2/1 -> C (2 < 4, 2 < 5.1)
    assert svc.sched.schedule(0, 0) is ds[2]
    conns(ds, (3, 0), (20, 0), (3, 0))        # 4/1, 21/10, 4/1 -> B
    assert svc.sched.schedule(0, 0) is ds[1]
    conns(ds, (0, 0), (0, 0), (0, 0))         # all idle: first in list
    assert svc.sched.schedule(0, 0) is ds[0]
    ds[0].weight = 0                          # idle but weight 0: skipped
    assert svc.sched.schedule(0, 0) is ds[1]


# ------------------------------------------------------------------ fo / ovf

def test_fo_highest_weight_first_on_tie():
    svc, ds = make("fo", [2, 5, 5, 1])
    assert svc.sched.schedule(0, 0) is ds[1]
    ds[1].overloaded = True
    assert svc.sched.schedule(0, 0) is ds[2]
    ds[2].weight = 0
    assert svc.sched.schedule(0, 0) is ds[0]
    ds[1].activeconns = 10 ** 6               # connections do not matter
    ds[1].overloaded = False
    assert svc.sched.schedule(0, 0) is ds[1]


def test_ovf_overflows_by_active_conns():
    svc, ds = make("ovf", [3, 5, 1])
    assert svc.sched.schedule(0, 0) is ds[1]
    ds[1].activeconns = 5                     # kernel skips only when active > weight
    assert svc.sched.schedule(0, 0) is ds[1]
    ds[1].activeconns = 6
    assert svc.sched.schedule(0, 0) is ds[0]
    ds[0].activeconns = 4
    assert svc.sched.schedule(0, 0) is ds[2]
    ds[2].activeconns = 2
    assert svc.sched.schedule(0, 0) is None
    ds[1].activeconns = 0
    ds[1].overloaded = True
    assert svc.sched.schedule(0, 0) is None
    ds[1].inactconns = 1000                   # inactive connections do not count
    ds[1].overloaded = False
    assert svc.sched.schedule(0, 0) is ds[1]


def test_ovf_tie_first():
    svc, ds = make("ovf", [4, 4])
    assert svc.sched.schedule(0, 0) is ds[0]


# ------------------------------------------------------------------ hot path hygiene

@pytest.mark.parametrize("name", ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf",
                                  "sh", "mh", "mh-backport"])
def test_schedule_retains_nothing(name):
    """schedule() keeps no per-call state: after a warm-up, many calls with
    fresh clients leave the number of live allocated blocks unchanged (no
    cache, no growing structure)."""
    import gc
    import sys
    svc, ds = make(name, [1, 2, 3, 0, 5])
    ds[1].overloaded = True
    svc.flags = 0x18                      # *-fallback, *-port where meaningful
    sched = svc.sched.schedule
    clients = [(0x0B000000 + i * 7919, (i * 31) & 0xFFFF) for i in range(3000)]
    for a, p in clients[:100]:
        sched(a, p)
    gc.collect()
    before = sys.getallocatedblocks()
    for a, p in clients:
        sched(a, p)
    gc.collect()
    assert sys.getallocatedblocks() - before < 50
