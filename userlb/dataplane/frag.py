"""IPv4 / IPv6 fragment reassembly before scheduling (like the kernel's
defrag in front of IPVS).

Theory of operation
-------------------
Fragments are queued per datagram: IPv4 by (saddr, daddr, id, protocol),
IPv6 by (saddr, daddr, fragment id).  Each queue keeps the unfragmentable
header of the first fragment and the data ranges received.  When the last
fragment (MF clear) fixed the total length and the ranges cover it, the
datagram is rebuilt: IPv4 with MF/offset cleared, the total length set and
the header checksum recomputed; IPv6 without its fragment header (the
preceding next-header byte takes the fragment header's next header).

Limits, as the kernel's ``ipfrag_high_thresh`` (4 MB) and ``ipfrag_time``
(30 s): a fragment that would push the memory held above `high_thresh` is
dropped ('frag_mem_limit'); a queue older than `timeout` is discarded
('frag_timeout', at the next `expire` or when touched).  Overlapping
fragments discard the whole datagram ('frag_overlap', RFC 5722 and Linux
since 4.19 for IPv4); an exact duplicate is dropped alone
('frag_duplicate').  A non-last fragment whose length is not a multiple of
8, a datagram longer than 65535 bytes, or an inconsistent last fragment
discard the datagram ('frag_bad' / 'frag_too_big').  No ICMP "reassembly
time exceeded" is sent.

`add()` returns the reassembled packet (a new bytearray starting with the IP
header) or a reason string: 'frag_queued' when the fragment was kept and
the datagram is not complete yet, otherwise one of the reasons above.
"""
from struct import Struct

from .csum import ipv4_header_checksum
from .packet import (
    P_AF,
    P_DADDR,
    P_FRAG_ID,
    P_FRAG_MF,
    P_FRAG_OFF,
    P_L3OFF,
    P_L4OFF,
    P_LEN,
    P_PROTO,
    P_SADDR,
)

HIGH_THRESH = 4 * 1024 * 1024
TIMEOUT = 30.0
QUEUE_OVERHEAD = 128      # bytes accounted per fragment on top of its data

QUEUED = "frag_queued"
OVERLAP = "frag_overlap"
DUPLICATE = "frag_duplicate"
MEM_LIMIT = "frag_mem_limit"
BAD = "frag_bad"
TOO_BIG = "frag_too_big"
TIMED_OUT = "frag_timeout"

_H = Struct("!H")
_EXT6 = (0, 43, 60)


class _Queue:
    __slots__ = ("created", "header", "frags", "total", "got", "mem")

    def __init__(self, now):
        self.created = now
        self.header = None     # bytearray: unfragmentable part of the first fragment
        self.frags = []        # [(start, end, data)]
        self.total = -1        # length of the fragmentable part, once known
        self.got = 0
        self.mem = 0


def _frag6_header(buf, off, pend):
    """(offset of the fragment header, offset of the next-header byte that
    names it) or None."""
    prev = off + 6
    nh = buf[prev]
    p = off + 40
    while nh != 44:
        if nh not in _EXT6 or p + 8 > pend:
            return None
        prev = p
        nh = buf[p]
        p += (buf[p + 1] + 1) << 3
    if p + 8 > pend:
        return None
    return p, prev


class Reassembler:
    def __init__(self, high_thresh=HIGH_THRESH, timeout=TIMEOUT):
        self.high_thresh = high_thresh
        self.timeout = timeout
        self.queues = {}
        self.mem = 0
        self.timeouts = 0      # queues discarded by age

    def __len__(self):
        return len(self.queues)

    def _discard(self, key):
        q = self.queues.pop(key, None)
        if q is not None:
            self.mem -= q.mem

    def expire(self, now):
        """Discard queues older than the timeout.  Returns how many."""
        old = [k for k, q in self.queues.items() if now >= q.created + self.timeout]
        for k in old:
            self._discard(k)
        self.timeouts += len(old)
        return len(old)

    def add(self, buf, r, now):
        """Queue the fragment `r` (a parse result of `buf`)."""
        af = r[P_AF]
        l3 = r[P_L3OFF]
        pend = l3 + r[P_LEN]
        foff = r[P_FRAG_OFF]
        mf = r[P_FRAG_MF]
        if af == 4:
            key = (4, r[P_SADDR], r[P_DADDR], r[P_FRAG_ID], r[P_PROTO])
            dstart = r[P_L4OFF]
            hlen = dstart - l3
        else:
            fh = _frag6_header(buf, l3, pend)
            if fh is None:
                return BAD
            dstart = fh[0] + 8
            key = (6, r[P_SADDR], r[P_DADDR], r[P_FRAG_ID])
            hlen = fh[0] - l3
        dlen = pend - dstart
        start = foff
        end = foff + dlen
        q = self.queues.get(key)
        if q is not None and now >= q.created + self.timeout:
            self._discard(key)
            self.timeouts += 1
            q = None
        if (mf and dlen & 7) or dlen <= 0 and mf:
            if q is not None:
                self._discard(key)
            return BAD
        if end + hlen > 65535:
            if q is not None:
                self._discard(key)
            return TOO_BIG
        cost = dlen + QUEUE_OVERHEAD + (hlen if start == 0 else 0)
        if self.mem + cost > self.high_thresh:
            return MEM_LIMIT
        if q is None:
            q = self.queues[key] = _Queue(now)
        # consistency with the total length
        if not mf:
            if (q.total >= 0 and q.total != end) or any(e > end for _, e, _ in q.frags):
                self._discard(key)
                return BAD
        elif q.total >= 0 and end > q.total:
            self._discard(key)
            return BAD
        for s, e, _ in q.frags:
            if s == start and e == end:
                return DUPLICATE
            if start < e and s < end:
                self._discard(key)
                return OVERLAP
        if not mf:
            q.total = end
        if start == 0:
            hdr = bytearray(buf[l3:l3 + hlen])
            if af == 6:
                hdr[fh[1] - l3] = buf[fh[0]]      # skip the fragment header
            q.header = hdr
        q.frags.append((start, end, bytes(buf[dstart:pend])))
        q.got += dlen
        q.mem += cost
        self.mem += cost
        if q.total < 0 or q.got != q.total or q.header is None:
            return QUEUED
        # complete
        self._discard(key)
        q.frags.sort()
        out = q.header + b"".join(d for _, _, d in q.frags)
        if af == 4:
            _H.pack_into(out, 2, len(out))
            out[6] &= 0x40          # keep DF, clear MF and the offset
            out[7] = 0
            _H.pack_into(out, 10, 0)
            _H.pack_into(out, 10, ipv4_header_checksum(out))
        else:
            _H.pack_into(out, 4, len(out) - 40)
        return out
