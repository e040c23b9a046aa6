"""The keepalived quorum reaches `userlb announce`: the control socket's
`state` reply carries it (server.state_text with HealthManager.quorum_of),
and probe.lost_of turns a lost quorum into the VIP to withdraw."""
import json
import textwrap

from userlb.announce import probe
from userlb.announce.fitness import Announcer, Reading
from userlb.control.config import Config
from userlb.control.health import HealthManager, Result
from userlb.control.keepalived import load_text
from userlb.control.server import state_text

CONF = """
    virtual_server 10.99.0.1 80 {
        quorum 2
        real_server 10.20.0.11 80 { TCP_CHECK { } }
        real_server 10.20.0.12 80 { TCP_CHECK { } }
    }
    virtual_server 10.99.0.2 80 {
        real_server 10.20.0.11 80 { TCP_CHECK { } }
    }
    """


def test_quorum_in_the_state_reply_and_the_vip_withdrawn():
    cfg = Config()
    mgr = HealthManager(cfg, load_text(textwrap.dedent(CONF), "k.conf"), log=lambda m: None)
    cfg.apply_batch(mgr.initial_commands())
    state = json.loads(state_text(cfg, mgr.quorum_of))
    assert sorted(state["quorum"]) == [["tcp", "10.99.0.1:80", True],
                                       ["tcp", "10.99.0.2:80", True]]
    assert "quorum" not in json.loads(state_text(cfg))       # without health checks
    mgr.report(0, 0, 0, False, Result(False, "refused"))      # 10.99.0.1: weight 1 < 2
    text = state_text(cfg, mgr.quorum_of)
    lost = probe.lost_of(text)
    assert lost == {"10.99.0.1/32": "TCP 10.99.0.1:80 below its quorum"}
    a = Announcer(rise=1, fall=1, immediate=True)
    vips = {"10.99.0.1/32": (), "10.99.0.2/32": ()}
    assert a.step(Reading(vips=vips)).wanted == set(vips)
    d = a.step(Reading(vips=vips, lost=lost))
    assert d.wanted == {"10.99.0.2/32"} and "below its quorum" in d.why_not["10.99.0.1/32"]
