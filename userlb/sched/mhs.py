"""mhs — Maglev Hashing Stateless (docs/mhs-spec.md; user docs: docs/mhs.md).

Theory of operation
-------------------
A service keeps two Maglev tables of M slots, `old` and `cand`, plus a timer
per slot.  `cand` is always `build(current backends)`: the `mh` construction
of docs/ipvs.md §1 over the backends with weight > 0, walked in *canonical order*
(numeric address, every IPv4 before every IPv6, then port), with the
*current* weights.  `old` is what the slot forwarded to before the last
changes.  A slot is *stable* when both agree; the forwarding decision for a
stable slot needs no per-flow state at all.  A slot becomes *unstable* when a
backend change makes `cand` differ from `old`; it stays so for T seconds,
then it is merged (`old[i] = cand[i]`), lazily when it is looked up or by
`sweep()`.  While a slot is unstable, SYNs go to the candidate and other TCP
segments to the old backend, and those flows get a connection entry so
that they stick (the decision table of docs/mhs-spec.md rule 10, see `schedule_sl`).

Representation
--------------
* A backend is identified by its `(addr, port)` key (docs/mhs-spec.md rule 12): every
  key gets a small integer id, and the tables hold ids (-1 = empty slot).  A
  backend that is removed and re-added gets its old id back as long as some
  slot of `old` still refers to it, so a flap that returns makes the slots
  equal again at once.  `_dests[id]` is the Dest object to forward to: the
  current one while the backend is configured, else the last one we knew
  (removed backends stay valid targets while `old` refers to them).
* `since[i]` is the time slot i became unstable, `INF` when stable (rather
  than the spec's 0, so that a change at time 0 is not mistaken for
  "stable").  A slot is merged when `now >= since[i] + T`; for a stable slot
  that is never true.
* A change builds new lists aside and publishes them with one assignment of
  `self._st`; lookups only ever write single slots of `old`/`since` (merges).

Interface
---------
* `MHSScheduler(svc, clock, timeouts=None)`: `timeouts` is a callable
  returning the `ipvsadm --set` triple (tcp, tcpfin, udp); T = max(tcp,
  tcpfin) is read at construction and re-read at every change (default:
  model.DEFAULT_TIMEOUTS, the ipvsadm defaults).  `clock.now()` timestamps
  the changes.
  Raises ConfigError for persistence (-p) or a bad `mh_table_size`.
* `add_dest / del_dest / upd_dest(dest)`: after svc.dests changed.
* `schedule_sl(caddr, cport, is_tcp, syn, now) -> (dest | None, need_state)`:
  the engine's call for a TCP/UDP packet without a live entry.
* `sweep(now)`: the engine's periodic sweep (cheap when nothing is due).
* Tools: `schedule(caddr, cport)` (what a SYN gets), `slot_of()`,
  `table_size`, `table_endpoints()` (candidate table), `old_endpoints(now)`,
  `unstable_slots(now)`, `unstable(now)`.

The engine's side (not done here): live connection entries are matched
before the scheduler is asked (rule 8), entries follow the TCP state machine
(rule 11), and `svc.forwarded` is set when the service forwards its first
packet (rule 5).  A removed backend's Dest (`available` False) may be
returned while `old` refers to it: it is a valid target (rule 12).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from siphash24 import siphash13

from ..clock import MonotonicClock
from ..errors import ConfigError
from ..model import DEFAULT_TIMEOUTS, SVC_F_PERSISTENT, SVC_F_SCHED2
from . import maglev
from .base import Scheduler, register
from .hashing import _U32LE, M32, MH_KEY1, fold
from .options import table_size

if TYPE_CHECKING:
    from ..clock import Clock
    from ..model import Addr, Dest, Service

INF = float("inf")

_pack = _U32LE.pack
_NO_DEST: tuple[Dest | None, bool] = (None, False)

#: a callable returning the `ipvsadm --set` triple (tcp, tcpfin, udp)
Timeouts = Callable[[], tuple[int, int, int]]
#: the published state: (old, cand, since, dests, T)
_State = tuple[list[int], list[int], list[float], list["Dest | None"], float]


def default_timeouts() -> tuple[int, int, int]:
    """The `ipvsadm --set` defaults (model.DEFAULT_TIMEOUTS)."""
    return DEFAULT_TIMEOUTS


def canonical_key(endpoint: tuple[Addr, int]) -> tuple[int, int, bytes, int]:
    """Sort key of an (addr, port) endpoint: every IPv4 (int) before every
    IPv6 (16 bytes), each numerically by address, then by port."""
    addr, port = endpoint
    if type(addr) is int:
        return (0, addr, b"", port)
    return (1, 0, bytes(addr), port)


def canonical_order(endpoints: Iterable[tuple[Addr, int]]) -> list[tuple[Addr, int]]:
    return sorted(endpoints, key=canonical_key)


def check_service(svc: Service) -> int:
    """Rule 1: mhs is stateless; persistence (-p) is refused [choice].
    Returns the table size M (options.table_size: ConfigError if invalid)."""
    if svc.flags & SVC_F_PERSISTENT:
        raise ConfigError("mhs: a stateless scheduler cannot be used with "
                          "persistence (-p); remove -p or choose another scheduler")
    return table_size(svc.options)


@register
class MHSScheduler(Scheduler):
    """Two-table stateless Maglev (docs/mhs-spec.md).

    `timeouts` (attribute or constructor argument): a callable returning the
    `ipvsadm --set` triple (tcp, tcpfin, udp) in seconds (only the first two
    are used); T = max(tcp, tcpfin) is re-read on every backend change.  The
    configuration layer sets it to read its live timeout table.
    """
    name = "mhs"
    stateless = True

    clock: Clock

    def __init__(self, svc: Service, clock: Clock | None = None,
                 timeouts: Timeouts | None = None) -> None:
        super().__init__(svc, clock if clock is not None else MonotonicClock())
        self.m = check_service(svc)
        self.timeouts = timeouts if timeouts is not None else default_timeouts
        self.bits = maglev.tab_bits(self.m)
        # (addr, port) -> (offset, skip): build cache
        self._perms: dict[tuple[Addr, int], tuple[int, int]] = {}
        self._ids: dict[tuple[Addr, int], int] = {}     # (addr, port) -> id
        self._dests: list[Dest | None] = []   # id -> Dest (or None when the id is free)
        self._free: list[int] = []            # free ids
        self.T = self._read_T()
        self._next_merge = INF    # lower bound of every since[i] + T
        empty = [-1] * self.m
        self._st: _State = (empty, list(empty), [INF] * self.m, self._dests, self.T)
        self._change(initial=True)

    # ------------------------------------------------------------ control plane
    # add_dest / del_dest / upd_dest: the base class calls update()

    def update(self) -> None:
        self._change()

    def done_service(self) -> None:
        self._st = ([-1] * self.m, [-1] * self.m, [INF] * self.m, [], self.T)
        self._dests = []
        self._ids.clear()
        self._free.clear()

    def referenced_dests(self) -> list[Dest]:
        """Backends the tables still refer to, removed ones included (rule
        12): their replies must still be translated by a director that has
        no entry for the flow."""
        return [d for d in self._st[3] if d is not None]

    def _read_T(self) -> float:
        t = self.timeouts()
        return max(t[0], t[1])

    def _id_of(self, key: tuple[Addr, int], dest: Dest) -> int:
        i = self._ids.get(key)
        if i is None:
            if self._free:
                i = self._free.pop()
                self._dests[i] = dest
            else:
                i = len(self._dests)
                self._dests.append(dest)
            self._ids[key] = i
        else:
            self._dests[i] = dest   # a re-added backend: forward to its new object
        return i

    def _build_cand(self) -> list[int]:
        """cand = build(current backends): weight > 0, canonical order."""
        live: dict[tuple[Addr, int], Dest] = {}
        for d in self.svc.dests:
            if d.weight > 0:
                live[(d.addr, d.port)] = d
        order = canonical_order(live)
        ids = [self._id_of(k, live[k]) for k in order]
        # keep the Dest objects of configured weight-0 backends current too
        for d in self.svc.dests:
            k = (d.addr, d.port)
            if k not in live and k in self._ids:
                self._dests[self._ids[k]] = d
        perms = []
        for k in order:
            p = self._perms.get(k)
            if p is None:
                p = self._perms[k] = maglev.permutation(k[0], k[1], self.m)
            perms.append(p)
        table = maglev.build(order, [live[k].weight for k in order], self.m,
                             bits=self.bits, perms=perms)
        return [ids[j] if j >= 0 else -1 for j in table]

    def _change(self, initial: bool = False) -> None:
        """A backend was added, deleted or edited (rules 4, 5, 6)."""
        now = self.clock.now()
        T = self.T = self._read_T()
        old, prev_cand, since, _, _ = self._st
        cand = self._build_cand()
        if initial or not self.svc.forwarded:
            # rule 5: nothing forwarded yet -> both tables at once, all stable
            new_old = list(cand)
            new_since = [INF] * self.m
            self._next_merge = INF
        else:
            new_old = list(old)
            new_since = list(since)
            nxt = INF
            for i in range(self.m):
                s = new_since[i]
                if s != INF and now >= s + T:          # 6.1 merge expired first
                    new_old[i] = prev_cand[i]
                    new_since[i] = s = INF
                if new_old[i] == cand[i]:              # 6.3
                    new_since[i] = INF
                elif s == INF:
                    new_since[i] = now
                    if now < nxt:
                        nxt = now
                elif s < nxt:
                    nxt = s                             # no timer reset
            self._next_merge = nxt + T
        self._gc(new_old, cand)
        self._st = (new_old, cand, new_since, self._dests, T)

    def _gc(self, old: list[int], cand: list[int]) -> None:
        """Forget backends that are neither configured nor referenced by a
        table slot (their ids become free)."""
        used: set[int | None] = set(old)
        used.update(cand)
        for d in self.svc.dests:
            used.add(self._ids.get((d.addr, d.port)))
        for k, i in list(self._ids.items()):
            if i not in used:
                del self._ids[k]
                self._dests[i] = None
                self._free.append(i)
                self._perms.pop(k, None)

    def sweep(self, now: float) -> int:
        """Merge every slot whose timer has expired (rule 7's periodic sweep).
        Returns the number of slots merged.  Cheap when nothing is due."""
        if now < self._next_merge:
            return 0
        old, cand, since, _, T = self._st
        n = 0
        nxt = INF
        for i in range(self.m):
            s = since[i]
            if s != INF:
                if now >= s + T:
                    old[i] = cand[i]
                    since[i] = INF
                    n += 1
                elif s < nxt:
                    nxt = s
        self._next_merge = nxt + T
        if n:
            self._gc(old, cand)
        return n

    # ------------------------------------------------------------ packet path

    def schedule_sl(self, caddr: Addr, cport: int, is_tcp: bool, syn: bool,
                    now: float) -> tuple[Dest | None, bool]:
        """Rule 7 + rule 10 for a packet without a live entry.

        caddr, cport: client address and source port (cport 0 for protocols
        without ports; it is only used with the port flag).  is_tcp: TCP
        (False: UDP or any other protocol).  syn: the TCP SYN bit is set.
        now: the packet's time (same clock as the scheduler's).

        Returns (dest, need_state): dest None = no destination (ICMP port
        unreachable, drop); need_state True = the engine creates a
        connection entry for this flow (rule 11).
        """
        old, cand, since, dests, T = self._st
        v = caddr if type(caddr) is int else fold(caddr)
        if self.svc.flags & SVC_F_SCHED2:
            v += cport
        i = (siphash13(_pack(v & M32), key=MH_KEY1).intdigest() & M32) % len(old)
        o = old[i]
        c = cand[i]
        if o == c:                                     # stable
            if o < 0:
                return _NO_DEST
            return (dests[o], False)
        if now >= since[i] + T:                        # rule 7: lazy merge
            old[i] = c
            since[i] = INF
            if c < 0:
                return _NO_DEST
            return (dests[c], False)
        if o < 0:                                      # o empty, c set
            return (dests[c], True)
        if c < 0:                                      # o set, c empty
            if is_tcp and syn:
                return _NO_DEST                        # [choice]
            return (dests[o], True)
        if is_tcp:                                     # both set, unstable
            return (dests[c] if syn else dests[o], True)
        return (dests[c], False)                       # UDP / other

    # ------------------------------------------------------------ tools

    def slot_of(self, caddr: Addr, cport: int = 0, port: bool | None = None) -> int:
        """The lookup slot of a key (docs/ipvs.md §1.8): cport counts only
        with the port flag (flag-2 / mh-port); `port` True/False overrides
        the service's flag (same signature as mh's)."""
        if port is None:
            port = bool(self.svc.flags & SVC_F_SCHED2)
        v = caddr if type(caddr) is int else fold(caddr)
        if port:
            v += cport
        return (siphash13(_pack(v & M32), key=MH_KEY1).intdigest() & M32) % self.m

    def slot(self, caddr: Addr, cport: int) -> int:
        """The lookup slot with the service's port flag."""
        return self.slot_of(caddr, cport)

    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        """The backend a TCP SYN of this key would get right now (the
        candidate table), or None.  For tools; the engine calls schedule_sl."""
        c = self._st[1][self.slot(caddr, cport)]
        return self._dests[c] if c >= 0 else None

    @property
    def table_size(self) -> int:
        return self.m

    def table_endpoints(self) -> list[Dest | None]:
        """Per slot, the Dest (or None) that decides a SYN right now: the
        candidate table (merges never change it).  For `userlb simulate
        --table`; same shape as mh's table_endpoints()."""
        dests = self._dests
        return [dests[c] if c >= 0 else None for c in self._st[1]]

    def _slots_at(self, now: float | None) -> Iterator[tuple[int, int, int, float, float]]:
        """(slot, old id, cand id, since, merge_at) for every slot, as the
        tables stand at `now` (default: the clock's now).  Reads only."""
        if now is None:
            now = self.clock.now()
        old, cand, since, _, T = self._st
        for i in range(self.m):
            s = since[i]
            yield i, old[i], cand[i], s, s + T

    def unstable_slots(self, now: float | None = None) -> int:
        """How many slots are unstable at `now` (default: the clock's now);
        slots whose timer has expired count as merged.  Does not modify."""
        if now is None:
            now = self.clock.now()
        T = self._st[4]
        return sum(1 for s in self._st[2] if s != INF and now < s + T)

    def unstable(self, now: float | None = None
                 ) -> list[tuple[int, Dest | None, Dest | None, float, float]]:
        """[(slot, old Dest|None, cand Dest|None, since, merge_at), ...] for
        every slot unstable at `now` (default: the clock's now)."""
        if now is None:
            now = self.clock.now()
        dests = self._st[3]
        return [(i, dests[o] if o >= 0 else None, dests[c] if c >= 0 else None, s, at)
                for i, o, c, s, at in self._slots_at(now) if s != INF and now < at]

    # ------------------------------------------------------------ tools
    def restore_unstable(self, rows: Iterable[tuple[int, tuple[Addr, int] | None, float]],
                         now: float, dest_of: Callable[[tuple[Addr, int]], Dest]) -> None:
        """Make the old table and timers those of another director (`userlb
        simulate --control`): each row is (slot, the old table's backend key
        or None, seconds until the slot merges); `dest_of(key)` gives the
        Dest to forward to (a removed backend's stand-in included).  Slots
        not named stay as they are (stable).  The service counts as having
        forwarded (rule 5)."""
        old, cand, since, _, T = self._st
        new_old, new_since = list(old), list(since)
        nxt = INF
        for slot, key, left in rows:
            if not 0 <= slot < self.m or not left > 0:
                raise ConfigError(f"mhs state: bad slot {slot} ({left} s left) for a table "
                                  f"of {self.m}")
            new_old[slot] = -1 if key is None else self._id_of(key, dest_of(key))
            new_since[slot] = s = now - T + left
            nxt = min(nxt, s)
        self.svc.forwarded = True
        self._next_merge = nxt + T
        self._st = (new_old, cand, new_since, self._dests, T)

    def old_endpoints(self, now: float | None = None) -> list[Dest | None]:
        """Per slot, the Dest (or None) of the old table as it is after
        merging every slot expired at `now` (default: the clock's now)."""
        if now is None:
            now = self.clock.now()
        dests = self._st[3]
        out: list[Dest | None] = []
        for _, o, c, s, at in self._slots_at(now):
            x = c if (s != INF and now >= at) else o
            out.append(dests[x] if x >= 0 else None)
        return out
