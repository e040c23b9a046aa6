#!/usr/bin/env python3
"""Scheduler benchmarks (medians of 5 runs), JSON lines via bench.common.emit.

* mh.build.m4093.n100, mh.build.m65521.n1000 (ms): a full table rebuild
  (update() after a destination change; per-destination (offset, skip)
  cached, as on every rebuild after the first).  The `.cold` variants
  include computing every destination's permutation (first bind).  The
  race's cache (maglev.populate keeps its last 16 results) is emptied
  before each timed rebuild; mh.build.m65521.n1000.repeat is a rebuild of
  a table built just before (a flapping destination's way back).
* mh.lookup (ns): schedule() of a new IPv4 client (hash + index), no flags;
  mh.lookup.port, mh.lookup.v6, mh-backport.lookup likewise.
* sh.lookup (ns), and wlc.schedule.n10 / rr.schedule.n10 for scale.
"""
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import emit  # noqa: E402
from userlb.model import IPPROTO_TCP, SVC_F_SCHED2, Dest, Service  # noqa: E402
from userlb.sched import base, maglev  # noqa: E402

RUNS = 5


def service(name, n, m=None, v6=False, seed=1):
    rnd = random.Random(seed)
    opts = {"mh_table_size": m} if m else {}
    vip = bytes(15) + b"\x01" if v6 else 0x0A000064
    svc = Service(IPPROTO_TCP, vip, 80, name, options=opts)
    for _ in range(n):
        a = rnd.getrandbits(128).to_bytes(16, "big") if v6 else rnd.getrandbits(32)
        d = Dest(a, rnd.randrange(1, 65536), weight=rnd.choice((1, 1, 2, 3, 5)))
        d.svc = svc
        svc.dests.insert(0, d)
    svc.sched = base.create(name, svc)
    return svc


def build_ms(m, n, cold, repeat=False):
    svc = service("mh", n, m)
    sched = svc.sched
    results = []
    for _ in range(RUNS):
        if cold:
            sched._perms.clear()
        if not repeat:
            maglev._race_cached.cache_clear()
        t0 = time.perf_counter_ns()
        sched.update()
        results.append((time.perf_counter_ns() - t0) / 1e6)
    return statistics.median(results)


def lookup_ns(svc, v6=False, n=200_000):
    rnd = random.Random(7)
    if v6:
        clients = [rnd.getrandbits(128).to_bytes(16, "big") for _ in range(1000)]
    else:
        clients = [rnd.getrandbits(32) for _ in range(1000)]
    ports = [rnd.getrandbits(16) for _ in range(1000)]
    pairs = list(zip(clients, ports, strict=True)) * (n // 1000)
    sched = svc.sched.schedule
    # loop overhead alone, subtracted so the figure is the call itself
    results = []
    for _ in range(RUNS):
        t0 = time.perf_counter_ns()
        for _a, _p in pairs:
            pass
        t1 = time.perf_counter_ns()
        for a, p in pairs:
            sched(a, p)
        t2 = time.perf_counter_ns()
        results.append(((t2 - t1) - (t1 - t0)) / len(pairs))
    return statistics.median(results)


def main():
    emit("mh.build.m4093.n100", round(build_ms(4093, 100, False), 3), "ms")
    emit("mh.build.m4093.n100.cold", round(build_ms(4093, 100, True), 3), "ms")
    emit("mh.build.m65521.n1000", round(build_ms(65521, 1000, False), 3), "ms")
    emit("mh.build.m65521.n1000.cold", round(build_ms(65521, 1000, True), 3), "ms")
    emit("mh.build.m65521.n1000.repeat", round(build_ms(65521, 1000, False, True), 3), "ms")

    svc = service("mh", 100)
    emit("mh.lookup", round(lookup_ns(svc), 1), "ns")
    svc.flags = SVC_F_SCHED2
    emit("mh.lookup.port", round(lookup_ns(svc), 1), "ns")
    emit("mh.lookup.v6", round(lookup_ns(service("mh", 100, v6=True), v6=True), 1), "ns")
    emit("mh-backport.lookup", round(lookup_ns(service("mh-backport", 100)), 1), "ns")

    emit("sh.lookup", round(lookup_ns(service("sh", 100)), 1), "ns")
    svc = service("sh", 100)
    svc.flags = SVC_F_SCHED2
    emit("sh.lookup.port", round(lookup_ns(svc), 1), "ns")

    emit("wlc.schedule.n10", round(lookup_ns(service("wlc", 10)), 1), "ns")
    emit("rr.schedule.n10", round(lookup_ns(service("rr", 10)), 1), "ns")


if __name__ == "__main__":
    main()
