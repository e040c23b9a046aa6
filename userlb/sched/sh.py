"""`sh`: the kernel's source hashing scheduler (docs/ipvs.md §3), flow for flow.

* Table: 2**bits buckets (default bits 8 -> 256).  Rebuilt on init and after
  every add/del/upd by walking `svc.dests` (kernel list order, newest first)
  round and round; each destination takes max(weight, 1) consecutive
  buckets with its *current* weight (no gcd reduction; a weight-0
  destination still takes one bucket per cycle and is unavailable).  No
  destinations -> every bucket empty.  Built aside, published by one
  assignment.
* Hash (current kernels, "hash_32 variant"): x = (port + fold(client)) mod
  2**32; bucket(off) = (off + hash_32(x, bits)) mod 2**bits.  port = client
  source port with `sh-port` (SVC_F_SCHED2), else 0.
* Lookup: b0 = bucket(0); empty -> None; available (current weight > 0 and
  not overloaded) -> that destination; otherwise None, or with `sh-fallback`
  (SVC_F_SCHED1) the kernel's probe: for off in 0..size-1, bucket((off + b0)
  mod size), i.e. starting at 2*b0 (a kernel quirk, reproduced); stop at an
  empty bucket; first available wins.

Per-service options (userlb extensions, `svc.options`):
* `sh_tab_bits`: int 4..20 (CONFIG_IP_VS_SH_TAB_BITS), default 8.
* `sh_hash`: "hash_32" (default, kernels since about 4.13) or "legacy"
  (older kernels: bucket(off) = (off + x * 2654435761) mod 2**bits).
Invalid values raise ConfigError (`validate_options()`, constructor, update()).

Tools: `sched.table_size`, `sched.table_endpoints()` (per bucket the Dest or
None), `sched.slot_of(caddr, cport=0, port=None)` (first bucket probed).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .base import TableScheduler, register
from .hashing import GOLDEN_RATIO_32, M32, fold_af
from .options import int_option

if TYPE_CHECKING:
    from ..model import Addr, Dest

OPT_TAB_BITS = "sh_tab_bits"
OPT_HASH = "sh_hash"
DEFAULT_TAB_BITS = 8
HASH_VARIANTS = ("hash_32", "legacy")
_LEGACY_MULT = 2654435761

#: (table, bits, multiplier (0 = legacy), mask): published by one assignment
_State = tuple[list["Dest | None"], int, int, int]


def tab_bits(options: Mapping[str, object] | None) -> int:
    raw = (options or {}).get(OPT_TAB_BITS)
    if raw is None:
        return DEFAULT_TAB_BITS
    b = int_option(raw)
    if b is None or not 4 <= b <= 20:
        raise ConfigError(f"invalid {OPT_TAB_BITS} {raw!r}: must be an integer 4..20")
    return b


def hash_variant(options: Mapping[str, object] | None) -> str:
    raw = (options or {}).get(OPT_HASH)
    if raw is None:
        return "hash_32"
    if not isinstance(raw, str) or raw not in HASH_VARIANTS:
        raise ConfigError(f"invalid {OPT_HASH} {raw!r}: must be one of {', '.join(HASH_VARIANTS)}")
    return raw


def validate_options(options: Mapping[str, object] | None) -> None:
    tab_bits(options)
    hash_variant(options)


def fill(dests: list[Dest], size: int) -> list[Dest | None]:
    """Bucket table for `dests` in list order: max(weight, 1) consecutive
    buckets each, wrapping around the list until all buckets are filled."""
    if not dests:
        return [None] * size
    # one pass over the list (never more than the buckets left: weights go
    # up to INT_MAX), then that pass repeated: the wrap-around
    one: list[Dest | None] = []
    for d in dests:
        one += [d] * min(max(d.weight, 1), size - len(one))
        if len(one) >= size:
            return one
    return (one * -(-size // len(one)))[:size]


@register
class SHScheduler(TableScheduler):
    name = "sh"
    _state: _State

    def _empty_state(self) -> _State:
        return ([None] * (1 << tab_bits(self.svc.options)), 0, 0, 0)

    def update(self) -> None:
        bits = tab_bits(self.svc.options)
        mult = GOLDEN_RATIO_32 if hash_variant(self.svc.options) == "hash_32" else 0
        size = 1 << bits
        self._state = (fill(list(self.svc.dests), size), bits, mult, size - 1)

    # ---------------------------------------------------------------- tools
    def slot_of(self, caddr: Addr, cport: int = 0, port: bool | None = None) -> int:
        if port is None:
            port = bool(self.svc.flags & 0x10)
        x = (fold_af(caddr, self.svc.af) + (cport if port else 0)) & M32
        _, bits, mult, mask = self._state
        if mult:
            return ((x * mult) & M32) >> (32 - bits)
        return (x * _LEGACY_MULT) & mask

    # ---------------------------------------------------------------- hot path
    def schedule(self, caddr: Addr, cport: int) -> Dest | None:
        table, bits, mult, mask = self._state
        flags = self.svc.flags
        if type(caddr) is int:
            x = caddr
        else:                             # IPv6: XOR of the four words
            x = int.from_bytes(caddr, "big")  # type: ignore[arg-type]
            x = (x ^ (x >> 32) ^ (x >> 64) ^ (x >> 96)) & 0xFFFFFFFF
        if flags & 0x10:                  # SVC_F_SCHED2: sh-port
            x = (x + cport) & 0xFFFFFFFF
        if mult:
            b0 = ((x * mult) & 0xFFFFFFFF) >> (32 - bits)
        else:
            b0 = (x * _LEGACY_MULT) & mask
        d = table[b0]
        if d is None:
            return None
        if d.weight > 0 and not d.overloaded:
            return d
        if not flags & 0x08:              # SVC_F_SCHED1: sh-fallback
            return None
        for off in range(mask + 1):
            # roffset = (off + b0) mod size; bucket(roffset) = roffset + b0
            d = table[(off + b0 + b0) & mask]
            if d is None:
                return None
            if d.weight > 0 and not d.overloaded:
                return d
        return None
