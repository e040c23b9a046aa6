"""DIR/net/ip_vs_conn (`userlb run --procfs DIR`) in the namespace lab, under
IPv4 and IPv6 traffic: its rows are those of `userlb adm -L -c -n`."""
import ipaddress
import os
import time

import pytest

from helpers.netns import needs_root
from userlb.exporters.procfs import render_ip_vs_conn
from userlb.exporters.snapshot import Snapshot
from userlb.testing import LbLab

HEAD = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData"


def test_render_format_v4_v6_and_template():
    v6 = ipaddress.IPv6Address("fd00::2").packed
    snap = Snapshot(0.0, (), conns=(
        (6, 0x0A000102, 40000, 0x0A000064, 80, 0x0A000001, 80, "ESTABLISHED", 899),
        (17, v6, 53, v6, 53, v6, 5353, "UDP", 5),
        (6, 0x0A000100, 0, 0x0A000064, 80, 0x0A000001, 80, "NONE", 300),
    ))
    assert render_ip_vs_conn(snap).splitlines() == [
        HEAD,
        "TCP 0A000102 9C40 0A000064 0050 0A000001 0050 ESTABLISHED     899",
        "UDP fd00:0000:0000:0000:0000:0000:0000:0002 0035 "
        "fd00:0000:0000:0000:0000:0000:0000:0002 0035 "
        "fd00:0000:0000:0000:0000:0000:0000:0002 14E9 UDP               5",
        "TCP 0A000100 0000 0A000064 0050 0A000001 0050 NONE            300",
    ]
    assert render_ip_vs_conn(Snapshot(0.0, ())) == HEAD + "\n"


def _addr(text):
    if ":" in text:
        return ipaddress.IPv6Address(text)
    return ipaddress.IPv4Address(int(text, 16))


def _endpoint(text):
    a, p = text.replace("[", "").replace("]", "").rsplit(":", 1)
    return ipaddress.ip_address(a), int(p)


@needs_root
@pytest.mark.root
@pytest.mark.slow
def test_ip_vs_conn_rows_match_the_connection_listing():
    with LbLab(servers=2, scheduler="rr") as lab:
        inner = lab._lab_obj
        procfs = str(inner.dir / "proc")
        lab.director.stop()
        inner.start_director(extra=["--procfs", procfs])
        for _ in range(4):
            assert lab.client.http_get(lab.vip4).status == 200
        assert lab.client.http_get(lab.vip6).status == 200
        time.sleep(1.5)                     # one exporter tick after the traffic
        with open(os.path.join(procfs, "net", "ip_vs_conn")) as f:
            text = f.read()
        listing = lab.director.listing("-c")
        lines = text.splitlines()
        assert lines[0] == HEAD
        ours = {}
        for line in lines[1:]:
            w = line.split()
            assert len(w) == 9, line
            key = (w[0], (_addr(w[1]), int(w[2], 16)), (_addr(w[3]), int(w[4], 16)),
                   (_addr(w[5]), int(w[6], 16)), w[7])
            ours[key] = int(w[8])
        theirs = {}
        for line in listing.splitlines()[2:]:
            w = line.split()
            mm, ss = w[1].split(":")
            theirs[(w[0], _endpoint(w[3]), _endpoint(w[4]), _endpoint(w[5]), w[2])] = \
                int(mm) * 60 + int(ss)
        assert len(theirs) == 5, listing
        assert set(ours) == set(theirs), (text, listing)
        for k, left in ours.items():
            assert abs(left - theirs[k]) <= 2, (k, left, theirs[k])
        assert any(k[1][0].version == 6 for k in ours)
        lab.director.stop()
        assert not os.path.exists(os.path.join(procfs, "net", "ip_vs_conn"))
