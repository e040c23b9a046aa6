#!/usr/bin/env python3
"""mhs scheduler: cost of one forwarding decision (schedule_sl: hash, both
tables, timer check, rule 10) for a packet without a live entry.

  mhs.decision.stable    a TCP ACK of a stable service (3 backends, M = 4093)
  mhs.decision.unstable  a TCP ACK on an unstable slot (after a removal), with
                         the clock inside the grace period (no merge)
  mhs.decision.stable_v6 as .stable, IPv6 service and client
  mhs.sweep.idle         the periodic sweep when no slot is due, ns
  mhs.change             one backend change (add + rebuild + timers), ms

Median of 5 runs.  Target for the decision: <= 2,000 ns.
"""
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench.common import emit, ns_per_call  # noqa: E402
from userlb.clock import ManualClock  # noqa: E402
from userlb.model import IPPROTO_TCP, Dest, Service  # noqa: E402
from userlb.sched.hashing import MH_KEY1, mh_hashkey  # noqa: E402
from userlb.sched.mhs import MHSScheduler  # noqa: E402

N = 200_000
BASE = 0x0A000001


def director(base=BASE, vip=0x0A000064):
    clock = ManualClock(0)
    svc = Service(IPPROTO_TCP, vip, 80, "mhs")
    sched = MHSScheduler(svc, clock)
    for i in range(3):
        d = Dest(base + i if type(base) is int else base[:-1] + bytes([i + 1]), 80)
        svc.dests.insert(0, d)
        sched.add_dest(d)
    return svc, sched, clock


def main():
    svc, sched, clock = director()
    caddr = 0xC0A80164
    f = sched.schedule_sl
    emit("mhs.decision.stable", round(ns_per_call(lambda: f(caddr, 12345, True, False, 10.0), N)),
         "ns", backends=3, table=sched.m)

    v6 = bytes.fromhex("20010db8000000000000000000000000")
    _, s6, _ = director(v6, v6[:-1] + b"\x64")
    c6 = bytes.fromhex("20010db8000100000000000000000042")
    f6 = s6.schedule_sl
    emit("mhs.decision.stable_v6", round(ns_per_call(lambda: f6(c6, 12345, True, False, 10.0), N)),
         "ns", backends=3, table=s6.m)

    svc.forwarded = True
    clock.set(1000)
    d = svc.find_dest(BASE + 1, 80)
    svc.dests.remove(d)
    sched.del_dest(d)
    unstable = {i for i, *_ in sched.unstable(1000)}
    k = caddr
    while mh_hashkey(k, 0, MH_KEY1) % sched.m not in unstable:
        k += 1
    dest, need = f(k, 1, True, False, 1001.0)
    assert dest is d and need
    emit("mhs.decision.unstable", round(ns_per_call(lambda: f(k, 1, True, False, 1001.0), N)),
         "ns", backends=2, table=sched.m)

    sw = sched.sweep
    emit("mhs.sweep.idle", round(ns_per_call(lambda: sw(1001.0), N)), "ns", table=sched.m)

    def change():
        times = []
        for i in range(5):
            x = Dest(BASE + 10 + i, 80)
            clock.set(1100 + i)
            t0 = time.perf_counter()
            svc.dests.insert(0, x)
            sched.add_dest(x)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000
    emit("mhs.change", round(change(), 2), "ms", table=sched.m)


if __name__ == "__main__":
    main()
