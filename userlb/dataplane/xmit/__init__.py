"""Forwarding methods, one module each behind one interface (the kernel's
ip_vs_xmit.c: the packet_xmit step bound to a connection by its method).

A method module provides

* ``xmit(buf, r, xl, inbound, dec_ttl)``: rewrite the TCP/UDP packet ``buf``
  (parsed as ``r``) of the (service, destination) pair ``xl`` (a
  conntrack.Xlate) in place, client -> server when ``inbound``, else the
  reply; False if the TTL / hop limit would expire (then nothing is written);
* ``icmp_xmit(buf, r, xl, inbound, dec_ttl)``: the same for an ICMP error
  quoting a packet of that pair;
* ``prepare(xl, dec_ttl)``: precompute, once per pair, what its rewrites need
  (stored on the Xlate), including the IPv4 fast path's words (fast4.py)
  ``xl.fast_in`` / ``xl.fast_out``.

Only masquerading exists today; direct routing and tunnelling are new modules
returned by `method`.
"""
from . import masq


def method(dest):
    """The forwarding method module of `dest` (every destination masquerades
    for now, whatever its ``fwd``)."""
    return masq
