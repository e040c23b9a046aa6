"""Helpers for the tests that need root, network namespaces and
/dev/net/tun (end-to-end tests, the TUN driver on a real device, the lab).

`needs_root` skips with a reason when not root or /dev/net/tun is missing --
the only reasons to skip; everything else must work (CI runs as root).
Namespaces are created with unique names (random suffix) and always removed.
"""
import os
import subprocess
import sys

import pytest

HAVE_ROOT = os.geteuid() == 0
HAVE_TUN = os.path.exists("/dev/net/tun")
ROOT_REASON = ("needs root" if not HAVE_ROOT else
               "needs /dev/net/tun" if not HAVE_TUN else "")

needs_root = pytest.mark.skipif(not (HAVE_ROOT and HAVE_TUN), reason=ROOT_REASON or "n/a")


def ns_python(ns, code, timeout=60, check=True):
    """Run Python code inside namespace ns with this interpreter; CompletedProcess."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], text=True,
                       capture_output=True, timeout=timeout, env=env)
    if check and p.returncode:
        raise AssertionError(f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def make_lab(**kw):
    """A Lab that is up (module fixtures use it; they must call down())."""
    if not (HAVE_ROOT and HAVE_TUN):
        pytest.skip(ROOT_REASON)
    from userlb.lab import Lab
    kw.setdefault("current", False)
    return Lab(**kw).up()
