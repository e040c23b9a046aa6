"""Internet checksum (RFC 1071), full and incremental (RFC 1624).

Vocabulary used here:

* a *sum* is the 16-bit one's-complement sum of a sequence of 16-bit
  big-endian words (end-around carry), folded to ``0 .. 0xFFFF``;
* a *checksum* is the one's complement of a sum (what goes on the wire);
* a *delta* is a precomputed sum ``~old + new`` (one's complement arithmetic)
  describing how a set of 16-bit words changes.  RFC 1624 eqn. 3 then gives
  ``HC' = ~(~HC + delta)``: ``apply(hc, delta)``.

The per-connection fast path: compute a delta once when a connection is
created (``delta_addr_port``, ``delta_ipv4_header``) and apply it to every
packet with ``apply`` (three integer operations).  Because a delta depends
only on the old and new *values* of the changed words (not on where they
sit), one delta covers e.g. the TCP/UDP pseudo-header address change plus the
port change.

Full sums use ``int.from_bytes(...) % 0xFFFF``: 2**16 == 1 (mod 0xFFFF), so
the big-endian integer of a byte string is congruent to the sum of its 16-bit
words; the one's-complement sum is the representative in 1..0xFFFF (0 only
for all-zero data).
"""
from struct import Struct

_H = Struct("!H")

TTL_DEC_DELTA = 0xFEFF   # delta of the IPv4 (TTL << 8 | proto) word when TTL -= 1 (TTL >= 1)


def fold(x):
    """Fold a non-negative integer to a 16-bit one's-complement sum (0..0xFFFF).
    Returns 0 only for 0."""
    if x <= 0xFFFF:
        return x
    x %= 0xFFFF
    return x if x else 0xFFFF


def ones_sum(data, start=0, end=None, initial=0):
    """One's-complement sum of ``data[start:end]`` (odd length: padded with a
    zero byte), plus ``initial`` (a sum).  Result 0..0xFFFF, 0 only if
    everything is zero."""
    if end is None:
        end = len(data)
    if end <= start:
        return fold(initial)
    n = int.from_bytes(data[start:end], "big")
    if (end - start) & 1:
        n <<= 8
    if n == 0:
        return fold(initial)
    n %= 0xFFFF
    return fold((n if n else 0xFFFF) + initial)


def checksum(data, start=0, end=None, initial=0):
    """Internet checksum of ``data[start:end]`` plus the sum ``initial`` (e.g.
    a pseudo-header sum): ``~ones_sum(...) & 0xFFFF``."""
    return ones_sum(data, start, end, initial) ^ 0xFFFF


def addr_sum(addr):
    """Sum of the 16-bit words of an address: IPv4 ``int`` or IPv6 16-byte ``bytes``."""
    if type(addr) is int:
        return fold((addr >> 16) + (addr & 0xFFFF))
    return ones_sum(addr)


def pseudo_sum4(saddr, daddr, proto, length):
    """Sum of the IPv4 pseudo-header (RFC 793/768): saddr, daddr (ints),
    zero+protocol, L4 length."""
    return fold((saddr >> 16) + (saddr & 0xFFFF) + (daddr >> 16) + (daddr & 0xFFFF)
                + proto + length)


def pseudo_sum6(saddr, daddr, proto, length):
    """Sum of the IPv6 pseudo-header (RFC 8200 §8.1): saddr, daddr (16-byte
    bytes), upper-layer length (32 bits), next header."""
    return fold(ones_sum(saddr) + ones_sum(daddr) + (length >> 16) + (length & 0xFFFF)
                + proto)


def pseudo_sum(af, saddr, daddr, proto, length):
    """``pseudo_sum4`` or ``pseudo_sum6`` by ``af`` (4 / 6)."""
    if af == 4:
        return pseudo_sum4(saddr, daddr, proto, length)
    return pseudo_sum6(saddr, daddr, proto, length)


# ---------------------------------------------------------------- RFC 1624

def delta(old_sum, new_sum):
    """Delta for words whose sum changes from ``old_sum`` to ``new_sum``."""
    return fold((old_sum ^ 0xFFFF) + new_sum)


def add_deltas(*deltas):
    """Combine deltas (the changes happen together)."""
    return fold(sum(deltas))


def delta16(old, new):
    """Delta of one 16-bit word changing from ``old`` to ``new``."""
    return fold((old ^ 0xFFFF) + new)


def delta_addr(old, new):
    """Delta of an address (``int`` or 16-byte ``bytes``) changing."""
    return fold((addr_sum(old) ^ 0xFFFF) + addr_sum(new))


def delta_addr_port(old_addr, old_port, new_addr, new_port):
    """Delta for a TCP/UDP checksum when one endpoint changes from
    old_addr:old_port to new_addr:new_port (the pseudo-header address plus
    the L4 port): precompute once per connection and direction."""
    return fold((addr_sum(old_addr) ^ 0xFFFF) + addr_sum(new_addr)
                + (old_port ^ 0xFFFF) + new_port)


def delta_ipv4_header(old_addr, new_addr, dec_ttl=True):
    """Delta for the IPv4 header checksum when one address changes and
    (if ``dec_ttl``) the TTL is decremented by one (TTL must be >= 1).  The
    TTL part is a constant (``TTL_DEC_DELTA``): the (TTL, protocol) word goes
    down by 0x100 whatever the TTL is."""
    d = (addr_sum(old_addr) ^ 0xFFFF) + addr_sum(new_addr)
    if dec_ttl:
        d += TTL_DEC_DELTA
    return fold(d)


def apply(hc, d):
    """RFC 1624 eqn. 3: the new checksum for old checksum ``hc`` and delta
    ``d``: ``~(~hc + d)``.  Inline this in hot loops:
    ``x = (hc ^ 0xFFFF) + d; x = (x & 0xFFFF) + (x >> 16); hc = x ^ 0xFFFF``."""
    x = (hc ^ 0xFFFF) + d
    x = (x & 0xFFFF) + (x >> 16)
    return x ^ 0xFFFF


def update16(hc, old, new):
    """New checksum after one 16-bit word changed from ``old`` to ``new``."""
    return apply(hc, delta16(old, new))


def update_field(hc, old_bytes, new_bytes):
    """New checksum after an even-length, 16-bit-aligned field changed from
    ``old_bytes`` to ``new_bytes`` (same length)."""
    return apply(hc, delta(ones_sum(old_bytes), ones_sum(new_bytes)))


def apply_at(buf, off, d):
    """Apply delta ``d`` to the 16-bit checksum stored at ``buf[off:off+2]``."""
    x = ((buf[off] << 8 | buf[off + 1]) ^ 0xFFFF) + d
    x = ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF
    buf[off] = x >> 8
    buf[off + 1] = x & 0xFF


def ipv4_header_ok(buf, off=0):
    """True if the IPv4 header at ``off`` (IHL from its first byte) has a
    valid header checksum.  (Not called by ``packet.parse``: packets routed
    into the TUN were already checked by the kernel.)"""
    hl = (buf[off] & 15) << 2
    return hl >= 20 and off + hl <= len(buf) and ones_sum(buf, off, off + hl) == 0xFFFF


def ipv4_header_checksum(buf, off=0):
    """Compute (not store) the IPv4 header checksum of the header at ``off``,
    treating its checksum field as zero."""
    hl = (buf[off] & 15) << 2
    s = ones_sum(buf, off, off + 10)
    return ones_sum(buf, off + 12, off + hl, s) ^ 0xFFFF
