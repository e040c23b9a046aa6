"""mhs scheduler: hypothesis properties.

* After any sequence of backend changes at any times, T seconds and a sweep
  later, both tables equal maglev.build of the current backends (canonical
  order, current weights) and no slot is unstable.
* Decisions equal those of a literal transcription of docs/mhs-spec.md rules 4-7 and
  10 (RefMHS below: endpoints in the tables, ts[i] == 0 = stable, no sweep,
  no caching), whether or not the real scheduler is swept in between.
* Directors fed the same changes in different orders agree on every key.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.mhs import Director, ep, eps, expected_table, ip, slot_of

M = 251          # small table: fast builds; the construction is the same for any M
POOL = [(ip("10.0.0.1"), 80), (ip("10.0.0.2"), 80), (ip("10.0.0.3"), 80),
        (ip("10.0.0.3"), 81), (ip("10.0.1.9"), 8080), (ip("192.168.3.4"), 80)]
OPTS = {"mh_table_size": M}


def _key_per_slot():
    keys = [None] * M
    a = ip("198.18.0.1")
    while None in keys:
        s = slot_of(a, 0, M)
        if keys[s] is None:
            keys[s] = a
        a += 1
    return keys


SLOT_KEYS = _key_per_slot()    # SLOT_KEYS[i]: a client address whose slot is i
KINDS = ((True, True), (True, False), (False, False))   # TCP SYN, TCP non-SYN, UDP


class RefMHS:
    """docs/mhs-spec.md rules 4-7 and 10, written as literally as possible."""

    def __init__(self, T):
        self.T = T
        self.forwarded = False
        self.old = [None] * M
        self.cand = [None] * M
        self.ts = [0] * M

    def change(self, weights, now):
        cand = expected_table(weights, M)
        if not self.forwarded:                                  # rule 5
            self.old, self.cand, self.ts = list(cand), cand, [0] * M
            return
        for i in range(M):                                      # 6.1
            if self.ts[i] != 0 and now >= self.ts[i] + self.T:
                self.old[i] = self.cand[i]
                self.ts[i] = 0
        self.cand = cand                                        # 6.2
        for i in range(M):                                      # 6.3
            if self.old[i] == self.cand[i]:
                self.ts[i] = 0
            elif self.ts[i] == 0:
                self.ts[i] = now

    def decide(self, i, is_tcp, syn, now):
        if self.ts[i] != 0 and now >= self.ts[i] + self.T:      # rule 7
            self.old[i] = self.cand[i]
            self.ts[i] = 0
        o, c = self.old[i], self.cand[i]
        if o is None and c is None:
            return None, False
        if o is None:
            return c, True
        if c is None:
            return (None, False) if (is_tcp and syn) else (o, True)
        if self.ts[i] == 0:
            return o, False
        if is_tcp:
            return (c if syn else o), True
        return c, False


DT = st.sampled_from([0, 0.5, 1, 3, 100, 450, 899, 899.5, 900, 901, 1800, 5000])
WEIGHT = st.sampled_from([0, 0, 1, 1, 1, 2, 3, 7, 100])
OP = st.one_of(
    st.tuples(st.just("add"), st.integers(0, len(POOL) - 1), WEIGHT, DT),
    st.tuples(st.just("del"), st.integers(0, len(POOL) - 1), st.just(0), DT),
    st.tuples(st.just("edit"), st.integers(0, len(POOL) - 1), WEIGHT, DT),
    st.tuples(st.just("fwd"), st.just(0), st.just(0), DT),
    st.tuples(st.just("probe"), st.integers(0, 2**32 - 1), st.integers(0, 2), DT),
    st.tuples(st.just("scan"), st.just(0), st.just(0), DT),
    st.tuples(st.just("wipe"), st.just(0), st.sampled_from(["del", "edit"]), DT),
    st.tuples(st.just("sweep"), st.just(0), st.just(0), DT),
)
T_CHOICES = st.sampled_from([(900, 120, 300), (60, 120, 300), (10, 5, 300)])
INITIAL = st.lists(st.tuples(st.integers(0, len(POOL) - 1), WEIGHT),
                   max_size=len(POOL), unique_by=lambda x: x[0])


def start(tos, initial, forwarded, ref=None):
    """A director (and reference) configured at t=1 with `initial` backends."""
    d = Director(options=OPTS, t=1, timeouts=lambda: tos)
    weights = {}
    for idx, w in initial:
        apply_change(d, weights, "add", idx, w, ref, 1.0)
    d.svc.forwarded = forwarded
    if ref is not None:
        ref.forwarded = forwarded
    return d, weights


def apply_change(d, weights, op, idx, w, ref=None, now=None):
    """Apply a configuration op to Director d and to the weights dict (and
    the reference model); returns False when the op is not valid (ipvsadm
    would refuse it).  "wipe": every backend deleted / set to weight 0, one
    change at a time."""
    if op == "wipe":
        for e in list(weights):
            apply_change(d, weights, w, POOL.index(e), 0, ref, now)
        return False
    ok = _apply(d, weights, op, idx, w)
    if ok and ref is not None:
        ref.change(weights, now)
    return ok


def _apply(d, weights, op, idx, w):
    e = POOL[idx]
    if op == "add":
        if e in weights:
            return False
        weights[e] = w
        d.add(e, w)
    elif op == "del":
        if e not in weights:
            return False
        del weights[e]
        d.remove(e)
    else:
        if e not in weights:
            return False
        weights[e] = w
        d.edit(e, w)
    return True


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=INITIAL, fwd=st.booleans(), ops=st.lists(OP, max_size=25), tos=T_CHOICES)
def test_converges_to_build_of_current_backends(initial, fwd, ops, tos):
    d, weights = start(tos, initial, fwd)
    now = 1.0
    for op, a, b, dt in ops:
        now += dt
        d.at(now)
        if op in ("add", "del", "edit", "wipe"):
            apply_change(d, weights, op, a, b)
        elif op == "fwd":
            d.svc.forwarded = True
        elif op == "probe":
            d.sched.schedule_sl(a, 0, b != 2, b == 0, now)
        elif op == "scan":
            for c in SLOT_KEYS:
                d.sched.schedule_sl(c, 0, True, False, now)
        else:
            d.sched.sweep(now)
    T = max(tos[0], tos[1])
    now += T
    d.sched.sweep(now)
    exp = expected_table(weights, M)
    assert d.sched.unstable_slots(now) == 0
    assert eps(d.sched.table_endpoints()) == exp
    assert eps(d.sched.old_endpoints(now)) == exp
    # and the lookups agree: stable everywhere, no state
    for n in range(50):
        c = ip("203.0.113.0") + n * 977
        r = d.sched.schedule_sl(c, 0, True, False, now)
        assert (ep(r[0]), r[1]) == (exp[slot_of(c, 0, M)], False)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=INITIAL, fwd=st.booleans(), ops=st.lists(OP, min_size=1, max_size=30),
       tos=T_CHOICES, sweeping=st.booleans())
def test_decisions_equal_reference(initial, fwd, ops, tos, sweeping):
    ref = RefMHS(max(tos[0], tos[1]))
    d, weights = start(tos, initial, fwd, ref)
    now = 1.0
    for op, a, b, dt in ops:
        now += dt
        d.at(now)
        if op in ("add", "del", "edit", "wipe"):
            apply_change(d, weights, op, a, b, ref, now)
        elif op == "fwd":
            d.svc.forwarded = ref.forwarded = True
        elif op == "probe":
            is_tcp, syn = b != 2, b == 0
            got = d.sched.schedule_sl(a, 0, is_tcp, syn, now)
            want = ref.decide(slot_of(a, 0, M), is_tcp, syn, now)
            assert (ep(got[0]), got[1]) == want
            assert ep(d.sched.schedule(a, 0)) == ref.cand[slot_of(a, 0, M)]
        elif op == "scan":      # every slot, every packet kind
            for i, c in enumerate(SLOT_KEYS):
                for is_tcp, syn in KINDS:
                    got = d.sched.schedule_sl(c, 0, is_tcp, syn, now)
                    assert (ep(got[0]), got[1]) == ref.decide(i, is_tcp, syn, now)
        elif sweeping:
            d.sched.sweep(now)
        unstable = sum(1 for i in range(M)
                       if ref.ts[i] != 0 and now < ref.ts[i] + ref.T)
        assert d.sched.unstable_slots(now) == unstable
    # every slot, every packet kind, at the end
    for i, c in enumerate(SLOT_KEYS):
        for is_tcp, syn in KINDS:
            got = d.sched.schedule_sl(c, 0, is_tcp, syn, now)
            assert (ep(got[0]), got[1]) == ref.decide(i, is_tcp, syn, now)


@settings(max_examples=60, deadline=None)
@given(chosen=st.lists(st.tuples(st.integers(0, len(POOL) - 1), st.integers(1, 5)),
                       min_size=1, max_size=len(POOL), unique_by=lambda x: x[0]),
       perm=st.permutations(range(len(POOL))), flap=st.integers(0, len(POOL) - 1))
def test_add_order_does_not_matter(chosen, perm, flap):
    items = [(POOL[i], w) for i, w in chosen]
    order2 = sorted(items, key=lambda x: perm.index(POOL.index(x[0])))
    d1 = Director([(e[0], e[1], w) for e, w in items], options=OPTS)
    d2 = Director([(e[0], e[1], w) for e, w in reversed(items)], options=OPTS)
    d3 = Director([(e[0], e[1], w) for e, w in order2], options=OPTS)
    # d3 forwards and flaps one of its backends (removed, weight changes, back)
    d3.svc.forwarded = True
    e, w = items[flap % len(items)]
    d3.at(100).remove(e)
    d3.at(200).add(e, 1)
    d3.at(300).edit(e, 0)
    d3.at(400).edit(e, w)
    assert d3.sched.unstable_slots(400) == 0
    t1 = eps(d1.sched.table_endpoints())
    assert t1 == eps(d2.sched.table_endpoints()) == eps(d3.sched.table_endpoints())
    assert t1 == expected_table(dict(items), M)
    for n in range(200):
        c = ip("100.64.0.0") + n * 65537
        got = {ep(x.sched.schedule_sl(c, 0, True, n % 2 == 0, 500)[0]) for x in (d1, d2, d3)}
        assert len(got) == 1


@pytest.mark.parametrize("seed", range(3))
def test_default_size_converges(seed):
    """A few fixed sequences with the default M = 4093."""
    import random
    rnd = random.Random(seed)
    d = Director(t=1)
    weights = {}
    now = 1.0
    for _ in range(12):
        now += rnd.choice([1, 300, 900, 1000])
        d.at(now)
        if rnd.random() < 0.3:
            d.svc.forwarded = True
        op = rnd.choice(["add", "add", "del", "edit"])
        apply_change(d, weights, op, rnd.randrange(len(POOL)), rnd.choice([0, 1, 2, 5]))
    now += 900
    d.sched.sweep(now)
    exp = expected_table(weights)
    assert eps(d.sched.table_endpoints()) == exp == eps(d.sched.old_endpoints(now))
    assert d.sched.unstable_slots(now) == 0
