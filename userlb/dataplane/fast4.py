"""The IPv4 fast path of the engine: the common case decided from two header
reads, without ``packet.parse`` (docs/architecture.md, docs/measuring.md).

Taken by IPv4 without options (first byte 0x45), unfragmented TCP or UDP
with a checksum, when the engine does not decrement the TTL.  Everything else
-- and anything unusual on the way (an expired entry, a removed destination,
a SYN on a TIME_WAIT entry, a packet that needs an answer) -- falls through
to the general path (``Engine._general``), which decides everything again
from scratch; so this module only ever takes decisions the general path
would take, faster.

The speed tricks (each one here only; the rest of the package is plain):

* The protocol byte picks one ``unpack_from`` that reads the total length,
  fragment word, IP header checksum, both addresses as one 64-bit word
  ``sd = saddr << 32 | daddr`` and both ports as one 32-bit word
  ``pp = sport << 16 | dport`` -- for UDP also its length and checksum;
  TCP's flags and checksum take a second one (``_TCPF``).
* The connection key is ``proto << 96 | sd << 32 | pp`` (conntrack.key4),
  built from those words.
* Masquerading moves the address word and the port word by a constant per
  (service, destination, direction), so the rewrite is ``sd + delta`` and
  ``pp + delta``; both checksums are patched with precomputed RFC 1624
  deltas (``xl.fast_in`` / ``xl.fast_out``, computed by xmit/masq.py):
  ``~(~old + delta)`` folded once, because a 16-bit checksum plus a 17-bit
  delta carries at most once.  The words from the IP checksum (offset 10)
  on are contiguous, so UDP is written back by one ``pack_into`` (IP
  checksum, addresses, ports, length, UDP checksum) and TCP by two (the TCP
  checksum sits at 36, after the sequence numbers).  A computed UDP
  checksum of 0 is sent as 0xFFFF; TCP keeps it.
* The TCP state moves by one tuple index (``flags << 4 | state``, the
  protocol's table -- for client packets of direct routing and tunnels
  (``xl.in_only``) its INPUT-ONLY rows); UDP's table maps its state to
  itself.
* The direction's words end with a transmit hook: None for masquerading;
  for direct routing and tunnels (xmit/dr.py, xmit/tunnel.py) the hook,
  called with the untouched packet, gives the verdict.
* Counters: the pair's three Stats objects (``xl.counted``: destination,
  service, global) are unpacked once and each updated in one line (a loop
  over them costs ~5 % of the established path).
* The rewrite is written once, at the end: each case only chooses the
  direction's words (``fw``), or leaves ``fw`` None for the general path.
* Specialized: the code is shaped for CPython 3.11's specializing
  interpreter.  A comparison is specialized only when its conditional jump
  is short (a jump over a long block needs an EXTENDED_ARG and leaves it
  generic, several times slower), so the tests are guards that exit early;
  3.11 specializes ``+ - *`` on ints and floats but never ``& | ^ << >>``,
  so arithmetic stands in for bit operations where it is the same: the
  checksum's complement is ``0xFFFF - x`` and its one end-around carry a
  subtraction, the state index ``flags * 16 + st``, the fragment test two
  comparisons (DF or nothing; the reserved bit goes the general way), the
  TCP header length a table; and the engine keeps its timeouts as floats
  like the clock, so ``e.last + e.timeout`` adds two floats.
* Partial checksums (``partial``, from vnet.VnetPath: a packet of a TUN
  device with offloads whose header says NEEDS_CSUM): the L4 field then holds
  the non-inverted pseudo-header sum P, and the NAT moves it by the address
  delta only -- the IP header checksum's delta ``ipd``, because the pseudo
  header holds the same two addresses (the ports are summed by whoever
  completes the checksum).  So the field becomes ``P + ipd`` folded once, and
  no conversion is needed before or after.  ``partial`` is the checksum
  field's offset the header announced; a packet whose field is elsewhere, a
  packet without entry, one of direct routing or a tunnel, or anything else
  the fast path does not finish, returns None, nothing counted or changed
  (the caller converts the field and calls ``process`` again without
  ``partial``).
"""
from struct import Struct

from .packet import IPPROTO_TCP, IPPROTO_UDP, parse
from .proto.tcp import TCP
from .proto.udp import UDP
from .tcpstate import CLOSE, TIME_WAIT
from .verdict import R_NO_DEST, R_NO_SCHEDULER

# chosen by the protocol byte (9): the IPv4 header's tot_len, frag, csum,
# saddr<<32|daddr and sport<<16|dport; for UDP also its length and checksum
_TCP_HEAD = Struct("!2xH2xH2xHQI").unpack_from
_UDP_HEAD = Struct("!2xH2xH2xHQIHH").unpack_from
_TCPF = Struct("!BB2xH").unpack_from         # TCP data offset, flags, checksum (at 32)
_pack_udp = Struct("!HQIHH").pack_into       # IP csum, addresses, ports, UDP length, csum (at 10)
_pack_HQI = Struct("!HQI").pack_into         # IP csum, addresses, ports (at 10)
_pack_H = Struct("!H").pack_into
_K_TCP = IPPROTO_TCP << 96
_K_UDP = IPPROTO_UDP << 96
# TCP data offset byte -> header length in bytes; offsets under 5 words get a
# length no packet has, so one comparison refuses them
_TCP_HLEN = tuple((d >> 4) * 4 if d >= 0x50 else 1 << 20 for d in range(256))
_M32 = 0xFFFFFFFF


class Fast4:
    """The IPv4 fast path as the first half of ``Engine.process`` (a mixin of
    engine.Engine, whose attributes it uses)."""

    __slots__ = ()
    #: process() takes ``partial`` (vnet.VnetPath looks for this)
    takes_partial = True

    def process(self, buf, n, now, partial=0):
        if n > len(buf):
            n = len(buf)                   # as packet.parse: never read past the buffer
        # (guards with early exits: module doc, "Specialized")
        if n < 28 or buf[0] != 0x45 or not self._fast:
            return None if partial else self._general(buf, n, now)
        ops = None
        proto = buf[9]
        if proto == IPPROTO_TCP:
            tlen, frag, ipc, sd, pp = _TCP_HEAD(buf, 0)
            if (tlen <= n and (frag == 0x4000 or not frag) and tlen >= 40
                    and (not partial or partial == 36)):
                doff, flags, l4c = _TCPF(buf, 32)
                if _TCP_HLEN[doff] <= tlen - 20:
                    ops = TCP
                    key = sd << 32 | pp | _K_TCP
        elif proto == IPPROTO_UDP:
            tlen, frag, ipc, sd, pp, ulen, l4c = _UDP_HEAD(buf, 0)
            if (tlen <= n and (frag == 0x4000 or not frag) and 8 <= ulen <= tlen - 20 and l4c
                    and (not partial or partial == 26)):
                ops = UDP
                key = sd << 32 | pp | _K_UDP
                flags = 0
        if ops is None:
            return None if partial else self._general(buf, n, now)
        fw = None
        e = self._conns.get(key)
        if e is None:
            if partial:
                return None             # new flows: with the conversion (vnet.py)
            fw = self._miss4(buf, now, ops, key, sd, pp, flags, tlen)
            if type(fw) is int:
                return fw
        elif now >= e.last + e.timeout:
            pass                        # expired: the general path
        else:
            xl = e.xl
            # (direct routing and tunnels take partial checksums through the
            # conversion: the tunnel completes them, xmit/tunnel.py)
            if (xl.dest.available or xl.stateless) and not (partial and xl.in_only):
                st = e.state
                ds, ss, gs = xl.counted
                if key == e.ikey:
                    # a SYN on TIME_WAIT/CLOSE: the general path decides
                    if not ((st == TIME_WAIT or st == CLOSE) and flags & 6 == 2):
                        ns = (ops.next_in_only if xl.in_only else ops.next_in)[flags * 16 + st]
                        fw = xl.fast_in
                        ds.inpkts, ds.inbytes = ds.inpkts + 1, ds.inbytes + tlen
                        ss.inpkts, ss.inbytes = ss.inpkts + 1, ss.inbytes + tlen
                        gs.inpkts, gs.inbytes = gs.inpkts + 1, gs.inbytes + tlen
                else:
                    ns = ops.next_out[flags * 16 + st]
                    fw = xl.fast_out
                    ds.outpkts, ds.outbytes = ds.outpkts + 1, ds.outbytes + tlen
                    ss.outpkts, ss.outbytes = ss.outpkts + 1, ss.outbytes + tlen
                    gs.outpkts, gs.outbytes = gs.outpkts + 1, gs.outbytes + tlen
                if fw is not None:
                    if ns != st:
                        self._transition(e, st, ns, now)
                    else:
                        e.timeout = self._tmo[ns]
                        e.last = now
        if fw is None:
            return None if partial else self._general(buf, n, now)
        ipd, sdd, ppd, l4d, hook = fw
        if hook is not None:
            # another forwarding method (xmit/dr.py, tunnel.py): counted and
            # state moved like the rest; the method sends the packet
            return hook(self, buf, tlen)
        # RFC 1624 with 16-bit deltas: ~old + delta, one end-around carry, ~
        x = 0xFFFF - ipc + ipd
        if x > 0xFFFF:
            x -= 0xFFFF
        ipc = 0xFFFF - x
        if partial:     # P + the address delta, not inverted (module doc)
            l4c += ipd
            if l4c > 0xFFFF:
                l4c -= 0xFFFF
        else:
            x = 0xFFFF - l4c + l4d
            if x > 0xFFFF:
                x -= 0xFFFF
            l4c = 0xFFFF - x
        if ops is UDP:  # one write from the IP checksum to the UDP checksum
            _pack_udp(buf, 10, ipc, sd + sdd, pp + ppd, ulen, l4c or 0xFFFF)
        else:
            _pack_HQI(buf, 10, ipc, sd + sdd, pp + ppd)
            _pack_H(buf, 36, l4c)
        self.out_len = tlen
        return 1

    def _miss4(self, buf, now, ops, key, sd, pp, flags, tlen):
        """No entry: a new flow to a service that `ops` lets create one (or
        any packet for a stateless scheduler), or a reply from a real server
        owned by one service.  Returns the direction's words (packet counted;
        a new entry linked), a verdict, or None for the general path.  (The
        arguments are process()'s header words, so nothing is read twice.)"""
        proto = ops.protocol
        svc = self._svc_tab.get((proto, sd & _M32, pp & 0xFFFF))
        if svc is None:
            xl = self._rs_tab.get((proto, sd >> 32, pp >> 16))
            if xl is None:
                return None
            ds, ss, gs = xl.counted
            ds.outpkts, ds.outbytes = ds.outpkts + 1, ds.outbytes + tlen
            ss.outpkts, ss.outbytes = ss.outpkts + 1, ss.outbytes + tlen
            gs.outpkts, gs.outbytes = gs.outpkts + 1, gs.outbytes + tlen
            return xl.fast_out
        sched = svc.sched
        if sched is None:
            return self._drop(R_NO_SCHEDULER)
        if not (sched.stateless or ops.conn_schedule(flags, self.sloppy_tcp)):
            return None
        got = self._pick(svc, proto, sd >> 32, pp >> 16, flags, now)
        if type(got) is str:
            if got is R_NO_DEST:
                return self._no_dest(buf, parse(buf, 0, tlen))
            return self._drop(got)
        dest, need, tpl = got
        xl = self._xl_cache.get(dest)
        if xl is None or xl.svc is not svc:
            xl = self._xlate(svc, dest)
        if need:
            self.link_entry(key, xl, (ops.next_in_only if xl.in_only else ops.next_in)[flags << 4],
                            now, tpl)
        svc.forwarded = True
        ds, ss, gs = xl.counted
        ds.inpkts, ds.inbytes = ds.inpkts + 1, ds.inbytes + tlen
        ss.inpkts, ss.inbytes = ss.inpkts + 1, ss.inbytes + tlen
        gs.inpkts, gs.inbytes = gs.inpkts + 1, gs.inbytes + tlen
        return xl.fast_in
