"""Rate estimator (docs/ipvs.md §7): the kernel's fixed-point EWMA, zeroing."""
from hypothesis import given
from hypothesis import strategies as st

from userlb.dataplane.stats import Estimator, RateEstimators, Zero
from userlb.model import Stats


def reference(deltas, shift_in, shift_out_round, mask):
    """Independent transcription of the kernel formula for one counter."""
    est = 0
    for d in deltas:
        est += ((d << shift_in) - est) >> 2
    return (est + mask) >> shift_out_round


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=30))
def test_formulas(deltas):
    s = Stats()
    e = Estimator(s)
    for d in deltas:
        s.conns += d
        s.inpkts += d
        s.outpkts += 2 * d
        s.inbytes += 100 * d
        s.outbytes += 7 * d
        e.update()
    cps, inpps, outpps, inbps, outbps = e.rates()
    assert cps == inpps == reference(deltas, 9, 10, 0x1FF)
    assert outpps == reference([2 * d for d in deltas], 9, 10, 0x1FF)
    assert inbps == reference([100 * d for d in deltas], 4, 5, 0xF)
    assert outbps == reference([7 * d for d in deltas], 4, 5, 0xF)


def test_steady_rate_converges_to_per_second_value():
    s = Stats()
    e = Estimator(s)
    for _ in range(60):
        s.inpkts += 2000          # 2000 per 2 s = 1000 pps
        s.inbytes += 2000 * 100   # 100 kB/s
        e.update()
    assert e.rates()[1] == 1000
    assert e.rates()[3] == 100_000


def test_tick_every_two_seconds():
    s = Stats()
    r = RateEstimators()
    r.track(s)
    assert not r.tick(0.0)
    s.conns += 100
    assert not r.tick(1.0)
    assert r.tick(2.0)
    assert r.rates(s)[0] == ((100 << 9) >> 2) + 0x1FF >> 10
    assert not r.tick(3.9)
    assert r.tick(4.0)


def test_zero_in_place_resets_estimator():
    s = Stats()
    e = Estimator(s)
    s.inpkts = 10_000
    e.update()
    assert e.rates()[1] > 0
    s.inpkts = 0                  # config.zero() resets counters in place
    e.update()
    assert e.rates() == (0, 0, 0, 0, 0)
    r = RateEstimators()
    r.track(s)
    s.inpkts = 500
    r.reset(s)
    assert r.get(s).last[1] == 500 and r.rates(s) == (0, 0, 0, 0, 0)


def test_zero_by_snapshot():
    s = Stats()
    s.conns, s.inpkts = 5, 50
    z = Zero()
    z.zero(s)
    s.conns += 1
    got = z.read(s)
    assert got.as_tuple() == (1, 0, 0, 0, 0)
    assert s.as_tuple() == (6, 50, 0, 0, 0)


def test_retain():
    a, b = Stats(), Stats()
    r = RateEstimators()
    r.track(a)
    r.retain([b])
    assert r.get(a) is None and r.get(b) is not None


def test_engine_drives_estimators():
    from helpers.engine import CIP, RIP1, VIP, engine_with, make_service, run, tcp4
    svc = make_service(6, VIP, 80, [(RIP1, 8080, 1)])
    eng = engine_with(svc)
    eng.expire(0.0)
    for t in range(1, 41):
        for p in range(10):           # 10 new connections per second
            run(eng, tcp4(CIP, 1000 + t * 10 + p, VIP, 80, "S"), float(t))
        eng.expire(float(t))
    cps = eng.rates.rates(svc.stats)[0]
    assert cps == 10 and eng.rates.rates(svc.dests[0].stats)[0] == 10
    assert eng.rates.rates(eng.stats)[0] == 10
    eng.zero(svc)
    assert eng.rates.rates(svc.stats) == (0, 0, 0, 0, 0)
    assert eng.rates.rates(eng.stats)[0] == 10
    eng.zero()
    assert eng.stats.as_tuple() == (0, 0, 0, 0, 0)
    assert eng.rates.rates(eng.stats) == (0, 0, 0, 0, 0)
