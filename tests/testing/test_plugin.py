"""The pytest plugin (userlb.testing.plugin) as another project uses it:
pytest runs a generated test file in a subprocess, with real namespaces and
traffic; afterwards no namespace, process or state of its labs may remain --
after a passing test, a failing one, Ctrl-C (SIGINT), SIGTERM, and (swept by
the next session) SIGKILL.  Without root the fixtures skip, with the reason."""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
from plugin_run import (
    RECORD,
    ROOT,
    alive,
    assert_nothing_left,
    load,
    namespaces,
    pytest_argv,
    pytest_env,
)

from helpers.netns import needs_root

PASSING = RECORD + '''
import sys
import pytest
from userlb.testing import VIP4, VIP6, AdmError
from userlb.testing.plugin import schedulers

pytestmark = pytest.mark.userlb_lab(servers=3)

@pytest.mark.userlb_lab(scheduler="rr")
def test_traffic_adm_flows(userlb_lab):
    lab = userlb_lab
    record(lab, INFO + ".1")
    replies = lab.client.http_gets(6)
    assert [r.status for r in replies] == [200] * 6
    assert {r.server for r in replies} == {"s1", "s2", "s3"}        # rr over 3
    assert all(r.json()["client"] == r.client for r in replies)     # masquerade
    assert lab.client.http_get(VIP6).ok
    conns = {(f.client, f.cport): f.server for f in lab.flows()}
    assert all(conns[(r.client, r.cport)] == r.server for r in replies)
    lab.director.adm("-e -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 0")
    assert "s1" not in {r.server for r in lab.client.http_gets(6)}
    with pytest.raises(AdmError, match="already exists"):
        lab.director.adm("-a", "-t", "10.99.0.1:80", "-r", "10.20.0.11:80", "-m")
    # a script under test finds this director's ipvsadm on PATH
    out = lab.run_in(lab.director, "ipvsadm -S -n").stdout
    assert "-a -t 10.99.0.1:80 -r 10.20.0.11:80 -m -w 0" in out

@schedulers("mh", "sh", servers=2)
def test_each_scheduler(userlb_lab):
    record(userlb_lab, INFO + "." + userlb_lab.scheduler)
    assert userlb_lab.servers == 2
    sched = userlb_lab.scheduler
    assert f"-A -t 10.99.0.1:80 -s {sched}" in userlb_lab.director.rules()
    assert userlb_lab.client.http_get().ok

def test_factory_two_labs(userlb_lab_factory):
    a = userlb_lab_factory(servers=1)
    b = userlb_lab_factory(servers=1, server_command=[sys.executable, "-m", "http.server",
                                                      "{port}"], server_port=8000)
    assert a.tag != b.tag
    record(a, INFO + ".a")
    record(b, INFO + ".b")
    assert a.client.http_get().server == "s1"
    assert b.client.http_get(port=8000).status == 200
'''

FAILING = RECORD + '''
def test_fails(userlb_lab):
    record(userlb_lab, INFO)
    assert userlb_lab.client.http_get().server == "nobody"
'''

INTERRUPTED = RECORD + '''
import time
def test_waits(userlb_lab):
    assert userlb_lab.client.http_get().ok
    record(userlb_lab, INFO)
    time.sleep(120)
'''


def _write(tmp_path, body, info):
    test = tmp_path / "test_generated.py"
    test.write_text(f"INFO = {str(info)!r}\n" + body)
    return test


def _run(tmp_path, body):
    info = tmp_path / "info.json"
    test = _write(tmp_path, body, info)
    p = subprocess.run(pytest_argv(test), cwd=tmp_path, env=pytest_env(tmp_path / "state"),
                       capture_output=True, text=True, timeout=120)
    return p, info


@needs_root
@pytest.mark.root
def test_plugin_fixtures_pass_and_clean_up(tmp_path):
    p, info = _run(tmp_path, PASSING)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "4 passed" in p.stdout, p.stdout
    infos = [load(f) for f in sorted(tmp_path.glob("info.json.*"))]
    assert len(infos) == 5 and len({i["tag"] for i in infos}) == 5     # every lab recorded
    for rec in infos:
        assert_nothing_left(rec)


@needs_root
@pytest.mark.root
def test_teardown_after_a_failing_test(tmp_path):
    p, info = _run(tmp_path, FAILING)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "1 failed" in p.stdout and "== 'nobody'" in p.stdout, p.stdout
    assert_nothing_left(load(info))


@needs_root
@pytest.mark.root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_teardown_after_interrupt(tmp_path, sig):
    info = tmp_path / "info.json"
    test = _write(tmp_path, INTERRUPTED, info)
    proc = subprocess.Popen(pytest_argv(test), cwd=tmp_path, env=pytest_env(tmp_path / "state"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not info.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        rec = load(info)
        assert rec["pytest"] == proc.pid
        assert all(alive(p) for p in rec["pids"])          # the lab is up
        assert {ns for ns in namespaces() if ns.startswith(rec["tag"])} == set(rec["namespaces"])
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, out                       # pytest: interrupted
    assert "KeyboardInterrupt" in out, out
    assert_nothing_left(rec)


@needs_root
@pytest.mark.root
def test_lab_of_a_killed_session_is_swept_by_the_next(tmp_path):
    info = tmp_path / "info.json"
    test = _write(tmp_path, INTERRUPTED, info)
    env = pytest_env(tmp_path / "state")
    proc = subprocess.Popen(pytest_argv(test), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not info.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()                                        # SIGKILL: no teardown at all
        proc.wait()
    rec = load(info)
    try:
        assert any(ns.startswith(rec["tag"]) for ns in namespaces())    # left over
        # the next session's first lab removes it
        p, info2 = _run(tmp_path, FAILING.replace("nobody", "s9"))
        assert p.returncode == 1, p.stdout + p.stderr
        assert_nothing_left(rec)
        assert_nothing_left(load(info2))
    finally:
        subprocess.run([sys.executable, "-m", "userlb.cli.main", "lab", "down", "--all"],
                       env=env, capture_output=True)


# A user namespace without a uid map makes the test process non-root
# (geteuid() is the overflow uid 65534) while it can still read the
# checkout and the virtualenv, wherever (and with whatever mode) CI put them.
AS_NON_ROOT = ["unshare", "--user"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare to run pytest as a non-root user")
def test_fixtures_skip_without_root():
    """As a non-root user, the fixture skips with the reason; no error."""
    d = tempfile.mkdtemp(prefix="ulb-plugin-")
    try:
        os.chmod(d, 0o755)
        test = os.path.join(d, "test_generated.py")
        with open(test, "w") as f:
            f.write(textwrap.dedent('''
                def test_needs_a_lab(userlb_lab):
                    raise AssertionError("must not run")
            '''))
        env = pytest_env(os.path.join(d, "state"))
        env["HOME"] = d
        p = subprocess.run(AS_NON_ROOT + pytest_argv(test), cwd=d, env=env, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "1 skipped" in p.stdout and "userlb lab: needs root" in p.stdout, p.stdout
        assert "error" not in p.stdout.lower(), p.stdout
    finally:
        shutil.rmtree(d)


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun")
                    or shutil.which("unshare") is None,
                    reason="needs root, /dev/net/tun and unshare to hide it")
def test_fixtures_skip_without_tun(tmp_path):
    """As root, but with /dev/net/tun hidden (a private mount namespace with
    an empty /dev/net): the fixture skips with the reason."""
    test = tmp_path / "test_generated.py"
    test.write_text("def test_needs_a_lab(userlb_lab):\n    raise AssertionError('ran')\n")
    argv = " ".join(shlex.quote(a) for a in pytest_argv(test))
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f"mount -t tmpfs none /dev/net && exec {argv}"], cwd=tmp_path,
                       env=pytest_env(tmp_path / "state"), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 skipped" in p.stdout and "userlb lab: needs /dev/net/tun" in p.stdout, p.stdout
    assert os.path.exists("/dev/net/tun")             # the host's is untouched


def test_plugin_imports_without_root_and_registers_its_marker():
    code = ("import userlb.testing.plugin as p, userlb.testing as t;"
            "print(sorted(n for n in dir(p) if n.startswith('userlb_lab')), t.LbLab.__name__)")
    p = subprocess.run(AS_NON_ROOT + [sys.executable, "-c", code] if os.geteuid() == 0 else
                       [sys.executable, "-c", code], capture_output=True, text=True,
                       env=pytest_env("/nonexistent"), cwd="/", timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("]")[0] == "['userlb_lab', 'userlb_lab_factory'"
    assert ROOT.joinpath("userlb", "testing", "plugin.py").exists()
