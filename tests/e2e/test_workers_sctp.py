"""SCTP through `userlb run --workers 2 --sloppy-sctp` (userlb/cli/workers.py,
docs/sctp.md): real servers answering SCTP from raw sockets
(userlb.lab.sctp_peer; this kernel has no SCTP module), whole associations
from several client ports, spread by the tun flow hash over both workers;
sloppy SCTP cannot be turned off while an mh SCTP service needs it."""
import json
import re

import pytest

from helpers.netns import make_lab, needs_root
from helpers.sctp import PORT, client_argv, service_rules, start_servers, stop_servers
from userlb.lab import VIP4

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab():
    lab = make_lab(n_servers=2, n_clients=4, sloppy=True, director=False)
    servers = []
    try:
        lab.write_rules(service_rules(lab))
        servers = start_servers(lab)
        lab.start_director(extra=["--workers", "2", "--sloppy-sctp"])
        yield lab
    finally:
        stop_servers(servers)
        lab.down()


def run_client(lab, sport, count=4):
    argv = client_argv(lab.clients4[0], sport, count)
    return json.loads(lab.exec(lab.client, argv, timeout=60).stdout)


def worker_rx(lab):
    return {int(i): int(rx) for i, rx in re.findall(r"^worker (\d+) pid \d+: .*\brx=(\d+)",
                                                    lab.stats(), re.M)}


def test_associations_over_both_workers(lab):
    before = worker_rx(lab)
    for sport in range(5101, 5113):
        r = run_client(lab, sport)
        assert r["established"] and r["closed"] and r["error"] is None, (sport, r)
        assert (r["echoed"], r["intact"], r["bad_crc"]) == (4, True, 0), (sport, r)
    after = worker_rx(lab)
    # 12 associations hashed over two queues: each worker read some of them
    # (all on one worker: probability 2 ** -11)
    assert len(after) == 2 and all(after[i] > before.get(i, 0) for i in after), (before, after)
    assert f"SCTP {VIP4}:{PORT} mh" in lab.adm("-L", "-n").stdout


def test_sloppy_sctp_stays_on_while_a_service_needs_it(lab):
    r = lab.adm("--sloppy-sctp", "off")
    assert r.returncode != 0 and "--sloppy-sctp" in (r.stderr + r.stdout)
    assert "sloppy_sctp = 1" in lab.adm("--show-settings").stdout
