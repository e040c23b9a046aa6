"""Real ldirectord (Debian package `ldirectord`, unmodified) manages a running
userlb director through userlb's `ipvsadm` shim.

ldirectord runs in the director's network namespace, inside a private mount
namespace (`unshare -m --propagation private`) in which `userlb ipvsadm-shim
install --bind` has bind-mounted the shim over /sbin/ipvsadm and a tmpfs
holds /run (ldirectord's pid file): the host's files are never touched.  Its
own ldirectord.cf: an HTTP check (negotiate: GET /, expect "server") on
VIP:80 with quiescent=no, a TCP connect check on VIP:7 with quiescent=yes.

* it starts, adds the virtual services and both real servers (weight 1);
* s2's service stops: s2 leaves VIP:80 (HTTP check failed, quiescent=no) and
  goes to weight 0 on VIP:7 (quiescent=yes); traffic to VIP:80 goes to s1;
* s2 comes back: ldirectord adds it back to VIP:80 and restores weight 1.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from helpers.netns import needs_root
from userlb.testing import LbLab

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

LDIRECTORD = "/usr/sbin/ldirectord"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cf(lab, log):
    s1, s2 = lab.server(1), lab.server(2)
    return f"""\
checktimeout=2
checkinterval=1
negotiatetimeout=2
autoreload=no
fork=no
quiescent=no
logfile="{log}"

virtual={lab.vip4}:80
\treal={s1.addr4}:80 masq 1
\treal={s2.addr4}:80 masq 1
\tservice=http
\tscheduler=rr
\tprotocol=tcp
\tchecktype=negotiate
\trequest="/"
\treceive="server"

virtual={lab.vip4}:7
\treal={s1.addr4}:7 masq 1
\treal={s2.addr4}:7 masq 1
\tscheduler=wlc
\tprotocol=tcp
\tchecktype=connect
\tquiescent=yes
"""


def _wait(what, fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def _table(lab):
    """{(vip, port): {real: weight}} from `ipvsadm -L -n` (via userlb adm)."""
    out = {}
    svc = None
    for line in lab.director.listing().splitlines()[3:]:
        w = line.split()
        if w[0] in ("TCP", "UDP"):
            svc = w[1]
            out[svc] = {}
        else:
            out[svc][w[1].rsplit(":", 1)[0]] = int(w[3])
    return out


@pytest.mark.skipif(not os.path.exists(LDIRECTORD) or shutil.which("unshare") is None,
                    reason="needs ldirectord (make sysdeps installs it) and unshare")
def test_ldirectord_manages_userlb():
    with LbLab(servers=2, scheduler="rr", rules="") as lab:
        inner = lab._lab_obj
        d = str(inner.dir)
        cf = os.path.join(d, "ldirectord.cf")
        log = os.path.join(d, "ldirectord.log")
        with open(cf, "w") as f:
            f.write(_cf(lab, log))
        # /run gets a tmpfs (ldirectord's pid file goes there, not to the
        # host's /run); the lab's directory (control socket, cf, log) is
        # carried over it through a staging mount point outside /run
        stage = tempfile.mkdtemp(prefix="ulb-ldird-")
        script = (
            "set -e\n"
            f"mount --bind {d} {stage}\n"
            "mount -t tmpfs -o mode=0755 userlb-ldirectord /run\n"
            f"mkdir -p {d}\n"
            f"mount --move {stage} {d}\n"
            f"{sys.executable} -m userlb.cli.main ipvsadm-shim install --bind "
            f"--control {lab.director.control_path}\n"
            f"exec {LDIRECTORD} -d {cf} start\n")
        env = dict(os.environ, PYTHONPATH=ROOT)
        with open(os.path.join(d, "ldirectord.out"), "w") as out:
            p = subprocess.Popen(["ip", "netns", "exec", lab.director.namespace, "unshare",
                                  "-m", "--propagation", "private", "sh", "-c", script],
                                 stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True, env=env)
        s1, s2 = lab.server(1).addr4, lab.server(2).addr4
        v80, v7 = f"{lab.vip4}:80", f"{lab.vip4}:7"
        both = {s1: 1, s2: 1}
        try:
            def started():
                t = _table(lab)
                return t if t.get(v80) == both and t.get(v7) == both else None
            try:
                _wait("ldirectord to add both real servers", started)
            except AssertionError:
                print(open(os.path.join(d, "ldirectord.out")).read())
                raise
            # the commands came through userlb's ipvsadm, under its own name
            assert p.poll() is None
            with open(os.path.join(d, "ldirectord.out")) as f:     # -d: the log
                text = f.read()
            assert f"system(/sbin/ipvsadm -a -t {v80} -x 0 -y 0 -r {s2}:80 -m -w 1)" in text
            # and none of them failed (ldirectord logs "system(...) failed")
            assert "failed" not in text.lower(), text
            served = {lab.client.http_get(lab.vip4, tries=3).server for _ in range(4)}
            assert served == {"s1", "s2"}

            lab.server(2).stop()
            _wait("s2 out of VIP:80 and at weight 0 on VIP:7 (quiescent)",
                  lambda: _table(lab) == {v80: {s1: 1}, v7: {s1: 1, s2: 0}})
            assert {lab.client.http_get(lab.vip4, tries=3).server for _ in range(4)} == {"s1"}

            lab.server(2).start()
            _wait("s2 back on both", lambda: _table(lab) == {v80: both, v7: both})
            assert {lab.client.http_get(lab.vip4, tries=3).server for _ in range(4)} == \
                {"s1", "s2"}
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(5)
            os.rmdir(stage)
        # the host's ipvsadm was never replaced
        with open("/sbin/ipvsadm", "rb") as f:
            assert b"userlb ipvsadm shim" not in f.read(256)
