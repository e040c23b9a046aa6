"""UDP_CHECK and PING_CHECK in `userlb run --keepalived FILE` against the
lab's real servers (userlb.lab: a client, the director on a TUN device,
three real servers in namespaces): the checks go out from the director's
own addresses and their answers (UDP echoes, ICMP port unreachable, ICMP
echo replies) reach the checker, never userlb's steering.

s1: UDP_CHECK with require_reply (its UDP echo answers "s1 ...");
s2: PING_CHECK; s3: UDP_CHECK without require_reply (down only on an ICMP
error).  s1's and s3's servers are stopped and s2 stops answering pings
(icmp_echo_ignore_all in its own namespace): all three go out, UDP
datagrams through the VIP get no answer; everything back: all three in,
and the VIP answers UDP from all three again.
"""
import sys
import textwrap
import time

import pytest

from helpers.keepalived import start_director
from helpers.netns import make_lab, needs_root
from userlb.lab import VIP4
from userlb.lab.base import DISCARD, EXTRA_ECHO

pytestmark = [needs_root, pytest.mark.root]
UDP_ECHO = 7          # userlb.lab.servers' --udp-echo default


def conf_text(lab):
    (_, a1, _), (_, a2, _), (_, a3, _) = lab.servers[:3]
    return textwrap.dedent(f"""
        virtual_server {VIP4} {UDP_ECHO} {{
            protocol UDP
            lb_algo rr
            delay_loop 0.5
            connect_timeout 0.5
            retry 0
            real_server {a1} {UDP_ECHO} {{
                UDP_CHECK {{
                    payload 70696e67
                    require_reply {b"s1 ".hex()}
                }}
            }}
            real_server {a2} {UDP_ECHO} {{
                PING_CHECK {{
                }}
            }}
            real_server {a3} {UDP_ECHO} {{
                UDP_CHECK {{
                }}
            }}
        }}
        """)


@pytest.fixture(scope="module")
def lab():
    lab = make_lab(n_servers=3, n_clients=2, director=False)
    try:
        start_director(lab, conf_text(lab))
        yield lab
    finally:
        lab.down()


def health(lab):
    """{'rip:port': 'up'|'down'} from `userlb adm -L -n --health`."""
    out = lab.adm("-L", "-n", "--health").stdout
    return {ln.split()[1]: ln.split()[-1] for ln in out.splitlines() if "Masq" in ln}


def wait_health(lab, want, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        got = health(lab)
        if got == want:
            return got
        if time.monotonic() > deadline:
            with open(lab.director_log) as f:
                raise AssertionError(f"health never became {want}: {got}\n{f.read()}")
        time.sleep(0.2)


def udp(lab, count=9):
    # (client_py's timeout is the client process's; the client waits 2 s per datagram)
    return lab.client_py("udp", vip=VIP4, port=UDP_ECHO, count=count, sources=lab.clients4,
                         timeout=60, tries=1)


def server_argv(lab, name):
    return [sys.executable, "-m", "userlb.lab.servers", "--name", name, "--discard",
            str(DISCARD), "--more-echo", f"{EXTRA_ECHO[0]}-{EXTRA_ECHO[-1]}", "--lab", lab.tag]


def test_udp_and_ping_checks_take_servers_out_and_back(lab):
    (ns1, a1, _), (ns2, a2, _), (ns3, a3, _) = lab.servers[:3]
    e1, e2, e3 = (f"{a}:{UDP_ECHO}" for a in (a1, a2, a3))
    # listed as up from the start (no alpha): wait for a few rounds of checks
    time.sleep(1.5)
    wait_health(lab, {e1: "up", e2: "up", e3: "up"})
    with open(lab.director_log) as f:
        assert "DOWN" not in f.read()
    flows = udp(lab)
    assert {f.get("server") for f in flows} == {"s1", "s2", "s3"}, flows

    t0 = time.monotonic()
    lab.stop("s1")
    lab.stop("s3")
    lab.exec(ns2, ["sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=1"])
    try:
        wait_health(lab, {}, timeout=10)          # all three removed
        took = time.monotonic() - t0
        print(f"all three out {took:.2f} s after the stop")
        # delay_loop 0.5, retry 0, connect_timeout 0.5: within about 1 s
        assert took < 4, took
        with open(lab.director_log) as f:
            text = f.read()
        assert f"real server {e1} DOWN (UDP_CHECK" in text, text
        assert f"real server {e2} DOWN (PING_CHECK" in text, text
        assert f"no echo reply from {a2} within 0.5s" in text, text
        assert f"real server {e3} DOWN (UDP_CHECK" in text, text
        assert "Connection refused" in text, text      # s3: ICMP port unreachable
        flows = udp(lab, count=3)
        assert all("server" not in f for f in flows), flows
    finally:
        lab.exec(ns2, ["sysctl", "-q", "-w", "net.ipv4.icmp_echo_ignore_all=0"])
        lab.start("s1", ns1, server_argv(lab, "s1"), ready="ready")
        lab.start("s3", ns3, server_argv(lab, "s3"), ready="ready")
    wait_health(lab, {e1: "up", e2: "up", e3: "up"})
    with open(lab.director_log) as f:
        text = f.read()
    assert all(f"real server {e} UP" in text for e in (e1, e2, e3)), text
    flows = udp(lab)
    assert {f.get("server") for f in flows} == {"s1", "s2", "s3"}, flows
