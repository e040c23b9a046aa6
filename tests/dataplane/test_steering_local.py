"""TunRoutes with VIPs that are local addresses, IPv4 and IPv6, and two
instances sharing a namespace (userlb/dataplane/steering.py, docs/steering.md)."""
import json

from helpers.netns import needs_root, ns_python

CODE = r"""
import json, subprocess, time
from userlb.dataplane.steering import TunRoutes
from userlb.dataplane.tun import TunDevice
from userlb.model import parse_addr

def snap():
    return {f: subprocess.run(["ip", f, "rule"], capture_output=True, text=True).stdout
            + subprocess.run(["ip", f, "route", "show", "table", "all"], capture_output=True,
                             text=True).stdout for f in ("-4", "-6")}

def rules(f):
    return subprocess.run(["ip", f, "rule"], capture_output=True, text=True).stdout

subprocess.run(["ip", "addr", "add", "fd00:99::1/128", "dev", "lo", "nodad"], check=True)
before = snap()
v4, v6 = parse_addr("10.99.0.1")[1], parse_addr("fd00:99::1")[1]
a, b = TunDevice("ulbla"), TunDevice("ulblb")
ra = TunRoutes(a.name, a.index, vips=[v4, v6], sources=[parse_addr("10.20.0.11")[1]],
               services=[(6, v4, 80), (6, v6, 443), (17, v6, 0)])
ra.install()
one = {f: rules(f) for f in ("-4", "-6")}
subprocess.run(["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"], check=True)
for _ in range(50):
    # the watch's thread adds the service rule, then moves the local rule
    r4 = rules("-4")
    if "to 10.99.0.1" in r4 and "0:\tfrom all lookup local" not in r4:
        break
    time.sleep(0.1)
two = {f: rules(f) for f in ("-4", "-6")}
rb = TunRoutes(b.name, b.index, vips=[v4], sources=[parse_addr("10.20.0.12")[1]],
               services=[(17, v4, 53)])
rb.install()
both = {f: rules(f) for f in ("-4", "-6")}
ea = ra.remove()
after_a = {f: rules(f) for f in ("-4", "-6")}
eb = rb.remove()
subprocess.run(["ip", "addr", "del", "10.99.0.1/32", "dev", "lo"], check=True)
a.close(); b.close()
time.sleep(0.2)
after = snap()
print(json.dumps(dict(before=before, one=one, two=two, both=both, after_a=after_a,
                      after=after, errors=ea + eb)))
"""


@needs_root
def test_local_vips_both_families_and_two_instances(netns):
    r = json.loads(ns_python(netns, CODE).stdout)
    one, two, both, after_a = r["one"], r["two"], r["both"], r["after_a"]
    # only the IPv6 VIP is local at first: only IPv6's local rule moves
    assert "0:\tfrom all lookup local" in one["-4"] and "to 10.99.0.1" not in one["-4"]
    assert "0:\tfrom all lookup local" not in one["-6"]
    assert "3:\tfrom all lookup local proto 245" in one["-6"]
    assert "1:\tfrom all iif lo lookup local proto 245" in one["-6"]
    assert "2:\tfrom all to fd00:99::1 ipproto tcp dport 443 lookup" in one["-6"]
    assert "2:\tfrom all to fd00:99::1 ipproto udp lookup" in one["-6"]    # port 0: every port
    # the IPv4 VIP added to lo after install is followed
    assert "2:\tfrom all to 10.99.0.1 ipproto tcp dport 80 lookup" in two["-4"]
    assert "0:\tfrom all lookup local" not in two["-4"]
    # a second instance: its own rules, the shared ones once
    assert "to 10.99.0.1 ipproto udp dport 53" in both["-4"]
    assert both["-4"].count("iif lo lookup main") == 1
    assert both["-4"].count("lookup local proto 245") == 2      # guard + moved rule
    # the first stops: the second's rules and the shared ones it needs stay
    assert "dport 80" not in after_a["-4"] and "iif ulbla" not in after_a["-4"]
    assert "udp dport 53" in after_a["-4"] and "iif lo lookup main" in after_a["-4"]
    assert "3:\tfrom all lookup local proto 245" in after_a["-4"]
    assert "0:\tfrom all lookup local" in after_a["-6"] and "proto 245" not in after_a["-6"]
    assert r["errors"] == []
    assert r["after"] == r["before"]
