"""The TUN driver (userlb/dataplane/tun.py).

TunDriver is tested against a fake device -- one end of an AF_UNIX
SOCK_SEQPACKET socketpair keeps packet boundaries like a TUN fd -- and a
fake engine.  TunDevice is tested on a real TUN device inside a fresh
network namespace (root only); the routes into it in test_steering.py."""
import asyncio
import json
import socket

import pytest
import uvloop

from helpers.netns import needs_root, ns_python
from userlb.dataplane.tun import SHORT_VIEWS, V_DROP, V_FORWARD, V_FORWARD_OUT, V_REPLY, TunDriver


class FakeEngine:
    """Verdict by first byte: b'F' forward (in place, upper-cased, 1 byte
    shorter), b'R' reply, b'O' forward_out, anything else drop."""

    def __init__(self):
        self.calls = []
        self.expired = []
        self.out = b""
        self.out_len = 0

    def process(self, buf, n, now):
        pkt = bytes(buf[:n])
        self.calls.append((pkt, now))
        kind = pkt[:1]
        if kind == b"F":
            buf[0:n] = pkt.upper()
            self.out_len = n - 1
            return V_FORWARD
        if kind == b"R":
            self.out = b"reply:" + pkt
            return V_REPLY
        if kind == b"O":
            self.out = b"out:" + pkt
            return V_FORWARD_OUT
        return V_DROP

    def expire(self, now):
        self.expired.append(now)


class Clock:
    def __init__(self):
        self.t = 100.0
        self.calls = 0

    def __call__(self):
        self.calls += 1
        self.t += 1.0
        return self.t


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setblocking(False)
    b.settimeout(1.0)
    yield a, b
    a.close()
    b.close()


def drain(sock):
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(65536))
    except BlockingIOError:
        pass
    sock.settimeout(1.0)
    return out


def test_verdicts_are_written_as_the_engine_says(pair):
    dev, peer = pair
    eng = FakeEngine()
    drv = TunDriver(dev.fileno(), eng, clock=Clock())
    for p in (b"Fabc", b"Rxyz", b"Oqq", b"Dnope"):
        peer.send(p)
    drv.on_readable()
    assert drain(peer) == [b"FAB", b"reply:Rxyz", b"out:Oqq"]
    assert drv.counters() == {"rx": 4, "tx": 3, "drops": 1, "write_errors": 0, "batches": 1}


def test_batch_limit_and_one_clock_read_per_batch(pair):
    dev, peer = pair
    eng = FakeEngine()
    clock = Clock()
    drv = TunDriver(dev.fileno(), eng, batch=4, clock=clock)
    for i in range(10):
        peer.send(b"F%dx" % i)
    drv.on_readable()
    assert len(eng.calls) == 4 and clock.calls == 1
    assert {now for _p, now in eng.calls} == {101.0}
    drv.on_readable()
    drv.on_readable()
    assert len(eng.calls) == 10 and clock.calls == 3
    # in order, nothing lost
    assert [p for p, _ in eng.calls] == [b"F%dx" % i for i in range(10)]
    assert drain(peer) == [b"F%d" % i for i in range(10)]     # "F0X"[:2]
    drv.on_readable()                     # nothing to read: no batch counted
    assert drv.batches == 3


def test_forwarded_lengths_short_and_long_each_written_exactly(pair):
    """Short packets go out through a view kept per length (SHORT_VIEWS),
    longer ones through a fresh slice: every packet has its own length and
    bytes, whatever came before it."""
    dev, peer = pair
    drv = TunDriver(dev.fileno(), FakeEngine(), batch=64, clock=Clock())
    lengths = [5, 41, 41, SHORT_VIEWS + 900, 5, SHORT_VIEWS - 1, SHORT_VIEWS,
               SHORT_VIEWS + 1, 41, SHORT_VIEWS + 900]
    sent = [b"F" + bytes(97 + (i + k) % 26 for k in range(n - 1)) for i, n in enumerate(lengths)]
    for p in sent:
        peer.send(p)
    drv.on_readable()
    assert drain(peer) == [p.upper()[:-1] for p in sent]
    assert drv.tx == len(sent)


def test_packets_are_read_into_one_preallocated_buffer(pair):
    dev, peer = pair
    seen = []

    class E(FakeEngine):
        def process(self, buf, n, now):
            seen.append(id(buf))
            return V_DROP

    drv = TunDriver(dev.fileno(), E(), clock=Clock())
    for _ in range(5):
        peer.send(b"x" * 100)
    drv.on_readable()
    assert len(set(seen)) == 1 and seen[0] == id(drv.buf)


def test_write_errors_are_counted_not_raised(pair):
    dev, peer = pair
    eng = FakeEngine()
    drv = TunDriver(dev.fileno(), eng, clock=Clock())
    peer.send(b"R" + b"x" * 10)
    peer.shutdown(socket.SHUT_RD)        # the peer no longer accepts what we write
    drv.on_readable()
    assert drv.rx == 1
    assert drv.write_errors + drv.tx == 1


def test_event_loop_wakes_the_driver_and_runs_the_expiry_timer(pair):
    dev, peer = pair
    eng = FakeEngine()
    drv = TunDriver(dev.fileno(), eng, expire_interval=0.01)

    async def main():
        loop = asyncio.get_running_loop()
        drv.attach(loop)
        peer.send(b"Fhello")
        await asyncio.sleep(0.1)
        drv.detach()
        await asyncio.sleep(0.03)

    uvloop.run(main())
    assert drain(peer) == [b"FHELL"]
    assert len(eng.expired) >= 3
    n = len(eng.expired)
    assert eng.expired == sorted(eng.expired)
    assert drv.loop is None and len(eng.expired) == n


# ------------------------------------------------------------ real device

DEVICE_CODE = r"""
import json, os, fcntl, struct, socket
from userlb.dataplane.tun import TunDevice, TunBusy
d = TunDevice("ulbt0")
res = {"name": d.name, "blocking": os.get_blocking(d.fd)}
res["up"] = open("/sys/class/net/ulbt0/flags").read().strip()
try:
    TunDevice("ulbt0")
    res["second"] = "opened"
except TunBusy as e:
    res["second"] = str(e)
d.close()
res["gone"] = not os.path.exists("/sys/class/net/ulbt0")
print(json.dumps(res))
"""


@needs_root
def test_tun_device_open_up_nonblocking_and_busy(netns):
    res = json.loads(ns_python(netns, DEVICE_CODE).stdout)
    assert res["name"] == "ulbt0"
    assert res["blocking"] is False
    assert int(res["up"], 16) & 0x1                   # IFF_UP
    assert "busy" in res["second"]
    assert res["gone"]                                 # not persistent: gone on close
