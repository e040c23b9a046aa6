"""TCP (docs/ipvs.md §4.1-§4.3): entries are created by a SYN without RST
(any segment but a RST with ``sloppy_tcp``); states move by the tables of
tcpstate.py."""
from ..packet import IPPROTO_TCP, TH_RST, TH_SYN
from ..tcpstate import INPUT, INPUT_ONLY, NEXT, OUTPUT, SECURE_NEXT, STATE_NAMES
from .base import Protocol

_SYN_RST = TH_SYN | TH_RST


class TcpProtocol(Protocol):
    __slots__ = ()

    def conn_schedule(self, flags, sloppy):
        return flags & _SYN_RST == TH_SYN or (sloppy and not flags & TH_RST)

    def state_name(self, state):
        return STATE_NAMES[state]


TCP = TcpProtocol("TCP", IPPROTO_TCP, NEXT[INPUT], NEXT[OUTPUT], NEXT[INPUT_ONLY])


def set_secure(on):
    """secure_tcp (dataplane/defense.py): switch TCP to the secure state
    table, or back.  Process-wide (one engine per `userlb run`)."""
    t = SECURE_NEXT if on else NEXT
    TCP.next_in = t[INPUT]
    TCP.next_out = t[OUTPUT]
    TCP.next_in_only = t[INPUT_ONLY]
