"""The IPVS TCP state machine as data (docs/ipvs.md §4.2, §4.3).

Theory of operation
-------------------
A connection entry has one state for both directions.  Every TCP segment
that IPVS handles for the entry is reduced to an *event* and a *direction*:

* event: RST if the RST flag is set; else SYN if SYN; else FIN if FIN; else
  ACK if ACK; a segment with none of these flags is the event NONE, which
  forces the state CLOSE;
* direction: INPUT (client -> director), OUTPUT (real server -> client, seen
  only with masquerading) or INPUT_ONLY (entries that never see replies: DR,
  TUN; kept for completeness, masquerading never uses it).

The next state is ``TABLE[direction][event][current state]`` -- the table
below is a transcription of the kernel's ``tcp_states[]`` (the normal table,
not the ``secure_tcp`` one).  After *every* segment, changed state or not,
the entry's timeout is reset to the timeout of the resulting state; the
entry dies when no segment refreshes it within that time.

Active states (counted in the destination's ActiveConn) are ESTABLISHED,
SYN_SENT, SYN_RECV and SYNACK; every other state is inactive (InActConn).

For the packet path the table is also flattened: ``NEXT[direction]`` is a
tuple indexed by ``flags << 4 | state`` (flags = the raw TCP flags byte), so
a transition is one tuple index.
"""
from ..model import DEFAULT_TCP_TIMEOUT, DEFAULT_TCPFIN_TIMEOUT, DEFAULT_UDP_TIMEOUT
from . import sctpstate
from .packet import TH_ACK, TH_FIN, TH_RST, TH_SYN

# ---------------------------------------------------------------- states
NONE = 0
ESTABLISHED = 1
SYN_SENT = 2
SYN_RECV = 3
FIN_WAIT = 4
TIME_WAIT = 5
CLOSE = 6
CLOSE_WAIT = 7
LAST_ACK = 8
LISTEN = 9
SYNACK = 10
N_STATES = 11

STATE_NAMES = ("NONE", "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT",
               "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "SYNACK")
_ABBREV = {"NONE": NONE, "ES": ESTABLISHED, "SS": SYN_SENT, "SR": SYN_RECV,
           "FW": FIN_WAIT, "TW": TIME_WAIT, "CL": CLOSE, "CW": CLOSE_WAIT,
           "LA": LAST_ACK, "LI": LISTEN, "SA": SYNACK}

#: the single state of UDP entries (ipvsadm -L -c shows "UDP"); it is an
#: index into the engine's timeout table, after the TCP states
UDP = N_STATES
UDP_STATE_NAME = "UDP"

ACTIVE = frozenset((ESTABLISHED, SYN_SENT, SYN_RECV, SYNACK))
#: IS_ACTIVE[state] -> 1 if active, else 0 (UDP: inactive; the SCTP states
#: of sctpstate.py follow)
IS_ACTIVE = tuple(1 if s in ACTIVE else 0 for s in range(N_STATES + 1)) + sctpstate.ACTIVE
assert sctpstate.BASE == N_STATES + 1

# ---------------------------------------------------------------- events
EV_SYN = 0
EV_FIN = 1
EV_ACK = 2
EV_RST = 3
EV_NONE = 4          # no SYN/FIN/ACK/RST: forces CLOSE
EVENT_NAMES = ("syn", "fin", "ack", "rst", "none")


def event_of(flags):
    """The table event of a TCP flags byte."""
    if flags & TH_RST:
        return EV_RST
    if flags & TH_SYN:
        return EV_SYN
    if flags & TH_FIN:
        return EV_FIN
    if flags & TH_ACK:
        return EV_ACK
    return EV_NONE


# ---------------------------------------------------------------- directions
INPUT = 0
OUTPUT = 1
INPUT_ONLY = 2
DIRECTION_NAMES = ("IN", "OUT", "IN-ONLY")

# ---------------------------------------------------------------- the table
# rows: direction, event; columns: current state in the order of STATE_NAMES
_TABLE_TEXT = """
            NONE ES SS SR FW TW CL CW LA LI SA
IN syn      SR   ES ES SR SR SR SR SR SR SR SR
IN fin      CL   CW SS TW TW TW CL CW LA LI TW
IN ack      ES   ES SS ES FW TW CL CW CL LI ES
IN rst      CL   CL CL SR CL CL CL CL LA LI SR
OUT syn     SS   ES SS SR SS SS SS SS SS LI SR
OUT fin     TW   FW SS TW FW TW CL TW LA LI TW
OUT ack     ES   ES SS ES FW TW CL CW LA ES ES
OUT rst     CL   CL SS CL CL TW CL CL CL CL CL
IN-ONLY syn SR   ES ES SR SR SR SR SR SR SR SR
IN-ONLY fin CL   FW SS TW FW TW CL CW LA LI TW
IN-ONLY ack ES   ES SS ES FW TW CL CW CL LI ES
IN-ONLY rst CL   CL CL SR CL CL CL CL LA LI CL
"""


def _parse_table(text):
    lines = [ln.split() for ln in text.strip().splitlines()]
    header = [_ABBREV[c] for c in lines[0]]
    assert header == list(range(N_STATES))
    table = [[None] * 4 for _ in range(3)]
    for row in lines[1:]:
        d = DIRECTION_NAMES.index(row[0])
        ev = EVENT_NAMES.index(row[1])
        table[d][ev] = tuple(_ABBREV[c] for c in row[2:])
        assert len(table[d][ev]) == N_STATES
    return tuple(tuple(t) for t in table)


#: TABLE[direction][event][state] -> next state (event in EV_SYN..EV_RST)
TABLE = _parse_table(_TABLE_TEXT)


def next_state(direction, flags, state):
    """The state after a segment with TCP ``flags`` in ``direction``."""
    ev = event_of(flags)
    if ev == EV_NONE:
        return CLOSE
    return TABLE[direction][ev][state]


def _flatten(direction):
    out = [CLOSE] * (256 << 4)
    for flags in range(256):
        for st in range(16):
            if st < N_STATES:
                out[flags << 4 | st] = next_state(direction, flags, st)
    return tuple(out)


#: NEXT[direction][flags << 4 | state] -> next state
NEXT = tuple(_flatten(d) for d in (INPUT, OUTPUT, INPUT_ONLY))

# the kernel's "secure" table (secure_tcp defense, dataplane/defense.py): a
# client's ACK does not establish a half-open entry (IN ack SR stays SR, SA
# stays SA); the real server's SYN-ACK moves SR to SA (OUT syn), its ACK to ES
_SECURE_TEXT = """
            NONE ES SS SR FW TW CL CW LA LI SA
IN syn      SR   ES ES SR SR SR SR SR SR SR SA
IN fin      CL   CW SS TW TW TW CL CW LA LI SA
IN ack      ES   ES SS SR FW TW CL CW CL LI SA
IN rst      CL   CL CL SR CL CL CL CL LA LI CL
OUT syn     SS   ES SS SA SS SS SS SS SS LI SA
OUT fin     TW   FW SS TW FW TW CL TW LA LI TW
OUT ack     ES   ES SS ES FW TW CL CW LA ES ES
OUT rst     CL   CL SS CL CL TW CL CL CL CL CL
IN-ONLY syn SA   ES ES SR SA SA SA SA SA SA SA
IN-ONLY fin CL   FW SS TW FW TW CL CW LA LI TW
IN-ONLY ack ES   ES SS ES FW TW CL CW CL LI ES
IN-ONLY rst CL   CL CL SR CL CL CL CL LA LI CL
"""
SECURE_TABLE = _parse_table(_SECURE_TEXT)


def _flatten_table(table, direction):
    out = [CLOSE] * (256 << 4)
    for flags in range(256):
        ev = event_of(flags)
        for st in range(N_STATES):
            out[flags << 4 | st] = CLOSE if ev == EV_NONE else table[direction][ev][st]
    return tuple(out)


#: SECURE_NEXT[direction][flags << 4 | state] -> next state (secure_tcp)
SECURE_NEXT = tuple(_flatten_table(SECURE_TABLE, d) for d in (INPUT, OUTPUT, INPUT_ONLY))

# ---------------------------------------------------------------- timeouts
#: default timeout (seconds) per state; index UDP holds the UDP timeout.
#: ESTABLISHED, FIN_WAIT and UDP are the ``ipvsadm --set`` values (model.py)
DEFAULT_TIMEOUTS = (2, DEFAULT_TCP_TIMEOUT, 120, 60, DEFAULT_TCPFIN_TIMEOUT, 120, 10, 60, 30,
                    120, 120, DEFAULT_UDP_TIMEOUT) + sctpstate.TIMEOUTS   # SCTP states last
#: the timeout of a brand-new entry until its first transition
NEW_TIMEOUT = 3


def make_timeouts(tcp=0, tcpfin=0, udp=0, base=DEFAULT_TIMEOUTS):
    """A timeout table (list indexed by state, UDP last) from ``base`` with
    the ``ipvsadm --set tcp tcpfin udp`` values applied: tcp sets
    ESTABLISHED, tcpfin only FIN_WAIT, udp the UDP timeout; 0 = unchanged."""
    t = list(base)
    if tcp:
        t[ESTABLISHED] = tcp
    if tcpfin:
        t[FIN_WAIT] = tcpfin
    if udp:
        t[UDP] = udp
    return t


def state_name(state):
    if state >= sctpstate.BASE:
        return sctpstate.proc_name(state)
    return UDP_STATE_NAME if state == UDP else STATE_NAMES[state]
