"""What the kernel really hands a TUN device opened with offloads (root, a
fresh network namespace): the virtio-net header of a UDP GSO (USO) send, a
plain UDP datagram and a TCP SYN, IPv4 and IPv6 -- NEEDS_CSUM with
csum_start at the L4 header, and a checksum field holding the non-inverted
pseudo-header sum *including* the L4 length (for a GSO super-packet: the
whole super-packet's) -- the convention vnet.py and tests/test_offload.py
rely on.  And the offload mask is set on every open: a persistent device
opened with offloads and then re-opened without them hands over complete
checksums."""
import json

import pytest
from test_vnet import complete, pseudo_sum

from helpers.netns import needs_root, ns_python

pytestmark = [needs_root, pytest.mark.root]

PROBE = r'''
import json, os, select, socket, struct, subprocess, sys
from userlb.dataplane.tun import TunDevice, OFFLOAD_ALL
NAME = sys.argv[1] if len(sys.argv) > 1 else "ulbo0"

def read_all(dev, want, timeout=2.0):
    out = []
    while len(out) < want:
        r, _, _ = select.select([dev.fd], [], [], timeout)
        if not r:
            break
        data = os.read(dev.fd, 1 << 17)
        out.append(data)
    return out

def setup(dev):
    subprocess.run(["ip", "addr", "add", "10.77.0.1/24", "dev", dev.name], check=True)
    subprocess.run(["ip", "-6", "addr", "add", "fd00:77::1/64", "dev", dev.name, "nodad"],
                   check=True)

def sends():
    res = []
    for fam, dst in ((socket.AF_INET, "10.77.0.2"), (socket.AF_INET6, "fd00:77::2")):
        u = socket.socket(fam, socket.SOCK_DGRAM)
        u.sendto(b"p" * 300, (dst, 9))
        u.setsockopt(17, 103, 1000)                 # UDP_SEGMENT
        u.sendto(bytes(range(256)) * 20, (dst, 9))   # 5120 bytes: 6 segments
        t = socket.socket(fam, socket.SOCK_STREAM)
        t.setblocking(False)
        try:
            t.connect((dst, 80))
        except BlockingIOError:
            pass
        res.append((u, t))
    return res

def flt(pkts, vnet):
    keep = []
    for p in pkts:
        ip = p[10:] if vnet else p
        v = ip[0] >> 4
        proto = ip[9] if v == 4 else ip[6]
        if proto in (6, 17):
            keep.append(p.hex())
    return keep

mode = os.environ["PROBE_MODE"]
if mode == "offload":
    dev = TunDevice(NAME, offload=True)
    setup(dev)
    socks = sends()
    pkts = read_all(dev, 6)
    print(json.dumps({"mask": dev.offload_flags, "names": dev.offload_names,
                      "pkts": flt(pkts, True)}))
    dev.close()
else:
    # persistent device: offloads on, closed, re-opened without them
    import fcntl, pytun
    dev = TunDevice(NAME, offload=True)
    dev._dev.persist(True)
    dev.close()
    dev = TunDevice(NAME, offload=False)
    try:
        setup(dev)
        socks = sends()
        pkts = read_all(dev, 6)
        print(json.dumps({"pkts": flt(pkts, False)}))
    finally:
        dev._dev.persist(False)
        dev.close()
'''


def _probe(netns, mode):
    code = f"import os; os.environ['PROBE_MODE'] = {mode!r}\n" + PROBE
    p = ns_python(netns, code, timeout=60)
    return json.loads(p.stdout.strip().splitlines()[-1])


def _l4(ip):
    return (ip[0] & 15) * 4 if ip[0] >> 4 == 4 else 40


def test_kernel_partial_checksum_convention(netns):
    from userlb.dataplane import vnet
    res = _probe(netns, "offload")
    assert "csum" in res["names"] and "tso4" in res["names"] and "tso6" in res["names"]
    seen = set()
    for h in res["pkts"]:
        raw = bytes.fromhex(h)
        flags, gt, _hl, gsize, start, off = vnet.HDR.unpack_from(raw)
        ip = raw[10:]
        v = ip[0] >> 4
        proto = ip[9] if v == 4 else ip[6]
        assert flags & vnet.F_NEEDS_CSUM, (flags, gt)
        assert start == _l4(ip) and off == (16 if proto == 6 else 6)
        # the field: non-inverted pseudo-header sum incl. the (whole) L4 length
        field = int.from_bytes(ip[start + off:start + off + 2], "big")
        assert field == pseudo_sum(ip), (v, proto, gt)
        # and completing it gives the real checksum (scapy agrees)
        from helpers.engine import checksums_ok
        if not gt:
            assert checksums_ok(complete(ip, start, off))
        if gt:
            assert gt == vnet.GSO_UDP_L4 and proto == 17 and gsize == 1000
            assert len(ip) - start == 8 + 5120
        seen.add((v, proto, gt))
    want = {(4, 17, 0), (6, 17, 0), (4, 6, 0), (6, 6, 0)}
    if "uso4" in res["names"]:
        want |= {(4, 17, vnet.GSO_UDP_L4), (6, 17, vnet.GSO_UDP_L4)}
    assert want <= seen, seen


def test_offload_mask_reset_on_reopen_of_a_persistent_device(netns):
    from helpers.engine import checksums_ok
    res = _probe(netns, "persist")
    assert len(res["pkts"]) >= 4
    for h in res["pkts"]:
        raw = bytes.fromhex(h)
        assert len(raw) < 1500                      # no super-packets
        assert checksums_ok(raw), raw.hex()         # complete checksums
