"""Direct routing (``-g``, IPVS DROUTE; docs/forwarding.md).

The client's packet leaves unchanged -- destination still the VIP -- in a
link-layer frame addressed to the real server, which holds the VIP on a
loopback interface and answers the client itself.  The engine only says so:
its verdict V_XMIT_L2 ("send ``buf[:out_len]`` on the link towards
``out_xl.daddr``"; V_XMIT_L2_OUT with the bytes ``eng.out`` for a
reassembled datagram), and the driver (dataplane/l2out.py) finds the
interface and the link-layer address and checks the link's MTU.

Replies do not pass the director, so the pair's entries move by the TCP
table's INPUT-ONLY rows (docs/ipvs.md §4.2: the "no output" entries), and
the real server is not entered in the table of reply sources.  A packet
that does come back through the director on an entry (an OUTPUT packet:
an asymmetric route) is passed on unchanged, as IPVS lets it pass.

ICMP errors: from the client's side they go to the real server unchanged,
like the connection's packets (docs/ipvs.md §5.4); from the server's side
they pass unchanged.
"""
from .. import nat
from ..csum import update16
from ..packet import P_AF, P_L3OFF, P_TTLOFF
from ..verdict import V_XMIT_L2, V_XMIT_L2_OUT

#: replies of these destinations do not pass the director
REPLIES = False


def dec_ttl(buf, r):
    """Decrement the TTL / hop limit (the caller checked it is above 1); the
    IPv4 header checksum follows (RFC 1624)."""
    off = r[P_TTLOFF]
    buf[off] -= 1
    if r[P_AF] == 4:
        l3 = r[P_L3OFF]
        hc = buf[l3 + 10] << 8 | buf[l3 + 11]
        hc = update16(hc, (buf[off] + 1) << 8, buf[off] << 8)
        buf[l3 + 10] = hc >> 8
        buf[l3 + 11] = hc & 0xFF


def prepare(xl, dec_ttl):
    """``xl.plan_in``: the transmit hook (the general path's answer for a
    client packet); the fast path's words."""
    xl.plan_out = None
    xl.in_only = True
    hook = _hook(xl)
    xl.plan_in = hook
    # the IPv4 fast path's words: no rewrite, the hook sends (fast4.py);
    # an OUTPUT packet is passed on unchanged (an identity rewrite)
    if type(xl.vaddr) is int and not dec_ttl:
        xl.fast_in = (0, 0, 0, 0, hook)
        xl.fast_out = (0, 0, 0, 0, None)
    else:
        xl.fast_in = xl.fast_out = None


def _hook(xl):
    def send(eng, buf, n, reasm=False):
        eng.out_xl = xl
        if reasm:
            eng.out = bytes(buf[:n])
            return V_XMIT_L2_OUT
        eng.out_len = n
        return V_XMIT_L2
    return send


def xmit(buf, r, xl, inbound, dec):
    if dec:
        if nat.ttl_expired(buf, r):
            return False
        dec_ttl(buf, r)
    return xl.plan_in if inbound else True


def icmp_xmit(buf, r, xl, inbound, dec):
    return xmit(buf, r, xl, inbound, dec)
