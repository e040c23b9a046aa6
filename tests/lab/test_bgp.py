"""The ECMP lab with BGP (`userlb lab up --directors 3 --bgp`): BIRD 2 on the
router, ExaBGP + `userlb announce` on each director, real programs in
network namespaces (Debian's bird2 and exabgp, installed by `make sysdeps`).

One lab for the module: 3 directors, 3 real servers, 16 client addresses per
family; besides the lab's services one `mhs` + `mh-port` TCP echo service.
The router's routes come from BGP alone: a kill -9 of one director's
`userlb run` must take its paths out of BIRD's table within 3 s (its
`userlb announce` withdraws them), and the connections it carried must go
on through the others (mh + sloppy TCP, and mhs without sloppy TCP).
"""
import os
import signal
import time

import pytest

from helpers.netns import needs_root
from userlb.lab import ECHO, EXTRA_ECHO, ROUTER_REPLY_TABLE, VIP4, VIP6, ecmp
from userlb.lab import bgp as B
from userlb.lab.sessions import Streams

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

K = 3
ALL = {1, 2, 3}
MHS_PORT = ecmp.PORT_OF[("mhs", "mh-port")]
MHS = ((MHS_PORT, "mhs", "mh-port"),)
CLIENTS = ("10.10.0.0/24", "fd00:10::/64")


@pytest.fixture(scope="module")
def lab():
    from helpers.netns import make_lab
    lab = make_lab(n_servers=3, n_clients=16, directors=K, bgp=True)
    try:
        lab.reload(lab.rules_text(extra=ecmp.service_rules(lab.servers, services=MHS)))
        yield lab
    finally:
        lab.down()
        left = [p for p in os.listdir("/proc") if p.isdigit() and lab.sfx in _cmdline(p)]
        assert left == [], "processes left after down()"


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.fixture
def all_up(lab):
    def restore():
        for k in sorted(ALL - set(lab.running_directors())):
            lab.revive_director(k)
        for p in lab.vip_prefixes():
            B.wait_routes(lab, p, ALL, 10)
        lab.adm_all("--sloppy-tcp", "off")
    restore()
    yield lab
    restore()


def _check_failover(lab, res, k, vip_ports, stateless=False):
    for p in lab.vip_prefixes():
        assert p in res["withdrawn"], f"{p}: director {k} not withdrawn"
        assert res["withdrawn"][p] < 3.0, res["withdrawn"]
    if stateless:     # mhs keeps no entries: the victim's packet counters say it carried
        ins = [int(w[3]) for w in map(str.split, res["victim_stats"].splitlines())
               if len(w) > 4 and w[0] == "TCP" and w[1].endswith(f":{vip_ports[0][1]}")]
        assert len(ins) == 2 and min(ins) > 0, res["victim_stats"]
    else:
        assert sum(1 for c in res["carriers"] if k in c) >= 1, "no connection lived on it"
    bad = [f for f in res["final"] if not (f["done"] and f["intact"])]
    assert bad == [], bad[:3]
    assert {f["server"] for f in res["final"]} <= {"s1", "s2", "s3"}
    assert len(res["final"]) == 30
    # the router's kernel table follows BIRD's (no lab code writes it)
    out = lab.exec(lab.router, ["ip", "route", "show", VIP4]).stdout
    assert f"10.30.{k}.2" not in out and "proto bird" in out


def _in_pkts(lab, k):
    """Director k's incoming packets, over all its services."""
    out = lab.adm("-L", "-n", "--stats", k=k).stdout
    return sum(int(w[3]) for w in map(str.split, out.splitlines())
               if len(w) > 4 and w[0] in ("TCP", "UDP"))


def _takes_traffic(lab, k, vip_ports):
    """New connections reach director k again (its packet counters grow)."""
    before = _in_pkts(lab, k)
    with Streams(lab, vip_ports, count=24, chunk=256, interval=0.05, timeout=10) as st:
        time.sleep(0.5)
        final = st.finish()
    assert all(f["done"] and f["intact"] for f in final)
    assert _in_pkts(lab, k) > before


# --------------------------------------------------------------------- routes

def test_router_routes_come_from_bgp(all_up):
    lab = all_up
    routes = lab.bgp_routes()
    for p in lab.vip_prefixes() + list(CLIENTS):
        assert routes.get(p) == ALL, (p, routes)
    for fam, vip in (("-4", VIP4), ("-6", VIP6)):
        out = lab.exec(lab.router, ["ip", fam, "route", "show", vip]).stdout
        assert "proto bird" in out and all(f"dev d{k}" in out for k in ALL), out
        back = lab.exec(lab.router, ["ip", fam, "route", "show", "table",
                                     str(ROUTER_REPLY_TABLE)]).stdout
        assert "proto bird" in back and all(f"dev d{k}" in back for k in ALL), back
        rules = lab.exec(lab.router, ["ip", fam, "rule", "show"]).stdout
        assert " tos " not in rules and "lookup 10" not in rules   # no pin tables
    protocols = lab.birdc("show protocols")
    assert sum("Established" in line for line in protocols.splitlines()) == 2 * K, protocols
    from userlb.cli.lab import status_text
    text = status_text(lab)
    assert "birdc show route" in text and "10.99.0.1/32" in text


# ------------------------------------------------------------------- failover

def test_kill9_mh_sloppy_tcp(all_up):
    lab = all_up
    lab.adm_all("--sloppy-tcp", "on")
    vps = [[VIP4, ECHO], [VIP6, ECHO]]
    res = B.failover(lab, vps, 2, count=30)
    _check_failover(lab, res, 2, vps)
    assert lab.director_pid(2) is None and lab.announce_pid(2) is not None
    t0 = time.monotonic()
    lab.revive_director(2)
    for p in lab.vip_prefixes():
        B.wait_routes(lab, p, ALL, 5)
    assert time.monotonic() - t0 < 5
    _takes_traffic(lab, 2, vps)


def test_kill9_mhs_without_sloppy_tcp(all_up):
    lab = all_up
    vps = [[VIP4, MHS_PORT], [VIP6, MHS_PORT]]
    res = B.failover(lab, vps, 1, count=30)
    _check_failover(lab, res, 1, vps, stateless=True)
    lab.revive_director(1)
    B.wait_routes(lab, lab.vip_prefixes()[0], ALL, 5)
    _takes_traffic(lab, 1, vps)


# -------------------------------------------------------------- VIPs live

def test_vip_added_and_removed_on_all_directors(all_up):
    lab = all_up
    # a real-server port of its own (EXTRA_ECHO[0]): replies that reach a
    # director without the connection's entry are translated from the
    # configuration, which needs each real server (address, port) in one service
    vip, pfx, port = "10.99.0.2", "10.99.0.2/32", EXTRA_ECHO[0]
    cmds = [["-A", "-t", f"{vip}:{port}", "-s", "mh"]] + \
        [["-a", "-t", f"{vip}:{port}", "-r", f"{a4}:{port}", "-m"]
         for _ns, a4, _a6 in lab.servers]
    for c in cmds:
        assert all(r.returncode == 0 for r in lab.adm_all(*c).values())
    assert B.wait_routes(lab, pfx, ALL, 3) < 2.0
    with Streams(lab, [[vip, port]], count=8, chunk=256, interval=0.05, timeout=10,
                 sources=lab.clients4) as st:
        time.sleep(0.3)
        final = st.finish()
    assert all(f["done"] and f["intact"] for f in final), final
    assert all(r.returncode == 0 for r in lab.adm_all("-D", "-t", f"{vip}:{port}").values())
    assert B.wait_routes(lab, pfx, set(), 3) < 2.0
    assert pfx not in lab.bgp_routes()


# ------------------------------------------------------------ ExaBGP itself

def test_exabgp_killed_takes_its_announce_process_along(all_up):
    """kill -9 of ExaBGP: the session closes (paths gone at once) and its API
    process, `userlb announce`, ends on the end of its stdin (no orphan)."""
    lab = all_up
    ann = lab.announce_pid(3)
    assert ann is not None
    os.kill(lab.pids["exabgp3"], signal.SIGKILL)
    B.wait_routes(lab, lab.vip_prefixes()[0], {1, 2}, 3)
    deadline = time.monotonic() + 3
    while os.path.exists(f"/proc/{ann}") and "announce" in _cmdline(ann) \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "announce" not in _cmdline(ann), "userlb announce outlived ExaBGP"
    lab.start_exabgp(3)
    B.wait_routes(lab, lab.vip_prefixes()[0], ALL, 10)


def test_director_not_answering_is_withdrawn_and_comes_back(all_up):
    """SIGSTOP of `userlb run`: its control socket accepts but never answers;
    `userlb announce` gives up after its timeout and withdraws (fall 2);
    SIGCONT: announced again (rise 2)."""
    lab = all_up
    pid = lab.director_pid(2)
    os.kill(pid, signal.SIGSTOP)
    try:
        took = B.wait_routes(lab, lab.vip_prefixes()[0], {1, 3}, 4)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert took < 3.0
    B.wait_routes(lab, lab.vip_prefixes()[0], ALL, 5)
    log = open(lab.dir / "exabgp-2.log").read()
    assert "is not answering on" in log


def test_bird_on_a_director_with_bird_config(all_up):
    """A BIRD shop: director 3 runs BIRD with `userlb bird-config`'s snippet
    instead of ExaBGP.  Its static routes into the TUN device (check link)
    reach the router; kill -9 of `userlb run` removes the device and BIRD
    withdraws by itself; a restart brings them back."""
    import subprocess
    import sys
    lab = all_up
    lab.stop("exabgp3")
    B.wait_routes(lab, lab.vip_prefixes()[0], {1, 2}, 5)
    snippet = subprocess.run([sys.executable, "-m", "userlb.cli.main", "bird-config",
                              "--control", lab.control_of(3), "--tun", "ulb0"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    (lab.dir / "d3-userlb.conf").write_text(snippet)
    conf = ["router id 10.30.3.2;", "protocol device { scan time 1; }",
            "protocol kernel { ipv4 { import none; export none; }; }",
            f'include "{lab.dir / "d3-userlb.conf"}";']
    for fam, (r, d) in (("4", ("10.30.3.1", "10.30.3.2")), ("6", ("fd00:30:3::1",
                                                                  "fd00:30:3::2"))):
        conf.append(f"protocol bgp r{fam} {{ local {d} as {B.DIRECTOR_AS}; neighbor {r} as "
                    f"{B.ROUTER_AS}; hold time 3; keepalive time 1; connect retry time 1; "
                    f"ipv{fam} {{ import none; export filter userlb_export{fam}; "
                    f"next hop self; }}; }}")
    (lab.dir / "d3-bird.conf").write_text("\n".join(conf) + "\n")
    lab.start("bird3", lab.director_ns[2], ["bird", "-f", "-c", str(lab.dir / "d3-bird.conf"),
                                            "-s", str(lab.dir / "d3-bird.ctl")])
    try:
        for p in lab.vip_prefixes():
            B.wait_routes(lab, p, ALL, 10)
        t0 = time.monotonic()
        lab.kill_director(3, hard=True)
        B.wait_routes(lab, lab.vip_prefixes()[0], {1, 2}, 3)
        assert time.monotonic() - t0 < 3.0
        lab.revive_director(3)
        B.wait_routes(lab, lab.vip_prefixes()[0], ALL, 5)
    finally:
        lab.stop("bird3")
        lab.start_exabgp(3)


def test_cli_status_kill_and_start(all_up):
    """`userlb lab status | kill-director | start-director --lab SFX` on a BGP lab."""
    import subprocess
    import sys
    lab = all_up

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "userlb.cli.main", "lab", *args,
                               "--lab", lab.sfx], capture_output=True, text=True, timeout=60)
    p = cli("status")
    assert p.returncode == 0 and "the router's view (birdc show route)" in p.stdout
    assert "10.99.0.1/32" in p.stdout and "via 10.30.2.2 on d2" in p.stdout
    p = cli("kill-director", "2", "--hard")
    assert p.returncode == 0 and "withdraws its routes (BGP)" in p.stdout, p.stderr
    B.wait_routes(lab, lab.vip_prefixes()[0], {1, 3}, 3)
    assert lab.announce_pid(2) is not None           # only `userlb run` was killed
    try:
        p = cli("start-director", "2")
        assert p.returncode == 0 and "announces it again" in p.stdout, p.stderr
        B.wait_routes(lab, lab.vip_prefixes()[0], ALL, 5)
    finally:     # the CLI changed the saved state (PIDs): this object follows it
        from userlb.lab import Lab
        saved = Lab.load(lab.sfx)
        lab.pids, lab.alive = saved.pids, saved.alive


def test_tun_device_down_is_withdrawn_and_back_when_rerouted(all_up):
    """`ip link set ulb0 down` on director 2: withdrawn (TUN device down;
    the kernel drops the VIP routes through it).  Set up again, `userlb run`
    puts its routes back (it watches link events) and only then is the
    director fit again: announced once `ip route get VIP` leads into ulb0."""
    lab = all_up
    ns = lab.director_ns[1]
    lab.exec(ns, ["ip", "link", "set", "ulb0", "down"])
    assert B.wait_routes(lab, lab.vip_prefixes()[0], {1, 3}, 3) < 3.0
    lab.exec(ns, ["ip", "link", "set", "ulb0", "up"])
    assert B.wait_routes(lab, lab.vip_prefixes()[0], ALL, 5) < 5.0
