"""`userlb adm --capture FILE --count N` on a running director: the next N
packets it receives, each with what it sent for it, as a pcapng file that
tshark (Debian package) reads -- the VIP on the way in, the real server on
the way out."""
import shutil
import subprocess
import threading

import pytest

from helpers.netns import needs_root
from userlb.cli import adm
from userlb.testing import LbLab

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

TSHARK = shutil.which("tshark")


def _adm(control, *args):
    out, err = _Sink(), _Sink()
    rc = adm.main(["--control", control, *args], stdout=out, stderr=err)
    return rc, out.text, err.text


class _Sink:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass


@pytest.mark.skipif(TSHARK is None, reason="needs tshark (make sysdeps installs it)")
def test_capture_on_a_running_director(tmp_path):
    with LbLab(servers=2, scheduler="rr") as lab:
        control = lab.director.control_path
        path = str(tmp_path / "cap.pcapng")
        result = {}
        t = threading.Thread(target=lambda: result.setdefault(
            "r", _adm(control, "--capture", path, "--count", "6", "--seconds", "30")))
        t.start()
        # the capture is installed once the director has the request
        for _ in range(20):
            r = lab.client.http_get(lab.vip4)
            assert r.status == 200, r
            t.join(0.2)
            if not t.is_alive():
                break
        t.join(40)
        rc, out, err = result["r"]
        assert rc == 0, err
        assert "6 packet(s) received by the director captured to" in out
        p = subprocess.run([TSHARK, "-r", path, "-T", "fields", "-e", "frame.interface_name",
                            "-e", "ip.src", "-e", "ip.dst", "-e", "tcp.dstport"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        rows = [line.split("\t") for line in p.stdout.splitlines()]
        ins = [r for r in rows if r[0] == "in"]
        assert len(ins) == 6
        rs = {lab.server(1).addr4, lab.server(2).addr4}
        to_vip = [r for r in ins if r[2] == lab.vip4 and r[3] == "80"]
        to_rs = [r for r in rows if r[0] == "out" and r[2] in rs and r[3] == "80"]
        assert to_vip and len(to_rs) == len(to_vip)

        # the tap is gone after the capture: forwarding goes on; a second
        # capture that does not get its count ends at --seconds and says so
        # (a stray late packet of the earlier connections may be in it)
        assert lab.client.http_get(lab.vip4).status == 200
        rc, out, err = _adm(control, "--capture", str(tmp_path / "few.pcapng"),
                            "--count", "100000", "--seconds", "0.5")
        assert rc == 0 and "(of 100000: --seconds 0.5 ran out)" in out, (out, err)
        n = int(out.split()[0])
        p = subprocess.run([TSHARK, "-r", str(tmp_path / "few.pcapng"), "-T", "fields",
                            "-e", "frame.interface_name"], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split().count("in") == n


def test_capture_refused_arguments(tmp_path):
    for args, msg in ((["--count", "3"], "go with --capture FILE"),
                      (["--capture", "f", "--count", "0"], "from 1 to 100000"),
                      (["--capture", "f", "--seconds", "x"], "expected a number"),
                      (["--capture", "f", "-L", "-n"], "cannot be combined")):
        rc, out, err = _adm(str(tmp_path / "none.sock"), *args)
        assert rc == 2 and msg in err, (args, err)
