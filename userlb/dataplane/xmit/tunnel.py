"""Tunnelling (``-i``, IPVS TUNNEL; docs/forwarding.md): the client's packet,
unchanged, inside an outer packet to the real server, which decapsulates it
(it holds the VIP on a loopback or tunnel interface) and answers the client
itself.  Replies bypass the director: INPUT-ONLY entries, as dr.py.

Encapsulations (ipvsadm 1.31's ``--tun-type``):

* ``ipip`` (default): outer IP header, protocol 4 (IPv4 inside) or 41 (IPv6
  inside);
* ``gue``: outer UDP to ``--tun-port`` from a source port hashed from the
  inner flow (as the kernel's udp_flow_src_port: 32768..60999), a 4-byte GUE
  header (version 0, no options, proto_ctype 4 or 41); ``--tun-csum`` fills
  the outer UDP checksum, ``--tun-nocsum`` (default) leaves it 0;
  ``--tun-remcsum`` is the kernel's remote checksum offload, used only for
  packets whose checksum is still partial -- userlb completes those
  checksums itself, so it sends what ``--tun-nocsum`` sends;
* ``gre``: outer protocol 47, a GRE header with protocol 0x0800 / 0x86DD and,
  with ``--tun-csum``, the C bit and a checksum over the GRE header and
  payload.

The outer packet comes from the director's address on the way to the real
server, which the sans-I/O engine cannot look up: the driver tells it
(``Engine.tun_paths``: server address -> (source address, path MTU)); until
it has, packets for that server are dropped ('tunnel_no_path').  The outer
TTL / hop limit is the inner one; the outer IPv4 header carries DF when the
inner packet has it (always for IPv6 inside).  PMTU as IPVS: a packet that
would not fit the path MTU once encapsulated is answered with ICMP
"fragmentation needed" / ICMPv6 "packet too big" carrying the MTU less the
overhead, from the packet's destination (the VIP); an IPv4 packet without
DF goes out without DF (the kernel fragments the outer packet).  The outer
packet (verdict V_XMIT_IP) is sent by the driver as the director's own
packet (a raw IP socket, l2out.py), as IPVS sends it from the director's
output path: it is routed by the kernel and needs no IP forwarding.

With the TUN device's offloads, a packet whose L4 checksum is still partial
is completed here (``Engine.partial_csum``, set by vnet.py) before it is
wrapped, and a GSO super-packet is cut into the segments it stands for
(`segment`), each wrapped: ``eng.out`` is then a list of outer packets
('tunnel_gso' drops one that cannot be cut).
"""
from struct import Struct

from .. import nat
from ..csum import checksum, pseudo_sum4, pseudo_sum6
from ..packet import P_AF, parse
from ..verdict import R_TUN_GSO, R_TUN_TOO_BIG, V_REPLY, V_XMIT_IP
from . import dr

REPLIES = False
R_NO_PATH = "tunnel_no_path"

TUN_IPIP, TUN_GUE, TUN_GRE = 0, 1, 2
F_CSUM = 1

_IP4 = Struct("!BBHHHBBHII")
_IP6 = Struct("!IHBB16s16s")
_UDP = Struct("!HHHH")
_H = Struct("!H")
_PORT_LO, _PORT_N = 32768, 61000 - 32768


def overhead(tun, outer_af):
    """Bytes the encapsulation adds (outer IP header + UDP/GUE or GRE)."""
    ttype, _port, tflags = tun
    n = 20 if outer_af == 4 else 40
    if ttype == TUN_GUE:
        n += 8 + 4
    elif ttype == TUN_GRE:
        n += 8 if tflags & F_CSUM else 4
    return n


def prepare(xl, dec):
    xl.plan_out = None
    xl.in_only = True
    outer_af = 4 if type(xl.daddr) is int else 6
    inner_af = 4 if type(xl.vaddr) is int else 6
    hook = _hook(xl, xl.dest.tun, inner_af, outer_af)
    xl.plan_in = hook
    if inner_af == 4 and not dec:
        xl.fast_in = (0, 0, 0, 0, hook)
        xl.fast_out = (0, 0, 0, 0, None)
    else:
        xl.fast_in = xl.fast_out = None


def _complete_partial(eng, buf, n):
    """Finish a partial L4 checksum (vnet.py left the pseudo-header sum P
    as the ordinary checksum ~P in the field) over the whole segment."""
    cstart, pos = eng.partial_csum[:2]
    f = buf[pos] << 8 | buf[pos + 1]
    buf[pos] = buf[pos + 1] = 0
    c = checksum(buf, cstart, n, f ^ 0xFFFF)
    if c == 0 and pos - cstart == 6:      # UDP: a computed 0 is sent as 0xFFFF
        c = 0xFFFF
    _H.pack_into(buf, pos, c)


def segment(buf, n, l4, gso_type, gso_size):
    """The packets a GSO super-packet (TCPv4 1, TCPv6 4, UDP_L4 5) stands
    for, as the kernel's segmentation would cut it: each with its own IP
    length (IPv4: identification + i, header checksum), TCP sequence number
    (FIN/PSH only on the last, CWR only on the first) or UDP header, and a
    complete L4 checksum.  None if it cannot be cut (bad sizes)."""
    v4 = buf[0] >> 4 == 4
    udp = gso_type == 5
    if udp:
        hl = l4 + 8
    else:
        hl = l4 + ((buf[l4 + 12] >> 4) << 2)
    if gso_size <= 0 or hl >= n:
        return None
    head = buf[:hl]
    src, dst = (buf[12:16], buf[16:20]) if v4 else (buf[8:24], buf[24:40])
    psum = int.from_bytes(src, "big") % 0xFFFF + int.from_bytes(dst, "big") % 0xFFFF
    proto = 17 if udp else 6
    ipid = buf[4] << 8 | buf[5]
    seq = int.from_bytes(buf[l4 + 4:l4 + 8], "big")
    flags = buf[l4 + 13]
    out = []
    starts = range(hl, n, gso_size)
    last = len(starts) - 1
    for i, off in enumerate(starts):
        chunk = buf[off:min(off + gso_size, n)]
        p = bytearray(head) + chunk
        plen = len(p)
        l4len = plen - l4
        if v4:
            _H.pack_into(p, 2, plen)
            _H.pack_into(p, 4, (ipid + i) & 0xFFFF)
            p[10] = p[11] = 0
            _H.pack_into(p, 10, checksum(p, 0, l4))
        else:
            _H.pack_into(p, 4, plen - 40)
        if udp:
            _H.pack_into(p, l4 + 4, l4len)
            p[l4 + 6] = p[l4 + 7] = 0
            c = checksum(p, l4, plen, psum + proto + l4len) or 0xFFFF
            _H.pack_into(p, l4 + 6, c)
        else:
            p[l4 + 4:l4 + 8] = ((seq + off - hl) & 0xFFFFFFFF).to_bytes(4, "big")
            f = flags
            if i != last:
                f &= ~0x09                   # FIN, PSH: only the last segment
            if i:
                f &= ~0x80                   # CWR: only the first
            p[l4 + 13] = f
            p[l4 + 16] = p[l4 + 17] = 0
            _H.pack_into(p, l4 + 16, checksum(p, l4, plen, psum + proto + l4len))
        out.append(p)
    return out


def _flow_hash(buf, af):
    """A hash of the inner flow (addresses and the first L4 word: the ports),
    so that one flow keeps one outer source port."""
    if af == 4:
        l4 = (buf[0] & 15) << 2
        return hash((int.from_bytes(buf[12:20], "big"), int.from_bytes(buf[l4:l4 + 4], "big")))
    return hash((int.from_bytes(buf[8:40], "big"), int.from_bytes(buf[40:44], "big")))


def _hook(xl, tun, inner_af, outer_af):
    ttype, tport, tflags = tun
    daddr = xl.daddr
    over = overhead(tun, outer_af)
    inner_proto = 4 if inner_af == 4 else 41
    eth_proto = 0x0800 if inner_af == 4 else 0x86DD
    csum = bool(tflags & F_CSUM)

    def wrap(inner, src, sport, df, ttl, tos):
        n = len(inner)
        if ttype == TUN_GUE:
            payload = bytearray(_UDP.pack(sport, tport, 8 + 4 + n, 0))
            payload += bytes((0, inner_proto, 0, 0))
            payload += inner
            proto = 17
        elif ttype == TUN_GRE:
            if csum:
                payload = bytearray(_H.pack(0x8000) + _H.pack(eth_proto) + bytes(4)) + inner
                _H.pack_into(payload, 4, checksum(payload))
            else:
                payload = bytearray(_H.pack(0) + _H.pack(eth_proto)) + inner
            proto = 47
        else:
            payload = inner
            proto = inner_proto
        plen = len(payload)
        if outer_af == 4:
            hdr = bytearray(_IP4.pack(0x45, tos, 20 + plen, 0, 0x4000 if df else 0, ttl,
                                      proto, 0, src, daddr))
            _H.pack_into(hdr, 10, checksum(hdr))
            if proto == 17 and csum:
                c = checksum(payload, 0, plen, pseudo_sum4(src, daddr, 17, plen)) or 0xFFFF
                _H.pack_into(payload, 6, c)
        else:
            hdr = bytearray(_IP6.pack(0x60000000 | tos << 20, plen, proto, ttl, src, daddr))
            if proto == 17:
                # IPv6 requires a UDP checksum (the kernel fills it whatever the flag)
                c = checksum(payload, 0, plen, pseudo_sum6(src, daddr, 17, plen)) or 0xFFFF
                _H.pack_into(payload, 6, c)
        return hdr + payload

    def send(eng, buf, n, reasm=False):
        path = eng.tun_paths.get(daddr)
        if path is None:
            if eng.path_miss is not None:
                eng.path_miss(daddr)          # the driver looks it up (l2out.py)
            return eng._drop(R_NO_PATH)
        src, mtu = path
        segs = None
        part = eng.partial_csum
        if part:
            if part[2]:
                # a GSO super-packet: cut here, as the kernel would (complete checksums)
                segs = segment(buf, n, part[0], part[2], part[3])
                if segs is None:
                    return eng._drop(R_TUN_GSO)
            else:
                _complete_partial(eng, buf, n)
            eng.partial_csum = 0
        if inner_af == 4:
            df = buf[6] & 0x40
            ttl = buf[8]
            tos = buf[1]
        else:
            df = 0x40
            ttl = buf[7]
            tos = (buf[0] & 15) << 4 | buf[1] >> 4
        big = n if segs is None else len(segs[0])
        if big + over > mtu and df:
            return _too_big(eng, buf, n, mtu - over)
        sport = _PORT_LO + _flow_hash(buf, inner_af) % _PORT_N if ttype == TUN_GUE else 0
        if segs is None:
            eng.out = wrap(buf[:n], src, sport, df, ttl, tos)
        else:
            eng.out = [wrap(p, src, sport, df, ttl, tos) for p in segs]
        return V_XMIT_IP
    return send


def _too_big(eng, buf, n, mtu):
    """ICMP "fragmentation needed" / ICMPv6 "packet too big" with `mtu` to
    the client, from the VIP (the packet's destination)."""
    r = parse(buf, 0, n)
    if type(r) is str:
        return eng._drop(R_TUN_TOO_BIG)
    if r[P_AF] == 4:
        rep = nat.build_icmp_error(buf, r, 3, 4, None, max(mtu, 68) & 0xFFFF)
    else:
        rep = nat.build_icmp_error(buf, r, 2, 0, None, max(mtu, 1280))
    if rep is None:
        return eng._drop(R_TUN_TOO_BIG)
    eng.out = bytes(rep)
    eng.replies["icmp_frag_needed"] += 1
    eng.last_reason = R_TUN_TOO_BIG
    return V_REPLY


# the inner packet is left as it came, as with direct routing: the same
# xmit / icmp_xmit (the transmit hook in xl.plan_in differs)
xmit = dr.xmit
icmp_xmit = dr.icmp_xmit

