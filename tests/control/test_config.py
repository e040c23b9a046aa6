"""Config: the kernel's semantics for ipvsadm commands, atomic batches, hooks."""
import pytest

from userlb.clock import ManualClock
from userlb.control.config import Config
from userlb.errors import ConfigError
from userlb.model import (
    FWD_DROUTE,
    FWD_MASQ,
    FWD_TUNNEL,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SVC_F_PERSISTENT,
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    parse_addr,
)
from userlb.sched import base

VIP = parse_addr("10.0.0.100")[1]
KEY = (IPPROTO_TCP, VIP, 80)


def ip(text):
    return parse_addr(text)[1]


class Recorder(base.Scheduler):
    """A fake scheduler that records every hook with the list it saw."""
    log = []

    def __init__(self, svc, clock=None):
        super().__init__(svc, clock)
        self.done = False
        self.log.append(("init", self.name, self._keys()))

    def _keys(self):
        return [(d.addr, d.port) for d in self.svc.dests]

    def add_dest(self, d):
        self.log.append(("add", d.key, self._keys()))

    def del_dest(self, d):
        self.log.append(("del", d.key, self._keys()))

    def upd_dest(self, d):
        self.log.append(("upd", d.key, self._keys()))

    def done_service(self):
        self.done = True
        self.log.append(("done", self.name, None))

    def schedule(self, caddr, cport):
        return self.svc.dests[0] if self.svc.dests else None


class FakeMH(Recorder):
    name = "mh"


class FakeRR(Recorder):
    name = "rr"

    def upd_service(self):
        self.log.append(("upd_service", self.svc.flags, None))


class FakeWLC(Recorder):
    name = "wlc"


FAKES = {"mh": FakeMH, "rr": FakeRR, "wlc": FakeWLC, "sh": FakeRR}


@pytest.fixture
def cfg():
    Recorder.log = []
    c = Config(clock=ManualClock(0), schedulers=FAKES.get)
    return c


def keys(svc):
    return [(d.addr, d.port) for d in svc.dests]


def setup3(cfg):
    cfg.apply_batch([
        "-A -t 10.0.0.100:80 -s mh -b mh-port",
        "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m -w 1",
        "-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m -w 2",
        "-a -t 10.0.0.100:80 -r 10.0.0.3:80 -m -w 3",
    ])
    return cfg.services[KEY]


# ----------------------------------------------------------------- services

def test_add_service_fields(cfg):
    cfg.apply("-A -t 10.0.0.100:80 -s mh -b mh-fallback,mh-port -p 60 -M 255.255.255.0")
    svc = cfg.get_service(IPPROTO_TCP, VIP, 80)
    assert svc.sched_name == "mh"
    assert svc.flags == SVC_F_PERSISTENT | SVC_F_SCHED1 | SVC_F_SCHED2
    assert (svc.timeout, svc.netmask) == (60, 0xFFFFFF00)
    assert isinstance(svc.sched, FakeMH) and svc.sched.svc is svc
    assert svc.dests == []


def test_add_existing_service_is_refused(cfg):
    cfg.apply("-A -t 10.0.0.100:80 -s mh")
    with pytest.raises(ConfigError, match="Service already exists"):
        cfg.apply("-A -t 10.0.0.100:80 -s rr")
    assert cfg.services[KEY].sched_name == "mh"
    # same address, other protocol or port: another service
    cfg.apply("-A -u 10.0.0.100:80 -s mh")
    cfg.apply("-A -t 10.0.0.100:81 -s mh")
    assert len(cfg.services) == 3


def test_missing_service_errors(cfg):
    for text, msg in [("-E -t 10.0.0.100:80", "No such service"),
                      ("-D -t 10.0.0.100:80", "No such service"),
                      ("-Z -t 10.0.0.100:80", "No such service"),
                      ("-a -t 10.0.0.100:80 -r 10.0.0.1 -m", "Service not defined"),
                      ("-e -t 10.0.0.100:80 -r 10.0.0.1 -m", "Service not defined"),
                      ("-d -t 10.0.0.100:80 -r 10.0.0.1", "Service not defined")]:
        with pytest.raises(ConfigError, match=msg):
            cfg.apply(text)


def test_scheduler_not_available(cfg):
    with pytest.raises(ConfigError, match="Scheduler not found"):
        cfg.apply("-A -t 10.0.0.100:80 -s nq")          # not in FAKES
    assert cfg.services == {}


def test_edit_resets_scheduler_to_wlc_and_flags(cfg):
    svc = setup3(cfg)
    cfg.apply("-E -t 10.0.0.100:80 -p 100")
    assert svc.sched_name == "wlc"
    assert svc.flags == SVC_F_PERSISTENT and svc.timeout == 100
    assert isinstance(svc.sched, FakeWLC)
    assert ("done", "mh", None) in Recorder.log
    # the new scheduler is built from the current list (kernel order)
    assert Recorder.log[-2:] == [("init", "wlc", keys(svc)), ("done", "mh", None)]
    cfg.apply("-E -t 10.0.0.100:80 -s wlc")
    assert svc.flags == 0 and svc.timeout == 0        # -p cleared


def test_edit_same_scheduler_keeps_it_and_shows_flags(cfg):
    cfg.apply("-A -t 10.0.0.100:80 -s rr")
    svc = cfg.services[KEY]
    sched = svc.sched
    cfg.apply("-E -t 10.0.0.100:80 -s rr -b flag-1")
    assert svc.sched is sched and not sched.done
    assert svc.flags == SVC_F_SCHED1
    assert Recorder.log[-1] == ("upd_service", SVC_F_SCHED1, None)


def test_edit_options_recreates_scheduler(cfg):
    cfg.apply("-A -t 10.0.0.100:80 -s mh --mh-table-size 251")
    svc = cfg.services[KEY]
    first = svc.sched
    cfg.apply("-E -t 10.0.0.100:80 -s mh --mh-table-size 251")
    assert svc.sched is first
    cfg.apply("-E -t 10.0.0.100:80 -s mh")
    assert svc.sched is not first and first.done
    assert svc.options == {}


def test_delete_service(cfg):
    svc = setup3(cfg)
    dests = list(svc.dests)
    cfg.apply("-D -t 10.0.0.100:80")
    assert KEY not in cfg.services
    assert all(not d.available for d in dests)
    assert svc.sched.done


def test_flush(cfg):
    setup3(cfg)
    cfg.apply("-A -u 10.0.0.100:53 -s rr")
    events = []
    cfg.subscribe(lambda e, s, d: events.append((e, s.key)))
    cfg.apply("-C")
    assert cfg.services == {}
    assert sorted(events) == [("delete-service", (IPPROTO_TCP, VIP, 80)),
                              ("delete-service", (IPPROTO_UDP, VIP, 53))]


# ------------------------------------------------------------- destinations

def test_add_inserts_at_head(cfg):
    svc = setup3(cfg)
    assert keys(svc) == [(ip("10.0.0.3"), 80), (ip("10.0.0.2"), 80), (ip("10.0.0.1"), 80)]
    # editing does not move; deleting and re-adding moves to the head
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.1:80 -m -w 5")
    assert keys(svc)[-1] == (ip("10.0.0.1"), 80)
    cfg.apply("-d -t 10.0.0.100:80 -r 10.0.0.1:80")
    cfg.apply("-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m")
    assert keys(svc)[0] == (ip("10.0.0.1"), 80)


def test_hooks_run_after_the_list_changed(cfg):
    setup3(cfg)
    log = Recorder.log
    a1, a2, a3 = (ip(f"10.0.0.{i}") for i in (1, 2, 3))
    assert log[1] == ("add", (a1, 80), [(a1, 80)])
    assert log[2] == ("add", (a2, 80), [(a2, 80), (a1, 80)])
    cfg.apply("-d -t 10.0.0.100:80 -r 10.0.0.2:80")
    assert log[-1] == ("del", (a2, 80), [(a3, 80), (a1, 80)])
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.3:80 -m -w 9")
    assert log[-1] == ("upd", (a3, 80), [(a3, 80), (a1, 80)])


def test_last_weight_rules(cfg):
    svc = setup3(cfg)
    d2 = svc.find_dest(ip("10.0.0.2"), 80)
    assert (d2.weight, d2.last_weight) == (2, 2)
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.2:80 -m -w 0")
    assert (d2.weight, d2.last_weight) == (0, 2)         # edit to 0 keeps last_weight
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.2:80 -m -w 7")
    assert (d2.weight, d2.last_weight) == (7, 7)
    cfg.apply("-a -t 10.0.0.100:80 -r 10.0.0.9:80 -m -w 0")
    d9 = svc.find_dest(ip("10.0.0.9"), 80)
    assert (d9.weight, d9.last_weight) == (0, 0)         # add sets it even to 0
    # -e without -w sends weight 1 (ipvsadm sends the whole destination)
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.9:80 -m")
    assert (d9.weight, d9.last_weight) == (1, 1)


def test_edit_thresholds_and_overload(cfg):
    svc = setup3(cfg)
    d = svc.find_dest(ip("10.0.0.1"), 80)
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.1:80 -m -x 10 -y 2")
    assert (d.u_threshold, d.l_threshold) == (10, 2)
    d.overloaded = True
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.1:80 -m -x 8 -y 2")     # lower: stays
    assert d.overloaded
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.1:80 -m -x 20")          # larger: cleared
    assert not d.overloaded
    d.overloaded = True
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.1:80 -m -x 20")          # equal: stays
    assert d.overloaded
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.1:80 -m")                # 0: cleared
    assert not d.overloaded and d.u_threshold == 0


def test_dest_errors(cfg):
    setup3(cfg)
    with pytest.raises(ConfigError, match="Destination already exists"):
        cfg.apply("-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m")
    with pytest.raises(ConfigError, match="No such destination"):
        cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.1:81 -m")
    with pytest.raises(ConfigError, match="No such destination"):
        cfg.apply("-d -t 10.0.0.100:80 -r 10.0.0.9")
    # same address, other port: another destination
    cfg.apply("-a -t 10.0.0.100:80 -r 10.0.0.1:81 -m")


@pytest.mark.parametrize("fwd,want", [("-g", FWD_DROUTE), ("-i", FWD_TUNNEL), ("", FWD_DROUTE),
                                      ("-m", FWD_MASQ)])
def test_forwarding_methods(cfg, fwd, want):
    """-g (ipvsadm's default), -i and -m are accepted, and -e changes the method."""
    cfg.apply("-A -t 10.0.0.100:80 -s rr")
    cfg.apply(f"-a -t 10.0.0.100:80 -r 10.0.0.1:80 {fwd}")
    d = cfg.services[(6, ip("10.0.0.100"), 80)].dests[0]
    assert d.fwd == want
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.1 -i --tun-type gue --tun-port 6080 --tun-csum")
    assert d.fwd == FWD_TUNNEL and d.tun == (1, 6080, 1)
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.1 -m")
    assert d.fwd == FWD_MASQ and d.tun == (0, 0, 0)


def test_delete_marks_unavailable_and_readd_revives(cfg):
    svc = setup3(cfg)
    d = svc.find_dest(ip("10.0.0.2"), 80)
    d.stats.conns = 42
    cfg.apply("-d -t 10.0.0.100:80 -r 10.0.0.2:80")
    assert not d.available and d not in svc.dests
    cfg.apply("-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m -w 4")
    again = svc.find_dest(ip("10.0.0.2"), 80)
    assert again is d and d.available
    assert (d.weight, d.last_weight, d.stats.conns) == (4, 4, 42)
    cfg.purge_trash()
    cfg.apply("-d -t 10.0.0.100:80 -r 10.0.0.2:80")
    cfg.purge_trash()
    cfg.apply("-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m")
    assert svc.find_dest(ip("10.0.0.2"), 80) is not d


def test_dest_list_is_replaced_not_mutated(cfg):
    svc = setup3(cfg)
    before = svc.dests
    snapshot = list(before)
    cfg.apply("-a -t 10.0.0.100:80 -r 10.0.0.4:80 -m")
    cfg.apply("-d -t 10.0.0.100:80 -r 10.0.0.1:80")
    assert before == snapshot and svc.dests is not before


# ------------------------------------------------------------ timeouts / -Z

def test_set_timeouts_zero_means_unchanged(cfg):
    assert cfg.timeouts.as_tuple() == (900, 120, 300)
    cfg.apply("--set 1000 0 0")
    assert cfg.timeouts.as_tuple() == (1000, 120, 300)
    cfg.apply("--set 0 60 0")
    assert cfg.timeouts.as_tuple() == (1000, 60, 300)
    cfg.apply("--set 0 0 30")
    assert cfg.timeouts.as_tuple() == (1000, 60, 30)
    cfg.apply("--set 0 0 0")
    assert cfg.timeouts.as_tuple() == (1000, 60, 30)


def test_zero(cfg):
    svc = setup3(cfg)
    cfg.apply("-A -u 10.0.0.100:53 -s rr")
    other = cfg.services[(IPPROTO_UDP, VIP, 53)]
    for s in (svc.stats, svc.dests[0].stats, other.stats):
        s.conns, s.inpkts, s.outbytes = 3, 4, 5
    events = []
    cfg.subscribe(lambda e, s, d: events.append((e, s)))
    cfg.apply("-Z -t 10.0.0.100:80")
    assert svc.stats.as_tuple() == (0,) * 5 and svc.dests[0].stats.as_tuple() == (0,) * 5
    assert other.stats.conns == 3
    assert events == [("zero", svc)]
    cfg.apply("-Z")
    assert other.stats.as_tuple() == (0,) * 5
    assert events[-1] == ("zero", None)


# ---------------------------------------------------------------- listeners

def test_listener_events(cfg):
    events = []
    cb = cfg.subscribe(lambda e, s, d: events.append((e, s and s.key, d and d.key)))
    setup3(cfg)
    cfg.apply("-e -t 10.0.0.100:80 -r 10.0.0.1:80 -m -w 3")
    cfg.apply("-d -t 10.0.0.100:80 -r 10.0.0.1:80")
    cfg.apply("-E -t 10.0.0.100:80 -s rr")
    cfg.apply("--set 1 1 1")
    cfg.apply("-D -t 10.0.0.100:80")
    d1, d2, d3 = ((ip(f"10.0.0.{i}"), 80) for i in (1, 2, 3))
    assert events == [
        ("add-service", KEY, None), ("add-dest", KEY, d1), ("add-dest", KEY, d2),
        ("add-dest", KEY, d3), ("edit-dest", KEY, d1), ("delete-dest", KEY, d1),
        ("edit-service", KEY, None), ("timeouts", None, None), ("delete-service", KEY, None)]
    cfg.unsubscribe(cb)
    cfg.apply("-A -t 10.0.0.100:80")
    assert len(events) == 9


def test_listener_sees_the_change_done(cfg):
    seen = []
    cfg.subscribe(lambda e, s, d: seen.append((e, KEY in cfg.services,
                                               list(s.dests) if s else None)))
    cfg.apply("-A -t 10.0.0.100:80 -s rr")
    cfg.apply("-a -t 10.0.0.100:80 -r 10.0.0.1 -m")
    assert seen[0][:2] == ("add-service", True)
    assert seen[1][0] == "add-dest" and len(seen[1][2]) == 1


# ------------------------------------------------------------------ batches

RULES = """\
# a comment
-A -t 10.0.0.100:80 -s mh -b mh-port
-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m
-a -t 10.0.0.100:80 -r 10.0.0.2:80 -m
"""


@pytest.mark.parametrize("bad_line,msg", [
    ("-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m", "Destination already exists"),
    ("-A -t 10.0.0.100:80 -s rr", "Service already exists"),
    ("-e -t 10.0.0.100:80 -r 10.0.0.7:80 -m", "No such destination"),
    ("-a -t 10.0.0.200:80 -r 10.0.0.7:80 -m", "Service not defined"),
    ("-a -t 10.0.0.100:80 -r 10.0.0.7:80 -g --tun-csum", "Tunnel options conflict"),
    ("-A -t 10.0.0.200:80 -s dh", "not supported by userlb"),
    ("-a -t 10.0.0.100:80 -r 10.0.0.7:80 -m -w 2147483648", "illegal weight"),
])
def test_batch_is_atomic(cfg, bad_line, msg):
    cfg.load_rules("-A -t 10.0.0.1:22 -s rr\n-a -t 10.0.0.1:22 -r 10.0.1.1 -m\n")
    before = {k: (s, list(s.dests), s.sched) for k, s in cfg.services.items()}
    Recorder.log.clear()
    events = []
    cfg.subscribe(lambda *a: events.append(a))
    text = RULES + "--set 5 5 5\n-A -u 10.0.0.100:53 -s rr\n" + bad_line + "\n-C\n"
    with pytest.raises(ConfigError) as e:
        cfg.load_rules(text)
    assert e.value.line == 7
    assert msg in e.value.message
    assert {k: (s, list(s.dests), s.sched) for k, s in cfg.services.items()} == before
    assert cfg.timeouts.as_tuple() == (900, 120, 300)
    assert Recorder.log == [] and events == []


def test_batch_dry_run_follows_the_batch(cfg):
    # later commands may depend on earlier ones of the same batch
    cfg.load_rules(RULES + "-d -t 10.0.0.100:80 -r 10.0.0.1:80\n"
                   "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n"
                   "-D -t 10.0.0.100:80\n-A -t 10.0.0.100:80 -s rr\n"
                   "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n")
    assert cfg.services[KEY].sched_name == "rr"
    with pytest.raises(ConfigError) as e:
        cfg.load_rules("-C\n-a -t 10.0.0.100:80 -r 10.0.0.5:80 -m\n")
    assert e.value.line == 2 and "Service not defined" in e.value.message
    assert KEY in cfg.services


def test_load_rules_clear_like_ipvsadm_restore(cfg):
    cfg.load_rules("-A -t 10.0.0.1:22 -s rr\n")
    cfg.load_rules(RULES, clear=True)
    assert list(cfg.services) == [KEY]


def test_apply_accepts_argv_and_ignores_listing(cfg):
    cfg.apply(["ipvsadm", "-A", "-t", "10.0.0.100:80", "-s", "rr"])
    cfg.apply("-L -n")
    cfg.apply("-S")
    assert list(cfg.services) == [KEY]
    with pytest.raises(ConfigError):
        cfg.apply("")


# ------------------------------------------------------- real schedulers

def test_real_mhs_reads_live_timeouts():
    cls = base.get("mhs")
    assert cls is not None
    cfg = Config(clock=ManualClock(0))
    cfg.load_rules("--set 1000 0 0\n-A -t 10.0.0.100:80 -s mhs -b mh-port\n"
                   "-a -t 10.0.0.100:80 -r 10.0.0.1:80 -m\n")
    sched = cfg.services[KEY].sched
    assert isinstance(sched, cls)
    assert sched.timeouts() == (1000, 120, 300)
    cfg.apply("--set 0 2000 0")
    assert sched.timeouts() == (1000, 2000, 300)


def test_real_mh_table_follows_kernel_order():
    cfg = Config(clock=ManualClock(0))
    cfg.load_rules(RULES)
    svc = cfg.services[KEY]
    table = svc.sched.table_endpoints()
    assert len(table) == 4093
    assert {(d.addr, d.port) for d in table} == {(ip("10.0.0.1"), 80), (ip("10.0.0.2"), 80)}
    assert all(d.svc is svc for d in svc.dests)


# ---- a batch builds each mh/sh table once (docs/ipvs.md 1.10)

def _rules(sched, n, extra=""):
    lines = [f"-A -t 10.0.0.100:80 -s {sched} {extra}".strip()]
    lines += [f"-a -t 10.0.0.100:80 -r 10.1.{i // 250}.{i % 250 + 1}:80 -m -w {i % 3 + 1}"
              for i in range(n)]
    return lines


@pytest.mark.parametrize("sched", ["mh", "sh"])
def test_batch_builds_each_table_once_and_as_line_by_line(sched, monkeypatch):
    lines = _rules(sched, 12)
    one_by_one = Config(clock=ManualClock(0.0))
    for line in lines:
        one_by_one.apply(line)
    cls = type(one_by_one.services[KEY].sched)
    builds = []
    real = cls.update
    monkeypatch.setattr(cls, "update", lambda self: (builds.append(self), real(self))[1])
    batch = Config(clock=ManualClock(0.0))
    batch.apply_batch(lines)
    sched_obj = batch.services[KEY].sched
    # one build at creation (no destinations yet), one at the end of the batch
    assert builds == [sched_obj, sched_obj]
    endpoints = [(d.addr, d.port) if d else None for d in sched_obj.table_endpoints()]
    expected = [(d.addr, d.port) if d else None
                for d in one_by_one.services[KEY].sched.table_endpoints()]
    assert endpoints == expected
    builds.clear()
    batch.apply("-d -t 10.0.0.100:80 -r 10.1.0.1:80")      # single commands build at once
    assert builds == [sched_obj]


def test_batch_table_of_a_scheduler_replaced_in_the_batch_is_not_built(monkeypatch):
    from userlb.sched.mh import MHScheduler
    cfg = Config(clock=ManualClock(0.0))
    cfg.apply_batch(_rules("mh", 3))
    old = cfg.services[KEY].sched
    built = []
    real = MHScheduler.update
    monkeypatch.setattr(MHScheduler, "update", lambda self: (built.append(self), real(self))[1])
    cfg.apply_batch(["-a -t 10.0.0.100:80 -r 10.9.0.1:80 -m", "-E -t 10.0.0.100:80 -s rr"])
    assert old not in built and cfg.services[KEY].sched.name == "rr"


def test_batch_longer_than_the_mh_table_keeps_the_table_from_before():
    cfg = Config(clock=ManualClock(0.0))
    cfg.apply_batch(_rules("mh", 250, "--mh-table-size 251"))
    before = cfg.services[KEY].sched.table_endpoints()
    cfg.apply_batch([f"-a -t 10.0.0.100:80 -r 10.2.0.{i}:80 -m" for i in range(1, 4)])
    assert len(cfg.services[KEY].dests) == 253
    assert cfg.services[KEY].sched.table_endpoints() == before


def test_a_refused_batch_builds_nothing(monkeypatch):
    from userlb.sched.mh import MHScheduler
    cfg = Config(clock=ManualClock(0.0))
    cfg.apply_batch(_rules("mh", 3))
    built = []
    monkeypatch.setattr(MHScheduler, "update", lambda self: built.append(self))
    with pytest.raises(ConfigError):
        cfg.apply_batch(["-a -t 10.0.0.100:80 -r 10.9.0.1:80 -m",
                         "-a -t 10.0.0.100:80 -r 10.9.0.1:80 -m"])
    assert built == []
