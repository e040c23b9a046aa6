"""The first line (userlb/dataplane/firstline.py): `userlb run --syn-limit`
installs its nftables table in the director's namespace, a restart after
`kill -9` replaces the left-over, a clean stop removes it; `adm --defense`
and `--show-settings` on the same director."""
import signal
import subprocess

import pytest

from helpers.netns import needs_root
from userlb.dataplane.firstline import parse_limit, ruleset

RULES = "-A -t 10.99.0.1:80 -s rr\n-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 1\n"


def tables(topo):
    return subprocess.run(["ip", "netns", "exec", topo.d, "nft", "list", "tables"],
                          capture_output=True, text=True).stdout


def test_parse_limit_and_ruleset():
    assert parse_limit("20000") == (20000, 0, 24, 64)
    assert parse_limit("20000,50/16/48") == (20000, 50, 16, 48)
    for bad in ("x", "0", "0,0", "1,2/33", "-1", "1,2/3/4/5"):
        with pytest.raises(ValueError):
            parse_limit(bad)
    text = ruleset("ulb0", 100, 10, 16, 48, notrack=True, vips=["10.99.0.1", "fd00::1"])
    assert "ip saddr & 255.255.0.0 limit rate over 10/second" in text
    assert "ip6 saddr & ffff:ffff:ffff::" in text
    assert "ip daddr { 10.99.0.1 } notrack" in text
    assert text.startswith("add table inet userlb_fl_ulb0\ndelete table inet userlb_fl_ulb0\n")


@needs_root
def test_first_line_installed_replaced_after_kill_9_removed(topo):
    topo.extra = ("--syn-limit", "5,2/24", "--defense", "drop_entry=1")
    tname = f"userlb_fl_{topo.tun}".replace("-", "_")
    p = topo.start(RULES)
    assert f"table inet {tname}" in tables(topo)
    r = topo.adm("--show-settings")
    assert "drop_entry = 1" in r.stdout and "amemthresh = 1024" in r.stdout
    r = topo.adm("--defense", "secure_tcp=3", "--amemthresh", "10")
    assert r.returncode == 0 and "secure_tcp = 3" in r.stdout and "amemthresh = 10" in r.stdout
    r = topo.adm("--defense", "secure_tcp=7")
    assert r.returncode == 2
    # the limit works: 2 new connections per second per /24 (burst 4)
    results = [topo.connect(topo.c, "10.99.0.1", 80) for _ in range(3)]
    assert results[0] == "S 10.10.0.2"
    topo.stop(p, signal.SIGKILL)
    assert f"table inet {tname}" in tables(topo)
    p = topo.start(RULES)
    assert f"removed a left-over of a dead instance: nftables table inet {tname}" in topo.log()
    assert tables(topo).count(f"table inet {tname}") == 1
    topo.stop(p)
    assert tname not in tables(topo)


@needs_root
def test_bad_options_refused(topo):
    for extra in (("--syn-limit", "abc"), ("--defense", "drop_entry=9"),
                  ("--defense", "nope=1"), ("--amemthresh", "0")):
        r = topo.userlb("run", "--config", topo.rules_file(RULES), "--tun", topo.tun,
                        "--control", topo.sock, *extra)
        assert r.returncode == 2, (extra, r.stderr)
    assert "userlb_fl_" not in tables(topo)


@needs_root
def test_syn_prio_sets_the_qdisc_and_marks_syns(topo):
    topo.extra = ("--syn-prio",)
    p = topo.start(RULES)
    tname = f"userlb_fl_{topo.tun}".replace("-", "_")
    rules = subprocess.run(["ip", "netns", "exec", topo.d, "nft", "list", "table", "inet",
                            tname], capture_output=True, text=True).stdout
    assert "meta priority set 0:1" in rules
    qd = subprocess.run(["ip", "-n", topo.d, "link", "show", topo.tun], capture_output=True,
                        text=True).stdout
    assert "qdisc pfifo_fast" in qd
    assert topo.connect(topo.c, "10.99.0.1", 80) == "S 10.10.0.2"
    topo.stop(p)
    assert tname not in tables(topo)
