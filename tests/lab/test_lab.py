"""`userlb lab up | status | demo | down` as a user runs it, and the lab's
clean-up after a failure (root; the state lives in a temporary directory)."""
import json
import os
import subprocess
import sys

import pytest

from helpers.netns import needs_root

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]


def _namespaces():
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                              text=True).stdout.split())


def _lab(args, env):
    return subprocess.run([sys.executable, "-m", "userlb.cli.main", "lab"] + args,
                          capture_output=True, text=True, env=env, timeout=180)


def test_lab_cli_up_demo_down(tmp_path):
    env = dict(os.environ, USERLB_LAB_DIR=str(tmp_path))
    before = _namespaces()
    try:
        p = _lab(["up", "--servers", "2", "--clients", "2"], env)
        assert p.returncode == 0, p.stderr
        st = json.loads(_lab(["status", "--json"], env).stdout)
        tag = st["tag"]
        mine = {ns for ns in _namespaces() - before if ns.startswith(tag)}
        assert mine == {f"{tag}-c", f"{tag}-d", f"{tag}-s1", f"{tag}-s2"}
        for pid in st["pids"].values():
            assert os.path.exists(f"/proc/{pid}")
        # `up` says how to reach this lab's director (not /run/userlb/control.sock)
        adm_line = f"userlb adm --control {st['control']} -L -n"
        assert f"    {adm_line}\n" in p.stdout, p.stdout
        # ... and that line works as printed
        adm = subprocess.run([sys.executable, "-m", "userlb.cli.main"] + adm_line.split()[1:],
                             capture_output=True, text=True, timeout=30)
        assert adm.returncode == 0 and "TCP  10.99.0.1:80 mh" in adm.stdout, adm.stderr
        # `status` for a human; --json for the raw state
        text = _lab(["status"], env).stdout
        assert text.startswith(f"lab {tag} (state ")
        assert f"director  {tag}-d: pid {st['pids']['director']}, running" in text
        assert f"  {adm_line}" in text
        assert f"s2        {tag}-s2: 10.20.0.12 fd00:20::c, pid {st['pids']['s2']}, running" \
            in text
        p = _lab(["demo", "--requests", "20", "--udp-flows", "6"], env)
        assert p.returncode == 0, p.stdout + p.stderr
        out = p.stdout
        assert "as predicted by `userlb simulate`: 26" in out
        assert "client's own address and port: 26" in out
        assert "TCP  10.99.0.1:80" in out           # the director's listing
        assert f"on the director's running configuration (userlb adm --control " \
               f"{st['control']} -S -n)" in out
        assert "differs from the rules the lab started with" not in out
        # the output explains itself: pred/got, the idle services, the drops
        assert "pred = flows that `userlb simulate`" in out
        assert "got  = flows that real server actually answered" in out
        assert "TCP :7 (echo) and :9 (hash) are services of the lab" in out
        assert "icmp_ignored = ICMP messages that are not errors" in out
        assert "drops = packets\nthe director did not forward" in out

        # a live change: s1 quiesced for HTTP v4, removed from UDP v6
        for cmd in (["-e", "-t", "10.99.0.1:80", "-r", "10.20.0.11:80", "-m", "-w", "0"],
                    ["-d", "-u", "[fd00:99::1]:7", "-r", "[fd00:20::b]:7"]):
            adm = subprocess.run([sys.executable, "-m", "userlb.cli.main", "adm", "--control",
                                  st["control"]] + cmd, capture_output=True, text=True)
            assert adm.returncode == 0, adm.stderr
        p = _lab(["demo", "--requests", "20", "--udp-flows", "6"], env)
        assert p.returncode == 0, p.stdout + p.stderr    # compared with the running rules
        out = p.stdout
        assert "as predicted by `userlb simulate`: 26" in out
        assert "(it differs from the rules the lab started with" in out
        row = next(line.split() for line in out.splitlines() if line.startswith("s1 "))
        assert row[1] == "0/0" and row[4] == "0/0", row     # HTTP v4, UDP v6
        assert "s1: 0 predicted for HTTP v4: weight 0 in the running configuration: a real " \
               "server with weight 0 is quiesced" in " ".join(out.split())
        assert "s1: 0 predicted for UDP v6: not a real server of that service in the running " \
               "configuration" in " ".join(out.split())
        p = _lab(["down"], env)
        assert p.returncode == 0 and f"lab {tag} removed" in p.stdout
        assert not any(ns.startswith(tag) for ns in _namespaces())
        for pid in st["pids"].values():
            assert not os.path.exists(f"/proc/{pid}") or \
                open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"
        p = _lab(["down"], env)                           # idempotent
        assert p.returncode == 0 and "nothing to do" in p.stdout
    finally:
        _lab(["down", "--all"], env)


def test_failed_up_removes_everything(tmp_path, monkeypatch):
    import userlb.lab as lab_mod
    monkeypatch.setattr(lab_mod.core, "STATE_ROOT", tmp_path)
    before = _namespaces()
    started = {}

    def failing_director(self, *a, **kw):
        started.update(self.pids)
        raise lab_mod.LabError("director failed (injected)")

    monkeypatch.setattr(lab_mod.Lab, "start_director", failing_director)
    # namespaces, links and the real servers' processes exist when it fails
    lab = lab_mod.Lab(n_servers=2, n_clients=1)
    with pytest.raises(lab_mod.LabError, match="injected"):
        lab.up()
    assert len(started) == 2
    for pid in started.values():
        assert not os.path.exists(f"/proc/{pid}")
    assert _namespaces() - before == set()
    assert not (tmp_path / lab.sfx).exists()


def test_failed_link_setup_removes_everything(tmp_path, monkeypatch):
    import userlb.lab as lab_mod
    monkeypatch.setattr(lab_mod.core, "STATE_ROOT", tmp_path)
    before = _namespaces()
    lab = lab_mod.Lab(n_servers=1, n_clients=1, far_mtu=50)    # an MTU the kernel refuses
    with pytest.raises(lab_mod.LabError):
        lab.up()
    assert _namespaces() - before == set()
