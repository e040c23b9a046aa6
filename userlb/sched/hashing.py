"""Kernel-exact hashing helpers for the mh, mhs and sh schedulers.

* hsiphash on 64-bit kernels is SipHash-1-3 with 64-bit key words, result
  truncated to the low 32 bits (IPVS.md §2.1).  We use the C-backed
  `siphash24.siphash13`.
* fold(): an address folded to 32 bits with the service family (§1.3).
* hash_32(): the kernel's multiplicative hash (sh, §3).
"""
import struct

from siphash24 import siphash13

M32 = 0xFFFFFFFF
_U32LE = struct.Struct("<I")
_KEY = struct.Struct("<QQ")
_V6WORDS = struct.Struct("!4I")

GOLDEN_RATIO_32 = 0x61C88647


def key16(k0, k1):
    """The 16-byte SipHash key for the kernel's two unsigned-long key words."""
    return _KEY.pack(k0, k1)


MH_KEY1 = key16(2654435761, 2654435761)   # offset and lookup
MH_KEY2 = key16(2654446892, 2654446892)   # skip


def hsiphash(data, key):
    """64-bit kernel hsiphash() of `data` (bytes) with a 16-byte key."""
    return siphash13(data, key=key).intdigest() & M32


def hsiphash_1u32(v, key):
    return siphash13(_U32LE.pack(v & M32), key=key).intdigest() & M32


def fold(addr):
    """Fold an address to 32 bits: IPv4 int as is; IPv6 = XOR of its 4 words."""
    if type(addr) is int:
        return addr
    a, b, c, d = _V6WORDS.unpack(addr)
    return a ^ b ^ c ^ d


def mh_hashkey(addr, port, key, offset=0):
    """The kernel's ip_vs_mh_hashkey(): hsiphash of (offset + port + fold(addr))."""
    return siphash13(_U32LE.pack((offset + port + fold(addr)) & M32), key=key).intdigest() & M32


def hash_32(x, bits):
    """include/linux/hash.h hash_32()."""
    return ((x * GOLDEN_RATIO_32) & M32) >> (32 - bits)
