"""`mh`: the kernel's Maglev hashing scheduler (docs/ipvs.md §1), flow for flow,
and `mh-backport`, the out-of-tree ip_vs_mh module for kernels before 4.18.

mh (kernel >= 4.18)
-------------------
* Table: maglev.populate() over the destinations in the kernel's list order
  (`svc.dests` as is: newest added first) with turns from `last_weight`
  (gcd reduction, right shift by fls(max/gcd) - TAB_BITS).  Rebuilt from
  scratch on init and after every add/del/upd; built aside and published by
  one assignment (`self._state = (table, M)`).
* Lookup: slot = hsiphash_1u32(port + fold(client), key1) mod M.  The port
  is the client's source port with `mh-port` (SVC_F_SCHED2), else 0; the
  engine passes cport = 0 for protocols without ports.  A destination is
  unavailable when its *current* weight <= 0 or it is overloaded.  Without
  `mh-fallback` (SVC_F_SCHED1) an unavailable destination gives None; with
  it, the kernel's re-hash loop: for off in 0..M-1, slot' = hash(v + (off +
  slot) mod M) mod M, stop at an empty slot, return the first available one.
* More destinations than M: the rebuild is refused and the previous table
  stays in place (the kernel returns -EINVAL, silently ignored).

Per-service option (userlb extension, `svc.options`)
----------------------------------------------------
* `mh_table_size`: the table size M, one of maglev.PRIMES (the primes the
  kernel's CONFIG_IP_VS_MH_TAB_INDEX 8..17 selects); default
  maglev.DEFAULT_SIZE, the kernel's default build (TAB_INDEX 12).  Any other
  value is refused with ConfigError (options.table_size(), shared with
  mh-backport and mhs; `validate_options()`, the constructor and update()).
  TAB_BITS (weight scaling) follows M as in a kernel built with the matching
  CONFIG_IP_VS_MH_TAB_INDEX (maglev.tab_bits(M) = INDEX // 2), so a userlb
  service with size M matches a kernel built for M flow for flow.  An int or
  a decimal string is accepted.

Tools API (`userlb simulate --table` etc.; control plane only, not hot path)
--------------------------------------------------------------------------
* `sched.table_size` -> M of the published table.
* `sched.table_endpoints()` -> list of length M: per slot the Dest object
  owning it, or None for an empty slot (a copy of the published table).
* `sched.slot_of(caddr, cport=0, port=None)` -> the first slot a client
  hashes to (port: True/False overrides the service's mh-port flag).
* `sched.permutations()` -> [(dest, offset, skip, turns)] in list order.

mh-backport (Vincent Bernat's out-of-tree ip_vs_mh, kernels < 4.18)
-------------------------------------------------------------------
Same keys, primes, permutation, turns computation and population race as
`mh`, with three differences (its README lists them):
  1. the client port is always hashed (TCP/UDP/SCTP; cport = 0 otherwise),
     whatever the service flags;
  2. turns come from the *current* weight (there is no last_weight before
     4.18), so a destination at weight 0 is left out of the table and an
     edit to weight 0 reshuffles the table;
  3. no fallback: an empty or unavailable (overloaded) slot gives None, and
     SVC_F_SCHED1/2 are ignored.
It honours `mh_table_size` like `mh` (the module's size is a compile-time
constant too).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from siphash24 import siphash13

from ..model import SVC_F_SCHED1, SVC_F_SCHED2
from . import maglev
from .base import TableScheduler, register
from .hashing import _U32LE, M32, MH_KEY1, MH_KEY2, fold, fold_af
from .options import OPT_TABLE_SIZE, table_size

if TYPE_CHECKING:
    from ..clock import Clock
    from ..model import Addr, Dest, Service

__all__ = ["OPT_TABLE_SIZE", "MHBackportScheduler", "MHScheduler", "table_size",
           "validate_options"]

_pack = _U32LE.pack

#: (table of Dest|None, M): published by one assignment
_State = tuple[list["Dest | None"], int]


def validate_options(options: Mapping[str, object] | None) -> None:
    """Raise ConfigError if the mh options in `options` are invalid."""
    table_size(options)


@register
class MHScheduler(TableScheduler):
    name = "mh"
    _state: _State

    def __init__(self, svc: Service, clock: Clock | None = None) -> None:
        # (addr, port, M) -> (offset, skip): the permutation cache
        self._perms: dict[tuple[Addr, int, int], tuple[int, int]] = {}
        super().__init__(svc, clock)

    # ---------------------------------------------------------------- control plane
    def _empty_state(self) -> _State:
        m = table_size(self.svc.options)
        return ([None] * m, m)

    def _weights(self, dests: list[Dest]) -> list[int]:
        """Weights the table is built from: last_weight (kernel >= 4.18)."""
        return [d.last_weight for d in dests]

    def _perm(self, d: Dest, m: int) -> tuple[int, int]:
        key = (d.addr, d.port, m)
        p = self._perms.get(key)
        if p is None:
            v = (d.port + fold_af(d.addr, self.svc.af)) & M32
            b = _pack(v)
            p = (siphash13(b, key=MH_KEY1).intdigest() & M32) % m, \
                (siphash13(b, key=MH_KEY2).intdigest() & M32) % (m - 1) + 1
            self._perms[key] = p
        return p

    def update(self) -> None:
        m = table_size(self.svc.options)
        dests: list[Dest] = list(self.svc.dests)
        if len(dests) > m:
            return                        # kernel: -EINVAL, old table kept
        nturns = maglev.turns(self._weights(dests), maglev.tab_bits(m))
        table: list[Dest | None]
        if not any(nturns):
            table = [None] * m
        else:
            perms = [self._perm(d, m) for d in dests]
            idx = maglev.populate([p[0] for p in perms], [p[1] for p in perms], nturns, m)
            table = [dests[i] for i in idx]   # every slot filled (some turns >= 1)
        live = {(d.addr, d.port, m) for d in dests}
        if len(self._perms) > len(live):
            self._perms = {k: v for k, v in self._perms.items() if k in live}
        self._state = (table, m)          # publish

    # ---------------------------------------------------------------- tools
    def permutations(self) -> list[tuple[Dest, int, int, int]]:
        m = self._state[1]
        dests: list[Dest] = list(self.svc.dests)
        nturns = maglev.turns(self._weights(dests), maglev.tab_bits(m))
        return [(d,) + self._perm(d, m) + (t,) for d, t in zip(dests, nturns, strict=True)]

    def _hash_value(self, caddr: Addr, cport: int, port: bool | None) -> int:
        if port is None:
            port = self._uses_port()
        a = fold_af(caddr, self.svc.af)
        return (a + (cport if port else 0)) & M32

    def _uses_port(self) -> bool:
        return bool(self.svc.flags & SVC_F_SCHED2)

    def slot_of(self, caddr: Addr, cport: int = 0, port: bool | None = None) -> int:
        v = self._hash_value(caddr, cport, port)
        return (siphash13(_pack(v), key=MH_KEY1).intdigest() & M32) % self._state[1]

    # ---------------------------------------------------------------- hot path
    def schedule(self, caddr: Addr, cport: int, _sip: type[siphash13] = siphash13,
                 _pack: Callable[[int], bytes] = _pack, _k: bytes = MH_KEY1,
                 _m32: int = M32) -> Dest | None:
        table, m = self._state
        flags = self.svc.flags
        if type(caddr) is int:
            v = caddr
        else:                             # IPv6: XOR of the four words
            v = int.from_bytes(caddr, "big")  # type: ignore[arg-type]
            v = (v ^ (v >> 32) ^ (v >> 64) ^ (v >> 96)) & _m32
        if flags & 0x10:                  # SVC_F_SCHED2: mh-port
            v = (v + cport) & _m32
        ihash = (_sip(_pack(v), key=_k).intdigest() & _m32) % m
        d = table[ihash]
        if d is None:
            return None
        if d.weight > 0 and not d.overloaded:
            return d
        if flags & 0x08:                  # SVC_F_SCHED1: mh-fallback
            return _fallback(table, m, v, ihash)
        return None


def _fallback(table: list[Dest | None], m: int, v: int, ihash: int,
              _sip: type[siphash13] = siphash13, _pack: Callable[[int], bytes] = _pack,
              _k: bytes = MH_KEY1, _m32: int = M32) -> Dest | None:
    """The kernel's mh-fallback loop: re-hash with growing offsets."""
    for off in range(m):
        roff = off + ihash
        if roff >= m:
            roff -= m
        d = table[(_sip(_pack((v + roff) & _m32), key=_k).intdigest() & _m32) % m]
        if d is None:
            return None
        if d.weight > 0 and not d.overloaded:
            return d
    return None


@register
class MHBackportScheduler(MHScheduler):
    name = "mh-backport"

    def _weights(self, dests: list[Dest]) -> list[int]:
        return [d.weight for d in dests]

    def _uses_port(self) -> bool:
        return True

    def schedule(self, caddr: Addr, cport: int, _sip: type[siphash13] = siphash13,
                 _pack: Callable[[int], bytes] = _pack, _k: bytes = MH_KEY1,
                 _m32: int = M32, _fold: Callable[[Addr], int] = fold) -> Dest | None:
        table, m = self._state
        v = ((caddr if type(caddr) is int else _fold(caddr)) + cport) & _m32
        d = table[(_sip(_pack(v), key=_k).intdigest() & _m32) % m]
        if d is None or d.weight <= 0 or d.overloaded:
            return None
        return d


assert SVC_F_SCHED1 == 0x08 and SVC_F_SCHED2 == 0x10
