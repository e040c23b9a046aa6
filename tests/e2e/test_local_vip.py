"""VIPs that are local addresses of the director (docs/steering.md): a real
`userlb run` in a namespace whose VIP sits on `lo` (the kernel IPVS
selftest's NAT shape).  The service port goes to the real server, another
port of the same address to a listener of the director; live -A/-D and an
address added to `lo` after start are followed; the director's own traffic
to the real server is not captured; the exit leaves the rules as they were."""
import signal

from localvip_topo import wait_for

from helpers.netns import needs_root

RULES = "-A -t 10.99.0.1:80 -s rr\n-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1\n" \
        "-A -t 10.99.0.2:80 -s rr\n-a -t 10.99.0.2:80 -r 10.20.0.11:80 -m -w 1\n"


@needs_root
def test_local_vip_service_port_balanced_other_port_local(topo):
    before = topo.state()
    # without userlb the director's own stack answers (port 80: refused)
    assert topo.connect(topo.c, "10.99.0.1", 80).startswith("ERR")
    p = topo.start(RULES)
    assert "local VIP: rule to 10.99.0.1 ipproto tcp dport 80" in topo.log()
    rules = topo.ip("-4", "rule")
    assert "2:\tfrom all to 10.99.0.1 ipproto tcp dport 80 lookup" in rules
    assert "3:\tfrom all lookup local proto 245" in rules
    assert "0:\tfrom all lookup local" not in rules
    # the service port reaches the real server, through NAT (it sees the client)
    assert topo.connect(topo.c, "10.99.0.1", 80) == "S 10.10.0.2"
    # another port of the VIP's address stays with the director's stack
    assert topo.connect(topo.c, "10.99.0.1", 2222) == "D 10.10.0.2"
    # the director's own traffic to the real server is not captured
    assert topo.connect(topo.d, "10.20.0.11", 80) == "S 10.20.0.1"
    # live -A / -D of a service on another port of the local VIP
    r = topo.adm("-A", "-t", "10.99.0.1:2222", "-s", "rr")
    assert r.returncode == 0, r.stderr
    r = topo.adm("-a", "-t", "10.99.0.1:2222", "-r", "10.20.0.11:80", "-m")
    assert r.returncode == 0, r.stderr
    assert topo.connect(topo.c, "10.99.0.1", 2222) == "S 10.10.0.2"
    r = topo.adm("-D", "-t", "10.99.0.1:2222")
    assert r.returncode == 0, r.stderr
    assert "dport 2222" not in topo.ip("-4", "rule")
    assert topo.connect(topo.c, "10.99.0.1", 2222) == "D 10.10.0.2"
    # SIGHUP with a rules file that adds the port: followed too
    topo.rules_file(RULES + "-A -t 10.99.0.1:2222 -s rr\n"
                    "-a -t 10.99.0.1:2222 -r 10.20.0.11:80 -m -w 1\n")
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "dport 2222" in topo.ip("-4", "rule"))
    assert topo.connect(topo.c, "10.99.0.1", 2222) == "S 10.10.0.2"
    topo.rules_file(RULES)
    p.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "dport 2222" not in topo.ip("-4", "rule"))
    assert topo.connect(topo.c, "10.99.0.1", 2222) == "D 10.10.0.2"
    # an address added to lo after start (a VRRP failover) is picked up
    assert "10.99.0.2" not in topo.ip("-4", "rule")
    topo.ip("addr", "add", "10.99.0.2/32", "dev", "lo")
    assert wait_for(lambda: "to 10.99.0.2 ipproto tcp dport 80" in topo.ip("-4", "rule"))
    assert topo.connect(topo.c, "10.99.0.2", 80) == "S 10.10.0.2"
    assert topo.connect(topo.c, "10.99.0.2", 2222) == "D 10.10.0.2"
    # ... and its removal too
    topo.ip("addr", "del", "10.99.0.2/32", "dev", "lo")
    assert wait_for(lambda: "10.99.0.2" not in topo.ip("-4", "rule"))
    topo.stop(p)
    assert topo.state() == before
    assert topo.connect(topo.c, "10.99.0.1", 2222) == "D 10.10.0.2"


@needs_root
def test_vip_rules_always_steer_a_vip_before_it_becomes_local(topo):
    """`--vip-rules always` (the VRRP case): the service rules exist from the
    start, so a VIP added to `lo` later is balanced from its first packet --
    no window in which the director's own stack answers it (refused)."""
    before = topo.state()
    topo.extra = [*topo.extra, "--vip-rules", "always"]
    p = topo.start(RULES)
    rules = topo.ip("-4", "rule")
    assert "from all to 10.99.0.2 ipproto tcp dport 80 lookup" in rules   # not local yet
    assert "3:\tfrom all lookup local proto 245" in rules
    assert topo.connect(topo.c, "10.99.0.2", 80) == "S 10.10.0.2"       # routed meanwhile
    topo.ip("addr", "add", "10.99.0.2/32", "dev", "lo")
    # at once, without waiting for the address watch: balanced, not refused
    assert topo.connect(topo.c, "10.99.0.2", 80) == "S 10.10.0.2"
    assert topo.connect(topo.c, "10.99.0.2", 2222) == "D 10.10.0.2"     # other ports: local
    topo.ip("addr", "del", "10.99.0.2/32", "dev", "lo")
    assert "to 10.99.0.2 ipproto tcp dport 80" in topo.ip("-4", "rule")  # kept
    topo.stop(p)
    assert topo.state() == before
