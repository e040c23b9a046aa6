"""The steering into the TUN device (userlb/dataplane/steering.py):
`TunRoutes` on a real TUN device inside a fresh network namespace (root only)."""
import json

from helpers.netns import needs_root, ns_python

ROUTES_CODE = r"""
import json, subprocess
from userlb.dataplane.steering import TunRoutes, read_sysctl
from userlb.dataplane.tun import TunDevice
from userlb.model import parse_addr

def snap():
    out = {}
    for fam in ("-4", "-6"):
        out["rule" + fam] = subprocess.run(["ip", fam, "rule"], capture_output=True,
                                           text=True).stdout
        out["route" + fam] = subprocess.run(["ip", fam, "route", "show", "table", "all"],
                                            capture_output=True, text=True).stdout
    out["fwd"] = read_sysctl("net.ipv4.ip_forward"), read_sysctl("net.ipv6.conf.all.forwarding")
    return out

d = TunDevice("ulbt1")
before = snap()
r = TunRoutes(d.name, d.index, vips=[parse_addr("10.99.0.1")[1], parse_addr("fd00:99::1")[1]],
              sources=[parse_addr("10.20.0.11")[1], parse_addr("fd00:20::b")[1], "10.30.0.0/16"],
              table=4242, priority=9000)
r.install()
during = snap()
changed = r.update(vips=[parse_addr("10.99.0.2")[1]], sources=[parse_addr("10.20.0.12")[1]])
updated = snap()
same = r.update(vips=[parse_addr("10.99.0.2")[1]], sources=[parse_addr("10.20.0.12")[1]])
r.remove()
after = snap()
d.close()
print(json.dumps({"before": before, "during": during, "after": after, "updated": updated,
                  "changed": changed, "same": same}))
"""


@needs_root
def test_tun_routes_install_and_remove_exactly(netns):
    res = json.loads(ns_python(netns, ROUTES_CODE).stdout)
    b, d, a = res["before"], res["during"], res["after"]
    assert "10.99.0.1 dev ulbt1" in d["route-4"]
    assert "fd00:99::1 dev ulbt1" in d["route-6"]
    assert "default dev ulbt1 table 4242" in d["route-4"]
    assert "default dev ulbt1 table 4242" in d["route-6"]
    assert "9000:\tfrom all iif ulbt1 lookup main" in d["rule-4"]
    assert "9000:\tfrom all iif lo lookup main" in d["rule-4"]
    assert "9001:\tfrom 10.20.0.11 lookup 4242" in d["rule-4"]
    assert "9001:\tfrom 10.30.0.0/16 lookup 4242" in d["rule-4"]
    assert "9001:\tfrom fd00:20::b lookup 4242" in d["rule-6"]
    assert d["fwd"] == ["1", "1"]
    assert a == b                   # rules, routes and sysctls exactly as before
    u = res["updated"]
    assert res["changed"] is True and res["same"] is False
    assert "10.99.0.2 dev ulbt1" in u["route-4"] and "10.99.0.1 dev" not in u["route-4"]
    assert "fd00:99::1" not in u["route-6"] and "table 4242" not in u["route-6"]
    assert "9001:\tfrom 10.20.0.12 lookup 4242" in u["rule-4"]
    assert "10.20.0.11" not in u["rule-4"] and "10.30.0.0/16" not in u["rule-4"]
    assert "lookup 4242" not in u["rule-6"] and "ulbt1" not in u["rule-6"]


SAME_VIP_CODE = r"""
import json
from userlb.dataplane.steering import SteeringError, TunRoutes
from userlb.dataplane.tun import TunDevice
from userlb.model import parse_addr

vip = parse_addr("10.99.0.1")[1]
d1, d2 = TunDevice("ulbt1"), TunDevice("ulbt2")
r1 = TunRoutes(d1.name, d1.index, vips=[vip], sources=[], table=4301)
r1.install()
r2 = TunRoutes(d2.name, d2.index, vips=[vip], sources=[], table=4302)
try:
    r2.install()
    err = None
except SteeringError as e:
    err = str(e)
r1.remove()
r3 = TunRoutes(d2.name, d2.index, vips=[vip], sources=[], table=4302)
r3.install()                     # the first one gone: fine
r3.remove()
d1.close(); d2.close()
print(json.dumps({"err": err}))
"""


@needs_root
def test_a_second_director_with_the_same_vip_on_another_device_is_refused(netns):
    err = json.loads(ns_python(netns, SAME_VIP_CODE).stdout)["err"]
    assert err is not None and "10.99.0.1/32 already leads into ulbt1" in err
    assert "another userlb run" in err
