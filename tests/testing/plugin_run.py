"""Running pytest on a generated test file in a subprocess, as a user's
project would run it, and checking that a lab left nothing behind."""
import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def plugin_args():
    """`-p userlb.testing.plugin` unless the installed userlb's entry point
    already loads it (a checkout not installed with the entry point yet)."""
    eps = importlib.metadata.entry_points(group="pytest11")
    if any(ep.value == "userlb.testing.plugin" for ep in eps):
        return []
    return ["-p", "userlb.testing.plugin"]


def pytest_argv(path, *args):
    return [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
            *plugin_args(), *args, str(path)]


def pytest_env(state_dir):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["USERLB_LAB_DIR"] = str(state_dir)
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# what a generated test records about its lab, for the checks after it ended
RECORD = '''
import json, os
def record(lab, path):
    info = {"tag": lab.tag, "namespaces": lab.namespaces,
            "pids": [lab.director.pid] + [s.pid for s in lab.real_servers],
            "state": os.path.join(os.environ["USERLB_LAB_DIR"], lab.tag[4:]),
            "pytest": os.getpid()}
    with open(path + ".tmp", "w") as f:
        json.dump(info, f)
    os.replace(path + ".tmp", path)
'''


def namespaces():
    return set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                              text=True).stdout.split())


def alive(pid):
    """A live process (not a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def assert_nothing_left(info):
    """No namespace, process or state of the recorded lab remains."""
    assert info["namespaces"], info
    left = {ns for ns in namespaces() if ns.startswith(info["tag"])}
    assert left == set(), f"namespaces left: {left}"
    assert wait_gone([p for p in info["pids"] if p]) == [], "processes left"
    assert not os.path.exists(info["state"]), "state directory left"
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    assert [line for line in ps.splitlines() if info["tag"] in line] == []


def load(path):
    return json.loads(pathlib.Path(path).read_text())
