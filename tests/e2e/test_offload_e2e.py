"""End-to-end with and without TUN offloads.

tests/test_e2e.py runs `userlb run` with its default (offloads on) over veth
links -- where a receiver trusts a partial checksum it is handed, so a wrong
partial sum would go unnoticed there.  This module re-runs its TCP/UDP
(v4/v6), fragment, payload and PMTU tests in two more labs:

* ``verified``: offloads on, and every veth the director transmits on has
  TX checksumming off while the peers (clients, servers, router, far server)
  have RX checksumming off: the director's kernel must complete each
  checksum in software from what userlb wrote (segmenting the super-packets
  in software too), and every receiver verifies it -- a wrong partial sum
  loses the packet and the test stalls or fails.  The director is also
  checked to have seen GSO super-packets and partial checksums.
* ``no_offload``: `userlb run --no-offload` (no virtio-net header).
"""
import ctypes
import fcntl
import os
import re
import socket
import struct

import pytest
from test_e2e import (  # noqa: F401
    test_fragmented_udp_datagram_ipv4,
    test_pmtu_discovery_through_the_director,
    test_pmtu_with_a_small_tun_mtu,
    test_tcp_flows_go_where_simulate_predicts,
    test_tcp_payload_intact_both_directions,
    test_udp_flows_go_where_simulate_predicts,
)

from helpers.netns import make_lab, needs_root
from userlb.lab import ECHO, VIP4, VIP6

pytestmark = [needs_root, pytest.mark.root, pytest.mark.slow]

SIOCETHTOOL = 0x8946
ETHTOOL_SRXCSUM = 0x15
ETHTOOL_STXCSUM = 0x17

def ethtool_set(ifname, cmd, value):
    """Legacy ethtool set (ETHTOOL_S*CSUM) through SIOCETHTOOL, in the
    calling process's network namespace."""
    ev = ctypes.create_string_buffer(struct.pack("II", cmd, value))
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(ev)).ljust(40, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifr)


def _set_in_ns(lab, ns, cmd, skip=("lo",)):
    """Turn checksum feature `cmd` off on every interface of namespace ns
    (but `skip`); returns the names changed."""
    import sys
    here = os.path.dirname(__file__)
    code = ("import os, sys\n"
            f"sys.path[:0] = {[here, os.path.dirname(here)]!r}\n"
            "from test_offload_e2e import ethtool_set\n"
            "done = []\n"
            "for name in sorted(os.listdir('/sys/class/net')):\n"
            f"    if name in {tuple(skip)!r}:\n"
            "        continue\n"
            "    try:\n"
            f"        ethtool_set(name, {cmd}, 0)\n"
            "    except OSError:\n"
            "        continue\n"
            "    done.append(name)\n"
            "print(' '.join(done))\n")
    return lab.exec(ns, [sys.executable, "-c", code]).stdout.split()


@pytest.fixture(scope="module", params=["verified", "no_offload"])
def lab(request):
    lab = make_lab(n_servers=3, n_clients=8, far_mtu=1280, director=False)
    try:
        orig = lab.director_argv
        if request.param == "no_offload":
            lab.director_argv = lambda *a, **kw: orig(*a, **kw) + ["--no-offload"]
        else:
            # the director completes every checksum in software on the way out,
            # every peer verifies what it receives
            done = _set_in_ns(lab, lab.director, ETHTOOL_STXCSUM, skip=("lo", "br0"))
            assert "c0" in done and "s1" in done, done
            for ns in [lab.client, lab.router, lab.far[0]] + [s[0] for s in lab.servers]:
                assert _set_in_ns(lab, ns, ETHTOOL_SRXCSUM), ns
        lab.mode = request.param
        lab.start_director()
        yield lab
    finally:
        lab.down()


def _counters(lab):
    text = lab.stats()
    m = re.search(r"^driver: (.*)$", text, re.M)
    assert m, text
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


def test_director_mode_and_offload_counters(lab):
    """The director runs in the intended mode; with offloads a bulk transfer
    arrives as GSO super-packets (far fewer reads than segments)."""
    log = open(lab.director_log).read()
    if lab.mode == "no_offload":
        assert "no offloads" in log
    else:
        assert re.search(r"offloads csum\+tso4\+tso6", log), log
    before = _counters(lab)
    for _v6, vip, srcs in ((False, VIP4, lab.clients4), (True, VIP6, lab.clients6)):
        r = lab.client_py("transfer", vip=vip, port=ECHO, size=8 << 20, src=srcs[1])
        assert r["errors"] == [] and r["recv_sha256"] == r["sent_sha256"]
        assert r["received"] == 8 << 20
    c = _counters(lab)
    rx = c["rx"] - before["rx"]
    if lab.mode == "no_offload":
        assert "gso" not in c
        assert rx > 2 * (16 << 20) // 1500     # one read per segment, both ways
    else:
        assert c["gso"] - before.get("gso", 0) > 50, c
        assert not any(k.startswith("vnet_") for k in c), c
