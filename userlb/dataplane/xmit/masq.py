"""Masquerading (``-m``, IPVS NAT): client -> server packets get the real
server as destination, replies get the VIP as source (nat.py does the
rewriting; this module binds it to an Xlate)."""
from .. import nat
from ..csum import delta_addr, delta_addr_port

#: the real server's replies pass the director (and are rewritten)
REPLIES = True


def prepare(xl, dec_ttl):
    """The NAT plans of both directions and, for IPv4, the fast path's words
    ``(ip checksum delta, saddr<<32|daddr delta, sport<<16|dport delta, L4
    checksum delta, None)``: the address word and the port word move by a
    constant (fast4.py); None: no transmit hook, the rewritten packet is
    written back to the device."""
    va, vp, da, dp = xl.vaddr, xl.vport, xl.daddr, xl.dport
    xl.plan_in = nat.plan_in(va, vp, da, dp, dec_ttl)
    xl.plan_out = nat.plan_out(da, dp, va, vp, dec_ttl)
    if type(va) is int:
        xl.fast_in = (delta_addr(va, da), da - va, dp - vp, delta_addr_port(va, vp, da, dp),
                      None)
        xl.fast_out = (delta_addr(da, va), (va - da) << 32, (vp - dp) << 16,
                       delta_addr_port(da, dp, va, vp), None)
    else:
        xl.fast_in = xl.fast_out = None


def xmit(buf, r, xl, inbound, dec_ttl):
    if dec_ttl and nat.ttl_expired(buf, r):
        return False
    nat.rewrite(buf, r, xl.plan_in if inbound else xl.plan_out)
    return True


def icmp_xmit(buf, r, xl, inbound, dec_ttl):
    if dec_ttl and nat.ttl_expired(buf, r):
        return False
    if inbound:
        nat.icmp_in(buf, r, xl.daddr, xl.dport, dec_ttl)
    else:
        nat.icmp_out(buf, r, xl.vaddr, xl.vport, dec_ttl)
    return True
