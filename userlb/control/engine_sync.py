"""The one adapter that keeps a data-plane engine in step with a Config.

`EngineSync(config, engine)` subscribes to the Config's change events
(config.py): dispatch-table changes mark it dirty and are pushed to the
engine by `flush()` in one `engine.set_services(...)` (once per request, not
once per command of a big -R batch); `--set` timeouts and `-Z` are pushed at
once.  Who drives it:

* `userlb run` (cli/run.py): `push()` at start, `flush()` after a SIGHUP
  reload; the control server (server.py) wraps each request in
  `begin()` / `end()`, and changes made outside a request are flushed by a
  call_soon on the loop (`loop` set by the server when it starts).
* `userlb simulate` timed mode: `push()`, then `flush()` after each rule.

`EngineControl` is what the control plane needs of the engine
(dataplane/engine.py's Engine provides it; a test fake must provide all of
it).  `estimators`: rate estimators the caller steps itself (the control
server's own, when it keeps some); the engine's own (`engine.rates`) are
tracked by the engine.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from ..model import Addr, Dest, Service, Stats
from .config import Config

#: one row of engine.entries(): protocol, client, virtual and destination
#: endpoints, state name, expiry time
ConnRow = tuple[int, Addr, int, Addr, int, Addr, int, str, float]


class Estimators(Protocol):
    """Rate estimators over Stats objects (dataplane/stats.py RateEstimators)."""

    def retain(self, stats_objects: Iterable[Stats]) -> None: ...

    def reset(self, stats: Stats | None = None) -> None: ...

    def rates(self, stats: Stats) -> tuple[int, int, int, int, int]: ...

    def tick(self, now: float) -> object: ...


class _Xlate(Protocol):
    @property
    def svc(self) -> Service: ...


class EntryView(Protocol):
    """A connection entry as the listings see it: its translation's service."""
    @property
    def xl(self) -> _Xlate: ...


class EngineControl(Protocol):
    """The engine's control interface (dataplane/engine.py Engine)."""
    stats: Stats
    rates: Estimators
    sloppy_tcp: bool
    sloppy_sctp: bool
    max_entries: int
    drops: Mapping[str, int]

    def set_services(self, services: Iterable[Service]) -> None: ...

    def set_timeouts(self, tcp: int = 0, tcpfin: int = 0, udp: int = 0) -> None: ...

    def zero(self, svc: Service | None = None) -> None: ...

    def entries(self, now: float | None = None) -> Sequence[ConnRow]: ...

    def entry_objects(self, now: float | None = None) -> Sequence[EntryView]: ...

    def __len__(self) -> int: ...


class EngineSync:
    """See the module docstring."""

    def __init__(self, config: Config, engine: EngineControl,
                 estimators: Estimators | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.config, self.engine = config, engine
        self.estimators, self.loop = estimators, loop
        self.dirty = self._in_request = False
        self._soon: asyncio.Handle | None = None
        config.subscribe(self.on_event)
        self.track()

    def close(self) -> None:
        try:
            self.config.unsubscribe(self.on_event)
        except ValueError:
            pass
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None

    def push(self) -> None:
        """Everything at once: services and timeouts (at start)."""
        self.push_timeouts()
        self.dirty = True
        self.flush()

    def push_timeouts(self) -> None:
        t = self.config.timeouts
        self.engine.set_timeouts(tcp=t.tcp, tcpfin=t.tcpfin, udp=t.udp)

    def on_event(self, event: str, svc: Service | None, dest: Dest | None) -> None:
        if event == "timeouts":
            self.push_timeouts()
            return
        if event == "zero":
            self.zero(svc)
            return
        self.dirty = True
        if not self._in_request and self.loop is not None and self._soon is None:
            self._soon = self.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._soon = None
        self.flush()

    def flush(self) -> None:
        """Swap the engine's dispatch tables in (one step), track new stats."""
        if not self.dirty:
            return
        self.dirty = False
        self.engine.set_services(list(self.config.services.values()))
        self.track()

    def track(self) -> None:
        """The caller's own estimators follow the current Stats objects."""
        if self.estimators is None:
            return
        objs = [self.engine.stats]
        for svc in self.config.services.values():
            objs.append(svc.stats)
            objs.extend(d.stats for d in svc.dests)
        self.estimators.retain(objs)

    def zero(self, svc: Service | None) -> None:
        """-Z: config.zero already reset the service/destination counters;
        here the engine's global totals and estimators, and the caller's own
        estimators."""
        self.engine.zero(svc)
        est = self.estimators
        if est is None:
            return
        if svc is None:
            est.reset()
            return
        est.reset(svc.stats)
        for d in svc.dests:
            est.reset(d.stats)

    # used by the control server around a request
    def begin(self) -> None:
        self._in_request = True

    def end(self) -> None:
        self._in_request = False
        self.flush()
