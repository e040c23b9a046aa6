"""Per-protocol behaviour of the director, one module per protocol behind
one small interface (the shape of the kernel's ``struct ip_vs_protocol``).

A `Protocol` answers, for the engine, what depends on the L4 protocol:

* ``protocol``: its IP protocol number; the engine picks the object by the
  number it parsed (`PROTOCOLS`), never from a header offset;
* ``conn_schedule(flags, sloppy)``: may this packet, without an entry, create
  one (the kernel's conn_schedule rule; docs/ipvs.md §4.1)?  A stateless
  scheduler (mhs) schedules every packet and does not ask;
* ``next_in`` / ``next_out``: the state table of each direction, indexed by
  ``flags << 4 | state`` (flags: the TCP flags byte, 0 for other protocols);
  a new entry starts at ``next_in[flags << 4]`` (the first transition from
  NONE).  The state indexes the engine's timeout table
  (tcpstate.make_timeouts);
* ``state_name(state)``: the name ``ipvsadm -L -c`` shows.

ICMP is not a connection protocol here: its errors are matched on the
connection of the packet they quote (proto/icmp.py).  A new protocol (SCTP)
is a new module with a `Protocol` and an entry in `PROTOCOLS` (as SCTP is).
"""
from . import sctp, tcp, udp
from .base import Protocol

#: IP protocol number -> Protocol, for every protocol that has entries
PROTOCOLS = {tcp.TCP.protocol: tcp.TCP, udp.UDP.protocol: udp.UDP,
             sctp.SCTP.protocol: sctp.SCTP}

__all__ = ["PROTOCOLS", "Protocol"]
