"""UDP: every datagram without an entry may create one; an entry has the
single state UDP (its own timeout), which no packet changes."""
from ..packet import IPPROTO_UDP
from ..tcpstate import UDP as UDP_STATE
from ..tcpstate import UDP_STATE_NAME
from .base import Protocol

# a UDP packet's flags are 0, so only index UDP_STATE is ever read; every
# index holds UDP_STATE (a new entry reads index 0)
_NEXT = (UDP_STATE,) * 16


class UdpProtocol(Protocol):
    __slots__ = ()

    def conn_schedule(self, flags, sloppy):
        return True

    def state_name(self, state):
        return UDP_STATE_NAME


UDP = UdpProtocol("UDP", IPPROTO_UDP, _NEXT, _NEXT)
