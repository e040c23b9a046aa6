"""`userlb run --keepalived FILE` in the lab's network namespaces
(userlb.lab: a client, the director on a TUN device, three real servers):
the health checkers run inside the director against the real servers' real
HTTP services, from the director's own addresses.

A real server's services are stopped: its HTTP_GET checker takes it out (or,
with inhibit_on_failure, sets its weight to 0), `userlb adm -L -n` shows it,
new connections avoid it and every one of them succeeds; it is started
again and comes back.  SIGHUP re-reads the file.
"""
import os
import signal
import sys
import textwrap
import time

import pytest

from helpers.keepalived import director_log, listing, start_director, wait_listing
from helpers.netns import make_lab, needs_root
from userlb.lab import HTTP, VIP4, VIP6

pytestmark = [needs_root, pytest.mark.root]


def conf_text(lab, s3_weight=1):
    (_, a1, b1), (_, a2, b2), (_, a3, b3) = lab.servers[:3]
    check = textwrap.indent(textwrap.dedent("""
        HTTP_GET {
            url {
                path /
                status_code 200
            }
            connect_timeout 1
            retry 1
            delay_before_retry 0.2
        }"""), "        ")
    return textwrap.dedent(f"""
        ! userlb e2e: the lab's real servers behind health checks
        vrrp_instance VI_1 {{
            state MASTER
            interface eth0
            virtual_router_id 51
            virtual_ipaddress {{
                {VIP4}
            }}
        }}
        virtual_server {VIP4} {HTTP} {{
            delay_loop 0.5
            lb_algo rr
            lb_kind NAT
            protocol TCP
            real_server {a1} {HTTP} {{
        {check}
            }}
            real_server {a2} {HTTP} {{
                inhibit_on_failure
        {check}
            }}
            real_server {a3} {HTTP} {{
                weight {s3_weight}
                TCP_CHECK {{
                    connect_timeout 1
                }}
                MISC_CHECK {{
                    misc_path "/bin/sh -c 'exit $(cat {lab.dir}/s3.code 2>/dev/null || echo 0)'"
                    misc_timeout 2
                    misc_dynamic
                }}
            }}
        }}
        virtual_server {VIP4} 8080 {{
            delay_loop 0.5
            quorum 2
            sorry_server {a3} {HTTP}
            real_server {a1} {HTTP} {{
        {check}
            }}
            real_server {a2} {HTTP} {{
        {check}
            }}
        }}
        virtual_server {VIP6} {HTTP} {{
            delay_loop 0.5
            lb_algo mh
            real_server {b1} {HTTP} {{
        {check}
            }}
            real_server {b2} {HTTP} {{
        {check}
            }}
        }}
        """)


@pytest.fixture(scope="module")
def lab():
    lab = make_lab(n_servers=3, n_clients=4, director=False)
    try:
        start_director(lab, conf_text(lab))
        yield lab
    finally:
        lab.down()


def http(lab, vip=VIP4, count=12):
    srcs = lab.clients6 if ":" in vip else lab.clients4
    return lab.client_py("http", vip=vip, port=HTTP, count=count, sources=srcs, timeout=3.0)


def server_argv(lab, name):
    from userlb.lab.base import DISCARD, EXTRA_ECHO
    return [sys.executable, "-m", "userlb.lab.servers", "--name", name, "--discard",
            str(DISCARD), "--more-echo", f"{EXTRA_ECHO[0]}-{EXTRA_ECHO[-1]}", "--lab", lab.tag]


def ep(addr, port=HTTP):
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def test_a_stopped_real_server_is_taken_out_and_comes_back(lab):
    (ns1, a1, b1), (ns2, a2, b2), (_ns3, a3, _b3) = lab.servers[:3]
    v4, v6 = ep(VIP4), ep(VIP6)
    got = wait_listing(lab, {(v4, ep(a1)): 1, (v4, ep(a2)): 1, (v4, ep(a3)): 1,
                             (v6, ep(b1)): 1, (v6, ep(b2)): 1})
    assert (ep(VIP4, 8080), ep(a3)) not in got          # quorum 2 of 2: no sorry server
    flows = http(lab)
    assert all("error" not in f for f in flows), flows
    assert {f["server"] for f in flows} == {"s1", "s2", "s3"}
    # the checkers' own connections came from the director, not through userlb
    assert "refused" not in director_log(lab)

    # stop s1 and s2 (their HTTP servers with them)
    t0 = time.monotonic()
    lab.stop("s1")
    lab.stop("s2")
    got = wait_listing(lab, {(v4, ep(a2)): 0, (v4, ep(a3)): 1,
                             (ep(VIP4, 8080), ep(a3)): 1}, timeout=10)
    took = time.monotonic() - t0
    assert (v4, ep(a1)) not in got            # removed
    assert (v6, ep(b1)) not in got and (v6, ep(b2)) not in got
    # delay_loop 0.5 + one retry 0.2 later + connect failures: well under 5 s
    assert took < 5, took
    text = director_log(lab)
    assert f"real server {ep(a1)} DOWN (HTTP_GET /" in text
    assert f"-d -t {v4} -r {ep(a1)}" in text
    assert f"-e -t {v4} -r {ep(a2)} -m -w 0" in text
    # `userlb adm -L -n --health`: the checker state column
    health = {ln.split()[1]: ln.split()[-1] for ln in lab.adm(
        "-L", "-n", "--health", "-t", v4).stdout.splitlines() if "Masq" in ln}
    assert health == {ep(a2): "down", ep(a3): "up"}, health
    health = {ln.split()[1]: ln.split()[-1] for ln in lab.adm(
        "-L", "-n", "--health", "-t", ep(VIP4, 8080)).stdout.splitlines() if "Masq" in ln}
    assert health == {ep(a3): "sorry"}, health
    # SIGUSR1's listing carries the checker state of every real server
    stats = lab.stats()
    assert f"keepalived: TCP {v4} {ep(a1)} weight 1 down: GET /: Connection refused" in stats
    assert f"keepalived: TCP {v4} {ep(a3)} weight 1 up" in stats
    # new connections all reach s3, every one answered
    flows = http(lab, count=10)
    assert [f.get("server") for f in flows] == ["s3"] * 10, flows
    # the quorum of VIP:8080 is lost: its sorry server (s3) answers
    assert got.get((ep(VIP4, 8080), ep(a3))) == 1, got
    assert (ep(VIP4, 8080), ep(a1)) not in got and (ep(VIP4, 8080), ep(a2)) not in got
    assert f"TCP {ep(VIP4, 8080)}: quorum lost" in text
    flows = lab.client_py("http", vip=VIP4, port=8080, count=4, sources=lab.clients4,
                          timeout=3.0)
    assert [f.get("server") for f in flows] == ["s3"] * 4, flows
    # the IPv6 service has no real server left: refused, not hanging
    flows6 = http(lab, vip=VIP6, count=2)
    assert all("error" in f for f in flows6), flows6

    # start them again: back in within a delay_loop or two
    lab.start("s1", ns1, server_argv(lab, "s1"), ready="ready")
    lab.start("s2", ns2, server_argv(lab, "s2"), ready="ready")
    wait_listing(lab, {(v4, ep(a1)): 1, (v4, ep(a2)): 1, (v4, ep(a3)): 1,
                       (v6, ep(b1)): 1, (v6, ep(b2)): 1}, timeout=10)
    assert f"real server {ep(a1)} UP" in director_log(lab)
    got = wait_listing(lab, {(ep(VIP4, 8080), ep(a1)): 1, (ep(VIP4, 8080), ep(a2)): 1})
    assert (ep(VIP4, 8080), ep(a3)) not in got          # the sorry server is out again
    assert f"TCP {ep(VIP4, 8080)}: quorum gained" in director_log(lab)
    flows = http(lab)
    assert {f.get("server") for f in flows} == {"s1", "s2", "s3"}, flows
    flows6 = http(lab, vip=VIP6, count=6)
    assert {f.get("server") for f in flows6} <= {"s1", "s2"} and \
        all("error" not in f for f in flows6), flows6


def test_misc_dynamic_exit_codes_set_the_weight(lab):
    v4, a3 = ep(VIP4), lab.servers[2][1]
    code = lab.dir / "s3.code"
    try:
        code.write_text("5\n")                  # 2..255: up with weight code - 2
        wait_listing(lab, {(v4, ep(a3)): 3})
        assert f"real server {ep(a3)} WEIGHT" in director_log(lab)
        code.write_text("1\n")                  # down
        got = wait_listing(lab, {(v4, ep(lab.servers[0][1])): 1})
        deadline = time.monotonic() + 10
        while (v4, ep(a3)) in got and time.monotonic() < deadline:
            got = listing(lab)
            time.sleep(0.2)
        assert (v4, ep(a3)) not in got, got
        flows = http(lab, count=6)
        assert "s3" not in {f.get("server") for f in flows}, flows
        code.write_text("3\n")                  # up, weight 1
        wait_listing(lab, {(v4, ep(a3)): 1})
    finally:
        code.unlink()                           # exit 0: up, weight unchanged


def test_sighup_rereads_the_file_and_a_bad_file_changes_nothing(lab):
    v4 = ep(VIP4)
    a3 = lab.servers[2][1]
    with open(lab.kconf, "w") as f:
        f.write(conf_text(lab, s3_weight=3))
    n = director_log(lab).count("SIGHUP")
    lab.signal_director(signal.SIGHUP)
    wait_listing(lab, {(v4, ep(a3)): 3})
    assert director_log(lab).count("SIGHUP") == n + 1 and "applied 1 change(s)" in director_log(lab)
    with open(lab.kconf, "a") as f:
        f.write("virtual_server 10.99.0.7 80 {\n  lb_kind XYZ\n}\n")
    lab.signal_director(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while director_log(lab).count("SIGHUP") < n + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    last = [x for x in director_log(lab).splitlines() if "SIGHUP" in x][-1]
    lines = open(lab.kconf).read().count("\n")
    assert f"{lab.kconf}:{lines - 1}: lb_kind" in last and "unchanged" in last, last
    assert listing(lab)[(v4, ep(a3))] == 3
    assert os.path.exists(lab.control_path)
