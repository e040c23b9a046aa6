"""SCTP through real `userlb run` directors (docs/sctp.md): two directors
behind the ECMP router, real servers answering SCTP from raw sockets
(userlb.lab.sctp_peer; this kernel has no SCTP module), a client that runs
whole associations (INIT ... SHUTDOWN-COMPLETE) and checks every CRC32c with
scapy.  A director that carries an association is killed: with sloppy SCTP
the association goes on through the other director (mh picks the same real
server there, and a DATA chunk creates the entry)."""
import json
import subprocess
import time

import pytest

from helpers.netns import make_lab, needs_root
from helpers.sctp import ENV, PORT, client_argv, service_rules, start_servers, stop_servers
from userlb.lab import VIP4

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab():
    lab = make_lab(n_servers=2, n_clients=4, directors=2)
    servers = []
    try:
        lab.reload(service_rules(lab))
        servers = lab.sctp_servers = start_servers(lab)
        yield lab
    finally:
        stop_servers(servers)
        lab.down()


def run_client(lab, src, sport, count=5, **kw):
    p = lab.exec(lab.client, client_argv(src, sport, count, **kw), timeout=60)
    return json.loads(p.stdout)


def sctp_entries(lab, k, sport):
    """The director k's `-L -c -n` lines of the client port `sport`."""
    out = lab.adm("-L", "-c", "-n", k=k).stdout
    return [ln.split() for ln in out.splitlines()
            if ln.startswith("SCTP") and f":{sport} " in ln + " "]


def carrier(lab, sport, deadline=20.0):
    """The director holding the live entry of the association from `sport`,
    or None.  Its state is ESTABLISHED when the router sends both directions
    through that director, and stays INIT when the replies take the other
    one (it never sees the INIT-ACK): which one, the kernel's multipath hash
    decides, and its seed is random per boot."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for k in (1, 2):
            if any(w[2] != "CLOSED" for w in sctp_entries(lab, k, sport)):
                return k
        time.sleep(0.2)
    return None


def test_listing_shows_the_sctp_service(lab):
    out = lab.adm("-L", "-n", k=1).stdout
    assert f"SCTP {VIP4}:{PORT} mh" in out      # "%-4s %s" as for TCP
    saved = lab.adm("-S", "-n", k=1).stdout
    assert f"-A --sctp-service {VIP4}:{PORT} -s mh" in saved


def test_association_through_the_directors(lab):
    lab.adm_all("--sloppy-sctp", "off")
    r = run_client(lab, lab.clients4[0], 5001, count=5)
    assert r["established"] and r["closed"] and r["error"] is None, r
    assert (r["echoed"], r["intact"], r["bad_crc"]) == (5, True, 0)
    rows = sctp_entries(lab, 1, 5001) + sctp_entries(lab, 2, 5001)
    assert rows and all(w[2] == "CLOSED" for w in rows), rows
    settings = lab.adm("--show-settings", k=1).stdout
    assert "sloppy_sctp = 0" in settings


def test_failover_with_sloppy_sctp(lab):
    res = lab.adm_all("--sloppy-sctp", "on")
    assert all("sloppy_sctp = 1" in r.stdout for r in res.values()), res
    sport = 5002
    p = subprocess.Popen(["ip", "netns", "exec", lab.client] + client_argv(
        lab.clients4[1], sport, count=30, interval=0.1), stdout=subprocess.PIPE, text=True,
        env=ENV)
    killed = None
    try:
        killed = carrier(lab, sport)
        assert killed, "no director holds the association"
        lab.kill_director(killed)
        out, _ = p.communicate(timeout=60)
        r = json.loads(out)
        assert r["established"] and r["closed"] and r["error"] is None, r
        assert (r["echoed"], r["intact"], r["bad_crc"]) == (30, True, 0)
        other = 3 - killed
        rows = sctp_entries(lab, other, sport)
        assert rows and rows[0][2] == "CLOSED", rows
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if killed:
            lab.revive_director(killed)
        lab.adm_all("--sloppy-sctp", "off")


def test_failover_without_sloppy_sctp_loses_the_association(lab):
    """The control: with sloppy SCTP off the surviving director drops the
    DATA chunks of an association whose INIT it never saw."""
    lab.adm_all("--sloppy-sctp", "off")
    sport = 5003
    p = subprocess.Popen(["ip", "netns", "exec", lab.client] + client_argv(
        lab.clients4[2], sport, count=30, interval=0.1, limit=8), stdout=subprocess.PIPE,
        text=True, env=ENV)
    killed = None
    try:
        killed = carrier(lab, sport)
        assert killed, "no director holds the association"
        lab.kill_director(killed)
        out, _ = p.communicate(timeout=60)
        r = json.loads(out)
        assert r["established"] and r["error"] is not None and r["echoed"] < 30, r
        assert sctp_entries(lab, 3 - killed, sport) == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if killed:
            lab.revive_director(killed)
