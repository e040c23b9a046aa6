"""Masquerade (IPVS NAT, ``-m``) rewriting in place, both directions, ICMP
errors, and the few reply packets the director builds itself.

All rewrites work on a writable buffer (``bytearray`` or writable
``memoryview``) together with its parse result ``r`` from
``packet.parse(buf, ...)``; offsets come from ``r`` so a leading virtio-net
header (``off`` > 0) is handled.  Nothing here raises for a packet that
``packet.parse`` accepted and that satisfies the documented preconditions.

Established-flow fast path (per connection, per direction)
----------------------------------------------------------
::

    plan = plan_in(vaddr, vport, daddr, dport)      # once, client -> server
    back = plan_out(daddr, dport, vaddr, vport)     # once, server -> client
    ...
    if ttl_expired(buf, r): ...                     # caller's decision
    rewrite(buf, r, plan)                           # every packet

A *plan* is an opaque tuple holding the new address bytes and port plus the
precomputed RFC 1624 deltas (``csum.delta_addr_port`` for the TCP/UDP
checksum — pseudo-header address + port — and ``csum.delta_ipv4_header`` for
the IPv4 header checksum incl. the TTL decrement).  ``rewrite`` then costs a
few slice stores and integer operations, independent of the packet size.

Preconditions of ``rewrite``: ``r`` is a TCP or UDP parse result of ``buf``,
not a later fragment (``r[P_FRAG] != FRAG_LATER``; a first fragment is fine:
its L4 checksum is adjusted incrementally), its old endpoint equals the
plan's old endpoint (``vaddr:vport`` as destination for ``plan_in``,
``daddr:dport`` as source for ``plan_out`` — which is what the connection
lookup established), and, when the plan decrements the TTL, the TTL / hop
limit is >= 1 (check ``ttl_expired`` first: a router drops a packet whose TTL
would reach 0 and answers ``build_time_exceeded``).

Checksum rules: the IPv4 header checksum and the TCP/UDP checksum are
updated incrementally (never recomputed over the payload); a UDP checksum of
0 ("no checksum", legal in IPv4) stays 0 — note: the kernel computes a fresh
one instead (docs/ipvs.md §5.3); we keep 0 so that we never touch the payload
(IPv6 UDP with checksum 0 is invalid; it is also left alone, the engine may
drop it) — and a computed UDP checksum of 0 is stored as 0xFFFF.

Not handled: an IPv6 packet whose routing header still has segments left
(its TCP/UDP pseudo-header uses the final destination, not the IPv6
destination field we rewrite); such a packet is not finally addressed to the
VIP, and the engine should not translate it.

ICMP errors (docs/ipvs.md §5.4)
--------------------------
``icmp_in(buf, r, daddr, dport)``: an error arriving from outside about a
packet the director sent to the client (quoted ``vaddr:vport -> caddr:cport``):
outer destination := daddr, quoted source := daddr:dport.
``icmp_out(buf, r, vaddr, vport)``: an error from the server side about a
packet the client sent (quoted ``caddr:cport -> daddr:dport``): outer source
:= vaddr, quoted destination := vaddr:vport.  Both fix the outer IPv4 header
checksum (and TTL), the quoted IPv4 header checksum, the quoted TCP/UDP
checksum when it is inside the quoted bytes, and the ICMP checksum (ICMPv6:
including its pseudo-header, so the outer address change counts).

Reply builders (allocate; not the established-flow path)
--------------------------------------------------------
``build_tcp_rst(buf, r)``, ``build_port_unreachable(buf, r)``,
``build_time_exceeded(buf, r, src)``, ``build_icmp_error(...)`` return a new
``bytearray`` holding an IP packet (no virtio header), or ``None`` when the
RFCs forbid an answer (RST to a RST; ICMP error about an ICMP error, a later
fragment, or a multicast/broadcast/unspecified address).
"""
from struct import Struct

from . import sctpcrc
from .csum import (
    apply,
    checksum,
    delta16,
    delta_addr,
    delta_addr_port,
    delta_ipv4_header,
    fold,
    pseudo_sum4,
    pseudo_sum6,
)
from .packet import (
    FRAG_LATER,
    ICMP_ERROR_TYPES,
    P_AF,
    P_CSUMOFF,
    P_DADDR,
    P_DPORT,
    P_FRAG,
    P_ICMP_TYPE,
    P_INNER,
    P_L3OFF,
    P_L4OFF,
    P_LEN,
    P_PROTO,
    P_SADDR,
    P_SPORT,
    P_TCPFLAGS,
    P_TTLOFF,
    TH_ACK,
    TH_FIN,
    TH_RST,
    TH_SYN,
)

_H = Struct("!H")
_TCPSEQ = Struct("!II")
_IP4HDR = Struct("!BBHHHBBHII")
_IP6HDR = Struct("!IHBB16s16s")
_TCPHDR = Struct("!HHIIBBHHH")
_ICMPHDR = Struct("!BBHI")

ICMP_QUOTE_MAX4 = 576     # Linux: an ICMP error is at most 576 bytes (IP header incl.)
ICMP_QUOTE_MAX6 = 1280    # RFC 4443: an ICMPv6 error must not exceed the IPv6 minimum MTU
DEFAULT_TTL = 64

# plan layout (opaque to callers; documented for tests)
_PL_V4 = 0         # True for IPv4
_PL_AOFF = 1       # address offset relative to the IP header
_PL_POFF = 2       # port offset relative to the L4 header (0 source, 2 destination)
_PL_ADDR = 3       # new address: int (IPv4) or 16 bytes (IPv6)
_PL_PORT = 4       # new port
_PL_L4D = 5        # TCP/UDP checksum delta (pseudo-header address + port)
_PL_IPD = 6        # IPv4 header checksum delta (address + TTL), 0 for IPv6
_PL_DEC = 7        # 1 if TTL / hop limit is decremented, else 0

_IPTAIL = Struct("!BBHII")       # IPv4 ttl, proto, checksum, saddr, daddr (at l3 + 8)
_A16 = Struct("16s")
_UDPH = Struct("!HHHH")          # sport, dport, length, checksum


def pack_addr(addr):
    """IPv4 int -> 4 bytes; IPv6 bytes -> the same 16 bytes."""
    if type(addr) is int:
        return addr.to_bytes(4, "big")
    return bytes(addr)


def _plan(v4_off, v6_off, poff, old_addr, old_port, new_addr, new_port, dec_ttl):
    v4 = type(new_addr) is int
    if v4 != (type(old_addr) is int):
        raise ValueError("masquerading between address families is not supported")
    if not v4:
        if len(new_addr) != 16 or len(old_addr) != 16:
            raise ValueError("IPv6 address must be 16 bytes")
        new_addr = bytes(new_addr)
    if not (0 <= new_port <= 0xFFFF and 0 <= old_port <= 0xFFFF):
        raise ValueError("port out of range")
    l4d = delta_addr_port(old_addr, old_port, new_addr, new_port)
    ipd = delta_ipv4_header(old_addr, new_addr, dec_ttl) if v4 else 0
    return (v4, v4_off if v4 else v6_off, poff, new_addr, new_port, l4d, ipd,
            1 if dec_ttl else 0)


def plan_in(vaddr, vport, daddr, dport, dec_ttl=True):
    """Plan for client -> server packets: destination vaddr:vport ->
    daddr:dport (the real server).  Computed once per connection."""
    return _plan(16, 24, 2, vaddr, vport, daddr, dport, dec_ttl)


def plan_out(daddr, dport, vaddr, vport, dec_ttl=True):
    """Plan for server -> client replies: source daddr:dport -> vaddr:vport."""
    return _plan(12, 8, 0, daddr, dport, vaddr, vport, dec_ttl)


def ttl_expired(buf, r):
    """True if a router must not forward this packet: TTL / hop limit <= 1
    (decrementing would reach 0).  Answer with ``build_time_exceeded``."""
    return buf[r[P_TTLOFF]] <= 1


def rewrite(buf, r, plan, _tu=_IPTAIL.unpack_from, _tp=_IPTAIL.pack_into,
            _a16=_A16.pack_into, _hu=_H.unpack_from, _hp=_H.pack_into,
            _uu=_UDPH.unpack_from, _up=_UDPH.pack_into):
    """Apply ``plan`` to the TCP/UDP packet ``buf`` parsed as ``r``, in place
    (preconditions in the module docstring).  Returns None.  (The underscore
    parameters are pre-bound struct methods, not for callers.)"""
    v4, aoff, poff, naddr, nport, l4d, ipd, dec = plan
    l3 = r[7]
    if v4:
        # TTL, protocol, header checksum and both addresses in one unpack/pack
        t = l3 + 8
        ttl, proto, hc, sa, da = _tu(buf, t)
        x = (hc ^ 0xFFFF) + ipd
        x = ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF
        if aoff == 16:
            _tp(buf, t, (ttl - dec) & 0xFF, proto, x, sa, naddr)
        else:
            _tp(buf, t, (ttl - dec) & 0xFF, proto, x, naddr, da)
    else:
        _a16(buf, l3 + aoff, naddr)
        if dec:
            t = l3 + 7
            buf[t] = (buf[t] - 1) & 0xFF
    l4 = r[8]
    if r[1] == 6:
        _hp(buf, l4 + poff, nport)
        c = l4 + 16
        x = (_hu(buf, c)[0] ^ 0xFFFF) + l4d
        _hp(buf, c, ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF)
    elif r[1] == 132:
        # SCTP: no pseudo-header in its CRC32c; recomputed when the port
        # changes (docs/ipvs.md §5.3, docs/sctp.md)
        if _hu(buf, l4 + poff)[0] != nport:
            sctpcrc.set_port(buf, l4, l3 + r[9], poff, nport)
    else:
        sp, dp, ln, hc = _uu(buf, l4)
        if hc:
            x = (hc ^ 0xFFFF) + l4d
            hc = ((x & 0xFFFF) + (x >> 16)) ^ 0xFFFF
            if not hc:
                hc = 0xFFFF
        if poff:
            _up(buf, l4, sp, nport, ln, hc)
        else:
            _up(buf, l4, nport, dp, ln, hc)


def masq_in(buf, r, daddr, dport, dec_ttl=True):
    """One-off inbound rewrite (computes the plan from the packet itself):
    destination := daddr:dport.  Convenience for tests / first packets."""
    rewrite(buf, r, plan_in(r[P_DADDR], r[P_DPORT], daddr, dport, dec_ttl))


def masq_out(buf, r, vaddr, vport, dec_ttl=True):
    """One-off outbound rewrite: source := vaddr:vport."""
    rewrite(buf, r, plan_out(r[P_SADDR], r[P_SPORT], vaddr, vport, dec_ttl))


# ---------------------------------------------------------------- ICMP errors

def _get16(buf, off):
    return buf[off] << 8 | buf[off + 1]


def _put16(buf, off, v):
    buf[off] = v >> 8
    buf[off + 1] = v & 0xFF


def _put_addr(buf, off, addr):
    b = pack_addr(addr)
    buf[off:off + len(b)] = b


def _icmp_rewrite(buf, r, outer_is_src, new_addr, new_port, dec_ttl):
    af = r[P_AF]
    l3 = r[P_L3OFF]
    pend = l3 + r[P_LEN]
    inner = r[P_INNER]
    il3 = inner[P_L3OFF]
    il4 = inner[P_L4OFF]
    iproto = inner[P_PROTO]
    v4 = af == 4
    if v4 != (type(new_addr) is int):
        raise ValueError("address family mismatch")
    icmp_d = 0   # accumulated delta for the ICMP checksum

    # outer address (+ TTL, + IPv4 header checksum / ICMPv6 pseudo-header)
    if outer_is_src:
        old_outer = r[P_SADDR]
        oa = l3 + (12 if v4 else 8)
    else:
        old_outer = r[P_DADDR]
        oa = l3 + (16 if v4 else 24)
    _put_addr(buf, oa, new_addr)
    if dec_ttl:
        buf[r[P_TTLOFF]] -= 1
    if v4:
        _put16(buf, l3 + 10, apply(_get16(buf, l3 + 10),
                                   delta_ipv4_header(old_outer, new_addr, dec_ttl)))
    else:
        icmp_d += delta_addr(old_outer, new_addr)

    # quoted address: the quoted packet travelled the other way, so an error
    # about it names our rewritten endpoint on the opposite side
    if outer_is_src:
        old_in, old_port = inner[P_DADDR], inner[P_DPORT]
        ia = il3 + (16 if v4 else 24)
        ip = il4 + 2
    else:
        old_in, old_port = inner[P_SADDR], inner[P_SPORT]
        ia = il3 + (12 if v4 else 8)
        ip = il4
    _put_addr(buf, ia, new_addr)
    ad = delta_addr(old_in, new_addr)
    icmp_d += ad
    if v4:
        oc = _get16(buf, il3 + 10)
        nc = apply(oc, ad)
        _put16(buf, il3 + 10, nc)
        icmp_d += delta16(oc, nc)

    if inner[P_FRAG] != FRAG_LATER:
        if iproto == 132:
            # the quoted SCTP port; its CRC32c is left alone (as IPVS does:
            # the quote is usually cut, and the CRC covers the whole packet)
            _put16(buf, ip, new_port)
            icmp_d += delta16(old_port, new_port)
        elif iproto == 6 or iproto == 17:
            _put16(buf, ip, new_port)
            icmp_d += delta16(old_port, new_port)
            c = inner[P_CSUMOFF]
            if c + 2 <= pend:
                oc = _get16(buf, c)
                if oc or iproto == 6:
                    nc = apply(oc, delta_addr_port(old_in, old_port, new_addr, new_port))
                    if not nc and iproto == 17:
                        nc = 0xFFFF
                    _put16(buf, c, nc)
                    icmp_d += delta16(oc, nc)
        elif iproto == 58:
            # quoted ICMPv6 checksum covers its pseudo-header addresses
            c = inner[P_CSUMOFF]
            if c + 2 <= pend:
                oc = _get16(buf, c)
                nc = apply(oc, ad)
                _put16(buf, c, nc)
                icmp_d += delta16(oc, nc)

    c = r[P_CSUMOFF]
    _put16(buf, c, apply(_get16(buf, c), fold(icmp_d)))


def icmp_in(buf, r, daddr, dport, dec_ttl=True):
    """ICMP/ICMPv6 error from outside about a director -> client packet
    (quoted vaddr:vport -> caddr:cport), to be forwarded to the real server:
    outer destination := daddr; quoted source := daddr:dport (port only for
    quoted TCP/UDP).  ``r[P_INNER]`` must be a parsed quoted packet."""
    _icmp_rewrite(buf, r, False, daddr, dport, dec_ttl)


def icmp_out(buf, r, vaddr, vport, dec_ttl=True):
    """ICMP/ICMPv6 error from the server side about a client -> server packet
    (quoted caddr:cport -> daddr:dport), to be sent to the client: outer
    source := vaddr; quoted destination := vaddr:vport."""
    _icmp_rewrite(buf, r, True, vaddr, vport, dec_ttl)


# ---------------------------------------------------------------- builders

def _ip4_header(src, dst, proto, payload_len, ttl, df=True):
    hdr = bytearray(_IP4HDR.pack(0x45, 0, 20 + payload_len, 0, 0x4000 if df else 0,
                                 ttl, proto, 0, src, dst))
    _H.pack_into(hdr, 10, checksum(hdr))
    return hdr


def _ip6_header(src, dst, proto, payload_len, hlim):
    return bytearray(_IP6HDR.pack(0x60000000, payload_len, proto, hlim, src, dst))


def build_tcp_rst(buf, r, ttl=DEFAULT_TTL):
    """A TCP RST answering the TCP segment ``r`` (as a stack with no socket
    would, RFC 793 "Reset Generation"): from the segment's destination to its
    source; if the segment has ACK: ``seq = SEG.ACK``, flags RST; otherwise
    ``seq = 0, ack = SEG.SEQ + SEG.LEN`` (SYN and FIN count 1), flags
    RST|ACK.  Returns None for a RST, a non-TCP packet or a later fragment."""
    if r[P_PROTO] != 6 or r[P_FRAG] == FRAG_LATER:
        return None
    flags = r[P_TCPFLAGS]
    if flags & TH_RST:
        return None
    l3 = r[P_L3OFF]
    l4 = r[P_L4OFF]
    pend = l3 + r[P_LEN]
    seq, ack = _TCPSEQ.unpack_from(buf, l4 + 4)
    doff = (buf[l4 + 12] >> 4) << 2
    if flags & TH_ACK:
        rseq, rack, rflags = ack, 0, TH_RST
    else:
        seglen = pend - l4 - doff + (1 if flags & TH_SYN else 0) + (1 if flags & TH_FIN else 0)
        rseq, rack, rflags = 0, (seq + seglen) & 0xFFFFFFFF, TH_RST | TH_ACK
    src, dst = r[P_DADDR], r[P_SADDR]
    tcp = bytearray(_TCPHDR.pack(r[P_DPORT], r[P_SPORT], rseq, rack, 5 << 4, rflags, 0, 0, 0))
    if r[P_AF] == 4:
        _H.pack_into(tcp, 16, checksum(tcp, initial=pseudo_sum4(src, dst, 6, 20)))
        return _ip4_header(src, dst, 6, 20, ttl) + tcp
    _H.pack_into(tcp, 16, checksum(tcp, initial=pseudo_sum6(src, dst, 6, 20)))
    return _ip6_header(src, dst, 6, 20, ttl) + tcp


def _no_error_about(r, buf):
    """RFC 1122 3.2.2 / RFC 4443 2.4(e): packets never answered with an ICMP error."""
    if r[P_FRAG] == FRAG_LATER:
        return True
    af = r[P_AF]
    src, dst = r[P_SADDR], r[P_DADDR]
    if af == 4:
        if r[P_PROTO] == 1 and (r[P_INNER] is not None or r[P_ICMP_TYPE] == 5
                                or r[P_ICMP_TYPE] in ICMP_ERROR_TYPES):
            return True
        if dst >= 0xE0000000 or src >= 0xE0000000 or src == 0 or (src >> 24) == 127:
            return True
        return False
    if r[P_PROTO] == 58 and (r[P_ICMP_TYPE] < 128 or r[P_ICMP_TYPE] == 137):
        return True
    if dst[0] == 0xFF or src[0] == 0xFF or src == bytes(16):
        return True
    return False


def build_icmp_error(buf, r, icmp_type, code, src=None, rest=0, ttl=DEFAULT_TTL):
    """An ICMP (IPv4) or ICMPv6 (IPv6) error of ``icmp_type``/``code`` about
    the packet ``r``, sent to its source from ``src`` (default: its
    destination, e.g. the VIP).  ``rest`` is the 32-bit field after the
    checksum (unused / pointer / MTU).  Quotes the original from its IP
    header: IPv4 up to 576 bytes in total (>= IP header + 8 as RFC 792
    requires), IPv6 up to 1280 bytes in total (RFC 4443).  Returns None when
    no error may be sent (see ``_no_error_about``)."""
    if _no_error_about(r, buf):
        return None
    l3 = r[P_L3OFF]
    pend = l3 + r[P_LEN]
    if src is None:
        src = r[P_DADDR]
    dst = r[P_SADDR]
    if r[P_AF] == 4:
        if type(src) is not int:
            raise ValueError("IPv4 packet needs an IPv4 source")
        q = min(pend - l3, ICMP_QUOTE_MAX4 - 28)
        msg = bytearray(_ICMPHDR.pack(icmp_type, code, 0, rest)) + buf[l3:l3 + q]
        _H.pack_into(msg, 2, checksum(msg))
        return _ip4_header(src, dst, 1, len(msg), ttl, df=False) + msg
    if type(src) is int or len(src) != 16:
        raise ValueError("IPv6 packet needs an IPv6 source")
    src = bytes(src)
    q = min(pend - l3, ICMP_QUOTE_MAX6 - 48)
    msg = bytearray(_ICMPHDR.pack(icmp_type, code, 0, rest)) + buf[l3:l3 + q]
    _H.pack_into(msg, 2, checksum(msg, initial=pseudo_sum6(src, dst, 58, len(msg))))
    return _ip6_header(src, dst, 58, len(msg), ttl) + msg


def build_port_unreachable(buf, r, src=None, ttl=DEFAULT_TTL):
    """ICMP dest-unreachable/port-unreachable (3/3) or ICMPv6 (1/4) answering
    ``r``, from its destination (the VIP) unless ``src`` is given."""
    if r[P_AF] == 4:
        return build_icmp_error(buf, r, 3, 3, src, 0, ttl)
    return build_icmp_error(buf, r, 1, 4, src, 0, ttl)


def build_time_exceeded(buf, r, src, ttl=DEFAULT_TTL):
    """ICMP time-exceeded in transit (11/0) or ICMPv6 (3/0) answering ``r``,
    from ``src`` (the director's own address on the incoming side)."""
    if r[P_AF] == 4:
        return build_icmp_error(buf, r, 11, 0, src, 0, ttl)
    return build_icmp_error(buf, r, 3, 0, src, 0, ttl)
