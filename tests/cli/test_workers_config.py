"""What `userlb run --workers N` accepts (userlb/cli/workers.py), without a
device: the start-up check, the live check of the main process's Config,
`--workers auto`."""
import os

import pytest

from userlb.cli import workers as W
from userlb.control.config import Config
from userlb.errors import ConfigError


def _cfg(text):
    c = Config()
    c.load_rules(text)
    return c


def _pool_cfg(sloppy, text=""):
    c = W.PoolConfig()
    c.workers, c.sloppy = 2, sloppy
    if text:
        c.load_rules(text)
    return c


def test_auto_is_the_cpus_we_may_use_and_bad_values_are_refused():
    assert W.resolve("auto") == len(os.sched_getaffinity(0))
    assert W.resolve("3") == 3
    for bad in ("0", "-1", "65", "two", ""):
        with pytest.raises(ValueError, match="--workers"):
            W.resolve(bad)


@pytest.mark.parametrize("rules,sloppy,ok", [
    ("-A -u 10.0.0.1:53 -s sh\n", False, True),
    ("-A -u 10.0.0.1:53 -s mh\n", False, True),
    ("-A -t 10.0.0.1:80 -s mh\n", True, True),
    ("-A -t 10.0.0.1:80 -s mh\n", False, False),          # needs sloppy TCP
    ("-A -t 10.0.0.1:80 -s mhs\n", False, True),          # stateless: schedules any packet
    ("-A -u 10.0.0.1:53 -s rr\n", True, False),
    ("-A -t 10.0.0.1:80 -s wlc\n", True, False),
    ("-A -u 10.0.0.1:53 -s sh -p 300\n", True, False),    # persistence
    ("-A -u 10.0.0.1:53 -s sh\n-a -u 10.0.0.1:53 -r 10.1.0.1 -m -x 100\n", True, False),
    ("-A -u 10.0.0.1:53 -s sh\n-a -u 10.0.0.1:53 -r 10.1.0.1 -g\n", True, True),    # DR
    ("-A -t 10.0.0.1:80 -s mh\n-a -t 10.0.0.1:80 -r 10.1.0.1 -i\n", True, True),    # tunnel
])
def test_start_check_and_live_check_agree(rules, sloppy, ok):
    problems = W.check_config(_cfg(rules), sloppy, 2)
    assert (problems == []) == ok, problems
    if ok:
        _pool_cfg(sloppy, rules)
    else:
        assert "--workers 2" in problems[0] or "persistence" in problems[0]
        c = _pool_cfg(sloppy)
        with pytest.raises(ConfigError) as e:
            c.load_rules(rules)
        assert c.services == {}          # refused whole
        assert "10.0.0.1" in str(e.value) or "-x/-y" in str(e.value)


def test_a_refused_batch_changes_nothing():
    c = _pool_cfg(True, "-A -u 10.0.0.1:53 -s sh\n")
    with pytest.raises(ConfigError, match="scheduler 'rr'"):
        c.apply_batch(["-a -u 10.0.0.1:53 -r 10.1.0.1 -m", "-A -t 10.0.0.2:80 -s rr"])
    assert [len(s.dests) for s in c.services.values()] == [0]
    c.apply_batch(["-E -u 10.0.0.1:53 -s mh"])        # safe edits pass
    with pytest.raises(ConfigError, match="persistence"):
        c.apply(["-E", "-u", "10.0.0.1:53", "-s", "mh", "-p", "60"])


@pytest.mark.parametrize("sched,sloppy_sctp,ok", [
    ("mh", True, True), ("sh", True, True),
    ("mh", False, False), ("sh", False, False),        # needs sloppy SCTP
    ("mhs", False, True),                              # stateless: schedules any chunk
    ("rr", True, False),
])
def test_sctp_services_with_workers(sched, sloppy_sctp, ok):
    rules = f"-A --sctp-service 10.0.0.1:3868 -s {sched}\n"
    problems = W.check_config(_cfg(rules), True, 2, sloppy_sctp)
    assert (problems == []) == ok, problems
    c = _pool_cfg(True)
    c.sloppy_sctp = sloppy_sctp
    if ok:
        c.load_rules(rules)
    else:
        with pytest.raises(ConfigError, match="--sloppy-sctp|scheduler 'rr'"):
            c.load_rules(rules)
        assert c.services == {}
