"""Maglev lookup tables as pure functions, with IPVS's weighting (docs/ipvs.md
§1.4, §1.5, §1.7).  Used by `mh` (kernel list order, last_weight) and `mhs`
(canonical order, current weight).

A table is a list of length M whose items are indexes into the destination
sequence given to build(), or -1 for an empty slot.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from math import gcd
from typing import TYPE_CHECKING

from .hashing import MH_KEY1, MH_KEY2, mh_hashkey

if TYPE_CHECKING:
    from ..model import Addr

#: the table sizes M: the kernel's primes for CONFIG_IP_VS_MH_TAB_INDEX 8..17
#: (the one list; mh, mh-backport and mhs validate against it in options.py)
PRIMES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
#: M of the kernel's default build (TAB_INDEX 12)
DEFAULT_SIZE = 4093


def tab_bits(m: int) -> int:
    """IP_VS_MH_TAB_BITS of a kernel built with table size m (= TAB_INDEX / 2)."""
    return (PRIMES.index(m) + 8) // 2


def _fls(x: int) -> int:
    return x.bit_length()


def turns(weights: Sequence[int], bits: int) -> list[int]:
    """Weights -> turns: gcd reduction, right shift so max/gcd fits in `bits`."""
    g = 0
    for w in weights:
        if w > 0:
            g = gcd(g, w)
    if g == 0:
        return [0] * len(weights)
    mw = max(weights) // g
    rshift = max(0, _fls(mw) - bits)
    out = []
    for w in weights:
        t = (w // g) >> rshift
        if t == 0:
            t = 1 if w != 0 else 0
        out.append(t)
    return out


def permutation(addr: Addr, port: int, m: int) -> tuple[int, int]:
    """(offset, skip) of a destination."""
    offset = mh_hashkey(addr, port, MH_KEY1) % m
    skip = mh_hashkey(addr, port, MH_KEY2) % (m - 1) + 1
    return offset, skip


def populate(offsets: Sequence[int], skips: Sequence[int], nturns: Sequence[int],
             m: int) -> list[int]:
    """The population race of §1.7 -> table of indexes (-1 = empty).

    The race is a pure function of its inputs and the slowest step of a
    change (a 65,521-slot table takes ~20-60 ms in Python), so the last 16
    results are kept: a destination that flaps (a health check going down
    and up) or a rule set applied again rebuilds nothing.  At most 16
    tables of indexes (8 bytes a slot) are held."""
    return list(_race_cached(tuple(offsets), tuple(skips), tuple(nturns), m))


@functools.lru_cache(maxsize=16)
def _race_cached(offsets: tuple[int, ...], skips: tuple[int, ...], nturns: tuple[int, ...],
                 m: int) -> tuple[int, ...]:
    return tuple(_race(offsets, skips, nturns, m))


def _race(offsets: Sequence[int], skips: Sequence[int], nturns: Sequence[int],
          m: int) -> list[int]:
    table = [-1] * m
    active = [i for i, t in enumerate(nturns) if t > 0]
    if not active:
        return table
    if len(active) == 1:
        return [active[0]] * m      # the race has one runner: it takes every slot
    perm = list(offsets)
    filled = 0
    if all(nturns[i] == 1 for i in active):
        # common case (equal weights): one claim per destination per round
        while True:
            for i in active:
                c = perm[i]
                if table[c] >= 0:
                    skip = skips[i]
                    c += skip
                    if c >= m:
                        c -= m
                    while table[c] >= 0:
                        c += skip
                        if c >= m:
                            c -= m
                    perm[i] = c
                table[c] = i
                filled += 1
                if filled == m:
                    return table
    while True:
        for i in active:
            skip = skips[i]
            c = perm[i]
            for _ in range(nturns[i]):
                while table[c] >= 0:
                    c += skip
                    if c >= m:
                        c -= m
                table[c] = i
                filled += 1
                if filled == m:
                    return table
            perm[i] = c


def build(endpoints: Sequence[tuple[Addr, int]], weights: Sequence[int],
          m: int = DEFAULT_SIZE, bits: int | None = None,
          perms: Sequence[tuple[int, int]] | None = None) -> list[int]:
    """Table for destinations `endpoints` [(addr, port), ...] in walk order
    with `weights` (last_weight for mh, current weight for mhs).

    `perms` may hold precomputed (offset, skip) pairs (a cache keyed by
    endpoint is the caller's business)."""
    if bits is None:
        bits = tab_bits(m)
    if perms is None:
        perms = [permutation(a, p, m) for a, p in endpoints]
    offsets = [o for o, _ in perms]
    skips = [s for _, s in perms]
    return populate(offsets, skips, turns(weights, bits), m)
