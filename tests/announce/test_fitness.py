"""Rise/fall and what is announced (userlb/announce/fitness.py)."""
import pytest

from userlb.announce.fitness import Announcer, Counter, Reading

V1, V2, V6 = "10.99.0.1/32", "10.99.0.2/32", "fd00:99::1/128"
FIT = Reading(vips={V1: ("TCP 10.99.0.1:80",), V6: ("TCP [fd00:99::1]:80",)})
GONE = Reading(down="userlb run is not running")


def test_counter_rise_and_fall():
    c = Counter(rise=3, fall=2)
    assert [c.feed(True), c.feed(True), c.up] == [False, False, False]
    assert c.feed(True) and c.up
    assert not c.feed(False) and c.up          # one bad look: not yet
    assert not c.feed(True) and c.up           # the run is broken
    assert not c.feed(False) and c.feed(False) and not c.up


def test_counter_refuses_zero():
    with pytest.raises(ValueError):
        Counter(0, 1)


def test_director_rise_then_fall():
    a = Announcer(rise=2, fall=2)
    d = a.step(FIT)
    assert d.wanted == frozenset() and "fit for 1 of the 2 looks" in d.why_not[V1]
    assert a.step(FIT).wanted == {V1, V6}
    assert a.step(GONE).wanted == {V1, V6}        # fall 2: one look is not enough
    d = a.step(GONE)
    assert d.wanted == frozenset() and "not running" in d.why_not[V1] and V6 in d.why_not
    assert a.step(FIT).wanted == frozenset()      # rise again
    assert a.step(FIT).wanted == {V1, V6}


def test_vip_added_and_removed_within_one_look():
    a = Announcer(rise=3, fall=3)
    for _ in range(3):
        a.step(FIT)
    d = a.step(Reading(vips={V1: (), V2: (), V6: ()}))
    assert d.wanted == {V1, V2, V6}
    d = a.step(Reading(vips={V2: ()}))
    assert d.wanted == {V2} and V1 not in d.why_not


def test_quorum_lost_withdraws_that_vip_after_fall():
    a = Announcer(rise=2, fall=2, immediate=True)
    assert a.step(FIT).wanted == {V1, V6}
    lost = Reading(vips=FIT.vips, lost={V1: "TCP 10.99.0.1:80 below its quorum"})
    assert a.step(lost).wanted == {V1, V6}
    d = a.step(lost)
    assert d.wanted == {V6} and "below its quorum" in d.why_not[V1]
    assert a.step(FIT).wanted == {V6}
    assert a.step(FIT).wanted == {V1, V6}


def test_new_vip_below_quorum_is_not_announced():
    a = Announcer(rise=1, fall=1)
    d = a.step(Reading(vips={V1: ()}, lost={V1: "TCP 10.99.0.1:80 below its quorum"}))
    assert d.wanted == frozenset()


def test_also_prefixes_follow_the_director():
    a = Announcer(rise=1, fall=1, also=("10.10.0.0/24",))
    assert a.step(Reading()).wanted == {"10.10.0.0/24"}
    assert a.step(GONE).wanted == frozenset()


def test_once_decides_at_the_first_look():
    assert Announcer(rise=5, fall=5, immediate=True).step(FIT).wanted == {V1, V6}


def test_a_vip_not_routed_into_the_tun_is_withdrawn():
    a = Announcer(rise=2, fall=1, immediate=True)
    assert a.step(FIT).wanted == {V1, V6}
    bad = Reading(vips=FIT.vips, unrouted={V6: "not routed into ulb0"})
    d = a.step(bad)
    assert d.wanted == {V1} and d.why_not[V6] == "VIP not fit: not routed into ulb0"
    d = a.step(FIT)
    assert d.wanted == {V1} and "fit again for 1 of the 2 looks" in d.why_not[V6]
    assert a.step(FIT).wanted == {V1, V6}
