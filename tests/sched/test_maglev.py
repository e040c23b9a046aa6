"""userlb.sched.maglev: the spec's turns examples (docs/ipvs.md §1.5), the
permutation worked examples (§1.4) and population invariants (§1.7)."""
from hypothesis import given, settings
from hypothesis import strategies as st

from userlb.sched import maglev


def test_tab_bits_follow_kconfig_index():
    assert [maglev.tab_bits(m) for m in maglev.PRIMES] == [i // 2 for i in range(8, 18)]
    assert maglev.tab_bits(maglev.DEFAULT_SIZE) == 6


def test_turns_spec_examples():
    assert maglev.turns([100, 200, 300], 6) == [1, 2, 3]
    assert maglev.turns([65535, 32768, 1000, 1, 0], 6) == [63, 32, 1, 1, 0]
    assert maglev.turns([1, 2, 3, 4, 5, 0, 6, 10, 1, 100], 6) == [1, 1, 1, 2, 2, 0, 3, 5, 1, 50]
    assert maglev.turns([0, 0], 6) == [0, 0]
    assert maglev.turns([], 6) == []


def test_permutation_spec_examples():
    assert maglev.permutation(0x0A000001, 80, 4093) == (3167, 700)
    assert maglev.permutation(0x0A000002, 80, 4093)[0] == 1231
    assert maglev.permutation(0x0A000002, 80, 4093)[1] == 3544
    assert maglev.permutation(0x0A000003, 80, 4093) == (1631, 3453)
    v6 = bytes.fromhex("20010db8000000000000000000000001")
    assert maglev.permutation(v6, 80, 4093) == (708, 3575)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(maglev.PRIMES[:4]),
       st.lists(st.integers(0, 20), min_size=1, max_size=30),
       st.randoms(use_true_random=False))
def test_populate_fills_and_respects_turns(m, weights, rnd):
    offsets = [rnd.randrange(m) for _ in weights]
    skips = [rnd.randrange(1, m) for _ in weights]
    t = maglev.turns(weights, maglev.tab_bits(m))
    table = maglev.populate(offsets, skips, t, m)
    assert len(table) == m
    if not any(t):
        assert table == [-1] * m
        return
    assert -1 not in table
    total = sum(t)
    rounds = m // total
    for i, ti in enumerate(t):
        c = table.count(i)
        assert rounds * ti <= c <= (rounds + 1) * ti


def test_populate_keeps_recent_races_and_hands_out_copies():
    offsets, skips, nturns, m = [5, 77, 1000], [3, 9, 11], [2, 1, 1], 4093
    first = maglev.populate(offsets, skips, nturns, m)
    assert first == maglev._race(offsets, skips, nturns, m)
    first[0] = 99                                   # the caller's copy only
    again = maglev.populate(offsets, skips, nturns, m)
    assert again == maglev._race(offsets, skips, nturns, m) and again[0] != 99
    info = maglev._race_cached.cache_info()
    assert info.hits >= 1 and info.maxsize == 16
