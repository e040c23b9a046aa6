"""Ctrl-C during `userlb demo` (what `make demo` runs): one line, exit
status 130, and the lab is removed -- namespaces, processes, state -- in
either part of the demo (root)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.netns import needs_root

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]


def _namespaces():
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                              text=True).stdout.split())


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _states(root):
    """{suffix: state} of the labs under root."""
    out = {}
    for d in root.iterdir() if root.is_dir() else ():
        if d.is_symlink():        # "current"
            continue
        try:
            out[d.name] = json.loads((d / "state.json").read_text())
        except (OSError, ValueError):
            pass
    return out


@pytest.mark.parametrize("phase", ["traffic", "failover"])
def test_ctrl_c_ends_with_one_line_and_removes_the_lab(tmp_path, phase):
    state = tmp_path / "labs"
    env = dict(os.environ, USERLB_LAB_DIR=str(state))
    out_path = tmp_path / "stdout"
    argv = [sys.executable, "-m", "userlb.cli.main", "demo", "--requests", "300"]
    argv += ["--directors", "1"] if phase == "traffic" else ["--requests", "10",
                                                              "--udp-flows", "4"]
    seen = {}                     # suffix -> state (namespaces, PIDs) while it was up
    with open(out_path, "w") as out:
        # a session of its own: Ctrl-C on a terminal signals the whole
        # foreground process group, so does this test
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True, env=env,
                             start_new_session=True)
    try:
        def ready():
            for sfx, st in _states(state).items():
                seen[sfx] = st
            labs = [st for st in seen.values() if any(k.startswith("director")
                                                      for k in st["pids"])]
            if phase == "traffic":
                return labs
            return "failover demo:" in out_path.read_text() and \
                any(st["directors"] == 3 for st in labs)
        _wait(ready, 60, f"the {phase} phase")
        time.sleep(0.3)
        os.killpg(p.pid, signal.SIGINT)
        _, err = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        subprocess.run([sys.executable, "-m", "userlb.cli.main", "lab", "down", "--all"],
                       env=env, capture_output=True)
    interrupted = [st for st in seen.values()
                   if phase == "traffic" or st["directors"] == 3]
    assert len(interrupted) == 1
    tag = interrupted[0]["tag"]
    assert p.returncode == 130, err
    assert err.strip() == f"userlb demo: interrupted; lab {tag} removed", err
    assert "Traceback" not in out_path.read_text()
    # everything of every lab of the run is gone
    for st in seen.values():
        assert not any(ns.startswith(st["tag"]) for ns in _namespaces())
        for pid in st["pids"].values():
            assert not os.path.exists(f"/proc/{pid}") or \
                open(f"/proc/{pid}/stat").read().split(")")[-1].split()[0] == "Z"
    assert _states(state) == {}


def test_ctrl_c_during_lab_up_removes_what_was_made(tmp_path):
    """`userlb lab up` interrupted while it builds: one line, nothing left."""
    state = tmp_path / "labs"
    env = dict(os.environ, USERLB_LAB_DIR=str(state))
    p = subprocess.Popen([sys.executable, "-m", "userlb.cli.main", "lab", "up", "--servers", "4"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    seen = {}
    try:
        def building():           # namespaces made, real servers being started
            seen.update(_states(state))
            return any(st["pids"] for st in seen.values())
        _wait(building, 60, "the real servers")
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        subprocess.run([sys.executable, "-m", "userlb.cli.main", "lab", "down", "--all"],
                       env=env, capture_output=True)
    (st,) = seen.values()
    assert p.returncode == 130, err
    assert err.strip() == "userlb lab: interrupted; the lab being set up was removed", err
    assert out == ""
    assert not any(ns.startswith(st["tag"]) for ns in _namespaces())
    assert _states(state) == {}
