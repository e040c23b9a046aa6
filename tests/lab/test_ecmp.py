"""Active-active directors behind ECMP, in network namespaces.

One lab for the module: 3 directors behind a router with multipath routes
hashed on the 5-tuple (both to the VIPs and, for the real servers' replies,
back to the clients), 5 real servers (the rules use s1-s4; s5 is the spare the mhs test
adds), 64 client addresses per family.  Besides the lab's own services the
rules have one TCP echo service per scheduler variant (userlb.lab.ecmp.SERVICES:
mh, mh + mh-port, sh, sh + sh-port, mhs, mhs + mh-port), each on its own
real-server port.  The tests that kill directors start them again.
"""
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from helpers.netns import make_lab, needs_root
from userlb.lab import ECHO, ROUTER_REPLY_TABLE, VIP4, VIP6, ecmp
from userlb.lab import demo as lab_demo

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

K = 3
WEIGHTS = [1, 2, 1, 3]


@pytest.fixture(scope="module")
def lab():
    lab = make_lab(n_servers=5, config_servers=4, n_clients=64, directors=K)
    try:
        lab.reload(lab.rules_text(extra=ecmp.service_rules(lab.servers[:4], WEIGHTS)))
        yield lab
    finally:
        lab.down()


@pytest.fixture
def all_up(lab):
    """Every director running and in the routes, sloppy TCP off, the
    configured rules; the same afterwards."""
    def restore():
        for k in range(1, K + 1):
            if k not in lab.running_directors():
                lab.revive_director(k)
        lab.adm_all("--sloppy-tcp", "off")
    restore()
    yield lab
    restore()
    lab.reload(lab.rules_text(extra=ecmp.service_rules(lab.servers[:4], WEIGHTS)))


def _listing(lab, k):
    return lab.adm("-L", "-n", "--stats", k=k).stdout


def _svc_stats(text, vip_port):
    """Conns InPkts OutPkts of one service from a `-L -n --stats` listing."""
    for line in text.splitlines():
        w = line.split()
        if len(w) >= 5 and w[0] in ("TCP", "UDP") and w[1] == vip_port:
            return int(w[2]), int(w[3]), int(w[4])
    raise AssertionError(f"{vip_port} not in listing")


# ------------------------------------------------------------------ topology

def test_router_multipath_routes_and_same_rules(lab):
    r = lab.router
    for fam in ("ipv4", "ipv6"):       # the custom hash over the 5-tuple (0x37), both families
        policy = lab.exec(r, ["sysctl", "-n", f"net.{fam}.fib_multipath_hash_policy"]).stdout
        fields = lab.exec(r, ["sysctl", "-n", f"net.{fam}.fib_multipath_hash_fields"]).stdout
        assert (policy.strip(), int(fields.strip(), 0)) == ("3", 0x37)
    v4 = lab.exec(r, ["ip", "route", "show", f"{VIP4}/32"]).stdout
    v6 = lab.exec(r, ["ip", "-6", "route", "show", f"{VIP6}/128"]).stdout
    back4 = lab.exec(r, ["ip", "route", "show", "table", str(ROUTER_REPLY_TABLE)]).stdout
    back6 = lab.exec(r, ["ip", "-6", "route", "show", "table", str(ROUTER_REPLY_TABLE)]).stdout
    for k in range(1, K + 1):
        hop4, hop6 = f"nexthop via 10.30.{k}.2 dev d{k}", f"nexthop via fd00:30:{k}::2 dev d{k}"
        assert hop4 in v4 and hop4 in back4
        assert hop6 in v6 and hop6 in back6
    # every director runs with the same rules
    saved = {k: lab.adm("-S", "-n", k=k).stdout for k in range(1, K + 1)}
    assert saved[1] and all(s == saved[1] for s in saved.values())


def test_flows_spread_and_replies_reach_other_directors(lab):
    """Through the multipath route new flows reach every director; and the
    replies of flows pinned to director 1 come back through directors 2 and
    3 too, which translate them without ever having seen their SYN."""
    before = {k: _svc_stats(_listing(lab, k), f"{VIP4}:80") for k in range(1, K + 1)}
    flows = lab.client_py("http", vip=VIP4, port=80, count=90, sources=lab.clients4)
    assert lab_demo.check_flows(lab, flows) == []
    after = {k: _svc_stats(_listing(lab, k), f"{VIP4}:80") for k in range(1, K + 1)}
    conns = {k: after[k][0] - before[k][0] for k in after}
    assert sum(conns.values()) == 90 and all(c > 0 for c in conns.values()), conns

    port = ecmp.PORT_OF[("mh", "")]
    before = {k: _svc_stats(_listing(lab, k), f"{VIP4}:{port}") for k in range(1, K + 1)}
    r = ecmp.consistency(lab, port, count=100, base_port=30000 - 200, directors=[1])
    assert r["errors"] == [] and r["masq"] == []
    after = {k: _svc_stats(_listing(lab, k), f"{VIP4}:{port}") for k in range(1, K + 1)}
    assert after[1][0] - before[1][0] == 100
    for k in (2, 3):
        assert after[k][0] == before[k][0] and after[k][1] == before[k][1]   # no flow, no SYN
        assert after[k][2] - before[k][2] > 0                                # but replies


def test_router_hash_is_a_function_of_the_5tuple(all_up):
    """Repeated connects from the same client address and port (not pinned:
    the router's multipath hash picks the director) reach the same director
    every time, IPv4 and IPv6.  With fib_multipath_hash_policy 1 the router
    used the hash the sending socket had chosen at random (it travels with
    the packet between namespaces): 1 of 24 pairs was consistent."""
    lab = all_up
    port = ecmp.PORT_OF[("mh", "")]
    base = 25000
    for vip, srcs in ((VIP4, lab.clients4), (VIP6, lab.clients6)):
        pairs = [[srcs[i % len(srcs)], base + i] for i in range(24)]
        base += 100
        rounds = [lab.client_py("pinned", vip=vip, port=port, flows=pairs, tos=0)
                  for _ in range(3)]
        assert all(isinstance(a, list) for r in rounds for a in r), rounds
        assert rounds[0] == rounds[1] == rounds[2]         # and the same real server
        # each connection leaves an entry (CLOSE after the RST, 10 s) where it went
        held = ecmp.carriers(lab, [{"client": src, "cport": sport} for src, sport in pairs])
        assert [len(c) for c in held] == [1] * len(pairs), (vip, held)
        assert set().union(*held) == {1, 2, 3}               # and the pairs are spread


# --------------------------------------------------------------- consistency

@pytest.mark.parametrize("port,sched,flags",
                         [pytest.param(*s, id=f"{s[1]}{'-' + s[2] if s[2] else ''}")
                          for s in ecmp.SERVICES])
def test_same_flows_same_server_on_every_director(all_up, port, sched, flags):
    """1,000 flows (500 IPv4, 500 IPv6; the same client address and port each
    time) sent to each director separately get the same real server on every
    director -- as the real servers report -- and the one `userlb simulate`
    predicts."""
    lab = all_up
    before = {k: _svc_stats(_listing(lab, k), f"{VIP4}:{port}") for k in range(1, K + 1)}
    r = ecmp.consistency(lab, port, count=500)
    assert r["errors"] == []
    assert r["differ"] == []
    assert r["masq"] == []          # the server saw the client's own address and port
    # each director really got its 500 IPv4 flows (pinned by DSCP)
    after = {k: _svc_stats(_listing(lab, k), f"{VIP4}:{port}") for k in range(1, K + 1)}
    for k in range(1, K + 1):
        if sched == "mhs":          # stateless: packets, not connections
            assert after[k][1] - before[k][1] >= 500 * 2
            assert after[k][0] == before[k][0]
        else:
            assert after[k][0] - before[k][0] == 500
    # and where they went is what `userlb simulate` predicts from the rules
    recs = []
    for fam, vip in (("v4", VIP4), ("v6", VIP6)):
        for (src, sport), a in zip(r["flows"][fam], r["answers"][1][fam], strict=False):
            recs.append({"proto": "tcp", "client": src, "cport": sport, "vip": vip, "vport": port,
                         "server": a[0], "seen_client": a[1], "seen_port": a[2]})
    assert lab_demo.check_flows(lab, recs) == []
    used = Counter(x["server"] for x in recs)
    assert set(used) == {"s1", "s2", "s3", "s4"}, used


# ------------------------------------------------------------------ failover

def _by_carrier(res):
    return [(c, f) for c, f in zip(res["carriers"], res["final"], strict=False)]


def test_failover_mh_needs_sloppy_tcp(all_up):
    """50 long-lived connections streaming checked data; directors 1 and 2
    are killed one after the other.  Without sloppy TCP the connections that
    lived on a killed director are reset by the survivor (no entry, not a
    SYN); with sloppy TCP every connection completes with its data intact."""
    lab = all_up
    vps = [[VIP4, ECHO], [VIP6, ECHO]]
    off = ecmp.failover(lab, vps, [1, 2], count=50)
    assert off["alive"] == [3]
    moved = [f for c, f in _by_carrier(off) if c and 3 not in c]
    stayed = [f for c, f in _by_carrier(off) if c == {3}]
    assert moved and stayed
    assert all(f["error"] == "reset" for f in moved), [f["error"] for f in moved]
    assert all(f["intact"] and f["done"] for f in stayed)
    # every connection had its entry on one director alone: the router hashes
    # the 5-tuple, so a retransmitted SYN takes the first one's path
    assert [len(c) for c in off["carriers"]] == [1] * 50, off["carriers"]

    for k in (1, 2):
        lab.revive_director(k)
    res = lab.adm_all("--sloppy-tcp", "on")
    assert all(p.returncode == 0 for p in res.values())
    on = ecmp.failover(lab, vps, [1, 2], count=50)
    assert on["alive"] == [3]
    assert [len(c) for c in on["carriers"]] == [1] * 50, on["carriers"]
    assert sum(1 for c in on["carriers"] if 3 not in c) >= 10    # many really moved
    bad = [f for f in on["final"] if not (f["intact"] and f["done"])]
    assert bad == []
    assert all(f["rounds"] > 20 for f in on["final"])
    # the servers saw the clients' own addresses
    assert all((f["seen_client"], f["seen_port"]) == (f["client"], f["cport"]) for f in on["final"])


def test_failover_mhs_with_backend_changes(all_up):
    """mhs (sloppy TCP off): while 50 connections stream, a real server that
    carries some of them is removed and the spare one added on every
    director, then directors 1 and 2 are killed.  No connection is reset or
    sent elsewhere: the old table still sends every non-SYN packet of an
    unstable slot where its connection lives, on whichever director it lands.

    The removed server's replies must still be translated by every director,
    also one without an entry for the connection (the engine keeps removed
    mhs backends in its reply table while the old table refers to them)."""
    lab = all_up
    port = ecmp.PORT_OF[("mhs", "mh-port")]
    s4, s5 = lab.servers[3], lab.servers[4]     # s4 has weight 3 of 7: carries ~3/7 of them

    def change(lab):
        for k in lab.running_directors():
            for cmd in (["-d", "-t", f"{VIP4}:{port}", "-r", f"{s4[1]}:{port}"],
                        ["-a", "-t", f"{VIP4}:{port}", "-r", f"{s5[1]}:{port}", "-m", "-w", "1"],
                        ["-d", "-t", f"[{VIP6}]:{port}", "-r", f"[{s4[2]}]:{port}"],
                        ["-a", "-t", f"[{VIP6}]:{port}", "-r", f"[{s5[2]}]:{port}",
                         "-m", "-w", "1"]):
                resp = lab.control_request({"argv": cmd}, k=k)
                assert resp["ok"], resp

    res = ecmp.failover(lab, [[VIP4, port], [VIP6, port]], [1, 2], count=50, during=change,
                        between=0.7, after=2.0, timeout=12.0)
    final = res["final"]
    assert res["alive"] == [3]
    on_s4 = [f for f in final if f["server"] == "s4"]
    assert on_s4, Counter(f["server"] for f in final)   # the removed server carried some
    others = [f for f in final if f["server"] != "s4"]
    bad = [(f["server"], f["error"]) for f in others if not (f["intact"] and f["done"])]
    assert bad == []
    stalled = [(f["server"], f["error"]) for f in on_s4 if not (f["intact"] and f["done"])]
    assert stalled == []


# ----------------------------------------------------------------------- CLI

def test_cli_kill_and_start_director(tmp_path):
    env = dict(os.environ, USERLB_LAB_DIR=str(tmp_path))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "userlb.cli.main", "lab"] + list(args),
                              capture_output=True, text=True, env=env, timeout=120)
    try:
        p = run("up", "--directors", "2", "--servers", "2", "--clients", "2")
        assert p.returncode == 0, p.stderr
        sock1 = os.path.join(str(tmp_path), p.stdout.split()[1].split("-")[1], "control-1.sock")
        assert f"    userlb adm --control {sock1} -L -n\n" in p.stdout, p.stdout
        st = json.loads(run("status", "--json").stdout)
        assert st["directors"] == 2 and st["alive"] == [1, 2]
        pid = st["pids"]["director1"]
        p = run("kill-director", "1")
        assert p.returncode == 0, p.stderr
        assert "directors in the routes: 2" in p.stdout
        assert not os.path.exists(f"/proc/{pid}") or \
            open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"
        route = subprocess.run(["ip", "-n", st["router"], "route", "show", f"{VIP4}/32"],
                               capture_output=True, text=True).stdout
        assert "10.30.2.2" in route and "10.30.1.2" not in route
        # traffic still flows, through director 2 alone
        out = subprocess.run(["ip", "netns", "exec", st["client"], "curl", "-s", "-m", "5",
                              f"http://{VIP4}/"], capture_output=True, text=True).stdout
        assert json.loads(out)["server"] in ("s1", "s2")
        # `lab demo` asks a running director for its configuration and listing
        p = run("demo", "--requests", "20", "--udp-flows", "4")
        assert p.returncode == 0, p.stdout + p.stderr
        assert "control-2.sock -S -n)" in p.stdout and "control-2.sock -L -n --stats" in p.stdout
        assert "as predicted by `userlb simulate`: 24" in p.stdout
        text = run("status").stdout
        assert f"director 1 {st['director_namespaces'][0]}: not running, out of the routes" \
            in text
        assert f"director 2 {st['director_namespaces'][1]}: pid {st['pids']['director2']}, " \
               f"running, in the routes" in text
        p = run("start-director", "1")
        assert p.returncode == 0, p.stderr
        st = json.loads(run("status", "--json").stdout)
        assert st["alive"] == [1, 2] and os.path.exists(f"/proc/{st['pids']['director1']}")
        p = run("kill-director", "3")
        assert p.returncode == 1 and "no director 3" in p.stderr
    finally:
        run("down", "--all")


# ---------------------------------------------------------------------- demo

def test_failover_demo_counts_connections(all_up):
    """`userlb lab demo --directors 3` on a lab: connections counted before
    and after the failover, none lost (sloppy TCP is switched back off)."""
    import io
    buf = io.StringIO()
    assert ecmp.demo(all_up, connections=20, out=buf, seconds=1.0)
    text = buf.getvalue()
    assert "start    connections alive: 20/20" in text
    assert "kill 2   connections alive: 20/20" in text
    assert "after: 20/20 connections completed with their data intact" in text
    assert "lost: 0; 1 of 3 directors still in the routes: d3" in text
