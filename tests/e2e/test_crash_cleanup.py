"""After `kill -9` of `userlb run` (docs/steering.md, "Ownership and
recovery"): its rules stay behind (the TUN device takes only its routes);
a new start recognises and replaces them and its clean stop leaves the
namespace as it was; `userlb cleanup` removes everything userlb installed,
the moved local rule included."""
import signal

from helpers.netns import needs_root

RULES = "-A -t 10.99.0.1:80 -s rr\n-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1\n"


def _ours(text):
    return [ln for ln in text.splitlines() if "proto 245" in ln]


@needs_root
def test_restart_after_kill_9_replaces_leftovers(topo):
    before = topo.state()
    p = topo.start(RULES)
    topo.stop(p, signal.SIGKILL)
    left = topo.ip("-4", "rule")
    assert "from 10.20.0.11 lookup" in left and "proto 245" in left
    assert "0:\tfrom all lookup local" not in left       # still moved: a dead instance's
    p = topo.start(RULES)
    assert "removed a left-over of a dead instance: rule pref 10001 from 10.20.0.11/32" \
        in topo.log()
    rules = topo.ip("-4", "rule")
    assert rules.count("from 10.20.0.11 lookup") == 1
    assert rules.count(f"iif {topo.tun}") == 1 and rules.count("iif lo lookup main") == 1
    assert topo.connect(topo.c, "10.99.0.1", 80) == "S 10.10.0.2"
    topo.stop(p)
    assert topo.state() == before


@needs_root
def test_cleanup_after_kill_9_leaves_nothing(topo):
    before = topo.state()
    p = topo.start(RULES)
    topo.stop(p, signal.SIGKILL)
    assert _ours(topo.ip("-4", "rule"))
    r = topo.userlb("cleanup")
    assert r.returncode == 0, r.stderr
    assert "removed rule pref 10001 from 10.20.0.11/32" in r.stdout
    assert topo.state() == before
    r = topo.userlb("cleanup")
    assert r.returncode == 0 and "nothing of userlb's left" in r.stdout
    assert topo.connect(topo.c, "10.99.0.1", 2222) == "D 10.10.0.2"


@needs_root
def test_cleanup_of_one_device_keeps_a_running_instance(topo):
    """`cleanup --tun DEAD` removes the dead instance's part, not a live one's."""
    before = topo.state()
    p = topo.start(RULES)
    topo.stop(p, signal.SIGKILL)
    live_tun = topo.tun
    topo.tun = live_tun + "b"
    p2 = topo.start(RULES)
    r = topo.userlb("cleanup", "--tun", live_tun)
    assert r.returncode == 0, r.stderr
    rules = topo.ip("-4", "rule")
    assert f"iif {live_tun} " not in rules and f"iif {topo.tun} " in rules
    assert rules.count("from 10.20.0.11 lookup") == 1
    assert topo.connect(topo.c, "10.99.0.1", 80) == "S 10.10.0.2"
    topo.stop(p2)
    assert topo.state() == before
