"""End-to-end: `userlb run` with the real engine on a TUN device, real
clients and real servers in network namespaces (userlb.lab).

One lab for the module: 4 real-server namespaces (the rules use s1-s3; s4 is
the spare that gets added), 8 client addresses per family, and a far real
server behind a router whose server-side link has MTU 1280 (PMTU discovery).
The tests run in file order; the ones that change the configuration or
restart the director come last and restore it.
"""
import re
import sys
import time

import pytest

from helpers.netns import make_lab, needs_root
from userlb.lab import ECHO, HASH, HTTP, UDP_ECHO, VIP4, VIP6
from userlb.lab import demo as lab_demo

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab():
    lab = make_lab(n_servers=4, config_servers=3, n_clients=8, far_mtu=1280)
    try:
        yield lab
    finally:
        lab.down()


def _srcs(lab, v6):
    return lab.clients6 if v6 else lab.clients4


def _vip(v6):
    return VIP6 if v6 else VIP4


FAMILIES = [pytest.param(False, id="ipv4"), pytest.param(True, id="ipv6")]


# ---------------------------------------------------------------- placement

@pytest.mark.parametrize("v6", FAMILIES)
def test_tcp_flows_go_where_simulate_predicts(lab, v6):
    flows = lab.client_py("http", vip=_vip(v6), port=HTTP, count=48, sources=_srcs(lab, v6))
    assert lab_demo.check_flows(lab, flows) == []
    # masquerade: the server saw the client's own address and port
    assert all((f["seen_client"], f["seen_port"]) == (f["client"], f["cport"]) for f in flows)
    # every client address was used, and the service spreads over all three
    assert {f["client"] for f in flows} == set(_srcs(lab, v6))
    assert {f["server"] for f in flows} == {"s1", "s2", "s3"}


@pytest.mark.parametrize("v6", FAMILIES)
def test_udp_flows_go_where_simulate_predicts(lab, v6):
    flows = lab.client_py("udp", vip=_vip(v6), port=UDP_ECHO, count=32, sources=_srcs(lab, v6),
                          size=512)
    assert lab_demo.check_flows(lab, flows) == []
    for f in flows:
        assert f["intact"], f                       # payload echoed unchanged
        assert (f["reply_from"], f["reply_port"]) == (_vip(v6), UDP_ECHO)   # answer from the VIP
    assert {f["server"] for f in flows} == {"s1", "s2", "s3"}


def test_fragmented_udp_datagram_ipv4(lab):
    flows = lab.client_py("udp", vip=VIP4, port=UDP_ECHO, count=4, sources=lab.clients4, size=4000)
    assert lab_demo.check_flows(lab, flows) == []
    assert all(f["intact"] for f in flows)


# ------------------------------------------------------------------ payloads

@pytest.mark.parametrize("v6", FAMILIES)
def test_tcp_payload_intact_both_directions(lab, v6):
    src = _srcs(lab, v6)[3]
    r = lab.client_py("transfer", vip=_vip(v6), port=ECHO, size=4 << 20, src=src)
    assert r["errors"] == []
    assert r["received"] == r["sent"] == 4 << 20
    assert r["recv_sha256"] == r["sent_sha256"]
    assert (r["seen_client"], r["seen_port"]) == (src, r["cport"])
    flow = dict(proto="tcp", client=src, cport=r["cport"], vip=_vip(v6), vport=ECHO,
                server=r["server"], seen_client=r["seen_client"], seen_port=r["seen_port"])
    assert lab_demo.check_flows(lab, [flow]) == []


# ---------------------------------------------------------------------- PMTU

@pytest.mark.parametrize("v6", FAMILIES)
def test_pmtu_discovery_through_the_director(lab, v6):
    """The far server sits behind a router whose link towards it has MTU
    1280; the server advertises MSS 1460, so the client's full-size segments
    make the router send fragmentation-needed / packet-too-big about
    client -> real server.  The director must translate it (source VIP,
    quoted destination VIP:port), or the upload stalls."""
    vip = _vip(v6)
    src = _srcs(lab, v6)[5]
    lab.exec(lab.client, ["ip"] + (["-6"] if v6 else []) + ["route", "flush", "cache"])
    r = lab.client_py("upload", vip=vip, port=HASH, size=2 << 20, src=src, timeout=20.0)
    assert "error" not in r, r
    assert r["server"] == "f"
    assert r["recv_sha256"] == r["sent_sha256"] and r["received"] == 2 << 20
    assert (r["seen_client"], r["seen_port"]) == (src, r["cport"])
    # the client learnt the path MTU for the VIP itself (the ICMP arrived translated)
    route = lab.exec(lab.client, ["ip"] + (["-6"] if v6 else []) + ["route", "get", vip,
                                                                    "from", src]).stdout
    assert re.search(r"\bmtu 1280\b", route), route


@pytest.mark.parametrize("v6", FAMILIES)
def test_pmtu_with_a_small_tun_mtu(lab, v6):
    """When the director's own path to the servers is the narrow one, `userlb
    run --mtu` makes the kernel answer oversized packets before the rewrite
    (so the ICMP quotes the VIP), in both directions."""
    try:
        lab.restart_director(extra=["--mtu", "1400"])
        # forget what the far-server test learnt about the VIP (PMTU is per destination)
        lab.exec(lab.client, ["ip"] + (["-6"] if v6 else []) + ["route", "flush", "cache"])
        src = _srcs(lab, v6)[6]
        r = lab.client_py("transfer", vip=_vip(v6), port=ECHO, size=2 << 20, src=src, timeout=20.0)
        assert r["errors"] == [] and r["recv_sha256"] == r["sent_sha256"]
        route = lab.exec(lab.client, ["ip"] + (["-6"] if v6 else []) +
                         ["route", "get", _vip(v6), "from", src]).stdout
        assert re.search(r"\bmtu 1400\b", route), route
    finally:
        lab.restart_director()


# ---------------------------------------------------------------- refusals

def test_second_instance_on_the_same_device_is_refused(lab):
    p = lab.exec(lab.director, [sys.executable, "-m", "userlb.cli.main", "run", "--tun", "ulb0",
                                "--no-routes"], check=False, timeout=30)
    assert p.returncode != 0
    assert "busy" in p.stderr.lower()


def _rules_and_routes(lab):
    rules = lab.exec(lab.director, ["ip", "rule", "show"]).stdout + \
        lab.exec(lab.director, ["ip", "-6", "rule", "show"]).stdout
    routes = lab.exec(lab.director, ["ip", "route", "show", "table", "all"]).stdout + \
        lab.exec(lab.director, ["ip", "-6", "route", "show", "table", "all"]).stdout
    # the reply table is 20000 + the TUN device's index, which changes on restart
    norm = lambda t: re.sub(r"\b(lookup|table) 2\d{4}\b", r"\1 T", t)   # noqa: E731
    # routes the kernel adds by itself for the device (link-local, multicast) come and go
    routes = "".join(sorted(line + "\n" for line in routes.splitlines()
                            if "proto kernel" not in line and not line.startswith("multicast")))
    return norm(rules), norm(routes)


def test_sigterm_removes_exactly_what_was_installed(lab):
    rules, routes = _rules_and_routes(lab)
    assert "ulb0" in routes and VIP4 in routes and "lookup T" in rules
    lab.stop_director()
    rules2, routes2 = _rules_and_routes(lab)
    assert "ulb0" not in routes2 and VIP4 not in routes2 and VIP6 not in routes2
    # only the default rules are left (local, main, default)
    for text in (rules2,):
        tables = set(re.findall(r"lookup (\S+)", text))
        assert tables <= {"local", "main", "default"}, text
    assert "stopped" in open(lab.director_log).read()
    lab.start_director()
    assert _rules_and_routes(lab) == (rules, routes)


# ------------------------------------------------- configuration at run time

def _by_key(report):
    return {(f["proto"], f["client"], f["cport"], f["vip"]): f for f in report}


def _settle(sess, seconds=1.0):
    time.sleep(seconds)
    return _by_key(sess.report())


def _rules(lab, names, weights=None):
    servers = [s for s in lab.servers if s[0].rsplit("-", 1)[1] in names]
    return lab.rules_text(servers=servers, weights=weights)


def _edit_lines(text, server_addrs, how):
    """ipvsadm -e (weight 0) or -d lines for every `-a` line of these servers."""
    out = []
    for line in text.splitlines():
        if line.startswith("-a ") and any(f" -r {a}:" in line for a in server_addrs):
            if how == "weight0":
                out.append("-e " + line[3:].replace(" -w 1", " -w 0"))
            else:
                out.append("-d " + line[3:].split(" -m")[0])
    return out


def test_backend_added_weight0_removed_under_traffic(lab, tmp_path):
    """Established TCP connections and UDP flows keep their real server when
    a backend is added, set to weight 0 or removed (SIGHUP reload, entries
    never flushed); new flows follow the new rules as `userlb simulate`
    predicts.  Flows of the removed backend stop (IPVS drops packets of
    entries whose destination was deleted)."""
    vip_ports = [["tcp", VIP4, ECHO], ["tcp", VIP6, ECHO], ["udp", VIP4, UDP_ECHO],
                 ["udp", VIP6, UDP_ECHO]]
    original = open(lab.rules_path).read()
    sess = lab.session(vip_ports=vip_ports, sources=lab.clients4 + lab.clients6, per_source=1,
                       interval=0.02, timeout=1.0)
    try:
        flows = sess.flows
        assert {f["server"] for f in flows} == {"s1", "s2", "s3"}
        r0 = _settle(sess, 0.5)
        assert all(f["ok"] > 0 and not f["errors"] for f in r0.values()), r0

        def check_new_flows(history, expect_servers):
            # the prediction replays the same history of commands: an edit to
            # weight 0 keeps last_weight (the kernel's drain without reshuffle),
            # which a fresh file with -w 0 would not
            path = tmp_path / "history.rules"
            path.write_text("\n".join(history) + "\n")
            new = lab.client_py("http", vip=VIP4, port=HTTP, count=40, sources=lab.clients4)
            new += lab.client_py("http", vip=VIP6, port=HTTP, count=40, sources=lab.clients6)
            assert lab_demo.check_flows(lab, new, rules_path=str(path)) == []
            assert {f["server"] for f in new} == expect_servers

        s1 = [a for s in lab.servers[:1] for a in (s[1], f"[{s[2]}]")]
        s2 = [a for s in lab.servers[1:2] for a in (s[1], f"[{s[2]}]")]
        with4 = _rules(lab, ["s1", "s2", "s3", "s4"])
        hist1 = with4.splitlines()
        hist2 = hist1 + _edit_lines(with4, s1, "weight0")
        hist3 = hist2 + _edit_lines(with4, s2, "delete")
        steps = [
            (with4, hist1, {"s1", "s2", "s3", "s4"}, None),
            (_rules(lab, ["s1", "s2", "s3", "s4"], [0, 1, 1, 1]), hist2, {"s2", "s3", "s4"}, None),
            (_rules(lab, ["s1", "s3", "s4"], [0, 1, 1]), hist3, {"s3", "s4"}, "s2"),
        ]
        prev = r0
        for text, history, expect, removed in steps:
            msg = lab.reload(text)
            assert "applied" in msg
            check_new_flows(history, expect)
            rep = _settle(sess, 1.5 if removed else 0.7)
            for k, f in rep.items():
                assert f["server"] == prev[k]["server"]
                if f["server"] == removed:
                    continue      # IPVS semantics: a deleted destination's entries stop
                assert not f["errors"], f
                assert f["ok"] > prev[k]["ok"], (f, prev[k])
            prev = rep
        # the stats listing shows the new backend, and no connection entry was flushed
        stats = lab.stats()
        assert "10.20.0.14:80" in stats and "10.20.0.12:80" not in stats
    finally:
        sess.close()
        lab.write_rules(original)
        lab.restart_director()


def test_new_vip_through_userlb_adm_gets_its_route(lab):
    """A service added at run time (userlb adm, the control socket) for a new
    VIP: its route into the TUN appears, traffic flows; deleted: gone again."""
    vip = "10.99.0.2"
    routes = lambda: lab.exec(lab.director, ["ip", "route", "show"]).stdout   # noqa: E731
    assert vip not in routes()
    p = lab.adm("-R", input=f"-A -t {vip}:80 -s mh\n-a -t {vip}:80 -r {lab.servers[3][1]}:80 -m\n")
    assert p.returncode == 0, p.stderr
    try:
        assert f"{vip} dev ulb0" in routes()
        # a real server new to the configuration gets its own reply rule
        assert f"from {lab.servers[3][1]} lookup" in lab.exec(lab.director, ["ip", "rule"]).stdout
        flows = lab.client_py("http", vip=vip, port=HTTP, count=6, sources=lab.clients4)
        assert {f.get("server") for f in flows} == {"s4"}, flows
        assert all((f["seen_client"], f["seen_port"]) == (f["client"], f["cport"]) for f in flows)
    finally:
        p = lab.adm("-D", "-t", f"{vip}:80")
    assert p.returncode == 0, p.stderr
    assert vip not in routes()
    assert f"from {lab.servers[3][1]} lookup" not in lab.exec(lab.director, ["ip", "rule"]).stdout


def test_new_vip_through_sighup_gets_its_route(lab):
    """A service for a new VIP added by editing the rules file and SIGHUP:
    the routes are updated from a worker thread (pyroute2 cannot run on the
    running uvloop loop), the route appears, traffic flows; removed again."""
    vip = "10.99.0.3"
    good = open(lab.rules_path).read()
    routes = lambda: lab.exec(lab.director, ["ip", "route", "show"]).stdout   # noqa: E731
    try:
        lab.reload(good + f"-A -t {vip}:80 -s rr\n-a -t {vip}:80 -r {lab.servers[3][1]}:80 -m\n")
        wait = time.monotonic() + 5
        while f"{vip} dev ulb0" not in routes() and time.monotonic() < wait:
            time.sleep(0.05)
        assert f"{vip} dev ulb0" in routes()
        flows = lab.client_py("http", vip=vip, port=HTTP, count=4, sources=lab.clients4)
        assert {f.get("server") for f in flows} == {"s4"}, flows
    finally:
        lab.reload(good)
    wait = time.monotonic() + 5
    while vip in routes() and time.monotonic() < wait:
        time.sleep(0.05)
    assert vip not in routes()
    assert "routes:" not in open(lab.log_of(1)).read()


def test_bad_reload_keeps_running_config(lab):
    good = open(lab.rules_path).read()
    try:
        lab.write_rules(good + "-a -t 10.99.0.1:80 -r 10.20.0.99:80 -m -w nonsense\n")
        before = lab.stats()
        with pytest.raises(Exception) as ei:
            lab.reload()
        assert "unchanged" in str(ei.value)
        flows = lab.client_py("http", vip=VIP4, port=HTTP, count=12, sources=lab.clients4)
        lab.write_rules(good)
        assert lab_demo.check_flows(lab, flows) == []
        assert "10.20.0.99" not in before
    finally:
        lab.write_rules(good)


# ------------------------------------------------ mid-stream without entry

def _session_after_restart(lab, sloppy):
    vip_ports = [["tcp", VIP4, ECHO], ["tcp", VIP6, ECHO], ["udp", VIP4, UDP_ECHO]]
    sess = lab.session(vip_ports=vip_ports, sources=lab.clients4[:3] + lab.clients6[:3],
                       per_source=1, interval=0.02, timeout=2.0)
    try:
        r0 = _settle(sess, 0.3)
        assert all(f["ok"] > 0 and not f["errors"] for f in r0.values()), r0
        sess.pause()
        lab.restart_director(sloppy=sloppy)     # all connection entries are gone
        sess.resume()
        return r0, _settle(sess, 1.5)
    finally:
        sess.close()


def test_midstream_packet_without_entry_gets_rst(lab):
    r0, r1 = _session_after_restart(lab, sloppy=False)
    tcp = [f for f in r1.values() if f["proto"] == "tcp"]
    assert tcp and all(f["errors"] and "ConnectionResetError" in f["errors"][0] for f in tcp), tcp
    # UDP needs no state: a datagram creates its entry again, same server (sh)
    for k, f in r1.items():
        if f["proto"] == "udp":
            assert not f["errors"] and f["ok"] > r0[k]["ok"]
    assert re.search(r"replies: .*rst=\d+", lab.stats())


def test_midstream_packet_without_entry_is_forwarded_when_sloppy(lab):
    try:
        r0, r1 = _session_after_restart(lab, sloppy=True)
        for k, f in r1.items():
            assert not f["errors"], f
            assert f["ok"] > r0[k]["ok"]
        assert "sloppy" in open(lab.director_log).read()
    finally:
        lab.restart_director(sloppy=False)
