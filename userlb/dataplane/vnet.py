"""The virtio-net header of a TUN device opened with ``IFF_VNET_HDR`` (sans-I/O).

With offloads on (``TUNSETOFFLOAD`` ``TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6``
[``| TUN_F_USO4 | TUN_F_USO6``]) every read from the device starts with a
10-byte ``struct virtio_net_hdr`` (we set ``TUNSETVNETHDRSZ`` to 10: no
``num_buffers``, which only matters for mergeable receive buffers), native
(= little-endian here) byte order::

    u8 flags        NEEDS_CSUM (1), DATA_VALID (2)
    u8 gso_type     NONE (0), TCPV4 (1), UDP (3, UFO), TCPV6 (4), UDP_L4 (5); | ECN (0x80)
    u16 hdr_len     length of the headers (a hint)
    u16 gso_size    segment payload size (MSS) of a GSO super-packet
    u16 csum_start  where the L4 checksum starts (= the L4 header's offset)
    u16 csum_offset where the checksum field is, from csum_start (TCP 16, UDP 6)

and the IP packet follows.  The driver reads the header into its own small
buffer (``readv`` scatters: [header, packet]), so the engine still sees the
packet at offset 0 and its API does not change.

**Partial checksums.**  With ``NEEDS_CSUM`` the TCP/UDP checksum field holds
the *non-inverted*, folded pseudo-header sum P (addresses, protocol, L4
length); whoever sends the packet on sums from ``csum_start`` to the end
(field included), folds and inverts.  For GSO super-packets the length in the
pseudo-header is the super-packet's L4 length (the kernel's TCP/UDP
segmentation subtracts it and adds each segment's own; we never change the
length, so either convention is preserved).  The NAT rewrite changes the
addresses (in P) and the ports (not in P: they are summed by whoever
completes the checksum), so the field must become P + delta(addresses) --
not the full-checksum update ~(~C + delta(addresses + ports)) the engine
applies.  The engine's IPv4 fast path (fast4.py) knows that second mode:
``VnetPath.process`` hands it NEEDS_CSUM packets whose header puts the
checksum where an IPv4 header without options would (``process(buf, n, now,
field offset)``; it returns None for anything it does not finish).  For the
other paths, rather than teaching each of them the second mode,
``VnetPath.offloaded`` turns the field into an ordinary inverted checksum of the same
sum before the engine runs (F = ~P), lets the engine apply its usual RFC 1624
update (F' = ~(P + d_addr + d_port)), and turns it back afterwards, taking
out the port delta it can see in the packet: P' = ~F' - d_port.  (In ones'
complement arithmetic 0 and 0xFFFF are the same number, so F = ~P is stored
as 0xFFFF when it would be 0: the engine's "UDP checksum 0 = none" rule must
not see it.)  The virtio header is written back unchanged (the NAT changes no
length or offset): the kernel then segments the super-packet / completes the
checksum on the way out.

**What is refused** (counted in ``drops`` under the reason, never
forwarded): flags other than NEEDS_CSUM / DATA_VALID ('vnet_flags'); a GSO
type we do not know or did not ask for (UFO, ECN) or one that does not match
the packet ('vnet_gso_type'); GSO without NEEDS_CSUM ('vnet_gso_no_csum');
NEEDS_CSUM on a fragment ('vnet_frag'), on anything but TCP/UDP directly
after the IP header (IPv6 extension headers included: 'vnet_csum_proto'),
with csum_start / csum_offset not where the parsed L4 checksum is
('vnet_csum_start', 'vnet_csum_offset'), or on a packet too short for its
headers ('vnet_short'); a partial-checksum packet for which the engine builds
a new datagram (V_FORWARD_OUT: 'vnet_verdict').  Answers built by the engine
(RST, ICMP errors: V_REPLY) and reassembled datagrams go out with a zeroed
header (``ZERO_HDR``): their checksums are complete.
"""
from collections import Counter
from struct import Struct

from .engine import V_DROP, V_FORWARD, V_FORWARD_OUT, V_XMIT_IP, V_XMIT_L2

VNET_HDR_LEN = 10

F_NEEDS_CSUM = 1
F_DATA_VALID = 2

GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3          # UFO: never asked for (no TUN_F_UFO), refused
GSO_TCPV6 = 4
GSO_UDP_L4 = 5       # USO
GSO_ECN = 0x80       # never asked for (no TUN_F_TSO_ECN), refused

HDR = Struct("<BBHHHH")   # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
ZERO_HDR = bytes(VNET_HDR_LEN)

# (gso_type, csum_offset) -> the checksum field's offset in an IPv4 packet
# without options, for the headers the IPv4 fast path takes as they are
# (no GSO or the protocol's own; TCP's field at 16, UDP's at 6)
_FAST4_CSUM = {(GSO_NONE, 16): 36, (GSO_TCPV4, 16): 36, (GSO_NONE, 6): 26, (GSO_UDP_L4, 6): 26}
_GT_COFF = Struct("<B6xH").unpack_from     # at offset 1: gso_type, csum_offset

_I = Struct("!I")
_H = Struct("!H")

R_FLAGS = "vnet_flags"
R_GSO_TYPE = "vnet_gso_type"
R_GSO_NO_CSUM = "vnet_gso_no_csum"
R_FRAG = "vnet_frag"
R_CSUM_PROTO = "vnet_csum_proto"
R_CSUM_START = "vnet_csum_start"
R_CSUM_OFFSET = "vnet_csum_offset"
R_SHORT = "vnet_short"
R_VERDICT = "vnet_verdict"
ALL_REASONS = (R_FLAGS, R_GSO_TYPE, R_GSO_NO_CSUM, R_FRAG, R_CSUM_PROTO, R_CSUM_START,
               R_CSUM_OFFSET, R_SHORT, R_VERDICT)


def pack_hdr(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0):
    return HDR.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


class VnetPath:
    """An engine behind a virtio-net header.

    ``process(hdr, buf, n, now)``: ``hdr`` the 10 header bytes as read,
    ``buf[:n]`` the IP packet.  Returns the engine's verdict; the caller then
    writes ``hdr`` (unchanged) + ``buf[:engine.out_len]`` for V_FORWARD and
    ``ZERO_HDR`` + ``engine.out`` for V_REPLY / V_FORWARD_OUT.

    Counters: ``gso`` (GSO super-packets handed to the engine), ``partial``
    (NEEDS_CSUM packets without GSO), ``drops`` (Counter of the reasons
    above; the engine's own drops stay in ``engine.drops``), ``last_reason``.
    """

    def __init__(self, engine):
        self.engine = engine
        self.drops = Counter()
        self.gso = 0
        self.partial = 0
        self.last_reason = None

    @property
    def engine(self):
        return self._eng

    @engine.setter
    def engine(self, engine):
        self._eng = engine
        self._proc = engine.process
        # an engine whose process() takes the partial checksum as it is
        # (fast4.Fast4.takes_partial; looked up on the class: a wrapper such
        # as the pcap tap forwards attributes but not that argument)
        self._fast4 = getattr(type(engine), "takes_partial", False)
        #: (header bytes, field offset, is GSO, engine.process) of the last
        #: header handed to the engine's fast path with its partial checksum,
        #: for the driver's loop (tun.py), which sends packets with the same
        #: header bytes there directly -- the same bytes pass the same header
        #: checks -- and counts them as `process` would
        self.fast = (b"", 0, False, self._proc)     # b"": matches no header

    def _drop(self, reason):
        self.last_reason = reason
        self.drops[reason] += 1
        return V_DROP

    def process(self, hdr, buf, n, now):
        f = hdr[0]
        if not hdr[1] and (f == 0 or f == F_DATA_VALID):
            # checksum complete (or validated): the engine's ordinary case
            return self._proc(buf, n, now)
        # NEEDS_CSUM with csum_start 20: maybe IPv4 without options, which the
        # engine's fast path takes with its partial checksum as it is
        # (fast4.py; it returns None for anything it does not finish)
        pos = 0
        if f == F_NEEDS_CSUM and hdr[6] == 20 and not hdr[7] and self._fast4:
            pos = _FAST4_CSUM.get(_GT_COFF(hdr, 1), 0)
        if pos:
            self.fast = (bytes(hdr), pos, bool(hdr[1]), self._proc)
            v = self._proc(buf, n, now, pos)
            if v is not None:
                if v == V_FORWARD:
                    if hdr[1]:
                        self.gso += 1
                    else:
                        self.partial += 1
                return v
        return self.offloaded(hdr, buf, n, now)

    def offloaded(self, hdr, buf, n, now):
        """A packet with NEEDS_CSUM and/or a GSO type (see the module doc)."""
        flags, gt, _hl, _gs, cstart, coff = HDR.unpack_from(hdr)
        if flags & ~(F_NEEDS_CSUM | F_DATA_VALID):
            return self._drop(R_FLAGS)
        if gt & GSO_ECN:
            return self._drop(R_GSO_TYPE)
        if not flags & F_NEEDS_CSUM:
            return self._drop(R_GSO_NO_CSUM)      # gso_type != NONE here
        if n < 20:
            return self._drop(R_SHORT)
        b0 = buf[0]
        if b0 >> 4 == 4:
            l4 = (b0 & 15) << 2
            proto = buf[9]
            if buf[6] & 0x3F or buf[7]:           # MF or a fragment offset
                return self._drop(R_FRAG)
            gso_tcp = GSO_TCPV4
        elif b0 >> 4 == 6:
            l4 = 40
            proto = buf[6]
            gso_tcp = GSO_TCPV6
        else:
            return self._drop(R_CSUM_PROTO)
        if proto == 6:
            want = 16
            hlen = 20
            if gt and gt != gso_tcp:
                return self._drop(R_GSO_TYPE)
        elif proto == 17:
            want = 6
            hlen = 8
            if gt and gt != GSO_UDP_L4:
                return self._drop(R_GSO_TYPE)
        else:
            return self._drop(R_CSUM_PROTO)
        if cstart != l4:
            return self._drop(R_CSUM_START)
        if coff != want:
            return self._drop(R_CSUM_OFFSET)
        if n < l4 + hlen:
            return self._drop(R_SHORT)
        pos = l4 + want
        ports = _I.unpack_from(buf, l4)[0]
        p = buf[pos] << 8 | buf[pos + 1]
        # partial (non-inverted) sum -> an ordinary inverted checksum of it
        _H.pack_into(buf, pos, (p ^ 0xFFFF) or 0xFFFF)
        eng = self._eng
        eng.partial_csum = (l4, pos, gt, _gs)   # a tunnel completes it (xmit/tunnel.py)
        v = eng.process(buf, n, now)
        completed = eng.partial_csum == 0
        eng.partial_csum = 0
        if v == V_FORWARD or v == V_XMIT_L2:
            # (direct routing: the packet is unchanged and goes out with this header)
            # the packet was rewritten in place: same layout
            nports = _I.unpack_from(buf, l4)[0]
            x = ((buf[pos] << 8 | buf[pos + 1]) ^ 0xFFFF) + (ports >> 16) + (ports & 0xFFFF) \
                + ((nports >> 16) ^ 0xFFFF) + ((nports & 0xFFFF) ^ 0xFFFF)
            x = (x & 0xFFFF) + (x >> 16)
            x = (x & 0xFFFF) + (x >> 16)
            _H.pack_into(buf, pos, x)
            if gt:
                self.gso += 1
            else:
                self.partial += 1
            return v
        if v == V_FORWARD_OUT or v == V_XMIT_IP:
            if not completed:
                # a datagram built aside would carry the temporary field (a tunnel's
                # outer packets are fine: it completed the inner checksums)
                return self._drop(R_VERDICT)
            if gt:
                self.gso += 1
            else:
                self.partial += 1
        return v

    def counters(self):
        out = {"gso": self.gso, "partial": self.partial}
        for k, c in sorted(self.drops.items()):
            out[k] = c
        return out
