"""Established first (userlb/dataplane/tun.py): after a full burst the TUN
driver hands at most a share of a batch's SYNs to the engine and drops the
rest before any engine work; the packets of existing flows all go through.
A fake device (SOCK_SEQPACKET pair) and the real engine."""
import socket

from helpers.engine import CIP, RIP1, VIP, engine_with, make_service, tcp4
from userlb.dataplane.tun import TunDriver
from userlb.model import IPPROTO_TCP


def test_syns_are_shed_after_a_full_burst_established_flows_pass():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setblocking(False)
    try:
        eng = engine_with(make_service(IPPROTO_TCP, VIP, 80, [(RIP1, 80, 1)]))
        t = [0.0]
        drv = TunDriver(a.fileno(), eng, batch=40, clock=lambda: t[0])
        # 5 established flows
        for i in range(5):
            b.send(bytes(tcp4(CIP, 5000 + i, VIP, 80, "S")))
            b.send(bytes(tcp4(CIP, 5000 + i, VIP, 80, "A")))
        drv.on_readable()
        assert len(eng) == 5 and not drv._full

        rnd = [0]

        def burst():
            rnd[0] += 1
            for i in range(35):
                b.send(bytes(tcp4(f"198.51.{rnd[0]}.{i}", 1000 + i, VIP, 80, "S")))
            for i in range(5):
                b.send(bytes(tcp4(CIP, 5000 + i, VIP, 80, "PA", payload=b"x" * 32)))
        burst()
        drv.on_readable()               # a full batch: nothing shed yet
        assert drv._full and drv.shed_syn == 0 and len(eng) == 40
        tx0 = drv.tx
        burst()
        b.send(b"")                     # queue not empty after this batch
        drv.on_readable()
        assert drv.shed_syn == 35 - 10  # batch 40 * 0.25 = 10 SYNs processed
        assert len(eng) == 50
        assert drv.tx - tx0 == 15       # 10 SYNs + every established packet
        assert drv.counters()["shed_syn"] == 25
        drv.syn_share = 0               # off
        drv._full = True
        burst()
        drv.on_readable()
        assert drv.shed_syn == 25
    finally:
        a.close()
        b.close()
