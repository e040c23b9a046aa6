"""SCTP's CRC32c (RFC 9260 appendix B) through the C-backed ``crc32c``
package, for the rewrite of an SCTP packet's port (docs/sctp.md).

The checksum field holds the CRC of the whole SCTP packet computed with the
field set to zero, stored least significant byte first.  A rewrite keeps an
incoming packet's error: the new field is the new CRC xor'ed with the
difference between the old field and the CRC the old packet should have had,
so a packet that arrived corrupted still fails at the receiver (IPVS
recomputes the CRC blindly; userlb does not turn a damaged packet into a
valid one).
"""
from struct import Struct

from crc32c import crc32c as _crc

_LE = Struct("<I")


def compute(buf, l4, end):
    """The CRC32c of the SCTP packet ``buf[l4:end]`` with its checksum field
    taken as zero (the field itself is left as it is)."""
    mv = memoryview(buf)
    c = _crc(mv[l4:l4 + 8])
    c = _crc(b"\0\0\0\0", c)
    return _crc(mv[l4 + 12:end], c)


def stored(buf, l4):
    """The checksum field's value (as a CRC, i.e. little-endian)."""
    return _LE.unpack_from(buf, l4 + 8)[0]


def ok(buf, l4, end):
    """True if the SCTP packet ``buf[l4:end]`` has a correct CRC32c."""
    return compute(buf, l4, end) == stored(buf, l4)


def set_port(buf, l4, end, poff, new_port):
    """Store ``new_port`` at ``buf[l4 + poff]`` (0: source, 2: destination)
    and update the checksum field, keeping any error the packet had."""
    old = _LE.unpack_from(buf, l4 + 8)[0]
    err = old ^ compute(buf, l4, end)
    buf[l4 + poff] = new_port >> 8
    buf[l4 + poff + 1] = new_port & 0xFF
    _LE.pack_into(buf, l4 + 8, compute(buf, l4, end) ^ err)


def fill(buf, l4, end):
    """Write the correct CRC32c into the packet (packets the director builds;
    tests)."""
    _LE.pack_into(buf, l4 + 8, compute(buf, l4, end))
