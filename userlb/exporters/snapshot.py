"""A point-in-time copy of what the exporters show (taken on the event loop).

`take(cfg, engine, driver)` walks the configuration once and copies plain
numbers into tuples; the procfs writer and the Prometheus collector only read
the copy, so a scrape in another thread never iterates live dicts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..model import (
    FWD_DROUTE,
    FWD_LOCALNODE,
    FWD_MASQ,
    FWD_TUNNEL,
    SVC_F_ONEPACKET,
    SVC_F_PERSISTENT,
)

#: the kernel's ip_vs_fwd_name()
FWD_PROC = {FWD_MASQ: "Masq", FWD_LOCALNODE: "Local", FWD_TUNNEL: "Tunnel", FWD_DROUTE: "Route"}
PROTO_PROC = {6: "TCP", 17: "UDP", 132: "SCTP"}


@dataclass(frozen=True)
class DestSnap:
    addr: int | bytes
    port: int
    fwd: str
    weight: int
    active: int
    inactive: int
    persist: int
    stats: tuple[int, int, int, int, int]


@dataclass(frozen=True)
class ServiceSnap:
    proto: str
    addr: int | bytes
    port: int
    sched: str
    onepacket: bool
    persistent: bool
    timeout: int
    netmask: int
    stats: tuple[int, int, int, int, int]
    dests: tuple[DestSnap, ...]
    unstable_slots: int | None = None


@dataclass(frozen=True)
class Snapshot:
    taken: float
    services: tuple[ServiceSnap, ...]
    totals: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    rates: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)
    entries: int = 0
    max_entries: int = 0
    drops: dict[str, int] = field(default_factory=dict)
    replies: dict[str, int] = field(default_factory=dict)
    driver: dict[str, int] = field(default_factory=dict)
    #: engine.entries() rows with expires as seconds left (only when asked)
    conns: tuple[tuple, ...] = ()


def _unstable(svc) -> int | None:
    sched = getattr(svc, "sched", None)
    fn = getattr(sched, "unstable_slots", None)
    if fn is None:
        return None
    try:
        n = fn()
    except Exception:   # noqa: BLE001 - a scheduler without a clock: unknown
        return None
    if n is None:
        return None
    return n if isinstance(n, int) else len(n)


def _dests(svc):
    """Destinations in the kernel's list order (newest first)."""
    from ..control.listing import ordered_dests
    return ordered_dests(svc, nosort=True)


def take(cfg, engine=None, driver=None, ordered=None, conns=False) -> Snapshot:
    """Copy the counters of `cfg` (services in `ordered(cfg)` order if given,
    else insertion order), the engine's totals and the driver's counters."""
    svcs = ordered(cfg) if ordered is not None else list(cfg.services.values())
    out = []
    for s in svcs:
        dests = tuple(DestSnap(d.addr, d.port, FWD_PROC.get(d.fwd, "Masq"), d.weight,
                               d.activeconns, d.inactconns, d.persistconns,
                               d.stats.as_tuple())
                      for d in _dests(s))
        out.append(ServiceSnap(PROTO_PROC.get(s.protocol, str(s.protocol)), s.addr, s.port,
                               s.sched_name, bool(s.flags & SVC_F_ONEPACKET),
                               bool(s.flags & SVC_F_PERSISTENT), s.timeout, s.netmask,
                               s.stats.as_tuple(), dests, _unstable(s)))
    kw = {}
    if engine is not None:
        kw["totals"] = engine.stats.as_tuple()
        try:
            kw["rates"] = tuple(engine.rates.rates(engine.stats))
        except Exception:   # noqa: BLE001 - no estimator yet
            pass
        kw["entries"] = len(engine)
        ct = getattr(engine, "ct", None)
        kw["max_entries"] = getattr(ct, "max_entries", 0) or 0
        kw["drops"] = dict(engine.drops)
        kw["replies"] = dict(engine.replies)
        if conns:
            now = time.monotonic()
            kw["conns"] = tuple((p, ca, cp, va, vp, da, dp, st, max(0, int(exp - now)))
                                for (p, ca, cp, va, vp, da, dp, st, exp)
                                in engine.entries(now))
    if driver is not None:
        kw["driver"] = {k: v for k, v in dict(driver.counters()).items()
                        if isinstance(v, int)}
    return Snapshot(time.time(), tuple(out), **kw)
