"""The scheduler interface, shaped like the kernel's struct ip_vs_scheduler,
and the name registry (`-s NAME`).

Life cycle, as in the kernel:
  * `cls(svc, clock)`            init_service: bound to one Service
  * `add_dest(dest)`, `del_dest(dest)`, `upd_dest(dest)`
                                 called *after* svc.dests has changed
  * `schedule(caddr, cport)`     -> Dest or None; never raises, allocates
                                 nothing but its answer.  caddr/cport are the
                                 client's address and source port (for an ICMP
                                 error being scheduled: the embedded packet's
                                 destination, i.e. still the client).
  * `done_service()`             unbound (service deleted / scheduler changed)

A scheduler that rebuilds tables builds the new table aside and publishes it
with one assignment, so a packet never sees a half-built table.

Schedulers register themselves with @register at import; concrete modules
are imported by userlb.sched (package __init__), never by the engine.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from ..clock import Clock
    from ..model import Addr, Dest, Service

_S = TypeVar("_S", bound="type[Scheduler]")

_REGISTRY: dict[str, type[Scheduler]] = {}

#: the table schedulers a running batch changed (one_build_per_batch)
_STALE: contextvars.ContextVar[dict[int, TableScheduler] | None] = \
    contextvars.ContextVar("userlb_stale_tables", default=None)


@contextlib.contextmanager
def one_build_per_batch() -> Iterator[None]:
    """Inside: a table scheduler (mh, sh) whose destinations change only
    notes that its table is stale; the table is built once when the block
    ends, from the destination list as it is then (a `-R` of N destinations
    builds an mh table of 4,093 (up to 131,071) slots once, not N times).  The table depends
    only on that list, so the result is the one line-by-line application
    gives; the one difference (docs/ipvs.md 1.10): a list longer than an mh
    table at the end keeps the table from before the batch."""
    if _STALE.get() is not None:        # nested: the outer block builds
        yield
        return
    stale: dict[int, TableScheduler] = {}
    token = _STALE.set(stale)
    try:
        yield
    finally:
        _STALE.reset(token)
        for s in stale.values():
            if s.svc.sched is s:        # not replaced or deleted meanwhile
                s.update()


def register(cls: _S) -> _S:
    """Class decorator: make `cls` available as `-s cls.name`."""
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Scheduler] | None:
    """The scheduler class for `name`, or None."""
    import userlb.sched  # noqa: F401  (imports every concrete scheduler)
    return _REGISTRY.get(name)


def names() -> list[str]:
    import userlb.sched  # noqa: F401
    return sorted(_REGISTRY)


def create(name: str, svc: Service, clock: Clock | None = None) -> Scheduler:
    """Instantiate scheduler `name` for `svc` (KeyError if unknown)."""
    cls = get(name)
    if cls is None:
        raise KeyError(name)
    return cls(svc, clock)


def dest_unavailable(d: Dest) -> bool:
    """IPVS's availability test: current weight <= 0 or overloaded."""
    return bool(d.weight <= 0 or d.overloaded)


class Scheduler:
    """Base class of every scheduler: the interface callers code against.
    Every capability is declared here with its default, so callers never
    probe with getattr:

    * ``stateless``: True when the scheduler implements ``schedule_sl``
      (mhs: forward without a connection entry while its tables agree).
    * ``schedule_sl(caddr, cport, is_tcp, syn, now)`` -> (Dest or None,
      need_state): only for stateless schedulers.
    * ``sweep(now)``: the engine's periodic call for stateless schedulers
      (mhs merges the slots whose timer expired); returns how many slots
      it merged.  Default: nothing to do.
    * ``referenced_dests()``: the destinations its tables still point to
      (a removed mhs backend stays referenced by the old table); default:
      the service's destinations.
    * ``table_endpoints()``: per lookup slot the Dest or None, for the
      table schedulers (mh, mh-backport, sh, mhs); None for the others.
    * ``unstable_slots(now)``: the number of slots whose old and new
      tables disagree (mhs); None for the others.
    * ``upd_service()``: the service's flags or options changed.

    The default add/del/upd_dest call ``update()``: a scheduler whose state
    depends only on the destination list overrides that one method.
    """

    name: ClassVar[str] = ""
    stateless: ClassVar[bool] = False

    def __init__(self, svc: Service, clock: Clock | None = None) -> None:
        self.svc = svc
        self.clock = clock

    def done_service(self) -> None:
        pass

    def add_dest(self, dest: Dest) -> None:
        self._changed()

    def del_dest(self, dest: Dest) -> None:
        self._changed()

    def upd_dest(self, dest: Dest) -> None:
        self._changed()

    def _changed(self) -> None:
        """The destination list changed (a table scheduler may wait for the
        end of a batch: one_build_per_batch)."""
        self.update()

    def upd_service(self) -> None:
        """The service's flags changed; schedulers read svc.flags at lookup
        time, so by default there is nothing to do."""

    def update(self) -> None:
        """Rebuild whatever depends on the destination list."""

    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        raise NotImplementedError

    def schedule_sl(self, caddr: Addr, cport: int, is_tcp: bool, syn: bool,
                    now: float) -> tuple[Dest | None, bool]:
        raise NotImplementedError(f"{self.name} is not a stateless scheduler")

    def sweep(self, now: float) -> int:
        return 0

    def referenced_dests(self) -> list[Dest]:
        dests: list[Dest] = self.svc.dests
        return dests

    def table_endpoints(self) -> list[Dest | None] | None:
        return None

    def unstable_slots(self, now: float | None = None) -> int | None:
        return None


class TableScheduler(Scheduler):
    """A scheduler that answers from a lookup table (mh, mh-backport, sh).

    `_state` is the published state, one tuple whose first item is the table
    (per slot the Dest or None); `update()` builds a new one aside and
    assigns it.  `_empty_state()` is the state before the first build.
    """

    _state: tuple[Any, ...]

    def __init__(self, svc: Service, clock: Clock | None = None) -> None:
        super().__init__(svc, clock)
        self._state = self._empty_state()
        self.update()

    def _changed(self) -> None:
        stale = _STALE.get()
        if stale is None:
            self.update()
        else:
            stale[id(self)] = self

    def _empty_state(self) -> tuple[Any, ...]:
        raise NotImplementedError

    @property
    def table_size(self) -> int:
        return len(self._state[0])

    def table_endpoints(self) -> list[Dest | None]:
        """Per slot the owning Dest or None (a copy of the published table)."""
        return list(self._state[0])


class CursorScheduler(Scheduler):
    """A scheduler that keeps the kernel's cursor on the destination list
    (rr, wrr): `_cur` is the Dest it is on (None = the list head) and
    `_pos` its index in svc.dests (-1 = head).  A lookup checks
    ``dests[_pos] is _cur`` and calls `_resync()` when the list changed
    under it."""

    def __init__(self, svc: Service, clock: Clock | None = None) -> None:
        super().__init__(svc, clock)
        self._cur: Dest | None = None
        self._pos = -1

    def _resync(self) -> int:
        """Find the cursor's Dest in svc.dests again (back to the head if it
        is gone); returns its index."""
        cur = self._cur
        if cur is not None:
            for i, d in enumerate(self.svc.dests):
                if d is cur:
                    self._pos = i
                    return i
        self._cur, self._pos = None, -1
        return -1
