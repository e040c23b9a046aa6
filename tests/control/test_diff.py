"""The SIGHUP reload's difference (userlb/control/diff.py)."""
from hypothesis import given, settings
from hypothesis import strategies as st

from userlb.control.config import Config
from userlb.control.diff import diff_commands

VIPS = ["-t 10.99.0.1:80", "-t 10.99.0.1:443", "-u 10.99.0.1:53", "-t [fd00:99::1]:80"]
SCHEDS = ["mh", "rr", "wlc", "sh"]
RIPS4 = ["10.20.0.11", "10.20.0.12", "10.20.0.13", "10.20.0.14"]
RIPS6 = ["[fd00:20::b]", "[fd00:20::c]", "[fd00:20::d]"]


# ------------------------------------------------------------ reload diff

@st.composite
def rules(draw):
    lines = []
    for vip in draw(st.lists(st.sampled_from(VIPS), unique=True, max_size=4)):
        sched = draw(st.sampled_from(SCHEDS))
        lines.append(f"-A {vip} -s {sched}")
        rips = RIPS6 if "[" in vip else RIPS4
        port = vip.rsplit(":", 1)[1]
        for rip in draw(st.lists(st.sampled_from(rips), unique=True, max_size=4)):
            w = draw(st.integers(0, 3))
            lines.append(f"-a {vip} -r {rip}:{port} -m -w {w}")
    if draw(st.booleans()):
        lines.append(f"--set {draw(st.integers(1, 999))} 0 {draw(st.integers(1, 999))}")
    return "\n".join(lines) + "\n"


def _cfg(text):
    c = Config()
    c.load_rules(text)
    return c


@settings(max_examples=150, deadline=None)
@given(rules(), rules())
def test_reload_difference_reaches_the_new_rules_and_keeps_objects(a, b):
    cur, new = _cfg(a), _cfg(b)
    svc_before = dict(cur.services)
    dest_before = {(k, d.key): d for k, s in cur.services.items() for d in s.dests}
    cur.apply_batch(diff_commands(cur, new))
    assert cur.save() == new.save()
    # dests in the same (kernel) order, so that mh/sh tables match a fresh load
    # whenever the new rules only appended destinations
    for k, s in cur.services.items():
        assert {d.key for d in s.dests} == {d.key for d in new.services[k].dests}
        if k in svc_before:
            assert s is svc_before[k]           # kept, not re-created
        for d in s.dests:
            if (k, d.key) in dest_before:
                assert d is dest_before[(k, d.key)]


def test_reload_of_appended_destinations_keeps_kernel_order():
    base = "-A -t 10.99.0.1:80 -s mh\n-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m\n" \
           "-a -t 10.99.0.1:80 -r 10.20.0.12:80 -m\n"
    more = base + "-a -t 10.99.0.1:80 -r 10.20.0.13:80 -m\n-a -t 10.99.0.1:80 -r 10.20.0.14:80 -m\n"
    cur, new = _cfg(base), _cfg(more)
    cur.apply_batch(diff_commands(cur, new))
    key = next(iter(cur.services))
    assert [d.key for d in cur.services[key].dests] == [d.key for d in new.services[key].dests]


def test_identical_rules_give_no_commands():
    text = "-A -t 10.99.0.1:80 -s mh\n-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 2\n"
    assert diff_commands(_cfg(text), _cfg(text)) == []
