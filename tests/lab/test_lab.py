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
        st = json.loads(_lab(["status"], env).stdout)
        tag = st["tag"]
        mine = {ns for ns in _namespaces() - before if ns.startswith(tag)}
        assert mine == {f"{tag}-c", f"{tag}-d", f"{tag}-s1", f"{tag}-s2"}
        for pid in st["pids"].values():
            assert os.path.exists(f"/proc/{pid}")
        p = _lab(["demo", "--requests", "20", "--udp-flows", "6"], env)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "as predicted by `userlb simulate`: 26" in p.stdout
        assert "client's own address and port: 26" in p.stdout
        assert "TCP  10.99.0.1:80" in p.stdout           # the director's listing
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
