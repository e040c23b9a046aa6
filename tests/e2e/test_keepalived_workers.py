"""`userlb run --keepalived FILE --workers 2` (userlb/cli/workers.py): the
health checkers run in the main process and their changes reach both
workers.  A real server is stopped: its TCP_CHECK takes it out of the mh
service, new connections (spread over both workers) all reach the other one
and are answered; it is started again and comes back.  A keepalived.conf
with a scheduler that is not safe with several workers is refused at start."""
import re
import textwrap

import pytest

from helpers.keepalived import director_log, run_argv, start_director, wait_listing
from helpers.netns import make_lab, needs_root
from userlb.lab import HTTP, VIP4

pytestmark = [needs_root, pytest.mark.root]

WORKERS = ("--workers", "2", "--sloppy-tcp")


def conf_text(lab, algo="mh"):
    (_, a1, _b1), (_, a2, _b2) = lab.servers[:2]
    check = "TCP_CHECK {\n            connect_timeout 1\n        }"
    return textwrap.dedent(f"""
        virtual_server {VIP4} {HTTP} {{
            delay_loop 0.5
            lb_algo {algo}
            lb_kind NAT
            protocol TCP
            real_server {a1} {HTTP} {{
                {check}
            }}
            real_server {a2} {HTTP} {{
                {check}
            }}
        }}
        """)


@pytest.fixture(scope="module")
def lab():
    lab = make_lab(n_servers=2, n_clients=8, director=False)
    try:
        start_director(lab, conf_text(lab), WORKERS)
        yield lab
    finally:
        lab.down()


def http(lab, count=16):
    return lab.client_py("http", vip=VIP4, port=HTTP, count=count, sources=lab.clients4,
                         timeout=3.0)


def test_checker_changes_reach_both_workers(lab):
    (_, a1, _b1), (_, a2, _b2) = lab.servers[:2]
    v4, e1, e2 = f"{VIP4}:{HTTP}", f"{a1}:{HTTP}", f"{a2}:{HTTP}"
    wait_listing(lab, {(v4, e1): 1, (v4, e2): 1})
    flows = http(lab)
    assert all("error" not in f for f in flows), flows
    assert {f["server"] for f in flows} == {"s1", "s2"}
    rx = dict(re.findall(r"^worker (\d+) pid \d+: .*\brx=(\d+)", lab.stats(), re.M))
    assert len(rx) == 2 and all(int(v) > 0 for v in rx.values()), rx

    ns1 = lab.servers[0][0]
    lab.stop_server(ns1)
    wait_listing(lab, {(v4, e2): 1}, timeout=10, absent=[(v4, e1)])
    assert f"real server {e1} DOWN" in director_log(lab)
    # every worker has the change: all new connections, from 8 sources and
    # their ports (spread over both queues), reach s2 and are answered
    flows = http(lab)
    assert [f.get("server") for f in flows] == ["s2"] * 16, flows

    lab.start_server(ns1)
    wait_listing(lab, {(v4, e1): 1, (v4, e2): 1})
    flows = http(lab)
    assert all("error" not in f for f in flows) and {f["server"] for f in flows} == {"s1", "s2"}


def test_unsafe_keepalived_conf_is_refused(lab, tmp_path):
    path = tmp_path / "rr.conf"
    path.write_text(conf_text(lab, algo="rr"))
    r = lab.exec(lab.director, run_argv(lab, str(path), WORKERS) + ["--tun", "ulbx9"],
                 check=False, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "scheduler 'rr'" in r.stderr and "--workers 2" in r.stderr, r.stderr
