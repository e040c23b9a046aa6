"""Forwarding methods, one module each behind one interface (the kernel's
ip_vs_xmit.c: the packet_xmit step bound to a connection by its method).

A method module provides

* ``xmit(buf, r, xl, inbound, dec_ttl)``: handle the TCP/UDP packet ``buf``
  (parsed as ``r``) of the (service, destination) pair ``xl`` (a
  conntrack.Xlate), client -> server when ``inbound``, else the reply.
  Returns True when the packet was rewritten in place and goes back to the
  device (V_FORWARD), False if the TTL / hop limit would expire (then
  nothing is written), or a *transmit hook* ``hook(engine, buf, n, reasm)``
  that the engine calls, once the packet is counted, for its verdict;
* ``icmp_xmit(buf, r, xl, inbound, dec_ttl)``: the same for an ICMP error
  quoting a packet of that pair;
* ``prepare(xl, dec_ttl)``: precompute, once per pair, what its packets
  need (stored on the Xlate), including the IPv4 fast path's words (fast4.py)
  ``xl.fast_in`` / ``xl.fast_out`` -- ``(ip checksum delta, address word
  delta, port word delta, L4 checksum delta, hook or None)`` -- and, when
  replies bypass the director, ``xl.in_only`` (entries move by the
  protocol's INPUT-ONLY rows, ``Protocol.next_in_only``);
* ``REPLIES``: whether the real server's replies pass the director (only
  then is it a source of replies in the engine's tables).

Modules: masq (``-m``), dr (``-g``: the verdict V_XMIT_L2, sent by the
driver dataplane/l2out.py), tunnel (``-i``: an outer packet, V_XMIT_IP).
docs/forwarding.md describes them for users.
"""
from ...model import FWD_DROUTE, FWD_LOCALNODE, FWD_TUNNEL
from . import dr, masq, tunnel


def method(dest):
    """The forwarding method module of `dest` (by its ``fwd``)."""
    f = dest.fwd
    if f == FWD_DROUTE or f == FWD_LOCALNODE:
        return dr
    if f == FWD_TUNNEL:
        return tunnel
    return masq
