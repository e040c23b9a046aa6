"""The direct-routing driver (dataplane/l2out.py) on real links in a
namespace pair: neighbour probing, the frame on the wire, the named drop
reasons, the MTU answer, the tunnel paths handed to the engine."""
import json
import subprocess
import uuid

import pytest

from tests.helpers.netns import needs_root, ns_python

pytestmark = needs_root

CODE = r"""
import json, socket, time
from types import SimpleNamespace
from scapy.all import AsyncSniffer, IP, TCP, Ether, raw
from userlb.dataplane.l2out import L2Out
from userlb.dataplane.engine import Engine

def a4(t):
    return int.from_bytes(socket.inet_aton(t), "big")

eng = Engine()
l2 = L2Out(eng, probe_wait=0.5)
out = {}
# unknown at first: dropped, looked up in the background
xl = SimpleNamespace(daddr=a4("10.77.0.2"))
pkt = raw(IP(src="192.0.2.9", dst="10.0.0.100", flags="DF") / TCP(sport=1234, dport=80))
out["first"] = l2.send(xl, pkt)
out["drops_first"] = dict(l2.drops)
deadline = time.monotonic() + 5
while (l2.paths.get(xl.daddr) is None or l2.paths[xl.daddr].error) and time.monotonic() < deadline:
    time.sleep(0.05)
p = l2.paths[xl.daddr]
out["path"] = [p.ifname, p.mtu, p.error, p.src]
out["tun_path"] = list(eng.tun_paths.get(xl.daddr, ()))
s = AsyncSniffer(iface="b0", store=True)      # the frames leaving on b0
s.start(); time.sleep(0.3)
out["sent"] = l2.send(xl, pkt)
time.sleep(0.3); s.stop()
frames = [bytes(f) for f in s.results or [] if IP in f and f[IP].dst == "10.0.0.100"]
out["frames"] = [f.hex() for f in frames]
out["own_mac"] = open("/sys/class/net/b0/address").read().strip()
# too big for the link (MTU 1000) with DF: the ICMP answer to write to the TUN device
big = raw(IP(src="192.0.2.9", dst="10.0.0.100", flags="DF") / TCP(sport=1234, dport=80)
          / (b"x" * 1200))
rep = l2.send(xl, big)
out["icmp"] = rep.hex() if rep else None
nodf = raw(IP(src="192.0.2.9", dst="10.0.0.100", id=77) / TCP(sport=1234, dport=80)
           / (b"x" * 2400))
s = AsyncSniffer(iface="b0", store=True)
s.start(); time.sleep(0.3)
out["nodf"] = l2.send(xl, nodf)
time.sleep(0.3); s.stop()
out["frags"] = [bytes(f[IP]).hex() for f in s.results or []
                if IP in f and f[IP].dst == "10.0.0.100"]
out["nodf_raw"] = nodf.hex()
# nobody answers ARP for .9: unresolved after the probe
xl2 = SimpleNamespace(daddr=a4("10.77.0.9"))
l2.resolve_now([xl2.daddr])
out["unresolved"] = l2.paths[xl2.daddr].error
# no route
xl3 = SimpleNamespace(daddr=a4("10.99.9.9"))
l2.resolve_now([xl3.daddr])
out["noroute"] = l2.paths[xl3.daddr].error
out["drops"] = dict(l2.drops)
out["tx"] = l2.tx
l2.close()
print(json.dumps(out))
"""


def sh(*cmd):
    subprocess.run(list(cmd), check=True, capture_output=True)


@pytest.fixture
def pair():
    """a: b0 10.77.0.1/24 (MTU 1000) -- b: a0 10.77.0.2/24 (MTU 1000)."""
    sfx = uuid.uuid4().hex[:6]
    a, b = f"l2o{sfx}a", f"l2o{sfx}b"
    try:
        for ns in (a, b):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", a, "link", "add", "b0", "type", "veth", "peer", "a0", "netns", b)
        sh("ip", "-n", a, "addr", "add", "10.77.0.1/24", "dev", "b0")
        sh("ip", "-n", b, "addr", "add", "10.77.0.2/24", "dev", "a0")
        sh("ip", "-n", a, "link", "set", "b0", "up", "mtu", "1000")
        sh("ip", "-n", b, "link", "set", "a0", "up", "mtu", "1000")
        yield a, b
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_l2out_on_a_veth_pair(pair):
    from scapy.all import ICMP, IP, TCP, Ether
    a, b = pair
    r = json.loads(ns_python(a, CODE).stdout.strip().splitlines()[-1])
    assert r["first"] is None and r["drops_first"] == {"l2_unresolved": 1}
    assert r["path"] == ["b0", 1000, None, int.from_bytes(bytes([10, 77, 0, 1]), "big")]
    assert r["tun_path"] == [r["path"][3], 1000]
    assert r["sent"] is None and len(r["frames"]) == 1
    f = Ether(bytes.fromhex(r["frames"][0]))
    peer_mac = subprocess.run(["ip", "netns", "exec", b, "cat", "/sys/class/net/a0/address"],
                              capture_output=True, text=True).stdout.strip()
    assert f.dst == peer_mac and f.src == r["own_mac"] and f.type == 0x0800
    assert f[IP].dst == "10.0.0.100" and f[TCP].dport == 80     # unchanged: still the VIP
    icmp = IP(bytes.fromhex(r["icmp"]))
    assert icmp.src == "10.0.0.100" and icmp.dst == "192.0.2.9"
    assert (icmp[ICMP].type, icmp[ICMP].code, icmp[ICMP].nexthopmtu) == (3, 4, 1000)
    # without DF: fragments that fit the link, reassembling to the packet
    assert r["nodf"] is None and len(r["frags"]) == 3
    frags = [IP(bytes.fromhex(h)) for h in r["frags"]]
    assert all(len(bytes(x)) <= 1000 and x.id == 77 for x in frags)
    assert [x.flags.MF for x in frags] == [True, True, False]
    assert [x.frag * 8 for x in frags] == [0, 976, 1952]
    for x in frags:
        c = IP(bytes(x))
        del c.chksum
        assert IP(bytes(c)).chksum == x.chksum
    whole = bytes.fromhex(r["nodf_raw"])
    assert b"".join(bytes(x)[20:] for x in frags) == whole[20:]
    assert r["unresolved"] == "l2_unresolved" and r["noroute"] == "l2_no_route"
    assert r["drops"]["l2_fragmented"] == 1 and r["drops"]["l2_icmp_too_big"] == 1
    assert "l2_too_big" not in r["drops"]
    assert r["tx"] == 4
