"""Parse IPv4 / IPv6 packets (+ TCP, UDP, ICMP, ICMPv6) into ints and offsets.

Hot path module: no allocation beyond the result tuple, no exceptions, no
scapy, no ``ipaddress``.  Everything is read with module-level
``struct.Struct.unpack_from``.

Entry point
-----------
``parse(buf, off=0, end=None)``

* ``buf``: ``bytes`` / ``bytearray`` / ``memoryview`` holding one packet.
* ``off``: where the IP header starts (0 for a plain TUN read; 10 if the
  driver later enables the virtio-net header).
* ``end``: one past the last valid byte of the read (``len(buf)`` by default;
  pass the byte count of ``os.readv`` when the buffer is a reused, larger
  ``bytearray``; a value beyond ``len(buf)`` is clamped to it).  ``off`` must
  be >= 0.  The IP packet itself ends at ``r[P_L3OFF] + r[P_LEN]``,
  which may be before ``end`` (link-layer padding).

It never raises on malformed input.  It returns either

* a ``str``: one of the reason constants below (test with ``type(r) is str``),
* or a plain ``tuple`` indexed by the ``P_*`` constants:

====== ============== =========================================================
index  name           meaning
====== ============== =========================================================
0      P_AF           4 or 6 (``userlb.model.AF_INET`` / ``AF_INET6``)
1      P_PROTO        L4 protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6)
2      P_SADDR        source address: IPv4 ``int``, IPv6 16-byte ``bytes``
3      P_SPORT        source port (ICMP echo: identifier; other ICMP: 0)
4      P_DADDR        destination address
5      P_DPORT        destination port (ICMP echo: identifier; other ICMP: 0)
6      P_TCPFLAGS     TCP flags byte (``TH_*``); SCTP: the event code of the
                      first chunk (``SCTP_CODE_OF_CHUNK``: INIT is 2, like
                      SYN); 0 for other protocols
7      P_L3OFF        offset of the IP header in ``buf`` (== ``off``)
8      P_L4OFF        offset of the L4 header (after IPv4 options / IPv6
                      extension headers); for a non-first fragment, the
                      offset of the fragment data
9      P_LEN          IP packet length from the IP header (IPv4 total length,
                      IPv6 40 + payload length)
10     P_TTLOFF       offset of the TTL / hop-limit byte
11     P_CSUMOFF      offset of the L4 checksum field (TCP l4+16, UDP l4+6,
                      ICMP/ICMPv6 l4+2, SCTP l4+8: the CRC32c); -1 for a
                      non-first fragment
12     P_FRAG         FRAG_NONE (0): not fragmented (also an IPv6 atomic
                      fragment); FRAG_FIRST (1): offset 0 with MF set (the L4
                      header is parsed); FRAG_LATER (2): offset > 0 (no L4
                      header: ports 0, flags 0, no ICMP fields)
13     P_FRAG_ID      IPv4 identification (always); IPv6 fragment header id,
                      or 0 without a fragment header
14     P_FRAG_OFF     fragment offset in bytes
15     P_FRAG_MF      1 if "more fragments" is set, else 0
16     P_ICMP_TYPE    ICMP / ICMPv6 type (0 for TCP/UDP: check P_PROTO first)
17     P_ICMP_CODE    ICMP / ICMPv6 code (0 for TCP/UDP)
18     P_INNER        for an ICMP/ICMPv6 *error* (ICMP 3, 4, 11, 12; ICMPv6
                      type < 128): the parse of the quoted packet (a tuple of
                      this same layout, see below); otherwise ``None``
====== ============== =========================================================

``r[1:6]`` (``FLOW``) is the flow key ``(proto, saddr, sport, daddr, dport)``.

The quoted packet of an ICMP error (``r[P_INNER]``) has the same layout, with
offsets into the same ``buf``, except: it may be truncated (only its IP header
and 8 bytes of L4 are guaranteed; the quoted bytes end at the outer packet's
end ``r[P_L3OFF] + r[P_LEN]``); its ``P_LEN`` is the length its own header
claims; ``P_CSUMOFF`` is where its L4 checksum *would* be (check that
``P_CSUMOFF + 2 <= outer end`` before using it); ``P_TCPFLAGS`` is 0 unless
byte 13 of the quoted TCP header is present; ``P_INNER`` is always ``None``
(an error quoted inside an error is not parsed further).  Its address family
must equal the outer one (ICMP quotes IPv4, ICMPv6 quotes IPv6).

Echo request/reply (ICMP 8/0, ICMPv6 128/129) use the echo identifier as both
ports, like conntrack; other non-error ICMP messages have ports 0.
"""
from struct import Struct

# the family and protocol numbers have their home in model (re-exported here)
from ..model import (  # noqa: F401
    AF_INET,
    AF_INET6,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
)

# ---------------------------------------------------------------- result layout
P_AF = 0
P_PROTO = 1
P_SADDR = 2
P_SPORT = 3
P_DADDR = 4
P_DPORT = 5
P_TCPFLAGS = 6
P_L3OFF = 7
P_L4OFF = 8
P_LEN = 9
P_TTLOFF = 10
P_CSUMOFF = 11
P_FRAG = 12
P_FRAG_ID = 13
P_FRAG_OFF = 14
P_FRAG_MF = 15
P_ICMP_TYPE = 16
P_ICMP_CODE = 17
P_INNER = 18
P_FIELDS = 19
FLOW = slice(1, 6)   # r[FLOW] == (proto, saddr, sport, daddr, dport)

FRAG_NONE = 0
FRAG_FIRST = 1
FRAG_LATER = 2

# TCP flags
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20
TH_ECE = 0x40
TH_CWR = 0x80

# ICMP types used here
ICMP_ECHOREPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_SOURCE_QUENCH = 4
ICMP_ECHO = 8
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETERPROB = 12
ICMP_PORT_UNREACH = 3          # code of ICMP_DEST_UNREACH
ICMP_ERROR_TYPES = frozenset((ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH,
                              ICMP_TIME_EXCEEDED, ICMP_PARAMETERPROB))
ICMPV6_DEST_UNREACH = 1
ICMPV6_PKT_TOOBIG = 2
ICMPV6_TIME_EXCEED = 3
ICMPV6_PARAMPROB = 4
ICMPV6_PORT_UNREACH = 4        # code of ICMPV6_DEST_UNREACH
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129

# IPv6 extension headers walked by the parser
NEXTHDR_HOP = 0
NEXTHDR_ROUTING = 43
NEXTHDR_FRAGMENT = 44
NEXTHDR_DEST = 60

# ---------------------------------------------------------------- reasons
TRUNCATED = "truncated"                    # shorter than the fixed IP header / IHL
BAD_VERSION = "bad_version"                # IP version is neither 4 nor 6
BAD_IHL = "bad_ihl"                        # IPv4 IHL < 5
BAD_TOTAL_LENGTH = "bad_total_length"      # IPv4 total length < IHL*4 or > buffer;
                                           # IPv6 40+payload length > buffer, or jumbogram
BAD_EXT_HEADER = "bad_ext_header"          # IPv6 extension header runs past the packet,
                                           # hop-by-hop not first, two fragment headers
UNSUPPORTED_PROTOCOL = "unsupported_protocol"  # L4 not TCP/UDP/SCTP/ICMP/ICMPv6 (incl. IPv6
                                           # no-next-header, AH, ESP), or ICMP in IPv6 /
                                           # ICMPv6 in IPv4
TRUNCATED_L4 = "truncated_l4"              # L4 header shorter than its minimum
                                           # (TCP 20, UDP 8, ICMP/ICMPv6 8, SCTP 16:
                                           # common header + one chunk header)
BAD_TCP_OFFSET = "bad_tcp_offset"          # TCP data offset < 5 or beyond the packet
BAD_UDP_LENGTH = "bad_udp_length"          # UDP length < 8 or > IP payload (unfragmented)
ICMP_INNER_TRUNCATED = "icmp_inner_truncated"  # quoted packet lacks its IP header
                                           # (incl. IPv6 ext headers) + 8 bytes of L4
ICMP_INNER_BAD = "icmp_inner_bad"          # quoted packet: bad version/IHL/length/ext hdr
ICMP_INNER_UNSUPPORTED = "icmp_inner_unsupported"  # quoted packet's L4 protocol unsupported

ALL_REASONS = (TRUNCATED, BAD_VERSION, BAD_IHL, BAD_TOTAL_LENGTH, BAD_EXT_HEADER,
               UNSUPPORTED_PROTOCOL, TRUNCATED_L4, BAD_TCP_OFFSET, BAD_UDP_LENGTH,
               ICMP_INNER_TRUNCATED, ICMP_INNER_BAD, ICMP_INNER_UNSUPPORTED)

# ---------------------------------------------------------------- structs
_IP4 = Struct("!BxHHHBBxxII")     # vihl, tot_len, id, frag, ttl, proto, saddr, daddr
_IP6 = Struct("!4xHB1x16s16s")    # payload length, next header, saddr, daddr
_FRAG6 = Struct("!BxHI")          # next header, offset|M, id
_TCP = Struct("!HH8xBB")          # sport, dport, data offset byte, flags
_PORTS = Struct("!HH")            # sport, dport (UDP ports, or the first 4 bytes)
_UDP = Struct("!HHH")             # sport, dport, length
_ICMP = Struct("!BB2xH")          # type, code, identifier (echo)
_H = Struct("!H")


def sctp_code(event):
    """The flags value of an SCTP event (the numbering of sctpstate.py):
    INIT (1) is 2, the bit of TCP's SYN; every other event e is e << 2."""
    return 2 if event == 1 else event << 2


# SCTP chunk type -> event (sctpstate.py: DATA 0, INIT 1, INIT_ACK 2,
# COOKIE_ECHO 3, COOKIE_ACK 4, SHUTDOWN 5, SHUTDOWN_ACK 6, SHUTDOWN_COMPLETE 7,
# ERROR 8, ABORT 9); every other type (SACK, HEARTBEAT, ...) is DATA
_SCTP_EVENT_OF_CHUNK = {1: 1, 2: 2, 10: 3, 11: 4, 7: 5, 8: 6, 14: 7, 9: 8, 6: 9}
#: SCTP chunk type (0..255) -> the flags value of its event
SCTP_CODE_OF_CHUNK = bytes(sctp_code(_SCTP_EVENT_OF_CHUNK.get(t, 0)) for t in range(256))
_SCTP_CODE = SCTP_CODE_OF_CHUNK

_EXT6 = frozenset((NEXTHDR_HOP, NEXTHDR_ROUTING, NEXTHDR_FRAGMENT, NEXTHDR_DEST))


def parse(buf, off=0, end=None, _ip4=_IP4.unpack_from, _ip6=_IP6.unpack_from,
          _tcp=_TCP.unpack_from, _udp=_UDP.unpack_from):
    """Parse the IP packet at ``buf[off:end]``.  Returns a tuple (layout in
    the module docstring) or a reason string.  Never raises for any bytes
    content (it may raise TypeError for a non-buffer argument).  (The
    underscore parameters are pre-bound struct methods, not for callers.)"""
    n = len(buf)
    if end is None or end > n:
        end = n
    avail = end - off
    if avail < 20:
        if avail < 1:
            return TRUNCATED
        v = buf[off] >> 4
        if v != 4 and v != 6:
            return BAD_VERSION
        return TRUNCATED
    # the IP layer: af, proto, addresses, lengths, L4 offset, fragment fields
    vihl, tlen, fid, frag, ttl, proto, saddr, daddr = _ip4(buf, off)
    af = vihl >> 4
    fkind = mf = 0
    if af == 4:
        hl = (vihl & 15) << 2
        if hl < 20:
            return BAD_IHL
        if avail < hl:
            return TRUNCATED
        if tlen < hl or tlen > avail:
            return BAD_TOTAL_LENGTH
        l4 = off + hl
        ttloff = off + 8
        icmp = 1
        if frag & 0x3fff:
            foff = (frag & 0x1fff) << 3
            mf = (frag >> 13) & 1
            if foff:
                if proto == 6 or proto == 17 or proto == 1 or proto == 132:
                    return (4, proto, saddr, 0, daddr, 0, 0, off, l4, tlen, ttloff, -1,
                            2, fid, foff, mf, 0, 0, None)
                return UNSUPPORTED_PROTOCOL
            fkind = 1
    elif af == 6:
        if avail < 40:
            return TRUNCATED
        plen, proto, saddr, daddr = _ip6(buf, off)
        tlen = 40 + plen
        if plen == 0 or tlen > avail:
            # payload length 0 means a jumbogram (hop-by-hop option); unsupported
            return BAD_TOTAL_LENGTH
        ttloff = off + 7
        icmp = 58
        fid = 0
        l4 = off + 40
        if proto != 6 and proto != 17:
            w = _walk6(buf, off, off + tlen, proto)
            if w is None:
                return BAD_EXT_HEADER
            proto, l4, fkind, fid, foff, mf = w
            if fkind == 2:
                if proto == 6 or proto == 17 or proto == 58 or proto == 132:
                    return (6, proto, saddr, 0, daddr, 0, 0, off, l4, tlen, ttloff, -1,
                            2, fid, foff, mf, 0, 0, None)
                return UNSUPPORTED_PROTOCOL
    else:
        return BAD_VERSION
    # the L4 header
    pend = off + tlen
    if proto == 6:
        if pend - l4 < 20:
            return TRUNCATED_L4
        sport, dport, doff, flags = _tcp(buf, l4)
        doff = (doff >> 4) << 2
        if doff < 20 or l4 + doff > pend:
            return BAD_TCP_OFFSET
        return (af, 6, saddr, sport, daddr, dport, flags, off, l4, tlen, ttloff, l4 + 16,
                fkind, fid, 0, mf, 0, 0, None)
    if proto == 17:
        if pend - l4 < 8:
            return TRUNCATED_L4
        sport, dport, ulen = _udp(buf, l4)
        if not fkind and (ulen < 8 or ulen > pend - l4):
            return BAD_UDP_LENGTH
        return (af, 17, saddr, sport, daddr, dport, 0, off, l4, tlen, ttloff, l4 + 6,
                fkind, fid, 0, mf, 0, 0, None)
    if proto == icmp:          # ICMP in IPv4, ICMPv6 in IPv6
        if pend - l4 < 8:
            return TRUNCATED_L4
        itype, icode, ident = _ICMP.unpack_from(buf, l4)
        inner = None
        port = 0
        if af == 4:
            if itype == 8 or itype == 0:
                port = ident
            elif itype in ICMP_ERROR_TYPES:
                inner = _parse_quoted(buf, l4 + 8, pend, 4)
        elif itype == 128 or itype == 129:
            port = ident
        elif itype < 128:
            inner = _parse_quoted(buf, l4 + 8, pend, 6)
        if type(inner) is str:
            return inner
        return (af, icmp, saddr, port, daddr, port, 0, off, l4, tlen, ttloff, l4 + 2,
                fkind, fid, 0, mf, itype, icode, inner)
    if proto == 132:
        if pend - l4 < 16:
            return TRUNCATED_L4
        sport, dport = _PORTS.unpack_from(buf, l4)
        return (af, 132, saddr, sport, daddr, dport, _sctp_code(buf, l4 + 12, pend), off, l4,
                tlen, ttloff, l4 + 8, fkind, fid, 0, mf, 0, 0, None)
    return UNSUPPORTED_PROTOCOL


def _sctp_code(buf, c, pend):
    """The event code (sctpstate.py) of the SCTP chunks at ``buf[c:pend]``:
    the first chunk's, except that a COOKIE-ECHO or COOKIE-ACK directly
    followed by an ABORT counts as the ABORT (the kernel's rule)."""
    t = buf[c]
    if t == 10 or t == 11:
        clen = buf[c + 2] << 8 | buf[c + 3]
        if clen >= 4:
            n = c + ((clen + 3) & ~3)
            if n + 4 <= pend and buf[n] == 6:
                t = 6
    return _SCTP_CODE[t]


def _walk6(buf, off, pend, nh):
    """Walk the IPv6 extension headers starting at off+40.  Returns
    (proto, l4off, fkind, fid, foff, mf) or None if they are malformed."""
    p = off + 40
    fkind = fid = foff = mf = 0
    seen_frag = False
    while nh in _EXT6:
        if p + 8 > pend:
            return None
        if nh == 44:
            if seen_frag:
                return None
            seen_frag = True
            nnh, fo, fid = _FRAG6.unpack_from(buf, p)
            foff = fo & 0xfff8
            mf = fo & 1
            p += 8
            nh = nnh
            if foff:
                fkind = 2
                break           # the rest is fragment data
            fkind = 1 if mf else 0
            continue
        if nh == 0 and p != off + 40:
            return None         # hop-by-hop must come first
        ln = (buf[p + 1] + 1) << 3
        if p + ln > pend:
            return None
        nh = buf[p]
        p += ln
    return nh, p, fkind, fid, foff, mf


def _parse_quoted(buf, off, end, af):
    """The packet quoted by an ICMP (`af` 4) / ICMPv6 (`af` 6) error at
    ``buf[off:end]``: the same layout as `parse`, with the exceptions listed
    in the module docstring (only its IP header and 8 bytes of L4 are
    guaranteed), or an ICMP_INNER_* reason."""
    avail = end - off
    if avail < (20 if af == 4 else 40) or buf[off] >> 4 != af:
        if avail >= 1 and buf[off] >> 4 != af:
            return ICMP_INNER_BAD
        return ICMP_INNER_TRUNCATED
    fkind = foff = mf = 0
    if af == 4:
        vihl, tlen, fid, frag, ttl, proto, saddr, daddr = _IP4.unpack_from(buf, off)
        hl = (vihl & 15) << 2
        if hl < 20 or tlen < hl:
            return ICMP_INNER_BAD
        if avail < hl:
            return ICMP_INNER_TRUNCATED
        if proto != 6 and proto != 17 and proto != 1 and proto != 132:
            return ICMP_INNER_UNSUPPORTED
        if frag & 0x3fff:
            foff = (frag & 0x1fff) << 3
            mf = (frag >> 13) & 1
            fkind = 2 if foff else 1
        l4 = off + hl
        ttloff = off + 8
    else:
        plen, nh, saddr, daddr = _IP6.unpack_from(buf, off)
        w = _walk6(buf, off, end, nh)
        if w is None:
            # an extension header runs past the quoted bytes: truncated by the
            # quote if the quoted packet claims to be longer, else malformed
            return ICMP_INNER_TRUNCATED if off + 40 + plen > end else ICMP_INNER_BAD
        proto, l4, fkind, fid, foff, mf = w
        if proto != 6 and proto != 17 and proto != 58 and proto != 132:
            return ICMP_INNER_UNSUPPORTED
        tlen = 40 + plen
        ttloff = off + 7
    # the L4 part (only 8 bytes guaranteed)
    if fkind == 2:
        return (af, proto, saddr, 0, daddr, 0, 0, off, l4, tlen, ttloff, -1,
                2, fid, foff, mf, 0, 0, None)
    if end - l4 < 8:
        return ICMP_INNER_TRUNCATED
    if proto == 6:
        sport, dport = _PORTS.unpack_from(buf, l4)
        flags = buf[l4 + 13] if end - l4 >= 14 else 0
        return (af, 6, saddr, sport, daddr, dport, flags, off, l4, tlen, ttloff, l4 + 16,
                fkind, fid, 0, mf, 0, 0, None)
    if proto == 17:
        sport, dport = _PORTS.unpack_from(buf, l4)
        return (af, 17, saddr, sport, daddr, dport, 0, off, l4, tlen, ttloff, l4 + 6,
                fkind, fid, 0, mf, 0, 0, None)
    if proto == 132:
        sport, dport = _PORTS.unpack_from(buf, l4)
        code = _sctp_code(buf, l4 + 12, end) if end - l4 >= 16 else 0
        return (af, 132, saddr, sport, daddr, dport, code, off, l4, tlen, ttloff, l4 + 8,
                fkind, fid, 0, mf, 0, 0, None)
    itype, icode, ident = _ICMP.unpack_from(buf, l4)
    if af == 4:
        port = ident if (itype == 8 or itype == 0) else 0
    else:
        port = ident if (itype == 128 or itype == 129) else 0
    return (af, proto, saddr, port, daddr, port, 0, off, l4, tlen, ttloff, l4 + 2,
            fkind, fid, 0, mf, itype, icode, None)


def is_icmp_error(r):
    """True if the parse result ``r`` is an ICMP/ICMPv6 error with a parsed
    quoted packet (``r[P_INNER]`` is not None)."""
    return r[P_INNER] is not None


def flow(r):
    """The flow key ``(proto, saddr, sport, daddr, dport)`` of a parse result."""
    return r[1:6]


def reverse_flow(r):
    """The flow key of the reverse direction ``(proto, daddr, dport, saddr, sport)``."""
    return (r[1], r[4], r[5], r[2], r[3])
