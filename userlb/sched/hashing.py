"""Kernel-exact hashing helpers for the mh, mhs and sh schedulers.

* hsiphash on 64-bit kernels is SipHash-1-3 with 64-bit key words, result
  truncated to the low 32 bits (docs/ipvs.md §2.1).  We use the C-backed
  `siphash24.siphash13`.
* fold(): an address folded to 32 bits with the service family (§1.3).
* hash_32(): the kernel's multiplicative hash (sh, §3).
* hsiphash32(): the 32-bit kernels' HalfSipHash-1-3 (§2.2), pure Python
  (slow; reference/tests only: userlb models a 64-bit kernel).

Speed notes (the mh lookup is one hsiphash per new connection): siphash24's
constructor only takes the key as a keyword and costs ~300 ns by itself
(`copy()` is unusable: it raises), so the fastest form is the direct
`siphash13(_pack(v), key=KEY).intdigest() & M32` with module-level names;
`hsiphash_u32` below is that, and the schedulers inline it.  Addresses are
told apart with `type(a) is int` (half the cost of isinstance() on bytes);
mypy cannot narrow the other branch to bytes, hence its `type: ignore[arg-type]`.
"""
from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from siphash24 import siphash13

if TYPE_CHECKING:
    from ..model import Addr

M32 = 0xFFFFFFFF
_U32LE = struct.Struct("<I")
_KEY = struct.Struct("<QQ")
_V6WORDS = struct.Struct("!4I")
_unpack6: Callable[[bytes], tuple[int, int, int, int]] = _V6WORDS.unpack

GOLDEN_RATIO_32 = 0x61C88647


def key16(k0: int, k1: int) -> bytes:
    """The 16-byte SipHash key for the kernel's two unsigned-long key words."""
    return _KEY.pack(k0, k1)


MH_KEY1 = key16(2654435761, 2654435761)   # offset and lookup
MH_KEY2 = key16(2654446892, 2654446892)   # skip


def hsiphash(data: bytes, key: bytes) -> int:
    """64-bit kernel hsiphash() of `data` (bytes) with a 16-byte key."""
    return siphash13(data, key=key).intdigest() & M32


def hsiphash_1u32(v: int, key: bytes) -> int:
    return siphash13(_U32LE.pack(v & M32), key=key).intdigest() & M32


def hsiphash_u32(v: int, key: bytes, _sip: type[siphash13] = siphash13,
                 _pack: Callable[[int], bytes] = _U32LE.pack, _m: int = M32) -> int:
    """hsiphash_1u32(v) for 0 <= v < 2**32 (no masking of v: caller's job)."""
    return _sip(_pack(v), key=key).intdigest() & _m


def fold(addr: Addr) -> int:
    """Fold an address to 32 bits: IPv4 int as is; IPv6 = XOR of its 4 words."""
    if type(addr) is int:
        return addr
    a, b, c, d = _unpack6(addr)  # type: ignore[arg-type]
    return a ^ b ^ c ^ d


def fold_af(addr: Addr, af: int) -> int:
    """fold() with an explicit (service) address family, as the kernel does
    for mixed-family destinations (docs/ipvs.md §1.3, §10): an IPv4 address in an
    IPv6 service folds to itself (its other words are 0); an IPv6 address in
    an IPv4 service is read as its first 32-bit word."""
    if type(addr) is int:
        return addr
    if af == 4:
        return _unpack6(addr)[0]  # type: ignore[arg-type]
    a, b, c, d = _unpack6(addr)  # type: ignore[arg-type]
    return a ^ b ^ c ^ d


def mh_hashkey(addr: Addr, port: int, key: bytes, offset: int = 0) -> int:
    """The kernel's ip_vs_mh_hashkey(): hsiphash of (offset + port + fold(addr))."""
    a = addr if type(addr) is int else fold(addr)
    return siphash13(_U32LE.pack((offset + port + a) & M32), key=key).intdigest() & M32


def hash_32(x: int, bits: int) -> int:
    """include/linux/hash.h hash_32()."""
    return ((x * GOLDEN_RATIO_32) & M32) >> (32 - bits)


# ---------------------------------------------------------------- 32-bit kernels

def _rotl32(x: int, b: int) -> int:
    return ((x << b) | (x >> (32 - b))) & M32


def _hsipround(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & M32
    v1 = _rotl32(v1, 5)
    v1 ^= v0
    v0 = _rotl32(v0, 16)
    v2 = (v2 + v3) & M32
    v3 = _rotl32(v3, 8)
    v3 ^= v2
    v0 = (v0 + v3) & M32
    v3 = _rotl32(v3, 7)
    v3 ^= v0
    v2 = (v2 + v1) & M32
    v1 = _rotl32(v1, 13)
    v1 ^= v2
    v2 = _rotl32(v2, 16)
    return v0, v1, v2, v3


def hsiphash32(data: bytes, k0: int, k1: int) -> int:
    """hsiphash() of a 32-bit kernel: HalfSipHash-1-3 with 32-bit key words
    k0, k1, result v1 ^ v3 (docs/ipvs.md §2.2).  Pure Python, for tests/tools."""
    v0, v1 = k0, k1
    v2 = k0 ^ 0x6C796765
    v3 = k1 ^ 0x74656462
    n = len(data)
    end = n - n % 4
    for i in range(0, end, 4):
        m = int.from_bytes(data[i:i + 4], "little")
        v3 ^= m
        v0, v1, v2, v3 = _hsipround(v0, v1, v2, v3)
        v0 ^= m
    b = int.from_bytes(data[end:], "little") | ((n & 0xFF) << 24)
    v3 ^= b
    v0, v1, v2, v3 = _hsipround(v0, v1, v2, v3)
    v0 ^= b
    v2 ^= 0xFF
    for _ in range(3):
        v0, v1, v2, v3 = _hsipround(v0, v1, v2, v3)
    return v1 ^ v3
