"""`userlb adm` against a real director: `userlb run --control PATH` on a TUN
device in the lab's network namespaces (userlb.lab; client, director and
four real servers, s4 spare), real traffic through it.

* every command through `userlb adm --control PATH` (a real process), with
  traffic checking that the change took effect;
* under steady traffic (long-lived TCP echo connections exchanging checked
  messages, IPv4 and IPv6), 100 random live changes -- destinations added,
  removed and re-weighted, schedulers switched with -E, other services
  added/edited/deleted, timeouts, -Z -- and not one established connection
  is lost or sees a wrong byte.
"""
import os
import random
import subprocess
import sys
import time

import pytest

from helpers.netns import make_lab, needs_root
from userlb.lab import ECHO, HASH, HTTP, VIP4, VIP6, ClientSession

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Adm:
    def __init__(self, path):
        self.path = path

    def __call__(self, *args, stdin="", check=True):
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT
        p = subprocess.run([sys.executable, "-m", "userlb.cli.main", "adm", "--control", self.path]
                           + [str(a) for a in args], input=stdin, capture_output=True, text=True,
                           timeout=60, env=env)
        if check:
            assert p.returncode == 0, (args, p.returncode, p.stderr)
            assert p.stderr == ""
        return p.returncode, p.stdout, p.stderr

    def out(self, *args, stdin=""):
        return self(*args, stdin=stdin)[1]

    def inproc(self, *args):
        """The same client code in this process (no interpreter start-up)."""
        import io

        from userlb.cli import adm
        out, err = io.StringIO(), io.StringIO()
        rc = adm.main(["--control", self.path] + [str(a) for a in args], stdout=out, stderr=err)
        return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def lab():
    lab = make_lab(n_servers=4, config_servers=3, n_clients=4)
    try:
        # the lab starts `userlb run ... --control <lab dir>/control.sock`
        lab.control = lab.control_path
        lab.ladm = Adm(lab.control)
        lab.baseline = lab.ladm.out("-S", "-n")
        yield lab
    finally:
        lab.down()


@pytest.fixture
def restore(lab):
    """Put the lab's configuration back after a test that changes it."""
    yield
    lab.ladm("-R", stdin="-C\n" + lab.baseline)
    lab.ladm("--sloppy-tcp", "off")
    lab.ladm("--set", "900", "120", "300")


def srv_addr(lab, name):
    for ns, a4, a6 in lab.servers:
        if ns.endswith("-" + name):
            return a4, a6
    raise KeyError(name)


def http(lab, vip=VIP4, port=HTTP, count=6):
    srcs = lab.clients6 if ":" in vip else lab.clients4
    return lab.client_py("http", vip=vip, port=port, count=count, sources=srcs, timeout=3.0)


def servers_of(flows):
    return sorted({str(f.get("server")) for f in flows})


# ------------------------------------------------------------------ commands

def test_socket_and_listing_of_the_running_director(lab):
    st = os.stat(lab.control)
    assert oct(st.st_mode & 0o777) == "0o600" and st.st_uid == os.geteuid()
    out = lab.ladm.out("-L", "-n").split("\n")
    assert out[0] == "IP Virtual Server version 1.2.1 (size=4096)"
    assert any(x.startswith(f"TCP  {VIP4}:{HTTP} mh (") for x in out)
    assert any(x.startswith(f"TCP  [{VIP6}]:{ECHO} mh (") for x in out)
    a4, _ = srv_addr(lab, "s1")
    assert f"  -> {f'{a4}:{HTTP}':<28} {'Masq':<7} {1:<6d}" in "\n".join(out)
    # -S reads back: same rules as the lab's file, in ipvsadm's sorted order
    saved = lab.ladm.out("-S", "-n")
    assert sorted(saved.splitlines()) == sorted(
        line for line in open(lab.rules_path).read().splitlines() if line)


def test_add_edit_delete_with_traffic(lab, restore):
    adm = lab.ladm
    s1, s2 = srv_addr(lab, "s1")[0], srv_addr(lab, "s2")[0]
    # a new service on the VIP, port 8080 -> the servers' HTTP port
    adm("-A", "-t", f"{VIP4}:8080", "-s", "rr")
    adm("-a", "-t", f"{VIP4}:8080", "-r", f"{s1}:{HTTP}", "-m")
    flows = http(lab, port=8080)
    assert servers_of(flows) == ["s1"], flows
    adm("-a", "-t", f"{VIP4}:8080", "-r", f"{s2}:{HTTP}", "-m", "-w", "2")
    assert servers_of(http(lab, port=8080, count=9)) == ["s1", "s2"]
    # weight 0: no new connections to s1
    adm("-e", "-t", f"{VIP4}:8080", "-r", f"{s1}:{HTTP}", "-m", "-w", "0")
    assert servers_of(http(lab, port=8080)) == ["s2"]
    out = adm.out("-L", "-n", "-t", f"{VIP4}:8080").split("\n")
    assert out[2] == f"TCP  {VIP4}:8080 rr"
    assert [x.split()[:4] for x in out[3:5]] == [["->", f"{s1}:{HTTP}", "Masq", "0"],
                                                 ["->", f"{s2}:{HTTP}", "Masq", "2"]]
    # -E to sh with fallback (weight-0 s1 skipped); -d s2, s1 back to weight 1
    adm("-E", "-t", f"{VIP4}:8080", "-s", "sh", "-b", "sh-fallback")
    assert adm.out("-L", "-n", "-t", f"{VIP4}:8080").split("\n")[2] == \
        f"TCP  {VIP4}:8080 sh (sh-fallback)"
    assert servers_of(http(lab, port=8080)) == ["s2"]
    adm("-d", "-t", f"{VIP4}:8080", "-r", f"{s2}:{HTTP}")
    adm("-e", "-t", f"{VIP4}:8080", "-r", f"{s1}:{HTTP}", "-m", "-w", "1")
    assert servers_of(http(lab, port=8080)) == ["s1"]
    adm("-D", "-t", f"{VIP4}:8080")
    flows = http(lab, port=8080, count=2)
    assert all("error" in f for f in flows), flows
    # the lab's own services were not disturbed
    assert "None" not in servers_of(http(lab))


def test_new_vip_gets_routed(lab, restore):
    vip = "10.99.0.7"
    s3 = srv_addr(lab, "s3")[0]
    lab.ladm("-A", "-t", f"{vip}:80", "-s", "wlc")
    lab.ladm("-a", "-t", f"{vip}:80", "-r", f"{s3}:80", "-m")
    assert servers_of(http(lab, vip=vip)) == ["s3"]
    lab.ladm("-D", "-t", f"{vip}:80")


def test_ipv6_service_through_adm(lab, restore):
    s4 = srv_addr(lab, "s4")[1]
    lab.ladm("-A", "-t", f"[{VIP6}]:8080", "-s", "mh", "-b", "mh-port")
    lab.ladm("-a", "-t", f"[{VIP6}]:8080", "-r", f"[{s4}]:{HTTP}", "-m")
    assert servers_of(http(lab, vip=VIP6, port=8080)) == ["s4"]
    assert lab.ladm.out("-S", "-n").count(f"-a -t [{VIP6}]:8080 -r [{s4}]:{HTTP} -m -w 1") == 1


def test_persistence_options_and_nosort(lab, restore):
    adm = lab.ladm
    s1, s2 = srv_addr(lab, "s1")[0], srv_addr(lab, "s2")[0]
    adm("-A", "-t", f"{VIP4}:8081", "-s", "wrr", "-p", "120", "-M", "255.255.255.0")
    adm("-a", "-t", f"{VIP4}:8081", "-r", f"{s2}:{HTTP}", "-m")
    adm("-a", "-t", f"{VIP4}:8081", "-r", f"{s1}:{HTTP}", "-m", "-w", "3")
    out = adm.out("-L", "-n", "-t", f"{VIP4}:8081").split("\n")
    assert out[2] == f"TCP  {VIP4}:8081 wrr persistent 120 mask 255.255.255.0"
    assert [x.split()[1] for x in out[3:5]] == [f"{s1}:{HTTP}", f"{s2}:{HTTP}"]
    out = adm.out("-L", "-n", "--nosort", "-t", f"{VIP4}:8081").split("\n")
    assert [x.split()[1] for x in out[3:5]] == [f"{s1}:{HTTP}", f"{s2}:{HTTP}"]   # newest first
    assert f"-A -t {VIP4}:8081 -s wrr -p 120 -M 255.255.255.0" in adm.out("-S", "-n").split("\n")
    # -E without -p: persistence cleared, as ipvsadm
    adm("-E", "-t", f"{VIP4}:8081", "-s", "wrr")
    assert adm.out("-L", "-n", "-t", f"{VIP4}:8081").split("\n")[2] == f"TCP  {VIP4}:8081 wrr"
    assert "None" not in servers_of(http(lab, port=8081))


def test_stats_zero_rate_and_connection_listing(lab, restore):
    adm = lab.ladm
    adm("-Z")
    stats = adm.out("-L", "-n", "--stats", "-t", f"{VIP4}:{HTTP}").split("\n")
    assert stats[0].split() == ["Prot", "LocalAddress:Port", "Conns", "InPkts", "OutPkts",
                                "InBytes", "OutBytes"]
    assert stats[2].split()[2:] == ["0"] * 5
    http(lab, count=10)
    stats = adm.out("-L", "-n", "--stats", "--exact", "-t", f"{VIP4}:{HTTP}").split("\n")
    conns, inpkts, outpkts, inbytes, outbytes = map(int, stats[2].split()[2:])
    assert conns == 10 and inpkts >= 50 and outpkts >= 40 and inbytes > 0 and outbytes > 0
    dest_conns = [int(line.split()[2]) for line in stats[3:] if line.startswith("  ->")]
    assert sum(dest_conns) == 10
    # -c: the closed connections linger (TIME_WAIT / CLOSE / FIN_WAIT...)
    conns_out = adm.out("-L", "-n", "-c").split("\n")
    assert conns_out[:2] == ["IPVS connection entries",
                             "pro expire state       source             virtual            "
                             "destination"]
    mine = [line for line in conns_out[2:] if f" {VIP4}:{HTTP} " in line]
    assert len(mine) >= 10
    # rates: the estimator runs every 2 s; traffic in the last seconds shows
    http(lab, count=30)
    time.sleep(2.5)
    rate = adm.out("-L", "-n", "--rate", "-t", f"{VIP4}:{HTTP}").split("\n")
    assert rate[0].split()[2:] == ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]
    assert int(rate[2].split()[3]) > 0          # InPPS
    # -Z -t: counters and rates of that service back to 0, entries stay
    adm("-Z", "-t", f"{VIP4}:{HTTP}")
    stats = adm.out("-L", "-n", "--stats", "-t", f"{VIP4}:{HTTP}").split("\n")
    assert stats[2].split()[2:] == ["0"] * 5
    rate = adm.out("-L", "-n", "--rate", "-t", f"{VIP4}:{HTTP}").split("\n")
    assert rate[2].split()[2:] == ["0"] * 5
    assert len(adm.out("-L", "-n", "-c").split("\n")) >= len(mine) + 2


def test_timeouts_and_sloppy_tcp(lab, restore):
    adm = lab.ladm
    adm("--set", "1800", "60", "120")
    assert adm.out("-L", "--timeout") == "Timeout (tcp tcpfin udp): 1800 60 120\n"
    assert adm.out("--show-settings").split("\n")[0] == "sloppy_tcp = 0"
    # a lone mid-stream ACK creates no entry normally, one with sloppy TCP
    # (docs/ipvs.md §4.1)
    assert _ack_entry(lab, 41001) == []
    assert adm.out("--sloppy-tcp", "on").split("\n")[0] == "sloppy_tcp = 1"
    assert adm.out("--show-settings").split("\n")[0] == "sloppy_tcp = 1"
    # (the real server, knowing no such connection, answers RST: the entry
    # goes ESTABLISHED -> CLOSE)
    assert [x.split()[2] for x in _ack_entry(lab, 41002)] in (["ESTABLISHED"], ["CLOSE"])
    assert "None" not in servers_of(http(lab))
    assert adm.out("--sloppy-tcp", "off").split("\n")[0] == "sloppy_tcp = 0"
    assert _ack_entry(lab, 41003) == []


def _ack_entry(lab, sport):
    """Send one bare ACK from the client to VIP4:HTTP; the -L -c lines of it."""
    src = lab.clients4[0]
    code = ("from scapy.all import IP, TCP, send\n"
            f"send(IP(src='{src}', dst='{VIP4}')/TCP(sport={sport}, dport={HTTP}, flags='A', "
            "seq=1, ack=1), verbose=False)\n")
    lab.exec(lab.client, [sys.executable, "-c", code])
    time.sleep(0.3)
    return [x for x in lab.ladm.out("-L", "-n", "-c").split("\n") if f" {src}:{sport} " in x]


def test_save_clear_restore_round_trip_keeps_serving(lab, restore):
    adm = lab.ladm
    saved = adm.out("-S", "-n")
    listing = adm.out("-L", "-n")
    adm("-C")
    assert adm.out("-L", "-n").split("\n")[3:] == [""]
    flows = http(lab, count=2)
    assert all("error" in f for f in flows)
    adm("-R", stdin=saved)
    assert adm.out("-S", "-n") == saved
    # ActiveConn/InActConn columns may differ (entries of the same Dests
    # are gone with -C... the Dest objects come back from the trash): compare
    # the shape
    assert [x[:47] for x in adm.out("-L", "-n").split("\n")] == \
        [x[:47] for x in listing.split("\n")]
    # mh-port with kernel-chosen source ports: 45 requests miss one of three
    # equal servers with probability 3 * (2/3)**45 < 1e-7 (9 missed one in ~13)
    assert servers_of(http(lab, count=45)) == ["s1", "s2", "s3"]


def test_bad_commands_change_nothing_on_the_running_director(lab):
    adm = lab.ladm
    before = adm.out("-S", "-n")
    assert adm("-A", "-t", f"{VIP4}:{HTTP}", check=False)[1:] == ("", "Service already exists\n")
    rc, out, err = adm("-R", check=False,
                       stdin=f"-A -t {VIP4}:1234\n-a -t {VIP4}:1235 -r 10.20.0.11 -m\n")
    assert rc == 255 and err == f"line 2: Service not defined: -a -t {VIP4}:1235 -r 10.20.0.11 -m\n"
    assert adm("-e", "-t", f"{VIP4}:{HTTP}", "-r", "10.20.0.99:80", "-m", check=False)[0] == 255
    assert adm("-a", "-t", f"{VIP4}:{HTTP}", "-r", "10.20.0.99", "-w", "x", check=False)[0] == 2
    assert adm.out("-S", "-n") == before


def test_no_director_message(lab):
    path = str(lab.dir / "nobody-here.sock")
    rc, out, err = lab.ladm.__class__(path)("-L", "-n", check=False)
    assert rc == 2
    assert err == f"no userlb director is listening on {path} (is `userlb run` running?)\n"


# --------------------------------------------------- live changes under traffic

SCHEDS = ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "sh", "mh", "mhs"]


def _flags(rng, sched):
    names = {"sh": ["sh-fallback", "sh-port"], "mh": ["mh-fallback", "mh-port"],
             "mhs": ["mh-fallback", "mh-port"]}.get(sched, ["flag-1", "flag-2"])
    chosen = [n for n in names if rng.random() < 0.5]
    return ["-b", ",".join(chosen)] if chosen else []


def _session(lab, vip_ports, per_source=2):
    """userlb.lab.client.session in the client namespace: long-lived TCP echo
    connections, each exchanging checked messages continuously."""
    kw = {"vip_ports": vip_ports, "sources": lab.clients4[:2] + lab.clients6[:2],
          "per_source": per_source, "interval": 0.002, "timeout": 10.0}
    return ClientSession(lab, kw, close_timeout=15.0)


def test_100_random_changes_lose_no_established_connection(lab, restore):
    rng = random.Random(int(os.environ.get("ADM_LAB_SEED", "7")))
    adm = lab.ladm
    names = [ns.rsplit("-", 1)[1] for ns, _a4, _a6 in lab.servers]         # s1..s4
    # s4 joins an unrelated service first, so that the set of real-server
    # addresses (the director's policy rules) stays the same during the test
    a4s4, a6s4 = srv_addr(lab, "s4")
    adm("-a", "-t", f"{VIP4}:{HASH}", "-r", f"{a4s4}:{HASH}", "-m", "-w", "0")
    adm("-a", "-t", f"[{VIP6}]:{HASH}", "-r", f"[{a6s4}]:{HASH}", "-m", "-w", "0")

    sess = _session(lab, [["tcp", VIP4, ECHO], ["tcp", VIP6, ECHO]], per_source=3)
    try:
        carrying = {(f["vip"], f["server"]) for f in sess.flows}
        assert len(sess.flows) == 12
        time.sleep(0.5)
        first = sess.report()
        assert all(r["ok"] > 0 and not r["errors"] for r in first), first

        services = {VIP4: f"{VIP4}:{ECHO}", VIP6: f"[{VIP6}]:{ECHO}"}

        def ep(vip, name, port):
            a4, a6 = srv_addr(lab, name)
            return f"{a4}:{port}" if vip == VIP4 else f"[{a6}]:{port}"

        # live destinations of the echo services: (vip, name, port) -> weight
        dests = {(vip, n, ECHO): 1 for vip in services for n in names[:3]}
        others = {}          # extra services: svc text -> set of (name, port)
        applied = []
        kinds = ["add", "remove", "weight", "weight", "sched", "other", "other", "set", "zero"]
        for step in range(100):
            kind = rng.choice(kinds)
            vip = rng.choice(list(services))
            svc = services[vip]
            if kind == "add":
                absent = [(vip, n, p) for n in names for p in (ECHO, 7007)
                          if (vip, n, p) not in dests]
                if not absent:
                    kind = "weight"
                else:
                    k = rng.choice(absent)
                    w = rng.randint(0, 5)
                    args = ["-a", "-t", svc, "-r", ep(*k), "-m", "-w", w]
                    dests[k] = w
            if kind == "remove":
                free = [k for k in dests if k[0] == vip and (vip, k[1]) not in carrying
                        or (k[0] == vip and k[2] != ECHO)]
                if not free:
                    kind = "weight"
                else:
                    k = rng.choice(free)
                    args = ["-d", "-t", svc, "-r", ep(*k)]
                    del dests[k]
            if kind == "weight":
                k = rng.choice([k for k in dests if k[0] == vip])
                w = rng.randint(0, 10)
                args = ["-e", "-t", svc, "-r", ep(*k), "-m", "-w", w]
                dests[k] = w
            elif kind == "sched":
                s = rng.choice(SCHEDS)
                args = ["-E", "-t", svc] + (["-s", s] if s != "wlc" or rng.random() < 0.5 else []) \
                    + _flags(rng, s)
            elif kind == "other":
                port = rng.randint(8000, 8003)
                osvc = f"{VIP4}:{port}" if rng.random() < 0.5 else f"[{VIP6}]:{port}"
                ovip = VIP6 if osvc.startswith("[") else VIP4
                cur = others.get(osvc)
                r = rng.random()
                if cur is None:
                    args = ["-A", "-t", osvc, "-s", rng.choice(SCHEDS)]
                    others[osvc] = set()
                elif r < 0.15:
                    args = ["-D", "-t", osvc]
                    del others[osvc]
                elif r < 0.3:
                    args = ["-E", "-t", osvc, "-s", rng.choice(SCHEDS)]
                else:
                    n = rng.choice(names)
                    if (n, 80) in cur:
                        args = ["-d", "-t", osvc, "-r", ep(ovip, n, 80)]
                        cur.discard((n, 80))
                    else:
                        args = ["-a", "-t", osvc, "-r", ep(ovip, n, 80), "-m", "-w",
                                rng.randint(0, 9)]
                        cur.add((n, 80))
            elif kind == "set":
                args = ["--set", rng.randint(600, 3600), rng.choice([0, 60, 120]), 0]
            elif kind == "zero":
                args = ["-Z"] + (["-t", svc] if rng.random() < 0.5 else [])
            rc, out, err = adm.inproc(*args)
            assert rc == 0, (step, args, err)
            applied.append(" ".join(map(str, args)))
            time.sleep(rng.uniform(0, 0.05))

        time.sleep(0.5)
        mid = sess.report()
        time.sleep(1.0)
        last = sess.report()
    finally:
        sess.close()
    assert len(applied) == 100
    ops = {line.split()[0] for line in applied}
    assert {"-a", "-d", "-e", "-E", "-A", "--set", "-Z"} <= ops, ops
    assert any(line.startswith("-e") and line.endswith("-w 0") for line in applied)
    lost = [r for r in last if r["errors"]]
    assert not lost, lost
    before = {(r["client"], r["cport"], r["vip"]): r["ok"] for r in first}
    after = {(r["client"], r["cport"], r["vip"]): r["ok"] for r in mid}
    for r in last:
        # every connection kept exchanging checked messages through the
        # changes, and still does after them
        key = (r["client"], r["cport"], r["vip"])
        assert after[key] > before[key] + 10, r
        assert r["ok"] > after[key] + 10, r
        # ... with the server it started on (the echo tells who answers)
        assert r["server"] in names
    # the configuration is what the commands say: replay them on a fresh Config
    from userlb.control.config import Config
    cfg = Config()
    cfg.load_rules(lab.baseline)
    cfg.apply(f"-a -t {VIP4}:{HASH} -r {a4s4}:{HASH} -m -w 0")
    cfg.apply(f"-a -t [{VIP6}]:{HASH} -r [{a6s4}]:{HASH} -m -w 0")
    for line in applied:
        cfg.apply(line)
    assert adm.out("-S", "-n") == "".join(x + "\n" for x in cfg.save())
