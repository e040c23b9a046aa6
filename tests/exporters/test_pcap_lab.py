"""`userlb run --pcap FILE` in the namespace lab: tshark (Debian package)
reads the pcapng file and shows the masquerade rewrite packet by packet --
the VIP on the way in, the real server on the way out, and back."""
import os
import shutil
import subprocess

import pytest

from helpers.netns import needs_root
from userlb.exporters import pcap
from userlb.testing import LbLab

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

TSHARK = shutil.which("tshark")


def _tshark(path, *fields):
    p = subprocess.run([TSHARK, "-r", path, "-T", "fields"]
                       + [a for f in fields for a in ("-e", f)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [line.split("\t") for line in p.stdout.splitlines()]


@pytest.mark.skipif(TSHARK is None, reason="needs tshark (make sysdeps installs it)")
def test_tshark_shows_the_rewrite():
    with LbLab(servers=2, scheduler="rr") as lab:
        inner = lab._lab_obj
        path = str(inner.dir / "director.pcapng")
        lab.director.stop()
        inner.start_director(extra=["--pcap", path])
        servers = set()
        for _ in range(4):
            r = lab.client.http_get(lab.vip4)
            assert r.status == 200, r
            servers.add(r.server)
        assert servers == {"s1", "s2"}
        lab.director.stop()
        rows = _tshark(path, "frame.interface_name", "ip.src", "ip.dst", "tcp.srcport",
                       "tcp.dstport")
        rs = {lab.server(1).addr4, lab.server(2).addr4}
        vip = lab.vip4
        to_vip = [r for r in rows if r[0] == "in" and r[2] == vip and r[4] == "80"]
        to_rs = [r for r in rows if r[0] == "out" and r[2] in rs and r[4] == "80"]
        from_rs = [r for r in rows if r[0] == "in" and r[1] in rs and r[3] == "80"]
        from_vip = [r for r in rows if r[0] == "out" and r[1] == vip and r[3] == "80"]
        assert to_vip and from_rs
        # every packet in has its rewritten copy out, in both directions
        assert len(to_rs) == len(to_vip) and len(from_vip) == len(from_rs)
        assert {r[2] for r in to_rs} == rs
        # the client's address and port are kept (masquerading rewrites the destination)
        assert sorted((r[1], r[3]) for r in to_vip) == sorted((r[1], r[3]) for r in to_rs)
        assert "pcap " in lab.director.log() and "packet(s)" in lab.director.log()


def test_pcap_bound(tmp_path):
    """--pcap-max-mb: the file stops growing at the bound; what is left out is counted."""
    w = pcap.PcapWriter(str(tmp_path / "x.pcapng"), max_bytes=4096)
    for _ in range(100):
        w.write(0, b"\x45" + b"\0" * 99)
    w.close()
    size = os.path.getsize(tmp_path / "x.pcapng")
    assert size < 4096 + 200 and w.packets + w.left_out == 100 and w.left_out > 0
    if TSHARK:
        p = subprocess.run([TSHARK, "-r", str(tmp_path / "x.pcapng")], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0 and len(p.stdout.splitlines()) == w.packets, p.stderr
