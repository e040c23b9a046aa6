"""userlb.sched.base: the registry and the declared Scheduler interface."""
import pytest

from userlb.clock import ManualClock
from userlb.errors import ConfigError
from userlb.model import IPPROTO_TCP, Dest, Service
from userlb.sched import base, mh, options, sh

NAMES = ["fo", "lc", "mh", "mh-backport", "mhs", "nq", "ovf", "rr", "sed", "sh", "wlc", "wrr"]
TABLES = {"mh", "mh-backport", "mhs", "sh"}


def test_registry():
    assert base.names() == NAMES
    assert base.get("nope") is None
    with pytest.raises(KeyError):
        base.create("nope", Service(IPPROTO_TCP, 1, 80))


@pytest.mark.parametrize("name", NAMES)
def test_capabilities_are_declared(name):
    """Every capability answers on every scheduler (no getattr probing), and
    `stateless` is true exactly where schedule_sl is implemented."""
    cls = base.get(name)
    assert issubclass(cls, base.Scheduler) and cls.name == name
    svc = Service(IPPROTO_TCP, 0x0A000064, 80, name, options={"mh_table_size": 251})
    s = base.create(name, svc, ManualClock(0.0))
    d = Dest(0x0A000001, 80)
    d.svc = svc
    svc.dests.insert(0, d)
    s.add_dest(d)
    assert s.stateless == (cls.schedule_sl is not base.Scheduler.schedule_sl)
    assert s.schedule(0x01020304, 1234) is d
    if s.stateless:
        assert s.schedule_sl(0x01020304, 1234, True, True, 0.0) == (d, False)
    else:
        with pytest.raises(NotImplementedError):
            s.schedule_sl(0x01020304, 1234, True, True, 0.0)
    assert s.sweep(0.0) == 0
    assert list(s.referenced_dests()) == [d]
    table = s.table_endpoints()
    if name in TABLES:
        assert len(table) == s.table_size and set(table) == {d}
    else:
        assert table is None
    assert s.unstable_slots(0.0) == (0 if name == "mhs" else None)
    s.upd_service()
    s.done_service()


@pytest.mark.parametrize("name", sorted(TABLES - {"sh"}))
@pytest.mark.parametrize("bad", [250, "x", 4093.0, True])
def test_one_table_size_check(name, bad):
    """mh, mh-backport and mhs refuse a bad mh_table_size with the same check."""
    svc = Service(IPPROTO_TCP, 1, 80, name, options={"mh_table_size": bad})
    with pytest.raises(ConfigError, match="invalid mh_table_size"):
        base.create(name, svc, ManualClock(0.0))
    assert mh.table_size is options.table_size


def test_int_option():
    assert [options.int_option(v) for v in (7, " 7 ", "07", True, 7.0, "7.0", None, "-7")] \
        == [7, 7, 7, None, None, None, None, None]
    assert sh.tab_bits({"sh_tab_bits": " 9 "}) == 9
