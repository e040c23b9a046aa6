"""The TUN device set down and up again under a running director: the
kernel drops every route through it; the director puts its routes back (it
watches link events) and traffic flows again, for a routed VIP and for one
that is a local address (docs/steering.md)."""
from localvip_topo import wait_for

from helpers.netns import needs_root

RULES = ("-A -t 10.99.0.1:80 -s rr\n-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1\n"
         "-A -t 10.99.0.5:80 -s rr\n-a -t 10.99.0.5:80 -r 10.20.0.11:80 -m -w 1\n")


@needs_root
def test_routes_come_back_after_the_device_is_set_down_and_up(topo):
    p = topo.start(RULES)
    assert topo.connect(topo.c, "10.99.0.1", 80) == "S 10.10.0.2"      # local VIP
    assert topo.connect(topo.c, "10.99.0.5", 80) == "S 10.10.0.2"      # routed VIP
    routes = topo.ip("-4", "route", "show", "table", "all")
    assert f"10.99.0.5 dev {topo.tun} proto 245" in routes
    topo.ip("link", "set", topo.tun, "down")
    assert wait_for(lambda: "10.99.0.5" not in topo.ip("-4", "route", "show", "table", "all"))
    topo.ip("link", "set", topo.tun, "up")
    assert wait_for(lambda: topo.ip("-4", "route", "show", "table", "all") == routes)
    assert "putting back" in topo.log()
    assert topo.connect(topo.c, "10.99.0.5", 80) == "S 10.10.0.2"
    assert topo.connect(topo.c, "10.99.0.1", 80) == "S 10.10.0.2"
    topo.stop(p)
    assert p.returncode == 0
