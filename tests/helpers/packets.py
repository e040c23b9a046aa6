"""Packet generators (hypothesis strategies) shared by the packet / nat tests,
checked against scapy's dissector by tests/dataplane/test_packet_gen.py.

The strategies build packets directly as bytes (building thousands of scapy
packet objects would dominate the test run time); every generated packet is
cross-checked against scapy here, and the rewrite tests verify their results
with scapy's checksum functions.

Imported as ``from helpers.packets import ...``.
"""
import ipaddress
import struct

from hypothesis import HealthCheck
from hypothesis import strategies as st

from userlb.dataplane import csum

# ---------------------------------------------------------------- building blocks

addr4 = st.integers(min_value=1, max_value=0xDFFFFFFF)            # unicast-ish
addr6 = st.binary(min_size=16, max_size=16).map(
    lambda b: bytes([b[0] & 0xFE or 0x20]) + b[1:])              # never multicast (ff..)
port = st.integers(min_value=0, max_value=65535)
payload = st.binary(min_size=0, max_size=120)

# strategies built once (building them inside composites costs more than drawing)
_BOOL = st.booleans()
_U16 = st.integers(0, 65535)
_U32 = st.integers(0, 2**32 - 1)
_TTL = st.integers(2, 255)
_INT_0_3 = st.integers(0, 3)
_INT_0_12 = st.integers(0, 12)
_INT_0_14 = st.integers(0, 14)
_IP4_OPT_KINDS = st.lists(st.sampled_from(["nop", "rr"]), max_size=4)
_TCP_OPT_KINDS = st.lists(st.sampled_from(["mss", "nop", "ws", "sack", "ts"]), max_size=5)
_EXT_KINDS = st.lists(st.sampled_from(["dst", "rt", "frag"]), max_size=3, unique=True)
_QUOTE_PICK = st.integers(0, 1999)     # < 1000: whole packet; else a cut point
_ICMP_REST = st.sampled_from([0, 1280, 0x1C000000])
_OFFSETS = st.sampled_from([0, 0, 10])
_PAD = st.binary(max_size=6)

# generation is slow on a busy 2-core machine; that is not a bug
SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]


def a4(x):
    return f"{x >> 24}.{(x >> 16) & 255}.{(x >> 8) & 255}.{x & 255}"


def a6(b):
    return str(ipaddress.IPv6Address(bytes(b)))


@st.composite
def ip4_options(draw):
    """IPv4 options (NOP, record-route), EOL-padded to a multiple of 4, <= 40 bytes."""
    out = b""
    for kind in draw(_IP4_OPT_KINDS):
        if kind == "nop":
            opt = b"\x01"
        else:
            n = draw(_INT_0_3)
            opt = bytes([7, 3 + 4 * n, 4]) + b"".join(
                draw(addr4).to_bytes(4, "big") for _ in range(n))
        if len(out) + len(opt) > 40:
            break
        out += opt
    return out + b"\0" * (-len(out) % 4)


@st.composite
def tcp_options(draw):
    """TCP options (MSS, NOP, WScale, SACK-permitted, timestamps), padded, <= 40 bytes."""
    out = b""
    for kind in draw(_TCP_OPT_KINDS):
        if kind == "mss":
            opt = struct.pack("!BBH", 2, 4, draw(_U16))
        elif kind == "nop":
            opt = b"\x01"
        elif kind == "ws":
            opt = bytes([3, 3, draw(_INT_0_14)])
        elif kind == "sack":
            opt = b"\x04\x02"
        else:
            opt = struct.pack("!BBII", 8, 10, draw(_U32), draw(_U32))
        if len(out) + len(opt) > 40:
            break
        out += opt
    return out + b"\0" * (-len(out) % 4)


def _padn_block(nh, pad):
    """A hop-by-hop / destination-options header holding one PadN option."""
    body = bytes([1, pad]) + b"\0" * pad
    body += b"\0" * (-(len(body) + 2) % 8)          # more padding as Pad1 bytes
    return bytes([nh, (len(body) + 2) // 8 - 1]) + body


@st.composite
def ip6_ext_chain(draw):
    """A list of (kind, parameter) extension headers: hop-by-hop first if
    present; routing headers with segments-left 0 (the pseudo-header then
    uses the IPv6 destination); an optional atomic fragment header."""
    chain = []
    if draw(_BOOL):
        chain.append(("hop", draw(_INT_0_12)))
    for kind in draw(_EXT_KINDS):
        if kind == "dst":
            chain.append(("dst", draw(_INT_0_12)))
        elif kind == "rt":
            chain.append(("rt", 0))
        else:
            chain.append(("frag", draw(_U32)))
    return chain


def build_ext_chain(chain, final_nh):
    """Bytes of the chain and the first next-header value."""
    codes = {"hop": 0, "dst": 60, "rt": 43, "frag": 44}
    out = b""
    for i in range(len(chain) - 1, -1, -1):
        kind, param = chain[i]
        nh = final_nh if i == len(chain) - 1 else codes[chain[i + 1][0]]
        if kind in ("hop", "dst"):
            h = _padn_block(nh, param)
        elif kind == "rt":
            h = bytes([nh, 0, 0, 0]) + b"\0" * 4      # type 0, segments left 0
        else:
            h = struct.pack("!BBHI", nh, 0, 0, param)  # atomic fragment
        out = h + out
    first = codes[chain[0][0]] if chain else final_nh
    return out, first


def l4_checksum(af, src, dst, proto, l4):
    if af == 4:
        return csum.checksum(l4, initial=csum.pseudo_sum4(src, dst, proto, len(l4)))
    return csum.checksum(l4, initial=csum.pseudo_sum6(src, dst, proto, len(l4)))


def assemble(af, src, dst, proto, l4, ttl=64, ipid=0, tos=0, df=0, options=b"", chain=(),
             fl=0, frag=0):
    """An IP packet around an L4 message (whose checksum is already set)."""
    if af == 4:
        hl = 20 + len(options)
        hdr = bytearray(struct.pack("!BBHHHBBHII", 0x40 | hl // 4, tos, hl + len(l4), ipid,
                                    (0x4000 if df else 0) | frag, ttl, proto, 0, src, dst))
        hdr += options
        struct.pack_into("!H", hdr, 10, csum.checksum(hdr))
        return bytes(hdr) + l4
    ext, first = build_ext_chain(list(chain), proto)
    return struct.pack("!IHBB16s16s", 0x60000000 | (tos << 20) | fl, len(ext) + len(l4),
                       first, ttl, src, dst) + ext + l4


_FIXED = struct.Struct("!HHIIBHHBHBBIB")   # random fixed-size fields, drawn as one blob
_FIXED_BLOB = st.binary(min_size=_FIXED.size, max_size=_FIXED.size)


@st.composite
def ip_packet(draw, af, proto=None, src=None, dst=None, allow_zero_udp=True):
    """(meta, raw bytes) of an unfragmented TCP/UDP packet with random IPv4
    options / IPv6 extension headers and payload.  meta: dict with af, proto,
    src, dst, sport, dport, ttl, flags, l4off (from the IP header), csum.
    (Few hypothesis draws per packet: the fixed-size fields come from one
    binary draw, which keeps generation cheap.)"""
    (sport, dport, seq, ack, flags, win, urg, ttl, ipid, tos, misc, fl,
     pick) = _FIXED.unpack(draw(_FIXED_BLOB))
    if proto is None:
        proto = 6 if pick & 1 else 17
    src = draw(addr4 if af == 4 else addr6) if src is None else src
    dst = draw(addr4 if af == 4 else addr6) if dst is None else dst
    ttl = 2 + ttl % 254
    pl = draw(payload)
    if proto == 6:
        opts = draw(tcp_options())
        l4 = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (20 + len(opts)) << 2,
                                   flags, win, 0, urg) + opts + pl)
        c = l4_checksum(af, src, dst, 6, l4)
        struct.pack_into("!H", l4, 16, c)
    else:
        flags = 0
        l4 = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(pl), 0) + pl)
        zero = af == 4 and allow_zero_udp and (pick >> 1) & 7 == 0
        c = 0 if zero else (l4_checksum(af, src, dst, 17, l4) or 0xFFFF)
        struct.pack_into("!H", l4, 6, c)
    if af == 4:
        options = draw(ip4_options())
        rawb = assemble(4, src, dst, proto, bytes(l4), ttl, ipid, tos, misc & 1, options)
        l4off = 20 + len(options)
    else:
        chain = draw(ip6_ext_chain())
        rawb = assemble(6, src, dst, proto, bytes(l4), ttl, tos=tos, chain=chain,
                        fl=fl & 0xFFFFF)
        l4off = len(rawb) - len(l4)
    meta = dict(af=af, proto=proto, src=src, dst=dst, sport=sport, dport=dport, ttl=ttl,
                flags=flags, l4off=l4off, csum=c)
    return meta, rawb


@st.composite
def framed(draw, raw):
    """(buffer, off, end): the packet behind an optional 10-byte junk prefix
    (virtio-net header) and followed by optional padding."""
    off = draw(_OFFSETS)
    pre = b"\x5a" * off if off else b""
    pad = draw(_PAD)
    buf = bytearray(pre + raw + pad)
    return buf, off, len(buf)


ICMP4_ERRORS = [(3, c) for c in range(16)] + [(4, 0), (11, 0), (11, 1), (12, 0)]
ICMP6_ERRORS = [(1, c) for c in range(7)] + [(2, 0), (3, 0), (3, 1), (4, 0), (4, 1), (4, 2)]
_ICMP4_ERR = st.sampled_from(ICMP4_ERRORS)
_ICMP6_ERR = st.sampled_from(ICMP6_ERRORS)


@st.composite
def icmp_error(draw, af, inner_src=None, inner_dst=None, outer_src=None, outer_dst=None):
    """(outer raw bytes, inner full raw bytes, quoted length) of an ICMP /
    ICMPv6 error quoting a TCP/UDP packet, possibly truncated (at least its
    IP header incl. options / extension headers + 8 bytes of L4)."""
    meta, inner_raw = draw(ip_packet(af, src=inner_src, dst=inner_dst))
    qmin = meta["l4off"] + 8
    x = draw(_QUOTE_PICK)
    quote = len(inner_raw) if x < 1000 else qmin + (x - 1000) * (len(inner_raw) - qmin) // 999
    q = inner_raw[:quote]
    osrc = draw(addr4 if af == 4 else addr6) if outer_src is None else outer_src
    odst = draw(addr4 if af == 4 else addr6) if outer_dst is None else outer_dst
    t, c = draw(_ICMP4_ERR if af == 4 else _ICMP6_ERR)
    msg = bytearray(struct.pack("!BBHI", t, c, 0, draw(_ICMP_REST)) + q)
    if af == 4:
        struct.pack_into("!H", msg, 2, csum.checksum(msg))
        outer = assemble(4, osrc, odst, 1, bytes(msg), draw(_TTL), draw(_U16),
                         options=draw(ip4_options()))
    else:
        struct.pack_into("!H", msg, 2, l4_checksum(6, osrc, odst, 58, msg))
        chain = [("hop", 4)] if draw(_BOOL) else []
        outer = assemble(6, osrc, odst, 58, bytes(msg), draw(_TTL), chain=chain)
    return outer, inner_raw, quote


