"""The classic LVS pair without ip_vs (userlb/lab/vrrp.py): two directors on
shared segments, REAL keepalived (VRRP only) moving the VIP and the real
servers' gateway between them, `userlb run --keepalived` on both reading the
same services (`lb_algo mh`, `mh-port`, sloppy TCP).

30 streaming TCP connections (every byte echoed and compared) run through
the master; the master director is stopped as a crash would (SIGKILL of
keepalived and userlb, links down); the backup must serve a new connection
within 5 s of the kill and every stream must go on and end cleanly.  Then
director 1 comes back (it takes the VIP back: priority 150) and only its
`userlb run` is killed: keepalived's track script gives the VIP up, the
same checks again.

keepalived missing while running as root is a failure, not a skip: CI runs
as root after `make sysdeps`, which installs it.
"""
import shutil

import pytest

from helpers.netns import HAVE_ROOT, HAVE_TUN, ROOT_REASON, needs_root
from userlb.lab import ECHO, VIP4

pytestmark = [needs_root, pytest.mark.root]

STREAMS = 30
FAILOVER_LIMIT = 5.0


@pytest.fixture
def pair():
    if not (HAVE_ROOT and HAVE_TUN):
        pytest.skip(ROOT_REASON)
    assert shutil.which("keepalived"), "keepalived is missing: make sysdeps (Debian keepalived)"
    from userlb.lab.vrrp import VrrpLab
    lab = VrrpLab(current=False)
    try:
        yield lab.up()
    finally:
        lab.down()


def test_vrrp_pair_failover_keeps_streams(pair):
    lab = pair
    assert lab.master() == [1]
    # keepalived and userlb both read d1.conf; userlb follows the VIP as a local address
    assert f"to {VIP4} ipproto tcp dport {ECHO}" in \
        lab.exec(lab.director_ns[0], ["ip", "-4", "rule"]).stdout
    # the backup does not steer the VIP (not local there)
    assert VIP4 not in lab.exec(lab.director_ns[1], ["ip", "-4", "rule"]).stdout
    from userlb.lab.vrrp import failover
    lines = []
    res = failover(lab, STREAMS, out=lines.append)
    print("\n".join(lines))
    bad = [r for r in res["reports"] if not (r["intact"] and r["done"])]
    print("RSTs of the new master's own stack dropped:", lab.rst_guard_drops(2))
    assert res["failover_s"] is not None, "the backup never served"
    assert res["failover_s"] < FAILOVER_LIMIT, res["failover_s"]
    assert lab.master() == [2]
    assert not bad, bad[:3]
    assert res["intact"] == STREAMS
    assert res["moved"] == STREAMS
    # the streams were spread over the real servers by mh
    assert len({r["server"] for r in res["reports"]}) >= 2
    # the new master carried the streams: its counters show them
    st = lab.adm("-L", "-n", "--stats", k=2)
    assert st.returncode == 0, st.stderr
    line = next(x for x in st.stdout.splitlines() if x.startswith(f"TCP  {VIP4}:{ECHO}"))
    conns, inpkts = int(line.split()[2]), int(line.split()[3])
    assert conns >= STREAMS + 1, line       # every stream (sloppy TCP) and the probe
    assert inpkts > STREAMS * 5, line
    # the old master comes back and takes the VIP back (priority 150)
    lab.revive(1)
    lab.wait_master(1, timeout=15)
    assert lab.probe(timeout=5) is not None

    # only userlb dies on the master: keepalived's track script (pgrep on
    # its command line) puts the instance in FAULT, the VIP moves
    lines = []
    res = failover(lab, STREAMS, out=lines.append, how="userlb")
    print("\n".join(lines))
    bad = [r for r in res["reports"] if not (r["intact"] and r["done"])]
    assert res["failover_s"] is not None and res["failover_s"] < FAILOVER_LIMIT, res
    assert lab.master() == [2]
    assert not bad, bad[:3]
    assert res["moved"] == STREAMS
