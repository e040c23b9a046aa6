"""SCTP (docs/ipvs.md §4.1, docs/sctp.md): an entry is created by a packet
whose first chunk is INIT (any chunk but ABORT with ``sloppy_sctp``); states
move by the kernel's 14-state table (sctpstate.py).  The parser puts the
first chunk's event code in the flags field (sctpstate.CODE_OF_CHUNK)."""
from ..packet import IPPROTO_SCTP
from ..sctpstate import CODE_ABORT, CODE_INIT, INPUT, INPUT_ONLY, NEXT, OUTPUT, proc_name
from .base import Protocol


class SctpProtocol(Protocol):
    __slots__ = ()

    def conn_schedule(self, flags, sloppy):
        return flags == CODE_INIT or (sloppy and flags != CODE_ABORT)

    def state_name(self, state):
        return proc_name(state)


SCTP = SctpProtocol("SCTP", IPPROTO_SCTP, NEXT[INPUT], NEXT[OUTPUT], NEXT[INPUT_ONLY])
